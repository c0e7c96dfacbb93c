#!/usr/bin/env python3
"""Backpressure: a client that sends a lot but does not read must not make the
server buffer without bound, must not starve other clients, and must get a
correct echo once it reads."""

import asyncio
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402

LIMIT = 256 * 1024
RSS_GROWTH_MAX_KIB = 32 * 1024
# valgrind keeps up to 20 MB of freed blocks resident (--freelist-vol).
VALGRIND_FREED_KIB = 20000000 >> 10
STALL_SECONDS = 1.0


def small_buffer_socket():
    """Client socket with small fixed kernel buffers so the server, not the
    kernel, is what has to hold back."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    return s


async def scenario(srv, port, tls, total):
    payload = os.urandom(total)
    loop = asyncio.get_running_loop()
    res = {"sent": 0, "rss_peak": 0, "latencies": [], "b_errors": [], "total": total}

    sock = small_buffer_socket()
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    reader, writer = await pt.connect(None, tls=tls, sock=sock, timeout=5)

    async def sender():
        mv = memoryview(payload)
        for off in range(0, total, 64 * 1024):
            writer.write(mv[off:off + 64 * 1024])
            await writer.drain()
            res["sent"] = off + len(mv[off:off + 64 * 1024])

    stop_sampling = asyncio.Event()

    async def sampler():
        while not stop_sampling.is_set():
            try:
                res["rss_peak"] = max(res["rss_peak"], srv.rss_kib())
            except (OSError, TypeError):
                pass
            await asyncio.sleep(0.05)

    stop_b = asyncio.Event()

    async def well_behaved():
        try:
            r, w = await pt.connect(port, tls=tls, timeout=5)
        except (OSError, asyncio.TimeoutError) as e:
            res["b_errors"].append("connect: %r" % e)
            return
        try:
            i = 0
            while not stop_b.is_set():
                line = b"B %d " % i + b"x" * 1000 + b"\n"
                t0 = loop.time()
                w.write(line)
                await asyncio.wait_for(w.drain(), 5)
                got = await pt.read_exactly(r, len(line), 5)
                res["latencies"].append(loop.time() - t0)
                if got != line:
                    res["b_errors"].append("round trip %d: got %r" % (i, got[:40]))
                    return
                i += 1
                await asyncio.sleep(0.02)
        except (OSError, asyncio.TimeoutError) as e:
            res["b_errors"].append(repr(e))
        finally:
            await pt.close(w)

    sampling = asyncio.ensure_future(sampler())
    send_task = asyncio.ensure_future(sender())
    b_task = asyncio.ensure_future(well_behaved())
    try:
        # Let A push until it stalls (or finishes): no progress for STALL_SECONDS.
        last, last_change = -1, loop.time()
        deadline = loop.time() + 10 * pt.SLOW
        while loop.time() < deadline and not send_task.done():
            if res["sent"] != last:
                last, last_change = res["sent"], loop.time()
            elif loop.time() - last_change >= STALL_SECONDS:
                break
            await asyncio.sleep(0.05)
        res["stalled_at"] = res["sent"]
        res["rss_stalled"] = srv.rss_kib()
        await asyncio.sleep(0.5)  # B keeps going while A is stuck
        stop_b.set()
        await asyncio.wait_for(b_task, 10)

        # Now A reads; the sender carries on, so the whole payload should come back.
        got = bytearray()
        first_ok = None
        end = loop.time() + 15 * pt.SLOW
        while len(got) < total and loop.time() < end:
            try:
                chunk = await asyncio.wait_for(reader.read(1 << 20), max(0.1, end - loop.time()))
            except asyncio.TimeoutError:
                break
            if not chunk:
                break
            if first_ok is None:
                first_ok = payload.startswith(chunk)
            got += chunk
        res["first_ok"] = first_ok
        res["received"] = len(got)
        res["prefix_ok"] = payload[:len(got)] == got
        res["all_ok"] = len(got) == total and res["prefix_ok"]
    finally:
        stop_b.set()
        stop_sampling.set()
        for task in (send_task, b_task, sampling):
            if not task.done():
                task.cancel()
        await asyncio.gather(send_task, b_task, sampling, return_exceptions=True)
        await pt.close(writer)
    return res


def report(t, srv, res, label, base, rss_max):
    mib = 1 << 20
    t.diag("%s: sent %.1f MiB before stalling, RSS baseline %d KiB, peak %d KiB, "
           "%d round trips of the other client (max %.0f ms)" % (
               label, res["stalled_at"] / mib, base, res["rss_peak"], len(res["latencies"]),
               1000 * max(res["latencies"] or [0])))
    bound = pt.tcp_rmem_max() + pt.tcp_wmem_max() + 4 * LIMIT + 4 * mib
    if bound < res["total"]:
        t.ok(res["stalled_at"] < res["total"],
             "%s: server stops reading from a client that does not read" % label,
             "the client wrote all %d MiB without reading; kernel buffers can hold at most "
             "~%d MiB, so the server buffered the rest" % (res["total"] // mib, bound // mib))
    else:
        t.skip("%s: server stops reading from a client that does not read" % label,
               "kernel socket buffers (~%d MiB) could absorb the whole payload" % (bound // mib))
    growth = res["rss_peak"] - base
    if rss_max is not None:
        t.ok(growth < rss_max,
             "%s: server RSS stays bounded (grew %d KiB, limit %d KiB)" % (
                 label, growth, rss_max), srv.log_tail(10))
    else:
        t.skip("%s: server RSS stays bounded" % label, "daemon built with AddressSanitizer")
    lat = res["latencies"]
    t.ok(not res["b_errors"] and len(lat) >= 5 and max(lat) < 1.0,
         "%s: another client gets prompt echo meanwhile" % label,
         "errors %s; %d round trips, max %.3f s" % (res["b_errors"][:3], len(lat), max(lat or [0])))
    t.ok(res["first_ok"] and res["prefix_ok"],
         "%s: what the stalled client reads back is a correct prefix of what it sent" % label,
         "received %d bytes, first chunk ok=%s, prefix ok=%s" % (
             res["received"], res["first_ok"], res["prefix_ok"]))
    t.ok(res["all_ok"], "%s: once it reads, all %d MiB come back" % (label, res["total"] // mib),
         "received %d of %d bytes" % (res["received"], res["total"]))


def main(t):
    with pt.Server(listeners=[pt.listen("plain"), pt.listen("tls", tls=True)],
                   echo={"buffer_limit": "256k"}) as srv:
        checker = srv.memory_checker()
        rss_max = {None: RSS_GROWTH_MAX_KIB, "asan": None,
                   "valgrind": RSS_GROWTH_MAX_KIB + VALGRIND_FREED_KIB}[checker]
        # Warm up both paths so allocator and TLS state are at steady size.
        warm = os.urandom(2 << 20)
        pt.run(pt.echo_roundtrip(srv.port(0), warm), 20)
        pt.run(pt.echo_roundtrip(srv.port(1), warm, tls=pt.client_ctx()), 20)
        time.sleep(0.2)

        base = srv.rss_kib()
        res = pt.run(scenario(srv, srv.port(0), None, 64 << 20), 30)
        report(t, srv, res, "plain", base, rss_max)

        base = srv.rss_kib()
        res = pt.run(scenario(srv, srv.port(1), pt.client_ctx(cafile=srv.cert), 48 << 20), 30)
        report(t, srv, res, "TLS", base, rss_max)

        t.ok(srv.alive(), "server still running", srv.log_tail())
        rc = srv.stop()
        t.ok(rc == 0 and not srv.killed, "server exits 0 on SIGTERM",
             "exit %s killed=%s\n%s" % (rc, srv.killed, srv.log_tail()))


pt.main(main, timeout=55)
