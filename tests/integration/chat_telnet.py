#!/usr/bin/env python3
"""Telnet clients: IAC sequences are stripped from chat input (never reach
other clients), DO/WILL are refused once per option (IAC WONT / IAC DONT),
subnegotiations are skipped, IAC IAC is a literal 0xFF (shown as U+FFFD).
Then a real /usr/bin/telnet on a pty: it negotiates, types a line that
arrives clean at a plain client, and shows the reply."""

import asyncio
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402
import chatclient as cc  # noqa: E402

IAC, SB, SE, WILL, WONT, DO, DONT = 255, 250, 240, 251, 252, 253, 254
R = "\ufffd".encode()

# (what the telnet-ish client writes -- a list means separate writes --,
#  what the other client must see after "#lobby <tn> ")
CASES = [
    (b"\xff\xfd\x18\xff\xfb\x01he\xff\xf1llo\n", b"hello", "DO TTYPE, WILL ECHO, NOP mid-word stripped"),
    (b"\xff\xfa\x18\x00VT100\xff\xf0sb skipped\n", b"sb skipped", "SB ... SE skipped"),
    (b"\xff\xfa\x18\x00A\xff\xffB\xff\xf0after sb iac\n", b"after sb iac", "IAC IAC inside SB skipped"),
    (b"lit \xff\xff byte\n", b"lit " + R + b" byte", "IAC IAC is a literal 0xFF, shown as U+FFFD"),
    (b"ayt\xff\xf6 gone\xff\xf4\xff\xf3\n", b"ayt gone", "AYT, IP, BRK dropped"),
    ([b"split\xff", b"\xfb\x03 ok\n"], b"split ok", "IAC WILL split across writes"),
    ([b"x\xff", b"Ay\n"], b"xAy", "IAC + non-command byte keeps the byte"),
    (b"\xff\xfd\x18\xff\xfb\x01again\n", b"again", "repeated DO/WILL stripped"),
    (b"\xff\xfe\x06\xff\xfc\x06q\n", b"q", "DONT/WONT stripped"),
    (b"\xff\xfa\x18junk\xff\xfb\x05resync\n", b"resync", "SB without SE resyncs on the next command"),
    ([b"\xff", b"\xfa", b"\x18", b"in pieces", b"\xff", b"\xf0", b"pieces ok\n"], b"pieces ok",
     "SB delivered byte by byte"),
]
# DO 24 -> WONT 24; WILL 1 -> DONT 1; WILL 3 -> DONT 3; WILL 5 (in SB) -> DONT 5.
# Nothing for the repeats, nothing for DONT/WONT.
REPLIES = [bytes([IAC, WONT, 24]), bytes([IAC, DONT, 1]), bytes([IAC, DONT, 3]), bytes([IAC, DONT, 5])]


async def raw_part(t, srv):
    tn = await cc.Chat.open(srv.port(), label="tn")
    b = await cc.Chat.open(srv.port(), label="reader")
    await tn.set_nick("tn")
    await b.sync()
    for sent, want, desc in CASES:
        for piece in (sent if isinstance(sent, list) else [sent]):
            await tn.send_raw(piece)
            if isinstance(sent, list):
                await asyncio.sleep(0.05)
        m = await b.expect(rb"^#lobby <tn> ")
        t.same_bytes(m.string if m else None, b"#lobby <tn> " + want, desc)
    await tn.send("/msg tn done-marker")
    m = await tn.expect(rb"-> \*tn\* done-marker$")
    t.ok(m, "telnet-ish client still talks normally")
    raw = bytes(tn.raw)
    replies = re.findall(rb"\xff[\xfb-\xfe][\x00-\xff]", raw)
    t.is_(replies, REPLIES, "each DO/WILL refused exactly once per option, in order; "
          "DONT/WONT never answered")
    rest = re.sub(rb"\xff[\xfb-\xfe][\x00-\xff]", b"", raw)
    t.ok(b"\xff" not in rest, "no other IAC bytes sent to the telnet client")
    lb = await b.sync()
    t.ok(not lb, "the other client got nothing else", repr(lb))
    t.ok(0xFF not in b.raw, "the other client never received a 0xFF byte")
    t.ok(not re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", bytes(b.raw)),
         "the other client never received a raw control byte")
    await tn.close()
    await b.close()


