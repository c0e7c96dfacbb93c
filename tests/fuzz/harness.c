/*
 * The socketless server behind fuzz_conn and fuzz_command; see harness.h.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "chat.h"
#include "conf.h"
#include "conn.h"
#include "harness.h"
#include "log.h"
#include "text.h"
#include "check.h"

/* Loop iterations per pump: each moves data one hop or fires timers. */
#define PUMP_MAX 256

void
fz_global_init(void)
{
	static int done;

	if (done)
		return;
	done = 1;
	log_init("fuzz");
	log_set_level(LOG_CRIT);
}

int
fz_init_base(struct fz *f, struct config *cfg, struct event_base *base)
{
	memset(f, 0, sizeof *f);
	f->srv.cfg = cfg;
	f->srv.base = base;
	if (base == NULL || (f->srv.chat = chat_new(&f->srv)) == NULL) {
		config_free(cfg);
		return -1;
	}
	return 0;
}

int
fz_init(struct fz *f, struct config *cfg)
{
	struct event_base *base = event_base_new();

	if (fz_init_base(f, cfg, base) == -1) {
		if (base != NULL)
			event_base_free(base);
		return -1;
	}
	f->own_base = 1;
	return 0;
}

static void
keep(struct fz_rec *r, int *overflow, const void *p, size_t len)
{
	if (*overflow || r->n + len > FZ_RECV_MAX) {
		*overflow = 1;
		return;
	}
	if (r->n + len > r->cap) {
		r->cap = r->cap ? r->cap : 4096;
		while (r->cap < r->n + len)
			r->cap *= 2;
		if ((r->p = realloc(r->p, r->cap)) == NULL)
			abort();
	}
	memcpy(r->p + r->n, p, len);
	r->n += len;
}

/*
 * Client i's address: 127.0.0.1 and 127.0.0.2, then 2001:db8::1 and
 * 2001:db8::2, so per-address limits and bans (an IPv6 /64 counts as
 * one address) can tell clients apart, or not.
 */
static socklen_t
client_addr(int i, struct sockaddr_storage *ss)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof *ss);
	if (i % 4 < 2) {
		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK + (uint32_t)i % 2);
		sin->sin_port = htons((uint16_t)(40000 + i));
		return sizeof *sin;
	}
	sin6->sin6_family = AF_INET6;
	inet_pton(
	    AF_INET6, i % 2 ? "2001:db8::2" : "2001:db8::1", &sin6->sin6_addr);
	sin6->sin6_port = htons((uint16_t)(40000 + i));
	return sizeof *sin6;
}

int
fz_connect(struct fz *f, const struct conn_service *svc)
{
	struct bufferevent *pair[2];
	struct sockaddr_storage ss;
	struct fz_client *c;
	socklen_t sslen;
	int i = f->nclients;

	if (i >= FZ_MAXCLIENTS ||
	    bufferevent_pair_new(f->srv.base, 0, pair) == -1)
		return -1;
	c = &f->c[i];
	memset(c, 0, sizeof *c);
	c->bev = pair[1];
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	sslen = client_addr(i, &ss);
	/* The conn owns pair[0] from here, whatever happens. */
	c->id = conn_attach(
	    &f->srv, svc, "fuzz", pair[0], (struct sockaddr *)&ss, sslen);
	f->nclients++;
	return i;
}

void
fz_send(struct fz *f, int i, const void *p, size_t n)
{
	struct fz_client *c = &f->c[i];

	if (c->bev == NULL || c->finished || n == 0)
		return;
	keep(&c->sent, &c->overflow, p, n);
	bufferevent_write(c->bev, p, n);
}

void
fz_finish(struct fz *f, int i)
{
	struct fz_client *c = &f->c[i];

	if (c->bev == NULL || c->finished)
		return;
	c->finished = 1;
	bufferevent_flush(c->bev, EV_WRITE, BEV_FINISHED);
}

void
fz_drop(struct fz *f, int i)
{
	struct fz_client *c = &f->c[i];
	struct bufferevent *server_end;

	if (c->bev == NULL)
		return;
	/* Like a TCP reset: the server sees an error, then nothing. */
	server_end = bufferevent_pair_get_partner(c->bev);
	if (server_end != NULL)
		bufferevent_trigger_event(
		    server_end, BEV_EVENT_ERROR | BEV_EVENT_READING, 0);
	bufferevent_free(c->bev);
	c->bev = NULL;
}

