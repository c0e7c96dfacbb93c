#!/usr/bin/env python3
"""History as a user sees it: replay on join (exact format, UTC time,
actions, UTF-8), /history N, /history since, /search (FTS: case, accents,
AND of words, only the client's rooms, newest first, no match, bad
arguments, FTS syntax inert), persistence across a clean restart on the
same state directory, a server with [history] enabled = no, and the
replay/live seam while others talk: every joiner sees a contiguous suffix
of what a witness saw, each line exactly once, in order, the replay being
exactly the K lines before the seam.  Retention at start-up
(max_messages_per_room, max_age) prunes the FTS index too and never lets
an id be reused."""

import asyncio
import os
import random
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402
import chatclient as cc  # noqa: E402
import histlib as hl  # noqa: E402

REPLAY = 5
PAGE = 20
HIST = {"replay": str(REPLAY), "page_limit": str(PAGE),
        # Long enough that replays often find the lines still pending.
        "batch_interval": "200ms", "batch_size": "64"}
CHAT = {"flood_rate": "100000", "flood_burst": "100000"}


def plain(parsed):
    """A parsed stored line without its time: (room, nick, action, text)."""
    room, _ts, nick, action, text = parsed
    return room, nick, action, text


async def written_at_least(srv, n):
    v = await hl.await_metric(srv, "history_written_total", lambda v: v >= n, timeout=15)
    return v is not None and v >= n


async def replay_on_join(t, srv, st):
    a = await cc.Chat.open(srv.port(), label="alice")
    pre = await a.sync()
    t.ok(not any(re.search(rb"message\(s\):|end of history", l) for l in pre),
         "empty history: no replay block on connect", "got %r" % pre)
    await a.set_nick("alice")
    t0 = time.time()
    said = ["line %d" % i for i in range(1, 8)]
    for x in said:
        await a.say(x)
    await a.say("/me waves")
    await a.say("café ünïcode ✓")
    await a.sync()  # the server has handled (broadcast and queued) them all
    t1 = time.time()
    st["lobby"] = [("#lobby", "alice", False, x) for x in said] + \
        [("#lobby", "alice", True, "waves"), ("#lobby", "alice", False, "café ünïcode ✓")]

    b = await cc.Chat.open(srv.port(), label="bob")
    await b.set_nick("bob")
    got = cc.texts(await b.sync())
    got = [l for l in got if not l.startswith("*** you are now known as")]
    want_head = "*** #lobby: last %d message(s):" % REPLAY
    t.is_(got[:1], [want_head], "joiner gets the replay header first")
    t.is_(got[-1:], ["*** #lobby: end of history"], "replay ends with 'end of history'")
    body = got[1:-1]
    parsed = [hl.parse_stored(l) for l in body]
    t.ok(all(parsed) and len(parsed) == REPLAY,
         "replay is %d stored lines '#room [YYYY-MM-DDTHH:MM:SSZ] <nick> text'" % REPLAY,
         "body %r" % body)
    if all(parsed):
        t.is_([plain(p) for p in parsed], st["lobby"][-REPLAY:],
              "replay = the last %d lines, oldest first, action as '* nick text', UTF-8 intact"
              % REPLAY)
        t.ok(all(int(t0) - 1 <= p[1] <= t1 + 1 for p in parsed),
             "replay times are UTC and when the lines were said",
             "times %r, said between %s and %s" % ([p[1] for p in parsed], t0, t1))
        t.is_(body[-2].split("] ", 1)[1:], ["* alice waves"], "action stored as '* alice waves'")
    st["a"], st["b"] = a, b
    st["t_old"] = time.monotonic()


