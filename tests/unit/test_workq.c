/*
 * Unit tests for src/workq.c: every job completes once, on the right
 * threads; per-thread state; load shedding; the owner-gone pattern;
 * draining shutdown; bounded completions per loop wake-up.
 *
 * The loop runs until a counter reaches its target, with a safety timer
 * that fails the test instead of hanging it.  Workers are held back with
 * a gate (mutex + condvar), never with sleeps.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "tap.h"
#include "workq.h"

#define SAFETY_S 10

static struct event_base *base;
static pthread_t loop_thread;
static int timed_out;

/* Done-side counters: touched only in the loop thread. */
static int ndone;
static int done_off_loop;

/* Work-side counters: touched by the workers. */
static atomic_int nwork;
static atomic_int work_on_loop;

static void
reset_counters(void)
{
	ndone = 0;
	done_off_loop = 0;
	atomic_store(&nwork, 0);
	atomic_store(&work_on_loop, 0);
}

static void
safety_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	timed_out = 1;
}

/* Run the loop until *count reaches target; 0 if the safety timer fired. */
static int
loop_until(const int *count, int target)
{
	struct event *t = evtimer_new(base, safety_cb, NULL);
	struct timeval tv = {SAFETY_S, 0};

	timed_out = 0;
	evtimer_add(t, &tv);
	while (*count < target && !timed_out)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(t);
	if (timed_out)
		diag("timed out at %d of %d", *count, target);
	return !timed_out;
}

/* A gate that holds workers back until the test opens it. */
static pthread_mutex_t gate_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_open;

static void
gate_set(int open)
{
	pthread_mutex_lock(&gate_mtx);
	gate_open = open;
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_mtx);
}

static void
gate_wait(void)
{
	pthread_mutex_lock(&gate_mtx);
	while (!gate_open)
		pthread_cond_wait(&gate_cond, &gate_mtx);
	pthread_mutex_unlock(&gate_mtx);
}

static void
note_work_thread(void)
{
	if (pthread_equal(pthread_self(), loop_thread))
		atomic_fetch_add(&work_on_loop, 1);
	atomic_fetch_add(&nwork, 1);
}

static void
note_done_thread(void)
{
	if (!pthread_equal(pthread_self(), loop_thread))
		done_off_loop++;
	ndone++;
}

/* 10,000 jobs over 4 threads: each runs and completes exactly once. */

#define MANY 10000
#define MANY_OWNER_BASE 1000000

static int many_runs[MANY];
static int many_dones[MANY];
static int many_bad_owner;

static void
many_work(void *ctx, void *arg)
{
	(void)ctx;
	many_runs[(intptr_t)arg]++;
	note_work_thread();
}

static void
many_done(uint64_t owner, void *arg)
{
	intptr_t i = (intptr_t)arg;

	if (owner != (uint64_t)(MANY_OWNER_BASE + i))
		many_bad_owner++;
	many_dones[i]++;
	note_done_thread();
}

static void
test_many(void)
{
	struct workq_config cfg = {.name = "many", .threads = 4};
	struct workq_stats st;
	struct workq *q;
	int i, once_run = 1, once_done = 1, refused = 0;

	reset_counters();
	if (!ok((q = workq_new(base, &cfg)) != NULL, "workq_new, 4 threads"))
		return;
	for (i = 0; i < MANY; i++)
		if (workq_submit(q, MANY_OWNER_BASE + (uint64_t)i, many_work,
			many_done, (void *)(intptr_t)i) != 0)
			refused++;
	is_int(refused, 0, "unbounded queue accepts %d jobs", MANY);
	ok(loop_until(&ndone, MANY), "all done callbacks ran");
	for (i = 0; i < MANY; i++) {
		if (many_runs[i] != 1)
			once_run = 0;
		if (many_dones[i] != 1)
			once_done = 0;
	}
	ok(once_run, "every work function ran exactly once");
	ok(once_done, "every done callback ran exactly once");
	is_int(many_bad_owner, 0, "done gets the job's owner id");
	is_int(atomic_load(&work_on_loop), 0, "work never ran on the loop");
	is_int(done_off_loop, 0, "done always ran on the loop thread");
	workq_stats(q, &st);
	is_int(st.submitted, MANY, "stats: submitted");
	is_int(st.completed, MANY, "stats: completed");
	is_int(st.rejected, 0, "stats: rejected");
	is_int(st.pending, 0, "stats: pending");
	workq_free(q);
}

/* Per-thread state: init and fini once per thread, ctx reaches work. */

