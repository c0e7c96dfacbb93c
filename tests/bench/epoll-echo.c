/*
 * epoll-echo: the reference echo servers for parley-bench, as small as an
 * echo server can be while staying fair: one thread, level-triggered
 * epoll, non-blocking sockets, TCP_NODELAY, reading stops while output is
 * waiting.  With --cert and --key it speaks TLS through OpenSSL with the
 * settings parleyd uses (same suites in the same order, server preference,
 * released buffers, server session cache and tickets).
 *
 *   epoll-echo -p PORT [--cert PEM --key PEM]
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

#include <openssl/ssl.h>

#define BUF_SIZE 65536

struct econn {
	int fd;
	SSL *ssl;
	int accepting;
	char *out; /* unsent echo, or NULL */
	size_t outlen, outoff;
};

static int ep;
static SSL_CTX *ctx;
static char buf[BUF_SIZE];

static void
die(const char *msg)
{
	fprintf(stderr, "epoll-echo: %s\n", msg);
	exit(1);
}

static void
set_events(struct econn *c, uint32_t ev)
{
	struct epoll_event e = {.events = ev, .data.ptr = c};

	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

static void
drop(struct econn *c)
{
	if (c->ssl != NULL)
		SSL_free(c->ssl);
	close(c->fd);
	free(c->out);
	free(c);
}

/* Send; what does not fit waits in c->out.  -1: connection gone. */
static int
send_all(struct econn *c, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w;

		if (c->ssl != NULL) {
			int r = SSL_write(c->ssl, p, (int)n);

			if (r <= 0) {
				int e = SSL_get_error(c->ssl, r);

				if (e != SSL_ERROR_WANT_WRITE &&
				    e != SSL_ERROR_WANT_READ)
					return -1;
				break;
			}
			w = r;
		} else {
			w = send(c->fd, p, n, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno != EAGAIN && errno != EINTR)
					return -1;
				break;
			}
		}
		p += w;
		n -= (size_t)w;
	}
	if (n > 0) {
		if ((c->out = malloc(n)) == NULL)
			return -1;
		memcpy(c->out, p, n);
		c->outlen = n;
		c->outoff = 0;
		set_events(c, EPOLLOUT);
	}
	return 0;
}

static void
on_writable(struct econn *c)
{
	char *p = c->out;
	size_t n = c->outlen - c->outoff;

	c->out = NULL;
	if (send_all(c, p + c->outoff, n) == -1) {
		free(p);
		drop(c);
		return;
	}
	free(p);
	if (c->out == NULL)
		set_events(c, EPOLLIN);
}

static void
on_readable(struct econn *c)
{
	for (;;) {
		ssize_t n;

		if (c->ssl != NULL) {
			int r = SSL_read(c->ssl, buf, sizeof buf);

			if (r <= 0) {
				int e = SSL_get_error(c->ssl, r);

				if (e == SSL_ERROR_WANT_READ ||
				    e == SSL_ERROR_WANT_WRITE)
					return;
				drop(c);
				return;
			}
			n = r;
		} else {
			n = recv(c->fd, buf, sizeof buf, 0);
			if (n <= 0) {
				if (n < 0 &&
				    (errno == EAGAIN || errno == EINTR))
					return;
				drop(c);
				return;
			}
		}
		if (send_all(c, buf, (size_t)n) == -1) {
			drop(c);
			return;
		}
		if (c->out != NULL || (c->ssl == NULL && n < BUF_SIZE))
			return;
	}
}

static void
handshake(struct econn *c)
{
	int r = SSL_accept(c->ssl), e;

	if (r == 1) {
		c->accepting = 0;
		set_events(c, EPOLLIN);
		on_readable(c);
		return;
	}
	e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ)
		set_events(c, EPOLLIN);
	else if (e == SSL_ERROR_WANT_WRITE)
		set_events(c, EPOLLOUT);
	else
		drop(c);
}

static void
accept_all(int lfd)
{
	for (;;) {
		struct epoll_event e = {.events = EPOLLIN};
		struct econn *c;
		int fd, one = 1;

		fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
		if (fd < 0)
			return;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		if ((c = calloc(1, sizeof *c)) == NULL) {
			close(fd);
			continue;
		}
		c->fd = fd;
		if (ctx != NULL) {
			if ((c->ssl = SSL_new(ctx)) == NULL) {
				close(fd);
				free(c);
				continue;
			}
			SSL_set_fd(c->ssl, fd);
			c->accepting = 1;
		}
		e.data.ptr = c;
		epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
	}
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"cert", required_argument, NULL, 'c'},
	    {"key", required_argument, NULL, 'k'},
	    {NULL, 0, NULL, 0},
	};
	static const unsigned char sid_ctx[] = "epoll-echo";
	const char *cert = NULL, *key = NULL;
	struct sockaddr_in sa = {0};
	struct epoll_event e = {.events = EPOLLIN}, evs[256];
	struct rlimit rl;
	int lfd, one = 1, port = 0, ch, i, n;

	while ((ch = getopt_long(argc, argv, "p:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'p':
			port = atoi(optarg);
			break;
		case 'c':
			cert = optarg;
			break;
		case 'k':
			key = optarg;
			break;
		default:
			die("usage: epoll-echo -p PORT [--cert PEM --key PEM]");
		}
	}
	if (port <= 0)
		die("usage: epoll-echo -p PORT [--cert PEM --key PEM]");
	signal(SIGPIPE, SIG_IGN);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (cert != NULL) {
		if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL)
			die("SSL_CTX_new");
		SSL_CTX_set_options(ctx,
		    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
			SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
		SSL_CTX_set_mode(ctx,
		    SSL_MODE_RELEASE_BUFFERS |
			SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
			SSL_MODE_ENABLE_PARTIAL_WRITE);
		SSL_CTX_set_session_id_context(
		    ctx, sid_ctx, sizeof sid_ctx - 1);
		SSL_CTX_set_ciphersuites(ctx,
		    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
		    "TLS_CHACHA20_POLY1305_SHA256");
		if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
		    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) !=
			1)
			die("cannot load certificate or key");
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
			struct econn *c = evs[i].data.ptr;

			if (c == NULL)
				accept_all(lfd);
			else if (c->accepting)
				handshake(c);
			else if (c->out != NULL)
				on_writable(c);
			else
				on_readable(c);
		}
	}
}
