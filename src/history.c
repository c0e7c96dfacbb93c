/*
 * Chat history: the loop-side API, the writer thread and the reader pool.
 * The sqlite statements live in db.c.
 *
 * DESIGN (after Redis bio.c and memcached thread.c)
 *
 * Ids.  history_append runs on the loop thread and assigns ids itself
 * (the highest id ever stored, read at open, plus one, plus one...), so
 * the loop knows a line's id when it broadcasts it.  A dropped line gets
 * no id.
 *
 * Writer.  One thread owns the writing connection.  The loop appends an
 * item (a line, or a control item: replay, flush, prune, stop...) to
 * h->queue under h->lock and signals h->wake only when the writer sleeps
 * and now has a reason to wake: a control item, or enough lines to fill
 * the batch it is holding (h->wake_at).  The writer splices the whole
 * queue out under the lock (O(1)) and works through it with no lock
 * held.  Lines move to its private pending list; a transaction commits
 * the first batch_size pending lines as soon as there are that many, or
 * when the oldest has waited batch_ms.  Statements are prepared once.
 *
 * Depth and drops.  h->depth counts lines accepted and not yet committed
 * (queued or pending); past queue_limit history_append drops the line,
 * counts it and logs once per incident: "queue full" on the first drop,
 * "recovered; N dropped" when depth has fallen to half the limit.
 *
 * Faults.  A failed commit (full disk, busy, read-only, I/O...) rolls
 * back and keeps the lines pending, in memory, still counted in depth, so
 * the queue limit bounds them.  The writer retries with exponential
 * backoff (50 ms .. 5 s), logs the fault once with sqlite's message and
 * once on recovery, counts write_errors and sets degraded meanwhile.  Any
 * other error is handled the same way (it is logged the same way, and if
 * it never clears the queue fills and lines are dropped): chat goes on.
 *
 * The file.  Within FILE_CHECK_US of a commit the writer checks that
 * the path still names the open file (SQLITE_FCNTL_HAS_MOVED) and is
 * readable and writable (access()); a change is logged once, and once
 * more when undone.  It does not reopen: the open connections keep this
 * run's history working, and a reopen beside a stale -wal is how a
 * database gets corrupted.
 *
 * Replay seam.  history_replay is a control item in the writer's queue,
 * behind every line appended before it.  The writer answers it from the
 * committed rows (SELECT ... id <= upto ORDER BY id DESC LIMIT n on its
 * own connection) plus its pending lines of that room: since commits go
 * in id order, every pending id is above every committed one, so the
 * answer is exact whether or not the batch has been committed yet, and
 * during a write fault too.  It does not force a commit: a burst of joins
 * does not break batching.  (If the read fails as well, the callback gets
 * the error.)
 *
 * Results to the loop.  Queries for /history and /search run on h->readers,
 * a workq of 2 threads each with its own read-only connection (WAL lets
 * them read beside the writer); they see committed lines only.  The
 * writer posts a replay answer by submitting a job with an empty work
 * function to that same workq: its done callback delivers the rows on the
 * loop, a completion queued behind real work as in bio.c, with no second
 * wake-up mechanism.  (Should that submit fail, out of memory, the writer
 * keeps the answer and retries; history_close delivers what is left.)
 *
 * Retention.  Once after open and every 60 s the writer prunes, one
 * transaction of at most PRUNE_CHUNK rows per pass through its loop, so
 * lines keep flowing between chunks: first lines older than max_age
 * (oldest ids first), then rooms over max_per_room (all rooms on the
 * first pass; afterwards only rooms written since the last pass, since
 * no other room can have grown).  A passive checkpoint follows every
 * CHECKPOINT_ROWS lines, a TRUNCATE checkpoint runs every 10 minutes and
 * at close, and journal_size_limit caps what the WAL keeps.
 *
 * Shutdown.  history_close queues a stop item (allocated at open, so it
 * cannot fail) behind everything else; the writer commits every pending
 * line (retrying a fault for CLOSE_RETRY_US before it gives up and logs
 * the loss), checkpoints (TRUNCATE) and exits; close joins it, then frees
 * the reader workq, which runs every pending done callback (replay
 * answers included) on the caller's thread, and closes the writing
 * connection last, so sqlite removes the WAL and shm files.
 *
 * Locks.  h->lock guards the queue, the counters the writer publishes and
 * the flush handshake; it is a leaf: nothing else is locked while it is
 * held, and neither sqlite nor libevent nor workq is called under it.  The
 * workq's own locks are taken only through workq_submit, with h->lock not
 * held.  The loop therefore never waits on a lock held during sqlite work.
 * Fields marked "loop" are touched only by the loop thread, "writer" only
 * by the writer (and by close after the join).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "conf.h"
#include "db.h"
#include "history.h"
#include "log.h"
#include "strmap.h"
#include "workq.h"

#define READER_THREADS 2
#define READS_MAX 256 /* /history and /search in flight */
#define REPLAYS_MAX 100000 /* replays in flight */
#define BACKOFF_MIN_US 50000
#define BACKOFF_MAX_US 5000000
#define CLOSE_RETRY_US 5000000 /* a fault at close: retry this long */
#define PRUNE_EVERY_US 60000000
#define PRUNE_CHUNK 5000
#define TRUNCATE_EVERY_US 600000000
#define CHECKPOINT_ROWS 20000
#define FILE_CHECK_US 1000000 /* is the file still there and usable? */
#define NEVER UINT64_MAX

enum item_type {
	ITEM_LINE, /* a chat line */
	ITEM_REPLAY, /* answer a replay */
	ITEM_FLUSH, /* commit pending lines now */
	ITEM_PRUNE, /* test hook: full retention pass now */
	ITEM_MAX_PAGES, /* test hook: PRAGMA max_page_count */
	ITEM_STOP /* commit everything and exit */
};

