"""Shared harness for parley's integration tests (Python 3 standard library only).

Each test script:

    import parleytest as pt

    def main(t):
        with pt.Server(listeners=[pt.listen()]) as srv:
            got = pt.run(pt.echo_roundtrip(srv.port(), b"hi\n"))
            t.same_bytes(got, b"hi\n", "small echo")

    pt.main(main)

pt.main() prints TAP ("ok N - ...", "# diag", final "1..N"), arms a whole-script
watchdog, stops every server the script started, and exits 0 (all passed),
1 (a failure) or 77 (skip_all(): a required external tool is absent).
"""

import asyncio
import ctypes
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


# $PARLEYD_WRAPPER: a command put in front of every parleyd a test starts
# (make check-valgrind sets it to valgrind; daemon_argv() adds it).
# $PARLEYTEST_SLOW: the daemon is that many times slower without a wrapper
# (make check-tsan sets it for its ThreadSanitizer parleyd); a wrapper
# implies 6.  A slowed daemon gets SLOW times longer for start-up, stop,
# run(), connect(), wait_for() and the script watchdog, and is stopped with
# SIGTERM (not SIGKILL) at clean-up, so a wrapper can report and an
# instrumented daemon runs its teardown too.
WRAPPER = shlex.split(os.environ.get("PARLEYD_WRAPPER", ""))
SLOW = int(os.environ.get("PARLEYTEST_SLOW") or (6 if WRAPPER else 1))
GENTLE_STOP = bool(WRAPPER) or SLOW > 1


def parleyd_path():
    """The daemon under test: $PARLEYD (set by `make check`) or <repo>/src/parleyd."""
    return os.environ.get("PARLEYD") or os.path.join(REPO, "src", "parleyd")


def daemon_argv(*args):
    """The argv that runs the daemon under test with args, behind
    $PARLEYD_WRAPPER.  A script that starts parleyd itself (not through a
    Server) uses this, so that make check-valgrind checks that run too."""
    return WRAPPER + [parleyd_path()] + list(args)


def daemon_env(**extra):
    """os.environ without the service manager's variables (a test run from
    a systemd unit must not hand them on), plus extra."""
    env = dict(os.environ)
    for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
              "LISTEN_PID", "LISTEN_FDNAMES"):
        env.pop(k, None)
    env.update(extra)
    return env


KEEP = os.environ.get("PARLEYTEST_KEEP", "") not in ("", "0")

# --------------------------------------------------------------------------
# TAP


class ScriptTimeout(BaseException):
    """Raised by the watchdog alarm; BaseException so `except Exception` won't eat it."""


class SkipAll(BaseException):
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def _clean(desc):
    # '#' starts a TAP directive; newlines would break the stream.
    return " ".join(str(desc).replace("#", "No.").split())


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def _emit(self, line):
        print(line, flush=True)

    def diag(self, msg):
        for line in str(msg).splitlines() or [""]:
            self._emit("# " + line)

    def ok(self, cond, desc, diag=None):
        self.n += 1
        desc = _clean(desc)
        if cond:
            self._emit("ok %d - %s" % (self.n, desc))
        else:
            self.failed += 1
            self._emit("not ok %d - %s" % (self.n, desc))
            if diag:
                self.diag(diag)
        return bool(cond)

    def is_(self, got, expected, desc):
        return self.ok(got == expected, desc,
                       "     got: %r\nexpected: %r" % (_short(got), _short(expected)))

    def like(self, text, pattern, desc, flags=re.M):
        return self.ok(text is not None and re.search(pattern, text, flags) is not None,
                       desc, "text %r\ndoes not match /%s/" % (_short(text), pattern))

    def same_bytes(self, got, expected, desc):
        """Bytes equality with a useful diagnostic (lengths, first mismatch)."""
        if got == expected:
            return self.ok(True, desc)
        if got is None:
            return self.ok(False, desc, "got nothing (None), expected %d bytes" % len(expected))
        n = min(len(got), len(expected))
        first = next((i for i in range(n) if got[i] != expected[i]), n)
        return self.ok(False, desc,
                       "got %d bytes, expected %d; first difference at offset %d\n"
                       "got[%d:+16]=%r\nexp[%d:+16]=%r" % (
                           len(got), len(expected), first,
                           first, bytes(got[first:first + 16]),
                           first, bytes(expected[first:first + 16])))

    def skip(self, desc, reason):
        self.n += 1
        self._emit("ok %d - %s # SKIP %s" % (self.n, _clean(desc), _clean(reason)))

    def done(self):
        self._emit("1..%d" % self.n)
        return 0 if self.failed == 0 and self.n > 0 else 1


