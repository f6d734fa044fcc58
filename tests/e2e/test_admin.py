"""The admin command line (README.md, "Commands"), against the real binary and a temporary
database: validation and normalisation, one-line errors, exit codes 0/1/2/3, password input from
standard input and from a terminal, migrations at open, and commands while `serve` runs."""
import os
import pty
import re
import select
import sqlite3
import stat
import subprocess
import time

from harness import BIN, PosternTest, on_postgresql


class DomainTest(PosternTest):
    def test_add_list_del(self):
        r = self.ok("domain", "add", "Example.TEST.")
        self.assertIn("example.test", r.out)
        self.ok("domain", "add", "other.test")
        names = [l.split()[0] for l in self.ok("domain", "list").out.splitlines()]
        self.assertEqual(names, ["example.test", "other.test"])
        self.ok("domain", "del", "OTHER.test")
        names = [l.split()[0] for l in self.ok("domain", "list").out.splitlines()]
        self.assertEqual(names, ["example.test"])

    def test_duplicate_and_missing_exit_1_with_one_line(self):
        self.ok("domain", "add", "example.test")
        r = self.cli("domain", "add", "EXAMPLE.test")
        self.assertEqual(r.code, 1)
        self.assertEqual(r.err, "postern: domain example.test already exists\n")
        r = self.cli("domain", "del", "nope.test")
        self.assertEqual(r.code, 1)
        self.assertEqual(r.err, "postern: no such domain: nope.test\n")

    def test_invalid_domains_exit_2(self):
        for bad in ["", ".", "a..b", "-a.test", "a_b.test", "x" * 64 + ".test", "1.2.3.4",
                    "exa mple.test", "ex@mple.test"]:
            r = self.cli("domain", "add", bad)
            self.assertEqual(r.code, 2, f"{bad!r}: {r}")
            self.assertTrue(r.err.startswith("postern: invalid domain"), r.err)
            self.assertEqual(r.err.count("\n"), 1, r.err)
        self.assertEqual(self.ok("domain", "list").out, "")

    def test_domain_with_users_is_not_deleted(self):
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", "alice@example.test", input="secret\n")
        r = self.cli("domain", "del", "example.test")
        self.assertEqual(r.code, 1)
        self.assertIn("still has users", r.err)
        self.ok("user", "del", "alice@example.test")
        self.ok("domain", "del", "example.test")

    def test_usage_errors_exit_2(self):
        for args in [("domain",), ("domain", "frob"), ("domain", "add"),
                     ("domain", "add", "a.test", "b.test"), ("domain", "list", "x"),
                     ("nosuchcommand",), ()]:
            r = self.cli(*args)
            self.assertEqual(r.code, 2, f"{args}: {r}")


