"""`cmake --install` into a scratch DESTDIR with --prefix /usr: postern in sbin, the manual pages
in sections 5 and 8, the systemd unit and the example configuration, with their modes; the
installed unit passes `systemd-analyze verify` and `systemd-analyze security --offline=yes`
rates it 2.0 or lower (both skipped, with the reason printed, without systemd-analyze). The
example configuration is the production one: `config check` accepts it once its TLS files exist."""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import BIN

BUILD = os.environ.get("POSTERN_BUILD_DIR", os.path.dirname(BIN))

EXPECTED = {
    "usr/sbin/postern": 0o755,
    "usr/share/man/man8/postern.8": 0o644,
    "usr/share/man/man5/postern.conf.5": 0o644,
    "usr/lib/systemd/system/postern.service": 0o644,
    "usr/share/doc/postern/postern.conf.example": 0o644,
}


class Install(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix="postern-install-")
        r = subprocess.run(["cmake", "--install", BUILD, "--prefix", "/usr", "--component",
                            "postern"], env=dict(os.environ, DESTDIR=cls.root),
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise AssertionError(f"cmake --install failed:\n{r.stdout}\n{r.stderr}")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, True)

    def path(self, rel):
        return os.path.join(self.root, rel)

    def test_files_and_modes(self):
        found = set()
        for d, _, files in os.walk(self.root):
            for f in files:
                found.add(os.path.relpath(os.path.join(d, f), self.root))
        self.assertEqual(found, set(EXPECTED))
        for rel, mode in EXPECTED.items():
            self.assertEqual(os.stat(self.path(rel)).st_mode & 0o7777, mode, rel)

    def test_unit(self):
        with open(self.path("usr/lib/systemd/system/postern.service")) as f:
            unit = f.read()
        for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "User=postern",
                     "AmbientCapabilities=CAP_NET_BIND_SERVICE", "ProtectSystem=strict",
                     "ReadWritePaths=/var/lib/postern", "NoNewPrivileges=yes",
                     "SystemCallFilter=@system-service", "MemoryDenyWriteExecute=yes",
                     "ExecStart=/usr/sbin/postern -c /etc/postern/postern.conf serve"):
            self.assertIn(line + "\n", unit)

    def test_systemd_analyze(self):
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            print("skipped: no systemd-analyze on this machine")
            self.skipTest("no systemd-analyze")
        unit = self.path("usr/lib/systemd/system/postern.service")
        # verify wants ExecStart's program to exist: point it at the installed copy, and let
        # man(1) find the installed pages for Documentation=.
        with tempfile.TemporaryDirectory(prefix="postern-unit-") as d:
            copy = os.path.join(d, "postern.service")
            with open(unit) as f, open(copy, "w") as g:
                g.write(f.read().replace("/usr/sbin/postern", self.path("usr/sbin/postern")))
            r = subprocess.run([analyze, "verify", copy], capture_output=True, text=True,
                               timeout=120,
                               env=dict(os.environ, MANPATH=self.path("usr/share/man")))
        self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""))
        r = subprocess.run([analyze, "security", "--offline=yes", unit], capture_output=True,
                           text=True, timeout=120)
        m = re.search(r"Overall exposure level for postern\.service: ([0-9.]+)", r.stdout)
        self.assertIsNotNone(m, r.stdout + r.stderr)
        print(f"systemd-analyze security: exposure {m.group(1)}")
        self.assertLessEqual(float(m.group(1)), 2.0, r.stdout)

    def test_example_configuration_is_valid(self):
        with tempfile.TemporaryDirectory(prefix="postern-conf-") as d:
            with open(self.path("usr/share/doc/postern/postern.conf.example")) as f:
                text = f.read()
            tls = os.path.join(d, "tls")
            os.mkdir(tls)
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-days", "2", "-subj", "/CN=mail.example.test", "-keyout",
                            os.path.join(tls, "privkey.pem"), "-out",
                            os.path.join(tls, "fullchain.pem")],
                           check=True, capture_output=True, timeout=120)
            text = text.replace("/etc/postern/tls", tls).replace("/var/lib/postern", d)
            text = text.replace("user = postern", "user =")
            conf = os.path.join(d, "postern.conf")
            with open(conf, "w") as f:
                f.write(text)
            r = subprocess.run([BIN, "-c", conf, "config", "check"], capture_output=True,
                               text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        for line in ("listen = *:25", "submission = *:587", "submissions = *:465",
                     "listen = *:110", "pop3s = *:995"):
            self.assertIn(line + "\n", r.stdout)


if __name__ == "__main__":
    unittest.main()
