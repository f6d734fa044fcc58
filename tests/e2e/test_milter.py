"""Milters (README.md, "Filtering"): postern against real milters written with python3-milter
(Debian's binding of Sendmail's libmilter; tests/e2e/milter_fake.py), one per action family,
started on a Unix socket in the test's folder. Runs under the system Python (/usr/bin/python3,
CMakeLists.txt), where the Debian package lives; scripts/bootstrap installs it.

Checked: what the milter is told (connect, HELO, MAIL, RCPT with their macros, the headers and
the body); reject, tempfail and discard at connect, HELO, RCPT and end of message, with the
milter's own reply text passed to the client; the GTUBE message refused; every modification
(add, insert, change and delete header, replace body, change sender, add and delete recipient,
quarantine) found in what is stored; a milter that is down or slow answered by default_action,
logged once per outage; OpenDKIM (Debian's opendkim) verifying postern's own DKIM signature."""
import os
import re
import socket
import sqlite3
import subprocess
import time
import unittest

from harness import PosternTest

PY = "/usr/bin/python3"
FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "milter_fake.py")
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


class Smtp:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.f = self.s.makefile("rb")
        self.greeting = self.reply()

    def reply(self):
        while True:
            line = self.f.readline().decode()
            if line[3:4] != "-":
                return line.rstrip("\r\n")

    def cmd(self, line):
        self.s.sendall(line.encode() + b"\r\n")
        return self.reply()

    def message(self, sender, rcpts, subject, body="hello\r\n", extra=""):
        assert self.cmd(f"MAIL FROM:<{sender}>").startswith("250")
        for r in rcpts:
            assert self.cmd(f"RCPT TO:<{r}>").startswith("250")
        assert self.cmd("DATA").startswith("354")
        self.s.sendall((f"From: {sender}\r\nTo: {rcpts[0]}\r\nSubject: {subject}\r\n{extra}\r\n"
                        f"{body}.\r\n").encode())
        return self.reply()

    def close(self):
        try:
            self.cmd("QUIT")
        except OSError:
            pass
        self.s.close()


