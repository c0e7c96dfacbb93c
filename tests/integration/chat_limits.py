#!/usr/bin/env python3
"""Chat limits: overlong lines (1 MiB, 10 MiB without newline) are refused
once and discarded without buffering; flood control paces a flooder without
losing or reordering its lines and without slowing anyone else;
max_connections_per_ip, max_rooms_per_client, nick_length, room_length."""

import asyncio
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402
import chatclient as cc  # noqa: E402

MAX_LINE = 4096
RSS_GROWTH_MAX_KIB = 16 * 1024
FLOOD_LINES = 500
FLOOD_RATE = 50
FLOOD_BURST = 10
PER_IP = 4
E = re.escape


def too_long(lines):
    return [l for l in cc.texts(lines) if l.startswith("!!! line too long")]


async def overlong(t, srv):
    a = await cc.Chat.open(srv.port(), label="sender")
    b = await cc.Chat.open(srv.port(), label="receiver")
    await a.set_nick("big")
    await b.sync()
    rss = cc.RssSampler(srv).start()

    await a.send(b"y" * MAX_LINE)
    m = await b.expect(rb"^#lobby <big> y")
    t.is_(len(m.string) if m else None, len(b"#lobby <big> ") + MAX_LINE,
          "a line of exactly max_line_length (%d) is delivered whole" % MAX_LINE)
    await a.send(b"z" * (MAX_LINE + 1))
    la = await a.sync()
    t.ok(len(too_long(la)) == 1, "max_line_length + 1 is refused", repr(cc.texts(la)))
    t.like(too_long(la)[0] if too_long(la) else "", r"^!!! line too long \(more than %d bytes\); "
           "discarded$" % MAX_LINE, "the refusal names the limit")

    for label, size in (("1 MiB", 1 << 20), ("10 MiB", 10 << 20)):
        t0 = time.monotonic()
        data = b"x" * size
        await pt.send_all(a.w, data, timeout=20)
        await a.send_raw(b"\n")
        await a.send("after the %s line" % label)
        la = await a.sync(timeout=15)
        el = time.monotonic() - t0
        t.ok(len(too_long(la)) == 1, "%s line without newline: exactly one 'line too long' error"
             % label, repr(cc.texts(la))[:300])
        m = await b.expect(r"^#lobby <big> after the %s line$" % label, timeout=10)
        t.ok(m, "%s: the next normal line is delivered (%.1fs)" % (label, el))
        lb = await b.sync()
        seen = lb + ([m.string.encode()] if m else [])
        t.ok(not any(b"xxxx" in l for l in seen),
             "%s: no part of the overlong line reached the receiver" % label,
             repr(lb)[:300])
        t.ok(a.nick == "big" and not a.eof, "%s: sender still connected" % label)
    await rss.stop()
    bound = cc.rss_bound_kib(srv, RSS_GROWTH_MAX_KIB)
    t.ok(rss.growth < bound,
         "server RSS bounded while discarding 11 MiB of overlong input (grew %d KiB, base %d KiB, "
         "bound %d KiB)" % (rss.growth, rss.base, bound))
    await a.close()
    await b.close()


async def flood(t, srv):
    f = await cc.Chat.open(srv.port(), label="flooder")
    r = await cc.Chat.open(srv.port(), label="receiver")
    o = await cc.Chat.open(srv.port(), label="other")
    await f.set_nick("flooder")
    await o.set_nick("other")
    await r.sync()
    loop = asyncio.get_running_loop()
    got = []
    other_at = []
    done = asyncio.Event()

    async def receive():
        while len(got) < FLOOD_LINES or not other_at:
            line = await r._next(20)
            if line is None:
                break
            if line.startswith(b"#lobby <flooder> "):
                got.append(line[len(b"#lobby <flooder> "):])
            elif line == b"#lobby <other> am I slowed down?":
                other_at.append(loop.time())
        done.set()

    rt = asyncio.ensure_future(receive())
    burst = b"".join(b"flood %03d\n" % i for i in range(FLOOD_LINES))
    t0 = loop.time()
    await f.send_raw(burst)
    await asyncio.sleep(1.5)
    sent_at = loop.time()
    await o.send("am I slowed down?")
    try:
        await asyncio.wait_for(rt, 25)
    except asyncio.TimeoutError:
        pass
    t_end = loop.time()
    want = [b"flood %03d" % i for i in range(FLOOD_LINES)]
    t.is_(len(got), FLOOD_LINES, "all %d flooded lines delivered" % FLOOD_LINES)
    t.ok(got == want, "flooded lines delivered in order, none lost or duplicated",
         "first difference at %r" % next((i for i, (x, y) in enumerate(zip(got, want)) if x != y),
                                          min(len(got), len(want))))
    expect_min = (FLOOD_LINES - FLOOD_BURST) / FLOOD_RATE
    # got may be incomplete; time of the last flooded line is t_end at most.
    t.ok(t_end - t0 >= expect_min * 0.7,
         "flood was paced by the token bucket (%.1fs for %d lines at %d/s, burst %d; expected >= %.1fs)"
         % (t_end - t0, FLOOD_LINES, FLOOD_RATE, FLOOD_BURST, expect_min * 0.7))
    lat = other_at[0] - sent_at if other_at else None
    t.ok(lat is not None and lat < 1.0,
         "another client's line sent during the flood arrives promptly (%s)"
         % ("%.3fs" % lat if lat is not None else "never"))
    t.ok(other_at and other_at[0] < t_end - 1.0,
         "... and overtakes the flood backlog (not queued behind it)")
    lf = await f.sync(timeout=5)
    t.ok(not f.eof, "the flooder is still connected")
    t.ok(not any(l.startswith(b"!!!") for l in lf), "the flooder got no error", repr(lf[:5]))
    await f.close()
    await r.close()
    await o.close()


