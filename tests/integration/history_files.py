#!/usr/bin/env python3
"""The history files and what happens to them behind the server's back.

Ownership: started as root with [server] user = nobody, the database and
its -wal and -shm files belong to nobody (they are created before the
switch); a restart as nobody keeps the history.

Made unreadable (chmod 000) under a running server: logged once, no
crash, chat and /history go on (the open file still works); a restart
cannot open it: without [history] required it logs why and chats without
history, with required = yes it refuses to start with a clear message.

Removed and replaced (by a file that is not a database) under a running
server: logged once, no crash, chat goes on; a restart chats without
history and says why.  Moved while a line waits for its commit and a
reload comes in between: the reload is done, the writer reports the move.

Not root: the server runs as the test's own user (chmod 000 then bites
the same way), and the ownership checks are skipped.
"""

import asyncio
import os
import pwd
import re
import signal
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402
import chatclient as cc  # noqa: E402
import histlib as hl  # noqa: E402

CHAT = {"flood_rate": "100000", "flood_burst": "100000"}
HIST = {"batch_interval": "20ms", "replay": "3"}
ROOT = os.geteuid() == 0
UNUSABLE_RE = r"history: \S+ is no longer readable and writable"
MOVED_RE = r"history: \S+ was removed or replaced while open"
WITHOUT_RE = r"history: .*; chatting without history"


def run_user():
    """(server opts, uid, gid): nobody when root, else ourselves."""
    if not ROOT:
        return {}, os.geteuid(), os.getegid()
    pw = pwd.getpwnam("nobody")
    return {"user": "nobody"}, pw.pw_uid, pw.pw_gid


def server(history=None, **kw):
    opts, _uid, _gid = run_user()
    srv = hl.hist_server(history=dict(HIST, **(history or {})), chat=CHAT,
                         server=opts, start=False, **kw)
    # nobody must be able to reach the state directory.
    os.chmod(srv.dir, 0o755)
    srv.start()
    return srv


async def talk(srv, n, prefix, t=None, label=""):
    """Two clients; a says n lines, b gets them.  True if all arrived."""
    a = await cc.Chat.open(srv.port())
    b = await cc.Chat.open(srv.port())
    await a.set_nick("a" + prefix)
    for i in range(n):
        await a.say("%s %d" % (prefix, i))
    await a.sync()
    got = [l for l in cc.texts(await b.sync()) if l.startswith("#lobby <a%s> " % prefix)]
    await cc.close_all([a, b])
    return got == ["#lobby <a%s> %s %d" % (prefix, prefix, i) for i in range(n)]


async def last_history(srv, n=1):
    c = await cc.Chat.open(srv.port())
    lines, ok = await hl.query(c, "/history %d" % n, r"end of history$|^!!! ")
    await c.close()
    return lines


def owners(path):
    out = {}
    for suffix in ("", "-wal", "-shm"):
        try:
            st = os.stat(path + suffix)
            out[suffix or "db"] = (st.st_uid, st.st_gid)
        except FileNotFoundError:
            pass
    return out


def ownership(t):
    if not ROOT:
        for d in ("history.db, -wal and -shm belong to the run user",
                  "after a clean stop history.db still belongs to the run user",
                  "a restart as the run user keeps the history"):
            t.skip(d, "not root: no user switch to test")
        return
    _opts, uid, gid = run_user()
    with server() as srv:
        path = hl.db_path(srv)
        t.ok(cc.wait_log(srv, r"running as nobody", 5), "the server switched to nobody")
        t.ok(pt.run(talk(srv, 5, "own"), 15), "chat as nobody")
        v = pt.run(hl.await_metric(srv, "history_written_total", lambda v: v >= 5), 15)
        t.is_(v, 5.0, "history written as nobody")
        o = owners(path)
        t.is_(o, {"db": (uid, gid), "-wal": (uid, gid), "-shm": (uid, gid)},
              "history.db, -wal and -shm belong to the run user (nobody)")
        t.is_(srv.stop(), 0, "clean exit")
        t.is_(owners(path).get("db"), (uid, gid),
              "after a clean stop history.db still belongs to the run user")
        # As nobody, without root's override, the files must be writable.
        srv.start()
        lines = pt.run(last_history(srv), 15)
        t.is_([p[4] for p in hl.stored(lines)], ["own 4"], "a restart as the run user keeps the history")
        t.ok(pt.run(talk(srv, 3, "own2"), 15), "chat after the restart")
        v = pt.run(hl.await_metric(srv, "history_written_total", lambda v: v >= 3), 15)
        t.is_(v, 3.0, "and history is written after the restart")
        t.ok(not re.search(r"readonly|read-only|cannot write", srv.log()),
             "no write error after the restart", srv.log_tail(10))


