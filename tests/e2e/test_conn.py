"""The connection layer against the real binary: listeners on every port, line limits, pipelining,
timeouts, connection limits, STARTTLS/STLS and implicit TLS, certificate reload, graceful
shutdown, bind failures, HTTP probes, the transcript, and the privilege drop (when run as root).

These tests are about the connection layer, not the protocols: they use a few SMTP and POP3
commands (greeting, EHLO/HELO, NOOP, RSET, QUIT, STARTTLS; CAPA, STLS, QUIT) and check their
replies; test_smtp.py and the POP3 tests cover the protocols themselves.
Certificates are made with the openssl command line. Only 127.0.0.0/8 and ::1 are used.
"""
import os
import resource
import signal
import socket
import ssl
import subprocess
import time

from harness import BIN, PosternTest, free_port

HOST = "mail.example.test"
GREETING = f"220 {HOST} ESMTP postern"
TLS_CONFIG = "[tls]\ncertificate = cert.pem\nkey = key.pem\n"


def make_cert(directory, cn, cert="cert.pem", key="key.pem"):
    """A self-signed EC certificate for cn, written to directory/cert and directory/key."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", os.path.join(directory, key), "-out", os.path.join(directory, cert),
         "-days", "30", "-subj", f"/CN={cn}"],
        check=True, capture_output=True, timeout=60)


def client_tls_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Client:
    """A line-oriented client with a bounded wait on every read."""

    def __init__(self, port, host="127.0.0.1", source=None, tls=False, timeout=5.0,
                 rcvbuf=None):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(timeout)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            s.bind((source, 0))
        s.connect((host, port))
        self.sock = s
        self.buf = b""
        if tls:
            self.sock = client_tls_context().wrap_socket(s)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; buffered {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line.decode("latin-1")

    def reply(self):
        """One SMTP reply: its lines, the last one with a space after the code."""
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return lines

    def closed(self, timeout=5.0):
        """True when the server closes (EOF or reset) within timeout, with nothing more sent."""
        self.sock.settimeout(timeout)
        try:
            rest = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            return self.buf == b""
        except socket.timeout:
            return False
        if rest:
            self.buf += rest
            return False
        return self.buf == b""

    def eventually_closed(self, timeout=5.0):
        """True when the server closes within timeout, whatever it sends first (a TLS alert)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not self.sock.recv(65536):
                    return True
            except (ConnectionResetError, ssl.SSLError):
                return True
            except socket.timeout:
                return False
        return False

    def starttls(self):
        self.sock = client_tls_context().wrap_socket(self.sock)
        return self.sock

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class ConnTest(PosternTest):
    """A server with TLS on every port (the certificate is made per test)."""

    extra_config = TLS_CONFIG

    def setUp(self):
        super().setUp()
        make_cert(self.dir, HOST)

    def connect(self, service, **kw):
        c = Client(self.ports[service], **kw)
        self.addCleanup(c.close)
        return c


