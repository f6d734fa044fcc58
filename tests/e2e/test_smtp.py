"""The SMTP service against the real binary: RFC 5321 commands and sequencing, ESMTP extensions
(PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, STARTTLS, AUTH), the three ports, DATA (end of
data, dot-unstuffing, line-end normalisation against smuggling, trace headers, durable storage),
the relay rule with the seed scenarios of the issue, both refusal styles, window limits, and the
address tricks relay probes use (nmap's smtp-open-relay forms among them).

Clients are Python's smtplib and raw sockets (test_conn.Client). Stored messages are read back
with sqlite3 from the server's database and, where a test says so, through POP3 RETR; a POP3
that refuses a step fails the test. Only 127.0.0.0/8 is used.
"""
import os
import poplib
import smtplib
import socket
import sqlite3
import time
import unittest

from harness import PosternTest
from test_conn import Client, client_tls_context, make_cert

HOST = "mail.example.test"
TLS_CONFIG = "[tls]\ncertificate = cert.pem\nkey = key.pem\n"
OUTSIDE = "127.0.0.1"
TRUSTED = "127.0.0.2"
ROAMING = "127.0.0.3"
OTHER = "127.0.0.4"
PASSWORD = "s3cret-pw"


def denied(rcpt):
    return f"550 5.7.1 <{rcpt}>... Relaying denied"


class SmtpTest(PosternTest):
    extra_config = TLS_CONFIG

    def setUp(self):
        super().setUp()
        make_cert(self.dir, HOST)
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", "alice@example.test", input=PASSWORD + "\n")
        self.ok("user", "add", "bob@example.test", input=PASSWORD + "\n")

    def start(self):
        self.start_server()

    def connect(self, service="smtp", source=None, tls=False):
        c = Client(self.ports[service], source=source, tls=tls)
        self.addCleanup(c.close)
        greeting = c.line()
        self.assertEqual(greeting, f"220 {HOST} ESMTP postern")
        return c

    def cmd(self, c, line):
        c.send(line + "\r\n")
        return c.reply()

    def ehlo(self, c, name="client.example"):
        return self.cmd(c, f"EHLO {name}")

    def smtp(self, service="smtp", source=None):
        s = smtplib.SMTP("127.0.0.1", self.ports[service], timeout=10,
                         source_address=(source, 0) if source else None)
        self.addCleanup(self._quit, s)
        return s

    @staticmethod
    def _quit(s):
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            pass

    # ---- the database ----
    def query(self, sql, *args):
        con = sqlite3.connect(self.db, timeout=10)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def bodies_for(self, address):
        return [bytes(r[0]) for r in self.query(
            "SELECT m.body FROM mailbox x JOIN messages m ON m.id = x.message_id"
            " JOIN users u ON u.id = x.user_id WHERE u.address = ? ORDER BY x.id", address)]

    def queued(self):
        return [r[0] for r in self.query("SELECT recipient FROM queue ORDER BY id")]

    def message_count(self):
        return self.query("SELECT count(*) FROM messages")[0][0]

    def transaction(self, c, sender, rcpts, body=b"Subject: t\r\n\r\nhello\r\n"):
        """MAIL, RCPTs, DATA with body; returns the replies (last line each)."""
        out = [self.cmd(c, f"MAIL FROM:<{sender}>")[-1]]
        for r in rcpts:
            out.append(self.cmd(c, f"RCPT TO:<{r}>")[-1])
        reply = self.cmd(c, "DATA")[-1]
        out.append(reply)
        if reply.startswith("354"):
            c.send(body + b".\r\n")
            out.append(c.reply()[-1])
        return out


def content_of(stored):
    """The message as the client sent it: the stored body without the trace headers."""
    lines = stored.split(b"\r\n")
    i = 0
    while i < len(lines) and (lines[i].startswith(b"Return-Path:") or
                              lines[i].startswith(b"Received:") or lines[i].startswith(b"\t")):
        i += 1
    return b"\r\n".join(lines[i:])


