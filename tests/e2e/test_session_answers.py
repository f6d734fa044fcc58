"""What real clients and probes hear from the sessions, against the real binary: the SMTP error
limits (a soft limit that slows answers down, a hard one that ends the session, as Postfix has
them) so that a relay probe sending 16 refused recipients in one session hears every answer; the
submission port's answer to MAIL before STARTTLS; one event=auth log line for every failed SMTP
AUTH; and in POP3 the close on an HTTP request line and QUIT's count of deleted messages.

Clients are raw sockets (test_conn.Client); only 127.0.0.0/8 is used. No test asserts a
duration: the soft limit's delay is set small (smtp.error_delay) so the tests stay quick.
"""
import base64

from test_pop3 import ALICE, PLAINTEXT, Pop3Test, body_of
from test_smtp import HOST, PASSWORD, TLS_CONFIG, SmtpTest, denied

QUICK = "[smtp]\nerror_delay = 20ms\n"


def b64(s):
    return base64.b64encode(s.encode()).decode()


class ErrorLimits(SmtpTest):
    def test_sixteen_refused_relay_probes_all_get_their_answer(self):
        # What nmap's smtp-open-relay does: one session, 16 MAIL/RCPT/RSET rounds, each RCPT
        # refused. All 16 refusals must arrive, and the session must still work afterwards.
        self.write_config(TLS_CONFIG + QUICK)
        self.start()
        c = self.connect()
        self.assertEqual(self.cmd(c, "HELO nmap.scanme.org"), [f"250 {HOST}"])
        for i in range(16):
            self.assertEqual(self.cmd(c, f"MAIL FROM:<antispam{i}@nmap.scanme.org>"),
                             ["250 2.1.0 Ok"])
            self.assertEqual(self.cmd(c, f"RCPT TO:<relaytest{i}@nmap.scanme.org>"),
                             [denied(f"relaytest{i}@nmap.scanme.org")], i)
            self.assertEqual(self.cmd(c, "RSET"), ["250 2.0.0 Ok"])
        self.assertEqual(self.cmd(c, "QUIT"), ["221 2.0.0 Bye"])
        self.assertEqual(self.read_log().count("event=rejected code=550"), 16)

    def test_hard_limit_answers_the_next_command_with_421(self):
        self.write_config(TLS_CONFIG + QUICK)
        self.start()
        c = self.connect()
        self.ehlo(c)
        # Pipelined, so the held commands past the soft limit must keep their order.
        c.send("".join(f"BOGUS{i}\r\n" for i in range(20)) + "NOOP\r\n")
        for i in range(20):
            self.assertEqual(c.line(), "500 5.5.2 Error: command not recognized", i)
        self.assertEqual(c.line(), f"421 4.7.0 {HOST} Error: too many errors")
        self.assertTrue(c.closed())

    def test_soft_limit_keeps_answers_in_order(self):
        self.write_config(TLS_CONFIG + "[smtp]\nsoft_error_limit = 1\nhard_error_limit = 5\n"
                          "error_delay = 20ms\n")
        self.start()
        c = self.connect()
        self.ehlo(c)
        c.send("BOGUS\r\nNOOP\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<f@remote.test>\r\n"
               "RSET\r\nBOGUS\r\nQUIT\r\n")
        self.assertEqual([c.line() for _ in range(7)],
                         ["500 5.5.2 Error: command not recognized", "250 2.0.0 Ok",
                          "250 2.1.0 Ok", denied("f@remote.test"), "250 2.0.0 Ok",
                          "500 5.5.2 Error: command not recognized", "221 2.0.0 Bye"])
        self.assertTrue(c.closed())

    def test_hard_limit_below_soft_limit_is_refused(self):
        self.write_config(TLS_CONFIG + "[smtp]\nsoft_error_limit = 5\nhard_error_limit = 4\n")
        r = self.cli("config", "check")
        self.assertEqual(r.code, 2, r)
        self.assertIn("hard_error_limit (4) must be at least soft_error_limit (5)", r.err)


class Submission(SmtpTest):
    def test_mail_before_starttls_asks_for_starttls(self):
        self.start()
        c = self.connect("submission")
        self.assertNotIn("250 AUTH PLAIN LOGIN", self.ehlo(c))
        self.assertEqual(self.cmd(c, "MAIL FROM:<alice@example.test>"),
                         ["530 5.7.0 Must issue a STARTTLS command first"])
        self.assertEqual(self.cmd(c, "STARTTLS"), ["220 2.0.0 Ready to start TLS"])
        c.starttls()
        self.assertIn("250 AUTH PLAIN LOGIN", self.ehlo(c))
        self.assertEqual(self.cmd(c, "MAIL FROM:<alice@example.test>"),
                         ["530 5.7.0 Authentication required"])
        c465 = self.connect("submissions", tls=True)
        self.ehlo(c465)
        self.assertEqual(self.cmd(c465, "MAIL FROM:<alice@example.test>"),
                         ["530 5.7.0 Authentication required"])

    def test_mail_without_auth_when_plaintext_auth_is_on(self):
        self.write_config(TLS_CONFIG + "[smtp]\nplaintext_auth = yes\n")
        self.start()
        c = self.connect("submission")
        self.assertIn("250 AUTH PLAIN LOGIN", self.ehlo(c))
        self.assertEqual(self.cmd(c, "MAIL FROM:<alice@example.test>"),
                         ["530 5.7.0 Authentication required"])


