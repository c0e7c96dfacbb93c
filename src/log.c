/* Leveled logging to stderr; see log.h. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "log.h"

/*
 * Process-wide, written by the loop thread.  log_journal and log_prog are
 * set once by log_init, before any thread starts.  log_level also changes
 * on reload while workers log: atomic (relaxed, it guards no other data).
 */
static atomic_int log_level = LOG_INFO;
static int log_journal;
static const char *log_prog = "parleyd";

static const char *const level_names[] = {
    "emerg",
    "alert",
    "crit",
    "error",
    "warning",
    "notice",
    "info",
    "debug",
};

void
log_init(const char *progname)
{
	const char *js;
	struct stat st;
	unsigned long long dev, ino;

	if (progname != NULL)
		log_prog = progname;
	/* JOURNAL_STREAM is "dev:ino" of the stream journald gave us. */
	js = getenv("JOURNAL_STREAM");
	if (js != NULL && sscanf(js, "%llu:%llu", &dev, &ino) == 2 &&
	    fstat(STDERR_FILENO, &st) == 0 &&
	    (unsigned long long)st.st_dev == dev &&
	    (unsigned long long)st.st_ino == ino)
		log_journal = 1;
}

void
log_set_level(int level)
{
	atomic_store_explicit(&log_level, level, memory_order_relaxed);
}

int
log_get_level(void)
{
	return atomic_load_explicit(&log_level, memory_order_relaxed);
}

int
log_level_parse(const char *name)
{
	int i;

	for (i = 0; i < (int)(sizeof level_names / sizeof level_names[0]); i++)
		if (strcasecmp(name, level_names[i]) == 0)
			return i;
	if (strcasecmp(name, "warn") == 0)
		return LOG_WARNING;
	if (strcasecmp(name, "err") == 0)
		return LOG_ERR;
	return -1;
}

const char *
log_level_name(int level)
{
	if (level < 0 || level > LOG_DEBUG)
		return "?";
	return level_names[level];
}

void
log_msg(int level, const char *fmt, ...)
{
	char line[1024], stamp[40];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int saved = errno;

	if (level > log_get_level())
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	/* One fprintf per line so concurrent writers never interleave. */
	if (log_journal) {
		fprintf(stderr, "<%d>%s\n", level, line);
	} else {
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
		fprintf(stderr, "%s.%03ldZ %s[%ld]: %s: %s\n", stamp,
		    ts.tv_nsec / 1000000, log_prog, (long)getpid(),
		    log_level_name(level), line);
	}
	errno = saved;
}

void
log_ssl_errors(int level, const char *what)
{
	unsigned long e;
	char buf[256];

	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, buf, sizeof buf);
		log_msg(level, "%s: %s", what, buf);
	}
}
