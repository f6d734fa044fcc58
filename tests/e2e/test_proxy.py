"""The PROXY protocol (v1 and v2) on listeners marked proxy, against the real binary, with raw
sockets from 127.0.0.x standing for a load balancer and its clients.

A header from a balancer in [server] proxy_from makes the reported address the client's
everywhere: the relay decision (trusted networks, windows), the window a POP3 login opens, the
per-address connection limit, the log and the Received header; LOCAL and UNKNOWN keep the
balancer's own address. A peer outside proxy_from, a missing, broken, late or partial header
close the connection before any greeting, with the reason logged. Implicit TLS starts after the
header. `postern config check` refuses a proxy listener without proxy_from.
Only 127.0.0.0/8 is used.
"""
import socket
import ssl
import struct
import time

from harness import PosternTest, free_ports
from test_conn import Client, client_tls_context, make_cert

HOST = "mail.example.test"
GREETING = f"220 {HOST} ESMTP postern"
PASSWORD = "s3cret-pw"
BALANCER = "127.0.0.5"   # in proxy_from
OUTSIDER = "127.0.0.6"   # not in proxy_from
TRUSTED = "127.0.0.2"    # a trusted network, reported by the balancer
ROAMING = "127.0.0.3"    # logs in over POP3 through the balancer
OTHER = "127.0.0.4"      # nobody in particular

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src, dst=None, sport=40000, dport=25):
    fam = "TCP6" if ":" in src else "TCP4"
    dst = dst or ("::1" if ":" in src else "127.0.0.1")
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src, dst="127.0.0.1", sport=40000, dport=25, tlv=b""):
    if ":" in src:
        block = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
                 + struct.pack(">HH", sport, dport))
        fam = 0x21
    else:
        block = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">HH", sport, dport)
        fam = 0x11
    block += tlv
    return SIG + bytes([0x21, fam]) + struct.pack(">H", len(block)) + block


def v2_local():
    return SIG + bytes([0x20, 0x00, 0x00, 0x00])


def denied(rcpt):
    return f"550 5.7.1 <{rcpt}>... Relaying denied"


class ProxyTest(PosternTest):
    def setUp(self):
        super().setUp()
        make_cert(self.dir, HOST)
        self.direct = free_ports(1)[0]
        self.configure()
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", "alice@example.test", input=PASSWORD + "\n")

    def configure(self, extra=""):
        p = self.ports
        self.write_config(
            "[server]\n"
            f"proxy_from = 127.0.0.1/32, {BALANCER}/32\n"
            "[smtp]\n"
            f"listen = 127.0.0.1:{p['smtp']} proxy, 127.0.0.1:{self.direct}\n"
            f"submissions = 127.0.0.1:{p['submissions']} proxy\n"
            "[pop3]\n"
            f"listen = 127.0.0.1:{p['pop3']} proxy\n"
            "plaintext_auth = yes\n"
            "[tls]\ncertificate = cert.pem\nkey = key.pem\n" + extra)

    def via(self, header, service="smtp", source=BALANCER, greet=True):
        """A connection from source to a proxy port that sends header first."""
        c = Client(self.ports[service], source=source)
        self.addCleanup(c.close)
        c.send(header)
        if greet:
            first = c.line()
            want = GREETING if service != "pop3" else "+OK"
            self.assertTrue(first.startswith(want), first)
        return c

    def cmd(self, c, line):
        c.send(line + "\r\n")
        return c.reply()

    def relay_attempt(self, c, rcpt="friend@remote.test", sender="anyone@anywhere.test"):
        self.cmd(c, "EHLO client.example")
        self.assertEqual(self.cmd(c, f"MAIL FROM:<{sender}>"), ["250 2.1.0 Ok"])
        return self.cmd(c, f"RCPT TO:<{rcpt}>")

    def body_of_last_message(self):
        import sqlite3
        con = sqlite3.connect(self.db, timeout=10)
        try:
            return bytes(con.execute("SELECT body FROM messages ORDER BY id DESC").fetchone()[0])
        finally:
            con.close()


