/*
 * parley-bench: a load generator for parleyd and its peers.
 *
 * One thread, one level-triggered epoll set, non-blocking sockets and
 * (optionally) OpenSSL.  Everything a connection needs lives in struct
 * bconn; reads go through one 64 KiB scratch buffer and writes are queued
 * per connection and flushed once per wake-up, so one syscall carries as
 * many messages as are ready.
 *
 *   parley-bench echo      [-c N] [-s SIZE] [-i INFLIGHT] [--tls]
 *   parley-bench chat      [-c N] [-k SENDERS] [-r RATE | -W WINDOW]
 *                          [--proto parley|raw|irc|line]
 *   parley-bench hold      [-c N] [--tls]
 *   parley-bench handshake [-c N] [--resume]
 *
 * Common: -H HOST -p PORT -d SECONDS (measured) -w SECONDS (warm-up)
 * --pid PID (server: CPU from /proc/PID/stat over the measured window,
 * RSS from /proc/PID/status for hold).  The last output line is
 * "RESULT key=value ...", for scripts.
 */
#define _GNU_SOURCE
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define RBUF_SIZE 65536
#define LINE_MAX_LEN 8192
#define HIST_BUCKETS 2048

enum mode { M_ECHO, M_CHAT, M_HOLD, M_HANDSHAKE };
enum proto { P_PARLEY, P_RAW, P_IRC, P_LINE };
enum bstate {
	B_CONNECTING, /* TCP connect in progress */
	B_TLS, /* TLS handshake in progress */
	B_LOGIN, /* protocol login (chat), waiting to be ready */
	B_READY, /* usable */
	B_CLOSED,
};

struct hist {
	uint64_t n[HIST_BUCKETS];
	uint64_t count;
	int64_t max;
};

struct bconn {
	int fd;
	int idx;
	enum bstate state;
	SSL *ssl;
	int want_out; /* EPOLLOUT armed */
	/* pending output */
	char *wbuf;
	size_t wlen, woff, wcap;
	/* line assembly (chat) */
	char *lbuf;
	size_t llen;
	int overlong;
	/* echo: send times of messages in flight, oldest first */
	int64_t *ring;
	unsigned rhead, rcount;
	size_t partial; /* bytes of the current echo answer received */
	/* chat */
	int sender; /* sender number, or -1 */
	/* handshake */
	int hs_sent;
};

struct sender {
	int conn;
	uint64_t next_seq; /* next to send */
	uint64_t oldest; /* oldest not yet delivered everywhere */
	uint32_t *left; /* [window]: deliveries still due */
	int64_t *sent_at; /* [window] */
	int64_t next_due; /* paced: next send time */
};

/* Options. */
static enum mode mode;
static enum proto proto = P_PARLEY;
static const char *host = "127.0.0.1";
static int port = 7007;
static int nconns = 50;
static int msg_size = 64;
static int inflight = 16;
static int use_tls;
static int resume;
static double duration = 5, warmup = 1;
static int nsenders = 10;
static double rate; /* per sender, msgs/s; 0 = closed loop */
static int window = 4; /* closed loop: msgs in flight per sender */
static pid_t server_pid;
static const char *room = "#bench";
static int quiet;
static int max_connecting = 256; /* connects (and handshakes) at once */

/* State. */
static int ep;
static struct bconn *conns;
static SSL_CTX *ctx;
static SSL_SESSION *saved_session;
static char *rbuf;
static int measuring, stopping, started;
static int nready, nfailed, nconnecting, next_to_connect;
static struct hist lat;
static uint64_t msgs, bytes_in, errors;
static int64_t t_zero;

/* chat */
static struct sender *senders;
static uint64_t *last_seq; /* [conn][sender] last seq seen + 1 */
static uint64_t *seen_bits; /* [conn][sender] window of 64 behind last */
static uint64_t deliveries; /* in the window */
static uint64_t uniq_total; /* whole run */
static uint64_t dups, reorders, sent_total, expected_total, stalls;
static int nreceivers;

/* handshake */
static uint64_t hs_done, hs_resumed;

static int64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
die(const char *msg)
{
	fprintf(stderr, "parley-bench: %s\n", msg);
	exit(1);
}

/* Histogram: 32 linear sub-buckets per power of two (about 3 %). */
static unsigned
hist_idx(uint64_t v)
{
	int m;

	if (v < 32)
		return (unsigned)v;
	m = 63 - __builtin_clzll(v);
	return (unsigned)((m - 4) * 32 + ((v >> (m - 5)) & 31));
}

static double
hist_val(unsigned idx)
{
	int m;

	if (idx < 32)
		return idx;
	m = (int)idx / 32 + 4;
	return (32.0 + idx % 32 + 0.5) * (double)(1ULL << (m - 5));
}

static void
hist_add(struct hist *h, int64_t v)
{
	if (v < 0)
		v = 0;
	if (v > h->max)
		h->max = v;
	h->n[hist_idx((uint64_t)v)]++;
	h->count++;
}

