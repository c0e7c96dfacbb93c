#!/usr/bin/env python3
"""TLS client certificates: client_certificates = optional | required per
TLS listener; /certadd binds a certificate's SHA-256 fingerprint to the
account, which then identifies the client at connect with no password
(checked with `openssl s_client -cert`); /certdel unbinds it; a
certificate is bound to one account only; a required listener refuses a
client without one; [operators] fingerprints makes a certificate a
server operator."""

import asyncio
import os
import re
import select
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402
import chatclient as cc  # noqa: E402


def make_client_cert(openssl, directory, name):
    cert = os.path.join(directory, name + ".pem")
    key = os.path.join(directory, name + ".key")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=" + name, "-keyout", key, "-out", cert],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True, timeout=20)
    out = subprocess.run([openssl, "x509", "-noout", "-fingerprint", "-sha256", "-in", cert],
                         stdout=subprocess.PIPE, check=True, timeout=20).stdout.decode()
    fp = out.strip().split("=", 1)[1].replace(":", "").lower()
    return cert, key, fp


def s_client(openssl, port, args, send, expect, timeout=10):
    """Run s_client -quiet, write send (stdin kept open), read stdout until
    the regex expect matches or the process ends.  Returns stdout."""
    cmd = [openssl, "s_client", "-connect", "127.0.0.1:%d" % port, "-quiet"] + args
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    out = b""
    try:
        try:
            p.stdin.write(send)
            p.stdin.flush()
        except BrokenPipeError:
            pass
        deadline = time.monotonic() + timeout
        while not re.search(expect, out, re.M):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([p.stdout], [], [], left)
            if not ready:
                break
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
    finally:
        p.terminate()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
    return out


class CertServer(pt.Server):
    def config_text(self):
        text = super().config_text()
        text = text.replace("[listen opt]\n", "[listen opt]\nclient_certificates = optional\n")
        return text.replace("[listen req]\n", "[listen req]\nclient_certificates = required\n")


def ctx(cert=None):
    c = pt.client_ctx()
    if cert:
        c.load_cert_chain(cert[0], cert[1])
    return c


async def open_tls(port, cert=None, label=None):
    c = await cc.Chat.open(port, tls=ctx(cert), label=label)
    return c


async def scenario(t, srv, openssl, a, b):
    opt, req = srv.port(1), srv.port(2)
    fa, fb = a[2], b[2]

    c = await open_tls(opt, a, "carl")
    m = await c.expect(r"^\*\*\* your client certificate: SHA-256 ([0-9a-f]{64})$")
    t.is_(m and m.group(1), fa, "the server tells the client its certificate's fingerprint")
    t.ok(await c.expect(r"^\*\*\* no account is bound to your certificate"),
         "... and that no account is bound to it")
    await c.set_nick("carl")
    m = await c.cmd("/certadd", r"^!!! |^\*\*\* certificate")
    t.like(m and m.string, r"^!!! you are not identified", "/certadd needs an identified client")
    await c.cmd("/register carlpassword", r"registered to you")
    m = await c.cmd("/certadd", r"^!!! |^\*\*\* certificate")
    t.like(m and m.string, r"^\*\*\* certificate %s is bound to carl;" % fa,
           "/certadd binds the certificate to the account")
    t.ok(await cc.await_log(srv, r"auth: \S+ bound certificate %s to carl" % fa), "... logged")

    out = s_client(openssl, opt, ["-cert", a[0], "-key", a[1]], b"",
                   rb"you are identified as carl")
    t.ok(re.search(rb"^\*\*\* you are identified as carl\r$", out, re.M),
         "openssl s_client -cert: identified at connect, no password typed", out[-300:])
    t.ok(re.search(rb"^\*\*\* you are now known as carl\r$", out, re.M),
         "... and given the nick")
    m = await c.expect(r"^\*\*\* nick carl is registered and its owner has identified", timeout=10)
    t.ok(m, "the older session holding the nick is renamed")

    out = s_client(openssl, opt, [], b"", rb"welcome to parley")
    t.ok(b"welcome to parley" in out and b"your client certificate" not in out,
         "optional: a client without a certificate is served as before")
    out = s_client(openssl, req, [], b"", rb"welcome to parley", timeout=5)
    t.ok(b"welcome to parley" not in out, "required: a client without a certificate is refused")
    out = s_client(openssl, req, ["-cert", a[0], "-key", a[1]], b"",
                   rb"you are identified as carl")
    t.ok(b"you are identified as carl" in out, "required: with its certificate it is identified")

    # B: not bound; another account cannot take A's certificate
    d = await open_tls(opt, b, "dora")
    await d.expect(r"no account is bound")
    await d.set_nick("dora")
    await d.cmd("/register dorapassword", r"registered to you")
    m = await d.cmd("/certadd " + fa, r"^!!! |^\*\*\* certificate")
    t.like(m and m.string, r"^!!! certificate %s is bound to an account already" % fa,
           "a certificate is bound to one account only")
    # B is an operator by fingerprint
    m = await d.cmd("/wall cert operators", r"^!!! |^\*\*\* NOTICE")
    t.like(m and m.string, r"^\*\*\* NOTICE from dora: cert operators$",
           "[operators] fingerprints: a certificate makes its holder a server operator")

    # /certdel
    e = await cc.Chat.open(srv.port(0), label="carl-pw")
    m = await e.cmd("/identify carl carlpassword", r"identified as|^!!! ")
    m = await e.cmd("/certdel " + ":".join(fa[i:i + 2].upper() for i in range(0, 64, 2)),
                    r"^!!! |^\*\*\* certificate")
    t.like(m and m.string, r"^\*\*\* certificate %s is no longer bound to carl$" % fa,
           "/certdel FINGERPRINT (colons, any case) unbinds it")
    out = s_client(openssl, opt, ["-cert", a[0], "-key", a[1]], b"", rb"no account is bound")
    t.ok(b"no account is bound" in out and b"identified as" not in out,
         "after /certdel the certificate identifies nobody")
    await cc.close_all([c, d, e])


def main(t):
    openssl = pt.require_tool("openssl")
    import tempfile
    tmp = tempfile.mkdtemp(prefix="parleycerts-")
    a = make_client_cert(openssl, tmp, "alpha")
    b = make_client_cert(openssl, tmp, "beta")
    extra = ("\n[accounts]\nscrypt_n = 1024\n\n[operators]\nfingerprints = %s\n"
             % ":".join(b[2][i:i + 2] for i in range(0, 64, 2)))
    with CertServer(listeners=[pt.listen(name="chat", service="chat"),
                               pt.listen(name="opt", service="chat", tls=True),
                               pt.listen(name="req", service="chat", tls=True)],
                    extra=extra) as srv:
        try:
            pt.run(scenario(t, srv, openssl, a, b), timeout=90)
        except (cc.ChatError, asyncio.TimeoutError, OSError, ssl.SSLError) as e:
            t.ok(False, "certificate scenario ran to the end", "%r\nlog:\n%s" % (e, srv.log_tail()))
        t.ok(srv.alive(), "daemon alive")
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)


pt.main(main, timeout=120)
