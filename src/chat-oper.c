/*
 * Server operators: /kill, /wall, /kline and /unkline.
 *
 * A server operator is a client identified to an account named in
 * [operators] accounts, or one whose TLS client certificate has a SHA-256
 * fingerprint named in [operators] fingerprints.  The lists are read
 * from the running config at each check, so a reload changes them at
 * once.
 *
 * Address bans live in the gate (checked at accept, before any TLS
 * handshake) and in the database (kept across restarts).
 */
#include "config.h"

#include <ctype.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "account.h"
#include "chat-int.h"
#include "clock.h"
#include "conf.h"
#include "conn.h"
#include "gate.h"
#include "log.h"
#include "server.h"
#include "text.h"

/* Is word (compared by cmp) in the space-separated list? */
static int
in_list(const char *list, const char *word,
    int (*cmp)(const char *a, const char *b))
{
	char *copy, *t, *save = NULL;
	int found = 0;

	if (list == NULL || word[0] == '\0' || (copy = strdup(list)) == NULL)
		return 0;
	for (t = strtok_r(copy, " \t,", &save); t != NULL && !found;
	     t = strtok_r(NULL, " \t,", &save))
		found = cmp(t, word) == 0;
	free(copy);
	return found;
}

static int
account_cmp(const char *listed, const char *account)
{
	char f[NICK_BYTES_MAX];

	name_fold(listed, strlen(listed), f, sizeof f);
	return strcmp(f, account);
}

/* Hex digits only, case-insensitive: "AB:CD" matches "abcd". */
static int
fingerprint_cmp(const char *listed, const char *fp)
{
	for (;;) {
		while (*listed == ':')
			listed++;
		while (*fp == ':')
			fp++;
		if (*listed == '\0' || *fp == '\0')
			return *listed != *fp;
		if (tolower((unsigned char)*listed) !=
		    tolower((unsigned char)*fp))
			return 1;
		listed++;
		fp++;
	}
}

int
chat_is_server_op(const struct session *s)
{
	const struct config *cfg = s->chat->srv->cfg;

	return in_list(cfg->operator_accounts, s->account, account_cmp) ||
	    in_list(cfg->operator_fingerprints, s->certfp, fingerprint_cmp);
}

static int
need_op(struct session *s)
{
	if (chat_is_server_op(s))
		return 1;
	error(s, "you are not a server operator");
	return 0;
}

void
chat_kill_cmd(struct session *s, int argc, char **argv)
{
	struct session *m;
	const char *reason = argc > 1 ? argv[1] : "no reason";
	char why[300];

	if (!need_op(s))
		return;
	if ((m = session_by_nick(s->chat, argv[0])) == NULL) {
		error(s, "no such nick: %s", argv[0]);
		return;
	}
	log_notice("oper: %s (%s) killed %s (%s): %s", s->nick,
	    s->account[0] ? s->account : s->certfp, m->nick, conn_peer(m->conn),
	    reason);
	notice(s, "%s is disconnected", m->nick);
	notice(m, "you were disconnected by server operator %s (%s)", s->nick,
	    reason);
	snprintf(why, sizeof why, "killed by %s: %s", s->nick, reason);
	session_quit(m, why);
}

struct wall {
	struct blob *b;
};

static void
wall_cb(struct conn *c, void *arg)
{
	struct wall *w = arg;
	struct session *m;

	/* Chat sessions only: an echo client would echo nothing of it. */
	if (conn_state(c) != CONN_ACTIVE ||
	    (m = session_by_id(conn_id(c))) == NULL || !chat_is_session(c))
		return;
	session_send(m, w->b, 0);
}

void
chat_wall_cmd(struct session *s, int argc, char **argv)
{
	struct wall w;

	(void)argc;
	if (!need_op(s))
		return;
	log_notice("oper: %s wall: %s", s->nick, argv[0]);
	w.b = blob_printf("*** NOTICE from %s: %s", s->nick, argv[0]);
	conn_foreach(wall_cb, &w);
	blob_unref(w.b);
}

struct listing {
	struct session *s;
	size_t n;
};

