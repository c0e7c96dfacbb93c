/*
 * The sqlite side of history; see db.h.
 *
 * Schema (user_version 2):
 *   messages(id INTEGER PRIMARY KEY, room, ts, sender, kind, text),
 *     index (room, id): replay, recent and the per-room retention;
 *   messages_fts: FTS5 over text with external content (messages),
 *     columnsize=0, automerge 16, crisismerge 64; the writer indexes each
 *     batch with one statement, a trigger removes deleted rows (rows
 *     never change);
 *   meta(key, value): 'last_id', the highest id ever stored, so ids are
 *     never reused after retention deleted the newest rows.
 * New versions append to migrations[]; each runs in its own transaction
 * with the user_version bump, so a crash leaves the old or the new schema.
 *
 * Ids are assigned by the caller (history_append, on the loop thread);
 * the insert names them explicitly.
 */
#include "config.h"

#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "clock.h"
#include "db.h"

#define DB_BUSY_MS 500 /* busy_timeout: only another process can hold us */
#define DB_YIELD_STEPS 1000 /* VM steps between clock checks, ~10-25 us */
#define DB_YIELD_US 1000 /* running time between yields */
#define DB_WAL_LIMIT (16 * 1024 * 1024) /* journal_size_limit, bytes */
#define DB_MAX_WORDS 16 /* search words */
#define DB_MAX_ROOMS 256 /* rooms per search */
#define DB_QUERY_BYTES 1024 /* the FTS5 query built from the words */
/* Words that always fit: 16 quoted words need 16 * 3 bytes more. */
#define DB_QUERY_MAX ((size_t)DB_QUERY_BYTES - 4 - DB_MAX_WORDS * 3)

static const char *const migrations[] = {
    /* 1 */
    "CREATE TABLE messages ("
    "  id INTEGER PRIMARY KEY,"
    "  room TEXT NOT NULL,"
    "  ts INTEGER NOT NULL," /* ms since the epoch */
    "  sender TEXT NOT NULL,"
    "  kind INTEGER NOT NULL,"
    "  text TEXT NOT NULL);"
    "CREATE INDEX messages_room_id ON messages(room, id);"
    "CREATE VIRTUAL TABLE messages_fts USING fts5(text,"
    "  content = 'messages', content_rowid = 'id',"
    "  tokenize = 'unicode61 remove_diacritics 2');"
    "CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN"
    "  INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text);"
    "END;"
    "CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN"
    "  INSERT INTO messages_fts(messages_fts, rowid, text)"
    "  VALUES ('delete', old.id, old.text);"
    "END;"
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)"
    "  WITHOUT ROWID;",
    /*
     * 2: the writer's throughput.  Indexing was most of a row's cost.
     * columnsize=0 drops the per-row docsize b-tree insert (only bm25
     * reads it; /search orders by id); automerge 16 merges segments less
     * often (searches read a few more), and crisismerge 64 keeps those
     * merges incremental (at 16, the default, each was one 100 ms commit);
     * and the writer indexes a batch with one INSERT ... SELECT instead of
     * a trigger.  The index is rebuilt once from messages.
     */
    "DROP TRIGGER messages_ai;"
    "DROP TRIGGER messages_ad;"
    "DROP TABLE messages_fts;"
    "CREATE VIRTUAL TABLE messages_fts USING fts5(text,"
    "  content = 'messages', content_rowid = 'id',"
    "  tokenize = 'unicode61 remove_diacritics 2', columnsize = 0);"
    "INSERT INTO messages_fts(messages_fts, rank) VALUES ('automerge', 16);"
    "INSERT INTO messages_fts(messages_fts, rank) VALUES ('crisismerge', 64);"
    "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');"
    "CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN"
    "  INSERT INTO messages_fts(messages_fts, rowid, text)"
    "  VALUES ('delete', old.id, old.text);"
    "END;",
};
#define DB_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/*
 * Rows go into messages one statement each; the batch is indexed at
 * commit with one INSERT ... SELECT.  FTS5 flushes its pending terms into
 * a new segment at every statement boundary, so indexing row by row (a
 * trigger) would write, and later merge, one segment per row.
 */

