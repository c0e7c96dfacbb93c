#!/usr/bin/env python3
"""SIGHUP reload: listeners added and removed, established clients untouched,
a broken file refused with FILE:LINE (old config keeps serving), a bind
failure refused as a whole, certificate renewal picked up by new TLS
connections while an old TLS connection keeps its session."""

import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402


def plain(port, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.settimeout(timeout)
    return s


def tls(port, cafile=None, timeout=5):
    ctx = pt.client_ctx(cafile=cafile)
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=timeout),
                        server_hostname="localhost")
    s.settimeout(timeout)
    return s


def echo_once(s, msg):
    try:
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            chunk = s.recv(len(msg) - len(got))
            if not chunk:
                break
            got += chunk
        return got
    except (OSError, ssl.SSLError) as e:
        return repr(e).encode()


def echo_new(port, msg=b"ping\n"):
    try:
        with plain(port) as s:
            return echo_once(s, msg)
    except OSError as e:
        return repr(e).encode()


def chat_help(port, timeout=3):
    """Send /help on a fresh connection; return what came back (text)."""
    buf = b""
    try:
        with plain(port, timeout) as c:
            c.sendall(b"/help\r\n")
            deadline = time.monotonic() + timeout
            while b"/quit" not in buf and time.monotonic() < deadline:
                c.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    chunk = c.recv(65536)
                except (socket.timeout, TimeoutError):
                    break
                if not chunk:
                    break
                buf += chunk
    except OSError as e:
        return repr(e)
    return buf.decode(errors="replace")


