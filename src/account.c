/*
 * Accounts; see account.h.
 *
 * Threads: the loop owns struct accounts and its name cache; each worker
 * thread owns one sqlite connection (its thread ctx) and touches only the
 * job it runs.  Hashing and account statements run on the "auth" pool
 * ([accounts] threads, queue_limit); saves of room settings and address
 * bans on a one-thread "store" queue that never refuses, so they are
 * neither lost to a flood of /identify nor reordered.  The KDF parameters a job needs are copied into the job,
 * so a reload never races a worker.
 *
 * Schema (created if missing, next to history's tables):
 *   accounts(name PRIMARY KEY -- folded nick, hash, created -- ms)
 *   certs(fingerprint PRIMARY KEY -- SHA-256 hex, account, created)
 *   rooms(name PRIMARY KEY, seq, key, invite_only, owners, bans, invites)
 *   klines(mask PRIMARY KEY, seq, expires, reason, setter, live)
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <sqlite3.h>

#include "account.h"
#include "clock.h"
#include "conf.h"
#include "log.h"
#include "pwhash.h"
#include "strmap.h"
#include "workq.h"

#define ACCT_BUSY_MS 5000 /* another connection may be writing */
#define PW_MAX 512

static const char schema[] = "CREATE TABLE IF NOT EXISTS accounts ("
			     "  name TEXT PRIMARY KEY,"
			     "  hash TEXT NOT NULL,"
			     "  created INTEGER NOT NULL) WITHOUT ROWID;"
			     "CREATE TABLE IF NOT EXISTS certs ("
			     "  fingerprint TEXT PRIMARY KEY,"
			     "  account TEXT NOT NULL,"
			     "  created INTEGER NOT NULL) WITHOUT ROWID;"
			     "CREATE TABLE IF NOT EXISTS rooms ("
			     "  name TEXT PRIMARY KEY,"
			     "  seq INTEGER NOT NULL,"
			     "  key TEXT,"
			     "  invite_only INTEGER NOT NULL,"
			     "  owners TEXT NOT NULL,"
			     "  bans TEXT NOT NULL,"
			     "  invites TEXT NOT NULL) WITHOUT ROWID;"
			     "CREATE TABLE IF NOT EXISTS klines ("
			     "  mask TEXT PRIMARY KEY,"
			     "  seq INTEGER NOT NULL,"
			     "  expires INTEGER NOT NULL,"
			     "  reason TEXT NOT NULL,"
			     "  setter TEXT NOT NULL,"
			     "  live INTEGER NOT NULL) WITHOUT ROWID;";

struct accounts {
	struct workq *q; /* hashing and account statements */
	struct workq *saveq; /* settings saves: one thread, never refused */
	struct strmap *names; /* folded name -> (void *)1 */
	struct pwhash_params params;
	char *path;
	int64_t seq; /* of the last save queued */
	pthread_mutex_t err_lock; /* guards init_err */
	char init_err[256]; /* from a failing thread_init */
};

struct job {
	struct accounts *a;
	enum acct_op op;
	struct pwhash_params params;
	char name[260];
	char pw[PW_MAX];
	char pw2[PW_MAX];
	enum acct_status st;
	acct_done_fn fn;
	void *arg;
};

static char *
db_path(const struct config *cfg)
{
	const char *dir = cfg->state_directory ? cfg->state_directory : ".";
	const char *file = "history.db";
	size_t len;
	char *p;

	/* The history's database; without history, a file of our own. */
	if (cfg->accounts_path != NULL)
		return strdup(cfg->accounts_path);
	if (cfg->history_enabled && cfg->history_path != NULL)
		return strdup(cfg->history_path);
	if (!cfg->history_enabled)
		file = "accounts.db";
	len = strlen(dir) + 1 + strlen(file) + 1;
	if ((p = malloc(len)) != NULL)
		snprintf(p, len, "%s/%s", dir, file);
	return p;
}

