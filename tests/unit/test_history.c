/*
 * Unit tests for src/history.c and src/db.c on a real sqlite file in a
 * temporary directory: append and replay, restart, the replay seam,
 * recent, search (and hostile search input), the queue limit, zero loss
 * at close, a full disk (max_page_count) and recovery, retention, the
 * owner-gone pattern, open failures, the migration from schema 1.
 *
 * Results arrive through the event loop; run_until() turns the loop until
 * a callback count is reached, with a safety limit that fails the test
 * instead of hanging it.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <sqlite3.h>

#include "conf.h"
#include "db.h"
#include "history.h"
#include "tap.h"

#define SAFETY_MS 10000
#define MAXROWS 1100

static struct event_base *base;
static pthread_t loop_thread;
static char dir[64];
static char path[160];

struct result {
	int called;
	int off_loop;
	int failed;
	char err[256];
	size_t n;
	int64_t id[MAXROWS];
	int64_t ts[MAXROWS];
	int kind[MAXROWS];
	char room[MAXROWS][16];
	char text[MAXROWS][48];
};

static struct result res;

static void
on_result(uint64_t owner, void *arg, const struct history_row *rows,
    size_t nrows, const char *err)
{
	struct result *r = arg ? arg : &res;
	size_t i;

	(void)owner;
	r->called++;
	if (!pthread_equal(pthread_self(), loop_thread))
		r->off_loop++;
	r->failed = err != NULL;
	snprintf(r->err, sizeof r->err, "%s", err ? err : "");
	r->n = nrows;
	for (i = 0; i < nrows && i < MAXROWS; i++) {
		r->id[i] = rows[i].id;
		r->ts[i] = rows[i].ts_ms;
		r->kind[i] = rows[i].kind;
		snprintf(r->room[i], sizeof r->room[i], "%s", rows[i].room);
		snprintf(r->text[i], sizeof r->text[i], "%s", rows[i].text);
	}
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

/* Turn the loop until *counter reaches want; 0, or -1 on timeout. */
static int
run_until(const int *counter, int want)
{
	int64_t end = now_ms() + SAFETY_MS;

	while (*counter < want) {
		if (now_ms() > end) {
			diag("timed out waiting for a callback");
			return -1;
		}
		event_base_loop(base, EVLOOP_ONCE);
	}
	return 0;
}

static void
heartbeat(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* Replay room up to upto into res; -1 if it did not answer. */
static int
replay(struct history *h, const char *room, int64_t upto, unsigned limit)
{
	memset(&res, 0, sizeof res);
	if (history_replay(h, room, upto, limit, 1, on_result, NULL) == -1)
		return -1;
	return run_until(&res.called, 1);
}

static int
recent(struct history *h, const char *room, unsigned limit, int64_t since)
{
	memset(&res, 0, sizeof res);
	if (history_recent(h, room, limit, since, 1, on_result, NULL) == -1)
		return -1;
	return run_until(&res.called, 1);
}

static int
search(struct history *h, const char *const *rooms, size_t n, const char *words)
{
	memset(&res, 0, sizeof res);
	if (history_search(h, rooms, n, words, 50, 1, on_result, NULL) == -1)
		return -1;
	return run_until(&res.called, 1);
}

struct tweak {
	unsigned batch_size;
	uint64_t batch_ms;
	unsigned queue_limit;
	uint64_t max_age_ms;
	unsigned max_per_room;
};

static struct history *
open_h(const char *p, const struct tweak *t, char *err, size_t errlen)
{
	struct config *cfg = config_new();
	struct history *h;

	free(cfg->history_path);
	cfg->history_path = strdup(p);
	if (t != NULL) {
		if (t->batch_size)
			cfg->history_batch_size = t->batch_size;
		if (t->batch_ms)
			cfg->history_batch_ms = t->batch_ms;
		if (t->queue_limit)
			cfg->history_queue_limit = t->queue_limit;
		cfg->history_max_age_ms = t->max_age_ms;
		cfg->history_max_per_room = t->max_per_room;
	}
	h = history_open(base, cfg, err, errlen);
	config_free(cfg);
	return h;
}

static struct history *
reopen(const struct tweak *t)
{
	char err[256];
	struct history *h = open_h(path, t, err, sizeof err);

	if (h == NULL)
		diag("history_open: %s", err);
	return h;
}

/* Rows of room in the file, counted by a separate connection. */
static long long
count_rows(const char *room)
{
	sqlite3 *db;
	sqlite3_stmt *s;
	long long n = -1;

	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_prepare_v2(db,
		"SELECT count(*), count(DISTINCT id) FROM messages "
		"WHERE room = ?1",
		-1, &s, NULL) == SQLITE_OK) {
		sqlite3_bind_text(s, 1, room, -1, SQLITE_STATIC);
		if (sqlite3_step(s) == SQLITE_ROW &&
		    sqlite3_column_int64(s, 0) == sqlite3_column_int64(s, 1))
			n = sqlite3_column_int64(s, 0);
		sqlite3_finalize(s);
	}
	sqlite3_close(db);
	return n;
}