class Protocol(SmtpTest):
    def test_ehlo_extensions_before_and_after_tls(self):
        self.start()
        c = self.connect()
        self.assertEqual(self.ehlo(c), [f"250-{HOST}", "250-PIPELINING", "250-SIZE 26214400",
                                        "250-8BITMIME", "250-ENHANCEDSTATUSCODES", "250-CHUNKING",
                                        "250-SMTPUTF8",
                                        "250-DSN",
                                        "250 STARTTLS"])
        self.assertEqual(self.cmd(c, "STARTTLS"), ["220 2.0.0 Ready to start TLS"])
        c.starttls()
        self.assertEqual(self.ehlo(c), [f"250-{HOST}", "250-PIPELINING", "250-SIZE 26214400",
                                        "250-8BITMIME", "250-ENHANCEDSTATUSCODES", "250-CHUNKING",
                                        "250-SMTPUTF8",
                                        "250-DSN",
                                        "250 AUTH PLAIN LOGIN"])
        self.wait_log("event=helo verb=EHLO name=client.example")

    def test_simple_commands_and_errors(self):
        self.start()
        c = self.connect()
        for line, want in [
            ("MAIL FROM:<a@example.test>", "503 5.5.1 Error: send HELO/EHLO first"),
            ("RCPT TO:<alice@example.test>", "503 5.5.1 Error: send HELO/EHLO first"),
            ("HELO client", f"250 {HOST}"),
            ("RCPT TO:<alice@example.test>", "503 5.5.1 Error: need MAIL command"),
            ("DATA", "503 5.5.1 Error: need MAIL command"),
            ("NOOP anything", "250 2.0.0 Ok"),
            ("HELP", "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY "
                     "STARTTLS AUTH; see RFC 5321"),
            ("VRFY alice", "252 2.0.0 Cannot VRFY user, but will accept message and attempt "
                           "delivery"),
            ("VRFY nobody-at-all", "252 2.0.0 Cannot VRFY user, but will accept message and "
                                   "attempt delivery"),
            ("EXPN staff", "502 5.5.1 EXPN not available"),
            ("QUIT", "221 2.0.0 Bye"),  # a new connection: 10 errors end a session
            (None, None),
            ("BOGUS", "500 5.5.2 Error: command not recognized"),
            ("MAIL TO:<a@example.test>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
            ("MAIL FROM:a@example.test", "501 5.5.4 Syntax: MAIL FROM:<address>"),
            ("MAIL FROM:<Postmaster>", "501 5.1.7 Bad sender address syntax"),
            ("MAIL FROM:<a@b@c>", None),
            ("QUIT", "221 2.0.0 Bye"),
            (None, None),
            ("MAIL FROM:<a@remote.test> FOO=BAR", "555 5.5.4 Unsupported option: FOO=BAR"),
            ("MAIL FROM:<a@remote.test> BODY=9BIT", "501 5.5.4 Bad MAIL parameter (bad BODY)"),
            ("MAIL FROM: <a@remote.test> BODY=8BITMIME", "250 2.1.0 Ok"),
            ("MAIL FROM:<b@remote.test>", "503 5.5.1 Error: nested MAIL command"),
            ("DATA", "554 5.5.1 Error: no valid recipients"),
            ("RCPT TO:<alice@example.test> XNOTIFY=NEVER", "555 5.5.4 Unsupported option: "
                                                           "XNOTIFY=NEVER"),
            ("RCPT TO:<alice@example.test> NOTIFY=NEVER,SUCCESS",
             "501 5.5.4 Bad RCPT parameter (NOTIFY must be NEVER or a list of SUCCESS, FAILURE, "
             "DELAY)"),
            ("RCPT TO:<>", "501 5.1.3 Bad recipient address syntax"),
            ("RSET", "250 2.0.0 Ok"),
            ("RSET x", "501 5.5.4 Syntax: RSET"),
        ]:
            if line is None:
                c = self.connect()
                self.ehlo(c)
                continue
            got = self.cmd(c, line)
            if want is None:
                self.assertTrue(got[-1].startswith("501 5.1.7 Bad sender address syntax"), got)
            elif want.startswith("501 5.1.3"):
                self.assertTrue(got[-1].startswith("501 5.1.3"), (line, got))
            else:
                self.assertEqual(got, [want], line)
        self.assertEqual(self.cmd(c, "QUIT"), ["221 2.0.0 Bye"])
        self.assertTrue(c.closed())
        log = self.read_log()
        self.assertIn("event=rejected code=503 command=MAIL", log)

    def test_every_reply_has_an_enhanced_code(self):
        self.start()
        c = self.connect()
        replies = []
        for line in ["EHLO x", "MAIL FROM:<a@remote.test>", "RCPT TO:<alice@example.test>",
                     "RCPT TO:<nobody@example.test>", "RCPT TO:<x@remote.test>", "DATA"]:
            replies += self.cmd(c, line)
        c.send("x\r\n.\r\n")
        replies += c.reply()
        for line in ["NOOP", "RSET", "VRFY a", "EXPN a", "HELP", "XYZZY", "QUIT"]:
            replies += self.cmd(c, line)
        for r in replies:
            code = r[:3]
            if r.startswith("250-") or r == f"250 {HOST}" or r.startswith("250 STARTTLS") or \
                    code == "354":
                continue
            self.assertRegex(r[4:], r"^[245]\.\d{1,3}\.\d{1,3} ", r)
            self.assertEqual(r[4], code[0], r)

    def test_postmaster_and_source_routes(self):
        self.start()
        c = self.connect()
        self.ehlo(c)
        # <Postmaster> without a domain (RFC 5321 4.5.1), and postmaster@ without such a user:
        # both go to the first user (alice, in address order).
        self.assertEqual(self.transaction(c, "", ["Postmaster", "POSTMASTER@example.test"]),
                         ["250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok",
                          "354 End data with <CR><LF>.<CR><LF>", self.any_queued()])
        self.assertEqual(len(self.bodies_for("alice@example.test")), 1)
        # A source route is accepted and ignored: the final mailbox counts.
        self.assertEqual(self.transaction(c, "@relay.test:x@remote.test",
                                          ["@a.test,@b.test:bob@example.test"])[:2],
                         ["250 2.1.0 Ok", "250 2.1.5 Ok"])
        self.assertEqual(len(self.bodies_for("bob@example.test")), 1)
        self.assertTrue(self.bodies_for("bob@example.test")[0].startswith(
            b"Return-Path: <x@remote.test>\r\nReceived: from client.example ([127.0.0.1])\r\n"))

    def any_queued(self):
        class AnyQueued(str):
            def __eq__(self, other):
                return isinstance(other, str) and other.startswith("250 2.0.0 Ok: queued as ")
        return AnyQueued("250 2.0.0 Ok: queued as ...")

    def test_postmaster_without_any_user_is_refused(self):
        self.ok("user", "del", "alice@example.test")
        self.ok("user", "del", "bob@example.test")
        self.start()
        c = self.connect()
        self.ehlo(c)
        self.cmd(c, "MAIL FROM:<>")
        self.assertEqual(self.cmd(c, "RCPT TO:<Postmaster>"),
                         ["550 5.1.1 <Postmaster>: Recipient address rejected: User unknown"])

    def test_duplicate_local_recipients_give_one_mailbox_entry(self):
        self.start()
        c = self.connect()
        self.ehlo(c)
        out = self.transaction(c, "x@remote.test",
                               ["alice@example.test", "ALICE@example.test", "alice@EXAMPLE.test.",
                                "bob@example.test"])
        self.assertEqual(out[1:4], ["250 2.1.5 Ok"] * 3)
        self.assertTrue(out[-1].startswith("250 2.0.0 Ok: queued as "), out)
        self.assertEqual(self.query("SELECT count(*) FROM mailbox")[0][0], 2)
        self.assertEqual(self.message_count(), 1)
        log = self.wait_log("event=message ")
        self.assertIn("rcpts=4 local=2 queued=0", log)

    def test_unknown_local_user(self):
        self.start()
        c = self.connect()
        self.ehlo(c)
        self.cmd(c, "MAIL FROM:<x@remote.test>")
        self.assertEqual(self.cmd(c, "RCPT TO:<carol@example.test>"),
                         ["550 5.1.1 <carol@example.test>: Recipient address rejected: "
                          "User unknown"])

    def test_max_recipients(self):
        self.write_config(TLS_CONFIG + "[smtp]\nmax_recipients = 2\n")
        self.start()
        c = self.connect()
        self.ehlo(c)
        self.cmd(c, "MAIL FROM:<x@remote.test>")
        self.assertEqual(self.cmd(c, "RCPT TO:<alice@example.test>"), ["250 2.1.5 Ok"])
        self.assertEqual(self.cmd(c, "RCPT TO:<alice@example.test>"), ["250 2.1.5 Ok"])
        self.assertEqual(self.cmd(c, "RCPT TO:<bob@example.test>"),
                         ["452 4.5.3 Too many recipients"])

    def test_too_many_errors(self):
        # The limits themselves are tested in test_session_answers.py; here: past the hard
        # limit the next command gets 421 and the session ends.
        self.write_config(TLS_CONFIG + "[smtp]\nsoft_error_limit = 2\nhard_error_limit = 3\n"
                          "error_delay = 10ms\n")
        self.start()
        c = self.connect()
        self.ehlo(c)
        self.cmd(c, "MAIL FROM:<x@remote.test>")
        c.send("".join(f"RCPT TO:<u{i}@remote.test>\r\n" for i in range(5)))
        for i in range(3):
            self.assertEqual(c.line(), denied(f"u{i}@remote.test"))
        self.assertEqual(c.line(), f"421 4.7.0 {HOST} Error: too many errors")
        self.assertTrue(c.closed())

    def test_http_request_line_closes_at_once(self):
        self.start()
        for req in ("GET / HTTP/1.0", "POST /x HTTP/1.1", "CONNECT 10.0.0.1:25 HTTP/1.1"):
            c = self.connect()
            c.send(req + "\r\nHost: x\r\n\r\n")
            self.assertTrue(c.closed(timeout=3), req)

    def test_unsupported_option_echo_keeps_the_reply_one_line(self):
        # A bare CR inside a parameter (the line ends at LF only) must not be echoed into the
        # reply, where it would end the line early; found by fuzz_smtp_session.
        self.start()
        c = self.connect()
        self.ehlo(c)
        for line, shown in ((b"MAIL FROM:<a@remote.test> X=a Y\rb", "X=a Y?b"),
                            (b"MAIL FROM:<a@remote.test> Y=1 \xff\x01", "Y=1 ??")):
            c.send(line + b"\r\n")
            self.assertEqual(c.reply(), ["555 5.5.4 Unsupported option: " + shown])
        self.assertEqual(self.cmd(c, "MAIL FROM:<a@remote.test>"), ["250 2.1.0 Ok"])
        c.send(b"RCPT TO:<alice@example.test> Z=1 \r\r\n")
        self.assertEqual(c.reply(), ["555 5.5.4 Unsupported option: Z=1 ?"])
        long = "W=" + "w" * 100
        self.assertEqual(self.cmd(c, "RCPT TO:<alice@example.test> " + long),
                         ["555 5.5.4 Unsupported option: " + long[:64]])

    def test_helo_text_is_sanitised_in_received(self):
        self.start()
        c = self.connect()
        self.ehlo(c, "evil(x)\tand\x7f;Received:")
        self.transaction(c, "x@remote.test", ["alice@example.test"])
        body = self.bodies_for("alice@example.test")[0]
        self.assertIn(b"Received: from evil?x??and??Received: ([127.0.0.1])\r\n", body)


class Data(SmtpTest):
    def test_pipelined_transaction_in_one_write(self):
        self.start()
        c = self.connect()
        self.ehlo(c)
        c.send(b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
               b"RCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
               b"Subject: pipelined\r\n\r\n..leading dot\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n")
        self.assertEqual(c.line(), "250 2.1.0 Ok")
        self.assertEqual(c.line(), "250 2.1.5 Ok")
        self.assertEqual(c.line(), "550 5.1.1 <nobody@example.test>: Recipient address "
                                   "rejected: User unknown")
        self.assertEqual(c.line(), "250 2.1.5 Ok")
        self.assertEqual(c.line(), "354 End data with <CR><LF>.<CR><LF>")
        self.assertTrue(c.line().startswith("250 2.0.0 Ok: queued as "))
        self.assertEqual(c.line(), "250 2.0.0 Ok")
        self.assertEqual(c.line(), "221 2.0.0 Bye")
        for user in ("alice@example.test", "bob@example.test"):
            bodies = self.bodies_for(user)
            self.assertEqual(len(bodies), 1)
            self.assertEqual(content_of(bodies[0]),
                             b"Subject: pipelined\r\n\r\n.leading dot\r\nbody\r\n")
        self.assertEqual(self.message_count(), 1)  # stored once for both

    def test_size_declared_and_real(self):
        self.write_config(TLS_CONFIG + "[smtp]\nmax_message_size = 1K\n")
        self.start()
        c = self.connect()
        self.assertIn("250-SIZE 1024", self.ehlo(c))
        self.assertEqual(self.cmd(c, "MAIL FROM:<x@remote.test> SIZE=1025"),
                         ["552 5.3.4 Message size exceeds fixed maximum message size"])
        self.assertEqual(self.cmd(c, "MAIL FROM:<x@remote.test> SIZE=abc"),
                         ["501 5.5.4 Bad MAIL parameter (bad SIZE)"])
        self.assertEqual(self.cmd(c, "MAIL FROM:<x@remote.test> SIZE=100"), ["250 2.1.0 Ok"])
        self.assertEqual(self.cmd(c, "RCPT TO:<alice@example.test>"), ["250 2.1.5 Ok"])
        self.assertEqual(self.cmd(c, "DATA")[0][:3], "354")
        c.send(b"x" * 600 + b"\r\n" + b"y" * 600 + b"\r\n.\r\n")
        self.assertEqual(c.reply(), ["552 5.3.4 Message size exceeds fixed maximum message size"])
        self.assertEqual(self.message_count(), 0)
        # The session goes on, with the transaction gone.
        self.assertEqual(self.cmd(c, "RCPT TO:<alice@example.test>"),
                         ["503 5.5.1 Error: need MAIL command"])
        self.assertEqual(self.transaction(c, "x@remote.test", ["alice@example.test"],
                                          b"z" * 1000 + b"\r\n")[-1][:24],
                         "250 2.0.0 Ok: queued as ")

    def test_smuggling_variants_store_one_canonical_message(self):
        self.start()
        smuggle = b"MAIL FROM:<evil@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n" \
                  b"Subject: smuggled\r\n"
        for end in (b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\r.\r"):
            c = self.connect()
            self.ehlo(c)
            self.assertEqual(self.cmd(c, "MAIL FROM:<x@remote.test>"), ["250 2.1.0 Ok"])
            self.assertEqual(self.cmd(c, "RCPT TO:<alice@example.test>"), ["250 2.1.5 Ok"])
            self.cmd(c, "DATA")
            c.send(b"Subject: real\r\n\r\nbody" + end + smuggle + b"\r\n.\r\n")
            reply = c.reply()
            self.assertEqual(len(reply), 1)
            self.assertTrue(reply[0].startswith("250 2.0.0 Ok: queued as "), (end, reply))
            self.assertEqual(self.cmd(c, "QUIT"), ["221 2.0.0 Bye"])
        self.assertEqual(self.bodies_for("bob@example.test"), [])
        bodies = self.bodies_for("alice@example.test")
        self.assertEqual(len(bodies), 6)
        for body in bodies:
            stripped = body.replace(b"\r\n", b"")
            self.assertNotIn(b"\r", stripped)
            self.assertNotIn(b"\n", stripped)
            self.assertIn(b"MAIL FROM:<evil@remote.test>", body)

    def test_cut_off_midway_leaves_nothing(self):
        self.start()
        c = self.connect()
        self.ehlo(c)
        self.cmd(c, "MAIL FROM:<x@remote.test>")
        self.cmd(c, "RCPT TO:<alice@example.test>")
        self.cmd(c, "DATA")
        c.send(b"Subject: cut\r\n\r\npart of a message\r\n")
        c.close()
        self.wait_log("reason=client-closed")
        self.assertEqual(self.message_count(), 0)

    @unittest.skipIf(os.environ.get("POSTERN_TEST_READER_THREADS", "") not in ("", "0"),
                     "with reader threads the session waits for RCPT's read, the replies before "
                     "it go out meanwhile, and the closed socket fails that write before DATA "
                     "is read: nothing was acknowledged, so nothing is owed")
    def test_close_right_after_the_dot_still_stores(self):
        # The client goes away while the writer commits: the message is stored (and logged)
        # all the same, and the session is freed when the commit is done.
        self.start()
        for i in range(5):
            c = self.connect()
            c.send(b"EHLO x\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
                   b"DATA\r\nSubject: gone\r\n\r\nbye\r\n.\r\n")
            c.close()
        deadline = time.monotonic() + 10
        while self.read_log().count("event=message ") < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.read_log().count("event=message "), 5)
        self.assertEqual(self.message_count(), 5)

    def test_8bit_body_byte_for_byte(self):
        self.write_config(TLS_CONFIG + "[pop3]\nplaintext_auth = yes\n")
        self.start()
        body = b"Subject: 8bit\r\nContent-Type: text/plain; charset=latin-1\r\n\r\n" + \
               bytes(range(0x80, 0x100)) + b"\r\n" + "Grüße, ñ, 日本".encode() + b"\r\n"
        c = self.connect()
        self.ehlo(c)
        self.assertEqual(self.cmd(c, "MAIL FROM:<x@remote.test> BODY=8BITMIME"), ["250 2.1.0 Ok"])
        self.cmd(c, "RCPT TO:<alice@example.test>")
        self.cmd(c, "DATA")
        c.send(body + b".\r\n")
        self.assertTrue(c.reply()[0].startswith("250 2.0.0 Ok: queued as "))
        stored = self.bodies_for("alice@example.test")[0]
        self.assertEqual(content_of(stored), body)
        self.pop3_retr_matches("alice@example.test", stored)

    def pop3_retr_matches(self, user, stored):
        """The same bytes through POP3 RETR. Every step must work: a refused login or RETR
        fails the test (POP3 login and RETR are part of the server, not optional)."""
        try:
            p = poplib.POP3("127.0.0.1", self.ports["pop3"], timeout=10)
        except OSError as e:
            self.fail(f"POP3 not reachable: {e}")
        try:
            try:
                p.user(user)
                p.pass_(PASSWORD)
            except poplib.error_proto as e:
                self.fail(f"POP3 USER/PASS refused: {e}")
            try:
                _, lines, _ = p.retr(1)
            except poplib.error_proto as e:
                self.fail(f"POP3 RETR refused: {e}")
            # poplib splits on CRLF and undoes dot-stuffing.
            self.assertEqual(b"\r\n".join(lines) + b"\r\n", stored)
        finally:
            try:
                p.quit()
            except (poplib.error_proto, OSError):
                pass


class Relay(SmtpTest):
    def relay_attempt(self, source, sender="alice@example.test", rcpt="friend@remote.test",
                      service="smtp"):
        c = self.connect(service, source=source)
        self.ehlo(c)
        self.assertEqual(self.cmd(c, f"MAIL FROM:<{sender}>"), ["250 2.1.0 Ok"])
        return c, self.cmd(c, f"RCPT TO:<{rcpt}>")

    def test_seed_trusted_network_local_and_remote(self):
        self.ok("network", "add", "127.0.0.2/32")
        self.start()
        c = self.connect(source=TRUSTED)
        self.ehlo(c)
        out = self.transaction(c, "anyone@anywhere.test", ["alice@example.test",
                                                           "friend@remote.test"])
        self.assertEqual(out[1:3], ["250 2.1.5 Ok", "250 2.1.5 Ok"])
        self.assertTrue(out[-1].startswith("250 2.0.0 Ok: queued as "))
        self.assertEqual(self.queued(), ["friend@remote.test"])
        body = self.bodies_for("alice@example.test")[0]
        self.assertIn(b"(trusted network 127.0.0.2/32);\r\n", body)
        self.assertIn("event=relay relay=allow reason=trusted-network ip=127.0.0.2",
                      self.read_log())

    def test_seed_outside_local_accepted_remote_refused(self):
        self.start()
        s = self.smtp(source=OUTSIDE)
        self.assertEqual(s.sendmail("x@remote.test", ["alice@example.test"], b"Subject: in\r\n\r\nx\r\n"), {})
        with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
            s.sendmail("x@remote.test", ["friend@remote.test"], b"x\r\n")
        self.assertEqual(cm.exception.recipients["friend@remote.test"],
                         (550, b"5.7.1 <friend@remote.test>... Relaying denied"))
        self.assertEqual(self.queued(), [])
        self.assertIn("event=relay relay=deny reason=not-authorized ip=127.0.0.1", self.read_log())

    def test_seed_roaming_window(self):
        self.ok("window", "open", ROAMING, "--user", "alice@example.test")
        self.start()
        c, reply = self.relay_attempt(ROAMING)
        self.assertEqual(reply, ["250 2.1.5 Ok"])
        self.assertEqual(self.cmd(c, "DATA")[0][:3], "354")
        c.send(b"Subject: roaming\r\n\r\nx\r\n.\r\n")
        self.assertTrue(c.reply()[0].startswith("250 2.0.0 Ok: queued as "))
        self.assertEqual(self.queued(), ["friend@remote.test"])
        self.assertEqual(self.query("SELECT relayed FROM windows")[0][0], 1)
        self.assertIn("relayed=1", self.cli("window", "list").out)
        # From another address: refused.
        _, reply = self.relay_attempt(OTHER)
        self.assertEqual(reply, [denied("friend@remote.test")])
        # The stamp in the queued copy's Received header.
        body = bytes(self.query("SELECT body FROM messages")[0][0])
        self.assertIn(b"(POP-before-SMTP window of alice@example.test);", body)
        self.assertNotIn(b"Return-Path:", body)  # no local recipient: no Return-Path

    def test_seed_window_expired(self):
        self.ok("window", "open", ROAMING, "--user", "alice@example.test", "--for", "1s")
        self.start()
        time.sleep(1.3)
        _, reply = self.relay_attempt(ROAMING)
        self.assertEqual(reply, [denied("friend@remote.test")])

    def test_seed_roaming_after_real_pop3_login(self):
        self.write_config(TLS_CONFIG + "[pop3]\nplaintext_auth = yes\n")
        self.start()
        # poplib cannot bind a source address; a raw socket from ROAMING instead.
        c = Client(self.ports["pop3"], source=ROAMING)
        self.addCleanup(c.close)
        c.line()
        c.send("USER alice@example.test\r\n")
        reply = c.line()
        self.assertTrue(reply.startswith("+OK"), f"USER refused: {reply}")
        c.send(f"PASS {PASSWORD}\r\n")
        reply = c.line()
        self.assertTrue(reply.startswith("+OK"), f"PASS refused: {reply}")
        c.send("QUIT\r\n")
        c.line()
        # The login counts for the very next SMTP command.
        _, reply = self.relay_attempt(ROAMING)
        self.assertEqual(reply, ["250 2.1.5 Ok"])
        _, reply = self.relay_attempt(OTHER)
        self.assertEqual(reply, [denied("friend@remote.test")])

    def test_seed_spoofed_sender_refused(self):
        self.ok("window", "open", ROAMING, "--user", "alice@example.test")
        self.start()
        _, reply = self.relay_attempt(ROAMING, sender="ceo@bank.test")
        self.assertEqual(reply, ["553 5.7.1 <ceo@bank.test>: Sender address rejected: not owned "
                                 "by user <alice@example.test>"])
        self.assertIn("reason=sender-not-owned", self.read_log())

    def test_qmail_style(self):
        self.write_config(TLS_CONFIG + "[relay]\ndenied_style = qmail\n")
        self.start()
        _, reply = self.relay_attempt(OUTSIDE, sender="x@remote.test")
        self.assertEqual(reply, ["553 sorry, that domain isn't in my list of allowed rcpthosts "
                                 "(#5.7.1)"])

    def test_window_max_recipients(self):
        self.write_config(TLS_CONFIG + "[relay]\nwindow_max_recipients = 2\n")
        self.ok("window", "open", ROAMING, "--user", "alice@example.test")
        self.start()
        c = self.connect(source=ROAMING)
        self.ehlo(c)
        self.cmd(c, "MAIL FROM:<alice@example.test>")
        # Pipelined: the count must go up between the RCPTs.
        c.send("RCPT TO:<a@remote.test>\r\nRCPT TO:<b@remote.test>\r\nRCPT TO:<c@remote.test>\r\n"
               "RCPT TO:<bob@example.test>\r\n")
        self.assertEqual([c.line() for _ in range(4)],
                         ["250 2.1.5 Ok", "250 2.1.5 Ok", denied("c@remote.test"),
                          "250 2.1.5 Ok"])
        self.assertIn("reason=window-limit", self.read_log())
        self.assertEqual(self.query("SELECT relayed FROM windows")[0][0], 2)

    def test_address_tricks_never_relay(self):
        self.start()
        ip = "127.0.0.1"
        tricks = [
            # percent hack, bang paths, quoted local parts holding @ or %
            ("friend%remote.test@example.test", "550 5.1.1"),
            ("remote.test!friend@example.test", "550 5.1.1"),
            ('"friend@remote.test"@example.test', "550 5.1.1"),
            ('"friend%remote.test"@example.test', "550 5.1.1"),
            # source routes: the final address counts
            ("@example.test:friend@remote.test", "550 5.7.1"),
            ("@example.test,@mail.example.test:friend@remote.test", "550 5.7.1"),
            # double @
            ("friend@remote.test@example.test", "501 5.1.3"),
            # IP literals, the server's own address included
            (f"friend@[{ip}]", "550 5.7.1"),
            ("friend@[IPv6:::1]", "550 5.7.1"),
            ("friend@[IPv6:::ffff:127.0.0.1]", "550 5.7.1"),
            (f"friend%remote.test@[{ip}]", "550 5.7.1"),
            # trailing dots, case variants, a local domain inside another
            ("friend@remote.test.", "550 5.7.1"),
            ("friend@REMOTE.Test", "550 5.7.1"),
            ("friend@example.test.remote.test", "550 5.7.1"),
            ("friend@evilexample.test", "550 5.7.1"),
            ("friend@xexample.test", "550 5.7.1"),
            ("friend@sub.example.test", "550 5.7.1"),
            ("friend@example.test..", "501 5.1.3"),
            # nmap smtp-open-relay forms (scanme domain, the server's name and literal)
            ("relaytest@nmap.scanme.org", "550 5.7.1"),
            ("relaytest%nmap.scanme.org@" + HOST, "550 5.7.1"),
            (f"relaytest%nmap.scanme.org@[{ip}]", "550 5.7.1"),
            ('"relaytest@nmap.scanme.org"', "501 5.1.3"),
            ('"relaytest%nmap.scanme.org"', "501 5.1.3"),
            (f"relaytest@nmap.scanme.org@[{ip}]", "501 5.1.3"),
            (f'"relaytest@nmap.scanme.org"@[{ip}]', "550 5.7.1"),
            ("nmap.scanme.org!relaytest", "501 5.1.3"),
            (f"nmap.scanme.org!relaytest@[{ip}]", "550 5.7.1"),
            (f"@[{ip}]:relaytest@nmap.scanme.org", "550 5.7.1"),
            (f"@{HOST}:relaytest@nmap.scanme.org", "550 5.7.1"),
        ]
        senders = ["", "antispam@" + HOST, f"antispam@[{ip}]", "alice@example.test"]
        for i, (rcpt, want) in enumerate(tricks):
            c = self.connect()
            self.ehlo(c, HOST)
            self.assertEqual(self.cmd(c, f"MAIL FROM:<{senders[i % len(senders)]}>"),
                             ["250 2.1.0 Ok"])
            reply = self.cmd(c, f"RCPT TO:<{rcpt}>")
            self.assertEqual(len(reply), 1, rcpt)
            self.assertTrue(reply[0].startswith(want), (rcpt, reply))
            c.send("QUIT\r\n")
            c.close()
        self.assertEqual(self.queued(), [])
        self.assertEqual(self.message_count(), 0)


class Auth(SmtpTest):
    def test_transcript_masks_auth_initial_response(self):
        import base64
        self.write_config(TLS_CONFIG + "[server]\ntranscript = yes\n[smtp]\nplaintext_auth = yes\n")
        self.start()
        c = self.connect()
        self.ehlo(c)
        token = base64.b64encode(b"\0alice@example.test\0" + PASSWORD.encode()).decode()
        self.assertEqual(self.cmd(c, f"AUTH PLAIN {token}"),
                         ["235 2.7.0 Authentication successful"])
        self.cmd(c, "QUIT")
        log = self.wait_log("event=disconnected")
        self.assertNotIn(token, log)
        self.assertNotIn(PASSWORD, log)
        self.assertIn('event=recv line="AUTH PLAIN ***"', log)

    def test_transcript_sums_the_data_up(self):
        # The message is counted, never logged: one recv-body line with its octets and lines.
        self.write_config(TLS_CONFIG + "[server]\ntranscript = yes\n")
        self.start()
        c = self.connect()
        self.ehlo(c)
        body = b"Subject: t\r\n\r\nMARKER-51c9e0 in the body\r\n..dotted\r\n"
        replies = self.transaction(c, "x@remote.test", ["bob@example.test"], body)
        self.assertTrue(replies[-1].startswith("250 2.0.0 Ok: queued as "), replies)
        self.cmd(c, "QUIT")
        log = self.wait_log("event=disconnected")
        self.assertNotIn("MARKER-51c9e0", log)
        # The octets as received, the final dot included.
        self.assertIn(f"event=recv-body octets={len(body) + 3} lines=5\n", log)
        self.assertIn('event=recv line=DATA', log)

    def test_seed_auth_on_587_after_starttls_relays(self):
        self.start()
        s = self.smtp("submission")
        s.ehlo("laptop.example")
        self.assertFalse(s.has_extn("auth"))
        # RFC 6409: AUTH first, and before that STARTTLS, since AUTH is not offered yet.
        self.assertEqual(s.mail("alice@example.test"),
                         (530, b"5.7.0 Must issue a STARTTLS command first"))
        s.rset()
        s.starttls(context=client_tls_context())
        s.ehlo("laptop.example")
        self.assertEqual(s.esmtp_features["auth"], " PLAIN LOGIN")
        s.login("alice@example.test", PASSWORD)
        self.assertEqual(s.sendmail("alice@example.test", ["friend@remote.test", "bob@example.test"],
                                    b"Subject: submitted\r\n\r\nhi\r\n"), {})
        self.assertEqual(self.queued(), ["friend@remote.test"])
        body = self.bodies_for("bob@example.test")[0]
        self.assertIn(b" with ESMTPSA id ", body)
        self.assertIn(b"(authenticated as alice@example.test);", body)
        self.assertRegex(body, rb"\r\n\t\(TLSv1\.[23] [A-Z0-9_-]+\)\r\n")
        log = self.read_log()
        self.assertIn("event=auth result=ok user=alice@example.test", log)
        self.assertIn("reason=auth ip=127.0.0.1 from=<alice@example.test> to=<friend@remote.test> "
                      "user=alice@example.test", log)

    def test_auth_mechanisms_and_failures(self):
        self.start()
        c = self.connect("submissions", tls=True)
        self.assertIn("250 AUTH PLAIN LOGIN", self.ehlo(c))
        import base64
        b64 = lambda s: base64.b64encode(s.encode()).decode()
        # LOGIN, step by step.
        self.assertEqual(self.cmd(c, "AUTH LOGIN"), ["334 VXNlcm5hbWU6"])
        self.assertEqual(self.cmd(c, b64("alice@example.test")), ["334 UGFzc3dvcmQ6"])
        self.assertEqual(self.cmd(c, b64(PASSWORD)), ["235 2.7.0 Authentication successful"])
        self.assertEqual(self.cmd(c, "AUTH PLAIN"), ["503 5.5.1 Error: already authenticated"])
        self.assertEqual(self.cmd(c, "STARTTLS"), ["554 5.5.1 Error: TLS already active"])
        # Failures: slowed, then the connection is cut off.
        c2 = self.connect("submissions", tls=True)
        self.ehlo(c2)
        self.assertEqual(self.cmd(c2, "AUTH CRAM-MD5"),
                         ["504 5.5.4 Unrecognized authentication mechanism"])
        self.assertEqual(self.cmd(c2, "AUTH PLAIN"), ["334 "])
        self.assertEqual(self.cmd(c2, "*"), ["501 5.7.0 Authentication cancelled"])
        self.assertEqual(self.cmd(c2, "AUTH PLAIN !!!"), ["501 5.5.2 Cannot decode response"])
        for i in range(3):
            start = time.monotonic()
            reply = self.cmd(c2, "AUTH PLAIN " + b64(f"\0alice@example.test\0wrong{i}"))
            self.assertEqual(reply[0], "535 5.7.8 Authentication credentials invalid")
        self.assertEqual(c2.line(), f"421 4.7.0 {HOST} Error: too many authentication failures")
        self.assertTrue(c2.closed())
        self.assertIn("event=auth result=fail", self.read_log())

    def test_auth_refused_in_plaintext_unless_allowed(self):
        self.start()
        c = self.connect()
        self.assertNotIn("250 AUTH PLAIN LOGIN", self.ehlo(c))
        self.assertEqual(self.cmd(c, "AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdAB4"),
                         ["538 5.7.11 Encryption required for requested authentication "
                          "mechanism"])

    def test_plaintext_auth_yes(self):
        self.write_config(TLS_CONFIG + "[smtp]\nplaintext_auth = yes\n")
        self.start()
        s = self.smtp()
        s.ehlo("x")
        self.assertEqual(s.esmtp_features["auth"], " PLAIN LOGIN")
        s.login("alice@example.test", PASSWORD)
        self.assertEqual(s.sendmail("alice@example.test", ["friend@remote.test"], b"x\r\n"), {})
        body = bytes(self.query("SELECT body FROM messages")[0][0])
        self.assertIn(b" with ESMTPA id ", body)

    def test_starttls_refused_in_transaction_and_discards_injection(self):
        self.start()
        c = self.connect()
        self.ehlo(c)
        self.cmd(c, "MAIL FROM:<x@remote.test>")
        self.assertEqual(self.cmd(c, "STARTTLS"), ["503 5.5.1 Error: STARTTLS not allowed now"])
        self.cmd(c, "RSET")
        # CVE-2011-0411: commands injected behind STARTTLS in plaintext are never run.
        c.send("STARTTLS\r\nMAIL FROM:<evil@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
        self.assertEqual(c.line(), "220 2.0.0 Ready to start TLS")
        c.starttls()
        # Not "nested MAIL": the injected MAIL was dropped and EHLO was forgotten.
        self.assertEqual(self.cmd(c, "MAIL FROM:<x@remote.test>"),
                         ["503 5.5.1 Error: send HELO/EHLO first"])
        self.ehlo(c)
        self.assertEqual(self.cmd(c, "MAIL FROM:<x@remote.test>"), ["250 2.1.0 Ok"])