static sqlite3 *
open_db(const char *path, char *err, size_t errlen)
{
	sqlite3 *h = NULL;
	int rc;

	rc = sqlite3_open_v2(path, &h,
	    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
	    NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path,
		    h ? sqlite3_errmsg(h) : sqlite3_errstr(rc));
		sqlite3_close(h);
		return NULL;
	}
	sqlite3_busy_timeout(h, ACCT_BUSY_MS);
	if (sqlite3_exec(h, "PRAGMA journal_mode = WAL;", NULL, NULL, NULL) !=
	    SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(h));
		sqlite3_close(h);
		return NULL;
	}
	return h;
}

static void *
thread_init(void *arg)
{
	struct accounts *a = arg;
	char err[256];
	sqlite3 *h;

	if ((h = open_db(a->path, err, sizeof err)) == NULL) {
		pthread_mutex_lock(&a->err_lock);
		snprintf(a->init_err, sizeof a->init_err, "%s", err);
		pthread_mutex_unlock(&a->err_lock);
	}
	return h;
}

static void
thread_fini(void *ctx)
{
	sqlite3_close(ctx);
}

static void
params_from(struct pwhash_params *p, const struct config *cfg)
{
	memset(p, 0, sizeof *p);
	p->kdf =
	    cfg->accounts_kdf == PWHASH_PBKDF2 ? PWHASH_PBKDF2 : PWHASH_SCRYPT;
	p->scrypt_n = cfg->accounts_scrypt_n;
	p->scrypt_r = cfg->accounts_scrypt_r;
	p->scrypt_p = cfg->accounts_scrypt_p;
	p->pbkdf2_iterations = cfg->accounts_pbkdf2_iterations;
}

/* The stored hash of name into out; 1 found, 0 not, -1 error. */
static int
get_hash(sqlite3 *h, const char *name, char *out, size_t outlen)
{
	sqlite3_stmt *st;
	int rc, found = 0;

	if (sqlite3_prepare_v2(h, "SELECT hash FROM accounts WHERE name = ?1",
		-1, &st, NULL) != SQLITE_OK)
		return -1;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		snprintf(out, outlen, "%s",
		    (const char *)sqlite3_column_text(st, 0));
		found = 1;
	} else if (rc != SQLITE_DONE)
		found = -1;
	sqlite3_finalize(st);
	return found;
}

/* One statement with text parameters; returns the sqlite code. */
static int
exec_text(
    sqlite3 *h, const char *sql, const char *p1, const char *p2, int *changes)
{
	sqlite3_stmt *st;
	int rc;

	if ((rc = sqlite3_prepare_v2(h, sql, -1, &st, NULL)) != SQLITE_OK)
		return rc;
	if (p1 != NULL)
		sqlite3_bind_text(st, 1, p1, -1, SQLITE_STATIC);
	if (p2 != NULL)
		sqlite3_bind_text(st, 2, p2, -1, SQLITE_STATIC);
	if (sqlite3_bind_parameter_count(st) >= 3)
		sqlite3_bind_int64(st, 3, clock_real_ms());
	rc = sqlite3_step(st);
	if (changes != NULL)
		*changes = sqlite3_changes(h);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static const char *
col0(sqlite3_stmt *st)
{
	const unsigned char *t = sqlite3_column_text(st, 0);

	return t != NULL ? (const char *)t : "";
}

/* Check j->pw against the stored hash; sets j->st unless it matched. */
static int
check_password(sqlite3 *h, struct job *j)
{
	char stored[PWHASH_STR_MAX];
	int found, ok;

	if ((found = get_hash(h, j->name, stored, sizeof stored)) == -1) {
		log_err("accounts: %s: %s", j->name, sqlite3_errmsg(h));
		j->st = ACCT_FAILED;
		return 0;
	}
	if (found == 0) {
		/* As slow as a real check: no timing oracle for names. */
		pwhash_dummy(&j->params, j->pw);
		j->st = ACCT_NOACCOUNT;
		return 0;
	}
	if ((ok = pwhash_verify(stored, j->pw)) == -1) {
		log_err("accounts: %s: stored hash unusable", j->name);
		j->st = ACCT_FAILED;
		return 0;
	}
	if (!ok)
		j->st = ACCT_BADPASS;
	return ok;
}

/* The account a fingerprint (j->pw) is bound to, into j->name. */
static void
cert_find(sqlite3 *h, struct job *j)
{
	sqlite3_stmt *st;
	int rc;

	j->st = ACCT_NOACCOUNT;
	if (sqlite3_prepare_v2(h,
		"SELECT c.account FROM certs c JOIN accounts a "
		"ON a.name = c.account WHERE c.fingerprint = ?1",
		-1, &st, NULL) != SQLITE_OK) {
		j->st = ACCT_FAILED;
		return;
	}
	sqlite3_bind_text(st, 1, j->pw, -1, SQLITE_STATIC);
	if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		snprintf(j->name, sizeof j->name, "%s", col0(st));
		j->st = ACCT_OK;
	} else if (rc != SQLITE_DONE)
		j->st = ACCT_FAILED;
	sqlite3_finalize(st);
}

