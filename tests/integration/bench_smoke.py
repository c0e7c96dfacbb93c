#!/usr/bin/env python3
"""parley-bench runs: echo (2 conns, 1 s) and a tiny chat against parleyd, no errors, no loss."""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402


def bench_path():
    return os.environ.get("PARLEY_BENCH") or os.path.join(pt.REPO, "tests", "bench", "parley-bench")


def run(t, args, what):
    r = subprocess.run([bench_path()] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=30)
    res = {}
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            res = dict(kv.split("=", 1) for kv in line.split()[1:])
    t.ok(r.returncode == 0 and res.get("errors") == "0", what + ": exit 0, errors=0",
         diag=r.stdout)
    return res


def main(t):
    if not os.access(bench_path(), os.X_OK):
        pt.skip_all("parley-bench not built")
    with pt.Server(listeners=[pt.listen("echo"), pt.listen("chat", service="chat")]) as srv:
        pid = str(srv.pid)
        res = run(t, ["echo", "-p", str(srv.port(0)), "-c", "2", "-i", "4", "-d", "1", "-w", "0.2",
                      "--pid", pid], "echo mode")
        t.ok(float(res.get("msgs_s", 0)) > 0, "echo mode counted round trips", diag=res)
        res = run(t, ["chat", "-p", str(srv.port(1)), "-c", "4", "-k", "1", "-r", "5", "-d", "1",
                      "-w", "0.2", "--pid", pid], "chat mode (paced, parley protocol)")
        t.ok(res.get("lost") == "0" and int(res.get("sent", 0)) > 0, "chat mode: messages sent, none lost",
             diag=res)


pt.main(main)