struct item {
	enum item_type type;
	STAILQ_ENTRY(item) entry;
	struct history_row row; /* LINE; REPLAY: room, and id = upto */
	uint64_t taken_us; /* LINE: when the writer took it */
	unsigned limit; /* REPLAY */
	struct query *answer; /* REPLAY: allocated up front, never fails */
	int64_t value; /* MAX_PAGES */
	char data[]; /* the strings row points to */
};
STAILQ_HEAD(itemlist, item);

enum query_type { Q_RECENT, Q_SEARCH, Q_ANSWER };

/* A reader-pool job, or a writer's answer on its way to the loop. */
struct query {
	struct history *h;
	enum query_type type;
	uint64_t owner;
	history_result_fn fn;
	void *arg;
	unsigned limit;
	int64_t since_ms;
	char *room; /* RECENT */
	char **rooms; /* SEARCH */
	size_t nrooms;
	char *words;
	struct db_rows rows; /* the answer */
	int failed;
	char err[200];
	STAILQ_ENTRY(query) entry; /* writer: undelivered answers */
};
STAILQ_HEAD(querylist, query);

enum prune_phase { PRUNE_AGE, PRUNE_ROOMS };

/* Writer thread only (and history_close after the join). */
struct writer {
	struct db *db;
	struct itemlist pending; /* taken, not committed, in id order */
	size_t npending;
	int degraded;
	uint64_t fault_errors; /* in this incident */
	uint64_t backoff_us;
	uint64_t retry_at;
	int force; /* a flush asked to commit now */
	int stop;
	uint64_t stop_at;
	size_t since_checkpoint;
	uint64_t next_truncate;
	struct querylist undelivered;
	uint64_t next_file_check;
	int file_moved; /* the path no longer names our file */
	int file_unusable; /* the path is not readable and writable */
	int wrote; /* committed since the last check_file */

	/* Retention. */
	struct strmap *dirty; /* rooms written since the last pass */
	uint64_t next_prune;
	int pruned_once;
	int prune_active;
	int prune_failing;
	enum prune_phase phase;
	char **rooms;
	size_t nrooms, room_idx;
	int64_t cutoff; /* current room: delete ids <= this; 0 = unknown */
	size_t prune_deleted;
};

struct history {
	struct event_base *base;
	char *path;
	unsigned batch_size;
	uint64_t batch_us;
	size_t queue_limit;
	uint64_t max_age_ms;
	unsigned max_per_room;
	size_t cache_size; /* sqlite page cache per connection */
	int worker_nice; /* of the writer and reader threads */
	struct workq *readers;
	pthread_t writer_tid;

	/* loop */
	int64_t last_id;
	uint64_t appended;
	uint64_t dropped;
	uint64_t dropped_incident;
	int dropping;
	unsigned reads_inflight;
	unsigned replays_inflight;
	int closing;
	struct item *stop_item;

	/* h->lock */
	pthread_mutex_t lock;
	pthread_cond_t wake; /* writer: work arrived */
	pthread_cond_t committed; /* flush_wait: committed_id moved */
	struct itemlist queue;
	size_t nqueued; /* lines in queue */
	size_t nctl; /* control items in queue */
	size_t depth; /* lines accepted, not yet committed */
	size_t wake_at; /* the sleeping writer wants this many lines */
	int waiting; /* the writer sleeps on h->wake */
	int64_t flush_target; /* flush_wait sleeps until this id is in; 0 */
	int64_t committed_id;
	uint64_t written, batches, write_errors;
	uint64_t last_commit_us, max_commit_us;
	int degraded;
	int file_problem; /* the writer's check_file finds one */
	char reader_err[256]; /* a reader's open failure, for history_open */

	/* writer */
	struct writer w;
};

/* Wait on cond until the monotonic time at_us; ETIMEDOUT when past. */
static int
wait_until(pthread_cond_t *cond, pthread_mutex_t *lock, uint64_t at_us)
{
	struct timespec ts;

	if (at_us == NEVER)
		return pthread_cond_wait(cond, lock);
	ts.tv_sec = (time_t)(at_us / 1000000);
	ts.tv_nsec = (long)(at_us % 1000000) * 1000;
	return pthread_cond_timedwait(cond, lock, &ts);
}

static struct item *
item_new(
    enum item_type type, const char *room, const char *sender, const char *text)
{
	size_t lr = room ? strlen(room) + 1 : 0,
	       ls = sender ? strlen(sender) + 1 : 0;
	size_t lt = text ? strlen(text) + 1 : 0;
	struct item *it;

	if ((it = calloc(1, sizeof *it + lr + ls + lt)) == NULL)
		return NULL;
	it->type = type;
	if (room != NULL)
		it->row.room = memcpy(it->data, room, lr);
	if (sender != NULL)
		it->row.sender = memcpy(it->data + lr, sender, ls);
	if (text != NULL)
		it->row.text = memcpy(it->data + lr + ls, text, lt);
	return it;
}

/* Loop: queue a control item and wake the writer. */
static void
enqueue_control(struct history *h, struct item *it)
{
	pthread_mutex_lock(&h->lock);
	STAILQ_INSERT_TAIL(&h->queue, it, entry);
	h->nctl++;
	if (h->waiting)
		pthread_cond_signal(&h->wake);
	pthread_mutex_unlock(&h->lock);
}

/* ---- Results to the loop ---------------------------------------------- */