static void
work(void *ctx, void *arg)
{
	sqlite3 *h = ctx;
	struct job *j = arg;
	char hash[PWHASH_STR_MAX];
	int rc, changes = 0;

	j->st = ACCT_OK;
	switch (j->op) {
	case ACCT_IDENTIFY:
		(void)check_password(h, j);
		break;
	case ACCT_REGISTER:
		if (pwhash_make(&j->params, j->pw, hash, sizeof hash) == -1) {
			log_err("accounts: cannot hash a password");
			j->st = ACCT_FAILED;
			break;
		}
		rc = exec_text(h,
		    "INSERT INTO accounts (name, hash, created) "
		    "VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
		    j->name, hash, &changes);
		if (rc != SQLITE_OK) {
			log_err("accounts: register %s: %s", j->name,
			    sqlite3_errmsg(h));
			j->st = ACCT_FAILED;
		} else if (changes == 0)
			j->st = ACCT_EXISTS;
		break;
	case ACCT_PASSWORD:
		if (!check_password(h, j))
			break;
		if (pwhash_make(&j->params, j->pw2, hash, sizeof hash) == -1) {
			j->st = ACCT_FAILED;
			break;
		}
		rc = exec_text(h,
		    "UPDATE accounts SET hash = ?2 WHERE name = ?1", j->name,
		    hash, &changes);
		if (rc != SQLITE_OK || changes == 0) {
			log_err("accounts: password of %s: %s", j->name,
			    rc != SQLITE_OK ? sqlite3_errmsg(h) : "vanished");
			j->st = ACCT_FAILED;
		}
		break;
	case ACCT_UNREGISTER:
		if (!check_password(h, j))
			break;
		rc = exec_text(h, "DELETE FROM accounts WHERE name = ?1",
		    j->name, NULL, &changes);
		if (rc == SQLITE_OK)
			rc =
			    exec_text(h, "DELETE FROM certs WHERE account = ?1",
				j->name, NULL, NULL);
		if (rc != SQLITE_OK) {
			log_err("accounts: unregister %s: %s", j->name,
			    sqlite3_errmsg(h));
			j->st = ACCT_FAILED;
		} else if (changes == 0)
			j->st = ACCT_NOACCOUNT;
		break;
	case ACCT_CERT_FIND:
		cert_find(h, j);
		break;
	case ACCT_CERT_ADD:
		rc = exec_text(h,
		    "INSERT INTO certs (fingerprint, account, created) "
		    "VALUES (?2, ?1, ?3) ON CONFLICT (fingerprint) DO NOTHING",
		    j->name, j->pw, &changes);
		if (rc != SQLITE_OK) {
			log_err("accounts: certadd: %s", sqlite3_errmsg(h));
			j->st = ACCT_FAILED;
		} else if (changes == 0)
			j->st = ACCT_EXISTS;
		break;
	case ACCT_CERT_DEL:
		rc = exec_text(h,
		    "DELETE FROM certs WHERE account = ?1 AND fingerprint = ?2",
		    j->name, j->pw, &changes);
		if (rc != SQLITE_OK) {
			log_err("accounts: certdel: %s", sqlite3_errmsg(h));
			j->st = ACCT_FAILED;
		} else if (changes == 0)
			j->st = ACCT_NOACCOUNT;
		break;
	case ACCT_NOPS:
		j->st = ACCT_FAILED;
		break;
	}
	OPENSSL_cleanse(hash, sizeof hash);
	OPENSSL_cleanse(j->pw, sizeof j->pw);
	OPENSSL_cleanse(j->pw2, sizeof j->pw2);
}

