#!/usr/bin/env python3
"""Many concurrent echo clients; descriptors are released; max_connections."""

import asyncio
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402

N_PLAIN = 500
N_TLS = 50


async def crowd(port, n, tls=None, on_all_connected=None):
    """n clients at once, each echoing a unique payload; all connections stay open
    until every client has finished so they are truly concurrent. Returns a list of
    per-client results: True or a string describing the failure."""
    finished = 0
    all_done = asyncio.Event()
    release = asyncio.Event()

    async def one(i):
        nonlocal finished
        writer = None
        try:
            payload = b"client %d " % i + os.urandom(16 + (i * 37) % 4000).hex().encode() + b"\n"
            reader, writer = await pt.connect(port, tls=tls, timeout=20)
            writer.write(payload)
            await asyncio.wait_for(writer.drain(), 10)
            got = await pt.read_exactly(reader, len(payload), 20)
            result = True if got == payload else "client %d: got %d/%d bytes, equal prefix=%s" % (
                i, len(got), len(payload), payload.startswith(got))
        except (OSError, asyncio.TimeoutError) as e:
            result = "client %d: %r" % (i, e)
        finally:
            finished += 1
            if finished == n:
                all_done.set()
        try:
            await asyncio.wait_for(release.wait(), 30)
        finally:
            if writer is not None:
                await pt.close(writer)
        return result

    tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
    try:
        await asyncio.wait_for(all_done.wait(), 40)
        extra = on_all_connected() if on_all_connected else None
    finally:
        release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return [r if not isinstance(r, BaseException) else repr(r) for r in results], extra


def check_crowd(t, srv, results, n, what):
    bad = [r for r in results if r is not True]
    t.ok(not bad, "%d concurrent %s clients each get exactly their payload back" % (n, what),
         "%d of %d failed, e.g.:\n%s\n%s" % (len(bad), n, "\n".join(map(str, bad[:5])),
                                            srv.log_tail(15)))


async def full_check(port, limit):
    """Fill the server to max_connections, then check the next one is turned away."""
    conns = []
    try:
        for i in range(limit):
            r, w = await pt.connect(port)
            w.write(b"hold %d\n" % i)
            await w.drain()
            line = await pt.read_line(r, 5)
            if line != b"hold %d\n" % i:
                return {"error": "connection %d of %d was not echoed: %r" % (i + 1, limit, line)}
            conns.append((r, w))
        r, w = await pt.connect(port)
        try:
            w.write(b"one too many\n")
            await w.drain()
        except ConnectionError:
            pass
        refused, eof = await pt.read_to_eof(r, timeout=5)
        await pt.close(w)
        # Free one slot; a new client must then be served (allow time for the close).
        await pt.close(conns.pop()[1])
        later = None
        for _ in range(30):
            try:
                later = await pt.echo_roundtrip(port, b"room again\n", timeout=3)
            except (OSError, asyncio.TimeoutError):
                later = None
            if later == b"room again\n":
                break
            await asyncio.sleep(0.1)
        still = True
        for i, (r2, w2) in enumerate(conns):
            w2.write(b"again %d\n" % i)
            await w2.drain()
            still = still and await pt.read_line(r2, 5) == b"again %d\n" % i
        return {"refused": refused, "eof": eof, "later": later, "still": still}
    finally:
        for _, w in conns:
            await pt.close(w)


def main(t):
    limit = pt.raise_nofile(4096)
    if limit < N_PLAIN + 100:
        t.diag("RLIMIT_NOFILE is only %d" % limit)
    # Every client comes from 127.0.0.1: lift the per-address cap (default 64).
    with pt.Server(listeners=[pt.listen("plain"), pt.listen("tls", tls=True)],
                   server={"max_connections_per_ip": "0"}) as srv:
        # Warm up (lazy initialisation may open descriptors), then take the baseline.
        pt.run(pt.echo_roundtrip(srv.port(0), b"warm\n"), 10)
        pt.run(pt.echo_roundtrip(srv.port(1), b"warm\n", tls=pt.client_ctx()), 10)
        pt.wait_for(lambda: False, 0.3)
        base = srv.fd_count()
        t.diag("baseline: %d fds, %d KiB RSS" % (base, srv.rss_kib()))

        results, during = pt.run(crowd(srv.port(0), N_PLAIN, on_all_connected=srv.fd_count), 50)
        check_crowd(t, srv, results, N_PLAIN, "plain")
        t.ok(during is not None and during >= base + N_PLAIN - 5,
             "server held all %d connections at once" % N_PLAIN,
             "fd count %s while connected, baseline %d" % (during, base))

        results, _ = pt.run(crowd(srv.port(1), N_TLS, tls=pt.client_ctx(cafile=srv.cert)), 40)
        check_crowd(t, srv, results, N_TLS, "TLS")

        t.ok(srv.alive(), "server still running after the crowds", srv.log_tail())
        got = pt.run(pt.echo_roundtrip(srv.port(0), b"after\n"), 10)
        t.is_(got, b"after\n", "a new client is still echoed")
        after = pt.wait_for(lambda: srv.fd_count() <= base + 2 and srv.fd_count(), 5)
        t.ok(after, "fd count returns to baseline after the clients disconnect",
             "baseline %d, now %d" % (base, srv.fd_count()))
        rc = srv.stop()
        t.ok(rc == 0 and not srv.killed, "server exits 0 on SIGTERM",
             "exit %s killed=%s\n%s" % (rc, srv.killed, srv.log_tail()))

    limit = 5
    with pt.Server(server={"max_connections": str(limit)}) as srv:
        r = pt.run(full_check(srv.port(), limit), 30)
        if "error" in r:
            t.ok(False, "max_connections: the first %d clients are served" % limit,
                 r["error"] + "\n" + srv.log_tail())
        else:
            # The contract names the line "parleyd: server full"; a longer line
            # starting with those words is accepted (and shown).
            t.ok(re.fullmatch(rb"parleyd: server full\b[^\n]*\n", r["refused"]) and r["eof"],
                 "client beyond max_connections gets one 'parleyd: server full' line, then EOF",
                 "received %r, eof=%s" % (r["refused"], r["eof"]))
            t.diag("server-full line: %r" % r["refused"])
            t.is_(r["later"], b"room again\n", "after one client leaves, a new client is served")
            t.ok(r["still"], "the clients already connected are unaffected")
        rc = srv.stop()
        t.ok(rc == 0 and not srv.killed, "max_connections server exits 0 on SIGTERM",
             "exit %s killed=%s\n%s" % (rc, srv.killed, srv.log_tail()))


pt.main(main, timeout=55)