static void
query_free(struct query *q)
{
	size_t i;

	db_rows_free(&q->rows);
	free(q->room);
	for (i = 0; i < q->nrooms; i++)
		free(q->rooms[i]);
	free(q->rooms);
	free(q->words);
	free(q);
}

/* Loop: hand the result to its callback. */
static void
query_deliver(struct query *q)
{
	struct history *h = q->h;

	if (q->type == Q_ANSWER)
		h->replays_inflight--;
	else
		h->reads_inflight--;
	if (q->failed)
		q->fn(q->owner, q->arg, NULL, 0, q->err);
	else
		q->fn(q->owner, q->arg, q->rows.rows, q->rows.n, NULL);
	query_free(q);
}

static void
query_done(uint64_t owner, void *arg)
{
	(void)owner;
	query_deliver(arg);
}

static void
query_fail(struct query *q, struct db *db, int rc)
{
	db_rows_free(&q->rows);
	q->failed = 1;
	if (rc != -1 || q->err[0] == '\0')
		snprintf(q->err, sizeof q->err, "%s", db_strerror(db, rc));
}

/* Reader thread: ctx is its read-only connection. */
static void
query_work(void *ctx, void *arg)
{
	struct db *db = ctx;
	struct query *q = arg;
	int rc = 0;

	switch (q->type) {
	case Q_RECENT:
		rc = db_recent(db, q->room, q->limit, q->since_ms, &q->rows);
		break;
	case Q_SEARCH:
		rc = db_search(db, (const char *const *)q->rooms, q->nrooms,
		    q->words, q->limit, &q->rows, q->err, sizeof q->err);
		break;
	case Q_ANSWER:
		break; /* the writer's answer: only its done callback matters */
	}
	if (rc != 0)
		query_fail(q, db, rc);
}

static void
nothing(void *ctx, void *arg)
{
	(void)ctx;
	(void)arg;
}

/* Writer: post an answer to the loop through the reader pool. */
static void
post_answer(struct history *h, struct query *q)
{
	if (workq_submit(h->readers, q->owner, nothing, query_done, q) == -1) {
		log_err("history: cannot post a replay answer: %s; retrying",
		    strerror(errno));
		STAILQ_INSERT_TAIL(&h->w.undelivered, q, entry);
	}
}

static void
repost_answers(struct history *h)
{
	struct querylist l = STAILQ_HEAD_INITIALIZER(l);
	struct query *q;

	STAILQ_CONCAT(&l, &h->w.undelivered);
	while ((q = STAILQ_FIRST(&l)) != NULL) {
		STAILQ_REMOVE_HEAD(&l, entry);
		if (workq_submit(
			h->readers, q->owner, nothing, query_done, q) == -1)
			STAILQ_INSERT_TAIL(&h->w.undelivered, q, entry);
	}
}

static void *
reader_init(void *arg)
{
	struct history *h = arg;
	struct db *db;
	char err[256];

	if ((db = db_open(h->path, 1, h->cache_size, err, sizeof err)) ==
	    NULL) {
		pthread_mutex_lock(&h->lock);
		snprintf(h->reader_err, sizeof h->reader_err, "%s", err);
		pthread_mutex_unlock(&h->lock);
	}
	return db;
}

static void
reader_fini(void *ctx)
{
	db_close(ctx);
}

/* ---- Writer: commits and faults --------------------------------------- */

static void
fault(struct history *h, int rc, const char *msg)
{
	struct writer *w = &h->w;

	w->retry_at = clock_mono_us() + w->backoff_us;
	w->backoff_us = w->backoff_us * 2 > BACKOFF_MAX_US ? BACKOFF_MAX_US
							   : w->backoff_us * 2;
	w->fault_errors++;
	pthread_mutex_lock(&h->lock);
	h->write_errors++;
	h->degraded = 1;
	pthread_mutex_unlock(&h->lock);
	if (w->degraded)
		return;
	w->degraded = 1;
	log_err("history: cannot write %s: %s%s; holding %zu line(s) in "
		"memory and retrying",
	    h->path, msg, db_transient(rc) ? "" : " (unexpected error)",
	    w->npending);
}

static void
mark_dirty(struct history *h, const char *room)
{
	struct writer *w = &h->w;

	if (h->max_per_room > 0 && w->dirty != NULL &&
	    strmap_get(w->dirty, room) == NULL)
		strmap_put(w->dirty, room, w); /* any non-NULL value */
}

/* Commit the first batch_size pending lines; -1 on a fault. */
static int
commit_batch(struct history *h)
{
	struct writer *w = &h->w;
	struct item *it, *last = NULL;
	size_t n = 0, i;
	uint64_t t0 = clock_mono_us(), took;
	char msg[256];
	int rc;

	rc = db_begin(w->db);
	for (it = STAILQ_FIRST(&w->pending);
	     it != NULL && rc == 0 && n < h->batch_size;
	     it = STAILQ_NEXT(it, entry), n++)
		rc = db_insert(w->db, &it->row);
	if (rc == 0)
		rc = db_commit(w->db);
	if (rc != 0) {
		snprintf(msg, sizeof msg, "%s", db_strerror(w->db, rc));
		db_rollback(w->db);
		fault(h, rc, msg);
		return -1;
	}
	took = clock_mono_us() - t0;

	for (i = 0; i < n; i++) {
		it = STAILQ_FIRST(&w->pending);
		STAILQ_REMOVE_HEAD(&w->pending, entry);
		mark_dirty(h, it->row.room);
		free(last);
		last = it;
	}
	w->npending -= n;
	w->since_checkpoint += n;
	w->wrote = 1;
	pthread_mutex_lock(&h->lock);
	h->depth -= n;
	h->written += n;
	h->batches++;
	h->last_commit_us = took;
	if (took > h->max_commit_us)
		h->max_commit_us = took;
	h->committed_id = last->row.id;
	h->degraded = 0;
	if (h->flush_target > 0 && h->committed_id >= h->flush_target)
		pthread_cond_broadcast(&h->committed);
	pthread_mutex_unlock(&h->lock);
	free(last);

	w->backoff_us = BACKOFF_MIN_US;
	if (w->degraded) {
		w->degraded = 0;
		log_notice("history: writes to %s recovered after %llu failed "
			   "attempt(s)",
		    h->path, (unsigned long long)w->fault_errors);
		w->fault_errors = 0;
	}
	return 0;
}

