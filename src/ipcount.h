/*
 * Live connections per client address, for max_connections_per_ip.
 * IPv6 clients are counted per /64: one host usually owns the whole
 * prefix, so per-address counting would be no limit at all.
 */
#ifndef PARLEY_IPCOUNT_H
#define PARLEY_IPCOUNT_H

#include <sys/socket.h>

unsigned ipcount_get(const struct sockaddr *sa);
void ipcount_add(const struct sockaddr *sa);
void ipcount_del(const struct sockaddr *sa);

#endif
