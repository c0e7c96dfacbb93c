/*
 * Rooms: membership and fan-out.  A room line is formatted once into a
 * blob and every member's output buffer takes a reference to it.
 *
 * Members may leave while a broadcast walks the member array (a member
 * over its hard output limit is disconnected mid-walk), so removal during
 * a walk leaves a hole that is compacted when the walk ends.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat-int.h"
#include "conf.h"
#include "server.h"
#include "strmap.h"
#include "text.h"

static void
fold_name(const char *name, char *out, size_t outlen)
{
	name_fold(name, strlen(name), out, outlen);
}

struct room *
room_find(struct chat *ch, const char *name)
{
	char fold[ROOM_BYTES_MAX];

	if (strlen(name) >= sizeof fold)
		return NULL;
	fold_name(name, fold, sizeof fold);
	return strmap_get(ch->rooms, fold);
}

struct room *
room_get_or_create(struct chat *ch, const char *name, char *why, size_t whylen)
{
	const struct config *cfg = ch->srv->cfg;
	struct room *r;
	const char *bad;

	if ((bad = room_check(name, strlen(name), cfg->chat_room_max)) !=
	    NULL) {
		snprintf(why, whylen,
		    "invalid room name: %s (a room is '#' "
		    "and up to %u letters, digits or -_[]{}\\|^`)",
		    bad, cfg->chat_room_max);
		return NULL;
	}
	if ((r = room_find(ch, name)) != NULL)
		return r;
	if (strmap_count(ch->rooms) >= cfg->chat_max_rooms) {
		snprintf(why, whylen, "the server has its maximum of %u rooms",
		    cfg->chat_max_rooms);
		return NULL;
	}
	if ((r = calloc(1, sizeof *r)) == NULL) {
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	snprintf(r->name, sizeof r->name, "%s", name);
	fold_name(name, r->fold, sizeof r->fold);
	if (strmap_put(ch->rooms, r->fold, r) == -1) {
		free(r);
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	chat_room_created(ch, r);
	return r;
}

int
room_add(struct room *r, struct session *s)
{
	struct session **n;

	if (r->nmembers == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 8;

		if ((n = realloc(r->members, cap * sizeof *n)) == NULL)
			return -1;
		r->members = n;
		r->cap = cap;
	}
	r->members[r->nmembers++] = s;
	r->live++;
	return 0;
}

static void
room_destroy(struct chat *ch, struct room *r)
{
	strmap_del(ch->rooms, r->fold);
	chat_room_gone(ch, r);
	free(r->members);
	free(r->topic);
	free(r);
}

static void
compact(struct room *r)
{
	size_t i, j = 0;

	for (i = 0; i < r->nmembers; i++)
		if (r->members[i] != NULL)
			r->members[j++] = r->members[i];
	r->nmembers = j;
}

void
room_remove(struct chat *ch, struct room *r, struct session *s)
{
	size_t i;

	for (i = 0; i < r->nmembers; i++) {
		if (r->members[i] != s)
			continue;
		if (r->iterating)
			r->members[i] = NULL;
		else
			r->members[i] = r->members[--r->nmembers];
		r->live--;
		break;
	}
	room_drop_if_empty(ch, r);
}

void
room_drop_if_empty(struct chat *ch, struct room *r)
{
	/* Empty rooms go, except the default room and rooms mid-walk. */
	if (r->live == 0 && !r->iterating) {
		char dfold[ROOM_BYTES_MAX];

		fold_name(ch->srv->cfg->chat_default_room, dfold, sizeof dfold);
		if (strcmp(dfold, r->fold) != 0)
			room_destroy(ch, r);
	}
}

void
room_broadcast(struct room *r, struct session *except, struct blob *b)
{
	struct server *srv = NULL;
	size_t i, n = r->nmembers;

	r->iterating++;
	for (i = 0; i < n; i++) {
		struct session *m = r->members[i];

		if (m == NULL || m == except)
			continue;
		srv = m->chat->srv;
		session_send(m, b, 1);
		srv->stats.messages_out++;
	}
	if (--r->iterating == 0 && r->live != r->nmembers)
		compact(r);
}

static void
free_room_cb(const char *key, void *value, void *arg)
{
	struct room *r = value;

	(void)key;
	free(r->ops);
	(void)arg;
	free(r->members);
	free(r->topic);
	free(r);
}

void
room_free_all(struct chat *ch)
{
	strmap_foreach(ch->rooms, free_room_cb, NULL);
}