static void
test_append_replay(void)
{
	struct history *h;
	struct history_stats st;
	int64_t id[7];
	int i;

	ok((h = reopen(NULL)) != NULL, "open a new database");
	if (h == NULL)
		return;
	is_int(history_last_id(h), 0, "a new database has no ids");
	for (i = 0; i < 5; i++) {
		char text[32];

		snprintf(text, sizeof text, "line %d", i);
		id[i] = history_append(h, "#a", "alice",
		    i == 3 ? HISTORY_ACTION : HISTORY_MESSAGE, text);
	}
	id[5] = history_append(h, "#b", "bob", HISTORY_MESSAGE, "elsewhere");
	id[6] = history_append(h, "#a", "bob", HISTORY_MESSAGE, "last");
	for (i = 0; i < 7; i++)
		if (id[i] != i + 1)
			break;
	is_int(i, 7, "ids are 1..7, in order");
	is_int(history_last_id(h), 7, "history_last_id is the last id");

	ok(replay(h, "#a", 7, 100) == 0, "replay answers");
	is_int(res.n, 6, "replay #a: 6 rows");
	ok(res.n == 6 && res.id[0] == 1 && res.id[3] == 4 && res.id[5] == 7,
	    "rows come oldest first with their ids");
	ok(res.n == 6 && res.kind[3] == HISTORY_ACTION &&
		res.kind[0] == HISTORY_MESSAGE,
	    "kinds are kept");
	is_str(res.text[5], "last", "text is kept");
	is_int(res.off_loop, 0, "the callback ran on the loop thread");

	ok(replay(h, "#a", 4, 2) == 0 && res.n == 2 && res.id[0] == 3 &&
		res.id[1] == 4,
	    "replay up to 4, limit 2: ids 3, 4");
	ok(replay(h, "#nowhere", 7, 10) == 0 && res.n == 0 && !res.failed,
	    "replay of an empty room: no rows, no error");

	is_int(history_flush_wait(h, 5000), 0, "flush_wait commits all");
	history_stats(h, &st);
	is_int(st.appended, 7, "stats: 7 appended");
	is_int(st.written, 7, "stats: 7 written");
	is_int(st.queue_depth, 0, "stats: queue empty");
	ok(st.batches >= 1 && st.write_errors == 0 && !st.degraded,
	    "stats: batches, no errors");
	history_close(h);

	ok((h = reopen(NULL)) != NULL, "reopen");
	if (h == NULL)
		return;
	is_int(history_last_id(h), 7, "ids continue after a restart");
	is_int(history_append(h, "#a", "carol", HISTORY_MESSAGE, "back"), 8,
	    "the next id is 8");
	ok(replay(h, "#a", 8, 3) == 0 && res.n == 3 && res.id[0] == 5 &&
		res.id[1] == 7 && res.id[2] == 8,
	    "old and new rows replay together");
	history_close(h);
}

/* Row k (0-based) of #seam has id first + k + k / 7: #other lines between. */
static int64_t
seam_id(int64_t first, int k)
{
	return first + k + k / 7;
}

