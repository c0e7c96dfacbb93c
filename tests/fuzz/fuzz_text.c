/*
 * libFuzzer harness for src/text.c.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc src/text.c \
 *       tests/fuzz/fuzz_text.c -o fuzz_text
 *   ./fuzz_text -max_total_time=60 tests/fuzz/corpus/text
 *
 * Checks, for arbitrary bytes: text_sanitize output is valid UTF-8 with no
 * C0 but TAB, no DEL, no C1, within 3 bytes per input byte, idempotent, and
 * truncates to a prefix; text_cut keeps whole characters; text_valid_utf8 agrees with an independent
 * validator; telnet_filter gives the same result whatever the chunking and
 * never overflows its reply buffer; accepted names obey the rules and fold
 * to accepted names.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"
#include "check.h"

#define MAXIN 4096

/* A validator written differently from text.c: decode, then judge. */
static int
ref_valid(const uint8_t *p, size_t len)
{
	size_t i = 0, n, k;
	uint32_t c;

	while (i < len) {
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		if ((p[i] & 0xE0) == 0xC0) {
			n = 2;
			c = p[i] & 0x1F;
		} else if ((p[i] & 0xF0) == 0xE0) {
			n = 3;
			c = p[i] & 0x0F;
		} else if ((p[i] & 0xF8) == 0xF0) {
			n = 4;
			c = p[i] & 0x07;
		} else
			return (0);
		if (len - i < n)
			return (0);
		for (k = 1; k < n; k++) {
			if ((p[i + k] & 0xC0) != 0x80)
				return (0);
			c = (c << 6) | (p[i + k] & 0x3F);
		}
		if ((n == 2 && c < 0x80) || (n == 3 && c < 0x800) ||
		    (n == 4 && c < 0x10000))
			return (0); /* overlong */
		if ((c >= 0xD800 && c <= 0xDFFF) || c > 0x10FFFF)
			return (0);
		i += n;
	}
	return (1);
}

static size_t
count_cp(const uint8_t *p, size_t len)
{
	size_t i, n = 0;

	for (i = 0; i < len; i++) {
		if ((p[i] & 0xC0) != 0x80)
			n++;
	}
	return (n);
}

/* Output safe for a raw terminal. */
static void
check_clean(const uint8_t *p, size_t len)
{
	size_t i;

	CHECK(ref_valid(p, len));
	CHECK(text_valid_utf8((const char *)p, len));
	for (i = 0; i < len; i++) {
		CHECK(p[i] >= 0x20 || p[i] == '\t');
		CHECK(p[i] != 0x7F);
		/* In valid UTF-8, C1 is exactly C2 80..C2 9F. */
		CHECK(!(p[i] == 0xC2 && i + 1 < len && p[i + 1] < 0xA0));
	}
}

static int
has_control(const uint8_t *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if ((p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7F ||
		    (p[i] == 0xC2 && i + 1 < len && p[i + 1] < 0xA0))
			return (1);
	}
	return (0);
}

static uint32_t
rnd(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return (*s);
}

static void
fuzz_sanitize(const uint8_t *in, size_t len, uint32_t *seed)
{
	static char out[TEXT_SANITIZE_MAX(MAXIN)],
	    out2[TEXT_SANITIZE_MAX(MAXIN)];
	size_t n, n2, cap;
	int chg, chg2;

	n = text_sanitize(
	    (const char *)in, len, out, TEXT_SANITIZE_MAX(len), &chg);
	CHECK(n <= 3 * len && n < TEXT_SANITIZE_MAX(len));
	CHECK(out[n] == '\0' && memchr(out, '\0', n) == NULL);
	check_clean((const uint8_t *)out, n);
	CHECK(text_valid_utf8((const char *)in, len) == ref_valid(in, len));
	CHECK(!chg == (n == len && memcmp(in, out, len) == 0));
	if (ref_valid(in, len) && !has_control(in, len))
		CHECK(!chg);

	/* Idempotent: sanitized text passes through untouched. */
	n2 = text_sanitize(out, n, out2, TEXT_SANITIZE_MAX(n), &chg2);
	CHECK(!chg2 && n2 == n && memcmp(out, out2, n) == 0);

	/* Cutting sanitized text keeps whole characters, losing < 4 bytes. */
	cap = rnd(seed) % (n + 1);
	n2 = text_cut(out, n, cap);
	CHECK(n2 <= cap && n2 + 4 > cap && ref_valid((const uint8_t *)out, n2));
	CHECK(text_cut(out, n, n) == n);

	/* Truncation yields a clean prefix that fits. */
	cap = 1 + rnd(seed) % (n + 1);
	n2 = text_sanitize((const char *)in, len, out2, cap, &chg2);
	CHECK(n2 < cap && out2[n2] == '\0' && memcmp(out, out2, n2) == 0);
	CHECK(n2 == n || chg2);
	check_clean((const uint8_t *)out2, n2);
}

