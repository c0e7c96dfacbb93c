/*
 * Connections: accept, TLS handshake, timeouts, backpressure, close.
 *
 * State machine (conn_set_state is the only writer of c->state):
 *
 *   HANDSHAKE --(TLS done)--> GREETING --(service open)--> ACTIVE
 *       |                        |                            |
 *       +--------(error, timeout, conn_close)---------> CLOSING --> CLOSED
 *
 * Plain connections start in GREETING.  CLOSING stops reads and waits for
 * the output to drain (bounded by a deadline), sends TLS close_notify,
 * then frees.  conn_abort skips the flush.
 *
 * Live conns are kept in a slot table so a 64-bit id (slot index plus a
 * generation) resolves in O(1), and an id from a finished worker job for a
 * conn that is gone resolves to NULL rather than to a reused slot.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "clock.h"
#include "conf.h"
#include "conn.h"
#include "gate.h"
#include "ipcount.h"
#include "log.h"
#include "server.h"
#include "tls.h"

/* A flushing close never takes longer than this, whatever the peer does. */
#define CLOSE_LINGER_MS 5000

struct conn {
	uint64_t id;
	enum conn_state state;
	unsigned pause; /* enum conn_pause bits */
	struct server *srv;
	const struct conn_service *svc;
	void *data; /* the service's per-connection state */
	struct bufferevent *bev;
	SSL *ssl; /* owned by bev; NULL on plain */
	/*
	 * The handshake or close deadline; while the conn sleeps, the watch
	 * on its socket (with what is left of idle_timeout).
	 */
	struct event *deadline;
	int busy; /* callbacks on the stack: defer free() */
	evutil_socket_t fd; /* the socket while asleep */
	unsigned watching : 1; /* service wants drained() */
	unsigned reading_now : 1; /* inside the service read callback */
	unsigned eof : 1; /* the peer finished sending */
	unsigned direct : 1; /* plain TCP: written by flush_cb */
	unsigned dirty : 1; /* on flush_list */
	unsigned asleep : 1; /* idle: bev freed, fd watched by deadline */
	unsigned short_timeout : 1; /* bev's read timeout is a remainder */
	unsigned awake_listed : 1; /* on awake_list */
	uint64_t read_ms; /* last input (coarse clock), for idle_timeout */
	uint64_t active_ms; /* last input or output, for the sleep sweep */
	union { /* TCP peers only; anything else stays AF_UNSPEC */
		struct sockaddr sa;
		struct sockaddr_in sin;
		struct sockaddr_in6 sin6;
	} addr;
	char listener[32];
	char peer_ip[INET6_ADDRSTRLEN];
	TAILQ_ENTRY(conn) entry;
	TAILQ_ENTRY(conn) flush_entry;
	TAILQ_ENTRY(conn) awake_entry; /* on awake_list while awake */
};

static const char *const state_names[CONN_NSTATES] = {
    "handshake",
    "greeting",
    "active",
    "closing",
    "closed",
};

/* Slot table: the loop thread's registry of live connections. */
static struct conn **slots;
static uint32_t id_generation;
static uint32_t nslots;
static uint32_t *free_slots;
static uint32_t nfree;
static size_t nconns;
static size_t nasleep; /* conns asleep: see awake_list */
static size_t state_counts[CONN_NSTATES];
static TAILQ_HEAD(, conn) all_conns = TAILQ_HEAD_INITIALIZER(all_conns);

/*
 * Write coalescing for plain TCP.  A bufferevent with EV_WRITE enabled
 * turns every reply into epoll_ctl(EPOLLOUT), epoll_wait, write(),
 * epoll_ctl again.  Instead, output added to a plain conn puts it on
 * flush_list and activates flush_ev, which libevent runs after the I/O
 * callbacks already queued in this loop iteration: each conn then gets
 * one write() carrying everything the iteration produced for it.  Only
 * when the socket does not take it all is EV_WRITE enabled, and the
 * bufferevent drains the rest as usual (conn_writecb turns it off again).
 */
static TAILQ_HEAD(, conn) flush_list = TAILQ_HEAD_INITIALIZER(flush_list);
static struct event *flush_ev;
#define FLUSH_IOV 64 /* chains sent by one flush; the rest waits for EV_WRITE */
/* flush_cb hands libevent's iovecs to sendmsg(2) as they are. */
_Static_assert(sizeof(struct evbuffer_iovec) == sizeof(struct iovec) &&
	offsetof(struct evbuffer_iovec, iov_len) ==
	    offsetof(struct iovec, iov_len),
    "struct evbuffer_iovec is not struct iovec");

