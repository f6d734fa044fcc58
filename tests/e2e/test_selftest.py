"""`postern selftest` against the real server and against a fake: a demo-like setup passes every
check, an open relay fails the relay checks, plaintext AUTH fails the auth-before-TLS checks, and
a server that runs commands pipelined after STARTTLS fails the injection check. Only 127.0.0.1
is used; the probes' remote recipients are in .invalid and no probe sends DATA to them.
"""
import os
import re
import socket
import ssl
import threading

from harness import BIN, PosternTest, free_port
from test_conn import TLS_CONFIG, make_cert

HOST = "mail.example.test"
USER = "alice@example.test"
PASSWORD = "selftest-pw-1"
# A short window and cap, so the window checks can wait for the close and reach the cap.
DEMO_CONFIG = TLS_CONFIG + "[relay]\nwindow = 2s\nwindow_max_recipients = 3\n"
LINE = re.compile(r"^(PASS|WARN|FAIL)  (\S+)\s+(.*)$")


def parse(out):
    """{check: (verdict, evidence)} and the summary line of a selftest run."""
    checks, summary = {}, None
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            checks[m.group(2)] = (m.group(1), m.group(3))
        elif line.startswith("summary:"):
            summary = line
    return checks, summary


class SelftestCase(PosternTest):
    extra_config = DEMO_CONFIG

    def setUp(self):
        super().setUp()
        make_cert(self.dir, HOST)
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", USER, input=PASSWORD + "\n")
        self.pwfile = os.path.join(self.dir, "pw")
        with open(self.pwfile, "w") as f:
            f.write(PASSWORD + "\n")

    def selftest(self, *args):
        r = self.cli("selftest", *args, timeout=240)
        checks, summary = parse(r.out)
        self.assertIsNotNone(summary, r)
        return r, checks

    def assert_verdict(self, checks, name, verdict):
        self.assertIn(name, checks)
        self.assertEqual(checks[name][0], verdict, f"{name}: {checks[name]}")


class TestDemo(SelftestCase):
    def test_everything_passes(self):
        self.start_server()
        r, checks = self.selftest("--user", USER, "--password-file", self.pwfile)
        self.assertEqual(r.code, 0, r)
        not_pass = {k: v for k, v in checks.items() if v[0] != "PASS"}
        self.assertEqual(not_pass, {}, r.out)
        for name in ["relay:nmap-01", "relay:nmap-16", "relay:percent-hack",
                     "relay:local-domain-suffix", "auth-before-tls:smtp", "auth-before-tls:pop3",
                     "starttls-injection:smtp", "starttls-injection:pop3",
                     "tls-old-version:submissions", "tls-no-forward-secrecy:pop3s",
                     "enum-vrfy:smtp", "enum-pop3", "window-opens", "window-cap",
                     "smuggling:lf.lf", "smuggling:crlf.cr", "window-closes"]:
            self.assertIn(name, checks, r.out)
        self.assertIn("RCPT 4 (cap 3)", checks["window-cap"][1])
        self.assertRegex(r.out, r"summary: \d+ PASS, 0 WARN, 0 FAIL")
        # The probe's messages went to the user's own mailbox and were deleted again; nothing
        # was queued for elsewhere.
        self.assertEqual(self.ok("queue", "list").out, "")

    def test_a_long_window_is_not_waited_for(self):
        self.write_config(TLS_CONFIG + "[relay]\nwindow = 30m\nwindow_max_recipients = 2\n")
        self.start_server()
        r, checks = self.selftest("--user", USER, "--password-file", self.pwfile,
                                  "--max-wait", "1s")
        self.assertEqual(r.code, 0, r)
        self.assert_verdict(checks, "window-closes", "WARN")
        self.assertIn("not waited", checks["window-closes"][1])

    def test_without_a_user_the_user_checks_are_left_out(self):
        self.start_server()
        r, checks = self.selftest()
        self.assertEqual(r.code, 0, r)
        self.assertNotIn("window-opens", checks)
        self.assert_verdict(checks, "enum-pop3", "PASS")