static void
check_reply(const uint8_t *r, size_t rlen)
{
	size_t i, j;

	CHECK(rlen % 3 == 0);
	for (i = 0; i < rlen; i += 3) {
		CHECK(r[i] == 255 && (r[i + 1] == 252 || r[i + 1] == 254));
		for (j = 0; j < i; j += 3)
			CHECK(memcmp(r + i, r + j, 3) != 0); /* once only */
	}
}

static void
fuzz_telnet(const uint8_t *in, size_t len, uint32_t *seed)
{
	static uint8_t a[MAXIN], b[MAXIN], c[MAXIN];
	static uint8_t ra[1536], rb[1536], rc[64 + 8];
	static char out[TEXT_SANITIZE_MAX(MAXIN)];
	struct telnet ta, tb, tc;
	size_t na, nb = 0, nc = 0, rla = 0, rlb = 0, rlc = 0, i, k, cap;

	/* 2 directions x 256 options x 3 bytes: ra can never fill up. */
	memcpy(a, in, len);
	telnet_init(&ta);
	na = telnet_filter(&ta, a, len, ra, sizeof ra, &rla);
	CHECK(na <= len);
	check_reply(ra, rla);

	/* Random chunking must not change anything. */
	memcpy(b, in, len);
	telnet_init(&tb);
	for (i = 0; i < len; i += k) {
		k = 1 + rnd(seed) % 8;
		if (k > len - i)
			k = len - i;
		memmove(b + nb, b + i, k);
		nb += telnet_filter(&tb, b + nb, k, rb, sizeof rb, &rlb);
	}
	CHECK(nb == na && memcmp(a, b, na) == 0);
	CHECK(rlb == rla && memcmp(ra, rb, rla) == 0);
	CHECK(!ta.seen == !tb.seen);

	/* A small reply buffer is never overrun. */
	cap = rnd(seed) % 64;
	memset(rc, 0xA5, sizeof rc);
	memcpy(c, in, len);
	telnet_init(&tc);
	for (i = 0; i < len; i += k) {
		k = 1 + rnd(seed) % 16;
		if (k > len - i)
			k = len - i;
		memmove(c + nc, c + i, k);
		nc += telnet_filter(&tc, c + nc, k, rc, cap, &rlc);
	}
	CHECK(nc == na && memcmp(a, c, na) == 0);
	CHECK(rlc <= cap);
	for (i = cap; i < sizeof rc; i++)
		CHECK(rc[i] == 0xA5);
	check_reply(rc, rlc);

	/* What the daemon will do next with the data. */
	nb = text_sanitize((const char *)a, na, out, sizeof out, NULL);
	check_clean((const uint8_t *)out, nb);
}

static void
check_name(const uint8_t *p, size_t len, size_t maxlen, int room)
{
	char f[MAXIN + 1], g[MAXIN + 1];
	size_t i, n;

	CHECK(ref_valid(p, len));
	CHECK(len >= 1 && len <= 4 * maxlen);
	CHECK(count_cp(p, len) >= 1 && count_cp(p, len) <= maxlen);
	if (!room)
		CHECK(!(p[0] >= '0' && p[0] <= '9') && p[0] != '-');
	/* No U+0300-U+036F (CC 80..CD AF) first. */
	CHECK(!(p[0] == 0xCC || (p[0] == 0xCD && p[1] < 0xB0)));
	for (i = 0; i < len; i++) {
		CHECK(p[i] > 0x20 && p[i] != 0x7F && p[i] != '#');
		CHECK(!(p[i] >= 0x80 && p[i] < 0xC0 &&
		    (i == 0 || p[i - 1] == 0xC2)));
	}
	/* Folding keeps length and validity and is idempotent. */
	n = name_fold((const char *)p, len, f, len + 1);
	CHECK(n == len);
	CHECK(nick_check(f, n, maxlen) == NULL || room);
	CHECK(name_fold(f, n, g, n + 1) == n && memcmp(f, g, n) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char f[MAXIN + 1];
	uint32_t seed = 2463534242U;
	size_t maxlen;

	if (size > MAXIN)
		return (0);
	if (size > 0)
		seed ^= data[0] * 16777619U + (uint32_t)size;

	fuzz_sanitize(data, size, &seed);
	fuzz_telnet(data, size, &seed);

	maxlen = size > 0 ? 1 + data[0] % 32 : 9;
	if (nick_check((const char *)data, size, maxlen) == NULL)
		check_name(data, size, maxlen, 0);
	if (room_check((const char *)data, size, maxlen) == NULL) {
		CHECK(data[0] == '#');
		check_name(data + 1, size - 1, maxlen, 1);
	}
	/* Arbitrary bytes fold without growing or overrunning. */
	CHECK(name_fold((const char *)data, size, f, size + 1) == size);
	return (0);
}
