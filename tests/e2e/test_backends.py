"""`postern serve` end to end on each database backend: SMTP local delivery read back with POP3
RETR and removed with DELE, POP-before-SMTP relay (a POP3 login opens the window the SMTP session
then relays through), and outbound delivery of a queued message to a fake MX. ServeTest runs on
SQLite; ServeTestOnPostgresql runs the same tests on a fresh PostgreSQL database each when
POSTERN_TEST_PG names a server (harness.py), and skips, saying why, without one. Checks of what
is in the database go through self.sql, which reads either backend. Every wait is bounded."""
import poplib
import smtplib

from harness import PosternTest, on_postgresql, wait_for
from outbound_fakes import DnsResponder, SmtpSink

ALICE = "alice@example.test"
PASSWORD = "alice secret 1"
CONFIG = "[pop3]\nplaintext_auth = yes\n"



class ServeTest(PosternTest):
    extra_config = CONFIG

    def setUp(self):
        super().setUp()
        self.sink = SmtpSink()
        self.addCleanup(self.sink.close)
        self.dns = DnsResponder()
        self.addCleanup(self.dns.close)
        self.dns.records = {"dest.test": {"MX": [(10, "mx1.dest.test")]},
                            "mx1.dest.test": {"A": ["127.0.0.1"]}}
        self.write_config(CONFIG + f"[relay]\ndns_server = 127.0.0.1:{self.dns.port}\n"
                          f"outbound_port = {self.sink.port}\n")
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", ALICE, input=PASSWORD + "\n")

    def count(self, query, params=()):
        return int(self.sql(query, params)[0][0])

    def smtp(self):
        s = smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10)
        self.addCleanup(self.close_smtp, s)
        return s

    @staticmethod
    def close_smtp(s):
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            pass

    def pop(self):
        p = poplib.POP3("127.0.0.1", self.ports["pop3"], timeout=10)
        p.user(ALICE)
        p.pass_(PASSWORD)
        return p

    def test_local_delivery_then_retr_and_dele(self):
        self.start_server()
        if self.backend == "postgresql":
            # Loop reads are jobs on reader threads there, never on a loop (storage/reader.h).
            self.assertIn("event=reader-threads threads=4 backend=postgresql", self.read_log())
        body = b"Subject: on the backend\r\n\r\nline one\r\n.leading dot\r\n"
        refused = self.smtp().sendmail("x@remote.test", [ALICE], body)
        self.assertEqual(refused, {})
        self.assertEqual(self.count("SELECT count(*) FROM messages"), 1)
        p = self.pop()
        count, size = p.stat()
        self.assertEqual(count, 1)
        resp, lines, _ = p.retr(1)
        self.assertTrue(resp.startswith(b"+OK"), resp)
        self.assertIn(b"Subject: on the backend", lines)
        self.assertEqual(lines[-2:], [b"line one", b".leading dot"])
        self.assertTrue(p.dele(1).startswith(b"+OK"))
        p.quit()
        p = self.pop()
        self.assertEqual(p.stat(), (0, 0))
        p.quit()
        # The body went with its last mailbox entry.
        self.assertEqual(self.count("SELECT count(*) FROM messages"), 0)

    def test_pop_before_smtp_relay(self):
        self.start_server()
        s = self.smtp()
        s.ehlo()
        s.mail("alice@example.test")
        code, _ = s.rcpt("bob@dest.test")
        self.assertGreaterEqual(code, 500, "relayed without a window")
        s.rset()
        p = self.pop()  # the login opens the window for 127.0.0.1
        p.quit()
        self.assertEqual(self.count("SELECT count(*) FROM windows WHERE ip_key = ?",
                                    ("127.0.0.1",)), 1)
        refused = s.sendmail("alice@example.test", ["bob@dest.test"],
                             b"Subject: relayed\r\n\r\nthrough the window\r\n")
        self.assertEqual(refused, {})
        wait_for(lambda: self.sink.messages, what="the relayed message at the MX")
        self.assertEqual(self.sink.messages[0]["rcpts"], ["bob@dest.test"])
        self.assertEqual(self.count("SELECT relayed FROM windows WHERE ip_key = ?",
                                    ("127.0.0.1",)), 1)

    def test_outbound_queue_delivery(self):
        self.ok("network", "add", "127.0.0.0/8")
        self.start_server()
        refused = self.smtp().sendmail(
            "alice@example.test", ["r1@dest.test", "r2@dest.test"],
            b"Subject: outbound\r\n\r\nto the queue and out\r\n")
        self.assertEqual(refused, {})
        wait_for(lambda: self.sink.messages, what="the message at the MX")
        self.assertEqual(sorted(self.sink.messages[0]["rcpts"]), ["r1@dest.test", "r2@dest.test"])
        self.assertIn(b"to the queue and out", self.sink.messages[0]["data"])
        wait_for(lambda: self.count("SELECT count(*) FROM queue") == 0, what="an empty queue")
        self.wait_log("status=sent")
        self.assertEqual(self.count("SELECT count(*) FROM messages"), 0)
        self.assertEqual(len(self.sink.messages), 1)


ServeTestOnPostgresql = on_postgresql(ServeTest)
