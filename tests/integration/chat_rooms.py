#!/usr/bin/env python3
"""Room access control: the creator is an operator; keys (/join #room KEY),
invite-only rooms and /invite, /kick, /ban and /unban by nick or address
mask, /mode; only operators may change a room; the settings of a room with
a registered owner hold across reconnects and a restart, those of an
unowned room go when it empties."""

import asyncio
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402
import chatclient as cc  # noqa: E402

ACCOUNTS = "\n[accounts]\nscrypt_n = 1024\n"


async def ans(c, line, pattern=r"^!!! |^\*\*\* (you |#sec|#tmp)", timeout=10):
    m = await c.cmd(line, pattern, timeout)
    return m.string if m else None


async def joined(c, room, key=None):
    got = await ans(c, "/join %s%s" % (room, " " + key if key else ""),
                    r"^\*\*\* you joined %s |^!!! " % re.escape(room))
    return got


async def nick(port, name, label=None):
    c = await cc.Chat.open(port, label=label or name)
    await c.set_nick(name)
    return c


async def scenario(t, srv):
    p = srv.port()
    alice = await nick(p, "alice")
    got = await ans(alice, "/register alicepass", r"registered to you|^!!! ")
    t.like(got, r"registered to you", "alice registers")
    bob = await nick(p, "bob")
    carol = await nick(p, "carol")

    t.like(await joined(alice, "#sec"), r"^\*\*\* you joined #sec \(1 here\)", "alice creates #sec")
    got = await ans(alice, "/mode", r"^\*\*\* #sec modes")
    t.like(got, r"^\*\*\* #sec modes: -i -k \(persistent\); owners: alice$",
           "the identified creator is its owner; the room is persistent")
    t.like(await joined(bob, "#sec"), r"you joined", "bob joins the open room")
    for cmd in ("/mode +i", "/kick alice", "/ban carol", "/invite carol", "/mode +k x"):
        got = await ans(bob, cmd + "" if cmd.startswith("/mode") else cmd, r"^!!! |^\*\*\* #sec: bob")
        t.like(got, r"^!!! you are not an operator of #sec$", "a non-operator cannot %s" % cmd)

    # key
    got = await ans(alice, "/mode +k s3cret", r"^\*\*\* #sec: alice set mode")
    t.like(got, r"^\*\*\* #sec: alice set mode \+k$", "+k sets a key (the key is not shown)")
    t.ok(await bob.expect(r"^\*\*\* #sec: alice set mode \+k$"), "members see the change")
    t.like(await joined(carol, "#sec"), r"^!!! cannot join #sec: it needs a key", "no key: refused")
    t.like(await joined(carol, "#sec", "wrong"), r"^!!! cannot join #sec: it needs a key",
           "a wrong key: refused")
    t.like(await joined(carol, "#sec", "s3cret"), r"you joined", "the right key: in")

    # kick: out, may come back
    await alice.send("/kick carol you are rude")
    m = await carol.expect(r"^\*\*\* you were kicked from #sec by alice \(you are rude\)$")
    t.ok(m, "/kick: the target is told, with the whole reason")
    t.ok(await bob.expect(r"^\*\*\* #sec: carol was kicked by alice \(you are rude\)$"),
         "... and the room")
    await carol.send("hello?")
    lines = await bob.sync()
    t.ok(not any(l.startswith(b"#sec <carol>") for l in lines), "a kicked client no longer talks in the room")
    t.like(await joined(carol, "#sec", "s3cret"), r"you joined", "a kicked client may rejoin")

    # ban by nick: kicked now, refused later, even after a reconnect
    await alice.send("/ban carol")
    t.ok(await carol.expect(r"^\*\*\* you were kicked from #sec by alice \(banned\)$"),
         "/ban NICK puts a present member out")
    t.like(await joined(carol, "#sec", "s3cret"), r"^!!! cannot join #sec: you are banned",
           "a banned nick cannot rejoin")
    await carol.close()
    carol = await nick(p, "carol", "carol2")
    t.like(await joined(carol, "#sec", "s3cret"), r"^!!! cannot join #sec: you are banned",
           "... not after a reconnect either")
    got = await ans(alice, "/ban", r"^\*\*\* #sec has \d+ ban")
    t.like(got, r"^\*\*\* #sec has 1 ban\(s\)$", "/ban lists the bans")
    got = await ans(alice, "/unban carol", r"no longer banned|^!!! ")
    t.like(got, r"^\*\*\* #sec: carol is no longer banned$", "/unban lifts it")
    t.like(await joined(carol, "#sec", "s3cret"), r"you joined", "... and carol can join")
    await carol.send("/part #sec")
    await carol.expect(r"you left #sec")

    # ban by address mask: everyone from 127.0.0.* but the owner
    got = await ans(alice, "/ban 127.0.0.*", r"127\.0\.0\.\* is banned|^!!! ")
    t.like(got, r"^\*\*\* #sec: 127\.0\.0\.\* is banned$", "/ban ADDRESS-MASK")
    t.ok(await bob.expect(r"you were kicked from #sec by alice \(banned\)"),
         "an address ban puts out a member from that address (not the owner)")
    t.like(await joined(carol, "#sec", "s3cret"), r"^!!! cannot join #sec: you are banned",
           "an address ban refuses any nick from the address")
    await ans(alice, "/unban 127.0.0.*", r"no longer banned|^!!! ")

    # invite-only; invitations hold across reconnects and are used once
    await ans(alice, "/mode +i", r"set mode \+i")
    t.like(await joined(bob, "#sec", "s3cret"), r"^!!! cannot join #sec: it is invite-only",
           "+i: even the key does not let in")
    got = await ans(alice, "/invite dave", r"is invited|^!!! ")
    t.like(got, r"^\*\*\* dave is invited to #sec$", "/invite NICK of someone not online")
    await ans(alice, "/invite bob", r"is invited|^!!! ")
    t.ok(await bob.expect(r"^\*\*\* alice invites you to #sec: /join #sec$"), "the invitee is told")
    await bob.close()
    bob = await nick(p, "bob", "bob2")
    t.like(await joined(bob, "#sec"), r"you joined", "the invitation holds across a reconnect "
           "and needs no key")
    await bob.send("/part #sec")
    await bob.expect("you left #sec")
    t.like(await joined(bob, "#sec"), r"^!!! cannot join #sec: it is invite-only",
           "an invitation lets in once")

    # an unowned room's settings go when it empties
    await carol.send("/join #tmp")
    await carol.expect(r"you joined #tmp")
    await ans(carol, "/mode +k k", r"set mode \+k|^!!! ")
    await carol.send("/part #tmp")
    await carol.expect("you left #tmp")
    t.like(await joined(bob, "#tmp"), r"you joined #tmp \(1 here\)",
           "an unowned room forgets its key when it empties")
    got = await ans(bob, "/mode", r"#tmp modes")
    t.like(got, r"-k; owners: none$", "... and the new creator finds it plain")
    await cc.close_all([alice, bob, carol])


