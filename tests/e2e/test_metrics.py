"""[server] metrics (README.md "Metrics"): the Prometheus endpoint of a running server, read
with Debian's python3-prometheus-client text parser (the system Python: CMakeLists.txt runs this
file with /usr/bin/python3). Checks that the exposition parses, that counters move with real
traffic (an SMTP delivery, a refused relay, a POP3 login, a failed AUTH), the histogram
invariants (cumulative buckets, +Inf equal to _count), and that a bad request gets a 4xx without
disturbing the server."""
import base64
import socket
import time
import unittest

from harness import PosternTest, free_port

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # scripts/bootstrap installs python3-prometheus-client
    text_string_to_metric_families = None

TIMEOUT = 10


def http(port, request):
    """Sends request (bytes) and returns the whole response (the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(request)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks)


class Line:
    """A line-at-a-time client for SMTP and POP3."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.f = self.s.makefile("rb")

    def read(self):
        return self.f.readline().decode().rstrip("\r\n")

    def reply(self):
        """An SMTP reply: its last line."""
        while True:
            line = self.read()
            if len(line) < 4 or line[3] != "-":
                return line

    def cmd(self, text):
        self.s.sendall(text.encode() + b"\r\n")

    def close(self):
        self.f.close()
        self.s.close()


@unittest.skipIf(text_string_to_metric_families is None, "python3-prometheus-client missing")
class MetricsTest(PosternTest):
    def setUp(self):
        super().setUp()
        self.mport = free_port()
        self.write_config(f"[server]\nmetrics = 127.0.0.1:{self.mport}\n"
                          "[smtp]\nplaintext_auth = yes\n[pop3]\nplaintext_auth = yes\n")
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", "alice@example.test", input="secret\n")
        self.start_server()

    def scrape(self):
        raw = http(self.mport, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        self.assertEqual(lines[0], "HTTP/1.1 200 OK", raw[:200])
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        self.assertEqual(headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        self.assertEqual(int(headers["content-length"]), len(body))
        self.assertEqual(headers["connection"], "close")
        return list(text_string_to_metric_families(body.decode()))

    @staticmethod
    def value(families, sample_name, **labels):
        for fam in families:
            for s in fam.samples:
                if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        raise AssertionError(f"no sample {sample_name} {labels}")

    def total(self, families, sample_name):
        return sum(s.value for fam in families for s in fam.samples if s.name == sample_name)

    # ---- traffic ----
    def smtp_delivery(self):
        c = Line(self.ports["smtp"])
        self.assertTrue(c.reply().startswith("220"))
        for cmd, want in (("EHLO client.test", "250"), ("MAIL FROM:<bob@remote.test>", "250"),
                          ("RCPT TO:<alice@example.test>", "250"), ("DATA", "354")):
            c.cmd(cmd)
            self.assertTrue(c.reply().startswith(want), cmd)
        c.cmd("Subject: hi\r\n\r\nhello\r\n.")
        self.assertTrue(c.reply().startswith("250 "))
        # A relay attempt from a client with no window and no AUTH: refused.
        c.cmd("MAIL FROM:<bob@remote.test>")
        self.assertTrue(c.reply().startswith("250"))
        c.cmd("RCPT TO:<carol@elsewhere.test>")
        self.assertTrue(c.reply().startswith("550 5.7.1"))
        c.cmd("QUIT")
        c.reply()
        c.close()

    def pop3_login(self):
        c = Line(self.ports["pop3"])
        self.assertTrue(c.read().startswith("+OK"))
        c.cmd("USER alice@example.test")
        self.assertTrue(c.read().startswith("+OK"))
        c.cmd("PASS secret")
        self.assertTrue(c.read().startswith("+OK"))
        c.cmd("QUIT")
        c.read()
        c.close()

    def failed_auth(self):
        c = Line(self.ports["submission"])
        self.assertTrue(c.reply().startswith("220"))
        c.cmd("EHLO client.test")
        c.reply()
        token = base64.b64encode(b"\0alice@example.test\0wrong").decode()
        c.cmd("AUTH PLAIN " + token)
        self.assertTrue(c.reply().startswith("535"))
        c.cmd("QUIT")
        c.reply()
        c.close()

    def test_counters_move_with_traffic(self):
        before = self.scrape()
        self.smtp_delivery()
        self.pop3_login()
        self.failed_auth()
        after = self.scrape()

        def delta(name, **labels):
            return self.value(after, name, **labels) - self.value(before, name, **labels)

        self.assertEqual(delta("postern_smtp_messages_accepted_total"), 1)
        self.assertEqual(delta("postern_smtp_refusals_total", reason="relay-denied"), 1)
        self.assertEqual(delta("postern_relay_decisions_total", decision="allow",
                               reason="local-mailbox"), 1)
        self.assertEqual(delta("postern_relay_decisions_total", decision="deny",
                               reason="not-authorized"), 1)
        self.assertEqual(delta("postern_connections_accepted_total", service="smtp", tls="no"), 1)
        self.assertEqual(delta("postern_connections_accepted_total", service="pop3", tls="no"), 1)
        self.assertEqual(delta("postern_connections_accepted_total", service="submission",
                               tls="no"), 1)
        self.assertEqual(delta("postern_auth_successes_total", protocol="pop3", mechanism="user"), 1)
        self.assertEqual(delta("postern_auth_failures_total", protocol="smtp", mechanism="plain"), 1)
        self.assertGreater(delta("postern_received_bytes_total", service="smtp"), 0)
        self.assertGreater(delta("postern_sent_bytes_total", service="pop3"), 0)
        # The POP3 login opened a relay window ([relay] window defaults to 30m).
        self.assertEqual(self.value(after, "postern_relay_windows_open"), 1)
        self.assertEqual(self.value(after, "postern_queue_depth"), 0)
        # The delivery went through the writer: at least one more batch.
        self.assertGreater(delta("postern_writer_batch_jobs_count"), 0)
        self.assertGreater(delta("postern_writer_commit_seconds_count"), 0)

    def test_histograms_are_consistent(self):
        self.smtp_delivery()
        families = self.scrape()
        hist = [f for f in families if f.type == "histogram"]
        self.assertEqual({f.name for f in hist},
                         {"postern_writer_batch_jobs", "postern_writer_commit_seconds"})
        for fam in hist:
            buckets = [(float(s.labels["le"]), s.value) for s in fam.samples
                       if s.name == fam.name + "_bucket"]
            self.assertEqual(buckets[-1][0], float("inf"), fam.name)
            bounds = [b for b, _ in buckets]
            self.assertEqual(bounds, sorted(bounds), fam.name)
            counts = [v for _, v in buckets]
            self.assertEqual(counts, sorted(counts), f"{fam.name}: buckets not cumulative")
            count = self.value(families, fam.name + "_count")
            self.assertEqual(counts[-1], count, fam.name)
            self.assertGreater(count, 0, fam.name)
            self.assertGreaterEqual(self.value(families, fam.name + "_sum"), 0)

    def test_bad_requests_get_4xx(self):
        def status(req):
            return http(self.mport, req).split(b"\r\n", 1)[0].decode()

        self.assertEqual(status(b"GET /nope HTTP/1.1\r\n\r\n"), "HTTP/1.1 404 Not Found")
        self.assertEqual(status(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
                         "HTTP/1.1 405 Method Not Allowed")
        self.assertEqual(status(b"hello there\r\n\r\n"), "HTTP/1.1 400 Bad Request")
        self.assertEqual(status(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"),
                         "HTTP/1.1 431 Request Header Fields Too Large")
        # A client that connects and says nothing does not hold up a scrape.
        idle = socket.create_connection(("127.0.0.1", self.mport), timeout=TIMEOUT)
        self.addCleanup(idle.close)
        half = socket.create_connection(("127.0.0.1", self.mport), timeout=TIMEOUT)
        self.addCleanup(half.close)
        half.sendall(b"GET /metr")
        families = self.scrape()
        self.assertGreaterEqual(self.total(families, "postern_connections_accepted_total"), 0)
        # The mail side is untouched.
        self.smtp_delivery()
        self.assertIsNone(self.server.poll())
        self.assertEqual(self.value(self.scrape(), "postern_smtp_messages_accepted_total"), 1)

    def test_stops_cleanly_with_a_client_open(self):
        idle = socket.create_connection(("127.0.0.1", self.mport), timeout=TIMEOUT)
        self.addCleanup(idle.close)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and "service=metrics" not in self.read_log():
            time.sleep(0.05)
        self.assertEqual(self.stop_server(), 0)


class MetricsOffTest(PosternTest):
    def test_off_by_default(self):
        self.start_server()
        self.assertNotIn("service=metrics", self.read_log())


if __name__ == "__main__":
    unittest.main()
