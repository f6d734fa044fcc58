"""Fault injection against the real binary: rules armed and disarmed with `postern fault` while
the server runs ([server] faults = yes), one test per action and point family. A 451 for one
recipient only; POP3 dropped in the middle of RETR 2; a delayed EHLO; a drop at connect that
fires twice and then stops; a seeded probability that repeats exactly; a stall mid-line; rules
added and deleted while the server runs; and a server with faults off that ignores the rules.
Every firing is in the log as event=fault rule=ID point=... action=....
"""
import os
import select
import shutil
import sqlite3
import subprocess
import tempfile
import time

from harness import BIN, PosternTest, free_ports
from test_conn import Client

ALICE, BOB = "alice@example.test", "bob@example.test"
PW = {ALICE: "alice secret 1", BOB: "bob-secret-2"}
FAULTS_ON = "[server]\nfaults = yes\n[pop3]\nplaintext_auth = yes\n"


class FaultTest(PosternTest):
    extra_config = FAULTS_ON

    def setUp(self):
        super().setUp()
        self.ok("domain", "add", "example.test")
        for u in (ALICE, BOB):
            self.ok("user", "add", u, input=PW[u] + "\n")

    # ---- helpers ----
    def fault(self, *args):
        """Adds a rule; returns its id (the first word of "added fault ID ...")."""
        return int(self.ok("fault", "add", *args).out.split()[2])

    def smtp(self):
        c = Client(self.ports["smtp"])
        self.addCleanup(c.sock.close)
        return c

    def cmd(self, c, line):
        c.send(line + "\r\n")
        return c.reply()[-1]

    def ehlo(self, c):
        self.assertTrue(c.reply()[-1].startswith("220 "))
        self.assertTrue(self.cmd(c, "EHLO client.example").startswith("250 "))

    def rcpt_pattern(self, n):
        """One session, n recipients: the first three digits of each RCPT answer, joined."""
        c = self.smtp()
        self.ehlo(c)
        self.assertTrue(self.cmd(c, "MAIL FROM:<x@example.org>").startswith("250 "))
        codes = [self.cmd(c, f"RCPT TO:<{ALICE}>")[:3] for _ in range(n)]
        self.cmd(c, "QUIT")
        return " ".join(codes)

    def add_message(self, user, body):
        """Stores a message straight into user's mailbox, as storage/mailbox.c does."""
        now = int(time.time() * 1000)
        db = sqlite3.connect(self.db, timeout=30)
        try:
            uid = db.execute("SELECT id FROM users WHERE address = ?", (user,)).fetchone()[0]
            tag = db.execute("SELECT value FROM meta WHERE key = 'uidl_tag'").fetchone()[0]
            mid = db.execute("INSERT INTO messages(sender, size, received_ms, body) "
                             "VALUES ('x@example.test', ?, ?, ?)", (len(body), now, body)).lastrowid
            eid = db.execute("INSERT INTO mailbox(user_id, message_id, uidl, size, added_ms) "
                             "VALUES (?, ?, '', ?, ?)", (uid, mid, len(body), now)).lastrowid
            db.execute("UPDATE mailbox SET uidl = ? WHERE id = ?", (f"{tag}.{eid}.{now}", eid))
            db.commit()
        finally:
            db.close()

    def pop3_login(self, user=ALICE):
        c = Client(self.ports["pop3"])
        self.addCleanup(c.sock.close)
        self.assertTrue(c.line().startswith("+OK"))
        c.send(f"USER {user}\r\n")
        self.assertTrue(c.line().startswith("+OK"))
        c.send(f"PASS {PW[user]}\r\n")
        self.assertTrue(c.line().startswith("+OK Logged in"))
        return c

    def read_until_closed(self, c, timeout=10.0):
        """Everything the server sends until it closes; fails if it does not within timeout."""
        data, deadline = c.buf, time.monotonic() + timeout
        c.buf = b""
        while time.monotonic() < deadline:
            c.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = c.sock.recv(65536)
            if not chunk:
                return data
            data += chunk
        self.fail(f"the server did not close; got {data!r}")

    # ---- the recipes ----
    def test_451_at_rcpt_for_one_recipient(self):
        self.start_server()
        self.assertIn("faults = yes in [server] turns fault injection on", self.read_log())
        rid = self.fault("smtp.rcpt", "reply", "--to", BOB,
                         "--reply", "451 4.3.0 Try again later")
        c = self.smtp()
        self.ehlo(c)
        self.assertTrue(self.cmd(c, "MAIL FROM:<x@example.org>").startswith("250 "))
        self.assertTrue(self.cmd(c, f"RCPT TO:<{ALICE}>").startswith("250 "))
        self.assertEqual(self.cmd(c, f"RCPT TO:<{BOB.upper()}>"), "451 4.3.0 Try again later")
        self.assertTrue(self.cmd(c, f"RCPT TO:<{ALICE}>").startswith("250 "))
        self.wait_log(f"event=fault rule={rid} point=smtp.rcpt action=reply")

    def test_drop_pop3_in_the_middle_of_retr_2(self):
        bodies = [b"Subject: one\r\n\r\n" + b"first\r\n" * 50,
                  b"Subject: two\r\n\r\n" + b"second line\r\n" * 200]
        for b in bodies:
            self.add_message(ALICE, b)
        self.start_server()
        rid = self.fault("pop3.retr", "drop-body", "--msg", "2", "--after", "100")
        c = self.pop3_login()
        c.send("RETR 1\r\n")
        self.assertTrue(c.line().startswith("+OK"))
        got = b""
        while True:
            line = c.line().encode("latin-1")
            if line == b".":
                break
            got += line + b"\r\n"
        self.assertEqual(got, bodies[0])
        c.send("RETR 2\r\n")
        self.assertTrue(c.line().startswith("+OK"))
        rest = self.read_until_closed(c)
        self.assertEqual(rest, bodies[1][:100])
        self.wait_log(f"event=fault rule={rid} point=pop3.retr action=drop-body")
        # The drop deleted nothing (RFC 1939 6): both are still there.
        c = self.pop3_login()
        c.send("STAT\r\n")
        self.assertTrue(c.line().startswith("+OK 2 "))

    def test_delay_at_ehlo(self):
        self.start_server()
        rid = self.fault("smtp.ehlo", "delay", "--delay", "3s")
        c = self.smtp()
        self.assertTrue(c.reply()[-1].startswith("220 "))
        c.send("EHLO client.example\r\nNOOP\r\n")
        # Nothing comes at once (a lower bound only: a slow machine makes it later, not sooner).
        ready, _, _ = select.select([c.sock], [], [], 0.5)
        self.assertEqual(ready, [])
        c.sock.settimeout(20)
        self.assertTrue(c.reply()[-1].startswith("250 "))
        self.assertTrue(c.reply()[-1].startswith("250 2.0.0"))  # the pipelined NOOP, after it
        self.wait_log(f"event=fault rule={rid} point=smtp.ehlo action=delay")
        # A client that leaves while its command is held: the delay is cancelled cleanly.
        c = self.smtp()
        c.reply()
        c.send("EHLO leaving.example\r\n")
        c.sock.close()
        self.wait_log("event=disconnected")
        self.assertEqual(self.stop_server(), 0)
        self.assertNotIn("Sanitizer", self.read_log())

    def test_n_times_then_off(self):
        self.start_server()
        rid = self.fault("smtp.connect", "drop", "--times", "2")
        for _ in range(2):
            c = self.smtp()
            self.assertTrue(c.closed(timeout=10))
        c = self.smtp()
        self.assertTrue(c.reply()[-1].startswith("220 "))
        log = self.read_log()
        self.assertEqual(log.count(f"event=fault rule={rid} point=smtp.connect action=drop"), 2)

    def test_probability_with_a_seed_repeats_exactly(self):
        self.start_server()
        args = ("smtp.rcpt", "reply", "--reply", "451 4.3.0 Maybe",
                "--probability", "0.5", "--seed", "42")
        rid = self.fault(*args)
        first = self.rcpt_pattern(24)
        self.assertIn("451", first)
        self.assertIn("250", first)
        # The same rule again (a new id, its counts from zero) decides the same way.
        self.ok("fault", "del", str(rid))
        self.fault(*args)
        self.assertEqual(self.rcpt_pattern(24), first)
        # Another seed decides otherwise.
        self.ok("fault", "del", str(rid + 1))
        self.fault(*args[:-1], "43")
        self.assertNotEqual(self.rcpt_pattern(24), first)

    def test_stall_mid_line_at_pop3_stat(self):
        self.start_server()
        rid = self.fault("pop3.stat", "stall", "--reply", "-ERR [SYS/TEMP] stalled on purpose")
        c = self.pop3_login()
        c.send("STAT\r\n")
        c.sock.settimeout(10)
        part = c.sock.recv(100)
        self.assertEqual(part, b"-ERR [SYS/TEMP] s")
        ready, _, _ = select.select([c.sock], [], [], 0.5)
        self.assertEqual(ready, [])
        self.wait_log(f"event=fault rule={rid} point=pop3.stat action=stall")

    def test_add_and_del_while_running(self):
        self.start_server()
        c = self.smtp()
        self.assertTrue(c.reply()[-1].startswith("220 "))
        rid = self.fault("smtp.connect", "reply", "--reply", "554 5.3.2 Not now")
        self.assertEqual(self.smtp().reply()[-1], "554 5.3.2 Not now")
        self.assertIn(f"{rid} smtp.connect reply", self.ok("fault", "list").out)
        # A session that started before the rule meets it at its next point within a second.
        self.ok("fault", "add", "smtp.ehlo", "reply", "--reply", "421 4.3.2 Going away")
        deadline = time.monotonic() + 10
        while self.cmd(c, "EHLO client.example") != "421 4.3.2 Going away":
            self.assertLess(time.monotonic(), deadline, "the running session never saw the rule")
            time.sleep(0.2)
        self.ok("fault", "del", str(rid))
        self.assertTrue(self.smtp().reply()[-1].startswith("220 "))
        self.assertEqual(self.cli("fault", "del", str(rid)).code, 1)

    def test_login_reply_and_eod_drop(self):
        self.start_server()
        rid = self.fault("pop3.login", "reply", "--user", BOB,
                         "--reply", "-ERR [SYS/TEMP] try later")
        c = Client(self.ports["pop3"])
        self.addCleanup(c.sock.close)
        c.line()
        c.send(f"USER {BOB}\r\nPASS {PW[BOB]}\r\n")
        self.assertTrue(c.line().startswith("+OK"))
        self.assertEqual(c.line(), "-ERR [SYS/TEMP] try later")
        self.pop3_login(ALICE)  # another user logs in
        self.wait_log(f"event=fault rule={rid} point=pop3.login action=reply")
        rid = self.fault("smtp.eod", "drop", "--from", "x@example.org")
        c = self.smtp()
        self.ehlo(c)
        for line in ("MAIL FROM:<x@example.org>", f"RCPT TO:<{ALICE}>", "DATA"):
            self.assertIn(self.cmd(c, line)[:3], ("250", "354"))
        c.send("Subject: x\r\n\r\nbody\r\n.\r\n")
        self.assertTrue(c.closed(timeout=10))
        self.wait_log(f"event=fault rule={rid} point=smtp.eod action=drop")


