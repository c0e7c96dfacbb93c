#!/usr/bin/env python3
"""Socket activation with the real systemd-socket-activate (no --accept, so
the listening socket itself is passed with LISTEN_FDS/LISTEN_FDNAMES):
[listen chat] takes the passed socket and never binds its configured port,
an fd name no section claims is logged and closed, a section without a
passed socket binds as usual, and the passed socket survives reloads."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402


def refused(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def read_until(s, pattern, timeout=3):
    """Read until the regex matches the text received so far (or timeout/EOF;
    SLOW times longer under a wrapper)."""
    buf = b""
    deadline = time.monotonic() + timeout * pt.SLOW
    while not re.search(pattern, buf.decode("utf-8", errors="replace"), re.M):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except (socket.timeout, TimeoutError):
            break
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
    return buf.decode("utf-8", errors="replace")


def speaks_chat(port):
    """Fresh client: sends /help and returns the reply text."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.sendall(b"/help\r\n")
            return read_until(s, r"^\*\*\* /quit", 3)
    except OSError as e:
        return repr(e)


def activate(ssa, srv, nports, names):
    """systemd-socket-activate -l 127.0.0.1:P... --fdname=N:N parleyd -c CONF
    on nports fresh ports; waits until it listens (it execs parleyd, same
    pid, on the first connection). Returns the ports, or None."""
    with open(srv.conf_path, "w") as f:
        f.write(srv.config_text())
    taken = {l["port"] for l in srv.listeners}
    for attempt in range(3):
        ports = []
        while len(ports) < nports:
            p = pt.free_port()
            if p not in taken and p not in ports:
                ports.append(p)
        cmd = [ssa]
        for p in ports:
            cmd += ["-l", "127.0.0.1:%d" % p]
        # It execs the wrapper, which keeps its pid (LISTEN_PID) and fds.
        cmd += ["--fdname=" + ":".join(names)] + pt.daemon_argv("-c", srv.conf_path)
        # Count before starting it: it may print its lines before we look.
        before = len(re.findall(r"Listening on", srv.log()))
        with open(srv.log_path, "ab") as logf:
            srv.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf,
                                        stderr=logf, cwd=srv.dir, env=pt.daemon_env(),
                                        preexec_fn=pt._pdeathsig)
        pt.wait_for(lambda: len(re.findall(r"Listening on", srv.log())) >= before + nports
                    or not srv.alive(), 5)
        if srv.alive() and len(re.findall(r"Listening on", srv.log())) >= before + nports:
            return ports
        srv.kill()
        if not re.search(r"in use", srv.log(), re.I):
            return None
    return None


def hup(srv):
    n = len(re.findall(r"reload (done|refused)", srv.log()))
    os.kill(srv.pid, signal.SIGHUP)
    pt.wait_for(lambda: len(re.findall(r"reload (done|refused)", srv.log())) > n, 5)
    m = re.findall(r"reload (done|refused)", srv.log())
    return m[-1] if len(m) > n else None


def socket_fds(pid):
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            n += os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:")
        except FileNotFoundError:
            pass  # closed meanwhile
    return n


