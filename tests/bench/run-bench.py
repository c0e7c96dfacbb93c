#!/usr/bin/env python3
"""make bench: parleyd beside its references and peers, in one table.

Starts each server in turn (pinned to CPU 0 with taskset), drives it with
parley-bench (pinned to CPU 1), and prints one row per figure: parleyd, the
epoll references (epoll-echo, epoll-chat), ncat --broker --chat and ngircd,
and parleyd's ratio to each.  Standard library only.

    run-bench.py --builddir DIR [--srcdir DIR] [--quick] [--only ROW,...]

Exit status: 0 when every run could be made, 1 when one could not (a
missing peer is not an error: its column says why).
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

SERVER_CPU = "0"
NCAT_MAX = 1000  # ncat --broker cannot go past fd 1023
CLIENT_CPU = "1"


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


_given_ports = set()


def free_port():
    """An unused loopback port, never the same one twice in a run."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port


def wait_port(port, proc, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def pin(cpu):
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", cpu]
    return []


class Peer:
    """One server process: started, pinned, waited for, stopped."""

    def __init__(self, name, argv, ports, tmp, env=None):
        self.name = name
        self.argv = argv
        self.ports = ports
        self.logpath = os.path.join(tmp, name + ".log")
        self.env = env
        self.proc = None

    def __enter__(self):
        self.logf = open(self.logpath, "w")
        self.proc = subprocess.Popen(pin(SERVER_CPU) + self.argv, stdout=self.logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=self.env, start_new_session=True)
        for p in self.ports:
            if not wait_port(p, self.proc):
                self.__exit__()
                raise RuntimeError("%s did not start; see %s" % (self.name, self.logpath))
        time.sleep(0.2)
        return self

    def pid(self):
        # taskset execs the server, so the pid is the server's.
        return self.proc.pid

    def __exit__(self, *a):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


def run_bench(bench, args, timeout=200):
    """Run parley-bench; returns the RESULT dict (or raises)."""
    cmd = pin(CLIENT_CPU) + [bench] + args + ["-q"]
    log(" ".join(cmd[len(pin(CLIENT_CPU)):]))
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout)
    res = None
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            res = dict(kv.split("=", 1) for kv in line.split()[1:])
    if res is None:
        raise RuntimeError("parley-bench failed (%d): %s" % (r.returncode, r.stderr.strip()[-300:]))
    for line in r.stdout.splitlines():
        if not line.startswith("RESULT "):
            log("  " + line.strip())
    return res


def parleyd_conf(tmp, cert, key, ports, history):
    state = tempfile.mkdtemp(prefix="state-", dir=tmp)
    root = "allow_root = yes\n" if os.geteuid() == 0 else ""
    path = os.path.join(tmp, "parleyd-%s.conf" % ("hist" if history else "nohist"))
    with open(path, "w") as f:
        f.write("""[server]
state_directory = %s
log_level = warning
%s%smax_connections = 30000
max_connections_per_ip = 0
connection_rate_per_ip = 0
handshake_timeout = 60s

[tls]
certificate = %s
private_key = %s

[chat]
; the bench measures throughput, not flood control
flood_rate = 1000000
flood_burst = 1000000

[history]
enabled = %s
replay = 0

[listen chat]
address = 127.0.0.1
port = %d
service = chat

[listen chat-tls]
address = 127.0.0.1
port = %d
service = chat
tls = yes

[listen echo]
address = 127.0.0.1
port = %d
service = echo

[listen echo-tls]
address = 127.0.0.1
port = %d
service = echo
tls = yes
""" % (state, root, "loop_lag_interval = 1ms\n" if "metrics" in ports else "",
            cert, key, "yes" if history else "no",
            ports["chat"], ports["chat-tls"], ports["echo"], ports["echo-tls"]))
        if "metrics" in ports:
            # The loop's own stall witness: a 1 ms lag probe (precise timers).
            f.write("\n[listen metrics]\naddress = 127.0.0.1\nport = %d\nservice = metrics\n"
                    % ports["metrics"])
    return path


