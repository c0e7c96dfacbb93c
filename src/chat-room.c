/*
 * Room access control: keys, invite-only rooms, operators and owners,
 * /invite, /kick, /ban, /unban, /mode.
 *
 * A room's settings live in a struct roomacl, kept in ch->acls by the
 * room's folded name, apart from the struct room (which goes when the
 * room empties).  A room with owners -- registered accounts -- is
 * persistent: its settings outlive the room and are saved to the
 * database after every change (account.h), and loaded at start.  A room
 * without owners loses its settings when it empties.
 *
 * Operators: the session that created the room (not the default room,
 * not a room with owners), anyone given +o while in the room (for as
 * long as the room exists), and every owner once identified.  An
 * identified creator is an owner from the start; an owner's +o makes an
 * identified user an owner too.
 *
 * Bans are glob masks (fnmatch) matched against a joiner's folded nick,
 * its account and its address.  Invites name folded nicks and are used
 * up by the join they allow.
 */
#include "config.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "account.h"
#include "chat-int.h"
#include "conf.h"
#include "conn.h"
#include "log.h"
#include "server.h"
#include "strmap.h"
#include "text.h"

/* [chat] room_list_max: owners, bans and invitations per room, each. */
#define LIST_MAX(s) ((size_t)(s)->chat->srv->cfg->chat_room_list_max)

struct strlist {
	char **v;
	size_t n;
};

struct roomacl {
	char fold[ROOM_BYTES_MAX];
	char *key;
	int invite_only;
	struct strlist owners, bans, invites;
};

static int
list_has(const struct strlist *l, const char *x)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		if (strcmp(l->v[i], x) == 0)
			return 1;
	return 0;
}

static int
list_add(struct strlist *l, const char *x, size_t max)
{
	char **n;

	if (list_has(l, x))
		return 0;
	if (l->n >= max || (n = realloc(l->v, (l->n + 1) * sizeof *n)) == NULL)
		return -1;
	l->v = n;
	if ((l->v[l->n] = strdup(x)) == NULL)
		return -1;
	l->n++;
	return 0;
}

static int
list_del(struct strlist *l, const char *x)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		if (strcmp(l->v[i], x) == 0) {
			free(l->v[i]);
			l->v[i] = l->v[--l->n];
			return 1;
		}
	return 0;
}

