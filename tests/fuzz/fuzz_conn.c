/*
 * libFuzzer target: whole connections.  Bytes drive up to four clients of
 * one service (chat or echo) over in-memory bufferevent pairs, through the
 * real conn state machine, backpressure, telnet filter, framing, flood
 * control and command handling.
 *
 * Input: one byte of knobs, then operations.
 *   knobs  bit 0 chat (else echo); bit 1 tight limits; bits 2-3 clients
 *          at start - 1; bit 4 a tight flood bucket
 *   op     high nibble picks the client, low nibble the action:
 *          0-6 send the next N bytes (N = next byte), 7 send a canned line,
 *          8 nothing, 9 toggle slow reader, 10 half-close, 11 connect,
 *          12 reset, 13 pump, 14 let time pass (flood refill), 15 one byte
 * The loop runs after every operation.
 *
 * Checks: echo gives back exactly what each client sent, once it reads
 * again; chat sends nothing but CRLF lines a raw terminal shows safely;
 * no crash, no sanitizer report, no leak.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "conn.h"
#include "harness.h"
#include "service.h"
#include "check.h"

#define MAXIN 16384

static const char *const canned[] = {
    "/join #a\n",
    "/join #b\r\n",
    "/nick zed\n",
    "/nick guest1\n",
    "/part\n",
    "/part #a bye now\n",
    "/msg guest1 hello\n",
    "/msg zed hi\n",
    "/topic news\n",
    "/topic\n",
    "/who\n",
    "/who #a\n",
    "/rooms\n",
    "/help\n",
    "/help nick\n",
    "/me waves\n",
    "/history 5\n",
    "/history since 1m\n",
    "/search hello\n",
    "/quit\n",
    "//slash\n",
    "hello\n",
    "\xff\xfd\x01\xff\xfb\x03",
    "\xff\xfa\x18\x01\xff\xf0",
    "\x1b[2J\x07\n",
    "\xc3\x28\xed\xa0\x80\n",
    "/mode +k key\n",
    "/mode +i\n",
    "/mode +o guest2\n",
    "/invite guest2\n",
    "/kick guest2 out\n",
    "/ban guest*\n",
    "/unban guest*\n",
    "/join #a key\n",
    "/resume 0123456789abcdef0123456789abcdef\n",
    "/register secret99\n",
    "/identify secret99\n",
};
#define NCANNED (sizeof canned / sizeof canned[0])

struct input {
	const uint8_t *p;
	size_t n;
};

static int
next(struct input *in)
{
	if (in->n == 0)
		return -1;
	in->n--;
	return *in->p++;
}

static struct config *
make_config(int knobs)
{
	struct config *cfg = config_new();

	cfg->history_enabled = 0;
	if (knobs & 2) {
		cfg->echo_buffer_limit = 4096;
		cfg->chat_max_line = 64;
		cfg->chat_output_soft_limit = 1024;
		cfg->chat_output_hard_limit = 4096;
		cfg->chat_max_rooms_per_client = 2;
		cfg->chat_max_rooms = 3;
		cfg->chat_nick_max = 4;
		cfg->chat_room_max = 3;
	}
	if (knobs & 16) {
		cfg->chat_flood_rate = 1000;
		cfg->chat_flood_burst = 2;
	} else {
		cfg->chat_flood_burst = 1000000;
		cfg->chat_flood_rate = 1000000;
	}
	return cfg;
}

/* Read until nothing more arrives, every client a fast reader again. */
static void
settle(struct fz *f)
{
	size_t before, after;
	int i, rounds;

	for (i = 0; i < f->nclients; i++)
		fz_set_slow(f, i, 0);
	for (rounds = 0; rounds < 1000; rounds++) {
		before = after = 0;
		for (i = 0; i < f->nclients; i++)
			before += f->c[i].recv.n;
		fz_pump(f);
		for (i = 0; i < f->nclients; i++)
			after += f->c[i].recv.n;
		if (after == before && rounds > 0)
			break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = {data, size};
	const struct conn_service *svc;
	struct fz f;
	int knobs, op, i, k, n, sleeps = 0;
	const char *line;

	if (size < 1 || size > MAXIN)
		return 0;
	fz_global_init();
	knobs = next(&in);
	svc = (knobs & 1) ? &chat_service : &echo_service;
	if (fz_init(&f, make_config(knobs)) == -1)
		return 0;
	for (k = 0; k <= ((knobs >> 2) & 3); k++)
		fz_connect(&f, svc);
	fz_pump(&f);

	while ((op = next(&in)) != -1) {
		i = (op >> 4) % f.nclients;
		switch (op & 0x0F) {
		case 0:
		case 1:
		case 2:
		case 3:
		case 4:
		case 5:
		case 6:
			if ((n = next(&in)) == -1)
				break;
			if ((size_t)n > in.n)
				n = (int)in.n;
			fz_send(&f, i, in.p, (size_t)n);
			in.p += n;
			in.n -= (size_t)n;
			break;
		case 7:
			if ((n = next(&in)) == -1)
				break;
			line = canned[n % NCANNED];
			fz_send(&f, i, line, strlen(line));
			break;
		case 8:
			break;
		case 9:
			fz_set_slow(&f, i, !f.c[i].slow);
			break;
		case 10:
			fz_finish(&f, i);
			break;
		case 11:
			fz_connect(&f, svc);
			break;
		case 12:
			fz_drop(&f, i);
			break;
		case 13:
			fz_pump(&f);
			break;
		case 14:
			if (sleeps++ < 3)
				usleep(3000);
			break;
		case 15:
			if ((n = next(&in)) != -1)
				fz_send(&f, i, &(char){(char)n}, 1);
			break;
		}
		fz_pump(&f);
	}
	settle(&f);

	for (i = 0; i < f.nclients; i++) {
		const struct fz_client *c = &f.c[i];

		if (svc == &chat_service) {
			fz_check_chat_output(c);
		} else if (c->bev != NULL && !c->overflow) {
			/* Echo: every byte back, in order, none extra. */
			CHECK(c->recv.n == c->sent.n);
			CHECK(c->sent.n == 0 ||
			    memcmp(c->recv.p, c->sent.p, c->sent.n) == 0);
		}
	}
	fz_free(&f);
	return 0;
}
