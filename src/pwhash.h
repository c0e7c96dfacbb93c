/*
 * Password hashing: a slow salted KDF through OpenSSL's EVP_KDF (scrypt
 * or PBKDF2-SHA256).  Pure CPU work with no shared state: call it from a
 * worker thread, never from the event loop.
 *
 * A stored hash is one self-describing string, so changing the
 * parameters in the config affects new hashes only; old ones still
 * verify with the parameters they were made with:
 *   scrypt$N$r$p$SALTHEX$HASHHEX
 *   pbkdf2-sha256$ITERATIONS$SALTHEX$HASHHEX
 */
#ifndef PARLEY_PWHASH_H
#define PARLEY_PWHASH_H

#include <stddef.h>
#include <stdint.h>

enum pwhash_kdf { PWHASH_SCRYPT, PWHASH_PBKDF2 };

struct pwhash_params {
	enum pwhash_kdf kdf;
	uint64_t scrypt_n; /* a power of two */
	uint32_t scrypt_r;
	uint32_t scrypt_p;
	uint64_t pbkdf2_iterations;
};

#define PWHASH_SALT_BYTES 16
#define PWHASH_KEY_BYTES 32
/* Room for the longest stored string, with its NUL. */
#define PWHASH_STR_MAX 192

/* Hash pw with a fresh random salt into out; 0, or -1 on failure. */
int pwhash_make(
    const struct pwhash_params *p, const char *pw, char *out, size_t outlen);
/*
 * 1 if pw matches stored, 0 if not, -1 if stored is malformed or the KDF
 * failed.  The final comparison is constant-time (CRYPTO_memcmp).
 */
int pwhash_verify(const char *stored, const char *pw);
/* The same cost as a verification, for unknown accounts (no timing oracle). */
void pwhash_dummy(const struct pwhash_params *p, const char *pw);

#endif