class UserTest(PosternTest):
    def setUp(self):
        super().setUp()
        self.ok("domain", "add", "example.test")

    def stored_hash(self, address):
        rows = self.sql("SELECT password_hash FROM users WHERE address = ?", (address,))
        return rows[0][0] if rows else None

    def test_add_normalises_and_hashes_with_argon2id(self):
        r = self.ok("user", "add", "Alice@EXAMPLE.test.", input="correct horse\n")
        self.assertIn("alice@example.test", r.out)
        h = self.stored_hash("alice@example.test")
        self.assertTrue(h.startswith("$argon2id$"), h)
        self.assertNotIn("correct horse", h)
        lines = self.ok("user", "list").out.splitlines()
        self.assertEqual(len(lines), 1)
        self.assertTrue(lines[0].startswith("alice@example.test messages=0 bytes=0 "), lines)

    def test_duplicate_missing_and_unknown_domain(self):
        self.ok("user", "add", "bob@example.test", input="pw\n")
        r = self.cli("user", "add", "BOB@example.test", input="pw\n")
        self.assertEqual((r.code, r.err), (1, "postern: user bob@example.test already exists\n"))
        r = self.cli("user", "del", "nobody@example.test")
        self.assertEqual((r.code, r.err), (1, "postern: no such user: nobody@example.test\n"))
        r = self.cli("user", "passwd", "nobody@example.test", input="pw\n")
        self.assertEqual(r.code, 1)
        r = self.cli("user", "add", "carol@elsewhere.test", input="pw\n")
        self.assertEqual(r.code, 1)
        self.assertIn("elsewhere.test is not a local domain", r.err)
        self.assertEqual(r.err.count("\n"), 1)

    def test_invalid_addresses_exit_2(self):
        for bad in ["alice", "@example.test", "alice@", "a b@example.test", "a@@example.test",
                    "alice@[127.0.0.1]", "\"a@b\"@example.test", "a" * 65 + "@example.test",
                    "al\u0085@example.test"]:
            r = self.cli("user", "add", bad, input="pw\n")
            self.assertEqual(r.code, 2, f"{bad!r}: {r}")
            self.assertTrue(r.err.startswith("postern: invalid address"), r.err)
        self.assertEqual(self.ok("user", "list").out, "")

    def test_password_input_rules(self):
        r = self.cli("user", "add", "a@example.test", input="")
        self.assertEqual(r.code, 2)
        self.assertIn("no password", r.err)
        r = self.cli("user", "add", "a@example.test", input="\n")
        self.assertEqual(r.code, 2)
        self.assertIn("empty password", r.err)
        r = self.cli("user", "add", "a@example.test", input="x" * 5000 + "\n")
        self.assertEqual(r.code, 2)
        # Only the first line is the password; CRLF is stripped.
        self.ok("user", "add", "a@example.test", input="first\r\nsecond\n")
        self.assertIsNotNone(self.stored_hash("a@example.test"))

    def test_passwd_changes_the_hash(self):
        self.ok("user", "add", "alice@example.test", input="one\n")
        before = self.stored_hash("alice@example.test")
        self.ok("user", "passwd", "alice@example.test", input="two\n")
        after = self.stored_hash("alice@example.test")
        self.assertNotEqual(before, after)
        self.assertTrue(after.startswith("$argon2id$"))

    def test_list_by_domain_and_delete(self):
        self.ok("domain", "add", "other.test")
        self.ok("user", "add", "a@example.test", input="pw\n")
        self.ok("user", "add", "b@other.test", input="pw\n")
        out = self.ok("user", "list", "other.test").out
        self.assertEqual([l.split()[0] for l in out.splitlines()], ["b@other.test"])
        self.ok("user", "del", "a@example.test")
        out = self.ok("user", "list").out
        self.assertEqual([l.split()[0] for l in out.splitlines()], ["b@other.test"])

    def _pty_run(self, args, answers):
        """Runs the CLI on a pseudo-terminal, answering each prompt; returns (code, output)."""
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(BIN, [BIN, "-c", self.conf] + list(args))
        output = b""
        deadline = time.monotonic() + 30
        pending = list(answers)
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.5)
            if fd in r:
                try:
                    chunk = os.read(fd, 1024)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
                if pending and output.rstrip().endswith(b":"):
                    os.write(fd, pending.pop(0).encode() + b"\n")
                    output += b"<answered>"
        # Bounded: a child still waiting for input after the deadline is killed.
        for _ in range(100):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, 9)
            _, status = os.waitpid(pid, 0)
        os.close(fd)
        return os.waitstatus_to_exitcode(status), output.decode(errors="replace")

    def test_terminal_prompts_twice_without_echo(self):
        code, out = self._pty_run(["user", "add", "tty@example.test"], ["s3cret!", "s3cret!"])
        self.assertEqual(code, 0, out)
        self.assertIn("Password:", out)
        self.assertIn("Again:", out)
        self.assertNotIn("s3cret!", out)  # never echoed
        self.assertIsNotNone(self.stored_hash("tty@example.test"))

    def test_terminal_mismatch_refused(self):
        code, out = self._pty_run(["user", "add", "tty@example.test"], ["one", "two"])
        self.assertEqual(code, 2, out)
        self.assertIn("do not match", out)
        self.assertIsNone(self.stored_hash("tty@example.test"))


