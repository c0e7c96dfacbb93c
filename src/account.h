/*
 * Accounts: registered nicks with password hashes (and, later, bound
 * certificate fingerprints), stored in the history database file (its
 * own tables; sqlite in WAL mode lets several connections share it).
 *
 * Every hash and every sqlite statement runs on the module's own worker
 * pool (workq.h), each thread with its own connection; results come back
 * on the loop thread, naming the requester by conn id -- the callback
 * must look it up and accept that it is gone.  The set of registered
 * names is mirrored on the loop (loaded once at start, updated by each
 * completed register/unregister), so nick checks never wait for sqlite.
 *
 * Names are given case-folded (name_fold), as nicks are keyed.
 */
#ifndef PARLEY_ACCOUNT_H
#define PARLEY_ACCOUNT_H

#include <stddef.h>
#include <stdint.h>

struct accounts;
struct config;
struct event_base;

enum acct_op {
	ACCT_IDENTIFY, /* name, pw */
	ACCT_REGISTER, /* name, pw */
	ACCT_PASSWORD, /* name, pw (old), pw2 (new) */
	ACCT_UNREGISTER, /* name, pw */
	ACCT_CERT_FIND, /* pw = fingerprint; the account comes back as name */
	ACCT_CERT_ADD, /* name, pw = fingerprint */
	ACCT_CERT_DEL, /* name, pw = fingerprint */
	ACCT_NOPS
};

enum acct_status {
	ACCT_OK,
	ACCT_BADPASS, /* wrong password (the KDF ran) */
	ACCT_NOACCOUNT, /* no such account */
	ACCT_EXISTS, /* register: the name is taken; certadd: bound elsewhere */
	ACCT_FAILED /* sqlite or KDF error; logged */
};

/* Loop thread.  name: the account (folded), or NULL when gone. */
typedef void (*acct_done_fn)(
    uint64_t owner_id, void *arg, enum acct_status st, const char *name);

/*
 * Open the database (creating the tables), load the registered names and
 * start the threads.  Runs on the loop thread before the loop starts.
 * NULL with err set on failure.
 */
struct accounts *accounts_open(struct event_base *base,
    const struct config *cfg, char *err, size_t errlen);
/* Finish queued jobs (their callbacks run), stop the threads.  NULL ok. */
void accounts_close(struct accounts *a);
/* New KDF parameters after a reload (for hashes made from now on). */
void accounts_reconfigure(struct accounts *a, const struct config *cfg);

int accounts_registered(const struct accounts *a, const char *name);
size_t accounts_count(const struct accounts *a);
/*
 * Jobs (password work, account statements, settings saves) whose
 * completion has not run on the loop yet; 0 when the store is idle.
 */
size_t accounts_inflight(struct accounts *a);
/*
 * Test hook: read the registered names again after something else
 * changed the tables (the fuzzers reset them between inputs).  Loop
 * thread, with nothing in flight; 0, or -1 (the names are then empty).
 */
int accounts_test_reload(struct accounts *a);

/*
 * Queue op; fn runs later on the loop thread (exactly once if this
 * returns 0).  Passwords are copied and wiped after use.  -1 when the
 * queue is full (the caller says "busy") or on bad arguments.
 */
/*
 * Persistent room settings (room owners, keys, bans, invites) and
 * address bans, in the same database.  Loading runs on the calling
 * thread (start-up only); saving is queued to the worker threads and
 * never answered.  Saves carry a sequence number so a slower older save
 * never overwrites a newer one.
 */
struct acct_room {
	const char *name; /* folded */
	const char *key; /* NULL: none */
	int invite_only;
	const char *owners; /* space-separated folded account names */
	const char *bans; /* space-separated masks */
	const char *invites; /* space-separated folded nicks */
};
int accounts_rooms_load(struct accounts *a,
    void (*fn)(void *arg, const struct acct_room *r), void *arg);
/* Save (or, with no owners, delete) the settings of r->name. */
void accounts_room_save(struct accounts *a, const struct acct_room *r);

struct acct_kline {
	const char *mask; /* an address glob: 192.0.2.*, 2001:db8:* */
	int64_t expires_ms; /* CLOCK_REALTIME; 0 = never */
	const char *reason;
	const char *by;
};
int accounts_klines_load(struct accounts *a,
    void (*fn)(void *arg, const struct acct_kline *k), void *arg);
/* Store k (replacing the same mask); with add == 0, delete k->mask. */
void accounts_kline_save(
    struct accounts *a, const struct acct_kline *k, int add);

int accounts_submit(struct accounts *a, enum acct_op op, const char *name,
    const char *pw, const char *pw2, uint64_t owner_id, acct_done_fn fn,
    void *arg);

#endif