class GreetingsAndLines(ConnTest):
    def test_greetings_on_every_port(self):
        self.start_server()
        for service in ("smtp", "submission", "submissions"):
            c = self.connect(service, tls=service == "submissions")
            self.assertEqual(c.line(), GREETING, service)
            c.send("QUIT\r\n")
            self.assertEqual(c.line(), "221 2.0.0 Bye")
        for service in ("pop3", "pop3s"):
            c = self.connect(service, tls=service == "pop3s")
            self.assertEqual(c.line(), "+OK postern ready.", service)
            c.send("quit\r\n")
            self.assertEqual(c.line(), "+OK Bye")
        log = self.wait_log("event=disconnected reason=quit")
        self.assertIn("service=submissions", log)
        self.assertIn("event=tls proto=TLSv1.3 cipher=", log)

    def test_ehlo_and_commands(self):
        self.start_server()
        c = self.connect("smtp")
        c.line()
        c.send("ehlo client.example\r\n")
        self.assertEqual(c.reply(), [f"250-{HOST}", "250-PIPELINING", "250-SIZE 26214400",
                                     "250-8BITMIME", "250-ENHANCEDSTATUSCODES", "250-CHUNKING",
                                     "250-SMTPUTF8",
                                     "250-DSN",
                                     "250 STARTTLS"])
        for cmd, want in [("NOOP", "250 2.0.0 Ok"), ("RSET", "250 2.0.0 Ok"),
                          ("HELO x", f"250 {HOST}"), ("XYZZY", "500 5.5.2 Error: command not recognized"),
                          ("EHLO", "501 5.5.4 Syntax: EHLO hostname")]:
            c.send(cmd + "\r\n")
            self.assertEqual(c.reply(), [want], cmd)

    def test_overlong_line_is_refused_and_skipped(self):
        self.start_server()
        c = self.connect("smtp")
        c.line()
        # RFC 5321 4.5.3.1.4: 512 octets with CRLF, and 514 more for DSN's ORCPT and NOTIFY
        # (RFC 3461 4); the tail must not run as a command.
        c.send("X" * 1100 + "QUIT\r\nNOOP\r\n")
        self.assertEqual(c.line(), "500 5.5.0 Line too long")
        self.assertEqual(c.line(), "250 2.0.0 Ok")
        c.send("N" * 1024 + "\r\n")  # exactly 1026 with CRLF: a line, not too long
        self.assertEqual(c.line(), "500 5.5.2 Error: command not recognized")
        c.send("A\0B\r\n")
        self.assertEqual(c.line(), "500 5.5.2 Syntax error")
        p = self.connect("pop3")
        p.line()
        p.send("Y" * 300 + "\r\nCAPA\r\n")  # RFC 2449: 255 octets
        self.assertEqual(p.line(), "-ERR Line too long")
        self.assertEqual(p.line(), "+OK Capability list follows")

    def test_line_split_over_several_sends(self):
        self.start_server()
        c = self.connect("smtp")
        c.line()
        for piece in ["N", "O", "OP", "\r", "\nRS", "ET\r\nQU", "IT", "\r\n"]:
            c.send(piece)
            time.sleep(0.05)
        self.assertEqual(c.line(), "250 2.0.0 Ok")
        self.assertEqual(c.line(), "250 2.0.0 Ok")
        self.assertEqual(c.line(), "221 2.0.0 Bye")
        self.assertTrue(c.closed())

    def test_pipelined_commands_in_one_send(self):
        self.start_server()
        c = self.connect("smtp")
        c.line()
        c.send("EHLO a\r\nNOOP\r\nRSET\r\nNOOP\r\nQUIT\r\n")
        self.assertEqual(c.reply()[-1], "250 STARTTLS")
        self.assertEqual([c.line() for _ in range(4)],
                         ["250 2.0.0 Ok", "250 2.0.0 Ok", "250 2.0.0 Ok", "221 2.0.0 Bye"])
        p = self.connect("pop3")
        p.line()
        p.send("CAPA\r\nNOOP\r\nQUIT\r\n")
        lines = [p.line() for _ in range(11)]
        self.assertEqual(lines, ["+OK Capability list follows", "TOP", "UIDL", "RESP-CODES",
                                 "AUTH-RESP-CODE", "PIPELINING", "UTF8 USER", "STLS",
                                 "IMPLEMENTATION postern", ".", "-ERR Command not valid in this state"])
        self.assertEqual(p.line(), "+OK Bye")

    def test_many_pipelined_commands_and_a_client_that_reads_late(self):
        self.start_server()
        c = self.connect("smtp", rcvbuf=4096)
        c.line()
        n = 20000
        c.send("NOOP\r\n" * n)
        time.sleep(0.5)  # the server stops reading when its output is not read
        got = 0
        while got < n:
            self.assertEqual(c.line(), "250 2.0.0 Ok")
            got += 1
        c.send("QUIT\r\n")
        self.assertEqual(c.line(), "221 2.0.0 Bye")

    def test_too_many_errors(self):
        # Past smtp.hard_error_limit the next command gets 421 (test_session_answers.py has the
        # limits themselves).
        self.write_config(TLS_CONFIG + "[smtp]\nsoft_error_limit = 5\nhard_error_limit = 10\n"
                          "error_delay = 10ms\n")
        self.start_server()
        c = self.connect("smtp")
        c.line()
        c.send("BOGUS\r\n" * 12)
        for _ in range(10):
            self.assertEqual(c.line(), "500 5.5.2 Error: command not recognized")
        self.assertEqual(c.line(), f"421 4.7.0 {HOST} Error: too many errors")
        self.assertTrue(c.closed())
        self.wait_log("reason=too-many-errors")

    def test_http_request_is_dropped(self):
        self.start_server()
        c = self.connect("smtp")
        c.line()
        c.send("GET / HTTP/1.1\r\nHost: mail.example.test\r\n\r\n")
        self.assertTrue(c.closed(timeout=3))  # no reply, closed at once
        self.wait_log("event=http-request")
        self.assertIn("reason=http-request", self.wait_log("reason=http-request"))


