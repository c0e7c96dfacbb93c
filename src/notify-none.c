/* Built --without-systemd: the service manager is never told anything. */
#include "config.h"

#include "notify.h"

void
notify_init(void)
{
}

int
notify_listen_fd(const char *name)
{
	(void)name;
	return -1;
}

void
notify_close_unclaimed(void)
{
}

void
notify_ready(void)
{
}

void
notify_reloading(void)
{
}

void
notify_stopping(void)
{
}

void
notify_watchdog(void)
{
}

void
notify_status(const char *fmt, ...)
{
	(void)fmt;
}

uint64_t
notify_watchdog_usec(void)
{
	return 0;
}
