/*
 * Chat <-> history: storing room lines, replay on join, /history and
 * /search.  Queries run off the loop; their results come back by conn id
 * and are dropped if the client left meanwhile.
 *
 * The replay seam: a joiner is added to the room first, so live lines
 * reach it from that instant -- but they are held in s->held while the
 * replay runs.  The replay asks for ids up to the last id assigned
 * before the join; every later line is live.  Replay, then the held live
 * lines: nothing missing, nothing twice.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "clock.h"
#include "chat-int.h"
#include "conf.h"
#include "conn.h"
#include "history.h"
#include "log.h"
#include "server.h"

static struct history *
hist(struct session *s)
{
	return s->chat->srv->history;
}

void
chat_record(struct session *s, struct room *r, int kind, const char *text)
{
	if (hist(s) != NULL)
		history_append(hist(s), r->fold, s->nick,
		    kind ? HISTORY_ACTION : HISTORY_MESSAGE, text);
}

static void
format_ts(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* One stored line as the client sees it: "#room [time] <nick> text". */
static void
emit_row(struct evbuffer *out, const char *room, const struct history_row *row)
{
	char ts[32];

	format_ts(row->ts_ms, ts, sizeof ts);
	if (row->kind == HISTORY_ACTION)
		evbuffer_add_printf(out, "%s [%s] * %s %s\r\n", room, ts,
		    row->sender, row->text);
	else
		evbuffer_add_printf(out, "%s [%s] <%s> %s\r\n", room, ts,
		    row->sender, row->text);
}

struct replay {
	char room[ROOM_BYTES_MAX];
	int64_t since; /* replay only ids above this; -1: a join replay */
	unsigned limit;
};

static void
replay_done(uint64_t owner, void *arg, const struct history_row *rows,
    size_t nrows, const char *err)
{
	struct replay *rp = arg;
	const char *room = rp->room;
	struct session *s = session_by_id(owner);
	struct evbuffer *out;
	size_t i, first = 0;

	if (s == NULL) {
		free(rp);
		return; /* the client left while we looked */
	}
	out = conn_output(s->conn);
	if (rp->since >= 0)
		while (first < nrows && rows[first].id <= rp->since)
			first++;
	if (err != NULL)
		evbuffer_add_printf(out,
		    "!!! history of %s unavailable: "
		    "%s\r\n",
		    room, err);
	else if (rp->since >= 0) {
		/* A resume: exactly the lines after since (oldest cut off */
		/* past the limit, which is said). */
		if (first == 0 && nrows == rp->limit && nrows > 0 &&
		    rows[0].id > rp->since + 1)
			evbuffer_add_printf(out,
			    "*** %s: perhaps more than %u message(s) missed; "
			    "the "
			    "last %u follow\r\n",
			    room, rp->limit, rp->limit);
		evbuffer_add_printf(out,
		    "*** %s: %zu message(s) while you were away:\r\n", room,
		    nrows - first);
		for (i = first; i < nrows; i++)
			emit_row(out, room, &rows[i]);
		evbuffer_add_printf(
		    out, "*** %s: end of missed messages\r\n", room);
	} else if (nrows > 0) {
		evbuffer_add_printf(
		    out, "*** %s: last %zu message(s):\r\n", room, nrows);
		for (i = 0; i < nrows; i++)
			emit_row(out, room, &rows[i]);
		evbuffer_add_printf(out, "*** %s: end of history\r\n", room);
	}
	free(rp);
	if (--s->replaying == 0) {
		evbuffer_add_buffer(
		    out, s->held); /* the live lines, in order */
		/* Now an end of input may close: nothing is held back. */
		conn_resume(s->conn, PAUSE_REPLAY); /* last: may free s */
	}
}

static void
replay(struct session *s, struct room *r, int64_t since, unsigned limit)
{
	struct history *h = hist(s);
	struct replay *rp;

	if (h == NULL || limit == 0 || (rp = calloc(1, sizeof *rp)) == NULL)
		return;
	snprintf(rp->room, sizeof rp->room, "%s", r->name);
	rp->since = since;
	rp->limit = limit;
	/* Ids up to here are history; everything after reaches us live. */
	if (history_replay(h, r->fold, history_last_id(h), limit, s->id,
		replay_done, rp) == -1) {
		free(rp);
		return;
	}
	/*
	 * Until the replay is in, the live lines wait in s->held, which a
	 * close would lose: hold off end of input (and further reading).
	 */
	if (s->replaying++ == 0)
		conn_pause(s->conn, PAUSE_REPLAY);
}

void
chat_replay(struct session *s, struct room *r)
{
	replay(s, r, -1, s->chat->srv->cfg->history_replay);
}

void
chat_replay_since(struct session *s, struct room *r, int64_t since_id)
{
	replay(s, r, since_id, s->chat->srv->cfg->chat_resume_replay_max);
}

int64_t
chat_history_last_id(struct chat *ch)
{
	return ch->srv->history ? history_last_id(ch->srv->history) : 0;
}