def scrape(port):
    """parleyd's /metrics as {name: value} (unlabelled series only).  The
    scrape restarts parley_loop_lag_seconds, the worst lag since the last."""
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    m = dict((k, float(v)) for k, v in re.findall(r"(?m)^(parley_[a-z_]+) ([0-9.eE+-]+)$", body))
    if "parley_loop_lag_seconds" not in m:
        raise RuntimeError("no parley_loop_lag_seconds in /metrics")
    return m


def ngircd_conf(tmp, cert, key, port, tlsport):
    d = os.path.join(tmp, "ngircd")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "ngircd.conf")
    uid = "ServerUID = 0\nServerGID = 0\n" if os.geteuid() == 0 else ""
    with open(path, "w") as f:
        f.write("""[Global]
Name = bench.local
Info = parley bench
Listen = 127.0.0.1
Ports = %d
PidFile = %s/ngircd.pid
MotdPhrase = bench
%s
[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 30
MaxPenaltyTime = 0
PingTimeout = 600
PongTimeout = 600

[Options]
DNS = no
Ident = no
PAM = no

[SSL]
CertFile = %s
KeyFile = %s
Ports = %d
""" % (port, d, uid, cert, key, tlsport))
    return path


def fmt(v, unit):
    if v is None:
        return "-"
    if unit in ("KiB", "ms", "us"):
        return "%.2f" % v if v < 100 else "%.0f" % v
    if v >= 10000:
        return "{:,.0f}".format(v)
    return "%.1f" % v if v != int(v) else "%d" % v