def refused(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def fingerprint(der):
    return hashlib.sha256(der).hexdigest() if der else None


def file_fingerprint(pem_path):
    with open(pem_path) as f:
        return fingerprint(ssl.PEM_cert_to_DER_cert(f.read()))


class Reloader:
    """Rewrite the config and SIGHUP; wait for the outcome in the log."""

    def __init__(self, srv):
        self.srv = srv

    def count(self, what):
        return len(re.findall(what, self.srv.log()))

    def hup(self, text=None, timeout=5):
        """Returns 'done', 'refused' or None (nothing logged in time)."""
        if text is None:
            text = self.srv.config_text()
        with open(self.srv.conf_path, "w") as f:
            f.write(text)
        done0, ref0 = self.count("reload done"), self.count("reload refused")
        os.kill(self.srv.pid, signal.SIGHUP)

        def outcome():
            if self.count("reload refused") > ref0:
                return "refused"
            if self.count("reload done") > done0:
                return "done"
            return None
        return pt.wait_for(outcome, timeout)


def listeners_part(t, srv, r):
    a_port = srv.port(0)
    old = plain(a_port)
    try:
        t.same_bytes(echo_once(old, b"before\n"), b"before\n", "client on listener a echoes")

        # ---- add listener b
        b_port = pt.free_port()
        srv.listeners.append(pt.listen("b", port=b_port))
        res = r.hup()
        t.is_(res, "done", "reload adding [listen b] succeeds")
        if res != "done":
            t.diag(srv.log_tail())
        t.same_bytes(echo_new(b_port, b"on b\n"), b"on b\n", "the new listener b accepts and echoes")
        t.same_bytes(echo_once(old, b"still\n"), b"still\n",
                     "the client connected before the reload still echoes")
        t.same_bytes(echo_new(a_port), b"ping\n", "listener a still accepts new clients")
        held_b = plain(b_port)

        # ---- broken file: unknown key, FILE:LINE in the log, nothing changes
        good = srv.config_text()
        lines = good.splitlines()
        at = lines.index("[server]") + 1
        lines.insert(at, "no_such_key = 1")
        bad_line = at + 1
        res = r.hup("\n".join(lines) + "\n")
        t.is_(res, "refused", "reload with an unknown key is refused")
        want = r"reload refused, keeping the running config: %s:%d: .*no_such_key" % (
            re.escape(srv.conf_path), bad_line)
        t.like(srv.log(), want, "refusal is logged with FILE:LINE: of the bad key (line %d)"
               % bad_line)
        t.same_bytes(echo_new(a_port), b"ping\n", "listener a still works after the refusal")
        t.same_bytes(echo_new(b_port), b"ping\n", "listener b still works after the refusal")
        t.same_bytes(echo_once(old, b"x\n"), b"x\n", "old client still echoes after the refusal")

        # ---- a bind failure refuses the whole reload (new ones bound first)
        blocker = socket.socket()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        busy = blocker.getsockname()[1]
        try:
            c_port = pt.free_port()
            trial = list(srv.listeners)
            srv.listeners = [l for l in trial if l["name"] != "b"] + [
                pt.listen("c", port=c_port), pt.listen("d", port=busy)]
            res = r.hup()
            srv.listeners = trial
            t.is_(res, "refused", "reload whose new listener cannot bind is refused")
            t.like(srv.log(), r"reload refused, keeping the running config: .*listener d",
                   "the bind failure names the listener")
            t.ok(refused(c_port), "no half-applied reload: listener c was not left open")
            t.same_bytes(echo_new(b_port), b"ping\n",
                         "listener b (dropped by the refused file) is still open")
        finally:
            blocker.close()
        res = r.hup(good)  # back to a+b, must be a no-op reload
        t.is_(res, "done", "reloading the unchanged config succeeds")

        # ---- remove listener b
        srv.listeners = [l for l in srv.listeners if l["name"] != "b"]
        res = r.hup()
        t.is_(res, "done", "reload removing [listen b] succeeds")
        t.ok(pt.wait_for(lambda: refused(b_port), 3), "the removed listener's port refuses")
        t.same_bytes(echo_once(held_b, b"kept\n"), b"kept\n",
                     "a client accepted on b before its removal keeps working")
        held_b.close()
        t.same_bytes(echo_once(old, b"end\n"), b"end\n", "the first client still echoes")
        t.same_bytes(echo_new(a_port), b"ping\n", "listener a still accepts")

        # ---- change a's port: new port bound, old one closed
        new_a = pt.free_port()
        srv.listeners[0]["port"] = new_a
        srv.listeners[0]["auto"] = False
        res = r.hup()
        t.is_(res, "done", "reload moving listener a to another port succeeds")
        t.same_bytes(echo_new(new_a), b"ping\n", "listener a answers on its new port")
        t.ok(pt.wait_for(lambda: refused(a_port), 3), "listener a's old port refuses")
        t.same_bytes(echo_once(old, b"moved\n"), b"moved\n",
                     "the client of the old port still echoes")

        # ---- switch a's service in place: new clients get chat, old keep echo
        srv.listeners[0]["service"] = "chat"
        res = r.hup()
        t.is_(res, "done", "reload switching listener a from echo to chat succeeds")
        reply = chat_help(new_a)
        t.like(reply, r"^\*\*\* /\w+", "a new client on a speaks chat (answers /help)")
        t.same_bytes(echo_once(old, b"still echo\n"), b"still echo\n",
                     "the client accepted as echo stays echo")
    finally:
        old.close()
    t.ok(srv.alive(), "server survived the reloads", srv.log_tail())
    rc = srv.stop()
    t.is_(rc, 0, "exit 0 on SIGTERM")


def new_cert(srv, tmp):
    """A fresh cert+key (new key, new random serial) generated aside, then
    renamed over the configured paths, the way a renewal tool does it."""
    d = tempfile.mkdtemp(dir=tmp)
    cert, key = pt.make_cert(d)
    os.replace(key, srv.key)
    os.replace(cert, srv.cert)
    return file_fingerprint(srv.cert)


def cert_part(t, tmp):
    with pt.Server(listeners=[pt.listen("sec", tls=True), pt.listen("plain")]) as srv:
        r = Reloader(srv)
        port = srv.port(0)
        fp1 = file_fingerprint(srv.cert)
        shutil.copy(srv.cert, os.path.join(tmp, "ca1.pem"))
        before = tls(port, cafile=os.path.join(tmp, "ca1.pem"))
        try:
            t.is_(fingerprint(before.getpeercert(binary_form=True)), fp1,
                  "TLS client sees the first certificate")
            t.same_bytes(echo_once(before, b"tls1\n"), b"tls1\n", "TLS echo before renewal")

            fp2 = new_cert(srv, tmp)
            t.ok(fp2 != fp1, "renewed certificate differs from the first")
            res = r.hup()
            t.is_(res, "done", "reload after certificate renewal succeeds")
            if res != "done":
                t.diag(srv.log_tail())
            with tls(port, cafile=srv.cert) as after:
                t.is_(fingerprint(after.getpeercert(binary_form=True)), fp2,
                      "a new TLS connection gets the renewed certificate")
                t.same_bytes(echo_once(after, b"tls2\n"), b"tls2\n", "TLS echo with the new cert")
            t.same_bytes(echo_once(before, b"old session\n"), b"old session\n",
                         "the TLS connection opened before the reload still echoes")
            t.is_(fingerprint(before.getpeercert(binary_form=True)), fp1,
                  "... and still holds the first certificate")

            # ---- botched renewal: key does not match the cert -> refused, old cert kept
            d = tempfile.mkdtemp(dir=tmp)
            _, other_key = pt.make_cert(d)
            saved_key = os.path.join(tmp, "key2.pem")
            shutil.copy(srv.key, saved_key)
            shutil.copy(other_key, srv.key)
            res = r.hup()
            t.is_(res, "refused", "reload with a key that does not match the cert is refused")
            t.like(srv.log(), r"reload refused, keeping the running config: .*(private key|match)",
                   "the refusal says what is wrong with the key")
            with tls(port, cafile=srv.cert) as again:
                t.is_(fingerprint(again.getpeercert(binary_form=True)), fp2,
                      "after the refused reload the renewed certificate is still served")
                t.same_bytes(echo_once(again, b"tls3\n"), b"tls3\n", "TLS echo still works")
            t.same_bytes(echo_new(srv.port(1)), b"ping\n", "plain listener unaffected")
            t.same_bytes(echo_once(before, b"last\n"), b"last\n",
                         "the pre-renewal TLS connection still echoes")
        finally:
            before.close()
        t.ok(srv.alive(), "server survived the certificate reloads", srv.log_tail())
        t.is_(srv.stop(), 0, "exit 0 on SIGTERM (TLS server)")


def main(t):
    with pt.Server(listeners=[pt.listen("a")]) as srv:
        listeners_part(t, srv, Reloader(srv))
    if shutil.which("openssl") is None:
        t.skip("certificate renewal on SIGHUP", "openssl is not installed")
        return
    with tempfile.TemporaryDirectory(prefix="parleytest-reload-") as tmp:
        cert_part(t, tmp)


pt.main(main, timeout=55)