class AuthLog(SmtpTest):
    def auth_lines(self):
        """The SMTP session's event=auth lines (server/auth/auth.c logs its own, sub=auth)."""
        return [l[l.index("event=auth"):] for l in self.read_log().splitlines()
                if "event=auth " in l and " sub=smtp " in l]

    def test_every_failed_auth_logs_its_reason_and_user(self):
        self.start()
        c = self.connect("submissions", tls=True)
        self.ehlo(c)
        # An authzid naming somebody else.
        self.assertEqual(self.cmd(c, "AUTH PLAIN " + b64(f"bob@example.test\0alice@example.test"
                                                         f"\0{PASSWORD}")),
                         ["535 5.7.8 Authentication credentials invalid"])
        self.assertEqual(self.cmd(c, "AUTH CRAM-MD5"),
                         ["504 5.5.4 Unrecognized authentication mechanism"])
        self.assertEqual(self.cmd(c, "AUTH LOGIN"), ["334 VXNlcm5hbWU6"])
        self.assertEqual(self.cmd(c, b64("carol evil=1@example.test")), ["334 UGFzc3dvcmQ6"])
        self.assertEqual(self.cmd(c, "*"), ["501 5.7.0 Authentication cancelled"])
        self.assertEqual(self.cmd(c, "AUTH PLAIN !!!"), ["501 5.5.2 Cannot decode response"])
        self.assertEqual(self.cmd(c, "AUTH"),
                         ["501 5.5.4 Syntax: AUTH mechanism [initial-response]"])
        reply = self.cmd(c, "AUTH PLAIN " + b64(f"\0alice@example.test\0wrong"))
        self.assertEqual(reply, ["535 5.7.8 Authentication credentials invalid"])
        c.send("QUIT\r\n")
        self.wait_log("event=disconnected")
        self.assertEqual(self.auth_lines(), [
            "event=auth result=fail reason=authzid-refused user=alice@example.test",
            'event=auth result=fail reason=unsupported-mechanism user=""',
            'event=auth result=fail reason=cancelled user="carol evil=1@example.test"',
            'event=auth result=fail reason=malformed user=""',
            'event=auth result=fail reason=syntax user=""',
            "event=auth result=fail reason=invalid-credentials user=alice@example.test "
            "failures=1",
        ])
        self.assertNotIn("wrong", self.read_log())
        self.assertNotIn(PASSWORD, self.read_log())

    def test_auth_before_tls_and_overlong_response_are_logged(self):
        self.start()
        c = self.connect("submission")
        self.ehlo(c)
        self.assertEqual(self.cmd(c, "AUTH PLAIN"),
                         ["538 5.7.11 Encryption required for requested authentication "
                          "mechanism"])
        c2 = self.connect("submissions", tls=True)
        self.ehlo(c2)
        self.assertEqual(self.cmd(c2, "AUTH LOGIN " + b64("dave@example.test")),
                         ["334 UGFzc3dvcmQ6"])
        self.assertEqual(self.cmd(c2, "x" * 20000),
                         ["500 5.5.6 Authentication Exchange line is too long"])
        self.wait_log("reason=line-too-long")
        lines = self.auth_lines()
        self.assertIn('event=auth result=fail reason=encryption-required user=""', lines)
        self.assertIn("event=auth result=fail reason=line-too-long user=dave@example.test", lines)


class Pop3Answers(Pop3Test):
    def test_http_request_line_closes_at_once(self):
        self.start_server()
        for req in ("GET / HTTP/1.0", "POST /x HTTP/1.1", "CONNECT 10.0.0.1:110 HTTP/1.1"):
            c = self.raw()
            c.send(req + "\r\nHost: x\r\n\r\n")
            self.assertTrue(c.closed(timeout=3), req)
        self.assertIn("event=http-request", self.read_log())

    def test_quit_says_how_many_messages_were_deleted(self):
        for i in range(4):
            self.add_message(ALICE, body_of(f"m{i}", ["x"]))
        self.start_server()
        for n, want in ((0, "+OK Bye"), (1, "+OK Bye: 1 message deleted"),
                        (3, "+OK Bye: 3 messages deleted")):
            c = self.raw()
            self.login_raw(c)
            for k in range(n):
                self.assertEqual(self.cmd(c, f"DELE {k + 1}"), f"+OK Message {k + 1} deleted")
            self.assertEqual(self.cmd(c, "QUIT"), want, n)
            self.assertTrue(c.closed())
        self.assertEqual(self.mailbox_count(ALICE), 0)

    def test_one_message_is_singular(self):
        self.add_message(ALICE, body_of("only", ["x"]))
        self.start_server()
        c = self.raw()
        self.login_raw(c)
        self.assertRegex(self.cmd(c, "LIST"), r"^\+OK 1 message \(\d+ octets\)$")
        self.multi(c)
        self.assertRegex(self.cmd(c, "RSET"), r"^\+OK Maildrop has 1 message \(\d+ octets\)$")
