#!/usr/bin/env python3
"""SIGTERM/SIGINT: prompt exit 0 with idle clients, flush-before-close for a
client that is owed data, listener closed, shutdown_timeout honoured."""

import os
import signal
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402


def plain_client(port, rcvbuf=None, sndbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if sndbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    return s


def tls_client(port, cafile):
    ctx = pt.client_ctx(cafile=cafile)
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                        server_hostname="localhost")
    s.settimeout(5)
    return s


def echo_once(s, msg):
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        chunk = s.recv(len(msg) - len(got))
        if not chunk:
            break
        got += chunk
    return got


def sees_eof(s, timeout=3):
    """True when the peer has closed (EOF, reset, TLS shutdown) within timeout."""
    s.settimeout(timeout)
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return True
    except (ConnectionError, ssl.SSLError):
        return True
    except (socket.timeout, TimeoutError):
        return False
    except OSError:
        return True


def recv_all(s, timeout=15):
    """Everything until EOF; returns (data, how_it_ended)."""
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(buf), "timeout"
        s.settimeout(left)
        try:
            chunk = s.recv(1 << 20)
        except (socket.timeout, TimeoutError):
            return bytes(buf), "timeout"
        except ConnectionError as e:
            return bytes(buf), repr(e)
        if not chunk:
            return bytes(buf), "eof"
        buf += chunk


def listener_refuses(port):
    """After shutdown starts, a new connection must not be served.
    Returns (ok, how)."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
    except ConnectionRefusedError:
        return True, "connection refused"
    except OSError as e:
        return True, "connect failed: %r" % e
    try:
        s.sendall(b"anyone there?\n")
        s.settimeout(1)
        try:
            data = s.recv(100)
        except (socket.timeout, TimeoutError):
            return True, "connect succeeded but nothing was echoed within 1 s"
        except ConnectionError as e:
            return True, "connect succeeded, then %r" % e
        if data:
            return False, "a new connection was served after SIGTERM: %r" % data
        return True, "connect succeeded, then immediate EOF"
    finally:
        s.close()


def idle_shutdown(t, sig, name):
    with pt.Server(listeners=[pt.listen("plain"), pt.listen("tls", tls=True)],
                   server={"shutdown_timeout": "5s"}) as srv:
        clients = []
        try:
            for i in range(3):
                c = plain_client(srv.port(0))
                clients.append(c)
                echo_once(c, b"idle %d\n" % i)
            for i in range(2):
                c = tls_client(srv.port(1), srv.cert)
                clients.append(c)
                echo_once(c, b"idle tls %d\n" % i)
            start = time.monotonic()
            rc = srv.stop(sig, timeout=8)
            elapsed = time.monotonic() - start
            t.ok(rc == 0 and not srv.killed,
                 "%s with 5 idle clients: exit status 0" % name,
                 "exit %s killed=%s\n%s" % (rc, srv.killed, srv.log_tail()))
            t.ok(elapsed < 2.0 and not srv.killed,
                 "%s with idle clients: exits promptly (well under shutdown_timeout 5s)" % name,
                 "took %.2f s\n%s" % (elapsed, srv.log_tail(10)))
            closed = [sees_eof(c, 2) for c in clients]
            t.ok(all(closed), "%s: every idle client sees its connection closed" % name,
                 "closed: %s" % closed)
        finally:
            for c in clients:
                c.close()


def flush_on_shutdown(t):
    size = 8 << 20
    with pt.Server(echo={"buffer_limit": "16M"}, server={"shutdown_timeout": "5s"}) as srv:
        payload = os.urandom(size)
        # Small client receive buffer: most of the echo must wait inside the server.
        c = plain_client(srv.port(), rcvbuf=16 * 1024, sndbuf=64 * 1024)
        try:
            c.settimeout(10)
            c.sendall(payload)
            time.sleep(0.7)  # let the server read all of it (its output queue < buffer_limit)
            t.ok(srv.alive(), "server alive before SIGTERM", srv.log_tail())
            start = time.monotonic()
            os.kill(srv.pid, signal.SIGTERM)
            time.sleep(0.3)
            still_flushing = srv.alive()
            ok, how = listener_refuses(srv.port())
            if still_flushing:
                t.ok(ok, "after SIGTERM the listener no longer accepts", how)
                t.diag("new connection after SIGTERM: %s" % how)
            else:
                t.skip("after SIGTERM the listener no longer accepts",
                       "server already exited, cannot tell (see the flush assertion)")
            data, how = recv_all(c, timeout=15)
            t.same_bytes(data, payload,
                         "client mid-transfer receives all %d MiB echoed so far before the close"
                         % (size >> 20))
            t.is_(how, "eof", "then the connection ends with a clean EOF")
            rc = srv.wait(timeout=8)  # no second signal: it must exit by itself
            elapsed = time.monotonic() - start
            t.ok(rc == 0 and not srv.killed, "exit status 0 after flushing",
                 "exit %s killed=%s after %.2f s\n%s" % (rc, srv.killed, elapsed, srv.log_tail()))
        finally:
            c.close()


def shutdown_timeout_bound(t):
    with pt.Server(echo={"buffer_limit": "16M"}, server={"shutdown_timeout": "1s"}) as srv:
        c = plain_client(srv.port(), rcvbuf=16 * 1024, sndbuf=64 * 1024)
        try:
            c.settimeout(10)
            c.sendall(os.urandom(4 << 20))  # owed ~4 MiB, and we will never read it
            time.sleep(0.5)
            start = time.monotonic()
            rc = srv.stop(signal.SIGTERM, timeout=8)
            elapsed = time.monotonic() - start
            t.ok(rc == 0 and not srv.killed and elapsed < 3.5,
                 "a client that never reads cannot hold shutdown past shutdown_timeout (1s)",
                 "exit %s killed=%s after %.2f s\n%s" % (rc, srv.killed, elapsed, srv.log_tail()))
        finally:
            c.close()


def main(t):
    pt.require_tool("openssl")  # for the TLS idle clients' certificate
    idle_shutdown(t, signal.SIGTERM, "SIGTERM")
    idle_shutdown(t, signal.SIGINT, "SIGINT")
    flush_on_shutdown(t)
    shutdown_timeout_bound(t)


pt.main(main, timeout=55)
