"""History helpers for parley's integration tests (stdlib only).

hist_server() starts a parleyd with a chat listener (0) and a metrics
listener (1) and a [history] section; metrics() scrapes the history
counters; db_rows() and integrity() read the sqlite file directly with
Python's sqlite3 module; parse_stored() splits a stored line
("#room [YYYY-MM-DDTHH:MM:SSZ] <nick> text" or "... * nick text").
"""

import asyncio
import calendar
import os
import re
import sqlite3
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402

STORED_RE = re.compile(r"^(#\S+) \[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\] "
                       r"(?:<([^>\s]+)> |\* (\S+) )(.*)$")


def section(name, opts):
    if not opts:
        return ""
    return "\n[%s]\n" % name + "".join("%s = %s\n" % kv for kv in opts.items())


def hist_server(history=None, chat=None, server=None, extra="", metrics=True, **kw):
    """parleyd with listener 0 = chat, listener 1 = metrics (if metrics)."""
    listeners = [pt.listen(name="chat", service="chat")]
    if metrics:
        listeners.append(pt.listen(name="metrics", service="metrics"))
    text = section("chat", chat) + section("history", history) + extra
    return pt.Server(listeners=listeners, server=server, extra=text, **kw)


def metrics(srv, port_index=1, timeout=5):
    """{name: value} of every parley_* sample (no labels), or {} when the
    scrape fails (the daemon is down)."""
    url = "http://127.0.0.1:%d/metrics" % srv.port(port_index)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in body.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        parts = line.split()
        if len(parts) >= 2 and "{" not in parts[0]:
            try:
                out[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return out


def metric(srv, name, default=None):
    return metrics(srv).get("parley_" + name, default)


async def await_metric(srv, name, pred, timeout=10, interval=0.05):
    """Poll a metric until pred(value) holds; returns the last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        v = await loop.run_in_executor(None, metric, srv, name)
        if (v is not None and pred(v)) or loop.time() >= deadline:
            return v
        await asyncio.sleep(interval)


def db_path(srv):
    return os.path.join(srv.state_dir, "history.db")


def db_rows(path, where="", args=()):
    """[(id, room, ts_ms, sender, kind, text)] in id order."""
    con = sqlite3.connect(path, timeout=5)
    try:
        return con.execute("SELECT id, room, ts, sender, kind, text FROM messages %s "
                           "ORDER BY id" % where, args).fetchall()
    finally:
        con.close()


def integrity(path):
    """PRAGMA integrity_check's answer as one string ('ok' when sound)."""
    con = sqlite3.connect(path, timeout=5)
    try:
        rows = con.execute("PRAGMA integrity_check").fetchall()
        fts = "ok"
        try:
            con.execute("INSERT INTO messages_fts(messages_fts, rank) "
                        "VALUES ('integrity-check', 1)")
        except sqlite3.DatabaseError as e:
            fts = "fts5: %s" % e
        out = "; ".join(str(r[0]) for r in rows)
        return out if fts == "ok" else out + "; " + fts
    finally:
        con.close()


def parse_stored(line):
    """(room, epoch_seconds, nick, is_action, text) or None."""
    if isinstance(line, (bytes, bytearray)):
        line = line.decode("utf-8", "replace")
    m = STORED_RE.match(line)
    if not m:
        return None
    ts = calendar.timegm(time.strptime(m.group(2), "%Y-%m-%dT%H:%M:%SZ"))
    nick = m.group(3) or m.group(4)
    return m.group(1), ts, nick, m.group(4) is not None, m.group(5)


async def query(c, command, end_pattern, timeout=10):
    """Send a /history or /search and return (lines, ok): every line up to
    and including the one matching end_pattern (or a '!!! ' error).
    Whatever arrived before the command is drained first (a sync)."""
    await c.sync()
    await c.send(command)
    out = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            return out, False
        line = await c.line(left)
        if line is None:
            return out, False
        s = line.decode("utf-8", "replace")
        out.append(s)
        if re.search(end_pattern, s) or s.startswith("!!! "):
            return out, True


async def history(c, arg="", room=None, timeout=10):
    """/history [arg]: (header_count, stored lines, all lines) or raises."""
    room = room or c.room
    lines, ok = await query(c, ("/history " + arg).rstrip(),
                            r"^\*\*\* %s: end of history$" % re.escape(room), timeout)
    if not ok:
        raise AssertionError("/history %s: no end line; got %r" % (arg, lines[-5:]))
    return lines


async def search(c, words, timeout=10):
    lines, ok = await query(c, "/search " + words, r"^\*\*\* end of search results$", timeout)
    if not ok:
        raise AssertionError("/search %s: no end line; got %r" % (words, lines[-5:]))
    return lines


def stored(lines):
    """The parsed stored lines among lines."""
    return [p for p in (parse_stored(l) for l in lines) if p]


def log_count(srv, pattern):
    return len(re.findall(pattern, srv.log(), re.M))
