/*
 * Server life cycle: start-up, signals, reload, graceful stop.
 *
 * Stop order: stop accepting -> services say goodbye -> every conn
 * flushes and closes (bounded by shutdown_timeout) -> history commits
 * what it queued -> the loop exits.  Nothing is freed while a worker job
 * may still name it: the work queue drains before the server is freed.
 */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "clock.h"
#include "conf.h"
#include "conn.h"
#include "listener.h"
#include "account.h"
#include "gate.h"
#include "history.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "server.h"
#include "chat.h"
#include "tls.h"
#include "workq.h"

#define STATUS_INTERVAL_S 5

struct server_priv {
	struct server pub;
	struct event *sig_term, *sig_int, *sig_hup;
	struct event *watchdog, *status;
	uint64_t last_messages;
};

static int
needs_tls(const struct config *cfg)
{
	size_t i;

	for (i = 0; i < cfg->nlisteners; i++)
		if (cfg->listeners[i].tls)
			return 1;
	return 0;
}

static void
finish(struct server *s)
{
	log_info("all connections closed; exiting");
	event_base_loopexit(s->base, NULL);
}

void
server_conn_gone(struct server *s)
{
	if (s->stopping && conn_count() == 0)
		finish(s);
}

static void
say_goodbye(struct conn *c, void *arg)
{
	(void)arg;
	conn_shutdown(c);
}

static void
stop_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;

	(void)fd;
	(void)what;
	log_warn("shutdown_timeout reached with %zu connection(s) still "
		 "flushing; dropping them",
	    conn_count());
	conn_abort_all("shutdown timeout");
	if (conn_count() == 0)
		return; /* server_conn_gone already called finish() */
	finish(s);
}

void
server_stop(struct server *s, const char *why)
{
	struct timeval tv;
	uint64_t ms = s->cfg->shutdown_timeout_ms;

	if (s->stopping)
		return;
	s->stopping = 1;
	notify_stopping();
	log_notice(
	    "stopping (%s): closing %zu connection(s)", why, conn_count());
	listeners_close(s);
	if (conn_count() == 0) {
		finish(s);
		return;
	}
	tv = timeval_ms(ms);
	s->stop_timer = evtimer_new(s->base, stop_deadline, s);
	evtimer_add(s->stop_timer, &tv);
	conn_foreach(say_goodbye, NULL);
}

