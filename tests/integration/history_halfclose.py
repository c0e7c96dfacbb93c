#!/usr/bin/env python3
"""A client that sends its lines and half-closes at once gets every reply
before the close: while its join's history replay runs (the lines held back
meanwhile used to be freed with the session at end of input), and when a
/history or /search answer comes back after the end of input (the session
used to be closed, and freed, before the answer was written)."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402
import histlib  # noqa: E402

ROUNDS = 30


def read_all(s, timeout=10):
    s.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except OSError:
            break
        if not chunk:
            return buf, True
        buf += chunk
    return buf, False


def main(t):
    with histlib.hist_server(history={"replay": "50"}, metrics=False) as srv:
        port = srv.port(0)
        # Give #lobby some history so every join has a replay to wait for.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as w:
            w.sendall(b"/nick writer\n" + b"".join(b"line %d\n" % i for i in range(50)))
            w.shutdown(socket.SHUT_WR)
            read_all(w, 5)
        t.ok(pt.wait_for(lambda: len(histlib.db_rows(histlib.db_path(srv))) >= 50, 10),
             "50 lines stored")

        lost = []
        for i in range(ROUNDS):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(b"/nick half%d\n/who\n/join #other\nbye\n" % i)
                c.shutdown(socket.SHUT_WR)
                buf, eof = read_all(c, 10)
            text = buf.decode(errors="replace")
            want = ["last 50 message(s)", "end of history", "you are now known as half%d" % i,
                    "#lobby has", "you joined #other"]
            missing = [w for w in want if w not in text]
            if missing or not eof:
                lost.append((i, missing, eof, text[-300:]))
        t.is_([x[:3] for x in lost], [],
              "%d half-closing clients each get the replay and every reply, then the close"
              % ROUNDS)
        if lost:
            t.diag("first: %r" % (lost[0],))
        # The joiners' order: replay before the answers to their commands.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"/nick orderly\n")
            c.shutdown(socket.SHUT_WR)
            buf, _ = read_all(c, 10)
        text = buf.decode(errors="replace")
        t.ok(0 <= text.find("end of history") < text.find("you are now known as orderly"),
             "the replay comes before the answer to the first command", text[-400:])
        # /history and /search answered after the client half-closed: the
        # answer is written before the session takes input (and the end
        # of input) again.
        for cmd, want in ((b"/history 5", "#lobby: end of history"),
                          (b"/search line", "end of search results")):
            bad = 0
            for i in range(10):
                with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                    c.sendall(cmd + b"\n")
                    c.shutdown(socket.SHUT_WR)
                    buf, eof = read_all(c, 10)
                if want not in buf.decode(errors="replace") or not eof:
                    bad += 1
            t.is_(bad, 0, "%s then half-close: the answer arrives, then the close (10 times)"
                  % cmd.decode())
        t.ok(srv.alive(), "server still running", srv.log_tail())


pt.main(main, timeout=50)
