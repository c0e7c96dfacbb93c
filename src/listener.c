/* Listening sockets; see listener.h. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "clock.h"
#include "conf.h"
#include "conn.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "server.h"
#include "service.h"

/* Pause after accept() fails for lack of descriptors, so we never spin. */
#define ACCEPT_RETRY_MS 250
/*
 * Accept at most this many connections per loop iteration, so that the
 * connections just accepted (and everyone else) are served before more
 * come in: a burst waits in the kernel's backlog, not in our memory.
 */
#define ACCEPT_BATCH 32
/* While accept() keeps failing, repeat the warning at most this often. */
#define ACCEPT_WARN_MS 30000

struct listener {
	struct server *srv;
	char *name;
	char *address;
	int port; /* as configured */
	int bound_port; /* as bound (differs when port = 0) */
	int tls; /* LISTEN_TLS_MODE: 0 plain, else 1 + client_certs */
	int activated; /* fd came from systemd: never close it on reload */
	enum service_kind service;
	const struct conn_service *svc;
	struct evconnlistener *evl;
	struct evhttp_bound_socket *http; /* service = metrics */
	struct event *retry;
	struct event *next_batch; /* fires on the next loop iteration */
	unsigned batch; /* accepted in this loop iteration */
	int batch_full; /* disabled until next_batch fires */
	/* Failures since the last accept, or since the last warning. */
	unsigned accept_failures;
	int accept_failing; /* no accept since accept() last failed */
	uint64_t accept_warned_ms;
	struct listener *next;
	struct listener *http_next; /* in http_listeners */
};

/*
 * Metrics listeners, so that an accept error on evhttp's evconnlistener
 * (whose callback argument is evhttp's, not ours) finds its listener.
 */
static struct listener *http_listeners;

static void
accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	static const struct timeval now = {0, 0};
	struct listener *l = arg;

	if (l->batch++ == 0)
		evtimer_add(l->next_batch, &now);
	if (l->batch >= ACCEPT_BATCH) {
		/* libevent's accept loop stops once we disable it. */
		evconnlistener_disable(evl);
		l->batch_full = 1;
	}
	if (l->accept_failing) {
		log_notice("listener %s: accepting again", l->name);
		l->accept_failing = 0;
		l->accept_failures = 0;
	}
	conn_accept(l->srv, l->svc, l->name, l->tls, fd, sa, (socklen_t)salen);
}

/* The evconnlistener that accepts on l: ours, or evhttp's for metrics. */
static struct evconnlistener *
accepting(struct listener *l)
{
	if (l->evl != NULL)
		return l->evl;
	if (l->http != NULL)
		return evhttp_bound_socket_get_listener(l->http);
	return NULL;
}

static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;
	struct evconnlistener *evl = accepting(l);

	(void)fd;
	(void)what;
	if (evl != NULL)
		evconnlistener_enable(evl);
}

static void
accept_error_cb(struct evconnlistener *evl, void *arg)
{
	struct listener *l = arg;
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval tv = {0, ACCEPT_RETRY_MS * 1000};
	uint64_t now = clock_mono_ms();

	l->srv->stats.accept_errors++;
	/*
	 * EMFILE/ENFILE/ENOBUFS leave the connection in the backlog, so the
	 * socket stays readable: stop watching it for a moment instead of
	 * spinning, and keep serving the clients we have.  The condition
	 * can last; warn when it starts and then at most every
	 * ACCEPT_WARN_MS, so that it cannot fill the disk with log lines.
	 */
	l->accept_failures++;
	if (!l->accept_failing || now - l->accept_warned_ms >= ACCEPT_WARN_MS) {
		if (!l->accept_failing)
			log_warn("listener %s: accept: %s; pausing accepts, "
				 "retrying every %d ms",
			    l->name, evutil_socket_error_to_string(err),
			    ACCEPT_RETRY_MS);
		else
			log_warn("listener %s: accept: %s; still failing "
				 "(%u times in %llu s)",
			    l->name, evutil_socket_error_to_string(err),
			    l->accept_failures,
			    (unsigned long long)(now - l->accept_warned_ms) /
				1000);
		l->accept_warned_ms = now;
		l->accept_failures = 0;
	}
	l->accept_failing = 1;
	evconnlistener_disable(evl);
	evtimer_add(l->retry, &tv);
}