class NetworkTest(PosternTest):
    def test_add_list_del_ipv4_ipv6(self):
        self.assertIn("192.0.2.0/24", self.ok("network", "add", "192.0.2.77/24").out)
        self.ok("network", "add", "2001:DB8::/32")
        self.ok("network", "add", "198.51.100.9")
        self.ok("network", "add", "::ffff:203.0.113.0/120")
        nets = [l.split()[0] for l in self.ok("network", "list").out.splitlines()]
        self.assertEqual(sorted(nets), sorted(["192.0.2.0/24", "2001:db8::/32",
                                               "198.51.100.9/32", "203.0.113.0/24"]))
        r = self.cli("network", "add", "192.0.2.1/24")
        self.assertEqual((r.code, r.err), (1, "postern: network 192.0.2.0/24 already exists\n"))
        self.ok("network", "del", "2001:db8:0::/32")
        r = self.cli("network", "del", "2001:db8::/32")
        self.assertEqual(r.code, 1)
        self.assertIn("no such network", r.err)

    def test_invalid_networks_exit_2(self):
        for bad in ["", "192.0.2.0/33", "2001:db8::/129", "192.0.2.0/", "192.0.2/24",
                    "host.example", "192.0.2.0/24x", "10.0.0.0/+8", " 10.0.0.0/8"]:
            r = self.cli("network", "add", bad)
            self.assertEqual(r.code, 2, f"{bad!r}: {r}")
            self.assertTrue(r.err.startswith("postern: invalid network"), r.err)


class WindowTest(PosternTest):
    def setUp(self):
        super().setUp()
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", "alice@example.test", input="pw\n")

    def windows(self):
        return self.ok("window", "list").out.splitlines()

    def test_open_list_close(self):
        r = self.ok("window", "open", "192.0.2.7", "--user", "Alice@example.test", "--for", "10m")
        self.assertIn("opened window 192.0.2.7 user=alice@example.test for=10m", r.out)
        lines = self.windows()
        self.assertEqual(len(lines), 1)
        m = re.match(r"192\.0\.2\.7 user=alice@example\.test opened=(\S+) expires=(\S+) "
                     r"relayed=0$", lines[0])
        self.assertIsNotNone(m, lines[0])
        self.ok("window", "close", "192.0.2.7")
        self.assertEqual(self.windows(), [])
        r = self.cli("window", "close", "192.0.2.7")
        self.assertEqual((r.code, r.err), (1, "postern: no window for 192.0.2.7\n"))

    def test_v4_mapped_and_ipv6_prefix_keys(self):
        self.ok("window", "open", "::ffff:192.0.2.8", "--user", "alice@example.test")
        self.ok("window", "open", "2001:db8:1:2:3:4:5:6", "--user=alice@example.test")
        keys = sorted(l.split()[0] for l in self.windows())
        self.assertEqual(keys, ["192.0.2.8", "2001:db8:1:2:3:4:5:6"])  # default prefix 128

        self.write_config("[relay]\nwindow_ipv6_prefix = 64\n")
        self.ok("window", "open", "2001:db8:9:9:1::1", "--user", "alice@example.test")
        self.assertIn("2001:db8:9:9::/64", [l.split()[0] for l in self.windows()])
        # Any address of that /64 closes it.
        self.ok("window", "close", "2001:db8:9:9:ffff::2")
        self.assertNotIn("2001:db8:9:9::/64", [l.split()[0] for l in self.windows()])

    def test_expired_windows_are_not_listed(self):
        self.ok("window", "open", "192.0.2.9", "--user", "alice@example.test", "--for", "1s")
        self.assertEqual(len(self.windows()), 1)
        time.sleep(1.3)
        self.assertEqual(self.windows(), [])

    def test_bad_input(self):
        for args, code in [(("window", "open", "not-an-ip"), 2),
                           (("window", "open", "192.0.2.1", "--for", "forever"), 2),
                           (("window", "open", "192.0.2.1", "--for", "0"), 2),
                           (("window", "open", "192.0.2.1", "--user", "bad"), 2),
                           (("window", "open", "192.0.2.1", "--colour", "red"), 2),
                           (("window", "open", "192.0.2.1", "--user"), 2),
                           (("window", "open", "192.0.2.1", "--user", "zed@example.test"), 1),
                           (("window", "close"), 2)]:
            r = self.cli(*args)
            self.assertEqual(r.code, code, f"{args}: {r}")
            self.assertEqual(r.err.count("\n"), 1, r.err)
        self.assertEqual(self.windows(), [])


