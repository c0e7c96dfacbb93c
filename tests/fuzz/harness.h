/*
 * A server without sockets, for the fuzzers: the real struct server,
 * chat and conns, on a private event base, with clients that are the
 * far ends of bufferevent pairs (conn_attach takes the near ends).
 * Everything is built and torn down per input, so a crash reproduces
 * from its input alone and leaks are the input's fault -- except, for
 * fuzz_conn_store, the event base and the stores it keeps per process
 * (see there).
 */
#ifndef PARLEY_FUZZ_HARNESS_H
#define PARLEY_FUZZ_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "server.h"

struct bufferevent;
struct config;
struct event_base;
struct conn_service;
struct session;

#define FZ_MAXCLIENTS 4
#define FZ_RECV_MAX (1 << 20) /* bytes of output kept per client */

/* A growing record of bytes, up to FZ_RECV_MAX. */
struct fz_rec {
	unsigned char *p;
	size_t n, cap;
};

struct fz_client {
	struct bufferevent *bev; /* our end; NULL once dropped */
	uint64_t id; /* the server-side conn */
	int slow; /* reads at most 512 bytes at a time, and rarely */
	int finished; /* we sent EOF */
	struct fz_rec recv; /* what the server sent */
	struct fz_rec sent; /* what we sent */
	int overflow; /* more than FZ_RECV_MAX either way */
};

struct fz {
	struct server srv;
	struct fz_client c[FZ_MAXCLIENTS];
	int nclients;
	int own_base; /* fz_free frees srv.base */
};

/* Quiet logging, once per process. */
void fz_global_init(void);
/* Set up a server on cfg (which f then owns). -1 if out of resources. */
int fz_init(struct fz *f, struct config *cfg);
/* The same on the caller's base, which fz_free leaves alone. */
int fz_init_base(struct fz *f, struct config *cfg, struct event_base *base);
/* A new client of svc; its index, or -1 when full. */
int fz_connect(struct fz *f, const struct conn_service *svc);
void fz_send(struct fz *f, int i, const void *p, size_t n);
/* Half-close: the server sees end of input. */
void fz_finish(struct fz *f, int i);
/* Disappear without a word (the server side stays until teardown). */
void fz_drop(struct fz *f, int i);
void fz_set_slow(struct fz *f, int i, int slow);
/* Run the loop until nothing is left to do now; clients read. */
void fz_pump(struct fz *f);
/* The chat session of client i, or NULL if its conn is gone. */
struct session *fz_session(struct fz *f, int i);
/*
 * Chat output is lines a raw terminal can show safely: CRLF-terminated,
 * valid UTF-8, no controls but TAB, apart from telnet replies (IAC
 * WONT/DONT x).  Aborts otherwise.
 */
void fz_check_chat_output(const struct fz_client *c);
/* Close every conn and forget every client (the chat stays). */
void fz_disconnect_all(struct fz *f);
/* fz_disconnect_all, then free the chat, the config and an own base. */
void fz_free(struct fz *f);

#endif
