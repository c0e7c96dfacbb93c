/*
 * Resumable sessions.
 *
 * Every chat client gets a session token at the end of its welcome line:
 * 128 random bits in hex, a bearer credential shown once.  When the connection ends
 * (not by /quit, /kill or a ban) the session is parked under its token
 * for resume_window: its nick, account, certificate, rooms (in order,
 * the current one last) and the last history id assigned at that moment.
 *
 * /resume TOKEN on a new connection takes the parked session: the nick
 * back (its holder renamed to a guest if the nick is registered to the
 * parked session's account; otherwise the nick is kept only if free),
 * the identification, the rooms (with operator status in those that
 * still exist) -- and, per room, exactly the lines
 * stored after the parked id, by message id, through the same held-output
 * seam as a join replay (chat-history.c): nothing missing, nothing twice.
 * The rooms the new connection is in and the parked session was not are
 * left.  /resume of a live session's token takes it over (the old
 * connection is closed first, and parked).  A new token replaces the old.
 *
 * Lines that were queued to the old connection but never read are not
 * known to be missed and are not replayed.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "chat-int.h"
#include "chat.h"
#include "clock.h"
#include "conf.h"
#include "conn.h"
#include "log.h"
#include "server.h"
#include "strmap.h"
#include "text.h"

struct parked {
	char token[SESSION_TOKEN_BYTES * 2 + 1];
	char nick[NICK_BYTES_MAX];
	char account[NICK_BYTES_MAX];
	char certfp[65];
	char **rooms; /* display names, the current one last */
	size_t nrooms;
	int64_t last_id;
	uint64_t old_id; /* conn id, for room operator status */
	uint64_t expires_ms; /* monotonic */
	TAILQ_ENTRY(parked) entry; /* chat->parked_order */
};

static void
parked_free(struct parked *p)
{
	size_t i;

	if (p == NULL)
		return;
	for (i = 0; i < p->nrooms; i++)
		free(p->rooms[i]);
	free(p->rooms);
	OPENSSL_cleanse(p->token, sizeof p->token);
	free(p);
}

void
chat_resume_new_token(struct session *s)
{
	unsigned char raw[SESSION_TOKEN_BYTES];
	size_t i;

	if (s->token[0] != '\0')
		strmap_del(s->chat->live_tokens, s->token);
	s->token[0] = '\0';
	if (s->chat->srv->cfg->chat_resume_window_ms == 0 ||
	    RAND_bytes(raw, sizeof raw) != 1)
		return;
	for (i = 0; i < sizeof raw; i++)
		snprintf(s->token + 2 * i, 3, "%02x", raw[i]);
	if (strmap_put(s->chat->live_tokens, s->token, s) == -1)
		s->token[0] = '\0';
}

void
chat_resume_token_text(struct session *s, char *buf, size_t len)
{
	uint64_t ms = s->chat->srv->cfg->chat_resume_window_ms;
	int whole = ms % 1000 == 0; /* else in ms: "within 0 s" misleads */

	buf[0] = '\0';
	if (s->token[0] != '\0')
		snprintf(buf, len,
		    " Session token %s: /resume %s on a new connection "
		    "within %llu %s gets this session back.",
		    s->token, s->token,
		    (unsigned long long)(whole ? ms / 1000 : ms),
		    whole ? "s" : "ms");
}

/* Out of the token map and the expiry order; the caller frees it. */
static void
parked_unlink(struct chat *ch, struct parked *p)
{
	strmap_del(ch->parked, p->token);
	TAILQ_REMOVE(&ch->parked_order, p, entry);
}

/*
 * Parked sessions are kept in the order they were parked, which is the
 * order they expire in (one window for all; a reload that shortens it
 * lets newer ones wait behind older ones, and /resume checks the time
 * anyway).  Free the expired ones and wait for the next: without this,
 * expired sessions stayed until resume_max_sessions were parked.
 */
static void
expire(struct chat *ch)
{
	uint64_t now = clock_mono_ms(), wait_ms;
	struct parked *p;
	struct timeval tv;

	while ((p = TAILQ_FIRST(&ch->parked_order)) != NULL &&
	    p->expires_ms <= now) {
		parked_unlink(ch, p);
		parked_free(p);
	}
	if (p == NULL || ch->parked_timer == NULL)
		return;
	wait_ms = p->expires_ms - now;
	tv = timeval_ms(wait_ms);
	evtimer_add(ch->parked_timer, &tv);
}

