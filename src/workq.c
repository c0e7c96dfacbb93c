/*
 * Worker pool with a completion queue back to the event loop.
 *
 * DESIGN (after Redis bio.c and memcached thread.c)
 *
 * Submit appends a job to a FIFO (q->jobs) under q->lock and signals
 * q->cond; an idle worker takes the head, runs work(ctx, arg) with no lock
 * held, then appends the job to the completion list (q->done) under
 * q->done_lock.  The loop learns about completions through one event,
 * created with event_new(base, -1, 0, ...): a worker calls event_active()
 * only when the loop callback is idle (q->armed clear), so a burst of
 * completions costs one wake-up, like memcached writing to its notify
 * pipe only when the queue turns non-empty.
 *
 * The loop callback moves the whole completion list to its private
 * q->ready list under q->done_lock (an O(1) splice), drops the lock and
 * runs at most WORKQ_MAX_COMPLETIONS done callbacks.  If work is left it
 * re-arms itself with a zero timeout rather than event_active(): libevent
 * runs an event activated from its own callback in the same pass over
 * the active queue, before polling, so I/O would starve; a due timer
 * fires only after the next poll, so sockets and timers get a turn
 * between batches.  While q->armed is set the workers never call into
 * libevent; only the callback clears it, when it finds nothing left.
 *
 * Shutdown: workq_free sets q->stopping, which refuses new jobs and tells
 * the workers to exit once the queue is empty (so every queued job runs),
 * joins them, then runs the remaining done callbacks in the caller's
 * thread.  Worker threads never free jobs; the loop side does.
 *
 * Lock order: q->lock and q->done_lock are never held together, and
 * neither is held while calling libevent, work or done, so there is no
 * order to violate and callbacks may call workq_submit().
 *
 * Threads: workers run with asynchronous signals blocked, so SIGTERM and
 * friends reach the loop thread.  thread_init and thread_fini run on the
 * worker itself, so a per-thread sqlite handle is opened and closed by the
 * thread that uses it.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* pthread_setname_np */
#endif

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "workq.h"

struct job {
	uint64_t owner;
	workq_work_fn work;
	workq_done_fn done;
	void *arg;
	STAILQ_ENTRY(job) entry;
};
STAILQ_HEAD(joblist, job);

struct worker {
	struct workq *q;
	pthread_t tid;
	int index;
};

struct workq {
	struct event_base *base;
	struct event *ev; /* completion wake-up */
	char name[16];
	struct workq_config cfg;
	struct worker *workers;
	int nthreads; /* threads created, to join */

	/* q->lock: the job queue, counters and start-up handshake. */
	pthread_mutex_t lock;
	pthread_cond_t cond; /* workers: a job arrived or stopping */
	pthread_cond_t started; /* workq_new: a thread finished init */
	struct joblist jobs;
	size_t queued;
	size_t running;
	uint64_t submitted;
	uint64_t rejected;
	int stopping;
	int ninit; /* threads that ran thread_init */
	int init_fail; /* ... of which failed */

	/* q->done_lock: finished jobs waiting for the loop. */
	pthread_mutex_t done_lock;
	struct joblist done;
	int armed; /* the loop callback is active or due: no wake-up needed */

	/* Loop thread only. */
	struct joblist ready;
	_Atomic uint64_t completed; /* atomic: workq_stats may run anywhere */
};

static void
finish(struct workq *q, struct job *j)
{
	workq_done_fn done = j->done;
	uint64_t owner = j->owner;
	void *arg = j->arg;

	free(j);
	if (done != NULL)
		done(owner, arg);
	atomic_fetch_add_explicit(&q->completed, 1, memory_order_relaxed);
}

static void
workq_cb(evutil_socket_t fd, short what, void *arg)
{
	struct workq *q = arg;
	struct job *j;
	struct timeval now = {0, 0};
	int n, again;

	(void)fd;
	(void)what;
	pthread_mutex_lock(&q->done_lock);
	STAILQ_CONCAT(&q->ready, &q->done);
	pthread_mutex_unlock(&q->done_lock);

	for (n = 0; n < WORKQ_MAX_COMPLETIONS; n++) {
		if ((j = STAILQ_FIRST(&q->ready)) == NULL)
			break;
		STAILQ_REMOVE_HEAD(&q->ready, entry);
		finish(q, j);
	}

	/* Go idle only when both lists are empty, deciding under the lock. */
	pthread_mutex_lock(&q->done_lock);
	again = !STAILQ_EMPTY(&q->ready) || !STAILQ_EMPTY(&q->done);
	q->armed = again;
	pthread_mutex_unlock(&q->done_lock);
	if (again)
		event_add(q->ev, &now);
}

