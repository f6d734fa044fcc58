"""What real clients and probes hear from the sessions, against the real binary: the
submission port's answer to MAIL before STARTTLS, and in POP3 the close on an HTTP request line
and QUIT's count of deleted messages.

Clients are raw sockets (test_conn.Client); only 127.0.0.0/8 is used.
"""
from test_pop3 import ALICE, Pop3Test, body_of
from test_smtp import TLS_CONFIG, SmtpTest


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
