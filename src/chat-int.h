/*
 * Chat internals shared by chat.c (sessions, input, output), room.c
 * (rooms and fan-out) and chat-cmd.c (the command table).  Not part of
 * any other module's contract.
 */
#ifndef PARLEY_CHAT_INT_H
#define PARLEY_CHAT_INT_H

#include <sys/queue.h>

#include <stddef.h>
#include <stdint.h>

#include "text.h"

struct conn;
struct event;
struct evbuffer;
struct server;
struct strmap;

#define NICK_BYTES_MAX (64 * 4 + 1)
#define SESSION_TOKEN_BYTES 16
#define ROOM_BYTES_MAX (1 + 64 * 4 + 1)

/*
 * A formatted line shared by every recipient's output buffer through
 * evbuffer_add_reference(); freed when the last buffer lets go.
 */
struct blob {
	unsigned refs;
	size_t len;
	char data[];
};

struct room {
	char name[ROOM_BYTES_MAX];
	char fold[ROOM_BYTES_MAX];
	char *topic;
	struct session **members; /* NULL holes while iterating */
	size_t nmembers, cap;
	size_t live; /* members that are not holes */
	int iterating;
	struct roomacl *acl; /* keys, bans...; NULL: none (chat-room.c) */
	uint64_t *ops; /* conn ids of this room's session operators */
	size_t nops;
};

struct session {
	struct chat *chat;
	struct conn *conn;
	uint64_t id; /* conn id */
	char nick[NICK_BYTES_MAX];
	char fold[NICK_BYTES_MAX];
	struct room **rooms; /* joined; the last is current */
	size_t nrooms;
	size_t
	    rooms_cap; /* allocated at connect; a reload may raise the limit */
	struct evbuffer *pending; /* telnet-filtered input not yet framed */
	struct evbuffer *held; /* output held back while replaying */
	int replaying; /* history replays in flight */
	int querying; /* a /history or /search in flight */
	struct event *timer; /* flood refill / continue processing */
	double tokens;
	uint64_t refilled_ms;
	int discarding; /* inside an overlong line */
	int slow; /* past output_soft_limit */
	uint64_t missed; /* room lines skipped while slow */
	uint64_t mark; /* de-duplicates multi-room notices */
	int quitting;
	struct telnet telnet; /* negotiation state of a telnet client */
	char account[NICK_BYTES_MAX]; /* identified as (folded); "" = not */
	unsigned auth_fails; /* wrong passwords on this connection */
	unsigned registrations; /* accounts registered by this connection */
	struct event *auth_timer; /* delays the answer to a wrong password */
	char auth_err[160]; /* that answer */
	char certfp[65]; /* TLS client certificate SHA-256, hex; "" = none */
	char token[SESSION_TOKEN_BYTES * 2 + 1]; /* for /resume; "" = none */
};

struct chat {
	struct server *srv;
	struct strmap *nicks; /* fold -> session */
	struct strmap *rooms; /* fold -> room */
	uint64_t guest_seq;
	uint64_t mark_seq;
	struct strmap *authfail; /* peer address -> struct authfail */
	struct strmap *acls; /* folded room name -> struct roomacl */
	struct strmap *live_tokens; /* token -> live session */
	struct strmap *parked; /* token -> struct parked (chat-resume.c) */
	TAILQ_HEAD(parked_list, parked) parked_order; /* oldest first */
	struct event *parked_timer; /* frees the oldest when it expires */
};

