/*
 * Chat <-> accounts: /register, /identify, /password, /unregister, and
 * who may wear a registered nick.
 *
 * Hashing runs on the accounts worker pool; while a request is out the
 * session reads no further input (s->querying, PAUSE_SERVICE), so a
 * client's lines keep their order.  Answers come back by conn id and are
 * dropped if the client left meanwhile.
 *
 * Wrong passwords are slowed and limited twice over:
 *  - per connection, the answer to the Nth wrong password in a row is
 *    held back failure_delay * 2^(N-1) (at most failure_delay_max), and
 *    the connection reads nothing else meanwhile;
 *  - per address (IPv6: per /64), a token bucket of
 *    failures_per_address failures refilling over failure_window; while
 *    it is empty every password command from that address is refused
 *    before any hashing.
 * Each wrong password is logged with the nick and the peer address.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/crypto.h>

#include "account.h"
#include "chat-int.h"
#include "clock.h"
#include "conf.h"
#include "conn.h"
#include "log.h"
#include "server.h"
#include "strmap.h"
#include "text.h"

/* Addresses tracked for failures; beyond this, full buckets are dropped. */
#define AUTHFAIL_MAX 4096

struct authfail {
	double tokens;
	uint64_t ms; /* last refill */
};

/* One request in flight. */
struct pending {
	enum acct_op op;
	char nick[NICK_BYTES_MAX]; /* the nick as typed (identify/register) */
	char fp[65]; /* certadd, certdel */
};

/*
 * The key failures are counted under: the IPv4 address, or the IPv6 /64
 * (one host usually owns the whole prefix, as for the accept limits).
 */
static const char *
fail_key(struct session *s, char *buf, size_t len)
{
	const char *ip = conn_peer_ip(s->conn);
	struct in6_addr a6;

	if (strchr(ip, ':') == NULL || inet_pton(AF_INET6, ip, &a6) != 1)
		return ip;
	memset(a6.s6_addr + 8, 0, 8);
	if (inet_ntop(AF_INET6, &a6, buf, (socklen_t)len) == NULL)
		return ip;
	strncat(buf, "/64", len - strlen(buf) - 1);
	return buf;
}

static struct accounts *
accts(struct session *s)
{
	return s->chat->srv->accounts;
}

static const struct config *
cfg_of(struct session *s)
{
	return s->chat->srv->cfg;
}

/* Refill af; returns the bucket size (0 = no limit). */
static double
refill(const struct config *cfg, struct authfail *af, uint64_t now)
{
	double cap = cfg->accounts_failures_per_address;
	double rate = cap / (double)cfg->accounts_failure_window_ms;

	af->tokens += (double)(now - af->ms) * rate;
	if (af->tokens > cap)
		af->tokens = cap;
	af->ms = now;
	return cap;
}

/* Seconds until address may try again; 0 = now. */
static unsigned
address_blocked(struct session *s)
{
	const struct config *cfg = cfg_of(s);
	struct authfail *af;
	char key[INET6_ADDRSTRLEN + 4];
	double rate;

	if (cfg->accounts_failures_per_address == 0 ||
	    (af = strmap_get(
		 s->chat->authfail, fail_key(s, key, sizeof key))) == NULL)
		return 0;
	refill(cfg, af, clock_mono_ms());
	if (af->tokens >= 1.0)
		return 0;
	rate = cfg->accounts_failures_per_address /
	    (double)cfg->accounts_failure_window_ms;
	return (unsigned)((1.0 - af->tokens) / rate / 1000.0) + 1;
}

struct sweep {
	const struct config *cfg;
	uint64_t now;
	char **keys;
	size_t n;
};

static void
sweep_cb(const char *key, void *value, void *arg)
{
	struct sweep *sw = arg;

	if (refill(sw->cfg, value, sw->now) <=
	    ((struct authfail *)value)->tokens)
		sw->keys[sw->n++] = strdup(key);
}

/* Forget addresses whose bucket is full again. */
static void
sweep(struct chat *ch, const struct config *cfg)
{
	struct sweep sw = {cfg, clock_mono_ms(), NULL, 0};
	size_t i;

	if ((sw.keys = calloc(strmap_count(ch->authfail), sizeof *sw.keys)) ==
	    NULL)
		return;
	strmap_foreach(ch->authfail, sweep_cb, &sw);
	for (i = 0; i < sw.n; i++) {
		if (sw.keys[i] != NULL)
			free(strmap_del(ch->authfail, sw.keys[i]));
		free(sw.keys[i]);
	}
	free(sw.keys);
}