static void
done(uint64_t owner, void *arg)
{
	struct job *j = arg;
	struct accounts *a = j->a;

	/* Keep the loop's mirror of the table in step with it. */
	if (j->st == ACCT_OK && j->op == ACCT_REGISTER)
		strmap_put(a->names, j->name, (void *)1);
	else if ((j->st == ACCT_OK || j->st == ACCT_NOACCOUNT) &&
	    j->op == ACCT_UNREGISTER)
		strmap_del(a->names, j->name);
	else if (j->st == ACCT_NOACCOUNT &&
	    (j->op == ACCT_IDENTIFY || j->op == ACCT_PASSWORD))
		strmap_del(a->names, j->name); /* gone behind our back */
	j->fn(owner, j->arg, j->st, j->name);
	free(j);
}

int
accounts_submit(struct accounts *a, enum acct_op op, const char *name,
    const char *pw, const char *pw2, uint64_t owner_id, acct_done_fn fn,
    void *arg)
{
	struct job *j;

	if (a == NULL || op >= ACCT_NOPS || fn == NULL ||
	    strlen(name) >= sizeof j->name || strlen(pw) >= sizeof j->pw ||
	    (pw2 != NULL && strlen(pw2) >= sizeof j->pw2))
		return -1;
	if ((j = calloc(1, sizeof *j)) == NULL)
		return -1;
	j->a = a;
	j->op = op;
	j->params = a->params;
	j->fn = fn;
	j->arg = arg;
	memcpy(j->name, name, strlen(name) + 1);
	memcpy(j->pw, pw, strlen(pw) + 1);
	if (pw2 != NULL)
		memcpy(j->pw2, pw2, strlen(pw2) + 1);
	if (workq_submit(a->q, owner_id, work, done, j) == -1) {
		OPENSSL_cleanse(j, sizeof *j);
		free(j);
		return -1;
	}
	return 0;
}

/* A save: one statement with up to 7 text-or-integer parameters. */
struct save {
	const char *sql;
	int64_t seq;
	int64_t num[2];
	char *text[5];
};

static void
save_free(struct save *sv)
{
	int i;

	for (i = 0; i < 5; i++)
		free(sv->text[i]);
	free(sv);
}

static void
save_work(void *ctx, void *arg)
{
	sqlite3 *h = ctx;
	struct save *sv = arg;
	sqlite3_stmt *st;
	int i, rc;

	if ((rc = sqlite3_prepare_v2(h, sv->sql, -1, &st, NULL)) == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, sv->seq);
		sqlite3_bind_int64(st, 2, sv->num[0]);
		sqlite3_bind_int64(st, 3, sv->num[1]);
		for (i = 0; i < 5; i++)
			if (sv->text[i] != NULL)
				sqlite3_bind_text(
				    st, 4 + i, sv->text[i], -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
		sqlite3_finalize(st);
	}
	if (rc != SQLITE_DONE)
		log_err("accounts: saving settings: %s", sqlite3_errmsg(h));
	save_free(sv);
}

static void
save_submit(struct accounts *a, const char *sql, int64_t n0, int64_t n1,
    const char *const text[5])
{
	struct save *sv;
	int i, bad = 0;

	if (a == NULL || (sv = calloc(1, sizeof *sv)) == NULL)
		return;
	sv->sql = sql;
	sv->seq = ++a->seq;
	sv->num[0] = n0;
	sv->num[1] = n1;
	for (i = 0; i < 5; i++)
		if (text[i] != NULL && (sv->text[i] = strdup(text[i])) == NULL)
			bad = 1;
	/*
	 * Saves have their own queue, unbounded (one per operator command)
	 * and in order, so a flood of /identify never loses a /ban.
	 */
	if (bad || workq_submit(a->saveq, 0, save_work, NULL, sv) == -1) {
		log_err("accounts: cannot queue a settings save");
		save_free(sv);
	}
}

