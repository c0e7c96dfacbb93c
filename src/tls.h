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

/*
 * Ask the client of ssl for a certificate (required: refuse the
 * handshake without one).  Any certificate is accepted: it is not
 * checked against a CA, only its SHA-256 fingerprint is used, to
 * identify an account it was bound to.
 */
void tls_ask_client_cert(SSL *ssl, int required);
/* The SHA-256 of the peer's certificate as lowercase hex; -1 if none. */
int tls_peer_fingerprint(SSL *ssl, char *hex, size_t len);

#endif
