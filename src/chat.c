/*
 * Chat sessions: input framing and hygiene, flood control, output limits.
 *
 * Input path, per read:  raw bytes -> telnet commands stripped -> framed
 * on LF (CR before it dropped; lines over max_line_length refused and
 * discarded without buffering them) -> text_sanitize (UTF-8 checked,
 * controls made visible) -> command or room message.
 *
 * Flood control is a token bucket per client: one token per line.  When
 * it runs dry we stop reading from that client and process its buffered
 * lines as tokens come back -- nothing it sent is lost and nobody else
 * waits for it.
 *
 * Output: past output_soft_limit a client stops receiving room traffic
 * (it is counted as missed and reported when the client catches up);
 * past output_hard_limit it is disconnected.  Other clients never wait.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "clock.h"
#include "chat-int.h"
#include "chat.h"
#include "conf.h"
#include "conn.h"
#include "log.h"
#include "server.h"
#include "service.h"
#include "strmap.h"
#include "text.h"

/* Room lines up to this long are copied to each recipient, not shared. */
#define BLOB_COPY_MAX 512

/* Lines handled per wake-up before yielding to other clients. */
#define LINES_PER_WAKEUP 64

struct blob *
blob_printf(const char *fmt, ...)
{
	struct blob *b;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || (b = malloc(sizeof *b + (size_t)n + 3)) == NULL)
		return NULL;
	va_start(ap, fmt);
	vsnprintf(b->data, (size_t)n + 1, fmt, ap);
	va_end(ap);
	memcpy(b->data + n, "\r\n", 3);
	b->len = (size_t)n + 2;
	b->refs = 1;
	return b;
}

void
blob_unref(struct blob *b)
{
	if (b != NULL && --b->refs == 0)
		free(b);
}

static void
blob_release(const void *data, size_t len, void *arg)
{
	(void)data;
	(void)len;
	blob_unref(arg);
}

static void
disconnect_slow(struct session *s)
{
	struct server *srv = s->chat->srv;

	srv->stats.slow_consumers++;
	log_notice("chat %s (%s): output over output_hard_limit (%zu bytes); "
		   "disconnecting",
	    s->nick, conn_peer(s->conn), srv->cfg->chat_output_hard_limit);
	conn_printf(s->conn,
	    "!!! disconnected: you are not reading fast "
	    "enough (over %zu bytes waiting)\r\n",
	    srv->cfg->chat_output_hard_limit);
	conn_close(s->conn, "slow consumer");
}

struct evbuffer *
session_out(struct session *s)
{
	return s->replaying ? s->held : conn_output(s->conn);
}

size_t
session_queued(struct session *s)
{
	return conn_output_length(s->conn) + evbuffer_get_length(s->held);
}

void
session_send(struct session *s, struct blob *b, int room_traffic)
{
	const struct config *cfg = s->chat->srv->cfg;
	size_t out;

	if (b == NULL || conn_state(s->conn) >= CONN_CLOSING)
		return;
	out = session_queued(s);
	if (room_traffic && s->slow) {
		s->missed++;
		return;
	}
	if (out + b->len > cfg->chat_output_hard_limit) {
		disconnect_slow(s);
		return;
	}
	if (room_traffic && out > cfg->chat_output_soft_limit) {
		/* Stop room traffic until the client has read half of it. */
		s->slow = 1;
		s->missed++;
		s->chat->srv->stats.slow_consumers++;
		log_info("chat %s (%s): slow reader, holding room traffic",
		    s->nick, conn_peer(s->conn));
		conn_watch_output(s->conn, cfg->chat_output_soft_limit / 2);
		return;
	}
	/*
	 * A short line is cheaper copied into the tail of the output (which
	 * usually has room: one chain per flush, not one malloc per line);
	 * a long one is shared by reference.
	 */
	if (b->len <= BLOB_COPY_MAX) {
		evbuffer_add(session_out(s), b->data, b->len);
	} else {
		b->refs++;
		if (evbuffer_add_reference(
			session_out(s), b->data, b->len, blob_release, b) == -1)
			b->refs--;
	}
	s->chat->srv->stats.bytes_out += b->len;
}