class RelayDecision(ProxyTest):
    def test_reported_trusted_address_relays_and_the_balancer_does_not(self):
        self.ok("network", "add", f"{TRUSTED}/32")
        self.start_server()
        c = self.via(v1(TRUSTED, sport=40001))
        self.assertEqual(self.relay_attempt(c), ["250 2.1.5 Ok"])
        self.assertEqual(self.cmd(c, "RCPT TO:<alice@example.test>"), ["250 2.1.5 Ok"])
        self.assertEqual(self.cmd(c, "DATA")[0][:3], "354")
        c.send(b"Subject: via the balancer\r\n\r\nhi\r\n.\r\n")
        self.assertTrue(c.reply()[0].startswith("250 2.0.0 Ok: queued as "))
        body = self.body_of_last_message()
        received = body.split(b"\r\n\r\n")[0]
        self.assertIn(f"[{TRUSTED}]".encode(), received)
        self.assertIn(f"(trusted network {TRUSTED}/32)".encode(), received)
        self.assertNotIn(BALANCER.encode(), received)
        log = self.read_log()
        self.assertIn(f"event=connected ip={TRUSTED} port=40001 listener=127.0.0.1:"
                      f"{self.ports['smtp']} service=smtp proxy=v1 kind=proxied "
                      f"balancer={BALANCER}", log)
        self.assertIn(f"event=relay relay=allow reason=trusted-network ip={TRUSTED}", log)

        # The balancer's own address (a LOCAL header keeps it) is not trusted.
        c = self.via(v2_local())
        self.assertEqual(self.relay_attempt(c), [denied("friend@remote.test")])
        self.assertIn(f"event=relay relay=deny reason=not-authorized ip={BALANCER}",
                      self.read_log())
        # Nor is another reported client, in either version.
        for header in (v1(OTHER), v2(OTHER), v1("::ffff:" + OTHER)):
            c = self.via(header)
            self.assertEqual(self.relay_attempt(c), [denied("friend@remote.test")], header)
        # v1 UNKNOWN keeps the balancer's address too.
        c = self.via(b"PROXY UNKNOWN\r\n")
        self.assertEqual(self.relay_attempt(c), [denied("friend@remote.test")])
        self.assertIn(f"proxy=v1 kind=unknown balancer={BALANCER}", self.read_log())

    def test_v2_with_tlvs_and_ipv6_client(self):
        self.ok("network", "add", "2001:db8::/32")
        self.start_server()
        tlv = b"\x01\x00\x04smtp" + b"\x05\x00\x03abc"
        c = self.via(v2("2001:db8::7", "2001:db8::25", 5555, 25, tlv))
        self.assertEqual(self.relay_attempt(c), ["250 2.1.5 Ok"])
        self.assertIn("event=relay relay=allow reason=trusted-network ip=2001:db8::7",
                      self.read_log())

    def test_pop3_login_through_the_balancer_opens_the_reported_address(self):
        self.start_server()
        c = self.via(v2(ROAMING, dport=110), service="pop3")
        c.send("USER alice@example.test\r\n")
        self.assertTrue(c.line().startswith("+OK"))
        c.send(f"PASS {PASSWORD}\r\n")
        reply = c.line()
        self.assertTrue(reply.startswith("+OK"), reply)
        c.send("QUIT\r\n")
        c.line()
        self.wait_log(f"ip={ROAMING}")
        self.assertIn(ROAMING, self.cli("window", "list").out)
        self.assertNotIn(BALANCER, self.cli("window", "list").out)
        # The window relays for the reported address: through the balancer, and directly.
        c = self.via(v1(ROAMING))
        self.assertEqual(self.relay_attempt(c, sender="alice@example.test"), ["250 2.1.5 Ok"])
        d = Client(self.direct, source=ROAMING)
        self.addCleanup(d.close)
        self.assertEqual(d.line(), GREETING)
        self.assertEqual(self.relay_attempt(d, sender="alice@example.test"), ["250 2.1.5 Ok"])
        # Not for the balancer's own address, nor for another client behind it.
        d = Client(self.direct, source=BALANCER)
        self.addCleanup(d.close)
        d.line()
        self.assertEqual(self.relay_attempt(d, sender="alice@example.test"),
                         [denied("friend@remote.test")])
        c = self.via(v1(OTHER))
        self.assertEqual(self.relay_attempt(c, sender="alice@example.test"),
                         [denied("friend@remote.test")])