enum stmt_id {
	S_BEGIN,
	S_COMMIT,
	S_ROLLBACK,
	S_INSERT,
	S_INDEX,
	S_REPLAY,
	S_RECENT,
	S_LAST_ID,
	S_SAVE_LAST,
	S_AGE_SCAN,
	S_DELETE_UPTO,
	S_NEXT_ROOM,
	S_ROOM_CUTOFF,
	S_ROOM_DELETE,
	S_COUNT /* sentinel */
};

#define ROW_COLUMNS "id, ts, kind, room, sender, text"

static const char *const stmt_sql[S_COUNT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_INSERT] = "INSERT INTO messages (id, room, ts, sender, kind, text) "
		 "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [S_INDEX] = "INSERT INTO messages_fts (rowid, text) "
		"SELECT id, text FROM messages WHERE id BETWEEN ?1 AND ?2",
    [S_REPLAY] = "SELECT " ROW_COLUMNS " FROM messages "
		 "WHERE room = ?1 AND id <= ?2 ORDER BY id DESC LIMIT ?3",
    [S_RECENT] = "SELECT " ROW_COLUMNS " FROM messages "
		 "WHERE room = ?1 ORDER BY id DESC LIMIT ?2",
    [S_LAST_ID] =
	"SELECT max(coalesce((SELECT max(id) FROM messages), 0), "
	"coalesce((SELECT value FROM meta WHERE key = 'last_id'), 0))",
    [S_SAVE_LAST] = "INSERT INTO meta (key, value) VALUES ('last_id', "
		    "coalesce((SELECT max(id) FROM messages), 0)) "
		    "ON CONFLICT (key) DO UPDATE SET "
		    "value = max(value, excluded.value)",
    [S_AGE_SCAN] = "SELECT id, ts FROM messages ORDER BY id LIMIT ?1",
    [S_DELETE_UPTO] = "DELETE FROM messages WHERE id <= ?1",
    [S_NEXT_ROOM] = "SELECT room FROM messages WHERE room > ?1 "
		    "ORDER BY room LIMIT 1",
    [S_ROOM_CUTOFF] = "SELECT id FROM messages WHERE room = ?1 "
		      "ORDER BY id DESC LIMIT 1 OFFSET ?2",
    [S_ROOM_DELETE] = "DELETE FROM messages WHERE id IN (SELECT id FROM "
		      "messages WHERE room = ?1 AND id <= ?2 ORDER BY id "
		      "LIMIT ?3)",
};

struct db {
	sqlite3 *h;
	int readonly;
	size_t staged; /* rows inserted, not yet indexed, this transaction */
	int64_t first_id, last_id; /* their ids: the batch to index */
	uint64_t ran_since_us; /* yield_cb: the last yield */
	sqlite3_stmt *st[S_COUNT]; /* prepared on first use, then reused */
};

const char *
db_errmsg(struct db *db)
{
	return sqlite3_errmsg(db->h);
}

const char *
db_strerror(struct db *db, int rc)
{
	if (rc == -1)
		return "out of memory";
	if (sqlite3_errcode(db->h) == rc)
		return sqlite3_errmsg(db->h);
	return sqlite3_errstr(rc);
}

int
db_transient(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_FULL:
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
	case SQLITE_READONLY:
	case SQLITE_IOERR:
	case SQLITE_CANTOPEN:
	case SQLITE_NOMEM:
		return 1;
	}
	return 0;
}