static double
hist_pct(const struct hist *h, double p)
{
	uint64_t want, acc = 0;
	unsigned i;

	if (h->count == 0)
		return 0;
	want = (uint64_t)(p * (double)h->count);
	if (want < 1)
		want = 1;
	for (i = 0; i < HIST_BUCKETS; i++) {
		acc += h->n[i];
		if (acc >= want)
			return hist_val(i);
	}
	return 0;
}

/* /proc readers: server CPU seconds and RSS KiB. */
/*
 * The server's /proc files are opened once, before any connection, and
 * re-read with pread: at 20,000 connections there may be no fd left.
 */
static int stat_fd = -1, status_fd = -1;

static void
proc_open(pid_t pid)
{
	char path[64];

	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	stat_fd = open(path, O_RDONLY | O_CLOEXEC);
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	status_fd = open(path, O_RDONLY | O_CLOEXEC);
}

/* Whole /proc file into buf; -1 when the process is gone. */
static ssize_t
proc_read(int fd, char *buf, size_t size)
{
	ssize_t n;

	if (fd < 0 || (n = pread(fd, buf, size - 1, 0)) <= 0)
		return -1;
	buf[n] = '\0';
	return n;
}

static double
proc_cpu(pid_t pid)
{
	char buf[2048], *p;
	unsigned long ut, st;

	if (pid <= 0 || proc_read(stat_fd, buf, sizeof buf) < 0)
		return 0;
	/* Field 2 is "(comm)", which may hold spaces: skip past its ')'. */
	if ((p = strrchr(buf, ')')) == NULL)
		return 0;
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
		&ut, &st) != 2)
		return 0;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long
proc_rss_kib(pid_t pid)
{
	char buf[4096], *p;
	long kib = -1;

	if (pid <= 0 || proc_read(status_fd, buf, sizeof buf) < 0)
		return -1;
	if ((p = strstr(buf, "\nVmRSS:")) != NULL)
		sscanf(p + 1, "VmRSS: %ld", &kib);
	return kib;
}

/* The server is gone (or a zombie): stop waiting for it. */
static int
server_dead(void)
{
	char buf[2048], *p;

	if (server_pid <= 0)
		return 0;
	if (proc_read(stat_fd, buf, sizeof buf) < 0)
		return 1;
	p = strrchr(buf, ')');
	return p == NULL || p[1] == '\0' || p[2] == 'Z' || p[2] == 'X';
}

static double
self_cpu(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	    (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* Connection plumbing. */
static void
arm(struct bconn *c, int out)
{
	struct epoll_event ev = {0};

	if (c->fd < 0 || c->want_out == out)
		return;
	c->want_out = out;
	ev.events = EPOLLIN | (out ? EPOLLOUT : 0);
	ev.data.u32 = (uint32_t)c->idx;
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void
conn_fail(struct bconn *c, const char *why)
{
	if (c->state == B_CLOSED)
		return;
	if (!stopping) {
		errors++;
		if (!quiet && errors <= 5)
			fprintf(
			    stderr, "parley-bench: conn %d: %s\n", c->idx, why);
	}
	if (c->state == B_CONNECTING || c->state == B_TLS ||
	    c->state == B_LOGIN)
		nconnecting--;
	if (c->state == B_READY)
		nready--;
	else
		nfailed++;
	if (c->ssl != NULL) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->state = B_CLOSED;
}

static void
queue_out(struct bconn *c, const char *p, size_t n)
{
	if (c->woff > 0 && c->woff == c->wlen)
		c->woff = c->wlen = 0;
	if (c->wlen + n > c->wcap) {
		if (c->woff > 0) {
			memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
			c->wlen -= c->woff;
			c->woff = 0;
		}
		if (c->wlen + n > c->wcap) {
			size_t cap = c->wcap ? c->wcap : 4096;

			while (cap < c->wlen + n)
				cap *= 2;
			if ((c->wbuf = realloc(c->wbuf, cap)) == NULL)
				die("out of memory");
			c->wcap = cap;
		}
	}
	memcpy(c->wbuf + c->wlen, p, n);
	c->wlen += n;
}

static void
flush_out(struct bconn *c)
{
	while (c->state != B_CLOSED && c->woff < c->wlen) {
		size_t n = c->wlen - c->woff;
		ssize_t w;

		if (c->ssl != NULL) {
			int r = SSL_write(c->ssl, c->wbuf + c->woff, (int)n);

			if (r <= 0) {
				int e = SSL_get_error(c->ssl, r);

				if (e == SSL_ERROR_WANT_WRITE ||
				    e == SSL_ERROR_WANT_READ)
					break;
				conn_fail(c, "SSL_write failed");
				return;
			}
			w = r;
		} else {
			w = send(c->fd, c->wbuf + c->woff, n, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno == EAGAIN || errno == EINTR)
					break;
				conn_fail(c, strerror(errno));
				return;
			}
		}
		c->woff += (size_t)w;
	}
	if (c->state != B_CLOSED)
		arm(c, c->woff < c->wlen);
}

static void became_ready(struct bconn *c);
static void do_read(struct bconn *c);
static void on_data(struct bconn *c, const char *p, size_t n, int64_t now);

static void
set_ready(struct bconn *c)
{
	if (c->state == B_LOGIN)
		nconnecting--;
	c->state = B_READY;
	nready++;
	became_ready(c);
}

static void
transport_up(struct bconn *c)
{
	if (mode == M_CHAT) {
		c->state = B_LOGIN;
		if (proto == P_IRC) {
			char buf[128];
			int n = snprintf(buf, sizeof buf,
			    "NICK b%d\r\nUSER b%d 0 * :bench\r\n", c->idx,
			    c->idx);

			queue_out(c, buf, (size_t)n);
			flush_out(c);
		} else if (proto == P_LINE) {
			set_ready(c); /* no login: lines as they are */
		}
		return;
	}
	set_ready(c);
}

static void
start_connect(struct bconn *c)
{
	struct sockaddr_in sa = {0};
	struct epoll_event ev = {0};
	int one = 1;

	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		die("bad host (IPv4 address expected)");
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (c->fd < 0) {
		c->state = B_CONNECTING;
		nconnecting++;
		conn_fail(c, strerror(errno));
		return;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (mode == M_HANDSHAKE) {
		/* RST on close: no TIME_WAIT pile-up at thousands/s. */
		struct linger lg = {1, 0};

		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	}
	c->state = B_CONNECTING;
	c->want_out = 1;
	c->woff = c->wlen = 0;
	c->llen = 0;
	c->partial = 0;
	c->rcount = c->rhead = 0;
	c->hs_sent = 0;
	nconnecting++;
	ev.events = EPOLLIN | EPOLLOUT;
	ev.data.u32 = (uint32_t)c->idx;
	epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) == -1 &&
	    errno != EINPROGRESS)
		conn_fail(c, strerror(errno));
}

static void
tls_step(struct bconn *c)
{
	int r = SSL_do_handshake(c->ssl), e;

	if (r == 1) {
		if (measuring && SSL_session_reused(c->ssl))
			hs_resumed++;
		if (mode != M_CHAT)
			nconnecting--;
		transport_up(c);
		/* the server may have sent more than the handshake */
		if (c->state == B_READY || c->state == B_LOGIN)
			do_read(c);
		return;
	}
	e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ)
		arm(c, 0);
	else if (e == SSL_ERROR_WANT_WRITE)
		arm(c, 1);
	else
		conn_fail(c, "TLS handshake failed");
}