void
session_printf(struct session *s, const char *fmt, ...)
{
	char buf[1024], *p = buf;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof buf - 2) {
		if ((p = malloc((size_t)n + 3)) == NULL)
			return;
		va_start(ap, fmt);
		vsnprintf(p, (size_t)n + 1, fmt, ap);
		va_end(ap);
	}
	memcpy(p + n, "\r\n", 2);
	if (conn_state(s->conn) >= CONN_CLOSING)
		;
	else if (session_queued(s) + (size_t)n + 2 >
	    s->chat->srv->cfg->chat_output_hard_limit)
		disconnect_slow(s);
	else
		evbuffer_add(session_out(s), p, (size_t)n + 2);
	if (p != buf)
		free(p);
}

struct session *
session_by_nick(struct chat *ch, const char *nick)
{
	char fold[NICK_BYTES_MAX];

	if (strlen(nick) >= sizeof fold)
		return NULL;
	name_fold(nick, strlen(nick), fold, sizeof fold);
	return strmap_get(ch->nicks, fold);
}

struct session *
session_by_id(uint64_t id)
{
	struct conn *c = conn_lookup(id);

	if (c == NULL || conn_state(c) != CONN_ACTIVE)
		return NULL;
	return conn_data(c);
}

int
session_rename(struct session *s, const char *nick, char *why, size_t whylen)
{
	char old[NICK_BYTES_MAX];
	struct blob *b;

	snprintf(old, sizeof old, "%s", s->nick);
	if (session_set_nick(s, nick, why, whylen) == -1)
		return -1;
	notice(s, "you are now known as %s", s->nick);
	b = blob_printf("*** %s is now known as %s", old, s->nick);
	session_tell_peers(s, b);
	blob_unref(b);
	return 0;
}

/* A fresh guestN that nobody holds. */
static int
guest_nick(struct session *s, char *why, size_t whylen)
{
	char nick[32];
	int tries;

	for (tries = 0; tries < 1000; tries++) {
		snprintf(nick, sizeof nick, "guest%llu",
		    (unsigned long long)++s->chat->guest_seq);
		if (session_by_nick(s->chat, nick) == NULL)
			return session_rename(s, nick, why, whylen);
	}
	snprintf(why, whylen, "no free guest nick");
	return -1;
}

void
session_become_guest(struct session *s, const char *why)
{
	char err[256];

	notice(s, "%s", why);
	if (guest_nick(s, err, sizeof err) == -1) {
		error(s, "%s; disconnecting", err);
		conn_close(s->conn, "no guest nick");
	}
}

int
session_set_nick(struct session *s, const char *nick, char *why, size_t whylen)
{
	struct chat *ch = s->chat;
	const char *bad;
	char fold[NICK_BYTES_MAX];
	struct session *other;
	size_t n;

	if ((bad = nick_check(
		 nick, strlen(nick), ch->srv->cfg->chat_nick_max)) != NULL) {
		/*
		 * Quote at most 64 bytes of it, cut at a character boundary:
		 * why is short, and a cut inside a character would send the
		 * client invalid UTF-8.
		 */
		n = text_cut(nick, strlen(nick), 64);
		snprintf(why, whylen, "invalid nick \"%.*s%s\": %s", (int)n,
		    nick, nick[n] != '\0' ? "..." : "", bad);
		return -1;
	}
	name_fold(nick, strlen(nick), fold, sizeof fold);
	other = strmap_get(ch->nicks, fold);
	if (other != NULL && other != s) {
		snprintf(why, whylen, "nick \"%s\" is already taken", nick);
		return -1;
	}
	if (s->fold[0] != '\0')
		strmap_del(ch->nicks, s->fold);
	if (strmap_put(ch->nicks, fold, s) == -1) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	snprintf(s->nick, sizeof s->nick, "%s", nick);
	snprintf(s->fold, sizeof s->fold, "%s", fold);
	return 0;
}

struct room *
session_current(struct session *s)
{
	return s->nrooms ? s->rooms[s->nrooms - 1] : NULL;
}

int
session_in_room(struct session *s, struct room *r)
{
	size_t i;

	for (i = 0; i < s->nrooms; i++)
		if (s->rooms[i] == r)
			return 1;
	return 0;
}

void
session_tell_peers(struct session *s, struct blob *b)
{
	size_t i, j;
	uint64_t mark = ++s->chat->mark_seq;

	s->mark = mark;
	for (i = 0; i < s->nrooms; i++) {
		struct room *r = s->rooms[i];

		r->iterating++;
		for (j = 0; j < r->nmembers; j++) {
			struct session *m = r->members[j];

			if (m == NULL || m->mark == mark)
				continue;
			m->mark = mark;
			session_send(m, b, 0);
		}
		r->iterating--;
	}
}

