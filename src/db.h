/*
 * The sqlite side of history: schema and migrations, cached statements,
 * the queries, retention.  No threads and no libevent here: a struct db
 * is one connection, used by one thread at a time (history.c gives the
 * writing connection to its writer thread and one read-only connection
 * to each reader thread).
 *
 * Functions returning int return 0 (SQLITE_OK) or the sqlite result code;
 * db_errmsg() then has the connection's message.
 */
#ifndef PARLEY_DB_H
#define PARLEY_DB_H

#include <stddef.h>
#include <stdint.h>

#include "history.h"

struct db;

/* Rows that own their strings (one allocation per row). */
struct db_rows {
	struct history_row *rows;
	size_t n;
	size_t cap;
};

/*
 * Open path.  The writer (readonly == 0) creates the file, turns on WAL,
 * runs the migrations; a reader opens an existing file read-only.  NULL
 * with err set ("path: message") on failure; nothing is left open.
 */
struct db *db_open(const char *path, int readonly, size_t cache_bytes,
    char *err, size_t errlen);
void db_close(struct db *db);
const char *db_errmsg(struct db *db);
/* The message for rc: the connection's, if it is about rc, else generic. */
const char *db_strerror(struct db *db, int rc);
/* Is rc a fault that may clear by itself (full, busy, I/O, read-only)? */
int db_transient(int rc);

/*
 * Has the file been removed, renamed or replaced since it was opened?
 * 1 or 0 (sqlite's SQLITE_FCNTL_HAS_MOVED: a stat of the path).
 */
int db_moved(struct db *db);

/* The highest id ever stored (survives pruning); 0 for none, -1 on error. */
int64_t db_last_id(struct db *db);
/* PRAGMA max_page_count (test hook: a "full disk"). */
int db_set_max_pages(struct db *db, int64_t pages);

/*
 * Writer: BEGIN IMMEDIATE, db_insert per row (ids increasing), db_commit
 * indexes the batch's rows for search with one statement and commits;
 * db_rollback after any error.
 */
int db_begin(struct db *db);
int db_insert(struct db *db, const struct history_row *row);
int db_commit(struct db *db);
void db_rollback(struct db *db);

/*
 * Queries append to out, oldest first.  Replay: the newest limit rows of
 * room with id <= upto.  Recent: the newest limit rows of room with
 * ts >= since_ms (walking back in id order, it stops at the first older
 * row).  On error out is left as it was.
 */
int db_replay(struct db *db, const char *room, int64_t upto, unsigned limit,
    struct db_rows *out);
int db_recent(struct db *db, const char *room, unsigned limit, int64_t since_ms,
    struct db_rows *out);
/*
 * Full-text search in rooms, newest first.  Each whitespace-separated
 * word of words becomes a quoted FTS5 phrase, so user input is never
 * FTS syntax.  -1 with err set for input we refuse (no words, too many).
 */
int db_search(struct db *db, const char *const *rooms, size_t nrooms,
    const char *words, unsigned limit, struct db_rows *out, char *err,
    size_t errlen);
/*
 * The FTS5 query for words into buf; -1 if empty, -2 if more than 16
 * words, -3 if it does not fit in len.
 */
int db_fts_query(const char *words, char *buf, size_t len);

/*
 * Retention, one transaction per call, at most chunk rows.  Age deletes
 * the oldest rows (in id order) while their ts < cutoff_ms.
 */
int db_prune_age(
    struct db *db, int64_t cutoff_ms, unsigned chunk, size_t *ndeleted);
/* The room after `after` ("" = first) in index order; *room NULL at the end. */
int db_next_room(struct db *db, const char *after, char **room);
/* The newest id to delete so room keeps its keep newest rows; 0 = none. */
int db_room_cutoff(
    struct db *db, const char *room, unsigned keep, int64_t *cutoff);
int db_prune_room(struct db *db, const char *room, int64_t cutoff,
    unsigned chunk, size_t *ndeleted);
/* wal_checkpoint(PASSIVE) or (TRUNCATE). */
int db_checkpoint(struct db *db, int truncate);

/* Copy row (and its strings) onto the end of r; -1 when out of memory. */
int db_rows_push(struct db_rows *r, const struct history_row *row);
void db_rows_free(struct db_rows *r);

#endif
