#!/usr/bin/env python3
"""sd_notify protocol: READY=1 only once listening, WATCHDOG=1 at half of
WATCHDOG_USEC, periodic STATUS=, RELOADING=1+MONOTONIC_USEC then READY=1 on
SIGHUP (also when the reload is refused), STOPPING=1 and exit 0 on SIGTERM.

The test plays the service manager: it binds an AF_UNIX datagram socket and
passes it as NOTIFY_SOCKET, the way systemd does."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402

WATCHDOG_USEC = 400000


class Notifications:
    """The manager's end of NOTIFY_SOCKET: every datagram, with arrival time."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.got = []  # (monotonic time, text)

    def _recv(self, timeout):
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return None
        msg = (time.monotonic(), data.decode("utf-8", errors="replace"))
        self.got.append(msg)
        return msg

    def wait(self, pred, timeout):
        """Read datagrams until one satisfies pred(text); returns (t, text) or None."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            msg = self._recv(left)
            if msg is not None and pred(msg[1]):
                return msg

    def drain(self, seconds):
        """Collect everything arriving during `seconds`; returns those messages."""
        start = len(self.got)
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return self.got[start:]
            self._recv(left)

    def since(self, idx):
        return [m[1] for m in self.got[idx:]]

    def close(self):
        self.sock.close()


def fields(text):
    """'A=1\\nB=2' -> {'A': '1', 'B': '2'} (sd_notify's newline-separated list)."""
    out = {}
    for line in text.split("\n"):
        if "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


def spawn(srv, env):
    """Start srv's daemon with extra environment, without waiting for it (the
    harness's start() would poll the port, which is what we want to check)."""
    srv._assign_ports(fresh=False)
    with open(srv.conf_path, "w") as f:
        f.write(srv.config_text())
    with open(srv.log_path, "ab") as logf:
        srv.proc = subprocess.Popen(pt.daemon_argv("-c", srv.conf_path),
                                    stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                    cwd=srv.dir, env=pt.daemon_env(**env),
                                    preexec_fn=pt._pdeathsig)


def connects(port, timeout=0.5):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True, None
    except OSError as e:
        return False, repr(e)


def main(t):
    with tempfile.TemporaryDirectory(prefix="parleytest-notify-") as nd, \
            pt.Server(listeners=[pt.listen("main")], start=False) as srv:
        n = Notifications(nd)
        try:
            run(t, srv, n)
        finally:
            n.close()


def run(t, srv, n):
    spawn(srv, {"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    t0 = time.monotonic()

    # ---- READY=1, and only once the listener accepts
    ready = n.wait(lambda m: "READY=1" in m.split("\n"), 10 * pt.SLOW)
    if not t.ok(ready is not None, "READY=1 arrives after start-up",
                "messages: %r\nlog:\n%s" % (n.since(0), srv.log_tail())):
        return
    ok, why = connects(srv.port())
    t.ok(ok, "the listener accepts a connection right after READY=1", why)
    t.diag("READY=1 after %.3f s" % (ready[0] - t0))
    early = [m for m in n.since(0)[:-1] if "READY=1" in m.split("\n")]
    t.is_(early, [], "no READY=1 before that one")

    # ---- WATCHDOG=1 at ~WATCHDOG_USEC/2 (200 ms): >= 3 in 1.5 s
    window = n.drain(1.5)
    pings = [m for m in window if "WATCHDOG=1" in m[1].split("\n")]
    t.ok(len(pings) >= 3, "WATCHDOG=1 arrives repeatedly (%d in 1.5 s, want >= 3)" % len(pings),
         "messages in window: %r" % [m[1] for m in window])
    if len(pings) >= 2:
        gaps = [b[0] - a[0] for a, b in zip(pings, pings[1:])]
        t.ok(max(gaps) < WATCHDOG_USEC / 1e6,
             "watchdog pings come faster than WATCHDOG_USEC (max gap %.3f s)" % max(gaps),
             "gaps: %r" % gaps)
    else:
        t.ok(False, "watchdog pings come faster than WATCHDOG_USEC", "fewer than 2 pings")

    # ---- STATUS= with the connection count, within ~6 s of start
    held = socket.create_connection(("127.0.0.1", srv.port()), timeout=5)
    try:
        # Its 5 s timer starts before READY=1; the slack is for a slow loop.
        left = max(0.5, ready[0] + 5.0 + 1.0 * pt.SLOW - time.monotonic())
        st = next((m for m in n.got if "connection" in fields(m[1]).get("STATUS", "")), None)
        if st is None:
            st = n.wait(lambda m: "connection" in fields(m).get("STATUS", ""), left)
        t.ok(st is not None, "a STATUS= line mentioning connections arrives within ~6 s",
             "STATUS lines: %r" % [fields(m[1]).get("STATUS") for m in n.got
                                   if "STATUS" in fields(m[1])])
        if st is not None:
            t.diag("STATUS=%s (after %.1f s)" % (fields(st[1])["STATUS"], st[0] - t0))
            t.like(fields(st[1])["STATUS"], r"^\d+ connection\(s\)",
                   "STATUS starts with a connection count")
        else:
            t.skip("STATUS starts with a connection count", "no STATUS line")
    finally:
        held.close()

    # ---- SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1
    mark = len(n.got)
    sent_us = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6)
    os.kill(srv.pid, signal.SIGHUP)
    rel = n.wait(lambda m: "RELOADING=1" in m.split("\n"), 5 * pt.SLOW)
    if t.ok(rel is not None, "SIGHUP -> RELOADING=1",
            "messages: %r\nlog:\n%s" % (n.since(mark), srv.log_tail())):
        f = fields(rel[1])
        mono = f.get("MONOTONIC_USEC", "")
        t.ok(mono.isdigit(), "RELOADING=1 carries MONOTONIC_USEC= in the same message",
             "message: %r" % rel[1])
        if mono.isdigit():
            now_us = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6)
            t.ok(sent_us - 1000 <= int(mono) <= now_us + 1000,
                 "MONOTONIC_USEC is CLOCK_MONOTONIC at the reload",
                 "sent SIGHUP at %d, received at %d, MONOTONIC_USEC=%s" % (sent_us, now_us, mono))
        else:
            t.skip("MONOTONIC_USEC is CLOCK_MONOTONIC at the reload", "no MONOTONIC_USEC")
        rdy = n.wait(lambda m: "READY=1" in m.split("\n"), 5 * pt.SLOW)
        t.ok(rdy is not None, "READY=1 follows RELOADING=1 once the reload is done",
             "messages: %r\nlog:\n%s" % (n.since(mark), srv.log_tail()))
        t.like(srv.log(), r"reload done", "the log says the reload is done")
    else:
        for d in ("RELOADING=1 carries MONOTONIC_USEC=", "MONOTONIC_USEC is CLOCK_MONOTONIC",
                  "READY=1 follows RELOADING=1", "the log says the reload is done"):
            t.skip(d, "no RELOADING=1")

    # ---- a refused reload still ends with READY=1 (or systemd waits forever)
    with open(srv.conf_path, "a") as f:
        f.write("\n[server_typo]\nfoo = 1\n")
    mark = len(n.got)
    os.kill(srv.pid, signal.SIGHUP)
    rel = n.wait(lambda m: "RELOADING=1" in m.split("\n"), 5 * pt.SLOW)
    rdy = n.wait(lambda m: "READY=1" in m.split("\n"), 5 * pt.SLOW) if rel else None
    t.ok(rel is not None and rdy is not None,
         "a refused reload also sends RELOADING=1 then READY=1",
         "messages: %r\nlog:\n%s" % (n.since(mark), srv.log_tail()))
    t.ok(pt.wait_for(lambda: "reload refused" in srv.log(), 3),
         "the refused reload is logged", srv.log_tail())
    ok, why = connects(srv.port())
    t.ok(ok, "the listener still accepts after the refused reload", why)

    # ---- watchdog keeps going after reloads
    window = n.drain(0.8)
    pings = [m for m in window if "WATCHDOG=1" in m[1].split("\n")]
    t.ok(len(pings) >= 2, "WATCHDOG=1 continues after the reloads (%d in 0.8 s)" % len(pings),
         "messages: %r" % [m[1] for m in window])

    # ---- SIGTERM: STOPPING=1, exit 0
    mark = len(n.got)
    srv.proc.send_signal(signal.SIGTERM)
    stop = n.wait(lambda m: "STOPPING=1" in m.split("\n"), 5 * pt.SLOW)
    t.ok(stop is not None, "SIGTERM -> STOPPING=1",
         "messages: %r\nlog:\n%s" % (n.since(mark), srv.log_tail()))
    rc = srv.wait(10)
    t.is_(rc, 0, "exit status 0 after SIGTERM")
    if rc != 0:
        t.diag(srv.log_tail())
    after = [m for m in n.since(mark) if "READY=1" in m.split("\n")]
    t.is_(after, [], "no READY=1 while stopping")


pt.main(main, timeout=50)
