/* Per-address connection counts: a small chained hash; see ipcount.h. */
#include "config.h"

#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ipcount.h"

#define NBUCKETS 4096

struct ipent {
	uint8_t key[IPKEY_LEN]; /* family byte + IPv4 address or IPv6 /64 */
	unsigned count;
	struct ipent *next;
};

/* Loop-thread only. */
static struct ipent *buckets[NBUCKETS];

int
ipkey_make(const struct sockaddr *sa, uint8_t key[IPKEY_LEN])
{
	memset(key, 0, IPKEY_LEN);
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
	} else {
		return -1;
	}
	return 0;
}

uint32_t
ipkey_hash(const uint8_t key[IPKEY_LEN])
{
	uint32_t h = 2166136261u; /* FNV-1a */
	int i;

	for (i = 0; i < IPKEY_LEN; i++)
		h = (h ^ key[i]) * 16777619u;
	return h;
}

static struct ipent **
find(const uint8_t key[IPKEY_LEN])
{
	struct ipent **pp = &buckets[ipkey_hash(key) % NBUCKETS];

	while (*pp != NULL && memcmp((*pp)->key, key, IPKEY_LEN) != 0)
		pp = &(*pp)->next;
	return pp;
}

unsigned
ipcount_get(const struct sockaddr *sa)
{
	uint8_t key[IPKEY_LEN];
	struct ipent **pp;

	if (ipkey_make(sa, key) == -1)
		return 0;
	pp = find(key);
	return *pp ? (*pp)->count : 0;
}

void
ipcount_add(const struct sockaddr *sa)
{
	uint8_t key[IPKEY_LEN];
	struct ipent **pp;

	if (ipkey_make(sa, key) == -1)
		return;
	pp = find(key);
	if (*pp == NULL) {
		if ((*pp = calloc(1, sizeof **pp)) == NULL)
			return; /* uncounted, which only loosens a limit */
		memcpy((*pp)->key, key, IPKEY_LEN);
	}
	(*pp)->count++;
}

void
ipcount_del(const struct sockaddr *sa)
{
	uint8_t key[IPKEY_LEN];
	struct ipent **pp, *e;

	if (ipkey_make(sa, key) == -1)
		return;
	pp = find(key);
	if ((e = *pp) == NULL)
		return;
	if (--e->count == 0) {
		*pp = e->next;
		free(e);
	}
}