static void
connected(struct bconn *c)
{
	int err = 0;
	socklen_t len = sizeof err;

	getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
	if (err != 0) {
		conn_fail(c, strerror(err));
		return;
	}
	if (!use_tls) {
		if (mode != M_CHAT)
			nconnecting--;
		arm(c, 0);
		transport_up(c);
		return;
	}
	c->state = B_TLS;
	if ((c->ssl = SSL_new(ctx)) == NULL)
		die("SSL_new");
	SSL_set_fd(c->ssl, c->fd);
	SSL_set_connect_state(c->ssl);
	if (resume && saved_session != NULL)
		SSL_set_session(c->ssl, saved_session);
	tls_step(c);
}

static void
do_read(struct bconn *c)
{
	int64_t now = 0;

	for (;;) {
		ssize_t n;

		if (c->ssl != NULL) {
			int r = SSL_read(c->ssl, rbuf, RBUF_SIZE), e;

			if (r <= 0) {
				e = SSL_get_error(c->ssl, r);
				if (e == SSL_ERROR_WANT_READ ||
				    e == SSL_ERROR_WANT_WRITE)
					break;
				conn_fail(c,
				    e == SSL_ERROR_ZERO_RETURN
					? "server closed"
					: "SSL_read failed");
				return;
			}
			n = r;
		} else {
			n = recv(c->fd, rbuf, RBUF_SIZE, 0);
			if (n < 0) {
				if (errno == EAGAIN || errno == EINTR)
					break;
				conn_fail(c, strerror(errno));
				return;
			}
			if (n == 0) {
				conn_fail(c, "server closed");
				return;
			}
		}
		if (now == 0)
			now = now_ns();
		bytes_in += (uint64_t)n;
		on_data(c, rbuf, (size_t)n, now);
		if (c->state == B_CLOSED || c->state == B_CONNECTING)
			return;
		if ((size_t)n < RBUF_SIZE && c->ssl == NULL)
			break;
	}
	flush_out(c);
}

static void
handle(struct bconn *c, uint32_t events)
{
	if (c->state == B_CLOSED)
		return;
	if (c->state == B_CONNECTING) {
		if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
			connected(c);
		return;
	}
	if (c->state == B_TLS) {
		tls_step(c);
		return;
	}
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		do_read(c);
	if (c->state != B_CLOSED && (events & EPOLLOUT))
		flush_out(c);
}

/* Echo mode. */
static char *echo_msg;

