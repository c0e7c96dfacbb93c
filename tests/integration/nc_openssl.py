#!/usr/bin/env python3
"""Real clients: netcat-openbsd over plain TCP, `openssl s_client` over TLS."""

import os
import select
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402


def nc_flavour(nc):
    """'openbsd' when nc understands -N (shut down the socket after stdin EOF)."""
    try:
        r = subprocess.run([nc, "-h"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = r.stdout.decode(errors="replace")
    return "openbsd" if "-N" in text or "OpenBSD" in text else "other"


def run_nc(nc, port, data, timeout=10):
    try:
        r = subprocess.run([nc, "-N", "127.0.0.1", str(port)], input=data,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        return r.returncode, r.stdout, r.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        return "timeout", e.stdout or b"", (e.stderr or b"").decode(errors="replace")


def s_client(openssl, port, args, send, expect, timeout=10):
    """Run s_client, write `send` on its stdin (kept open), read stdout until
    `expect` shows up or the process ends. Returns (stdout, stderr, rc)."""
    cmd = [openssl, "s_client", "-connect", "127.0.0.1:%d" % port, "-quiet"] + args
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    out = b""
    rc = None
    try:
        try:
            p.stdin.write(send)
            p.stdin.flush()
        except BrokenPipeError:
            pass
        deadline = time.monotonic() + timeout
        while expect not in out:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([p.stdout], [], [], left)
            if not ready:
                break
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
        if expect not in out:
            try:
                p.wait(timeout=3)  # failed: collect its exit status
            except subprocess.TimeoutExpired:
                pass
        rc = p.poll()
    finally:
        if p.poll() is None:
            p.terminate()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
        err = p.stderr.read().decode(errors="replace")
        for f in (p.stdin, p.stdout, p.stderr):
            try:
                f.close()
            except OSError:
                pass
    return out, err, rc


def main(t):
    nc = shutil.which("nc")
    openssl = shutil.which("openssl")
    if not nc and not openssl:
        pt.skip_all("neither nc nor openssl is installed")

    listeners = [pt.listen("plain")]
    if openssl:
        listeners.append(pt.listen("tls", tls=True))
    with pt.Server(listeners=listeners) as srv:
        flavour = nc_flavour(nc) if nc else None
        nc_tests = ["nc -N sends hello and prints hello", "nc -N echoes 256 KiB of text"]
        if not nc:
            for d in nc_tests:
                t.skip(d, "nc is not installed")
        elif flavour != "openbsd":
            for d in nc_tests:
                t.skip(d, "%s is not netcat-openbsd (no -N)" % nc)
        else:
            rc, out, err = run_nc(nc, srv.port(0), b"hello\n")
            t.ok(rc == 0 and out == b"hello\n", nc_tests[0],
                 "exit %s, stdout %r, stderr %r (a timeout means the server did not close "
                 "after the client's EOF)" % (rc, out[:100], err))
            text = b"".join(b"line %06d the quick brown fox\n" % i for i in range(256 * 1024 // 32))
            rc, out, err = run_nc(nc, srv.port(0), text, timeout=15)
            t.ok(rc == 0 and out == text, nc_tests[1],
                 "exit %s, got %d of %d bytes, stderr %r" % (rc, len(out), len(text), err))

        tls_tests = ["openssl s_client -quiet gets its line echoed",
                     "s_client -tls1_2 with verification gets its line echoed",
                     "s_client -tls1_3 with verification gets its line echoed",
                     "s_client -tls1_1 is refused"]
        if not openssl:
            for d in tls_tests:
                t.skip(d, "openssl is not installed")
            return
        port = srv.port(1)
        out, err, rc = s_client(openssl, port, [], b"hello over tls\n", b"hello over tls\n")
        t.ok(b"hello over tls\n" in out, tls_tests[0],
             "stdout %r, exit %s, stderr:\n%s" % (out[:200], rc, err[-1500:]))

        verify = ["-CAfile", srv.cert, "-verify_return_error", "-verify_hostname", "localhost",
                  "-servername", "localhost"]
        for flag, desc in (("-tls1_2", tls_tests[1]), ("-tls1_3", tls_tests[2])):
            line = b"echo via %s\n" % flag.encode()
            out, err, rc = s_client(openssl, port, verify + [flag], line, line)
            t.ok(line in out, desc, "stdout %r, exit %s, stderr:\n%s" % (out[:200], rc, err[-1500:]))

        out, err, rc = s_client(openssl, port, ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
                                b"old protocol\n", b"old protocol\n", timeout=5)
        low = err.lower()
        if "no protocols available" in low or "no ciphers available" in low:
            t.skip(tls_tests[3], "local openssl cannot offer TLS 1.1")
        else:
            t.ok(b"old protocol" not in out and rc not in (None, 0), tls_tests[3],
                 "stdout %r, exit %s, stderr:\n%s" % (out[:200], rc, err[-1500:]))
            t.diag("s_client -tls1_1: exit %s; %s" % (
                rc, " | ".join(l for l in err.splitlines() if "error" in l.lower())[:300]))

        t.ok(srv.alive(), "server still running", srv.log_tail())
        rc = srv.stop()
        t.ok(rc == 0 and not srv.killed, "server exits 0 on SIGTERM",
             "exit %s killed=%s\n%s" % (rc, srv.killed, srv.log_tail()))


pt.main(main, timeout=50)
