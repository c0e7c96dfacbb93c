#!/usr/bin/env python3
"""Text hygiene on the wire: UTF-8 passes byte for byte, invalid UTF-8
becomes U+FFFD, controls are made visible (caret notation, \\u0080 style for
C1), one input line is one output line with the real sender's prefix, and no
raw control byte ever reaches another client."""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402
import chatclient as cc  # noqa: E402

R = "\ufffd".encode()

CASES = [
    # (description, bytes sent (without the LF), bytes expected after the prefix)
    ("UTF-8 Latin and CJK byte-exact", "héllo 世界".encode(), "héllo 世界".encode()),
    ("emoji incl. skin tone and ZWJ sequence byte-exact",
     "😀 👍🏽 👨\u200d👩\u200d👧 ok".encode(), "😀 👍🏽 👨\u200d👩\u200d👧 ok".encode()),
    ("4-byte and combining characters byte-exact", "𝄞 e\u0301 ﬁ".encode(), "𝄞 e\u0301 ﬁ".encode()),
    # (0xFF is the telnet IAC byte: chat_telnet.py covers it.)
    ("invalid bytes 0xFE 0xFD 0xF8 -> U+FFFD each", b"bad \xfe\xfd\xf8 ok", b"bad " + R * 3 + b" ok"),
    ("truncated sequence before ASCII -> one U+FFFD", b"x\xc3(y", b"x" + R + b"(y"),
    ("surrogate ED A0 80 -> three U+FFFD", b"s\xed\xa0\x80s", b"s" + R * 3 + b"s"),
    ("overlong C0 AF -> two U+FFFD", b"o\xc0\xafo", b"o" + R * 2 + b"o"),
    ("above U+10FFFF -> four U+FFFD", b"h\xf4\x90\x80\x80h", b"h" + R * 4 + b"h"),
    ("truncated sequence at end of line -> one U+FFFD", b"end\xe4\xb8", b"end" + R),
    ("bare CR spoofing a second line arrives as one line with ^M",
     b"hi\r#lobby <bob> fake", b"hi^M#lobby <bob> fake"),
    ("ESC sequences become ^[", b"\x1b[2J\x1b]0;owned\x07clear", b"^[[2J^[]0;owned^Gclear"),
    ("NUL becomes ^@", b"a\x00b", b"a^@b"),
    ("BEL becomes ^G", b"ding\x07dong", b"ding^Gdong"),
    ("DEL becomes ^?", b"x\x7fy", b"x^?y"),
    ("C1 CSI C2 9B becomes \\u009B", b"c1 \xc2\x9b31m \xc2\x85 \xc2\x80", b"c1 \\u009B31m \\u0085 \\u0080"),
    ("TAB passes", b"col1\tcol2", b"col1\tcol2"),
    ("every C0 control and DEL made visible",
     b"<" + bytes(b for b in range(1, 32) if b != 10) + b"\x7f>",
     b"<" + b"".join(b"\t" if b == 9 else b"^" + bytes([b ^ 0x40])
                     for b in range(1, 32) if b != 10) + b"^?>"),
    ("two CRs before LF: one is the line end, one is shown", b"two crs\r\r", b"two crs^M"),
]


