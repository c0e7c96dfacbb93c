#!/usr/bin/env python3
"""[server] idle_release: idle plain connections hold no buffers.

- A plain echo connection that has sent nothing holds no bufferevent from
  its accept; a chat client, greeted, gives its buffers back once idle for
  idle_release.  parley_connections_asleep counts them.
- A sleeping connection is woken by input (every byte of binary data comes
  back, in order), by output (a room line reaches a sleeping member) and by
  its end of input or a reset (the server lets go of it).
- idle_timeout still counts from the last input across sleeps: a silent
  chat client that is woken again and again by room traffic is timed out
  on time, also when the wake keeps it awake.
- idle_release = 0 keeps every buffer: nothing sleeps; a reload that sets
  it puts the connections already open to sleep.
- TLS connections never sleep (their state lives in the SSL object)."""

import os
import signal
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402
import histlib  # noqa: E402

ECHO, CHAT, METRICS, TLS = 0, 1, 2, 3
N = 40
LINGER0 = struct.pack("ii", 1, 0)


def asleep(srv):
    return histlib.metrics(srv, METRICS).get("parley_connections_asleep")


def wait_asleep(srv, pred, timeout=5):
    v = None
    deadline = time.monotonic() + timeout * pt.SLOW
    while time.monotonic() < deadline:
        v = asleep(srv)
        if v is not None and pred(v):
            return v
        time.sleep(0.05)
    return v


def recv_exact(s, n, timeout=5):
    s.settimeout(timeout)
    buf = b""
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            break
        buf += d
    return buf


def sleeping_echo(t, srv):
    base = asleep(srv)
    socks = [pt.tcp_connect(srv.port(ECHO)) for _ in range(N)]
    v = wait_asleep(srv, lambda v: v >= base + N)
    t.ok(v is not None and v >= base + N,
         "echo: %d connections that sent nothing are asleep (gauge %s, %s before)" % (N, v, base))
    # Wake each with binary data, all at once, and check every byte.
    blobs = [os.urandom(3000) + bytes(range(256)) for _ in socks]
    for s, b in zip(socks, blobs):
        s.sendall(b)
    bad = [i for i, (s, b) in enumerate(zip(socks, blobs)) if recv_exact(s, len(b)) != b]
    t.ok(not bad, "echo: woken by input, every connection echoes its bytes intact",
         "wrong at %s" % bad[:5])
    v = wait_asleep(srv, lambda v: v >= base + N)
    t.ok(v is not None and v >= base + N, "echo: idle again, they go back to sleep (gauge %s)" % v)
    # Wake again: a second round still works.
    for s in socks:
        s.sendall(b"again\n")
    bad = [i for i, s in enumerate(socks) if recv_exact(s, 6) != b"again\n"]
    t.ok(not bad, "echo: a second wake works too", "wrong at %s" % bad[:5])
    for s in socks:
        s.close()
    v = wait_asleep(srv, lambda v: v <= base)
    t.ok(v == base, "echo: closed connections leave the gauge (%s, %s before)" % (v, base))


def eof_and_reset(t, srv):
    base_fds = srv.fd_count()
    a = pt.tcp_connect(srv.port(ECHO))
    b = pt.tcp_connect(srv.port(ECHO))
    c = pt.tcp_connect(srv.port(CHAT))
    pt.recv_until(c, b" here)", 5)
    wait_asleep(srv, lambda v: v >= 3)
    a.shutdown(socket.SHUT_WR)
    data = recv_exact(a, 1, 5)
    t.ok(data == b"", "asleep, end of input: the server closes the echo connection")
    b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
    b.close()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
    c.close()
    a.close()
    gone = pt.wait_for(lambda: srv.fd_count() <= base_fds, 5 * pt.SLOW)
    t.ok(gone, "asleep, reset (echo and chat): the server lets go (%d descriptors, %d before)"
         % (srv.fd_count(), base_fds))


def chat_wake_by_output(t, srv):
    quiet = pt.tcp_connect(srv.port(CHAT))
    pt.recv_until(quiet, b" here)", 5)
    talker = pt.tcp_connect(srv.port(CHAT))
    pt.recv_until(talker, b" here)", 5)
    pt.recv_until(quiet, b"has joined", 5)
    v = wait_asleep(srv, lambda v: v >= 2)
    t.ok(v is not None and v >= 2, "chat: greeted clients fall asleep once idle (gauge %s)" % v)
    talker.sendall(b"/nick talker\r\nhello sleeper\r\n")
    got = pt.recv_until(quiet, b"<talker> hello sleeper", 5)
    t.ok(b"<talker> hello sleeper" in got, "chat: a sleeping member is woken by a room line",
         repr(got[-200:]))
    quiet.sendall(b"/nick quiet\r\n")
    got = pt.recv_until(quiet, b"quiet", 5)
    t.ok(b"quiet" in got, "chat: ... and its next command is answered", repr(got[-200:]))
    quiet.close()
    talker.close()


def talk_until_timeout(quiet, talker, line, gap, t0, start=0.0):
    """From start seconds after t0, talker sends line every gap seconds
    until quiet is told of its idle timeout.  Returns (what quiet got,
    seconds from t0)."""
    stop = threading.Event()

    def talk():
        time.sleep(max(0.0, start - (time.monotonic() - t0)))
        while not stop.is_set():
            try:
                talker.sendall(line)
            except OSError:
                return
            time.sleep(gap)
    th = threading.Thread(target=talk, daemon=True)
    th.start()
    got = pt.recv_until(quiet, b"idle timeout", 10 * pt.SLOW)
    secs = time.monotonic() - t0
    stop.set()
    th.join(2)
    quiet.close()
    talker.close()
    return got, secs


