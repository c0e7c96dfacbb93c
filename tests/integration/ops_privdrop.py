#!/usr/bin/env python3
"""Privileges (parleyd(8) DESCRIPTION): started as root, parleyd refuses to run
as root unless allow_root = yes; with user = NAME it binds and opens its files
(TLS key readable only by root) first, then becomes NAME for good: real,
effective and saved ids, no supplementary groups of root's. A reload reads
files as NAME, so a key it cannot read is refused and the old one stays."""

import os
import pwd
import re
import signal
import socket
import ssl
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402

USER = "nobody"


def run_to_exit(srv, timeout=10):
    with open(srv.conf_path, "w") as f:
        f.write(srv.config_text())
    try:
        r = subprocess.run(pt.daemon_argv("-c", srv.conf_path), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout * pt.SLOW, cwd=srv.dir)
        return r.returncode, r.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        return "timeout", (e.stdout or b"").decode(errors="replace")


def ids(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Uid", "Gid", "Groups"):
                out[k] = [int(x) for x in v.split()]
    return out


def peer_cert(port):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return s.getpeercert(binary_form=True)


def refuses_root(t):
    with pt.Server(listeners=[pt.listen("c", service="chat")], start=False) as srv:
        srv.server_opts.pop("allow_root", None)
        srv._assign_ports(fresh=False)
        rc, out = run_to_exit(srv)
        t.is_(rc, 1, "as root without user= or allow_root: exit 1")
        t.like(out, r"refusing to run as root", "…with a line that says why")

        srv.server_opts["user"] = "parley-no-such-user"
        rc, out = run_to_exit(srv)
        t.is_(rc, 1, "user = an unknown name: exit 1")
        t.like(out, r"user parley-no-such-user: no such user", "…naming the user")


def drops(t, pw):
    with pt.Server(listeners=[pt.listen("c", service="chat"),
                              pt.listen("s", service="echo", tls=True)],
                   server={"user": USER}, start=False) as srv:
        srv.server_opts.pop("allow_root", None)
        os.chmod(srv.key, 0o600)  # only root can read the key
        os.chmod(srv.dir, 0o755)  # the config stays readable for reloads
        srv.start()  # returns at READY=1, which comes after the switch
        os.chmod(srv.conf_path, 0o644)
        t.like(srv.log(), r"running as %s" % USER, "log says it runs as %s" % USER)
        got = ids(srv.pid)
        t.is_(got["Uid"], [pw.pw_uid] * 4, "real, effective, saved and fs uid are %s's" % USER)
        t.is_(got["Gid"], [pw.pw_gid] * 4, "all four gids are %s's group" % USER)
        t.ok(0 not in got["Groups"], "root's group is not among the supplementary groups",
             "Groups: %r" % got["Groups"])
        st = os.stat(srv.state_dir)
        t.is_((st.st_uid, st.st_gid), (pw.pw_uid, pw.pw_gid),
              "the state directory belongs to %s" % USER)
        # The root-only key was loaded before the drop: TLS works.
        before = peer_cert(srv.port(1))
        t.ok(before, "TLS listener serves with the root-only key")
        with socket.create_connection(("127.0.0.1", srv.port(0)), timeout=5) as c:
            c.sendall(b"/help\r\n")
            c.settimeout(5)
            buf = b""
            while b"/quit" not in buf:
                chunk = c.recv(4096)
                if not chunk:
                    break
                buf += chunk
            t.like(buf.decode(errors="replace"), r"\*\*\* /help", "chat serves as %s" % USER)

        # Reload: files are read as the run user now, the key is not readable.
        n = len(re.findall(r"reload (done|refused)", srv.log()))
        os.kill(srv.pid, signal.SIGHUP)
        pt.wait_for(lambda: len(re.findall(r"reload (done|refused)", srv.log())) > n, 5)
        res = re.findall(r"reload (done|refused)", srv.log())[n:]
        t.ok(res[:1] == ["refused"], "reload that cannot read the root-only key is refused",
             srv.log_tail())
        t.ok(peer_cert(srv.port(1)) == before, "…and TLS keeps the old certificate")

        # Make the key the run user's: the reload is accepted.
        os.chown(srv.key, pw.pw_uid, pw.pw_gid)
        n = len(re.findall(r"reload (done|refused)", srv.log()))
        os.kill(srv.pid, signal.SIGHUP)
        pt.wait_for(lambda: len(re.findall(r"reload (done|refused)", srv.log())) > n, 5)
        res = re.findall(r"reload (done|refused)", srv.log())[n:]
        t.ok(res[:1] == ["done"], "reload with a key the run user can read is done",
             srv.log_tail())
        t.ok(srv.alive(), "server still running", srv.log_tail())
        t.is_(srv.stop(timeout=5), 0, "exit 0 on SIGTERM")


def main(t):
    if os.geteuid() != 0:
        pt.skip_all("privilege dropping needs root")
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        pt.skip_all("no user %s on this system" % USER)
    refuses_root(t)
    drops(t, pw)


pt.main(main, timeout=50)
