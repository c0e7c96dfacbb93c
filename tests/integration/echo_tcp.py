#!/usr/bin/env python3
"""Echo (RFC 862) over plain TCP: small line, binary, 1 MiB, half-close, IPv6."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402


async def half_close(port, payload):
    """Send everything, shut our write side (like `nc -N`), read to EOF."""
    reader, writer = await pt.connect(port)
    try:
        await pt.send_all(writer, payload)
        writer.write_eof()
        return await pt.read_to_eof(reader, timeout=10)
    finally:
        await pt.close(writer)


def main(t):
    listeners = [pt.listen("v4")]
    v6 = pt.have_ipv6_loopback()
    if v6:
        listeners.append(pt.listen("v6", address="::1"))
    with pt.Server(listeners=listeners) as srv:
        port = srv.port()

        line = b"hello, parley\r\n"
        t.same_bytes(pt.run(pt.echo_roundtrip(port, line), 10), line, "small line is echoed")

        binary = bytes(range(256)) * 4 + b"\x00\x00\xff\xff\x00\r\n\x00\xff"
        t.same_bytes(pt.run(pt.echo_roundtrip(port, binary), 10), binary,
                     "binary payload with NUL and 0xFF bytes is echoed unchanged")

        big = os.urandom(1 << 20)
        t.same_bytes(pt.run(pt.echo_roundtrip(port, big, timeout=20), 25), big,
                     "1 MiB of random bytes is echoed identically")

        no_newline = b"no newline at the end"
        t.same_bytes(pt.run(pt.echo_roundtrip(port, no_newline), 10), no_newline,
                     "a partial line (no newline) is echoed without waiting for one")

        payload = os.urandom(200 * 1024)
        got, eof = pt.run(half_close(port, payload), 15)
        t.same_bytes(got, payload, "after the client half-closes, everything is still echoed")
        t.ok(eof, "server closes the connection after the client's EOF once flushed",
             "no EOF within 10 s after write_eof")

        if v6:
            msg = b"over ipv6 \x00\xff\n"
            got = pt.run(pt.echo_roundtrip(srv.port(1), msg, host="::1"), 10)
            t.same_bytes(got, msg, "echo over the IPv6 ::1 listener")
        else:
            t.diag("host has no IPv6 loopback")
            t.skip("echo over the IPv6 ::1 listener", "no IPv6 loopback on this host")

        t.ok(srv.alive(), "server is still running", srv.log_tail())
        rc = srv.stop()
        t.is_(rc, 0, "server exits 0 on SIGTERM")
        if rc != 0:
            t.diag(srv.log_tail())


pt.main(main, timeout=50)
