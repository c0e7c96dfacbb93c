/*
 * Config loading: defaults -> INI parse (libinih) -> validate.
 *
 * libinih does not tell its handler the line number, so we feed it
 * through ini_parse_stream() with our own reader that counts lines; the
 * handler then knows the line it is looking at.  The reader also sees
 * section headers, which lets us reject duplicate sections and create
 * listeners for [listen NAME] sections that have no keys yet.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ini.h>
#include <openssl/ssl.h>

#include "conf.h"
#include "log.h"

enum key_type {
	K_UINT,
	K_DURATION,
	K_SIZE,
	K_BOOL,
	K_STRING,
	K_LOGLEVEL,
	K_TLSVER,
	K_KDF
};

struct key {
	const char *section;
	const char *name;
	enum key_type type;
	size_t offset;
	unsigned long long min, max; /* K_UINT, K_SIZE, K_DURATION (ms) */
};

#define OFF(f) offsetof(struct config, f)
#define DAY (24ULL * 3600 * 1000)
static const struct key keys[] = {
    {"server", "state_directory", K_STRING, OFF(state_directory), 0, 0},
    {"server", "user", K_STRING, OFF(user), 0, 0},
    {"server", "allow_root", K_BOOL, OFF(allow_root), 0, 0},
    {"server", "log_level", K_LOGLEVEL, OFF(log_level), 0, 0},
    {"server", "max_connections", K_UINT, OFF(max_connections), 1, 1000000},
    {"server", "max_connections_per_ip", K_UINT, OFF(max_connections_per_ip), 0,
	1000000},
    {"server", "connection_rate_per_ip", K_UINT, OFF(connection_rate_per_ip), 0,
	1000000},
    {"server", "connection_burst_per_ip", K_UINT, OFF(connection_burst_per_ip),
	1, 1000000},
    {"server", "handshake_timeout", K_DURATION, OFF(handshake_timeout_ms), 100,
	DAY},
    {"server", "idle_timeout", K_DURATION, OFF(idle_timeout_ms), 0, 30 * DAY},
    {"server", "shutdown_timeout", K_DURATION, OFF(shutdown_timeout_ms), 0,
	3600 * 1000},
    {"server", "workers", K_UINT, OFF(workers), 1, 64},
    {"server", "worker_nice", K_UINT, OFF(worker_nice), 0, 19},
    {"server", "idle_release", K_DURATION, OFF(idle_release_ms), 0, DAY},
    {"server", "loop_lag_interval", K_DURATION, OFF(loop_lag_interval_ms), 1,
	60 * 1000},
    {"server", "backlog", K_UINT, OFF(backlog), 1, 65535},
    {"tls", "certificate", K_STRING, OFF(tls_certificate), 0, 0},
    {"tls", "private_key", K_STRING, OFF(tls_private_key), 0, 0},
    {"tls", "ciphers", K_STRING, OFF(tls_ciphers), 0, 0},
    {"tls", "ciphersuites", K_STRING, OFF(tls_ciphersuites), 0, 0},
    {"tls", "min_protocol", K_TLSVER, OFF(tls_min_version), 0, 0},
    {"echo", "buffer_limit", K_SIZE, OFF(echo_buffer_limit), 4096, 1ULL << 30},
    {"chat", "default_room", K_STRING, OFF(chat_default_room), 0, 0},
    {"chat", "max_line_length", K_SIZE, OFF(chat_max_line), 64, 65536},
    {"chat", "nick_length", K_UINT, OFF(chat_nick_max), 1, 64},
    {"chat", "room_length", K_UINT, OFF(chat_room_max), 1, 64},
    {"chat", "max_rooms_per_client", K_UINT, OFF(chat_max_rooms_per_client), 1,
	1000},
    {"chat", "max_rooms", K_UINT, OFF(chat_max_rooms), 1, 1000000},
    {"chat", "room_list_max", K_UINT, OFF(chat_room_list_max), 1, 100000},
    {"chat", "room_key_length", K_UINT, OFF(chat_room_key_max), 1, 256},
    {"chat", "resume_window", K_DURATION, OFF(chat_resume_window_ms), 0, DAY},
    {"chat", "resume_max_sessions", K_UINT, OFF(chat_resume_max), 1, 1000000},
    {"chat", "resume_replay_max", K_UINT, OFF(chat_resume_replay_max), 1,
	10000},
    {"chat", "flood_rate", K_UINT, OFF(chat_flood_rate), 1, 1000000},
    {"chat", "flood_burst", K_UINT, OFF(chat_flood_burst), 1, 1000000},
    {"chat", "output_soft_limit", K_SIZE, OFF(chat_output_soft_limit), 1024,
	1ULL << 30},
    {"chat", "output_hard_limit", K_SIZE, OFF(chat_output_hard_limit), 2048,
	1ULL << 31},
    {"chat", "max_connections_per_ip", K_UINT, OFF(max_connections_per_ip), 0,
	1000000},
    {"history", "enabled", K_BOOL, OFF(history_enabled), 0, 0},
    {"history", "path", K_STRING, OFF(history_path), 0, 0},
    {"history", "replay", K_UINT, OFF(history_replay), 0, 1000},
    {"history", "batch_size", K_UINT, OFF(history_batch_size), 1, 100000},
    {"history", "batch_interval", K_DURATION, OFF(history_batch_ms), 1, 10000},
    {"history", "queue_limit", K_UINT, OFF(history_queue_limit), 1, 10000000},
    {"history", "max_age", K_DURATION, OFF(history_max_age_ms), 0, 3650 * DAY},
    {"history", "max_messages_per_room", K_UINT, OFF(history_max_per_room), 0,
	1000000000},
    {"history", "page_limit", K_UINT, OFF(history_page_max), 1, 1000},
    {"history", "cache_size", K_SIZE, OFF(history_cache_size), 64 * 1024,
	1ULL << 30},
    {"history", "required", K_BOOL, OFF(history_required), 0, 0},
    {"operators", "accounts", K_STRING, OFF(operator_accounts), 0, 0},
    {"operators", "fingerprints", K_STRING, OFF(operator_fingerprints), 0, 0},
    {"accounts", "enabled", K_BOOL, OFF(accounts_enabled), 0, 0},
    {"accounts", "path", K_STRING, OFF(accounts_path), 0, 0},
    {"accounts", "required", K_BOOL, OFF(accounts_required), 0, 0},
    {"accounts", "kdf", K_KDF, OFF(accounts_kdf), 0, 0},
    {"accounts", "scrypt_n", K_UINT, OFF(accounts_scrypt_n), 2, 1u << 20},
    {"accounts", "scrypt_r", K_UINT, OFF(accounts_scrypt_r), 1, 32},
    {"accounts", "scrypt_p", K_UINT, OFF(accounts_scrypt_p), 1, 16},
    {"accounts", "pbkdf2_iterations", K_UINT, OFF(accounts_pbkdf2_iterations),
	1000, 100000000},
    {"accounts", "password_min_length", K_UINT, OFF(accounts_password_min), 1,
	256},
    {"accounts", "failure_delay", K_DURATION, OFF(accounts_failure_delay_ms), 0,
	60 * 1000},
    {"accounts", "failure_delay_max", K_DURATION,
	OFF(accounts_failure_delay_max_ms), 0, 3600 * 1000},
    {"accounts", "failures_per_address", K_UINT,
	OFF(accounts_failures_per_address), 0, 1000000},
    {"accounts", "failure_window", K_DURATION, OFF(accounts_failure_window_ms),
	1000, DAY},
    {"accounts", "registrations_per_connection", K_UINT,
	OFF(accounts_registrations), 1, 1000},
    {"accounts", "threads", K_UINT, OFF(accounts_threads), 1, 64},
    {"accounts", "queue_limit", K_UINT, OFF(accounts_queue_limit), 1, 1000000},
};

