/*
 * Text hygiene: see text.h for the contract.
 *
 * DESIGN: every function walks its input one unit at a time through
 * utf8_decode(), which implements the well-formed byte sequences of
 * Unicode table 3-7 and reports the length of a maximal invalid subpart
 * otherwise.  Sharing one decoder keeps validation, sanitizing and the
 * name rules in agreement about what a character is.
 */
#include <string.h>

#include "text.h"

/* Telnet bytes (RFC 854). */
#define TN_SE 240
#define TN_SB 250
#define TN_WILL 251
#define TN_WONT 252
#define TN_DO 253
#define TN_DONT 254
#define TN_IAC 255

enum telnet_state {
	TELNET_S_DATA = 0, /* ordinary data */
	TELNET_S_IAC, /* after IAC */
	TELNET_S_VERB, /* after IAC WILL/WONT/DO/DONT, want option */
	TELNET_S_SB, /* inside IAC SB, skipping */
	TELNET_S_SB_IAC, /* inside IAC SB, after IAC */
	TELNET_S_MAX /* sentinel */
};

#define UTF8_INVALID (-1)

/*
 * Decode the sequence at p[0..len), len > 0.  Returns its length and sets
 * *cp, or returns the length of the maximal invalid subpart (>= 1) and sets
 * *cp to UTF8_INVALID.  The narrowed second-byte ranges after E0, ED, F0 and
 * F4 reject overlongs, surrogates and > U+10FFFF at the earliest byte, which
 * is what makes the invalid subpart maximal.
 */
static size_t
utf8_decode(const uint8_t *p, size_t len, int32_t *cp)
{
	uint8_t b = p[0], lo = 0x80, hi = 0xBF;
	size_t need, i;
	int32_t c;

	if (b < 0x80) {
		*cp = b;
		return (1);
	}
	if (b < 0xC2 || b > 0xF4) {
		*cp = UTF8_INVALID;
		return (1);
	}
	if (b < 0xE0) {
		need = 1;
		c = b & 0x1F;
	} else if (b < 0xF0) {
		need = 2;
		c = b & 0x0F;
		if (b == 0xE0)
			lo = 0xA0;
		else if (b == 0xED)
			hi = 0x9F;
	} else {
		need = 3;
		c = b & 0x07;
		if (b == 0xF0)
			lo = 0x90;
		else if (b == 0xF4)
			hi = 0x8F;
	}
	for (i = 1; i <= need; i++) {
		if (i >= len || p[i] < lo || p[i] > hi) {
			*cp = UTF8_INVALID;
			return (i);
		}
		c = (c << 6) | (p[i] & 0x3F);
		lo = 0x80;
		hi = 0xBF;
	}
	*cp = c;
	return (need + 1);
}

