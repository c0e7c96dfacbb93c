/*
 * Prometheus text exposition of the server's counters.  Everything is
 * read on the loop thread at scrape time; nothing is kept per scrape.
 *
 * Loop lag: a timer ([server] loop_lag_interval, 100 ms by default)
 * records how late it fires; the worst lateness since the previous scrape
 * is exported, so a stalled loop shows up.  A stall of S ms shows as at
 * least S minus the interval, so a short interval sees short stalls.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sqlite3.h>

#include "clock.h"
#include "chat.h"
#include "conf.h"
#include "conn.h"
#include "gate.h"
#include "history.h"
#include "metrics.h"
#include "server.h"
#include "workq.h"

struct metrics {
	struct server *srv;
	struct evhttp *http;
	struct event *tick;
	uint64_t tick_us; /* the timer's period */
	clockid_t clock; /* the clock libevent runs the timer on */
	uint64_t last_tick_us;
	uint64_t lag_max_us; /* since the last scrape */
	uint64_t scrapes;
};

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct metrics *m = arg;
	uint64_t now = clock_us(m->clock), late;

	(void)fd;
	(void)what;
	if (m->last_tick_us != 0) {
		late = now - m->last_tick_us;
		late = late > m->tick_us ? late - m->tick_us : 0;
		if (late > m->lag_max_us)
			m->lag_max_us = late;
	}
	m->last_tick_us = now;
}

struct by_listener {
	char name[32];
	size_t count[CONN_NSTATES];
};

struct tally {
	struct by_listener *l;
	size_t n, cap;
};

static void
tally_cb(struct conn *c, void *arg)
{
	struct tally *t = arg;
	size_t i;

	for (i = 0; i < t->n; i++)
		if (strcmp(t->l[i].name, conn_listener(c)) == 0)
			break;
	if (i == t->n) {
		if (t->n == t->cap) {
			struct by_listener *nl;

			t->cap = t->cap ? t->cap * 2 : 8;
			if ((nl = realloc(t->l, t->cap * sizeof *nl)) == NULL)
				return;
			t->l = nl;
		}
		memset(&t->l[i], 0, sizeof t->l[i]);
		strncpy(
		    t->l[i].name, conn_listener(c), sizeof t->l[i].name - 1);
		t->n++;
	}
	t->l[i].count[conn_state(c)]++;
}

#define COUNTER(name, help, v) \
	evbuffer_add_printf(b, \
	    "# HELP parley_" name " " help "\n" \
	    "# TYPE parley_" name " counter\n" \
	    "parley_" name " %llu\n", \
	    (unsigned long long)(v))
#define GAUGE(name, help, fmt, v) \
	evbuffer_add_printf(b, \
	    "# HELP parley_" name " " help "\n" \
	    "# TYPE parley_" name " gauge\n" \
	    "parley_" name " " fmt "\n", \
	    (v))

