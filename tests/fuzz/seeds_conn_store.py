#!/usr/bin/env python3
"""Write the seed inputs of fuzz_conn_store (see its header for the format)
into tests/fuzz/corpus/conn_store/.  Crashes found by the fuzzer are kept
there too; this script only (re)writes the seeds it names.

    python3 tests/fuzz/seeds_conn_store.py
"""
import os

FP = "0123456789abcdef" * 4
KNOB_TIGHT, KNOB_SMALL, KNOB_PBKDF2, KNOB_FAILS, KNOB_NORESUME = 1, 2, 4, 8, 16
KNOB_VAULT = 128


def clients(n):
    return (n - 1) << 5


class Seed:
    def __init__(self, knobs):
        self.b = bytearray([knobs])

    def send(self, c, text):
        data = text.encode() if isinstance(text, str) else text
        for i in range(0, len(data), 255):
            chunk = data[i:i + 255]
            self.b += bytes([c << 4 | 0, len(chunk)]) + chunk
        return self

    def resume(self, c, whose):
        self.b += bytes([c << 4 | 7, whose])
        return self

    def op(self, c, action):
        self.b += bytes([c << 4 | action])
        return self

    def prune(self):
        return self.op(0, 8)

    def slow(self, c):
        return self.op(c, 9)

    def finish(self, c):
        return self.op(c, 10)

    def connect(self):
        return self.op(0, 11)

    def drop(self, c):
        return self.op(c, 12)

    def commit(self):
        return self.op(0, 13)

    def hurry(self):
        """On or off: in a hurry, operations do not wait for the workers."""
        return self.op(0, 14)

    def restart(self):
        return self.op(0, 15)


SEEDS = {}

SEEDS["register-identify"] = (
    Seed(clients(2))
    .send(0, "/nick dave\n/register short\n/register secret99\n")
    .send(0, "/register secret99\n/identify secret99\n")
    .send(1, "/nick dave\n/identify dave wrongpass\n")
    .send(1, "/identify dave secret99\n")
    .send(0, "/nick dave\n/password secret99 secret100\n")
    .send(1, "/password secret99 secret100\n/unregister secret99\n")
    .send(1, "/unregister secret100\n/identify dave secret100\n"))

SEEDS["alice-oper-restart"] = (
    Seed(clients(2))
    .send(0, "/identify alice alicepass1\n/kline\n")
    .send(0, "/kline 127.0.0.2 1h spam\n/kline 10.* 0\n/wall hello\n")
    .send(0, "/join #vault opensesame\n/mode +k k2\n/mode +i\n")
    .send(0, "/ban bob*\n/invite bob\n/mode +o guest2\n/topic plans\n")
    .connect()
    .send(2, "/nick bob\n/join #vault k2\n")
    .restart()
    .send(0, "/kline\n/join #vault k2\n/identify alice alicepass1\n")
    .send(0, "/kline\n/unkline 10.*\n/join #vault k2\n/history 5\n")
    .send(1, "/join #vault\n/kline\n"))

SEEDS["join-replay-history"] = (
    Seed(KNOB_SMALL | clients(3))
    .send(0, "/join #vault opensesame\none\ntwo\nthree\n")
    .send(1, "/join #vault\n/join #vault opensesame\n")
    .send(1, "/part\n/join #lobby\n/history 5\n")
    .send(2, "/history since 1m\n/history since 0s\n/history since 1d\n")
    .send(2, "/history -1\n/history 0\n/history\n/history 1000\n")
    .send(2, "/history since soon\n/history 2 3\n/part #lobby\n/history\n"))

SEEDS["search-fts"] = (
    Seed(clients(1))
    .send(0, "/search hello\n/search hello OR world\n/search \"hello\n")
    .send(0, "/search NEAR(hello world)\n/search hel*\n/search -hello\n")
    .send(0, "/search text:hello\n/search ^hello\n/search ( ) AND NOT\n")
    .send(0, "/search a b c d e f g h i j k l m n o p q\n")
    .send(0, "/search h\u00e9llo w\u00f6rld\n/search \"\" '' ** :\n")
    .send(0, "/search " + "x" * 300 + "\n")
    .send(0, "/search " + "\u00e9" * 200 + " y\n")
    .send(0, "needle in a haystack\n/search needle\n")
    .commit()
    .send(0, "/search needle haystack\n/part\n/search needle\n"))

SEEDS["resume-good-bad"] = (
    Seed(clients(2))
    .send(0, "/nick dave\n/join #new\nhi from dave\n")
    .drop(0)
    .send(1, "said while dave was away\n/join #new\nand in #new\n")
    .send(1, "/resume 0123456789abcdef0123456789abcdef\n/resume x\n")
    .resume(1, 0)
    .send(1, "/history 3\n/who\n")
    .connect()
    .resume(2, 1)
    .send(2, "/rooms\n")
    .resume(2, 0)
    .send(1, "still here?\n"))

SEEDS["quit-mid-replay"] = (
    Seed(clients(2))
    .hurry()
    .send(0, "/part\n/join #lobby\n/quit\n")
    .drop(0)
    .send(1, "/join #vault opensesame\n/quit bye\n")
    .finish(1)
    .connect()
    .drop(2)
    .hurry()
    .connect()
    .hurry()
    .send(3, "/history 5\n")
    .drop(3))