static void
test_seam(unsigned batch_size, const char *what)
{
	struct tweak t = {.batch_size = batch_size, .batch_ms = 2000};
	struct history_stats st;
	struct history *h;
	int64_t first = 0, id;
	int i, exact = 1;

	if ((h = reopen(&t)) == NULL)
		return;
	for (i = 0; i < 1000; i++) {
		id = history_append(h, "#seam", "s", HISTORY_MESSAGE, "x");
		if (i == 0)
			first = id;
		if (i % 7 == 6)
			history_append(h, "#other", "o", HISTORY_MESSAGE, "y");
	}
	id = seam_id(first, 499); /* the 500th #seam line */
	if (replay(h, "#seam", id, 20) == -1) {
		ok(0, "seam replay answers");
		history_close(h);
		return;
	}
	history_stats(h, &st);
	diag("%s: %llu of %llu lines committed at the answer", what,
	    (unsigned long long)st.written, (unsigned long long)st.appended);
	is_int(res.n, 20, "%s: 20 rows", what);
	for (i = 0; i < (int)res.n; i++)
		if (res.id[i] != seam_id(first, 480 + i))
			exact = 0;
	ok(exact && res.n == 20 && res.id[19] == id,
	    "%s: exactly #seam lines 481..500, oldest first", what);
	history_close(h);
}

/* Part of the answer committed, part still pending in the writer. */
static void
test_seam_mixed(void)
{
	struct tweak t = {.batch_size = 100000, .batch_ms = 5000};
	struct history_stats st;
	struct history *h;
	int64_t first = 0, id = 0;
	int i, exact = 1;

	if ((h = reopen(&t)) == NULL)
		return;
	for (i = 0; i < 600; i++) {
		id = history_append(h, "#mix", "m", 0, "x");
		if (i == 0)
			first = id;
	}
	history_flush_wait(h, 5000);
	for (i = 0; i < 600; i++)
		history_append(h, "#mix", "m", 0, "x");
	if (replay(h, "#mix", first + 699, 200) == -1) {
		ok(0, "mixed replay answers");
		history_close(h);
		return;
	}
	history_stats(h, &st);
	is_int(st.written, 600, "mixed: the second half is not committed");
	for (i = 0; i < (int)res.n; i++)
		if (res.id[i] != first + 500 + i)
			exact = 0;
	ok(exact && res.n == 200,
	    "mixed: 100 committed + 100 pending rows, in order");
	history_close(h);
}

static void
test_recent(void)
{
	struct history *h;
	struct timespec now;
	int64_t since;
	int i;

	if ((h = reopen(NULL)) == NULL)
		return;
	for (i = 0; i < 3; i++)
		history_append(h, "#r", "a", HISTORY_MESSAGE, "before");
	sleep_ms(30);
	clock_gettime(CLOCK_REALTIME, &now);
	since = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	sleep_ms(5);
	history_append(h, "#r", "a", HISTORY_MESSAGE, "after 1");
	history_append(h, "#r", "a", HISTORY_MESSAGE, "after 2");
	is_int(history_flush_wait(h, 5000), 0, "recent: flushed");

	ok(recent(h, "#r", 50, since) == 0, "recent answers");
	is_int(res.n, 2, "recent since: only the 2 newer lines");
	ok(res.n == 2 && strcmp(res.text[0], "after 1") == 0 &&
		strcmp(res.text[1], "after 2") == 0,
	    "recent: oldest first");
	ok(res.n == 2 && res.ts[0] >= since, "recent: timestamps are ms");
	ok(recent(h, "#r", 4, 0) == 0 && res.n == 4 &&
		strcmp(res.text[0], "before") == 0 &&
		strcmp(res.text[3], "after 2") == 0,
	    "recent without since: the newest 4, oldest first");
	history_close(h);
}

static void
test_search(void)
{
	const char *ab[] = {"#sa", "#sb"}, *abc[] = {"#sa", "#sb", "#sc"};
	const char *hostile[] = {"\"foo", "a OR b NEAR(", "*", "text:x",
	    "\"\"\"", "NOT", "(", "^x", "foo\"bar"};
	struct history *h;
	size_t i;
	int errors = 0;

	if ((h = reopen(NULL)) == NULL)
		return;
	history_append(h, "#sa", "a", 0, "the quick brown fox");
	history_append(h, "#sb", "b", 0, "lazy dog jumps");
	history_append(h, "#sc", "c", 0, "quick dog");
	history_append(h, "#sa", "a", 0, "a fox said \"foo and NEAR( it");
	history_append(h, "#sb", "b", 0, "another DOG");
	is_int(history_flush_wait(h, 5000), 0, "search: flushed");

	ok(search(h, ab, 2, "quick") == 0 && res.n == 1 &&
		strcmp(res.room[0], "#sa") == 0,
	    "search respects the rooms filter");
	ok(search(h, abc, 3, "dog") == 0 && res.n == 3 &&
		res.id[0] > res.id[1] && res.id[1] > res.id[2],
	    "search finds a word in every room given, newest first");
	ok(search(h, abc, 3, "fox quick") == 0 && res.n == 1 &&
		strcmp(res.text[0], "the quick brown fox") == 0,
	    "all words must match");
	ok(search(h, abc, 3, "FOX") == 0 && res.n == 2, "search ignores case");
	for (i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
		if (search(h, abc, 3, hostile[i]) == -1 || res.failed) {
			diag("\"%s\": %s", hostile[i], res.err);
			errors++;
		}
	}
	is_int(errors, 0, "FTS syntax in user input never errors");
	ok(search(h, abc, 3, "\"foo") == 0 && res.n == 1,
	    "a quote in input is matched literally");
	ok(search(h, abc, 3, "   ") == 0 && res.failed && res.n == 0,
	    "an empty search reports an error (%s)", res.err);
	ok(search(h, abc, 0, "dog") == 0 && !res.failed && res.n == 0,
	    "no rooms: no rows");
	history_close(h);
}

