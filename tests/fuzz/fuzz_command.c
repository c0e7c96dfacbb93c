/*
 * libFuzzer target: the chat command parser and handlers (chat-cmd.c,
 * room.c, the nick and room rules), without framing or flood control in
 * the way.  Three chat clients share one server.
 *
 * Input: one byte of knobs (bit 0: tight limits), then lines; the first
 * byte of a line picks the client (byte % 3), the rest is what it typed.
 * Each line is sanitized and dispatched as chat.c does it.
 *
 * Checks, after every line: each session's rooms hold it as a member, it
 * is in no room twice and in no more than its limit, its nick maps back
 * to it; every room's live count matches its members.  At the end, all
 * output is safe CRLF lines (see harness.h).
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat-int.h"
#include "chat.h"
#include "conf.h"
#include "conn.h"
#include "harness.h"
#include "service.h"
#include "text.h"
#include "check.h"

#define MAXIN 16384
#define NCLIENTS 3

static void
check_room(struct room *r, struct session *s)
{
	size_t j, live = 0, mine = 0;

	for (j = 0; j < r->nmembers; j++) {
		if (r->members[j] == NULL)
			continue;
		live++;
		if (r->members[j] == s)
			mine++;
	}
	CHECK(live == r->live);
	CHECK(mine == 1);
	CHECK(!r->iterating);
}

static void
check_session(struct session *s)
{
	const struct config *cfg = s->chat->srv->cfg;
	size_t i, j;

	CHECK(s->nrooms <= s->rooms_cap);
	CHECK(s->nrooms <= cfg->chat_max_rooms_per_client);
	CHECK(session_by_nick(s->chat, s->nick) == s);
	for (i = 0; i < s->nrooms; i++) {
		check_room(s->rooms[i], s);
		CHECK(room_find(s->chat, s->rooms[i]->name) == s->rooms[i]);
		for (j = 0; j < i; j++)
			CHECK(s->rooms[j] != s->rooms[i]);
	}
	CHECK(chat_room_count(s->chat) <= cfg->chat_max_rooms);
}

/* chat.c's handle_line, minus the statistics. */
static void
dispatch(struct session *s, const char *raw, size_t len)
{
	char *text;

	if ((text = malloc(TEXT_SANITIZE_MAX(len))) == NULL)
		return;
	text_sanitize(raw, len, text, TEXT_SANITIZE_MAX(len), NULL);
	if (text[0] == '/' && text[1] != '/')
		chat_command(s, text);
	else if (text[0] == '/')
		chat_say(s, text + 1, 0);
	else if (text[0] != '\0')
		chat_say(s, text, 0);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cfg;
	struct session *s;
	struct fz f;
	const uint8_t *p, *end, *nl;
	int i;

	if (size < 1 || size > MAXIN)
		return 0;
	fz_global_init();
	cfg = config_new();
	cfg->history_enabled = 0;
	if (data[0] & 1) {
		cfg->chat_nick_max = 4;
		cfg->chat_room_max = 3;
		cfg->chat_max_rooms_per_client = 2;
		cfg->chat_max_rooms = 3;
		cfg->chat_output_soft_limit = 1024;
		cfg->chat_output_hard_limit = 8192;
	}
	if (fz_init(&f, cfg) == -1)
		return 0;
	for (i = 0; i < NCLIENTS; i++)
		fz_connect(&f, &chat_service);
	fz_pump(&f);

	end = data + size;
	for (p = data + 1; p < end; p = nl + 1) {
		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
			nl = end;
		if (nl == p)
			continue;
		if ((s = fz_session(&f, p[0] % NCLIENTS)) != NULL) {
			dispatch(s, (const char *)p + 1, (size_t)(nl - p - 1));
			for (i = 0; i < NCLIENTS; i++)
				if ((s = fz_session(&f, i)) != NULL)
					check_session(s);
		}
		fz_pump(&f);
	}
	for (i = 0; i < NCLIENTS; i++)
		fz_check_chat_output(&f.c[i]);
	fz_free(&f);
	return 0;
}
