#!/usr/bin/env python3
"""Echo over TLS: 1 MiB, TLS 1.2 and 1.3 accepted, TLS 1.1 refused,
handshake_timeout closes silent clients, non-TLS bytes are rejected."""

import asyncio
import os
import socket
import ssl
import sys
import threading
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402

V = ssl.TLSVersion


async def echo_with_version(port, ctx, payload):
    """Echo payload over a TLS connection; returns (echoed, negotiated version)."""
    reader, writer = await pt.connect(port, tls=ctx)
    try:
        version = writer.get_extra_info("ssl_object").version()
        writer.write(payload)
        await asyncio.wait_for(writer.drain(), 10)
        return await pt.read_exactly(reader, len(payload), 10), version
    finally:
        await pt.close(writer)


def tls11_context():
    """A client context that offers only TLS 1.0/1.1 (needs @SECLEVEL=0 on OpenSSL 3)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pt.client_ctx(minimum=V.TLSv1, maximum=V.TLSv1_1, seclevel0=True)


def local_tls11_works(ctx, cert, key):
    """Can this Python/OpenSSL complete a TLS 1.1 handshake with a local server
    that allows it? If not, a failure against parleyd proves nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(cert, key)
        sctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        sctx.minimum_version = V.TLSv1
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    ls.settimeout(5)

    def serve():
        try:
            c, _ = ls.accept()
            c.settimeout(5)
            with sctx.wrap_socket(c, server_side=True) as s:
                s.recv(1)
        except (OSError, ssl.SSLError):
            pass

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        with socket.create_connection(ls.getsockname(), timeout=5) as raw:
            with ctx.wrap_socket(raw) as s:
                return s.version() in ("TLSv1", "TLSv1.1"), s.version()
    except (OSError, ssl.SSLError) as e:
        return False, repr(e)
    finally:
        ls.close()
        th.join(6)


async def try_tls11(port, ctx):
    """Returns ('accepted', version) | ('refused', why) | ('timeout', why)."""
    try:
        reader, writer = await pt.connect(port, tls=ctx, timeout=5)
    except (ssl.SSLError, ConnectionError, EOFError, asyncio.IncompleteReadError) as e:
        return "refused", repr(e)
    except asyncio.TimeoutError:
        return "timeout", "handshake neither completed nor failed within 5 s"
    version = writer.get_extra_info("ssl_object").version()
    await pt.close(writer)
    return "accepted", version


async def silent_client(port, timeout):
    """Plain TCP to the TLS port, send nothing; how long until the server closes?"""
    reader, writer = await pt.connect(port)
    start = time.monotonic()
    try:
        data, eof = await pt.read_to_eof(reader, timeout=timeout)
        return eof, time.monotonic() - start, data
    finally:
        await pt.close(writer)


async def idle_after_handshake(port, ctx, wait):
    """Complete the handshake, stay silent longer than handshake_timeout, then echo."""
    reader, writer = await pt.connect(port, tls=ctx)
    try:
        await asyncio.sleep(wait)
        writer.write(b"still here\n")
        await asyncio.wait_for(writer.drain(), 5)
        return await pt.read_exactly(reader, 11, 5)
    finally:
        await pt.close(writer)


async def garbage_client(port):
    """Plain text to the TLS port: must not be echoed; the server should hang up."""
    reader, writer = await pt.connect(port)
    try:
        writer.write(b"GET / HTTP/1.0\r\n\r\nhello\n")
        await asyncio.wait_for(writer.drain(), 5)
        data, eof = await pt.read_to_eof(reader, timeout=5)
        return data, eof
    finally:
        await pt.close(writer)


def main(t):
    pt.require_tool("openssl")
    with pt.Server(listeners=[pt.listen("tls", tls=True)],
                   server={"handshake_timeout": "1s"}) as srv:
        port = srv.port()
        verify = pt.client_ctx(cafile=srv.cert)

        big = os.urandom(1 << 20)
        got = pt.run(pt.echo_roundtrip(port, big, tls=verify, timeout=20), 25)
        t.same_bytes(got, big, "1 MiB of random bytes echoed identically over TLS (cert verified)")

        for ver, name in ((V.TLSv1_2, "TLSv1.2"), (V.TLSv1_3, "TLSv1.3")):
            ctx = pt.client_ctx(cafile=srv.cert, minimum=ver, maximum=ver)
            payload = os.urandom(64 * 1024)
            try:
                got, negotiated = pt.run(echo_with_version(port, ctx, payload), 20)
            except (ssl.SSLError, OSError, asyncio.TimeoutError) as e:
                t.ok(False, "%s client is accepted and echoed" % name, repr(e) + "\n" + srv.log_tail())
                continue
            t.ok(got == payload and negotiated == name,
                 "%s client is accepted and echoed" % name,
                 "negotiated %s, echoed %d/%d bytes correctly" % (
                     negotiated, len(got) if got == payload[:len(got)] else -1, len(payload)))

        old = tls11_context()
        works, why = local_tls11_works(old, srv.cert, srv.key)
        if not works:
            t.skip("TLS 1.1 client is refused",
                   "this Python/OpenSSL cannot do TLS 1.1 even locally (%s)" % why)
        else:
            outcome, why = pt.run(try_tls11(port, old), 10)
            t.ok(outcome == "refused", "TLS 1.1 client is refused", "outcome %s: %s" % (outcome, why))
            if outcome == "refused":
                t.diag("TLS 1.1 refusal seen by the client: %s" % why)

        eof, elapsed, data = pt.run(silent_client(port, 6), 10)
        t.ok(eof and 0.5 <= elapsed <= 4.0,
             "a silent client on the TLS port is closed after handshake_timeout (1s)",
             "eof=%s after %.2f s (expected ~1 s), received %r" % (eof, elapsed, data[:64]))

        got = pt.run(idle_after_handshake(port, verify, 2.0), 15)
        t.is_(got, b"still here\n",
              "an established TLS client idle longer than handshake_timeout is not closed")

        data, eof = pt.run(garbage_client(port), 10)
        t.ok(b"hello" not in data and b"GET" not in data and eof,
             "plain-text bytes on the TLS port are not echoed and the server hangs up",
             "eof=%s, received %r" % (eof, data[:80]))

        got = pt.run(pt.echo_roundtrip(port, b"after the bad clients\n", tls=verify), 10)
        t.is_(got, b"after the bad clients\n", "TLS echo still works after the bad clients")

        rc = srv.stop()
        t.ok(rc == 0 and not srv.killed, "server exits 0 on SIGTERM",
             "exit %s killed=%s\n%s" % (rc, srv.killed, srv.log_tail()))


pt.main(main, timeout=50)