void
fz_set_slow(struct fz *f, int i, int slow)
{
	struct fz_client *c = &f->c[i];

	if (c->bev == NULL)
		return;
	c->slow = slow;
	/* A slow client's window: the server's output backs up behind it. */
	bufferevent_setwatermark(c->bev, EV_READ, 0, slow ? 512 : 0);
}

static void
drain(struct fz_client *c)
{
	struct evbuffer *in;
	unsigned char buf[4096];
	int n;

	if (c->bev == NULL || c->slow)
		return;
	in = bufferevent_get_input(c->bev);
	while ((n = evbuffer_remove(in, buf, sizeof buf)) > 0)
		keep(&c->recv, &c->overflow, buf, (size_t)n);
}

void
fz_pump(struct fz *f)
{
	int i, k;

	for (k = 0; k < PUMP_MAX; k++) {
		event_base_loop(f->srv.base, EVLOOP_NONBLOCK);
		for (i = 0; i < f->nclients; i++)
			drain(&f->c[i]);
		/* A zero-delay timer shows up as active one turn later. */
		if (k >= 2 &&
		    event_base_get_num_events(
			f->srv.base, EVENT_BASE_COUNT_ACTIVE) == 0)
			break;
	}
}

struct session *
fz_session(struct fz *f, int i)
{
	struct conn *c = conn_lookup(f->c[i].id);

	if (c == NULL || conn_state(c) != CONN_ACTIVE)
		return NULL;
	return conn_data(c);
}

static int
line_ok(const unsigned char *p, size_t n)
{
	size_t i;

	if (!text_valid_utf8((const char *)p, n))
		return 0;
	for (i = 0; i < n; i++) {
		if ((p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7F)
			return 0;
		if (p[i] == 0xC2 && i + 1 < n && p[i + 1] < 0xA0)
			return 0; /* C1 */
	}
	return 1;
}

/* Show the offending output, escaped, then abort. */
static void
bad_output(const unsigned char *p, size_t n, const char *why)
{
	size_t i;

	fprintf(stderr, "fuzz: bad chat output (%s): \"", why);
	for (i = 0; i < n && i < 512; i++)
		fprintf(stderr,
		    p[i] >= 0x20 && p[i] < 0x7F && p[i] != '\\' ? "%c"
								: "\\x%02x",
		    p[i]);
	fprintf(stderr, "\"\n");
	abort();
}

void
fz_check_chat_output(const struct fz_client *c)
{
	const unsigned char *p = c->recv.p;
	size_t i = 0, j, n = c->recv.n;

	while (i < n) {
		if (p[i] == 0xFF) {
			/* IAC WILL/WONT/DO/DONT option, whole. */
			if (n - i < 3 || p[i + 1] < 0xFB)
				bad_output(p + i, n - i, "telnet reply");
			i += 3;
			continue;
		}
		for (j = i;
		     j < n && p[j] != '\r' && p[j] != '\n' && p[j] != 0xFF; j++)
			;
		if (j == n || (p[j] == '\r' && j + 1 == n))
			break; /* the tail of a line still on its way */
		if (p[j] != '\r' || p[j + 1] != '\n')
			bad_output(p + i, j - i + 2, "line end");
		if (!line_ok(p + i, j - i))
			bad_output(p + i, j - i, "line text");
		i = j + 2;
	}
}

void
fz_disconnect_all(struct fz *f)
{
	int i;

	conn_abort_all("fuzz input done");
	for (i = 0; i < f->nclients; i++) {
		if (f->c[i].bev != NULL)
			bufferevent_free(f->c[i].bev);
		free(f->c[i].recv.p);
		free(f->c[i].sent.p);
	}
	memset(f->c, 0, sizeof f->c);
	f->nclients = 0;
	/* Run the deferred callbacks and finalizers of the freed ends. */
	event_base_loop(f->srv.base, EVLOOP_NONBLOCK);
}

void
fz_free(struct fz *f)
{
	fz_disconnect_all(f);
	chat_free(f->srv.chat);
	if (f->own_base)
		event_base_free(f->srv.base);
	config_free(f->srv.cfg);
	memset(f, 0, sizeof *f);
}
