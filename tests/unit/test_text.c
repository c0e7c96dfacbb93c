/*
 * Unit tests for src/text.c: UTF-8 hygiene, telnet stripping, name rules.
 */
#include <stdint.h>
#include <string.h>

#include "tap.h"
#include "text.h"

#define FFFD "\xEF\xBF\xBD"

static char sbuf[1024];
static int schanged;

/* Sanitize with a full-size buffer; literals may hold NULs, hence L(). */
static const char *
san(const char *in, size_t len)
{
	size_t n;

	schanged = -1;
	n = text_sanitize(in, len, sbuf, sizeof sbuf, &schanged);
	if (n != strlen(sbuf))
		return ("(length mismatch)");
	return (sbuf);
}
#define L(s) (s), (sizeof(s) - 1)

static void
test_sanitize_valid(void)
{
	const char *s =
	    "h\xC3\xA9llo \xE4\xB8\x96\xE7\x95\x8C"; /* héllo 世界 */
	const char *emoji = "\xF0\x9F\x98\x80"; /* U+1F600 */
	const char *edges = "\xC2\xA0\xDF\xBF\xE0\xA0\x80\xED\x9F\xBF"
			    "\xEE\x80\x80\xEF\xBF\xBF\xF0\x90\x80\x80"
			    "\xF4\x8F\xBF\xBF";

	is_str(san(s, strlen(s)), s, "UTF-8 round trip of 'h\xC3\xA9llo'");
	is_int(schanged, 0, "valid text is not marked changed");
	is_str(san(emoji, 4), emoji, "4-byte emoji unchanged");
	is_str(san(edges, strlen(edges)), edges,
	    "boundary code points (U+A0, U+7FF, U+800, U+D7FF, U+E000, "
	    "U+FFFF, U+10000, U+10FFFF) unchanged");
	is_str(san(L("a\tb")), "a\tb", "TAB preserved");
	is_int(schanged, 0, "TAB does not count as a change");
	is_str(san(L("")), "", "empty input gives empty output");
	ok(text_valid_utf8(s, strlen(s)),
	    "text_valid_utf8 accepts 'h\xC3\xA9llo'");
	ok(text_valid_utf8(edges, strlen(edges)),
	    "text_valid_utf8 accepts boundary code points");
	ok(text_valid_utf8(L("a\x1b\x7f")), "controls are valid UTF-8");
}

static void
test_sanitize_invalid(void)
{
	is_str(san(L("\xC0\x80")), FFFD FFFD, "overlong C0 80 -> 2 x U+FFFD");
	is_int(schanged, 1, "invalid input is marked changed");
	is_str(san(L("\xC1\xBF")), FFFD FFFD, "overlong C1 BF -> 2 x U+FFFD");
	is_str(san(L("\xE0\x80\x80")), FFFD FFFD FFFD,
	    "overlong E0 80 80 -> 3 x U+FFFD");
	is_str(san(L("\xE0\x9F\xBF")), FFFD FFFD FFFD,
	    "overlong E0 9F BF -> 3 x U+FFFD");
	is_str(san(L("\xF0\x80\x80\x80")), FFFD FFFD FFFD FFFD,
	    "overlong F0 80 80 80 -> 4 x U+FFFD");
	is_str(san(L("\xED\xA0\x80")), FFFD FFFD FFFD,
	    "surrogate ED A0 80 -> 3 x U+FFFD");
	is_str(san(L("\xED\xBF\xBF")), FFFD FFFD FFFD,
	    "surrogate ED BF BF -> 3 x U+FFFD");
	is_str(san(L("\xF4\x90\x80\x80")), FFFD FFFD FFFD FFFD,
	    "F4 90 80 80 (> U+10FFFF) -> 4 x U+FFFD");
	is_str(san(L("a\x80z")), "a" FFFD "z", "lone 80 -> 1 x U+FFFD");
	is_str(san(L("\x80\xBF")), FFFD FFFD, "two stray continuations");
	is_str(san(L("x\xE4\xB8")), "x" FFFD,
	    "truncated E4 B8 at end -> 1 x U+FFFD");
	is_str(san(L("\xE4\xB8z")), FFFD "z",
	    "truncated E4 B8 before ASCII -> 1 x U+FFFD, ASCII kept");
	is_str(san(L("\xF0\x9F\x98")), FFFD, "truncated 4-byte -> 1 x U+FFFD");
	is_str(san(L("\xE4\xB8\xE4\xB8\x96")), FFFD "\xE4\xB8\x96",
	    "truncated sequence then valid one: valid one kept");
	is_str(san(L("\xF5\xF6\xF7\xF8\xF9\xFA\xFB\xFC\xFD\xFE\xFF")),
	    FFFD FFFD FFFD FFFD FFFD FFFD FFFD FFFD FFFD FFFD FFFD,
	    "F5..FF -> one U+FFFD each");
	is_str(san(L("\xF5\x80\x80\x80")), FFFD FFFD FFFD FFFD,
	    "F5 lead does not swallow its continuations");
	ok(!text_valid_utf8(L("\xC0\x80")), "text_valid_utf8 rejects overlong");
	ok(!text_valid_utf8(L("\xED\xA0\x80")),
	    "text_valid_utf8 rejects surrogate");
	ok(!text_valid_utf8(L("\xF4\x90\x80\x80")),
	    "text_valid_utf8 rejects > U+10FFFF");
	ok(!text_valid_utf8(L("ok\xE4\xB8")),
	    "text_valid_utf8 rejects truncated end");
	ok(!text_valid_utf8(L("\xFF")), "text_valid_utf8 rejects FF");
}