class Term:
    """A program on a pty; .out accumulates what it printed."""

    def __init__(self, argv, env):
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True, preexec_fn=pt._pdeathsig)
        os.close(slave)
        self.out = b""

    def pump(self, wait=0.0):
        while True:
            r, _, _ = select.select([self.master], [], [], wait)
            if not r:
                return
            try:
                d = os.read(self.master, 65536)
            except OSError:
                return
            if not d:
                return
            self.out += d
            wait = 0

    async def expect(self, pattern, timeout=5, start=0):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self.pump()
            m = re.search(pattern, self.out[start:])
            if m or loop.time() > deadline:
                return m
            await asyncio.sleep(0.05)

    def type(self, data):
        os.write(self.master, data)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.close(self.master)
        except OSError:
            pass


async def telnet_part(t, srv, telnet):
    b = await cc.Chat.open(srv.port(), label="nc-like")
    await b.set_nick("ncuser")
    await b.sync()
    home = tempfile.mkdtemp(prefix="parleytest-telnet-")
    env = {"HOME": home, "TERM": "dumb", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    term = Term([telnet, "127.0.0.1", str(srv.port())], env)
    try:
        m = await term.expect(rb"\*\*\* welcome to parley, (guest\d+)\.", timeout=8)
        t.ok(m, "telnet shows the welcome", repr(term.out[-300:]))
        tnick = m.group(1).decode() if m else "guest?"
        joined = await b.expect(r"^\*\*\* #lobby: %s has joined$" % re.escape(tnick))
        t.ok(joined, "the other client sees the telnet user join")
        # Make telnet negotiate: show option processing, then ask for
        # character mode (IAC DO SGA, IAC DO ECHO), and send AYT and NOP.
        mark = len(term.out)
        for cmd in (b"toggle options", b"mode character", b"send ayt", b"send nop"):
            term.type(b"\x1d")
            await term.expect(rb"telnet> ", timeout=3, start=mark)
            mark = len(term.out)
            term.type(cmd + b"\r")
            await asyncio.sleep(0.3)
        m = await term.expect(rb"RCVD WONT SUPPRESS GO AHEAD", timeout=3)
        t.ok(m, "telnet's DO SUPPRESS-GO-AHEAD is refused (RCVD WONT)", repr(term.out[-400:]))
        m = await term.expect(rb"RCVD WONT ECHO", timeout=3)
        t.ok(m, "telnet's DO ECHO is refused (RCVD WONT)")
        term.type(b"hello from a real telnet\r")
        m = await b.expect(rb"^#lobby <" + re.escape(tnick.encode()) + rb"> ", timeout=5)
        t.same_bytes(m.string if m else None,
                     b"#lobby <%s> hello from a real telnet" % tnick.encode(),
                     "the line typed in telnet arrives clean at the plain client")
        await b.say("hi telnet user, can you read this?")
        mark = len(term.out)
        m = await term.expect(rb"#lobby <ncuser> hi telnet user, can you read this\?\r\n",
                              timeout=5, start=mark)
        t.ok(m, "the reply shows up on the telnet terminal", repr(term.out[mark:][-300:]))
        lb = await b.sync()
        t.ok(not [l for l in lb if tnick.encode() in l and not l.startswith(b"***")],
             "no garbage lines from the telnet client reached the other client", repr(lb))
        t.ok(0xFF not in b.raw, "the plain client never received a 0xFF byte")
        t.ok(not re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", bytes(b.raw)),
             "the plain client never received a raw control byte")
        # Quit from telnet.
        term.type(b"/quit bye from telnet\r")
        m = await term.expect(rb"\*\*\* goodbye", timeout=5)
        t.ok(m, "/quit from telnet: goodbye shown")
        t.ok(await b.expect_line("*** %s has quit (bye from telnet)" % tnick),
             "the other client sees the telnet user quit")
    finally:
        term.stop()
        shutil.rmtree(home, ignore_errors=True)
        await b.close()


def main(t):
    with cc.chat_server(chat={"flood_rate": 1000, "flood_burst": 1000}) as srv:
        try:
            pt.run(raw_part(t, srv), timeout=20)
        except (cc.ChatError, asyncio.TimeoutError) as e:
            t.ok(False, "raw telnet scenario ran to the end", "%r\nlog:\n%s" % (e, srv.log_tail()))
        telnet = "/usr/bin/telnet" if os.access("/usr/bin/telnet", os.X_OK) else shutil.which("telnet")
        if not telnet:
            t.skip("real telnet client", "/usr/bin/telnet is not installed")
        else:
            try:
                pt.run(telnet_part(t, srv, telnet), timeout=30)
            except (cc.ChatError, asyncio.TimeoutError) as e:
                t.ok(False, "real telnet scenario ran to the end", "%r\nlog:\n%s" % (e, srv.log_tail()))
        t.ok(srv.alive(), "daemon still running")


pt.main(main)