/* Leave every room, telling each peer once. */
static void
leave_all(struct session *s, const char *reason)
{
	struct blob *b;

	if (s->nrooms == 0)
		return;
	b = blob_printf("*** %s has quit (%s)", s->nick, reason);
	session_tell_peers(s, b);
	blob_unref(b);
	while (s->nrooms > 0) {
		s->nrooms--;
		room_remove(s->chat, s->rooms[s->nrooms], s);
	}
}

void
session_retire(struct session *s, const char *reason)
{
	leave_all(s, reason);
	if (s->fold[0] != '\0')
		strmap_del(s->chat->nicks, s->fold);
	s->fold[0] = '\0';
	s->quitting = 1;
	evbuffer_add_buffer(conn_output(s->conn), s->held); /* as in quit */
	conn_close(s->conn, reason);
}

void
session_quit(struct session *s, const char *reason)
{
	leave_all(s, reason);
	s->quitting = 1;
	notice(s, "goodbye");
	/*
	 * Output held behind a replay still in flight would be lost (the
	 * replay's answer finds the conn closing and drops it): send it now.
	 */
	evbuffer_add_buffer(conn_output(s->conn), s->held);
	conn_close(s->conn, "quit");
}

/* Refill the bucket; 1 if a line may be handled now. */
static int
take_token(struct session *s)
{
	const struct config *cfg = s->chat->srv->cfg;
	uint64_t now = clock_mono_ms();

	s->tokens +=
	    (double)(now - s->refilled_ms) * cfg->chat_flood_rate / 1000.0;
	if (s->tokens > cfg->chat_flood_burst)
		s->tokens = cfg->chat_flood_burst;
	s->refilled_ms = now;
	if (s->tokens < 1.0)
		return 0;
	s->tokens -= 1.0;
	return 1;
}

static void
arm_timer(struct session *s, uint64_t ms)
{
	struct timeval tv = timeval_ms(ms);

	evtimer_add(s->timer, &tv);
}

static void
handle_line(struct session *s, char *raw, size_t len)
{
	size_t cap = TEXT_SANITIZE_MAX(len);
	char stackbuf[4096], *text = cap <= sizeof stackbuf ? stackbuf : NULL;

	if (text == NULL && (text = malloc(cap)) == NULL)
		return;
	text_sanitize(raw, len, text, cap, NULL);
	s->chat->srv->stats.messages_in++;
	if (text[0] == '/' && text[1] != '/')
		chat_command(s, text);
	else if (text[0] == '/')
		chat_say(s, text + 1, 0); /* "//x" says "/x" */
	else if (text[0] != '\0')
		chat_say(s, text, 0);
	if (text != stackbuf)
		free(text);
}

/*
 * Frame and handle lines from s->pending while tokens last.  Returns
 * when the buffer has no full line, the bucket is empty (reads paused,
 * timer armed), the per-wake-up budget is spent, or the conn closes.
 */
static void
process(struct session *s)
{
	const struct config *cfg = s->chat->srv->cfg;
	struct evbuffer *p = s->pending;
	struct evbuffer_ptr eol;
	size_t eol_len, len, max = cfg->chat_max_line;
	char *line;
	int budget = LINES_PER_WAKEUP;
	const uint64_t id = s->id;

	while (conn_state(s->conn) == CONN_ACTIVE && !s->querying) {
		eol = evbuffer_search_eol(p, NULL, &eol_len, EVBUFFER_EOL_LF);
		if (eol.pos < 0) {
			len = evbuffer_get_length(p);
			if (len > max) {
				/* Overlong: drop it as it arrives. */
				if (!s->discarding)
					error(s,
					    "line too long (more than "
					    "%zu bytes); discarded",
					    max);
				s->discarding = 1;
				evbuffer_drain(p, len);
			} else if (conn_eof(s->conn) && len > 0 &&
			    !s->discarding) {
				/* A last line without a newline still counts. */
				evbuffer_add(p, "\n", 1);
				continue;
			}
			break;
		}
		len = (size_t)eol.pos;
		if (s->discarding || len > max) {
			if (!s->discarding)
				error(s,
				    "line too long (more than %zu "
				    "bytes); discarded",
				    max);
			s->discarding = 0;
			evbuffer_drain(p, len + eol_len);
			continue;
		}
		if (budget-- == 0) {
			arm_timer(s, 0); /* let others run, then go on */
			return;
		}
		if (!take_token(s)) {
			const double need = 1.0 - s->tokens;

			conn_pause(s->conn, PAUSE_FLOOD);
			arm_timer(s,
			    (uint64_t)(need * 1000.0 / cfg->chat_flood_rate) +
				1);
			return;
		}
		if ((line = malloc(len + 1)) == NULL)
			return;
		evbuffer_remove(p, line, len);
		evbuffer_drain(p, eol_len);
		if (len > 0 && line[len - 1] == '\r')
			len--;
		line[len] = '\0';
		handle_line(s, line, len);
		free(line);
		/*
		 * The line may have closed the conn at once (/quit with its
		 * goodbye held behind a replay leaves no output to flush),
		 * and freed s with it.
		 */
		if (conn_lookup(id) == NULL)
			return;
	}
	conn_resume(s->conn, PAUSE_FLOOD);
}