struct parse_state {
	struct config *cfg;
	const char *path;
	const char *text; /* remaining input */
	int line; /* line number of the line last read */
	char section[128]; /* section of the line last read */
	struct listen_config *cur_listener;
	char **seen; /* section names seen, for duplicates */
	size_t nseen;
	char *err;
	size_t errlen;
	int failed;
};

static void set_err(struct parse_state *ps, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
set_err(struct parse_state *ps, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (ps->failed)
		return; /* keep the first error: it explains the rest */
	ps->failed = 1;
	n = snprintf(ps->err, ps->errlen, "%s:%d: ", ps->path, ps->line);
	if (n < 0 || (size_t)n >= ps->errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(ps->err + n, ps->errlen - n, fmt, ap);
	va_end(ap);
}

const char *
service_name(enum service_kind kind)
{
	switch (kind) {
	case SERVICE_ECHO:
		return "echo";
	case SERVICE_CHAT:
		return "chat";
	case SERVICE_METRICS:
		return "metrics";
	}
	return "?";
}

int
parse_duration_ms(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	uint64_t mul;

	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	if (*end == '\0' || strcmp(end, "s") == 0)
		mul = 1000;
	else if (strcmp(end, "ms") == 0)
		mul = 1;
	else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
		mul = 60 * 1000;
	else if (strcmp(end, "h") == 0)
		mul = 3600 * 1000;
	else if (strcmp(end, "d") == 0)
		mul = 24 * 3600 * 1000;
	else
		return -1;
	if (v > UINT64_MAX / mul)
		return -1;
	*out = v * mul;
	return 0;
}

int
parse_size(const char *s, size_t *out)
{
	char *end;
	unsigned long long v, mul;

	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	if (*end == '\0')
		mul = 1;
	else if (strcasecmp(end, "k") == 0 || strcasecmp(end, "kb") == 0 ||
	    strcasecmp(end, "kib") == 0)
		mul = 1024;
	else if (strcasecmp(end, "m") == 0 || strcasecmp(end, "mb") == 0 ||
	    strcasecmp(end, "mib") == 0)
		mul = 1024 * 1024;
	else if (strcasecmp(end, "g") == 0 || strcasecmp(end, "gb") == 0 ||
	    strcasecmp(end, "gib") == 0)
		mul = 1024ULL * 1024 * 1024;
	else
		return -1;
	if (v > SIZE_MAX / mul)
		return -1;
	*out = (size_t)(v * mul);
	return 0;
}

int
parse_bool(const char *s, int *out)
{
	if (strcasecmp(s, "yes") == 0 || strcasecmp(s, "true") == 0 ||
	    strcasecmp(s, "on") == 0 || strcmp(s, "1") == 0)
		*out = 1;
	else if (strcasecmp(s, "no") == 0 || strcasecmp(s, "false") == 0 ||
	    strcasecmp(s, "off") == 0 || strcmp(s, "0") == 0)
		*out = 0;
	else
		return -1;
	return 0;
}

static int
parse_uint(const char *s, unsigned long long *out)
{
	char *end;

	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	*out = strtoull(s, &end, 10);
	return (errno != 0 || *end != '\0') ? -1 : 0;
}

static char *
xstrdup(const char *s)
{
	char *p = strdup(s);

	if (p == NULL)
		abort(); /* configuration is tiny; OOM here is unrecoverable */
	return p;
}

struct config *
config_new(void)
{
	struct config *cfg = calloc(1, sizeof *cfg);

	if (cfg == NULL)
		abort();
	cfg->state_directory = xstrdup("/var/lib/parleyd");
	cfg->log_level = LOG_INFO;
	cfg->max_connections = 10000;
	cfg->max_connections_per_ip = 64;
	cfg->connection_rate_per_ip = 60;
	cfg->connection_burst_per_ip = 20;
	cfg->handshake_timeout_ms = 10 * 1000;
	cfg->idle_timeout_ms = 0;
	cfg->shutdown_timeout_ms = 5 * 1000;
	cfg->workers = 4;
	cfg->worker_nice = 10;
	cfg->loop_lag_interval_ms = 100;
	cfg->idle_release_ms = 1000;
	cfg->backlog = 511;
	cfg->tls_ciphers = xstrdup("HIGH:!aNULL:!MD5:!RC4:!3DES:!CBC");
	cfg->tls_ciphersuites =
	    xstrdup("TLS_AES_128_GCM_SHA256:"
		    "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
	cfg->tls_min_version = TLS1_2_VERSION;
	cfg->echo_buffer_limit = 256 * 1024;
	cfg->chat_default_room = xstrdup("#lobby");
	cfg->chat_max_line = 4096;
	cfg->chat_nick_max = 24;
	cfg->chat_room_max = 32;
	cfg->chat_max_rooms_per_client = 20;
	cfg->chat_max_rooms = 10000;
	cfg->chat_room_list_max = 256;
	cfg->chat_room_key_max = 64;
	cfg->chat_resume_window_ms = 10 * 60 * 1000;
	cfg->chat_resume_max = 10000;
	cfg->chat_resume_replay_max = 1000;
	cfg->chat_flood_rate = 10;
	cfg->chat_flood_burst = 20;
	cfg->chat_output_soft_limit = 256 * 1024;
	cfg->chat_output_hard_limit = 4 * 1024 * 1024;
	cfg->history_enabled = 1;
	cfg->history_replay = 20;
	cfg->history_batch_size = 512;
	cfg->history_batch_ms = 50;
	cfg->history_queue_limit = 200000;
	cfg->history_max_age_ms = 0;
	cfg->history_max_per_room = 0;
	cfg->history_page_max = 50;
	cfg->history_cache_size = 1024 * 1024;
	cfg->history_required = 0;
	cfg->accounts_enabled = 1;
	cfg->accounts_kdf = 0; /* scrypt */
	cfg->accounts_scrypt_n = 1u << 15;
	cfg->accounts_scrypt_r = 8;
	cfg->accounts_scrypt_p = 1;
	cfg->accounts_pbkdf2_iterations = 600000;
	cfg->accounts_password_min = 8;
	cfg->accounts_failure_delay_ms = 1000;
	cfg->accounts_failure_delay_max_ms = 30 * 1000;
	cfg->accounts_failures_per_address = 10;
	cfg->accounts_failure_window_ms = 10 * 60 * 1000;
	cfg->accounts_registrations = 3;
	cfg->accounts_threads = 2;
	cfg->accounts_queue_limit = 256;
	return cfg;
}

void
config_free(struct config *cfg)
{
	size_t i;

	if (cfg == NULL)
		return;
	for (i = 0; i < cfg->nlisteners; i++) {
		free(cfg->listeners[i].name);
		free(cfg->listeners[i].address);
	}
	free(cfg->listeners);
	free(cfg->path);
	free(cfg->state_directory);
	free(cfg->user);
	free(cfg->tls_certificate);
	free(cfg->tls_private_key);
	free(cfg->tls_ciphers);
	free(cfg->tls_ciphersuites);
	free(cfg->chat_default_room);
	free(cfg->history_path);
	free(cfg->accounts_path);
	free(cfg->operator_accounts);
	free(cfg->operator_fingerprints);
	free(cfg);
}

static struct listen_config *
add_listener(struct parse_state *ps, const char *name)
{
	struct config *cfg = ps->cfg;
	struct listen_config *l, *n;

	n = realloc(cfg->listeners, (cfg->nlisteners + 1) * sizeof *n);
	if (n == NULL)
		abort();
	cfg->listeners = n;
	l = &cfg->listeners[cfg->nlisteners++];
	memset(l, 0, sizeof *l);
	l->name = xstrdup(name);
	l->address = xstrdup("127.0.0.1");
	l->port = -1;
	l->service = SERVICE_ECHO;
	l->line = ps->line;
	return l;
}

/* Called by the reader for every "[...]" line. */
static void
begin_section(struct parse_state *ps, const char *name)
{
	size_t i;
	char **n;

	for (i = 0; i < ps->nseen; i++) {
		if (strcmp(ps->seen[i], name) == 0) {
			set_err(ps, "duplicate section [%s]", name);
			return;
		}
	}
	n = realloc(ps->seen, (ps->nseen + 1) * sizeof *n);
	if (n == NULL)
		abort();
	ps->seen = n;
	ps->seen[ps->nseen++] = xstrdup(name);

	ps->cur_listener = NULL;
	if (strncmp(name, "listen", 6) == 0 &&
	    (name[6] == ' ' || name[6] == '\t' || name[6] == '\0')) {
		const char *ln = name + 6;

		while (*ln == ' ' || *ln == '\t')
			ln++;
		if (*ln == '\0') {
			set_err(ps, "[listen] needs a name: [listen NAME]");
			return;
		}
		ps->cur_listener = add_listener(ps, ln);
	} else if (strcmp(name, "server") != 0 && strcmp(name, "tls") != 0 &&
	    strcmp(name, "echo") != 0 && strcmp(name, "chat") != 0 &&
	    strcmp(name, "history") != 0 && strcmp(name, "accounts") != 0 &&
	    strcmp(name, "operators") != 0) {
		set_err(ps, "unknown section [%s]", name);
	}
}

/* ini_reader: hand inih one line at a time, counting lines. */
static char *
reader(char *buf, int size, void *stream)
{
	struct parse_state *ps = stream;
	const char *nl, *p;
	size_t len, take;

	if (*ps->text == '\0')
		return NULL;
	nl = strchr(ps->text, '\n');
	len = nl ? (size_t)(nl - ps->text) + 1 : strlen(ps->text);
	take = len < (size_t)size - 1 ? len : (size_t)size - 1;
	memcpy(buf, ps->text, take);
	buf[take] = '\0';
	ps->line++;
	if (take < len && !ps->failed)
		set_err(ps, "line too long (at most %d characters)", size - 2);
	ps->text += len;

	/* Section header?  Mirror inih's rules closely enough to name it. */
	for (p = buf; *p == ' ' || *p == '\t'; p++)
		;
	if (*p == '[') {
		const char *end = strchr(p, ']');
		char name[sizeof ps->section];
		size_t n;

		if (end != NULL) {
			n = (size_t)(end - p - 1);
			if (n >= sizeof name)
				n = sizeof name - 1;
			memcpy(name, p + 1, n);
			name[n] = '\0';
			/* trim */
			while (n > 0 && isspace((unsigned char)name[n - 1]))
				name[--n] = '\0';
			p = name;
			while (isspace((unsigned char)*p))
				p++;
			memmove(name, p, strlen(p) + 1);
			snprintf(ps->section, sizeof ps->section, "%s", name);
			begin_section(ps, name);
		}
	}
	return buf;
}

static int
set_listener_key(struct parse_state *ps, struct listen_config *l,
    const char *name, const char *value)
{
	unsigned long long v;

	if (strcmp(name, "address") == 0) {
		if (*value == '\0') {
			set_err(ps, "address must not be empty");
			return 0;
		}
		free(l->address);
		l->address = xstrdup(value);
	} else if (strcmp(name, "port") == 0) {
		if (parse_uint(value, &v) == -1 || v > 65535) {
			set_err(ps,
			    "port must be a number from 0 to 65535, "
			    "not \"%s\"",
			    value);
			return 0;
		}
		l->port = (int)v;
	} else if (strcmp(name, "service") == 0) {
		if (strcmp(value, "echo") == 0)
			l->service = SERVICE_ECHO;
		else if (strcmp(value, "chat") == 0)
			l->service = SERVICE_CHAT;
		else if (strcmp(value, "metrics") == 0)
			l->service = SERVICE_METRICS;
		else {
			set_err(ps,
			    "service must be echo, chat or metrics, "
			    "not \"%s\"",
			    value);
			return 0;
		}
	} else if (strcmp(name, "tls") == 0) {
		if (parse_bool(value, &l->tls) == -1) {
			set_err(ps, "tls must be yes or no, not \"%s\"", value);
			return 0;
		}
		if (l->tls)
			l->line = ps->line; /* blame this line for TLS errors */
	} else if (strcmp(name, "client_certificates") == 0) {
		if (strcmp(value, "none") == 0)
			l->client_certs = CLIENT_CERTS_NONE;
		else if (strcmp(value, "optional") == 0)
			l->client_certs = CLIENT_CERTS_OPTIONAL;
		else if (strcmp(value, "required") == 0)
			l->client_certs = CLIENT_CERTS_REQUIRED;
		else {
			set_err(ps,
			    "client_certificates must be none, optional or "
			    "required, not \"%s\"",
			    value);
			return 0;
		}
	} else {
		set_err(ps, "unknown key \"%s\" in [listen %s]", name, l->name);
		return 0;
	}
	return 1;
}

static int
handler(void *user, const char *section, const char *name, const char *value)
{
	struct parse_state *ps = user;
	struct config *cfg = ps->cfg;
	const struct key *k = NULL;
	unsigned long long v;
	uint64_t ms;
	size_t sz, i;
	char *base = (char *)cfg;
	int b, lvl;

	if (ps->failed)
		return 0;
	if (ps->cur_listener != NULL)
		return set_listener_key(ps, ps->cur_listener, name, value);
	if (*section == '\0') {
		set_err(ps, "key \"%s\" outside of any section", name);
		return 0;
	}
	for (i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		if (strcmp(keys[i].section, section) == 0 &&
		    strcmp(keys[i].name, name) == 0) {
			k = &keys[i];
			break;
		}
	}
	if (k == NULL) {
		set_err(ps, "unknown key \"%s\" in [%s]", name, section);
		return 0;
	}
	switch (k->type) {
	case K_UINT:
		if (parse_uint(value, &v) == -1 || v < k->min || v > k->max) {
			set_err(ps,
			    "%s must be a whole number from %llu to %llu", name,
			    k->min, k->max);
			return 0;
		}
		*(unsigned *)(base + k->offset) = (unsigned)v;
		break;
	case K_DURATION:
		if (parse_duration_ms(value, &ms) == -1 || ms < k->min ||
		    ms > k->max) {
			set_err(ps,
			    "%s must be a duration from %llums to %llus "
			    "(e.g. 500ms, 10s, 5m), not \"%s\"",
			    name, k->min, k->max / 1000, value);
			return 0;
		}
		*(uint64_t *)(base + k->offset) = ms;
		break;
	case K_SIZE:
		if (parse_size(value, &sz) == -1 || sz < k->min ||
		    sz > k->max) {
			set_err(ps,
			    "%s must be a size from %llu to %llu bytes "
			    "(suffixes k, M, G), not \"%s\"",
			    name, k->min, k->max, value);
			return 0;
		}
		*(size_t *)(base + k->offset) = sz;
		break;
	case K_BOOL:
		if (parse_bool(value, &b) == -1) {
			set_err(ps, "%s must be yes or no, not \"%s\"", name,
			    value);
			return 0;
		}
		*(int *)(base + k->offset) = b;
		break;
	case K_STRING:
		if (*value == '\0') {
			set_err(ps, "%s must not be empty", name);
			return 0;
		}
		free(*(char **)(base + k->offset));
		*(char **)(base + k->offset) = xstrdup(value);
		if (k->offset == OFF(tls_certificate))
			cfg->tls_certificate_line = ps->line;
		else if (k->offset == OFF(tls_private_key))
			cfg->tls_private_key_line = ps->line;
		break;
	case K_LOGLEVEL:
		if ((lvl = log_level_parse(value)) == -1) {
			set_err(ps,
			    "log_level must be one of debug, info, "
			    "notice, warning, error; not \"%s\"",
			    value);
			return 0;
		}
		*(int *)(base + k->offset) = lvl;
		break;
	case K_TLSVER:
		if (strcmp(value, "TLSv1.2") == 0)
			*(int *)(base + k->offset) = TLS1_2_VERSION;
		else if (strcmp(value, "TLSv1.3") == 0)
			*(int *)(base + k->offset) = TLS1_3_VERSION;
		else {
			set_err(ps,
			    "min_protocol must be TLSv1.2 or TLSv1.3, "
			    "not \"%s\"",
			    value);
			return 0;
		}
		break;
	case K_KDF:
		if (strcmp(value, "scrypt") == 0)
			*(int *)(base + k->offset) = 0;
		else if (strcmp(value, "pbkdf2") == 0)
			*(int *)(base + k->offset) = 1;
		else {
			set_err(ps, "kdf must be scrypt or pbkdf2, not \"%s\"",
			    value);
			return 0;
		}
		break;
	}
	return 1;
}

int
config_parse_string(struct config *cfg, const char *path, const char *text,
    char *err, size_t errlen)
{
	struct parse_state ps;
	size_t i;
	int rc;

	memset(&ps, 0, sizeof ps);
	ps.cfg = cfg;
	ps.path = path;
	ps.text = text;
	ps.err = err;
	ps.errlen = errlen;
	if (cfg->path == NULL)
		cfg->path = xstrdup(path);
	rc = ini_parse_stream(reader, &ps, handler, &ps);
	for (i = 0; i < ps.nseen; i++)
		free(ps.seen[i]);
	free(ps.seen);
	if (ps.failed)
		return -1;
	if (rc != 0) {
		/* inih's own syntax errors: rc is the line number. */
		snprintf(err, errlen,
		    "%s:%d: syntax error (expected "
		    "[section] or key = value)",
		    path, rc > 0 ? rc : 0);
		return -1;
	}
	return 0;
}

static int
file_readable(const char *path)
{
	return access(path, R_OK) == 0;
}

int
config_validate(struct config *cfg, char *err, size_t errlen)
{
	size_t i, j;
	int need_tls = 0, tls_line = 0;

	if (cfg->nlisteners == 0) {
		snprintf(err, errlen,
		    "%s:1: no [listen NAME] section: "
		    "nothing to serve",
		    cfg->path);
		return -1;
	}
	for (i = 0; i < cfg->nlisteners; i++) {
		struct listen_config *l = &cfg->listeners[i];

		if (l->port < 0) {
			snprintf(err, errlen, "%s:%d: [listen %s] has no port",
			    cfg->path, l->line, l->name);
			return -1;
		}
		for (j = 0; j < i; j++) {
			struct listen_config *o = &cfg->listeners[j];

			if (l->port != 0 && o->port == l->port &&
			    strcmp(o->address, l->address) == 0) {
				snprintf(err, errlen,
				    "%s:%d: [listen %s] uses "
				    "the same address and port as [listen %s]",
				    cfg->path, l->line, l->name, o->name);
				return -1;
			}
		}
		if (l->tls && l->service == SERVICE_METRICS) {
			snprintf(err, errlen,
			    "%s:%d: [listen %s]: the metrics "
			    "service is plain HTTP; tls must be no",
			    cfg->path, l->line, l->name);
			return -1;
		}
		if (l->client_certs != CLIENT_CERTS_NONE && !l->tls) {
			snprintf(err, errlen,
			    "%s:%d: [listen %s]: client_certificates needs "
			    "tls = yes",
			    cfg->path, l->line, l->name);
			return -1;
		}
		if (l->tls && !need_tls) {
			need_tls = 1;
			tls_line = l->line;
		}
	}
	if (cfg->chat_output_hard_limit <= cfg->chat_output_soft_limit) {
		snprintf(err, errlen,
		    "%s:1: [chat] output_hard_limit must be "
		    "larger than output_soft_limit",
		    cfg->path);
		return -1;
	}
	if ((cfg->accounts_scrypt_n & (cfg->accounts_scrypt_n - 1)) != 0 ||
	    128ULL * cfg->accounts_scrypt_n * cfg->accounts_scrypt_r >
		(256ULL << 20)) {
		snprintf(err, errlen,
		    "%s:1: [accounts] scrypt_n must be a power of two, "
		    "and 128 * scrypt_n * scrypt_r at most 256 MiB",
		    cfg->path);
		return -1;
	}
	if (need_tls) {
		if (cfg->tls_certificate == NULL ||
		    cfg->tls_private_key == NULL) {
			snprintf(err, errlen,
			    "%s:%d: tls = yes needs [tls] "
			    "certificate and private_key",
			    cfg->path, tls_line);
			return -1;
		}
		if (!file_readable(cfg->tls_certificate)) {
			snprintf(err, errlen,
			    "%s:%d: cannot read certificate "
			    "%s: %s",
			    cfg->path, cfg->tls_certificate_line,
			    cfg->tls_certificate, strerror(errno));
			return -1;
		}
		if (!file_readable(cfg->tls_private_key)) {
			snprintf(err, errlen,
			    "%s:%d: cannot read private key "
			    "%s: %s",
			    cfg->path, cfg->tls_private_key_line,
			    cfg->tls_private_key, strerror(errno));
			return -1;
		}
	}
	return 0;
}

struct config *
config_load(const char *path, char *err, size_t errlen)
{
	struct config *cfg;
	FILE *fp;
	char *text = NULL;
	size_t cap = 0, len = 0, n;

	if ((fp = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "%s:0: cannot open: %s", path,
		    strerror(errno));
		return NULL;
	}
	for (;;) {
		if (cap - len < 4096) {
			if (cap > (1 << 20)) {
				fclose(fp);
				free(text);
				snprintf(
				    err, errlen, "%s:0: file too large", path);
				return NULL;
			}
			cap = cap ? cap * 2 : 8192;
			if ((text = realloc(text, cap + 1)) == NULL)
				abort();
		}
		n = fread(text + len, 1, cap - len, fp);
		len += n;
		if (n == 0)
			break;
	}
	fclose(fp);
	text[len] = '\0';
	if (strlen(text) != len) {
		free(text);
		snprintf(err, errlen, "%s:0: file contains a NUL byte", path);
		return NULL;
	}
	cfg = config_new();
	cfg->path = xstrdup(path);
	if (config_parse_string(cfg, path, text, err, errlen) == -1 ||
	    config_validate(cfg, err, errlen) == -1) {
		free(text);
		config_free(cfg);
		return NULL;
	}
	free(text);
	return cfg;
}