def idle_timeout_across_sleeps(t):
    # The quiet client is woken by output every 150 ms but sends nothing:
    # idle_timeout (1 s) must still count from its last input.
    with pt.Server(listeners=[pt.listen("c", service="chat")],
                   server={"idle_timeout": "1s", "idle_release": "50ms"}) as srv:
        quiet = pt.tcp_connect(srv.port(0))
        pt.recv_until(quiet, b" here)", 5)
        t0 = time.monotonic()
        talker = pt.tcp_connect(srv.port(0))
        got, secs = talk_until_timeout(quiet, talker, b"tick\r\n", 0.15, t0)
        t.ok(b"idle timeout, goodbye" in got,
             "idle_timeout still closes a silent client woken by room traffic", repr(got[-200:]))
        t.ok(b"tick" in got, "... which did get the room traffic meanwhile")
        t.ok(secs < 1.0 + 1.5 * pt.SLOW,
             "... on time: %.2f s for idle_timeout = 1s (not restarted by each wake)" % secs)


def idle_timeout_after_wake(t):
    # The quiet client sleeps for 0.6 s, then room lines every 20 ms wake it
    # and keep it awake: its bufferevent must time out 1 s after its last
    # input (about 1.0 s after connecting), not 1 s after the wake (1.6 s).
    with pt.Server(listeners=[pt.listen("c", service="chat")],
                   server={"idle_timeout": "1s", "idle_release": "50ms"},
                   extra="[chat]\nflood_rate = 1000000\nflood_burst = 1000000\n") as srv:
        quiet = pt.tcp_connect(srv.port(0))
        t0 = time.monotonic()
        pt.recv_until(quiet, b" here)", 5)
        talker = pt.tcp_connect(srv.port(0))
        pt.recv_until(talker, b" here)", 5)
        got, secs = talk_until_timeout(quiet, talker, b"tock\r\n", 0.02, t0, start=0.6)
        t.ok(b"idle timeout, goodbye" in got and b"tock" in got,
             "woken and kept awake by room traffic, a silent client still times out",
             repr(got[-200:]))
        t.ok(secs < 1.0 + 0.3 * pt.SLOW,
             "... 1 s after its last input: %.2f s (1 s after the wake would be 1.6 s)" % secs)


def release_off(t):
    with pt.Server(listeners=[pt.listen("e"), pt.listen("c", service="chat"),
                              pt.listen("m", service="metrics")],
                   server={"idle_release": "0"}) as srv:
        socks = [pt.tcp_connect(srv.port(0)) for _ in range(5)]
        c = pt.tcp_connect(srv.port(1))
        pt.recv_until(c, b" here)", 5)
        time.sleep(0.5)
        t.is_(histlib.metrics(srv, 2).get("parley_connections_asleep"), 0.0,
              "idle_release = 0: no connection sleeps")
        socks[0].sendall(b"x\n")
        t.is_(recv_exact(socks[0], 2), b"x\n", "idle_release = 0: echo still works")
        # A reload that turns it on applies to the connections already open.
        srv.server_opts["idle_release"] = "100ms"
        with open(srv.conf_path, "w") as f:
            f.write(srv.config_text())
        os.kill(srv.pid, signal.SIGHUP)
        v = None
        deadline = time.monotonic() + 5 * pt.SLOW
        while time.monotonic() < deadline:
            v = histlib.metrics(srv, 2).get("parley_connections_asleep")
            if v == 6.0:
                break
            time.sleep(0.05)
        t.is_(v, 6.0, "a reload to idle_release = 100ms puts the open connections to sleep")
        for s in socks + [c]:
            s.close()


def tls_never_sleeps(t, srv):
    base = asleep(srv)
    ctx = pt.client_ctx(cafile=srv.cert)
    raw = socket.create_connection(("127.0.0.1", srv.port(TLS)), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    time.sleep(0.6)
    v = asleep(srv)
    t.is_(v, base, "TLS: an idle TLS connection does not sleep (gauge %s, %s before)" % (v, base))
    s.sendall(b"tls line\n")
    t.is_(recv_exact(s, 9), b"tls line\n", "TLS: it echoes as before")
    s.close()


def main(t):
    with pt.Server(listeners=[pt.listen("e"), pt.listen("c", service="chat"),
                              pt.listen("m", service="metrics"),
                              pt.listen("t", tls=True)],
                   server={"idle_release": "200ms"}) as srv:
        t.is_(asleep(srv), 0.0, "the gauge starts at 0")
        sleeping_echo(t, srv)
        chat_wake_by_output(t, srv)
        eof_and_reset(t, srv)
        tls_never_sleeps(t, srv)
        t.ok(srv.alive(), "server alive")
        rc = srv.stop()
        t.ok(rc == 0 and not srv.killed, "exits 0 on SIGTERM with sleeping connections",
             srv.log_tail())
    idle_timeout_across_sleeps(t)
    idle_timeout_after_wake(t)
    release_off(t)


if __name__ == "__main__":
    pt.main(main, timeout=55)