/*
 * Idle plain conns give their buffers back (as memcached and nginx do with
 * idle connections).  An awake direct conn sits on awake_list, least
 * recently active first; sleep_ev walks it from the front and puts to
 * sleep every conn idle for idle_release with nothing buffered: its
 * bufferevent (about 0.9 KiB with its two evbuffers) is freed and its
 * deadline event watches the socket instead.  Input, output from a service
 * or the idle timeout wake it with a fresh bufferevent.
 */
static TAILQ_HEAD(, conn) awake_list = TAILQ_HEAD_INITIALIZER(awake_list);
static struct event *sleep_ev;
#define SLEEP_BATCH 1024 /* conns put to sleep per tick: bounded work */

static void conn_free(struct conn *c);
static void conn_readcb(struct bufferevent *bev, void *arg);
static void conn_writecb(struct bufferevent *bev, void *arg);
static void conn_eventcb(struct bufferevent *bev, short what, void *arg);
static void flush_cb(evutil_socket_t fd, short what, void *arg);
static void deadline_cb(evutil_socket_t fd, short what, void *arg);
static void conn_wake(struct conn *c);
static void conn_event(struct conn *c, short what);
static void conn_outbuf_cb(
    struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg);

static uint64_t
coarse_ms(void)
{
	return clock_us(CLOCK_MONOTONIC_COARSE) / 1000;
}

/*
 * A conn may be closed by its own service from inside one of its
 * callbacks; the memory then lives until the outermost callback returns.
 */
static void
conn_enter(struct conn *c)
{
	c->busy++;
}

static void
conn_leave(struct conn *c)
{
	if (--c->busy == 0 && c->state == CONN_CLOSED)
		free(c);
}

static int
slot_alloc(struct conn *c)
{
	uint32_t i, n;

	if (nfree == 0) {
		n = nslots ? nslots * 2 : 256;
		if ((slots = realloc(slots, n * sizeof *slots)) == NULL ||
		    (free_slots = realloc(
			 free_slots, n * sizeof *free_slots)) == NULL)
			abort(); /* table realloc is tiny compared with a conn */
		for (i = n; i > nslots; i--) {
			slots[i - 1] = NULL;
			free_slots[nfree++] = i - 1;
		}
		nslots = n;
	}
	i = free_slots[--nfree];
	slots[i] = c;
	/*
	 * The generation is process-wide, not per slot: the slot table is
	 * freed when empty, and an id must never come back while a worker
	 * result may still name it.
	 */
	c->id = ((uint64_t)++id_generation << 32) | i;
	return 0;
}

static void
slot_release(struct conn *c)
{
	uint32_t i = (uint32_t)(c->id & 0xffffffff);

	slots[i] = NULL;
	free_slots[nfree++] = i;
	if (nconns == 0 && nfree == nslots) {
		/* Nothing left: give the table back (valgrind-clean exit). */
		free(slots);
		free(free_slots);
		slots = NULL;
		free_slots = NULL;
		nslots = nfree = 0;
	}
}

struct conn *
conn_lookup(uint64_t id)
{
	uint32_t i = (uint32_t)(id & 0xffffffff);

	if (i >= nslots || slots[i] == NULL || slots[i]->id != id)
		return NULL;
	return slots[i];
}

uint64_t
conn_id(const struct conn *c)
{
	return c->id;
}

enum conn_state
conn_state(const struct conn *c)
{
	return c->state;
}

const char *
conn_state_name(enum conn_state st)
{
	return st < CONN_NSTATES ? state_names[st] : "?";
}

struct server *
conn_server(const struct conn *c)
{
	return c->srv;
}

const char *
conn_peer(const struct conn *c)
{
	/*
	 * Formatted on demand, not kept in struct conn (which every idle
	 * client pays for); loop thread only.  Four buffers in turn, so that
	 * one log line may name several peers.
	 */
	static char buf[4][INET6_ADDRSTRLEN + 8];
	static unsigned next;
	char *p = buf[next++ % 4];

	if (c->addr.sa.sa_family == AF_INET)
		snprintf(p, sizeof buf[0], "%s:%u", c->peer_ip,
		    (unsigned)ntohs(c->addr.sin.sin_port));
	else if (c->addr.sa.sa_family == AF_INET6)
		snprintf(p, sizeof buf[0], "[%s]:%u", c->peer_ip,
		    (unsigned)ntohs(c->addr.sin6.sin6_port));
	else
		snprintf(p, sizeof buf[0], "local");
	return p;
}

const char *
conn_peer_ip(const struct conn *c)
{
	return c->peer_ip;
}

const char *
conn_listener(const struct conn *c)
{
	return c->listener;
}

const struct conn_service *
conn_service(const struct conn *c)
{
	return c->svc;
}

int
conn_peer_fingerprint(const struct conn *c, char *hex, size_t len)
{
	return tls_peer_fingerprint(c->ssl, hex, len);
}