static void
complete(struct workq *q, struct job *j)
{
	int wake;

	pthread_mutex_lock(&q->lock);
	q->running--;
	pthread_mutex_unlock(&q->lock);

	pthread_mutex_lock(&q->done_lock);
	STAILQ_INSERT_TAIL(&q->done, j, entry);
	wake = !q->armed;
	q->armed = 1;
	pthread_mutex_unlock(&q->done_lock);
	if (wake)
		event_active(q->ev, 0, 0);
}

void
workq_lower_priority(int nice)
{
	id_t tid = (id_t)syscall(SYS_gettid);
	int base;

	if (nice <= 0)
		return;
	/* Relative to what the thread inherited (a unit's Nice=, say). */
	errno = 0;
	base = getpriority(PRIO_PROCESS, tid);
	if (errno != 0)
		base = 0;
	nice = base + nice > 19 ? 19 : base + nice;
	/* Best effort: a thread that stays at the loop's priority still works. */
	if (setpriority(PRIO_PROCESS, tid, nice) == -1)
		log_warn("cannot lower a worker thread's priority: %s",
		    strerror(errno));
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct workq *q = w->q;
	struct job *j;
	void *ctx = NULL;
	char tname[32];
	int failed;

	/* Linux limits thread names to 15 bytes; a cut name beats none. */
	snprintf(tname, sizeof tname, "%s/%d", q->name, w->index);
	tname[15] = '\0';
	pthread_setname_np(pthread_self(), tname);
	workq_lower_priority(q->cfg.nice);

	if (q->cfg.thread_init != NULL)
		ctx = q->cfg.thread_init(q->cfg.init_arg);
	failed = q->cfg.thread_init != NULL && ctx == NULL;
	pthread_mutex_lock(&q->lock);
	q->ninit++;
	if (failed)
		q->init_fail++;
	pthread_cond_signal(&q->started);
	pthread_mutex_unlock(&q->lock);
	if (failed)
		return NULL;

	for (;;) {
		pthread_mutex_lock(&q->lock);
		while (STAILQ_EMPTY(&q->jobs) && !q->stopping)
			pthread_cond_wait(&q->cond, &q->lock);
		/* Stopping exits only once the queue is empty: drain first. */
		if ((j = STAILQ_FIRST(&q->jobs)) == NULL) {
			pthread_mutex_unlock(&q->lock);
			break;
		}
		STAILQ_REMOVE_HEAD(&q->jobs, entry);
		q->queued--;
		q->running++;
		pthread_mutex_unlock(&q->lock);

		j->work(ctx, j->arg);
		complete(q, j);
	}

	if (q->cfg.thread_fini != NULL)
		q->cfg.thread_fini(ctx);
	return NULL;
}

/* Stop and join the threads; the queue drains first. */
static void
stop_threads(struct workq *q)
{
	int i;

	pthread_mutex_lock(&q->lock);
	q->stopping = 1;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
	for (i = 0; i < q->nthreads; i++)
		pthread_join(q->workers[i].tid, NULL);
	q->nthreads = 0;
}

/* Run every completion left, unbounded: nothing else runs at this point. */
static void
run_completions(struct workq *q)
{
	struct job *j;

	pthread_mutex_lock(&q->done_lock);
	STAILQ_CONCAT(&q->ready, &q->done);
	pthread_mutex_unlock(&q->done_lock);
	while ((j = STAILQ_FIRST(&q->ready)) != NULL) {
		STAILQ_REMOVE_HEAD(&q->ready, entry);
		finish(q, j);
	}
}

static void
destroy(struct workq *q)
{
	if (q->ev != NULL)
		event_free(q->ev);
	pthread_cond_destroy(&q->started);
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->done_lock);
	pthread_mutex_destroy(&q->lock);
	free(q->workers);
	free(q);
}

void
workq_block_signals(sigset_t *old)
{
	sigset_t all;

	sigfillset(&all);
	sigdelset(&all, SIGSEGV);
	sigdelset(&all, SIGBUS);
	sigdelset(&all, SIGFPE);
	sigdelset(&all, SIGILL);
	pthread_sigmask(SIG_SETMASK, &all, old);
}

