"""The manual pages: docs/man/postern.8 and docs/man/postern.conf.5 are clean under
`mandoc -T lint` (at warning level; skipped with a printed reason without mandoc), and the keys
postern.conf(5) documents are exactly the keys `postern config check` prints, section by section,
so a key added to the parameter table (common/config_table.c) without its manual entry, or a
manual entry left behind for a removed key, fails here."""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import BIN, ROOT

MAN = os.path.join(ROOT, "docs", "man")
PAGES = [os.path.join(MAN, "postern.8"), os.path.join(MAN, "postern.conf.5")]


def printed_keys():
    """(section, key) pairs of `postern config check` with the built-in defaults."""
    with tempfile.TemporaryDirectory(prefix="postern-man-") as d:
        out = subprocess.run([BIN, "config", "check"], cwd=d, capture_output=True, text=True,
                             timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"config check failed: {out.stderr}")
    keys, section = set(), None
    for line in out.stdout.splitlines():
        m = re.match(r"^\[(\w+)\]$", line)
        if m:
            section = m.group(1)
        elif "=" in line and section:
            keys.add((section, line.split("=", 1)[0].strip()))
    return keys


def documented_keys():
    """(section, key) pairs of postern.conf(5): each ".Ss The [name] section" opens a section
    and each ".It Cm key" inside its list documents a key."""
    keys, section = set(), None
    with open(os.path.join(MAN, "postern.conf.5")) as f:
        for line in f:
            m = re.match(r"^\.Ss The \[(\w+)\] section", line)
            if m:
                section = m.group(1)
                continue
            if line.startswith(".Sh"):
                section = None
            m = re.match(r"^\.It Cm (\w+)", line)
            if m and section:
                keys.add((section, m.group(1)))
    return keys


class ManPages(unittest.TestCase):
    def test_mandoc_lint(self):
        mandoc = shutil.which("mandoc")
        if mandoc is None:
            print("skipped: mandoc is not installed (scripts/bootstrap installs it)")
            self.skipTest("no mandoc")
        r = subprocess.run([mandoc, "-T", "lint", "-W", "warning"] + PAGES, capture_output=True,
                           text=True, timeout=60)
        # mandoc also mentions an outdated system mandoc.db; that is about the host, not us.
        lines = [l for l in r.stderr.splitlines() if "mandoc.db" not in l]
        self.assertEqual(lines, [], "\n".join(lines))

    def test_every_key_documented_and_no_other(self):
        printed, documented = printed_keys(), documented_keys()
        self.assertGreater(len(printed), 10)
        self.assertEqual(sorted(printed - documented), [], "keys missing from postern.conf(5)")
        self.assertEqual(sorted(documented - printed), [], "postern.conf(5) keys no longer printed")

    def test_every_command_documented(self):
        """Each command word of `postern help` has an entry in postern(8)."""
        out = subprocess.run([BIN, "help"], capture_output=True, text=True, timeout=60).stdout
        words = set(re.findall(r"^  ([a-z-]+) ", out, re.M))
        self.assertIn("relay-check", words)
        with open(PAGES[0]) as f:
            page = f.read()
        for w in words:
            self.assertRegex(page, rf"(?m)^\.It Cm {re.escape(w)}\b", w)


if __name__ == "__main__":
    unittest.main()