def legacy_root_owned(t):
    """A database an older parleyd left owned by root is handed over."""
    if not ROOT:
        t.skip("a root-owned history.db from an older run is given to the run user",
               "not root")
        return
    _opts, uid, gid = run_user()
    with server() as srv:
        path = hl.db_path(srv)
        t.ok(pt.run(talk(srv, 3, "old"), 15), "chat")
        pt.run(hl.await_metric(srv, "history_written_total", lambda v: v >= 3), 15)
        srv.kill()  # leave the -wal and -shm behind too
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.chown(path + suffix, 0, 0)
        srv.start()
        o = owners(path)
        t.ok(o and all(v == (uid, gid) for v in o.values()),
             "a root-owned history.db (and -wal, -shm) from an older run is given to the run user",
             "owners %r" % o)
        lines = pt.run(last_history(srv), 15)
        t.is_([p[4] for p in hl.stored(lines)], ["old 2"], "its history is there")
        t.ok(pt.run(talk(srv, 3, "new"), 15), "chat")
        v = pt.run(hl.await_metric(srv, "history_written_total", lambda v: v >= 3), 15)
        t.is_(v, 3.0, "and the run user writes to it")
        srv.stop()


def unreadable(t):
    with server() as srv:
        path = hl.db_path(srv)
        t.ok(pt.run(talk(srv, 5, "pre"), 15), "chat before chmod 000")
        pt.run(hl.await_metric(srv, "history_written_total", lambda v: v >= 5), 15)
        t.is_(hl.metric(srv, "history_file_problem"), 0.0, "parley_history_file_problem is 0")
        os.chmod(path, 0)
        t.ok(pt.run(talk(srv, 50, "mid"), 15), "chat goes on after chmod 000")
        m = pt.run(cc.await_log(srv, UNUSABLE_RE, 10), 15)
        t.ok(m, "chmod 000 is noticed and logged", srv.log_tail(10))
        t.is_(hl.metric(srv, "history_file_problem"), 1.0, "parley_history_file_problem is 1")
        t.ok(pt.run(talk(srv, 50, "mid2"), 15), "chat goes on")
        lines = pt.run(last_history(srv), 15)
        t.ok(srv.alive() and lines and lines[-1] == "*** #lobby: end of history",
             "/history still answers from the open file", "got %r" % lines)
        pt.run(hl.await_metric(srv, "history_written_total", lambda v: v >= 105), 15)
        t.is_(hl.log_count(srv, UNUSABLE_RE), 1, "logged once")
        os.chmod(path, 0o644)
        t.ok(pt.run(talk(srv, 5, "back"), 15), "chat after chmod 644")
        m = pt.run(cc.await_log(srv, r"history: \S+ is usable again", 10), 15)
        t.ok(m, "the repair is noticed and logged")
        t.is_(hl.metric(srv, "history_file_problem"), 0.0, "parley_history_file_problem back to 0")
        os.chmod(path, 0)
        t.is_(srv.stop(), 0, "clean exit with an unreadable database")
        # A restart cannot open it.
        srv.start()
        t.ok(cc.wait_log(srv, WITHOUT_RE, 5), "restart: cannot open it, chats without history",
             srv.log_tail(5))
        t.ok(pt.run(talk(srv, 5, "post"), 15), "chat works without history")
        lines = pt.run(last_history(srv), 15)
        t.is_(lines, ["!!! history is not available on this server"],
              "/history says history is not available")
        t.is_(srv.stop(), 0, "clean exit")
        unreadable_required(t, path)