class Timeouts(ConnTest):
    extra_config = TLS_CONFIG + "[smtp]\ntimeout = 1s\n[pop3]\ntimeout = 1s\n"

    def test_idle_timeout(self):
        self.start_server()
        c = self.connect("smtp")
        p = self.connect("pop3")
        start = time.monotonic()
        c.line()
        p.line()
        self.assertEqual(c.line(), f"421 4.4.2 {HOST} Error: timeout exceeded")
        self.assertEqual(p.line(), "-ERR Autologout; idle for too long")
        # Not before the configured second (the upper bound is the read timeout of 5s).
        self.assertGreater(time.monotonic() - start, 0.8)
        self.assertTrue(c.closed())
        self.assertTrue(p.closed())
        self.wait_log("reason=timeout")

    def test_activity_restarts_the_timer(self):
        self.start_server()
        c = self.connect("smtp")
        c.line()
        for _ in range(4):
            time.sleep(0.5)
            c.send("NOOP\r\n")
            self.assertEqual(c.line(), "250 2.0.0 Ok")


class Limits(ConnTest):
    extra_config = TLS_CONFIG + "[server]\nmax_connections = 4\nmax_connections_per_ip = 2\n"

    def test_per_ip_limit(self):
        self.start_server()
        a1 = self.connect("smtp", source="127.0.0.2")
        a2 = self.connect("pop3", source="127.0.0.2")
        self.assertEqual(a1.line(), GREETING)
        self.assertEqual(a2.line(), "+OK postern ready.")
        a3 = self.connect("smtp", source="127.0.0.2")
        self.assertEqual(a3.line(), f"421 4.7.0 {HOST} Error: too many connections from your address")
        self.assertTrue(a3.closed())
        a4 = self.connect("pop3", source="127.0.0.2")
        self.assertEqual(a4.line(), "-ERR [SYS/TEMP] Too many connections from your address")
        # Another address is not affected.
        b1 = self.connect("smtp", source="127.0.0.3")
        self.assertEqual(b1.line(), GREETING)
        # A freed slot can be used again.
        a1.send("QUIT\r\n")
        self.assertEqual(a1.line(), "221 2.0.0 Bye")
        a1.close()
        deadline = time.monotonic() + 5
        while True:
            a5 = self.connect("smtp", source="127.0.0.2")
            first = a5.line()
            if first == GREETING or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(first, GREETING)
        self.wait_log("event=refused reason=too-many-connections-from-ip ip=127.0.0.2")

    def test_global_limit(self):
        self.start_server()
        clients = []
        for i in range(4):
            c = self.connect("smtp", source=f"127.0.0.{10 + i}")
            self.assertEqual(c.line(), GREETING)
            clients.append(c)
        c = self.connect("smtp", source="127.0.0.20")
        self.assertEqual(c.line(), f"421 4.7.0 {HOST} Error: too many connections")
        self.assertTrue(c.closed())
        # On an implicit-TLS port the refusal is just a close (no handshake is spent on it).
        t = Client(self.ports["submissions"], source="127.0.0.21")
        self.addCleanup(t.close)
        self.assertTrue(t.closed())
        self.wait_log("event=refused reason=too-many-connections ")


