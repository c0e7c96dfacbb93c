#!/usr/bin/env python3
"""parleyd -t (config check), -V, -h: valid configs pass, each kind of error is
reported as FILE:LINE: message with the right line."""

import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402


def run_daemon(args, timeout=10):
    try:
        r = subprocess.run(pt.daemon_argv(*args), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout * pt.SLOW)
        return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        return "timeout", (e.stdout or b"").decode(errors="replace"), \
            (e.stderr or b"").decode(errors="replace")


def base_lines(d, cert, key):
    return [
        "; parley test configuration",                  # 1
        "[server]",                                     # 2
        "state_directory = %s" % os.path.join(d, "state"),
        "max_connections = 100",
        "handshake_timeout = 500ms",
        "idle_timeout = 0",
        "shutdown_timeout = 5m",
        "log_level = notice",
        "",
        "[tls]",
        "certificate = %s" % cert,
        "private_key = %s" % key,
        "",
        "[echo]",
        "buffer_limit = 1M",
        "",
        "[listen plain echo]",
        "address = 127.0.0.1",
        "port = %d" % pt.free_port(),
        "service = echo",
        "tls = no",
        "",
        "[listen secure chat]",
        "address = 127.0.0.1",
        "port = %d" % pt.free_port(),
        "service = chat",
        "tls = yes",
    ]


def index_of(lines, prefix, after=None):
    start = 0 if after is None else index_of(lines, after) + 1
    for i in range(start, len(lines)):
        if lines[i].startswith(prefix):
            return i
    raise KeyError(prefix)


def replace(prefix, new, after=None):
    """Mutation: replace the line starting with prefix; the error is expected there."""
    def mut(lines):
        i = index_of(lines, prefix, after)
        lines[i] = new
        return [i + 1]
    return mut


def insert_after(prefix, new_lines, expect_offsets=(0,)):
    """Mutation: insert lines after the one starting with prefix. The error may be
    reported on any of expect_offsets (0 = first inserted line)."""
    def mut(lines):
        i = index_of(lines, prefix) + 1
        lines[i:i] = new_lines
        return [i + 1 + o for o in expect_offsets]
    return mut


def tls_listener_lines(lines):
    return [index_of(lines, "[listen secure") + 1,
            index_of(lines, "tls = yes", after="[listen secure") + 1]


def also(mut, extra):
    """Mutation whose error may also be reported on the lines extra(lines) names."""
    def wrapped(lines):
        expect = mut(lines)
        return expect + extra(lines)
    return wrapped


