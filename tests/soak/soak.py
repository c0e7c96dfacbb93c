#!/usr/bin/env python3
"""Soak test for parleyd: bounded mixed load, memory and descriptors watched.

    make soak                      # SOAK_SECONDS=900 (15 minutes)
    make soak SOAK_SECONDS=120
    python3 tests/soak/soak.py --seconds 120 [--interval 5]

One parleyd (from $PARLEYD, as in make check) with chat and echo, each plain
and TLS, under these loads at once for --seconds (idle_release is 20ms, so
plain connections sleep and wake all the time):

  talkers    6 chat clients in #soak, each sending numbered lines at 4/s
             (under the flood rate); every talker must receive every line
             of every other talker: nothing may be lost
  flooder    bursts of 120 lines at once into #flood every 15 s; flood
             control slows it down, a witness in #flood must still see
             every line
  slow       a client joins #soak, asks for /help 300 times and reads
             nothing for 35 s (output limits are small here, so it may be
             held back or cut off), then reads and quits; one after another
  echo       echo sessions of 1 byte to 256 KiB, checked byte for byte
  stall      a 2 MiB echo that the client does not read for 2 s
             (backpressure), then reads and checks
  tls churn  TLS handshakes on both TLS listeners, a line each, close;
             plus handshakes abandoned half-way and connections reset
             (SO_LINGER 0) mid-line

Every --interval seconds it prints elapsed time, the server's RSS, its
anonymous memory (RssAnon: heap, thread arenas and stacks -- what a leak
grows; RSS also counts shared library pages, which rise as code paths are
first used) with sqlite's share of it (from /metrics), open descriptors,
and client counters.  sqlite's page caches fill as the database grows, up
to [history] cache_size each, so they are checked against that bound and
the rest of anonymous memory must be flat.  It fails (exit 1) if a line
or an echoed byte is lost, if memory or the descriptor count keeps
growing (the lowest value of the last third of the run, after a warm-up
quarter, is above the lowest of the first third by more than 10% + 2 MiB
of RSS, 5% + 512 KiB of anonymous memory without sqlite's, or 4
descriptors), if sqlite holds more than its bound, or if descriptors do
not return to the idle baseline once the load stops.  Python 3 standard library only.
"""

import argparse
import asyncio
import os
import random
import socket
import ssl
import struct
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import parleytest as pt  # noqa: E402

TALKERS = 6
TALK_RATE = 4.0  # lines per second per talker
FLOOD_BURST = 120
FLOOD_EVERY = 15.0


class Stats:
    def __init__(self):
        self.c = {}
        self.errors = []

    def inc(self, key, n=1):
        self.c[key] = self.c.get(key, 0) + n

    def error(self, msg):
        if len(self.errors) < 50:
            self.errors.append(msg)
        print("soak: ERROR: %s" % msg, flush=True)


class Line:
    """A chat connection that reads lines into a queue in the background."""

    def __init__(self, reader, writer):
        self.r, self.w = reader, writer
        self.lines = asyncio.Queue()

    @classmethod
    async def open(cls, port, tls=None):
        r, w = await pt.connect(port, tls=tls, timeout=10)
        return cls(r, w)

    async def send(self, text):
        self.w.write(text.encode() + b"\n")
        await asyncio.wait_for(self.w.drain(), 30)

    async def expect(self, needle, timeout=15):
        """Read lines until one contains needle (bytes); returns it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            line = await asyncio.wait_for(self.r.readline(), max(0.01, deadline - loop.time()))
            if not line:
                raise ConnectionError("EOF while waiting for %r" % needle)
            if needle in line:
                return line

    async def close(self):
        await pt.close(self.w)


async def talker(i, port, stop, start_sending, joined, seen, sent, stats):
    """Send numbered lines into #soak, record every talker's lines received."""
    c = await Line.open(port)
    nick = "talker%d" % i
    await c.send("/nick %s" % nick)
    await c.expect(b"now known as %s" % nick.encode())
    await c.send("/join #soak")
    await c.expect(b"you joined #soak")
    joined.set()

    async def reader():
        while True:
            line = await c.r.readline()
            if not line:
                return
            # "#soak <talkerN> soak N SEQ"
            parts = line.split()
            if len(parts) >= 5 and parts[0] == b"#soak" and parts[2] == b"soak":
                try:
                    who, seq = int(parts[3]), int(parts[4])
                except ValueError:
                    continue
                seen[i][who].add(seq)
                stats.inc("chat_received")

    rt = asyncio.ensure_future(reader())
    await start_sending.wait()
    seq = 0
    try:
        while not stop.is_set():
            await c.send("soak %d %d" % (i, seq))
            sent[i] = seq + 1
            seq += 1
            stats.inc("chat_sent")
            await asyncio.sleep(1.0 / TALK_RATE * random.uniform(0.8, 1.2))
        # Drain: every line sent must reach every other talker.
        await asyncio.sleep(5)
    finally:
        rt.cancel()
        await c.close()