static void
expire_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	expire(arg);
}

/* At close: keep what /resume needs.  Rooms are still joined. */
void
chat_resume_park(struct session *s)
{
	struct chat *ch = s->chat;
	const struct config *cfg = ch->srv->cfg;
	struct parked *p;
	size_t i;

	if (s->token[0] == '\0')
		return;
	strmap_del(ch->live_tokens, s->token);
	if (s->quitting || cfg->chat_resume_window_ms == 0)
		return;
	if (strmap_count(ch->parked) >= cfg->chat_resume_max)
		expire(ch);
	if (strmap_count(ch->parked) >= cfg->chat_resume_max) {
		log_notice("chat: %u sessions parked already "
			   "(resume_max_sessions); %s cannot be resumed",
		    cfg->chat_resume_max, s->nick);
		return;
	}
	if (ch->parked_timer == NULL &&
	    (ch->parked_timer = evtimer_new(ch->srv->base, expire_cb, ch)) ==
		NULL)
		return;
	if ((p = calloc(1, sizeof *p)) == NULL ||
	    (s->nrooms > 0 &&
		(p->rooms = calloc(s->nrooms, sizeof *p->rooms)) == NULL)) {
		free(p);
		return;
	}
	snprintf(p->token, sizeof p->token, "%s", s->token);
	snprintf(p->nick, sizeof p->nick, "%s", s->nick);
	snprintf(p->account, sizeof p->account, "%s", s->account);
	snprintf(p->certfp, sizeof p->certfp, "%s", s->certfp);
	for (i = 0; i < s->nrooms; i++)
		if ((p->rooms[p->nrooms] = strdup(s->rooms[i]->name)) != NULL)
			p->nrooms++;
	p->last_id = chat_history_last_id(ch);
	p->old_id = s->id;
	p->expires_ms = clock_mono_ms() + cfg->chat_resume_window_ms;
	if (strmap_put(ch->parked, p->token, p) == -1) {
		parked_free(p);
		return;
	}
	TAILQ_INSERT_TAIL(&ch->parked_order, p, entry);
	if (!evtimer_pending(ch->parked_timer, NULL))
		expire(ch);
}

static void
take_nick(struct session *s, const struct parked *p)
{
	struct session *holder = session_by_nick(s->chat, p->nick);
	char why[600], fold[NICK_BYTES_MAX];

	if (strcmp(s->nick, p->nick) == 0)
		return;
	name_fold(p->nick, strlen(p->nick), fold, sizeof fold);
	if (holder != NULL && holder != s) {
		if (p->account[0] == '\0' || strcmp(p->account, fold) != 0) {
			notice(s, "your nick %s is taken now; you stay %s",
			    p->nick, s->nick);
			return;
		}
		snprintf(why, sizeof why,
		    "nick %s is registered and its owner has come back; you "
		    "are renamed",
		    holder->nick);
		session_become_guest(holder, why);
	}
	if (session_rename(s, p->nick, why, sizeof why) == -1)
		notice(s, "cannot take back your nick %s: %s", p->nick, why);
}

static void
leave_room(struct session *s, struct room *r)
{
	struct blob *b;
	size_t i;

	for (i = 0; i < s->nrooms && s->rooms[i] != r; i++)
		;
	if (i == s->nrooms)
		return;
	memmove(&s->rooms[i], &s->rooms[i + 1],
	    (s->nrooms - i - 1) * sizeof *s->rooms);
	s->nrooms--;
	b = blob_printf("*** %s: %s has left", r->name, s->nick);
	room_broadcast(r, s, b);
	blob_unref(b);
	room_remove(s->chat, r, s);
}

static int
parked_has(const struct parked *p, const struct room *r)
{
	char fold[ROOM_BYTES_MAX];
	size_t i;

	for (i = 0; i < p->nrooms; i++) {
		name_fold(p->rooms[i], strlen(p->rooms[i]), fold, sizeof fold);
		if (strcmp(fold, r->fold) == 0)
			return 1;
	}
	return 0;
}