static void
test_sanitize_controls(void)
{
	is_str(san(L("\x1b[2J")), "^[[2J", "ESC [ 2 J -> ^[[2J");
	is_int(schanged, 1, "control is marked changed");
	is_str(san(L("ding\a")), "ding^G", "BEL -> ^G");
	is_str(san(L("a\0b")), "a^@b", "NUL -> ^@ (does not end the string)");
	is_str(san(L("x\x7fy")), "x^?y", "DEL -> ^?");
	is_str(san(L("over\rwrite")), "over^Mwrite", "bare CR -> ^M");
	is_str(san(L("\n\x1f\x1c")), "^J^_^\\", "LF, US, FS caret forms");
	is_str(san(L("\xC2\x9B"
		     "31m")),
	    "\\u009B31m", "C2 9B -> \\u009B");
	is_str(san(L("\xC2\x80\xC2\x85\xC2\x9F")), "\\u0080\\u0085\\u009F",
	    "C1 range ends and NEL escaped");
	is_str(san(L("\xC2\xA0")), "\xC2\xA0", "U+00A0 (first after C1) kept");
}

static void
test_sanitize_truncation(void)
{
	char out[16];
	size_t n;
	int chg;

	memset(out, 'X', sizeof out);
	n = text_sanitize(L("ab\xE4\xB8\x96"), out, 5, &chg);
	is_int(n, 2, "3-byte character that does not fit is not split");
	is_str(out, "ab", "truncated output NUL-terminated at boundary");
	is_int(chg, 1, "truncation is marked changed");
	n = text_sanitize(L("ab\xE4\xB8\x96"), out, 6, &chg);
	is_int(n, 5, "exactly enough room keeps the character");
	is_int(chg, 0, "exact fit is not a change");
	n = text_sanitize(L("a\x1b[1m"), out, 3, NULL);
	is_str(out, "a", "caret escape not split (changed may be NULL)");
	n = text_sanitize(L("\xC2\x9B"), out, 6, NULL);
	is_int(n, 0, "\\u009B needs 7 bytes with the NUL");
	n = text_sanitize(L("\xFF"), out, 3, NULL);
	is_int(n, 0, "U+FFFD not split");
	out[0] = 'X';
	n = text_sanitize(L("abc"), out, 0, NULL);
	ok(n == 0 && out[0] == 'X', "outcap 0 writes nothing");
}

static int
has_triplet(const uint8_t *r, size_t rlen, uint8_t verb, uint8_t opt)
{
	size_t i;
	int count = 0;

	for (i = 0; i + 2 < rlen; i += 3) {
		if (r[i] == 255 && r[i + 1] == verb && r[i + 2] == opt)
			count++;
	}
	return (count);
}