async def flooder(port, stop, stats):
    w = await Line.open(port)
    witness = await Line.open(port)
    for c in (w, witness):
        await c.send("/join #flood")
        await c.expect(b"you joined #flood")
    await w.send("/nick flooder")
    await w.expect(b"now known as flooder")
    got = set()

    async def reader():
        while True:
            line = await witness.r.readline()
            if not line:
                return
            parts = line.split()
            if len(parts) >= 4 and parts[1] == b"<flooder>" and parts[2] == b"flood":
                got.add(int(parts[3]))

    async def drain_flooder():
        while await w.r.read(65536):
            pass

    rt = asyncio.ensure_future(reader())
    dt = asyncio.ensure_future(drain_flooder())
    n = 0
    try:
        while not stop.is_set():
            burst = "".join("flood %d\n" % (n + k) for k in range(FLOOD_BURST))
            w.w.write(burst.encode())
            await asyncio.wait_for(w.w.drain(), 60)
            n += FLOOD_BURST
            stats.inc("flood_sent", FLOOD_BURST)
            try:
                await asyncio.wait_for(stop.wait(), FLOOD_EVERY)
            except asyncio.TimeoutError:
                pass
        # The flood rate (10/s) lets a whole burst through in ~12 s.
        deadline = time.monotonic() + FLOOD_BURST / 10 + 20
        while len(got) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        stats.inc("flood_received", len(got))
        if len(got) < n:
            stats.error("flood: witness saw %d of %d lines" % (len(got), n))
    finally:
        rt.cancel()
        dt.cancel()
        await w.close()
        await witness.close()


async def slow_reader(port, stop, stats):
    while not stop.is_set():
        try:
            # A small receive window, so the server's output backs up.
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.setblocking(False)
            await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", port))
            r, w = await pt.connect(port, sock=s, timeout=10)
            w.write(b"/join #soak\n" + b"/help\n" * 300)
            await w.drain()
            try:
                await asyncio.wait_for(stop.wait(), 35)
            except asyncio.TimeoutError:
                pass
            data, _ = await pt.read_to_eof(r, timeout=3)
            stats.inc("slow_bytes_read", len(data))
            if b"you missed" in data or b"not reading fast enough" in data:
                stats.inc("slow_held_back")
            w.write(b"/quit\n")
            await pt.close(w)
            stats.inc("slow_sessions")
        except (OSError, asyncio.TimeoutError, ConnectionError) as e:
            stats.error("slow reader: %r" % e)


async def echo_worker(port, stop, stats, tls=None):
    rnd = random.Random(os.getpid())
    while not stop.is_set():
        n = rnd.choice([1, 100, 4096, 65536, 256 * 1024])
        payload = os.urandom(n)
        try:
            got = await pt.echo_roundtrip(port, payload, tls=tls, timeout=30)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as e:
            stats.error("echo: %r" % e)
            continue
        if got != payload:
            stats.error("echo: sent %d bytes, got %d back%s" %
                        (n, len(got), "" if len(got) != n else " (different)"))
        stats.inc("echo_sessions")
        stats.inc("echo_bytes", n)
        await asyncio.sleep(0.02)


async def echo_stall(port, stop, stats):
    while not stop.is_set():
        payload = os.urandom(2 << 20)
        try:
            r, w = await pt.connect(port, timeout=10)
            sender = asyncio.ensure_future(pt.send_all(w, payload, timeout=60))
            await asyncio.sleep(2)  # not reading: backpressure
            got = await pt.read_exactly(r, len(payload), timeout=60)
            await sender
            await pt.close(w)
        except (OSError, asyncio.TimeoutError) as e:
            stats.error("echo stall: %r" % e)
            continue
        if got != payload:
            stats.error("echo stall: got %d of %d bytes" % (len(got), len(payload)))
        stats.inc("stall_sessions")
        try:
            await asyncio.wait_for(stop.wait(), 3)
        except asyncio.TimeoutError:
            pass