static void
test_fts_query(void)
{
	char buf[64];

	ok(db_fts_query("a \"b\" c", buf, sizeof buf) == 0 &&
		strcmp(buf, "\"a\" \"\"\"b\"\"\" \"c\"") == 0,
	    "words become quoted phrases");
	ok(db_fts_query(" \t ", buf, sizeof buf) == -1, "no words: refused");
	ok(db_fts_query("1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17", buf,
	       sizeof buf) == -2,
	    "too many words: refused");
	ok(db_fts_query("abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz"
			"abcdefghijklmnop",
	       buf, sizeof buf) == -3,
	    "too long: refused (apart from too many words), no overflow");
}

static void
test_queue_limit(void)
{
	struct tweak t = {
	    .batch_size = 100000, .batch_ms = 10000, .queue_limit = 100};
	struct history_stats st;
	struct history *h;
	int i, accepted = 0, zero = 0;

	if ((h = reopen(&t)) == NULL)
		return;
	for (i = 0; i < 150; i++) {
		if (history_append(h, "#q", "q", 0, "fill") > 0)
			accepted++;
		else
			zero++;
	}
	history_stats(h, &st);
	is_int(accepted, 100, "queue limit: 100 accepted");
	is_int(zero, 50, "queue limit: 50 dropped (append returned 0)");
	is_int(st.dropped, 50, "stats: 50 dropped");
	is_int(st.appended, 100, "stats: 100 appended");
	is_int(st.queue_depth, 100, "stats: depth 100");
	is_int(history_flush_wait(h, 5000), 0, "the queue drains");
	ok(history_append(h, "#q", "q", 0, "again") > 0,
	    "appends are accepted again");
	history_close(h);
	is_int(count_rows("#q"), 101, "101 lines stored");
}

static void
test_close_zero_loss(void)
{
	struct tweak t = {.batch_ms = 5000};
	struct history_stats st;
	struct history *h;
	int i, failed = 0;

	if ((h = reopen(&t)) == NULL)
		return;
	for (i = 0; i < 20000; i++)
		if (history_append(h, "#bulk", "b", 0,
			"a line of some ordinary length, about fifty bytes") <=
		    0)
			failed++;
	history_stats(h, &st);
	is_int(failed, 0, "20000 appends accepted");
	diag("at close: %zu queued, %llu written", st.queue_depth,
	    (unsigned long long)st.written);
	history_close(h);
	is_int(count_rows("#bulk"), 20000, "all 20000 lines are in the file");
}