class QueueTest(PosternTest):
    def test_list_and_drop(self):
        self.assertEqual(self.ok("queue", "list").out, "")
        self.sql("INSERT INTO messages(sender, size, received_ms, body) "
                 f"VALUES ('a@example.test', 3, 0, {self.blob_sql(b'ABC')})")
        mid = int(self.sql("SELECT max(id) FROM messages")[0][0])
        for rcpt in ("x@remote.test", "y@remote.test"):
            self.sql("INSERT INTO queue(message_id, sender, recipient, domain, created_ms,"
                     " next_attempt_ms, attempts, last_error) VALUES (?, 'a@example.test',"
                     " ?, 'remote.test', 0, 0, 2, '451 4.3.0 try later')", (mid, rcpt))
        lines = self.ok("queue", "list").out.splitlines()
        self.assertEqual(len(lines), 2)
        first = lines[0].split()
        self.assertEqual(first[1:4], ["a@example.test", "x@remote.test", "attempts=2"])
        self.assertIn('error="451 4.3.0 try later"', lines[0])
        ids = [l.split()[0] for l in lines]
        self.ok("queue", "drop", ids[0])
        r = self.cli("queue", "drop", ids[0])
        self.assertEqual((r.code, r.err), (1, f"postern: no such queue entry: {ids[0]}\n"))
        # the body stays while one entry refers to it
        self.assertEqual(int(self.sql("SELECT count(*) FROM messages")[0][0]), 1)
        self.ok("queue", "drop", ids[1])
        # and goes with the last one
        self.assertEqual(int(self.sql("SELECT count(*) FROM messages")[0][0]), 0)
        for bad in ["x", "-1", "0", "+3", "1.5", ""]:
            self.assertEqual(self.cli("queue", "drop", bad).code, 2, bad)

    def test_flush_makes_waiting_entries_due(self):
        self.assertRegex(self.ok("queue", "flush").out, r"^flushed: 0 queue entries due now")
        far = 4102444800000  # 2100-01-01
        self.sql("INSERT INTO messages(sender, size, received_ms, body) "
                 f"VALUES ('a@example.test', 3, 0, {self.blob_sql(b'ABC')})")
        mid = int(self.sql("SELECT max(id) FROM messages")[0][0])
        for rcpt, claimed in (("x@remote.test", "NULL"), ("y@remote.test", "NULL"),
                              ("z@remote.test", "1")):
            self.sql("INSERT INTO queue(message_id, sender, recipient, domain, created_ms,"
                     " next_attempt_ms, attempts, claimed_ms) VALUES (?, 'a@example.test',"
                     f" ?, 'remote.test', 0, ?, 1, {claimed})", (mid, rcpt, far))
        before = int(time.time() * 1000)
        r = self.ok("queue", "flush")
        self.assertRegex(r.out, r"^flushed: 2 queue entries due now")
        rows = {r: int(n) for r, n in self.sql("SELECT recipient, next_attempt_ms FROM queue")}
        for rcpt in ("x@remote.test", "y@remote.test"):
            self.assertGreaterEqual(rows[rcpt], before)
            self.assertLessEqual(rows[rcpt], int(time.time() * 1000))
        self.assertEqual(rows["z@remote.test"], far)  # being tried: its attempt decides
        self.assertEqual(self.cli("queue", "flush", "extra").code, 2)


