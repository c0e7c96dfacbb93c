/* Accept-time decisions; see gate.h. */
#include "config.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "conf.h"
#include "gate.h"
#include "log.h"

#define NBUCKETS 4096
/* Past this many buckets, full ones are swept (at most once a second). */
#define SWEEP_AT 16384
/* ... and past this many nothing new is tracked (which only loosens). */
#define TRACK_MAX 262144

struct bucket {
	uint8_t key[9]; /* family byte + IPv4 address or IPv6 /64 */
	double tokens;
	uint64_t ms; /* last refill */
	struct bucket *next;
};

struct gate {
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
	for (i = 0; i < NBUCKETS; i++)
		for (b = g->tab[i]; b != NULL; b = next) {
			next = b->next;
			free(b);
		}
	free(g);
}

static int
make_key(const struct sockaddr *sa, uint8_t key[9])
{
	memset(key, 0, 9);
	if (sa->sa_family == AF_INET) {
		key[0] = 4;
		memcpy(key + 1,
		    &((const struct sockaddr_in *)(const void *)sa)->sin_addr,
		    4);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)sa;

		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			key[0] = 4;
			memcpy(key + 1, s6->sin6_addr.s6_addr + 12, 4);
		} else {
			key[0] = 6;
			memcpy(key + 1, s6->sin6_addr.s6_addr, 8);
		}
	} else
		return -1;
	return 0;
}

static unsigned
hash(const uint8_t key[9])
{
	uint32_t h = 2166136261u; /* FNV-1a */
	int i;

	for (i = 0; i < 9; i++)
		h = (h ^ key[i]) * 16777619u;
	return h % NBUCKETS;
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
	uint8_t key[9];
	struct bucket **pp, *b;
	uint64_t now;

	if (cfg->connection_rate_per_ip == 0 || make_key(sa, key) == -1)
		return 1;
	now = clock_mono_ms();
	if (g->n >= SWEEP_AT && now - g->last_sweep_ms >= 1000)
		sweep(g, cfg, now);
	pp = &g->tab[hash(key)];
	while (*pp != NULL && memcmp((*pp)->key, key, 9) != 0)
		pp = &(*pp)->next;
	if ((b = *pp) == NULL) {
		if (g->n >= TRACK_MAX || (b = calloc(1, sizeof *b)) == NULL)
			return 1;
		memcpy(b->key, key, 9);
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

const char *
gate_check(struct gate *g, const struct config *cfg, const struct sockaddr *sa)
{
	if (g == NULL)
		return NULL;
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
