/*
 * libFuzzer target: whole chat connections with history and accounts, so
 * that the work done on worker threads and answered on the loop is fuzzed
 * too: history.c, db.c and workq.c (replay on join and on /resume,
 * /history, /search, retention), account.c and pwhash.c (/register,
 * /identify, /password, /unregister, /certadd, settings saves), and
 * their loop halves in chat-history.c, chat-account.c, chat-resume.c,
 * chat-room.c and chat-oper.c.
 *
 * A target of its own, not a mode of fuzz_conn: it needs what fuzz_conn
 * must not pay for (libevent's locking for worker threads, threads and
 * sqlite files kept for the whole process), a mode byte would change
 * what fuzz_conn's corpus means, and make fuzz gives each target its own
 * time, which a slow mode would eat into.
 *
 * Per process: a temporary directory with history.db, which history and
 * accounts share as in parleyd; one event base; both stores, opened
 * once (opening and closing them costs 5-20 ms, mostly threads and
 * checkpoints); and a sqlite connection of our own.  Passwords are hashed
 * with the cheapest parameters the config allows (scrypt N = 16, PBKDF2
 * 1000 rounds), so a /register costs microseconds, not 100 ms.
 *
 * Per input, the tables are reset to one baseline through our connection
 * (this file knows the schema of db.c and account.c): the account alice
 * and the persistent room #vault (owner alice, a key, a ban, an invite);
 * the accounts store re-reads its names; a few lines are stored in #lobby
 * and #vault.  Then a fresh chat, with the rooms and address bans loaded
 * from the store, gets the clients.  So every input starts from the same
 * state, and a crash reproduces from its input alone (up to the timing
 * of the threads).
 *
 * Input: one byte of knobs, then operations.
 *   knobs  bit 0 tight chat limits; bit 1 small replay and page limits;
 *          bit 2 PBKDF2, not scrypt; bit 3 two wrong passwords per
 *          address, slow answers to wrong ones, one registration per
 *          connection; bit 4 no resumable sessions (with bit 0: parked
 *          for 1 ms); bits 5-6 clients at start - 1; bit 7 the default
 *          room is #vault (keyed)
 *   op     high nibble picks the client, low nibble the action:
 *          0-4 send the next N bytes (N = next byte); 5 a canned line;
 *          6 a canned command start, the next N bytes and a newline;
 *          7 /resume with the real token of client (next byte) % 4;
 *          8 a retention pass now; 9 toggle slow reader; 10 half-close;
 *          11 connect; 12 reset; 13 commit the history queue; 14 hurry
 *          on or off; 15 restart the chat (at most twice: conns and chat
 *          go, the stores stay)
 * After every operation the loop runs until every worker job it caused
 * has completed and its callback has run (5 s at most, then abort: a
 * hang is a bug); in a hurry it only runs what is ready, so the next
 * operations race the workers: that is how a client quits or vanishes
 * with its replay or password check still in flight.
 *
 * Checks: no crash, sanitizer report or leak; all jobs answered at the
 * end; chat output is safe CRLF lines (harness.h); a session that waits
 * for nothing holds no output back and is not paused for a replay or a
 * query; the history queue is committed, not degraded, nothing dropped;
 * the accounts store's set of names is the accounts table; the saved
 * room settings are those the chat holds for owned rooms, the saved
 * address bans those in force.
 * With PARLEY_FUZZ_DUMP set, each client's output goes to stderr.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <sqlite3.h>

#include "account.h"
#include "chat-int.h"
#include "chat.h"
#include "clock.h"
#include "conf.h"
#include "conn.h"
#include "gate.h"
#include "harness.h"
#include "history.h"
#include "pwhash.h"
#include "service.h"
#include "strmap.h"
#include "check.h"

#define MAXIN 16384
#define WAIT_MS 5000 /* worker jobs must be answered within this */
#define RESTARTS_MAX 2
#define ALICE_PW "alicepass1"
#define FP "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static const char *const canned[] = {
    "/register secret99\n",
    "/register short\n",
    "/identify secret99\n",
    "/identify alice " ALICE_PW "\n",
    "/identify alice wrongpass\n",
    "/identify bob secret99\n",
    "/password secret99 secret100\n",
    "/password " ALICE_PW " newpass99\n",
    "/unregister secret99\n",
    "/unregister " ALICE_PW "\n",
    "/certadd " FP "\n",
    "/certdel " FP "\n",
    "/certadd\n",
    "/nick alice\n",
    "/nick bob\n",
    "/nick carol\n",
    "/join #lobby\n",
    "/join #vault opensesame\n",
    "/join #vault\n",
    "/join #new\n",
    "/part\n",
    "/part #lobby bye\n",
    "hello world\n",
    "/me waves\n",
    "/history\n",
    "/history 3\n",
    "/history 1000\n",
    "/history 0\n",
    "/history -1\n",
    "/history since 1m\n",
    "/history since 0s\n",
    "/history since 1d\n",
    "/history since soon\n",
    "/search hello\n",
    "/search hello world\n",
    "/search \"hello\n",
    "/search hello OR world\n",
    "/search NEAR(hello world)\n",
    "/search hel*\n",
    "/search -hello\n",
    "/search text:hello\n",
    "/search ^hello\n",
    "/search ( ) AND NOT\n",
    "/search a b c d e f g h i j k l m n o p q\n",
    "/search h\xc3\xa9llo w\xc3\xb6rld\n",
    "/resume 0123456789abcdef0123456789abcdef\n",
    "/resume x\n",
    "/quit\n",
    "/quit bye now\n",
    "/topic news\n",
    "/mode +k newkey\n",
    "/mode -k\n",
    "/mode +i\n",
    "/mode +o bob\n",
    "/ban mallory*\n",
    "/unban mallory*\n",
    "/invite bob\n",
    "/kick bob out\n",
    "/kline\n",
    "/kline 127.0.0.2 1h spam\n",
    "/kline 2001:db8:* 0\n",
    "/unkline 127.0.0.2\n",
    "/wall hello all\n",
    "/kill bob\n",
    "/msg alice hi\n",
    "/who\n",
    "/rooms\n",
};
#define NCANNED (sizeof canned / sizeof canned[0])

