#!/usr/bin/env python3
"""Hostile clients: running out of file descriptors.

parleyd starts with a low RLIMIT_NOFILE (set before exec).  Clients then take
every descriptor it has left and more wait in the listen backlogs of the
echo, chat and metrics listeners.  While it is out of descriptors the server
keeps serving the clients it has, does not spin (its CPU time over a couple
of seconds stays low), logs the condition without flooding the log, refuses
a reload it cannot read the file for (and goes on), and once
descriptors free up it accepts the waiting clients and its descriptor count
returns to the baseline."""

import os
import re
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402

NOFILE = 64
EXTRA = 8               # echo clients beyond what the server can accept
IDLE_WINDOW = 2.0       # seconds of CPU measurement while the backlog waits
CPU_MAX = 0.4           # CPU seconds allowed in that window (a spin burns ~2)
WARN_MAX = 3            # accept warnings per listener in the exhausted period


connect = pt.tcp_connect
recv_until = pt.recv_until


def poll_echoes(socks, lines, timeout, settle=None):
    """Which of socks (each sent lines[i]) have their line back within timeout
    (or, with settle, once nothing more came back for settle seconds)."""
    got = {i: b"" for i in range(len(socks))}
    done = set()
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    for s in socks:
        s.setblocking(False)
    while len(done) < len(socks) and time.monotonic() < deadline:
        if settle and done and time.monotonic() - last > settle:
            break
        progress = False
        for i, s in enumerate(socks):
            if i in done:
                continue
            try:
                d = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                done.add(i)
                continue
            progress = True
            last = time.monotonic()
            got[i] += d
            if not d or lines[i] in got[i]:
                done.add(i)
        if not progress:
            time.sleep(0.02)
    for s in socks:
        s.setblocking(True)
    return {i for i in done if lines[i] in got[i]}


def accept_warnings(log, name):
    return len(re.findall(r"listener %s: accept: " % re.escape(name), log))