/* Commit what is due: full batches, old lines, everything on flush/stop. */
static void
commit_due(struct history *h)
{
	struct writer *w = &h->w;
	struct item *first;
	uint64_t now;

	while ((first = STAILQ_FIRST(&w->pending)) != NULL) {
		now = clock_mono_us();
		if (w->degraded) {
			if (now < w->retry_at)
				break;
		} else if (!w->force && !w->stop &&
		    w->npending < h->batch_size &&
		    now < first->taken_us + h->batch_us)
			break;
		if (commit_batch(h) == -1)
			break;
	}
	w->force = 0;
}

/* At close, after CLOSE_RETRY_US of failures: log the loss, free. */
static void
give_up(struct history *h)
{
	struct writer *w = &h->w;
	struct item *it;

	log_err("history: giving up at exit; %zu line(s) were not saved",
	    w->npending);
	while ((it = STAILQ_FIRST(&w->pending)) != NULL) {
		STAILQ_REMOVE_HEAD(&w->pending, entry);
		free(it);
	}
	pthread_mutex_lock(&h->lock);
	h->depth -= w->npending;
	pthread_mutex_unlock(&h->lock);
	w->npending = 0;
}

/* ---- Writer: replay ---------------------------------------------------- */

static int
replay_match(const struct item *it, const struct item *req)
{
	return it->row.id <= req->row.id &&
	    strcmp(it->row.room, req->row.room) == 0;
}

/* Committed rows from the database, then the pending ones, oldest first. */
static void
answer_replay(struct history *h, struct item *req)
{
	struct writer *w = &h->w;
	struct query *q = req->answer;
	struct item *it;
	size_t count = 0, skip;
	int rc;

	for (it = STAILQ_FIRST(&w->pending); it != NULL;
	     it = STAILQ_NEXT(it, entry))
		count += replay_match(it, req);
	skip = count > req->limit ? count - req->limit : 0;
	if (count - skip < req->limit) {
		rc = db_replay(w->db, req->row.room, req->row.id,
		    req->limit - (unsigned)(count - skip), &q->rows);
		if (rc != 0)
			query_fail(q, w->db, rc);
	}
	for (it = STAILQ_FIRST(&w->pending); it != NULL && !q->failed;
	     it = STAILQ_NEXT(it, entry)) {
		if (!replay_match(it, req))
			continue;
		if (skip > 0) {
			skip--;
			continue;
		}
		if (db_rows_push(&q->rows, &it->row) == -1)
			query_fail(q, w->db, -1);
	}
	post_answer(h, q);
}

/* ---- Writer: retention ------------------------------------------------- */

static void
collect_room(const char *key, void *value, void *arg)
{
	struct writer *w = arg;

	(void)value;
	if ((w->rooms[w->nrooms] = strdup(key)) != NULL)
		w->nrooms++;
}

static void
prune_end(struct history *h, int rc)
{
	struct writer *w = &h->w;
	size_t i;

	for (i = 0; i < w->nrooms; i++)
		free(w->rooms[i]);
	free(w->rooms);
	w->rooms = NULL;
	w->nrooms = w->room_idx = 0;
	w->prune_active = 0;
	if (rc != 0)
		w->pruned_once =
		    0; /* the dirty set is lost: next pass is full */
	if (rc != 0 && !w->prune_failing) {
		w->prune_failing = 1;
		log_warn("history: retention pass failed: %s; will retry",
		    db_strerror(w->db, rc));
	} else if (rc == 0 && w->prune_failing) {
		w->prune_failing = 0;
		log_notice("history: retention works again");
	}
	if (rc == 0 && w->prune_deleted > 0)
		log_info(
		    "history: retention removed %zu line(s)", w->prune_deleted);
}

/* The rooms to check for max_per_room: all of them, or the dirty ones. */
static int
prune_rooms(struct history *h, int full)
{
	struct writer *w = &h->w;
	char *room, *after = NULL, **nrooms;
	size_t cap = 0;
	int rc;

	if (!full && w->dirty != NULL) {
		w->rooms = calloc(strmap_count(w->dirty) + 1, sizeof *w->rooms);
		if (w->rooms == NULL)
			return -1;
		strmap_foreach(w->dirty, collect_room, w);
		strmap_free(w->dirty);
		w->dirty = strmap_new();
		return 0;
	}
	for (;;) {
		rc = db_next_room(w->db, after != NULL ? after : "", &room);
		if (rc != 0 || room == NULL)
			return rc;
		if (w->nrooms == cap) {
			cap = cap ? cap * 2 : 64;
			if ((nrooms = realloc(
				 w->rooms, cap * sizeof *nrooms)) == NULL) {
				free(room);
				return -1;
			}
			w->rooms = nrooms;
		}
		w->rooms[w->nrooms++] = after = room;
	}
}