void
session_continue(struct session *s)
{
	struct conn *c = s->conn;

	/*
	 * A query finished: take input again and handle what is buffered.
	 * The resume may read an end of input and close the conn, freeing
	 * s, so it comes last.
	 */
	arm_timer(s, 0);
	conn_resume(c, PAUSE_SERVICE);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	(void)fd;
	(void)what;
	/*
	 * A flooding client is not read from until its buffered lines are
	 * handled at flood_rate, which may take a minute; if it reset the
	 * connection meanwhile, let it go now rather than then.
	 */
	if (conn_paused(s->conn, PAUSE_FLOOD) && conn_check_peer(s->conn) < 0)
		return;
	process(s);
}

static void
chat_read(struct conn *c, struct evbuffer *in)
{
	struct session *s = conn_data(c);
	uint8_t buf[4096], reply[64];
	size_t n, replylen;

	/*
	 * Move input through the telnet filter into pending.  pending never
	 * holds more than a line plus one read: past max_line the framer
	 * discards, and a paused client is not read from.
	 */
	while (
	    (n = evbuffer_remove(in, buf, sizeof buf)) > 0 && n != (size_t)-1) {
		replylen = 0;
		n = telnet_filter(
		    &s->telnet, buf, n, reply, sizeof reply, &replylen);
		if (replylen > 0)
			conn_write(c, reply, replylen);
		evbuffer_add(s->pending, buf, n);
		if (evbuffer_get_length(s->pending) >
		    s->chat->srv->cfg->chat_max_line + sizeof buf)
			break;
	}
	if (evtimer_pending(s->timer, NULL) && conn_paused(c, PAUSE_FLOOD))
		return; /* the timer will carry on */
	process(s);
}