def _short(v, limit=200):
    if isinstance(v, (bytes, bytearray, str)) and len(v) > limit:
        return "%r... (%d total)" % (v[:limit], len(v))
    return v


def skip_all(reason):
    """Skip the whole script (exit 77). Only for a truly absent external tool."""
    raise SkipAll(reason)


def require_tool(name):
    path = shutil.which(name)
    if not path:
        skip_all("%s is not installed" % name)
    return path


def main(fn, timeout=55):
    """Run fn(tap) with a watchdog; always stop servers; exit with the TAP status."""
    t = Tap()

    def on_alarm(signum, frame):
        raise ScriptTimeout("script exceeded its %d s budget" % timeout)

    def on_term(signum, frame):
        raise SystemExit(1)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(timeout * SLOW)
    code = 1
    try:
        daemon = parleyd_path()
        if not (os.path.isfile(daemon) and os.access(daemon, os.X_OK)):
            t.ok(False, "daemon binary exists", "no executable at %s (set PARLEYD)" % daemon)
        else:
            fn(t)
        code = t.done()
    except SkipAll as e:
        signal.alarm(0)
        _stop_all()
        print("1..0 # SKIP %s" % _clean(e.reason), flush=True)
        code = 77
    except ServerStartError as e:
        _stop_all()
        t.ok(False, "parleyd starts and listens", str(e))
        code = t.done()
    except ScriptTimeout as e:
        _stop_all()
        t.ok(False, "script finished within its time budget", str(e) + "\n" + traceback.format_exc())
        code = t.done()
    except BaseException:  # noqa: B902 - report anything, then exit non-zero
        _stop_all()
        t.ok(False, "script ran without an unexpected exception", traceback.format_exc())
        code = t.done()
    finally:
        signal.alarm(0)
        _stop_all()
    sys.exit(code)


# --------------------------------------------------------------------------
# ports, addresses, certificates


_given_ports = set()


def free_port(family=socket.AF_INET, host="127.0.0.1"):
    """Ask the kernel for an unused port (bind 0, read, close). Racy but good
    enough; never the same port twice in one script (the kernel may hand a
    just-closed port out again, and two listeners on one port fail)."""
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port


def have_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def make_cert(directory):
    """Self-signed P-256 cert for localhost/127.0.0.1. Returns (cert, key) paths."""
    openssl = require_tool("openssl")
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    cmd = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-days", "2", "-subj", "/CN=localhost",
           "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
           "-keyout", key, "-out", cert]
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=20)
    if r.returncode != 0:
        raise RuntimeError("openssl req failed:\n" + r.stdout.decode(errors="replace"))
    return cert, key