void
accounts_room_save(struct accounts *a, const struct acct_room *r)
{
	const char *text[5] = {r->name, r->key, r->owners, r->bans, r->invites};

	save_submit(a,
	    "INSERT INTO rooms (name, seq, key, invite_only, owners, bans, "
	    "invites) VALUES (?4, ?1, ?5, ?2, ?6, ?7, ?8) "
	    "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, "
	    "key = excluded.key, invite_only = excluded.invite_only, "
	    "owners = excluded.owners, bans = excluded.bans, "
	    "invites = excluded.invites WHERE excluded.seq > rooms.seq",
	    r->invite_only, 0, text);
}

void
accounts_kline_save(struct accounts *a, const struct acct_kline *k, int add)
{
	const char *text[5] = {
	    k->mask, add ? k->reason : "", add ? k->by : "", NULL, NULL};

	save_submit(a,
	    "INSERT INTO klines (mask, seq, expires, live, reason, setter) "
	    "VALUES (?4, ?1, ?2, ?3, ?5, ?6) "
	    "ON CONFLICT (mask) DO UPDATE SET seq = excluded.seq, "
	    "expires = excluded.expires, live = excluded.live, "
	    "reason = excluded.reason, setter = excluded.setter "
	    "WHERE excluded.seq > klines.seq",
	    add ? k->expires_ms : 0, add, text);
}

static const char *
col(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	return t != NULL ? (const char *)t : "";
}

/* Run a SELECT on a fresh connection, rows to fn; start-up only. */
static int
load(struct accounts *a, const char *sql,
    void (*row)(sqlite3_stmt *st, void *fn, void *arg), void *fn, void *arg)
{
	char err[256];
	sqlite3 *h;
	sqlite3_stmt *st;
	int rc;

	if (a == NULL)
		return 0;
	if ((h = open_db(a->path, err, sizeof err)) == NULL) {
		log_err("accounts: %s", err);
		return -1;
	}
	if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) {
		log_err("accounts: %s", sqlite3_errmsg(h));
		sqlite3_close(h);
		return -1;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (sqlite3_column_int64(st, 0) > a->seq)
			a->seq = sqlite3_column_int64(st, 0);
		row(st, fn, arg);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		log_err("accounts: %s", sqlite3_errmsg(h));
	sqlite3_close(h);
	return rc == SQLITE_DONE ? 0 : -1;
}

static void
room_row(sqlite3_stmt *st, void *fn, void *arg)
{
	struct acct_room r;

	r.name = col(st, 1);
	r.key = sqlite3_column_type(st, 2) == SQLITE_NULL ? NULL : col(st, 2);
	r.invite_only = sqlite3_column_int(st, 3);
	r.owners = col(st, 4);
	r.bans = col(st, 5);
	r.invites = col(st, 6);
	((void (*)(void *, const struct acct_room *))fn)(arg, &r);
}

int
accounts_rooms_load(struct accounts *a,
    void (*fn)(void *arg, const struct acct_room *r), void *arg)
{
	return load(a,
	    "SELECT seq, name, key, invite_only, owners, bans, invites "
	    "FROM rooms WHERE owners != ''",
	    room_row, (void *)fn, arg);
}

static void
kline_row(sqlite3_stmt *st, void *fn, void *arg)
{
	struct acct_kline k;

	k.mask = col(st, 1);
	k.expires_ms = sqlite3_column_int64(st, 2);
	k.reason = col(st, 3);
	k.by = col(st, 4);
	((void (*)(void *, const struct acct_kline *))fn)(arg, &k);
}

int
accounts_klines_load(struct accounts *a,
    void (*fn)(void *arg, const struct acct_kline *k), void *arg)
{
	return load(a,
	    "SELECT seq, mask, expires, reason, setter FROM klines "
	    "WHERE live != 0",
	    kline_row, (void *)fn, arg);
}

int
accounts_registered(const struct accounts *a, const char *name)
{
	return a != NULL && strmap_get(a->names, name) != NULL;
}

size_t
accounts_count(const struct accounts *a)
{
	return a != NULL ? strmap_count(a->names) : 0;
}

void
accounts_reconfigure(struct accounts *a, const struct config *cfg)
{
	if (a != NULL)
		params_from(&a->params, cfg);
}

