/*
 * parleyd: chat and echo server.  Options, start-up and ordered teardown;
 * everything else lives in libparley so the tests can link it.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "conf.h"
#include "history.h"
#include "log.h"
#include "notify.h"
#include "server.h"

#define DEFAULT_CONFIG SYSCONFDIR "/parleyd.conf"

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: parleyd [-c file] [-t] [-V] [-h]\n"
	    "  -c file  configuration file (default %s)\n"
	    "  -t       check the configuration and exit\n"
	    "  -V       print the version and exit\n"
	    "  -h       print this help and exit\n"
	    "See parleyd(8), parleyd.conf(5) and parley(7).\n",
	    DEFAULT_CONFIG);
}

static int
make_state_dir(const char *path)
{
	struct stat st;

	if (stat(path, &st) == 0)
		return S_ISDIR(st.st_mode) ? 0 : -1;
	if (mkdir(path, 0750) == -1 && errno != EEXIST)
		return -1;
	return 0;
}

/*
 * Started as root (outside systemd's DynamicUser=): listeners are bound
 * and the TLS files read, so give up root now (the history database is
 * opened afterwards, as the run user).  Running on as root needs an
 * explicit allow_root = yes.
 */
static int
drop_privileges(const struct config *cfg)
{
	struct passwd *pw;

	if (geteuid() != 0)
		return 0;
	if (cfg->user == NULL) {
		if (cfg->allow_root) {
			log_warn("running as root (allow_root = yes)");
			return 0;
		}
		log_err("refusing to run as root: set [server] user = NAME "
			"(or allow_root = yes)");
		return -1;
	}
	if ((pw = getpwnam(cfg->user)) == NULL) {
		log_err("user %s: no such user", cfg->user);
		return -1;
	}
	if (chown(cfg->state_directory, pw->pw_uid, pw->pw_gid) == -1)
		log_warn("chown %s: %s", cfg->state_directory, strerror(errno));
	/* The history is opened as the user: repair an old root-owned one. */
	if (cfg->history_enabled)
		history_chown_files(cfg, pw->pw_uid, pw->pw_gid);
	if (initgroups(pw->pw_name, pw->pw_gid) == -1 ||
	    setgid(pw->pw_gid) == -1 || setuid(pw->pw_uid) == -1) {
		log_err("cannot become %s: %s", cfg->user, strerror(errno));
		return -1;
	}
	if (setuid(0) == 0) {
		log_err("privileges could not be dropped for good");
		return -1;
	}
	log_info("running as %s", cfg->user);
	return 0;
}

int
main(int argc, char **argv)
{
	const char *path = DEFAULT_CONFIG;
	struct config *cfg;
	struct server *s;
	char err[1024];
	int ch, test_only = 0, rc;

	while ((ch = getopt(argc, argv, "c:tVh")) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 't':
			test_only = 1;
			break;
		case 'V':
			printf("parleyd %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	log_init("parleyd");
	if ((cfg = config_load(path, err, sizeof err)) == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (test_only) {
		fprintf(stderr, "%s: configuration ok\n", path);
		config_free(cfg);
		return 0;
	}
	log_set_level(cfg->log_level);
	if (make_state_dir(cfg->state_directory) == -1) {
		log_err("state_directory %s: %s", cfg->state_directory,
		    strerror(errno));
		config_free(cfg);
		return 1;
	}
	/* A peer that vanishes must cost an EPIPE, not the process. */
	signal(SIGPIPE, SIG_IGN);
	/* Worker threads wake the loop with event_active(). */
	if (evthread_use_pthreads() == -1) {
		log_err("libevent has no pthreads support");
		config_free(cfg);
		return 1;
	}
	notify_init();
	if ((s = server_new(cfg, err, sizeof err)) == NULL) {
		log_err("%s", err);
		notify_close_unclaimed();
		libevent_global_shutdown();
		return 1;
	}
	/* History after the switch: its files belong to the run user. */
	err[0] = '\0';
	if (drop_privileges(cfg) == -1 ||
	    server_open_history(s, err, sizeof err) == -1) {
		if (err[0] != '\0')
			log_err("%s", err);
		server_free(s);
		libevent_global_shutdown();
		return 1;
	}
	rc = server_run(s);
	server_free(s);
	libevent_global_shutdown();
	log_notice("exited");
	return rc;
}
