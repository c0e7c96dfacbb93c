/* sd_notify and socket activation through libsystemd; see notify.h. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "clock.h"
#include "log.h"
#include "notify.h"

/* Sockets from LISTEN_FDS, read once at start-up by the loop thread. */
static int nfds;
static char **fd_names;
static int *fd_taken;

void
notify_init(void)
{
	int n;

	n = sd_listen_fds_with_names(1, &fd_names);
	if (n <= 0) {
		fd_names = NULL;
		return;
	}
	nfds = n;
	if ((fd_taken = calloc((size_t)n, sizeof *fd_taken)) == NULL)
		abort();
	log_info("socket activation: %d socket(s) passed", n);
}

int
notify_listen_fd(const char *name)
{
	int i;

	for (i = 0; i < nfds; i++) {
		if (!fd_taken[i] && fd_names != NULL &&
		    strcmp(fd_names[i], name) == 0) {
			fd_taken[i] = 1;
			return SD_LISTEN_FDS_START + i;
		}
	}
	return -1;
}

void
notify_close_unclaimed(void)
{
	int i;

	for (i = 0; i < nfds; i++) {
		if (!fd_taken[i]) {
			log_warn("socket activation: no [listen %s] section "
				 "for passed socket; closing it",
			    fd_names ? fd_names[i] : "?");
			close(SD_LISTEN_FDS_START + i);
		}
		if (fd_names != NULL)
			free(fd_names[i]);
	}
	free(fd_names);
	free(fd_taken);
	fd_names = NULL;
	fd_taken = NULL;
	nfds = 0;
}

void
notify_ready(void)
{
	sd_notify(0, "READY=1");
}

void
notify_reloading(void)
{
	/* MONOTONIC_USEC lets Type=notify-reload match this to SIGHUP. */
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
	    (unsigned long long)clock_mono_us());
}

void
notify_stopping(void)
{
	sd_notify(0, "STOPPING=1");
}

void
notify_watchdog(void)
{
	sd_notify(0, "WATCHDOG=1");
}

void
notify_status(const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	sd_notifyf(0, "STATUS=%s", buf);
}

uint64_t
notify_watchdog_usec(void)
{
	uint64_t usec = 0;

	if (sd_watchdog_enabled(0, &usec) > 0)
		return usec;
	return 0;
}