def unreadable_required(t, path):
    opts, _uid, _gid = run_user()
    srv = hl.hist_server(history=dict(HIST, required="yes", path=path), chat=CHAT,
                         server=opts, start=False, start_timeout=5)
    os.chmod(srv.dir, 0o755)
    try:
        try:
            # The listeners are bound before the history is opened (as the
            # run user), so the harness may see them accept: wait for the exit.
            srv.start()
        except pt.ServerStartError:
            pass
        rc = srv.wait(15)
        t.ok(rc == 1 and not srv.killed and
             re.search(r"history: .*history\.db: .*(unable to open|denied)", srv.log()),
             "required = yes with an unreadable database: exit 1 and a clear message",
             "status %s; log %s" % (rc, srv.log_tail(5)))
    finally:
        srv.cleanup()


def replaced(t):
    with server() as srv:
        path = hl.db_path(srv)
        t.ok(pt.run(talk(srv, 5, "pre"), 15), "chat before the file is replaced")
        pt.run(hl.await_metric(srv, "history_written_total", lambda v: v >= 5), 15)
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(path + suffix)
            except FileNotFoundError:
                pass
        with open(path, "wb") as f:
            f.write(b"this is not a database\n" * 100)
        t.ok(pt.run(talk(srv, 50, "mid"), 15), "chat goes on after rm + replace")
        m = pt.run(cc.await_log(srv, MOVED_RE, 10), 15)
        t.ok(m, "the replaced file is noticed and logged", srv.log_tail(10))
        t.is_(hl.metric(srv, "history_file_problem"), 1.0, "parley_history_file_problem is 1")
        t.ok(pt.run(talk(srv, 50, "mid2"), 15), "chat goes on")
        pt.run(hl.await_metric(srv, "history_written_total", lambda v: v >= 105), 15)
        t.is_(hl.log_count(srv, MOVED_RE), 1, "logged once")
        t.ok(srv.alive(), "no crash")
        t.is_(srv.stop(), 0, "clean exit")
        with open(path, "rb") as f:
            t.ok(f.read(22) == b"this is not a database", "the replacement was left alone")
        srv.start()
        t.ok(cc.wait_log(srv, WITHOUT_RE, 5), "restart: not a database, chats without history",
             srv.log_tail(5))
        t.like(srv.log(), r"history: .*not a database", "the log says why")
        t.ok(pt.run(talk(srv, 5, "post"), 15), "chat works without history")
        srv.stop()


def reload_while_pending(t):
    """SIGHUP between a line and its commit, the file moved meanwhile: the
    writer reports it after the reload set the log level (make check-tsan:
    the race on that level between the loop and the writer)."""
    with server(history={"batch_interval": "2s"}) as srv:
        path = hl.db_path(srv)

        async def go():
            a = await cc.Chat.open(srv.port())
            await a.say("before the move")
            await hl.await_metric(srv, "history_written_total", lambda v: v >= 1, 15)
            os.rename(path, path + ".moved")
            # From here until the writer logs, nothing may touch the
            # history from the loop (no room line, join or metrics scrape):
            # the reload must be all that happens between them.
            await a.say("pending across the reload")
            await a.sync()
            os.kill(srv.pid, signal.SIGHUP)
            t.ok(await cc.await_log(srv, r"reload done", 10), "the reload is done",
                 srv.log_tail(5))
            t.ok(await cc.await_log(srv, MOVED_RE, 10), "the writer reports the moved file",
                 srv.log_tail(5))
            log = srv.log()
            t.ok(log.index("reload done") < re.search(MOVED_RE, log).start(),
                 "the pending line was committed after the reload")
            n = await hl.await_metric(srv, "history_written_total", lambda v: v >= 2, 15)
            t.is_(n, 2.0, "both lines written")
            await a.close()
        pt.run(go(), 40)
        t.ok(srv.alive(), "no crash")
        t.is_(srv.stop(), 0, "clean exit")


def main(t):
    ownership(t)
    legacy_root_owned(t)
    unreadable(t)
    replaced(t)
    reload_while_pending(t)


pt.main(main)