static void
test_full_disk(void)
{
	char fpath[160], err[256];
	struct history_stats st;
	struct history *h;
	char text[120];
	int i, failed = 0, total = 0;
	int64_t last = 0, end;

	snprintf(fpath, sizeof fpath, "%s/full.db", dir);
	setenv("PARLEY_HISTORY_MAX_PAGES", "40", 1);
	h = open_h(fpath, NULL, err, sizeof err);
	unsetenv("PARLEY_HISTORY_MAX_PAGES");
	ok(h != NULL, "open with max_page_count 40");
	if (h == NULL) {
		diag("%s", err);
		return;
	}
	memset(text, 'z', sizeof text - 1);
	text[sizeof text - 1] = '\0';
	end = now_ms() + 5000;
	do {
		for (i = 0; i < 500; i++, total++) {
			text[i % 100] = (char)('a' + i % 26);
			if ((last = history_append(h, "#full", "f", 0, text)) <=
			    0)
				failed++;
		}
		sleep_ms(20);
		history_stats(h, &st);
	} while (!st.degraded && now_ms() < end);
	ok(st.degraded, "the writer reports degraded on a full disk");
	ok(st.write_errors >= 1, "write errors are counted (%llu)",
	    (unsigned long long)st.write_errors);
	is_int(failed, 0, "chat goes on: every append got an id");
	ok(history_append(h, "#full", "f", 0, "during the fault") > 0,
	    "appends work during the fault");
	total++;
	last = history_last_id(h);
	ok(replay(h, "#full", last, 5) == 0 && !res.failed && res.n == 5 &&
		res.id[4] == last && res.id[0] == last - 4,
	    "replay during the fault includes the held lines");
	ok(history_flush_wait(h, 200) == -1, "flush_wait times out meanwhile");

	history_test_max_pages(h, 1000000);
	is_int(history_flush_wait(h, 10000), 0, "writes resume");
	history_stats(h, &st);
	ok(!st.degraded, "degraded clears");
	is_int(st.written, total, "every line was written (%d)", total);
	history_close(h);
	snprintf(path, sizeof path, "%s", fpath);
	is_int(count_rows("#full"), total, "nothing was lost");
	snprintf(path, sizeof path, "%s/history.db", dir);
}

static void
test_retention(void)
{
	struct tweak count = {.max_per_room = 10};
	struct tweak age = {.max_age_ms = 300};
	struct history *h;
	int64_t last = 0, kept;
	int i;

	if ((h = reopen(&count)) == NULL)
		return;
	for (i = 0; i < 30; i++)
		last = history_append(h, "#k1", "k", 0, "count me");
	for (i = 0; i < 5; i++)
		history_append(h, "#k2", "k", 0, "few");
	history_flush_wait(h, 5000);
	history_test_prune(h);
	ok(replay(h, "#k1", history_last_id(h), 100) == 0 && res.n == 10 &&
		res.id[9] == last && res.id[0] == last - 9,
	    "max per room: the newest 10 are kept");
	ok(replay(h, "#k2", history_last_id(h), 100) == 0 && res.n == 5,
	    "a room under the limit is untouched");
	history_close(h);
	is_int(count_rows("#k1"), 10, "the file agrees");

	if ((h = reopen(&age)) == NULL)
		return;
	for (i = 0; i < 5; i++)
		history_append(h, "#old", "o", 0, "old");
	history_flush_wait(h, 5000);
	sleep_ms(450);
	for (i = 0; i < 5; i++)
		last = history_append(h, "#new", "n", 0, "new");
	history_flush_wait(h, 5000);
	history_test_prune(h);
	ok(replay(h, "#old", last, 100) == 0 && res.n == 0,
	    "max age: old lines are gone");
	ok(replay(h, "#new", last, 100) == 0 && res.n == 5,
	    "max age: new lines stay");
	sleep_ms(450);
	history_test_prune(h);
	ok(replay(h, "#new", last, 100) == 0 && res.n == 0,
	    "max age: everything can expire");
	kept = history_last_id(h);
	history_close(h);
	if ((h = reopen(NULL)) == NULL)
		return;
	is_int(history_last_id(h), kept, "ids are not reused after expiry");
	history_close(h);
}

/* The caller's pattern: a done callback looks its owner up first. */
static int gone[4];
static int delivered, skipped;

static void
owner_cb(uint64_t owner, void *arg, const struct history_row *rows,
    size_t nrows, const char *err)
{
	(void)arg;
	(void)rows;
	(void)nrows;
	(void)err;
	if (owner >= 4 || gone[owner]) {
		skipped++;
		return;
	}
	delivered++;
}

static void
test_owner_gone(void)
{
	struct history *h;
	int calls;

	if ((h = reopen(NULL)) == NULL)
		return;
	history_append(h, "#g", "g", 0, "hi");
	delivered = skipped = 0;
	history_recent(h, "#g", 5, 0, 1, owner_cb, NULL);
	history_replay(h, "#g", history_last_id(h), 5, 2, owner_cb, NULL);
	history_recent(h, "#g", 5, 0, 3, owner_cb, NULL);
	gone[2] = gone[3] = 1; /* they left before the answers came */
	calls = 0;
	while (delivered + skipped < 3 && calls++ < 1000)
		event_base_loop(base, EVLOOP_ONCE);
	is_int(delivered, 1, "the present owner got its answer");
	is_int(skipped, 2, "answers for gone owners were dropped");
	/* Outstanding requests are answered by close, not lost. */
	delivered = skipped = 0;
	gone[2] = gone[3] = 0;
	history_replay(h, "#g", history_last_id(h), 5, 2, owner_cb, NULL);
	history_recent(h, "#g", 5, 0, 3, owner_cb, NULL);
	history_close(h);
	is_int(delivered, 2, "history_close runs the outstanding callbacks");
}