static void
prune_begin(struct history *h, int full)
{
	struct writer *w = &h->w;
	int rc = 0;

	if (h->max_age_ms == 0 && h->max_per_room == 0)
		return;
	w->prune_active = 1;
	w->prune_deleted = 0;
	w->phase = h->max_age_ms > 0 ? PRUNE_AGE : PRUNE_ROOMS;
	w->cutoff = 0;
	if (h->max_per_room > 0) {
		if (full) {
			/* A full pass covers the dirty rooms too. */
			strmap_free(w->dirty);
			w->dirty = strmap_new();
		}
		rc = prune_rooms(h, full);
	}
	if (rc != 0)
		prune_end(h, rc);
}

/* One transaction (or one index probe) of the current pass. */
static void
prune_step(struct history *h)
{
	struct writer *w = &h->w;
	size_t n = 0;
	int64_t cutoff;
	int rc;

	if (w->phase == PRUNE_AGE) {
		cutoff = clock_real_ms() - (int64_t)h->max_age_ms;
		rc = db_prune_age(w->db, cutoff, PRUNE_CHUNK, &n);
		w->prune_deleted += n;
		if (rc != 0) {
			prune_end(h, rc);
			return;
		}
		if (n < PRUNE_CHUNK)
			w->phase = PRUNE_ROOMS;
		return;
	}
	if (w->room_idx >= w->nrooms) {
		prune_end(h, 0);
		return;
	}
	if (w->cutoff == 0) {
		rc = db_room_cutoff(
		    w->db, w->rooms[w->room_idx], h->max_per_room, &cutoff);
		if (rc != 0) {
			prune_end(h, rc);
			return;
		}
		if (cutoff == 0) {
			w->room_idx++; /* within its limit */
			return;
		}
		w->cutoff = cutoff;
	}
	rc = db_prune_room(
	    w->db, w->rooms[w->room_idx], w->cutoff, PRUNE_CHUNK, &n);
	w->prune_deleted += n;
	if (rc != 0) {
		prune_end(h, rc);
		return;
	}
	if (n < PRUNE_CHUNK) {
		w->room_idx++;
		w->cutoff = 0;
	}
}

static void
publish_file_problem(struct history *h)
{
	struct writer *w = &h->w;

	pthread_mutex_lock(&h->lock);
	h->file_problem = w->file_moved || w->file_unusable;
	pthread_mutex_unlock(&h->lock);
}

/*
 * Someone removed, replaced or chmodded the file under us.  The open
 * connections go on with the file they have, so chat and history go on
 * for this run; the operator learns it now, once per incident, rather
 * than from a restart that cannot open the file or finds it empty.
 */
static void
check_file(struct history *h, uint64_t now)
{
	struct writer *w = &h->w;
	int moved, unusable, err = 0;

	if (now < w->next_file_check)
		return;
	w->next_file_check = now + FILE_CHECK_US;
	w->wrote = 0;
	moved = db_moved(w->db);
	if (moved && !w->file_moved)
		log_err("history: %s was removed or replaced while open; "
			"lines still go to the open file, which is lost at "
			"exit: put it back, or restart to begin a new one",
		    h->path);
	else if (!moved && w->file_moved)
		log_notice("history: %s is back", h->path);
	w->file_moved = moved;
	if (moved) {
		publish_file_problem(h);
		return; /* access() would be about the other file */
	}
	unusable = access(h->path, R_OK | W_OK) == -1;
	if (unusable)
		err = errno;
	if (unusable && !w->file_unusable)
		log_err("history: %s is no longer readable and writable (%s); "
			"the open file still works, but a restart cannot "
			"open it",
		    h->path, strerror(err));
	else if (!unusable && w->file_unusable)
		log_notice("history: %s is usable again", h->path);
	w->file_unusable = unusable;
	publish_file_problem(h);
}

static void
maintain(struct history *h)
{
	struct writer *w = &h->w;
	uint64_t now = clock_mono_us();
	int full;

	check_file(h, now);
	if (w->degraded)
		return; /* a write fault: leave the database alone */
	if (!w->prune_active && now >= w->next_prune) {
		full = !w->pruned_once;
		w->pruned_once = 1; /* prune_end clears it on failure */
		prune_begin(h, full);
		w->next_prune = now + PRUNE_EVERY_US;
	}
	if (w->prune_active)
		prune_step(h);
	if (w->since_checkpoint >= CHECKPOINT_ROWS) {
		db_checkpoint(w->db, 0);
		w->since_checkpoint = 0;
	}
	if (now >= w->next_truncate && w->npending == 0) {
		db_checkpoint(w->db, 1);
		w->next_truncate = now + TRUNCATE_EVERY_US;
	}
}

/* ---- Writer: the loop -------------------------------------------------- */

static void
handle(struct history *h, struct item *it, uint64_t now)
{
	struct writer *w = &h->w;

	switch (it->type) {
	case ITEM_LINE:
		it->taken_us = now;
		STAILQ_INSERT_TAIL(&w->pending, it, entry);
		w->npending++;
		if (!w->degraded && w->npending >= h->batch_size)
			commit_batch(h);
		return;
	case ITEM_REPLAY:
		answer_replay(h, it);
		break;
	case ITEM_FLUSH:
		w->force = 1;
		break;
	case ITEM_PRUNE:
		commit_due(h);
		if (w->prune_active)
			prune_end(h, 0);
		if (!w->degraded) {
			prune_begin(h, 1);
			while (w->prune_active)
				prune_step(h);
		}
		break;
	case ITEM_MAX_PAGES:
		db_set_max_pages(w->db, it->value);
		w->retry_at = 0; /* try again now */
		break;
	case ITEM_STOP:
		w->stop = 1;
		w->stop_at = now;
		break;
	}
	free(it);
}

