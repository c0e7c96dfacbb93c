/*
 * Worker pool: run blocking work (sqlite, hashing) off the event loop.
 *
 * A job's work function runs on one of the pool's threads; its done
 * callback later runs in the loop thread, from the event base given to
 * workq_new().  The program must call evthread_use_pthreads() before it
 * creates that base, or the wake-up from the workers is not thread-safe.
 *
 * A job names its owner by an id (a conn id), never by a pointer: by the
 * time done runs the owner may be gone, so done looks the id up and drops
 * the result if the lookup fails.  arg belongs to the job until done runs;
 * done (or work, when done is NULL) frees it.
 *
 * Jobs start in submission order, but with more than one thread they may
 * finish, and so complete, in any order.
 */
#ifndef PARLEY_WORKQ_H
#define PARLEY_WORKQ_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct workq;

/* At most this many done callbacks per loop wake-up; then others get a turn. */
#define WORKQ_MAX_COMPLETIONS 256

typedef void (*workq_work_fn)(void *thread_ctx, void *arg); /* worker */
typedef void (*workq_done_fn)(uint64_t owner_id, void *arg); /* loop */

struct workq_config {
	const char *name; /* thread names: "name/N", cut to 15 bytes */
	int threads; /* >= 1 */
	size_t max_pending; /* queued + running limit; 0 = unbounded */
	/*
	 * Run on each thread at start: the result is that thread's ctx,
	 * passed to every work function it runs and to thread_fini at exit.
	 * NULL means failure and makes workq_new fail.  Without thread_init
	 * ctx is NULL.
	 */
	void *(*thread_init)(void *init_arg);
	void (*thread_fini)(void *thread_ctx);
	void *init_arg;
	int nice; /* how far below their creator the threads run */
};

struct workq_stats {
	uint64_t submitted; /* accepted jobs */
	uint64_t completed; /* jobs whose done callback has run (or had none) */
	uint64_t rejected; /* refused with EAGAIN: max_pending was reached */
	size_t pending; /* queued + running now */
};

/*
 * Start the threads and wait until each has run thread_init.  NULL with
 * errno set on error: EINVAL for a bad config, EIO when a thread_init
 * failed, or pthread_create's error.  No thread is left behind.
 */
struct workq *workq_new(
    struct event_base *base, const struct workq_config *cfg);

/*
 * Queue work(ctx, arg) and, once it returned, done(owner_id, arg) in the
 * loop thread; done may be NULL.  Any thread may submit.  -1 with errno:
 * EAGAIN when max_pending jobs are queued or running (the caller sheds
 * load), ESHUTDOWN once workq_free has begun, EINVAL, ENOMEM.
 */
int workq_submit(struct workq *q, uint64_t owner_id, workq_work_fn work,
    workq_done_fn done, void *arg);

/*
 * Raise the calling thread's nice value by nice (Linux: per thread; at
 * most 19).  Worker threads run below the event loop, so a core shared
 * with hashing or a history commit serves the loop's clients first.  0
 * leaves it alone.
 */
void workq_lower_priority(int nice);

void workq_stats(struct workq *q, struct workq_stats *out);
/* Jobs queued or running: what max_pending limits. */
size_t workq_pending(struct workq *q);
/* Jobs being run by a worker right now (the rest of pending is queued). */
size_t workq_running(struct workq *q);

/*
 * Refuse new jobs, let the threads finish every queued job, join them,
 * then run the remaining done callbacks here and free everything.  Call it
 * from the loop thread (or with the loop stopped), never from a done
 * callback.  Blocks until the queue is drained.  NULL is a no-op.
 */
void workq_free(struct workq *q);

/*
 * Before pthread_create of any helper thread: block asynchronous signals
 * (the new thread inherits the mask) so they reach the loop thread; SEGV,
 * BUS, FPE and ILL stay deliverable.  Restore with
 * pthread_sigmask(SIG_SETMASK, old, NULL) after the create.
 */
void workq_block_signals(sigset_t *old);

#endif