/* Create the tables and load the names, on the calling thread. */
static int
setup(struct accounts *a, char *err, size_t errlen)
{
	sqlite3 *h;
	sqlite3_stmt *st = NULL;
	int rc;

	if ((h = open_db(a->path, err, errlen)) == NULL)
		return -1;
	if (sqlite3_exec(h, schema, NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(h, "SELECT name FROM accounts", -1, &st, NULL) !=
		SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", a->path, sqlite3_errmsg(h));
		sqlite3_close(h);
		return -1;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		strmap_put(a->names, (const char *)sqlite3_column_text(st, 0),
		    (void *)1);
	sqlite3_finalize(st);
	/* Saves go on from the highest sequence number ever stored. */
	if (rc == SQLITE_DONE &&
	    sqlite3_prepare_v2(h,
		"SELECT max(coalesce((SELECT max(seq) FROM rooms), 0), "
		"coalesce((SELECT max(seq) FROM klines), 0))",
		-1, &st, NULL) == SQLITE_OK) {
		if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			a->seq = sqlite3_column_int64(st, 0);
			rc = SQLITE_DONE;
		}
		sqlite3_finalize(st);
	}
	if (rc != SQLITE_DONE) {
		snprintf(err, errlen, "%s: %s", a->path, sqlite3_errmsg(h));
		sqlite3_close(h);
		return -1;
	}
	sqlite3_close(h);
	return 0;
}

size_t
accounts_inflight(struct accounts *a)
{
	struct workq_stats q, sq;

	if (a == NULL)
		return 0;
	workq_stats(a->q, &q);
	workq_stats(a->saveq, &sq);
	return (
	    size_t)(q.submitted - q.completed + sq.submitted - sq.completed);
}

int
accounts_test_reload(struct accounts *a)
{
	struct strmap *names;
	char err[256];

	if (a == NULL || accounts_inflight(a) > 0 ||
	    (names = strmap_new()) == NULL)
		return -1;
	strmap_free(a->names);
	a->names = names;
	a->seq = 0;
	if (setup(a, err, sizeof err) == -1) {
		log_err("accounts: %s", err);
		return -1;
	}
	return 0;
}

struct accounts *
accounts_open(
    struct event_base *base, const struct config *cfg, char *err, size_t errlen)
{
	struct accounts *a;
	struct workq_config wc;

	if ((a = calloc(1, sizeof *a)) == NULL ||
	    (a->names = strmap_new()) == NULL ||
	    (a->path = db_path(cfg)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	pthread_mutex_init(&a->err_lock, NULL);
	params_from(&a->params, cfg);
	if (setup(a, err, errlen) == -1)
		goto fail;
	memset(&wc, 0, sizeof wc);
	wc.name = "auth";
	wc.threads = (int)cfg->accounts_threads;
	wc.nice = cfg->worker_nice;
	wc.max_pending = cfg->accounts_queue_limit;
	wc.thread_init = thread_init;
	wc.thread_fini = thread_fini;
	wc.init_arg = a;
	if ((a->q = workq_new(base, &wc)) == NULL) {
		snprintf(err, errlen, "account threads: %s",
		    a->init_err[0] ? a->init_err : strerror(errno));
		goto fail;
	}
	wc.name = "store";
	wc.threads = 1;
	wc.nice = cfg->worker_nice;
	wc.max_pending = 0;
	if ((a->saveq = workq_new(base, &wc)) == NULL) {
		snprintf(err, errlen, "settings thread: %s",
		    a->init_err[0] ? a->init_err : strerror(errno));
		workq_free(a->q);
		goto fail;
	}
	log_info("accounts: %zu registered nick(s) in %s",
	    strmap_count(a->names), a->path);
	return a;
fail:
	if (a != NULL) {
		strmap_free(a->names);
		free(a->path);
		free(a);
	}
	return NULL;
}

void
accounts_close(struct accounts *a)
{
	if (a == NULL)
		return;
	workq_free(a->q);
	workq_free(a->saveq); /* finishes every queued save */
	strmap_free(a->names);
	free(a->path);
	free(a);
}
