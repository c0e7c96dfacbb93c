/*
 * The server: the one event loop and everything it owns.  All fields
 * are touched only from the loop thread; worker threads see nothing of
 * it but what a job carries.
 */
#ifndef PARLEY_SERVER_H
#define PARLEY_SERVER_H

#include <stdint.h>

#include <openssl/ssl.h>

struct event;
struct event_base;
struct config;
struct listener;
struct workq;
struct chat;
struct history;
struct accounts;
struct gate;
struct metrics;

struct server_stats {
	uint64_t accepted;
	uint64_t refused_full;
	uint64_t refused_per_ip;
	uint64_t tls_handshakes;
	uint64_t tls_failures;
	uint64_t bytes_in;
	uint64_t bytes_out;
	uint64_t messages_in;
	uint64_t messages_out;
	uint64_t slow_consumers;
	uint64_t accept_errors;
};

struct server {
	struct event_base *base;
	struct config *cfg;
	SSL_CTX *tls_ctx; /* NULL when no listener wants TLS */
	struct listener *listeners;
	struct workq *workq;
	struct chat *chat;
	struct history *history;
	struct accounts *accounts; /* NULL: [accounts] enabled = no */
	struct gate *gate; /* accept-time checks */
	struct metrics *metrics;
	struct event *stop_timer;
	int stopping;
	int exit_code;
	struct server_stats stats;
};

/* Build everything and bind the listeners; NULL with err on failure. */
struct server *server_new(struct config *cfg, char *err, size_t errlen);
/*
 * Open the history database ([history] enabled), then the accounts store
 * in the same file ([accounts] enabled).  Called after the switch to
 * [server] user, so the files are created by and opened as that user.
 * -1 with err when either cannot be opened and its section says
 * required = yes; otherwise a failure is logged and chat goes on without
 * it.
 */
int server_open_history(struct server *s, char *err, size_t errlen);
/* Run the loop until stopped; returns the exit code. */
int server_run(struct server *s);
void server_free(struct server *s);

/* Begin graceful shutdown: stop accepting, flush clients, then exit. */
void server_stop(struct server *s, const char *why);
/* Called by conn.c whenever a connection is freed. */
void server_conn_gone(struct server *s);
/* Re-read the config file and apply what can change at run time. */
void server_reload(struct server *s);

#endif