/* Encode a code point known to be valid; returns 1..4. */
static size_t
utf8_encode(int32_t c, uint8_t *p)
{
	if (c < 0x80) {
		p[0] = (uint8_t)c;
		return (1);
	}
	if (c < 0x800) {
		p[0] = (uint8_t)(0xC0 | (c >> 6));
		p[1] = (uint8_t)(0x80 | (c & 0x3F));
		return (2);
	}
	if (c < 0x10000) {
		p[0] = (uint8_t)(0xE0 | (c >> 12));
		p[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
		p[2] = (uint8_t)(0x80 | (c & 0x3F));
		return (3);
	}
	p[0] = (uint8_t)(0xF0 | (c >> 18));
	p[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
	p[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
	p[3] = (uint8_t)(0x80 | (c & 0x3F));
	return (4);
}

size_t
text_sanitize(
    const char *in, size_t len, char *out, size_t outcap, int *changed)
{
	static const uint8_t hex[] = "0123456789ABCDEF";
	const uint8_t *p = (const uint8_t *)in;
	const uint8_t *unit;
	uint8_t esc[6];
	size_t i = 0, o = 0, n, ulen;
	int32_t cp;
	int chg = 0;

	while (i < len) {
		n = utf8_decode(p + i, len - i, &cp);
		if (cp == UTF8_INVALID) {
			unit = (const uint8_t *)"\xEF\xBF\xBD";
			ulen = 3;
			chg = 1;
		} else if ((cp < 0x20 && cp != '\t') || cp == 0x7F) {
			esc[0] = '^';
			esc[1] = (uint8_t)(cp ^ 0x40);
			unit = esc;
			ulen = 2;
			chg = 1;
		} else if (cp >= 0x80 && cp <= 0x9F) {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[cp >> 4];
			esc[5] = hex[cp & 0xF];
			unit = esc;
			ulen = 6;
			chg = 1;
		} else {
			unit = p + i;
			ulen = n;
		}
		/* Whole units only, and always room for the NUL. */
		if (ulen >= outcap - o) {
			chg = 1;
			break;
		}
		memcpy(out + o, unit, ulen);
		o += ulen;
		i += n;
	}
	if (outcap > 0)
		out[o] = '\0';
	if (changed != NULL)
		*changed = chg;
	return (o);
}

size_t
text_cut(const char *s, size_t len, size_t max)
{
	if (len <= max)
		return len;
	while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
		max--;
	return max;
}

int
text_valid_utf8(const char *buf, size_t len)
{
	const uint8_t *p = (const uint8_t *)buf;
	size_t i = 0;
	int32_t cp;

	while (i < len) {
		i += utf8_decode(p + i, len - i, &cp);
		if (cp == UTF8_INVALID)
			return (0);
	}
	return (1);
}

void
telnet_init(struct telnet *t)
{
	memset(t, 0, sizeof *t);
	t->state = TELNET_S_DATA;
}

/* Refuse option opt once per direction: dir 0 answers WILL, 1 answers DO. */
static void
telnet_refuse(struct telnet *t, int dir, uint8_t opt, uint8_t *reply,
    size_t replycap, size_t *replylen)
{
	uint8_t bit = 1U << (opt & 7);

	if (t->refused[dir][opt >> 3] & bit)
		return;
	/* Drop rather than overflow; not marking it lets a retry succeed. */
	if (reply == NULL || replylen == NULL || *replylen > replycap ||
	    replycap - *replylen < 3)
		return;
	reply[(*replylen)++] = TN_IAC;
	reply[(*replylen)++] = dir == 0 ? TN_DONT : TN_WONT;
	reply[(*replylen)++] = opt;
	t->refused[dir][opt >> 3] |= bit;
}

/* Handle the byte after IAC; returns 1 if it is data to keep. */
static int
telnet_command(struct telnet *t, uint8_t b)
{
	t->state = TELNET_S_DATA;
	if (b < TN_SE)
		return (1); /* not a command: do not eat the user's text */
	t->seen = 1;
	if (b == TN_IAC)
		return (1);
	if (b == TN_SB)
		t->state = TELNET_S_SB;
	else if (b >= TN_WILL) {
		t->verb = b;
		t->state = TELNET_S_VERB;
	}
	/* NOP, DM, BRK, IP, AO, AYT, EC, EL, GA, stray SE: dropped. */
	return (0);
}

size_t
telnet_filter(struct telnet *t, uint8_t *buf, size_t len, uint8_t *reply,
    size_t replycap, size_t *replylen)
{
	size_t i, o = 0;
	uint8_t b;

	for (i = 0; i < len; i++) {
		b = buf[i];
		switch (t->state) {
		case TELNET_S_DATA:
			if (b == TN_IAC)
				t->state = TELNET_S_IAC;
			else
				buf[o++] = b;
			break;
		case TELNET_S_SB:
			if (b == TN_IAC)
				t->state = TELNET_S_SB_IAC;
			break;
		case TELNET_S_SB_IAC:
			if (b == TN_SE)
				t->state = TELNET_S_DATA;
			else if (b == TN_IAC)
				t->state = TELNET_S_SB; /* escaped 0xFF */
			else if (telnet_command(t, b))
				buf[o++] = b; /* peer forgot SE: resync */
			break;
		case TELNET_S_IAC:
			if (telnet_command(t, b))
				buf[o++] = b;
			break;
		case TELNET_S_VERB:
			t->state = TELNET_S_DATA;
			if (t->verb == TN_WILL)
				telnet_refuse(
				    t, 0, b, reply, replycap, replylen);
			else if (t->verb == TN_DO)
				telnet_refuse(
				    t, 1, b, reply, replycap, replylen);
			/* Never answer DONT/WONT: answering refusals loops. */
			break;
		default:
			/* Corrupt state: resynchronise on data. */
			t->state = TELNET_S_DATA;
			buf[o++] = b;
			break;
		}
	}
	return (o);
}

/* Code points never allowed in a name, whatever their position. */
static int
name_cp_banned(int32_t c)
{
	static const struct {
		int32_t lo, hi;
	} banned[] = {
	    {0x00D7, 0x00D7}, /* multiplication sign */
	    {0x00F7, 0x00F7}, /* division sign */
	    {0x034F, 0x034F}, /* combining grapheme joiner */
	    {0x061C, 0x061C}, /* arabic letter mark */
	    {0x115F, 0x1160}, /* hangul fillers */
	    {0x1680, 0x1680}, /* ogham space mark */
	    {0x17B4, 0x17B5}, /* khmer invisible vowels */
	    {0x180B, 0x180F}, /* mongolian selectors, separator */
	    {0x2000, 0x206F}, /* general punctuation, bidi */
	    {0x2800, 0x2800}, /* braille blank */
	    {0x3000, 0x303F}, /* CJK symbols and punctuation */
	    {0x3164, 0x3164}, /* hangul filler */
	    {0xE000, 0xF8FF}, /* private use */
	    {0xFDD0, 0xFDEF}, /* noncharacters */
	    {0xFE00, 0xFE0F}, /* variation selectors */
	    {0xFEFF, 0xFEFF}, /* BOM, zero-width no-break space */
	    {0xFFA0, 0xFFA0}, /* halfwidth hangul filler */
	    {0xFFF0, 0xFFFF}, /* specials, noncharacters */
	    {0x1F000, 0x1FFFF}, /* emoji and symbols */
	    {0xE0000, 0xE007F}, /* tags */
	    {0xE0100, 0xE01EF}, /* variation selectors supplement */
	    {0xF0000, 0x10FFFF}, /* supplementary private use */
	};
	size_t i;

	for (i = 0; i < sizeof banned / sizeof banned[0]; i++) {
		if (c >= banned[i].lo && c <= banned[i].hi)
			return (1);
	}
	return (0);
}

/* Combining marks: fine after a base character, invisible-ish first. */
static int
name_cp_combining(int32_t c)
{
	return ((c >= 0x0300 && c <= 0x036F) || (c >= 0x1AB0 && c <= 0x1AFF) ||
	    (c >= 0x1DC0 && c <= 0x1DFF) || (c >= 0x20D0 && c <= 0x20FF) ||
	    (c >= 0xFE20 && c <= 0xFE2F));
}

static int
name_cp_allowed(int32_t c)
{
	if (c < 0x80) {
		return ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') ||
		    (c != '\0' && strchr("-_[]{}\\|^`", c) != NULL));
	}
	return (c >= 0xC0 && !name_cp_banned(c));
}

/* Shared nick/room body check; strict_first forbids digit or '-' first. */
static const char *
name_check(const uint8_t *p, size_t len, size_t maxlen, int strict_first)
{
	size_t i = 0, count = 0;
	int32_t cp;

	if (len == 0)
		return ("is empty");
	/* Bound the work before decoding: 4 bytes is the longest character. */
	if ((len - 1) / 4 >= maxlen)
		return ("too long");
	while (i < len) {
		i += utf8_decode(p + i, len - i, &cp);
		if (cp == UTF8_INVALID)
			return ("is not valid UTF-8");
		if (count == 0) {
			if (strict_first &&
			    ((cp >= '0' && cp <= '9') || cp == '-'))
				return ("may not start with a digit or '-'");
			if (name_cp_combining(cp))
				return ("may not start with a combining mark");
		}
		if (!name_cp_allowed(cp)) {
			if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F))
				return ("contains a character that is not "
					"allowed: a control character");
			if (cp == ' ')
				return ("contains a character that is not "
					"allowed: a space");
			return ("contains a character that is not allowed: "
				"use letters, digits and -_[]{}\\|^`");
		}
		if (++count > maxlen)
			return ("too long");
	}
	return (NULL);
}

