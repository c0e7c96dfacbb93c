#!/usr/bin/env python3
"""History under storage faults; chat must never stop.

Disk full: the database lives on a 2 MiB tmpfs (mounted by the test when
it may, as root, unless PARLEYTEST_NO_MOUNT is set; otherwise PARLEY_HISTORY_MAX_PAGES caps the file with
PRAGMA max_page_count, and the "space returns" half is skipped).  A filler
file takes the free space; lines keep flowing to everyone; the write error
is logged once however many lines and retries follow; a joiner still gets
the replay (answered from the lines held in memory); when the filler is
removed the writer recovers by itself, logs it once, and every line said
during the fault is stored (zero loss, within queue_limit).  Full again
at SIGTERM: the writer retries for its 5 s, exits cleanly and logs how
many lines it could not save; the file passes integrity_check.  And
kill -9 while the disk is full: the restart opens it, integrity ok.

Locked database: another process holds the write lock for a while; the
same: chat goes on, logged once, recovered, nothing lost.

Queue bound: a fault that lasts past queue_limit lines: every line is
still delivered, the ones past the limit are not stored but counted
(parley_history_dropped_total) and logged once ("queue full"), the queue
never holds more than the limit, and "recovered; N dropped" follows.
"""

import asyncio
import errno
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402
import chatclient as cc  # noqa: E402
import histlib as hl  # noqa: E402

CHAT = {"flood_rate": "100000", "flood_burst": "100000"}
FAULT_RE = r"history: cannot write \S+: "
RECOVER_RE = r"history: writes to \S+ recovered after \d+ failed attempt"
TEXT = "x" * 180


def try_mount(size="2m"):
    """A fresh tmpfs of size, or None when mounting is not allowed."""
    if os.geteuid() != 0 or not shutil.which("mount") or os.environ.get("PARLEYTEST_NO_MOUNT"):
        return None
    d = tempfile.mkdtemp(prefix="parleytest-tmpfs-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", d],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if r.returncode != 0:
        os.rmdir(d)
        return None
    return d