int
conn_is_tls(const struct conn *c)
{
	return c->ssl != NULL;
}

void *
conn_data(const struct conn *c)
{
	return c->data;
}

void
conn_set_data(struct conn *c, void *data)
{
	c->data = data;
}

size_t
conn_count(void)
{
	return nconns;
}

size_t
conn_count_asleep(void)
{
	return nasleep;
}

size_t
conn_count_state(enum conn_state st)
{
	return st < CONN_NSTATES ? state_counts[st] : 0;
}

void
conn_set_state(struct conn *c, enum conn_state st)
{
	static const unsigned char allowed[CONN_NSTATES][CONN_NSTATES] = {
	    /* to: HS GR AC CL CD */
	    [CONN_HANDSHAKE] = {0, 1, 0, 1, 1},
	    [CONN_GREETING] = {0, 0, 1, 1, 1},
	    [CONN_ACTIVE] = {0, 0, 0, 1, 1},
	    [CONN_CLOSING] = {0, 0, 0, 0, 1},
	    [CONN_CLOSED] = {0, 0, 0, 0, 0},
	};

	if (st >= CONN_NSTATES || !allowed[c->state][st]) {
		log_err("conn %s: bad state change %s -> %s", conn_peer(c),
		    conn_state_name(c->state), conn_state_name(st));
		abort(); /* a bug: continuing would corrupt ownership */
	}
	log_debug("conn %s: %s -> %s", conn_peer(c), conn_state_name(c->state),
	    conn_state_name(st));
	state_counts[c->state]--;
	state_counts[st]++;
	c->state = st;
}

static void
update_reading(struct conn *c)
{
	if (c->bev == NULL)
		return; /* asleep: its watch reads */
	if ((c->state == CONN_ACTIVE || c->state == CONN_GREETING) &&
	    c->pause == 0 && !c->eof)
		bufferevent_enable(c->bev, EV_READ);
	else
		bufferevent_disable(c->bev, EV_READ);
}

void
conn_pause(struct conn *c, enum conn_pause why)
{
	conn_wake(c);
	c->pause |= why;
	update_reading(c);
}

void
conn_resume(struct conn *c, enum conn_pause why)
{
	struct evbuffer *in;

	if ((c->pause & why) == 0)
		return;
	conn_wake(c);
	c->pause &= ~why;
	update_reading(c);
	/*
	 * Input may already be buffered (read before the pause); libevent
	 * will not call us again for it until more arrives, so hand it to
	 * the service now -- but not re-entrantly.
	 */
	in = bufferevent_get_input(c->bev);
	if (c->pause == 0 && c->state == CONN_ACTIVE && !c->reading_now &&
	    (evbuffer_get_length(in) > 0 || c->eof))
		conn_readcb(c->bev, c);
}

int
conn_eof(const struct conn *c)
{
	return c->eof;
}

int
conn_check_peer(struct conn *c)
{
	int err = 0;
	socklen_t len = sizeof err;

	if (c->state == CONN_CLOSED)
		return -1;
	if (getsockopt(c->bev != NULL ? bufferevent_getfd(c->bev) : c->fd,
		SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err == 0)
		return 0;
	log_debug("conn %s: %s", conn_peer(c), strerror(err));
	conn_abort(c, "error");
	return -1;
}

int
conn_paused(const struct conn *c, enum conn_pause why)
{
	return (c->pause & why) != 0;
}

struct evbuffer *
conn_output(struct conn *c)
{
	conn_wake(c);
	return bufferevent_get_output(c->bev);
}

size_t
conn_output_length(const struct conn *c)
{
	if (c->bev == NULL)
		return 0;
	return evbuffer_get_length(bufferevent_get_output(c->bev));
}

int
conn_write(struct conn *c, const void *data, size_t len)
{
	if (c->state >= CONN_CLOSING)
		return -1;
	conn_wake(c);
	c->srv->stats.bytes_out += len;
	return bufferevent_write(c->bev, data, len);
}

int
conn_printf(struct conn *c, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (c->state >= CONN_CLOSING)
		return -1;
	conn_wake(c);
	va_start(ap, fmt);
	n = evbuffer_add_vprintf(bufferevent_get_output(c->bev), fmt, ap);
	va_end(ap);
	if (n > 0)
		c->srv->stats.bytes_out += (uint64_t)n;
	return n;
}

void
conn_watch_output(struct conn *c, size_t low)
{
	if (c->bev == NULL && !c->asleep)
		return;
	conn_wake(c);
	c->watching = 1;
	bufferevent_setwatermark(c->bev, EV_WRITE, low, 0);
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	conn_enter(c);
	if (c->state == CONN_HANDSHAKE) {
		c->srv->stats.tls_failures++;
		log_info("conn %s: TLS handshake timed out", conn_peer(c));
		conn_abort(c, "handshake timeout");
	} else if (c->state == CONN_CLOSING) {
		log_info("conn %s: peer did not take its output in time",
		    conn_peer(c));
		conn_free(c);
	}
	conn_leave(c);
}

static void
arm_deadline(struct conn *c, uint64_t ms)
{
	struct timeval tv = timeval_ms(ms);

	evtimer_add(c->deadline, &tv);
}

static void
set_tcp_options(int fd)
{
	int one = 1, idle = 60, intvl = 10, cnt = 6;

	/* Chat lines are small and interactive: never wait for Nagle. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	/* Find dead peers without asking clients to answer PINGs. */
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
}

static void
format_peer(struct conn *c, const struct sockaddr *sa)
{
	c->peer_ip[0] = '\0';
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)sa;

		inet_ntop(
		    AF_INET, &sin->sin_addr, c->peer_ip, sizeof c->peer_ip);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const void *)sa;

		inet_ntop(
		    AF_INET6, &sin6->sin6_addr, c->peer_ip, sizeof c->peer_ip);
	} else {
		snprintf(c->peer_ip, sizeof c->peer_ip, "local");
	}
}