static void
test_telnet(void)
{
	struct telnet t;
	uint8_t buf[64], reply[64];
	size_t n, rlen, i, total;
	const uint8_t sb[] = {'h', 'i', 255, 250, 24, 0, 'x', 't', 'e', 'r',
	    'm', 255, 255, 'z', 255, 240, '!', 255, 241, '?'};
	const uint8_t seq[] = {'a', 255, 251, 1, 'b', 255, 253, 3, 'c', 255,
	    254, 5, 255, 252, 6, 'd'};

	telnet_init(&t);
	ok(t.seen == 0, "fresh telnet state has seen == 0");
	memcpy(buf, seq, sizeof seq);
	rlen = 0;
	n = telnet_filter(&t, buf, sizeof seq, reply, sizeof reply, &rlen);
	is_int(n, 4, "commands removed, 4 data bytes left");
	ok(memcmp(buf, "abcd", 4) == 0, "text around commands preserved");
	is_int(rlen, 6, "two refusals (WILL, DO), none for DONT/WONT");
	is_int(has_triplet(reply, rlen, 254, 1), 1, "WILL ECHO -> DONT ECHO");
	is_int(has_triplet(reply, rlen, 252, 3), 1, "DO SGA -> WONT SGA");
	ok(t.seen != 0, "seen set after a command");

	/* Same requests again: refused only once per connection. */
	memcpy(buf, seq, sizeof seq);
	n = telnet_filter(&t, buf, sizeof seq, reply, sizeof reply, &rlen);
	is_int(rlen, 6, "repeated WILL/DO not answered again");
	/* Same option, other direction is a separate refusal. */
	memcpy(buf, (uint8_t[]){255, 253, 1}, 3);
	n = telnet_filter(&t, buf, 3, reply, sizeof reply, &rlen);
	ok(n == 0 && rlen == 9 && has_triplet(reply, rlen, 252, 1) == 1,
	    "DO ECHO after WILL ECHO still gets WONT ECHO");

	/* DONT/WONT alone never produce a reply. */
	telnet_init(&t);
	rlen = 0;
	memcpy(buf, (uint8_t[]){255, 254, 1, 255, 252, 1}, 6);
	n = telnet_filter(&t, buf, 6, reply, sizeof reply, &rlen);
	ok(n == 0 && rlen == 0, "DONT/WONT never answered");

	/* SB..SE and NOP, fed one byte at a time. */
	telnet_init(&t);
	rlen = 0;
	total = 0;
	for (i = 0; i < sizeof sb; i++) {
		buf[total] = sb[i];
		total += telnet_filter(
		    &t, buf + total, 1, reply, sizeof reply, &rlen);
	}
	is_int(total, 4, "SB..SE skipped byte by byte");
	ok(memcmp(buf, "hi!?", 4) == 0, "data around SB and NOP preserved");
	is_int(rlen, 0, "subnegotiation never answered");

	/* IAC IAC is a literal 0xFF, also split across chunks. */
	telnet_init(&t);
	memcpy(buf, (uint8_t[]){'a', 255}, 2);
	n = telnet_filter(&t, buf, 2, NULL, 0, &rlen);
	buf[n] = 255;
	n += telnet_filter(&t, buf + n, 1, NULL, 0, &rlen);
	ok(n == 2 && buf[0] == 'a' && buf[1] == 255, "IAC | IAC -> 0xFF");

	/* A verb split from its option. */
	telnet_init(&t);
	rlen = 0;
	memcpy(buf, (uint8_t[]){255, 251}, 2);
	n = telnet_filter(&t, buf, 2, reply, sizeof reply, &rlen);
	buf[0] = 31;
	n += telnet_filter(&t, buf, 1, reply, sizeof reply, &rlen);
	ok(n == 0 && rlen == 3 && has_triplet(reply, rlen, 254, 31) == 1,
	    "IAC WILL | NAWS across chunks -> DONT NAWS");

	/* IAC before a non-command byte keeps the byte. */
	telnet_init(&t);
	memcpy(buf, (uint8_t[]){255, 'x'}, 2);
	n = telnet_filter(&t, buf, 2, NULL, 0, &rlen);
	ok(n == 1 && buf[0] == 'x' && t.seen == 0,
	    "IAC + data byte: IAC dropped, byte kept, not 'seen'");

	/* Unterminated SB ended by another command. */
	telnet_init(&t);
	rlen = 0;
	memcpy(buf, (uint8_t[]){255, 250, 1, 2, 255, 241, 'o', 'k'}, 8);
	n = telnet_filter(&t, buf, 8, reply, sizeof reply, &rlen);
	ok(n == 2 && memcmp(buf, "ok", 2) == 0,
	    "IAC NOP inside SB ends the subnegotiation");
	telnet_init(&t);
	memcpy(buf, (uint8_t[]){255, 250, 1, 255, 'o', 'k'}, 6);
	n = telnet_filter(&t, buf, 6, NULL, 0, &rlen);
	ok(n == 2 && memcmp(buf, "ok", 2) == 0,
	    "IAC + data inside SB ends it and keeps the data");

	/* The reply buffer never overflows. */
	telnet_init(&t);
	memset(reply, 0xAA, sizeof reply);
	rlen = 0;
	memcpy(buf, (uint8_t[]){255, 251, 1, 255, 251, 3, 255, 253, 5}, 9);
	n = telnet_filter(&t, buf, 9, reply, 5, &rlen);
	ok(rlen == 3 && reply[5] == 0xAA && reply[3] == 0xAA,
	    "refusals that do not fit are dropped, no overflow");
	memcpy(buf, (uint8_t[]){255, 251, 3}, 3);
	rlen = 0;
	n = telnet_filter(&t, buf, 3, reply, 5, &rlen);
	ok(rlen == 3 && has_triplet(reply, rlen, 254, 3) == 1,
	    "a dropped refusal is sent when asked again");
	rlen = 7;
	memcpy(buf, (uint8_t[]){255, 251, 9}, 3);
	n = telnet_filter(&t, buf, 3, reply, 5, &rlen);
	ok(rlen == 7, "*replylen beyond replycap is left alone");
}