async def history_cmds(t, srv, st):
    a, b = st["a"], st["b"]
    lobby = st["lobby"]
    t.ok(await written_at_least(srv, len(lobby)), "the lines are committed (metrics)")
    lines = await hl.history(b, "3")
    t.is_(lines[0], "*** #lobby: 3 message(s):", "/history 3 header")
    t.is_([plain(p) for p in hl.stored(lines)], lobby[-3:], "/history 3 = the last 3, oldest first")
    t.is_(len(lines), 5, "/history 3: header, 3 lines, end")
    lines = await hl.history(b)
    t.is_([plain(p) for p in hl.stored(lines)], lobby, "/history = all %d lines" % len(lobby))
    lines = await hl.history(b, "1000")
    t.is_(lines[:2], ["*** showing at most %d messages" % PAGE,
                      "*** #lobby: %d message(s):" % len(lobby)],
          "/history 1000: capped at page_limit, then the header")
    for bad in ("0", "-1", "abc", "3 4", "since", "since 10x", "since 1h extra", "5x"):
        lines, ok = await hl.query(b, "/history " + bad, r"end of history")
        t.ok(ok and len(lines) == 1 and lines[0].startswith("!!! usage: /history"),
             "/history %s: one usage error" % bad, "got %r" % lines)
    # A room with no history.
    c = await cc.Chat.open(srv.port(), label="carol")
    await c.set_nick("carol")
    await c.cmd("/join #secret", r"^\*\*\* you joined #secret")
    lines = await hl.history(c, "", room="#secret")
    t.is_(lines, ["*** #secret: 0 message(s):", "*** #secret: end of history"],
          "/history in an empty room: 0 messages")
    st["c"] = c


async def search_cmds(t, srv, st):
    a, b, c = st["a"], st["b"], st["c"]
    await a.say("apples and oranges")
    await a.say("oranges only")
    await c.say("the secret word is pineapple")
    await c.say("Pineapple again")
    await a.sync()
    await c.sync()
    st["lobby"] += [("#lobby", "alice", False, "apples and oranges"),
                    ("#lobby", "alice", False, "oranges only")]
    t.ok(await written_at_least(srv, len(st["lobby"]) + 2), "search lines committed")

    lines = await hl.search(b, "ORANGES")
    t.is_(lines[0], '*** search "ORANGES": 2 result(s), newest first', "/search header")
    t.is_([plain(p) for p in hl.stored(lines)],
          [("#lobby", "alice", False, "oranges only"),
           ("#lobby", "alice", False, "apples and oranges")],
          "/search ORANGES: case-insensitive, newest first, with room and time")
    t.is_(lines[-1], "*** end of search results", "/search end line")
    lines = await hl.search(b, "oranges apples")
    t.is_([p[4] for p in hl.stored(lines)], ["apples and oranges"], "/search: every word must match")
    lines = await hl.search(b, "cafe")
    t.is_([p[4] for p in hl.stored(lines)], ["café ünïcode ✓"], "/search cafe finds café (accents)")
    lines = await hl.search(b, "pineapple")
    t.is_(lines, ['*** search "pineapple": 0 result(s), newest first', "*** end of search results"],
          "/search covers only the client's rooms (#secret is not bob's)")
    lines = await hl.search(c, "pineapple")
    t.is_([plain(p) for p in hl.stored(lines)],
          [("#secret", "carol", False, "Pineapple again"),
           ("#secret", "carol", False, "the secret word is pineapple")],
          "/search in carol's rooms finds #secret lines")
    lines = await hl.search(b, "zzzunmatched")
    t.is_(lines, ['*** search "zzzunmatched": 0 result(s), newest first',
                  "*** end of search results"], "/search with no match: 0 results, end line")
    for fts in ('"oranges', "oranges OR apples", "or*nges", "NEAR(oranges apples)", "text:oranges",
                "-oranges", "^oranges"):
        lines, ok = await hl.query(b, "/search " + fts, r"^\*\*\* end of search results$")
        t.ok(ok and not any(l.startswith("!!!") for l in lines) and
             lines[0].startswith('*** search "%s": ' % fts),
             "/search %s: FTS syntax is inert (no error)" % fts, "got %r" % lines)
    lines, ok = await hl.query(b, "/search", r"end of search")
    t.is_(lines, ["!!! usage: /search WORDS"], "/search without words: usage error")
    lines, ok = await hl.query(b, "/search " + " ".join("w%d" % i for i in range(17)),
                               r"end of search")
    t.ok(ok and len(lines) == 1 and lines[0].startswith("!!! ") and "16" in lines[0],
         "/search with 17 words: one error naming the limit", "got %r" % lines)
    long_word = "é" * 300  # 600 bytes: the header must not cut it (mid-character)
    await b.sync()
    await b.send("/search " + long_word)
    m = await b.expect(rb"^\*\*\* search ", timeout=10)
    raw = m.string if m else b""
    try:
        hdr = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        hdr = "invalid UTF-8: %s" % e
    t.is_(hdr, '*** search "%s": 0 result(s), newest first' % long_word,
          "/search of a 600-byte word: the header repeats it whole, valid UTF-8")
    for words, what in (("a" + " " * 1021 + "é", "a 1023-byte header cut"),):
        await b.sync()
        await b.send("/search " + words)
        m = await b.expect(rb"^\*\*\* search ", timeout=10)
        raw = m.string if m else b"\xff"
        try:
            raw.decode("utf-8")
            bad = None
        except UnicodeDecodeError as e:
            bad = str(e)
        t.ok(bad is None, "/search header: %s never splits a character" % what,
             "%s; tail %r" % (bad, raw[-12:]))
    lines, ok = await hl.query(b, "/search " + "a" * 1200, r"end of search")
    t.ok(ok and len(lines) == 1 and lines[0].startswith("!!! ") and "too long" in lines[0],
         "/search with one 1200-byte word: one error saying it is too long (not 'words')",
         "got %r" % lines)
    # Chat still flows for the searcher afterwards, in order.
    await b.say("after the searches")
    m = await a.expect(r"^#lobby <bob> after the searches$")
    t.ok(m, "chat goes on after /search errors")
    st["lobby"].append(("#lobby", "bob", False, "after the searches"))