static void
rejoin(struct session *s, const struct parked *p, const char *name)
{
	struct room *r;
	struct blob *b;
	const char *bad;
	char why[256];
	size_t i;

	if ((r = room_get_or_create(s->chat, name, why, sizeof why)) == NULL) {
		error(s, "cannot rejoin %s: %s", name, why);
		return;
	}
	if (session_in_room(s, r)) {
		/* Make it current (the parked order is kept). */
		for (i = 0; i < s->nrooms && s->rooms[i] != r; i++)
			;
		memmove(&s->rooms[i], &s->rooms[i + 1],
		    (s->nrooms - i - 1) * sizeof *s->rooms);
		s->rooms[s->nrooms - 1] = r;
	} else {
		/* Bans and keys set meanwhile still count (no key kept). */
		if ((bad = chat_room_admit(s, r, NULL)) != NULL) {
			error(s, "cannot rejoin %s: %s", r->name, bad);
			room_drop_if_empty(s->chat, r);
			return;
		}
		if (s->nrooms >= s->rooms_cap || room_add(r, s) == -1) {
			error(s, "cannot rejoin %s", r->name);
			room_drop_if_empty(s->chat, r);
			return;
		}
		s->rooms[s->nrooms++] = r;
		b = blob_printf("*** %s: %s has joined", r->name, s->nick);
		room_broadcast(r, s, b);
		blob_unref(b);
	}
	chat_room_take_op(r, p->old_id, s);
	notice(s, "you are back in %s (%zu here)", r->name, r->live);
	chat_replay_since(s, r, p->last_id);
}

void
chat_resume_cmd(struct session *s, int argc, char **argv)
{
	struct chat *ch = s->chat;
	struct parked *p;
	struct session *old;
	char text[200];
	size_t i;

	(void)argc;
	if (ch->srv->cfg->chat_resume_window_ms == 0) {
		error(s, "sessions cannot be resumed on this server");
		return;
	}
	if (strcmp(argv[0], s->token) == 0) {
		error(s, "that is this session's token");
		return;
	}
	if ((old = strmap_get(ch->live_tokens, argv[0])) != NULL) {
		/* Take over a live session: close it, which parks it. */
		notice(old, "this session was resumed on another connection");
		chat_resume_park(old);
		old->token[0] = '\0';
		session_retire(old, "resumed elsewhere");
	}
	p = strmap_get(ch->parked, argv[0]);
	if (p != NULL && p->expires_ms <= clock_mono_ms()) {
		parked_unlink(ch, p);
		parked_free(p);
		p = NULL;
	}
	if (p == NULL) {
		error(s,
		    "no session to resume with that token (expired, "
		    "used, or never given)");
		return;
	}
	parked_unlink(ch, p);
	log_info(
	    "chat: %s resumed the session of %s", conn_peer(s->conn), p->nick);
	notice(s, "resuming the session of %s", p->nick);
	/* The identification travels with the token. */
	snprintf(s->account, sizeof s->account, "%s", p->account);
	if (s->certfp[0] == '\0')
		snprintf(s->certfp, sizeof s->certfp, "%s", p->certfp);
	take_nick(s, p);
	/* Leave what the new connection joined and the old one was not in. */
	for (i = s->nrooms; i-- > 0;)
		if (!parked_has(p, s->rooms[i]))
			leave_room(s, s->rooms[i]);
	for (i = 0; i < p->nrooms; i++)
		rejoin(s, p, p->rooms[i]);
	chat_resume_new_token(s);
	chat_resume_token_text(s, text, sizeof text);
	notice(s, "session resumed.%s", text);
	parked_free(p);
}

static void
forget_cb(const char *key, void *value, void *arg)
{
	struct parked *p = value;

	(void)key;
	if (strcmp(p->account, (const char *)arg) == 0)
		p->account[0] = '\0';
}

void
chat_resume_forget_account(struct chat *ch, const char *account)
{
	strmap_foreach(ch->parked, forget_cb, (void *)account);
}

size_t
chat_parked_count(const struct chat *ch)
{
	return strmap_count(ch->parked);
}

void
chat_resume_free(struct chat *ch)
{
	struct parked *p;

	while ((p = TAILQ_FIRST(&ch->parked_order)) != NULL) {
		TAILQ_REMOVE(&ch->parked_order, p, entry);
		parked_free(p);
	}
	if (ch->parked_timer != NULL)
		event_free(ch->parked_timer);
	ch->parked_timer = NULL;
	strmap_free(ch->parked);
	strmap_free(ch->live_tokens);
	ch->parked = ch->live_tokens = NULL;
}
