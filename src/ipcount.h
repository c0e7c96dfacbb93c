/*
 * Live connections per client address, for max_connections_per_ip.
 * IPv6 clients are counted per /64: one host usually owns the whole
 * prefix, so per-address counting would be no limit at all.
 */
#ifndef PARLEY_IPCOUNT_H
#define PARLEY_IPCOUNT_H

#include <stdint.h>
#include <sys/socket.h>

/*
 * The key limits are counted by: 4 + the IPv4 address (v4-mapped IPv6
 * too), or 6 + the first 64 bits of an IPv6 address.  -1 for other
 * families.  The gate's rate buckets use the same key.
 */
#define IPKEY_LEN 9
int ipkey_make(const struct sockaddr *sa, uint8_t key[IPKEY_LEN]);
uint32_t ipkey_hash(const uint8_t key[IPKEY_LEN]); /* FNV-1a */

unsigned ipcount_get(const struct sockaddr *sa);
void ipcount_add(const struct sockaddr *sa);
void ipcount_del(const struct sockaddr *sa);

#endif