static void
echo_send(struct bconn *c, int64_t now)
{
	c->ring[(c->rhead + c->rcount) % (unsigned)inflight] = now;
	c->rcount++;
	queue_out(c, echo_msg, (size_t)msg_size);
}

static void
echo_data(struct bconn *c, const char *p, size_t n, int64_t now)
{
	size_t need;

	while (n > 0) {
		need = (size_t)msg_size - c->partial;
		if (n < need) {
			c->partial += n;
			return;
		}
		p += need;
		n -= need;
		c->partial = 0;
		if (c->rcount == 0) {
			conn_fail(c, "echo: more bytes than were sent");
			return;
		}
		if (measuring) {
			hist_add(&lat, now - c->ring[c->rhead]);
			msgs++;
		}
		c->rhead = (c->rhead + 1) % (unsigned)inflight;
		c->rcount--;
		if (!stopping)
			echo_send(c, now);
	}
}

/* Chat mode. */
static void
chat_send(struct sender *s, int64_t now)
{
	struct bconn *c = &conns[s->conn];
	char buf[160];
	int n;

	if (c->state != B_READY)
		return;
	if (proto == P_IRC)
		n = snprintf(buf, sizeof buf, "PRIVMSG %s :~b %d %llu %lld\r\n",
		    room, (int)(s - senders), (unsigned long long)s->next_seq,
		    (long long)(now - t_zero));
	else
		n = snprintf(buf, sizeof buf, "~b %d %llu %lld\n",
		    (int)(s - senders), (unsigned long long)s->next_seq,
		    (long long)(now - t_zero));
	if (rate <= 0) {
		s->left[s->next_seq % (unsigned)window] = (uint32_t)nreceivers;
		s->sent_at[s->next_seq % (unsigned)window] = now;
	}
	s->next_seq++;
	sent_total++;
	expected_total += (uint64_t)nreceivers;
	queue_out(c, buf, (size_t)n);
}

/* Closed loop: top every sender's window up. */
static void
chat_refill(struct sender *s, int64_t now)
{
	int queued = 0;

	if (conns[s->conn].state != B_READY)
		return;
	while (!stopping && s->next_seq - s->oldest < (uint64_t)window) {
		chat_send(s, now);
		queued = 1;
	}
	if (queued)
		flush_out(&conns[s->conn]);
}

static void
chat_delivery(struct bconn *c, int snd, uint64_t seq, int64_t sent, int64_t now)
{
	size_t k = (size_t)c->idx * (size_t)nsenders + (size_t)snd;
	struct sender *s;

	/*
	 * last_seq is one past the highest seq seen; seen_bits remembers the
	 * 64 seqs below it, so a late message counts as reordered and a
	 * repeated one as a duplicate.
	 */
	if (seq >= last_seq[k]) {
		if (seq - last_seq[k] + 1 >= 64)
			seen_bits[k] = 0;
		else
			seen_bits[k] <<= (seq - last_seq[k] + 1);
		seen_bits[k] |= 1;
		last_seq[k] = seq + 1;
	} else {
		uint64_t back = last_seq[k] - 1 - seq;

		if (back >= 64 || (seen_bits[k] >> back) & 1) {
			dups++;
			return;
		}
		seen_bits[k] |= 1ULL << back;
		reorders++;
	}
	uniq_total++;
	if (measuring) {
		deliveries++;
		hist_add(&lat, now - (sent + t_zero));
	}
	s = &senders[snd];
	if (rate <= 0 && seq >= s->oldest && seq < s->next_seq) {
		uint32_t *l = &s->left[seq % (unsigned)window];

		if (*l > 0)
			(*l)--;
		while (s->oldest < s->next_seq &&
		    s->left[s->oldest % (unsigned)window] == 0)
			s->oldest++;
		chat_refill(s, now);
	}
}

static void
chat_line(struct bconn *c, char *line, int64_t now)
{
	char *p, *end;
	long snd;
	unsigned long long seq;
	long long sent;

	if (c->state == B_LOGIN) {
		if (proto == P_PARLEY &&
		    strncmp(line, "*** you are in ", 15) == 0) {
			set_ready(c);
		} else if (proto == P_RAW &&
		    strncmp(line, "<announce> already connected", 28) == 0) {
			set_ready(c);
		} else if (proto == P_IRC) {
			char *sp = strchr(line, ' ');

			if (sp != NULL && strncmp(sp, " 001 ", 5) == 0) {
				char buf[64];
				int n = snprintf(
				    buf, sizeof buf, "JOIN %s\r\n", room);

				queue_out(c, buf, (size_t)n);
			} else if (sp != NULL && strncmp(sp, " 366 ", 5) == 0) {
				set_ready(c);
			}
		}
	}
	if (proto == P_IRC && strncmp(line, "PING ", 5) == 0) {
		line[1] = 'O';
		queue_out(c, line, strlen(line));
		queue_out(c, "\r\n", 2);
		return;
	}
	if ((p = strstr(line, "~b ")) == NULL)
		return;
	/* parley history replays ("#room [time] ...") are not live lines */
	if (proto == P_PARLEY && (end = strchr(line, ' ')) != NULL &&
	    end[1] == '[')
		return;
	snd = strtol(p + 3, &end, 10);
	if (end == p + 3 || *end != ' ')
		return;
	seq = strtoull(end + 1, &end, 10);
	if (*end != ' ')
		return;
	sent = strtoll(end + 1, &end, 10);
	if (snd < 0 || snd >= nsenders || c->sender == snd)
		return;
	chat_delivery(c, (int)snd, seq, sent, now);
}