def umount(d):
    subprocess.run(["umount", "-l", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        os.rmdir(d)
    except OSError:
        pass


def fill(directory):
    """Take every free byte with a filler file; returns its path."""
    path = os.path.join(directory, "filler")
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 16, 4096, 512, 1):
            chunk = b"\0" * size
            while True:
                try:
                    if f.write(chunk) < size:
                        break
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    return path


async def say_lines(c, w, prefix, n, t_label=None):
    """c says n numbered lines; w (a witness) must receive them all."""
    for i in range(n):
        await c.say("%s %d %s" % (prefix, i, TEXT))
    await c.sync()
    want = ["#lobby <%s> %s %d %s" % (c.nick, prefix, i, TEXT) for i in range(n)]
    got = [l for l in cc.texts(await w.sync()) if l.startswith("#lobby <%s> %s " % (c.nick, prefix))]
    return got == want


def stored_texts(path, nick):
    return [r[5] for r in hl.db_rows(path) if r[3] == nick]


def disk_full(t):
    mnt = try_mount()
    real = mnt is not None
    if not real:
        t.diag("cannot mount a tmpfs: using PARLEY_HISTORY_MAX_PAGES instead")
        os.environ["PARLEY_HISTORY_MAX_PAGES"] = "40"
    try:
        hist = {"batch_interval": "20ms", "replay": "3", "queue_limit": "100000"}
        if real:
            hist["path"] = os.path.join(mnt, "history.db")
        with hl.hist_server(history=hist, chat=CHAT) as srv:
            path = hist.get("path") or hl.db_path(srv)
            os.environ.pop("PARLEY_HISTORY_MAX_PAGES", None)
            filler = pt.run(disk_full_chat(t, srv, path, mnt), timeout=45)
            pending = hl.metric(srv, "history_queue_depth")
            t0 = time.monotonic()
            rc = srv.stop(timeout=20)
            t.is_((rc, srv.killed), (0, False),
                  "SIGTERM with the disk full: a clean exit (in %.1fs)" % (time.monotonic() - t0))
            t.like(srv.log(), r"history: giving up at exit; %d line\(s\) were not saved"
                   % (pending or -1), "the lines it could not save are counted in the log (%s)"
                   % pending)
            if real:
                if filler:
                    os.unlink(filler)
                t.is_(hl.integrity(path), "ok", "integrity_check ok after the disk was full")
    finally:
        os.environ.pop("PARLEY_HISTORY_MAX_PAGES", None)
        if real:
            umount(mnt)


async def disk_full_chat(t, srv, path, mnt):
    a = await cc.Chat.open(srv.port(), label="alice")
    b = await cc.Chat.open(srv.port(), label="bob")
    await a.set_nick("alice")
    await b.set_nick("bob")
    t.ok(await say_lines(a, b, "before", 50), "before the fault: 50 lines delivered")
    if mnt:
        v = await hl.await_metric(srv, "history_written_total", lambda v: v >= 50)
        t.is_(v, 50.0, "before the fault: 50 lines committed")
        filler = fill(mnt)
    # Talk until the writer hits the wall.
    sent = 0
    delivered = True
    for rnd in range(40):
        delivered &= await say_lines(a, b, "full%d" % rnd, 100)
        sent += 100
        deg = await hl.await_metric(srv, "history_degraded", lambda v: v == 1, timeout=0.5)
        if deg == 1:
            break
    t.ok(deg == 1, "the writer reports the fault (history_degraded 1 after %d lines)" % sent)
    t.ok(delivered, "every line was delivered while the disk filled")
    # More lines, and time for several retries.
    delivered = await say_lines(a, b, "during", 300)
    errs0 = hl.metric(srv, "history_write_errors_total") or 0
    errs = await hl.await_metric(srv, "history_write_errors_total", lambda v: v >= errs0 + 2,
                                 timeout=10)
    t.ok(delivered, "chat goes on during the fault (300 more lines delivered)")
    t.ok(errs is not None and errs >= errs0 + 2, "the writer keeps retrying (%s failed commits)"
         % errs)
    t.is_(hl.log_count(srv, FAULT_RE), 1,
          "the fault is logged once (not per line or per retry)")
    t.like(srv.log(), FAULT_RE + r".*(full|disk)", "the log line says the disk is full")
    # A joiner during the fault: its replay comes from the lines in memory.
    c = await cc.Chat.open(srv.port(), label="carol")
    got = cc.texts(await c.sync())
    t.is_([hl.parse_stored(l)[4] if hl.parse_stored(l) else l for l in got
           if not re.match(r"^\*\*\* (#\S+: )?\S+ has", l)],
          ["*** #lobby: last 3 message(s):"] + ["during %d %s" % (i, TEXT) for i in (297, 298, 299)] +
          ["*** #lobby: end of history"],
          "a joiner during the fault gets the replay of uncommitted lines")
    lines = await hl.history(c, "1")
    t.ok(lines[-1] == "*** #lobby: end of history" and not any(l.startswith("!!!") for l in lines),
         "/history still answers (committed lines) during the fault", "got %r" % lines)
    await c.close()
    if not mnt:
        for d in ("space returns: the writer recovers by itself", "recovery logged once",
                  "zero loss across the fault"):
            t.skip(d, "no tmpfs (mount not allowed); max_page_count cannot be lifted from outside")
        await a.close()
        await b.close()
        return
    os.unlink(filler)
    m = await cc.await_log(srv, RECOVER_RE, timeout=15)
    t.ok(m, "space returns: the writer recovers by itself", srv.log_tail(10))
    await a.say("after 0")
    await a.sync()
    appended = 50 + sent + 300 + 1
    v = await hl.await_metric(srv, "history_written_total", lambda v: v >= appended, timeout=10)
    t.is_(v, float(appended), "every line is committed after recovery (%d)" % appended)
    t.is_(hl.metric(srv, "history_degraded"), 0.0, "history_degraded back to 0")
    t.is_(hl.log_count(srv, RECOVER_RE), 1, "recovery logged once")
    want = ["before %d %s" % (i, TEXT) for i in range(50)] + \
        ["full%d %d %s" % (r, i, TEXT) for r in range(sent // 100) for i in range(100)] + \
        ["during %d %s" % (i, TEXT) for i in range(300)] + ["after 0"]
    got = stored_texts(path, "alice")
    t.ok(got == want, "zero loss across the fault: all %d lines stored, in order" % len(want),
         "stored %d, first difference at %r" % (len(got), next(
             (i for i, (x, y) in enumerate(zip(got, want)) if x != y), min(len(got), len(want)))))
    # Full again, and then SIGTERM: the exit may not hang on it.
    filler = fill(mnt)
    for rnd in range(40):
        await say_lines(a, b, "again%d" % rnd, 100)
        deg = await hl.await_metric(srv, "history_degraded", lambda v: v == 1, timeout=0.5)
        if deg == 1:
            break
    t.is_(deg, 1.0, "the disk is full again")
    await a.close()
    await b.close()
    return filler


def kill9_while_full(t):
    """kill -9 while the writer fails on a full disk (partial WAL frames):
    the restart opens the file, integrity_check ok, the lines committed
    before the fault are all there."""
    mnt = try_mount()
    if mnt is None:
        t.skip("kill -9 while the disk is full: integrity ok after restart", "no tmpfs")
        return
    try:
        hist = {"batch_interval": "20ms", "path": os.path.join(mnt, "history.db")}
        with hl.hist_server(history=hist, chat=CHAT) as srv:
            async def go():
                a = await cc.Chat.open(srv.port())
                b = await cc.Chat.open(srv.port())
                await a.set_nick("alice")
                await say_lines(a, b, "pre", 100)
                await hl.await_metric(srv, "history_written_total", lambda v: v >= 100)
                filler = fill(mnt)
                for rnd in range(40):
                    await say_lines(a, b, "f%d" % rnd, 100)
                    if await hl.await_metric(srv, "history_degraded", lambda v: v == 1,
                                             timeout=0.5) == 1:
                        break
                return filler
            filler = pt.run(go(), timeout=30)
            srv.kill()
            os.unlink(filler)
            srv.start()
            t.ok(cc.wait_log(srv, r"history: \S+ open, last id \d+$", 5),
                 "kill -9 while the disk is full: the restart opens the database")
            t.is_(hl.integrity(hist["path"]), "ok", "kill -9 while the disk is full: integrity ok")
            got = stored_texts(hist["path"], "alice")
            t.is_(got[:100], ["pre %d %s" % (i, TEXT) for i in range(100)],
                  "the lines committed before the fault are intact")
            t.is_(srv.stop(), 0, "clean exit")
    finally:
        umount(mnt)


class Locker:
    """Another process's connection holding the database's write lock."""

    def __init__(self, path):
        self.path = path
        self.held = threading.Event()
        self.release = threading.Event()
        self.th = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        con = sqlite3.connect(self.path, timeout=5, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            self.held.set()
            self.release.wait(30)
            con.execute("ROLLBACK")
        finally:
            con.close()

    def start(self, timeout=5):
        self.th.start()
        return self.held.wait(timeout)

    def stop(self):
        self.release.set()
        self.th.join(5)


def locked(t):
    hist = {"batch_interval": "20ms", "replay": "3"}
    with hl.hist_server(history=hist, chat=CHAT) as srv:
        path = hl.db_path(srv)

        async def go():
            a = await cc.Chat.open(srv.port(), label="alice")
            b = await cc.Chat.open(srv.port(), label="bob")
            await a.set_nick("alice")
            await b.set_nick("bob")
            t.ok(await say_lines(a, b, "before", 20), "20 lines before the lock")
            await hl.await_metric(srv, "history_written_total", lambda v: v >= 20)
            lk = Locker(path)
            try:
                t.ok(lk.start(), "another process holds the write lock")
                ok = await say_lines(a, b, "locked", 200)
                deg = await hl.await_metric(srv, "history_degraded", lambda v: v == 1, timeout=5)
                t.ok(ok, "chat goes on while the database is locked")
                t.is_(deg, 1.0, "the writer reports the fault")
                ok = await say_lines(a, b, "locked2", 200)
                t.ok(ok, "and goes on")
                t.is_(hl.log_count(srv, FAULT_RE + r".*locked"), 1, "the lock is logged once")
            finally:
                lk.stop()
            m = await cc.await_log(srv, RECOVER_RE, timeout=15)
            t.ok(m, "the writer recovers when the lock goes")
            v = await hl.await_metric(srv, "history_written_total", lambda v: v >= 420, timeout=10)
            t.is_(v, 420.0, "nothing lost: 420 lines committed")
            got = stored_texts(path, "alice")
            t.is_(len(got), 420, "all 420 lines in the database")
            await a.close()
            await b.close()
        pt.run(go(), timeout=40)


def queue_bound(t):
    """A fault that outlasts queue_limit: lines past it are delivered but not
    stored, counted, logged once; the queue recovers."""
    limit = 100
    hist = {"batch_interval": "20ms", "replay": "3", "queue_limit": str(limit)}
    full_re = r"history queue full \(%d lines\); dropping" % limit
    with hl.hist_server(history=hist, chat=CHAT) as srv:
        path = hl.db_path(srv)

        async def go():
            a = await cc.Chat.open(srv.port(), label="alice")
            b = await cc.Chat.open(srv.port(), label="bob")
            await a.set_nick("alice")
            await b.set_nick("bob")
            lk = Locker(path)
            try:
                t.ok(lk.start(), "another process holds the write lock")
                ok = await say_lines(a, b, "q", 3 * limit)
                t.ok(ok, "all %d lines delivered past queue_limit %d" % (3 * limit, limit))
                dropped = await hl.await_metric(srv, "history_dropped_total",
                                                lambda v: v >= 2 * limit)
                t.is_(dropped, float(2 * limit), "history_dropped_total counts the %d not kept"
                      % (2 * limit))
                t.is_(hl.metric(srv, "history_queue_depth"), float(limit),
                      "the queue holds queue_limit lines, no more")
                t.is_(hl.log_count(srv, full_re), 1, "'queue full' logged once")
            finally:
                lk.stop()
            v = await hl.await_metric(srv, "history_written_total", lambda v: v >= limit, timeout=15)
            t.is_(v, float(limit), "the %d queued lines are committed after the fault" % limit)
            await a.say("after")
            await a.sync()
            m = await cc.await_log(srv, r"history queue recovered; %d dropped" % (2 * limit), 5)
            t.ok(m, "recovery logged with the count dropped", srv.log_tail(5))
            await hl.await_metric(srv, "history_written_total", lambda v: v >= limit + 1)
            got = stored_texts(path, "alice")
            t.is_(got, ["q %d %s" % (i, TEXT) for i in range(limit)] + ["after"],
                  "stored: the first %d lines (in order) and the line after" % limit)
            await a.close()
            await b.close()
        pt.run(go(), timeout=40)


def main(t):
    disk_full(t)
    kill9_while_full(t)
    locked(t)
    queue_bound(t)


pt.main(main)