async def since_cmd(t, srv, st):
    a, b = st["a"], st["b"]
    # Everything so far was said at least 3 s ago.
    left = st["t_old"] + 3.2 - time.monotonic()
    if left > 0:
        await asyncio.sleep(left)
    t_new = time.monotonic()
    await a.say("fresh line")
    await a.sync()
    st["lobby"].append(("#lobby", "alice", False, "fresh line"))
    await written_at_least(srv, len(st["lobby"]) + 2)
    lines = await hl.history(b, "since 2s")
    took = time.monotonic() - t_new
    if took < 1.8:
        t.is_([plain(p) for p in hl.stored(lines)], [("#lobby", "alice", False, "fresh line")],
              "/history since 2s: only the line said after the others were 3 s old")
    else:
        t.skip("/history since 2s: only the fresh line", "machine too slow (%.1fs)" % took)
    lines = await hl.history(b, "since 1h")
    t.is_([plain(p) for p in hl.stored(lines)], st["lobby"][-PAGE:], "/history since 1h: all of them")
    lines = await hl.history(b, "since 1500ms")
    t.ok(lines[0].startswith("*** #lobby: ") and lines[-1] == "*** #lobby: end of history",
         "/history since 1500ms is accepted", "got %r" % lines)


async def before_restart(t, srv, st):
    b = st["b"]
    lines = await hl.history(b)
    st["before"] = [l for l in lines if hl.parse_stored(l)]
    t.is_([plain(hl.parse_stored(l)) for l in st["before"]], st["lobby"][-PAGE:],
          "before the restart /history shows every lobby line")
    for c in (st["a"], st["b"], st["c"]):
        await c.close()


async def after_restart(t, srv, st):
    d = await cc.Chat.open(srv.port(), label="dave")
    # (The harness's readiness probe may show up as a guest who quits.)
    got = [l for l in cc.texts(await d.sync())
           if not re.match(r"^\*\*\* (#\S+: )?\S+ has (quit|joined)", l)]
    want = ["*** #lobby: last %d message(s):" % REPLAY] + st["before"][-REPLAY:] + \
        ["*** #lobby: end of history"]
    t.is_(got, want, "after a clean restart the join replay is the same lines, same times")
    lines = await hl.history(d)
    t.is_([l for l in lines if hl.parse_stored(l)], st["before"],
          "after the restart /history is byte-identical")
    await d.set_nick("dave")
    await d.say("after restart")
    await d.sync()
    t.ok(await written_at_least(srv, 1), "the new line is committed")
    lines = await hl.history(d, "2")
    t.is_([plain(p) for p in hl.stored(lines)],
          [st["lobby"][-1], ("#lobby", "dave", False, "after restart")],
          "a line said after the restart follows the old ones")
    c = await cc.Chat.open(srv.port(), label="carol2")
    await c.cmd("/join #secret", r"^\*\*\* you joined #secret")
    m = await c.expect(r"^#secret \[[^]]+\] <carol> Pineapple again$")
    t.ok(m, "#secret history survived too (replay on /join)")
    await c.close()
    await d.close()


