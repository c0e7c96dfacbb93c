/*
 * epoll-chat: the reference chat broadcaster for parley-bench, as small as
 * a chat server can be while staying fair: one thread, level-triggered
 * epoll, non-blocking sockets, TCP_NODELAY, input framed per connection
 * on LF.  The complete lines of a read are copied to every other client's
 * output queue, and after each epoll wake-up every queue that grew is sent
 * with one send(): one syscall per recipient per wake-up however many
 * lines arrived, as libevent's write callbacks give parleyd.  Past OUT_MAX
 * (parleyd's default output_soft_limit) a client's further lines are
 * skipped.  No nicks, rooms, commands or TLS: parley-bench --proto line.
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
	size_t dirty; /* index in dirty[] + 1, or 0 */
	int blocked; /* EPOLLOUT armed: the kernel took less than all */
	char in[LINE_MAX_LEN]; /* the start of an unfinished line */
	size_t inlen;
	char *out; /* queued output */
	size_t outlen, outoff, outcap;
};

static int ep;
static struct cconn **clients, **dirty; /* dirty: to send after this wake-up */
static size_t nclients, ndirty, capclients;
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
	if (c->dirty) {
		dirty[c->dirty - 1] = dirty[--ndirty];
		dirty[c->dirty - 1]->dirty = c->dirty;
	}
	close(c->fd);
	free(c->out);
	free(c);
}

/* c has output to send once this wake-up's events are handled. */
static void
mark(struct cconn *c)
{
	if (!c->dirty) {
		dirty[ndirty++] = c;
		c->dirty = ndirty;
	}
}

/* Append to c's queue (over OUT_MAX the lines are skipped). */
static void
enqueue(struct cconn *c, const char *p, size_t n)
{
	size_t cap = c->outcap ? c->outcap : 4096;
	char *nb;

	if (c->outlen - c->outoff + n > OUT_MAX)
		return;
	if (c->outoff > 0 && c->outlen + n > c->outcap) {
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
	memcpy(c->out + c->outlen, p, n);
	c->outlen += n;
	if (!c->blocked)
		mark(c);
}

/* Send what is queued; what the kernel refuses waits for EPOLLOUT. */
static void
flush(struct cconn *c)
{
	ssize_t w = send(
	    c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);

	if (w < 0) {
		if (errno != EAGAIN && errno != EINTR) {
			drop(c);
			return;
		}
		w = 0;
	}
	c->outoff += (size_t)w;
	if (c->outoff == c->outlen)
		c->outoff = c->outlen = 0;
	if (c->blocked != (c->outlen > 0)) {
		c->blocked = c->outlen > 0;
		set_events(c, c->blocked ? EPOLLIN | EPOLLOUT : EPOLLIN);
	}
}

/* One read per wake-up: a flooding client cannot fill the queues. */
static void
on_readable(struct cconn *c)
{
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
				enqueue(clients[i], buf, len);
		memmove(buf, nl + 1, have - len);
		have -= len;
	}
	if (have >= LINE_MAX_LEN) {
		drop(c); /* overlong line */
		return;
	}
	memcpy(c->in, buf, have);
	c->inlen = have;
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
			struct cconn **nd;

			if (nc != NULL)
				clients = nc;
			if (nc == NULL ||
			    (nd = realloc(dirty, cap * sizeof *nd)) == NULL) {
				close(fd);
				continue;
			}
			dirty = nd;
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
			if (evs[i].events & EPOLLOUT)
				mark(c);
			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
				on_readable(c);
		}
		/* No event of the batch is left to name c: flush() may drop it. */
		while (ndirty > 0) {
			struct cconn *c = dirty[--ndirty];

			c->dirty = 0;
			flush(c);
		}
	}
}