async def rooms_and_names(t, srv):
    c = await cc.Chat.open(srv.port(), label="roomy")
    for room in ("#r1", "#r2"):
        m = await c.cmd("/join " + room, r"^\*\*\* you joined|^!!! ")
        t.like(m and m.string, r"^\*\*\* you joined %s" % room, "join %s (room %d of 3)"
               % (room, 2 if room == "#r1" else 3))
    m = await c.cmd("/join #r3", r"^\*\*\* you joined|^!!! ")
    t.like(m and m.string, r"^!!! you are in 3 rooms, the maximum; /part one first$",
           "max_rooms_per_client=3: a fourth room is refused")
    m = await c.cmd("/join #r1", r"^\*\*\* #r1 is now|^!!! ")
    t.like(m and m.string, r"^\*\*\* #r1 is now your current room$",
           "at the limit, /join of a joined room still switches")
    await c.send("/part #r2")
    await c.expect("you left #r2")
    m = await c.cmd("/join #r3", r"^\*\*\* you joined|^!!! ")
    t.like(m and m.string, r"^\*\*\* you joined #r3", "after /part a new room can be joined")
    await c.send("/part #r3")
    await c.expect("you left #r3")

    m = await c.cmd("/nick abcdefgh", r"^\*\*\* you are now|^!!! ")
    t.like(m and m.string, r"^\*\*\* you are now known as abcdefgh$", "nick of nick_length (8) accepted")
    m = await c.cmd("/nick abcdefghi", r"^\*\*\* you are now|^!!! ")
    t.like(m and m.string, r'^!!! invalid nick "abcdefghi": too long$', "nick_length+1 refused")
    m = await c.cmd("/nick éééééééé", r"^\*\*\* you are now|^!!! ")
    t.like(m and m.string, r"^\*\*\* you are now known as éééééééé$",
           "nick_length counts characters, not bytes (8 x 2-byte)")
    m = await c.cmd("/join #abcdef", r"^\*\*\* you joined|^!!! ")
    t.like(m and m.string, r"^\*\*\* you joined #abcdef ", "room of room_length (6) accepted")
    await c.send("/part #abcdef")
    await c.expect("you left #abcdef")
    m = await c.cmd("/join #abcdefg", r"^\*\*\* you joined|^!!! ")
    t.like(m and m.string, r"^!!! cannot join #abcdefg: invalid room name: too long",
           "room_length+1 refused")
    await c.close()


async def per_ip(t, srv):
    clients = []
    for i in range(PER_IP):
        try:
            clients.append(await cc.Chat.open(srv.port(), label="ip%d" % i))
        except (cc.ChatError, OSError, asyncio.TimeoutError) as e:
            t.diag("client %d: %r" % (i, e))
    t.is_(len(clients), PER_IP, "max_connections_per_ip=%d: %d connections accepted" % (PER_IP, PER_IP))
    r, w = await pt.connect(srv.port())
    data, eof = await pt.read_to_eof(r, timeout=5)
    await pt.close(w)
    t.is_(data, b"parleyd: too many connections from your address\r\n",
          "connection %d is refused with the line" % (PER_IP + 1))
    t.ok(eof, "... and closed")
    await clients[-1].close() if clients else None
    ok = False
    for _ in range(30):  # the server sees the close asynchronously
        try:
            c = await cc.Chat.open(srv.port(), timeout=3, label="again")
            clients[-1] = c
            ok = True
            break
        except (cc.ChatError, OSError, asyncio.TimeoutError):
            await asyncio.sleep(0.1)
    t.ok(ok, "after one closes, a new connection is accepted")
    await cc.close_all(clients)


def main(t):
    with cc.chat_server(server={"max_connections_per_ip": "0"}) as srv:
        try:
            pt.run(overlong(t, srv), timeout=30)
        except (cc.ChatError, asyncio.TimeoutError) as e:
            t.ok(False, "overlong-line scenario ran to the end", "%r\nlog:\n%s" % (e, srv.log_tail()))
        t.ok(srv.alive(), "daemon alive after overlong lines")
    with cc.chat_server(chat={"flood_rate": FLOOD_RATE, "flood_burst": FLOOD_BURST,
                              "max_rooms_per_client": 3, "nick_length": 8,
                              "room_length": 6}) as srv:
        try:
            pt.run(rooms_and_names(t, srv), timeout=15)
            pt.run(flood(t, srv), timeout=30)
        except (cc.ChatError, asyncio.TimeoutError) as e:
            t.ok(False, "flood/rooms scenario ran to the end", "%r\nlog:\n%s" % (e, srv.log_tail()))
    with cc.chat_server(server={"max_connections_per_ip": PER_IP}) as srv:
        time.sleep(0.3)  # let the harness's readiness probe be closed
        try:
            pt.run(per_ip(t, srv), timeout=20)
        except (cc.ChatError, asyncio.TimeoutError) as e:
            t.ok(False, "per-ip scenario ran to the end", "%r\nlog:\n%s" % (e, srv.log_tail()))


pt.main(main)