async def seam(t, srv, st):
    """Talkers chat in #seam; joiners /join during the traffic."""
    K = REPLAY
    witness = await cc.Chat.open(srv.port(), label="witness")
    await witness.cmd("/join #seam", r"^\*\*\* you joined #seam")
    talkers = await cc.open_many(srv.port(), 4)
    for i, tk in enumerate(talkers):
        await tk.set_nick("t%d" % i)
        await tk.cmd("/join #seam", r"^\*\*\* you joined #seam")
    joiners = await cc.open_many(srv.port(), 8)
    for i, j in enumerate(joiners):
        await j.set_nick("j%d" % i)
        await j.sync()
    await witness.sync()
    NLINES = 200

    async def talk(i, tk):
        for k in range(NLINES):
            await tk.say("seq %d" % k)
            await asyncio.sleep(0.008)
        await tk.sync()

    async def join(j, delay):
        await asyncio.sleep(delay)
        await j.send("/join #seam")

    rnd = random.Random(4)
    delays = sorted(rnd.uniform(0.2, 1.4) for _ in joiners)
    await asyncio.gather(*[talk(i, tk) for i, tk in enumerate(talkers)],
                         *[join(j, d) for j, d in zip(joiners, delays)])
    wl = cc.texts(await witness.sync(timeout=20))
    pat = re.compile(r"^#seam <(t\d)> (seq \d+)$")
    W = [m.groups() for m in map(pat.match, wl) if m]
    t.is_(len(W), 4 * NLINES, "the witness saw all %d lines" % (4 * NLINES))
    mid = 0
    for jn in joiners:
        lines = cc.texts(await jn.sync(timeout=20))
        try:
            k = next(i for i, l in enumerate(lines) if l.startswith("*** you joined #seam"))
        except StopIteration:
            t.ok(False, "%s joined #seam" % jn.nick, "lines %r" % lines[:10])
            continue
        after = lines[k + 1:]
        R, L, bad = [], [], []
        in_replay = False
        seen_end = False
        for l in after:
            if l.startswith("*** #seam: last "):
                in_replay = True
                if L:
                    bad.append("replay header after live lines")
                continue
            if l == "*** #seam: end of history":
                in_replay = False
                seen_end = True
                continue
            p = hl.parse_stored(l)
            if p:
                if not in_replay:
                    bad.append("stored line outside the replay block: %r" % l)
                if p[0] == "#seam":
                    R.append((p[2], p[4]))
                continue
            m = pat.match(l)
            if m:
                if in_replay:
                    bad.append("live line inside the replay block: %r" % l)
                L.append(m.groups())
        J = R + L
        i = len(W) - len(J)
        seam_at = i + len(R)
        ok = not bad and i >= 0 and W[i:] == J and len(R) == min(K, seam_at) and \
            (seen_end or not R)
        if 0 < seam_at < len(W):
            mid += 1
        t.ok(ok, "%s: replay (%d) + live (%d) = the witness's last %d lines, once each, in order"
             % (jn.nick, len(R), len(L), len(J)),
             "problems %r; seam at %d of %d; J[:8]=%r W[i:i+8]=%r"
             % (bad, seam_at, len(W), J[:8], W[max(i, 0):max(i, 0) + 8]))
    t.ok(mid >= 1, "at least one joiner joined in mid-traffic (%d of %d)" % (mid, len(joiners)))
    await cc.close_all(talkers + joiners + [witness])


def history_off(t):
    with hl.hist_server(history={"enabled": "no"}, chat=CHAT, metrics=False) as srv:
        async def go():
            a = await cc.Chat.open(srv.port())
            b = await cc.Chat.open(srv.port())
            await a.say("hello without history")
            m = await b.expect(r"^#lobby <%s> hello without history$" % re.escape(a.nick))
            t.ok(m, "history off: chat works")
            c = await cc.Chat.open(srv.port())
            got = cc.texts(await c.sync())
            t.ok(not any("message(s):" in l or hl.parse_stored(l) for l in got),
                 "history off: no replay on join", "got %r" % got)
            for cmd in ("/history", "/history 5", "/search hello"):
                lines, ok = await hl.query(c, cmd, r"end of")
                t.is_(lines, ["!!! history is not available on this server"],
                      "history off: %s says history is not available" % cmd)
            await cc.close_all([a, b, c])
        pt.run(go(), timeout=20)
        t.ok(not os.path.exists(hl.db_path(srv)), "history off: no history.db is created")