/* Refusals come in storms; log the first of each second, count the rest. */
static int
refusal_log_ok(void)
{
	static time_t last;
	time_t now = time(NULL);

	if (now == last)
		return 0;
	last = now;
	return 1;
}

static void
refuse(int fd, int tls, const char *line)
{
	/*
	 * Best effort, non-blocking: a refusal must never stall the loop.
	 * TLS clients cannot read plain text before a handshake, and we do
	 * not spend a handshake on someone we are about to turn away.
	 */
	if (!tls)
		(void)send(fd, line, strlen(line), MSG_DONTWAIT | MSG_NOSIGNAL);
	close(fd);
}

/* The bufferevent's read timeout: idle_timeout, or what is left of it. */
static void
set_idle_timeout(struct conn *c, uint64_t ms)
{
	struct timeval tv = timeval_ms(ms);

	if (c->srv->cfg->idle_timeout_ms == 0)
		return;
	c->short_timeout = ms < c->srv->cfg->idle_timeout_ms;
	bufferevent_set_timeouts(c->bev, &tv, NULL);
}

/* What is left of idle_timeout since the last input, at least 1 ms. */
static uint64_t
idle_timeout_left(const struct conn *c)
{
	uint64_t idle = coarse_ms() - c->read_ms;
	uint64_t limit = c->srv->cfg->idle_timeout_ms;

	return idle + 1 < limit ? limit - idle : 1;
}

static void
awake_touch(struct conn *c)
{
	if (!c->awake_listed)
		return;
	c->active_ms = coarse_ms();
	TAILQ_REMOVE(&awake_list, c, awake_entry);
	TAILQ_INSERT_TAIL(&awake_list, c, awake_entry);
}

static void
awake_unlist(struct conn *c)
{
	if (!c->awake_listed)
		return;
	TAILQ_REMOVE(&awake_list, c, awake_entry);
	c->awake_listed = 0;
}

static void
watch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	conn_enter(c);
	conn_wake(c);
	/* Readable: the new bufferevent reads it on the next turn. */
	if (what & EV_TIMEOUT)
		conn_event(c, BEV_EVENT_READING | BEV_EVENT_TIMEOUT);
	conn_leave(c);
}

/*
 * Make c's new plain socket bufferevent one written by flush_cb (see
 * flush_list) and put c on awake_list.  A new socket bufferevent starts
 * with EV_WRITE enabled.
 */
static void
direct_bev_init(struct conn *c)
{
	bufferevent_disable(c->bev, EV_WRITE);
	evbuffer_add_cb(bufferevent_get_output(c->bev), conn_outbuf_cb, c);
	c->active_ms = coarse_ms();
	c->awake_listed = 1;
	TAILQ_INSERT_TAIL(&awake_list, c, awake_entry);
}

/* A sleeping conn's watch: input, end of input or idle_timeout. */
static void
watch_arm(struct conn *c)
{
	struct timeval tv = timeval_ms(idle_timeout_left(c));

	event_del(c->deadline);
	event_assign(c->deadline, c->srv->base, c->fd, EV_READ, watch_cb, c);
	event_add(c->deadline, c->srv->cfg->idle_timeout_ms ? &tv : NULL);
}

