#!/usr/bin/env python3
"""Resumable sessions: the greeting hands out a session token; /resume
TOKEN on a new connection restores nick and rooms (the current one too)
and replays, per room, exactly the messages stored while away -- none
from before, none twice, live lines after; a token works once; a live
session can be taken over; /quit and expiry end resumability."""

import asyncio
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402
import chatclient as cc  # noqa: E402
import histlib as hl  # noqa: E402

TOKEN = r"Session token ([0-9a-f]{32}): /resume \1 on a new connection within \d+ s"


def last_token(c):
    """The newest session token c was given (welcome or /resume answer)."""
    found = re.findall(TOKEN, "\n".join(cc._text(l) for l in c.history))
    return found[-1] if found else None


async def open_tok(port, label):
    c = await cc.Chat.open(port, label=label)
    return c, last_token(c)


async def until(c, pattern, timeout=15):
    """Lines up to and including the first matching pattern."""
    out = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            return out, False
        line = await c.line(left)
        if line is None:
            return out, False
        out.append(cc._text(line))
        if re.search(pattern, out[-1]):
            return out, True


async def scenario(t, srv):
    p = srv.port()
    a, tok = await open_tok(p, "ann")
    t.ok(tok, "the welcome line carries a session token")
    t.like("\n".join(cc._text(l) for l in a.history), r"within 600 s gets this session back",
           "the welcome line gives the default window, 600 s")
    await a.set_nick("ann")
    b = await cc.Chat.open(p, label="bob")
    await b.set_nick("bob")
    for c in (a, b):
        for r in ("#a", "#b"):
            await c.send("/join " + r)
            await c.expect(r"you joined %s" % r)
    await b.send("/join #a")  # bob's current room: #a
    await b.expect("#a is now your current room")
    await b.say("before-a")
    t.ok(await a.expect(r"^#a <bob> before-a$"), "ann sees bob before leaving")
    await a.send("/join #ops")
    await a.expect(r"you joined #ops")
    await b.send("/join #ops")
    await b.expect(r"you joined #ops")
    await b.send("/join #a")
    await b.expect("#a is now your current room")
    await a.send("/join #b")
    await a.expect("#b is now your current room")
    await a.sync()
    await a.close()
    t.ok(await b.expect(r"^\*\*\* ann has quit"), "ann's connection ends")

    sent = {"#a": [], "#b": [], "#lobby": [], "#ops": []}
    for i in range(3):
        await b.say("away-a-%d" % i)
        sent["#a"].append("away-a-%d" % i)
    await b.send("/join #b")
    await b.expect("#b is now your current room")
    for i in range(2):
        await b.say("away-b-%d" % i)
        sent["#b"].append("away-b-%d" % i)
    await b.send("/join #lobby")
    await b.expect("#lobby is now your current room")
    await b.say("away-lobby")
    sent["#lobby"].append("away-lobby")
    await b.sync()

    c, tok2 = await open_tok(p, "ann2")
    await c.sync()  # the connect-time lobby replay, read
    await c.send("/resume " + tok)
    lines, ok = await until(c, r"^\*\*\* session resumed\. Session token [0-9a-f]{32}")
    t.ok(ok, "/resume answers", repr(lines[-5:]))
    t.ok(any(re.match(r"^\*\*\* you are now known as ann$", l) for l in lines), "the nick is back")
    for r in ("#lobby", "#a", "#b", "#ops"):
        t.ok(any(l.startswith("*** you are back in %s " % r) for l in lines), "back in %s" % r)
    # wait until every replay has ended
    ends = sum(1 for l in lines if re.match(r"^\*\*\* #\S+: end of missed messages$", l))
    while ends < 4:
        more, ok = await until(c, r"^\*\*\* #\S+: end of missed messages$")
        if not ok:
            break
        lines += more
        ends += 1
    t.is_(ends, 4, "one replay of missed messages per room")
    for r in ("#a", "#b", "#lobby", "#ops"):
        got = [re.sub(r"^\S+ \[[^]]+\] <bob> ", "", l) for l in lines
               if re.match(r"^%s \[[^]]+\] <" % re.escape(r), l)]
        t.is_(got, sent[r], "%s: exactly the messages missed, in order" % r)
        t.ok(any(l == "*** %s: %d message(s) while you were away:" % (r, len(sent[r]))
                 for l in lines), "%s: counted" % r)
    t.ok(not any("before-a" in l for l in lines), "nothing from before the disconnect")
    await b.say("live-after")
    m = await c.expect(r"^#lobby <bob> live-after$")
    t.ok(m, "live lines follow")
    await c.say("i am back")
    t.ok(await b.expect(r"^#b <ann> i am back$"), "the current room (#b) is restored")
    m = await c.cmd("/mode #ops +i", r"^!!! |set mode")
    t.like(m and m.string, r"set mode \+i", "operator status in a room that still exists is kept")
    lines = await c.sync()
    t.ok(not any("away-" in cc._text(l) for l in lines), "nothing replayed twice")

    # a used token is gone; the new one can take over the live session
    d, _ = await open_tok(p, "ann3")
    m = await d.cmd("/resume " + tok, r"^!!! ")
    t.like(m and m.string, r"^!!! no session to resume with that token", "a token works once")
    newtok = last_token(c)
    t.ok(newtok not in (tok, tok2), "the resumed session got a new token")
    await d.send("/resume " + newtok)
    lines, ok = await until(d, r"^\*\*\* session resumed\.")
    t.ok(ok and any(l == "*** you are now known as ann" for l in lines),
         "/resume of a live session's token takes it over")
    rest, eof = await c.read_to_eof(10)
    t.ok(eof and any(cc._text(l) == "*** this session was resumed on another connection"
                     for l in rest), "the old connection is told and closed")

    # /quit: not resumable
    last = last_token(d) or ""
    await d.send("/quit")
    await d.read_to_eof(5)
    e, _ = await open_tok(p, "after-quit")
    m = await e.cmd("/resume " + last, r"^!!! |^\*\*\* resuming")
    t.like(m and m.string, r"^!!! no session", "after /quit the session cannot be resumed")
    await cc.close_all([b, e])


