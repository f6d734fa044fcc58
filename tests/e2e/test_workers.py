"""Several event loops ([server] workers = 2) against the real binary: the kernel spreads
connections over the loops' listening sockets (SO_REUSEPORT), and what must hold for the whole
process holds across them: the per-address connection limit, SMTP delivery and POP3 RETR on every
connection, and a POP-before-SMTP window opened by a POP3 login relaying on SMTP connections
whichever loop they land on; a stop reaches every loop.

Which loop takes a connection is the kernel's choice (a hash of the addresses and ports), so the
tests open enough connections that both loops get some with near certainty: a limit counted per
loop would let through about twice as many as configured.
"""
import os
import poplib
import signal
import smtplib
import time

from harness import PosternTest
from test_conn import Client

HOST = "mail.example.test"
GREETING = f"220 {HOST} ESMTP postern"
PASSWORD = "s3cret-pw"
PER_IP = 6
ROAMING = "127.0.0.3"


class Workers(PosternTest):
    extra_config = ("[server]\nworkers = 2\nmax_connections = 200\n"
                    f"max_connections_per_ip = {PER_IP}\n"
                    "[pop3]\nplaintext_auth = yes\n")

    def setUp(self):
        super().setUp()
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", "alice@example.test", input=PASSWORD + "\n")

    def threads(self):
        return len(os.listdir(f"/proc/{self.server.pid}/task"))

    def test_started_with_two_loops(self):
        self.start_server()
        text = self.read_log()
        self.assertIn("workers=2", text)
        # Each loop listens on every address: two listening lines per port.
        self.assertEqual(text.count(f"event=listening address=127.0.0.1:{self.ports['smtp']} "), 2)
        # The first loop, the writer, the second loop (libuv's threadpool comes on demand).
        self.assertGreaterEqual(self.threads(), 3)

    def test_per_ip_limit_holds_across_loops(self):
        self.start_server()
        greeted, refused = [], 0
        for _ in range(2 * PER_IP + 4):
            c = Client(self.ports["smtp"], source="127.0.0.2", timeout=10)
            self.addCleanup(c.close)
            first = c.line()
            if first == GREETING:
                greeted.append(c)
            else:
                self.assertEqual(first,
                                 f"421 4.7.0 {HOST} Error: too many connections from your address")
                refused += 1
        self.assertEqual(len(greeted), PER_IP)
        self.assertEqual(refused, PER_IP + 4)
        # Every greeted connection works, and a freed place can be taken again.
        for c in greeted:
            c.send("NOOP\r\n")
            self.assertEqual(c.line(), "250 2.0.0 Ok")
        greeted[0].send("QUIT\r\n")
        self.assertEqual(greeted[0].line(), "221 2.0.0 Bye")
        greeted[0].close()
        deadline = time.monotonic() + 10
        while True:
            c = Client(self.ports["smtp"], source="127.0.0.2", timeout=10)
            self.addCleanup(c.close)
            first = c.line()
            if first == GREETING or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(first, GREETING)

    def test_delivery_and_retr_on_many_connections(self):
        self.start_server()
        n = 16
        for i in range(n):
            s = smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10)
            try:
                msg = f"Subject: m{i}\r\n\r\nbody {i}\r\n".encode()
                self.assertEqual(s.sendmail("x@remote.test", ["alice@example.test"], msg), {})
            finally:
                s.quit()
        seen = set()
        for _ in range(8):  # POP3 sessions one after another (the maildrop lock)
            p = poplib.POP3("127.0.0.1", self.ports["pop3"], timeout=10)
            try:
                p.user("alice@example.test")
                p.pass_(PASSWORD)
                count, _ = p.stat()
                self.assertEqual(count, n)
                for k in range(1, n + 1):
                    _, lines, _ = p.retr(k)
                    seen.add(lines[-1])
            finally:
                p.quit()
        self.assertEqual(seen, {f"body {i}".encode() for i in range(n)})

    def test_window_from_pop3_relays_on_every_loop(self):
        self.start_server()
        c = Client(self.ports["pop3"], source=ROAMING, timeout=10)
        self.addCleanup(c.close)
        self.assertEqual(c.line(), "+OK postern ready.")
        c.send("USER alice@example.test\r\n")
        self.assertTrue(c.line().startswith("+OK"))
        c.send(f"PASS {PASSWORD}\r\n")
        self.assertTrue(c.line().startswith("+OK Logged in"))
        c.send("QUIT\r\n")
        c.line()
        for i in range(10):
            s = smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10,
                             source_address=(ROAMING, 0))
            try:
                s.ehlo("roamer.example")
                self.assertEqual(s.mail("alice@example.test")[0], 250)
                self.assertEqual(s.rcpt(f"friend{i}@remote.test")[0], 250)
            finally:
                s.quit()
        # From another address nothing relays, whichever loop.
        for _ in range(4):
            s = smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10,
                             source_address=("127.0.0.4", 0))
            try:
                s.ehlo("other.example")
                s.mail("alice@example.test")
                self.assertEqual(s.rcpt("friend@remote.test")[0], 550)
            finally:
                s.quit()

    def test_stop_tells_every_loop(self):
        self.start_server()
        clients = []
        for i in range(10):
            c = Client(self.ports["smtp"], source=f"127.0.0.{20 + i}", timeout=10)
            self.addCleanup(c.close)
            self.assertEqual(c.line(), GREETING)
            clients.append(c)
        self.server.send_signal(signal.SIGTERM)
        for c in clients:
            self.assertEqual(c.line(), f"421 4.3.2 {HOST} Service shutting down")
            self.assertTrue(c.closed())
        self.assertEqual(self.stop_server(), 0)
        self.assertIn("event=stopped", self.read_log())