# The domain, user, network, window and queue commands again on PostgreSQL (POSTERN_TEST_PG),
# each test on a fresh database of its own.
DomainTestOnPostgresql = on_postgresql(DomainTest)
UserTestOnPostgresql = on_postgresql(UserTest)
NetworkTestOnPostgresql = on_postgresql(NetworkTest)
WindowTestOnPostgresql = on_postgresql(WindowTest)
QueueTestOnPostgresql = on_postgresql(QueueTest)


class ConfigTest(PosternTest):
    def test_check_prints_effective_values(self):
        self.write_config("[relay]\nwindow = 90m\ndenied_style = qmail\n")
        r = self.ok("config", "check")
        self.assertRegex(r.out, r"(?m)^window = 90m$")
        self.assertRegex(r.out, r"(?m)^denied_style = qmail$")
        self.assertRegex(r.out, r"(?m)^database = " + re.escape(self.db) + "$")
        # The printed configuration is itself valid and means the same.
        with open(self.conf, "w") as f:
            f.write(r.out)
        self.assertEqual(self.ok("config", "check").out, r.out)

    def test_check_masks_a_connection_strings_password(self):
        # A PostgreSQL connection string is kept as written (not resolved against the folder),
        # and its password never printed.
        for value, shown in [
                ("host=/nonexistent dbname=mail password=sekret",
                 "host=/nonexistent dbname=mail password=***"),
                ("postgresql://postern:sekret@db1/mail", "postgresql://postern:***@db1/mail")]:
            self.write_config(f"[server]\ndatabase = {value}\n")
            r = self.ok("config", "check")
            self.assertRegex(r.out, r"(?m)^database = " + re.escape(shown) + "$")
            self.assertNotIn("sekret", r.out + r.err)

    def test_errors_name_file_and_line_and_exit_2(self):
        with open(self.conf, "a") as f:
            f.write("[smtp]\nlisen = 127.0.0.1:25\n")
        with open(self.conf) as f:
            lineno = sum(1 for _ in f)
        for args in (("config", "check"), ("domain", "list"), ("serve",)):
            r = self.cli(*args)
            self.assertEqual(r.code, 2, r)
            self.assertEqual(r.err, f'{self.conf}:{lineno}: unknown key "lisen" in [smtp]\n')

    def test_missing_config_file(self):
        r = self.cli("-c", os.path.join(self.dir, "nope.conf"), "config", "check", config=False)
        self.assertEqual(r.code, 2)
        self.assertIn("nope.conf: cannot open", r.err)

    def test_default_config_in_current_folder(self):
        # Without -c, ./postern.conf is used when present (cwd is self.dir).
        r = self.cli("config", "check", config=False)
        self.assertEqual(r.code, 0, r)
        self.assertIn(f"listen = 127.0.0.1:{self.ports['smtp']}", r.out)