static void
address_failed(struct session *s)
{
	const struct config *cfg = cfg_of(s);
	struct chat *ch = s->chat;
	char key[INET6_ADDRSTRLEN + 4];
	const char *ip = fail_key(s, key, sizeof key);
	struct authfail *af;

	if (cfg->accounts_failures_per_address == 0)
		return;
	if ((af = strmap_get(ch->authfail, ip)) == NULL) {
		if (strmap_count(ch->authfail) >= AUTHFAIL_MAX)
			sweep(ch, cfg);
		if (strmap_count(ch->authfail) >= AUTHFAIL_MAX ||
		    (af = calloc(1, sizeof *af)) == NULL)
			return; /* untracked: only loosens the limit */
		af->tokens = cfg->accounts_failures_per_address;
		af->ms = clock_mono_ms();
		if (strmap_put(ch->authfail, ip, af) == -1) {
			free(af);
			return;
		}
	}
	refill(cfg, af, clock_mono_ms());
	af->tokens = af->tokens >= 1.0 ? af->tokens - 1.0 : 0.0;
}

static void
resume(struct session *s)
{
	s->querying = 0;
	session_continue(s);
}

static void
delayed_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	(void)fd;
	(void)what;
	error(s, "%s", s->auth_err);
	resume(s);
}

static void
identified(struct session *s, const struct pending *p, const char *name)
{
	struct session *holder;
	char why[600];

	snprintf(s->account, sizeof s->account, "%s", name);
	s->auth_fails = 0;
	log_info("auth: %s identified as %s", conn_peer(s->conn), name);
	holder = session_by_nick(s->chat, p->nick);
	if (holder != NULL && holder != s) {
		snprintf(why, sizeof why,
		    "nick %s is registered and its owner has identified; "
		    "you are renamed",
		    holder->nick);
		session_become_guest(holder, why);
	}
	if (strcmp(s->nick, p->nick) != 0 &&
	    session_rename(s, p->nick, why, sizeof why) == -1) {
		error(s, "identified as %s, but cannot take the nick: %s",
		    p->nick, why);
		return;
	}
	notice(s, "you are identified as %s", s->nick);
}

static void
unidentify_cb(const char *key, void *value, void *arg)
{
	struct session *m = value;

	(void)key;
	if (strcmp(m->account, (const char *)arg) == 0) {
		m->account[0] = '\0';
		notice(m,
		    "account %s was deleted; you are no longer "
		    "identified",
		    (const char *)arg);
	}
}

/*
 * A deleted account is forgotten everywhere, so that whoever registers
 * the name next inherits nothing: no live or parked session stays
 * identified to it, and it owns no room.
 */
static void
forget_account(struct chat *ch, const char *name)
{
	strmap_foreach(ch->nicks, unidentify_cb, (void *)name);
	chat_resume_forget_account(ch, name);
	chat_rooms_forget_owner(ch, name);
}

