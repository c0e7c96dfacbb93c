#!/usr/bin/env python3
"""Slow consumers: a client that stops reading (tiny receive buffer) while
50 others chat must not slow them down, lose their messages or grow the
server without bound.

A: it stops reading, room traffic piles up past output_soft_limit, then it
   reads again -> it gets what was queued, then "you missed N message(s)",
   then live traffic again; never disconnected.
B: private messages (not skippable) push it past output_hard_limit -> it is
   disconnected with a "!!! disconnected: ..." line after its queued output.
"""

import asyncio
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402
import chatclient as cc  # noqa: E402

SOFT = 64 * 1024
HARD = 1024 * 1024
CROWD = 50
MEASURERS = 5
INTERVAL = 0.4          # seconds between a crowd member's lines
P99_MAX = 0.5
RSS_GROWTH_MAX_KIB = 48 * 1024
BLAST_LINE = 2000
BLAST_CAP = 16 << 20    # give up pushing after this many bytes
E = re.escape


class Crowd:
    """CROWD clients in #lobby, each saying a timestamped line every
    INTERVAL; the first MEASURERS parse everything they receive (latency,
    completeness), the rest just drain their sockets."""

    def __init__(self, clients):
        self.clients = clients
        self.index = {c.nick: i for i, c in enumerate(clients)}
        self.sent = [0] * len(clients)
        self.got = [dict() for _ in range(MEASURERS)]   # sender -> list of seqs
        self.lat = []
        self.phase = "warmup"
        self.lat_by_phase = {}
        self.other = [[] for _ in range(MEASURERS)]
        self.stop = False
        self.tasks = []
        self.talkers = []

    def start(self):
        loop = asyncio.get_running_loop()
        for i, c in enumerate(self.clients):
            self.talkers.append(asyncio.ensure_future(self.talk(c, i, loop)))
            if i < MEASURERS:
                self.tasks.append(asyncio.ensure_future(self.measure(c, i, loop)))
            else:
                self.tasks.append(asyncio.ensure_future(self.drain(c)))

    async def talk(self, c, i, loop):
        await asyncio.sleep(INTERVAL * i / len(self.clients))
        while not self.stop:
            await c.send("lat %d %d %.6f" % (i, self.sent[i], loop.time()))
            self.sent[i] += 1
            await asyncio.sleep(INTERVAL)

    async def measure(self, c, j, loop):
        pat = re.compile(rb"^#lobby <[^>]+> lat (\d+) (\d+) ([\d.]+)$")
        while True:
            line = await c._next(30)
            if line is None:
                return
            m = pat.match(line)
            if m:
                d = loop.time() - float(m.group(3))
                self.lat.append(d)
                self.lat_by_phase.setdefault(self.phase, []).append(d)
                self.got[j].setdefault(int(m.group(1)), []).append(int(m.group(2)))
            else:
                self.other[j].append(line)

    async def drain(self, c):
        try:
            while await c.r.read(1 << 16):
                pass
        except (ConnectionError, OSError):
            pass

    async def finish(self):
        self.stop = True
        await asyncio.wait(self.talkers, timeout=10 * pt.SLOW)
        # Let the last lines arrive (a gap stays a gap after the deadline).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0 * pt.SLOW
        while self.missing() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for tk in self.talkers + self.tasks:
            tk.cancel()
        await asyncio.gather(*self.talkers, *self.tasks, return_exceptions=True)

    def missing(self):
        """(receiver, sender, problem) for every gap, duplicate or reorder."""
        bad = []
        for j in range(MEASURERS):
            for i in range(len(self.clients)):
                if i == j:
                    continue
                seqs = self.got[j].get(i, [])
                if seqs != list(range(self.sent[i])):
                    bad.append((j, i, "got %d of %d" % (len(seqs), self.sent[i])
                                if len(seqs) != self.sent[i] else "out of order/duplicated"))
        return bad


async def stalled_client(port, nick):
    sock = cc.small_rcvbuf_socket(port, 4096)
    c = await cc.Chat.open(None, sock=sock, label=nick)
    await c.set_nick(nick)
    return c


