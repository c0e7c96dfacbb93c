/* TEMPORARY placeholder by the lead until the history helper lands its own. */
#include "config.h"
#include <stdio.h>
#include "history.h"
struct history *history_open(struct event_base *base, const struct config *cfg, char *err, size_t errlen) { (void)base; (void)cfg; snprintf(err, errlen, "not built yet"); return NULL; }
int64_t history_append(struct history *h, const char *room, const char *sender, int kind, const char *text) { (void)h; (void)room; (void)sender; (void)kind; (void)text; return 0; }
int64_t history_last_id(const struct history *h) { (void)h; return 0; }
int history_replay(struct history *h, const char *room, int64_t upto_id, unsigned limit, uint64_t owner_id, history_result_fn fn, void *arg) { (void)h; (void)room; (void)upto_id; (void)limit; (void)owner_id; (void)fn; (void)arg; return -1; }
int history_recent(struct history *h, const char *room, unsigned limit, int64_t since_ms, uint64_t owner_id, history_result_fn fn, void *arg) { (void)h; (void)room; (void)limit; (void)since_ms; (void)owner_id; (void)fn; (void)arg; return -1; }
int history_search(struct history *h, const char *const *rooms, size_t nrooms, const char *words, unsigned limit, uint64_t owner_id, history_result_fn fn, void *arg) { (void)h; (void)rooms; (void)nrooms; (void)words; (void)limit; (void)owner_id; (void)fn; (void)arg; return -1; }
void history_stats(struct history *h, struct history_stats *out) { (void)h; (void)out; }
int history_flush_wait(struct history *h, int timeout_ms) { (void)h; (void)timeout_ms; return 0; }
void history_close(struct history *h) { (void)h; }