/* Free c's bufferevent and watch its socket with the deadline event. */
static void
conn_sleep(struct conn *c)
{
	evutil_socket_t fd = bufferevent_getfd(c->bev);

	awake_unlist(c);
	/* Detach the fd first, so that freeing does not close it. */
	bufferevent_setfd(c->bev, -1);
	bufferevent_free(c->bev);
	c->bev = NULL;
	c->fd = fd;
	c->asleep = 1;
	nasleep++;
	watch_arm(c);
}

static int
conn_can_sleep(struct conn *c)
{
	return c->direct && c->state == CONN_ACTIVE && c->pause == 0 &&
	    !c->eof && !c->dirty && !c->watching && !c->reading_now &&
	    c->busy == 0 &&
	    evbuffer_get_length(bufferevent_get_input(c->bev)) == 0 &&
	    evbuffer_get_length(bufferevent_get_output(c->bev)) == 0;
}

/*
 * A fresh bufferevent for a sleeping conn.  Out of memory here aborts:
 * the callers are in the middle of writing to the conn and have no way
 * to go on without it.
 */
static void
conn_wake(struct conn *c)
{
	struct bufferevent *bev;

	if (!c->asleep)
		return;
	if ((bev = bufferevent_socket_new(
		 c->srv->base, c->fd, BEV_OPT_CLOSE_ON_FREE)) == NULL) {
		log_err("out of memory waking a connection");
		abort();
	}
	event_del(c->deadline);
	event_assign(c->deadline, c->srv->base, -1, 0, deadline_cb, c);
	c->bev = bev;
	c->asleep = 0;
	nasleep--;
	c->fd = -1;
	bufferevent_setcb(bev, conn_readcb, conn_writecb, conn_eventcb, c);
	direct_bev_init(c);
	set_idle_timeout(c, idle_timeout_left(c));
	update_reading(c);
}

static void
sleep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;
	uint64_t now = coarse_ms(), after = s->cfg->idle_release_ms;
	struct timeval tv = timeval_ms(after > 200 ? after / 2 : 100);
	struct conn *c, *next;
	int n = 0;

	(void)fd;
	(void)what;
	if (after == 0)
		return; /* off: conn_reloaded starts it again */
	for (c = TAILQ_FIRST(&awake_list); c != NULL; c = next) {
		next = TAILQ_NEXT(c, awake_entry);
		if (now - c->active_ms < after)
			break; /* the rest were active later */
		if (n++ == SLEEP_BATCH) {
			tv = timeval_ms(0); /* more: go on next turn */
			break;
		}
		if (conn_can_sleep(c))
			conn_sleep(c);
		else
			awake_touch(c); /* busy: look again later */
	}
	evtimer_add(sleep_ev, &tv);
}

void
conn_reloaded(struct server *s)
{
	if (sleep_ev == NULL)
		return; /* made with the first plain conn */
	evtimer_del(sleep_ev);
	sleep_cb(-1, 0, s);
}

static void
transport_ready(struct conn *c)
{
	conn_set_state(c, CONN_GREETING);
	c->read_ms = c->active_ms = coarse_ms();
	if (!c->asleep)
		set_idle_timeout(c, c->srv->cfg->idle_timeout_ms);
	if (c->svc->open != NULL && c->svc->open(c) == -1) {
		conn_close(c, "refused by service");
		return;
	}
	if (c->state == CONN_GREETING)
		conn_set_state(c, CONN_ACTIVE);
	if (c->asleep && c->state == CONN_ACTIVE)
		watch_arm(c); /* the service had nothing to say */
	update_reading(c);
}

static void
conn_outbuf_cb(
    struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct conn *c = arg;

	(void)buf;
	if (info->n_added == 0 || c->dirty || c->state == CONN_CLOSED)
		return;
	if (flush_ev == NULL &&
	    (flush_ev = event_new(c->srv->base, -1, 0, flush_cb, NULL)) ==
		NULL) {
		/* Cannot coalesce: let the bufferevent write it. */
		c->direct = 0;
		bufferevent_enable(c->bev, EV_WRITE);
		return;
	}
	c->dirty = 1;
	TAILQ_INSERT_TAIL(&flush_list, c, flush_entry);
	/* The list is empty whenever flush_ev is not active. */
	if (TAILQ_FIRST(&flush_list) == c)
		event_active(flush_ev, EV_WRITE, 1);
}