class TestOpenRelay(SelftestCase):
    def test_relay_checks_fail(self):
        self.ok("network", "add", "0.0.0.0/0")
        self.start_server()
        # Without --user the local domain would be the greeting's name, which is not local here.
        r, checks = self.selftest("--domain", "example.test")
        self.assertEqual(r.code, 1, r)
        for name in ["relay:nmap-01", "relay:nmap-02", "relay:nmap-04", "relay:ip-literal",
                     "relay:trailing-dot", "relay:local-domain-suffix"]:
            self.assert_verdict(checks, name, "FAIL")
        self.assertIn("250", checks["relay:nmap-01"][1])
        # The address tricks stay local parts of the local domain even for a trusted network.
        for name in ["relay:percent-hack", "relay:bang-path", "relay:quoted-at"]:
            self.assert_verdict(checks, name, "PASS")
        self.assertRegex(r.out, r"summary: \d+ PASS, \d+ WARN, [1-9]\d* FAIL")
        # Accepted recipients were withdrawn with RSET: nothing reached the queue.
        self.assertEqual(self.ok("queue", "list").out, "")


class TestPlaintextAuth(SelftestCase):
    extra_config = DEMO_CONFIG + "[smtp]\nplaintext_auth = yes\n[pop3]\nplaintext_auth = yes\n"

    def test_auth_before_tls_fails(self):
        self.start_server()
        r, checks = self.selftest()
        self.assertEqual(r.code, 1, r)
        self.assert_verdict(checks, "auth-before-tls:smtp", "FAIL")
        self.assert_verdict(checks, "auth-before-tls:submission", "FAIL")
        self.assert_verdict(checks, "auth-before-tls:pop3", "FAIL")
        self.assertIn("AUTH", checks["auth-before-tls:smtp"][1])
        self.assert_verdict(checks, "relay:nmap-01", "PASS")


class TestUsage(PosternTest):
    def test_bad_usage_exits_2(self):
        r = self.cli("selftest", "--bogus", "1")
        self.assertEqual(r.code, 2, r)
        self.assertIn("unknown option --bogus", r.err)
        r = self.cli("selftest", "--smtp", "0")
        self.assertEqual(r.code, 2, r)
        r = self.cli("selftest", "--smtp", "25", "--smtp", "26")
        self.assertEqual(r.code, 2, r)
        self.assertIn("given twice", r.err)
        r = self.cli("selftest", "--user", USER)
        self.assertEqual(r.code, 2, r)
        self.assertIn("--password-file", r.err)

    def test_nothing_listening_exits_3(self):
        r = self.cli("selftest", "--host", "127.0.0.1", "--smtp", str(free_port()))
        self.assertEqual(r.code, 3, r)
        self.assertIn("no listener could be reached", r.out)


class InjectableServer:
    """A fake SMTP server with the CVE-2011-0411 bug: what arrived before the TLS handshake stays
    in its buffer and runs as commands inside TLS. It refuses every relay recipient."""

    def __init__(self, directory):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(os.path.join(directory, "cert.pem"),
                                 os.path.join(directory, "key.pem"))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def close(self):
        self.sock.close()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.session, args=(conn,), daemon=True).start()

    def session(self, conn):
        conn.settimeout(20)
        buf = b""
        tls = False
        try:
            conn.sendall(b"220 fake.test ESMTP\r\n")
            while True:
                while b"\n" not in buf:
                    data = conn.recv(4096)
                    if not data:
                        return
                    buf += data
                line, _, buf = buf.partition(b"\n")
                verb = line.strip().split(b" ")[0].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-fake.test\r\n" +
                                 (b"250 8BITMIME\r\n" if tls else b"250 STARTTLS\r\n"))
                elif verb == b"STARTTLS":
                    conn.sendall(b"220 go ahead\r\n")
                    # The bug: buf keeps what the client pipelined after STARTTLS.
                    conn = self.ctx.wrap_socket(conn, server_side=True)
                    tls = True
                elif verb == b"RCPT":
                    conn.sendall(b"550 5.7.1 relaying denied\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                elif verb in (b"MAIL", b"RSET", b"NOOP"):
                    conn.sendall(b"250 ok\r\n")
                else:
                    conn.sendall(b"502 no\r\n")
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()


class TestInjection(PosternTest):
    def test_pipelined_command_after_starttls_fails(self):
        make_cert(self.dir, "fake.test")
        fake = InjectableServer(self.dir)
        self.addCleanup(fake.close)
        r = self.cli("selftest", "--host", "127.0.0.1", "--smtp", str(fake.port), timeout=240)
        checks, _ = parse(r.out)
        self.assertEqual(r.code, 1, r)
        self.assertEqual(checks["starttls-injection:smtp"][0], "FAIL", r.out)
        self.assertIn("250 ok", checks["starttls-injection:smtp"][1])
        # Nothing else about this server is wrong.
        fails = [k for k, v in checks.items() if v[0] == "FAIL"]
        self.assertEqual(fails, ["starttls-injection:smtp"], r.out)


if __name__ == "__main__":
    import unittest
    unittest.main()
