"""scripts/package builds postern_VERSION_ARCH.deb and lintian reports no error. The package is
checked with dpkg-deb (files, modes, conffiles, maintainer scripts), then installed, reinstalled
(the upgrade path), removed and purged in a scratch root with dpkg --root and
--force-script-chrootless. The maintainer scripts then run on this machine, not in a chroot, so
every command that would change the machine itself (adduser, getent, chown, dpkg-statoverride,
hostname, systemctl, deb-systemd-helper, deb-systemd-invoke) is replaced by a stub that records
its arguments: the test checks what they were asked to do (create the user, give it the
database folder and key, enable the unit) and what reached the scratch root (the database
folder 0700, the key 0600, a database kept on removal and upgrade and gone after purge).
Skipped with a printed reason without dpkg-buildpackage, debhelper or lintian, and the scratch
install without root (dpkg cannot give files to root otherwise)."""
import os
import shutil
import stat
import subprocess
import tempfile
import unittest

from harness import ROOT

STUBS = {
    # getent finds no user, so postinst asks adduser for one.
    "getent": "exit 2",
    "adduser": "exit 0",
    "chown": "exit 0",
    "dpkg-statoverride": "exit 1",
    "hostname": "echo mail.example.test",
    "systemctl": "exit 0",
    # was-enabled answers yes, as deb-systemd-helper does for a unit it never saw: enable it.
    "deb-systemd-helper": "exit 0",
    "deb-systemd-invoke": "exit 0",
}


def missing_tools():
    return [t for t in ("dpkg-buildpackage", "dh", "dpkg-deb", "lintian") if not shutil.which(t)]