static void
flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct evbuffer_iovec iov[FLUSH_IOV];
	struct msghdr msg;
	struct conn *c;
	struct evbuffer *out;
	ssize_t n;
	int nv;

	(void)fd;
	(void)what;
	(void)arg;
	while ((c = TAILQ_FIRST(&flush_list)) != NULL) {
		TAILQ_REMOVE(&flush_list, c, flush_entry);
		c->dirty = 0;
		if (!c->direct || c->state == CONN_CLOSED ||
		    (bufferevent_get_enabled(c->bev) & EV_WRITE))
			continue;
		out = bufferevent_get_output(c->bev);
		if ((nv = evbuffer_peek(out, -1, NULL, iov, FLUSH_IOV)) <= 0)
			continue;
		awake_touch(c);
		/*
		 * send(2), not the writev(2) of evbuffer_write: a socket write
		 * through the VFS layer (fdget_pos, rw_verify_area) cost about
		 * 7 % more kernel time per chat delivery.  One chain, the
		 * usual case, needs no iovec at all.
		 */
		if (nv == 1) {
			n = send(bufferevent_getfd(c->bev), iov[0].iov_base,
			    iov[0].iov_len, MSG_NOSIGNAL);
		} else {
			memset(&msg, 0, sizeof msg);
			msg.msg_iov = (struct iovec *)iov;
			msg.msg_iovlen =
			    nv < FLUSH_IOV ? (size_t)nv : FLUSH_IOV;
			n = sendmsg(
			    bufferevent_getfd(c->bev), &msg, MSG_NOSIGNAL);
		}
		if (n > 0) {
			/* A socket bufferevent keeps the start of its output
			 * frozen except while it writes itself. */
			evbuffer_unfreeze(out, 1);
			evbuffer_drain(out, (size_t)n);
			evbuffer_freeze(out, 1);
		} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
			log_debug("conn %s: %s", conn_peer(c), strerror(errno));
			conn_abort(c, "write error");
			continue;
		}
		/* The socket is full: the bufferevent writes the rest. */
		if (evbuffer_get_length(out) > 0)
			bufferevent_enable(c->bev, EV_WRITE);
		else if (c->watching)
			conn_writecb(c->bev, c);
	}
}

/*
 * Wrap a transport in a conn and start it: the TLS handshake when ssl is
 * set, the service's greeting otherwise.  direct: a plain socket, written
 * by flush_cb; bev NULL starts it asleep on fd (a bufferevent comes with
 * its first input or output).  Takes bev or fd in every case.
 * Returns the new conn's id, or 0 if it could not be set up or is
 * already gone (a service that refused it).
 */
static uint64_t
conn_start(struct server *s, const struct conn_service *svc,
    const char *listener, struct bufferevent *bev, SSL *ssl, int direct,
    evutil_socket_t fd, const struct sockaddr *sa, socklen_t salen)
{
	struct conn *c;
	uint64_t id;

	if ((c = calloc(1, sizeof *c)) == NULL ||
	    (c->deadline = evtimer_new(s->base, deadline_cb, c)) == NULL) {
		log_err("out of memory accepting a connection");
		free(c);
		if (bev != NULL)
			bufferevent_free(bev);
		else
			evutil_closesocket(fd);
		return 0;
	}
	c->srv = s;
	c->svc = svc;
	c->bev = bev;
	c->fd = -1; /* only while asleep */
	c->ssl = ssl;
	c->state = CONN_HANDSHAKE;
	snprintf(c->listener, sizeof c->listener, "%s", listener);
	if (salen <= sizeof c->addr)
		memcpy(&c->addr, sa, salen);
	format_peer(c, sa);
	slot_alloc(c);
	id = c->id;
	TAILQ_INSERT_TAIL(&all_conns, c, entry);
	nconns++;
	state_counts[CONN_HANDSHAKE]++;
	ipcount_add(&c->addr.sa);
	s->stats.accepted++;
	log_debug("conn %s: accepted on %s", conn_peer(c), listener);

	if (direct && sleep_ev == NULL &&
	    (sleep_ev = evtimer_new(s->base, sleep_cb, s)) != NULL)
		sleep_cb(-1, 0, s);
	if (bev == NULL) {
		/* Asleep from the start: most clients send first, if at all. */
		c->direct = 1;
		c->asleep = 1;
		c->fd = fd;
		nasleep++;
		transport_ready(c); /* may free c */
		return conn_lookup(id) != NULL ? id : 0;
	}
	bufferevent_setcb(c->bev, conn_readcb, conn_writecb, conn_eventcb, c);
	if (ssl != NULL) {
		arm_deadline(c, s->cfg->handshake_timeout_ms);
		bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	} else if (direct) {
		c->direct = 1;
		direct_bev_init(c);
		transport_ready(c); /* may free c */
	} else {
		/* Any other transport writes itself. */
		bufferevent_enable(c->bev, EV_WRITE);
		transport_ready(c); /* may free c */
	}
	return conn_lookup(id) != NULL ? id : 0;
}