static int
chat_open(struct conn *c)
{
	struct server *srv = conn_server(c);
	struct chat *ch = srv->chat;
	const struct config *cfg = srv->cfg;
	struct session *s;
	struct room *r;
	struct blob *b;
	const char *bad;
	char nick[32], why[256], text[200];
	int tries;

	if ((s = calloc(1, sizeof *s)) == NULL ||
	    (s->pending = evbuffer_new()) == NULL ||
	    (s->held = evbuffer_new()) == NULL ||
	    (s->timer = evtimer_new(srv->base, timer_cb, s)) == NULL) {
		if (s != NULL && s->pending != NULL)
			evbuffer_free(s->pending);
		if (s != NULL && s->held != NULL)
			evbuffer_free(s->held);
		free(s);
		return -1;
	}
	s->chat = ch;
	s->conn = c;
	s->id = conn_id(c);
	s->tokens = cfg->chat_flood_burst;
	s->refilled_ms = clock_mono_ms();
	telnet_init(&s->telnet);
	conn_set_data(c, s);
	for (tries = 0; tries < 1000; tries++) {
		snprintf(nick, sizeof nick, "guest%llu",
		    (unsigned long long)++ch->guest_seq);
		if (session_set_nick(s, nick, why, sizeof why) == 0)
			break;
	}
	if (s->nick[0] == '\0')
		return -1;
	/* The session token ends the welcome line: one line, shown once. */
	chat_resume_new_token(s);
	chat_resume_token_text(s, text, sizeof text);
	notice(s,
	    "welcome to parley, %s. Type /help for commands, "
	    "/nick NAME to choose a nick.%s",
	    s->nick, text);
	r = room_get_or_create(ch, cfg->chat_default_room, why, sizeof why);
	if (r != NULL && (bad = chat_room_admit(s, r, NULL)) != NULL) {
		snprintf(why, sizeof why, "%s", bad);
		r = NULL;
	}
	if (r != NULL && room_add(r, s) == 0) {
		s->rooms =
		    malloc(sizeof *s->rooms * cfg->chat_max_rooms_per_client);
		s->rooms_cap = s->rooms ? cfg->chat_max_rooms_per_client : 0;
		if (s->rooms == NULL) {
			room_remove(ch, r, s);
			return -1;
		}
		s->rooms[s->nrooms++] = r;
		notice(s, "you are in %s (%zu here)%s%s", r->name, r->live,
		    r->topic ? "; topic: " : "", r->topic ? r->topic : "");
		b = blob_printf("*** %s: %s has joined", r->name, s->nick);
		room_broadcast(r, s, b);
		blob_unref(b);
		chat_replay(s, r);
	} else {
		s->rooms =
		    malloc(sizeof *s->rooms * cfg->chat_max_rooms_per_client);
		s->rooms_cap = s->rooms ? cfg->chat_max_rooms_per_client : 0;
		error(s, "cannot join %s: %s", cfg->chat_default_room, why);
	}
	chat_account_open(s);
	log_debug("chat %s: %s connected", conn_peer(c), s->nick);
	return 0;
}

static void
chat_drained(struct conn *c)
{
	struct session *s = conn_data(c);

	if (s == NULL || !s->slow)
		return;
	s->slow = 0;
	notice(s,
	    "you missed %llu message(s) while your connection was "
	    "slow",
	    (unsigned long long)s->missed);
	s->missed = 0;
}

static void
chat_shutdown(struct conn *c)
{
	struct session *s = conn_data(c);

	if (s != NULL)
		notice(s, "the server is shutting down; goodbye");
}

static void
chat_close(struct conn *c)
{
	struct session *s = conn_data(c);

	if (s == NULL)
		return;
	chat_resume_park(s); /* while its rooms are still joined */
	if (!s->quitting)
		leave_all(
		    s, conn_eof(c) ? "connection closed" : "connection lost");
	chat_account_session_free(s);
	if (s->fold[0] != '\0')
		strmap_del(s->chat->nicks, s->fold);
	event_free(s->timer);
	evbuffer_free(s->pending);
	evbuffer_free(s->held);
	free(s->rooms);
	free(s);
}

const struct conn_service chat_service = {
    .name = "chat",
    .open = chat_open,
    .read = chat_read,
    .drained = chat_drained,
    .shutdown = chat_shutdown,
    .close = chat_close,
};

struct chat *
chat_new(struct server *srv)
{
	struct chat *ch;

	if ((ch = calloc(1, sizeof *ch)) == NULL)
		return NULL;
	ch->srv = srv;
	TAILQ_INIT(&ch->parked_order);
	if ((ch->nicks = strmap_new()) == NULL ||
	    (ch->rooms = strmap_new()) == NULL ||
	    (ch->authfail = strmap_new()) == NULL ||
	    (ch->acls = strmap_new()) == NULL ||
	    (ch->live_tokens = strmap_new()) == NULL ||
	    (ch->parked = strmap_new()) == NULL) {
		chat_free(ch);
		return NULL;
	}
	return ch;
}

void
chat_free(struct chat *ch)
{
	if (ch == NULL)
		return;
	if (ch->rooms != NULL)
		room_free_all(ch);
	chat_rooms_free(ch);
	chat_resume_free(ch);
	strmap_free(ch->rooms);
	strmap_free(ch->nicks);
	chat_account_free(ch);
	free(ch);
}

void
chat_reloaded(struct chat *ch)
{
	/* Limits are read from srv->cfg at each use; nothing to copy. */
	(void)ch;
}

void
chat_load_state(struct chat *ch)
{
	chat_rooms_load(ch);
	chat_klines_load(ch);
}

int
chat_is_session(const struct conn *c)
{
	return conn_service(c) == &chat_service;
}

size_t
chat_room_count(const struct chat *ch)
{
	return strmap_count(ch->rooms);
}