static void
auth_done(uint64_t owner, void *arg, enum acct_status st, const char *name)
{
	struct pending *p = arg;
	struct session *s = session_by_id(owner);
	const struct config *cfg;
	uint64_t delay;
	unsigned n;

	if (s == NULL) {
		free(p);
		return; /* the client left while we hashed */
	}
	cfg = cfg_of(s);
	switch (st) {
	case ACCT_OK:
		if (p->op == ACCT_IDENTIFY)
			identified(s, p, name);
		else if (p->op == ACCT_REGISTER) {
			snprintf(s->account, sizeof s->account, "%s", name);
			s->registrations++;
			log_info(
			    "auth: %s registered %s", conn_peer(s->conn), name);
			notice(s,
			    "nick %s is registered to you; next time "
			    "/identify %s PASSWORD",
			    p->nick, p->nick);
		} else if (p->op == ACCT_CERT_FIND) {
			snprintf(p->nick, sizeof p->nick, "%s", name);
			log_info("auth: %s presented the certificate of %s",
			    conn_peer(s->conn), name);
			identified(s, p, name);
		} else if (p->op == ACCT_CERT_ADD) {
			log_info("auth: %s bound certificate %s to %s",
			    conn_peer(s->conn), p->fp, name);
			notice(s,
			    "certificate %s is bound to %s; it identifies you "
			    "when you connect with it",
			    p->fp, name);
		} else if (p->op == ACCT_CERT_DEL) {
			log_info("auth: %s unbound certificate %s from %s",
			    conn_peer(s->conn), p->fp, name);
			notice(s, "certificate %s is no longer bound to %s",
			    p->fp, name);
		} else if (p->op == ACCT_PASSWORD) {
			log_info("auth: %s changed the password of %s",
			    conn_peer(s->conn), name);
			notice(s, "password changed");
		} else {
			log_info("auth: %s unregistered %s", conn_peer(s->conn),
			    name);
			if (strcmp(s->account, name) == 0)
				s->account[0] = '\0'; /* told below */
			forget_account(s->chat, name);
			notice(s, "account %s deleted", name);
		}
		break;
	case ACCT_BADPASS:
		n = ++s->auth_fails;
		address_failed(s);
		log_notice("auth: wrong password for %s from %s (%u in a row "
			   "on this connection)",
		    name, conn_peer(s->conn), n);
		delay = cfg->accounts_failure_delay_ms;
		while (--n > 0 && delay < cfg->accounts_failure_delay_max_ms)
			delay *= 2;
		if (delay > cfg->accounts_failure_delay_max_ms)
			delay = cfg->accounts_failure_delay_max_ms;
		snprintf(s->auth_err, sizeof s->auth_err,
		    "wrong password for %s", name);
		free(p);
		if (delay > 0) {
			struct timeval tv = timeval_ms(delay);

			evtimer_add(s->auth_timer, &tv);
			return; /* delayed_cb answers and resumes */
		}
		error(s, "%s", s->auth_err);
		resume(s);
		return;
	case ACCT_NOACCOUNT:
		if (p->op == ACCT_CERT_FIND)
			notice(s,
			    "no account is bound to your certificate (/certadd "
			    "binds it once you are identified)");
		else if (p->op == ACCT_CERT_DEL)
			error(s, "certificate %s is not bound to %s", p->fp,
			    name);
		else
			error(s, "%s is not registered", name);
		break;
	case ACCT_EXISTS:
		if (p->op == ACCT_CERT_ADD)
			error(s,
			    "certificate %s is bound to an account already",
			    p->fp);
		else
			error(s, "%s is registered already", name);
		break;
	case ACCT_FAILED:
		error(s, "account service failed; try again later");
		break;
	}
	free(p);
	resume(s);
}

/* Common checks, then submit; the session reads nothing until answered. */
static void
submit(struct session *s, enum acct_op op, const char *nick, const char *pw,
    const char *pw2)
{
	int password = op <= ACCT_UNREGISTER;
	char fold[NICK_BYTES_MAX];
	struct pending *p;
	unsigned wait;

	if (accts(s) == NULL) {
		error(s, "accounts are not available on this server");
		return;
	}
	if (strlen(nick) >= sizeof fold)
		return;
	if (password && (wait = address_blocked(s)) > 0) {
		log_notice("auth: refusing a password from %s: too many "
			   "failures from that address",
		    conn_peer(s->conn));
		error(s,
		    "too many wrong passwords from your address; try again "
		    "in %u s",
		    wait);
		return;
	}
	if ((s->auth_timer == NULL &&
		(s->auth_timer = evtimer_new(
		     s->chat->srv->base, delayed_cb, s)) == NULL) ||
	    (p = calloc(1, sizeof *p)) == NULL) {
		error(s, "out of memory");
		return;
	}
	p->op = op;
	snprintf(p->nick, sizeof p->nick, "%s", nick);
	if (op >= ACCT_CERT_FIND)
		snprintf(p->fp, sizeof p->fp, "%s", pw);
	name_fold(nick, strlen(nick), fold, sizeof fold);
	if (accounts_submit(accts(s), op, fold, pw, pw2, s->id, auth_done, p) ==
	    -1) {
		free(p);
		error(s, "the account service is busy; try again");
		return;
	}
	s->querying = 1;
	conn_pause(s->conn, PAUSE_SERVICE);
}

static int
password_ok(struct session *s, const char *pw)
{
	unsigned min = cfg_of(s)->accounts_password_min;

	if (strlen(pw) < min) {
		error(s, "a password needs at least %u bytes", min);
		return 0;
	}
	return 1;
}

void
chat_register_cmd(struct session *s, int argc, char **argv)
{
	(void)argc;
	if (strncmp(s->fold, "guest", 5) == 0) {
		error(s, "guest nicks cannot be registered; /nick NAME first");
		return;
	}
	if (accounts_registered(accts(s), s->fold)) {
		error(s, "%s is registered already", s->nick);
		return;
	}
	if (s->registrations >= cfg_of(s)->accounts_registrations) {
		error(s,
		    "this connection has registered %u nick(s), the most it "
		    "may",
		    s->registrations);
		OPENSSL_cleanse(argv[0], strlen(argv[0]));
		return;
	}
	if (password_ok(s, argv[0]))
		submit(s, ACCT_REGISTER, s->nick, argv[0], NULL);
	OPENSSL_cleanse(argv[0], strlen(argv[0]));
}