class Tls(ConnTest):
    def test_starttls_discards_pipelined_plaintext(self):
        self.start_server()
        c = self.connect("smtp")
        c.line()
        c.send("EHLO a\r\n")
        self.assertIn("250 STARTTLS", c.reply())
        # CVE-2011-0411: the NOOP after STARTTLS in the same packet must never be answered.
        c.send("STARTTLS\r\nNOOP\r\n")
        self.assertEqual(c.line(), "220 2.0.0 Ready to start TLS")
        self.assertEqual(c.buf, b"")
        s = c.starttls()
        self.assertIn(s.version(), ("TLSv1.2", "TLSv1.3"))
        c.send("EHLO b\r\n")
        # The first reply over TLS is the EHLO's, and STARTTLS is no longer offered.
        self.assertEqual(c.reply(), [f"250-{HOST}", "250-PIPELINING", "250-SIZE 26214400",
                                     "250-8BITMIME", "250-ENHANCEDSTATUSCODES", "250-CHUNKING",
                                     "250-SMTPUTF8",
                                     "250-DSN",
                                     "250 AUTH PLAIN LOGIN"])
        c.send("STARTTLS\r\n")
        self.assertEqual(c.line(), "554 5.5.1 Error: TLS already active")
        self.wait_log("event=starttls-discarded bytes=6")

    def test_stls(self):
        self.start_server()
        p = self.connect("pop3")
        p.line()
        p.send("STLS\r\nCAPA\r\n")
        self.assertEqual(p.line(), "+OK Begin TLS negotiation")
        p.starttls()
        p.send("CAPA\r\n")
        lines = [p.line() for _ in range(11)]
        # After STLS, USER and SASL are offered and STLS is not.
        self.assertEqual(lines, ["+OK Capability list follows", "TOP", "UIDL", "USER",
                                 "SASL PLAIN LOGIN", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING",
                                 "UTF8 USER", "IMPLEMENTATION postern", "."])
        p.send("STLS\r\n")
        self.assertEqual(p.line(), "-ERR Command not permitted when TLS active")

    def test_implicit_tls_ports(self):
        self.start_server()
        s = self.connect("submissions", tls=True)
        self.assertEqual(s.line(), GREETING)
        s.send("EHLO a\r\n")
        self.assertEqual(s.reply(), [f"250-{HOST}", "250-PIPELINING", "250-SIZE 26214400",
                                     "250-8BITMIME", "250-ENHANCEDSTATUSCODES", "250-CHUNKING",
                                     "250-SMTPUTF8",
                                     "250-DSN",
                                     "250 AUTH PLAIN LOGIN"])
        p = self.connect("pop3s", tls=True)
        self.assertEqual(p.line(), "+OK postern ready.")
        p.send("STLS\r\n")
        self.assertEqual(p.line(), "-ERR Command not permitted when TLS active")

    def test_tls_1_1_is_refused(self):
        self.start_server()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        except (ValueError, ssl.SSLError) as e:
            self.skipTest(f"this Python/OpenSSL cannot offer TLS 1.1: {e}")
        s = socket.create_connection(("127.0.0.1", self.ports["submissions"]), timeout=5)
        self.addCleanup(s.close)
        with self.assertRaises((ssl.SSLError, ConnectionResetError, OSError)):
            ctx.wrap_socket(s).recv(100)
        self.wait_log("event=tls-failed")
        # And the server is fine.
        self.assertEqual(self.connect("submissions", tls=True).line(), GREETING)

    def test_garbage_on_tls_ports(self):
        self.start_server()
        for service in ("submissions", "pop3s"):
            # Plaintext, an empty ClientHello, and random bytes behind an invalid record type
            # (random bytes that happen to look like a record header would make OpenSSL wait
            # for the rest of that record, until the idle timeout).
            for junk in (b"EHLO plain\r\n", b"\x16\x03\x01\x00\x04\x01\x00\x00\x00",
                         b"\x00" + os.urandom(3000)):
                c = Client(self.ports[service])
                try:
                    c.send(junk)
                    self.assertTrue(c.eventually_closed(), (service, junk[:16]))
                finally:
                    c.close()
        self.assertIsNone(self.server.poll())
        self.assertEqual(self.connect("pop3s", tls=True).line(), "+OK postern ready.")
        self.assertIn("event=tls-failed", self.read_log())

    def test_sighup_reloads_the_certificate(self):
        self.start_server()
        old = self.connect("submissions", tls=True)
        self.assertEqual(old.line(), GREETING)
        old_der = old.sock.getpeercert(binary_form=True)
        old_pop = self.connect("pop3s", tls=True)
        self.assertEqual(old_pop.line(), "+OK postern ready.")
        # New files in place (as an ACME client's deploy hook puts them), then SIGHUP.
        make_cert(self.dir, "new.example.test", "cert.new", "key.new")
        os.replace(os.path.join(self.dir, "key.new"), os.path.join(self.dir, "key.pem"))
        os.replace(os.path.join(self.dir, "cert.new"), os.path.join(self.dir, "cert.pem"))
        self.server.send_signal(signal.SIGHUP)
        self.wait_log("event=reload tls=ok")
        new = self.connect("submissions", tls=True)
        self.assertEqual(new.line(), GREETING)
        new_der = new.sock.getpeercert(binary_form=True)
        self.assertNotEqual(old_der, new_der)
        with open(os.path.join(self.dir, "cert.pem")) as f:
            self.assertEqual(new_der, ssl.PEM_cert_to_DER_cert(f.read()))
        # STARTTLS on the MX port gets the new certificate too.
        mx = self.connect("smtp")
        mx.line()
        mx.send("STARTTLS\r\n")
        self.assertEqual(mx.line(), "220 2.0.0 Ready to start TLS")
        self.assertEqual(mx.starttls().getpeercert(binary_form=True), new_der)
        # The sessions opened before the reload keep working on their old context.
        old.send("NOOP\r\n")
        self.assertEqual(old.line(), "250 2.0.0 Ok")
        old_pop.send("CAPA\r\n")
        self.assertEqual(old_pop.line(), "+OK Capability list follows")
        self.assertEqual(old_pop.sock.getpeercert(binary_form=True), old_der)
        # A broken certificate: the reload fails, the current context stays.
        with open(os.path.join(self.dir, "cert.pem"), "w") as f:
            f.write("not a certificate\n")
        self.server.send_signal(signal.SIGHUP)
        self.wait_log("event=reload tls=failed")
        again = self.connect("submissions", tls=True)
        self.assertEqual(again.line(), GREETING)
        self.assertEqual(again.sock.getpeercert(binary_form=True), new_der)


