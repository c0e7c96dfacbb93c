/*
 * Unit tests for src/pwhash.c: scrypt and PBKDF2 hashes made and checked,
 * salts differ, wrong passwords and malformed stored strings refused.
 * Cheap parameters: correctness here, cost in the integration tests.
 */
#include <string.h>

#include "pwhash.h"
#include "tap.h"

static void
test_scrypt(void)
{
	struct pwhash_params p = {PWHASH_SCRYPT, 1024, 8, 1, 0};
	char a[PWHASH_STR_MAX], b[PWHASH_STR_MAX];

	is_int(pwhash_make(&p, "correct horse", a, sizeof a), 0,
	    "scrypt: a hash is made");
	ok(strncmp(a, "scrypt$1024$8$1$", 16) == 0,
	    "scrypt: the string records its parameters (%s)", a);
	is_int(pwhash_verify(a, "correct horse"), 1, "scrypt: right password");
	is_int(pwhash_verify(a, "correct horsE"), 0, "scrypt: wrong password");
	is_int(pwhash_verify(a, ""), 0, "scrypt: empty password");
	is_int(pwhash_make(&p, "correct horse", b, sizeof b), 0,
	    "scrypt: a second hash");
	ok(strcmp(a, b) != 0, "scrypt: salts differ, so hashes differ");
	is_int(pwhash_make(&p, "x", a, 20), -1, "scrypt: too small a buffer");
}

static void
test_pbkdf2(void)
{
	struct pwhash_params p = {PWHASH_PBKDF2, 0, 0, 0, 1000};
	char a[PWHASH_STR_MAX];

	is_int(pwhash_make(&p, "pässwörd", a, sizeof a), 0,
	    "pbkdf2: a hash is made");
	ok(strncmp(a, "pbkdf2-sha256$1000$", 19) == 0, "pbkdf2: recorded");
	is_int(pwhash_verify(a, "pässwörd"), 1, "pbkdf2: right password");
	is_int(pwhash_verify(a, "passwort"), 0, "pbkdf2: wrong password");
}

static void
test_malformed(void)
{
	static const char *bad[] = {
	    "",
	    "plain",
	    "scrypt$1000$8$1$00$00", /* N not a power of two */
	    "scrypt$1024$8$1$zz$" /* bad hex */
	    "00112233445566778899aabbccddeeff",
	    "scrypt$1024$8$1$0011$0011", /* key too short */
	    "scrypt$1048576$1024$1$0011$00112233445566778899aabbccddeeff",
	    "pbkdf2-sha256$0$0011$00112233445566778899aabbccddeeff",
	    "md5$x$y",
	    "scrypt$1024$8$1$0011223344556677$00112233445566778899aabbccddeef",
	};
	size_t i;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		is_int(pwhash_verify(bad[i], "pw"), -1, "malformed %zu refused",
		    i);
}

int
main(void)
{
	test_scrypt();
	test_pbkdf2();
	test_malformed();
	return (done_testing());
}
