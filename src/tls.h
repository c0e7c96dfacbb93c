/*
 * TLS server context: built from [tls], rebuilt on reload.  Connections
 * hold their own SSL reference, so swapping the context only affects
 * connections accepted afterwards.
 */
#ifndef PARLEY_TLS_H
#define PARLEY_TLS_H

#include <openssl/ssl.h>

struct config;

/* NULL with a message in err (and the OpenSSL queue logged) on failure. */
SSL_CTX *tls_ctx_new(const struct config *cfg, char *err, size_t errlen);
/* A new server-side SSL for one accepted connection, or NULL. */
SSL *tls_ssl_new(SSL_CTX *ctx);

#endif