class StartFilesTest(PosternTest):
    """The files serve loads at start: `config check` loads them too and fails with exit 2 and
    one line naming the file; serve fails (exit 3) with that line before it creates the
    database, and never prints OpenSSL's error chain."""

    def make_cert(self, cn, cert, key):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", os.path.join(self.dir, key),
             "-out", os.path.join(self.dir, cert), "-days", "30", "-subj", f"/CN={cn}"],
            check=True, capture_output=True, timeout=60)

    def path(self, name):
        return os.path.join(os.path.realpath(self.dir), name)

    def assert_refused(self, extra, want):
        self.write_config(extra)
        r = self.cli("config", "check")
        self.assertEqual(r.code, 2, r)
        self.assertEqual(r.err, f"postern: {want}\n")
        self.assertEqual(r.out, "")
        r = self.cli("serve")
        self.assertEqual(r.code, 3, r)
        self.assertIn(f"postern: {want}\n", r.err)
        self.assertNotIn("error:0", r.err)  # no OpenSSL error chain
        self.assertFalse(os.path.exists(self.db), "serve created the database")

    def test_missing_certificate(self):
        self.make_cert("a.test", "a.pem", "a.key")
        self.assert_refused("[tls]\ncertificate = nope.pem\nkey = a.key\n",
                            f"tls: certificate {self.path('nope.pem')}: No such file or directory")

    def test_missing_key(self):
        self.make_cert("a.test", "a.pem", "a.key")
        self.assert_refused("[tls]\ncertificate = a.pem\nkey = nope.key\n",
                            f"tls: key {self.path('nope.key')}: No such file or directory")

    def test_unreadable_key(self):
        if os.geteuid() == 0:
            self.skipTest("root reads any file")
        self.make_cert("a.test", "a.pem", "a.key")
        os.chmod(os.path.join(self.dir, "a.key"), 0)
        self.assert_refused("[tls]\ncertificate = a.pem\nkey = a.key\n",
                            f"tls: key {self.path('a.key')}: Permission denied")

    def test_key_of_another_certificate(self):
        self.make_cert("a.test", "a.pem", "a.key")
        self.make_cert("b.test", "b.pem", "b.key")
        self.assert_refused("[tls]\ncertificate = a.pem\nkey = b.key\n",
                            f"tls: key {self.path('b.key')} does not match the certificate "
                            f"{self.path('a.pem')}")

    def test_garbage_certificate(self):
        self.make_cert("a.test", "a.pem", "a.key")
        with open(os.path.join(self.dir, "bad.pem"), "w") as f:
            f.write("garbage\n")
        self.assert_refused("[tls]\ncertificate = bad.pem\nkey = a.key\n",
                            f"tls: certificate {self.path('bad.pem')}: not a PEM certificate "
                            "(no start line)")

    def test_missing_smarthost_password_file(self):
        self.assert_refused("[relay]\nsmarthost = 127.0.0.1:1\nsmarthost_user = u\n"
                            "smarthost_password_file = nowhere.pw\n",
                            f"{self.path('nowhere.pw')}: cannot open the smarthost password file: "
                            "No such file or directory")

    def test_good_files_pass(self):
        self.make_cert("a.test", "a.pem", "a.key")
        with open(os.path.join(self.dir, "relay.pw"), "w") as f:
            f.write("secret\n")
        self.write_config("[tls]\ncertificate = a.pem\nkey = a.key\n"
                          "[relay]\nsmarthost = 127.0.0.1:1\nsmarthost_user = u\n"
                          "smarthost_password_file = relay.pw\n")
        r = self.ok("config", "check")
        self.assertNotIn("secret", r.out + r.err)