def retention(t):
    """max_messages_per_room and max_age prune at start-up (the FTS index
    with them); ids are never reused after the newest rows are gone."""
    hist = {"replay": "3", "max_messages_per_room": "10", "batch_interval": "20ms"}
    with hl.hist_server(history=hist, chat=CHAT) as srv:
        async def say():
            a = await cc.Chat.open(srv.port())
            await a.set_nick("keeper")
            for i in range(30):
                await a.say("keep %d" % i)
            await a.cmd("/join #two", r"^\*\*\* you joined #two")
            for i in range(5):
                await a.say("two %d" % i)
            await a.sync()
            await written_at_least(srv, 35)
            await a.close()
        pt.run(say(), timeout=20)
        t0 = time.monotonic()
        srv.stop()
        srv.start()
        m = cc.wait_log(srv, r"history: retention removed (\d+) line\(s\)", 10)
        t.is_(m and m.group(1), "20", "max_messages_per_room = 10: 20 lines pruned at start-up")

        async def check():
            c = await cc.Chat.open(srv.port())
            lines = await hl.history(c, "50")
            t.is_([p[4] for p in hl.stored(lines)], ["keep %d" % i for i in range(20, 30)],
                  "the newest 10 of the room are kept")
            lines = await hl.search(c, "keep 3")
            t.is_(hl.stored(lines), [], "a pruned line is gone from /search too")
            lines = await hl.search(c, "keep 23")
            t.is_([p[4] for p in hl.stored(lines)], ["keep 23"], "a kept line is found")
            await c.cmd("/join #two", r"^\*\*\* you joined #two")
            lines = await hl.history(c, "50", room="#two")
            t.is_([p[4] for p in hl.stored(lines)], ["two %d" % i for i in range(5)],
                  "a room within its limit is untouched")
            await c.close()
        pt.run(check(), timeout=20)
        srv.stop()
        last = hl.db_rows(hl.db_path(srv))[-1][0]
        # max_age: everything is older than 1 s by now (or soon).
        left = t0 + 1.5 - time.monotonic()
        if left > 0:
            time.sleep(left)
        srv.extra = hl.section("chat", CHAT) + hl.section("history", dict(hist, max_age="1s"))
        srv.start()
        m = cc.wait_log(srv, r"history: retention removed 15 line\(s\)", 10)
        t.ok(m, "max_age = 1s: the 15 old lines pruned at start-up", srv.log_tail(5))

        async def after():
            c = await cc.Chat.open(srv.port())
            lines = await hl.history(c, "50")
            t.is_(hl.stored(lines), [], "nothing older than max_age is shown")
            await c.set_nick("newer")
            await c.say("a new line")
            await c.sync()
            await written_at_least(srv, 1)
            await c.close()
        pt.run(after(), timeout=20)
        srv.stop()
        rows = hl.db_rows(hl.db_path(srv))
        t.ok(len(rows) == 1 and rows[0][0] > last,
             "an emptied database does not reuse ids (%r > %d)"
             % (rows[0][0] if rows else None, last))


def main(t):
    st = {}
    with hl.hist_server(history=HIST, chat=CHAT) as srv:
        async def part1():
            await replay_on_join(t, srv, st)
            await history_cmds(t, srv, st)
            await search_cmds(t, srv, st)
            await since_cmd(t, srv, st)
            await before_restart(t, srv, st)
        pt.run(part1(), timeout=30)
        rc = srv.stop()
        t.is_((rc, srv.killed), (0, False), "SIGTERM: clean exit")
        n = len(hl.db_rows(hl.db_path(srv)))
        srv.start()
        t.ok(cc.wait_log(srv, r"history: \S+ open, last id %d$" % n, 5),
             "restart reopens the same database (last id %d)" % n)
        pt.run(after_restart(t, srv, st), timeout=20)
        pt.run(seam(t, srv, st), timeout=40)
        rc = srv.stop()
        t.is_((rc, srv.killed), (0, False), "SIGTERM: clean exit after the seam test")
        ids = [r[0] for r in hl.db_rows(hl.db_path(srv))]
        t.ok(ids == sorted(set(ids)) and ids[n] > ids[n - 1],
             "ids keep rising across the restart")
        t.is_(hl.integrity(hl.db_path(srv)), "ok", "integrity_check ok")
    history_off(t)
    retention(t)


pt.main(main)
