/* Password hashing; see pwhash.h. */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "pwhash.h"

/* scrypt's memory cap: the config limits N * r well below this. */
#define SCRYPT_MAXMEM (1ULL << 30)

static int
derive(const struct pwhash_params *p, const char *pw, const unsigned char *salt,
    size_t saltlen, unsigned char *out, size_t outlen)
{
	EVP_KDF *kdf;
	EVP_KDF_CTX *ctx = NULL;
	OSSL_PARAM params[7], *q = params;
	uint64_t n = p->scrypt_n, iter = p->pbkdf2_iterations;
	uint64_t maxmem = SCRYPT_MAXMEM;
	uint32_t r = p->scrypt_r, par = p->scrypt_p;
	int rc = -1;

	kdf = EVP_KDF_fetch(
	    NULL, p->kdf == PWHASH_SCRYPT ? "SCRYPT" : "PBKDF2", NULL);
	if (kdf == NULL || (ctx = EVP_KDF_CTX_new(kdf)) == NULL)
		goto out;
	*q++ = OSSL_PARAM_construct_octet_string(
	    OSSL_KDF_PARAM_PASSWORD, (void *)pw, strlen(pw));
	*q++ = OSSL_PARAM_construct_octet_string(
	    OSSL_KDF_PARAM_SALT, (void *)salt, saltlen);
	if (p->kdf == PWHASH_SCRYPT) {
		*q++ = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n);
		*q++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r);
		*q++ =
		    OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &par);
		*q++ = OSSL_PARAM_construct_uint64(
		    OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem);
	} else {
		*q++ = OSSL_PARAM_construct_utf8_string(
		    OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
		*q++ = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_ITER, &iter);
	}
	*q = OSSL_PARAM_construct_end();
	if (EVP_KDF_derive(ctx, out, outlen, params) == 1)
		rc = 0;
out:
	if (rc == -1)
		ERR_clear_error(); /* this thread's queue; nothing to report */
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	return rc;
}

static void
hex(const unsigned char *b, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	out[2 * n] = '\0';
}

static int
unhex(const char *s, size_t slen, unsigned char *out, size_t max)
{
	size_t i;
	unsigned v;

	if (slen % 2 != 0 || slen / 2 > max)
		return -1;
	for (i = 0; i < slen / 2; i++) {
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (unsigned char)v;
	}
	return (int)(slen / 2);
}

int
pwhash_make(
    const struct pwhash_params *p, const char *pw, char *out, size_t outlen)
{
	unsigned char salt[PWHASH_SALT_BYTES], key[PWHASH_KEY_BYTES];
	char salthex[2 * sizeof salt + 1], keyhex[2 * sizeof key + 1];
	int n;

	if (RAND_bytes(salt, sizeof salt) != 1 ||
	    derive(p, pw, salt, sizeof salt, key, sizeof key) == -1)
		return -1;
	hex(salt, sizeof salt, salthex);
	hex(key, sizeof key, keyhex);
	OPENSSL_cleanse(key, sizeof key);
	if (p->kdf == PWHASH_SCRYPT)
		n = snprintf(out, outlen,
		    "scrypt$%" PRIu64 "$%" PRIu32 "$%" PRIu32 "$%s$%s",
		    p->scrypt_n, p->scrypt_r, p->scrypt_p, salthex, keyhex);
	else
		n = snprintf(out, outlen, "pbkdf2-sha256$%" PRIu64 "$%s$%s",
		    p->pbkdf2_iterations, salthex, keyhex);
	OPENSSL_cleanse(keyhex, sizeof keyhex);
	return (n < 0 || (size_t)n >= outlen) ? -1 : 0;
}

int
pwhash_verify(const char *stored, const char *pw)
{
	struct pwhash_params p;
	unsigned char salt[64], want[64], got[64];
	char buf[PWHASH_STR_MAX], *f[6], *save = NULL, *t;
	int nf = 0, saltlen, keylen, rc;
	unsigned long long a, b, c;

	if (strlen(stored) >= sizeof buf)
		return -1;
	memcpy(buf, stored, strlen(stored) + 1);
	for (t = strtok_r(buf, "$", &save); t != NULL && nf < 6;
	     t = strtok_r(NULL, "$", &save))
		f[nf++] = t;
	memset(&p, 0, sizeof p);
	if (nf == 6 && strcmp(f[0], "scrypt") == 0 &&
	    sscanf(f[1], "%llu", &a) == 1 && sscanf(f[2], "%llu", &b) == 1 &&
	    sscanf(f[3], "%llu", &c) == 1 && a > 1 && (a & (a - 1)) == 0 &&
	    b > 0 && b <= 1024 && c > 0 && c <= 1024 &&
	    128ULL * a * b <= SCRYPT_MAXMEM / 2) {
		p.kdf = PWHASH_SCRYPT;
		p.scrypt_n = a;
		p.scrypt_r = (uint32_t)b;
		p.scrypt_p = (uint32_t)c;
		f[1] = f[4];
		f[2] = f[5];
	} else if (nf == 4 && strcmp(f[0], "pbkdf2-sha256") == 0 &&
	    sscanf(f[1], "%llu", &a) == 1 && a > 0 && a <= 100000000ULL) {
		p.kdf = PWHASH_PBKDF2;
		p.pbkdf2_iterations = a;
		f[1] = f[2];
		f[2] = f[3];
	} else
		return -1;
	if ((saltlen = unhex(f[1], strlen(f[1]), salt, sizeof salt)) <= 0 ||
	    (keylen = unhex(f[2], strlen(f[2]), want, sizeof want)) < 16)
		return -1;
	if (derive(&p, pw, salt, (size_t)saltlen, got, (size_t)keylen) == -1)
		return -1;
	rc = CRYPTO_memcmp(got, want, (size_t)keylen) == 0;
	OPENSSL_cleanse(got, sizeof got);
	return rc;
}

void
pwhash_dummy(const struct pwhash_params *p, const char *pw)
{
	unsigned char salt[PWHASH_SALT_BYTES] = {0}, key[PWHASH_KEY_BYTES];

	(void)derive(p, pw, salt, sizeof salt, key, sizeof key);
	OPENSSL_cleanse(key, sizeof key);
}
