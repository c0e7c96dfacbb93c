/*
 * Logging to stderr, one line per event.  Under systemd (JOURNAL_STREAM
 * names our stderr) lines carry "<N>" priority prefixes so journald keeps
 * the level; otherwise they carry a timestamp and the level's name.
 */
#ifndef PARLEY_LOG_H
#define PARLEY_LOG_H

#include <syslog.h>

void log_init(const char *progname);
void log_set_level(int level);
int log_get_level(void);
/* Parse "debug", "info", ... into a syslog level; -1 if unknown. */
int log_level_parse(const char *name);
const char *log_level_name(int level);

void log_msg(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Log and clear the OpenSSL error queue, each entry prefixed by what. */
void log_ssl_errors(int level, const char *what);

/* Arguments are not even evaluated below the level (conn_peer formats). */
#define log_debug(...) \
	do { \
		if (log_get_level() >= LOG_DEBUG) \
			log_msg(LOG_DEBUG, __VA_ARGS__); \
	} while (0)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)

#endif