struct query {
	char room[ROOM_BYTES_MAX]; /* display name, for /history */
	char words[1024]; /* for /search's header; see copy_utf8 */
};

static void
history_done(uint64_t owner, void *arg, const struct history_row *rows,
    size_t nrows, const char *err)
{
	struct query *q = arg;
	struct session *s = session_by_id(owner);
	size_t i;

	if (s != NULL) {
		if (err != NULL)
			error(s, "history unavailable: %s", err);
		else {
			notice(s, "%s: %zu message(s):", q->room, nrows);
			for (i = 0; i < nrows; i++)
				emit_row(session_out(s), q->room, &rows[i]);
			notice(s, "%s: end of history", q->room);
		}
		s->querying = 0;
		session_continue(s); /* last: it may close and free s */
	}
	free(q);
}

static int
begin_query(struct session *s)
{
	if (hist(s) == NULL) {
		error(s, "history is not available on this server");
		return -1;
	}
	return 0;
}

void
chat_history_cmd(struct session *s, int argc, char **argv)
{
	const struct config *cfg = s->chat->srv->cfg;
	struct room *r = session_current(s);
	struct query *q;
	unsigned long n = cfg->history_page_max;
	uint64_t ms = 0;
	int64_t since = 0;
	char *end;

	if (begin_query(s) == -1)
		return;
	if (r == NULL) {
		error(s, "you are in no room");
		return;
	}
	if (argc >= 1 && strcmp(argv[0], "since") == 0) {
		if (argc != 2 || parse_duration_ms(argv[1], &ms) == -1) {
			error(s,
			    "usage: /history since DURATION (e.g. 10m, "
			    "2h, 1d)");
			return;
		}
		since = clock_real_ms() - (int64_t)ms;
	} else if (argc >= 1) {
		/* strtoul would take "-1" (or " 1") as a huge N. */
		n = isdigit((unsigned char)argv[0][0])
		    ? strtoul(argv[0], &end, 10)
		    : 0;
		if (n == 0 || *end != '\0' || argc > 1) {
			error(s, "usage: /history [N | since DURATION]");
			return;
		}
		if (n > cfg->history_page_max) {
			notice(s, "showing at most %u messages",
			    cfg->history_page_max);
			n = cfg->history_page_max;
		}
	}
	if ((q = calloc(1, sizeof *q)) == NULL)
		return;
	snprintf(q->room, sizeof q->room, "%s", r->name);
	if (history_recent(hist(s), r->fold, (unsigned)n, since, s->id,
		history_done, q) == -1) {
		error(s, "history is busy; try again");
		free(q);
		return;
	}
	/* One query at a time; later lines wait for its answer, in order. */
	s->querying = 1;
	conn_pause(s->conn, PAUSE_SERVICE);
}

/*
 * Copy at most len - 1 bytes of the valid UTF-8 src, never splitting a
 * character: a cut sequence would be invalid UTF-8 on the client's
 * screen.  (Words db_search accepts are shorter than this anyway,
 * unless padded with runs of spaces.)
 */
static void
copy_utf8(char *dst, size_t len, const char *src)
{
	size_t n = text_cut(src, strlen(src), len - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
}

static void
search_done(uint64_t owner, void *arg, const struct history_row *rows,
    size_t nrows, const char *err)
{
	struct query *q = arg;
	struct session *s = session_by_id(owner);
	size_t i, j;

	if (s != NULL) {
		if (err != NULL)
			error(s, "search failed: %s", err);
		else {
			notice(s, "search \"%s\": %zu result(s), newest first",
			    q->words, nrows);
			for (i = 0; i < nrows; i++) {
				/* Show the room as the client knows it. */
				const char *name = rows[i].room;

				for (j = 0; j < s->nrooms; j++)
					if (strcmp(s->rooms[j]->fold,
						rows[i].room) == 0)
						name = s->rooms[j]->name;
				emit_row(session_out(s), name, &rows[i]);
			}
			notice(s, "end of search results");
		}
		s->querying = 0;
		session_continue(s); /* last: it may close and free s */
	}
	free(q);
}

void
chat_search_cmd(struct session *s, int argc, char **argv)
{
	const char *rooms[64];
	struct query *q;
	size_t i, n = 0;

	(void)argc;
	if (begin_query(s) == -1)
		return;
	for (i = 0; i < s->nrooms && n < 64; i++)
		rooms[n++] = s->rooms[i]->fold;
	if (n == 0) {
		error(s, "you are in no room; search covers your rooms");
		return;
	}
	if ((q = calloc(1, sizeof *q)) == NULL)
		return;
	copy_utf8(q->words, sizeof q->words, argv[0]);
	if (history_search(hist(s), rooms, n, argv[0],
		s->chat->srv->cfg->history_page_max, s->id, search_done,
		q) == -1) {
		error(s, "history is busy; try again");
		free(q);
		return;
	}
	/* One query at a time; later lines wait for its answer, in order. */
	s->querying = 1;
	conn_pause(s->conn, PAUSE_SERVICE);
}