def write(d, name, lines):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def main(t):
    d = tempfile.mkdtemp(prefix="parleytest-config-")
    try:
        os.mkdir(os.path.join(d, "state"))
        cert, key = pt.make_cert(d)

        lines = base_lines(d, cert, key)
        path = write(d, "valid.conf", lines)
        rc, out, err = run_daemon(["-t", "-c", path])
        t.ok(rc == 0, "-t accepts a valid config (ms/m/0 durations, M size, chat + tls)",
             "exit %s, stderr:\n%s" % (rc, err))

        alt = list(lines)
        alt[index_of(alt, "handshake_timeout")] = "handshake_timeout = 10s"
        alt[index_of(alt, "idle_timeout")] = "idle_timeout = 300"
        alt[index_of(alt, "log_level")] = "log_level = debug"
        alt[index_of(alt, "buffer_limit")] = "buffer_limit = 65536"
        path = write(d, "valid2.conf", alt)
        rc, out, err = run_daemon(["-t", "-c", path])
        t.ok(rc == 0, "-t accepts bare-second durations and a plain byte size",
             "exit %s, stderr:\n%s" % (rc, err))

        missing = os.path.join(d, "no-such-cert.pem")
        cases = [
            ("unknown key", insert_after("log_level", ["frobnicate = 1"])),
            ("unknown section", insert_after("buffer_limit", ["", "[bogus]", "colour = blue"],
                                             expect_offsets=(1, 2))),
            ("key outside any section", lambda ls: (ls.insert(0, "stray = 1"), [1])[1]),
            ("bad port (70000)", replace("port", "port = 70000", after="[listen plain")),
            ("bad service", replace("service", "service = gopher", after="[listen plain")),
            ("bad tls value", replace("tls =", "tls = maybe", after="[listen plain")),
            # Best is the line naming the file; the tls listener's header or its
            # "tls = yes" line is accepted too (both lead the reader to the problem).
            ("missing certificate file for a tls listener",
             also(replace("certificate", "certificate = %s" % missing), tls_listener_lines)),
            ("missing private key file for a tls listener",
             also(replace("private_key", "private_key = %s" % os.path.join(d, "no-such-key.pem")),
                  tls_listener_lines)),
            ("bad duration", replace("handshake_timeout", "handshake_timeout = 10 parsecs")),
            ("bad duration unit", replace("idle_timeout", "idle_timeout = 5q")),
            ("bad size", replace("buffer_limit", "buffer_limit = 12Q")),
            ("bad log_level", replace("log_level", "log_level = loud")),
            ("bad max_connections", replace("max_connections", "max_connections = lots")),
        ]
        for n, (what, mutate) in enumerate(cases):
            ls = list(lines)
            expect = mutate(ls)
            path = write(d, "bad%02d.conf" % n, ls)
            rc, out, err = run_daemon(["-t", "-c", path])
            pat = r"^%s:(%s): " % (re.escape(path), "|".join(map(str, expect)))
            m = re.search(pat, err, re.M)
            if m and len(expect) > 1 and m.group(1) != str(expect[0]):
                t.diag("%s reported on line %s, not on line %d" % (what, m.group(1), expect[0]))
            t.ok(rc not in (0, "timeout") and m,
                 "-t rejects %s with %s:%s: message" % (what, os.path.basename(path),
                                                        "/".join(map(str, expect))),
                 "exit %s, expected a stderr line matching %s\nstderr:\n%s" % (
                     rc, pat, err.strip() or "(empty)"))

        # The daemon itself (no -t) must refuse a bad config, not start.
        ls = list(lines)
        expect = replace("service", "service = gopher", after="[listen plain")(ls)
        path = write(d, "bad-start.conf", ls)
        rc, out, err = run_daemon(["-c", path], timeout=5)
        t.ok(rc not in (0, "timeout") and re.search(r"^%s:%d: " % (re.escape(path), expect[0]),
                                                    err, re.M),
             "starting with a bad config exits non-zero with FILE:LINE",
             "exit %s, stderr:\n%s" % (rc, err))

        rc, out, err = run_daemon(["-t", "-c", os.path.join(d, "absent.conf")])
        t.ok(rc not in (0, "timeout") and err.strip(), "-t on a missing config file fails with a message",
             "exit %s, stderr %r" % (rc, err))

        rc, out, err = run_daemon(["-V"])
        t.ok(rc == 0 and re.search(r"\d+\.\d+", out + err), "-V exits 0 and prints a version number",
             "exit %s, output %r" % (rc, out + err))
        expected_version = None
        top = os.environ.get("top_srcdir") or pt.REPO
        try:
            with open(os.path.join(top, "configure.ac")) as f:
                m = re.search(r"AC_INIT\(\[[^]]*\],\s*\[([^]]+)\]", f.read())
                expected_version = m.group(1) if m else None
        except OSError:
            pass
        if expected_version:
            t.ok(expected_version in out + err, "-V shows the configure.ac version %s" % expected_version,
                 "output %r" % (out + err))
        else:
            t.skip("-V shows the configure.ac version", "configure.ac not found")

        rc, out, err = run_daemon(["-h"])
        t.ok(rc == 0 and "-c" in out + err, "-h exits 0 and prints usage mentioning -c",
             "exit %s, output %r" % (rc, out + err))

        rc, out, err = run_daemon(["-Z"])
        t.ok(rc not in (0, "timeout") and err.strip(), "an unknown option fails with a message on stderr",
             "exit %s, stderr %r" % (rc, err))
    finally:
        if not pt.KEEP:
            shutil.rmtree(d, ignore_errors=True)


pt.main(main, timeout=50)
