"""postern behind a real HAProxy (Debian package haproxy) that sends PROXY protocol v2
(`send-proxy-v2` on its server lines), on SQLite: the relay decision, the POP-before-SMTP window
and the log see the client's address, never HAProxy's.

HAProxy runs as a child (tests/e2e/balancer.py) on free loopback ports and connects
to postern from 127.0.0.1, the only address in [server] proxy_from. Clients connect to HAProxy
from 127.0.0.2 (a trusted network), 127.0.0.3 (logs in over POP3) and 127.0.0.4 (nobody). The
test is skipped, saying why, only when no haproxy binary is installed (scripts/bootstrap
installs it). Only 127.0.0.0/8 is used.
"""
import unittest

from balancer import HAPROXY, SKIP_REASON, Haproxy
from harness import PosternTest, free_ports
from test_conn import Client, make_cert

HOST = "mail.example.test"
GREETING = f"220 {HOST} ESMTP postern"
PASSWORD = "s3cret-pw"
TRUSTED = "127.0.0.2"
ROAMING = "127.0.0.3"
OTHER = "127.0.0.4"


@unittest.skipIf(HAPROXY is None, SKIP_REASON)
class BehindHaproxy(PosternTest):
    def setUp(self):
        super().setUp()
        make_cert(self.dir, HOST)
        self.front_smtp, self.front_pop3 = free_ports(2)
        p = self.ports
        self.write_config(
            "[server]\nproxy_from = 127.0.0.1/32\n"
            f"[smtp]\nlisten = 127.0.0.1:{p['smtp']} proxy\n"
            f"[pop3]\nlisten = 127.0.0.1:{p['pop3']} proxy\nplaintext_auth = yes\n"
            "[tls]\ncertificate = cert.pem\nkey = key.pem\n")
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", "alice@example.test", input=PASSWORD + "\n")
        self.ok("network", "add", f"{TRUSTED}/32")
        self.start_server()
        self.start_haproxy()

    def start_haproxy(self):
        p = self.ports
        Haproxy(self, self.dir, {"smtp": (self.front_smtp, [("node1", p["smtp"])]),
                                 "pop3": (self.front_pop3, [("node1", p["pop3"])])})

    def smtp_via_haproxy(self, source):
        c = Client(self.front_smtp, source=source, timeout=10)
        self.addCleanup(c.close)
        self.assertEqual(c.line(), GREETING)
        return c

    def cmd(self, c, line):
        c.send(line + "\r\n")
        return c.reply()

    def relay_attempt(self, source, sender="someone@anywhere.test"):
        c = self.smtp_via_haproxy(source)
        self.cmd(c, "EHLO client.example")
        self.assertEqual(self.cmd(c, f"MAIL FROM:<{sender}>"), ["250 2.1.0 Ok"])
        reply = self.cmd(c, "RCPT TO:<friend@remote.test>")
        self.cmd(c, "QUIT")
        return reply

    def test_relay_decision_sees_the_client(self):
        self.assertEqual(self.relay_attempt(TRUSTED), ["250 2.1.5 Ok"])
        self.assertEqual(self.relay_attempt(OTHER),
                         ["550 5.7.1 <friend@remote.test>... Relaying denied"])
        log = self.wait_log(f"event=relay relay=deny reason=not-authorized ip={OTHER}")
        self.assertIn(f"event=relay relay=allow reason=trusted-network ip={TRUSTED}", log)
        self.assertIn(f"event=connected ip={TRUSTED} ", log)
        self.assertIn("proxy=v2 kind=proxied balancer=127.0.0.1", log)
        self.assertNotIn("event=relay relay=allow reason=trusted-network ip=127.0.0.1", log)

    def test_pop3_login_through_haproxy_opens_the_clients_window(self):
        c = Client(self.front_pop3, source=ROAMING, timeout=10)
        self.addCleanup(c.close)
        self.assertTrue(c.line().startswith("+OK"))
        c.send("USER alice@example.test\r\n")
        self.assertTrue(c.line().startswith("+OK"))
        c.send(f"PASS {PASSWORD}\r\n")
        reply = c.line()
        self.assertTrue(reply.startswith("+OK"), reply)
        c.send("QUIT\r\n")
        c.line()
        windows = self.cli("window", "list").out
        self.assertIn(ROAMING, windows)
        self.assertNotIn("127.0.0.1", windows)
        self.assertEqual(self.relay_attempt(ROAMING, sender="alice@example.test"),
                         ["250 2.1.5 Ok"])
        self.assertEqual(self.relay_attempt(OTHER, sender="alice@example.test"),
                         ["550 5.7.1 <friend@remote.test>... Relaying denied"])
