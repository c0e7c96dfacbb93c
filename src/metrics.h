/*
 * Prometheus metrics over HTTP (GET /metrics), served by libevent's evhttp
 * on listeners with service = metrics.
 */
#ifndef PARLEY_METRICS_H
#define PARLEY_METRICS_H

struct server;
struct metrics;
struct evhttp_bound_socket;

struct metrics *metrics_new(struct server *s);
void metrics_free(struct metrics *m);
/* Serve HTTP on the listening socket fd (which metrics then owns). */
struct evhttp_bound_socket *metrics_listen(struct metrics *m, int fd);
void metrics_unlisten(struct metrics *m, struct evhttp_bound_socket *b);

#endif