static void
test_open_failures(void)
{
	char p[160], err[256];
	struct history *h;
	FILE *f;
	int i;

	err[0] = '\0';
	snprintf(p, sizeof p, "%s/no/such/dir/h.db", dir);
	h = open_h(p, NULL, err, sizeof err);
	ok(h == NULL && strstr(err, p) != NULL,
	    "a missing directory fails with the path (%s)", err);

	snprintf(p, sizeof p, "%s/corrupt.db", dir);
	if ((f = fopen(p, "w")) != NULL) {
		for (i = 0; i < 512; i++)
			fputs("this is not a database\n", f);
		fclose(f);
	}
	err[0] = '\0';
	h = open_h(p, NULL, err, sizeof err);
	ok(h == NULL && strstr(err, "not a database") != NULL,
	    "a corrupt file fails clearly (%s)", err);
	unlink(p);
	history_close(NULL); /* a no-op */
}

static void
test_moved(void)
{
	char p[160], q[176], err[256];
	struct db *db;

	snprintf(p, sizeof p, "%s/moved.db", dir);
	snprintf(q, sizeof q, "%s/moved.db.away", dir);
	if ((db = db_open(p, 0, 1024 * 1024, err, sizeof err)) == NULL) {
		ok(0, "open %s: %s", p, err);
		return;
	}
	ok(db_moved(db) == 0, "a file in place has not moved");
	ok(rename(p, q) == 0 && db_moved(db) == 1, "renamed away: moved");
	ok(rename(q, p) == 0 && db_moved(db) == 0, "put back: not moved");
	unlink(p);
	ok(db_moved(db) == 1, "removed: moved");
	db_close(db);
	snprintf(q, sizeof q, "%s-wal", p);
	unlink(q);
	snprintf(q, sizeof q, "%s-shm", p);
	unlink(q);
}

/* A file as parleyd wrote it with schema 1: FTS5 fed by an insert trigger. */
static const char schema1[] =
    "CREATE TABLE messages (id INTEGER PRIMARY KEY, room TEXT NOT NULL,"
    "  ts INTEGER NOT NULL, sender TEXT NOT NULL, kind INTEGER NOT NULL,"
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
    "  WITHOUT ROWID;"
    "INSERT INTO messages VALUES (1, '#m', 1000, 'ann', 0, 'old café news');"
    "INSERT INTO messages VALUES (2, '#m', 2000, 'bob', 0, 'older news');"
    "INSERT INTO meta VALUES ('last_id', 2);"
    "PRAGMA user_version = 1;";

