/*
 * Text hygiene: UTF-8 validation, control-character neutralisation,
 * telnet command stripping and nick/room name rules.
 *
 * Pure: no I/O, no allocation, no globals, no locale.  Everything here
 * works on bytes and is safe to feed arbitrary input (see
 * tests/fuzz/fuzz_text.c).
 */
#ifndef PARLEY_TEXT_H
#define PARLEY_TEXT_H

#include <stddef.h>
#include <stdint.h>

/*
 * Worst-case growth of text_sanitize: out needs TEXT_SANITIZE_MAX(len)
 * bytes.  Deliberately generous: the real worst case is 3 bytes out per
 * byte in (an invalid byte becomes EF BF BD; C2 9B becomes "\u009B").
 */
#define TEXT_SANITIZE_MAX(len) ((len)*6 + 1)

/*
 * Make one received line (without its line ending) safe to show on another
 * person's raw terminal.
 *
 * - Valid UTF-8 is copied byte for byte.
 * - Each maximal invalid subsequence (Unicode "substitution of maximal
 *   subparts": overlongs, surrogates U+D800-DFFF, > U+10FFFF, truncated
 *   sequences, stray continuation bytes, C0, C1, F5..FF) becomes U+FFFD
 *   (EF BF BD).
 * - C0 controls 0x00-0x1F except TAB, and DEL 0x7F, become caret notation:
 *   '^' then the byte XOR 0x40 ("^@" NUL, "^G" BEL, "^M" CR, "^[" ESC,
 *   "^?" DEL).
 * - C1 controls U+0080-U+009F (C2 80..C2 9F) become the six characters
 *   "\u0080".."\u009F" (hex digits uppercase).
 *
 * out is always NUL-terminated when outcap > 0.  If outcap is below
 * TEXT_SANITIZE_MAX(len) and the result does not fit, it is cut before the
 * first unit (character, U+FFFD or escape) that would not fit, so nothing
 * is ever split.  Returns the bytes written, excluding the NUL.
 * *changed (may be NULL) is set non-zero if anything was replaced or cut,
 * zero otherwise.
 */
size_t text_sanitize(
    const char *in, size_t len, char *out, size_t outcap, int *changed);

/*
 * 1 if buf[0..len) is well-formed UTF-8 (same decoding rules as above),
 * else 0.  Checks the encoding only: controls are valid UTF-8.
 */
int text_valid_utf8(const char *buf, size_t len);

/*
 * Length of the longest prefix of s (len bytes of valid UTF-8) that fits
 * in max bytes and ends at a character boundary: where to cut text that
 * must stay valid UTF-8 when it is quoted in a bounded buffer.
 */
size_t text_cut(const char *s, size_t len, size_t max);

/*
 * Telnet (RFC 854/855) command stripping, stateful across arbitrary chunk
 * boundaries.  Fixed size, no allocation; initialise with telnet_init.
 */
struct telnet {
	int state; /* TELNET_S_* in text.c */
	uint8_t verb; /* WILL/WONT/DO/DONT awaiting its option */
	int seen; /* a telnet command was received */
	uint8_t refused[2][32]; /* [0] DONT sent, [1] WONT sent; bit/option */
};

void telnet_init(struct telnet *t);

/*
 * Remove telnet commands from buf in place and return the new length.
 * - IAC IAC is a literal 0xFF data byte (text_sanitize later turns it into
 *   U+FFFD).
 * - IAC WILL x is answered IAC DONT x, IAC DO x is answered IAC WONT x:
 *   every option is refused, at most once per option per direction per
 *   connection.  DONT and WONT are never answered.
 * - IAC SB ... IAC SE is skipped without buffering; IAC followed by
 *   another command inside SB ends the subnegotiation and is processed.
 * - Other commands (NOP, DM, BRK, IP, AO, AYT, EC, EL, GA, stray SE) are
 *   dropped.  IAC followed by a byte below 240 (not a command) drops the
 *   IAC and keeps the byte as data.
 * Refusals are appended to reply[*replylen .. replycap); a refusal that
 * does not fit is dropped (and may be sent when asked again).
 * t->seen is set once any command (IAC then a byte >= 240) is observed.
 */
size_t telnet_filter(struct telnet *t, uint8_t *buf, size_t len, uint8_t *reply,
    size_t replycap, size_t *replylen);

/*
 * Nick rules: 1..maxlen characters (code points; so at most 4*maxlen
 * bytes) of ASCII letters and digits, "-_[]{}\\|^`", and non-ASCII
 * "letter-ish" code points: >= U+00C0 except
 *   U+00D7, U+00F7; U+2000-U+206F (general punctuation: spaces,
 *   zero-width, bidi); U+3000-U+303F; U+FE00-U+FE0F and U+E0100-U+E01EF
 *   (variation selectors); U+FEFF; U+FFF0-U+FFFF; U+FDD0-U+FDEF;
 *   private use U+E000-U+F8FF and U+F0000-U+10FFFF; U+1F000-U+1FFFF
 *   (emoji, symbols); U+E0000-U+E007F (tags); invisible letters and
 *   fillers U+034F, U+061C, U+115F-U+1160, U+1680, U+17B4-U+17B5,
 *   U+180B-U+180F, U+2800, U+3164, U+FFA0;
 *   and combining marks (U+0300-U+036F, U+1AB0-U+1AFF, U+1DC0-U+1DFF,
 *   U+20D0-U+20FF, U+FE20-U+FE2F) as the first character.
 * The first character must not be a digit or '-'.
 * Returns NULL if valid, else a short static reason for the user.
 */
const char *nick_check(const char *s, size_t len, size_t maxlen);

/*
 * Room names: '#' then 1..maxlen characters under the nick rules, except
 * that digits and '-' may come first.
 */
const char *room_check(const char *s, size_t len, size_t maxlen);

/*
 * Fold a nick or room name for case-insensitive comparison into out
 * (NUL-terminated when outcap > 0), returning its length.
 *
 * This is a deliberately simple 1:1 lowercase fold, NOT full Unicode case
 * folding: ASCII A-Z; U+00C0-U+00DE except U+00D7 (+0x20); the upper/lower
 * pairs of Latin Extended-A U+0100-U+017F (U+0178 -> U+00FF; U+0130,
 * U+0131, U+0138, U+0149, U+017F unchanged); Greek U+0391-U+03A9 (+0x20,
 * U+03A2 is unassigned) and final sigma U+03C2 -> U+03C3; Cyrillic
 * U+0410-U+042F (+0x20) and U+0400-U+040F (+0x50).  Everything else,
 * including invalid bytes, is copied unchanged.
 *
 * No mapping changes the encoded length, so outcap >= len + 1 is enough;
 * with less, the output is cut at a character boundary.
 */
size_t name_fold(const char *s, size_t len, char *out, size_t outcap);

#endif
