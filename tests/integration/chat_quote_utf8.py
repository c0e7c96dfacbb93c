#!/usr/bin/env python3
"""Text a client typed and the server quotes back in a bounded buffer is cut
at a character boundary: an over-long invalid nick and over-long /search
words come back as well-formed UTF-8.  (Both were once cut mid-character;
fuzz_command found the nick case.)"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402
import chatclient as cc  # noqa: E402


def well_formed(line):
    try:
        line.decode("utf-8", "strict")
        return True
    except UnicodeDecodeError:
        return False


async def scenario(t, srv):
    c = await cc.Chat.open(srv.port(), label="quoter")
    await c.sync()
    for width, ch in ((2, "é"), (3, "世"), (4, "😀")):
        nick = ch * 100
        await c.send("/nick " + nick)
        m = await c.expect(rb"^!!! invalid nick ")
        t.ok(m and well_formed(m.string),
             "invalid nick of %d-byte characters quoted as well-formed UTF-8" % width,
             repr(m and m.string[-40:]))
        t.ok(m and b"..." in m.string, "a long invalid nick is quoted in part", repr(m and m.string[:80]))

        await c.send("/search " + ch * 240)
        m = await c.expect(rb'^\*\*\* search "|^!!! ', timeout=10)
        t.ok(m and m.string.startswith(b'*** search "'), "/search of %d-byte characters answered" % width,
             repr(m and m.string[:80]))
        t.ok(m and well_formed(m.string),
             "/search words of %d-byte characters quoted as well-formed UTF-8" % width,
             repr(m and m.string[:60]))
        await c.expect(r"^\*\*\* end of search results", timeout=10)
    await c.close()


def main(t):
    with cc.chat_server(chat={"flood_rate": "1000", "flood_burst": "1000"}) as srv:
        try:
            pt.run(scenario(t, srv), timeout=40)
        except (cc.ChatError, asyncio.TimeoutError) as e:
            t.ok(False, "session ran to the end", "%r\nlog:\n%s" % (e, srv.log_tail()))
        t.ok(srv.alive(), "daemon still running")


pt.main(main)
