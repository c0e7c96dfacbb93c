/*
 * Chat history: every room line is stored in sqlite off the event loop.
 *
 * Ids are assigned on the loop by history_append, so the caller knows a
 * line's id when it broadcasts it.  One writer thread commits in batches;
 * replay requests go through the writer's queue, so a replay up to id N
 * sees every line up to N (the join seam is exact).  /history and /search
 * run on a small pool of read-only connections.
 *
 * Every call is for the loop thread.  Result callbacks run on the loop
 * thread; they name the requester by owner_id and must look it up (the
 * client may be gone).  Each request that returned 0 gets exactly one
 * callback, at the latest during history_close().  Never call
 * history_close() from a history callback.
 */
#ifndef PARLEY_HISTORY_H
#define PARLEY_HISTORY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct event_base;
struct config;
struct history;

enum history_kind { HISTORY_MESSAGE = 0, HISTORY_ACTION = 1 };

struct history_row {
	int64_t id;
	int64_t ts_ms; /* ms since the epoch, CLOCK_REALTIME at append */
	int kind; /* enum history_kind */
	const char *room;
	const char *sender;
	const char *text;
};

struct history_stats {
	uint64_t appended; /* lines accepted by history_append */
	uint64_t written; /* ... committed */
	uint64_t dropped; /* refused: the queue was full */
	uint64_t batches; /* committed transactions */
	uint64_t write_errors; /* failed commits (each retried) */
	size_t queue_depth; /* accepted, not yet committed */
	uint64_t last_commit_us;
	uint64_t max_commit_us;
	int degraded; /* a write fault is ongoing */
	int file_problem; /* the file was removed, replaced or made unusable */
};

/* Most rows one request returns; larger limits are cut to this. */
#define HISTORY_LIMIT_MAX 10000

/*
 * Runs on the loop thread; rows are valid only during the call; err is
 * non-NULL on failure (then nrows == 0).
 */
typedef void (*history_result_fn)(uint64_t owner_id, void *arg,
    const struct history_row *rows, size_t nrows, const char *err);

/*
 * Open (creating, migrating) the database named by cfg->history_path, or
 * state_directory/history.db, and start the threads.  NULL with err set
 * on failure; the caller decides (history_required).
 */
struct history *history_open(struct event_base *base, const struct config *cfg,
    char *err, size_t errlen);

/*
 * Give the database and its -wal and -shm files, where they exist, to
 * uid:gid: files an older parleyd created as root before switching to
 * [server] user.  Only root-owned regular files with one link, reached
 * without a symlink, are changed.  0, or -1 if one failed (logged).
 */
int history_chown_files(const struct config *cfg, uid_t uid, gid_t gid);

/*
 * Assign the next id, timestamp the line and queue it for the writer;
 * the strings are copied.  Returns the id (> 0), or 0 when the line was
 * dropped because the queue is full (counted, logged once per incident).
 */
int64_t history_append(struct history *h, const char *room, const char *sender,
    int kind, const char *text);
/* The last id assigned. */
int64_t history_last_id(const struct history *h);

/*
 * The newest limit lines of room with id <= upto_id, oldest first, with
 * every line appended before this call included (committed or not).
 * 0, or -1 (and no callback) on bad arguments or when closing.
 */
int history_replay(struct history *h, const char *room, int64_t upto_id,
    unsigned limit, uint64_t owner_id, history_result_fn fn, void *arg);
/*
 * Reader pool.  The newest limit committed lines of room with
 * ts >= since_ms (0 = any), oldest first.  -1 when too many queries are
 * in flight (the caller says "busy").
 */
int history_recent(struct history *h, const char *room, unsigned limit,
    int64_t since_ms, uint64_t owner_id, history_result_fn fn, void *arg);
/*
 * Reader pool.  Committed lines of any of rooms containing every word of
 * words, newest first.  Each word is matched as a quoted phrase, so FTS
 * syntax in user input is inert.  -1 as for history_recent.
 */
int history_search(struct history *h, const char *const *rooms, size_t nrooms,
    const char *words, unsigned limit, uint64_t owner_id, history_result_fn fn,
    void *arg);

void history_stats(struct history *h, struct history_stats *out);
/*
 * Replays and queries whose callback has not run yet; 0 once every
 * answer has been delivered.  Lets a test wait for the store to go idle.
 */
unsigned history_inflight(const struct history *h);

/*
 * Block the loop until everything appended so far is committed, at most
 * timeout_ms.  For tests and benchmarks.  0 if all was committed.
 */
int history_flush_wait(struct history *h, int timeout_ms);

/*
 * Commit everything queued (retrying a write fault for a few seconds
 * before giving up and logging the loss), stop the threads, run every
 * outstanding callback, close the database.  NULL is a no-op.
 */
void history_close(struct history *h);

/*
 * Test hooks.  The environment variable PARLEY_HISTORY_MAX_PAGES, read by
 * history_open, sets PRAGMA max_page_count on the writing connection (a
 * "full disk"); history_test_max_pages changes it later and retries a
 * pending write at once.  history_test_prune runs a full retention pass
 * now; a history_replay issued after it sees the result.
 */
int history_test_max_pages(struct history *h, int64_t pages);
int history_test_prune(struct history *h);

#endif