static void
next_batch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;

	(void)fd;
	(void)what;
	l->batch = 0;
	if (l->batch_full) {
		l->batch_full = 0;
		/* Unless an accept error paused it meanwhile. */
		if (!evtimer_pending(l->retry, NULL))
			evconnlistener_enable(l->evl);
	}
}

/* accept_error_cb for evhttp's listeners: arg is not ours. */
static void
http_accept_error_cb(struct evconnlistener *evl, void *arg)
{
	struct listener *l;

	(void)arg;
	for (l = http_listeners; l != NULL; l = l->http_next)
		if (accepting(l) == evl) {
			accept_error_cb(evl, l);
			return;
		}
	/* Unknown (cannot happen): still do not spin. */
	evconnlistener_disable(evl);
}

static void
listener_free(struct listener *l)
{
	struct listener **pp;

	for (pp = &http_listeners; *pp != NULL; pp = &(*pp)->http_next)
		if (*pp == l) {
			*pp = l->http_next;
			break;
		}
	if (l->evl != NULL)
		evconnlistener_free(l->evl);
	if (l->http != NULL)
		metrics_unlisten(l->srv->metrics, l->http);
	if (l->retry != NULL)
		event_free(l->retry);
	if (l->next_batch != NULL)
		event_free(l->next_batch);
	free(l->name);
	free(l->address);
	free(l);
}

static int
bound_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) == -1)
		return -1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return -1;
}

static struct listener *
listener_wrap(
    struct server *s, const struct listen_config *lc, int fd, int activated)
{
	struct listener *l;

	if ((l = calloc(1, sizeof *l)) == NULL)
		return NULL;
	l->srv = s;
	l->name = strdup(lc->name);
	l->address = strdup(lc->address);
	l->port = lc->port;
	l->tls = LISTEN_TLS_MODE(lc);
	l->service = lc->service;
	l->svc = service_ops(lc->service);
	l->activated = activated;
	l->bound_port = bound_port(fd);
	l->retry = evtimer_new(s->base, retry_cb, l);
	l->next_batch = evtimer_new(s->base, next_batch_cb, l);
	if (lc->service == SERVICE_METRICS) {
		/*
		 * evhttp accepts on it (and owns the fd from here on).  Its
		 * listener has no error callback of its own: without ours,
		 * EMFILE would make it retry accept() in a busy loop.
		 */
		if ((l->http = metrics_listen(s->metrics, fd)) == NULL)
			close(fd);
		else {
			evconnlistener_set_error_cb(
			    accepting(l), http_accept_error_cb);
			l->http_next = http_listeners;
			http_listeners = l;
		}
	} else {
		/*
		 * Backlog 0: the socket is listening already, with the
		 * configured backlog (or systemd's).  -1 would make libevent
		 * call listen(fd, 128) again and override it.
		 */
		l->evl = evconnlistener_new(s->base, accept_cb, l,
		    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
		if (l->evl == NULL)
			close(fd);
		else
			evconnlistener_set_error_cb(l->evl, accept_error_cb);
	}
	if (l->name == NULL || l->address == NULL || l->retry == NULL ||
	    l->next_batch == NULL || (l->evl == NULL && l->http == NULL)) {
		listener_free(l);
		return NULL;
	}
	return l;
}

static int
bind_one(const struct addrinfo *ai, unsigned backlog, char *err, size_t errlen,
    const char *name)
{
	int fd, one = 1;

	fd = socket(ai->ai_family,
	    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd == -1)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	/* An IPv6 section means IPv6 only; IPv4 gets its own section. */
	if (ai->ai_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) == -1 ||
	    listen(fd, (int)backlog) == -1)
		goto fail;
	return fd;
fail:
	snprintf(err, errlen, "listener %s: %s", name, strerror(errno));
	if (fd != -1)
		close(fd);
	return -1;
}

/* Open one section; appends to *list.  -1 with err. */
static int
open_section(struct server *s, const struct listen_config *lc,
    struct listener **list, char *err, size_t errlen)
{
	struct addrinfo hints, *res, *ai;
	struct listener *l;
	char port[8];
	int fd, rc, n = 0;