/* When the writer must next act without being woken. */
static uint64_t
deadline(struct history *h)
{
	struct writer *w = &h->w;
	struct item *first = STAILQ_FIRST(&w->pending);
	uint64_t d = NEVER;

	if (first != NULL)
		d = w->degraded ? w->retry_at : first->taken_us + h->batch_us;
	if (w->prune_active)
		d = 0;
	if (!w->degraded && (h->max_age_ms > 0 || h->max_per_room > 0) &&
	    w->next_prune < d)
		d = w->next_prune;
	/* Whatever was written, check the file within FILE_CHECK_US. */
	if (!w->stop && w->wrote && w->next_file_check < d)
		d = w->next_file_check;
	if (w->stop && w->degraded && w->stop_at + CLOSE_RETRY_US < d)
		d = w->stop_at + CLOSE_RETRY_US;
	if (!STAILQ_EMPTY(&w->undelivered) &&
	    d > clock_mono_us() + BACKOFF_MIN_US)
		d = clock_mono_us() + BACKOFF_MIN_US;
	return d;
}

/* Sleep until there is a reason to act, then take the whole queue. */
static void
take(struct history *h, struct itemlist *in)
{
	struct writer *w = &h->w;
	uint64_t until = deadline(h);

	pthread_mutex_lock(&h->lock);
	if (w->degraded)
		h->wake_at = SIZE_MAX; /* lines just wait; control items wake */
	else if (w->npending == 0 || w->npending >= h->batch_size)
		h->wake_at = 1; /* the first line starts the batch clock */
	else
		h->wake_at = h->batch_size - w->npending;
	while (h->nctl == 0 && h->nqueued < h->wake_at) {
		if (until != NEVER && clock_mono_us() >= until)
			break;
		h->waiting = 1;
		wait_until(&h->wake, &h->lock, until);
		h->waiting = 0;
	}
	STAILQ_CONCAT(in, &h->queue);
	h->nqueued = 0;
	h->nctl = 0;
	pthread_mutex_unlock(&h->lock);
}

static void *
writer_main(void *arg)
{
	struct history *h = arg;
	struct writer *w = &h->w;
	struct itemlist in = STAILQ_HEAD_INITIALIZER(in);
	struct item *it;
	uint64_t now;

	pthread_setname_np(pthread_self(), "history-w");
	workq_lower_priority(h->worker_nice);
	for (;;) {
		take(h, &in);
		now = clock_mono_us();
		while ((it = STAILQ_FIRST(&in)) != NULL) {
			STAILQ_REMOVE_HEAD(&in, entry);
			handle(h, it, now);
		}
		commit_due(h);
		if (!w->stop)
			maintain(h);
		if (!STAILQ_EMPTY(&w->undelivered))
			repost_answers(h);
		if (w->stop && w->npending > 0 && w->degraded &&
		    clock_mono_us() >= w->stop_at + CLOSE_RETRY_US)
			give_up(h);
		if (w->stop && w->npending == 0)
			break;
	}
	if (w->prune_active)
		prune_end(h, 0);
	db_checkpoint(w->db, 1);
	/* history_close closes w->db after the readers: the last connection
	 * to close removes the WAL and shm files. */
	return NULL;
}