async def scenario(t, srv):
    a = await cc.Chat.open(srv.port(), label="alice")
    b = await cc.Chat.open(srv.port(), label="bob")
    await a.set_nick("alice")
    await b.set_nick("bob")
    await a.sync()
    await b.sync()
    prefix = b"#lobby <alice> "

    async def next_from_alice():
        m = await b.expect(rb"^#lobby <alice> |^#lobby \* alice |^\*alice\* |^\*\*\* #lobby: alice set")
        return m.string if m else None

    for desc, sent, want in CASES:
        await a.send_raw(sent + b"\n")
        got = await next_from_alice()
        t.same_bytes(got, prefix + want, desc)
    lb = await b.sync()
    t.ok(not any(l.startswith(b"#lobby <bob>") for l in lb), "no spoofed <bob> line arrived", repr(lb))
    t.ok(not lb, "no extra lines came from the sanitized input", repr(lb))

    # line framing
    await a.send_raw(b"line one\nline two\n")
    got = [await next_from_alice(), await next_from_alice()]
    t.is_(got, [prefix + b"line one", prefix + b"line two"],
          "embedded LF: two lines, each with the real sender's prefix")
    await a.send_raw(b"with crlf\r\n")
    t.same_bytes(await next_from_alice(), prefix + b"with crlf", "CRLF accepted, CR not shown")
    await a.send_raw(b"with lf\n")
    t.same_bytes(await next_from_alice(), prefix + b"with lf", "bare LF accepted")
    await a.send_raw(b"split \xe4")
    await asyncio.sleep(0.2)
    await a.send_raw(b"\xb8\x96 across writes\r")
    await asyncio.sleep(0.2)
    await a.send_raw(b"\n")
    t.same_bytes(await next_from_alice(), prefix + "split 世 across writes".encode(),
                 "a character and a CRLF split across writes are reassembled")

    # other paths: private message, action, topic
    await a.send_raw(b"/msg bob \x1b[31mred\x1b[0m \xc2\x9b \xfe\n")
    t.same_bytes(await next_from_alice(), b"*alice* ^[[31mred^[[0m \\u009B " + R,
                 "/msg text is sanitized")
    m = await a.expect(rb"^-> \*bob\* ")
    t.same_bytes(m and m.string, b"-> *bob* ^[[31mred^[[0m \\u009B " + R,
                 "sender's /msg echo is sanitized too")
    await a.send_raw(b"/me \x07beeps \xe2\x80\xae\n")
    t.same_bytes(await next_from_alice(), "#lobby * alice ^Gbeeps \u202e".encode(),
                 "/me text is sanitized (valid UTF-8 kept)")
    await a.send_raw(b"/topic \x1b[5mblink\x00\n")
    t.same_bytes(await next_from_alice(), b"*** #lobby: alice set the topic: ^[[5mblink^@",
                 "/topic text is sanitized")
    await a.sync()
    lb = await b.sync()

    # whole-session byte hygiene at both clients
    for c in (a, b):
        raw = bytes(c.raw)
        bad = []
        for i, ch in enumerate(raw):
            if ch == 0x09:
                continue
            if ch == 0x0D and raw[i + 1:i + 2] == b"\n":
                continue
            if ch == 0x0A and i > 0 and raw[i - 1] == 0x0D:
                continue
            if ch < 0x20 or ch == 0x7F:
                bad.append((i, ch))
        t.ok(not bad, "%s received no raw control byte (only TAB and CRLF) in %d bytes"
             % (c.label, len(raw)), "first bad: %r context %r" % (
                 bad[:5], raw[max(0, bad[0][0] - 20):bad[0][0] + 20] if bad else b""))
        try:
            txt = raw.decode("utf-8")
            ok = True
        except UnicodeDecodeError as e:
            txt, ok = "", False
            t.diag(repr(e))
        t.ok(ok, "%s received only well-formed UTF-8" % c.label)
        t.ok(not any(0x80 <= ord(ch) <= 0x9F for ch in txt), "%s received no C1 control" % c.label)
        t.ok(0xFF not in raw, "%s received no 0xFF byte" % c.label)
    await a.close()
    await b.close()


def main(t):
    with cc.chat_server(chat={"flood_rate": "1000", "flood_burst": "1000"}) as srv:
        try:
            pt.run(scenario(t, srv), timeout=40)
        except (cc.ChatError, asyncio.TimeoutError) as e:
            t.ok(False, "text session ran to the end", "%r\nlog:\n%s" % (e, srv.log_tail()))
        t.ok(srv.alive(), "daemon still running")


pt.main(main)