	if ((fd = notify_listen_fd(lc->name)) != -1) {
		/* systemd passes blocking sockets; libevent accepts until EAGAIN. */
		evutil_make_socket_nonblocking(fd);
		if ((l = listener_wrap(s, lc, fd, 1)) == NULL) {
			snprintf(err, errlen, "listener %s: out of memory",
			    lc->name);
			return -1;
		}
		l->next = *list;
		*list = l;
		log_info("listener %s: %s%s via socket activation (port %d)",
		    lc->name, service_name(lc->service), lc->tls ? "+tls" : "",
		    l->bound_port);
		return 0;
	}
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(port, sizeof port, "%d", lc->port);
	if ((rc = getaddrinfo(lc->address, port, &hints, &res)) != 0) {
		snprintf(err, errlen, "listener %s: cannot resolve %s: %s",
		    lc->name, lc->address, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if ((fd = bind_one(
			 ai, s->cfg->backlog, err, errlen, lc->name)) == -1) {
			freeaddrinfo(res);
			return -1;
		}
		if ((l = listener_wrap(s, lc, fd, 0)) == NULL) {
			snprintf(err, errlen, "listener %s: out of memory",
			    lc->name);
			freeaddrinfo(res);
			return -1;
		}
		l->next = *list;
		*list = l;
		n++;
		log_info("listener %s: %s%s on %s port %d", lc->name,
		    service_name(lc->service), lc->tls ? "+tls" : "",
		    ai->ai_family == AF_INET6 ? "IPv6" : "IPv4", l->bound_port);
	}
	freeaddrinfo(res);
	return 0;
}

static void
free_list(struct listener *l)
{
	struct listener *next;

	for (; l != NULL; l = next) {
		next = l->next;
		listener_free(l);
	}
}

int
listeners_open(struct server *s, char *err, size_t errlen)
{
	struct listener *list = NULL;
	size_t i;

	for (i = 0; i < s->cfg->nlisteners; i++) {
		if (open_section(
			s, &s->cfg->listeners[i], &list, err, errlen) == -1) {
			free_list(list);
			return -1;
		}
	}
	s->listeners = list;
	return 0;
}

static const struct listen_config *
find_section(const struct config *cfg, const char *name)
{
	size_t i;

	for (i = 0; i < cfg->nlisteners; i++)
		if (strcmp(cfg->listeners[i].name, name) == 0)
			return &cfg->listeners[i];
	return NULL;
}

int
listeners_update(struct server *s, char *err, size_t errlen)
{
	struct listener *keep = NULL, *added = NULL, *l, *next;
	const struct listen_config *lc;
	size_t i;

	/* Open new sections first, so a bind failure changes nothing. */
	for (i = 0; i < s->cfg->nlisteners; i++) {
		lc = &s->cfg->listeners[i];
		for (l = s->listeners; l != NULL; l = l->next)
			if (strcmp(l->name, lc->name) == 0 &&
			    (l->activated ||
				(strcmp(l->address, lc->address) == 0 &&
				    l->port == lc->port)))
				break;
		if (l != NULL)
			continue;
		if (open_section(s, lc, &added, err, errlen) == -1) {
			free_list(added);
			return -1;
		}
	}
	for (l = s->listeners; l != NULL; l = next) {
		next = l->next;
		lc = find_section(s->cfg, l->name);
		/* A socket systemd passed us stays while its section does. */
		if (lc == NULL ||
		    (!l->activated &&
			(strcmp(l->address, lc->address) != 0 ||
			    l->port != lc->port))) {
			log_info("listener %s: closed by reload", l->name);
			listener_free(l);
			continue;
		}
		/* Service and TLS may change in place (not to/from HTTP). */
		if ((l->service == SERVICE_METRICS) !=
		    (lc->service == SERVICE_METRICS)) {
			log_warn("listener %s: switching to or from metrics "
				 "needs a restart; keeping %s",
			    l->name, service_name(l->service));
			l->next = keep;
			keep = l;
			continue;
		}
		l->tls = LISTEN_TLS_MODE(lc);
		l->service = lc->service;
		l->svc = service_ops(lc->service);
		l->next = keep;
		keep = l;
	}
	for (l = added; l != NULL; l = next) {
		next = l->next;
		l->next = keep;
		keep = l;
	}
	s->listeners = keep;
	return 0;
}

void
listeners_close(struct server *s)
{
	free_list(s->listeners);
	s->listeners = NULL;
}

int
listener_port(struct server *s, const char *name)
{
	struct listener *l;

	for (l = s->listeners; l != NULL; l = l->next)
		if (strcmp(l->name, name) == 0)
			return l->bound_port;
	return -1;
}
