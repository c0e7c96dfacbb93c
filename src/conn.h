/*
 * One client connection: a bufferevent (plain or OpenSSL) driven through
 * an explicit state machine.  Services (echo, chat) plug in through
 * struct conn_service and see the connection only through this API.
 *
 * Ownership: the conn owns its bufferevent; with BEV_OPT_CLOSE_ON_FREE the
 * bufferevent owns the fd and the SSL.  An idle plain conn may be asleep
 * ([server] idle_release): no bufferevent, and the conn owns the fd.  Anything outside the loop (worker
 * jobs) names a conn by its 64-bit id and looks it up with conn_lookup(),
 * which returns NULL once the conn is gone.
 */
#ifndef PARLEY_CONN_H
#define PARLEY_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct bufferevent;
struct conn;
struct evbuffer;
struct server;

enum conn_state {
	CONN_HANDSHAKE, /* TLS handshake running, under handshake_timeout */
	CONN_GREETING, /* transport up, service saying hello */
	CONN_ACTIVE, /* normal traffic */
	CONN_CLOSING, /* reads off, flushing output under a deadline */
	CONN_CLOSED, /* freed at the end of the current callback */
	CONN_NSTATES
};

/* Why reading is paused; reads resume when no reason is left. */
enum conn_pause {
	PAUSE_BACKPRESSURE = 1 << 0, /* our output to the client is full */
	PAUSE_FLOOD = 1 << 1, /* the client exceeded its rate */
	PAUSE_SERVICE = 1 << 2, /* the service waits on a worker job */
	PAUSE_REPLAY = 1 << 3, /* chat: a join's history replay is running */
};

struct conn_service {
	const char *name;
	/* Transport ready: greet.  Return -1 to refuse the connection. */
	int (*open)(struct conn *c);
	/* Input arrived (or reads resumed with input still buffered). */
	void (*read)(struct conn *c, struct evbuffer *in);
	/* Output fell to the low watermark set by conn_watch_output(). */
	void (*drained)(struct conn *c);
	/* The server is stopping: last words before the close. */
	void (*shutdown)(struct conn *c);
	/* The conn is being freed: release the service's state. */
	void (*close)(struct conn *c);
};

/*
 * Called by the listener for each accepted fd (which the conn then owns).
 * tls: 0 plain, else 1 + enum client_certs (LISTEN_TLS_MODE in conf.h).
 */
void conn_accept(struct server *s, const struct conn_service *svc,
    const char *listener, int tls, int fd, const struct sockaddr *sa,
    socklen_t salen);
/*
 * Serve svc over a transport that is already up (tests and fuzzers: one
 * end of a bufferevent_pair).  The conn owns bev from here on, even on
 * failure.  Returns its id, or 0 if it is already gone.
 */
uint64_t conn_attach(struct server *s, const struct conn_service *svc,
    const char *listener, struct bufferevent *bev, const struct sockaddr *sa,
    socklen_t salen);

uint64_t conn_id(const struct conn *c);
struct conn *conn_lookup(uint64_t id);
enum conn_state conn_state(const struct conn *c);
const char *conn_state_name(enum conn_state st);
struct server *conn_server(const struct conn *c);
const char *conn_peer(const struct conn *c); /* "addr:port" */
const char *conn_peer_ip(const struct conn *c); /* "addr" */
const char *conn_listener(const struct conn *c);
const struct conn_service *conn_service(const struct conn *c);
/* The TLS client certificate's SHA-256 (hex) into hex; -1 if none. */
int conn_peer_fingerprint(const struct conn *c, char *hex, size_t len);
int conn_is_tls(const struct conn *c);
void *conn_data(const struct conn *c);
void conn_set_data(struct conn *c, void *data);

/* The single state setter: checks the transition and logs it. */
void conn_set_state(struct conn *c, enum conn_state st);

struct evbuffer *conn_output(struct conn *c);
size_t conn_output_length(const struct conn *c);
int conn_write(struct conn *c, const void *data, size_t len);
int conn_printf(struct conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Ask for service->drained once output falls to at most low bytes. */
void conn_watch_output(struct conn *c, size_t low);

void conn_pause(struct conn *c, enum conn_pause why);
void conn_resume(struct conn *c, enum conn_pause why);
int conn_paused(const struct conn *c, enum conn_pause why);
/* The peer has finished sending; buffered input is its last. */
int conn_eof(const struct conn *c);
/*
 * A paused conn is not read from, so a reset goes unseen while nothing is
 * written to it.  Ask the socket: aborts the conn and returns -1 if the
 * peer reset it (or it failed otherwise), 0 if it still stands.
 */
int conn_check_peer(struct conn *c);

/* Flush what is queued, then close (TLS close_notify), under a deadline. */
void conn_close(struct conn *c, const char *reason);
/* Server stopping: the service's last words, then conn_close. */
void conn_shutdown(struct conn *c);
/* Close now, dropping queued output. */
void conn_abort(struct conn *c, const char *reason);

/* Iterate every live conn; the callback may close the conn it is given. */
void conn_foreach(void (*fn)(struct conn *, void *), void *arg);
size_t conn_count(void);
size_t conn_count_state(enum conn_state st);
/* Idle conns that gave their buffers back ([server] idle_release). */
size_t conn_count_asleep(void);
/* The configuration was reloaded: idle_release may have changed. */
void conn_reloaded(struct server *s);
/* Free every conn at once (end of shutdown). */
void conn_abort_all(const char *reason);

#endif