static void
chat_data(struct bconn *c, const char *p, size_t n, int64_t now)
{
	while (n > 0 && c->state != B_CLOSED) {
		const char *nl = memchr(p, '\n', n);
		size_t take = nl ? (size_t)(nl - p) : n;

		if (c->overlong || c->llen + take >= LINE_MAX_LEN) {
			c->overlong = 1;
		} else {
			memcpy(c->lbuf + c->llen, p, take);
			c->llen += take;
		}
		if (nl == NULL)
			return;
		if (!c->overlong) {
			if (c->llen > 0 && c->lbuf[c->llen - 1] == '\r')
				c->llen--;
			c->lbuf[c->llen] = '\0';
			chat_line(c, c->lbuf, now);
		}
		c->llen = 0;
		c->overlong = 0;
		p = nl + 1;
		n -= take + 1;
	}
}

/* Handshake mode: connect, handshake, one echoed line, reset, again. */
static void
hs_data(struct bconn *c, const char *p, size_t n, int64_t now)
{
	(void)now;
	if (memchr(p, '\n', n) == NULL)
		return;
	if (resume) {
		SSL_SESSION *s = SSL_get1_session(c->ssl);

		if (s != NULL) {
			if (saved_session != NULL)
				SSL_SESSION_free(saved_session);
			saved_session = s;
		}
	}
	if (measuring)
		hs_done++;
	/* A session freed without a shutdown is marked not resumable. */
	SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_free(c->ssl);
	c->ssl = NULL;
	close(c->fd);
	c->fd = -1;
	nready--;
	c->state = B_CLOSED;
	if (!stopping) {
		start_connect(c);
		if (c->state == B_CLOSED)
			return;
	}
}

static void
on_data(struct bconn *c, const char *p, size_t n, int64_t now)
{
	switch (mode) {
	case M_ECHO:
		echo_data(c, p, n, now);
		break;
	case M_CHAT:
		chat_data(c, p, n, now);
		break;
	case M_HANDSHAKE:
		hs_data(c, p, n, now);
		break;
	case M_HOLD:
		break;
	}
}

static void
became_ready(struct bconn *c)
{
	int64_t now = now_ns();
	int i;

	if (mode == M_ECHO && started)
		for (i = 0; i < inflight; i++)
			echo_send(c, now);
	if (mode == M_HANDSHAKE) {
		queue_out(c, "x\n", 2);
		c->hs_sent = 1;
	}
	flush_out(c);
}

/* Keep at most MAX_CONNECTING connects in progress. */
static void
connect_more(void)
{
	while (next_to_connect < nconns && nconnecting < max_connecting)
		start_connect(&conns[next_to_connect++]);
}

static void
loop_once(int timeout_ms)
{
	struct epoll_event evs[512];
	int n, i;

	n = epoll_wait(ep, evs, 512, timeout_ms);
	for (i = 0; i < n; i++)
		handle(&conns[evs[i].data.u32], evs[i].events);
	if (mode != M_HANDSHAKE)
		connect_more();
}

static void
run_until(int64_t deadline, int (*done)(void))
{
	int64_t now;

	while ((now = now_ns()) < deadline) {
		if (done != NULL && done())
			return;
		loop_once((int)((deadline - now) / 1000000) + 1 > 50
			? 50
			: (int)((deadline - now) / 1000000) + 1);
	}
}

static int
all_up(void)
{
	static int64_t checked;
	int64_t now = now_ns();

	if (now - checked > 1000000000LL) {
		checked = now;
		if (server_dead()) {
			fprintf(stderr, "parley-bench: server %d is gone\n",
			    (int)server_pid);
			return 1;
		}
	}
	return next_to_connect == nconns && nready + nfailed == nconns;
}

/* Paced chat: send whatever is due, return ms to the next due send. */
static int
pace(int64_t now)
{
	int64_t next = INT64_MAX, gap = (int64_t)(1e9 / rate);
	int i;

	for (i = 0; i < nsenders; i++) {
		struct sender *s = &senders[i];

		if (s->next_due <= now) {
			chat_send(s, now);
			flush_out(&conns[s->conn]);
			s->next_due += gap;
			if (s->next_due < now)
				s->next_due = now + gap;
		}
		if (s->next_due < next)
			next = s->next_due;
	}
	return (int)((next - now) / 1000000);
}

/* Closed-loop chat: give up on a message 2 s old (lost) so a sender
 * cannot stall for ever. */
