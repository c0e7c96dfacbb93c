#!/usr/bin/env python3
"""Fan-out: 200 concurrent clients in one room; 10 of them each send 20
numbered lines at once; every other client receives every line exactly once
with the right sender prefix and in per-sender order.  Then long lines from
12 senders at once: whole, and in order."""

import asyncio
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402
import chatclient as cc  # noqa: E402

CLIENTS = 200
SENDERS = 10
PER_SENDER = 20


async def collect(c, pat, want, one):
    """Hand the first want lines matching pat to one(match, line); stop
    early at a 20 s silence or EOF."""
    n = 0
    while n < want:
        line = await c.line(timeout=20)
        if line is None:
            return
        mm = pat.match(line)
        if mm:
            one(mm, line)
            n += 1


async def scenario(t, srv):
    t0 = time.monotonic()
    clients = await cc.open_many(srv.port(), CLIENTS, batch=40, timeout=15)
    t.is_(len(clients), CLIENTS, "%d clients connected and greeted (%.1fs)"
          % (CLIENTS, time.monotonic() - t0))
    nicks = [c.nick for c in clients]
    t.is_(len(set(n.lower() for n in nicks)), CLIENTS, "all guest nicks are distinct")
    t.is_(clients[-1].here, CLIENTS, "the last one was told %d are here" % CLIENTS)
    # Barrier: the first client has seen everyone join.
    last = clients[-1].nick
    m = await clients[0].expect(r"^\*\*\* #lobby: %s has joined$" % re.escape(last), timeout=15)
    t.ok(m, "first client saw the last one join")

    senders = clients[:SENDERS]
    idx = {c.nick.encode(): i for i, c in enumerate(senders)}
    pat = re.compile(rb"^#lobby <([^>]+)> msg (\d+) (\d+)$")
    got = [[[] for _ in range(SENDERS)] for _ in clients]
    wrong_prefix = []

    async def receive(k, c):
        def one(mm, line):
            i, seq = int(mm.group(2)), int(mm.group(3))
            if i >= SENDERS or idx.get(mm.group(1)) != i:
                wrong_prefix.append((k, line))
            else:
                got[k][i].append(seq)
        await collect(c, pat, PER_SENDER * (SENDERS - (1 if k < SENDERS else 0)), one)

    recv = [asyncio.ensure_future(receive(k, c)) for k, c in enumerate(clients)]
    t1 = time.monotonic()
    await asyncio.gather(*[s.send_raw(b"".join(b"msg %d %d\n" % (i, j) for j in range(PER_SENDER)))
                           for i, s in enumerate(senders)])
    await asyncio.wait(recv, timeout=25)
    el = time.monotonic() - t1
    for r in recv:
        r.cancel()
    await asyncio.gather(*recv, return_exceptions=True)

    want = list(range(PER_SENDER))
    problems = []
    for k in range(CLIENTS):
        for i in range(SENDERS):
            if i == k:
                if got[k][i]:
                    problems.append((k, i, "sender got its own lines back"))
                continue
            if got[k][i] != want:
                problems.append((k, i, "got %r" % got[k][i][:25]))
    t.ok(not problems, "every client got every other sender's %d lines exactly once, in order "
         "(%d deliveries in %.1fs)" % (PER_SENDER, sum(len(x) for g in got for x in g), el),
         "%d problems; first: %r" % (len(problems), problems[:5]))
    t.ok(not wrong_prefix, "every line carried its real sender's nick", repr(wrong_prefix[:3]))
    t.ok(all(not c.eof for c in clients), "no client was disconnected")
    t.ok(all(not c.bad_eol for c in clients), "every line ended in CRLF")

    # Everyone leaves; the room count goes back to the survivor.
    await cc.close_all(clients[1:])
    ok = False
    for _ in range(50):
        await clients[0].send("/who")
        lines = cc.texts(await clients[0].sync())
        if "*** #lobby has 1 member(s):" in lines:
            ok = True
            break
        await asyncio.sleep(0.1)
    t.ok(ok, "after %d clients close, /who shows 1 member" % (CLIENTS - 1))
    await clients[0].close()


async def scenario_long(t, srv):
    """Long lines (past 512 bytes each is its own buffer chain) from many
    senders at once: a receiver's output then holds more chains than one
    flush sends (FLUSH_IOV in src/conn.c), and must still arrive whole and in
    per-sender order."""
    senders_n, per, size = 12, 60, 1000
    clients = await cc.open_many(srv.port(), senders_n + 3, batch=20, timeout=15)
    senders, readers = clients[:senders_n], clients[senders_n:]
    for r in readers:
        await r.sync()
    body = {(i, j): (b"long %d %d " % (i, j)) + bytes([65 + (i + j) % 26]) * size
            for i in range(senders_n) for j in range(per)}
    pat = re.compile(rb"^#lobby <([^>]+)> (long (\d+) (\d+) .*)$")
    got = [[[] for _ in range(senders_n)] for _ in readers]
    damaged = []

    async def receive(k, c):
        def one(mm, line):
            i, j = int(mm.group(3)), int(mm.group(4))
            if mm.group(1) != senders[i].nick.encode() or mm.group(2) != body[(i, j)]:
                damaged.append((k, i, j, len(line)))
            got[k][i].append(j)
        await collect(c, pat, senders_n * per, one)

    recv = [asyncio.ensure_future(receive(k, c)) for k, c in enumerate(readers)]
    await asyncio.gather(*[s.send_raw(b"".join(body[(i, j)] + b"\n" for j in range(per)))
                           for i, s in enumerate(senders)])
    await asyncio.wait(recv, timeout=25)
    for r in recv:
        r.cancel()
    await asyncio.gather(*recv, return_exceptions=True)
    wrong = [(k, i) for k in range(len(readers)) for i in range(senders_n)
             if got[k][i] != list(range(per))]
    t.ok(not wrong, "%d senders x %d lines of %d bytes at once: every reader got each "
         "sender's lines once, in order" % (senders_n, per, size),
         "%d wrong; first: %r" % (len(wrong), [(k, i, got[k][i][:10]) for k, i in wrong[:3]]))
    t.ok(not damaged, "every long line arrived whole (byte for byte)", repr(damaged[:3]))
    await cc.close_all(clients)


def main(t):
    have = pt.raise_nofile(4096)
    if have < 2 * CLIENTS + 64:
        t.diag("RLIMIT_NOFILE is only %d" % have)
    with cc.chat_server(chat={"flood_rate": 1000, "flood_burst": 1000},
                        server={"max_connections_per_ip": 0}) as srv:
        try:
            pt.run(scenario(t, srv), timeout=45)
        except (cc.ChatError, asyncio.TimeoutError) as e:
            t.ok(False, "fan-out scenario ran to the end", "%r\nlog:\n%s" % (e, srv.log_tail()))
        try:
            pt.run(scenario_long(t, srv), timeout=45)
        except (cc.ChatError, asyncio.TimeoutError) as e:
            t.ok(False, "long-line scenario ran to the end", "%r\nlog:\n%s" % (e, srv.log_tail()))
        t.ok(srv.alive(), "daemon still running")


pt.main(main)