static void
test_names(void)
{
	is_str(nick_check(L("Zo\xC3\xAB"), 16) == NULL ? "ok" : "bad", "ok",
	    "Zo\xC3\xAB is a valid nick");
	ok(nick_check(L("\xCE\xA9mega"), 16) == NULL, "\xCE\xA9mega is valid");
	ok(nick_check(L("\xD0\x94\xD0\xBC\xD0\xB8\xD1\x82\xD1\x80\xD0\xB8"
			"\xD0\xB9"),
	       16) == NULL,
	    "\xD0\x94\xD0\xBC\xD0\xB8\xD1\x82\xD1\x80\xD0\xB8\xD0\xB9 is "
	    "valid");
	ok(nick_check(L("[a]-_{b}\\|^`9"), 16) == NULL,
	    "all ASCII specials ok");
	ok(nick_check(L("a b"), 16) != NULL, "space rejected");
	is_str(nick_check(L("a b"), 16),
	    "contains a character that is not allowed: a space",
	    "space reason");
	is_str(nick_check(L("a\x1b"), 16),
	    "contains a character that is not allowed: a control character",
	    "ESC rejected");
	ok(nick_check(L("a\0b"), 16) != NULL, "NUL rejected");
	ok(nick_check(L("a\xC2\x85"), 16) != NULL, "C1 NEL rejected");
	is_str(nick_check(L("1abc"), 16), "may not start with a digit or '-'",
	    "leading digit rejected");
	is_str(nick_check(L("-x"), 16), "may not start with a digit or '-'",
	    "leading '-' rejected");
	ok(nick_check(L("a\xE2\x80\x8B"
			"b"),
	       16) != NULL,
	    "U+200B zero-width space rejected");
	ok(nick_check(L("a\xE2\x80\x80"
			"b"),
	       16) != NULL,
	    "U+2000 en quad rejected");
	ok(nick_check(L("a\xE2\x81\xAF"), 16) != NULL,
	    "U+206F (end of general punctuation) rejected");
	ok(nick_check(L("a\xE2\x81\xB0"), 16) == NULL,
	    "U+2070 (after general punctuation) allowed");
	ok(nick_check(L("a\xE2\x80\xAE"
			"b"),
	       16) != NULL,
	    "U+202E bidi override rejected");
	ok(nick_check(L("\xEF\xBB\xBF"
			"a"),
	       16) != NULL,
	    "U+FEFF rejected");
	ok(nick_check(L("a\xF0\x9F\x98\x80"), 16) != NULL, "emoji rejected");
	ok(nick_check(L("a\xC3\x97"
			"b"),
	       16) != NULL,
	    "U+00D7 rejected");
	ok(nick_check(L("a\xC2\xA9"), 16) != NULL,
	    "U+00A9 (< U+00C0) rejected");
	ok(nick_check(L("a\xEE\x80\x80"), 16) != NULL, "private use rejected");
	ok(nick_check(L("a\xE3\x80\x80"), 16) != NULL,
	    "U+3000 ideographic space rejected");
	ok(nick_check(L("a\xF3\xA0\x80\x81"), 16) != NULL, "tag rejected");
	ok(nick_check(L("a\xE2\xA0\x80"), 16) != NULL,
	    "braille blank rejected");
	ok(nick_check(L("\xCC\x81"
			"a"),
	       16) != NULL,
	    "combining mark first rejected");
	ok(nick_check(L("e\xCC\x81"), 16) == NULL,
	    "combining mark after a letter allowed");
	is_str(nick_check(L("a\xC3"), 16), "is not valid UTF-8",
	    "invalid UTF-8 rejected");
	is_str(nick_check(L(""), 16), "is empty", "empty nick rejected");
	ok(nick_check(L("abcd"), 4) == NULL, "exactly maxlen ASCII ok");
	is_str(nick_check(L("abcde"), 4), "too long", "maxlen + 1 too long");
	ok(nick_check(L("\xC3\xAB\xC3\xAB\xC3\xAB\xC3\xAB"), 4) == NULL,
	    "4 two-byte characters fit maxlen 4 (code points, not bytes)");
	is_str(nick_check(L("\xC3\xAB\xC3\xAB\xC3\xAB\xC3\xAB\xC3\xAB"), 4),
	    "too long", "5 code points too long for maxlen 4");
	ok(nick_check(L("a\xE4\xB8\x96\xE4\xB8\x96\xE4\xB8\x96"), 4) == NULL,
	    "CJK letters allowed and counted as one each");

	ok(room_check(L("#lobby"), 16) == NULL, "#lobby is a valid room");
	ok(room_check(L("#1-2"), 16) == NULL, "room may start with a digit");
	ok(room_check(L("#-x"), 16) == NULL, "room may start with '-'");
	is_str(room_check(L("lobby"), 16), "must start with '#'",
	    "room without '#' rejected");
	is_str(room_check(L("#"), 16), "is empty", "bare '#' rejected");
	ok(room_check(L("#a b"), 16) != NULL, "room with space rejected");
	ok(room_check(L("##"), 16) != NULL, "'#' inside a room name rejected");
	ok(room_check(L("#abcd"), 4) == NULL, "room maxlen excludes '#'");
	is_str(room_check(L("#abcde"), 4), "too long", "room too long");
}