static int
start_writer(struct history *h)
{
	sigset_t old;
	int rc;

	/* Keep asynchronous signals for the loop thread, as workq does. */
	workq_block_signals(&old);
	rc = pthread_create(&h->writer_tid, NULL, writer_main, h);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

/* ---- Loop-side API ----------------------------------------------------- */

static void
destroy(struct history *h)
{
	struct item *it;
	struct query *q;

	while ((q = STAILQ_FIRST(&h->w.undelivered)) != NULL) {
		STAILQ_REMOVE_HEAD(&h->w.undelivered, entry);
		query_deliver(q); /* the writer is gone: deliver here */
	}
	while ((it = STAILQ_FIRST(&h->queue)) != NULL) {
		STAILQ_REMOVE_HEAD(&h->queue, entry);
		free(it);
	}
	db_close(h->w.db);
	strmap_free(h->w.dirty);
	free(h->stop_item);
	free(h->path);
	pthread_cond_destroy(&h->committed);
	pthread_cond_destroy(&h->wake);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

static char *
db_path(const struct config *cfg)
{
	const char *dir = cfg->state_directory ? cfg->state_directory : ".";
	size_t len;
	char *p;

	if (cfg->history_path != NULL)
		return strdup(cfg->history_path);
	len = strlen(dir) + sizeof "/history.db";
	if ((p = malloc(len)) != NULL)
		snprintf(p, len, "%s/history.db", dir);
	return p;
}

int
history_chown_files(const struct config *cfg, uid_t uid, gid_t gid)
{
	static const char *const suffix[] = {"", "-wal", "-shm"};
	char *path, file[4096];
	struct stat st;
	size_t i;
	int fd, rc = 0;

	if ((path = db_path(cfg)) == NULL)
		return -1;
	for (i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
		snprintf(file, sizeof file, "%s%s", path, suffix[i]);
		/*
		 * The directory may belong to the user already: follow no
		 * symlink, and touch only a root-owned regular file with
		 * one link, or root could hand any file to the user.
		 */
		fd = open(file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (fd == -1) {
			if (errno != ENOENT) {
				log_warn("%s: %s", file, strerror(errno));
				rc = -1;
			}
			continue;
		}
		if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
		    st.st_nlink == 1 && st.st_uid == 0 &&
		    fchown(fd, uid, gid) == -1) {
			log_warn("chown %s: %s", file, strerror(errno));
			rc = -1;
		}
		close(fd);
	}
	free(path);
	return rc;
}

struct history *
history_open(
    struct event_base *base, const struct config *cfg, char *err, size_t errlen)
{
	struct history *h;
	struct workq_config wc;
	pthread_condattr_t ca;
	const char *env;
	int rc;

	if ((h = calloc(1, sizeof *h)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	h->base = base;
	h->batch_size =
	    cfg->history_batch_size > 0 ? cfg->history_batch_size : 1;
	h->batch_us = cfg->history_batch_ms * 1000;
	h->queue_limit =
	    cfg->history_queue_limit > 0 ? cfg->history_queue_limit : 1;
	h->max_age_ms = cfg->history_max_age_ms;
	h->cache_size = cfg->history_cache_size;
	h->worker_nice = (int)cfg->worker_nice;
	h->max_per_room = cfg->history_max_per_room;
	STAILQ_INIT(&h->queue);
	STAILQ_INIT(&h->w.pending);
	STAILQ_INIT(&h->w.undelivered);
	h->w.backoff_us = BACKOFF_MIN_US;
	h->w.next_truncate = clock_mono_us() + TRUNCATE_EVERY_US;
	pthread_mutex_init(&h->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&h->wake, &ca);
	pthread_cond_init(&h->committed, &ca);
	pthread_condattr_destroy(&ca);

	h->path = db_path(cfg);
	h->stop_item = item_new(ITEM_STOP, NULL, NULL, NULL);
	h->w.dirty = strmap_new();
	if (h->path == NULL || h->stop_item == NULL || h->w.dirty == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if ((h->w.db = db_open(h->path, 0, h->cache_size, err, errlen)) == NULL)
		goto fail;
	if ((h->last_id = db_last_id(h->w.db)) < 0) {
		snprintf(err, errlen, "%s: %s", h->path, db_errmsg(h->w.db));
		goto fail;
	}
	h->committed_id = h->last_id;
	/* Test only: a small max_page_count stands in for a full disk. */
	if ((env = getenv("PARLEY_HISTORY_MAX_PAGES")) != NULL &&
	    *env != '\0') {
		log_warn(
		    "history: PARLEY_HISTORY_MAX_PAGES=%s (test only)", env);
		db_set_max_pages(h->w.db, strtoll(env, NULL, 10));
	}

	memset(&wc, 0, sizeof wc);
	wc.name = "history-r";
	wc.threads = READER_THREADS;
	wc.nice = h->worker_nice;
	wc.max_pending = 0; /* answers must never be refused; see READS_MAX */
	wc.thread_init = reader_init;
	wc.thread_fini = reader_fini;
	wc.init_arg = h;
	if ((h->readers = workq_new(base, &wc)) == NULL) {
		pthread_mutex_lock(&h->lock);
		snprintf(err, errlen, "history readers: %s",
		    h->reader_err[0] ? h->reader_err : strerror(errno));
		pthread_mutex_unlock(&h->lock);
		goto fail;
	}
	if ((rc = start_writer(h)) != 0) {
		snprintf(
		    err, errlen, "history writer thread: %s", strerror(rc));
		goto fail;
	}
	log_info(
	    "history: %s open, last id %lld", h->path, (long long)h->last_id);
	return h;
fail:
	workq_free(h->readers);
	destroy(h);
	return NULL;
}

int64_t
history_append(struct history *h, const char *room, const char *sender,
    int kind, const char *text)
{
	struct item *it;
	size_t depth;
	int full;

	if (h == NULL || h->closing || room == NULL || sender == NULL ||
	    text == NULL)
		return 0;
	/* Allocate outside the lock; a drop frees it again. */
	if ((it = item_new(ITEM_LINE, room, sender, text)) != NULL) {
		it->row.id = h->last_id + 1;
		it->row.ts_ms = clock_real_ms();
		it->row.kind = kind;
	}

	pthread_mutex_lock(&h->lock);
	full = it == NULL || h->depth >= h->queue_limit;
	if (!full) {
		STAILQ_INSERT_TAIL(&h->queue, it, entry);
		h->nqueued++;
		h->depth++;
		if (h->waiting && h->nqueued >= h->wake_at)
			pthread_cond_signal(&h->wake);
	}
	depth = h->depth;
	pthread_mutex_unlock(&h->lock);

	if (full) {
		free(it);
		h->dropped++;
		h->dropped_incident++;
		if (!h->dropping) {
			h->dropping = 1;
			h->dropped_incident = 1;
			log_warn("history queue full (%zu lines); dropping",
			    h->queue_limit);
		}
		return 0;
	}
	if (h->dropping && depth <= h->queue_limit / 2) {
		h->dropping = 0;
		log_notice("history queue recovered; %llu dropped",
		    (unsigned long long)h->dropped_incident);
	}
	h->appended++;
	return ++h->last_id;
}

int64_t
history_last_id(const struct history *h)
{
	return h != NULL ? h->last_id : 0;
}

int
history_replay(struct history *h, const char *room, int64_t upto_id,
    unsigned limit, uint64_t owner_id, history_result_fn fn, void *arg)
{
	struct item *it;
	struct query *q;

	if (h == NULL || h->closing || room == NULL || fn == NULL ||
	    limit == 0) {
		errno = EINVAL;
		return -1;
	}
	if (h->replays_inflight >= REPLAYS_MAX) {
		errno = EAGAIN;
		return -1;
	}
	if ((q = calloc(1, sizeof *q)) == NULL)
		return -1;
	if ((it = item_new(ITEM_REPLAY, room, NULL, NULL)) == NULL) {
		free(q);
		return -1;
	}
	q->h = h;
	q->type = Q_ANSWER;
	q->owner = owner_id;
	q->fn = fn;
	q->arg = arg;
	it->answer = q;
	it->row.id = upto_id;
	it->limit = limit > HISTORY_LIMIT_MAX ? HISTORY_LIMIT_MAX : limit;
	h->replays_inflight++;
	enqueue_control(h, it);
	return 0;
}

static struct query *
query_new(struct history *h, enum query_type type, unsigned limit,
    uint64_t owner_id, history_result_fn fn, void *arg)
{
	struct query *q;

	if (h == NULL || h->closing || fn == NULL) {
		errno = EINVAL;
		return NULL;
	}
	if (h->reads_inflight >= READS_MAX) {
		errno = EAGAIN;
		return NULL;
	}
	if ((q = calloc(1, sizeof *q)) == NULL)
		return NULL;
	q->h = h;
	q->type = type;
	q->owner = owner_id;
	q->fn = fn;
	q->arg = arg;
	q->limit = limit > HISTORY_LIMIT_MAX ? HISTORY_LIMIT_MAX : limit;
	return q;
}

static int
query_submit(struct history *h, struct query *q)
{
	if (workq_submit(h->readers, q->owner, query_work, query_done, q) ==
	    -1) {
		query_free(q);
		return -1;
	}
	h->reads_inflight++;
	return 0;
}

int
history_recent(struct history *h, const char *room, unsigned limit,
    int64_t since_ms, uint64_t owner_id, history_result_fn fn, void *arg)
{
	struct query *q;

	if (room == NULL) {
		errno = EINVAL;
		return -1;
	}
	if ((q = query_new(h, Q_RECENT, limit, owner_id, fn, arg)) == NULL)
		return -1;
	q->since_ms = since_ms;
	if ((q->room = strdup(room)) == NULL) {
		query_free(q);
		return -1;
	}
	return query_submit(h, q);
}

int
history_search(struct history *h, const char *const *rooms, size_t nrooms,
    const char *words, unsigned limit, uint64_t owner_id, history_result_fn fn,
    void *arg)
{
	struct query *q;
	size_t i;

	if (words == NULL || (nrooms > 0 && rooms == NULL)) {
		errno = EINVAL;
		return -1;
	}
	if ((q = query_new(h, Q_SEARCH, limit, owner_id, fn, arg)) == NULL)
		return -1;
	if ((q->words = strdup(words)) == NULL ||
	    (nrooms > 0 &&
		(q->rooms = calloc(nrooms, sizeof *q->rooms)) == NULL)) {
		query_free(q);
		return -1;
	}
	for (i = 0; i < nrooms; i++) {
		if ((q->rooms[i] = strdup(rooms[i])) == NULL) {
			query_free(q);
			return -1;
		}
		q->nrooms++;
	}
	return query_submit(h, q);
}

void
history_stats(struct history *h, struct history_stats *out)
{
	memset(out, 0, sizeof *out);
	if (h == NULL)
		return;
	out->appended = h->appended;
	out->dropped = h->dropped;
	pthread_mutex_lock(&h->lock);
	out->written = h->written;
	out->batches = h->batches;
	out->write_errors = h->write_errors;
	out->queue_depth = h->depth;
	out->last_commit_us = h->last_commit_us;
	out->max_commit_us = h->max_commit_us;
	out->degraded = h->degraded;
	out->file_problem = h->file_problem;
	pthread_mutex_unlock(&h->lock);
}

unsigned
history_inflight(const struct history *h)
{
	return h != NULL ? h->replays_inflight + h->reads_inflight : 0;
}

int
history_flush_wait(struct history *h, int timeout_ms)
{
	struct item *it;
	uint64_t until;
	int64_t target;
	int rc;

	if (h == NULL || h->closing)
		return -1;
	target = h->last_id;
	until = clock_mono_us() +
	    (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000;
	it = item_new(ITEM_FLUSH, NULL, NULL, NULL);
	pthread_mutex_lock(&h->lock);
	if (it != NULL && h->committed_id < target) {
		STAILQ_INSERT_TAIL(&h->queue, it, entry);
		h->nctl++;
		if (h->waiting)
			pthread_cond_signal(&h->wake);
		it = NULL;
	}
	h->flush_target = target; /* only the loop thread waits */
	while (h->committed_id < target &&
	    wait_until(&h->committed, &h->lock, until) != ETIMEDOUT)
		;
	h->flush_target = 0;
	rc = h->committed_id >= target ? 0 : -1;
	pthread_mutex_unlock(&h->lock);
	free(it);
	return rc;
}

static int
test_item(struct history *h, enum item_type type, int64_t value)
{
	struct item *it;

	if (h == NULL || h->closing)
		return -1;
	if ((it = item_new(type, NULL, NULL, NULL)) == NULL)
		return -1;
	it->value = value;
	enqueue_control(h, it);
	return 0;
}

int
history_test_max_pages(struct history *h, int64_t pages)
{
	return test_item(h, ITEM_MAX_PAGES, pages);
}

int
history_test_prune(struct history *h)
{
	return test_item(h, ITEM_PRUNE, 0);
}

void
history_close(struct history *h)
{
	uint64_t written;

	if (h == NULL)
		return;
	h->closing = 1;
	enqueue_control(h, h->stop_item);
	h->stop_item = NULL;
	pthread_join(h->writer_tid, NULL);
	/* Every answer is posted now; this runs the done callbacks left. */
	workq_free(h->readers);
	h->readers = NULL;
	pthread_mutex_lock(&h->lock);
	written = h->written;
	pthread_mutex_unlock(&h->lock);
	log_info("history: closed %s; %llu line(s) written, %llu dropped",
	    h->path, (unsigned long long)written,
	    (unsigned long long)h->dropped);
	destroy(h);
}