/* Command starts for op 6: the fuzzer writes the argument. */
static const char *const starts[] = {
    "",
    "/search ",
    "/history ",
    "/history since ",
    "/register ",
    "/identify ",
    "/identify alice ",
    "/password " ALICE_PW " ",
    "/unregister ",
    "/resume ",
    "/join ",
    "/nick ",
    "/certadd ",
    "/kline ",
    "/mode ",
    "/ban ",
};
#define NSTARTS (sizeof starts / sizeof starts[0])

/* The per-process part; see the top. */
static struct {
	char dir[1024];
	char path[1100];
	struct config *cfg; /* what the stores were opened with */
	struct event_base *base;
	struct event *tick;
	struct history *h;
	struct accounts *a;
	sqlite3 *db;
	char alice_hash[PWHASH_STR_MAX];
} st;

struct input {
	const uint8_t *p;
	size_t n;
};

static int
next(struct input *in)
{
	if (in->n == 0)
		return -1;
	in->n--;
	return *in->p++;
}

static void
die(const char *what, const char *why)
{
	fprintf(stderr, "fuzz_conn_store: %s: %s\n", what, why);
	abort();
}

/* The cheapest hashing the config allows; see conf.c's limits. */
static void
cheap_hashing(struct config *cfg)
{
	cfg->accounts_scrypt_n = 16;
	cfg->accounts_scrypt_r = 1;
	cfg->accounts_scrypt_p = 1;
	cfg->accounts_pbkdf2_iterations = 1000;
}

