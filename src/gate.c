/* Accept-time decisions; see gate.h. */
#include "config.h"

#include <arpa/inet.h>
#include <fnmatch.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "conf.h"
#include "gate.h"
#include "ipcount.h"
#include "log.h"

#define NBUCKETS 4096
/* Past this many buckets, full ones are swept (at most once a second). */
#define SWEEP_AT 16384
/* ... and past this many nothing new is tracked (which only loosens). */
#define TRACK_MAX 262144

struct bucket {
	uint8_t key[IPKEY_LEN]; /* family byte + IPv4 address or IPv6 /64 */
	double tokens;
	uint64_t ms; /* last refill */
	struct bucket *next;
};

struct kline {
	char *mask;
	int64_t expires_ms;
	char *reason;
	char line[300]; /* the refusal */
};

struct gate {
	struct kline *klines;
	size_t nklines;
	struct bucket *tab[NBUCKETS];
	size_t n;
	uint64_t last_sweep_ms;
	time_t last_log;
	struct gate_stats stats;
};

struct gate *
gate_new(void)
{
	return calloc(1, sizeof(struct gate));
}

void
gate_free(struct gate *g)
{
	struct bucket *b, *next;
	size_t i;

	if (g == NULL)
		return;
	for (i = 0; i < g->nklines; i++) {
		free(g->klines[i].mask);
		free(g->klines[i].reason);
	}
	free(g->klines);
	for (i = 0; i < NBUCKETS; i++)
		for (b = g->tab[i]; b != NULL; b = next) {
			next = b->next;
			free(b);
		}
	free(g);
}

static void
refill(const struct config *cfg, struct bucket *b, uint64_t now)
{
	b->tokens +=
	    (double)(now - b->ms) * cfg->connection_rate_per_ip / 60000.0;
	if (b->tokens > cfg->connection_burst_per_ip)
		b->tokens = cfg->connection_burst_per_ip;
	b->ms = now;
}

static void
sweep(struct gate *g, const struct config *cfg, uint64_t now)
{
	struct bucket **pp, *b;
	size_t i;

	g->last_sweep_ms = now;
	for (i = 0; i < NBUCKETS; i++) {
		for (pp = &g->tab[i]; (b = *pp) != NULL;) {
			refill(cfg, b, now);
			if (b->tokens >= cfg->connection_burst_per_ip) {
				*pp = b->next;
				free(b);
				g->n--;
			} else
				pp = &b->next;
		}
	}
}

static int
rate_ok(struct gate *g, const struct config *cfg, const struct sockaddr *sa)
{
	uint8_t key[IPKEY_LEN];
	struct bucket **pp, *b;
	uint64_t now;

	if (cfg->connection_rate_per_ip == 0 || ipkey_make(sa, key) == -1)
		return 1;
	now = clock_mono_ms();
	if (g->n >= SWEEP_AT && now - g->last_sweep_ms >= 1000)
		sweep(g, cfg, now);
	pp = &g->tab[ipkey_hash(key) % NBUCKETS];
	while (*pp != NULL && memcmp((*pp)->key, key, IPKEY_LEN) != 0)
		pp = &(*pp)->next;
	if ((b = *pp) == NULL) {
		if (g->n >= TRACK_MAX || (b = calloc(1, sizeof *b)) == NULL)
			return 1;
		memcpy(b->key, key, IPKEY_LEN);
		b->tokens = cfg->connection_burst_per_ip;
		b->ms = now;
		*pp = b;
		g->n++;
	}
	refill(cfg, b, now);
	if (b->tokens < 1.0)
		return 0;
	b->tokens -= 1.0;
	return 1;
}

static int
log_ok(struct gate *g)
{
	time_t now = time(NULL);

	if (now == g->last_log)
		return 0;
	g->last_log = now;
	return 1;
}

static void
kline_drop(struct gate *g, size_t i)
{
	free(g->klines[i].mask);
	free(g->klines[i].reason);
	g->klines[i] = g->klines[--g->nklines];
}