def passed_chat(t, ssa):
    conf_port = pt.free_port()
    with pt.Server(listeners=[pt.listen("chat", port=conf_port, service="chat")],
                   start=False) as srv:
        ports = activate(ssa, srv, 1, ["chat"])
        if not t.ok(ports, "systemd-socket-activate listens on the activation port",
                    srv.log_tail()):
            return
        port = ports[0]
        a = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            greet = read_until(a, r"^\*\*\* welcome", 5)
            t.like(greet, r"^\*\*\* welcome",
                   "a connection to the passed socket gets the chat greeting")
            t.ok(pt.wait_for(lambda: "via socket activation" in srv.log(), 3),
                 "log says [listen chat] uses the passed socket", srv.log_tail())
            t.like(srv.log(), r"socket activation: 1 socket\(s\) passed",
                   "log counts the passed socket")
            t.like(srv.log(), r"listener chat: chat via socket activation \(port %d\)" % port,
                   "the listener reports the activated port, not the configured one")
            t.ok(refused(conf_port), "the configured port %d is NOT bound" % conf_port)
            t.like(speaks_chat(port), r"^\*\*\* /help",
                   "a second client on the passed socket speaks chat (answers /help)")
            b = socket.create_connection(("127.0.0.1", port), timeout=5)
            try:
                read_until(b, r"^\*\*\* you are in", 1)
                b.sendall(b"hello from b\r\n")
                heard = read_until(a, r"hello from b", 3)
                t.like(heard, r"hello from b", "chat between two clients of the passed socket")
            finally:
                b.close()

            # ---- reload with the same file: the passed socket stays
            t.is_(hup(srv), "done", "SIGHUP with the unchanged config succeeds")
            t.like(speaks_chat(port), r"^\*\*\* /help", "passed socket still serves after reload")
            t.ok(refused(conf_port), "configured port still not bound after reload")

            # ---- reload changing only the (unused) configured port of the
            # activated section: the passed socket cannot be re-obtained, so
            # it must stay (parleyd(8): its address and port are not used).
            conf_port2 = pt.free_port()
            srv.listeners[0]["port"] = conf_port2
            with open(srv.conf_path, "w") as f:
                f.write(srv.config_text())
            res = hup(srv)
            t.diag("reload changing the activated section's port: %s" % res)
            t.like(speaks_chat(port), r"^\*\*\* /help",
                   "the passed socket survives a reload that changes the section's port")
            if not refused(conf_port2):
                t.diag("the new configured port %d was bound by the reload" % conf_port2)
        finally:
            a.close()
        t.ok(srv.alive(), "server still running", srv.log_tail())
        rc = srv.stop(timeout=5)
        t.is_(rc, 0, "exit 0 on SIGTERM")


def unclaimed(t, ssa):
    p_echo = pt.free_port()
    with pt.Server(listeners=[pt.listen("chat", port=pt.free_port(), service="chat"),
                              pt.listen("e", port=p_echo)], start=False) as srv:
        ports = activate(ssa, srv, 2, ["chat", "stray"])
        if not t.ok(ports, "systemd-socket-activate listens on two sockets", srv.log_tail()):
            return
        p_chat, p_stray = ports
        # The first connection makes systemd-socket-activate exec parleyd.
        with socket.create_connection(("127.0.0.1", p_chat), timeout=5) as c:
            c.sendall(b"/help\r\n")
            t.like(read_until(c, r"^\*\*\* /quit", 5), r"^\*\*\* /help",
                   "the chat socket is served")
        t.ok(pt.wait_for(lambda: re.search(r"socket activation: no \[listen stray\] section "
                                           r"for passed socket; closing it", srv.log()), 3),
             "the unclaimed fd name 'stray' is logged", srv.log_tail())
        t.like(srv.log(), r"socket activation: 2 socket\(s\) passed", "log counts 2 passed sockets")
        t.ok(pt.wait_for(lambda: refused(p_stray), 3),
             "the unclaimed socket is closed (its port refuses)")
        with socket.create_connection(("127.0.0.1", p_echo), timeout=5) as e:
            e.settimeout(3)
            e.sendall(b"echo?\n")
            t.is_(read_until(e, r"echo\?\n", 3), "echo?\n",
                  "a section with no passed socket binds its own port as usual")
        t.diag("daemon holds %d socket fd(s)" % socket_fds(srv.pid))
        t.ok(srv.alive(), "server still running", srv.log_tail())
        t.is_(srv.stop(timeout=5), 0, "exit 0 on SIGTERM")


def main(t):
    ssa = pt.require_tool("systemd-socket-activate")
    passed_chat(t, ssa)
    unclaimed(t, ssa)


pt.main(main, timeout=50)
