/*
 * libFuzzer target: the configuration parser (src/conf.c over libinih).
 * Input is a config file; as config_load() refuses files with a NUL
 * byte, the text ends at the first NUL.
 *
 * Checks: parse and validate never crash, leak or overrun; a failure
 * always explains itself as "path:line: message" with a line inside the
 * file; a config that loads satisfies the documented cross-key rules.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "log.h"
#include "check.h"

#define MAXIN 65536
#define PATH "fuzz.conf"

static void
check_err(const char *err, const char *text)
{
	const char *p;
	long line, nlines = 1;
	char *end;

	CHECK(strncmp(err, PATH ":", sizeof PATH) == 0);
	line = strtol(err + sizeof PATH, &end, 10);
	CHECK(end != err + sizeof PATH && *end == ':');
	for (p = text; *p != '\0'; p++)
		if (*p == '\n')
			nlines++;
	CHECK(line >= 0 && line <= nlines);
}

static void
check_loaded(const struct config *cfg)
{
	size_t i;

	CHECK(cfg->nlisteners > 0);
	CHECK(cfg->chat_output_hard_limit > cfg->chat_output_soft_limit);
	CHECK(cfg->chat_max_line >= 64 && cfg->chat_max_line <= 65536);
	CHECK(cfg->workers >= 1 && cfg->workers <= 64);
	for (i = 0; i < cfg->nlisteners; i++) {
		CHECK(cfg->listeners[i].port >= 0 &&
		    cfg->listeners[i].port <= 65535);
		CHECK(cfg->listeners[i].name != NULL &&
		    cfg->listeners[i].address != NULL);
		CHECK(!(cfg->listeners[i].tls &&
		    cfg->listeners[i].service == SERVICE_METRICS));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int init;
	struct config *cfg;
	char *text, err[512];

	if (size > MAXIN)
		return 0;
	if (!init) {
		init = 1;
		log_init("fuzz");
		log_set_level(LOG_CRIT);
	}
	if ((text = malloc(size + 1)) == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	cfg = config_new();
	err[0] = '\0';
	if (config_parse_string(cfg, PATH, text, err, sizeof err) == -1 ||
	    config_validate(cfg, err, sizeof err) == -1)
		check_err(err, text);
	else
		check_loaded(cfg);
	config_free(cfg);
	free(text);
	return 0;
}