static void
unstall(int64_t now)
{
	int i;

	for (i = 0; i < nsenders; i++) {
		struct sender *s = &senders[i];

		while (s->oldest < s->next_seq &&
		    now - s->sent_at[s->oldest % (unsigned)window] >
			2000000000LL) {
			s->oldest++;
			stalls++;
		}
		chat_refill(s, now);
	}
}

static void
run_phase(int64_t until)
{
	int64_t now;

	while ((now = now_ns()) < until) {
		int t = (int)((until - now) / 1000000) + 1;

		if (mode == M_CHAT && started && rate > 0) {
			int p = pace(now);

			if (p < t)
				t = p < 0 ? 0 : p;
		} else if (mode == M_CHAT && started) {
			unstall(now);
		}
		if (t > 50)
			t = 50;
		loop_once(t);
	}
}

static void
raise_nofile(rlim_t want)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	/* Root may raise the hard limit too. */
	if (rl.rlim_max < want) {
		struct rlimit up = {want, want};

		if (setrlimit(RLIMIT_NOFILE, &up) == 0)
			return;
	}
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: parley-bench echo|chat|hold|handshake [-H host] [-p port]\n"
	    "  [-c conns] [-d seconds] [-w warmup] [--pid server-pid] [--tls]\n"
	    "  echo: [-s size] [-i inflight]\n"
	    "  chat: [-k senders] [-r rate-per-sender | -W window]\n"
	    "        [--proto parley|raw|irc|line] [--room #name]\n"
	    "  --connect-batch N: connects and logins at once (256)\n"
	    "  handshake: [--resume]    (TLS echo server)\n"
	    "  -q: fewer messages\n");
	exit(2);
}

static void
report(double wall, double srv_cpu, double cli_cpu)
{
	double per = srv_cpu > 0 ? 1.0 / srv_cpu : 0;

	switch (mode) {
	case M_ECHO:
		printf("echo: %d conns x %d in flight, %d-byte lines%s\n",
		    nconns, inflight, msg_size, use_tls ? ", TLS" : "");
		printf("  %.0f msgs/s, %.1f MB/s, rtt p50 %.1f us, p99 %.1f "
		       "us, p99.9 %.1f us\n",
		    (double)msgs / wall, (double)msgs * msg_size / wall / 1e6,
		    hist_pct(&lat, 0.50) / 1e3, hist_pct(&lat, 0.99) / 1e3,
		    hist_pct(&lat, 0.999) / 1e3);
		printf("  server cpu %.2f s (%.0f %%): %.0f msgs per "
		       "server-cpu-second; client cpu %.0f %%\n",
		    srv_cpu, 100 * srv_cpu / wall, (double)msgs * per,
		    100 * cli_cpu / wall);
		printf("RESULT mode=echo msgs_s=%.0f mb_s=%.2f p50_us=%.1f "
		       "p99_us=%.1f p999_us=%.1f max_us=%.1f srv_cpu=%.3f "
		       "per_cpu_s=%.0f cli_cpu_pct=%.0f errors=%llu\n",
		    (double)msgs / wall, (double)msgs * msg_size / wall / 1e6,
		    hist_pct(&lat, 0.50) / 1e3, hist_pct(&lat, 0.99) / 1e3,
		    hist_pct(&lat, 0.999) / 1e3, (double)lat.max / 1e3, srv_cpu,
		    (double)msgs * per, 100 * cli_cpu / wall,
		    (unsigned long long)errors);
		break;
	case M_CHAT: {
		long long loss =
		    (long long)expected_total - (long long)uniq_total;

		printf("chat: %d clients, %d senders, %s\n", nconns, nsenders,
		    rate > 0 ? "paced" : "closed loop");
		if (rate > 0)
			printf("  %.1f msgs/s per sender\n", rate);
		printf("  %.0f deliveries/s, latency p50 %.2f ms, p99 %.2f "
		       "ms, p99.9 %.2f ms\n",
		    (double)deliveries / wall, hist_pct(&lat, 0.5) / 1e6,
		    hist_pct(&lat, 0.99) / 1e6, hist_pct(&lat, 0.999) / 1e6);
		printf("  sent %llu, expected %llu deliveries, lost %lld, "
		       "dup %llu, reordered %llu\n",
		    (unsigned long long)sent_total,
		    (unsigned long long)expected_total, loss,
		    (unsigned long long)dups, (unsigned long long)reorders);
		printf("  server cpu %.2f s (%.0f %%): %.0f deliveries per "
		       "server-cpu-second; client cpu %.0f %%\n",
		    srv_cpu, 100 * srv_cpu / wall, (double)deliveries * per,
		    100 * cli_cpu / wall);
		printf("RESULT mode=chat deliv_s=%.0f p50_ms=%.3f p99_ms=%.3f "
		       "p999_ms=%.3f sent=%llu lost=%lld dup=%llu "
		       "reorder=%llu srv_cpu=%.3f per_cpu_s=%.0f "
		       "cli_cpu_pct=%.0f errors=%llu\n",
		    (double)deliveries / wall, hist_pct(&lat, 0.5) / 1e6,
		    hist_pct(&lat, 0.99) / 1e6, hist_pct(&lat, 0.999) / 1e6,
		    (unsigned long long)sent_total, loss,
		    (unsigned long long)dups, (unsigned long long)reorders,
		    srv_cpu, (double)deliveries * per, 100 * cli_cpu / wall,
		    (unsigned long long)errors);
		break;
	}
	case M_HANDSHAKE:
		printf("handshake: %d concurrent, %s\n", nconns,
		    resume ? "resumed" : "full");
		printf("  %.0f handshakes/s (%llu resumed of %llu); server "
		       "cpu %.2f s: %.1f us per handshake\n",
		    (double)hs_done / wall, (unsigned long long)hs_resumed,
		    (unsigned long long)hs_done, srv_cpu,
		    hs_done ? srv_cpu * 1e6 / (double)hs_done : 0);
		printf("RESULT mode=handshake hs_s=%.0f resumed=%llu "
		       "done=%llu srv_cpu=%.3f us_per_hs=%.1f per_cpu_s=%.0f "
		       "cli_cpu_pct=%.0f errors=%llu\n",
		    (double)hs_done / wall, (unsigned long long)hs_resumed,
		    (unsigned long long)hs_done, srv_cpu,
		    hs_done ? srv_cpu * 1e6 / (double)hs_done : 0,
		    (double)hs_done * per, 100 * cli_cpu / wall,
		    (unsigned long long)errors);
		break;
	case M_HOLD:
		break;
	}
}