SEEDS["password-delays"] = (
    Seed(KNOB_FAILS | clients(4))
    .send(0, "/identify alice bad1\n/identify alice bad2\n")
    .send(0, "/identify alice bad3\n/identify alice alicepass1\n")
    .send(1, "/identify alice alicepass1\n/identify nobody x\n")
    .send(2, "/identify alice wrong\n/identify alice wrong\n")
    .send(3, "/identify alice wrong\n/identify alice alicepass1\n")
    .hurry()
    .send(1, "/identify alice bad\n")
    .drop(1)
    .hurry()
    .send(2, "/nick erin\n/register secret99\n/nick fred\n")
    .send(2, "/register secret99\n"))

SEEDS["certs"] = (
    Seed(clients(2))
    .send(0, "/certadd\n/identify alice alicepass1\n/certadd " + FP + "\n")
    .send(0, "/certadd " + FP + "\n/certdel " + FP + "\n/certdel " + FP +
          "\n/certadd xyz\n/certadd\n/certadd " + ":".join(FP[i:i + 2]
                                                            for i in range(0, 64, 2)) + "\n")
    .send(1, "/nick bob\n/register bobpass99\n/certadd " + FP + "\n")
    .send(1, "/certdel " + FP + "\n/unregister bobpass99\n"))

SEEDS["unregister-forget"] = (
    Seed(clients(3))
    .send(0, "/nick gina\n/register secret99\n/join #g\n/mode +k kk\n")
    .send(0, "/ban mallory*\n")
    .drop(0)
    .send(1, "/identify gina secret99\n/join #g kk\n/unregister secret99\n")
    .resume(2, 0)
    .send(2, "/who #g\n/mode -k\n")
    .restart()
    .send(0, "/join #g\n/identify gina secret99\n"))

SEEDS["retention"] = (
    Seed(clients(2))
    .send(0, "".join("line %d\n" % i for i in range(12)))
    .prune()
    .send(1, "/part\n/join #lobby\n/history 20\n")
    .commit()
    .prune()
    .send(1, "/search line\n/history since 1m\n"))

SEEDS["pbkdf2"] = (
    Seed(KNOB_PBKDF2 | clients(2))
    .send(0, "/nick hank\n/register secret99\n/password secret99 secret98\n")
    .send(1, "/identify hank secret98\n/identify alice alicepass1\n"))

SEEDS["default-vault"] = (
    Seed(KNOB_VAULT | clients(2))
    .send(0, "/history\n/identify alice alicepass1\n/join #vault\n/history\n")
    .send(1, "/join #vault opensesame\n/part\n/search secret\n"))

SEEDS["no-resume"] = (
    Seed(KNOB_NORESUME | clients(1))
    .send(0, "/resume 0123456789abcdef0123456789abcdef\n")
    .drop(0)
    .connect()
    .resume(1, 0))

SEEDS["slow-replay"] = (
    Seed(KNOB_TIGHT | clients(2))
    .slow(1)
    .send(0, "".join("a fairly long line of chat number %d\n" % i
                     for i in range(40)))
    .hurry()
    .send(1, "/part\n/join #lobby\n")
    .send(0, "/history 1000\n")
    .hurry()
    .slow(1))

SEEDS["register-tight"] = (
    Seed(KNOB_TIGHT | KNOB_FAILS | clients(2))
    .send(0, "/nick eve\n/register secret99\n/nick frank\n")
    .send(0, "/register secret99\n/join #a\n/join #b\n/join #c\n")
    .send(1, "/identify eve x\n/identify eve y\n/identify eve secret99\n"))

SEEDS["resume-takeover-identified"] = (
    Seed(clients(2))
    .send(0, "/identify alice alicepass1\n/join #vault\n/join #x\n")
    .resume(1, 0)
    .send(1, "/who\n/mode +k key\n/kline\n")
    .send(0, "anyone?\n")
    .hurry()
    .resume(0, 1)
    .send(0, "/who\n"))

SEEDS["search-long"] = (
    Seed(clients(1))
    .send(0, "/search " + "\u00e9" * 530 + "\n")
    .send(0, "/search " + " ".join(["w\u00f6rd"] * 150) + "\n")
    .send(0, "/search \t\n/search \"\n/search *\n"))

SEEDS["resume-missed-many"] = (
    Seed(KNOB_SMALL | clients(2))
    .send(0, "/join #r\n")
    .drop(0)
    .send(1, "/join #r\none\ntwo\nthree\n/part #r\nfour\nfive\n")
    .resume(1, 0))

SEEDS["oper-kill-kline"] = (
    Seed(clients(3))
    .send(1, "/nick bob\n")
    .send(0, "/identify alice alicepass1\n/kill nobody\n/kill bob bye\n")
    .send(0, "/kline 127.0.0.1 1h\n/kline 127.* 1h\n/kline 2001:db8::* 0 v6\n")
    .send(0, "/kline 1.2.3.4 soon\n/kline\n/unkline 2001:db8::*\n/kline\n"))

SEEDS["resume-expired"] = (
    Seed(KNOB_TIGHT | KNOB_NORESUME | clients(2))
    .drop(0)
    .connect()
    .drop(1)
    .resume(2, 0)
    .resume(2, 1))

# Regression: the settings of a room whose only owner unregistered were kept
# (key, bans) while no room was live, so the next joiner needed the old key.
SEEDS["unregister-owner-of-empty-room"] = (
    Seed(clients(1))
    .send(0, "/identify alice alicepass1\n/unregister alicepass1\n"))


def main():
    top = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(top, "corpus", "conn_store")
    os.makedirs(out, exist_ok=True)
    for name, seed in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes(seed.b))


if __name__ == "__main__":
    main()