class Refusals(ProxyTest):
    def assert_closed_without_greeting(self, c, timeout=10.0):
        self.assertTrue(c.eventually_closed(timeout), "the connection stayed open")
        self.assertEqual(c.buf, b"")

    def test_peer_outside_proxy_from_is_closed(self):
        self.start_server()
        c = Client(self.ports["smtp"], source=OUTSIDER)
        self.addCleanup(c.close)
        c.send(v1(TRUSTED))
        self.assert_closed_without_greeting(c)
        self.wait_log(f"event=refused reason=proxy-not-allowed ip={OUTSIDER} "
                      f"listener=127.0.0.1:{self.ports['smtp']} service=smtp")
        # The same peer is served on the direct port.
        d = Client(self.direct, source=OUTSIDER)
        self.addCleanup(d.close)
        self.assertEqual(d.line(), GREETING)

    def test_missing_garbage_and_broken_headers_close(self):
        self.start_server()
        cases = [
            (b"EHLO client.example\r\n", "not a PROXY header"),
            (b"PROXY TCP4 127.0.0.2 127.0.0.1 040 25\r\n", "v1 bad port"),
            (b"PROXY TCP4 127.0.0.2 127.0.0.1 40 25\n", "v1 bare LF"),
            (b"PROXY UNKNOWN " + b"x" * 120, "v1 no CRLF within 107 bytes"),
            (SIG + bytes([0x21, 0x41, 0, 12]) + bytes(12), "v2 bad family"),
            (SIG + bytes([0x21, 0x11, 0, 8]) + bytes(8), "v2 length shorter than its addresses"),
            (SIG + bytes([0x22, 0x11, 0, 12]) + bytes(12), "v2 bad command"),
        ]
        for data, why in cases:
            c = self.via(data, greet=False)
            self.assert_closed_without_greeting(c)
            self.wait_log(f'event=proxy-failed ip={BALANCER}')
            self.wait_log(f'reason="{why}"')
        self.assertIn('event=disconnected reason="proxy-error: not a PROXY header"', self.read_log())

    def test_partial_header_then_close_and_silence(self):
        self.start_server()
        c = self.via(v2(TRUSTED)[:20], greet=False)
        c.sock.shutdown(socket.SHUT_WR)
        self.assert_closed_without_greeting(c)
        self.wait_log('reason="closed before a complete header"')
        # A client that sends nothing gets nothing, and is closed after the header's bound.
        c = self.via(b"", greet=False)
        self.assert_closed_without_greeting(c, timeout=15.0)
        self.wait_log('reason="no complete header in time"')

    def test_header_in_pieces(self):
        self.start_server()
        header = v2(TRUSTED, sport=1234)
        c = self.via(header[:7], greet=False)
        time.sleep(0.2)
        c.send(header[7:30])
        time.sleep(0.2)
        c.send(header[30:])
        self.assertEqual(c.line(), GREETING)
        self.wait_log(f"event=connected ip={TRUSTED} port=1234")

    def test_octets_behind_the_header_reach_the_session(self):
        self.start_server()
        # One write: the header and a command; the command is answered after the greeting.
        c = self.via(v1(TRUSTED) + b"NOOP\r\nQUIT\r\n")
        self.assertEqual(c.reply(), ["250 2.0.0 Ok"])
        self.assertTrue(c.reply()[0].startswith("221"))

    def test_per_address_limit_counts_the_reported_client(self):
        self.configure("[server]\nmax_connections_per_ip = 2\n")
        self.start_server()
        # Four connections from the one balancer, two per client: all served.
        held = [self.via(v1(src)) for src in (TRUSTED, TRUSTED, OTHER, OTHER)]
        # A third from one client is refused with the per-address reply.
        c = self.via(v2(TRUSTED), greet=False)
        self.assertEqual(c.line(), f"421 4.7.0 {HOST} Error: too many connections from your "
                                   "address")
        self.assertTrue(c.eventually_closed(5.0))
        self.wait_log(f"event=refused reason=too-many-connections-from-ip ip={TRUSTED} "
                      f"balancer={BALANCER}")
        # Once one closes, its client has a place again.
        held[0].send("QUIT\r\n")
        held[0].reply()
        self.assertTrue(held[0].eventually_closed(5.0))
        deadline = time.monotonic() + 10
        while True:
            c = self.via(v1(TRUSTED), greet=False)
            first = c.line()
            if first == GREETING or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(first, GREETING)