static struct kline *
kline_find(struct gate *g, const char *ip)
{
	int64_t now = clock_real_ms();
	size_t i = 0;

	while (i < g->nklines) {
		struct kline *k = &g->klines[i];

		if (k->expires_ms != 0 && k->expires_ms <= now) {
			kline_drop(g, i);
			continue;
		}
		if (fnmatch(k->mask, ip, 0) == 0)
			return k;
		i++;
	}
	return NULL;
}

const char *
gate_kline_match(struct gate *g, const char *ip)
{
	struct kline *k = kline_find(g, ip);

	return k != NULL ? k->mask : NULL;
}

int
gate_kline_add(
    struct gate *g, const char *mask, int64_t expires_ms, const char *reason)
{
	struct kline *n, *k = NULL;
	size_t i;

	for (i = 0; i < g->nklines; i++)
		if (strcmp(g->klines[i].mask, mask) == 0)
			k = &g->klines[i];
	if (k == NULL) {
		if ((n = realloc(g->klines, (g->nklines + 1) * sizeof *n)) ==
		    NULL)
			return -1;
		g->klines = n;
		k = &g->klines[g->nklines];
		memset(k, 0, sizeof *k);
		if ((k->mask = strdup(mask)) == NULL)
			return -1;
		g->nklines++;
	}
	free(k->reason);
	k->reason = strdup(reason);
	k->expires_ms = expires_ms;
	snprintf(k->line, sizeof k->line,
	    "parleyd: your address is banned from this server (%s)\r\n",
	    reason);
	return 0;
}

int
gate_kline_del(struct gate *g, const char *mask)
{
	size_t i;

	for (i = 0; i < g->nklines; i++)
		if (strcmp(g->klines[i].mask, mask) == 0) {
			kline_drop(g, i);
			return 1;
		}
	return 0;
}

void
gate_kline_foreach(struct gate *g,
    void (*fn)(
	const char *mask, int64_t expires_ms, const char *reason, void *arg),
    void *arg)
{
	int64_t now = clock_real_ms();
	size_t i;

	for (i = 0; i < g->nklines; i++)
		if (g->klines[i].expires_ms == 0 ||
		    g->klines[i].expires_ms > now)
			fn(g->klines[i].mask, g->klines[i].expires_ms,
			    g->klines[i].reason ? g->klines[i].reason : "",
			    arg);
}

static void
format_ip(const struct sockaddr *sa, char *buf, size_t len)
{
	const struct sockaddr_in6 *s6 = (const void *)sa;

	buf[0] = '\0';
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET,
		    &((const struct sockaddr_in *)(const void *)sa)->sin_addr,
		    buf, (socklen_t)len);
	else if (sa->sa_family == AF_INET6 &&
	    IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
		inet_ntop(
		    AF_INET, s6->sin6_addr.s6_addr + 12, buf, (socklen_t)len);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &s6->sin6_addr, buf, (socklen_t)len);
}

const char *
gate_check(struct gate *g, const struct config *cfg, const struct sockaddr *sa)
{
	struct kline *k;
	char ip[64];

	if (g == NULL)
		return NULL;
	if (g->nklines > 0) {
		format_ip(sa, ip, sizeof ip);
		if (ip[0] != '\0' && (k = kline_find(g, ip)) != NULL) {
			g->stats.refused_banned++;
			if (log_ok(g))
				log_info("refusing a connection from %s: "
					 "banned (%s)",
				    ip, k->mask);
			return k->line;
		}
	}
	if (!rate_ok(g, cfg, sa)) {
		g->stats.refused_rate++;
		if (log_ok(g))
			log_info("refusing a connection: over "
				 "connection_rate_per_ip (%u a minute, burst "
				 "%u) for its address",
			    cfg->connection_rate_per_ip,
			    cfg->connection_burst_per_ip);
		return "parleyd: too many new connections from your address; "
		       "try again later\r\n";
	}
	return NULL;
}

void
gate_stats(const struct gate *g, struct gate_stats *out)
{
	*out = g->stats;
	out->tracked = g->n;
}