class StoreTest(PosternTest):
    def test_newer_schema_is_refused_with_exit_3(self):
        self.ok("domain", "list")
        with sqlite3.connect(self.db) as c:
            c.execute("PRAGMA user_version = 999")
        r = self.cli("domain", "list")
        self.assertEqual(r.code, 3, r)
        self.assertIn("newer than this postern", r.err)

    def test_old_database_is_migrated_keeping_data(self):
        # A database at schema version 1, as an older postern left it.
        with sqlite3.connect(self.db) as c:
            c.executescript(
                "CREATE TABLE domains (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
                " created_ms INTEGER NOT NULL);"
                "CREATE TABLE users (id INTEGER PRIMARY KEY, address TEXT NOT NULL UNIQUE,"
                " domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE RESTRICT,"
                " password_hash TEXT NOT NULL, created_ms INTEGER NOT NULL);"
                "CREATE INDEX users_domain ON users(domain_id);"
                "CREATE TABLE networks (id INTEGER PRIMARY KEY, cidr TEXT NOT NULL UNIQUE,"
                " family INTEGER NOT NULL CHECK (family IN (4, 6)), net BLOB NOT NULL,"
                " prefix INTEGER NOT NULL, created_ms INTEGER NOT NULL);"
                "INSERT INTO domains(name, created_ms) VALUES ('old.test', 0);"
                "PRAGMA user_version = 1;")
        self.assertEqual([l.split()[0] for l in self.ok("domain", "list").out.splitlines()],
                         ["old.test"])
        with sqlite3.connect(self.db) as c:
            self.assertEqual(c.execute("PRAGMA user_version").fetchone()[0], 12)
            self.assertEqual(c.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.ok("window", "list")
        self.ok("queue", "list")
        self.ok("fault", "list")

    def test_unwritable_database_exit_3(self):
        self.write_config(f"[server]\ndatabase = {self.dir}/no/such/folder/x.db\n")
        r = self.cli("domain", "list")
        self.assertEqual(r.code, 3, r)
        self.assertIn("x.db", r.err)


class DatabaseModeTest(PosternTest):
    """The database holds every password hash and message: it and its -wal and -shm files are
    created 0600 whatever the umask; serve refuses a database others can read, admin commands
    warn."""

    def setUp(self):
        super().setUp()
        old = os.umask(0o022)  # the usual umask, under which SQLite alone would create 0644
        self.addCleanup(os.umask, old)

    def modes(self):
        out = {}
        for suffix in ("", "-wal", "-shm"):
            path = self.db + suffix
            if os.path.exists(path):
                out[suffix or "db"] = stat.S_IMODE(os.stat(path).st_mode)
        return out

    def test_created_0600_by_an_admin_command_and_by_serve(self):
        self.ok("domain", "add", "example.test")
        self.assertEqual(self.modes(), {"db": 0o600})
        self.start_server()
        self.ok("domain", "add", "other.test")  # while serve holds the WAL open
        self.assertEqual(self.modes(), {"db": 0o600, "-wal": 0o600, "-shm": 0o600})

    def test_serve_creates_a_missing_database_0600(self):
        self.start_server()
        self.assertEqual(self.modes(), {"db": 0o600, "-wal": 0o600, "-shm": 0o600})

    def serve_once(self):
        return self.cli("serve", timeout=30)

    def test_serve_refuses_a_database_others_can_read(self):
        self.ok("domain", "add", "example.test")
        os.chmod(self.db, 0o644)
        r = self.serve_once()
        self.assertEqual(r.code, 3, r)
        want = (f"postern: database file {self.db} is readable by others (mode 0644); "
                f"fix with: chmod 600 {self.db}")
        self.assertIn(want + "\n", r.err)
        self.assertNotIn("event=ready", r.err)

    def test_serve_refuses_an_exposed_wal(self):
        self.ok("domain", "add", "example.test")
        with open(self.db + "-wal", "wb"):
            pass
        os.chmod(self.db + "-wal", 0o666)
        r = self.serve_once()
        self.assertEqual(r.code, 3, r)
        self.assertIn(f"postern: database file {self.db}-wal is readable and writable by others "
                      f"(mode 0666); fix with: chmod 600 {self.db}-wal\n", r.err)

    def test_serve_warns_about_group_access_and_starts(self):
        self.ok("domain", "add", "example.test")
        os.chmod(self.db, 0o640)
        self.start_server()
        self.assertIn(f"is readable by its group (mode 0640); fix with: chmod 600 {self.db}",
                      self.read_log())

    def test_admin_commands_warn_and_go_on(self):
        self.ok("domain", "add", "example.test")
        os.chmod(self.db, 0o644)
        r = self.ok("domain", "list")
        self.assertTrue(r.out.startswith("example.test "), r)
        self.assertEqual(r.err, f"postern: warning: database file {self.db} is readable by others "
                                f"(mode 0644); fix with: chmod 600 {self.db}\n")
        os.chmod(self.db, 0o600)
        self.assertEqual(self.ok("domain", "list").err, "")


class FriendlyCliTest(PosternTest):
    """Saying what happens: the database a command creates, empty lists, usage lines."""

    def test_without_config_the_created_database_is_named(self):
        bare = os.path.join(self.dir, "bare")
        os.mkdir(bare)
        run = lambda *a: subprocess.run([BIN] + list(a), capture_output=True, text=True,
                                        timeout=60, cwd=bare)
        r = run("domain", "list")
        self.assertEqual(r.returncode, 0, r)
        path = os.path.join(os.path.realpath(bare), "postern.db")
        self.assertEqual(r.stderr, f"postern: created a new database {path} (no -c FILE and no "
                                   "./postern.conf: built-in defaults)\n"
                                   "postern: no local domains\n")
        self.assertTrue(os.path.exists(path))
        # Only when it is being created.
        r = run("domain", "add", "example.test")
        self.assertEqual((r.returncode, r.stderr), (0, ""), r)

    def test_with_config_the_created_database_is_named_once(self):
        r = self.cli("network", "add", "10.0.0.0/8")
        self.assertEqual(r.code, 0, r)
        self.assertEqual(r.err, f"postern: created a new database {os.path.realpath(self.db)}\n")
        self.assertEqual(self.ok("network", "list").err, "")

    def test_empty_lists_say_so_on_stderr(self):
        self.ok("domain", "list")  # creates the database
        for args, text in [(("domain", "list"), "no local domains"),
                           (("user", "list"), "no users"),
                           (("user", "list", "example.test"), "no users in example.test"),
                           (("network", "list"), "no trusted networks"),
                           (("window", "list"), "no open windows"),
                           (("queue", "list"), "queue is empty")]:
            r = self.ok(*args)
            self.assertEqual((r.out, r.err), ("", f"postern: {text}\n"), args)
        self.ok("domain", "add", "example.test")
        self.assertEqual(self.ok("domain", "list").err, "")

    def test_unknown_option_prints_the_usage_line(self):
        r = self.cli("window", "list", "--bogus")
        self.assertEqual(r.code, 2, r)
        self.assertEqual(r.err, "postern: unknown option --bogus; usage: postern window list | "
                                "postern window open IP [--user ADDRESS] [--for DURATION] | "
                                "postern window close IP\n")
        r = self.cli("queue", "drop", "1", "--user=x")
        self.assertEqual(r.code, 2, r)
        self.assertIn("usage: postern queue list | postern queue flush | postern queue drop ID",
                      r.err)

    def test_no_command_exits_2_with_the_usage(self):
        for args in [(), ("-c", self.conf)]:
            r = subprocess.run([BIN] + list(args), capture_output=True, text=True, timeout=60,
                               cwd=self.dir)
            self.assertEqual(r.returncode, 2, r)
            self.assertTrue(r.stderr.startswith("usage: postern [-c FILE] COMMAND [ARGS]\n"), r)
            self.assertEqual(r.stdout, "")


class WhileServingTest(PosternTest):
    def test_commands_work_while_serve_runs_and_sigterm_exits_0(self):
        self.start_server()
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", "alice@example.test", input="pw\n")
        self.ok("network", "add", "10.0.0.0/8")
        self.ok("window", "open", "192.0.2.1", "--user", "alice@example.test")
        self.assertEqual(len(self.ok("window", "list").out.splitlines()), 1)
        self.assertEqual(self.stop_server(), 0)
        self.assertIn("event=stopped", self.read_log())

    def test_sigint_exits_0_and_sighup_keeps_running(self):
        import signal
        self.start_server()
        self.server.send_signal(signal.SIGHUP)
        self.wait_log("event=reload")
        self.assertIsNone(self.server.poll())
        self.assertEqual(self.stop_server(signal.SIGINT), 0)