/* Output (chat.c). */
struct blob *blob_printf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
void blob_unref(struct blob *b);
/* Queue b for s.  room_traffic lines are skipped for slow readers. */
void session_send(struct session *s, struct blob *b, int room_traffic);
void session_printf(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
#define notice(s, ...) session_printf((s), "*** " __VA_ARGS__)
#define error(s, ...) session_printf((s), "!!! " __VA_ARGS__)
struct session *session_by_nick(struct chat *ch, const char *nick);
/* The session of an active conn, or NULL (gone, closing). */
struct session *session_by_id(uint64_t id);
/* Change nick, telling s and its peers; -1 with why. */
int session_rename(
    struct session *s, const char *nick, char *why, size_t whylen);
/* Rename s to a fresh guest nick, telling it why. */
void session_become_guest(struct session *s, const char *why);
int session_set_nick(
    struct session *s, const char *nick, char *why, size_t whylen);
void session_quit(struct session *s, const char *reason);
/* Leave every room and give up the nick now, then close (not resumable). */
void session_retire(struct session *s, const char *reason);
/* Resume input after a history query answered. */
void session_continue(struct session *s);
/* Send b once to everyone sharing a room with s (not s itself). */
void session_tell_peers(struct session *s, struct blob *b);
struct room *session_current(struct session *s);
int session_in_room(struct session *s, struct room *r);

/* Rooms (room.c). */
struct room *room_find(struct chat *ch, const char *name);
struct room *room_get_or_create(
    struct chat *ch, const char *name, char *why, size_t whylen);
int room_add(struct room *r, struct session *s);
void room_remove(struct chat *ch, struct room *r, struct session *s);
/* Free r if nobody is in it (not the default room). */
void room_drop_if_empty(struct chat *ch, struct room *r);
void room_broadcast(struct room *r, struct session *except, struct blob *b);
void room_free_all(struct chat *ch);

/* Where output goes: held back behind a replay, or the connection. */
struct evbuffer *session_out(struct session *s);
size_t session_queued(struct session *s);

/* History (chat-history.c). */
void chat_record(struct session *s, struct room *r, int kind, const char *text);
void chat_replay(struct session *s, struct room *r);
/* Replay r's lines with ids above since_id (a resume). */
void chat_replay_since(struct session *s, struct room *r, int64_t since_id);
/* The last history id assigned; 0 without history. */
int64_t chat_history_last_id(struct chat *ch);
void chat_history_cmd(struct session *s, int argc, char **argv);
void chat_search_cmd(struct session *s, int argc, char **argv);

/* Accounts (chat-account.c). */
void chat_register_cmd(struct session *s, int argc, char **argv);
void chat_identify_cmd(struct session *s, int argc, char **argv);
void chat_password_cmd(struct session *s, int argc, char **argv);
void chat_unregister_cmd(struct session *s, int argc, char **argv);
void chat_certadd_cmd(struct session *s, int argc, char **argv);
void chat_certdel_cmd(struct session *s, int argc, char **argv);
/* At connect: note a TLS client certificate and look up its account. */
void chat_account_open(struct session *s);
/* May s take nick (folded)?  0 and an error told to s if not. */
int chat_nick_allowed(struct session *s, const char *nick);
void chat_account_session_free(struct session *s);
void chat_account_free(struct chat *ch);

/* Room access control (chat-room.c). */
void chat_rooms_load(struct chat *ch);
void chat_rooms_free(struct chat *ch);
void chat_room_created(struct chat *ch, struct room *r);
/* An account was deleted: it owns no room any more. */
void chat_rooms_forget_owner(struct chat *ch, const char *account);
void chat_room_gone(struct chat *ch, struct room *r);
/* s just created r by joining it. */
void chat_room_creator(struct session *s, struct room *r);
/* NULL if s may join r with key (may be NULL), else why not. */
const char *chat_room_admit(struct session *s, struct room *r, const char *key);
int chat_room_is_op(const struct room *r, const struct session *s);
int chat_room_has_key(const struct room *r);
/* A resumed session keeps the operator status of the conn it replaces. */
void chat_room_take_op(struct room *r, uint64_t old_id, struct session *s);
void chat_kick_cmd(struct session *s, int argc, char **argv);
void chat_invite_cmd(struct session *s, int argc, char **argv);
void chat_ban_cmd(struct session *s, int argc, char **argv);
void chat_unban_cmd(struct session *s, int argc, char **argv);
void chat_mode_cmd(struct session *s, int argc, char **argv);

/* Server operators (chat-oper.c). */
int chat_is_server_op(const struct session *s);
void chat_kill_cmd(struct session *s, int argc, char **argv);
void chat_wall_cmd(struct session *s, int argc, char **argv);
void chat_kline_cmd(struct session *s, int argc, char **argv);
void chat_unkline_cmd(struct session *s, int argc, char **argv);
void chat_klines_load(struct chat *ch);
/* Is c a chat connection (its data a struct session)? */
int chat_is_session(const struct conn *c);

/* Resumable sessions (chat-resume.c). */
/* A fresh token for s (none when resume_window is 0). */
void chat_resume_new_token(struct session *s);
/* " Session token T: /resume T ..." for the welcome line, or "". */
void chat_resume_token_text(struct session *s, char *buf, size_t len);
void chat_resume_park(struct session *s);
void chat_resume_cmd(struct session *s, int argc, char **argv);
void chat_resume_free(struct chat *ch);
/* An account was deleted: parked sessions are no longer identified to it. */
void chat_resume_forget_account(struct chat *ch, const char *account);

/* Commands (chat-cmd.c). */
void chat_command(struct session *s, char *line);
void chat_say(struct session *s, const char *text, int action);

#endif
