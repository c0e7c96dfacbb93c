#!/usr/bin/env python3
"""Hostile chat clients: 10 MiB without a newline (of text, and of NUL
bytes) while others chat, one reset in the middle of such a
line, and NUL bytes in text and commands.

The sender gets exactly one "line too long" error per overlong line and
stays connected, nothing of the line reaches anyone, the server's RSS stays
bounded, and the bystanders' lines keep flowing meanwhile.  NUL bytes are
shown as ^@ (parley(7), text hygiene) wherever text is echoed, and make a
nick or room name invalid rather than cutting it short."""

import os
import re
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402
import chatclient as cc  # noqa: E402

BIG = 10 << 20
RSS_GROWTH_MAX_KIB = 16 * 1024
TOO_LONG = b"!!! line too long (more than 4096 bytes); discarded"


class Client:
    """A blocking chat client with a reader thread collecting lines."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.lines = []
        self.times = []
        self.eof = False
        self.cv = threading.Condition()
        self.th = threading.Thread(target=self._read, daemon=True)
        self.th.start()
        m = self.wait(rb"^\*\*\* welcome to parley, (\S+?)\. ")
        self.nick = m.group(1) if m else None
        self.wait(rb"^\*\*\* you are in ")

    def _read(self):
        buf = b""
        self.s.settimeout(None)
        while True:
            try:
                d = self.s.recv(65536)
            except OSError:
                d = b""
            with self.cv:
                if not d:
                    self.eof = True
                    self.cv.notify_all()
                    return
                buf += d
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    self.lines.append(line)
                    self.times.append(time.monotonic())
                self.cv.notify_all()

    def wait(self, pattern, timeout=5, start=0):
        """First line at index >= start matching pattern (bytes regex)."""
        deadline = time.monotonic() + timeout
        with self.cv:
            i = start
            while True:
                while i < len(self.lines):
                    m = re.search(pattern, self.lines[i])
                    if m:
                        return m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or self.eof:
                    return None
                self.cv.wait(left)

    def mark(self):
        with self.cv:
            return len(self.lines)

    def since(self, mark):
        with self.cv:
            return list(self.lines[mark:])

    def send(self, data):
        self.s.sendall(data)

    def sync(self, timeout=10):
        """Barrier: a /msg to ourselves; True when it came back."""
        tag = b"sync-%d" % time.monotonic_ns()
        self.send(b"/msg " + self.nick + b" " + tag + b"\n")
        return self.wait(rb"^-> \*" + re.escape(self.nick) + rb"\* " + tag + rb"$",
                         timeout) is not None

    def close(self, reset=False):
        """Close (FIN), or reset (RST) with reset=True.  The reader thread
        is woken first: while it sits in recv() the kernel would keep the
        socket open after close()."""
        try:
            if reset:
                self.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.s.shutdown(socket.SHUT_RD)
        except OSError:
            pass
        self.th.join(5)
        self.s.close()


def chatter(a, b, stop, lat):
    """a says a numbered line every 100 ms; record how long until b sees it."""
    i = 0
    while not stop.is_set():
        mark = b.mark()
        t0 = time.monotonic()
        a.send(b"meanwhile %d\n" % i)
        if b.wait(rb"^#lobby <" + re.escape(a.nick) + rb"> meanwhile %d$" % i, 5, mark):
            lat.append(time.monotonic() - t0)
        else:
            lat.append(None)
        i += 1
        stop.wait(0.1)


def overlong(t, srv, name, filler):
    snd, rcv, bys = Client(srv.port()), Client(srv.port()), Client(srv.port())
    for c in (snd, rcv, bys):
        c.sync()
    rss = cc.RssSampler(srv)
    stop = threading.Event()
    lat = []
    th = threading.Thread(target=chatter, args=(bys, rcv, stop, lat), daemon=True)
    th.start()
    smark, rmark = snd.mark(), rcv.mark()

    def sample():
        while not stop.is_set():
            v = rss._sample()
            if v:
                rss.peak = max(rss.peak, v)
            time.sleep(0.05)
    st = threading.Thread(target=sample, daemon=True)
    st.start()
    t0 = time.monotonic()
    # In 64 KiB pieces over a second or two, so that the bystanders' lines
    # have to get through while it arrives.
    chunk = filler * (64 << 10)
    for _ in range(BIG // len(chunk)):
        snd.send(chunk)
        time.sleep(0.01)
    snd.send(b"\nafter the " + name.encode() + b"\n")
    ok = snd.sync(20)
    el = time.monotonic() - t0
    got = rcv.wait(rb"^#lobby <" + re.escape(snd.nick) + rb"> after the ", 10, rmark)
    time.sleep(0.3)
    stop.set()
    th.join(10)
    st.join(2)
    errors = [l for l in snd.since(smark) if l.startswith(b"!!!")]
    t.ok(ok, "%s: sent in %.1f s, the sender is still served" % (name, el))
    t.is_(errors, [TOO_LONG], "%s: exactly one 'line too long' error" % name)
    t.ok(got and got.string == b"#lobby <" + snd.nick + b"> after the " + name.encode(),
         "%s: the line after it is delivered" % name)
    leaked = [l for l in rcv.since(rmark) if (filler * 16) in l or b"^@^@^@^@" in l]
    t.ok(not leaked, "%s: nothing of it reached anyone" % name, repr(leaked[:1])[:200])
    bad = [x for x in lat if x is None or x > 2.0]
    t.ok(len(lat) >= 3 and not bad,
         "%s: a bystander's lines flowed meanwhile (%d lines, worst %s)"
         % (name, len(lat), "%.2f s" % max(x for x in lat if x is not None)
            if any(x is not None for x in lat) else "-"),
         "latencies %r" % lat)
    bound = RSS_GROWTH_MAX_KIB + {"asan": 256 << 10, "valgrind": 128 << 10}.get(
        srv.memory_checker(), 0)
    t.ok(rss.growth < bound, "%s: RSS bounded (grew %d KiB, bound %d KiB)"
         % (name, rss.growth, bound))
    for c in (snd, rcv, bys):
        c.close()


def reset_midway(t, srv):
    snd, rcv = Client(srv.port()), Client(srv.port())
    snd.sync()
    rcv.sync()
    mark = rcv.mark()
    snd.send(b"y" * (4 << 20))
    snd.close(reset=True)
    m = rcv.wait(rb"^\*\*\* " + re.escape(snd.nick) + rb" has quit \(connection (lost|closed)\)$",
                 10, mark)
    t.ok(m, "reset in the middle of an overlong line: the others see it quit",
         repr(rcv.since(mark)[-5:]))
    t.ok(not any(b"yyyy" in l for l in rcv.since(mark)), "... and none of its line")
    t.ok(rcv.sync(), "... and are still served")
    rcv.close()


def nul_bytes(t, srv):
    a, b = Client(srv.port()), Client(srv.port())
    a.sync()
    b.sync()
    an, bn = re.escape(a.nick), b.nick
    cases = [
        (b"a\0b", b, rb"^#lobby <%s> a\^@b$" % an, "NUL inside a room line is shown as ^@"),
        (b"\0\0\0", b, rb"^#lobby <%s> \^@\^@\^@$" % an, "a line of NULs is three ^@"),
        (b"\0/nick zed", b, rb"^#lobby <%s> \^@/nick zed$" % an,
         "a NUL before / makes it text, not a command"),
        (b"/msg " + bn + b" hi\0there", b, rb"^\*%s\* hi\^@there$" % an,
         "NUL in a private message is shown as ^@, the text after it kept"),
        (b"/me waves\0x", b, rb"^#lobby \* %s waves\^@x$" % an, "NUL in /me is shown as ^@"),
        (b"/nick ev\0il", a, rb'^!!! invalid nick "ev\^@il": ', "a nick with a NUL is invalid "
         "(not cut short at the NUL)"),
        (b"/join #r\0x", a, rb"^!!! cannot join #r\^@x: invalid room name", "a room name with a "
         "NUL is invalid"),
    ]
    for data, who, pattern, desc in cases:
        mark = who.mark()
        a.send(data + b"\n")
        m = who.wait(pattern, 5, mark)
        t.ok(m, desc, "got %r" % who.since(mark)[-3:])
    a.sync()
    t.ok(not any(re.match(rb"^\*\*\* you are now known as", l)
                                  for l in a.lines), "the nick did not change")
    raw = b"\n".join(a.lines + b.lines)
    t.ok(b"\0" not in raw, "no NUL byte was ever sent to a client")
    a.close()
    b.close()


def main(t):
    with cc.chat_server(chat={"flood_rate": "1000", "flood_burst": "1000"}) as srv:
        # Warm up: the history reader opens its database handles on first use.
        w = Client(srv.port())
        w.sync()
        w.close()
        time.sleep(0.3)
        base = srv.fd_count()
        overlong(t, srv, "10 MiB without a newline", b"x")
        overlong(t, srv, "10 MiB of NUL bytes without a newline", b"\0")
        reset_midway(t, srv)
        nul_bytes(t, srv)
        fds = pt.wait_for(lambda: srv.fd_count() <= base, 10)
        t.ok(fds, "the descriptor count returns to its baseline (%d now, %d before)"
             % (srv.fd_count(), base))
        rc = srv.stop()
        t.ok(rc == 0 and not srv.killed, "the server exits 0 on SIGTERM",
             "exit %s killed=%s\n%s" % (rc, srv.killed, srv.log_tail()))


if __name__ == "__main__":
    pt.main(main, timeout=55)
