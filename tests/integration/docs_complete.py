#!/usr/bin/env python3
"""The documentation keeps up with the code: every configuration key the
parser knows (src/conf.c) is described in its section of parleyd.conf(5) and
shown in etc/parleyd.conf; every chat command in the command table
(src/chat-cmd.c) is described in parley(7) and parley(7) lists no command the
server does not have; each man page renders without a warning (mandoc -T lint
and groff -ww)."""

import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parleytest as pt  # noqa: E402

SRC = os.environ.get("top_srcdir") or pt.REPO
PAGES = ["man/parleyd.8", "man/parleyd.conf.5", "man/parley.7"]


def read(rel):
    with open(os.path.join(SRC, rel), encoding="utf-8") as f:
        return f.read()


def conf_keys():
    """(section, key) pairs from the keys[] table and the [listen] parser."""
    src = read("src/conf.c")
    table = re.search(r"static const struct key keys\[\] = \{(.*?)\n\};", src, re.S)
    keys = re.findall(r'\{"([a-z]+)", "([a-z_]+)",', table.group(1)) if table else []
    body = re.search(r"set_listener_key\(.*?\n\}\n", src, re.S)
    keys += [("listen NAME", k) for k in
             re.findall(r'strcmp\(name, "([a-z_]+)"\) == 0', body.group(0) if body else "")]
    return keys


def sections(text, start_re):
    """Split text into {section name: body} at lines matching start_re."""
    out, cur = {}, None
    for line in text.splitlines():
        m = re.match(start_re, line)
        if m:
            cur = m.group(1)
            out.setdefault(cur, "")
            continue
        if cur is not None:
            if line.startswith(".SH"):
                cur = None
                continue
            out[cur] += line + "\n"
    return out


def commands():
    src = read("src/chat-cmd.c")
    return re.findall(r'^\s*\{"([a-z]+)", "[^"]*",', src, re.M)


def main(t):
    keys = conf_keys()
    t.ok(len(keys) >= 20, "found the configuration keys in src/conf.c (%d)" % len(keys))
    man5 = sections(read("man/parleyd.conf.5"), r"^\.SS \[(.*)\]")
    example = sections(read("etc/parleyd.conf"), r"^\s*[;#]?\s*\[([a-z]+(?: [A-Za-z0-9_-]+)?)\]")
    missing_man, missing_ex = [], []
    for sec, key in keys:
        body = man5.get(sec, "")
        if not re.search(r'^\.BI? "?%s[ "]' % re.escape(key), body, re.M):
            missing_man.append("[%s] %s" % (sec, key))
        ex_secs = [v for k, v in example.items()
                   if k == sec or (sec == "listen NAME" and k.startswith("listen "))]
        if not any(re.search(r"^\s*[;#]?\s*%s\s*=" % re.escape(key), v, re.M) for v in ex_secs):
            missing_ex.append("[%s] %s" % (sec, key))
    t.is_(missing_man, [], "every key is described in its section of parleyd.conf(5)")
    t.is_(missing_ex, [], "every key appears in its section of etc/parleyd.conf")

    cmds = commands()
    t.ok(len(cmds) >= 10, "found the chat commands in src/chat-cmd.c (%d)" % len(cmds))
    man7 = read("man/parley.7")
    described = set(re.findall(r'^\.BI? "?/([a-z]+)', man7, re.M))
    t.is_(sorted(set(cmds) - described), [], "every command is described in parley(7)")
    t.is_(sorted(described - set(cmds)), [], "parley(7) describes no command the server lacks")

    mandoc = shutil.which("mandoc")
    groff = shutil.which("groff")
    if not mandoc and not groff:
        pt.skip_all("neither mandoc nor groff is installed")
    for page in PAGES:
        path = os.path.join(SRC, page)
        if mandoc:
            r = subprocess.run([mandoc, "-T", "lint", "-W", "warning", path],
                               capture_output=True, text=True, timeout=20)
            t.is_((r.returncode, r.stdout + r.stderr), (0, ""),
                  "mandoc -T lint: %s has no warning" % page)
        if groff:
            r = subprocess.run([groff, "-ww", "-man", "-z", path],
                               capture_output=True, text=True, timeout=20)
            t.is_((r.returncode, r.stderr), (0, ""), "groff -ww: %s has no warning" % page)


pt.main(main, timeout=50)