#define CTX_MAGIC 0x5eed
#define CTX_THREADS 3

struct tctx {
	int magic;
	pthread_t tid;
};

static atomic_int ninit, nfini, bad_ctx, bad_init_arg, fail_init_at;
static int init_marker;

static void *
ctx_init(void *init_arg)
{
	struct tctx *c;

	if (init_arg != &init_marker)
		atomic_fetch_add(&bad_init_arg, 1);
	if (atomic_fetch_add(&ninit, 1) + 1 == atomic_load(&fail_init_at))
		return NULL;
	if ((c = malloc(sizeof *c)) == NULL)
		return NULL;
	c->magic = CTX_MAGIC;
	c->tid = pthread_self();
	return c;
}

static void
ctx_fini(void *ctx)
{
	struct tctx *c = ctx;

	if (c == NULL || c->magic != CTX_MAGIC ||
	    !pthread_equal(c->tid, pthread_self()))
		atomic_fetch_add(&bad_ctx, 1);
	atomic_fetch_add(&nfini, 1);
	free(c);
}

static void
ctx_work(void *ctx, void *arg)
{
	struct tctx *c = ctx;

	(void)arg;
	if (c == NULL || c->magic != CTX_MAGIC ||
	    !pthread_equal(c->tid, pthread_self()))
		atomic_fetch_add(&bad_ctx, 1);
	note_work_thread();
}

static void
ctx_done(uint64_t owner, void *arg)
{
	(void)owner;
	(void)arg;
	note_done_thread();
}

static void
test_thread_ctx(void)
{
	struct workq_config cfg = {.name = "ctx",
	    .threads = CTX_THREADS,
	    .thread_init = ctx_init,
	    .thread_fini = ctx_fini,
	    .init_arg = &init_marker};
	struct workq *q;
	int i;

	reset_counters();
	atomic_store(&fail_init_at, 0);
	if (!ok((q = workq_new(base, &cfg)) != NULL, "workq_new with init"))
		return;
	is_int(atomic_load(&ninit), CTX_THREADS,
	    "thread_init ran once per thread before workq_new returned");
	for (i = 0; i < 300; i++)
		workq_submit(q, (uint64_t)i, ctx_work, ctx_done, NULL);
	ok(loop_until(&ndone, 300), "ctx jobs done");
	workq_free(q);
	is_int(atomic_load(&nfini), CTX_THREADS,
	    "thread_fini ran once per thread");
	is_int(atomic_load(&bad_ctx), 0,
	    "work and fini get their own thread's ctx");
	is_int(atomic_load(&bad_init_arg), 0, "thread_init gets init_arg");

	/* One failing thread_init fails workq_new and unwinds the rest. */
	atomic_store(&ninit, 0);
	atomic_store(&nfini, 0);
	atomic_store(&fail_init_at, 2);
	errno = 0;
	q = workq_new(base, &cfg);
	ok(q == NULL && errno != 0, "workq_new fails when a thread_init does");
	workq_free(q);
	is_int(atomic_load(&ninit), CTX_THREADS, "every thread tried init");
	is_int(atomic_load(&nfini), CTX_THREADS - 1,
	    "threads whose init worked ran fini");
	is_int(atomic_load(&bad_ctx), 0, "fini got the right ctx");
}

/* max_pending: refusals with EAGAIN, counted; room again once done. */

static void
gated_work(void *ctx, void *arg)
{
	(void)ctx;
	(void)arg;
	gate_wait();
	note_work_thread();
}

static void
plain_done(uint64_t owner, void *arg)
{
	(void)owner;
	(void)arg;
	note_done_thread();
}

static void
test_max_pending(void)
{
	struct workq_config cfg = {
	    .name = "bounded", .threads = 1, .max_pending = 4};
	struct workq_stats st;
	struct workq *q;
	int i, accepted = 0, rc, err;

	reset_counters();
	gate_set(0);
	if (!ok((q = workq_new(base, &cfg)) != NULL, "workq_new bounded"))
		return;
	for (i = 0; i < 4; i++)
		if (workq_submit(q, 1, gated_work, plain_done, NULL) == 0)
			accepted++;
	is_int(accepted, 4, "up to max_pending jobs are accepted");
	errno = 0;
	rc = workq_submit(q, 1, gated_work, plain_done, NULL);
	err = errno;
	ok(rc == -1 && err == EAGAIN, "one more is refused with EAGAIN");
	workq_submit(q, 1, gated_work, plain_done, NULL);
	is_int(workq_pending(q), 4, "pending counts queued and running");
	ok(workq_running(q) <= 1, "at most one running on one thread");
	workq_stats(q, &st);
	is_int(st.rejected, 2, "stats: two rejected");
	is_int(st.submitted, 4, "stats: rejected jobs are not submitted");

	gate_set(1);
	ok(loop_until(&ndone, 4), "the accepted jobs complete");
	is_int(workq_pending(q), 0, "nothing pending");
	is_int(workq_submit(q, 1, gated_work, plain_done, NULL), 0,
	    "room again after completion");
	ok(loop_until(&ndone, 5), "that job completes too");

	errno = 0;
	rc = workq_submit(q, 1, NULL, plain_done, NULL);
	ok(rc == -1 && errno == EINVAL, "NULL work is refused with EINVAL");
	workq_free(q);
}

