/* TEMPORARY placeholder by the lead until the history helper lands its own. */
#ifndef PARLEY_HISTORY_H
#define PARLEY_HISTORY_H
#include <stddef.h>
#include <stdint.h>
struct event_base;
struct config;
struct history;
enum history_kind { HISTORY_MESSAGE = 0, HISTORY_ACTION = 1 };
struct history_row { int64_t id; int64_t ts_ms; int kind; const char *room; const char *sender; const char *text; };
struct history_stats { uint64_t appended, written, dropped, batches, write_errors; size_t queue_depth; uint64_t last_commit_us, max_commit_us; int degraded; };
typedef void (*history_result_fn)(uint64_t owner_id, void *arg, const struct history_row *rows, size_t nrows, const char *err);
struct history *history_open(struct event_base *base, const struct config *cfg, char *err, size_t errlen);
int64_t history_append(struct history *h, const char *room, const char *sender, int kind, const char *text);
int64_t history_last_id(const struct history *h);
int history_replay(struct history *h, const char *room, int64_t upto_id, unsigned limit, uint64_t owner_id, history_result_fn fn, void *arg);
int history_recent(struct history *h, const char *room, unsigned limit, int64_t since_ms, uint64_t owner_id, history_result_fn fn, void *arg);
int history_search(struct history *h, const char *const *rooms, size_t nrooms, const char *words, unsigned limit, uint64_t owner_id, history_result_fn fn, void *arg);
void history_stats(struct history *h, struct history_stats *out);
int history_flush_wait(struct history *h, int timeout_ms);
void history_close(struct history *h);
#endif