void
conn_accept(struct server *s, const struct conn_service *svc,
    const char *listener, int tls, int fd, const struct sockaddr *sa,
    socklen_t salen)
{
	const struct config *cfg = s->cfg;
	const char *why;
	struct bufferevent *bev;
	SSL *ssl = NULL;
	unsigned per_ip;

	if ((why = gate_check(s->gate, cfg, sa)) != NULL) {
		refuse(fd, tls, why); /* before any TLS work */
		return;
	}
	if (nconns >= cfg->max_connections) {
		s->stats.refused_full++;
		if (refusal_log_ok())
			log_notice(
			    "refusing %s connection: max_connections (%u) "
			    "reached",
			    listener, cfg->max_connections);
		refuse(fd, tls, "parleyd: server full, try again later\r\n");
		return;
	}
	per_ip = ipcount_get(sa);
	if (cfg->max_connections_per_ip > 0 &&
	    per_ip >= cfg->max_connections_per_ip) {
		s->stats.refused_per_ip++;
		if (refusal_log_ok())
			log_info(
			    "refusing %s connection: max_connections_per_ip "
			    "(%u) reached",
			    listener, cfg->max_connections_per_ip);
		refuse(fd, tls,
		    "parleyd: too many connections from your "
		    "address\r\n");
		return;
	}
	if (tls) {
		if (s->tls_ctx == NULL ||
		    (ssl = tls_ssl_new(s->tls_ctx)) == NULL) {
			close(fd);
			return;
		}
		if (tls > 1) /* LISTEN_TLS_MODE: asks for a client cert */
			tls_ask_client_cert(
			    ssl, tls - 1 == CLIENT_CERTS_REQUIRED);
		/* On failure this has already freed the SSL (and not fd). */
		bev = bufferevent_openssl_socket_new(s->base, fd, ssl,
		    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
		if (bev != NULL)
			bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	} else if (cfg->idle_release_ms > 0) {
		set_tcp_options(fd);
		conn_start(s, svc, listener, NULL, NULL, 1, fd, sa, salen);
		return;
	} else {
		bev =
		    bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
	}
	if (bev == NULL) {
		log_err("cannot set up a %s connection", listener);
		close(fd);
		return;
	}
	set_tcp_options(fd);
	conn_start(s, svc, listener, bev, ssl, !tls, -1, sa, salen);
}

uint64_t
conn_attach(struct server *s, const struct conn_service *svc,
    const char *listener, struct bufferevent *bev, const struct sockaddr *sa,
    socklen_t salen)
{
	return conn_start(s, svc, listener, bev, NULL, 0, -1, sa, salen);
}

static void
conn_readcb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	if (c->state != CONN_ACTIVE || c->svc->read == NULL) {
		/* Closing: whatever still arrives is dropped. */
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	conn_enter(c);
	c->read_ms = coarse_ms();
	awake_touch(c);
	if (c->short_timeout)
		set_idle_timeout(c, c->srv->cfg->idle_timeout_ms);
	c->srv->stats.bytes_in += evbuffer_get_length(in);
	c->reading_now = 1;
	c->svc->read(c, in);
	c->reading_now = 0;
	/* After end of input, close once the service took all it could. */
	if (c->eof && c->state == CONN_ACTIVE && c->pause == 0)
		conn_close(c, "client closed");
	conn_leave(c);
}

static void
finish_close(struct conn *c)
{
	if (c->ssl != NULL) {
		/* close_notify, best effort: the socket is non-blocking. */
		if (SSL_shutdown(c->ssl) < 0)
			ERR_clear_error();
	}
	conn_free(c);
}

static void
conn_writecb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	conn_enter(c);
	if (c->state == CONN_CLOSING) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			finish_close(c);
	} else if (c->watching && c->svc->drained != NULL) {
		c->watching = 0;
		bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
		c->svc->drained(c);
	}
	/* Drained: back to flush_cb (see flush_list). */
	if (c->direct && c->state == CONN_ACTIVE &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		bufferevent_disable(bev, EV_WRITE);
	conn_leave(c);
}