class Shutdown(ConnTest):
    def test_sigterm_tells_sessions_and_exits_0(self):
        self.start_server()
        s = self.connect("smtp")
        p = self.connect("pop3")
        t = self.connect("submissions", tls=True)
        for c in (s, p, t):
            c.line()
        self.server.send_signal(signal.SIGTERM)
        self.assertEqual(s.line(), f"421 4.3.2 {HOST} Service shutting down")
        self.assertEqual(p.line(), "-ERR Server shutting down")
        self.assertEqual(t.line(), f"421 4.3.2 {HOST} Service shutting down")
        # Within seconds although the clients keep their sockets open (bounded linger).
        self.assertEqual(self.server.wait(timeout=10), 0)
        log = self.read_log()
        self.assertIn("event=stopping reason=SIGTERM connections=3", log)
        self.assertIn("event=stopped", log)
        self.assertEqual(log.count("reason=shutdown"), 3)
        self.server = None

    def test_sigterm_with_a_client_that_never_reads(self):
        self.start_server()
        c = self.connect("smtp", rcvbuf=4096)
        c.line()
        # Each EHLO reply is ~11 times the command: pipeline until the server's output fills its
        # socket buffer (4 MiB at most with Linux autotuning) and it stops reading us.
        data = b"EHLO a\r\n" * (256 * 1024)
        c.sock.setblocking(False)
        sent, stalled_since = 0, None
        deadline = time.monotonic() + 10
        while sent < len(data) and time.monotonic() < deadline:
            try:
                sent += c.sock.send(data[sent:sent + 65536])
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 0.5:
                    break
                time.sleep(0.01)
        self.assertGreater(sent, 600 * 1024)
        time.sleep(2)  # the server answers until its output is stuck
        self.server.send_signal(signal.SIGTERM)
        # The flush is bounded (conn.c CONN_CLOSE_FLUSH_MS): cut off, not waited for.
        self.assertEqual(self.server.wait(timeout=10), 0)
        self.wait_log("event=flush-timeout")
        self.server = None

    def test_sigint_without_connections(self):
        self.start_server()
        self.server.send_signal(signal.SIGINT)
        self.assertEqual(self.server.wait(timeout=10), 0)
        self.server = None


