#!/usr/bin/env python3
"""Registered nicks: /register, /identify (also as the first line),
/password, /unregister; a registered nick cannot be taken by anyone else
and its unidentified holder is renamed to a guest when the owner
identifies; wrong passwords are slowed (doubling per connection),
logged and limited per address; accounts survive a restart; the hash
runs off the loop (the loop answers quickly during 50 parallel
/register and 50 parallel /identify)."""

import asyncio
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402
import chatclient as cc  # noqa: E402

DELAY_MS = 400
# The answers to account commands (not joins, quits and other notices).
REPLY = (r"^!!! |^\*\*\* (you are |nick \S+ is registered|password changed|"
         r"account \S+ deleted)")
E = re.escape


def accounts(**kw):
    keys = {"scrypt_n": "1024", "failure_delay": "%dms" % DELAY_MS,
            "failure_delay_max": "5s", "failures_per_address": "100"}
    keys.update({k: str(v) for k, v in kw.items()})
    return "\n[accounts]\n" + "".join("%s = %s\n" % kv for kv in keys.items())


async def reply(c, line, timeout=10):
    m = await c.cmd(line, REPLY, timeout)
    return m.string if m else None


async def ownership(t, srv):
    a = await cc.Chat.open(srv.port(), label="owner")
    await a.set_nick("Bob")
    got = await reply(a, "/register short")
    t.like(got, r"^!!! a password needs at least 8 bytes", "a short password is refused")
    got = await reply(a, "/register hunter2222")
    t.like(got, r"^\*\*\* nick Bob is registered to you", "/register claims the current nick")
    t.ok(await cc.await_log(srv, r"auth: \S+ registered bob"), "registration is logged")
    t.ok("hunter2222" not in srv.log(), "the password never reaches the log")

    x = await cc.Chat.open(srv.port(), label="registrar")
    for i in range(4):
        await x.set_nick("extra%d" % i)
        got = await reply(x, "/register hunter2222")
        if i < 3:
            t.like(got, r"registered to you", "registration %d on one connection" % (i + 1))
        else:
            t.like(got, r"^!!! this connection has registered 3 nick\(s\), the most it may$",
                   "registrations_per_connection (3) is enforced")
    await x.close()

    g = await cc.Chat.open(srv.port(), label="guest")
    got = await reply(g, "/register hunter2222")
    t.like(got, r"^!!! guest nicks cannot be registered", "guest nicks cannot be registered")
    m = await g.cmd("/nick bob", REPLY)
    t.like(m and m.string, r"^!!! nick bob is registered; /identify bob PASSWORD",
           "someone else cannot take the registered nick (any case)")
    await a.send("/nick bobby")
    await a.expect(r"you are now known as bobby")
    m = await g.cmd("/nick Bob", REPLY)
    t.like(m and m.string, r"^!!! nick Bob is registered",
           "... not even while its owner uses another nick")
    m = await a.cmd("/nick Bob", REPLY)
    t.like(m and m.string, r"^\*\*\* you are now known as Bob", "the owner can take it back")

    # wrong passwords: slowed, doubling, logged
    t0 = time.monotonic()
    got = await reply(g, "/identify Bob wrong-one", timeout=15)
    d1 = time.monotonic() - t0
    t.like(got, r"^!!! wrong password for bob$", "a wrong password is refused")
    t.ok(d1 >= DELAY_MS / 1000.0 * 0.9, "... after failure_delay (%.2fs)" % d1)
    t0 = time.monotonic()
    await g.send("/identify Bob wrong-two")
    await g.send("/msg %s still here" % g.nick)
    got = await g.expect(REPLY, timeout=15)
    d2 = time.monotonic() - t0
    t.like(got and got.string, r"^!!! wrong password", "a second wrong password is refused")
    t.ok(d2 >= 2 * DELAY_MS / 1000.0 * 0.9, "... after twice the delay (%.2fs)" % d2)
    m = await g.expect(r"still here", timeout=10)
    t.ok(m, "the connection's next line waits behind the answer, then runs")
    t.ok(await cc.await_log(srv, r"notice: auth: wrong password for bob from 127\.0\.0\.1:\d+ "
                                 r"\(2 in a row on this connection\)"),
         "wrong passwords are logged with the address and the count")

    # the owner identifies elsewhere: the holder becomes a guest (ghost)
    c = await cc.Chat.open(srv.port(), label="owner2")
    got = await reply(c, "/identify Bob hunter2222")
    t.like(got, r"^\*\*\* you are now known as Bob|^\*\*\* you are identified",
           "/identify NICK PASSWORD succeeds from another connection")
    m = await a.expect(r"^\*\*\* nick Bob is registered and its owner has identified", timeout=10)
    t.ok(m, "the previous holder is told why")
    m = await a.expect(r"^\*\*\* you are now known as guest\d+$", timeout=10)
    t.ok(m, "... and renamed to a guest nick")
    m = await c.expect(r"^\*\*\* you are identified as Bob$", timeout=10)
    t.ok(m, "the owner holds the nick")
    t.ok(await cc.await_log(srv, r"auth: \S+ identified as bob"), "identification is logged")

    # as the first line, before reading the greeting
    r, w = await pt.connect(srv.port())
    w.write(b"/identify bob hunter2222\n")
    await w.drain()
    f = cc.Chat(r, w, "first-line")
    m = await f.expect(r"^\*\*\* you are identified as bob$", timeout=10)
    t.ok(m, "/identify works as the very first line")
    await f.sync()  # the greeting and the rename, read
    m = await c.expect(r"you are now known as guest\d+$", timeout=10)
    t.ok(m, "... and the previous session is renamed")

    # /password, /unregister
    got = await reply(f, "/password wrong-old newpassword1")
    t.like(got, r"^!!! wrong password", "/password needs the old password")
    got = await reply(f, "/password hunter2222 newpassword1")
    t.like(got, r"^\*\*\* password changed$", "/password OLD NEW changes it")
    got = await reply(g, "/identify bob hunter2222")
    t.like(got, r"^!!! wrong password", "the old password no longer works")
    got = await reply(g, "/identify bob newpassword1")
    t.ok(got and "you are" in got, "the new one does", got)
    await g.expect(r"identified as bob", timeout=5)
    for x in (a, c, f):
        await x.close()
    return g