async def expiry(t, srv):
    a, tok = await open_tok(srv.port(), "short")
    await a.close()
    await asyncio.sleep(1.6)
    b, _ = await open_tok(srv.port(), "late")
    m = await b.cmd("/resume " + tok, r"^!!! |^\*\*\* resuming")
    t.like(m and m.string, r"^!!! no session", "past resume_window the session is gone")
    await b.close()

    # Expired sessions are freed when they expire, not when the next
    # client leaves or resume_max_sessions fill up (they used to stay).
    many = [await cc.Chat.open(srv.port(), label="p%d" % i) for i in range(20)]
    await cc.close_all(many)
    loop = asyncio.get_running_loop()
    parked = lambda: hl.metrics(srv).get("parley_sessions_parked", -1)  # noqa: E731
    n = await loop.run_in_executor(None, lambda: pt.wait_for(lambda: parked() >= 1, 5) and parked())
    t.ok(n >= 1, "closed sessions are parked (parley_sessions_parked %r)" % n)
    n = await loop.run_in_executor(None, lambda: pt.wait_for(lambda: parked() == 0, 5) and 0)
    t.is_(parked(), 0, "with no client coming or going, the expired ones are freed within the window")


def main(t):
    with cc.chat_server() as srv:
        try:
            pt.run(scenario(t, srv), timeout=60)
        except (cc.ChatError, asyncio.TimeoutError, OSError) as e:
            t.ok(False, "resume scenario ran to the end", "%r\nlog:\n%s" % (e, srv.log_tail()))
    with cc.chat_server(chat={"resume_window": "1500ms"}) as srv:
        async def welcome():
            c = await cc.Chat.open(srv.port(), label="w")
            text = "\n".join(cc._text(l) for l in c.history)
            await c.close()
            return text
        t.like(pt.run(welcome(), timeout=10), r"within 1500 ms gets this session back",
               "a window that is not whole seconds is given in ms (not 'within 1 s')")
    with hl.hist_server(chat={"resume_window": "1s"}) as srv:
        try:
            pt.run(expiry(t, srv), timeout=20)
        except (cc.ChatError, asyncio.TimeoutError, OSError) as e:
            t.ok(False, "expiry scenario ran to the end", "%r\nlog:\n%s" % (e, srv.log_tail()))


pt.main(main, timeout=120)
