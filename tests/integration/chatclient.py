"""Chat-protocol helpers for parley's integration tests (stdlib only).

    import parleytest as pt
    import chatclient as cc

    with cc.chat_server(chat={"flood_rate": "100"}) as srv:
        async def go():
            a = await cc.Chat.open(srv.port())
            b = await cc.Chat.open(srv.port())
            await a.say("hi")
            m = await b.expect(r"^#lobby <%s> hi$" % re.escape(a.nick))
        pt.run(go())

A Chat reads server lines (CRLF stripped) one at a time with a timeout.
expect(regex) waits for a matching line; lines that did not match stay in a
backlog that later expect() calls search first, so the order in which
unrelated notices arrive does not matter.  sync() is a barrier: it sends a
private message to ourselves with a unique tag and returns every line that
arrived before the echo -- everything the server did for our earlier lines.
Every byte received is kept in .raw for hygiene checks.
"""

import asyncio
import collections
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402


class ChatError(Exception):
    pass


def chat_server(chat=None, server=None, tls=False, plain=True, extra="", **kw):
    """A pt.Server whose listeners speak chat: listener 0 plain (if plain),
    then one TLS listener (if tls).  chat: dict of [chat] keys."""
    listeners = []
    if plain:
        listeners.append(pt.listen(name="chat", service="chat"))
    if tls:
        listeners.append(pt.listen(name="chats", service="chat", tls=True))
    text = ""
    if chat:
        text = "\n[chat]\n" + "".join("%s = %s\n" % kv for kv in chat.items())
    return pt.Server(listeners=listeners, server=server, extra=text + extra, **kw)


def _text(line):
    return line.decode("utf-8", "replace") if isinstance(line, (bytes, bytearray)) else line


def texts(lines):
    return [_text(l) for l in lines]


class Chat:
    _seq = 0

    def __init__(self, reader, writer, label=None):
        Chat._seq += 1
        self.id = Chat._seq
        self.r = reader
        self.w = writer
        self.label = label or "c%d" % self.id
        self.nick = None
        self.room = None          # room named by the greeting
        self.here = None          # member count in the greeting
        self.raw = bytearray()    # every byte received
        self.history = []         # every line received (bytes, no EOL)
        self.backlog = collections.deque()
        self.bad_eol = []         # lines that did not end in CRLF (except at EOF)
        self.eof = False
        self._sync = 0

    # -- connecting

    @classmethod
    async def open(cls, port, host="127.0.0.1", tls=None, sock=None, timeout=5,
                   greet=True, label=None):
        """Connect; with greet, read the welcome (sets .nick) and the
        default-room line (sets .room/.here)."""
        reader, writer = await pt.connect(port, host=host, tls=tls, timeout=timeout, sock=sock)
        c = cls(reader, writer, label)
        if greet:
            await c.greeting(timeout)
        return c

    async def greeting(self, timeout=5):
        m = await self.expect(r"^\*\*\* welcome to parley, (.+?)\. ", timeout)
        if not m:
            raise ChatError("%s: no welcome line; got %r" % (self.label, self.history[-5:]))
        self.nick = m.group(1)
        m = await self.expect(r"^\*\*\* you are in (#\S+) \((\d+) here\)", timeout)
        if not m:
            raise ChatError("%s: no 'you are in' line; got %r" % (self.label, self.history[-5:]))
        self.room, self.here = m.group(1), int(m.group(2))
        return self.nick

    # -- reading

    async def _next(self, timeout):
        """Read one line from the socket: bytes without EOL, None on timeout/EOF."""
        if self.eof:
            return None
        try:
            line = await asyncio.wait_for(self.r.readline(), timeout)
        except asyncio.TimeoutError:
            return None
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError) as e:
            # ValueError: a line beyond the reader's limit.
            self.eof = True
            self.error = e
            return None
        if not line:
            self.eof = True
            return None
        self.raw += line
        if line.endswith(b"\r\n"):
            line = line[:-2]
        else:
            self.bad_eol.append(line)
            if line.endswith(b"\n"):
                line = line[:-1]
        self.history.append(line)
        m = re.match(rb"^\*\*\* you are now known as (.+)$", line)
        if m:
            self.nick = m.group(1).decode("utf-8", "replace")
        return line

    async def line(self, timeout=5):
        """Next line (backlog first): bytes without CRLF, or None on timeout/EOF."""
        if self.backlog:
            return self.backlog.popleft()
        return await self._next(timeout)

    @staticmethod
    def _search(pattern, line):
        if isinstance(pattern, bytes):
            return re.search(pattern, line)
        return re.search(pattern, _text(line))

    async def expect(self, pattern, timeout=5):
        """Wait for a line matching pattern (str: matched against the decoded
        line; bytes: against the raw line).  Returns the match (m.string is
        the line) or None on timeout/EOF.  Non-matching lines stay in the
        backlog for later expect() calls."""
        for i, line in enumerate(self.backlog):
            m = self._search(pattern, line)
            if m:
                del self.backlog[i]
                return m
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return None
            line = await self._next(left)
            if line is None:
                return None
            m = self._search(pattern, line)
            if m:
                return m
            self.backlog.append(line)

    async def expect_line(self, exact, timeout=5):
        """Wait for a line equal to exact (bytes or str); returns it or None."""
        want = exact.encode() if isinstance(exact, str) else exact
        m = await self.expect(b"^" + re.escape(want) + b"$", timeout)
        return m.string if m else None

    async def collect(self, duration):
        """Every line (backlog first) arriving within duration seconds."""
        out = list(self.backlog)
        self.backlog.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return out
            line = await self._next(left)
            if line is None:
                if self.eof:
                    return out
                continue
            out.append(line)

    async def sync(self, timeout=10):
        """Barrier: every line that arrived before the server handled a
        /msg-to-self sent now (backlog included; the backlog is cleared).
        Raises ChatError if the echo does not come back."""
        self._sync += 1
        tag = "sync-%d-%d-%d" % (os.getpid(), self.id, self._sync)
        nick = self.nick
        await self.send("/msg %s %s" % (nick, tag))
        out = list(self.backlog)
        self.backlog.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        mine = ("*%s* %s" % (nick, tag)).encode()
        done = ("-> *%s* %s" % (nick, tag)).encode()
        while True:
            left = deadline - loop.time()
            line = await self._next(max(left, 0.001)) if left > 0 else None
            if line is None:
                raise ChatError("%s: sync %s timed out (eof=%s); lines so far: %r"
                                % (self.label, tag, self.eof, out[-10:]))
            if line == done:
                return out
            if line != mine:
                out.append(line)

    async def read_to_eof(self, timeout=5):
        """(lines, got_eof): everything until the server closes."""
        out = list(self.backlog)
        self.backlog.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.eof:
            left = deadline - loop.time()
            if left <= 0:
                return out, False
            line = await self._next(left)
            if line is not None:
                out.append(line)
        return out, True

    # -- writing

    async def send_raw(self, data, timeout=10):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.w.write(data)
        await asyncio.wait_for(self.w.drain(), timeout)

    async def send(self, line, timeout=10):
        """Send one line (str or bytes), LF-terminated."""
        if isinstance(line, str):
            line = line.encode("utf-8")
        await self.send_raw(line + b"\n", timeout)

    say = send

    async def cmd(self, line, pattern, timeout=5):
        await self.send(line)
        return await self.expect(pattern, timeout)

    async def set_nick(self, nick, timeout=5):
        m = await self.cmd("/nick " + nick, r"^\*\*\* you are now known as |^!!! ", timeout)
        if not m or not m.string.startswith("*** you are now known as "):
            raise ChatError("%s: /nick %s failed: %r" % (self.label, nick,
                                                         m.string if m else None))
        return self.nick

    async def close(self):
        await pt.close(self.w)


