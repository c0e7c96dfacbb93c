#!/usr/bin/env python3
"""Server operators ([operators] accounts): /wall, /kill, /kline and
/unkline; only operators may use them; an address ban closes the
address's connections, refuses new ones at accept (one line on plain
listeners, a close without handshake on TLS), survives a restart and
expires."""

import asyncio
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402
import chatclient as cc  # noqa: E402

EXTRA = "\n[accounts]\nscrypt_n = 1024\n\n[operators]\naccounts = Root1 other\n"


def bound_sock(port, src):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    return s


def raw(port, src, timeout=3):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(timeout)
    buf = b""
    try:
        s.connect(("127.0.0.1", port))
        while True:
            d = s.recv(4096)
            if not d:
                return buf, True
            buf += d
            if b"\n" in buf and not buf.startswith(b"parleyd:"):
                return buf, False
    except socket.timeout:
        return buf, False
    finally:
        s.close()


async def ans(c, line, pattern, timeout=10):
    m = await c.cmd(line, pattern, timeout)
    return m.string if m else None


async def scenario(t, srv):
    p = srv.port()
    op = await cc.Chat.open(p, label="op")
    await op.set_nick("root1")
    await ans(op, "/register rootpassword", r"registered to you|^!!! ")
    user = await cc.Chat.open(p, label="user")
    await user.set_nick("mallory")
    for cmd in ("/wall hi", "/kill root1", "/kline 127.0.0.9 1h", "/unkline 127.0.0.9", "/kline"):
        got = await ans(user, cmd, r"^!!! ")
        t.like(got, r"^!!! you are not a server operator$", "a non-operator cannot %s" % cmd.split()[0])
    got = await ans(op, "/wall hello everyone", r"^\*\*\* NOTICE|^!!! ")
    t.like(got, r"^\*\*\* NOTICE from root1: hello everyone$",
           "an identified operator account may /wall")
    t.ok(await user.expect(r"^\*\*\* NOTICE from root1: hello everyone$"), "everyone gets the notice")

    await ans(op, "/kill mallory go away", r"is disconnected|^!!! ")
    lines, eof = await user.read_to_eof(10)
    t.ok(eof, "/kill disconnects the target")
    t.ok(any(l == b"*** you were disconnected by server operator root1 (go away)" for l in lines),
         "... telling it who and why", repr(lines))
    t.ok(await cc.await_log(srv, r"oper: root1 \(root1\) killed mallory"), "/kill is logged")

    far = await cc.Chat.open(p, sock=bound_sock(p, "127.0.0.2"), label="far")
    got = await ans(op, "/kline 127.0.0.1 1h", r"^!!! |^\*\*\* \S+ is banned from the server;")
    t.like(got, r"^!!! 127\.0\.0\.1 matches your own address", "an operator cannot ban itself")
    got = await ans(op, "/kline 127.0.0.2 0 spamming", r"^!!! |^\*\*\* \S+ is banned from the server;")
    t.like(got, r"^\*\*\* 127\.0\.0\.2 is banned from the server; 1 connection\(s\) closed$",
           "/kline MASK 0 reason bans for ever and closes the address's connections")
    lines, eof = await far.read_to_eof(10)
    t.ok(eof and b"*** your address is banned from this server (spamming)" in lines,
         "the banned client is told and disconnected", repr(lines[-3:]))
    data, eof = raw(p, "127.0.0.2")
    t.same_bytes(data, b"parleyd: your address is banned from this server (spamming)\r\n",
                 "a new plain connection is refused with one line")
    t.ok(eof, "... and closed")
    data, eof = raw(srv.port(1), "127.0.0.2")
    t.ok(eof and data == b"", "a TLS one is closed before any handshake")
    data, eof = raw(p, "127.0.0.1")
    t.ok(data.startswith(b"*** welcome"), "other addresses are let in")
    got = await ans(op, "/kline 127.0.0.3 4s short", r"^!!! |^\*\*\* \S+ is banned from the server;")
    t.like(got, r"is banned from the server", "a ban with an expiry")
    data, _ = raw(p, "127.0.0.3")
    t.ok(data.startswith(b"parleyd: your address is banned"), "... refuses at first")
    ok = False
    deadline = time.monotonic() + 10
    while not ok and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        data, _ = raw(p, "127.0.0.3")
        ok = data.startswith(b"*** welcome")
    t.ok(ok, "... and expires")
    await op.send("/kline")
    got = await op.expect(r"^\*\*\* \d+ address ban")
    t.like(got and got.string, r"^\*\*\* 1 address ban\(s\)$", "/kline lists the live bans")
    await op.close()


async def after_restart(t, srv):
    p = srv.port()
    data, eof = raw(p, "127.0.0.2")
    t.same_bytes(data, b"parleyd: your address is banned from this server (spamming)\r\n",
                 "after a restart the ban still holds")
    op = await cc.Chat.open(p, label="op2")
    got = await ans(op, "/identify root1 rootpassword", r"identified as|^!!! ")
    t.like(got, r"identified as root1", "the operator identifies")
    got = await ans(op, "/unkline 127.0.0.2", r"^!!! |no longer banned")
    t.like(got, r"^\*\*\* 127\.0\.0\.2 is no longer banned from the server$", "/unkline lifts it")
    data, eof = raw(p, "127.0.0.2")
    t.ok(data.startswith(b"*** welcome"), "... and the address is let in")
    await op.close()


def main(t):
    with cc.chat_server(tls=True, extra=EXTRA) as srv:
        try:
            pt.run(scenario(t, srv), timeout=60)
            srv.stop()
            srv.start()
            pt.run(after_restart(t, srv), timeout=30)
        except (cc.ChatError, asyncio.TimeoutError, OSError) as e:
            t.ok(False, "operator scenario ran to the end", "%r\nlog:\n%s" % (e, srv.log_tail()))
        t.ok(srv.alive(), "daemon alive")


pt.main(main, timeout=120)