class MilterTest(PosternTest):
    def setUp(self):
        super().setUp()
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", "alice@example.test", input="alice password\n")
        self.ok("user", "add", "bob@example.test", input="bob password\n")

    def start_milter(self, mode):
        sock = os.path.join(self.dir, f"milter-{mode}.sock")
        out = open(os.path.join(self.dir, f"milter-{mode}.out"), "w+")
        self.addCleanup(out.close)
        proc = subprocess.Popen([PY, FAKE, "unix:" + sock, mode], stdout=out,
                                stderr=subprocess.STDOUT, cwd=self.dir)
        self.addCleanup(lambda: (proc.kill(), proc.wait(timeout=10)))
        deadline = time.monotonic() + 20
        while not os.path.exists(sock):
            self.assertIsNone(proc.poll(), "the milter exited")
            self.assertLess(time.monotonic(), deadline, "the milter did not start")
            time.sleep(0.05)
        self.milter_out = out.name
        return sock

    def serve(self, milters, extra=""):
        self.write_config(f"[milter]\nmx = {milters}\ntimeout = 10s\n{extra}")
        self.start_server()

    def seen(self):
        with open(self.milter_out) as f:
            return f.read()

    def stored(self):
        con = sqlite3.connect(self.db, timeout=10)
        try:
            return [bytes(r[0]).decode("utf-8", "replace") for r in con.execute(
                "SELECT body FROM messages ORDER BY id").fetchall()]
        finally:
            con.close()

    def mailbox_count(self, user):
        con = sqlite3.connect(self.db, timeout=10)
        try:
            return con.execute("SELECT count(*) FROM mailbox m JOIN users u ON u.id = m.user_id "
                               "WHERE u.address = ?", (user,)).fetchone()[0]
        finally:
            con.close()

    # ---- what the milter is told ----

    def test_steps_and_macros_reach_the_milter(self):
        self.serve("unix:" + self.start_milter("none"))
        c = Smtp(self.ports["smtp"])
        self.assertTrue(c.greeting.startswith("220"), c.greeting)
        self.assertTrue(c.cmd("EHLO client.test").startswith("250"))
        r = c.message("sender@remote.test", ["alice@example.test"], "hi", "line one\r\n")
        self.assertTrue(r.startswith("250"), r)
        queue_id = r.split()[-1]
        c.close()
        seen = self.seen()
        self.assertIn("connect [127.0.0.1] 127.0.0.1 mail.example.test 127.0.0.1 smtp", seen)
        self.assertIn("helo client.test", seen)
        self.assertIn("mail <sender@remote.test> sender@remote.test", seen)
        self.assertIn("rcpt <alice@example.test> alice@example.test", seen)
        self.assertIn("header Subject hi", seen)
        self.assertIn("eoh", seen)
        self.assertIn(f"eom 10 {queue_id}", seen)
        self.assertEqual(len(self.stored()), 1)

    # ---- verdicts ----

    def test_reject_at_connect(self):
        self.serve("unix:" + self.start_milter("connect"))
        c = Smtp(self.ports["smtp"])
        self.assertTrue(c.greeting.startswith("554 "), c.greeting)
        c.s.close()

    def test_tempfail_at_helo(self):
        self.serve("unix:" + self.start_milter("helo"))
        c = Smtp(self.ports["smtp"])
        self.assertTrue(c.cmd("EHLO client.test").startswith("451 4.7.1"))
        self.assertTrue(c.cmd("MAIL FROM:<a@remote.test>").startswith("503"))
        c.close()

    def test_reject_recipient_with_the_milters_text(self):
        self.ok("user", "add", "spam@example.test", input="spam password\n")
        self.serve("unix:" + self.start_milter("rcpt"))
        c = Smtp(self.ports["smtp"])
        c.cmd("EHLO client.test")
        self.assertTrue(c.cmd("MAIL FROM:<a@remote.test>").startswith("250"))
        self.assertEqual(c.cmd("RCPT TO:<spam@example.test>"), "550 5.7.1 no spam for you")
        self.assertTrue(c.cmd("RCPT TO:<alice@example.test>").startswith("250"))
        self.assertTrue(c.cmd("DATA").startswith("354"))
        c.s.sendall(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        self.assertTrue(c.reply().startswith("250"))
        c.close()
        self.assertEqual(len(self.stored()), 1)

    def test_end_of_message_verdicts(self):
        self.serve("unix:" + self.start_milter("eom"))
        c = Smtp(self.ports["smtp"])
        c.cmd("EHLO client.test")
        r = c.message("a@remote.test", ["alice@example.test"], "reject")
        self.assertEqual(r, "550 5.7.1 rejected by the fake milter")
        r = c.message("a@remote.test", ["alice@example.test"], "tempfail")
        self.assertTrue(r.startswith("451 4.7.1"), r)
        r = c.message("a@remote.test", ["alice@example.test"], "gtube", GTUBE + "\r\n")
        self.assertEqual(r, "554 5.7.1 Gtube pattern; spam detected")
        r = c.message("a@remote.test", ["alice@example.test"], "discard")
        self.assertTrue(r.startswith("250 2.0.0"), r)
        self.assertEqual(self.stored(), [])
        self.wait_log("event=message-discarded")
        r = c.message("a@remote.test", ["alice@example.test"], "fine")
        self.assertTrue(r.startswith("250 2.0.0"), r)
        c.close()
        self.assertEqual(len(self.stored()), 1)

    def test_bdat_messages_go_through_the_milters(self):
        """A message sent in BDAT chunks (RFC 3030) meets the same end-of-message verdict and
        changes as one sent with DATA."""
        self.serve("unix:" + self.start_milter("eom"))
        c = Smtp(self.ports["smtp"])
        c.cmd("EHLO client.test")
        for subject, want in (("reject", "550 5.7.1 rejected by the fake milter"),
                              ("addheader", "250 2.0.0")):
            self.assertTrue(c.cmd("MAIL FROM:<a@remote.test>").startswith("250"))
            self.assertTrue(c.cmd("RCPT TO:<alice@example.test>").startswith("250"))
            head = f"From: a@remote.test\r\nSubject: {subject}\r\n".encode()
            body = b"\r\nchunked body\r\n"
            c.s.sendall(f"BDAT {len(head)}\r\n".encode() + head)
            self.assertTrue(c.reply().startswith("250"))
            c.s.sendall(f"BDAT {len(body)} LAST\r\n".encode() + body)
            r = c.reply()
            self.assertTrue(r.startswith(want), (subject, r))
        c.close()
        stored = self.stored()
        self.assertEqual(len(stored), 1)
        head, _, body = stored[0].partition("\r\n\r\n")
        self.assertTrue(head.endswith("X-Fake-Milter: checked"), head)
        self.assertEqual(body, "chunked body\r\n")

    # ---- modifications ----

    def test_header_and_body_changes_are_stored(self):
        self.serve("unix:" + self.start_milter("eom"))
        c = Smtp(self.ports["smtp"])
        c.cmd("EHLO client.test")
        big = ("z" * 998 + "\r\n") * 300  # spooled: beyond what is kept in memory
        for subject, body, extra in (("addheader", big, ""), ("insheader", "b\r\n", ""),
                                     ("chgheader", "b\r\n", ""),
                                     ("delheader", "b\r\n", "X-Remove: me\r\n"),
                                     ("replbody", "old body\r\n", "")):
            r = c.message("a@remote.test", ["alice@example.test"], subject, body, extra)
            self.assertTrue(r.startswith("250"), (subject, r))
        c.close()
        add, ins, chg, dele, repl = self.stored()
        head, _, body = add.partition("\r\n\r\n")
        self.assertTrue(head.endswith("X-Fake-Milter: checked"), head)
        self.assertEqual(body, big)
        self.assertRegex(ins, r"\+0000\r\nX-First: inserted\r\nFrom: ")
        self.assertIn("\r\nSubject: changed\r\n", chg)
        self.assertNotIn("Subject: chgheader", chg)
        self.assertNotIn("X-Remove", dele)
        self.assertTrue(repl.endswith("\r\n\r\nreplaced body\r\n"), repl)

    def test_envelope_changes(self):
        self.serve("unix:" + self.start_milter("eom"))
        c = Smtp(self.ports["smtp"])
        c.cmd("EHLO client.test")
        self.assertTrue(c.message("a@remote.test", ["alice@example.test"],
                                  "addrcpt").startswith("250"))
        self.assertEqual((self.mailbox_count("alice@example.test"),
                          self.mailbox_count("bob@example.test")), (1, 1))
        self.assertTrue(c.message("a@remote.test", ["alice@example.test", "bob@example.test"],
                                  "delrcpt").startswith("250"))
        self.assertEqual((self.mailbox_count("alice@example.test"),
                          self.mailbox_count("bob@example.test")), (2, 1))
        self.assertTrue(c.message("a@remote.test", ["alice@example.test"],
                                  "chgfrom").startswith("250"))
        c.close()
        self.assertIn("Return-Path: <new-sender@example.test>", self.stored()[-1])

    def test_quarantine_is_stored_and_shown(self):
        self.ok("network", "add", "127.0.0.0/8")
        self.serve("unix:" + self.start_milter("eom"))
        c = Smtp(self.ports["smtp"])
        c.cmd("EHLO client.test")
        r = c.message("alice@example.test", ["carol@dest.test", "bob@example.test"],
                      "quarantine")
        self.assertTrue(r.startswith("250"), r)
        c.close()
        self.wait_log('quarantine="looks odd"')
        self.stop_server()
        listed = self.ok("queue", "list").out
        self.assertIn("carol@dest.test", listed)
        self.assertIn('quarantine="looks odd"', listed)
        con = sqlite3.connect(self.db, timeout=10)
        try:
            self.assertEqual(con.execute("SELECT quarantine FROM messages").fetchall(),
                             [("looks odd",)])
        finally:
            con.close()

    # ---- a milter that is down ----

    def test_down_milter_tempfails_by_default(self):
        self.serve("unix:" + os.path.join(self.dir, "nobody.sock"))
        for _ in range(2):
            c = Smtp(self.ports["smtp"])
            self.assertTrue(c.greeting.startswith("421 4.7.1"), c.greeting)
            c.s.close()
        self.wait_log("event=milter-down")
        time.sleep(0.2)
        self.assertEqual(self.read_log().count("event=milter-down"), 1)

    def test_slow_milter_tempfails_the_message(self):
        self.serve("unix:" + self.start_milter("slow"), "timeout = 1s\n")
        c = Smtp(self.ports["smtp"])
        c.cmd("EHLO client.test")
        r = c.message("a@remote.test", ["alice@example.test"], "x")
        self.assertTrue(r.startswith("451 4.7.1"), r)
        c.close()
        self.assertIn('reason="timeout"', self.wait_log("event=milter-down"))
        self.assertEqual(self.stored(), [])
        # A client that leaves while the milter thinks: the server drops the step and goes on.
        c = Smtp(self.ports["smtp"])
        c.cmd("EHLO client.test")
        for line in ("MAIL FROM:<a@remote.test>", "RCPT TO:<alice@example.test>", "DATA"):
            self.assertTrue(c.cmd(line)[0] in "23", line)
        c.s.sendall(b"Subject: gone\r\n\r\nbody\r\n.\r\n")
        c.s.close()
        c = Smtp(self.ports["smtp"])
        self.assertTrue(c.greeting.startswith("220"), c.greeting)
        c.close()
        self.assertEqual(self.stored(), [])
        code = self.stop_server()
        self.assertEqual(code, 0, self.read_log()[-9000:])

    def test_down_milter_accepts_when_configured(self):
        self.serve("unix:" + os.path.join(self.dir, "nobody.sock"),
                   "default_action = accept\n")
        c = Smtp(self.ports["smtp"])
        self.assertTrue(c.greeting.startswith("220"), c.greeting)
        c.cmd("EHLO client.test")
        self.assertTrue(c.message("a@remote.test", ["alice@example.test"], "x").startswith("250"))
        c.close()
        self.assertEqual(len(self.stored()), 1)


OPENDKIM = "/usr/sbin/opendkim"


@unittest.skipUnless(os.path.exists(OPENDKIM), "opendkim is not installed (scripts/bootstrap)")
class OpenDkimTest(PosternTest):
    """OpenDKIM (Debian's opendkim) in verify mode as the MX port's milter, its DNS answered from
    what `postern dkim show` printed (its TestDNSData option): a message postern signed when it
    relayed it comes back in on the MX port and OpenDKIM adds dkim=pass in the
    Authentication-Results header it inserts; the same message with its Subject changed fails.
    The first pass also shows signing comes after the milters: the header OpenDKIM inserted then
    is in the signed message, and the signature still verifies."""

    def setUp(self):
        super().setUp()
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", "alice@example.test", input="alice password\n")
        self.ok("network", "add", "127.0.0.0/8")
        self.ok("dkim", "keygen", "example.test", "--selector", "rs", "--algorithm", "rsa")
        dns = os.path.join(self.dir, "dns")
        with open(dns, "w") as f:
            for line in self.ok("dkim", "show", "example.test").out.splitlines():
                name, _, rest = line.partition(" IN TXT ")
                txt = "".join(re.findall(r'"([^"]*)"', rest)).replace(" ", "")
                f.write(f"{name.rstrip('.')} {txt}\n")
        sock = os.path.join(self.dir, "opendkim.sock")
        conf = os.path.join(self.dir, "opendkim.conf")
        with open(conf, "w") as f:
            f.write(f"Mode v\nSocket local:{sock}\nTestDNSData file:{dns}\nSyslog no\n"
                    f"AuthservID mail.example.test\nAlwaysAddARHeader yes\n")
        out = open(os.path.join(self.dir, "opendkim.out"), "w+")
        self.addCleanup(out.close)
        proc = subprocess.Popen([OPENDKIM, "-f", "-x", conf], stdout=out,
                                stderr=subprocess.STDOUT, cwd=self.dir)
        self.addCleanup(lambda: (proc.kill(), proc.wait(timeout=10)))
        deadline = time.monotonic() + 20
        while not os.path.exists(sock):
            self.assertIsNone(proc.poll(), "opendkim exited")
            self.assertLess(time.monotonic(), deadline, "opendkim did not start")
            time.sleep(0.05)
        self.write_config(f"[milter]\nmx = unix:{sock}\ntimeout = 10s\n"
                          "[relay]\nsmarthost = 127.0.0.1:9\n")

    def test_authentication_results_for_postern_signature(self):
        self.start_server()
        c = Smtp(self.ports["smtp"])
        c.cmd("EHLO client.test")
        r = c.message("alice@example.test", ["bob@dest.test"], "signed here",
                      "a body\r\n",
                      "Message-ID: <1@example.test>\r\nDate: Fri, 4 Dec 2026 10:00:00 +0000\r\n")
        self.assertTrue(r.startswith("250"), r)
        con = sqlite3.connect(self.db, timeout=10)
        try:
            signed = bytes(con.execute("SELECT body FROM messages").fetchone()[0])
        finally:
            con.close()
        self.assertIn(b"DKIM-Signature:", signed)
        # OpenDKIM had inserted its header before postern signed, and the signature holds.
        self.assertIn(b"Authentication-Results: mail.example.test", signed)
        for content, want in ((signed, "dkim=pass"),
                              (signed.replace(b"Subject: signed here", b"Subject: changed"),
                               "dkim=fail")):
            self.assertTrue(c.cmd("MAIL FROM:<x@remote.test>").startswith("250"))
            self.assertTrue(c.cmd("RCPT TO:<alice@example.test>").startswith("250"))
            self.assertTrue(c.cmd("DATA").startswith("354"))
            wire = re.sub(rb"(^|\r\n)\.", rb"\1..", content)
            c.s.sendall(wire + b".\r\n")
            self.assertTrue(c.reply().startswith("250"))
            con = sqlite3.connect(self.db, timeout=10)
            try:
                last = bytes(con.execute(
                    "SELECT body FROM messages ORDER BY id DESC LIMIT 1").fetchone()[0]).decode()
            finally:
                con.close()
            ar = re.search(r"Authentication-Results: mail\.example\.test;[^\r]*(\r\n[ \t][^\r]*)*",
                           last)
            self.assertIsNotNone(ar, last[:1500])
            self.assertIn(want, ar.group(0))
        c.close()