static void
store_close(void)
{
	static const char *const suffix[] = {"", "-wal", "-shm"};
	char file[1200];
	size_t i;

	accounts_close(st.a);
	history_close(st.h);
	sqlite3_close(st.db);
	event_free(st.tick);
	event_base_free(st.base);
	config_free(st.cfg);
	for (i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
		snprintf(file, sizeof file, "%s%s", st.path, suffix[i]);
		unlink(file);
	}
	rmdir(st.dir);
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

static void
store_open(void)
{
	const char *tmp = getenv("TMPDIR");
	struct pwhash_params pp;
	char err[512];

	fz_global_init();
	/* Workers wake the loop with event_active(): before any base. */
	if (evthread_use_pthreads() == -1)
		die("evthread_use_pthreads", "failed");
	snprintf(st.dir, sizeof st.dir, "%s/parley-fuzz-XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	if (mkdtemp(st.dir) == NULL)
		die(st.dir, "mkdtemp failed");
	snprintf(st.path, sizeof st.path, "%s/history.db", st.dir);
	st.cfg = config_new();
	free(st.cfg->state_directory);
	if ((st.cfg->state_directory = strdup(st.dir)) == NULL)
		die("strdup", "out of memory");
	/* Lines wait a little for their batch, so replays see them pending. */
	st.cfg->history_batch_size = 64;
	st.cfg->history_batch_ms = 5;
	/* Something for a retention pass (op 8) to do. */
	st.cfg->history_max_per_room = 8;
	st.cfg->history_max_age_ms = 24 * 3600 * 1000;
	cheap_hashing(st.cfg);
	if ((st.base = event_base_new()) == NULL ||
	    (st.tick = evtimer_new(st.base, tick_cb, NULL)) == NULL)
		die("event base", "out of memory");
	if ((st.h = history_open(st.base, st.cfg, err, sizeof err)) == NULL)
		die("history_open", err);
	if ((st.a = accounts_open(st.base, st.cfg, err, sizeof err)) == NULL)
		die("accounts_open", err);
	if (sqlite3_open_v2(st.path, &st.db, SQLITE_OPEN_READWRITE, NULL) !=
	    SQLITE_OK)
		die(st.path, sqlite3_errmsg(st.db));
	sqlite3_busy_timeout(st.db, WAIT_MS);
	/* Our resets need not survive a power cut. */
	sqlite3_exec(st.db, "PRAGMA synchronous = OFF", NULL, NULL, NULL);
	memset(&pp, 0, sizeof pp);
	pp.kdf = PWHASH_SCRYPT;
	pp.scrypt_n = st.cfg->accounts_scrypt_n;
	pp.scrypt_r = st.cfg->accounts_scrypt_r;
	pp.scrypt_p = st.cfg->accounts_scrypt_p;
	if (pwhash_make(&pp, ALICE_PW, st.alice_hash, sizeof st.alice_hash) ==
	    -1)
		die("pwhash_make", "failed");
	atexit(store_close);
}

static void
exec_sql(const char *sql)
{
	if (sqlite3_exec(st.db, sql, NULL, NULL, NULL) != SQLITE_OK)
		die(sql, sqlite3_errmsg(st.db));
}

/* Every table to the baseline (see the top); nothing is in flight. */
static void
store_reset(void)
{
	static const struct {
		const char *room, *nick, *text;
		int kind;
	} lines[] = {
	    {"#lobby", "alice", "hello world", HISTORY_MESSAGE},
	    {"#lobby", "bob", "the quick brown fox", HISTORY_MESSAGE},
	    {"#lobby", "alice", "waves", HISTORY_ACTION},
	    {"#lobby", "carol", "h\xc3\xa9llo w\xc3\xb6rld", HISTORY_MESSAGE},
	    {"#lobby", "bob", "NEAR OR AND \"quoted\" hel*", HISTORY_MESSAGE},
	    {"#lobby", "alice", "last line before you came", HISTORY_MESSAGE},
	    {"#vault", "alice", "secret plans", HISTORY_MESSAGE},
	};
	sqlite3_stmt *s;
	size_t i;

	CHECK(history_flush_wait(st.h, WAIT_MS) == 0);
	exec_sql("BEGIN IMMEDIATE;"
		 "DELETE FROM messages; DELETE FROM accounts;"
		 "DELETE FROM certs; DELETE FROM rooms; DELETE FROM klines;"
		 "INSERT INTO rooms (name, seq, key, invite_only, owners, "
		 "bans, invites) VALUES ('#vault', 1, 'opensesame', 0, "
		 "'alice', 'mallory* 127.0.0.9', 'bob');");
	if (sqlite3_prepare_v2(st.db,
		"INSERT INTO accounts (name, hash, created) "
		"VALUES ('alice', ?1, 0)",
		-1, &s, NULL) != SQLITE_OK)
		die("insert alice", sqlite3_errmsg(st.db));
	sqlite3_bind_text(s, 1, st.alice_hash, -1, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_DONE)
		die("insert alice", sqlite3_errmsg(st.db));
	sqlite3_finalize(s);
	exec_sql("COMMIT");
	CHECK(accounts_test_reload(st.a) == 0);
	for (i = 0; i < sizeof lines / sizeof lines[0]; i++)
		CHECK(history_append(st.h, lines[i].room, lines[i].nick,
			  lines[i].kind, lines[i].text) > 0);
	/* Committed, so /history and /search see them too. */
	CHECK(history_flush_wait(st.h, WAIT_MS) == 0);
}

static struct config *
make_config(int knobs)
{
	struct config *cfg = config_new();

	cfg->chat_flood_burst = 1000000;
	cfg->chat_flood_rate = 1000000;
	cheap_hashing(cfg);
	if ((cfg->operator_accounts = strdup("alice")) == NULL)
		abort();
	if (knobs & 1) {
		cfg->chat_max_line = 128;
		cfg->chat_output_soft_limit = 1024;
		cfg->chat_output_hard_limit = 4096;
		cfg->chat_max_rooms_per_client = 2;
		cfg->chat_max_rooms = 3;
		cfg->chat_nick_max = 6;
		cfg->chat_room_max = 7;
		cfg->chat_room_list_max = 2;
		cfg->chat_room_key_max = 4;
		cfg->chat_resume_max = 1;
	}
	if (knobs & 2) {
		cfg->history_replay = 2;
		cfg->history_page_max = 2;
		cfg->chat_resume_replay_max = 1;
	}
	if (knobs & 4)
		cfg->accounts_kdf = PWHASH_PBKDF2;
	if (knobs & 8) {
		cfg->accounts_failures_per_address = 2;
		cfg->accounts_failure_window_ms = 1000;
		cfg->accounts_failure_delay_ms = 1;
		cfg->accounts_failure_delay_max_ms = 3;
		cfg->accounts_registrations = 1;
	} else {
		cfg->accounts_failure_delay_ms = 0;
		cfg->accounts_failure_delay_max_ms = 0;
	}
	if (knobs & 16) /* with tight limits, parked sessions expire at once */
		cfg->chat_resume_window_ms = (knobs & 1) ? 1 : 0;
	if (knobs & 128) {
		free(cfg->chat_default_room);
		if ((cfg->chat_default_room = strdup("#vault")) == NULL)
			abort();
	}
	return cfg;
}

/* Does anything wait for a worker, or for a delayed answer? */
static int
busy(struct fz *f)
{
	struct session *s;
	int i;

	if (history_inflight(st.h) > 0 || accounts_inflight(st.a) > 0)
		return 1;
	for (i = 0; i < f->nclients; i++)
		if ((s = fz_session(f, i)) != NULL &&
		    (s->querying || s->replaying > 0))
			return 1;
	return 0;
}

/* Run the loop until every job is answered; a hang aborts. */
static void
wait_jobs(struct fz *f)
{
	uint64_t deadline = clock_mono_ms() + WAIT_MS;
	struct timeval tv = {0, 1000};

	fz_pump(f);
	while (busy(f)) {
		if (clock_mono_ms() > deadline) {
			fprintf(stderr,
			    "fuzz: still waiting after %d ms: history %u, "
			    "accounts %zu in flight\n",
			    WAIT_MS, history_inflight(st.h),
			    accounts_inflight(st.a));
			abort();
		}
		/* Sleep until a completion (or a timer) fires, 1 ms at most. */
		evtimer_add(st.tick, &tv);
		event_base_loop(st.base, EVLOOP_ONCE);
		fz_pump(f);
	}
}

static size_t
received(const struct fz *f)
{
	size_t n = 0;
	int i;

	for (i = 0; i < f->nclients; i++)
		n += f->c[i].recv.n;
	return n;
}

/* Every client a fast reader; run until no job and no output is left. */
static void
settle(struct fz *f)
{
	size_t before;
	int i, rounds;

	for (i = 0; i < f->nclients; i++)
		fz_set_slow(f, i, 0);
	for (rounds = 0; rounds < 1000; rounds++) {
		before = received(f);
		wait_jobs(f);
		if (received(f) == before && rounds > 0)
			break;
	}
	CHECK(!busy(f));
}

struct acl_check {
	struct chat *ch;
	sqlite3_stmt *q; /* is ?1 saved, with owners? */
};

/* Room settings without a live room are kept only for owned rooms. */
static void
acl_cb(const char *fold, void *value, void *arg)
{
	struct acl_check *c = arg;
	int rc;

	(void)value;
	if (room_find(c->ch, fold) != NULL)
		return;
	sqlite3_reset(c->q);
	sqlite3_bind_text(c->q, 1, fold, -1, SQLITE_TRANSIENT);
	if ((rc = sqlite3_step(c->q)) != SQLITE_ROW) {
		fprintf(stderr,
		    "fuzz: settings of %s kept for no live room, but %s\n",
		    fold, rc == SQLITE_DONE ? "not saved" : "cannot look");
		abort();
	}
}

/* What the database says persists is what the chat holds, and back. */
static void
check_rooms(struct chat *ch)
{
	struct acl_check c = {ch, NULL};
	sqlite3_stmt *q;
	int rc;

	if (sqlite3_prepare_v2(st.db,
		"SELECT name FROM rooms WHERE owners != ''", -1, &q,
		NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(st.db,
		"SELECT 1 FROM rooms WHERE name = ?1 AND owners != ''", -1,
		&c.q, NULL) != SQLITE_OK)
		die("select rooms", sqlite3_errmsg(st.db));
	while ((rc = sqlite3_step(q)) == SQLITE_ROW)
		if (strmap_get(ch->acls,
			(const char *)sqlite3_column_text(q, 0)) == NULL) {
			fprintf(stderr, "fuzz: room %s is saved, not held\n",
			    sqlite3_column_text(q, 0));
			abort();
		}
	CHECK(rc == SQLITE_DONE);
	sqlite3_finalize(q);
	strmap_foreach(ch->acls, acl_cb, &c);
	sqlite3_finalize(c.q);
}

struct kline_check {
	sqlite3_stmt *q; /* ?1's live row, if any */
	int64_t now;
	size_t n;
};

/* Bans expiring about now may differ in either place; skip them. */
static int
near_now(int64_t expires, int64_t now)
{
	return expires != 0 && expires > now - 2000 && expires < now + 2000;
}

static void
kline_cb(const char *mask, int64_t expires, const char *reason, void *arg)
{
	struct kline_check *c = arg;

	if (near_now(expires, c->now))
		return;
	c->n++;
	sqlite3_reset(c->q);
	sqlite3_bind_text(c->q, 1, mask, -1, SQLITE_TRANSIENT);
	if (sqlite3_step(c->q) != SQLITE_ROW ||
	    sqlite3_column_int64(c->q, 0) != expires ||
	    strcmp((const char *)sqlite3_column_text(c->q, 1), reason) != 0) {
		fprintf(
		    stderr, "fuzz: ban of %s is not saved as it is\n", mask);
		abort();
	}
}

/* The address bans in force are the saved ones, and back. */
static void
check_klines(struct gate *g)
{
	struct kline_check c = {NULL, clock_real_ms(), 0};
	sqlite3_stmt *q;
	size_t n = 0;
	int64_t e;
	int rc;

	if (sqlite3_prepare_v2(st.db,
		"SELECT expires FROM klines WHERE live != 0", -1, &q,
		NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(st.db,
		"SELECT expires, reason FROM klines "
		"WHERE mask = ?1 AND live != 0",
		-1, &c.q, NULL) != SQLITE_OK)
		die("select klines", sqlite3_errmsg(st.db));
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		e = sqlite3_column_int64(q, 0);
		n += (e == 0 || e > c.now) && !near_now(e, c.now);
	}
	CHECK(rc == SQLITE_DONE);
	sqlite3_finalize(q);
	gate_kline_foreach(g, kline_cb, &c);
	sqlite3_finalize(c.q);
	CHECK(c.n == n);
}

static void
check_end(struct fz *f)
{
	struct history_stats hs;
	struct session *s;
	sqlite3_stmt *q;
	size_t n = 0;
	int i, rc;

	for (i = 0; i < f->nclients; i++) {
		fz_check_chat_output(&f->c[i]);
		if ((s = fz_session(f, i)) == NULL)
			continue;
		/* Output is held back only while a replay runs. */
		CHECK(evbuffer_get_length(s->held) == 0);
		CHECK(!conn_paused(s->conn, PAUSE_REPLAY | PAUSE_SERVICE));
	}
	CHECK(history_flush_wait(st.h, WAIT_MS) == 0);
	history_stats(st.h, &hs);
	CHECK(hs.queue_depth == 0 && !hs.degraded && hs.dropped == 0);
	/* The loop's set of registered names is the table. */
	if (sqlite3_prepare_v2(
		st.db, "SELECT name FROM accounts", -1, &q, NULL) != SQLITE_OK)
		die("select accounts", sqlite3_errmsg(st.db));
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		n++;
		if (!accounts_registered(
			st.a, (const char *)sqlite3_column_text(q, 0))) {
			fprintf(stderr, "fuzz: account %s is not in the set\n",
			    sqlite3_column_text(q, 0));
			abort();
		}
	}
	sqlite3_finalize(q);
	CHECK(rc == SQLITE_DONE);
	CHECK(n == accounts_count(st.a));
	check_rooms(f->srv.chat);
	check_klines(f->srv.gate);
}

/* PARLEY_FUZZ_DUMP set: what each client saw, on stderr (for seeds). */
static void
dump(const struct fz *f)
{
	int i;

	if (getenv("PARLEY_FUZZ_DUMP") == NULL)
		return;
	for (i = 0; i < f->nclients; i++)
		fprintf(stderr, "== client %d received:\n%.*s", i,
		    (int)f->c[i].recv.n, (const char *)f->c[i].recv.p);
}

/* A new chat over the same stores: what persists comes back. */
static void
restart(struct fz *f)
{
	int i, n = f->nclients;

	dump(f);
	for (i = 0; i < f->nclients; i++)
		fz_check_chat_output(&f->c[i]);
	fz_disconnect_all(f);
	wait_jobs(f);
	chat_free(f->srv.chat);
	gate_free(f->srv.gate);
	CHECK((f->srv.gate = gate_new()) != NULL);
	CHECK((f->srv.chat = chat_new(&f->srv)) != NULL);
	chat_load_state(f->srv.chat);
	for (i = 0; i < n; i++)
		fz_connect(f, &chat_service);
}

/* Each client's last session token, kept after it left (parked). */
static char tokens[FZ_MAXCLIENTS][SESSION_TOKEN_BYTES * 2 + 1];

static void
note_tokens(struct fz *f)
{
	struct session *s;
	int i;

	for (i = 0; i < f->nclients; i++)
		if ((s = fz_session(f, i)) != NULL && s->token[0] != '\0')
			memcpy(tokens[i], s->token, sizeof tokens[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = {data, size};
	struct fz f;
	char line[512];
	size_t len;
	int knobs, op, i, k, n, hurry = 0, restarts = 0;

	if (size < 1 || size > MAXIN)
		return 0;
	if (st.base == NULL)
		store_open();
	store_reset();
	memset(tokens, 0, sizeof tokens);
	knobs = next(&in);
	if (fz_init_base(&f, make_config(knobs), st.base) == -1)
		return 0;
	f.srv.history = st.h;
	f.srv.accounts = st.a;
	CHECK((f.srv.gate = gate_new()) != NULL);
	accounts_reconfigure(st.a, f.srv.cfg);
	chat_load_state(f.srv.chat);
	for (k = 0; k <= ((knobs >> 5) & 3); k++)
		fz_connect(&f, &chat_service);
	wait_jobs(&f);
	note_tokens(&f);

	while ((op = next(&in)) != -1) {
		i = (op >> 4) % (f.nclients > 0 ? f.nclients : 1);
		switch (op & 0x0F) {
		case 0:
		case 1:
		case 2:
		case 3:
		case 4:
			if ((n = next(&in)) == -1 || f.nclients == 0)
				break;
			if ((size_t)n > in.n)
				n = (int)in.n;
			fz_send(&f, i, in.p, (size_t)n);
			in.p += n;
			in.n -= (size_t)n;
			break;
		case 5:
			if ((n = next(&in)) != -1 && f.nclients > 0)
				fz_send(&f, i, canned[n % NCANNED],
				    strlen(canned[n % NCANNED]));
			break;
		case 6:
			if ((k = next(&in)) == -1 || (n = next(&in)) == -1 ||
			    f.nclients == 0)
				break;
			if ((size_t)n > in.n)
				n = (int)in.n;
			len = strlen(starts[k % NSTARTS]);
			memcpy(line, starts[k % NSTARTS], len);
			memcpy(line + len, in.p, (size_t)n);
			line[len + (size_t)n] = '\n';
			fz_send(&f, i, line, len + (size_t)n + 1);
			in.p += n;
			in.n -= (size_t)n;
			break;
		case 7:
			if ((n = next(&in)) == -1 || f.nclients == 0)
				break;
			k = snprintf(line, sizeof line, "/resume %s\n",
			    tokens[n % FZ_MAXCLIENTS][0] != '\0'
				? tokens[n % FZ_MAXCLIENTS]
				: "00000000000000000000000000000000");
			fz_send(&f, i, line, (size_t)k);
			break;
		case 8:
			history_test_prune(st.h);
			break;
		case 9:
			if (f.nclients > 0)
				fz_set_slow(&f, i, !f.c[i].slow);
			break;
		case 10:
			if (f.nclients > 0)
				fz_finish(&f, i);
			break;
		case 11:
			fz_connect(&f, &chat_service);
			break;
		case 12:
			if (f.nclients > 0)
				fz_drop(&f, i);
			break;
		case 13:
			CHECK(history_flush_wait(st.h, WAIT_MS) == 0);
			break;
		case 14:
			hurry = !hurry;
			break;
		case 15:
			if (restarts++ < RESTARTS_MAX)
				restart(&f);
			break;
		}
		if (hurry)
			fz_pump(&f);
		else
			wait_jobs(&f);
		note_tokens(&f);
	}
	settle(&f);
	dump(&f);
	check_end(&f);

	fz_disconnect_all(&f);
	wait_jobs(&f); /* answers to conns that are gone go nowhere */
	evtimer_del(st.tick);
	gate_free(f.srv.gate);
	fz_free(&f);
	return 0;
}
