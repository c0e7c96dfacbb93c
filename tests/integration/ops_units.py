#!/usr/bin/env python3
"""systemd units: parleyd.service.in (placeholders substituted) and
parleyd.socket pass `systemd-analyze verify`, the service's offline security
exposure is <= 2.0, its ExecStartPre check passes on a valid config, and the
socket's FileDescriptorName= matches a chat section of the shipped example."""

import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402

UNIT_DIR = os.path.join(pt.REPO, "systemd")
MAX_EXPOSURE = 2.0


def run(cmd, timeout=30, cwd=None):
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout, cwd=cwd,
                       env=dict(os.environ, SYSTEMD_PAGER="", PAGER="cat", SYSTEMD_COLORS="0"))
    return r.returncode, r.stdout.decode("utf-8", errors="replace")


def render(src, dst, sbindir, sysconfdir):
    with open(src) as f:
        text = f.read()
    text = text.replace("@sbindir@", sbindir).replace("@sysconfdir@", sysconfdir)
    with open(dst, "w") as f:
        f.write(text)
    return text


def unit_problems(output):
    return [l for l in output.splitlines() if re.search(r"parleyd\.(service|socket)", l)]


def sections(path):
    """{name: {key: value}} for [listen NAME] sections of a parleyd.conf."""
    out, cur = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            m = re.match(r"^\[listen\s+(.+?)\s*\]$", line)
            if m:
                cur = out.setdefault(m.group(1), {})
                continue
            if line.startswith("["):
                cur = None
                continue
            m = re.match(r"^([a-z_]+)\s*=\s*(.*)$", line)
            if m and cur is not None:
                cur[m.group(1)] = m.group(2)
    return out


def main(t):
    sa = pt.require_tool("systemd-analyze")
    daemon = os.path.abspath(pt.parleyd_path())
    sbindir = os.path.dirname(daemon)
    src_service = os.path.join(UNIT_DIR, "parleyd.service.in")
    src_socket = os.path.join(UNIT_DIR, "parleyd.socket")
    if not t.ok(os.path.isfile(src_service) and os.path.isfile(src_socket),
                "systemd/parleyd.service.in and systemd/parleyd.socket exist"):
        return
    with tempfile.TemporaryDirectory(prefix="parleytest-units-") as tmp:
        units = os.path.join(tmp, "units")
        etc = os.path.join(tmp, "etc")
        os.mkdir(units)
        os.mkdir(etc)
        conf = os.path.join(etc, "parleyd.conf")
        with open(conf, "w") as f:
            f.write("[server]\nstate_directory = %s\n%s\n[listen chat]\naddress = 127.0.0.1\n"
                    "port = 7000\nservice = chat\n" % (
                        os.path.join(tmp, "state"),
                        "allow_root = yes" if os.geteuid() == 0 else ""))
        service = os.path.join(units, "parleyd.service")
        socket_unit = os.path.join(units, "parleyd.socket")
        text = render(src_service, service, sbindir, etc)
        shutil.copy(src_socket, socket_unit)
        left = re.findall(r"@[A-Za-z_]+@", text)
        t.is_(left, [], "no @placeholder@ left in the rendered service")

        # ExecStartPre= is `parleyd -t -c CONF`: it must pass on a valid file.
        m = re.search(r"(?m)^ExecStartPre=(.*)$", text)
        if t.ok(m is not None, "service has ExecStartPre="):
            # The unit's binary is the daemon under test: behind the wrapper too.
            rc, out = run(pt.WRAPPER + m.group(1).split(), 10 * pt.SLOW)
            t.is_(rc, 0, "ExecStartPre (%s) passes on a valid config" % m.group(1))
            if rc != 0:
                t.diag(out)
        else:
            t.skip("ExecStartPre passes on a valid config", "no ExecStartPre=")

        # ---- systemd-analyze verify
        rc, out = run([sa, "verify", "--man=no", service, socket_unit], 60, cwd=units)
        t.is_(rc, 0, "systemd-analyze verify --man=no exits 0")
        probs = unit_problems(out)
        t.is_(probs, [], "verify reports no problem with parleyd.service/socket")
        if out.strip():
            t.diag("verify output:\n" + out)

        # negative control: verify is able to see a broken unit here
        bad = os.path.join(tmp, "bad")
        os.mkdir(bad)
        render(src_service, os.path.join(bad, "parleyd.service"),
               os.path.join(tmp, "no-such-dir"), etc)
        shutil.copy(src_socket, os.path.join(bad, "parleyd.socket"))
        rc2, out2 = run([sa, "verify", "--man=no", os.path.join(bad, "parleyd.service")], 60,
                        cwd=bad)
        t.ok(rc2 != 0 or unit_problems(out2),
             "control: verify flags a service whose binary is missing",
             "rc %d output %r" % (rc2, out2))

        # ---- systemd-analyze security --offline=yes
        rc, out = run([sa, "security", "--offline=yes", service], 60, cwd=units)
        m = re.search(r"Overall exposure level for parleyd\.service:\s*([0-9]+(?:\.[0-9]+)?)",
                      out)
        if t.ok(m is not None, "security --offline=yes prints an overall exposure level",
                "rc %d, output tail:\n%s" % (rc, "\n".join(out.splitlines()[-15:]))):
            level = float(m.group(1))
            t.ok(level <= MAX_EXPOSURE, "overall exposure %.1f <= %.1f" % (level, MAX_EXPOSURE),
                 "\n".join(l for l in out.splitlines() if l.startswith("✗")))
            t.diag(out.splitlines()[-1] if out.strip() else "")
        else:
            t.skip("overall exposure <= %.1f" % MAX_EXPOSURE, "no exposure level parsed")
        rc, out = run([sa, "security", "--offline=yes", "--threshold=20", service], 60, cwd=units)
        t.is_(rc, 0, "security --offline=yes --threshold=20 exits 0")

        # ---- the socket unit and the shipped example config agree
        with open(src_socket) as f:
            sock = f.read()
        names = re.findall(r"(?m)^FileDescriptorName=(.*)$", sock)
        ports = re.findall(r"(?m)^ListenStream=(?:.*:)?(\d+)$", sock)
        t.ok(names and len(names) == 1, "parleyd.socket names its socket (FileDescriptorName=)",
             sock)
        t.like(sock, r"(?m)^Service=parleyd\.service$", "parleyd.socket activates parleyd.service")
        example = os.path.join(pt.REPO, "etc", "parleyd.conf")
        if os.path.isfile(example) and names:
            secs = sections(example)
            sec = secs.get(names[0])
            t.ok(sec is not None, "etc/parleyd.conf has [listen %s] for the socket" % names[0],
                 "sections: %r" % sorted(secs))
            if sec is not None:
                t.is_(sec.get("service"), "chat", "[listen %s] is service = chat" % names[0])
                t.is_(sec.get("port"), ports[0] if ports else None,
                      "[listen %s] port matches ListenStream=" % names[0])
        else:
            t.skip("etc/parleyd.conf matches the socket", "no etc/parleyd.conf")


pt.main(main, timeout=55)