async def tls_churn(chat_tls, echo_tls, stop, stats):
    ctx = pt.client_ctx()
    k = 0
    while not stop.is_set():
        k += 1
        try:
            if k % 10 == 0:
                # Abandon a handshake half-way: a truncated ClientHello.
                s = socket.create_connection(("127.0.0.1", echo_tls), 5)
                s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
                s.close()
                stats.inc("tls_abandoned")
            elif k % 10 == 5:
                # A reset mid-line on a TLS chat connection.
                r, w = await pt.connect(chat_tls, tls=ctx, timeout=10)
                await r.readline()
                w.write(b"half a line without its end")
                await w.drain()
                sock = w.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                w.transport.abort()
                stats.inc("tls_resets")
            elif k % 2:
                got = await pt.echo_roundtrip(echo_tls, b"tls churn %d\n" % k, tls=ctx, timeout=10)
                if got != b"tls churn %d\n" % k:
                    stats.error("tls echo: got %r" % got)
                stats.inc("tls_handshakes")
            else:
                r, w = await pt.connect(chat_tls, tls=ctx, timeout=10)
                line = await asyncio.wait_for(r.readline(), 10)
                if b"welcome" not in line:
                    stats.error("tls chat greeting: %r" % line)
                w.write(b"/quit\n")
                await w.drain()
                await pt.read_to_eof(r, timeout=5)
                await pt.close(w)
                stats.inc("tls_handshakes")
        except (OSError, asyncio.TimeoutError, ssl.SSLError, ConnectionError) as e:
            stats.error("tls churn: %r" % e)
        await asyncio.sleep(0.05)


