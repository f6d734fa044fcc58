"""Two postern nodes (a and b) on one PostgreSQL database behind one HAProxy: the whole
topology of README "Scaling out". Each node's SMTP and POP3 listeners are marked `proxy` with
[server] proxy_from = 127.0.0.1/32; HAProxy (tests/e2e/balancer.py) has one SMTP and one POP3
frontend, each backend listing both nodes with `send-proxy-v2 check check-send-proxy` and
`balance roundrobin`. What is checked through it: a POP3 login landing on one node opens a window
that relays on the other for the client's address only (127.0.0.3, never HAProxy's 127.0.0.1,
which is no trusted network here); the maildrop lock holds across the nodes; a message accepted
by one node is read and deleted through the other; HAProxy's health checks are neither failed
headers nor warnings, and mark no node down.

Which node a connection landed on is read, never assumed: SMTP greets with the node's host name
(a.example.test, b.example.test), and a POP3 connection is found in the node's log by the
client's own source port, which only the PROXY header carries there. Round robin sends the next
connection to the other node, so reaching a given node takes at most two connections, the
first held open meanwhile.

The database is a fresh one per test on the server of POSTERN_TEST_PG (the ctest fixture,
scripts/pg); without it, or without a haproxy binary, the tests are skipped, saying why. Only
127.0.0.0/8 is used; every wait is bounded.
"""
import os
import time
import unittest

from balancer import HAPROXY, SKIP_REASON, Haproxy
from harness import free_ports
from test_conn import Client
from test_nodes import ALICE, PASSWORD, Node, NodesTest

ROAMING = "127.0.0.3"
OTHER = "127.0.0.4"
BALANCER = "127.0.0.1"
REMOTE = "friend@remote.test"