static void
list_cb(const char *mask, int64_t expires_ms, const char *reason, void *arg)
{
	struct listing *l = arg;
	char when[40] = "never";
	time_t t = (time_t)(expires_ms / 1000);
	struct tm tm;

	if (expires_ms != 0) {
		gmtime_r(&t, &tm);
		strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
	}
	l->n++;
	notice(l->s, "kline %s expires %s (%s)", mask, when, reason);
}

struct sweep {
	const char *mask;
	const char *reason;
	struct session *by;
	size_t n;
};

static void
sweep_cb(struct conn *c, void *arg)
{
	struct sweep *sw = arg;
	struct session *m;

	if (conn_state(c) >= CONN_CLOSING ||
	    fnmatch(sw->mask, conn_peer_ip(c), 0) != 0)
		return;
	sw->n++;
	if (chat_is_session(c) && (m = session_by_id(conn_id(c))) != NULL) {
		notice(m, "your address is banned from this server (%s)",
		    sw->reason);
		session_quit(m, "banned from the server");
	} else
		conn_close(c, "banned");
}

void
chat_kline_cmd(struct session *s, int argc, char **argv)
{
	struct server *srv = s->chat->srv;
	struct acct_kline k;
	struct listing l = {s, 0};
	struct sweep sw;
	char mask[80];
	uint64_t ms = 0;
	const char *reason = argc > 2 ? argv[2] : "no reason";

	if (!need_op(s))
		return;
	if (argc == 0) {
		notice(s, "address bans:");
		gate_kline_foreach(srv->gate, list_cb, &l);
		notice(s, "%zu address ban(s)", l.n);
		return;
	}
	if (argc < 2 ||
	    (strcmp(argv[1], "0") != 0 &&
		parse_duration_ms(argv[1], &ms) == -1) ||
	    strlen(argv[0]) > 64) {
		error(s,
		    "usage: /kline MASK DURATION [reason] (DURATION 0 = "
		    "for ever; e.g. 30m, 1d)");
		return;
	}
	/* Addresses are matched as inet_ntop writes them: lowercase. */
	name_fold(argv[0], strlen(argv[0]), mask, sizeof mask);
	argv[0] = mask;
	if (fnmatch(argv[0], conn_peer_ip(s->conn), 0) == 0) {
		error(s, "%s matches your own address; not banned", argv[0]);
		return;
	}
	k.mask = argv[0];
	k.expires_ms = ms ? clock_real_ms() + (int64_t)ms : 0;
	k.reason = reason;
	k.by = s->nick;
	if (gate_kline_add(srv->gate, k.mask, k.expires_ms, reason) == -1) {
		error(s, "out of memory");
		return;
	}
	accounts_kline_save(srv->accounts, &k, 1);
	sw.mask = argv[0];
	sw.reason = reason;
	sw.by = s;
	sw.n = 0;
	conn_foreach(sweep_cb, &sw);
	log_notice("oper: %s banned %s from the server for %s (%s); %zu "
		   "connection(s) closed",
	    s->nick, argv[0], ms ? argv[1] : "ever", reason, sw.n);
	notice(s, "%s is banned from the server; %zu connection(s) closed",
	    argv[0], sw.n);
}

void
chat_unkline_cmd(struct session *s, int argc, char **argv)
{
	struct server *srv = s->chat->srv;
	struct acct_kline k = {NULL, 0, "", ""};
	char mask[80];

	(void)argc;
	if (!need_op(s))
		return;
	name_fold(argv[0], strlen(argv[0]), mask, sizeof mask);
	argv[0] = mask;
	k.mask = mask;
	if (!gate_kline_del(srv->gate, argv[0])) {
		error(s, "%s is not banned", argv[0]);
		return;
	}
	accounts_kline_save(srv->accounts, &k, 0);
	log_notice("oper: %s lifted the server ban on %s", s->nick, argv[0]);
	notice(s, "%s is no longer banned from the server", argv[0]);
}

static void
kline_loaded(void *arg, const struct acct_kline *k)
{
	struct server *srv = arg;

	if (k->expires_ms == 0 || k->expires_ms > clock_real_ms())
		gate_kline_add(srv->gate, k->mask, k->expires_ms, k->reason);
}

void
chat_klines_load(struct chat *ch)
{
	accounts_klines_load(ch->srv->accounts, kline_loaded, ch->srv);
}