async def after_restart(t, srv):
    p = srv.port()
    dave = await nick(p, "dave")
    t.like(await joined(dave, "#sec"), r"you joined #sec \(1 here\)",
           "after a restart the stored invitation still lets in")
    got = await ans(dave, "/mode -i", r"^!!! |set mode")
    t.like(got, r"^!!! you are not an operator", "joining an empty persistent room makes nobody op")
    await dave.send("/part #sec")
    await dave.expect("you left #sec")
    eve = await nick(p, "eve")
    t.like(await joined(eve, "#sec", "s3cret"), r"^!!! cannot join #sec: it is invite-only",
           "after a restart the room is still invite-only")
    alice = await cc.Chat.open(p, label="alice-again")
    got = await ans(alice, "/identify alice alicepass", r"identified as|^!!! ")
    t.like(got, r"identified as alice", "alice identifies")
    t.like(await joined(alice, "#sec"), r"you joined", "the owner gets in without key or invite")
    got = await ans(alice, "/mode", r"#sec modes")
    t.like(got, r"^\*\*\* #sec modes: \+i \+k \(persistent\); owners: alice$",
           "after a restart: +i, +k and the owner are kept")
    got = await ans(alice, "/mode -i", r"^!!! |set mode")
    t.like(got, r"set mode -i", "the identified owner is an operator")
    t.like(await joined(eve, "#sec", "s3cret"), r"you joined", "with -i the key lets in again")
    got = await ans(alice, "/unregister alicepass", r"account alice deleted|^!!! ")
    t.like(got, r"account alice deleted", "the owner deletes its account")
    got = await ans(alice, "/mode", r"#sec modes")
    t.like(got, r"^\*\*\* #sec modes: -i \+k; owners: none$",
           "a deleted account owns nothing (the next registrant of the name inherits nothing)")
    await cc.close_all([dave, eve, alice])


def main(t):
    with cc.chat_server(extra=ACCOUNTS) as srv:
        try:
            pt.run(scenario(t, srv), timeout=60)
            srv.stop()
            srv.start()
            pt.run(after_restart(t, srv), timeout=30)
        except (cc.ChatError, asyncio.TimeoutError, OSError) as e:
            t.ok(False, "room scenario ran to the end", "%r\nlog:\n%s" % (e, srv.log_tail()))
        t.ok(srv.alive(), "daemon alive")


pt.main(main, timeout=120)