/*
 * Owner gone: done looks its owner up by id in a registry (as conn.c's
 * conn_lookup does) and drops the result if the owner closed meanwhile.
 */

#define NOWNERS 8

struct owner {
	uint64_t id;
	int results;
};

static struct owner *owners[NOWNERS]; /* loop thread only */
static int skipped;

static struct owner *
owner_lookup(uint64_t id)
{
	int i;

	for (i = 0; i < NOWNERS; i++)
		if (owners[i] != NULL && owners[i]->id == id)
			return owners[i];
	return NULL;
}

static void
owner_close(uint64_t id)
{
	int i;

	for (i = 0; i < NOWNERS; i++)
		if (owners[i] != NULL && owners[i]->id == id) {
			free(owners[i]);
			owners[i] = NULL;
		}
}

static void
result_work(void *ctx, void *arg)
{
	(void)ctx;
	gate_wait();
	*(int *)arg = 42; /* the "query result" */
	note_work_thread();
}

static void
result_done(uint64_t owner_id, void *arg)
{
	struct owner *o;

	note_done_thread();
	if ((o = owner_lookup(owner_id)) == NULL) {
		skipped++; /* gone: drop the result, but still free it */
		free(arg);
		return;
	}
	o->results += *(int *)arg == 42;
	free(arg);
}

static void
test_owner_gone(void)
{
	struct workq_config cfg = {.name = "owners", .threads = 2};
	struct workq *q;
	int i, live_ok = 1;

	reset_counters();
	skipped = 0;
	gate_set(0);
	if (!ok((q = workq_new(base, &cfg)) != NULL, "workq_new owners"))
		return;
	for (i = 0; i < NOWNERS; i++) {
		owners[i] = calloc(1, sizeof *owners[i]);
		owners[i]->id = 700 + (uint64_t)i;
		workq_submit(q, owners[i]->id, result_work, result_done,
		    calloc(1, sizeof(int)));
	}
	/* Two owners close while their jobs are still held at the gate. */
	owner_close(703);
	owner_close(705);
	gate_set(1);
	ok(loop_until(&ndone, NOWNERS), "all owner jobs completed");
	is_int(skipped, 2, "results for the two closed owners were dropped");
	for (i = 0; i < NOWNERS; i++) {
		if (owners[i] == NULL)
			continue;
		if (owners[i]->results != 1)
			live_ok = 0;
		free(owners[i]);
		owners[i] = NULL;
	}
	ok(live_ok, "each live owner got its one result");
	workq_free(q);
}

/* Shutdown with jobs still queued: workq_free drains them all. */

#define DRAIN 200

static int drain_dones[DRAIN];
static int resubmit_rc, resubmit_errno;
static struct workq *drain_q;

static void
drain_work(void *ctx, void *arg)
{
	(void)ctx;
	gate_wait();
	((int *)arg)[1] = 1;
	note_work_thread();
}

static void
drain_done(uint64_t owner, void *arg)
{
	int *a = arg;

	(void)owner;
	note_done_thread();
	if (a[1] == 1)
		drain_dones[a[0]]++;
	if (a[0] == 0) {
		errno = 0;
		resubmit_rc =
		    workq_submit(drain_q, 0, drain_work, drain_done, NULL);
		resubmit_errno = errno;
	}
	free(a);
}

