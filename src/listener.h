/*
 * Listening sockets, one or more per [listen NAME] section (a host name
 * may resolve to several addresses).  Sockets passed by systemd socket
 * activation are matched to sections by FileDescriptorName=.
 */
#ifndef PARLEY_LISTENER_H
#define PARLEY_LISTENER_H

#include <stddef.h>

struct server;

/* Bind (or adopt) every configured listener.  -1 with err on failure. */
int listeners_open(struct server *s, char *err, size_t errlen);
/*
 * Reload: open sections that are new, close ones that went away, keep
 * the sockets of unchanged ones.  -1 with err (nothing changed) on failure.
 */
int listeners_update(struct server *s, char *err, size_t errlen);
/* Stop accepting and close every listening socket. */
void listeners_close(struct server *s);
/* Bound port of the first socket of section name, or -1. */
int listener_port(struct server *s, const char *name);

#endif