async def after_restart(t, srv):
    g = await cc.Chat.open(srv.port(), label="restarted")
    m = await g.cmd("/nick bob", REPLY)
    t.like(m and m.string, r"^!!! nick bob is registered", "after a restart the nick is still registered")
    got = await reply(g, "/identify bob newpassword1")
    t.ok(got and re.match(r"^\*\*\* (you are now known as bob|you are identified)", got),
         "after a restart the password still works", got)
    await g.expect(r"identified as bob", timeout=5)
    k = await cc.Chat.open(srv.port(), label="second")
    got = await reply(k, "/identify bob newpassword1")
    await k.expect(r"identified as bob", timeout=5)
    await g.expect(r"^\*\*\* nick bob is registered and its owner has identified", timeout=5)
    await g.expect(r"you are now known as guest\d+", timeout=5)
    got = await reply(g, "/unregister wrong-password")
    t.like(got, r"^!!! wrong password", "/unregister needs the password")
    got = await reply(g, "/unregister newpassword1")
    t.like(got, r"^\*\*\* account bob deleted$", "/unregister deletes the account")
    m = await k.expect(r"^\*\*\* account bob was deleted; you are no longer identified$")
    t.ok(m, "every session identified to a deleted account stops being identified")
    h = await cc.Chat.open(srv.port(), label="free")
    await k.send("/nick gone")
    await k.expect("known as gone")
    m = await h.cmd("/nick bob", REPLY)
    t.like(m and m.string, r"^\*\*\* you are now known as bob", "an unregistered nick is free again")
    await cc.close_all([g, h, k])