class SmarthostRecipeTest(PosternTest):
    """The README's recipe "smarthost answers 421": a second postern plays the smarthost with a
    421 fault at connect; the server under test keeps the message and records the 421."""

    def start_smarthost(self):
        d = tempfile.mkdtemp(prefix="postern-e2e-smarthost-")
        self.addCleanup(shutil.rmtree, d, True)
        ports = free_ports(5)
        conf = os.path.join(d, "postern.conf")
        with open(conf, "w") as f:
            f.write("[server]\nhostname = smarthost.example.test\ndatabase = postern.db\n"
                    "faults = yes\n"
                    f"[smtp]\nlisten = 127.0.0.1:{ports[0]}\nsubmission = 127.0.0.1:{ports[1]}\n"
                    f"submissions = 127.0.0.1:{ports[2]}\n"
                    f"[pop3]\nlisten = 127.0.0.1:{ports[3]}\npop3s = 127.0.0.1:{ports[4]}\n")
        cli = [BIN, "-c", conf]
        r = subprocess.run(cli + ["fault", "add", "smtp.connect", "reply", "--reply",
                                  "421 4.3.2 Service not available"],
                           capture_output=True, text=True, timeout=60, cwd=d)
        self.assertEqual(r.returncode, 0, r.stderr)
        log = open(os.path.join(d, "serve.log"), "w+")
        self.addCleanup(log.close)
        proc = subprocess.Popen(cli + ["serve"], stdout=log, stderr=subprocess.STDOUT, cwd=d)

        def stop():
            proc.terminate()
            proc.wait(timeout=20)
        self.addCleanup(stop)
        def ready():
            with open(os.path.join(d, "serve.log")) as f:
                return "event=ready" in f.read()
        deadline = time.monotonic() + 20
        while not ready():
            self.assertLess(time.monotonic(), deadline, "the smarthost did not start")
            self.assertIsNone(proc.poll(), "the smarthost exited")
            time.sleep(0.05)
        return ports[0], os.path.join(d, "serve.log")

    def test_smarthost_answers_421(self):
        port, smarthost_log = self.start_smarthost()
        self.write_config(f"[relay]\nsmarthost = 127.0.0.1:{port}\n")
        self.ok("domain", "add", "example.test")
        self.ok("network", "add", "127.0.0.0/8")
        self.start_server()
        c = Client(self.ports["smtp"])
        self.addCleanup(c.sock.close)
        self.assertTrue(c.reply()[-1].startswith("220 "))
        for line, code in (("EHLO client.example", "250"), ("MAIL FROM:<a@example.test>", "250"),
                           ("RCPT TO:<bob@dest.test>", "250"), ("DATA", "354")):
            c.send(line + "\r\n")
            self.assertEqual(c.reply()[-1][:3], code, line)
        c.send("Subject: x\r\n\r\nbody\r\n.\r\n")
        self.assertTrue(c.reply()[-1].startswith("250 "))
        deadline = time.monotonic() + 30
        while "421 4.3.2 Service not available" not in self.ok("queue", "list").out:
            self.assertLess(time.monotonic(), deadline, self.ok("queue", "list").out)
            time.sleep(0.2)
        self.assertIn("bob@dest.test", self.ok("queue", "list").out)
        with open(smarthost_log) as f:
            self.assertIn("event=fault rule=1 point=smtp.connect action=reply", f.read())


class FaultsOffTest(PosternTest):
    """Without [server] faults = yes the rules are stored but never fire."""

    def test_rules_are_ignored_when_off(self):
        r = self.ok("fault", "add", "smtp.connect", "drop")
        self.assertIn("faults is no", r.err)
        self.start_server()
        c = Client(self.ports["smtp"])
        self.addCleanup(c.sock.close)
        self.assertTrue(c.reply()[-1].startswith("220 "))
        self.assertNotIn("event=fault", self.read_log())