/* The cached statement, reset and unbound; NULL on error (see errmsg). */
static sqlite3_stmt *
stmt(struct db *db, enum stmt_id id)
{
	sqlite3_stmt *s = db->st[id];

	if (s == NULL) {
		if (sqlite3_prepare_v3(db->h, stmt_sql[id], -1,
			SQLITE_PREPARE_PERSISTENT, &s, NULL) != SQLITE_OK)
			return NULL;
		db->st[id] = s;
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return s;
}

/* Run a statement that returns no rows we need. */
static int
run(struct db *db, enum stmt_id id)
{
	sqlite3_stmt *s = stmt(db, id);
	int rc;

	if (s == NULL)
		return sqlite3_errcode(db->h);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		;
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

void
db_rollback(struct db *db)
{
	/* Some errors (SQLITE_FULL among them) already rolled back. */
	if (!sqlite3_get_autocommit(db->h))
		run(db, S_ROLLBACK);
	db->staged = 0;
}

int
db_begin(struct db *db)
{
	db->staged = 0;
	return run(db, S_BEGIN);
}

/* The batch is indexed with one statement: one FTS5 segment per batch. */
int
db_commit(struct db *db)
{
	sqlite3_stmt *s;
	int rc;

	if (db->staged > 0) {
		if ((s = stmt(db, S_INDEX)) == NULL)
			return sqlite3_errcode(db->h);
		sqlite3_bind_int64(s, 1, db->first_id);
		sqlite3_bind_int64(s, 2, db->last_id);
		rc = sqlite3_step(s);
		sqlite3_reset(s);
		if (rc != SQLITE_DONE)
			return rc;
		db->staged = 0;
	}
	return run(db, S_COMMIT);
}

int
db_insert(struct db *db, const struct history_row *row)
{
	sqlite3_stmt *s = stmt(db, S_INSERT);
	int rc;

	if (s == NULL)
		return sqlite3_errcode(db->h);
	sqlite3_bind_int64(s, 1, row->id);
	sqlite3_bind_text(s, 2, row->room, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, row->ts_ms);
	sqlite3_bind_text(s, 4, row->sender, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 5, row->kind);
	sqlite3_bind_text(s, 6, row->text, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s); /* drop the STATIC pointers */
	if (rc != SQLITE_DONE)
		return rc;
	/* Ids come in increasing order; the range is the batch's alone. */
	if (db->staged++ == 0)
		db->first_id = row->id;
	db->last_id = row->id;
	return SQLITE_OK;
}

int
db_rows_push(struct db_rows *r, const struct history_row *row)
{
	size_t lroom = strlen(row->room) + 1, lsender = strlen(row->sender) + 1;
	size_t ltext = strlen(row->text) + 1, ncap;
	struct history_row *nrows, *dst;
	char *buf;

	if (r->n == r->cap) {
		ncap = r->cap == 0 ? 16 : r->cap * 2;
		if ((nrows = realloc(r->rows, ncap * sizeof *nrows)) == NULL)
			return -1;
		r->rows = nrows;
		r->cap = ncap;
	}
	if ((buf = malloc(lroom + lsender + ltext)) == NULL)
		return -1;
	dst = &r->rows[r->n++];
	*dst = *row;
	dst->room = memcpy(buf, row->room, lroom);
	dst->sender = memcpy(buf + lroom, row->sender, lsender);
	dst->text = memcpy(buf + lroom + lsender, row->text, ltext);
	return 0;
}

void
db_rows_free(struct db_rows *r)
{
	size_t i;

	for (i = 0; i < r->n; i++)
		free((char *)r->rows[i].room); /* the row's one allocation */
	free(r->rows);
	r->rows = NULL;
	r->n = r->cap = 0;
}

static void
rows_truncate(struct db_rows *r, size_t n)
{
	while (r->n > n)
		free((char *)r->rows[--r->n].room);
}

static const char *
column_str(sqlite3_stmt *s, int col)
{
	const unsigned char *p = sqlite3_column_text(s, col);

	return p != NULL ? (const char *)p : "";
}

/*
 * Step s (columns ROW_COLUMNS) and append its rows to out, stopping at
 * the first row older than min_ts; reverse them when the query ran
 * newest first but out wants oldest first.
 */
static int
fetch(struct db *db, sqlite3_stmt *s, int reverse, int64_t min_ts,
    struct db_rows *out)
{
	struct history_row row, tmp;
	size_t first = out->n, i, j;
	int rc;

	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		row.id = sqlite3_column_int64(s, 0);
		row.ts_ms = sqlite3_column_int64(s, 1);
		if (row.ts_ms < min_ts) {
			rc = SQLITE_DONE;
			break;
		}
		row.kind = sqlite3_column_int(s, 2);
		row.room = column_str(s, 3);
		row.sender = column_str(s, 4);
		row.text = column_str(s, 5);
		if (db_rows_push(out, &row) == -1) {
			rc = SQLITE_NOMEM;
			break;
		}
	}
	sqlite3_reset(s);
	if (rc != SQLITE_DONE) {
		rows_truncate(out, first);
		if (rc == SQLITE_NOMEM)
			return rc;
		return sqlite3_errcode(db->h) != SQLITE_OK
		    ? sqlite3_errcode(db->h)
		    : rc;
	}
	if (reverse && out->n > first)
		for (i = first, j = out->n - 1; i < j; i++, j--) {
			tmp = out->rows[i];
			out->rows[i] = out->rows[j];
			out->rows[j] = tmp;
		}
	return SQLITE_OK;
}

int
db_replay(struct db *db, const char *room, int64_t upto, unsigned limit,
    struct db_rows *out)
{
	sqlite3_stmt *s = stmt(db, S_REPLAY);

	if (s == NULL)
		return sqlite3_errcode(db->h);
	sqlite3_bind_text(s, 1, room, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, upto);
	sqlite3_bind_int64(s, 3, limit);
	return fetch(db, s, 1, INT64_MIN, out);
}

int
db_recent(struct db *db, const char *room, unsigned limit, int64_t since_ms,
    struct db_rows *out)
{
	sqlite3_stmt *s = stmt(db, S_RECENT);

	if (s == NULL)
		return sqlite3_errcode(db->h);
	sqlite3_bind_text(s, 1, room, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, limit);
	/*
	 * Walk back from the newest line and stop at the first older than
	 * since: ids and stamps rise together, and a room with a long past
	 * costs only what is returned (not an index on ts per insert).
	 */
	return fetch(db, s, 1, since_ms, out);
}

int
db_fts_query(const char *words, char *buf, size_t len)
{
	static const char space[] = " \t\r\n\v\f";
	const char *p = words;
	size_t o = 0, n, i, nwords = 0;

	/* Count first: too many words is its own answer, however long. */
	for (p += strspn(p, space); *p != '\0'; p += strspn(p, space)) {
		p += strcspn(p, space);
		if (++nwords > DB_MAX_WORDS)
			return -2;
	}
	if (nwords == 0)
		return -1;
	for (p = words;;) {
		p += strspn(p, space);
		if (*p == '\0')
			break;
		n = strcspn(p, space);
		/* Quote as a phrase: "word", with " doubled. */
		if (o + 4 > len)
			return -3;
		if (o > 0)
			buf[o++] = ' ';
		buf[o++] = '"';
		for (i = 0; i < n; i++) {
			if (o + 4 > len)
				return -3;
			if (p[i] == '"')
				buf[o++] = '"';
			buf[o++] = p[i];
		}
		buf[o++] = '"';
		p += n;
	}
	if (o >= len)
		return -3;
	buf[o] = '\0';
	return 0;
}

int
db_search(struct db *db, const char *const *rooms, size_t nrooms,
    const char *words, unsigned limit, struct db_rows *out, char *err,
    size_t errlen)
{
	char q[DB_QUERY_BYTES], sql[512 + DB_MAX_ROOMS * 8];
	sqlite3_stmt *s;
	size_t i, o;
	int rc;

	switch (db_fts_query(words, q, sizeof q)) {
	case -1:
		snprintf(err, errlen, "nothing to search for");
		return -1;
	case -2:
		snprintf(err, errlen, "at most %d words, please", DB_MAX_WORDS);
		return -1;
	case -3:
		snprintf(err, errlen,
		    "the words are too long (about %zu bytes at most)",
		    DB_QUERY_MAX);
		return -1;
	}
	if (nrooms == 0)
		return SQLITE_OK;
	if (nrooms > DB_MAX_ROOMS)
		nrooms = DB_MAX_ROOMS;
	o = (size_t)snprintf(sql, sizeof sql,
	    "SELECT m.id, m.ts, m.kind, m.room, m.sender, m.text "
	    "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
	    "WHERE messages_fts MATCH ?1 AND m.room IN (");
	for (i = 0; i < nrooms; i++)
		o += (size_t)snprintf(sql + o, sizeof sql - o, "%s?%zu",
		    i > 0 ? ", " : "", i + 2);
	snprintf(sql + o, sizeof sql - o,
	    ") ORDER BY messages_fts.rowid DESC LIMIT ?%zu", nrooms + 2);

	if ((rc = sqlite3_prepare_v2(db->h, sql, -1, &s, NULL)) != SQLITE_OK)
		return rc;
	sqlite3_bind_text(s, 1, q, -1, SQLITE_STATIC);
	for (i = 0; i < nrooms; i++)
		sqlite3_bind_text(s, (int)i + 2, rooms[i], -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, (int)nrooms + 2, limit);
	rc = fetch(db, s, 0, INT64_MIN, out);
	sqlite3_finalize(s);
	return rc;
}

int64_t
db_last_id(struct db *db)
{
	sqlite3_stmt *s = stmt(db, S_LAST_ID);
	int64_t id = -1;

	if (s == NULL)
		return -1;
	if (sqlite3_step(s) == SQLITE_ROW)
		id = sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return id;
}

/* Record the highest id before deleting, so it is never handed out again. */
static int
save_last_id(struct db *db)
{
	return run(db, S_SAVE_LAST);
}

/* Commit, or roll back and return the error. */
static int
finish_txn(struct db *db, int rc)
{
	if (rc == SQLITE_OK)
		rc = db_commit(db);
	if (rc != SQLITE_OK)
		db_rollback(db);
	return rc;
}

int
db_prune_age(struct db *db, int64_t cutoff_ms, unsigned chunk, size_t *ndeleted)
{
	sqlite3_stmt *s;
	int64_t last = 0;
	int rc;

	*ndeleted = 0;
	if ((rc = db_begin(db)) != SQLITE_OK)
		return rc;
	if ((s = stmt(db, S_AGE_SCAN)) == NULL)
		return finish_txn(db, sqlite3_errcode(db->h));
	/* The old prefix in id order: ids and stamps rise together. */
	sqlite3_bind_int64(s, 1, chunk);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW &&
	    sqlite3_column_int64(s, 1) < cutoff_ms) {
		last = sqlite3_column_int64(s, 0);
		(*ndeleted)++;
	}
	sqlite3_reset(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return finish_txn(db, sqlite3_errcode(db->h));
	if (last == 0)
		return finish_txn(db, SQLITE_OK);
	if ((rc = save_last_id(db)) != SQLITE_OK)
		return finish_txn(db, rc);
	if ((s = stmt(db, S_DELETE_UPTO)) == NULL)
		return finish_txn(db, sqlite3_errcode(db->h));
	sqlite3_bind_int64(s, 1, last);
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	rc = finish_txn(db, rc == SQLITE_DONE ? SQLITE_OK : rc);
	if (rc != SQLITE_OK)
		*ndeleted = 0;
	return rc;
}

int
db_next_room(struct db *db, const char *after, char **room)
{
	sqlite3_stmt *s = stmt(db, S_NEXT_ROOM);
	int rc;

	*room = NULL;
	if (s == NULL)
		return sqlite3_errcode(db->h);
	sqlite3_bind_text(s, 1, after, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW && (*room = strdup(column_str(s, 0))) == NULL)
		rc = SQLITE_NOMEM;
	sqlite3_reset(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int
db_room_cutoff(struct db *db, const char *room, unsigned keep, int64_t *cutoff)
{
	sqlite3_stmt *s = stmt(db, S_ROOM_CUTOFF);
	int rc;

	*cutoff = 0;
	if (s == NULL)
		return sqlite3_errcode(db->h);
	sqlite3_bind_text(s, 1, room, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, keep);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*cutoff = sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int
db_prune_room(struct db *db, const char *room, int64_t cutoff, unsigned chunk,
    size_t *ndeleted)
{
	sqlite3_stmt *s;
	int rc;

	*ndeleted = 0;
	if ((rc = db_begin(db)) != SQLITE_OK)
		return rc;
	if ((rc = save_last_id(db)) != SQLITE_OK)
		return finish_txn(db, rc);
	if ((s = stmt(db, S_ROOM_DELETE)) == NULL)
		return finish_txn(db, sqlite3_errcode(db->h));
	sqlite3_bind_text(s, 1, room, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, cutoff);
	sqlite3_bind_int64(s, 3, chunk);
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE)
		*ndeleted = (size_t)sqlite3_changes(db->h);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	rc = finish_txn(db, rc == SQLITE_DONE ? SQLITE_OK : rc);
	if (rc != SQLITE_OK)
		*ndeleted = 0;
	return rc;
}

int
db_checkpoint(struct db *db, int truncate)
{
	return sqlite3_wal_checkpoint_v2(db->h, NULL,
	    truncate ? SQLITE_CHECKPOINT_TRUNCATE : SQLITE_CHECKPOINT_PASSIVE,
	    NULL, NULL);
}

int
db_moved(struct db *db)
{
	int moved = 0;

	if (sqlite3_file_control(
		db->h, "main", SQLITE_FCNTL_HAS_MOVED, &moved) != SQLITE_OK)
		return 0;
	return moved != 0;
}

int
db_set_max_pages(struct db *db, int64_t pages)
{
	char sql[64];

	snprintf(
	    sql, sizeof sql, "PRAGMA max_page_count = %lld", (long long)pages);
	return sqlite3_exec(db->h, sql, NULL, NULL, NULL);
}

/* A single-integer PRAGMA or query; -1 on error. */
static int64_t
query_int(struct db *db, const char *sql)
{
	sqlite3_stmt *s;
	int64_t v = -1;

	if (sqlite3_prepare_v2(db->h, sql, -1, &s, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

static int
migrate(struct db *db, const char *path, char *err, size_t errlen)
{
	char sql[64];
	int64_t v;
	int rc;

	if ((v = query_int(db, "PRAGMA user_version")) < 0)
		goto fail;
	if (v > DB_VERSION) {
		snprintf(err, errlen,
		    "%s: schema version %lld is newer than "
		    "this parleyd understands (%d)",
		    path, (long long)v, DB_VERSION);
		return -1;
	}
	for (; v < DB_VERSION; v++) {
		snprintf(sql, sizeof sql, "PRAGMA user_version = %lld",
		    (long long)v + 1);
		if (sqlite3_exec(db->h, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
		    SQLITE_OK)
			goto fail;
		rc = sqlite3_exec(db->h, migrations[v], NULL, NULL, NULL);
		if (rc == SQLITE_OK)
			rc = sqlite3_exec(db->h, sql, NULL, NULL, NULL);
		if (rc == SQLITE_OK)
			rc = sqlite3_exec(db->h, "COMMIT", NULL, NULL, NULL);
		if (rc != SQLITE_OK) {
			snprintf(err, errlen,
			    "%s: migration to schema %lld: "
			    "%s",
			    path, (long long)v + 1, sqlite3_errmsg(db->h));
			db_rollback(db);
			return -1;
		}
	}
	return 0;
fail:
	snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(db->h));
	return -1;
}

static int
setup_writer(struct db *db, const char *path, char *err, size_t errlen)
{
	sqlite3_stmt *s;
	char sql[128];
	int wal = 0;

	/* The first statement reads the header: "not a database" shows here. */
	if (sqlite3_prepare_v2(
		db->h, "PRAGMA journal_mode = WAL", -1, &s, NULL) != SQLITE_OK)
		goto fail;
	if (sqlite3_step(s) == SQLITE_ROW)
		wal = strcmp(column_str(s, 0), "wal") == 0;
	sqlite3_finalize(s);
	if (!wal) {
		if (sqlite3_errcode(db->h) != SQLITE_OK &&
		    sqlite3_errcode(db->h) != SQLITE_DONE)
			goto fail;
		snprintf(err, errlen, "%s: cannot enable WAL mode", path);
		return -1;
	}
	snprintf(sql, sizeof sql,
	    "PRAGMA synchronous = NORMAL; "
	    "PRAGMA journal_size_limit = %d; PRAGMA temp_store = MEMORY",
	    DB_WAL_LIMIT);
	if (sqlite3_exec(db->h, sql, NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	if (migrate(db, path, err, errlen) == -1)
		return -1;
	return 0;
fail:
	snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(db->h));
	return -1;
}

/*
 * Every connection runs on a worker thread below the event loop
 * ([server] worker_nice).  On a core the loop shares, a thread that is
 * running keeps it until the next scheduler tick (4 ms at HZ=250) unless
 * it blocks: the loop, runnable and waiting, saw stalls of 4-11 ms while
 * a commit or a long search ran.  So a statement yields after each
 * DB_YIELD_US of running: a waiting loop gets the core back within about
 * a millisecond; with no one waiting the yield costs one system call.
 * Yielding more often (every 50 us) cost the writer a third more CPU
 * per line in cache misses and switches, and starved it under a
 * saturated loop.
 */
static int
yield_cb(void *arg)
{
	struct db *db = arg;
	uint64_t now = clock_mono_us();

	if (now - db->ran_since_us >= DB_YIELD_US) {
		sched_yield();
		db->ran_since_us = clock_mono_us();
	}
	return 0; /* go on */
}

struct db *
db_open(const char *path, int readonly, size_t cache_bytes, char *err,
    size_t errlen)
{
	struct db *db;
	int flags = SQLITE_OPEN_NOMUTEX, i;
	int64_t v;
	char sql[64];

	if ((db = calloc(1, sizeof *db)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	db->readonly = readonly;
	flags |= readonly ? SQLITE_OPEN_READONLY
			  : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
	if (sqlite3_open_v2(path, &db->h, flags, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path,
		    db->h != NULL ? sqlite3_errmsg(db->h) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(db->h, DB_BUSY_MS);
	sqlite3_progress_handler(db->h, DB_YIELD_STEPS, yield_cb, db);
	/*
	 * Each connection (the writer and each reader thread) keeps its own
	 * page cache, which fills as the file grows: cap it, so memory
	 * stays flat once the database outgrows it.
	 */
	snprintf(
	    sql, sizeof sql, "PRAGMA cache_size = -%zu", cache_bytes / 1024);
	if (sqlite3_exec(db->h, sql, NULL, NULL, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(db->h));
		goto fail;
	}
	if (!readonly && setup_writer(db, path, err, errlen) == -1)
		goto fail;
	if (readonly) {
		v = query_int(db, "PRAGMA user_version");
		if (v != DB_VERSION) {
			snprintf(err, errlen, "%s: %s", path,
			    v < 0 ? sqlite3_errmsg(db->h)
				  : "unexpected schema version");
			goto fail;
		}
	}
	/* Prepare up front: a foreign schema fails here, not on first use. */
	for (i = 0; i < S_COUNT; i++) {
		if (readonly && i != S_REPLAY && i != S_RECENT)
			continue;
		if (stmt(db, (enum stmt_id)i) == NULL) {
			snprintf(err, errlen, "%s: unexpected schema: %s", path,
			    sqlite3_errmsg(db->h));
			goto fail;
		}
	}
	return db;
fail:
	db_close(db);
	return NULL;
}

void
db_close(struct db *db)
{
	int i;

	if (db == NULL)
		return;
	for (i = 0; i < S_COUNT; i++)
		sqlite3_finalize(db->st[i]);
	sqlite3_close(db->h);
	free(db);
}