async def per_address(t, srv):
    clients = [await cc.Chat.open(srv.port(), label="fail%d" % i) for i in range(3)]
    await clients[0].set_nick("carol")
    got = await reply(clients[0], "/register carolpass")
    t.like(got, r"registered to you", "carol registered")
    for i, c in enumerate(clients):
        got = await reply(c, "/identify carol nope-%d" % i)
        t.like(got, r"^!!! wrong password", "failure %d from the address" % (i + 1))
    n = await cc.Chat.open(srv.port(), label="fresh")
    t0 = time.monotonic()
    got = await reply(n, "/identify carol carolpass")
    t.like(got, r"^!!! too many wrong passwords from your address; try again in \d+ s",
           "past failures_per_address, a fresh connection from the address is refused")
    t.ok(time.monotonic() - t0 < 2 * DELAY_MS / 1000.0 + 2, "... at once, without hashing")
    t.ok(await cc.await_log(srv, r"auth: refusing a password from 127\.0\.0\.1"), "... and logged")
    await cc.close_all(clients + [n])


async def per_address6(t, srv):
    a = await cc.Chat.open(srv.port(), host="::1", label="v6")
    await a.set_nick("dave")
    await reply(a, "/register davepassword")
    b = await cc.Chat.open(srv.port(), host="::1", label="v6b")
    got = await reply(b, "/identify dave wrong-password")
    t.like(got, r"^!!! wrong password", "IPv6: a wrong password")
    c = await cc.Chat.open(srv.port(), host="::1", label="v6c")
    got = await reply(c, "/identify dave davepassword")
    t.like(got, r"^!!! too many wrong passwords from your address",
           "IPv6: failures are counted per /64 too")
    t.ok(await cc.await_log(srv, r"refusing a password from \[::1\]"), "... and logged")
    await cc.close_all([a, b, c])


def store_files(t):
    with cc.chat_server(extra=accounts() + "\n[history]\nenabled = no\n") as srv:
        async def reg():
            a = await cc.Chat.open(srv.port())
            await a.set_nick("erin")
            got = await reply(a, "/register erinpassword")
            await a.close()
            return got
        t.like(pt.run(reg(), 20), r"registered to you", "without history, accounts still work")
        t.ok(os.path.exists(os.path.join(srv.state_dir, "accounts.db")) and
             not os.path.exists(os.path.join(srv.state_dir, "history.db")),
             "... in state_directory/accounts.db, and no history.db is made")
    for required in ("yes", "no"):
        srv = cc.chat_server(extra=accounts(path="/", required=required), start=False,
                             start_timeout=5)
        try:
            try:
                srv.start()
            except pt.ServerStartError:
                pass
            if required == "yes":
                rc = srv.wait(15)
                t.ok(rc == 1 and re.search(r"accounts: /: ", srv.log()),
                     "required = yes and an unusable database: exit 1 with the reason",
                     "status %s; log %s" % (rc, srv.log_tail(5)))
            else:
                t.ok(srv.alive() and cc.wait_log(srv, r"running WITHOUT registered nicks", 5),
                     "required = no: runs, and says loudly what is missing", srv.log_tail(5))

                async def unavailable():
                    a = await cc.Chat.open(srv.port())
                    got = await reply(a, "/identify someone somepassword")
                    await a.close()
                    return got
                t.like(pt.run(unavailable(), 20),
                       r"^!!! accounts are not available on this server$",
                       "... and account commands say so")
        finally:
            srv.cleanup()


async def ping(c):
    t0 = time.monotonic()
    await c.sync(timeout=20)
    return time.monotonic() - t0


