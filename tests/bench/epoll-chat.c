/*
 * epoll-chat: the reference chat broadcaster for parley-bench, as small as
 * a chat server can be while staying fair: one thread, level-triggered
 * epoll, non-blocking sockets, TCP_NODELAY, input framed per connection
 * on LF, and the complete lines of each read sent at once, straight from
 * the read handler, to every other connected client.  What a client does
 * not take waits in its output queue; past OUT_MAX (parleyd's default
 * output_soft_limit) further lines are skipped for it.  No nicks, rooms,
 * commands or TLS: parley-bench --proto line speaks to it.
 *
 *   epoll-chat -p PORT
 */
#define _GNU_SOURCE
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BUF_SIZE 65536
#define LINE_MAX_LEN 4096 /* parleyd's default max_line_length */
#define OUT_MAX (256 * 1024)

struct cconn {
	int fd;
	size_t slot; /* index in clients[] */
	char in[LINE_MAX_LEN]; /* the start of an unfinished line */
	size_t inlen;
	char *out; /* queued output, or NULL */
	size_t outlen, outoff, outcap;
};

static int ep;
static struct cconn **clients;
static size_t nclients, capclients;
static char buf[LINE_MAX_LEN + BUF_SIZE];

static void
die(const char *msg)
{
	fprintf(stderr, "epoll-chat: %s\n", msg);
	exit(1);
}

static void
set_events(struct cconn *c, uint32_t ev)
{
	struct epoll_event e = {.events = ev, .data.ptr = c};

	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

static void
drop(struct cconn *c)
{
	clients[c->slot] = clients[--nclients];
	clients[c->slot]->slot = c->slot;
	close(c->fd);
	free(c->out);
	free(c);
}

/* Append to c's queue; over OUT_MAX the bytes are skipped. */
static void
enqueue(struct cconn *c, const char *p, size_t n)
{
	size_t cap = c->outcap ? c->outcap : 4096;
	char *nb;

	if (c->outlen - c->outoff + n > OUT_MAX)
		return;
	if (c->outoff > 0) {
		memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
		c->outlen -= c->outoff;
		c->outoff = 0;
	}
	while (cap < c->outlen + n)
		cap *= 2;
	if (cap != c->outcap) {
		if ((nb = realloc(c->out, cap)) == NULL)
			return;
		c->out = nb;
		c->outcap = cap;
	}
	if (c->outlen == 0)
		set_events(c, EPOLLIN | EPOLLOUT);
	memcpy(c->out + c->outlen, p, n);
	c->outlen += n;
}

/*
 * Send to c behind what is queued.  A failed send is ignored: c's own
 * EPOLLIN reports the error, so nobody is freed in the middle of a
 * broadcast.
 */
static void
send_to(struct cconn *c, const char *p, size_t n)
{
	ssize_t w;

	if (c->outlen == 0) {
		w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w < 0)
			w = errno == EAGAIN || errno == EINTR ? 0 : (ssize_t)n;
		p += w;
		n -= (size_t)w;
	}
	if (n > 0)
		enqueue(c, p, n);
}

/* -1: c was dropped. */
static int
on_writable(struct cconn *c)
{
	ssize_t w = send(
	    c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);

	if (w < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		drop(c);
		return -1;
	}
	c->outoff += (size_t)w;
	if (c->outoff == c->outlen) {
		c->outoff = c->outlen = 0;
		set_events(c, EPOLLIN);
	}
	return 0;
}

static void
on_readable(struct cconn *c)
{
	for (;;) {
		size_t have = c->inlen, i;
		ssize_t n;
		char *nl;

		memcpy(buf, c->in, have);
		n = recv(c->fd, buf + have, BUF_SIZE, 0);
		if (n <= 0) {
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				return;
			drop(c);
			return;
		}
		have += (size_t)n;
		/* Complete lines go out as one block; the rest waits. */
		if ((nl = memrchr(buf, '\n', have)) != NULL) {
			size_t len = (size_t)(nl + 1 - buf);

			for (i = 0; i < nclients; i++)
				if (clients[i] != c)
					send_to(clients[i], buf, len);
			memmove(buf, nl + 1, have - len);
			have -= len;
		}
		if (have >= LINE_MAX_LEN) {
			drop(c); /* overlong line */
			return;
		}
		memcpy(c->in, buf, have);
		c->inlen = have;
		if (n < BUF_SIZE)
			return;
	}
}

static void
accept_all(int lfd)
{
	for (;;) {
		struct epoll_event e = {.events = EPOLLIN};
		struct cconn *c;
		int fd, one = 1;

		fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
		if (fd < 0)
			return;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		if (nclients == capclients) {
			size_t cap = capclients ? capclients * 2 : 256;
			struct cconn **nc = realloc(clients, cap * sizeof *nc);

			if (nc == NULL) {
				close(fd);
				continue;
			}
			clients = nc;
			capclients = cap;
		}
		if ((c = calloc(1, sizeof *c)) == NULL) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->slot = nclients;
		clients[nclients++] = c;
		e.data.ptr = c;
		epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
	}
}

int
main(int argc, char **argv)
{
	struct sockaddr_in sa = {0};
	struct epoll_event e = {.events = EPOLLIN}, evs[256];
	struct rlimit rl;
	int lfd, one = 1, port = 0, ch, i, n;

	while ((ch = getopt(argc, argv, "p:")) != -1) {
		switch (ch) {
		case 'p':
			port = atoi(optarg);
			break;
		default:
			die("usage: epoll-chat -p PORT");
		}
	}
	if (port <= 0)
		die("usage: epoll-chat -p PORT");
	signal(SIGPIPE, SIG_IGN);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if ((lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)) < 0)
		die("socket");
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) == -1 ||
	    listen(lfd, 4096) == -1)
		die("bind/listen");
	if ((ep = epoll_create1(0)) == -1)
		die("epoll_create1");
	e.data.ptr = NULL;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &e);
	for (;;) {
		n = epoll_wait(ep, evs, 256, -1);
		for (i = 0; i < n; i++) {
			struct cconn *c = evs[i].data.ptr;

			if (c == NULL) {
				accept_all(lfd);
				continue;
			}
			if ((evs[i].events & EPOLLOUT) && on_writable(c) == -1)
				continue;
			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
				on_readable(c);
		}
	}
}
