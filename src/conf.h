/*
 * Configuration: defaults, then the INI file (errors carry file:line),
 * then validation.  Loading is pure apart from reading the file and
 * checking that referenced files exist, so it is unit-tested and fuzzed.
 * A loaded config is immutable; reload builds a new one and swaps.
 */
#ifndef PARLEY_CONF_H
#define PARLEY_CONF_H

#include <stddef.h>
#include <stdint.h>

enum service_kind { SERVICE_ECHO, SERVICE_CHAT, SERVICE_METRICS };

/* Asking TLS clients for a certificate (client_certificates =). */
enum client_certs {
	CLIENT_CERTS_NONE,
	CLIENT_CERTS_OPTIONAL,
	CLIENT_CERTS_REQUIRED
};

/*
 * The tls value a listener hands to conn_accept: 0 plain, else
 * 1 + client_certs.
 */
#define LISTEN_TLS_MODE(lc) ((lc)->tls ? 1 + (lc)->client_certs : 0)

struct listen_config {
	char *name; /* the NAME of [listen NAME] */
	char *address; /* literal or host name */
	int port;
	enum service_kind service;
	int tls;
	int client_certs; /* enum client_certs; TLS listeners only */
	int line; /* where the section starts, for messages */
};

struct config {
	char *path;

	/* [server] */
	char *state_directory;
	char *user; /* drop to this user after binding (as root) */
	int allow_root; /* keep running as root without user = */
	int log_level;
	unsigned max_connections;
	unsigned max_connections_per_ip;
	unsigned connection_rate_per_ip; /* new ones a minute; 0 = no limit */
	unsigned connection_burst_per_ip; /* bucket size */
	uint64_t handshake_timeout_ms;
	uint64_t idle_timeout_ms; /* 0 = never */
	uint64_t shutdown_timeout_ms;
	unsigned workers;
	unsigned worker_nice; /* of every worker thread, below the loop */
	uint64_t loop_lag_interval_ms; /* the lag probe's period */
	uint64_t idle_release_ms; /* idle plain conns free their buffers */
	unsigned backlog;

	/* [tls] */
	char *tls_certificate;
	char *tls_private_key;
	char *tls_ciphers; /* TLS 1.2 cipher list */
	char *tls_ciphersuites; /* TLS 1.3 suites */
	int tls_min_version; /* TLS1_2_VERSION or TLS1_3_VERSION */
	int tls_certificate_line; /* where they were set, for errors */
	int tls_private_key_line;

	/* [echo] */
	size_t echo_buffer_limit;

	/* [chat] */
	char *chat_default_room;
	size_t chat_max_line;
	unsigned chat_nick_max;
	unsigned chat_room_max;
	unsigned chat_max_rooms_per_client;
	unsigned chat_flood_rate; /* lines per second, refill */
	unsigned chat_flood_burst; /* bucket size */
	size_t chat_output_soft_limit;
	size_t chat_output_hard_limit;
	unsigned chat_max_rooms; /* rooms on the server */
	unsigned chat_room_list_max; /* owners, bans, invites per room, each */
	unsigned chat_room_key_max; /* bytes */
	uint64_t chat_resume_window_ms; /* 0 = no resumable sessions */
	unsigned chat_resume_max; /* sessions parked at once */
	unsigned chat_resume_replay_max; /* lines replayed per room */

	/* [history] */
	int history_enabled;
	char *history_path; /* NULL: state_directory/history.db */
	unsigned history_replay; /* lines replayed on join */
	unsigned history_batch_size;
	uint64_t history_batch_ms;
	unsigned history_queue_limit;
	uint64_t history_max_age_ms; /* 0 = keep forever */
	unsigned history_max_per_room; /* 0 = unlimited */
	unsigned history_page_max; /* lines a command may return */
	size_t history_cache_size; /* sqlite page cache per connection */
	int history_required; /* refuse to start without it */

	/* [accounts] */
	int accounts_enabled;
	char *accounts_path; /* NULL: the history database, or accounts.db */
	int accounts_required; /* refuse to start without the store */
	int accounts_kdf; /* enum pwhash_kdf */
	unsigned accounts_scrypt_n; /* a power of two */
	unsigned accounts_scrypt_r;
	unsigned accounts_scrypt_p;
	unsigned accounts_pbkdf2_iterations;
	unsigned accounts_password_min; /* bytes */
	uint64_t accounts_failure_delay_ms; /* first wrong password */
	uint64_t accounts_failure_delay_max_ms; /* doubling stops here */
	unsigned accounts_failures_per_address; /* bucket size; 0 = no limit */
	uint64_t accounts_failure_window_ms; /* the bucket refills in this */
	unsigned accounts_registrations; /* per connection */
	unsigned accounts_threads;
	unsigned accounts_queue_limit;

	/* [operators] */
	char *operator_accounts; /* space-separated account names */
	char *operator_fingerprints; /* space-separated SHA-256, hex */

	struct listen_config *listeners;
	size_t nlisteners;
};

/* Defaults only; never fails. */
struct config *config_new(void);
/*
 * Parse text (named path in messages) over the defaults in cfg.
 * On error returns -1 and writes "path:line: message" into err.
 */
int config_parse_string(struct config *cfg, const char *path, const char *text,
    char *err, size_t errlen);
/* Read and parse path, then validate.  NULL with err set on failure. */
struct config *config_load(const char *path, char *err, size_t errlen);
/* Cross-key checks and file existence; -1 with err set. */
int config_validate(struct config *cfg, char *err, size_t errlen);
void config_free(struct config *cfg);

const char *service_name(enum service_kind kind);

/* Value parsers, exported for tests. 0 on success, -1 if malformed. */
int parse_duration_ms(const char *s, uint64_t *out);
int parse_size(const char *s, size_t *out);
int parse_bool(const char *s, int *out);

/*
 * A lag probe shorter than 10 ms runs the loop on libevent's precise
 * timers (the default ones follow the coarse clock, a tick late).
 */
static inline int
config_precise_timers(const struct config *cfg)
{
	return cfg->loop_lag_interval_ms < 10;
}

#endif