class AcceptErrors(ConnTest):
    # One loop: with several, each loop has its own sockets and the kernel's split decides which
    # waiting client a loop serves when descriptors come back, so "the first ten are served" is
    # a promise only one loop makes. Every loop pauses the same way.
    extra_config = TLS_CONFIG + "[server]\nmax_connections_per_ip = 1000\nworkers = 1\n"

    def cpu_ticks(self):
        with open(f"/proc/{self.server.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    def test_out_of_descriptors_pauses_accepting_without_spinning(self):
        def few_descriptors():
            resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

        log = open(os.path.join(self.dir, "serve.log"), "w+")
        self.addCleanup(log.close)
        self.server = subprocess.Popen([BIN, "-c", self.conf, "serve"], stdout=log,
                                       stderr=subprocess.STDOUT, cwd=self.dir,
                                       preexec_fn=few_descriptors)
        self.addCleanup(self.stop_server)
        self.wait_log("event=ready")
        self.assertIn("only 48 file descriptors", self.read_log())
        clients = [Client(self.ports["smtp"], timeout=2) for _ in range(48)]
        for c in clients:
            self.addCleanup(c.close)
        self.wait_log("event=accept-paused error=\"Too many open files\"")
        # Paused, not spinning: far less than a second of CPU over a second and a half.
        ticks = self.cpu_ticks()
        time.sleep(1.5)
        self.assertLess(self.cpu_ticks() - ticks, os.sysconf("SC_CLK_TCK") // 2)
        self.assertIsNone(self.server.poll())
        for c in clients[:10]:
            self.assertEqual(c.line(), GREETING)  # the first ones were served
        for c in clients:
            c.close()
        # Descriptors come back; the clients still waiting were dropped by us, new ones work.
        deadline = time.monotonic() + 10
        while True:
            try:
                c = Client(self.ports["smtp"], timeout=2)
                self.addCleanup(c.close)
                self.assertEqual(c.line(), GREETING)
                break
            except (socket.timeout, EOFError, ConnectionResetError):
                self.assertLess(time.monotonic(), deadline)


class Startup(PosternTest):
    def start_expect_failure(self, timeout=20):
        proc = subprocess.run([BIN, "-c", self.conf, "serve"], capture_output=True, text=True,
                              timeout=timeout, cwd=self.dir)
        return proc

    def test_bind_failure_exits_3_naming_the_address(self):
        port = self.ports["smtp"]
        blocker = socket.socket()
        self.addCleanup(blocker.close)
        blocker.bind(("127.0.0.1", port))
        blocker.listen(1)
        proc = self.start_expect_failure()
        self.assertEqual(proc.returncode, 3, proc)
        self.assertIn(f"postern: cannot listen on 127.0.0.1:{port} (smtp): address already in use\n",
                      proc.stderr)

    def test_bad_certificate_exits_3(self):
        with open(os.path.join(self.dir, "cert.pem"), "w") as f:
            f.write("garbage\n")
        with open(os.path.join(self.dir, "key.pem"), "w") as f:
            f.write("garbage\n")
        self.write_config(TLS_CONFIG)
        proc = self.start_expect_failure()
        self.assertEqual(proc.returncode, 3, proc)
        self.assertIn("postern: tls: certificate", proc.stderr)

    def test_no_tls_configured(self):
        self.start_server()
        log = self.read_log()
        self.assertEqual(log.count("STARTTLS and STLS are off"), 1)
        for service in ("submissions", "pop3s"):
            with self.assertRaises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", self.ports[service]), timeout=5).close()
        c = Client(self.ports["smtp"])
        self.addCleanup(c.close)
        c.line()
        c.send("EHLO a\r\n")
        self.assertEqual(c.reply(), [f"250-{HOST}", "250-PIPELINING", "250-SIZE 26214400",
                                     "250-8BITMIME", "250-ENHANCEDSTATUSCODES",
                                     "250-CHUNKING", "250-SMTPUTF8", "250 DSN"])
        c.send("STARTTLS\r\n")
        self.assertEqual(c.line(), "502 5.5.1 Command not implemented")
        p = Client(self.ports["pop3"])
        self.addCleanup(p.close)
        p.line()
        p.send("CAPA\r\nSTLS\r\n")
        self.assertEqual([p.line() for _ in range(9)],
                         ["+OK Capability list follows", "TOP", "UIDL", "RESP-CODES",
                          "AUTH-RESP-CODE", "PIPELINING", "UTF8 USER", "IMPLEMENTATION postern",
                          "."])
        self.assertEqual(p.line(), "-ERR Command not implemented")

    def test_wildcard_listens_on_ipv4_and_ipv6(self):
        try:
            probe = socket.socket(socket.AF_INET6)
            probe.bind(("::1", 0))
            probe.close()
        except OSError:
            self.skipTest("no IPv6 loopback")
        port = free_port()
        v6port = free_port("::1")
        self.write_config(f"[smtp]\nlisten = *:{port}\nsubmission = [::1]:{v6port}\n"
                          "submissions =\n[pop3]\nlisten =\npop3s =\n")
        self.start_server()
        for host in ("127.0.0.1", "::1"):
            c = Client(port, host=host)
            self.addCleanup(c.close)
            self.assertEqual(c.line(), GREETING, host)
        log = self.wait_log("event=connected ip=127.0.0.1")
        self.assertIn("event=connected ip=::1", log)
        # An explicit IPv6 address is that address only.
        c = Client(v6port, host="::1")
        self.addCleanup(c.close)
        self.assertEqual(c.line(), GREETING)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", v6port), timeout=5).close()

    def test_transcript(self):
        self.write_config("[server]\ntranscript = yes\n")
        self.start_server()
        c = Client(self.ports["smtp"])
        self.addCleanup(c.close)
        c.line()
        c.send("NOOP\r\nQUIT\r\n")
        c.line()
        c.line()
        log = self.wait_log("event=disconnected")
        self.assertIn(f'event=send line="220 {HOST} ESMTP postern"', log)
        self.assertIn("event=recv line=NOOP", log)
        self.assertIn('event=send line="250 2.0.0 Ok"', log)
        self.assertIn("event=recv line=QUIT", log)
        self.assertIn('event=send line="221 2.0.0 Bye"', log)


class PrivilegeDrop(PosternTest):
    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest("needs root")

    def test_unknown_user_exits_2(self):
        self.write_config("[server]\nuser = no-such-user-postern\n")
        proc = subprocess.run([BIN, "-c", self.conf, "serve"], capture_output=True, text=True,
                              timeout=20, cwd=self.dir)
        self.assertEqual(proc.returncode, 2, proc)
        self.assertIn('postern: no such user "no-such-user-postern"', proc.stderr)

    def test_drop_to_nobody(self):
        self.write_config("[server]\nuser = nobody\n")
        self.start_server()
        self.wait_log("event=privileges-dropped user=nobody")
        import pwd
        nobody = pwd.getpwnam("nobody")
        with open(f"/proc/{self.server.pid}/status") as f:
            status = f.read()
        uid_line = [l for l in status.splitlines() if l.startswith("Uid:")][0]
        self.assertEqual(set(uid_line.split()[1:]), {str(nobody.pw_uid)})
        # The database files belong to the user now, so it can still write them.
        self.assertEqual(os.stat(self.db).st_uid, nobody.pw_uid)
        self.assertEqual(os.stat(self.db + "-wal").st_uid, nobody.pw_uid)
        c = Client(self.ports["smtp"])
        self.addCleanup(c.close)
        self.assertEqual(c.line(), GREETING)
        self.assertEqual(self.stop_server(), 0)
