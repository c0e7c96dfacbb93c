/* Config parsing: defaults, values, and file:line errors. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include <openssl/ssl.h>

#include "conf.h"
#include "tap.h"

static int
parse(const char *text, char *err, size_t errlen, struct config **out)
{
	struct config *cfg = config_new();
	int rc;

	err[0] = '\0';
	rc = config_parse_string(cfg, "t.conf", text, err, errlen);
	if (rc == 0)
		rc = config_validate(cfg, err, errlen);
	if (out != NULL && rc == 0)
		*out = cfg;
	else
		config_free(cfg);
	return rc;
}

static void
expect_error(const char *text, const char *prefix, const char *what)
{
	char err[512];

	ok(parse(text, err, sizeof err, NULL) == -1, "%s is refused", what);
	if (!ok(strncmp(err, prefix, strlen(prefix)) == 0,
		"%s: message starts with \"%s\"", what, prefix))
		diag("got: %s", err);
}

int
main(void)
{
	struct config *cfg = NULL;
	char err[512];
	uint64_t ms;
	size_t sz;
	int b;

	/* Value parsers. */
	ok(parse_duration_ms("10", &ms) == 0 && ms == 10000, "bare seconds");
	ok(parse_duration_ms("500ms", &ms) == 0 && ms == 500, "ms");
	ok(parse_duration_ms("5m", &ms) == 0 && ms == 300000, "minutes");
	ok(parse_duration_ms("2h", &ms) == 0 && ms == 7200000, "hours");
	ok(parse_duration_ms("1d", &ms) == 0 && ms == 86400000, "days");
	ok(parse_duration_ms("-1", &ms) == -1, "negative refused");
	ok(parse_duration_ms("10x", &ms) == -1, "bad unit refused");
	ok(parse_duration_ms("", &ms) == -1, "empty refused");
	ok(parse_duration_ms("99999999999999999999", &ms) == -1,
	    "overflow refused");
	ok(parse_size("4096", &sz) == 0 && sz == 4096, "bytes");
	ok(parse_size("64k", &sz) == 0 && sz == 65536, "k suffix");
	ok(parse_size("2M", &sz) == 0 && sz == 2097152, "M suffix");
	ok(parse_size("1q", &sz) == -1, "bad size suffix refused");
	ok(parse_bool("yes", &b) == 0 && b == 1, "yes");
	ok(parse_bool("off", &b) == 0 && b == 0, "off");
	ok(parse_bool("maybe", &b) == -1, "maybe refused");

	/* A full, valid config. */
	ok(parse("; comment\n"
		 "[server]\n"
		 "max_connections = 50\n"
		 "idle_timeout = 2m\n"
		 "log_level = debug\n"
		 "[echo]\n"
		 "buffer_limit = 64k\n"
		 "[chat]\n"
		 "default_room = #main\n"
		 "[history]\n"
		 "cache_size = 256k\n"
		 "[listen one]\n"
		 "address = ::1\n"
		 "port = 7007\n"
		 "service = echo\n"
		 "tls = no\n"
		 "[listen two words]\n"
		 "port = 7008\n"
		 "service = chat\n",
	       err, sizeof err, &cfg) == 0,
	    "valid config parses");
	if (cfg == NULL) {
		diag("error: %s", err);
		return done_testing();
	}
	is_int(cfg->max_connections, 50, "max_connections set");
	is_int(cfg->idle_timeout_ms, 120000, "idle_timeout set");
	is_int(cfg->log_level, LOG_DEBUG, "log_level set");
	is_int(cfg->echo_buffer_limit, 65536, "buffer_limit set");
	is_str(cfg->chat_default_room, "#main", "default_room set");
	is_int(cfg->history_cache_size, 262144, "history cache_size set");
	is_int(cfg->shutdown_timeout_ms, 5000, "shutdown_timeout default");
	is_int(cfg->tls_min_version, TLS1_2_VERSION, "TLS 1.2 floor default");
	is_int(cfg->nlisteners, 2, "two listeners");
	is_str(cfg->listeners[0].name, "one", "first listener name");
	is_str(cfg->listeners[0].address, "::1", "IPv6 address kept");
	is_int(cfg->listeners[0].port, 7007, "port");
	is_str(cfg->listeners[1].name, "two words", "name with a space");
	is_int(cfg->listeners[1].service, SERVICE_CHAT, "chat service");
	is_str(cfg->listeners[1].address, "127.0.0.1", "default address");
	config_free(cfg);

	/* Errors name the file and the line. */
	expect_error(
	    "[server]\nbogus = 1\n", "t.conf:2: unknown key", "unknown key");
	expect_error("[listen a]\nport = 1\n[nope]\n",
	    "t.conf:3: unknown section", "unknown section");
	expect_error("[listen a]\n\nport = 70000\n", "t.conf:3: port",
	    "port out of range");
	expect_error("[listen a]\nport = 1\nservice = irc\n",
	    "t.conf:3: service", "bad service");
	expect_error("[listen a]\nport = 1\ntls = maybe\n", "t.conf:3: tls",
	    "bad tls value");
	expect_error("[listen a]\nport = 1\n[server]\nidle_timeout = soon\n",
	    "t.conf:4: idle_timeout", "bad duration");
	expect_error("[listen a]\nport = 1\n[listen a]\nport = 2\n",
	    "t.conf:3: duplicate section", "duplicate section");
	expect_error("[listen]\nport = 1\n", "t.conf:1: [listen] needs a name",
	    "listen without a name");
	expect_error("[listen a]\naddress = 127.0.0.1\n",
	    "t.conf:1: [listen a] has no port", "listener without port");
	expect_error(
	    "[server]\nworkers = 4\n", "t.conf:1: no [listen", "no listener");
	expect_error("[listen a]\nport = 1\n[listen b]\nport = 1\n",
	    "t.conf:3: [listen b] uses the same", "same address twice");
	expect_error("[listen a]\nport = 1\ntls = yes\n",
	    "t.conf:3: tls = yes needs [tls]", "tls without certificate");
	expect_error("[tls]\ncertificate = /nonexistent/c.pem\n"
		     "private_key = /nonexistent/k.pem\n"
		     "[listen a]\nport = 1\ntls = yes\n",
	    "t.conf:2: cannot read certificate", "missing certificate file");
	expect_error(
	    "this is not ini\n", "t.conf:1: syntax error", "syntax error");
	expect_error("port = 1\n", "t.conf:1: key \"port\" outside",
	    "key outside a section");
	expect_error("[server]\nmax_connections = 0\n",
	    "t.conf:2: max_connections", "zero max_connections");
	expect_error("[history]\ncache_size = 1k\n", "t.conf:2: cache_size",
	    "a history cache under 64k");
	expect_error("[chat]\noutput_soft_limit = 1M\noutput_hard_limit = 64k\n"
		     "[listen a]\nport = 1\n",
	    "t.conf:1: [chat] output_hard_limit", "hard below soft limit");
	return done_testing();
}
