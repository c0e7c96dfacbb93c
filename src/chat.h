/*
 * Chat service: nicks, rooms, private messages.  One struct chat per
 * server, owned by the loop thread.
 */
#ifndef PARLEY_CHAT_H
#define PARLEY_CHAT_H

#include <stddef.h>

struct server;
struct chat;

struct chat *chat_new(struct server *s);
void chat_free(struct chat *ch);
/* Apply changed [chat] limits after a reload. */
void chat_reloaded(struct chat *ch);
/* Load what persists (room settings) once the accounts store is open. */
void chat_load_state(struct chat *ch);
size_t chat_room_count(const struct chat *ch);
/* Sessions parked for /resume. */
size_t chat_parked_count(const struct chat *ch);

#endif