void
chat_identify_cmd(struct session *s, int argc, char **argv)
{
	const char *nick = argc == 2 ? argv[0] : s->nick;
	char *pw = argv[argc - 1];
	char fold[NICK_BYTES_MAX];

	if (strlen(nick) >= sizeof fold ||
	    nick_check(nick, strlen(nick), cfg_of(s)->chat_nick_max) != NULL) {
		error(s, "invalid nick \"%s\"", nick);
	} else {
		name_fold(nick, strlen(nick), fold, sizeof fold);
		if (accts(s) != NULL && !accounts_registered(accts(s), fold))
			error(s, "%s is not registered", nick);
		else
			submit(s, ACCT_IDENTIFY, nick, pw, NULL);
	}
	OPENSSL_cleanse(pw, strlen(pw));
}

void
chat_password_cmd(struct session *s, int argc, char **argv)
{
	(void)argc;
	if (s->account[0] == '\0')
		error(s, "you are not identified; /identify first");
	else if (password_ok(s, argv[1]))
		submit(s, ACCT_PASSWORD, s->account, argv[0], argv[1]);
	OPENSSL_cleanse(argv[0], strlen(argv[0]));
	OPENSSL_cleanse(argv[1], strlen(argv[1]));
}

void
chat_unregister_cmd(struct session *s, int argc, char **argv)
{
	(void)argc;
	if (s->account[0] == '\0')
		error(s, "you are not identified; /identify first");
	else
		submit(s, ACCT_UNREGISTER, s->account, argv[0], NULL);
	OPENSSL_cleanse(argv[0], strlen(argv[0]));
}

/* A SHA-256 fingerprint in hex (colons, any case) into 64 lowercase digits. */
static int
parse_fingerprint(const char *in, char out[65])
{
	size_t n = 0;

	for (; *in != '\0'; in++) {
		if (*in == ':')
			continue;
		if (n == 64 || !isxdigit((unsigned char)*in))
			return -1;
		out[n++] = (char)tolower((unsigned char)*in);
	}
	out[n] = '\0';
	return n == 64 ? 0 : -1;
}

static void
cert_cmd(struct session *s, int argc, char **argv, enum acct_op op)
{
	char fp[65];

	if (s->account[0] == '\0') {
		error(s, "you are not identified; /identify first");
		return;
	}
	if (argc == 0 && s->certfp[0] == '\0') {
		error(s,
		    "you did not connect with a client certificate; name "
		    "its SHA-256 fingerprint");
		return;
	}
	if (parse_fingerprint(argc ? argv[0] : s->certfp, fp) == -1) {
		error(s, "a fingerprint is 64 hex digits (colons allowed)");
		return;
	}
	submit(s, op, s->account, fp, NULL);
}

void
chat_certadd_cmd(struct session *s, int argc, char **argv)
{
	cert_cmd(s, argc, argv, ACCT_CERT_ADD);
}

void
chat_certdel_cmd(struct session *s, int argc, char **argv)
{
	cert_cmd(s, argc, argv, ACCT_CERT_DEL);
}

void
chat_account_open(struct session *s)
{
	if (conn_peer_fingerprint(s->conn, s->certfp, sizeof s->certfp) == -1) {
		s->certfp[0] = '\0';
		return;
	}
	notice(s, "your client certificate: SHA-256 %s", s->certfp);
	if (accts(s) != NULL)
		submit(s, ACCT_CERT_FIND, "", s->certfp, NULL);
}

int
chat_nick_allowed(struct session *s, const char *nick)
{
	char fold[NICK_BYTES_MAX];

	if (strlen(nick) >= sizeof fold)
		return 1; /* session_set_nick refuses it */
	name_fold(nick, strlen(nick), fold, sizeof fold);
	if (!accounts_registered(accts(s), fold) ||
	    strcmp(s->account, fold) == 0)
		return 1;
	error(s, "nick %s is registered; /identify %s PASSWORD to use it", nick,
	    nick);
	return 0;
}

void
chat_account_session_free(struct session *s)
{
	if (s->auth_timer != NULL)
		event_free(s->auth_timer);
	s->auth_timer = NULL;
}

static void
free_cb(const char *key, void *value, void *arg)
{
	(void)key;
	(void)arg;
	free(value);
}

void
chat_account_free(struct chat *ch)
{
	if (ch->authfail == NULL)
		return;
	strmap_foreach(ch->authfail, free_cb, NULL);
	strmap_free(ch->authfail);
	ch->authfail = NULL;
}
