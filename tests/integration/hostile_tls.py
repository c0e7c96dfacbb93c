#!/usr/bin/env python3
"""Hostile clients on TLS listeners (echo and chat).

A client that sends its ClientHello one byte per second is closed at
handshake_timeout, long before it has finished; so is one that sends half a
ClientHello and waits, or a whole one and then nothing.  Plain garbage, an
HTTP request, an oversized record, an SSLv2-style hello and half a
ClientHello followed by end of input or a reset are all closed promptly,
without a byte of plain text in reply; so are 1,000 aborted handshakes in a
row, and a forged record after a good handshake.  The connection past
max_connections_per_ip on a TLS listener is closed without a word.  Meanwhile and afterwards other TLS
clients are served, the descriptor count returns to its baseline and the
server exits cleanly."""

import os
import socket
import ssl
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402

HANDSHAKE_TIMEOUT = 2.0
DRIP_INTERVAL = 1.0
CHURN = 1000


def client_hello():
    """The bytes of a real ClientHello, from Python's own TLS client."""
    ctx = pt.client_ctx()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def raw(port, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def until_closed(s, timeout):
    """Read until EOF/reset or timeout: (closed, seconds, bytes received)."""
    t0 = time.monotonic()
    buf = b""
    s.settimeout(0.2)
    while time.monotonic() - t0 < timeout:
        try:
            d = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return True, time.monotonic() - t0, buf
        if not d:
            return True, time.monotonic() - t0, buf
        buf += d
    return False, time.monotonic() - t0, buf


def drip(port, hello, out):
    """One byte of the ClientHello per DRIP_INTERVAL until the server closes."""
    s = raw(port)
    t0 = time.monotonic()
    sent = 0
    closed = False
    s.settimeout(DRIP_INTERVAL)
    try:
        while sent < len(hello) and time.monotonic() - t0 < HANDSHAKE_TIMEOUT * 4 + 5:
            try:
                s.send(hello[sent:sent + 1])
                sent += 1
            except OSError:
                closed = True
                break
            try:
                d = s.recv(4096)
                if not d:
                    closed = True
                    break
            except socket.timeout:
                pass
            except OSError:
                closed = True
                break
    finally:
        s.close()
    out.update(closed=closed, elapsed=time.monotonic() - t0, sent=sent)


def tls_then_garbage(port, ctx):
    """Complete a real handshake (Python's TLS over a MemoryBIO on a plain
    socket), echo one line, then write a forged application-data record.
    Returns (echoed, closed, seconds until closed)."""
    s = raw(port)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    s.settimeout(5)

    def pump():
        out = outgoing.read()
        if out:
            s.sendall(out)

    try:
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pump()
                d = s.recv(65536)
                if not d:
                    return b"", True, 0.0
                incoming.write(d)
        pump()
        obj.write(b"ping\n")
        pump()
        echoed = b""
        deadline = time.monotonic() + 5
        while b"ping\n" not in echoed and time.monotonic() < deadline:
            try:
                echoed += obj.read(4096)
            except ssl.SSLWantReadError:
                d = s.recv(65536)
                if not d:
                    break
                incoming.write(d)
        # A record the server cannot decrypt: it must give up on us.
        s.sendall(b"\x17\x03\x03\x00\x40" + os.urandom(64))
        closed, el, _ = until_closed(s, 10)
        return echoed, closed, el
    finally:
        s.close()


async def echo_tls(port, ctx, payload):
    return await pt.echo_roundtrip(port, payload, tls=ctx, timeout=10)


async def chat_tls(port, ctx):
    r, w = await pt.connect(port, tls=ctx)
    try:
        line = await pt.read_line(r, 5)
        return line or b""
    finally:
        await pt.close(w)


def main(t):
    pt.require_tool("openssl")
    listeners = [pt.listen("echos", tls=True), pt.listen("chats", service="chat", tls=True)]
    with pt.Server(listeners=listeners,
                   server={"handshake_timeout": "%dms" % (HANDSHAKE_TIMEOUT * 1000)}) as srv:
        ports = {"echo": srv.port(0), "chat": srv.port(1)}
        ctx = pt.client_ctx(cafile=srv.cert)
        hello = client_hello()
        t.ok(len(hello) > 100 and hello[0] == 0x16,
             "built a real ClientHello (%d bytes) to play with" % len(hello))
        time.sleep(0.3)
        base = srv.fd_count()

        # 1. Slow ClientHello on both services, while a normal client is served.
        results = {}
        threads = []
        for name, port in ports.items():
            results[name] = {}
            th = threading.Thread(target=drip, args=(port, hello, results[name]), daemon=True)
            th.start()
            threads.append(th)
        time.sleep(0.5)
        payload = os.urandom(64 * 1024)
        got = pt.run(echo_tls(ports["echo"], ctx, payload), 15)
        t.same_bytes(got, payload, "a normal TLS echo client is served while two clients drip "
                     "their ClientHello")
        for th in threads:
            th.join(HANDSHAKE_TIMEOUT * 4 + 10)
        for name in ports:
            r = results[name]
            t.ok(r.get("closed") and r["sent"] < len(hello)
                 and HANDSHAKE_TIMEOUT - 0.5 <= r["elapsed"] <= HANDSHAKE_TIMEOUT + 4,
                 "%s: a ClientHello sent one byte per second is cut off at handshake_timeout "
                 "(%.0f s)" % (name, HANDSHAKE_TIMEOUT),
                 "closed=%s after %.2f s, %s of %d bytes sent"
                 % (r.get("closed"), r.get("elapsed", -1), r.get("sent"), len(hello)))

        # 2. Half a ClientHello, then silence; a whole one, then silence.
        for label, data in (("half a ClientHello", hello[:len(hello) // 2]),
                            ("a whole ClientHello", hello)):
            s = raw(ports["echo"])
            s.sendall(data)
            closed, el, buf = until_closed(s, HANDSHAKE_TIMEOUT + 8)
            s.close()
            t.ok(closed and el <= HANDSHAKE_TIMEOUT + 4,
                 "%s and then silence: closed at handshake_timeout (%.2f s)" % (label, el),
                 "closed=%s, got %d bytes" % (closed, len(buf)))

        # 3. Garbage: closed promptly (not at the timeout), nothing plain echoed.
        garbage = [
            ("random bytes", os.urandom(4096)),
            ("an HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("a record header claiming 64 KiB", b"\x16\x03\x01\xff\xff" + b"\x01" * 1024),
            ("an SSLv2-style hello", b"\x80\x2e\x01\x00\x02\x00\x15" + os.urandom(46)),
            ("a chat line", b"/nick mallory\n"),
            ("NUL bytes", b"\0" * 2048),
            ("a ClientHello with its body zeroed",
             hello[:9] + b"\0" * (len(hello) - 9)),
        ]
        for name, port in ports.items():
            for label, data in garbage:
                s = raw(port)
                try:
                    s.sendall(data)
                except OSError:
                    pass
                closed, el, buf = until_closed(s, HANDSHAKE_TIMEOUT + 8)
                s.close()
                plain = data[:8] in buf or b"parley" in buf or b"***" in buf
                t.ok(closed and not plain,
                     "%s: %s to the TLS port is refused (closed in %.2f s, %d bytes back, "
                     "no plain text)" % (name, label, el, len(buf)),
                     "closed=%s got %r" % (closed, buf[:80]))

        # 4. Half a ClientHello then end of input, or a reset.
        for how in ("shutdown", "reset"):
            for name, port in ports.items():
                s = raw(port)
                s.sendall(hello[:len(hello) // 2])
                time.sleep(0.1)
                if how == "shutdown":
                    s.shutdown(socket.SHUT_WR)
                    closed, el, buf = until_closed(s, HANDSHAKE_TIMEOUT + 8)
                    t.ok(closed, "%s: half a ClientHello then end of input: closed (%.2f s)"
                         % (name, el))
                else:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
        # 4a. A forged record after a good handshake.
        for name, port in (("echo", ports["echo"]),):
            echoed, closed, el = tls_then_garbage(port, ctx)
            t.is_(echoed, b"ping\n", "%s: a handshake by hand over a plain socket works" % name)
            t.ok(closed, "%s: a forged record after the handshake: the server hangs up "
                 "(%.2f s)" % (name, el))

        # 4b. Churn: aborted handshakes in a row (close or reset, with half a
        # ClientHello, a whole one, or nothing at all).
        t0 = time.monotonic()
        done = 0
        for i in range(CHURN):
            if time.monotonic() - t0 > 20 * pt.SLOW:
                break
            try:
                s = raw(ports["echo" if i % 2 else "chat"])
                part = (b"", hello[:len(hello) // 2], hello)[i % 3]
                if part:
                    s.send(part)
                if i % 4 < 2:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
                done += 1
            except OSError:
                pass
        t.is_(done, CHURN, "%d aborted handshakes in a row (%.1f s)"
              % (CHURN, time.monotonic() - t0))
        t.ok(srv.alive(), "the server is alive after the bad TLS clients")

        # 5. Others unaffected, nothing leaked.
        payload = os.urandom(256 * 1024)
        got = pt.run(echo_tls(ports["echo"], ctx, payload), 15)
        t.same_bytes(got, payload, "TLS echo still works afterwards")
        line = pt.run(chat_tls(ports["chat"], ctx), 10)
        t.like(line.decode("utf-8", "replace"), r"^\*\*\* welcome to parley",
               "TLS chat still greets afterwards")
        t1 = time.monotonic()
        fds = pt.wait_for(lambda: srv.fd_count() <= base, 10)
        t.ok(fds, "the descriptor count returns to its baseline (%d now, %d before, "
             "after %.1f s)" % (srv.fd_count(), base, time.monotonic() - t1))
        log = srv.log()
        # Only the four silent or slow clients ran into the timeout: every
        # other bad client was closed by the TLS error or end of input.
        timeouts = log.count("TLS handshake timed out")
        t.is_(timeouts, 4, "exactly the 4 slow or silent clients hit handshake_timeout, "
              "the garbage was closed at once")
        t.ok("bad state change" not in log and "ERROR: AddressSanitizer" not in log
             and "runtime error" not in log, "no internal error in the log",
             pt_tail(log))
        rc = srv.stop()
        t.ok(rc == 0 and not srv.killed, "the server exits 0 on SIGTERM",
             "exit %s killed=%s\n%s" % (rc, srv.killed, srv.log_tail()))

    with pt.Server(listeners=[pt.listen("echos", tls=True)],
                   server={"max_connections_per_ip": "3"}) as srv:
        pt.run(per_ip_tls(t, srv.port(), pt.client_ctx(cafile=srv.cert), 3), 20)


async def per_ip_tls(t, port, ctx, limit):
    """limit TLS clients from one address, then one more: that one is closed
    without a word (no plain text before a handshake); the others go on."""
    held = []
    for _ in range(limit):
        held.append(await pt.connect(port, tls=ctx))
    r, w = await pt.connect(port)
    data, eof = await pt.read_to_eof(r, timeout=5)
    await pt.close(w)
    t.ok(eof and data == b"", "TLS connection %d from one address (max_connections_per_ip=%d) is "
         "closed without a word" % (limit + 1, limit), "eof=%s data=%r" % (eof, data[:80]))
    ok = 0
    for r, w in held:
        w.write(b"still\n")
        await w.drain()
        ok += await pt.read_exactly(r, 6, 5) == b"still\n"
    t.is_(ok, limit, "the %d TLS clients within the limit are still echoed" % limit)
    for _, w in held:
        await pt.close(w)


def pt_tail(log, n=20):
    return "\n".join(log.splitlines()[-n:])


pt.main(main, timeout=55)