static void
list_free(struct strlist *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* Space-separated, into a malloc'd string. */
static char *
list_join(const struct strlist *l)
{
	size_t i, len = 1;
	char *p;

	for (i = 0; i < l->n; i++)
		len += strlen(l->v[i]) + 1;
	if ((p = malloc(len)) == NULL)
		return NULL;
	p[0] = '\0';
	for (i = 0; i < l->n; i++) {
		if (i > 0)
			strcat(p, " ");
		strcat(p, l->v[i]);
	}
	return p;
}

static void
list_parse(struct strlist *l, const char *s)
{
	char *copy = strdup(s), *t, *save = NULL;

	if (copy == NULL)
		return;
	for (t = strtok_r(copy, " ", &save); t != NULL;
	     t = strtok_r(NULL, " ", &save))
		(void)list_add(l, t, (size_t)-1); /* what was stored */
	free(copy);
}

static void
acl_free(struct roomacl *a)
{
	if (a == NULL)
		return;
	free(a->key);
	list_free(&a->owners);
	list_free(&a->bans);
	list_free(&a->invites);
	free(a);
}

static struct roomacl *
acl_get(struct chat *ch, const char *fold, int create)
{
	struct roomacl *a = strmap_get(ch->acls, fold);

	if (a != NULL || !create)
		return a;
	if ((a = calloc(1, sizeof *a)) == NULL)
		return NULL;
	snprintf(a->fold, sizeof a->fold, "%s", fold);
	if (strmap_put(ch->acls, fold, a) == -1) {
		free(a);
		return NULL;
	}
	return a;
}

/* Save a persistent room's settings (or drop them: no owners left). */
static void
acl_save(struct chat *ch, struct roomacl *a)
{
	struct acct_room r;
	char *owners, *bans, *invites;

	if (ch->srv->accounts == NULL)
		return;
	owners = list_join(&a->owners);
	bans = list_join(&a->bans);
	invites = list_join(&a->invites);
	if (owners != NULL && bans != NULL && invites != NULL) {
		r.name = a->fold;
		r.key = a->key;
		r.invite_only = a->invite_only;
		r.owners = owners;
		r.bans = bans;
		r.invites = invites;
		accounts_room_save(ch->srv->accounts, &r);
	}
	free(owners);
	free(bans);
	free(invites);
}

static void
changed(struct chat *ch, struct roomacl *a, int was_owned)
{
	if (a->owners.n > 0 || was_owned)
		acl_save(ch, a);
}

static void
load_cb(void *arg, const struct acct_room *r)
{
	struct chat *ch = arg;
	struct roomacl *a;

	if ((a = acl_get(ch, r->name, 1)) == NULL)
		return;
	free(a->key);
	a->key = r->key != NULL ? strdup(r->key) : NULL;
	a->invite_only = r->invite_only;
	list_parse(&a->owners, r->owners);
	list_parse(&a->bans, r->bans);
	list_parse(&a->invites, r->invites);
}

void
chat_rooms_load(struct chat *ch)
{
	if (accounts_rooms_load(ch->srv->accounts, load_cb, ch) == 0 &&
	    strmap_count(ch->acls) > 0)
		log_info("chat: %zu persistent room(s) loaded",
		    strmap_count(ch->acls));
}

void
chat_room_created(struct chat *ch, struct room *r)
{
	r->acl = acl_get(ch, r->fold, 0);
}

void
chat_room_gone(struct chat *ch, struct room *r)
{
	struct roomacl *a = r->acl;

	free(r->ops);
	r->ops = NULL;
	r->nops = 0;
	if (a != NULL && a->owners.n == 0) {
		strmap_del(ch->acls, a->fold);
		acl_free(a);
	}
	r->acl = NULL;
}

struct forget {
	struct chat *ch;
	const char *account;
	struct roomacl **drop; /* left without owners and without a room */
	size_t ndrop;
};

static void
forget_cb(const char *key, void *value, void *arg)
{
	struct forget *f = arg;
	struct roomacl *a = value;

	(void)key;
	if (!list_del(&a->owners, f->account))
		return;
	acl_save(f->ch, a); /* with no owners left: deleted */
	if (a->owners.n == 0 && room_find(f->ch, a->fold) == NULL &&
	    f->drop != NULL)
		f->drop[f->ndrop++] = a;
}

void
chat_rooms_forget_owner(struct chat *ch, const char *account)
{
	struct forget f = {ch, account, NULL, 0};
	size_t i;

	/*
	 * A deleted account owns nothing: whoever registers the name next
	 * must not inherit its rooms.  An acl left without owners stays
	 * until its room empties (or now, if it has none).
	 */
	f.drop = calloc(strmap_count(ch->acls) + 1, sizeof *f.drop);
	strmap_foreach(ch->acls, forget_cb, &f);
	for (i = 0; i < f.ndrop; i++) {
		strmap_del(ch->acls, f.drop[i]->fold);
		acl_free(f.drop[i]);
	}
	free(f.drop);
}

static void
free_acl_cb(const char *key, void *value, void *arg)
{
	(void)key;
	(void)arg;
	acl_free(value);
}

void
chat_rooms_free(struct chat *ch)
{
	if (ch->acls == NULL)
		return;
	strmap_foreach(ch->acls, free_acl_cb, NULL);
	strmap_free(ch->acls);
	ch->acls = NULL;
}

static int
is_owner(const struct room *r, const struct session *s)
{
	return r->acl != NULL && s->account[0] != '\0' &&
	    list_has(&r->acl->owners, s->account);
}

int
chat_room_has_key(const struct room *r)
{
	return r->acl != NULL && r->acl->key != NULL;
}

int
chat_room_is_op(const struct room *r, const struct session *s)
{
	size_t i;

	if (is_owner(r, s))
		return 1;
	for (i = 0; i < r->nops; i++)
		if (r->ops[i] == s->id)
			return 1;
	return 0;
}

static void
add_op(struct room *r, struct session *s)
{
	uint64_t *n;

	if (chat_room_is_op(r, s) ||
	    (n = realloc(r->ops, (r->nops + 1) * sizeof *n)) == NULL)
		return;
	r->ops = n;
	r->ops[r->nops++] = s->id;
}

static void
del_op(struct room *r, struct session *s)
{
	size_t i;

	for (i = 0; i < r->nops; i++)
		if (r->ops[i] == s->id)
			r->ops[i] = r->ops[--r->nops];
}

void
chat_room_take_op(struct room *r, uint64_t old_id, struct session *s)
{
	size_t i;

	for (i = 0; i < r->nops; i++)
		if (r->ops[i] == old_id)
			r->ops[i] = s->id;
}

static struct roomacl *
acl_of(struct chat *ch, struct room *r)
{
	if (r->acl == NULL)
		r->acl = acl_get(ch, r->fold, 1);
	return r->acl;
}

void
chat_room_creator(struct session *s, struct room *r)
{
	struct roomacl *a;

	if (r->acl != NULL && r->acl->owners.n > 0)
		return; /* a persistent room: its owners rule it */
	add_op(r, s);
	if (s->account[0] != '\0' && (a = acl_of(s->chat, r)) != NULL &&
	    a->owners.n == 0 &&
	    list_add(&a->owners, s->account, LIST_MAX(s)) == 0)
		changed(s->chat, a, 0);
}

static int
banned(const struct roomacl *a, const struct session *s)
{
	size_t i;

	for (i = 0; i < a->bans.n; i++)
		if (fnmatch(a->bans.v[i], s->fold, 0) == 0 ||
		    fnmatch(a->bans.v[i], conn_peer_ip(s->conn), 0) == 0 ||
		    (s->account[0] != '\0' &&
			fnmatch(a->bans.v[i], s->account, 0) == 0))
			return 1;
	return 0;
}

const char *
chat_room_admit(struct session *s, struct room *r, const char *key)
{
	struct roomacl *a = r->acl;
	int invited;

	if (a == NULL || is_owner(r, s))
		return NULL;
	if (banned(a, s))
		return "you are banned from it";
	invited = list_has(&a->invites, s->fold) ||
	    (s->account[0] != '\0' && list_has(&a->invites, s->account));
	if (a->invite_only && !invited)
		return "it is invite-only (an operator can /invite you)";
	if (a->key != NULL && !invited &&
	    (key == NULL || strlen(key) != strlen(a->key) ||
		CRYPTO_memcmp(key, a->key, strlen(key)) != 0))
		return "it needs a key: /join ROOM KEY";
	if (invited) {
		/* An invitation lets in once. */
		int was = a->owners.n > 0;

		list_del(&a->invites, s->fold);
		if (s->account[0] != '\0')
			list_del(&a->invites, s->account);
		changed(s->chat, a, was);
	}
	return NULL;
}

/* The room named by an optional leading #room argument, else current. */
static struct room *
target_room(struct session *s, int *argc, char ***argv)
{
	struct room *r;

	if (*argc > 0 && (*argv)[0][0] == '#') {
		if ((r = room_find(s->chat, (*argv)[0])) == NULL ||
		    !session_in_room(s, r)) {
			error(s, "you are not in %s", (*argv)[0]);
			return NULL;
		}
		(*argc)--;
		(*argv)++;
		return r;
	}
	if ((r = session_current(s)) == NULL)
		error(s, "you are in no room");
	return r;
}

static struct room *
op_room(struct session *s, int *argc, char ***argv)
{
	struct room *r = target_room(s, argc, argv);

	if (r != NULL && !chat_room_is_op(r, s)) {
		error(s, "you are not an operator of %s", r->name);
		return NULL;
	}
	return r;
}

static void
fold(const char *in, char *out, size_t outlen)
{
	name_fold(in, strlen(in), out, outlen);
}

/* Take m out of r, telling it and the room. */
static void
kick(struct session *by, struct room *r, struct session *m, const char *reason)
{
	struct blob *b;
	char name[ROOM_BYTES_MAX];
	size_t i;

	snprintf(name, sizeof name, "%s", r->name);
	b = blob_printf("*** %s: %s was kicked by %s (%s)", name, m->nick,
	    by->nick, reason);
	room_broadcast(r, m, b);
	blob_unref(b);
	notice(m, "you were kicked from %s by %s (%s)", name, by->nick, reason);
	for (i = 0; i < m->nrooms && m->rooms[i] != r; i++)
		;
	if (i == m->nrooms)
		return;
	memmove(&m->rooms[i], &m->rooms[i + 1],
	    (m->nrooms - i - 1) * sizeof *m->rooms);
	m->nrooms--;
	del_op(r, m);
	room_remove(m->chat, r, m); /* may free r */
}

void
chat_kick_cmd(struct session *s, int argc, char **argv)
{
	struct room *r;
	struct session *m;

	if (argc == 3 && argv[0][0] != '#') {
		/* "/kick NICK some reason": rejoin the split reason. */
		argv[1][strlen(argv[1])] = ' ';
		argc = 2;
	}
	if ((r = op_room(s, &argc, &argv)) == NULL)
		return;
	if (argc < 1) {
		error(s, "usage: /kick [#room] NICK [reason]");
		return;
	}
	if ((m = session_by_nick(s->chat, argv[0])) == NULL ||
	    !session_in_room(m, r)) {
		error(s, "%s is not in %s", argv[0], r->name);
		return;
	}
	log_info("chat: %s kicked %s from %s", s->nick, m->nick, r->name);
	kick(s, r, m, argc > 1 ? argv[1] : "no reason");
}

void
chat_invite_cmd(struct session *s, int argc, char **argv)
{
	struct room *r = op_room(s, &argc, &argv);
	struct roomacl *a;
	struct session *m;
	char f[NICK_BYTES_MAX];
	int was;

	if (r == NULL)
		return;
	if (argc < 1 || strlen(argv[0]) >= sizeof f ||
	    nick_check(argv[0], strlen(argv[0]),
		s->chat->srv->cfg->chat_nick_max) != NULL) {
		error(s, "usage: /invite [#room] NICK");
		return;
	}
	if ((a = acl_of(s->chat, r)) == NULL)
		return;
	fold(argv[0], f, sizeof f);
	was = a->owners.n > 0;
	if (list_add(&a->invites, f, LIST_MAX(s)) == -1) {
		error(s, "%s has too many invitations", r->name);
		return;
	}
	changed(s->chat, a, was);
	notice(s, "%s is invited to %s", argv[0], r->name);
	if ((m = session_by_nick(s->chat, argv[0])) != NULL)
		notice(m, "%s invites you to %s: /join %s", s->nick, r->name,
		    r->name);
}

void
chat_ban_cmd(struct session *s, int argc, char **argv)
{
	struct room *r = op_room(s, &argc, &argv);
	struct roomacl *a;
	char mask[NICK_BYTES_MAX + 64];
	size_t i;
	int was;

	if (r == NULL || (a = acl_of(s->chat, r)) == NULL)
		return;
	if (argc < 1) {
		notice(s, "%s has %zu ban(s)", r->name, a->bans.n);
		for (i = 0; i < a->bans.n; i++)
			notice(s, "%s ban %s", r->name, a->bans.v[i]);
		return;
	}
	if (strlen(argv[0]) >= sizeof mask || strchr(argv[0], ' ') != NULL) {
		error(s, "usage: /ban [#room] NICK-OR-ADDRESS-MASK");
		return;
	}
	fold(argv[0], mask, sizeof mask);
	was = a->owners.n > 0;
	if (list_add(&a->bans, mask, LIST_MAX(s)) == -1) {
		error(s, "%s has too many bans", r->name);
		return;
	}
	changed(s->chat, a, was);
	log_info("chat: %s banned %s from %s", s->nick, mask, r->name);
	notice(s, "%s: %s is banned", r->name, mask);
	/* Out with whoever it matches (never yourself or an owner). */
	for (;;) {
		struct session *m = NULL;

		for (i = 0; i < r->nmembers && m == NULL; i++)
			if (r->members[i] != NULL && r->members[i] != s &&
			    !is_owner(r, r->members[i]) &&
			    banned(a, r->members[i]))
				m = r->members[i];
		if (m == NULL)
			break;
		kick(s, r, m, "banned");
	}
}

void
chat_unban_cmd(struct session *s, int argc, char **argv)
{
	struct room *r = op_room(s, &argc, &argv);
	char mask[NICK_BYTES_MAX + 64];

	if (r == NULL)
		return;
	if (argc < 1 || strlen(argv[0]) >= sizeof mask) {
		error(s, "usage: /unban [#room] MASK");
		return;
	}
	fold(argv[0], mask, sizeof mask);
	if (r->acl == NULL || !list_del(&r->acl->bans, mask)) {
		error(s, "%s is not banned from %s", mask, r->name);
		return;
	}
	changed(s->chat, r->acl, r->acl->owners.n > 0);
	notice(s, "%s: %s is no longer banned", r->name, mask);
}

static void
show_modes(struct session *s, struct room *r)
{
	struct roomacl *a = r->acl;
	char *owners = a != NULL ? list_join(&a->owners) : NULL;

	notice(s, "%s modes: %s%s%s; owners: %s", r->name,
	    a != NULL && a->invite_only ? "+i" : "-i",
	    a != NULL && a->key != NULL ? " +k" : " -k",
	    a != NULL && a->owners.n > 0 ? " (persistent)" : "",
	    owners != NULL && owners[0] ? owners : "none");
	free(owners);
}

void
chat_mode_cmd(struct session *s, int argc, char **argv)
{
	struct room *r = target_room(s, &argc, &argv);
	struct roomacl *a;
	struct session *m;
	struct blob *b;
	const char *flag;
	int was;

	if (r == NULL)
		return;
	if (argc == 0) {
		show_modes(s, r);
		return;
	}
	if (!chat_room_is_op(r, s)) {
		error(s, "you are not an operator of %s", r->name);
		return;
	}
	if ((a = acl_of(s->chat, r)) == NULL)
		return;
	flag = argv[0];
	was = a->owners.n > 0;
	if (strcmp(flag, "+i") == 0 || strcmp(flag, "-i") == 0)
		a->invite_only = flag[0] == '+';
	else if (strcmp(flag, "-k") == 0) {
		free(a->key);
		a->key = NULL;
	} else if (strcmp(flag, "+k") == 0 && argc == 2 &&
	    strlen(argv[1]) <= s->chat->srv->cfg->chat_room_key_max &&
	    strchr(argv[1], ' ') == NULL) {
		free(a->key);
		a->key = strdup(argv[1]);
	} else if ((strcmp(flag, "+o") == 0 || strcmp(flag, "-o") == 0) &&
	    argc == 2) {
		if ((m = session_by_nick(s->chat, argv[1])) == NULL ||
		    !session_in_room(m, r)) {
			error(s, "%s is not in %s", argv[1], r->name);
			return;
		}
		/* Only an owner makes (or unmakes) owners. */
		if (flag[0] == '+') {
			add_op(r, m);
			if (m->account[0] != '\0' && is_owner(r, s))
				(void)list_add(
				    &a->owners, m->account, LIST_MAX(s));
		} else {
			del_op(r, m);
			if (m->account[0] != '\0' && is_owner(r, s))
				list_del(&a->owners, m->account);
		}
	} else {
		error(s,
		    "usage: /mode [#room] [+i | -i | +k KEY | -k | +o NICK | "
		    "-o NICK]");
		return;
	}
	changed(s->chat, a, was);
	if (flag[1] == 'k')
		b = blob_printf(
		    "*** %s: %s set mode %s", r->name, s->nick, flag);
	else if (flag[1] == 'o')
		b = blob_printf("*** %s: %s set mode %s %s", r->name, s->nick,
		    flag, argv[1]);
	else
		b = blob_printf(
		    "*** %s: %s set mode %s", r->name, s->nick, flag);
	room_broadcast(r, NULL, b);
	blob_unref(b);
}
