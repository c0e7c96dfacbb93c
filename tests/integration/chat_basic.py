#!/usr/bin/env python3
"""Chat basics: two clients (plain and TLS listeners) talk in #lobby; nicks,
rooms, /who, /rooms, /topic, /msg, /me, //text, /help, errors, /quit and the
SIGTERM goodbye."""

import asyncio
import os
import re
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402
import chatclient as cc  # noqa: E402

E = re.escape


def has(lines, pattern):
    return any(re.search(pattern, l) for l in cc.texts(lines))


async def scenario(t, srv):
    a = await cc.Chat.open(srv.port(0), label="plain")
    b = await cc.Chat.open(srv.port(1), tls=pt.client_ctx(cafile=srv.cert), label="tls")
    t.like(a.nick, r"^guest\d+$", "first client got a guest nick (%s)" % a.nick)
    t.like(b.nick, r"^guest\d+$", "TLS client got a guest nick (%s)" % b.nick)
    t.ok(a.nick != b.nick, "guest nicks are unique")
    t.is_((a.room, b.room), ("#lobby", "#lobby"), "both start in #lobby")
    # The harness's readiness probe may still hold a seat in #lobby, so
    # only a lower bound is certain.
    t.ok(a.here >= 1 and b.here >= 2 and b.here >= a.here,
         "member count in greeting grows (%s then %s)" % (a.here, b.here))
    t.ok(await a.expect(r"^\*\*\* #lobby: %s has joined$" % E(b.nick)),
         "first client sees the TLS client join #lobby")

    # nicks
    ga = a.nick
    m = await a.cmd("/nick alice", r"^\*\*\* you are now known as alice$")
    t.ok(m, "/nick alice acknowledged")
    t.ok(await b.expect(r"^\*\*\* %s is now known as alice$" % E(ga)), "peer sees the nick change")
    gb = b.nick
    await b.set_nick("bob")
    t.ok(await a.expect(r"^\*\*\* %s is now known as bob$" % E(gb)), "bob's rename seen by alice")

    # chat both ways, no echo to the sender
    await a.say("hello bob, how are you?")
    t.ok(await b.expect_line("#lobby <alice> hello bob, how are you?"), "alice -> #lobby -> bob")
    await b.say("fine thanks alice")
    t.ok(await a.expect_line("#lobby <bob> fine thanks alice"), "bob -> #lobby -> alice (TLS to plain)")
    la = await a.sync()
    lb = await b.sync()
    t.ok(not has(la, "hello bob"), "alice does not get her own line back", repr(la))
    t.ok(not has(lb, "fine thanks"), "bob does not get his own line back", repr(lb))

    # nick collisions and invalid nicks
    m = await b.cmd("/nick alice", r"^!!! ")
    t.like(m and m.string, r'^!!! nick "alice" is already taken$', "exact nick collision refused")
    m = await b.cmd("/nick ALICE", r"^!!! ")
    t.like(m and m.string, r'^!!! nick "ALICE" is already taken$', "case-insensitive collision refused")
    await a.set_nick("zoë")
    m = await b.cmd("/nick ZOË", r"^!!! |^\*\*\* you are now")
    t.like(m and m.string, r'^!!! nick "ZOË" is already taken$', "Unicode case fold: ZOË collides with zoë")
    await a.set_nick("alice")
    for bad, why in (("9lives", "digit"), ("-dash", "digit or '-'"), ("has.dot", "not allowed"),
                     ("x" * 25, "too long")):
        m = await b.cmd("/nick " + bad, r"^!!! |^\*\*\* you are now")
        t.like(m and m.string, r'^!!! invalid nick "%s": .*%s' % (E(bad), E(why)),
               "invalid nick %r refused" % bad[:12])
    m = await b.cmd("/nick two words", r"^!!! |^\*\*\* you are now")
    t.like(m and m.string, r"^!!! invalid nick .*space", "nick with a space refused")
    m = await b.cmd("/nick", r"^!!! ")
    t.like(m and m.string, r"^!!! usage: /nick NAME$", "/nick without a name: usage")
    lb = await b.sync()
    t.is_(b.nick, "bob", "bob is still bob after the refusals")
    la = await a.sync()
    t.ok(not has(la, r"is now known as"), "alice saw no rename from refused /nick", repr(la))

    # a third client: join/part/quit announcements
    c = await cc.Chat.open(srv.port(0), label="carol")
    t.ok(await a.expect(r"^\*\*\* #lobby: %s has joined$" % E(c.nick)), "join announced to alice")
    t.ok(await b.expect(r"^\*\*\* #lobby: %s has joined$" % E(c.nick)), "join announced to bob")
    await c.set_nick("carol")
    await a.expect("is now known as carol")
    await b.expect("is now known as carol")

    # rooms: join several, the last joined is current
    m = await a.cmd("/join #dev", r"^\*\*\* you joined #dev")
    t.like(m and m.string, r"^\*\*\* you joined #dev \(1 here\)$", "/join #dev creates it (1 here)")
    m = await b.cmd("/join #dev", r"^\*\*\* you joined #dev")
    t.like(m and m.string, r"^\*\*\* you joined #dev \(2 here\)$", "bob joins #dev (2 here)")
    t.ok(await a.expect(r"^\*\*\* #dev: bob has joined$"), "alice sees bob join #dev")
    m = await a.cmd("/join #ops", r"^\*\*\* you joined #ops")
    t.ok(m, "alice joins a third room #ops")
    await a.say("in ops")
    await b.say("in dev")
    t.ok(await a.expect_line("#dev <bob> in dev"), "bob's current room is #dev (last joined)")
    lb = await b.sync()
    t.ok(not has(lb, "in ops"), "alice's line went to #ops (her current room), not to bob", repr(lb))
    m = await a.cmd("/join #dev", r"^\*\*\* #dev is now your current room$")
    t.ok(m, "/join of a room already joined makes it current")
    await a.say("back in dev")
    t.ok(await b.expect_line("#dev <alice> back in dev"), "alice's line now goes to #dev")
    lc = await c.sync()
    t.ok(not has(lc, "back in dev|in dev|in ops"), "carol (only #lobby) saw no #dev/#ops lines", repr(lc))
    m = await a.cmd("/join #lobby", r"^\*\*\* #lobby is now your current room$")
    await a.say("lobby again")
    t.ok(await c.expect_line("#lobby <alice> lobby again"), "current room switched back to #lobby")
    m = await a.cmd("/join nohash", r"^!!! ")
    t.like(m and m.string, r"^!!! cannot join nohash: invalid room name", "room without # refused")
    m = await a.cmd("/join #bad room", r"^!!! |^\*\*\* you joined")
    t.like(m and m.string, r"^!!! cannot join", "room name with a space refused")

    # /who
    await a.send("/who #dev")
    lines = cc.texts(await a.sync())
    t.ok("*** #dev has 2 member(s):" in lines, "/who #dev header", repr(lines))
    names = set()
    for l in lines:
        mm = re.match(r"^\*\*\* #dev (.+)$", l)
        if mm and "member(s)" not in l:
            names.update(mm.group(1).split())
    t.is_(names, {"alice", "bob"}, "/who #dev lists alice and bob")
    await c.send("/who")
    lines = cc.texts(await c.sync())
    t.ok("*** #lobby has 3 member(s):" in lines, "/who (current room) header for carol", repr(lines))
    names = set()
    for l in lines:
        mm = re.match(r"^\*\*\* #lobby (.+)$", l)
        if mm and "member(s)" not in l:
            names.update(mm.group(1).split())
    t.is_(names, {"alice", "bob", "carol"}, "/who lists the three #lobby members")
    m = await c.cmd("/who #nope", r"^!!! ")
    t.like(m and m.string, r"^!!! no such room: #nope$", "/who of a missing room")

    # /topic
    m = await b.cmd("/topic", r"^\*\*\* #dev ")
    t.like(m and m.string, r"^\*\*\* #dev has no topic$", "/topic shows no topic yet")
    await b.send("/topic Release planning: v1.0")
    t.ok(await b.expect_line("*** #dev: bob set the topic: Release planning: v1.0"),
         "setter sees the topic change")
    t.ok(await a.expect_line("*** #dev: bob set the topic: Release planning: v1.0"),
         "room member sees the topic change")
    lc = await c.sync()
    t.ok(not has(lc, "set the topic"), "non-member does not see the topic change", repr(lc))
    m = await b.cmd("/topic", r"^\*\*\* #dev topic")
    t.like(m and m.string, r"^\*\*\* #dev topic: Release planning: v1\.0$", "/topic shows it")

    # /rooms counts and topics
    await c.send("/rooms")
    lines = cc.texts(await c.sync())
    t.ok("*** rooms:" in lines, "/rooms header", repr(lines))
    t.ok("*** #lobby (3)" in lines, "/rooms: #lobby has 3", repr(lines))
    t.ok("*** #dev (2) Release planning: v1.0" in lines, "/rooms: #dev has 2 and its topic", repr(lines))
    t.ok("*** #ops (1)" in lines, "/rooms: #ops has 1", repr(lines))
    m = await c.cmd("/join #dev", r"^\*\*\* you joined #dev")
    t.like(m and m.string, r"^\*\*\* you joined #dev \(3 here\); topic: Release planning: v1\.0$",
           "joining shows the count and the topic")
    await a.expect("#dev: carol has joined")
    await b.expect("#dev: carol has joined")

    # /part
    await b.send("/part #dev see you later")
    t.ok(await b.expect_line("*** you left #dev; your current room is #lobby"),
         "/part #dev reason: bob told his new current room")
    t.ok(await a.expect_line("*** #dev: bob has left (see you later)"), "part with reason announced")
    t.ok(await c.expect_line("*** #dev: bob has left (see you later)"), "part announced to every member")
    await a.send("/part")
    t.ok(await a.expect(r"^\*\*\* you left #lobby; your current room is #dev$"),
         "/part without args leaves the current room")
    t.ok(await b.expect_line("*** #lobby: alice has left"), "part without reason announced")
    await a.send("/part #ops")
    t.ok(await a.expect_line("*** you left #ops; your current room is #dev"), "/part #ops")
    m = await a.cmd("/part #lobby", r"^!!! ")
    t.like(m and m.string, r"^!!! you are not in #lobby$", "/part of a room you are not in")
    await c.send("/rooms")
    lines = cc.texts(await c.sync())
    t.ok(not any(l.startswith("*** #ops") for l in lines), "empty room #ops is gone from /rooms", repr(lines))
    t.ok("*** #lobby (2)" in lines, "/rooms: #lobby now has 2", repr(lines))
    await a.send("/join #lobby")
    await a.expect("you joined #lobby")
    await b.expect("#lobby: alice has joined")
    await c.expect("#lobby: alice has joined")

    # /msg
    await a.send("/msg bob psst, a secret")
    t.ok(await b.expect_line("*alice* psst, a secret"), "/msg delivered to bob")
    t.ok(await a.expect_line("-> *bob* psst, a secret"), "/msg echoed to sender as -> *bob*")
    await b.send("/msg ALICE got it")
    t.ok(await a.expect_line("*bob* got it"), "/msg back, nick looked up case-insensitively")
    t.ok(await b.expect_line("-> *alice* got it"), "sender sees the canonical nick")
    lc = await c.sync()
    t.ok(not has(lc, "secret|got it"), "third party sees no private messages", repr(lc))
    m = await a.cmd("/msg nobody hello?", r"^!!! ")
    t.like(m and m.string, r"^!!! no such nick: nobody$", "/msg to an unknown nick")
    m = await a.cmd("/msg bob", r"^!!! ")
    t.like(m and m.string, r"^!!! usage: /msg NICK text$", "/msg without text: usage")

    # /me and //text
    await a.send("/me waves")
    t.ok(await b.expect_line("#lobby * alice waves"), "/me is shown as an action")
    await a.send("//shrug is not a command")
    t.ok(await b.expect_line("#lobby <alice> /shrug is not a command"), "//text sends /text literally")
    la = await a.sync()
    t.ok(not has(la, "^!!!"), "//text gives the sender no error", repr(la))

    # /help
    await c.send("/help")
    lines = cc.texts(await c.sync())
    for name in ("help", "nick", "join", "part", "rooms", "who", "msg", "me", "topic", "quit"):
        t.ok(any(l.startswith("*** /%s " % name) or l.startswith("*** /%s --" % name) for l in lines),
             "/help lists /%s" % name, repr(lines))
    m = await c.cmd("/help msg", r"^\*\*\* /msg|^!!! ")
    t.like(m and m.string, r"^\*\*\* /msg NICK text -- ", "/help msg explains one command")
    m = await c.cmd("/frobnicate now", r"^!!! ")
    t.like(m and m.string, r"^!!! unknown command /frobnicate; /help lists the commands$",
           "unknown command error")

    # /quit: goodbye, close, one quit line per peer even when sharing rooms
    await c.send("/quit off to lunch")
    lines, eof = await c.read_to_eof(5)
    lines = cc.texts(lines)
    t.ok("*** goodbye" in lines, "/quit says goodbye", repr(lines))
    t.ok(eof, "/quit closes the connection")
    t.ok(await a.expect_line("*** carol has quit (off to lunch)"), "alice sees carol quit with reason")
    t.ok(await b.expect_line("*** carol has quit (off to lunch)"), "bob sees carol quit with reason")
    la = await a.sync()
    n = sum(1 for l in cc.texts(la) if "carol has quit" in l)
    t.is_(n, 0, "the quit line came once to alice although she shared two rooms with carol")

    # a dropped connection is announced as closed
    await b.close()
    t.ok(await a.expect(r"^\*\*\* bob has quit \(connection (closed|lost)\)$"),
         "a closed connection is announced as a quit")

    # raw bytes hygiene of the whole session
    t.ok(not a.bad_eol, "every line alice received ended in CRLF", repr(a.bad_eol[:3]))

    # SIGTERM: goodbye, then EOF
    srv.proc.send_signal(signal.SIGTERM)
    lines, eof = await a.read_to_eof(8)
    lines = cc.texts(lines)
    t.ok("*** the server is shutting down; goodbye" in lines, "SIGTERM: shutdown notice", repr(lines))
    t.ok(eof, "SIGTERM: connection closed")
    await a.close()


def main(t):
    with cc.chat_server(tls=True) as srv:
        try:
            pt.run(scenario(t, srv), timeout=40)
        except (cc.ChatError, asyncio.TimeoutError) as e:
            t.ok(False, "chat session ran to the end", "%r\nlog:\n%s" % (e, srv.log_tail()))
        rc = srv.wait(10)
        t.is_(rc, 0, "daemon exited 0 after SIGTERM")


pt.main(main)