static void
test_drain(void)
{
	struct workq_config cfg = {.name = "drain", .threads = 1};
	int i, once = 1, *a;

	reset_counters();
	gate_set(0);
	if (!ok((drain_q = workq_new(base, &cfg)) != NULL, "workq_new drain"))
		return;
	for (i = 0; i < DRAIN; i++) {
		a = calloc(2, sizeof *a);
		a[0] = i;
		workq_submit(drain_q, (uint64_t)i, drain_work, drain_done, a);
	}
	/* The one thread is stuck on job 0: the rest is surely queued. */
	is_int(workq_pending(drain_q), DRAIN, "all jobs pending at free");
	gate_set(1);
	workq_free(drain_q);
	drain_q = NULL;
	is_int(ndone, DRAIN, "workq_free ran every done callback");
	for (i = 0; i < DRAIN; i++)
		if (drain_dones[i] != 1)
			once = 0;
	ok(once, "each queued job ran, then completed, exactly once");
	is_int(done_off_loop, 0, "drained done callbacks ran in the caller");
	ok(resubmit_rc == -1 && resubmit_errno == ESHUTDOWN,
	    "submit during workq_free is refused with ESHUTDOWN");
}

/*
 * Bounded completions per wake-up: with everything finished before the
 * loop runs, a zero-timeout timer that re-arms itself must still run
 * between batches of at most WORKQ_MAX_COMPLETIONS done callbacks.
 */

#define BURST (4 * WORKQ_MAX_COMPLETIONS + 10)

static pthread_mutex_t burst_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t burst_cond = PTHREAD_COND_INITIALIZER;
static int burst_worked;
static int ticks, last_tick, run_len, max_run, batches;
static struct event *tick_ev;

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct timeval zero = {0, 0};

	(void)fd;
	(void)what;
	(void)arg;
	ticks++;
	evtimer_add(tick_ev, &zero);
}

static void
burst_work(void *ctx, void *arg)
{
	(void)ctx;
	(void)arg;
	note_work_thread();
	pthread_mutex_lock(&burst_mtx);
	if (++burst_worked == BURST)
		pthread_cond_signal(&burst_cond);
	pthread_mutex_unlock(&burst_mtx);
}

static void
burst_done(uint64_t owner, void *arg)
{
	(void)owner;
	(void)arg;
	note_done_thread();
	if (ndone == 1 || ticks != last_tick) {
		batches++;
		run_len = 0;
		last_tick = ticks;
	}
	if (++run_len > max_run)
		max_run = run_len;
}

static void
test_bounded_wakeup(void)
{
	struct workq_config cfg = {.name = "burst", .threads = 2};
	struct timeval zero = {0, 0};
	struct workq *q;
	int i;

	reset_counters();
	ticks = last_tick = run_len = max_run = batches = 0;
	burst_worked = 0;
	if (!ok((q = workq_new(base, &cfg)) != NULL, "workq_new burst"))
		return;
	for (i = 0; i < BURST; i++)
		workq_submit(q, (uint64_t)i, burst_work, burst_done, NULL);
	/* Let all the work finish while the loop is not running. */
	pthread_mutex_lock(&burst_mtx);
	while (burst_worked < BURST)
		pthread_cond_wait(&burst_cond, &burst_mtx);
	pthread_mutex_unlock(&burst_mtx);

	tick_ev = evtimer_new(base, tick_cb, NULL);
	evtimer_add(tick_ev, &zero);
	ok(loop_until(&ndone, BURST), "burst completed");
	event_free(tick_ev);
	diag("%d completions in %d batches, longest %d", BURST, batches,
	    max_run);
	ok(max_run <= WORKQ_MAX_COMPLETIONS,
	    "at most %d done callbacks without the timer running",
	    WORKQ_MAX_COMPLETIONS);
	ok(batches >=
		(BURST + WORKQ_MAX_COMPLETIONS - 1) / WORKQ_MAX_COMPLETIONS,
	    "the timer ran between batches");
	workq_free(q);
}

static void
test_bad_config(void)
{
	struct workq_config cfg = {.name = "bad", .threads = 0};

	errno = 0;
	ok(workq_new(base, &cfg) == NULL && errno == EINVAL,
	    "threads = 0 is refused with EINVAL");
	cfg.threads = 1;
	errno = 0;
	ok(workq_new(NULL, &cfg) == NULL && errno == EINVAL,
	    "a NULL base is refused with EINVAL");
}

int
main(void)
{
	if (evthread_use_pthreads() != 0 || (base = event_base_new()) == NULL) {
		printf("Bail out! cannot set up libevent\n");
		return 1;
	}
	loop_thread = pthread_self();

	test_bad_config();
	test_many();
	test_thread_ctx();
	test_max_pending();
	test_owner_gone();
	test_drain();
	test_bounded_wakeup();

	event_base_free(base);
	libevent_global_shutdown();
	return done_testing();
}
