/*
 * The gate: decisions about a new connection made at accept, before any
 * TLS handshake and before a struct conn exists.
 *
 * Rate: a token bucket of new connections per client address (IPv4) or
 * per IPv6 /64 (one host usually owns the whole prefix):
 * connection_burst_per_ip tokens, refilled at connection_rate_per_ip a
 * minute.  A refused attempt takes no token.  Buckets that are full
 * again are forgotten, so memory follows the addresses seen recently.
 *
 * Address bans (/kline): glob masks over the textual address, each with
 * an optional expiry; expired ones are dropped as they are met.  The
 * store (account.h) keeps them across restarts; the gate only decides.
 *
 * Loop thread only.
 */
#ifndef PARLEY_GATE_H
#define PARLEY_GATE_H

#include <stdint.h>
#include <sys/socket.h>

struct config;
struct gate;

struct gate_stats {
	uint64_t refused_rate;
	uint64_t refused_banned;
	uint64_t tracked; /* buckets held now */
};

struct gate *gate_new(void);
void gate_free(struct gate *g);

/* NULL to let the connection in, or the line to refuse it with. */
const char *gate_check(
    struct gate *g, const struct config *cfg, const struct sockaddr *sa);

void gate_stats(const struct gate *g, struct gate_stats *out);

/* Add or replace a ban; expires_ms is CLOCK_REALTIME ms, 0 = never. */
int gate_kline_add(
    struct gate *g, const char *mask, int64_t expires_ms, const char *reason);
/* 1 if mask was banned (and is no longer), else 0. */
int gate_kline_del(struct gate *g, const char *mask);
/* The live ban matching the textual address ip, or NULL. */
const char *gate_kline_match(struct gate *g, const char *ip);
/* Visit the live bans. */
void gate_kline_foreach(struct gate *g,
    void (*fn)(
	const char *mask, int64_t expires_ms, const char *reason, void *arg),
    void *arg);

#endif
