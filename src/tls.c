/* OpenSSL server context; see tls.h. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "conf.h"
#include "log.h"
#include "tls.h"

static void
ssl_err(char *err, size_t errlen, const char *what, const char *path)
{
	unsigned long e = ERR_peek_last_error();
	char buf[256] = "unknown error";

	if (e != 0)
		ERR_error_string_n(e, buf, sizeof buf);
	snprintf(err, errlen, "%s %s: %s", what, path, buf);
	ERR_clear_error();
}

SSL_CTX *
tls_ctx_new(const struct config *cfg, char *err, size_t errlen)
{
	SSL_CTX *ctx;
	static const unsigned char sid_ctx[] = "parleyd";

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		ssl_err(err, errlen, "SSL_CTX_new", "");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, cfg->tls_min_version);
	/*
	 * Server preference so weak client orderings cannot pick a weak
	 * suite; no renegotiation (a CPU DoS vector with no use here).
	 */
	SSL_CTX_set_options(ctx,
	    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
		SSL_OP_NO_COMPRESSION);
	/*
	 * nc-style clients (openssl s_client among them) often close without
	 * close_notify; for a line protocol that is a plain end of input.
	 */
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* Idle TLS connections give back their 34 KiB read/write buffers. */
	SSL_CTX_set_mode(ctx,
	    SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
		SSL_MODE_ENABLE_PARTIAL_WRITE);
	SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	if (SSL_CTX_set_cipher_list(ctx, cfg->tls_ciphers) != 1) {
		ssl_err(err, errlen, "bad [tls] ciphers", cfg->tls_ciphers);
		goto fail;
	}
	if (SSL_CTX_set_ciphersuites(ctx, cfg->tls_ciphersuites) != 1) {
		ssl_err(err, errlen, "bad [tls] ciphersuites",
		    cfg->tls_ciphersuites);
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_certificate) !=
	    1) {
		ssl_err(err, errlen, "cannot load certificate",
		    cfg->tls_certificate);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(
		ctx, cfg->tls_private_key, SSL_FILETYPE_PEM) != 1) {
		ssl_err(err, errlen, "cannot load private key",
		    cfg->tls_private_key);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ssl_err(err, errlen, "private key does not match certificate",
		    cfg->tls_private_key);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

SSL *
tls_ssl_new(SSL_CTX *ctx)
{
	SSL *ssl = SSL_new(ctx);

	if (ssl == NULL)
		log_ssl_errors(LOG_ERR, "SSL_new");
	return ssl;
}

static int
accept_any(int preverify, X509_STORE_CTX *ctx)
{
	(void)preverify;
	(void)ctx;
	return 1; /* identity is the fingerprint, not a chain */
}

void
tls_ask_client_cert(SSL *ssl, int required)
{
	SSL_set_verify(ssl,
	    SSL_VERIFY_PEER | (required ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
	    accept_any);
}

int
tls_peer_fingerprint(SSL *ssl, char *hex, size_t len)
{
	static const char digits[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n = 0, i;
	X509 *cert;

	if (ssl == NULL || (cert = SSL_get0_peer_certificate(ssl)) == NULL ||
	    X509_digest(cert, EVP_sha256(), md, &n) != 1 || len < 2 * n + 1)
		return -1;
	for (i = 0; i < n; i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 15];
	}
	hex[2 * n] = '\0';
	return 0;
}