void
server_reload(struct server *s)
{
	struct config *ncfg, *ocfg = s->cfg;
	SSL_CTX *nctx = NULL;
	char err[512];

	notify_reloading();
	log_notice("reloading %s", ocfg->path);
	if ((ncfg = config_load(ocfg->path, err, sizeof err)) == NULL) {
		log_err("reload refused, keeping the running config: %s", err);
		goto done;
	}
	if (needs_tls(ncfg) &&
	    (nctx = tls_ctx_new(ncfg, err, sizeof err)) == NULL) {
		log_err("reload refused, keeping the running config: %s", err);
		config_free(ncfg);
		goto done;
	}
	s->cfg = ncfg;
	if (listeners_update(s, err, sizeof err) == -1) {
		log_err("reload refused, keeping the running config: %s", err);
		s->cfg = ocfg;
		config_free(ncfg);
		SSL_CTX_free(nctx);
		goto done;
	}
	/* Live SSL objects hold their own reference to the old context. */
	SSL_CTX_free(s->tls_ctx);
	s->tls_ctx = nctx;
	log_set_level(ncfg->log_level);
	conn_reloaded(s);
	if (s->chat != NULL)
		chat_reloaded(s->chat);
	accounts_reconfigure(s->accounts, s->cfg);
	config_free(ocfg);
	log_notice("reload done");
done:
	notify_ready();
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct server *s = arg;

	(void)what;
	if (sig == SIGHUP)
		server_reload(s);
	else
		server_stop(s, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void
watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	/* Sent from the loop itself: a stuck loop misses its ping. */
	notify_watchdog();
}

static void
status_cb(evutil_socket_t fd, short what, void *arg)
{
	struct server_priv *p = arg;
	struct server *s = &p->pub;
	uint64_t msgs = s->stats.messages_in;

	(void)fd;
	(void)what;
	notify_status("%zu connection(s), %zu room(s), %.1f messages/s",
	    conn_count(), s->chat ? chat_room_count(s->chat) : 0,
	    (double)(msgs - p->last_messages) / STATUS_INTERVAL_S);
	p->last_messages = msgs;
}

struct server *
server_new(struct config *cfg, char *err, size_t errlen)
{
	struct server_priv *p;
	struct server *s;
	struct event_config *ec;
	struct workq_config wc;
	struct timeval tv;
	uint64_t wd;

	if ((p = calloc(1, sizeof *p)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s = &p->pub;
	s->cfg = cfg;
	/* Batch epoll_ctl calls: one syscall per fd per loop, not per change. */
	ec = event_config_new();
	event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	/*
	 * libevent's timers follow the kernel's coarse clock (one tick, 4 ms
	 * at HZ=250, late); a lag probe finer than that needs the precise
	 * clock, which costs a timerfd_settime per loop iteration.
	 */
	if (config_precise_timers(cfg))
		event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
	s->base = event_base_new_with_config(ec);
	event_config_free(ec);
	if (s->base == NULL) {
		snprintf(err, errlen, "cannot create the event loop");
		goto fail;
	}
	if (needs_tls(cfg) &&
	    (s->tls_ctx = tls_ctx_new(cfg, err, errlen)) == NULL)
		goto fail;
	memset(&wc, 0, sizeof wc);
	wc.name = "worker";
	wc.threads = (int)cfg->workers;
	wc.nice = cfg->worker_nice;
	wc.max_pending = 100000;
	if ((s->workq = workq_new(s->base, &wc)) == NULL) {
		snprintf(err, errlen, "cannot start worker threads");
		goto fail;
	}
	if ((s->chat = chat_new(s)) == NULL || (s->gate = gate_new()) == NULL ||
	    (s->metrics = metrics_new(s)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (listeners_open(s, err, errlen) == -1)
		goto fail;
	notify_close_unclaimed();

	p->sig_term = evsignal_new(s->base, SIGTERM, signal_cb, s);
	p->sig_int = evsignal_new(s->base, SIGINT, signal_cb, s);
	p->sig_hup = evsignal_new(s->base, SIGHUP, signal_cb, s);
	evsignal_add(p->sig_term, NULL);
	evsignal_add(p->sig_int, NULL);
	evsignal_add(p->sig_hup, NULL);
	if ((wd = notify_watchdog_usec()) > 0) {
		wd /= 2;
		tv.tv_sec = (time_t)(wd / 1000000);
		tv.tv_usec = (long)(wd % 1000000);
		p->watchdog =
		    event_new(s->base, -1, EV_PERSIST, watchdog_cb, s);
		evtimer_add(p->watchdog, &tv);
	}
	tv.tv_sec = STATUS_INTERVAL_S;
	tv.tv_usec = 0;
	p->status = event_new(s->base, -1, EV_PERSIST, status_cb, p);
	evtimer_add(p->status, &tv);
	return s;
fail:
	server_free(s);
	return NULL;
}

int
server_open_history(struct server *s, char *err, size_t errlen)
{
	char herr[512];

	if (s->cfg->history_enabled && s->history == NULL) {
		s->history = history_open(s->base, s->cfg, herr, sizeof herr);
		if (s->history == NULL && s->cfg->history_required) {
			snprintf(err, errlen, "history: %s", herr);
			return -1;
		}
		if (s->history == NULL)
			log_err("history: %s; chatting without history "
				"(set [history] required = yes to refuse "
				"instead)",
			    herr);
	}
	/* Accounts live in the same file, opened as the same user. */
	if (s->cfg->accounts_enabled && s->accounts == NULL) {
		s->accounts = accounts_open(s->base, s->cfg, herr, sizeof herr);
		if (s->accounts == NULL && s->cfg->accounts_required) {
			snprintf(err, errlen, "accounts: %s", herr);
			return -1;
		}
		if (s->accounts == NULL)
			log_err(
			    "accounts: %s; running WITHOUT registered nicks, "
			    "persistent rooms and address bans (set "
			    "[accounts] required = yes to refuse instead)",
			    herr);
		else
			chat_load_state(s->chat); /* rooms, address bans */
	}
	return 0;
}

int
server_run(struct server *s)
{
	notify_ready();
	notify_status("ready");
	log_notice("parleyd %s ready", PACKAGE_VERSION);
	event_base_dispatch(s->base);
	return s->exit_code;
}

void
server_free(struct server *s)
{
	struct server_priv *p = (struct server_priv *)s;

	if (s == NULL)
		return;
	listeners_close(s);
	conn_abort_all("exiting");
	/* Commit every queued message before anything else goes away. */
	if (s->history != NULL)
		history_close(s->history);
	accounts_close(s->accounts);
	gate_free(s->gate);
	if (s->workq != NULL)
		workq_free(s->workq);
	metrics_free(s->metrics);
	if (s->chat != NULL)
		chat_free(s->chat);
	if (p->sig_term != NULL)
		event_free(p->sig_term);
	if (p->sig_int != NULL)
		event_free(p->sig_int);
	if (p->sig_hup != NULL)
		event_free(p->sig_hup);
	if (p->watchdog != NULL)
		event_free(p->watchdog);
	if (p->status != NULL)
		event_free(p->status);
	if (s->stop_timer != NULL)
		event_free(s->stop_timer);
	SSL_CTX_free(s->tls_ctx);
	if (s->base != NULL)
		event_base_free(s->base);
	config_free(s->cfg);
	free(p);
}
