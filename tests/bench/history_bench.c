/*
 * History writer throughput: the batched writer against one transaction
 * per line (batch_size = 1), on a temporary file.  Each run appends for
 * about RUN_MS (keeping the queue under its limit), then waits for the
 * writer to commit everything; lines/s = lines / (append start .. last
 * commit).  Also shows what history_append costs the loop.
 *
 *   history_bench [run_ms]
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "conf.h"
#include "history.h"
#include "log.h"

#define RUN_MS 1500
#define CHUNK 1000
#define HIGH_WATER 5000 /* queued lines: pause appending above this */

static int64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
rm_db(const char *path)
{
	char p[256];

	unlink(path);
	snprintf(p, sizeof p, "%s-wal", path);
	unlink(p);
	snprintf(p, sizeof p, "%s-shm", path);
	unlink(p);
}

static int
run(struct event_base *base, const char *path, const char *name,
    unsigned batch_size, uint64_t batch_ms, int run_ms)
{
	static const char *rooms[] = {"#lobby", "#dev", "#ops", "#random"};
	struct config *cfg = config_new();
	struct history_stats st;
	struct history *h;
	char err[256], text[96];
	int64_t t0, t_end, append_ns = 0, t;
	uint64_t n = 0;
	int i;

	rm_db(path);
	free(cfg->history_path);
	cfg->history_path = strdup(path);
	cfg->history_batch_size = batch_size;
	cfg->history_batch_ms = batch_ms;
	h = history_open(base, cfg, err, sizeof err);
	config_free(cfg);
	if (h == NULL) {
		fprintf(stderr, "history_open: %s\n", err);
		return -1;
	}

	t0 = now_ns();
	t_end = t0 + (int64_t)run_ms * 1000000;
	while (now_ns() < t_end) {
		history_stats(h, &st);
		if (st.queue_depth > HIGH_WATER) {
			usleep(1000);
			continue;
		}
		t = now_ns();
		for (i = 0; i < CHUNK; i++, n++) {
			snprintf(text, sizeof text,
			    "message %llu: the quick brown fox jumps over it",
			    (unsigned long long)n);
			history_append(h, rooms[n % 4], "bench", 0, text);
		}
		append_ns += now_ns() - t;
	}
	if (history_flush_wait(h, 60000) == -1)
		fprintf(stderr, "%s: flush timed out\n", name);
	t = now_ns() - t0;
	history_stats(h, &st);
	printf("%-22s %6u %9llu %8.2f %10.0f %8llu %9.2f %8.0f\n", name,
	    batch_size, (unsigned long long)st.written, (double)t / 1e9,
	    (double)st.written / ((double)t / 1e9),
	    (unsigned long long)st.batches, (double)st.max_commit_us / 1000,
	    n ? (double)append_ns / (double)n : 0.0);
	history_close(h);
	rm_db(path);
	return 0;
}

int
main(int argc, char **argv)
{
	struct event_base *base;
	char dir[] = "/tmp/parley-bench-XXXXXX", path[64];
	int run_ms = argc > 1 ? atoi(argv[1]) : RUN_MS, rc = 0;

	if (run_ms <= 0)
		run_ms = RUN_MS;
	log_set_level(LOG_WARNING);
	evthread_use_pthreads();
	if ((base = event_base_new()) == NULL || mkdtemp(dir) == NULL) {
		fprintf(stderr, "setup: %s\n", strerror(errno));
		return 1;
	}
	snprintf(path, sizeof path, "%s/bench.db", dir);
	printf("history writer, WAL + synchronous=NORMAL, %d ms per run\n",
	    run_ms);
	printf("%-22s %6s %9s %8s %10s %8s %9s %8s\n", "mode", "batch", "lines",
	    "seconds", "lines/s", "commits", "max ms", "append ns");
	rc |= run(base, path, "batched (512, 50 ms)", 512, 50, run_ms);
	rc |= run(base, path, "batched (64, 50 ms)", 64, 50, run_ms);
	rc |= run(base, path, "one txn per line", 1, 50, run_ms);
	rmdir(dir);
	event_base_free(base);
	return rc ? 1 : 0;
}