static void
conn_event(struct conn *c, short what)
{
	unsigned long e;
	char buf[256];

	if (what & BEV_EVENT_CONNECTED) {
		/* TLS handshake complete. */
		evtimer_del(c->deadline);
		c->srv->stats.tls_handshakes++;
		log_debug("conn %s: %s %s", conn_peer(c),
		    SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl));
		transport_ready(c);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		log_info("conn %s: idle for too long, closing", conn_peer(c));
		if (c->svc->shutdown != NULL && c->state < CONN_CLOSING)
			conn_printf(c, "parleyd: idle timeout, goodbye\r\n");
		conn_close(c, "idle timeout");
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		if (c->state == CONN_HANDSHAKE)
			c->srv->stats.tls_failures++;
		if (c->ssl != NULL &&
		    (e = bufferevent_get_openssl_error(c->bev)) != 0) {
			ERR_error_string_n(e, buf, sizeof buf);
			log_info("conn %s: TLS error: %s", conn_peer(c), buf);
			while (bufferevent_get_openssl_error(c->bev) != 0)
				;
		} else if (EVUTIL_SOCKET_ERROR() != 0) {
			log_debug("conn %s: %s", conn_peer(c),
			    evutil_socket_error_to_string(
				EVUTIL_SOCKET_ERROR()));
		}
		conn_abort(c, "error");
		return;
	}
	if (what & BEV_EVENT_EOF) {
		log_debug("conn %s: end of input", conn_peer(c));
		if (c->state == CONN_HANDSHAKE) {
			c->srv->stats.tls_failures++;
			conn_abort(c, "eof in handshake");
			return;
		}
		/*
		 * The peer finished sending (it may still read).  Let the
		 * service take what is buffered -- a paused one gets it on
		 * resume -- then flush what we owe and close.
		 */
		c->eof = 1;
		update_reading(c);
		if (c->state == CONN_ACTIVE && c->pause == 0)
			conn_readcb(c->bev, c);
		else if (c->state == CONN_GREETING)
			conn_close(c, "client closed");
	}
}

static void
conn_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	(void)bev;
	conn_enter(c);
	conn_event(c, what);
	conn_leave(c);
}

void
conn_close(struct conn *c, const char *reason)
{
	if (c->state >= CONN_CLOSING)
		return;
	log_debug("conn %s: closing (%s)", conn_peer(c), reason);
	conn_set_state(c, CONN_CLOSING);
	if (c->asleep) {
		finish_close(c); /* nothing to flush */
		return;
	}
	update_reading(c);
	bufferevent_set_timeouts(c->bev, NULL, NULL);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
		finish_close(c);
		return;
	}
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	bufferevent_enable(c->bev, EV_WRITE);
	arm_deadline(c,
	    CLOSE_LINGER_MS < c->srv->cfg->shutdown_timeout_ms ||
		    c->srv->cfg->shutdown_timeout_ms == 0
		? CLOSE_LINGER_MS
		: c->srv->cfg->shutdown_timeout_ms);
}

void
conn_shutdown(struct conn *c)
{
	if (c->state >= CONN_CLOSING)
		return;
	if (c->state != CONN_HANDSHAKE && c->svc->shutdown != NULL)
		c->svc->shutdown(c);
	conn_close(c, "server shutting down");
}

void
conn_abort(struct conn *c, const char *reason)
{
	if (c->state == CONN_CLOSED)
		return;
	log_debug("conn %s: aborting (%s)", conn_peer(c), reason);
	conn_free(c);
}

static void
conn_free(struct conn *c)
{
	struct server *s = c->srv;

	conn_set_state(c, CONN_CLOSED);
	if (c->svc->close != NULL)
		c->svc->close(c);
	if (c->dirty) {
		TAILQ_REMOVE(&flush_list, c, flush_entry);
		c->dirty = 0;
	}
	c->data = NULL;
	TAILQ_REMOVE(&all_conns, c, entry);
	nconns--;
	state_counts[CONN_CLOSED]--;
	ipcount_del(&c->addr.sa);
	slot_release(c);
	awake_unlist(c);
	event_free(c->deadline);
	c->deadline = NULL;
	if (c->asleep) {
		evutil_closesocket(c->fd);
		c->fd = -1;
		c->asleep = 0;
		nasleep--;
	} else {
		/* With CLOSE_ON_FREE this closes the fd and frees the SSL. */
		bufferevent_free(c->bev);
	}
	c->bev = NULL;
	if (c->busy == 0)
		free(c);
	server_conn_gone(s);
}

void
conn_foreach(void (*fn)(struct conn *, void *), void *arg)
{
	struct conn *c;
	uint64_t *ids;
	size_t i, n = 0;

	/*
	 * Snapshot ids first: fn may close any number of conns (its own or,
	 * through a broadcast, others), which a list walk would not survive.
	 */
	if (nconns == 0)
		return;
	if ((ids = calloc(nconns, sizeof *ids)) == NULL)
		abort();
	TAILQ_FOREACH(c, &all_conns, entry)
	ids[n++] = c->id;
	for (i = 0; i < n; i++)
		if ((c = conn_lookup(ids[i])) != NULL)
			fn(c, arg);
	free(ids);
}

void
conn_abort_all(const char *reason)
{
	struct conn *c;

	while ((c = TAILQ_FIRST(&all_conns)) != NULL)
		conn_abort(c, reason);
	if (flush_ev != NULL) {
		event_free(flush_ev);
		flush_ev = NULL;
	}
	if (sleep_ev != NULL) {
		event_free(sleep_ev);
		sleep_ev = NULL;
	}
}