async def open_many(port, n, host="127.0.0.1", tls=None, batch=50, timeout=10):
    """n greeted clients, opened batch at a time."""
    out = []
    for i in range(0, n, batch):
        out += await asyncio.gather(*[Chat.open(port, host=host, tls=tls, timeout=timeout)
                                      for _ in range(min(batch, n - i))])
    return out


async def close_all(clients):
    await asyncio.gather(*[c.close() for c in clients], return_exceptions=True)


def small_rcvbuf_socket(port, rcvbuf=4096, host="127.0.0.1"):
    """A connected non-blocking socket whose receive buffer was made small
    before connect (so the window stays small)."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect((host, port))
    s.setblocking(False)
    return s


class RssSampler:
    """Background sampling of the daemon's RSS (KiB): .base, .peak."""

    def __init__(self, srv, interval=0.05):
        self.srv = srv
        self.interval = interval
        self.base = self._sample() or 0
        self.peak = self.base
        self._task = None

    def _sample(self):
        try:
            return self.srv.rss_kib()
        except (OSError, TypeError):
            return None

    async def _run(self):
        while True:
            v = self._sample()
            if v:
                self.peak = max(self.peak, v)
            await asyncio.sleep(self.interval)

    def start(self):
        self._task = asyncio.ensure_future(self._run())
        return self

    async def stop(self):
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        v = self._sample()
        if v:
            self.peak = max(self.peak, v)

    @property
    def growth(self):
        return self.peak - self.base


def uses_asan(pid):
    """True if the daemon is an AddressSanitizer build (its quarantine keeps
    freed memory resident, so RSS bounds must be looser)."""
    try:
        with open("/proc/%d/maps" % pid) as f:
            maps = f.read()
        # valgrind's allocator (vgpreload) keeps freed memory too.
        return "libasan" in maps or "vgpreload_memcheck" in maps
    except OSError:
        return False


def rss_bound_kib(srv, normal_kib):
    """normal_kib, or a looser bound (+256 MiB quarantine) under ASan."""
    return normal_kib + (256 << 10) if uses_asan(srv.pid) else normal_kib


def percentile(values, p):
    if not values:
        return None
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def wait_log(srv, pattern, timeout=5):
    """Poll the daemon log for a regex; returns the match or None."""
    deadline = time.monotonic() + timeout
    while True:
        m = re.search(pattern, srv.log(), re.M)
        if m or time.monotonic() >= deadline:
            return m
        time.sleep(0.05)


async def await_log(srv, pattern, timeout=5):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        m = re.search(pattern, srv.log(), re.M)
        if m or loop.time() >= deadline:
            return m
        await asyncio.sleep(0.05)