def main(t):
    with pt.Server(listeners=[pt.listen("echo"), pt.listen("chat", service="chat"),
                              pt.listen("metrics", service="metrics")],
                   nofile=NOFILE) as srv:
        if srv.memory_checker() == "valgrind":
            # valgrind takes descriptors of its own out of the limit and,
            # when accept() returns one past its share, closes it and reports
            # EMFILE: the client is reset instead of waiting in the backlog,
            # which is what this script is about.
            pt.skip_all("valgrind emulates RLIMIT_NOFILE (it resets connections past it)")
        echo_port, chat_port, metrics_port = srv.port(0), srv.port(1), srv.port(2)
        time.sleep(0.3)  # let the readiness probes' connections close
        base = srv.fd_count()
        room = NOFILE - base
        t.diag("RLIMIT_NOFILE %d, %d descriptors in use at rest, room for %d clients"
               % (NOFILE, base, room))
        t.ok(room > 4, "the server started with RLIMIT_NOFILE=%d" % NOFILE,
             "only %d descriptors left\n%s" % (room, srv.log_tail()))

        # A chat client that is in before the descriptors run out.
        chat = connect(chat_port)
        greet = recv_until(chat, b"here)\r\n", 5)
        m = re.search(rb"welcome to parley, (\S+?)\.", greet)
        t.ok(m, "a chat client is greeted before the descriptors run out", repr(greet))
        nick = m.group(1) if m else b"nobody"

        # Take every remaining descriptor, and queue EXTRA more in the backlog.
        n = room - 1 + EXTRA
        socks, lines = [], []
        for i in range(n):
            s = connect(echo_port)
            line = b"first %d\n" % i
            s.sendall(line)
            socks.append(s)
            lines.append(line)
        served = poll_echoes(socks, lines, 10, settle=2.0)
        waiting = [i for i in range(n) if i not in served]
        t.ok(room - 1 - 2 <= len(served) <= room - 1,
             "the server accepts clients up to its descriptor limit (%d of %d echoed, "
             "room for %d)" % (len(served), n, room - 1))
        t.ok(len(waiting) >= EXTRA, "the clients beyond the limit wait (%d not served)"
             % len(waiting))
        t.ok(srv.fd_count() >= NOFILE - 1, "the server is at its descriptor limit (%d of %d)"
             % (srv.fd_count(), NOFILE))

        # New clients on the other listeners wait too.
        late_chat = connect(chat_port)
        late_metrics = connect(metrics_port)
        late_metrics.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        early = recv_until(late_chat, b"\n", 1.0)
        t.is_(early, b"", "a chat client arriving now is not greeted yet")
        log_before = srv.log()

        # No spinning while the backlog waits.
        time.sleep(0.5)
        c0 = srv.cpu_seconds()
        time.sleep(IDLE_WINDOW)
        used = srv.cpu_seconds() - c0
        t.ok(used < CPU_MAX, "out of descriptors with clients waiting, the server does not spin "
             "(%.2f s CPU in %.1f s; limit %.1f s)" % (used, IDLE_WINDOW, CPU_MAX))

        # The clients it has are still served.
        again = [b"again %d\n" % i for i in range(n)]
        served_list = sorted(served)
        for i in served_list:
            socks[i].sendall(again[i])
        ok2 = poll_echoes([socks[i] for i in served_list], [again[i] for i in served_list], 10)
        t.is_(len(ok2), len(served_list), "every accepted echo client is still echoed")
        chat.sendall(b"/msg " + nick + b" still-here\n")
        got = recv_until(chat, b"-> *" + nick + b"* still-here", 5)
        t.ok(b"-> *" + nick + b"* still-here" in got, "the chat client is still served",
             repr(got[-200:]))

        log = srv.log()
        t.like(log, r"listener echo: accept: Too many open files",
               "running out of descriptors is logged")
        warns = {name: accept_warnings(log, name) for name in ("echo", "chat", "metrics")}
        libevent_warns = log.count("Error from accept() call")
        t.ok(max(warns.values()) <= WARN_MAX and libevent_warns <= WARN_MAX,
             "the log is not flooded with accept errors (per listener %r, libevent %d; "
             "limit %d each)" % (warns, libevent_warns, WARN_MAX),
             "\n".join(log.splitlines()[-8:]))
        t.ok(len(log) - len(log_before) < 4096, "the log grew by %d bytes in %.1f s while out "
             "of descriptors" % (len(log) - len(log_before), IDLE_WINDOW + 0.5))

        # A reload needs a descriptor for the file: it is refused, nothing breaks.
        os.kill(srv.pid, signal.SIGHUP)
        m = pt.wait_for(lambda: re.search(r"reload refused, keeping the running config: .*"
                                          r"Too many open files", srv.log()), 5)
        t.ok(m, "SIGHUP while out of descriptors: the reload is refused and logged",
             "\n".join(srv.log().splitlines()[-5:]))
        socks[served_list[0]].sendall(b"after reload\n")
        t.is_(recv_until(socks[served_list[0]], b"after reload\n", 5), b"after reload\n",
              "... and the server goes on serving")

        # Free descriptors: the waiting clients get in.
        for i in served_list:
            socks[i].close()
        rest = [socks[i] for i in waiting]
        ok3 = poll_echoes(rest, [lines[i] for i in waiting], 15)
        t.is_(len(ok3), len(waiting), "once descriptors are free, every waiting echo client is "
              "accepted and echoed")
        greet = recv_until(late_chat, b"here)\r\n", 10)
        t.like(greet.decode("utf-8", "replace"), r"welcome to parley",
               "the waiting chat client is greeted")
        resp = recv_until(late_metrics, b"parley_connections", 10)
        t.like(resp.decode("utf-8", "replace"), r"^HTTP/1\.[01] 200",
               "the waiting metrics client gets its answer")
        t.like(srv.log(), r"listener echo: accepting again",
               "the recovery is logged")

        for s in rest + [late_chat, late_metrics, chat]:
            s.close()
        os.kill(srv.pid, signal.SIGHUP)
        t.ok(pt.wait_for(lambda: "reload done" in srv.log(), 5),
             "with descriptors back, a reload works", srv.log_tail(5))
        fds = pt.wait_for(lambda: srv.fd_count() <= base, 10)
        t.ok(fds, "the descriptor count returns to its baseline (%d now, %d at rest)"
             % (srv.fd_count(), base))
        with connect(echo_port) as s:
            s.sendall(b"after\n")
            t.is_(recv_until(s, b"after\n", 5), b"after\n", "a new echo client is served")

        rc = srv.stop()
        t.ok(rc == 0 and not srv.killed, "the server exits 0 on SIGTERM",
             "exit %s killed=%s\n%s" % (rc, srv.killed, srv.log_tail()))


pt.main(main, timeout=50)