class Package(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.missing = missing_tools()
        if cls.missing:
            return
        cls.out = tempfile.mkdtemp(prefix="postern-deb-")
        r = subprocess.run([os.path.join(ROOT, "scripts", "package"), cls.out],
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise AssertionError(f"scripts/package failed:\n{r.stdout}\n{r.stderr}")
        cls.deb = r.stdout.strip().splitlines()[-1]
        with open(os.path.join(cls.out, "lintian.txt")) as f:
            cls.lintian = f.read()

    @classmethod
    def tearDownClass(cls):
        if not cls.missing:
            shutil.rmtree(cls.out, True)

    def setUp(self):
        if self.missing:
            print(f"skipped: missing {', '.join(self.missing)} (scripts/bootstrap installs them)")
            self.skipTest("packaging tools missing")

    def deb_info(self, *args):
        return subprocess.run(["dpkg-deb"] + list(args) + [self.deb], capture_output=True,
                              text=True, check=True, timeout=60).stdout

    def test_name_and_lintian(self):
        arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                              check=True).stdout.strip()
        self.assertRegex(os.path.basename(self.deb), rf"^postern_[0-9.]+_{arch}\.deb$")
        errors = [l for l in self.lintian.splitlines() if l.startswith("E:")]
        self.assertEqual(errors, [])
        tags = [l for l in self.lintian.splitlines() if l[:2] in ("W:", "I:", "N:")]
        print("lintian:", "; ".join(tags) or "no errors, no warnings")

    def test_files_and_modes(self):
        listing = {}
        for line in self.deb_info("-c").splitlines():
            fields = line.split()
            listing[fields[5].lstrip(".").rstrip("/") or "/"] = (fields[0], fields[1])
        expect = {
            "/usr/sbin/postern": "-rwxr-xr-x",
            "/etc/postern/postern.conf": "-rw-r--r--",
            "/etc/postern/tls": "drwxr-x---",
            "/var/lib/postern": "drwx------",
            "/lib/systemd/system/postern.service": "-rw-r--r--",
            "/usr/share/man/man8/postern.8.gz": "-rw-r--r--",
            "/usr/share/man/man5/postern.conf.5.gz": "-rw-r--r--",
            "/usr/share/doc/postern/copyright": "-rw-r--r--",
        }
        for path, mode in expect.items():
            self.assertIn(path, listing)
            self.assertEqual(listing[path], (mode, "root/root"), path)
        # No key is shipped: postinst makes one per machine.
        self.assertFalse([p for p in listing if p.endswith(".pem")])

    def test_control(self):
        with tempfile.TemporaryDirectory() as d:
            subprocess.run(["dpkg-deb", "-e", self.deb, d], check=True, timeout=60)
            with open(os.path.join(d, "conffiles")) as f:
                conffiles = f.read().split()
            with open(os.path.join(d, "postinst")) as f:
                postinst = f.read()
            with open(os.path.join(d, "postrm")) as f:
                postrm = f.read()
        self.assertEqual(conffiles, ["/etc/postern/postern.conf"])
        self.assertIn("adduser --system", postinst)
        self.assertIn("deb-systemd-helper enable 'postern.service'", postinst)
        self.assertIn('rm -rf "${DPKG_ROOT:-}/var/lib/postern"', postrm)
        control = self.deb_info("-f")
        self.assertIn("Depends:", control)
        self.assertIn("adduser", control)
        with open(os.path.join(ROOT, "dist", "postern.conf")) as f:
            conf = f.read()
        for line in ("listen = *:25", "submission = *:587", "submissions = *:465",
                     "listen = *:110", "pop3s = *:995", "user = postern",
                     "database = /var/lib/postern/postern.db",
                     "certificate = /etc/postern/tls/fullchain.pem",
                     "key = /etc/postern/tls/privkey.pem"):
            self.assertIn(line + "\n", conf)

    def test_install_upgrade_remove_purge_in_scratch_root(self):
        if os.geteuid() != 0:
            print("skipped: the scratch-root install needs root (dpkg gives files to root)")
            self.skipTest("not root")
        root = tempfile.mkdtemp(prefix="postern-root-")
        self.addCleanup(shutil.rmtree, root, True)
        admin = os.path.join(root, "var", "lib", "dpkg")
        for sub in ("updates", "info"):
            os.makedirs(os.path.join(admin, sub))
        open(os.path.join(admin, "status"), "w").close()
        stubs = os.path.join(root, "stubs")
        os.mkdir(stubs)
        calls = os.path.join(stubs, "calls")
        for name, body in STUBS.items():
            p = os.path.join(stubs, name)
            with open(p, "w") as f:
                f.write(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\n{body}\n')
            os.chmod(p, 0o755)
        env = dict(os.environ, PATH=stubs + ":" + os.environ["PATH"])
        # The scratch root has none of the libraries: --force-depends lets dpkg go on.

        def dpkg(*args):
            r = subprocess.run(["dpkg", f"--root={root}", "--force-script-chrootless",
                                "--force-bad-path", "--force-depends"] + list(args), env=env,
                               capture_output=True, text=True, timeout=300)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

        def mode(rel):
            return stat.S_IMODE(os.stat(os.path.join(root, rel)).st_mode)

        def recorded():
            with open(calls) as f:
                return f.read()

        dpkg("--install", self.deb)
        self.assertTrue(os.access(os.path.join(root, "usr/sbin/postern"), os.X_OK))
        self.assertTrue(os.path.isfile(os.path.join(root, "etc/postern/postern.conf")))
        self.assertEqual(mode("var/lib/postern"), 0o700)
        self.assertEqual(mode("etc/postern/tls"), 0o750)
        self.assertEqual(mode("etc/postern/tls/privkey.pem"), 0o600)
        self.assertEqual(mode("etc/postern/tls/fullchain.pem"), 0o644)
        log = recorded()
        self.assertIn("adduser --system --group", log)
        self.assertIn(f"chown postern:postern {root}/var/lib/postern\n", log)
        self.assertIn(f"chown postern:postern {root}/etc/postern/tls/privkey.pem\n", log)
        self.assertIn("deb-systemd-helper enable postern.service", log)
        # The generated certificate names the host and matches its key.
        tls = os.path.join(root, "etc/postern/tls")
        r = subprocess.run(["openssl", "x509", "-noout", "-subject", "-pubkey", "-in",
                            os.path.join(tls, "fullchain.pem")], capture_output=True, text=True,
                           check=True, timeout=60)
        self.assertIn("CN = mail.example.test", r.stdout)
        k = subprocess.run(["openssl", "pkey", "-pubout", "-in", os.path.join(tls, "privkey.pem")],
                           capture_output=True, text=True, check=True, timeout=60)
        self.assertIn(k.stdout, r.stdout)

        db = os.path.join(root, "var/lib/postern/postern.db")
        with open(db, "w") as f:
            f.write("mail")
        dpkg("--install", self.deb)  # the upgrade path: postinst configure with a version
        self.assertTrue(os.path.exists(db))
        dpkg("--remove", "postern")
        self.assertTrue(os.path.exists(db))
        self.assertFalse(os.path.exists(os.path.join(root, "usr/sbin/postern")))
        self.assertTrue(os.path.exists(os.path.join(root, "etc/postern/postern.conf")))
        dpkg("--purge", "postern")
        self.assertFalse(os.path.exists(os.path.join(root, "var/lib/postern")))
        self.assertFalse(os.path.exists(os.path.join(root, "etc/postern")))
        self.assertIn("deb-systemd-helper purge postern.service", recorded())


if __name__ == "__main__":
    unittest.main()