static void
run_hold(void)
{
	long rss0 = proc_rss_kib(server_pid), rss1;
	int64_t t0 = now_ns();

	connect_more();
	/* Connecting 20,000 TLS clients takes a while: up to 120 s. */
	run_until(t0 + 120000000000LL, all_up);
	printf("hold: %d of %d connections up%s in %.1f s\n", nready, nconns,
	    use_tls ? " (TLS)" : "", (double)(now_ns() - t0) / 1e9);
	/* Let the server finish greeting everyone before measuring. */
	run_phase(now_ns() + (int64_t)(warmup * 1e9));
	rss1 = proc_rss_kib(server_pid);
	run_phase(now_ns() + (int64_t)(duration * 1e9));
	printf("  server rss %ld KiB -> %ld KiB: %.2f KiB per connection\n",
	    rss0, rss1, nready ? (double)(rss1 - rss0) / nready : 0);
	printf("  still up after %.0f s: %d\n", duration, nready);
	printf("RESULT mode=hold up=%d want=%d rss0_kib=%ld rss1_kib=%ld "
	       "kib_per_conn=%.2f errors=%llu\n",
	    nready, nconns, rss0, rss1,
	    nready ? (double)(rss1 - rss0) / nready : 0,
	    (unsigned long long)errors);
}