static void
render(struct metrics *m, struct evbuffer *b)
{
	struct server *s = m->srv;
	const struct server_stats *st = &s->stats;
	struct tally t = {NULL, 0, 0};
	struct history_stats hs;
	struct gate_stats gs;
	struct workq_stats ws;
	size_t i;
	int j;

	conn_foreach(tally_cb, &t);
	evbuffer_add_printf(b,
	    "# HELP parley_connections Open connections "
	    "by listener and state.\n"
	    "# TYPE parley_connections gauge\n");
	for (i = 0; i < t.n; i++)
		for (j = 0; j < CONN_NSTATES; j++)
			if (j != CONN_CLOSED)
				evbuffer_add_printf(b,
				    "parley_connections{listener=\"%s\","
				    "state=\"%s\"} %zu\n",
				    t.l[i].name, conn_state_name(j),
				    t.l[i].count[j]);
	free(t.l);
	GAUGE(
	    "connections_total_open", "Open connections.", "%zu", conn_count());
	GAUGE("connections_asleep",
	    "Idle connections holding no buffers (idle_release).", "%zu",
	    conn_count_asleep());
	GAUGE("rooms", "Chat rooms.", "%zu",
	    s->chat ? chat_room_count(s->chat) : 0);
	GAUGE("sessions_parked", "Chat sessions kept for /resume.", "%zu",
	    s->chat ? chat_parked_count(s->chat) : 0);
	COUNTER("accepted_total", "Connections accepted.", st->accepted);
	memset(&gs, 0, sizeof gs);
	if (s->gate != NULL)
		gate_stats(s->gate, &gs);
	evbuffer_add_printf(b,
	    "# HELP parley_refused_total Connections refused at accept.\n"
	    "# TYPE parley_refused_total counter\n"
	    "parley_refused_total{reason=\"full\"} %llu\n"
	    "parley_refused_total{reason=\"per_ip\"} %llu\n"
	    "parley_refused_total{reason=\"rate\"} %llu\n"
	    "parley_refused_total{reason=\"banned\"} %llu\n",
	    (unsigned long long)st->refused_full,
	    (unsigned long long)st->refused_per_ip,
	    (unsigned long long)gs.refused_rate,
	    (unsigned long long)gs.refused_banned);
	COUNTER("accept_errors_total", "accept() failures (e.g. EMFILE).",
	    st->accept_errors);
	COUNTER("tls_handshakes_total", "Completed TLS handshakes.",
	    st->tls_handshakes);
	COUNTER("tls_failures_total", "Failed or timed out TLS handshakes.",
	    st->tls_failures);
	COUNTER("messages_in_total", "Chat lines received.", st->messages_in);
	COUNTER(
	    "messages_out_total", "Chat lines delivered.", st->messages_out);
	COUNTER("bytes_in_total", "Bytes received.", st->bytes_in);
	COUNTER("bytes_out_total", "Bytes queued for sending.", st->bytes_out);
	COUNTER("slow_consumer_events_total",
	    "Clients held back or dropped for not reading.",
	    st->slow_consumers);
	if (s->history != NULL) {
		history_stats(s->history, &hs);
		GAUGE("history_queue_depth", "Messages waiting for the writer.",
		    "%zu", hs.queue_depth);
		COUNTER(
		    "history_written_total", "Messages committed.", hs.written);
		COUNTER("history_dropped_total",
		    "Messages history could not keep.", hs.dropped);
		COUNTER("history_write_errors_total", "Failed commits.",
		    hs.write_errors);
		COUNTER(
		    "history_batches_total", "Committed batches.", hs.batches);
		GAUGE("history_commit_seconds", "Duration of the last commit.",
		    "%.6f", (double)hs.last_commit_us / 1e6);
		GAUGE("history_degraded", "1 while a write fault lasts.", "%d",
		    hs.degraded);
		GAUGE("history_file_problem",
		    "1 while the database file is removed, replaced or "
		    "unusable.",
		    "%d", hs.file_problem);
	}
	if (s->workq != NULL) {
		workq_stats(s->workq, &ws);
		GAUGE("worker_pending", "Jobs queued or running.", "%zu",
		    ws.pending);
	}
	/* Bounded by [history] cache_size; shown so a soak can tell it apart. */
	GAUGE("sqlite_memory_bytes",
	    "Heap sqlite holds: page caches of history and accounts.", "%lld",
	    (long long)sqlite3_memory_used());
	GAUGE("loop_lag_seconds",
	    "Worst event-loop delay since the previous scrape.", "%.6f",
	    (double)m->lag_max_us / 1e6);
	m->lag_max_us = 0;
}

static void
metrics_cb(struct evhttp_request *req, void *arg)
{
	struct metrics *m = arg;
	struct evbuffer *b;

	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET &&
	    evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
		evhttp_send_error(req, 405, "Method Not Allowed");
		return;
	}
	if ((b = evbuffer_new()) == NULL) {
		evhttp_send_error(req, 500, "Out of memory");
		return;
	}
	m->scrapes++;
	render(m, b);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

struct metrics *
metrics_new(struct server *s)
{
	struct metrics *m;
	struct timeval tv;

	if ((m = calloc(1, sizeof *m)) == NULL)
		return NULL;
	m->srv = s;
	m->tick_us = s->cfg->loop_lag_interval_ms * 1000;
	/*
	 * Read lateness on the clock the timer runs on: libevent's default
	 * timers follow the coarse clock, so on the precise one an idle loop
	 * would show up to one coarse tick (4 ms here) of lag it never had.
	 */
	m->clock = config_precise_timers(s->cfg) ? CLOCK_MONOTONIC
						 : CLOCK_MONOTONIC_COARSE;
	tv = timeval_ms(s->cfg->loop_lag_interval_ms);
	if ((m->http = evhttp_new(s->base)) == NULL ||
	    (m->tick = event_new(s->base, -1, EV_PERSIST, tick_cb, m)) ==
		NULL) {
		metrics_free(m);
		return NULL;
	}
	/* Let every method reach metrics_cb, which answers 405 itself. */
	evhttp_set_allowed_methods(m->http,
	    EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
		EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
		EVHTTP_REQ_PATCH | EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT);
	evhttp_set_max_headers_size(m->http, 8192);
	evhttp_set_max_body_size(m->http, 4096);
	evhttp_set_timeout(m->http, 10);
	evhttp_set_cb(m->http, "/metrics", metrics_cb, m);
	evtimer_add(m->tick, &tv);
	return m;
}

void
metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	if (m->tick != NULL)
		event_free(m->tick);
	if (m->http != NULL)
		evhttp_free(m->http);
	free(m);
}

struct evhttp_bound_socket *
metrics_listen(struct metrics *m, int fd)
{
	return evhttp_accept_socket_with_handle(m->http, fd);
}

void
metrics_unlisten(struct metrics *m, struct evhttp_bound_socket *b)
{
	evhttp_del_accept_socket(m->http, b);
}
