/*
 * Chat commands: a table of name, usage, help and argument counts, and
 * one handler per command.  Input reaching here is already sanitized.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chat-int.h"
#include "conf.h"
#include "conn.h"
#include "log.h"
#include "server.h"
#include "strmap.h"
#include "text.h"

#define MAX_ARGS 3

struct command {
	const char *name;
	const char *usage;
	const char *help;
	int min_args;
	int max_args; /* the last one takes the rest of the line */
	void (*fn)(struct session *s, int argc, char **argv);
};

static void cmd_help(struct session *, int, char **);
static void cmd_nick(struct session *, int, char **);
static void cmd_join(struct session *, int, char **);
static void cmd_part(struct session *, int, char **);
static void cmd_rooms(struct session *, int, char **);
static void cmd_who(struct session *, int, char **);
static void cmd_msg(struct session *, int, char **);
static void cmd_me(struct session *, int, char **);
static void cmd_topic(struct session *, int, char **);
static void cmd_quit(struct session *, int, char **);

static const struct command commands[] = {
    {"help", "[command]", "list the commands, or explain one", 0, 1, cmd_help},
    {"nick", "NAME", "change your nick", 1, 1, cmd_nick},
    {"join", "#room [KEY]", "join a room (creating it) and make it current", 1,
	2, cmd_join},
    {"part", "[#room] [reason]", "leave a room (default: the current one)", 0,
	2, cmd_part},
    {"rooms", "", "list rooms with member counts and topics", 0, 0, cmd_rooms},
    {"who", "[#room]", "list the members of a room", 0, 1, cmd_who},
    {"msg", "NICK text", "send a private message", 2, 2, cmd_msg},
    {"me", "text", "say an action in the current room", 1, 1, cmd_me},
    {"topic", "[text]", "show or set the current room's topic", 0, 1,
	cmd_topic},
    {"quit", "[reason]", "leave the server", 0, 1, cmd_quit},
    {"history", "[N | since DURATION]",
	"show the last N messages of the current room, or those since "
	"DURATION ago (e.g. 10m, 2h)",
	0, 2, chat_history_cmd},
    {"search", "WORDS", "search the history of your rooms, newest first", 1, 1,
	chat_search_cmd},
    {"invite", "[#room] NICK", "(operators) let NICK into the room once", 1, 2,
	chat_invite_cmd},
    {"kick", "[#room] NICK [reason]", "(operators) put NICK out of the room", 1,
	3, chat_kick_cmd},
    {"ban", "[#room] [MASK]",
	"(operators) list the bans, or ban a nick, account or address "
	"(glob) mask",
	0, 2, chat_ban_cmd},
    {"unban", "[#room] MASK", "(operators) lift a ban", 1, 2, chat_unban_cmd},
    {"mode", "[#room] [+i | -i | +k KEY | -k | +o NICK | -o NICK]",
	"show a room's settings, or (operators) change them", 0, 3,
	chat_mode_cmd},
    {"wall", "text", "(server operators) a notice to everyone", 1, 1,
	chat_wall_cmd},
    {"kill", "NICK [reason]", "(server operators) disconnect NICK", 1, 2,
	chat_kill_cmd},
    {"kline", "[MASK DURATION [reason]]",
	"(server operators) list the address bans, or ban an address glob "
	"from the server (DURATION 0: for ever)",
	0, 3, chat_kline_cmd},
    {"unkline", "MASK", "(server operators) lift an address ban", 1, 1,
	chat_unkline_cmd},
    {"resume", "TOKEN",
	"take back a disconnected session: nick, rooms and the messages "
	"missed",
	1, 1, chat_resume_cmd},
    {"register", "PASSWORD", "register your current nick to you", 1, 1,
	chat_register_cmd},
    {"identify", "[NICK] PASSWORD",
	"prove you own a registered nick (your current one by default) and "
	"take it",
	1, 2, chat_identify_cmd},
    {"password", "OLD NEW", "change the password of your account", 2, 2,
	chat_password_cmd},
    {"unregister", "PASSWORD", "delete your account", 1, 1,
	chat_unregister_cmd},
    {"certadd", "[FINGERPRINT]",
	"bind your TLS client certificate (or the one named) to your account",
	0, 1, chat_certadd_cmd},
    {"certdel", "[FINGERPRINT]",
	"unbind your TLS client certificate (or the one named)", 0, 1,
	chat_certdel_cmd},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static const struct command *
find_command(const char *name)
{
	size_t i;

	for (i = 0; i < NCOMMANDS; i++)
		if (strcasecmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

/* Split at spaces into at most max words; the last takes the rest. */
static int
split(char *p, int max, char **argv)
{
	int argc = 0;

	while (argc < max) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			break;
		argv[argc++] = p;
		if (argc == max)
			break;
		while (*p != '\0' && *p != ' ' && *p != '\t')
			p++;
		if (*p != '\0')
			*p++ = '\0';
	}
	/* Trim trailing blanks of the rest-of-line argument. */
	if (argc > 0) {
		char *e = argv[argc - 1] + strlen(argv[argc - 1]);

		while (e > argv[argc - 1] && (e[-1] == ' ' || e[-1] == '\t'))
			*--e = '\0';
	}
	return argc;
}

void
chat_command(struct session *s, char *line)
{
	const struct command *cmd;
	char *name = line + 1, *rest, *argv[MAX_ARGS];
	int argc;

	rest = name + strcspn(name, " \t");
	if (*rest != '\0')
		*rest++ = '\0';
	if ((cmd = find_command(name)) == NULL) {
		error(s, "unknown command /%s; /help lists the commands", name);
		return;
	}
	argc = split(rest, cmd->max_args, argv);
	if (argc < cmd->min_args) {
		error(s, "usage: /%s %s", cmd->name, cmd->usage);
		return;
	}
	cmd->fn(s, argc, argv);
}

void
chat_say(struct session *s, const char *text, int action)
{
	struct room *r = session_current(s);
	struct blob *b;

	if (r == NULL) {
		error(s, "you are in no room; /join #room first");
		return;
	}
	if (action)
		b = blob_printf("%s * %s %s", r->name, s->nick, text);
	else
		b = blob_printf("%s <%s> %s", r->name, s->nick, text);
	/* Broadcast first, store after: history never delays delivery. */
	room_broadcast(r, s, b);
	blob_unref(b);
	chat_record(s, r, action, text);
}

static void
cmd_help(struct session *s, int argc, char **argv)
{
	const struct command *cmd;
	size_t i;

	if (argc == 1) {
		if ((cmd = find_command(
			 argv[0][0] == '/' ? argv[0] + 1 : argv[0])) == NULL) {
			error(s, "no such command: %s", argv[0]);
			return;
		}
		notice(s, "/%s %s -- %s", cmd->name, cmd->usage, cmd->help);
		return;
	}
	notice(s,
	    "commands (a line not starting with / goes to your current "
	    "room; //text sends /text):");
	for (i = 0; i < NCOMMANDS; i++)
		notice(s, "/%s%s%s -- %s", commands[i].name,
		    commands[i].usage[0] ? " " : "", commands[i].usage,
		    commands[i].help);
}

static void
cmd_nick(struct session *s, int argc, char **argv)
{
	char why[256];

	(void)argc;
	if (strcmp(s->nick, argv[0]) == 0) {
		notice(s, "you are already %s", s->nick);
		return;
	}
	if (!chat_nick_allowed(s, argv[0]))
		return;
	if (session_rename(s, argv[0], why, sizeof why) == -1)
		error(s, "%s", why);
}

static int
default_room(struct session *s, struct room *r)
{
	char f[ROOM_BYTES_MAX];
	const char *d = s->chat->srv->cfg->chat_default_room;

	name_fold(d, strlen(d), f, sizeof f);
	return strcmp(f, r->fold) == 0;
}

static void
cmd_join(struct session *s, int argc, char **argv)
{
	const struct config *cfg = s->chat->srv->cfg;
	struct room *r;
	struct blob *b;
	const char *bad;
	char why[256];
	size_t i;
	int created;

	if ((r = room_find(s->chat, argv[0])) != NULL &&
	    session_in_room(s, r)) {
		/* Already there: make it current (move it to the end). */
		for (i = 0; i < s->nrooms && s->rooms[i] != r; i++)
			;
		memmove(&s->rooms[i], &s->rooms[i + 1],
		    (s->nrooms - i - 1) * sizeof *s->rooms);
		s->rooms[s->nrooms - 1] = r;
		notice(s, "%s is now your current room", r->name);
		return;
	}
	if (s->nrooms >= cfg->chat_max_rooms_per_client ||
	    s->nrooms >= s->rooms_cap) {
		error(s, "you are in %zu rooms, the maximum; /part one first",
		    s->nrooms);
		return;
	}
	if ((r = room_get_or_create(s->chat, argv[0], why, sizeof why)) ==
	    NULL) {
		error(s, "cannot join %s: %s", argv[0], why);
		return;
	}
	created = r->live == 0 && !default_room(s, r);
	if (argc > 1 && !chat_room_has_key(r)) {
		error(s,
		    "cannot join %s %s: %s has no key (a room name has no "
		    "spaces)",
		    argv[0], argv[1], r->name);
		room_drop_if_empty(s->chat, r);
		return;
	}
	if ((bad = chat_room_admit(s, r, argc > 1 ? argv[1] : NULL)) != NULL) {
		error(s, "cannot join %s: %s", r->name, bad);
		room_drop_if_empty(s->chat, r);
		return;
	}
	if (room_add(r, s) == -1) {
		error(s, "cannot join %s: out of memory", r->name);
		return;
	}
	s->rooms[s->nrooms++] = r;
	if (created)
		chat_room_creator(s, r);
	notice(s, "you joined %s (%zu here)%s%s", r->name, r->live,
	    r->topic ? "; topic: " : "", r->topic ? r->topic : "");
	b = blob_printf("*** %s: %s has joined", r->name, s->nick);
	room_broadcast(r, s, b);
	blob_unref(b);
	chat_replay(s, r);
}

static void
cmd_part(struct session *s, int argc, char **argv)
{
	struct room *r;
	struct blob *b;
	const char *reason = NULL;
	char name[ROOM_BYTES_MAX];
	size_t i;

	if (argc >= 1 && argv[0][0] == '#') {
		r = room_find(s->chat, argv[0]);
		if (r == NULL || !session_in_room(s, r)) {
			error(s, "you are not in %s", argv[0]);
			return;
		}
		if (argc == 2)
			reason = argv[1];
	} else {
		if ((r = session_current(s)) == NULL) {
			error(s, "you are in no room");
			return;
		}
		if (argc >= 1) {
			/* "/part some reason": rejoin the split words. */
			if (argc == 2)
				argv[0][strlen(argv[0])] = ' ';
			reason = argv[0];
		}
	}
	for (i = 0; i < s->nrooms && s->rooms[i] != r; i++)
		;
	memmove(&s->rooms[i], &s->rooms[i + 1],
	    (s->nrooms - i - 1) * sizeof *s->rooms);
	s->nrooms--;
	snprintf(name, sizeof name, "%s", r->name);
	if (reason != NULL)
		b = blob_printf(
		    "*** %s: %s has left (%s)", name, s->nick, reason);
	else
		b = blob_printf("*** %s: %s has left", name, s->nick);
	room_broadcast(r, s, b);
	blob_unref(b);
	room_remove(s->chat, r, s); /* may free r */
	if ((r = session_current(s)) != NULL)
		notice(
		    s, "you left %s; your current room is %s", name, r->name);
	else
		notice(s, "you left %s; you are in no room now", name);
}

struct rooms_ctx {
	struct session *s;
	size_t n;
};

static void
rooms_cb(const char *key, void *value, void *arg)
{
	struct rooms_ctx *ctx = arg;
	struct room *r = value;

	(void)key;
	if (ctx->n++ >= 100)
		return;
	notice(ctx->s, "%s (%zu)%s%s", r->name, r->live, r->topic ? " " : "",
	    r->topic ? r->topic : "");
}

static void
cmd_rooms(struct session *s, int argc, char **argv)
{
	struct rooms_ctx ctx = {s, 0};

	(void)argc;
	(void)argv;
	notice(s, "rooms:");
	strmap_foreach(s->chat->rooms, rooms_cb, &ctx);
	if (ctx.n > 100)
		notice(s, "... and %zu more", ctx.n - 100);
}

static void
cmd_who(struct session *s, int argc, char **argv)
{
	struct room *r;
	char line[512];
	size_t i, len = 0, n = 0;

	if (argc == 1)
		r = room_find(s->chat, argv[0]);
	else
		r = session_current(s);
	if (r == NULL) {
		if (argc)
			error(s, "no such room: %s", argv[0]);
		else
			error(s, "you are in no room");
		return;
	}
	notice(s, "%s has %zu member(s):", r->name, r->live);
	/* Several nicks a line, never one line per nick. */
	for (i = 0; i < r->nmembers; i++) {
		struct session *m = r->members[i];
		size_t nl;

		if (m == NULL)
			continue;
		nl = strlen(m->nick);
		if (len > 0 && len + nl + 1 > 400) {
			notice(s, "%s %s", r->name, line);
			len = 0;
		}
		len += (size_t)snprintf(line + len, sizeof line - len, "%s%s",
		    len ? " " : "", m->nick);
		n++;
	}
	if (len > 0)
		notice(s, "%s %s", r->name, line);
}

static void
cmd_msg(struct session *s, int argc, char **argv)
{
	struct session *to;
	struct blob *b;

	(void)argc;
	if ((to = session_by_nick(s->chat, argv[0])) == NULL) {
		error(s, "no such nick: %s", argv[0]);
		return;
	}
	b = blob_printf("*%s* %s", s->nick, argv[1]);
	session_send(to, b, 0);
	blob_unref(b);
	s->chat->srv->stats.messages_out++;
	session_printf(s, "-> *%s* %s", to->nick, argv[1]);
}

static void
cmd_me(struct session *s, int argc, char **argv)
{
	(void)argc;
	chat_say(s, argv[0], 1);
}

static void
cmd_topic(struct session *s, int argc, char **argv)
{
	struct room *r = session_current(s);
	struct blob *b;
	char *t;

	if (r == NULL) {
		error(s, "you are in no room");
		return;
	}
	if (argc == 0) {
		if (r->topic != NULL)
			notice(s, "%s topic: %s", r->name, r->topic);
		else
			notice(s, "%s has no topic", r->name);
		return;
	}
	if (strlen(argv[0]) > 300) {
		error(s, "topic too long (at most 300 bytes)");
		return;
	}
	if ((t = strdup(argv[0])) == NULL)
		return;
	free(r->topic);
	r->topic = t;
	b = blob_printf("*** %s: %s set the topic: %s", r->name, s->nick, t);
	room_broadcast(r, NULL, b);
	blob_unref(b);
}

static void
cmd_quit(struct session *s, int argc, char **argv)
{
	session_quit(s, argc ? argv[0] : "quit");
}