def sqlite_kib(srv):
    """parley_sqlite_memory_bytes from the metrics listener, in KiB."""
    url = "http://127.0.0.1:%d/metrics" % srv.port(4)
    with urllib.request.urlopen(url, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("parley_sqlite_memory_bytes "):
                return int(float(line.split()[1])) // 1024
    raise RuntimeError("no parley_sqlite_memory_bytes in /metrics")


def sample(srv):
    """(time, RSS, fds, anonymous memory, sqlite's share of it) in KiB."""
    sq = sqlite_kib(srv)
    return time.monotonic(), srv.rss_kib(), srv.fd_count(), srv.rss_kib("RssAnon"), sq


def growth_verdict(samples, what, idx, limit):
    """Lowest of the last third vs lowest of the first third, after warm-up."""
    body = samples[len(samples) // 4:]
    if len(body) < 6:
        return None
    third = len(body) // 3
    first = min(s[idx] for s in body[:third])
    last = min(s[idx] for s in body[-third:])
    ok = last <= limit(first)
    return ok, "%s: lowest %s in the first third, %s in the last" % (what, first, last)


async def soak(srv, seconds, interval, stats):
    ports = {name: srv.port(i) for i, name in
             enumerate(["chat", "chat_tls", "echo", "echo_tls"])}
    stop = asyncio.Event()
    start_sending = asyncio.Event()
    joined = [asyncio.Event() for _ in range(TALKERS)]
    seen = [[set() for _ in range(TALKERS)] for _ in range(TALKERS)]
    sent = [0] * TALKERS
    tasks = [asyncio.ensure_future(talker(i, ports["chat"], stop, start_sending, joined[i],
                                          seen, sent, stats)) for i in range(TALKERS)]
    await asyncio.wait_for(asyncio.gather(*(j.wait() for j in joined)), 30)
    start_sending.set()
    tasks += [
        asyncio.ensure_future(flooder(ports["chat"], stop, stats)),
        asyncio.ensure_future(slow_reader(ports["chat"], stop, stats)),
        asyncio.ensure_future(echo_worker(ports["echo"], stop, stats)),
        asyncio.ensure_future(echo_worker(ports["echo"], stop, stats)),
        asyncio.ensure_future(echo_worker(ports["echo_tls"], stop, stats, tls=pt.client_ctx())),
        asyncio.ensure_future(echo_stall(ports["echo"], stop, stats)),
        asyncio.ensure_future(tls_churn(ports["chat_tls"], ports["echo_tls"], stop, stats)),
    ]

    samples = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        await asyncio.sleep(min(interval, max(0.1, seconds - (time.monotonic() - t0))))
        for t in tasks:
            if t.done() and t.exception() is not None:
                stats.error("load task died: %r" % t.exception())
                tasks.remove(t)
                break
        s = sample(srv)
        samples.append(s)
        c = stats.c
        print("soak: t=%4ds rss=%6d KiB anon=%6d KiB (sqlite %5d) fds=%3d chat=%d/%d flood=%d "
              "echo=%d stall=%d tls=%d slow=%d" % (s[0] - t0, s[1], s[3], s[4], s[2],
                                                   c.get("chat_sent", 0),
                                  c.get("chat_received", 0), c.get("flood_sent", 0),
                                  c.get("echo_sessions", 0), c.get("stall_sessions", 0),
                                  c.get("tls_handshakes", 0), c.get("slow_sessions", 0)),
              flush=True)
    stop.set()
    print("soak: load stopped; draining", flush=True)
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 120)
    for r in results:
        if isinstance(r, BaseException):
            stats.error("load task: %r" % r)

    lost = 0
    for i in range(TALKERS):
        for j in range(TALKERS):
            if i == j:
                continue
            missing = sent[j] - len(seen[i][j])
            if missing:
                lost += missing
                stats.error("talker%d missed %d of talker%d's %d lines" % (i, missing, j, sent[j]))
    stats.inc("chat_lost", lost)
    return samples


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("SOAK_SECONDS", 900)))
    ap.add_argument("--interval", type=float, default=None)
    ap.add_argument("--no-history", action="store_true",
                    help="[history] enabled = no (to tell its caches from the rest)")
    args = ap.parse_args()
    interval = args.interval or max(1.0, min(10.0, args.seconds / 40))
    pt.raise_nofile(4096)
    stats = Stats()
    srv = pt.Server(
        listeners=[pt.listen(service="chat"), pt.listen(service="chat", tls=True),
                   pt.listen(service="echo"), pt.listen(service="echo", tls=True),
                   pt.listen(service="metrics")],
        # idle_release below the ~40 ms between #soak's lines (6 talkers at
        # 4/s): its members sleep and are woken again all run long, and
        # every new plain connection starts asleep.
        server={"log_level": "notice", "idle_release": "20ms"},
        # Every chat client that leaves is parked for resume_window (10
        # minutes by default): bounded state that would still be filling
        # in the last third of a 15-minute run.  A minute reaches its
        # steady state within the warm-up quarter.
        extra="\n[chat]\noutput_soft_limit = 16k\noutput_hard_limit = 256k\n"
              "resume_window = 60s\n"
              + ("\n[history]\nenabled = no\n" if args.no_history else ""))
    rc = 1
    try:
        time.sleep(0.5)
        base_fds = srv.fd_count()
        base_rss = srv.rss_kib()
        print("soak: parleyd pid %d, %d s, idle: rss=%d KiB anon=%d KiB fds=%d"
              % (srv.pid, args.seconds, base_rss, srv.rss_kib("RssAnon"), base_fds), flush=True)
        samples = asyncio.run(soak(srv, args.seconds, interval, stats))

        # Idle again: every descriptor the load opened must be closed.
        end_fds = pt.wait_for(lambda: srv.fd_count() <= base_fds and srv.fd_count(), 15)
        end_fds = srv.fd_count()
        end_rss = srv.rss_kib()
        print("soak: idle after load: rss=%d KiB anon=%d KiB fds=%d (baseline %d)"
              % (end_rss, srv.rss_kib("RssAnon"), end_fds, base_fds))
        if end_fds != base_fds:
            stats.error("descriptors: %d open when idle again, %d at the start" % (end_fds, base_fds))
        verdicts = [
            growth_verdict(samples, "rss KiB", 1, lambda first: first * 1.10 + 2048),
            growth_verdict([s[:3] + (s[3] - s[4],) for s in samples], "anon KiB without sqlite",
                           3, lambda first: first * 1.05 + 512),
            growth_verdict(samples, "fds", 2, lambda first: first + 4),
        ]
        # sqlite's caches fill as the database grows: bounded, not flat.
        top = max(s[4] for s in samples)
        bound = 3 * 1024 + 2048  # history: 3 connections x cache_size 1M; accounts, slack
        print("soak: sqlite memory: at most %d KiB (bound %d)" % (top, bound))
        if top > bound:
            stats.error("sqlite memory %d KiB over its bound %d KiB" % (top, bound))
        for v in verdicts:
            if v is None:
                print("soak: too few samples to judge growth (run longer)")
                continue
            ok, msg = v
            print("soak: %s -> %s" % (msg, "flat" if ok else "GROWING"))
            if not ok:
                stats.error("growth: " + msg)
        if not srv.alive():
            stats.error("parleyd died (status %s)" % srv.proc.returncode)
        c = stats.c
        print("soak: chat lines sent %d, received %d (every talker by every other), lost %d"
              % (c.get("chat_sent", 0), c.get("chat_received", 0), c.get("chat_lost", 0)))
        print("soak: flood lines sent %d, seen by the witness %d"
              % (c.get("flood_sent", 0), c.get("flood_received", 0)))
        print("soak: echo sessions %d (%d bytes), stalled echoes %d, TLS handshakes %d, "
              "abandoned %d, resets %d, slow readers %d (%d held back or cut off)"
              % (c.get("echo_sessions", 0), c.get("echo_bytes", 0), c.get("stall_sessions", 0),
                 c.get("tls_handshakes", 0), c.get("tls_abandoned", 0), c.get("tls_resets", 0),
                 c.get("slow_sessions", 0), c.get("slow_held_back", 0)))
        code = srv.stop()
        if code != 0:
            stats.error("parleyd exited with status %s on SIGTERM" % code)
        rc = 1 if stats.errors else 0
        print("soak: %s (%d error(s))" % ("PASS" if rc == 0 else "FAIL", len(stats.errors)))
    finally:
        if rc != 0:
            print("soak: server log tail:\n" + srv.log_tail(40))
        srv.cleanup()
    return rc


if __name__ == "__main__":
    sys.exit(main())