async def responsive(t, srv, n=50):
    probe = await cc.Chat.open(srv.port(), label="probe")
    clients = await cc.open_many(srv.port(), n)
    for i, c in enumerate(clients):
        await c.set_nick("user%d" % i)
    for phase in ("register", "identify"):
        if phase == "identify":
            await cc.close_all(clients)
            clients = await cc.open_many(srv.port(), n)
        want = r"registered to you" if phase == "register" else r"identified as user\d+"
        lat = []
        stop = False

        async def pinger():
            while not stop:
                lat.append(await ping(probe))
                await asyncio.sleep(0.02)

        p = asyncio.ensure_future(pinger())
        t0 = time.monotonic()
        for i, c in enumerate(clients):
            line = ("/register password%d" % i if phase == "register"
                    else "/identify user%d password%d" % (i, i))
            c.w.write(line.encode() + b"\n")
        ms = await asyncio.gather(*[c.expect(want, timeout=60 * pt.SLOW) for c in clients])
        batch = time.monotonic() - t0
        stop = True
        await p
        ok = sum(1 for m in ms if m)
        t.is_(ok, n, "%d parallel /%s all succeed (%.2fs)" % (n, phase, batch))
        worst = max(lat) if lat else None
        desc = ("the loop answers during them: %d pings, worst %.3fs, batch %.2fs"
                % (len(lat), worst or -1, batch))
        if srv.memory_checker() == "valgrind":
            # valgrind runs one thread at a time, and a thread that makes
            # a syscall queues again for the CPU behind the hashers: pings
            # stalled 1-4 s of a 4 s batch at random.  Pinned to one CPU
            # (taskset -c 0) without valgrind, the worst was 0.09 s of 11 s.
            t.skip(desc, "under valgrind this measures its thread scheduler")
            continue
        t.ok(worst is not None and len(lat) >= 2 and worst < max(0.5, batch / 3), desc)
    await cc.close_all(clients + [probe])


def main(t):
    with cc.chat_server(extra=accounts()) as srv:
        try:
            pt.run(ownership(t, srv), timeout=60)
            srv.stop()
            srv.start()
            pt.run(after_restart(t, srv), timeout=30)
        except (cc.ChatError, asyncio.TimeoutError, OSError) as e:
            t.ok(False, "ownership scenario ran to the end", "%r\nlog:\n%s" % (e, srv.log_tail()))
    with cc.chat_server(extra=accounts(failures_per_address=3, failure_window="10m")) as srv:
        try:
            pt.run(per_address(t, srv), timeout=30)
        except (cc.ChatError, asyncio.TimeoutError, OSError) as e:
            t.ok(False, "per-address scenario ran to the end", "%r\nlog:\n%s" % (e, srv.log_tail()))
    store_files(t)
    if pt.have_ipv6_loopback():
        with pt.Server(listeners=[pt.listen(name="chat6", address="::1", service="chat")],
                       extra=accounts(failures_per_address=1)) as srv:
            try:
                pt.run(per_address6(t, srv), timeout=30)
            except (cc.ChatError, asyncio.TimeoutError, OSError) as e:
                t.ok(False, "IPv6 scenario ran to the end", "%r\nlog:\n%s" % (e, srv.log_tail()))
    else:
        t.skip("IPv6 per-/64 failure limit", "no IPv6 loopback")
    # A real cost (scrypt N=2^15, ~0.1 s a hash) on two threads: a batch
    # takes ~4 s.  Under a wrapper (valgrind: one thread at a time, 20-50
    # times slower) 20 clients and N=2^12 take as long; 50 at 2^15 took
    # minutes.  (ThreadSanitizer slows every thread alike: the native load.)
    n, scrypt_n = (20, 4096) if pt.WRAPPER else (50, 32768)
    with cc.chat_server(chat={"flood_burst": "100"},
                        extra=accounts(scrypt_n=scrypt_n, threads=2)) as srv:
        try:
            pt.run(responsive(t, srv, n), timeout=100)
        except (cc.ChatError, asyncio.TimeoutError, OSError) as e:
            t.ok(False, "parallel scenario ran to the end", "%r\nlog:\n%s" % (e, srv.log_tail()))


pt.main(main, timeout=200)