async def blast_until(writer_chat, make_line, srv, pattern, cap, drain_reader=None):
    """Send lines until the log matches pattern (or cap bytes).  Returns
    (lines sent, bytes sent, match)."""
    n = sent = 0
    m = None
    while sent < cap:
        chunk = b"".join(make_line(n + k) for k in range(16))
        n += 16
        sent += len(chunk)
        await writer_chat.send_raw(chunk)
        m = re.search(pattern, srv.log(), re.M)
        if m:
            break
        await asyncio.sleep(0.01)
    return n, sent, m


async def scenario(t, srv):
    loop = asyncio.get_running_loop()
    rss = cc.RssSampler(srv).start()
    clients = await cc.open_many(srv.port(), CROWD)
    crowd = Crowd(clients)
    crowd.start()
    await asyncio.sleep(1.0)

    # ---- A: stall past the soft limit, then resume
    crowd.phase = "A"
    s = await stalled_client(srv.port(), "stalled1")
    bl = await cc.Chat.open(srv.port(), label="blaster")
    await bl.set_nick("blaster")
    await bl.send("/join #flood")
    await bl.expect("you joined #flood")
    await s.send("/join #flood")
    await s.expect("you joined #flood")
    await s.send("/join #lobby")  # current room: #lobby (it stays a member of both)
    await s.expect("#lobby is now your current room")
    await s.sync()
    s.w.transport.pause_reading()

    def blast_line(k):
        head = b"blast %06d " % k
        return head + b"b" * (BLAST_LINE - len(head)) + b"\n"

    # blaster's own output must not pile up: drain it
    bl_drain = asyncio.ensure_future(crowd.drain(bl))
    nA, bytesA, m = await blast_until(bl, blast_line, srv,
                                      r"chat stalled1 \(.*\): slow reader", BLAST_CAP)
    t.ok(m, "A: server notices the stalled reader and holds its room traffic "
         "(after %d lines, %d KiB)" % (nA, bytesA >> 10), srv.log_tail(5))
    # some more that must be skipped
    for k in range(nA, nA + 32):
        await bl.send_raw(blast_line(k))
    nA += 32
    # Barrier: once the blaster's sync comes back, the server has handled
    # (queued or skipped) every line blasted, however far behind it was.
    bl_drain.cancel()
    await asyncio.gather(bl_drain, return_exceptions=True)
    await bl.sync(timeout=10 * pt.SLOW)
    bl_drain = asyncio.ensure_future(crowd.drain(bl))
    t.ok(not re.search(r"chat stalled1 .*output_hard_limit", srv.log()),
         "A: room traffic alone never pushes it to the hard limit")
    s.w.transport.resume_reading()
    m = await s.expect(r"^\*\*\* you missed (\d+) message\(s\) while your connection was slow$",
                       timeout=10 * pt.SLOW)
    t.ok(m, "A: after reading again it is told how many messages it missed",
         repr(cc.texts(list(s.backlog)[-3:])))
    before = list(s.backlog)
    s.backlog.clear()
    blasts = [int(l.split()[3]) for l in before if l.startswith(b"#flood <blaster> blast ")]
    whole = all(len(l) == len(b"#flood <blaster> ") + BLAST_LINE
                for l in before if l.startswith(b"#flood <blaster> "))
    t.ok(whole, "A: every line queued before the stall arrived whole",
         repr([(len(l), l[:40]) for l in before if l.startswith(b"#flood <blaster> ")
               and len(l) != len(b"#flood <blaster> ") + BLAST_LINE][:3]))
    t.ok(blasts == list(range(len(blasts))),
         "A: the lines it did get are the first %d, in order, no gaps" % len(blasts),
         repr(blasts[:10]))
    missed = int(m.group(1)) if m else 0
    t.ok(m and missed >= nA - len(blasts),
         "A: missed count %d covers the %d blasted lines it did not get"
         % (missed, nA - len(blasts)))
    await bl.send("after the stall")
    t.ok(await s.expect_line("#flood <blaster> after the stall", timeout=5),
         "A: live room traffic flows to it again")
    ls = await s.sync()
    t.ok(not s.eof and not any(l.startswith(b"!!! disconnected") for l in ls),
         "A: it was not disconnected")
    bl_drain.cancel()

    # ---- B: private messages past the hard limit
    crowd.phase = "B"
    s2 = await stalled_client(srv.port(), "stalled2")
    await s2.sync()
    s2.w.transport.pause_reading()
    pm = await cc.Chat.open(srv.port(), label="pm")
    await pm.set_nick("pmsender")
    pm_drain = asyncio.ensure_future(crowd.drain(pm))

    def pm_line(k):
        head = b"/msg stalled2 pm %06d " % k
        return head + b"p" * (BLAST_LINE - len(head)) + b"\n"

    nB, bytesB, m = await blast_until(pm, pm_line, srv,
                                      r"chat stalled2 \(.*\): output over output_hard_limit",
                                      BLAST_CAP)
    t.ok(m, "B: server disconnects it past output_hard_limit (after %d messages, %d KiB)"
         % (nB, bytesB >> 10), srv.log_tail(5))
    s2.w.transport.resume_reading()
    lines, eof = await s2.read_to_eof(timeout=8 * pt.SLOW)
    t.ok(eof, "B: its connection is closed")
    t.like(cc.texts(lines[-1:])[0] if lines else "",
           r"^!!! disconnected: you are not reading fast enough \(over %d bytes waiting\)$" % HARD,
           "B: the last line it gets says why")
    pms = [int(l.split()[2]) for l in lines if l.startswith(b"*pmsender* pm ")]
    t.ok(pms and pms == list(range(len(pms))),
         "B: it got the first %d private messages in order before the reason" % len(pms))
    pm_drain.cancel()

    def quit_seen():
        return any(re.match(rb"^\*\*\* stalled2 has quit", l) for l in crowd.other[0])
    deadline = loop.time() + 5 * pt.SLOW
    while not quit_seen() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    t.ok(quit_seen(), "B: the room is told it left")

    crowd.phase = "after"
    await asyncio.sleep(1.0)
    await crowd.finish()
    await rss.stop()

    # ---- the crowd
    for ph in ("A", "B"):
        v = crowd.lat_by_phase.get(ph, [])
        p99 = cc.percentile(v, 99)
        t.ok(v and p99 < P99_MAX, "phase %s: crowd delivery latency p99 %s < %.0f ms (%d samples, "
             "max %s)" % (ph, "%.0f ms" % (p99 * 1000) if v else "n/a", P99_MAX * 1000, len(v),
                          "%.0f ms" % (max(v) * 1000) if v else "n/a"))
    bad = crowd.missing()
    t.ok(not bad, "every crowd line reached every measuring client exactly once, in order "
         "(%d lines sent)" % sum(crowd.sent), repr(bad[:5]))
    bound = cc.rss_bound_kib(srv, RSS_GROWTH_MAX_KIB)
    t.ok(rss.growth < bound, "server RSS bounded (grew %d KiB from %d KiB, bound %d KiB; soft %d KiB,"
         " hard %d KiB)" % (rss.growth, rss.base, bound, SOFT >> 10, HARD >> 10))
    await cc.close_all(clients + [s, bl, pm, s2])


def main(t):
    pt.raise_nofile(1024)
    with cc.chat_server(chat={"output_soft_limit": "64k", "output_hard_limit": "1M",
                              "flood_rate": 10000, "flood_burst": 10000},
                        server={"max_connections_per_ip": 0}) as srv:
        try:
            pt.run(scenario(t, srv), timeout=45)
        except (cc.ChatError, asyncio.TimeoutError) as e:
            t.ok(False, "slow-consumer scenario ran to the end", "%r\nlog:\n%s" % (e, srv.log_tail()))
        t.ok(srv.alive(), "daemon still running")


pt.main(main)