static int
start_threads(struct workq *q)
{
	sigset_t old;
	int i, rc = 0;

	/* Threads inherit the mask: keep async signals for the loop. */
	workq_block_signals(&old);
	for (i = 0; i < q->cfg.threads; i++) {
		q->workers[i].q = q;
		q->workers[i].index = i;
		rc = pthread_create(
		    &q->workers[i].tid, NULL, worker_main, &q->workers[i]);
		if (rc != 0)
			break;
		q->nthreads++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	/* Wait for every started thread's init, so failures show here. */
	pthread_mutex_lock(&q->lock);
	while (q->ninit < q->nthreads)
		pthread_cond_wait(&q->started, &q->lock);
	if (rc == 0 && q->init_fail > 0)
		rc = EIO;
	pthread_mutex_unlock(&q->lock);
	return rc;
}

struct workq *
workq_new(struct event_base *base, const struct workq_config *cfg)
{
	struct workq *q;
	int rc;

	if (base == NULL || cfg == NULL || cfg->threads < 1) {
		errno = EINVAL;
		return NULL;
	}
	if ((q = calloc(1, sizeof *q)) == NULL)
		return NULL;
	q->base = base;
	q->cfg = *cfg;
	snprintf(q->name, sizeof q->name, "%s",
	    cfg->name != NULL ? cfg->name : "workq");
	q->cfg.name = q->name;
	STAILQ_INIT(&q->jobs);
	STAILQ_INIT(&q->done);
	STAILQ_INIT(&q->ready);
	atomic_init(&q->completed, 0);
	pthread_mutex_init(&q->lock, NULL);
	pthread_mutex_init(&q->done_lock, NULL);
	pthread_cond_init(&q->cond, NULL);
	pthread_cond_init(&q->started, NULL);
	q->workers = calloc((size_t)cfg->threads, sizeof *q->workers);
	q->ev = event_new(base, -1, 0, workq_cb, q);
	if (q->workers == NULL || q->ev == NULL) {
		destroy(q);
		errno = ENOMEM;
		return NULL;
	}
	if ((rc = start_threads(q)) != 0) {
		stop_threads(q);
		destroy(q);
		errno = rc;
		return NULL;
	}
	return q;
}

int
workq_submit(struct workq *q, uint64_t owner_id, workq_work_fn work,
    workq_done_fn done, void *arg)
{
	struct job *j;
	int err = 0;

	if (q == NULL || work == NULL) {
		errno = EINVAL;
		return -1;
	}
	/* Allocate outside the lock; a refusal just frees it again. */
	if ((j = malloc(sizeof *j)) == NULL)
		return -1;
	j->owner = owner_id;
	j->work = work;
	j->done = done;
	j->arg = arg;

	pthread_mutex_lock(&q->lock);
	if (q->stopping)
		err = ESHUTDOWN;
	else if (q->cfg.max_pending > 0 &&
	    q->queued + q->running >= q->cfg.max_pending) {
		q->rejected++;
		err = EAGAIN;
	} else {
		STAILQ_INSERT_TAIL(&q->jobs, j, entry);
		q->queued++;
		q->submitted++;
		pthread_cond_signal(&q->cond);
	}
	pthread_mutex_unlock(&q->lock);

	if (err != 0) {
		free(j);
		errno = err;
		return -1;
	}
	return 0;
}

void
workq_stats(struct workq *q, struct workq_stats *out)
{
	pthread_mutex_lock(&q->lock);
	out->submitted = q->submitted;
	out->rejected = q->rejected;
	out->pending = q->queued + q->running;
	pthread_mutex_unlock(&q->lock);
	out->completed =
	    atomic_load_explicit(&q->completed, memory_order_relaxed);
}

size_t
workq_pending(struct workq *q)
{
	size_t n;

	pthread_mutex_lock(&q->lock);
	n = q->queued + q->running;
	pthread_mutex_unlock(&q->lock);
	return n;
}

size_t
workq_running(struct workq *q)
{
	size_t n;

	pthread_mutex_lock(&q->lock);
	n = q->running;
	pthread_mutex_unlock(&q->lock);
	return n;
}

void
workq_free(struct workq *q)
{
	if (q == NULL)
		return;
	stop_threads(q);
	/* No thread is left to call event_active(): finish here. */
	run_completions(q);
	destroy(q);
}
