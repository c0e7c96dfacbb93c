#!/usr/bin/env python3
"""service = metrics: GET /metrics in the Prometheus text format (checked by
hand, promtool is not available), scraped with real curl and with urllib;
counters move with echo and chat traffic; per-listener connection gauges
match the clients held open; POST -> 405, unknown path -> 404; the loop-lag
gauge sees a stopped loop, with [server] loop_lag_interval."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE_RE = re.compile(r"^(%s)(\{[^}]*\})? ([0-9.eE+-]+)$" % NAME)
LABELS_RE = re.compile(r'^\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
                       r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*,?)?\}$')
HELP_RE = re.compile(r"^# HELP (\S+)(?: (.*))?$")
TYPE_RE = re.compile(r"^# TYPE (\S+) (\S+)$")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def format_problems(body):
    """Problems with body as Prometheus text format 0.0.4; [] if none."""
    probs = []
    helps, types, seen_series, family_done = {}, {}, set(), set()
    current = None  # family of the previous sample, to check grouping
    if not body.endswith("\n"):
        probs.append("body does not end with a newline")
    for n, line in enumerate(body.split("\n")[:-1], 1):
        if line.startswith("#"):
            m = HELP_RE.match(line)
            if m:
                name = m.group(1)
                if not re.fullmatch(NAME, name):
                    probs.append("line %d: HELP for an invalid metric name %r" % (n, name))
                if name in helps:
                    probs.append("line %d: second HELP for %s" % (n, name))
                helps[name] = n
                continue
            m = TYPE_RE.match(line)
            if m or line.startswith("# TYPE"):
                if not m:
                    probs.append("line %d: malformed TYPE line %r" % (n, line))
                    continue
                name, typ = m.groups()
                if not re.fullmatch(NAME, name):
                    probs.append("line %d: TYPE for an invalid metric name %r" % (n, name))
                if typ not in TYPES:
                    probs.append("line %d: unknown type %r" % (n, typ))
                if name in types:
                    probs.append("line %d: second TYPE for %s" % (n, name))
                if name in family_done or current == name:
                    probs.append("line %d: TYPE for %s after its samples" % (n, name))
                types[name] = typ
            continue  # other comments are allowed
        if line.strip() == "":
            continue
        m = SAMPLE_RE.match(line)
        if not m:
            probs.append("line %d: not a valid sample line: %r" % (n, line))
            continue
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        if labels and not LABELS_RE.match(labels):
            probs.append("line %d: malformed labels %r" % (n, labels))
        try:
            float(value)
        except ValueError:
            probs.append("line %d: value %r is not a number" % (n, value))
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[:-len(suffix)]
            if name.endswith(suffix) and types.get(base) in ("histogram", "summary"):
                family = base
        if family not in types:
            probs.append("line %d: sample %s has no TYPE line before it" % (n, name))
        if family not in helps:
            probs.append("line %d: sample %s has no HELP line" % (n, name))
        if family != current:
            if family in family_done:
                probs.append("line %d: samples of %s are not grouped together" % (n, family))
            if current is not None:
                family_done.add(current)
            current = family
        key = name + labels
        if key in seen_series:
            probs.append("line %d: duplicate series %s" % (n, key))
        seen_series.add(key)
    for name in types:
        if name not in helps:
            probs.append("TYPE %s has no HELP" % name)
    return probs


def parse(body):
    """{'name{labels}': float} for every sample line."""
    out = {}
    for line in body.splitlines():
        m = SAMPLE_RE.match(line)
        if m:
            try:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


def curl(curl_path, url, *args):
    """Run curl; returns (exit code, http code, content type, body)."""
    r = subprocess.run([curl_path, "-s", "-m", "5", "-o", "-", "-w",
                        "\n%{http_code} %{content_type}", *args, url],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=10)
    out = r.stdout.decode("utf-8", errors="replace")
    body, _, tail = out.rpartition("\n")
    code, _, ctype = tail.partition(" ")
    return r.returncode, code, ctype, body


def curl_f(curl_path, url):
    """curl -sf: the exit code says whether the server answered 2xx."""
    r = subprocess.run([curl_path, "-sf", "-m", "5", url], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    return r.returncode, r.stdout.decode("utf-8", errors="replace")


def url_get(url, method="GET", data=None):
    """urllib request: (status, content type, body)."""
    req = urllib.request.Request(url, method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), \
                resp.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), ""
    except OSError as e:
        return None, "", repr(e)


def echo_client(port, msg):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.settimeout(5)
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return s, got


def read_until(s, needle, timeout=5):
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except (socket.timeout, TimeoutError):
            break
        if not chunk:
            break
        buf += chunk
    return buf


def main(t):
    curl_path = shutil.which("curl")
    listeners = [pt.listen("e"), pt.listen("c", service="chat"), pt.listen("m", service="metrics")]
    with pt.Server(listeners=listeners) as srv:
        url = "http://127.0.0.1:%d/metrics" % srv.port(2)
        base = "http://127.0.0.1:%d" % srv.port(2)

        def scrape():
            st, ct, body = url_get(url)
            return parse(body) if st == 200 else {}

        # ---- urllib: status, content type, format
        st, ctype, body = url_get(url)
        t.is_(st, 200, "urllib GET /metrics -> 200")
        t.like(ctype, r"^text/plain(;|$)", "urllib: Content-Type is text/plain")
        t.like(ctype, r"version=0\.0\.4", "Content-Type names text format version 0.0.4")
        probs = format_problems(body)
        t.ok(not probs, "exposition is valid Prometheus text format (%d problem(s))" % len(probs),
             "\n".join(probs[:20]))
        m0 = parse(body)
        for name in ("parley_rooms", "parley_accepted_total", "parley_tls_handshakes_total",
                     "parley_tls_failures_total", "parley_messages_in_total",
                     "parley_messages_out_total", "parley_bytes_in_total",
                     "parley_slow_consumer_events_total", "parley_loop_lag_seconds",
                     "parley_sqlite_memory_bytes"):
            t.ok(name in m0, "metric %s is exported" % name,
                 "samples: %r" % sorted(m0)[:60])

        # ---- real curl
        if curl_path:
            rc, cbody = curl_f(curl_path, url)
            t.is_(rc, 0, "curl -sf GET /metrics succeeds")
            t.like(cbody, r"(?m)^parley_accepted_total \d+$", "curl gets the exposition")
            rc, code, ctype, _ = curl(curl_path, url)
            t.is_(code, "200", "curl: HTTP 200")
            t.like(ctype, r"^text/plain(;|$)", "curl: Content-Type is text/plain")
            rc, code, _, _ = curl(curl_path, url, "-X", "POST")
            t.is_(code, "405", "curl: POST /metrics (no body) -> 405")
            rc, code, _, _ = curl(curl_path, url, "-d", "x=1")
            t.is_(code, "405", "curl: POST /metrics with a form body -> 405")
            rc, code, _, _ = curl(curl_path, url, "-X", "DELETE")
            t.is_(code, "405", "curl: DELETE /metrics -> 405")
            rc, code, _, _ = curl(curl_path, base + "/nope")
            t.is_(code, "404", "curl: GET /nope -> 404")
            rc, _ = curl_f(curl_path, base + "/nope")
            t.ok(rc != 0, "curl -sf fails on the unknown path", "exit %d" % rc)
            rc, code, ctype, hbody = curl(curl_path, url, "-I")
            t.is_(code, "200", "curl: HEAD /metrics -> 200")
        else:
            for d in ("curl -sf GET /metrics succeeds", "curl gets the exposition",
                      "curl: HTTP 200", "curl: Content-Type is text/plain",
                      "curl: POST /metrics (no body) -> 405",
                      "curl: POST /metrics with a form body -> 405", "curl: DELETE /metrics -> 405",
                      "curl: GET /nope -> 404", "curl -sf fails on the unknown path",
                      "curl: HEAD /metrics -> 200"):
                t.skip(d, "curl is not installed")
        st, _, _ = url_get(url, method="POST", data=b"x=1")
        t.is_(st, 405, "urllib: POST /metrics -> 405")
        st, _, _ = url_get(base + "/")
        t.is_(st, 404, "urllib: GET / -> 404")
        st, _, _ = url_get(base + "/metricsx")
        t.is_(st, 404, "urllib: GET /metricsx -> 404")

        # ---- traffic
        before = scrape()
        payload = os.urandom(1000)
        echo_clients = []
        try:
            n_echo = 3
            echoed = True
            for i in range(n_echo):
                s, got = echo_client(srv.port(0), payload)
                echo_clients.append(s)
                echoed = echoed and got == payload
            t.ok(echoed, "%d echo clients got their 1000 bytes back" % n_echo)

            a = socket.create_connection(("127.0.0.1", srv.port(1)), timeout=5)
            b = socket.create_connection(("127.0.0.1", srv.port(1)), timeout=5)
            echo_clients += [a, b]
            lines = 4
            for i in range(lines):
                a.sendall(b"hello number %d\r\n" % i)
            heard = read_until(b, b"hello number %d" % (lines - 1))
            t.ok(b"hello number %d" % (lines - 1) in heard,
                 "chat lines from one client reach the other", "got %r" % heard[-300:])

            def settled():
                m = scrape()
                ok = (m.get('parley_connections{listener="e",state="active"}') == n_echo and
                      m.get('parley_connections{listener="c",state="active"}') == 2)
                return m if ok else None
            after = pt.wait_for(settled, 3) or scrape()
            d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            t.ok(d.get("parley_accepted_total", 0) >= n_echo + 2,
                 "parley_accepted_total grew by >= %d (by %s)" % (n_echo + 2,
                                                               d.get("parley_accepted_total")))
            t.ok(d.get("parley_bytes_in_total", 0) >= n_echo * len(payload),
                 "parley_bytes_in_total grew by >= %d (by %s)" % (n_echo * len(payload),
                                                               d.get("parley_bytes_in_total")))
            t.is_(d.get("parley_messages_in_total"), float(lines),
                  "parley_messages_in_total grew by the %d chat lines" % lines)
            t.ok(d.get("parley_messages_out_total", 0) >= lines,
                 "parley_messages_out_total grew by >= %d (by %s)" % (
                     lines, d.get("parley_messages_out_total")))
            t.is_(after.get('parley_connections{listener="e",state="active"}'), float(n_echo),
                  'parley_connections{listener="e",state="active"} equals the %d echo clients'
                  % n_echo)
            t.is_(after.get('parley_connections{listener="c",state="active"}'), 2.0,
                  'parley_connections{listener="c",state="active"} equals the 2 chat clients')
            t.is_(after.get("parley_connections_total_open"), float(n_echo + 2),
                  "parley_connections_total_open counts echo+chat clients, not scrapes")
            t.ok(after.get("parley_rooms", 0) >= 1, "parley_rooms >= 1 with chat clients",
                 "parley_rooms = %r" % after.get("parley_rooms"))
            t.ok(0 <= after.get("parley_loop_lag_seconds", -1) < 1.0,
                 "parley_loop_lag_seconds is sane (%r)" % after.get("parley_loop_lag_seconds"))
            st, _, body = url_get(url)
            probs = format_problems(body)
            t.ok(not probs, "exposition with live connections is valid (%d problem(s))" % len(probs),
                 "\n".join(probs[:20]))
        finally:
            for s in echo_clients:
                s.close()

        def drained():
            m = scrape()
            e = m.get('parley_connections{listener="e",state="active"}', 0)
            c = m.get('parley_connections{listener="c",state="active"}', 0)
            return m if (e == 0 and c == 0) else None
        t.ok(pt.wait_for(drained, 3), "connection gauges fall back to 0 after clients leave",
             repr({k: v for k, v in scrape().items() if "connections" in k}))

        # ---- a reload cannot turn the metrics listener into something else
        conf = srv.config_text().replace("service = metrics", "service = echo")
        with open(srv.conf_path, "w") as f:
            f.write(conf)
        os.kill(srv.pid, signal.SIGHUP)
        pt.wait_for(lambda: "reload done" in srv.log() or "reload refused" in srv.log(), 5)
        t.like(srv.log(), r"listener m: switching to or from metrics needs a restart",
               "switching the metrics listener by reload is logged and ignored")
        st, _, body = url_get(url)
        t.is_(st, 200, "/metrics still served after that reload")

        t.ok(srv.alive(), "server is still running", srv.log_tail())
        rc = srv.stop()
        t.is_(rc, 0, "exit 0 on SIGTERM")

    # ---- the loop's own lag probe sees a stall: the process is stopped for
    # 0.4 s (SIGSTOP), which to the loop is one long callback.  With 5 ms
    # (precise timers) and with the default 100 ms (coarse timers, read on
    # the coarse clock, so an idle loop shows no phantom lag).
    for interval, least in (("5ms", 0.35), (None, 0.25)):
        server = {"loop_lag_interval": interval} if interval else None
        with pt.Server(listeners=[pt.listen("m", service="metrics")], server=server) as srv:
            url = "http://127.0.0.1:%d/metrics" % srv.port()
            what = interval or "the default interval"

            def lag():
                st, _, body = url_get(url)
                return parse(body).get("parley_loop_lag_seconds", -1) if st == 200 else -1
            lag()  # the gauge restarts at every scrape
            time.sleep(0.3)
            quiet = lag()
            t.ok(0 <= quiet < 0.1 * pt.SLOW, "%s, no stall: loop lag %.4f s" % (what, quiet))
            # The least lag of several quiet windows.  Coarse timers are read
            # on the coarse clock, so an idle loop shows exactly 0 (on the
            # precise clock, a tick's phantom lag every time); a 5 ms probe
            # runs on precise timers, or it would fire up to a 4 ms tick late.
            idle = []
            for _ in range(12):
                time.sleep(0.25)
                idle.append(lag())
            shown = ["%.4f" % v for v in idle]
            if interval:
                t.ok(min(idle) < 0.002 * pt.SLOW, "%s: an idle loop shows under 2 ms of lag, "
                     "on precise timers (least of %s)" % (what, shown))
            else:
                t.is_(min(idle), 0.0, "%s: an idle loop shows no lag (least of %s)"
                      % (what, shown))
            os.kill(srv.pid, signal.SIGSTOP)
            time.sleep(0.4)
            os.kill(srv.pid, signal.SIGCONT)
            stalled = lag()
            t.ok(least <= stalled < 5, "%s: a 0.4 s stall shows as loop lag >= %.2f s (%.4f)"
                 % (what, least, stalled))
            after = lag()
            t.ok(0 <= after < 0.1 * pt.SLOW, "%s: the next scrape starts again (%.4f s)"
                 % (what, after))
            t.is_(srv.stop(), 0, "%s: exit 0 after the stall" % what)

    # ---- history off: no parley_history_* series
    with pt.Server(listeners=[pt.listen("m", service="metrics")],
                   extra="\n[history]\nenabled = no\n") as srv:
        st, _, body = url_get("http://127.0.0.1:%d/metrics" % srv.port())
        t.is_(st, 200, "metrics-only server answers")
        t.ok(not re.search(r"(?m)^parley_history_", body),
             "no parley_history_* series with [history] enabled = no")
        t.is_(srv.stop(), 0, "metrics-only server exits 0")


pt.main(main, timeout=50)