@unittest.skipIf(HAPROXY is None, SKIP_REASON)
class TwoNodesBehindHaproxy(NodesTest):
    backend = "postgresql"

    def setUp(self):
        super().setUp()
        db = self.shared_db()
        self.write_config(f"[server]\ndatabase = {db}\n")
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", ALICE, input=PASSWORD + "\n")
        # HAProxy's own address must not be what lets anyone relay.
        self.assertNotIn(BALANCER, self.ok("network", "list").out)
        self.a = Node(self, "a", os.path.join(self.dir, "a"), db, {}, proxy_from=f"{BALANCER}/32")
        self.b = Node(self, "b", os.path.join(self.dir, "b"), db, {}, proxy_from=f"{BALANCER}/32")
        self.nodes = (self.a, self.b)
        self.a.start()
        self.b.start()
        self.front = dict(zip(("smtp", "pop3"), free_ports(2)))
        self.haproxy = Haproxy(
            self, self.dir,
            {s: (self.front[s], [(n.name, n.ports[s]) for n in self.nodes]) for s in self.front},
            balance="roundrobin", server_options="send-proxy-v2 check check-send-proxy")

    # ---- clients through HAProxy ----
    def other(self, node):
        return self.b if node is self.a else self.a

    def connect(self, service, source):
        """A connection through HAProxy's frontend for service from source, greeted; with the
        node it landed on."""
        c = Client(self.front[service], source=source, timeout=10)
        self.addCleanup(c.close)
        greeting = c.line()
        if service == "smtp":
            for node in self.nodes:
                if greeting == f"220 {node.name}.example.test ESMTP postern":
                    return c, node
            self.fail(f"greeting from no node: {greeting!r}")
        self.assertEqual(greeting, "+OK postern ready.")
        # The node logs the connection, with the address and port from the PROXY header,
        # before it greets.
        port = c.sock.getsockname()[1]
        needle = f"event=connected ip={source} port={port} listener="
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            landed = [n for n in self.nodes if needle in n.log()]
            if landed:
                self.assertEqual(len(landed), 1, needle)
                return c, landed[0]
            time.sleep(0.05)
        self.fail(f"no node logged {needle!r}")

    def on(self, service, node, source):
        """A connection through HAProxy that landed on node. The ones that landed elsewhere are
        held open until then (round robin sends the next one to the other node) and quit."""
        missed = []
        for _ in range(3):
            c, landed = self.connect(service, source)
            if landed is node:
                for m in missed:
                    m.send("QUIT\r\n")
                return c
            missed.append(c)
        self.fail(f"3 {service} connections through HAProxy, none on node {node.name}")

    def cmd(self, c, line):
        """An SMTP command's reply (its last line)."""
        c.send(line + "\r\n")
        return c.reply()[-1]

    def pop(self, c, line):
        """A POP3 command's first reply line."""
        c.send(line + "\r\n")
        return c.line()

    def login(self, c):
        self.assertEqual(self.pop(c, f"USER {ALICE}"), "+OK Send your password")
        return self.pop(c, f"PASS {PASSWORD}")

    def retr(self, c, n):
        """The message n over POP3, dot-unstuffed, as text."""
        first = self.pop(c, f"RETR {n}")
        self.assertTrue(first.startswith("+OK"), first)
        lines = []
        while True:
            line = c.line()
            if line == ".":
                return "\r\n".join(lines)
            lines.append(line[1:] if line.startswith(".") else line)

    def relay_rcpt(self, node, source):
        """The reply to RCPT TO a remote domain on node, through HAProxy, from source."""
        c = self.on("smtp", node, source)
        self.cmd(c, "EHLO client.example")
        self.assertEqual(self.cmd(c, f"MAIL FROM:<{ALICE}>"), "250 2.1.0 Ok")
        reply = self.cmd(c, f"RCPT TO:<{REMOTE}>")
        self.cmd(c, "QUIT")
        return reply

    # ---- the tests ----
    def test_login_on_one_node_relays_on_the_other_for_the_client_only(self):
        p, x = self.connect("pop3", ROAMING)
        self.assertTrue(self.login(p).startswith("+OK Logged in"))
        self.assertEqual(self.pop(p, "QUIT"), "+OK Bye")
        x.wait_log(f"event=login user={ALICE} ip={ROAMING} ")
        self.assertIn(f"proxy=v2 kind=proxied balancer={BALANCER}", x.log())
        # The window is the client's, not HAProxy's.
        windows = self.ok("window", "list").out
        self.assertIn(ROAMING, windows)
        self.assertNotIn(BALANCER, windows)
        y = self.other(x)
        self.assertEqual(self.relay_rcpt(y, ROAMING), "250 2.1.5 Ok")
        y.wait_log(f"event=relay relay=allow reason=pop-window ip={ROAMING} ")
        # Through the same HAProxy, to each node, a client that never logged in is refused.
        for node in self.nodes:
            self.assertEqual(self.relay_rcpt(node, OTHER),
                             f"550 5.7.1 <{REMOTE}>... Relaying denied")
            node.wait_log(f"event=relay relay=deny reason=not-authorized ip={OTHER} ")
        for node in self.nodes:
            self.assertNotIn(f"ip={BALANCER} from=", node.log())

    def test_maildrop_lock_holds_across_nodes_behind_haproxy(self):
        p1, x = self.connect("pop3", ROAMING)
        self.assertTrue(self.login(p1).startswith("+OK Logged in"))
        y = self.other(x)
        p2 = self.on("pop3", y, OTHER)
        self.assertEqual(self.login(p2), "-ERR [IN-USE] Maildrop is locked by another session")
        # here=no: the lock that refused it is the other node's, read from the database.
        y.wait_log(f"event=login-refused user={ALICE} reason=in-use here=no")
        self.assertEqual(self.pop(p1, "QUIT"), "+OK Bye")
        # The release committed before "+OK Bye": the second session gets in at once.
        self.assertTrue(self.login(p2).startswith("+OK Logged in"))
        self.assertEqual(self.pop(p2, "QUIT"), "+OK Bye")

    def test_message_accepted_on_one_node_is_read_and_deleted_on_the_other(self):
        s, x = self.connect("smtp", ROAMING)
        self.cmd(s, "EHLO client.example")
        for line, want in (("MAIL FROM:<someone@remote.test>", "250 2.1.0 Ok"),
                           (f"RCPT TO:<{ALICE}>", "250 2.1.5 Ok"), ("DATA", "354")):
            self.assertTrue(self.cmd(s, line).startswith(want), line)
        s.send("Subject: through the balancer\r\n\r\nbody\r\n.\r\n")
        self.assertTrue(s.reply()[-1].startswith("250"))
        self.cmd(s, "QUIT")
        y = self.other(x)
        p = self.on("pop3", y, ROAMING)
        self.assertTrue(self.login(p).startswith("+OK Logged in: maildrop has 1 message "))
        text = self.retr(p, 1)
        self.assertIn("Subject: through the balancer", text)
        # Written by the node that accepted it, naming the client HAProxy reported.
        self.assertIn(f"Received: from client.example ([{ROAMING}])\r\n"
                      f"\tby {x.name}.example.test (postern)", text)
        self.assertNotIn(f"[{BALANCER}]", text)
        self.assertEqual(self.pop(p, "DELE 1"), "+OK Message 1 deleted")
        self.assertEqual(self.pop(p, "QUIT"), "+OK Bye: 1 message deleted")
        q = self.on("pop3", x, ROAMING)
        self.assertTrue(self.login(q).startswith("+OK Logged in: maildrop has 0 messages"))
        self.assertEqual(self.pop(q, "STAT"), "+OK 0 0")
        self.assertEqual(self.pop(q, "QUIT"), "+OK Bye")

    def test_health_checks_are_no_failures(self):
        # check-send-proxy: a check opens with a PROXY v2 LOCAL header and resets at once. It
        # reaches a node as a connection that keeps the balancer's address (kind=local), or,
        # when the reset came before the accept, as a peer that is gone: neither is a failed
        # header or a warning, and no server is marked down.
        for node in self.nodes:
            for service in ("smtp", "pop3"):
                listener = f"listener=127.0.0.1:{node.ports[service]}"
                seen = (f"{listener} service={service} proxy=v2 kind=local balancer={BALANCER}",
                        f"event=accept-gone {listener} ip={BALANCER}")
                deadline = time.monotonic() + 20
                while not any(x in node.log() for x in seen):
                    if time.monotonic() > deadline:
                        self.fail(f"no health check in node {node.name}'s log on {listener}:\n"
                                  + node.log())
                    time.sleep(0.1)
        for node in self.nodes:
            log = node.log()
            self.assertNotIn("event=proxy-failed", log)
            self.assertNotIn("event=accept-failed", log)
        self.assertNotIn(" is DOWN", self.haproxy.log())

if __name__ == "__main__":
    unittest.main()
