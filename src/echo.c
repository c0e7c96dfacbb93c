/*
 * Echo service (RFC 862): every byte back, binary safe.
 *
 * Input is moved to the output without copying (evbuffer_add_buffer).
 * When a client sends faster than it reads, its output grows; past
 * [echo] buffer_limit we stop reading from it until the output drains to
 * half the limit, so memory per client stays bounded and TCP flow
 * control pushes back on the sender.
 */
#include "config.h"

#include <event2/buffer.h>

#include "conf.h"
#include "conn.h"
#include "server.h"
#include "service.h"

static void
echo_read(struct conn *c, struct evbuffer *in)
{
	struct server *s = conn_server(c);
	size_t limit = s->cfg->echo_buffer_limit;
	size_t n = evbuffer_get_length(in);

	s->stats.bytes_out += n;
	evbuffer_add_buffer(conn_output(c), in);
	if (conn_output_length(c) >= limit) {
		conn_pause(c, PAUSE_BACKPRESSURE);
		conn_watch_output(c, limit / 2);
	}
}

static void
echo_drained(struct conn *c)
{
	conn_resume(c, PAUSE_BACKPRESSURE);
}

const struct conn_service echo_service = {
    .name = "echo",
    .open = NULL,
    .read = echo_read,
    .drained = echo_drained,
    .shutdown = NULL,
    .close = NULL,
};