class Table:
    def __init__(self):
        self.rows = []

    def add(self, label, unit, better, parley, refs, note=""):
        """refs: list of (name, value or None or 'why')."""
        self.rows.append((label, unit, better, parley, refs, note))

    def render(self):
        out = []
        hdr = "%-44s %-9s %12s  %s" % ("figure", "unit", "parleyd", "reference: value (parleyd ratio)")
        out.append(hdr)
        out.append("-" * len(hdr))
        for label, unit, better, parley, refs, note in self.rows:
            cells = []
            for name, v in refs:
                if isinstance(v, str):
                    cells.append("%s: %s" % (name, v))
                elif v is None:
                    cells.append("%s: -" % name)
                elif parley is not None and v:
                    ratio = parley / v
                    cells.append("%s: %s (%.2fx)" % (name, fmt(v, unit), ratio))
                else:
                    cells.append("%s: %s" % (name, fmt(v, unit)))
            line = "%-44s %-9s %12s  %s" % (label, unit + ("" if better is None else (" " + better)),
                                            fmt(parley, unit), "; ".join(cells))
            if note:
                line += "  [" + note + "]"
            out.append(line)
        return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--builddir", default=".")
    ap.add_argument("--srcdir", default=None)
    ap.add_argument("--quick", action="store_true", help="short runs (smoke)")
    ap.add_argument("--only", default="", help="comma list: echo,tls,chat,latency,history,stall,writer,hold,handshake")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--parleyd", default=None, help="another parleyd binary (before/after runs)")
    a = ap.parse_args()
    b = os.path.abspath(a.builddir)
    bench = os.path.join(b, "tests/bench/parley-bench")
    echo_ref = os.path.join(b, "tests/bench/epoll-echo")
    chat_ref = os.path.join(b, "tests/bench/epoll-chat")
    hist_bench = os.path.join(b, "tests/bench/history_bench")
    parleyd = os.path.abspath(a.parleyd) if a.parleyd else os.path.join(b, "src/parleyd")
    for p in (bench, echo_ref, chat_ref, parleyd):
        if not os.access(p, os.X_OK):
            log("missing %s (make bench builds it)" % p)
            return 1
    only = set(x for x in a.only.split(",") if x)

    def want(name):
        return not only or name in only

    ncat = shutil.which("ncat")
    ngircd = shutil.which("ngircd") or (os.access("/usr/sbin/ngircd", os.X_OK) and "/usr/sbin/ngircd")
    missing = [pkg for pkg, have in (("ncat", ncat), ("ngircd", ngircd)) if not have]
    if missing:
        log("peer(s) not installed: their columns stay empty.  On Debian: "
            "apt-get install %s" % " ".join(missing))

    D = 1.5 if a.quick else 4.0
    W = 0.5 if a.quick else 1.0
    HOLD_N = 1000 if a.quick else 10000
    HOLD_BIG = 2000 if a.quick else 20000
    tmp = tempfile.mkdtemp(prefix="parley-bench-")
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want_fd = 65536
    if hard != resource.RLIM_INFINITY:
        want_fd = min(want_fd, hard)
    if hard != resource.RLIM_INFINITY and hard < 65536 and os.geteuid() == 0:
        try:  # root may raise the hard limit (servers inherit it)
            resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
            soft = hard = want_fd = 65536
        except (OSError, ValueError):
            pass
    if soft < want_fd:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want_fd, hard))
    hold_goal = HOLD_BIG
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if fd_limit < HOLD_BIG + 100:
        # Each side needs an fd per connection plus a few of its own.
        HOLD_BIG = fd_limit - 100
        log("RLIMIT_NOFILE is %d (and could not be raised): the big hold row "
            "asks for %d connections" % (fd_limit, HOLD_BIG))

    t = Table()
    failures = []
    t_start = time.time()

    def parley_server(history=False, lag_probe=False):
        names = ("chat", "chat-tls", "echo", "echo-tls") + (("metrics",) if lag_probe else ())
        ports = {k: free_port() for k in names}
        conf = parleyd_conf(tmp, cert, key, ports, history)
        return Peer("parleyd" + ("-hist" if history else ""), [parleyd, "-c", conf],
                    list(ports.values()), tmp), ports

    def epoll_server(tls):
        port = free_port()
        argv = [echo_ref, "-p", str(port)]
        if tls:
            argv += ["--cert", cert, "--key", key]
        return Peer("epoll-echo" + ("-tls" if tls else ""), argv, [port], tmp), port

    def epoll_chat_server():
        port = free_port()
        return Peer("epoll-chat", [chat_ref, "-p", str(port)], [port], tmp), port

    def ncat_server(chat=True, tls=False):
        port = free_port()
        argv = [ncat, "-l", "--broker", "--max-conns", "30000"]
        if chat:
            argv.append("--chat")
        if tls:
            argv += ["--ssl", "--ssl-cert", cert, "--ssl-key", key]
        argv += ["127.0.0.1", str(port)]
        return Peer("ncat", argv, [port], tmp), port

    def ngircd_server():
        port, tlsport = free_port(), free_port()
        conf = ngircd_conf(tmp, cert, key, port, tlsport)
        return Peer("ngircd", [ngircd, "-n", "-f", conf], [port, tlsport], tmp), port, tlsport

    def attempt(what, fn):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - one failed run must not stop the table
            failures.append("%s: %s" % (what, e))
            log("FAILED %s: %s" % (what, e))
            return None

    def get(res, key):
        if res is None:
            return None
        if res.get("mode") == "hold" and (float(res["rss1_kib"]) < 0 or
                                          float(res["up"]) < 0.95 * float(res["want"])):
            return None  # the server died or held too few: no per-connection figure
        return float(res[key])

    echo_args = ["-c", "50", "-i", "16", "-s", "64", "-d", str(D), "-w", str(W)]
    chat_args = ["-c", "200", "-k", "10", "-d", str(D), "-w", str(W)]
    lat_args = ["-c", "200", "-k", "10", "-r", "10", "-d", str(D), "-w", str(W)]

    # echo, plain and TLS: parleyd against the epoll references
    for tls in (False, True):
        key_ = "tls" if tls else "echo"
        if not want(key_):
            continue
        extra = ["--tls"] if tls else []
        srv, ports = parley_server()
        with srv:
            p = attempt("parleyd echo", lambda: run_bench(bench, ["echo", "-p", str(ports["echo-tls" if tls else "echo"]),
                                                                  "--pid", str(srv.pid())] + echo_args + extra))
        ref, port = epoll_server(tls)
        with ref:
            r = attempt("epoll echo", lambda: run_bench(bench, ["echo", "-p", str(port), "--pid", str(ref.pid())]
                                                        + echo_args + extra))
        name = "epoll+OpenSSL" if tls else "epoll"
        lab = "echo%s 50x16 64 B" % (" TLS" if tls else "")
        t.add(lab + ": msgs per server-CPU-s", "msg/cpu-s", "(more)", get(p, "per_cpu_s"),
              [(name, get(r, "per_cpu_s"))], "target >= %.2fx" % (0.75 if tls else 0.6))
        t.add(lab + ": msgs/s", "msg/s", "(more)", get(p, "msgs_s"), [(name, get(r, "msgs_s"))])
        t.add(lab + ": RTT p99", "us", "(less)", get(p, "p99_us"), [(name, get(r, "p99_us"))])

    # chat: fan-out (closed loop) and latency (paced), parleyd against the
    # epoll-chat reference (the practical limit) and the peers
    for kind in ("chat", "latency"):
        if not want(kind):
            continue
        args = chat_args if kind == "chat" else lat_args
        res = {}
        srv, ports = parley_server()
        with srv:
            res["parleyd"] = attempt("parleyd " + kind, lambda: run_bench(
                bench, ["chat", "-p", str(ports["chat"]), "--pid", str(srv.pid())] + args))
        ref, port = epoll_chat_server()
        with ref:
            res["epoll"] = attempt("epoll-chat " + kind, lambda: run_bench(
                bench, ["chat", "--proto", "line", "-p", str(port), "--pid", str(ref.pid())] + args))
        if ngircd:
            g, port, _ = ngircd_server()
            with g:
                res["ngircd"] = attempt("ngircd " + kind, lambda: run_bench(
                    bench, ["chat", "--proto", "irc", "-p", str(port), "--pid", str(g.pid())] + args))
        if ncat:
            n, port = ncat_server()
            with n:
                res["ncat"] = attempt("ncat " + kind, lambda: run_bench(
                    bench, ["chat", "--proto", "raw", "--connect-batch", "8", "-p", str(port),
                            "--pid", str(n.pid())] + args))
        peers = [("epoll", res.get("epoll")),
                 ("ngircd", res.get("ngircd") if ngircd else "apt-get install ngircd"),
                 ("ncat", res.get("ncat") if ncat else "apt-get install ncat")]

        def col(k):
            return [(nm, v if isinstance(v, str) else get(v, k)) for nm, v in peers]
        if kind == "chat":
            t.add("chat 200/10 closed: deliveries per server-CPU-s", "dlv/cpu-s", "(more)",
                  get(res["parleyd"], "per_cpu_s"), col("per_cpu_s"), "target >= 1.25x ngircd")
            t.add("chat 200/10 closed: deliveries/s", "dlv/s", "(more)",
                  get(res["parleyd"], "deliv_s"), col("deliv_s"))
            t.add("chat 200/10 closed: lost", "msgs", "(0)", get(res["parleyd"], "lost"), col("lost"))
            chat_parley = res["parleyd"]
        else:
            t.add("chat 200/10 @10/s: delivery latency p99", "ms", "(less)",
                  get(res["parleyd"], "p99_ms"), col("p99_ms"), "target <= 2 ms")
            t.add("chat 200/10 @10/s: delivery latency p50", "ms", "(less)",
                  get(res["parleyd"], "p50_ms"), col("p50_ms"))
            t.add("chat 200/10 @10/s: delivery latency p99.9", "ms", "(less)",
                  get(res["parleyd"], "p999_ms"), col("p999_ms"))
            t.add("chat 200/10 @10/s: lost", "msgs", "(0)", get(res["parleyd"], "lost"), col("lost"))

    # History on against off: the expected difference (the writer's ~3 us
    # per line against ~55 us of fan-out per line) is smaller than the
    # run-to-run spread of one figure (about 10 %), so the two alternate
    # three times; each pair (off, then on, back to back) gives a ratio and
    # the row shows the pair with the median ratio.
    if want("history"):
        def fanout(history):
            srv, ports = parley_server(history=history)
            with srv:
                return run_bench(bench, ["chat", "-p", str(ports["chat"]),
                                         "--pid", str(srv.pid())] + chat_args)
        pairs = []
        for _ in range(3):
            off_r = attempt("parleyd chat history off", lambda: fanout(False))
            on_r = attempt("parleyd chat history on", lambda: fanout(True))
            if off_r is not None and on_r is not None:
                pairs.append((on_r, off_r))
        pairs.sort(key=lambda p: float(p[0]["per_cpu_s"]) / float(p[1]["per_cpu_s"]))
        log("  history on / off, dlv per CPU-s: %s" % ", ".join(
            "%d / %d (%.2fx)" % (float(a["per_cpu_s"]), float(b["per_cpu_s"]),
                                 float(a["per_cpu_s"]) / float(b["per_cpu_s"])) for a, b in pairs))
        mid = pairs[len(pairs) // 2] if pairs else (None, None)
        t.add("chat 200/10 closed, history on: dlv per CPU-s", "dlv/cpu-s", "(more)",
              get(mid[0], "per_cpu_s"), [("history off", get(mid[1], "per_cpu_s"))],
              "target >= 0.95x; the median of %d back-to-back pairs" % len(pairs))
        t.add("chat 200/10 closed, history on: lost", "msgs", "(0)",
              max((float(a["lost"]) for a, _ in pairs), default=None), [])

    # Loop stalls while the history writer works through a backlog.  A
    # 2-client chat flood (closed loop, 256 lines in flight) runs for
    # STALL_FLOOD s (sized for a backlog past 100,000 lines and short of
    # queue_limit, 200,000): the loop takes lines faster than the writer, which
    # shares its core below it, can commit, so a backlog builds; then the
    # flood stops and the writer works the backlog off while a 1-connection
    # echo probe keeps the loop busy.  The loop's own 1 ms lag probe
    # (scraped every 100 ms, the worst kept) covers both phases; history
    # off is the control.  Every line must be written (none dropped).
    STALL_FLOOD = 1.0
    if want("stall"):
        def stall(history):
            srv, ports = parley_server(history=history, lag_probe=True)
            mport = ports["metrics"]
            with srv:
                scrape(mport)  # restart the lag gauge
                probe = subprocess.Popen(
                    pin(CLIENT_CPU) + [bench, "echo", "-p", str(ports["echo"]), "-c", "1", "-i", "1",
                                       "-d", str(STALL_FLOOD + 6), "-w", "0", "-q"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                flood = run_bench(bench, ["chat", "-p", str(ports["chat"]), "-c", "2", "-k", "1",
                                          "-W", "256", "-d", str(STALL_FLOOD), "-w", "0",
                                          "--pid", str(srv.pid())])
                m = scrape(mport)
                lag = lag_flood = m["parley_loop_lag_seconds"] * 1000
                backlog = m.get("parley_history_queue_depth", 0)
                t0, drain = time.monotonic(), None
                while history and time.monotonic() - t0 < 30:
                    time.sleep(0.1)
                    m = scrape(mport)
                    lag = max(lag, m["parley_loop_lag_seconds"] * 1000)
                    if m.get("parley_history_queue_depth", 1) == 0:
                        drain = time.monotonic() - t0
                        break
                out, _ = probe.communicate(timeout=60)
                m = scrape(mport)
                lag = max(lag, m["parley_loop_lag_seconds"] * 1000)
            res = {}
            for line in out.splitlines():
                if line.startswith("RESULT "):
                    res = dict(kv.split("=", 1) for kv in line.split()[1:])
            if not res:
                raise RuntimeError("echo probe failed")
            written = m.get("parley_history_written_total", 0)
            dropped = m.get("parley_history_dropped_total", 0)
            if history and drain is None:
                raise RuntimeError("the history backlog was not written within 30 s")
            if dropped:
                raise RuntimeError("%d lines dropped (the backlog reached queue_limit)" % dropped)
            log("  loop lag max %.2f ms (%.2f during the flood); probe: max %s us, p99.9 %s us; flood sent %s; backlog %d, "
                "written %d in %s s after the flood, dropped %d"
                % (lag, lag_flood, res["max_us"], res["p999_us"], flood["sent"], backlog, written,
                   "%.1f" % drain if drain is not None else "-", dropped))
            return (lag, float(res["max_us"]) / 1000, float(res["p999_us"]) / 1000,
                    backlog, written, dropped)
        on = attempt("stall history on", lambda: stall(True))
        off = attempt("stall history off", lambda: stall(False))
        t.add("loop stall while a history backlog is written: worst loop lag", "ms", "(less)",
              on and on[0], [("history off", off and off[0])],
              "target <= 5 ms; backlog %s, %s written, %s dropped"
              % tuple("{:,.0f}".format(v) if on else "?" for v in (on or (0, 0, 0, 0, 0, 0))[3:]))
        t.add("  same: probe max RTT", "ms", "(less)", on and on[1], [("history off", off and off[1])])
        t.add("  same: probe RTT p99.9", "ms", "(less)", on and on[2], [("history off", off and off[2])])

    if want("writer"):
        def writer():
            if not os.access(hist_bench, os.X_OK):
                raise RuntimeError("missing " + hist_bench)
            cmd = pin(CLIENT_CPU) + [hist_bench, "1500"]
            log(" ".join(cmd))
            out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=120, check=True).stdout
            batched = single = None
            for line in out.splitlines():
                log("  " + line)
                m = re.match(r"batched \(512, 50 ms\)\s+\d+\s+\d+\s+[\d.]+\s+(\d+)\s+\d+\s+([\d.]+)", line)
                if m:
                    batched = float(m.group(1)), float(m.group(2))
                m = re.match(r"one txn per line\s+\d+\s+\d+\s+[\d.]+\s+(\d+)", line)
                if m:
                    single = float(m.group(1))
            if batched is None:
                raise RuntimeError("no batched row in history_bench output")
            return batched[0], batched[1], single
        w = attempt("history writer", writer)
        t.add("history writer (batch 512): messages/s", "msg/s", "(more)", w and w[0],
              [("one txn per line", w and w[2])], "target >= 200,000")
        t.add("history writer: longest commit", "ms", "(less)", w and w[1], [])

    # idle connections: server RSS per connection
    if want("hold"):
        for tls in (False, True):
            extra = ["--tls"] if tls else []
            hold = ["hold", "-c", str(HOLD_N), "-d", "1", "-w", "2"] + extra
            srv, ports = parley_server()
            with srv:
                p = attempt("parleyd hold", lambda: run_bench(
                    bench, hold + ["-p", str(ports["echo-tls" if tls else "echo"]), "--pid", str(srv.pid())]))
            ref, port = epoll_server(tls)
            with ref:
                r = attempt("epoll hold", lambda: run_bench(bench, hold + ["-p", str(port), "--pid", str(ref.pid())]))
            res = {}
            if ngircd:
                g, port, tport = ngircd_server()
                with g:
                    res["ngircd"] = attempt("ngircd hold", lambda: run_bench(
                        bench, hold + ["-p", str(tport if tls else port), "--pid", str(g.pid())]))
            if ncat:
                # ncat's broker select()s: it dies at fd 1024 (FD_SETSIZE).
                n, port = ncat_server(chat=False, tls=tls)
                hold_ncat = ["hold", "-c", str(min(HOLD_N, NCAT_MAX)), "-d", "1", "-w", "2"] + extra
                with n:
                    res["ncat"] = attempt("ncat hold", lambda: run_bench(
                        bench, hold_ncat + ["-p", str(port), "--connect-batch", "64", "--pid", str(n.pid())]))
            refs = [("epoll+OpenSSL" if tls else "epoll", get(r, "kib_per_conn"))]
            refs += [("ngircd", get(res.get("ngircd"), "kib_per_conn") if ngircd else "apt-get install ngircd"),
                     ("ncat@%d" % min(HOLD_N, NCAT_MAX),
                      get(res.get("ncat"), "kib_per_conn") if ncat else "apt-get install ncat")]
            t.add("idle %s conns x %d: server RSS per conn" % ("TLS" if tls else "plain", HOLD_N), "KiB", "(less)",
                  get(p, "kib_per_conn"), refs, "target <= %d KiB" % (10 if tls else 2))
        srv, ports = parley_server()
        with srv:
            p = attempt("parleyd hold big", lambda: run_bench(
                bench, ["hold", "--tls", "-c", str(HOLD_BIG), "-d", "3", "-w", "2",
                        "-p", str(ports["chat-tls"] if False else ports["echo-tls"]), "--pid", str(srv.pid())], 300))
        t.add("TLS clients held at once (asked %d)" % HOLD_BIG, "conns", "(more)",
              p and float(p["up"]), [], "%s KiB/conn%s" % (
                  fmt(get(p, "kib_per_conn"), "KiB"),
                  "" if HOLD_BIG == hold_goal else "; target %d, fd limit %d" % (hold_goal, fd_limit)))
        srv, ports = parley_server()
        n_chat = 200 if a.quick else 2000
        with srv:
            p = attempt("parleyd hold chat", lambda: run_bench(
                bench, ["hold", "-c", str(n_chat), "-d", "1", "-w", "3",
                        "-p", str(ports["chat"]), "--pid", str(srv.pid())], 300))
        t.add("idle chat clients x %d in #lobby: RSS per conn" % n_chat, "KiB", "(less)",
              get(p, "kib_per_conn"), [])

    # TLS handshakes: server CPU per handshake, full and resumed
    if want("handshake"):
        for resume in (False, True):
            extra = ["--resume"] if resume else []
            hs = ["handshake", "-c", "16", "-d", str(D), "-w", str(W)] + extra
            srv, ports = parley_server()
            with srv:
                p = attempt("parleyd handshake", lambda: run_bench(
                    bench, hs + ["-p", str(ports["echo-tls"]), "--pid", str(srv.pid())]))
            ref, port = epoll_server(True)
            with ref:
                r = attempt("epoll handshake", lambda: run_bench(bench, hs + ["-p", str(port), "--pid", str(ref.pid())]))
            kind = "resumed" if resume else "full"
            t.add("TLS %s handshake: server CPU per handshake" % kind, "us", "(less)",
                  get(p, "us_per_hs"), [("epoll+OpenSSL", get(r, "us_per_hs"))],
                  "target <= 1.15x" if not resume else "")
            t.add("TLS %s handshakes/s" % kind, "hs/s", "(more)", get(p, "hs_s"),
                  [("epoll+OpenSSL", get(r, "hs_s"))])
            if resume:
                t.add("TLS resumed: sessions actually resumed", "of done", None,
                      get(p, "resumed"), [("of", get(p, "done"))])

    print()
    print("parley bench: %d CPUs, server on CPU %s, load generator on CPU %s; %.0f s measured per run; "
          "took %.0f s" % (os.cpu_count() or 0, SERVER_CPU, CLIENT_CPU, D, time.time() - t_start))
    print("ratio = parleyd / reference (for 'less' figures a ratio below 1 is better)")
    print(t.render())
    if failures:
        print("\nruns that failed:")
        for f in failures:
            print("  " + f)
    if missing:
        print("\nnot installed: %s  (Debian: apt-get install %s)" % (" ".join(missing), " ".join(missing)))
    if a.keep:
        print("\nlogs in " + tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