def raise_nofile(want):
    """Raise RLIMIT_NOFILE soft limit (inherited by daemons started afterwards)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def tcp_rmem_max():
    try:
        with open("/proc/sys/net/ipv4/tcp_rmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 6 << 20


def tcp_wmem_max():
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 << 20


# --------------------------------------------------------------------------
# the server under test


def listen(name=None, address="127.0.0.1", port=None, service="echo", tls=False):
    """A [listen NAME] section; port=None picks a free port at start."""
    return {"name": name, "address": address, "port": port, "service": service, "tls": tls}


_servers = []


def _stop_all():
    for srv in list(_servers):
        try:
            if GENTLE_STOP and srv.alive():
                srv.stop()
            srv.kill()
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass


def _pdeathsig():
    # If the test process dies hard, take the daemon with it (Linux only).
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


class ServerStartError(Exception):
    pass


class Server:
    """A parleyd with its own temp dir, config, state directory and log.

    listeners: list of listen(...) dicts. tls=True makes a self-signed cert (or
    pass cert=(certpath, keypath)). server/echo: extra key=value for those
    sections (strings, written verbatim). extra: raw text appended to the config.
    nofile: RLIMIT_NOFILE (soft and hard) for the daemon, set before exec.

    Started means ready: the daemon said READY=1 on the NOTIFY_SOCKET the
    harness gave it (sent once listening, after the switch to [server] user
    and after history opened; from a daemon built --without-systemd, its
    "parleyd VERSION ready" log line that follows), and every listener
    accepted a probe connection.
    """

    def __init__(self, listeners=None, server=None, echo=None, tls=None, cert=None,
                 extra="", start=True, start_timeout=10, nofile=None):
        self.dir = tempfile.mkdtemp(prefix="parleytest-")
        self.state_dir = os.path.join(self.dir, "state")
        os.mkdir(self.state_dir)
        self.conf_path = os.path.join(self.dir, "parleyd.conf")
        self.log_path = os.path.join(self.dir, "parleyd.log")
        self.listeners = [dict(l) for l in (listeners or [listen()])]
        self.server_opts = {"log_level": "info", "shutdown_timeout": "5s",
                            "max_connections_per_ip": "0", "connection_rate_per_ip": "0"}
        if os.geteuid() == 0:
            # Tests run as root in CI; the daemon refuses that unless told.
            self.server_opts["allow_root"] = "yes"
        self.server_opts.update(server or {})
        self.echo_opts = dict(echo or {})
        self.extra = extra
        self.proc = None
        self.killed = False
        self.returncode = None
        self.start_timeout = start_timeout * SLOW
        self.nofile = nofile
        need_tls = tls if tls is not None else any(l["tls"] for l in self.listeners)
        self.cert = self.key = None
        if cert:
            self.cert, self.key = cert
        elif need_tls:
            self.cert, self.key = make_cert(self.dir)
        _servers.append(self)
        if start:
            try:
                self.start()
            except BaseException:
                self.cleanup()  # the exception message carries the log tail
                raise

    # -- config

    def config_text(self):
        out = ["[server]", "state_directory = %s" % self.state_dir]
        out += ["%s = %s" % kv for kv in self.server_opts.items()]
        if self.cert:
            out += ["", "[tls]", "certificate = %s" % self.cert, "private_key = %s" % self.key]
        if self.echo_opts:
            out += ["", "[echo]"] + ["%s = %s" % kv for kv in self.echo_opts.items()]
        for i, l in enumerate(self.listeners):
            out += ["", "[listen %s]" % (l["name"] or "l%d" % i),
                    "address = %s" % l["address"], "port = %d" % l["port"],
                    "service = %s" % l["service"], "tls = %s" % ("yes" if l["tls"] else "no")]
        return "\n".join(out) + "\n" + self.extra

    def _assign_ports(self, fresh):
        for l in self.listeners:
            if l.get("auto", l["port"] is None) and (fresh or l["port"] is None):
                l["auto"] = True
                fam = socket.AF_INET6 if ":" in l["address"] else socket.AF_INET
                l["port"] = free_port(fam, l["address"])

    # -- lifecycle

    def start(self):
        for attempt in range(3):
            self._assign_ports(fresh=attempt > 0)
            with open(self.conf_path, "w") as f:
                f.write(self.config_text())
            try:
                self._spawn()
                return self
            except ServerStartError as e:
                # Another test may have grabbed our "free" port: retry with new ones.
                if attempt < 2 and re.search(r"in use|EADDRINUSE", self.log(), re.I) \
                        and any(l.get("auto") for l in self.listeners):
                    continue
                raise e
        return self

    def _spawn(self):
        self.killed = False
        self.returncode = None
        # The manager's end of NOTIFY_SOCKET, in the abstract namespace: no
        # file for a daemon that switched user to be refused.
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        name = "parleytest-%d-%s" % (os.getpid(), os.urandom(6).hex())
        try:
            notify.bind("\0" + name)
            log_start = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
            logf = open(self.log_path, "ab")
            try:
                self.proc = subprocess.Popen(
                    daemon_argv("-c", self.conf_path), stdin=subprocess.DEVNULL,
                    stdout=logf, stderr=logf, cwd=self.dir, preexec_fn=self._preexec,
                    env=daemon_env(NOTIFY_SOCKET="@" + name))
            finally:
                logf.close()
            deadline = time.monotonic() + self.start_timeout
            self._await_ready(notify, log_start, deadline)
        finally:
            # Later STATUS= and READY=1 (reloads) go nowhere; parleyd ignores that.
            notify.close()
        pending = list(self.listeners)
        probes = []
        while pending:
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise ServerStartError("parleyd exited with status %s during start-up; log:\n%s"
                                       % (self.proc.returncode, self.log_tail()))
            l = pending[0]
            try:
                fam = socket.AF_INET6 if ":" in l["address"] else socket.AF_INET
                with socket.socket(fam, socket.SOCK_STREAM) as s:
                    s.settimeout(0.5)
                    s.connect((l["address"], l["port"]))
                    probes.append(s.getsockname()[1])
                pending.pop(0)
                continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise ServerStartError("listener %s:%d not accepting after %ss; log:\n%s"
                                       % (l["address"], l["port"], self.start_timeout,
                                          self.log_tail()))
            time.sleep(0.05)
        # The probes count as connections (per address too) until the
        # daemon has seen them close: let it, so a test starts from zero.
        wait_for(lambda: not self._peers_from(probes), 5)

    def _await_ready(self, notify, log_start, deadline):
        """Until READY=1 arrives on notify (or the daemon logs that it is
        ready); ServerStartError if it exits or the deadline passes."""
        ready_re = re.compile(r"parleyd \S+ ready$", re.M)
        while True:
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise ServerStartError("parleyd exited with status %s during start-up; log:\n%s"
                                       % (self.proc.returncode, self.log_tail()))
            if time.monotonic() > deadline:
                self.kill()
                raise ServerStartError("no READY=1 from parleyd after %ss; log:\n%s"
                                       % (self.start_timeout, self.log_tail()))
            notify.settimeout(0.05)
            try:
                if "READY=1" in notify.recv(4096).decode(errors="replace").split("\n"):
                    return
            except (socket.timeout, TimeoutError):
                pass
            if ready_re.search(self._log_from(log_start)):
                return

    def _log_from(self, offset):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _peers_from(self, ports):
        """Which of these client ports the daemon still holds a socket to."""
        try:
            inodes = set()
            for fd in os.listdir("/proc/%d/fd" % self.pid):
                link = os.readlink("/proc/%d/fd/%s" % (self.pid, fd))
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            return []
        held = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    rows = f.read().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                col = row.split()
                if len(col) > 9 and col[9] in inodes:
                    port = int(col[2].rsplit(":", 1)[1], 16)
                    if port in ports:
                        held.append(port)
        return held

    def _preexec(self):
        _pdeathsig()
        if self.nofile is not None:
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def port(self, i=0):
        return self.listeners[i]["port"]

    def address(self, i=0):
        return self.listeners[i]["address"]

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Send sig, wait up to timeout; SIGKILL if needed (then .killed is True).
        Returns the exit code (negative = killed by that signal, Popen style)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.returncode = self.proc.returncode
        return self.returncode

    def wait(self, timeout=10):
        """Wait for the process to exit on its own (no signal); SIGKILL after timeout."""
        if self.proc is None:
            return None
        try:
            self.proc.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.kill()
        self.returncode = self.proc.returncode
        return self.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.killed = True
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            self.returncode = self.proc.returncode

    def cleanup(self):
        if GENTLE_STOP and self.alive():
            self.stop()  # let the wrapper finish its report
        self.kill()
        if self in _servers:
            _servers.remove(self)
        if not KEEP:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False

    # -- observation

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, n=40):
        lines = self.log().splitlines()
        return "\n".join(lines[-n:]) if lines else "(log is empty)"

    def rss_kib(self, field="VmRSS"):
        """A /proc/PID/status memory line in KiB: VmRSS, or RssAnon (the
        process's own memory, without the shared library pages in RSS)."""
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return None

    def fd_count(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def memory_checker(self):
        """"asan" (AddressSanitizer build), "valgrind" (run under it) or None.
        Both keep freed memory resident for a while, so RSS bounds need room."""
        try:
            with open("/proc/%d/maps" % self.pid) as f:
                maps = f.read()
        except OSError:
            return None
        # Not the exe path: a build directory may have "valgrind" in its name.
        if "vgpreload_" in maps:
            return "valgrind"
        if "libasan" in maps:
            return "asan"
        return None

    def cpu_seconds(self):
        """User + system CPU time the daemon has used so far (all threads)."""
        with open("/proc/%d/stat" % self.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # after "pid (comm)": state is field 3, utime 14 and stime 15
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# asyncio clients


def run(coro, timeout=30):
    """asyncio.run with a hard timeout (raises asyncio.TimeoutError)."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout * SLOW)
    return asyncio.run(bounded())


def client_ctx(cafile=None, minimum=None, maximum=None, seclevel0=False):
    """TLS client context. cafile: verify against it (hostname localhost);
    otherwise no verification at all."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if seclevel0:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


async def connect(port, host="127.0.0.1", tls=None, timeout=5, server_hostname=None, sock=None):
    """Open a stream connection; tls is an SSLContext or None. Returns (reader, writer).
    The daemon accepts and shakes hands within timeout (SLOW times longer
    for a slowed daemon)."""
    timeout *= SLOW
    kw = {"limit": 1 << 20}
    if tls is not None:
        kw["ssl"] = tls
        kw["server_hostname"] = server_hostname or "localhost"
        kw["ssl_handshake_timeout"] = timeout
    if sock is not None:
        coro = asyncio.open_connection(sock=sock, **kw)
    else:
        coro = asyncio.open_connection(host, port, **kw)
    return await asyncio.wait_for(coro, timeout)


async def read_exactly(reader, n, timeout=10):
    """Read until n bytes or EOF/timeout; returns what arrived (may be short)."""
    buf = bytearray()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(buf) < n:
        left = deadline - loop.time()
        if left <= 0:
            break
        try:
            chunk = await asyncio.wait_for(reader.read(min(n - len(buf), 1 << 20)), left)
        except (asyncio.TimeoutError, ConnectionError, ssl.SSLError):
            break
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


async def read_line(reader, timeout=5):
    """One line (with its newline), b'' on EOF, None on timeout."""
    try:
        return await asyncio.wait_for(reader.readline(), timeout)
    except asyncio.TimeoutError:
        return None


async def read_to_eof(reader, timeout=10, limit=1 << 30):
    """Everything until EOF. Returns (data, got_eof)."""
    buf = bytearray()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(buf) < limit:
        left = deadline - loop.time()
        if left <= 0:
            return bytes(buf), False
        try:
            chunk = await asyncio.wait_for(reader.read(1 << 20), left)
        except asyncio.TimeoutError:
            return bytes(buf), False
        except (ConnectionError, ssl.SSLError):
            return bytes(buf), True
        if not chunk:
            return bytes(buf), True
        buf += chunk
    return bytes(buf), False


async def send_all(writer, data, chunk=64 * 1024, timeout=20):
    """Write data in chunks, draining each (so a non-reading peer stalls us)."""
    mv = memoryview(data)
    for off in range(0, len(mv), chunk):
        writer.write(mv[off:off + chunk])
        await asyncio.wait_for(writer.drain(), timeout)


async def close(writer):
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 2)
    except Exception:  # noqa: BLE001 - peer may already be gone
        pass


async def echo_roundtrip(port, payload, host="127.0.0.1", tls=None, timeout=20):
    """Connect, send payload while reading concurrently, return what came back
    (exactly len(payload) bytes unless the server misbehaved)."""
    reader, writer = await connect(port, host=host, tls=tls, timeout=min(timeout, 5))
    try:
        sender = asyncio.ensure_future(send_all(writer, payload, timeout=timeout))
        got = await read_exactly(reader, len(payload), timeout=timeout)
        if not sender.done():
            sender.cancel()
        try:
            await sender
        except (asyncio.CancelledError, Exception):  # noqa: BLE001
            pass
        return got
    finally:
        await close(writer)


def tcp_connect(port, timeout=5, host="127.0.0.1"):
    """A blocking client socket with Nagle off (tests send small lines)."""
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_until(s, want, timeout):
    """Read a blocking socket until `want` (bytes) was seen, EOF, or
    timeout; returns the bytes."""
    buf = b""
    deadline = time.monotonic() + timeout
    while want not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            d = s.recv(65536)
        except (socket.timeout, OSError):
            break
        if not d:
            break
        buf += d
    return buf


def wait_for(pred, timeout=5, interval=0.05):
    """Poll pred() until truthy or timeout (SLOW times longer for a slowed
    daemon: it waits for the daemon); returns the last value."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)