static int
chat_drained(void)
{
	return uniq_total >= expected_total;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"tls", no_argument, NULL, 'T'},
	    {"resume", no_argument, NULL, 'R'},
	    {"pid", required_argument, NULL, 'P'},
	    {"proto", required_argument, NULL, 'X'},
	    {"room", required_argument, NULL, 'o'},
	    {"connect-batch", required_argument, NULL, 'B'},
	    {NULL, 0, NULL, 0},
	};
	double c0, s0, wall;
	int64_t t0, t1;
	int ch, i;

	if (argc < 2)
		usage();
	if (strcmp(argv[1], "echo") == 0)
		mode = M_ECHO;
	else if (strcmp(argv[1], "chat") == 0)
		mode = M_CHAT;
	else if (strcmp(argv[1], "hold") == 0)
		mode = M_HOLD;
	else if (strcmp(argv[1], "handshake") == 0)
		mode = M_HANDSHAKE;
	else
		usage();
	if (mode == M_HANDSHAKE) {
		use_tls = 1;
		nconns = 16;
	}
	if (mode == M_CHAT)
		nconns = 200;
	optind = 2;
	while ((ch = getopt_long(argc, argv, "H:p:c:s:i:d:w:k:r:W:q", longopts,
		    NULL)) != -1) {
		switch (ch) {
		case 'H':
			host = optarg;
			break;
		case 'p':
			port = atoi(optarg);
			break;
		case 'c':
			nconns = atoi(optarg);
			break;
		case 's':
			msg_size = atoi(optarg);
			break;
		case 'i':
			inflight = atoi(optarg);
			break;
		case 'd':
			duration = atof(optarg);
			break;
		case 'w':
			warmup = atof(optarg);
			break;
		case 'k':
			nsenders = atoi(optarg);
			break;
		case 'r':
			rate = atof(optarg);
			break;
		case 'W':
			window = atoi(optarg);
			break;
		case 'T':
			use_tls = 1;
			break;
		case 'R':
			resume = 1;
			break;
		case 'P':
			server_pid = (pid_t)atoi(optarg);
			break;
		case 'X':
			if (strcmp(optarg, "parley") == 0)
				proto = P_PARLEY;
			else if (strcmp(optarg, "raw") == 0)
				proto = P_RAW;
			else if (strcmp(optarg, "irc") == 0)
				proto = P_IRC;
			else if (strcmp(optarg, "line") == 0)
				proto = P_LINE;
			else
				usage();
			break;
		case 'o':
			room = optarg;
			break;
		case 'q':
			quiet = 1;
			break;
		case 'B':
			max_connecting = atoi(optarg);
			break;
		default:
			usage();
		}
	}
	if (nconns < 1 || msg_size < 2 || inflight < 1 || window < 1 ||
	    nsenders < 1 || duration <= 0 || port <= 0)
		usage();
	if (mode == M_CHAT && nsenders > nconns)
		die("more senders than clients");
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	raise_nofile((rlim_t)nconns + 64);
	if ((ep = epoll_create1(0)) == -1)
		die("epoll_create1");
	if ((conns = calloc((size_t)nconns, sizeof *conns)) == NULL ||
	    (rbuf = malloc(RBUF_SIZE)) == NULL ||
	    (echo_msg = malloc((size_t)msg_size)) == NULL)
		die("out of memory");
	memset(echo_msg, 'x', (size_t)msg_size);
	echo_msg[msg_size - 1] = '\n';
	for (i = 0; i < nconns; i++) {
		struct bconn *c = &conns[i];

		c->idx = i;
		c->fd = -1;
		c->sender = -1;
		c->state = B_CLOSED;
		if (mode == M_ECHO &&
		    (c->ring = calloc((size_t)inflight, sizeof *c->ring)) ==
			NULL)
			die("out of memory");
		if (mode == M_CHAT && (c->lbuf = malloc(LINE_MAX_LEN)) == NULL)
			die("out of memory");
	}
	if (use_tls) {
		if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
			die("SSL_CTX_new");
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		SSL_CTX_set_mode(ctx,
		    SSL_MODE_ENABLE_PARTIAL_WRITE |
			SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
	}
	if (mode == M_CHAT) {
		nreceivers = nconns - 1;
		senders = calloc((size_t)nsenders, sizeof *senders);
		last_seq =
		    calloc((size_t)nconns * (size_t)nsenders, sizeof *last_seq);
		seen_bits = calloc(
		    (size_t)nconns * (size_t)nsenders, sizeof *seen_bits);
		if (senders == NULL || last_seq == NULL || seen_bits == NULL)
			die("out of memory");
		for (i = 0; i < nsenders; i++) {
			senders[i].conn = (int)((long)i * nconns / nsenders);
			conns[senders[i].conn].sender = i;
			senders[i].left =
			    calloc((size_t)window, sizeof(uint32_t));
			senders[i].sent_at =
			    calloc((size_t)window, sizeof(int64_t));
			if (senders[i].left == NULL ||
			    senders[i].sent_at == NULL)
				die("out of memory");
		}
	}
	if (server_pid > 0)
		proc_open(server_pid);
	t_zero = now_ns();

	if (mode == M_HOLD) {
		run_hold();
		return errors ? 1 : 0;
	}

	/* Set up: every connection up (and logged in) before any load. */
	if (mode == M_HANDSHAKE) {
		started = 1;
		for (i = 0; i < nconns; i++)
			start_connect(&conns[i]);
	} else {
		connect_more();
		run_until(now_ns() + 60000000000LL, all_up);
		if (nready < nconns) {
			fprintf(stderr,
			    "parley-bench: only %d of %d connections up\n",
			    nready, nconns);
			return 1;
		}
		/* let join notices and greetings settle */
		run_phase(now_ns() + 300000000);
		started = 1;
		t0 = now_ns();
		if (mode == M_ECHO)
			for (i = 0; i < nconns; i++)
				became_ready(&conns[i]);
		if (mode == M_CHAT)
			for (i = 0; i < nsenders; i++) {
				senders[i].next_due = t0 +
				    (int64_t)(1e9 / (rate > 0 ? rate : 1) * i /
					nsenders);
				if (rate <= 0)
					chat_refill(&senders[i], t0);
			}
	}
	run_phase(now_ns() + (int64_t)(warmup * 1e9));
	measuring = 1;
	s0 = proc_cpu(server_pid);
	c0 = self_cpu();
	t0 = now_ns();
	run_phase(t0 + (int64_t)(duration * 1e9));
	t1 = now_ns();
	measuring = 0;
	wall = (double)(t1 - t0) / 1e9;
	s0 = proc_cpu(server_pid) - s0;
	c0 = self_cpu() - c0;
	stopping = 1;
	/* Drain: chat waits for every delivery due (or 3 s). */
	if (mode == M_CHAT)
		run_until(now_ns() + 3000000000LL, chat_drained);
	report(wall, s0, c0);
	for (i = 0; i < nconns; i++)
		if (conns[i].state != B_CLOSED)
			conn_fail(&conns[i], "done");
	return errors ? 1 : 0;
}
