#!/usr/bin/env python3
"""Every thread that does blocking work (the worker pool, the history
writer and readers, password hashing, the accounts store) runs at
[server] worker_nice below the event loop, which keeps the nice value it
started with: a core shared with a commit or a hash serves the loop's
clients first."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402


def threads(pid):
    """{thread name: [nice, ...]} from /proc/PID/task."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        base = "/proc/%d/task/%s/" % (pid, tid)
        try:
            with open(base + "comm") as f:
                name = f.read().strip()
            with open(base + "stat") as f:
                # Field 19 is nice; the name in parentheses may hold spaces.
                nice = int(f.read().rsplit(")", 1)[1].split()[16])
        except OSError:
            continue
        out.setdefault(name, []).append(nice)
    return out


def check(t, srv, want, label):
    th = threads(srv.pid)
    loop = [n for name, ns in th.items() for n in ns if not ("/" in name or name.startswith("history-"))]
    workers = {name: ns for name, ns in th.items() if "/" in name or name.startswith("history-")}
    base = os.getpriority(os.PRIO_PROCESS, 0)  # the daemon inherits ours
    t.ok(loop and all(n == base for n in loop), "%s: the loop thread keeps nice %d" % (label, base),
         repr(th))
    want = min(base + want, 19)
    for prefix in ("worker/", "history-w", "history-r/", "auth/", "store/"):
        got = [n for name, ns in workers.items() if name.startswith(prefix) for n in ns]
        t.ok(got and all(n == want for n in got), "%s: %s threads run at nice %d (%r)"
             % (label, prefix.rstrip("/"), want, got), repr(th))


def main(t):
    for conf, want, label in ((None, 10, "default"), ({"worker_nice": 3}, 3, "worker_nice = 3"),
                              ({"worker_nice": 0}, 0, "worker_nice = 0")):
        with pt.Server(listeners=[pt.listen(service="chat")], server=conf,
                       extra="\n[accounts]\nenabled = yes\n") as srv:
            check(t, srv, want, label)


pt.main(main)
