/* String-keyed hash map; see strmap.h. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "strmap.h"

struct entry {
	char *key;
	void *value;
	uint32_t hash;
	struct entry *next;
};

struct strmap {
	struct entry **buckets;
	size_t nbuckets; /* a power of two */
	size_t count;
};

static uint32_t
hash_str(const char *s)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	while (*s != '\0')
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h;
}

struct strmap *
strmap_new(void)
{
	struct strmap *m;

	if ((m = calloc(1, sizeof *m)) == NULL)
		return NULL;
	m->nbuckets = 64;
	if ((m->buckets = calloc(m->nbuckets, sizeof *m->buckets)) == NULL) {
		free(m);
		return NULL;
	}
	return m;
}

void
strmap_free(struct strmap *m)
{
	struct entry *e, *next;
	size_t i;

	if (m == NULL)
		return;
	for (i = 0; i < m->nbuckets; i++) {
		for (e = m->buckets[i]; e != NULL; e = next) {
			next = e->next;
			free(e->key);
			free(e);
		}
	}
	free(m->buckets);
	free(m);
}

static struct entry **
find(const struct strmap *m, const char *key, uint32_t h)
{
	struct entry **pp = &m->buckets[h & (m->nbuckets - 1)];

	while (*pp != NULL && ((*pp)->hash != h || strcmp((*pp)->key, key)))
		pp = &(*pp)->next;
	return pp;
}

void *
strmap_get(const struct strmap *m, const char *key)
{
	struct entry *e = *find(m, key, hash_str(key));

	return e ? e->value : NULL;
}

static void
grow(struct strmap *m)
{
	struct entry **nb, *e, *next;
	size_t n = m->nbuckets * 2, i;

	if ((nb = calloc(n, sizeof *nb)) == NULL)
		return; /* stay at the current size: slower, still correct */
	for (i = 0; i < m->nbuckets; i++) {
		for (e = m->buckets[i]; e != NULL; e = next) {
			next = e->next;
			e->next = nb[e->hash & (n - 1)];
			nb[e->hash & (n - 1)] = e;
		}
	}
	free(m->buckets);
	m->buckets = nb;
	m->nbuckets = n;
}

int
strmap_put(struct strmap *m, const char *key, void *value)
{
	uint32_t h = hash_str(key);
	struct entry **pp = find(m, key, h), *e;

	if (*pp != NULL)
		return -1;
	if ((e = calloc(1, sizeof *e)) == NULL ||
	    (e->key = strdup(key)) == NULL) {
		free(e);
		return -1;
	}
	e->value = value;
	e->hash = h;
	*pp = e;
	if (++m->count > m->nbuckets)
		grow(m);
	return 0;
}

void *
strmap_del(struct strmap *m, const char *key)
{
	struct entry **pp = find(m, key, hash_str(key)), *e;
	void *v;

	if ((e = *pp) == NULL)
		return NULL;
	*pp = e->next;
	v = e->value;
	free(e->key);
	free(e);
	m->count--;
	return v;
}

size_t
strmap_count(const struct strmap *m)
{
	return m->count;
}

void
strmap_foreach(const struct strmap *m,
    void (*fn)(const char *key, void *value, void *arg), void *arg)
{
	struct entry *e;
	size_t i;

	for (i = 0; i < m->nbuckets; i++)
		for (e = m->buckets[i]; e != NULL; e = e->next)
			fn(e->key, e->value, arg);
}
