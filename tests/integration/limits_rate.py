#!/usr/bin/env python3
"""Per-address limits at accept: a token bucket of new connections per
address (connection_burst_per_ip, refilled at connection_rate_per_ip a
minute) refuses the excess with one line on plain listeners and closes
TLS ones before any handshake; the bucket refills; concurrent
connections (max_connections_per_ip) are limited as before."""

import asyncio
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402
import chatclient as cc  # noqa: E402

BURST = 6
PER_MIN = 60  # one a second
LINE = b"parleyd: too many new connections from your address; try again later\r\n"


def raw(port, timeout=3):
    """Connect, read what arrives until EOF or timeout: (bytes, eof)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.settimeout(timeout)
    buf = b""
    try:
        while True:
            d = s.recv(4096)
            if not d:
                return buf, True
            buf += d
            if b"\n" in buf and not buf.startswith(b"parleyd:"):
                return buf, False  # a greeting: let in
    except socket.timeout:
        return buf, False
    finally:
        s.close()


def main(t):
    with pt.Server(listeners=[pt.listen(name="chat", service="chat"),
                              pt.listen(name="chats", service="chat", tls=True),
                              pt.listen(name="metrics", service="metrics")],
                   server={"connection_rate_per_ip": str(PER_MIN),
                           "connection_burst_per_ip": str(BURST)}) as srv:
        # The harness's readiness probes took a token per listener.
        time.sleep(0.2)
        got = []
        refused = None
        for i in range(BURST + 8):
            data, eof = raw(srv.port())
            if data == LINE and eof:
                refused = i
                break
            got.append(data)
        t.ok(refused is not None, "new connections past the burst are refused (after %s)" % refused)
        # Loose on purpose: the probes took tokens, and a slow machine
        # refills one a second while we connect.
        t.ok(refused is not None and BURST - 3 <= refused <= BURST + 4,
             "... after about connection_burst_per_ip (%d) of them" % BURST)
        t.ok(all(g.startswith(b"*** welcome") for g in got), "the earlier ones were greeted")
        data, eof = raw(srv.port())
        t.same_bytes(data, LINE, "the refusal is exactly one line")
        t.ok(eof, "... followed by the close")
        # TLS: closed at once, no handshake (a server awaiting our
        # ClientHello would keep the connection open).
        before = srv.log().count("TLS")
        t0 = time.monotonic()
        data, eof = raw(srv.port(1))
        t.ok(eof and data == b"", "a TLS connection from the address is closed without a byte "
             "(%.2fs)" % (time.monotonic() - t0))
        t.ok(pt.wait_for(lambda: "connection_rate_per_ip" in srv.log(), 5),
             "the refusal is logged (rate-limited)")
        # Refill: one token a second.
        ok = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not ok:
            time.sleep(0.5)
            data, eof = raw(srv.port())
            ok = data.startswith(b"*** welcome")
        t.ok(ok, "the bucket refills: a connection is let in again")
        t.ok(srv.log().count("TLS") == before, "no TLS work was spent on refused clients")
        t.ok(srv.alive(), "daemon alive")
        import urllib.request
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % srv.port(2),
                                      timeout=5).read().decode()
        m = re.search(r'^parley_refused_total\{reason="rate"\} (\d+)$', body, re.M)
        t.ok(m and int(m.group(1)) >= 2, "metrics count the refusals by rate (%s)"
             % (m.group(1) if m else None))
    with cc.chat_server(server={"connection_rate_per_ip": "0"}) as srv:
        async def many():
            cs = await cc.open_many(srv.port(), 60)
            await cc.close_all(cs)
            return len(cs)
        t.is_(pt.run(many()), 60, "connection_rate_per_ip = 0: no rate limit")


pt.main(main)