static int
fold_eq(const char *a, const char *b)
{
	char fa[64], fb[64];

	name_fold(a, strlen(a), fa, sizeof fa);
	name_fold(b, strlen(b), fb, sizeof fb);
	return (strcmp(fa, fb) == 0);
}

static void
test_fold(void)
{
	char out[64];
	size_t n;

	ok(fold_eq("ZO\xC3\x8B", "zo\xC3\xAB"), "ZO\xC3\x8B == zo\xC3\xAB");
	ok(fold_eq("\xD0\x94\xD0\x9C\xD0\x98\xD0\xA2\xD0\xA0\xD0\x98\xD0\x99",
	       "\xD0\xB4\xD0\xBC\xD0\xB8\xD1\x82\xD1\x80\xD0\xB8\xD0\xB9"),
	    "\xD0\x94\xD0\x9C\xD0\x98\xD0\xA2\xD0\xA0\xD0\x98\xD0\x99 == "
	    "\xD0\xB4\xD0\xBC\xD0\xB8\xD1\x82\xD1\x80\xD0\xB8\xD0\xB9");
	ok(fold_eq("Nick", "NICK"), "Nick == NICK");
	ok(!fold_eq("Nick", "Nock"), "fold does not equate different names");
	ok(fold_eq("\xCE\xA9MEGA", "\xCF\x89mega"),
	    "\xCE\xA9MEGA == \xCF\x89mega");
	ok(fold_eq("\xCE\xA3\xCE\xA3", "\xCF\x83\xCF\x82"),
	    "final sigma folds with sigma");
	ok(!fold_eq("\xCE\xA2", "\xCF\x82"), "unassigned U+03A2 not folded");
	ok(fold_eq("\xD0\x81", "\xD1\x91"), "U+0401 -> U+0451");
	ok(fold_eq("\xC5\x81\xC3\x93\xC5\xB9", "\xC5\x82\xC3\xB3\xC5\xBA"),
	    "Latin Extended-A even/odd pairs (\xC5\x81\xC3\x93\xC5\xB9)");
	ok(fold_eq("\xC4\x80\xC5\x90\xC5\xA0\xC4\xB2",
	       "\xC4\x81\xC5\x91\xC5\xA1\xC4\xB3"),
	    "Latin Extended-A even/odd pairs "
	    "(\xC4\x80\xC5\x90\xC5\xA0\xC4\xB2)");
	ok(!fold_eq("\xC4\xB0", "i") && !fold_eq("\xC4\xB1", "i"),
	    "U+0130 and U+0131 are left alone");
	ok(fold_eq("\xC5\xB8", "\xC3\xBF"), "U+0178 -> U+00FF");
	ok(!fold_eq("\xC3\x97", "\xC3\xB7"), "U+00D7 is not folded to U+00F7");
	ok(fold_eq("[]\\^", "[]\\^"), "specials unchanged");
	n = name_fold(L("ABC\xC3\x89"), out, sizeof out);
	is_int(n, 5, "fold keeps the byte length");
	is_str(out, "abc\xC3\xA9", "fold output");
	n = name_fold(L("AB\xC3\x89"), out, 4);
	is_str(out, "ab", "fold truncation does not split a character");
}

int
main(void)
{
	test_sanitize_valid();
	test_sanitize_invalid();
	test_sanitize_controls();
	test_sanitize_truncation();
	test_telnet();
	test_names();
	test_fold();
	return (done_testing());
}