/* One integer from sql on the file at p; -1 on any error. */
static long long
sql_int(const char *p, const char *sql)
{
	sqlite3 *db;
	sqlite3_stmt *s;
	long long v = -1;

	if (sqlite3_open_v2(p, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK) {
		if (sqlite3_step(s) == SQLITE_ROW)
			v = sqlite3_column_int64(s, 0);
		sqlite3_finalize(s);
	}
	sqlite3_close(db);
	return v;
}

/* sqlite3_exec's code for sql on the file at p. */
static int
sql_exec(const char *p, const char *sql)
{
	sqlite3 *db;
	int rc;

	if ((rc = sqlite3_open_v2(p, &db, SQLITE_OPEN_READWRITE, NULL)) ==
	    SQLITE_OK)
		rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	sqlite3_close(db);
	return rc;
}

static void
test_migrate_v1(void)
{
	const char *m[] = {"#m"};
	char p[160], err[256];
	struct history *h;
	sqlite3 *db;

	snprintf(p, sizeof p, "%s/v1.db", dir);
	if (sqlite3_open(p, &db) != SQLITE_OK ||
	    sqlite3_exec(db, schema1, NULL, NULL, NULL) != SQLITE_OK) {
		ok(0, "write a schema 1 file: %s", sqlite3_errmsg(db));
		sqlite3_close(db);
		return;
	}
	sqlite3_close(db);
	if ((h = open_h(p, NULL, err, sizeof err)) == NULL) {
		ok(0, "a schema 1 file opens: %s", err);
		return;
	}
	ok(search(h, m, 1, "news") == 0 && res.n == 2 && res.id[0] == 2,
	    "after the migration, search finds the rows indexed before it");
	ok(search(h, m, 1, "cafe") == 0 && res.n == 1 && res.id[0] == 1,
	    "the rebuilt index keeps the tokenizer (diacritics folded)");
	history_append(h, "#m", "cy", 0, "newest news");
	is_int(history_flush_wait(h, 5000), 0, "migrated: a new line flushed");
	ok(search(h, m, 1, "news") == 0 && res.n == 3 && res.id[0] == 3,
	    "a line written after the migration is found, with the next id");
	history_close(h);

	is_int(sql_int(p, "PRAGMA user_version"), 2, "schema is now 2");
	is_int(sql_int(p,
		   "SELECT count(*) FROM sqlite_master WHERE name IN "
		   "('messages_ai', 'messages_fts_docsize')"),
	    0, "no insert trigger, no docsize table (columnsize=0)");
	is_int(sql_int(p,
		   "SELECT v FROM messages_fts_config "
		   "WHERE k = 'automerge'"),
	    16, "automerge is 16");
	is_int(sql_int(p,
		   "SELECT v FROM messages_fts_config "
		   "WHERE k = 'crisismerge'"),
	    64, "crisismerge is 64");
	is_int(sql_int(p,
		   "SELECT count(*) FROM messages_fts "
		   "WHERE messages_fts MATCH 'news'"),
	    3, "the index holds the old rows and the new one");
	is_int(sql_exec(p,
		   "INSERT INTO messages_fts(messages_fts, rank) "
		   "VALUES ('integrity-check', 1)"),
	    SQLITE_OK, "the index matches its content (integrity-check)");
	is_int(sql_exec(p, "DELETE FROM messages WHERE id = 2"), SQLITE_OK,
	    "a row deleted (retention's path: the delete trigger)");
	is_int(sql_int(p,
		   "SELECT count(*) FROM messages_fts "
		   "WHERE messages_fts MATCH 'news'"),
	    2, "the deleted row left the index");

	is_int(sql_exec(p, "PRAGMA user_version = 99"), SQLITE_OK,
	    "schema 99 (a newer parleyd's)");
	err[0] = '\0';
	h = open_h(p, NULL, err, sizeof err);
	ok(h == NULL && strstr(err, "newer than") != NULL,
	    "a newer schema is refused (%s)", err);
	history_close(h);
}

static void
cleanup(void)
{
	const char *names[] = {"history.db", "history.db-wal", "history.db-shm",
	    "full.db", "full.db-wal", "full.db-shm", "corrupt.db", "v1.db",
	    "v1.db-wal", "v1.db-shm"};
	char p[192];
	size_t i;

	for (i = 0; i < sizeof names / sizeof names[0]; i++) {
		snprintf(p, sizeof p, "%s/%s", dir, names[i]);
		unlink(p);
	}
	if (rmdir(dir) == -1)
		diag("rmdir %s: %s", dir, strerror(errno));
}

int
main(void)
{
	struct event *hb;
	struct timeval tick = {0, 10000};

	setvbuf(stdout, NULL, _IOLBF, 0);
	evthread_use_pthreads();
	base = event_base_new();
	loop_thread = pthread_self();
	hb = event_new(base, -1, EV_PERSIST, heartbeat, NULL);
	event_add(hb, &tick);
	snprintf(dir, sizeof dir, "/tmp/parley-history-XXXXXX");
	if (mkdtemp(dir) == NULL) {
		printf("1..0 # SKIP mkdtemp: %s\n", strerror(errno));
		return 0;
	}
	snprintf(path, sizeof path, "%s/history.db", dir);

	test_append_replay();
	test_seam(5000, "seam, nothing committed");
	test_seam(512, "seam, default batches");
	test_seam_mixed();
	test_recent();
	test_search();
	test_fts_query();
	test_queue_limit();
	test_close_zero_loss();
	test_full_disk();
	test_retention();
	test_owner_gone();
	test_open_failures();
	test_moved();
	test_migrate_v1();

	cleanup();
	event_free(hb);
	event_base_free(base);
	libevent_global_shutdown();
	return done_testing();
}
