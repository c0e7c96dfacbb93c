/*
 * The service manager: sd_notify and socket activation.  Built as
 * notify.c with libsystemd, or notify-none.c (no-ops) with
 * --without-systemd; callers never need an #ifdef.
 */
#ifndef PARLEY_NOTIFY_H
#define PARLEY_NOTIFY_H

#include <stdint.h>

/* Collect sockets passed by systemd (LISTEN_FDS); call once at start. */
void notify_init(void);
/* The passed socket named name (FileDescriptorName=), or -1. */
int notify_listen_fd(const char *name);
/* Close passed sockets no [listen] section claimed, with a warning. */
void notify_close_unclaimed(void);

void notify_ready(void);
void notify_reloading(void);
void notify_stopping(void);
void notify_watchdog(void);
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Watchdog interval in microseconds if systemd wants pings, else 0. */
uint64_t notify_watchdog_usec(void);

#endif