class ImplicitTls(ProxyTest):
    def test_v2_header_then_tls_on_submissions(self):
        self.start_server()
        raw = socket.create_connection(("127.0.0.1", self.ports["submissions"]), timeout=10,
                                       source_address=(BALANCER, 0))
        self.addCleanup(raw.close)
        raw.sendall(v2(TRUSTED, sport=4321, dport=465))
        tls = client_tls_context().wrap_socket(raw)
        self.addCleanup(tls.close)
        f = tls.makefile("rb")
        self.assertEqual(f.readline().rstrip(b"\r\n").decode(), GREETING)
        tls.sendall(b"EHLO client.example\r\n")
        lines = []
        while True:
            line = f.readline().decode()
            lines.append(line)
            if line[3:4] == " ":
                break
        self.assertTrue(any("AUTH" in x for x in lines), lines)
        log = self.wait_log("event=tls proto=")
        self.assertIn(f"event=connected ip={TRUSTED} port=4321 listener=127.0.0.1:"
                      f"{self.ports['submissions']} service=submissions proxy=v2 kind=proxied "
                      f"balancer={BALANCER}", log)

    def test_header_and_client_hello_in_one_write(self):
        self.start_server()
        raw = socket.create_connection(("127.0.0.1", self.ports["submissions"]), timeout=10,
                                       source_address=(BALANCER, 0))
        self.addCleanup(raw.close)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = client_tls_context().wrap_bio(incoming, outgoing)
        with self.assertRaises(ssl.SSLWantReadError):
            tls.do_handshake()
        raw.sendall(v2(TRUSTED, sport=4322, dport=465) + outgoing.read())
        plain = b""
        while b"\r\n" not in plain:
            try:
                tls.do_handshake()
                plain += tls.read(4096)
            except ssl.SSLWantReadError:
                pass
            out = outgoing.read()
            if out:
                raw.sendall(out)
            if b"\r\n" in plain:
                break
            data = raw.recv(65536)
            self.assertTrue(data, "closed during the handshake")
            incoming.write(data)
        self.assertEqual(plain.split(b"\r\n")[0].decode(), GREETING)
        self.wait_log(f"event=connected ip={TRUSTED} port=4322")

    def test_tls_without_header_is_refused(self):
        self.start_server()
        raw = socket.create_connection(("127.0.0.1", self.ports["submissions"]), timeout=10,
                                       source_address=(BALANCER, 0))
        self.addCleanup(raw.close)
        with self.assertRaises((ssl.SSLError, OSError)):
            client_tls_context().wrap_socket(raw)
        self.wait_log('reason="not a PROXY header"')


class ConfigCheck(PosternTest):
    def test_proxy_listener_needs_proxy_from(self):
        self.write_config(f"[smtp]\nlisten = 127.0.0.1:{self.ports['smtp']} proxy\n")
        r = self.cli("config", "check")
        self.assertEqual(r.code, 2, r)
        self.assertEqual(r.err, f"{self.conf}: [smtp] listen: 127.0.0.1:{self.ports['smtp']} is "
                                "marked proxy but [server] proxy_from is empty\n")
        self.write_config(f"[server]\nproxy_from = 10.0.0.0/8\n"
                          f"[smtp]\nlisten = 127.0.0.1:{self.ports['smtp']} proxy\n")
        r = self.ok("config", "check")
        self.assertIn(f"listen = 127.0.0.1:{self.ports['smtp']} proxy\n", r.out)
        self.assertIn("proxy_from = 10.0.0.0/8\n", r.out)