const char *
nick_check(const char *s, size_t len, size_t maxlen)
{
	return (name_check((const uint8_t *)s, len, maxlen, 1));
}

const char *
room_check(const char *s, size_t len, size_t maxlen)
{
	if (len == 0 || s[0] != '#')
		return ("must start with '#'");
	if (len == 1)
		return ("is empty");
	return (name_check((const uint8_t *)s + 1, len - 1, maxlen, 0));
}

/* The simple 1:1 lowercase mapping documented in text.h. */
static int32_t
name_fold_cp(int32_t c)
{
	if (c >= 'A' && c <= 'Z')
		return (c + 0x20);
	if (c >= 0x00C0 && c <= 0x00DE && c != 0x00D7)
		return (c + 0x20);
	if (c == 0x0178)
		return (0x00FF);
	/* Latin Extended-A: pairs start even, except in the two odd runs. */
	if ((c >= 0x0100 && c <= 0x012F) || (c >= 0x0132 && c <= 0x0137) ||
	    (c >= 0x014A && c <= 0x0177))
		return (c | 1);
	if ((c >= 0x0139 && c <= 0x0148) || (c >= 0x0179 && c <= 0x017E))
		return ((c & 1) ? c + 1 : c);
	if (c >= 0x0391 && c <= 0x03A9 && c != 0x03A2)
		return (c + 0x20);
	if (c == 0x03C2)
		return (0x03C3); /* final sigma folds with sigma */
	if (c >= 0x0410 && c <= 0x042F)
		return (c + 0x20);
	if (c >= 0x0400 && c <= 0x040F)
		return (c + 0x50);
	return (c);
}

size_t
name_fold(const char *s, size_t len, char *out, size_t outcap)
{
	const uint8_t *p = (const uint8_t *)s;
	uint8_t enc[4];
	size_t i = 0, o = 0, n, elen;
	int32_t cp;

	if (outcap == 0)
		return (0);
	while (i < len) {
		n = utf8_decode(p + i, len - i, &cp);
		if (cp == UTF8_INVALID) {
			memcpy(enc, p + i, n); /* n <= 3 here */
			elen = n;
		} else
			elen = utf8_encode(name_fold_cp(cp), enc);
		if (elen >= outcap - o)
			break;
		memcpy(out + o, enc, elen);
		o += elen;
		i += n;
	}
	out[o] = '\0';
	return (o);
}
