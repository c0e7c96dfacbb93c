/*
 * A string-keyed hash map (separate chaining, grows at load 1).  Keys are
 * copied; values are the caller's.  Used for nicks and rooms by their
 * case-folded names.
 */
#ifndef PARLEY_STRMAP_H
#define PARLEY_STRMAP_H

#include <stddef.h>

struct strmap;

struct strmap *strmap_new(void);
/* Frees the map and its keys, not the values. */
void strmap_free(struct strmap *m);
void *strmap_get(const struct strmap *m, const char *key);
/* 0, or -1 if the key exists already (or out of memory). */
int strmap_put(struct strmap *m, const char *key, void *value);
/* Returns the removed value, or NULL. */
void *strmap_del(struct strmap *m, const char *key);
size_t strmap_count(const struct strmap *m);
/* Visit every entry; fn must not change the map. */
void strmap_foreach(const struct strmap *m,
    void (*fn)(const char *key, void *value, void *arg), void *arg);

#endif
