"""Outbound delivery against the real binary: the queue runner and the SMTP client,
with an SMTP sink on loopback playing the smarthost or the MX host, and a DNS responder on
loopback answering for the test domains (outbound_fakes.py).

Messages are put into the queue with sqlite3 directly (as the SMTP session would store them,
storage/sqlite/schema.c), so these tests do not depend on the SMTP session; one guarded test relays
through the SMTP port from a trusted network.
"""
import base64
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time

from harness import BIN, PosternTest, free_port, wait_for
from outbound_fakes import DnsResponder, SmtpSink

SENDER = "alice@sender.test"
# Dot-stuffing, an 8-bit octet, a long line, and a leading Return-Path that must not be relayed.
BODY = (b"Return-Path: <alice@sender.test>\r\n"
        b"From: Alice <alice@sender.test>\r\nTo: bob@dest.test\r\nSubject: hello\r\n"
        b"Message-ID: <m1@sender.test>\r\n\r\n"
        b"line one\r\n.starts with a dot\r\n..two dots\r\n.\r\ncaf\xc3\xa9\r\n" + b"x" * 900 +
        b"\r\nlast line\r\n")
SENT = BODY[BODY.index(b"\r\n") + 2:]



class OutboundTest(PosternTest):
    def setUp(self):
        super().setUp()
        self.sink = SmtpSink()
        self.addCleanup(self.sink.close)
        self.dns = DnsResponder()
        self.addCleanup(self.dns.close)
        # Runs after the server stopped (cleanups are last in, first out).
        self.addCleanup(self.check_sanitizers)
        self.dns.records = {
            "dest.test": {"MX": [(10, "mx1.dest.test")]},
            "mx1.dest.test": {"A": ["127.0.0.1"]},
            "sender.test": {"MX": [(10, "mx.sender.test")]},
            "mx.sender.test": {"A": ["127.0.0.1"]},
        }

    def check_sanitizers(self):
        path = os.path.join(self.dir, "serve.log")
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                text = f.read()
            for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
                self.assertNotIn(bad, text)

    def mx_config(self, extra=""):
        self.write_config(f"[relay]\ndns_server = 127.0.0.1:{self.dns.port}\n"
                          f"outbound_port = {self.sink.port}\n" + extra)

    def smarthost_config(self, extra=""):
        self.write_config(f"[relay]\nsmarthost = 127.0.0.1:{self.sink.port}\n"
                          f"dns_server = 127.0.0.1:{self.dns.port}\n" + extra)

    def enqueue(self, recipients, sender=SENDER, body=BODY, size=None, facts=None):
        """Stores one message queued for recipients, as the SMTP session would. Returns ids.
        size defaults to len(body); give it for a body that is not bytes. facts, when given, is
        (eightbit, return_path_bytes) as storage/mailbox.c records them; without it the message
        looks like one stored by a version that did not record them."""
        if not os.path.exists(self.db):
            self.ok("domain", "list")  # creates and migrates the database
        now = int(time.time() * 1000)
        con = sqlite3.connect(self.db, timeout=10)
        try:
            cur = con.execute(
                "INSERT INTO messages (sender, size, received_ms, body) VALUES (?, ?, ?, ?)",
                (sender, len(body) if size is None else size, now, body))
            mid = cur.lastrowid
            if facts is not None:
                con.execute("INSERT INTO message_facts (message_id, eightbit, return_path_bytes)"
                            " VALUES (?, ?, ?)", (mid,) + tuple(facts))
            ids = []
            for r in recipients:
                cur = con.execute(
                    "INSERT INTO queue (message_id, sender, recipient, domain, created_ms, "
                    "next_attempt_ms) VALUES (?, ?, ?, ?, ?, ?)",
                    (mid, sender, r, r.split("@")[1], now, now))
                ids.append(cur.lastrowid)
            con.commit()
        finally:
            con.close()
        return ids

    def queue_rows(self):
        con = sqlite3.connect(self.db, timeout=10)
        try:
            return con.execute("SELECT id, recipient, attempts, last_error, claimed_ms "
                               "FROM queue ORDER BY id").fetchall()
        finally:
            con.close()

    def wait_queue_empty(self, timeout=20.0):
        wait_for(lambda: not self.queue_rows(), timeout, "an empty queue")

    def delivery_lines(self):
        return [l for l in self.read_log().splitlines() if "event=delivery" in l]


class TestSmarthost(OutboundTest):
    def test_delivery_bytes_and_parameters(self):
        self.smarthost_config()
        self.enqueue(["bob@dest.test", "carol@dest.test"])
        self.enqueue(["dave@other.test"], body=b"Subject: two\r\n\r\nsecond\r\n")
        self.start_server()
        wait_for(lambda: len(self.sink.messages) == 2, what="two messages at the sink")
        self.wait_queue_empty()
        by_rcpt = {tuple(m["rcpts"]): m for m in self.sink.messages}
        m = by_rcpt[("bob@dest.test", "carol@dest.test")]
        self.assertEqual(m["mail_from"], SENDER)
        self.assertEqual(m["data"], SENT)  # relayed bytes == accepted bytes, no Return-Path
        self.assertIn(f"SIZE={len(SENT)}", m["mail_params"])
        self.assertIn("BODY=8BITMIME", m["mail_params"])
        m2 = by_rcpt[("dave@other.test",)]
        self.assertEqual(m2["data"], b"Subject: two\r\n\r\nsecond\r\n")
        self.assertNotIn("BODY=8BITMIME", m2["mail_params"])  # 7-bit body
        self.wait_log("status=sent")
        lines = self.delivery_lines()
        self.assertEqual(len(lines), 3, lines)
        for l in lines:
            self.assertIn(f"relay=127.0.0.1[127.0.0.1]:{self.sink.port}", l)
            self.assertIn("status=sent dsn=2.0.0", l)
        # Pipelined: MAIL, both RCPTs and DATA before any reply is needed (one group).
        self.assertIn("PIPELINING", self.sink.extensions)

    def test_transcript_sums_the_body_up(self):
        # The outbound client's DATA is counted, never logged: one send-body line.
        self.smarthost_config("[server]\ntranscript = yes\n")
        body = b"Subject: t\r\n\r\nMARKER-0b77e2 in the body\r\n.dotted\r\n"
        self.enqueue(["bob@dest.test"], body=body)
        self.start_server()
        wait_for(lambda: self.sink.messages, what="the message at the sink")
        self.wait_log("status=sent")
        log = self.read_log()
        self.assertNotIn("MARKER-0b77e2", log)
        # Sent: the body with its dotted line stuffed, then ".".
        self.assertIn(f"event=send-body octets={len(body) + 1 + 3} lines=5\n", log)
        self.assertIn('event=send line=DATA', log)

    def test_facts_recorded_at_acceptance_are_used(self):
        """SIZE=, BODY=8BITMIME and the Return-Path to drop come from the facts recorded when
        the message was stored, not from reading the body before MAIL: facts that say "8-bit"
        for a 7-bit body are believed (a scan would say otherwise)."""
        self.smarthost_config()
        body = b"Return-Path: <a@b>\r\nSubject: facts\r\n\r\nplain\r\n"
        rp = len(b"Return-Path: <a@b>\r\n")
        self.enqueue(["bob@dest.test"], body=body, facts=(1, rp))
        self.start_server()
        wait_for(lambda: len(self.sink.messages) == 1, what="the message at the sink")
        m = self.sink.messages[0]
        self.assertIn("BODY=8BITMIME", m["mail_params"])
        self.assertIn(f"SIZE={len(body) - rp}", m["mail_params"])
        self.assertEqual(m["data"], body[rp:])

    def test_helo_fallback_without_pipelining_or_8bitmime(self):
        self.smarthost_config()
        self.sink.ehlo_reply = "502 5.5.2 EHLO not here"
        self.enqueue(["bob@dest.test", "carol@dest.test"])
        self.start_server()
        wait_for(lambda: self.sink.messages, what="the message")
        m = self.sink.messages[0]
        self.assertEqual(m["data"], SENT)  # 8-bit sent anyway, as Postfix does
        self.assertEqual(m["mail_params"], "")
        self.assertIn("HELO mail.example.test", self.sink.commands)

    def test_size_limit_bounces(self):
        self.smarthost_config()
        self.sink.extensions = ["SIZE 10000"]  # the bounce (headers only) fits, the message not
        self.enqueue(["bob@dest.test"], body=b"Subject: big\r\n\r\n" + b"y" * 998 * 20 + b"\r\n")
        self.start_server()
        self.wait_log("status=bounced dsn=5.3.4")
        self.assertFalse(any(c.startswith("RCPT TO:<bob") for c in self.sink.commands))
        # The bounce goes to the sender's server (the smarthost here), from <>.
        wait_for(lambda: any(m["mail_from"] == "" for m in self.sink.messages), what="bounce")

    def test_starttls_opportunistic(self):
        from test_conn import make_cert
        import ssl
        make_cert(self.dir, "sink.test")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(self.dir, "cert.pem"), os.path.join(self.dir, "key.pem"))
        self.sink.tls_context = ctx
        self.smarthost_config()
        self.enqueue(["bob@dest.test"])
        self.start_server()
        wait_for(lambda: self.sink.messages, what="the message")
        m = self.sink.messages[0]
        self.assertTrue(m["tls"])
        self.assertEqual(m["data"], SENT)
        # EHLO again after TLS (RFC 3207 4.2).
        self.assertEqual(sum(1 for c in self.sink.commands if c.startswith("EHLO")), 2)

    def test_failed_tls_handshake_falls_back_to_plaintext(self):
        import ssl
        from test_conn import make_cert
        make_cert(self.dir, "sink.test")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(self.dir, "cert.pem"), os.path.join(self.dir, "key.pem"))
        ctx.verify_mode = ssl.CERT_REQUIRED  # we send no client certificate: the handshake fails
        self.sink.tls_context = ctx
        self.smarthost_config()
        self.enqueue(["bob@dest.test"])
        self.start_server()
        wait_for(lambda: self.sink.messages, what="the message")
        m = self.sink.messages[0]
        self.assertFalse(m["tls"])  # RFC 7435: retried in the clear
        self.assertEqual(m["data"], SENT)
        self.assertIn("event=tls-fallback", self.read_log())
        self.assertEqual(self.sink.sessions, 2)

    def test_4xx_then_success(self):
        self.smarthost_config()
        self.sink.rcpt_replies = {"bob@dest.test": ["451 4.3.0 try later", "250 2.1.5 Ok"]}
        ids = self.enqueue(["bob@dest.test", "carol@dest.test"])
        self.start_server()
        self.wait_log("status=deferred")
        wait_for(lambda: len(self.sink.messages) == 1, what="carol's copy")
        self.assertEqual(self.sink.messages[0]["rcpts"], ["carol@dest.test"])
        rows = wait_for(lambda: [r for r in self.queue_rows() if r[4] is None], what="unclaimed")
        self.assertEqual([r[0] for r in rows], [ids[0]])
        self.assertEqual(rows[0][2], 1)  # one attempt counted
        self.assertIn("451 4.3.0 try later", rows[0][3])
        listing = self.ok("queue", "list").out
        self.assertIn("attempts=1", listing)
        self.ok("queue", "flush")  # the running server picks it up within its rescan
        wait_for(lambda: len(self.sink.messages) == 2, timeout=20, what="the retry")
        self.assertEqual(self.sink.messages[1]["rcpts"], ["bob@dest.test"])
        self.assertEqual(self.sink.messages[1]["data"], SENT)
        self.wait_queue_empty()

    def test_5xx_bounce_to_sender_and_null_sender_never_bounced(self):
        self.smarthost_config()
        self.sink.rcpt_replies = {"bob@dest.test": ["550 5.1.1 no such user bob"]}
        self.enqueue(["bob@dest.test", "carol@dest.test"])
        self.start_server()
        # carol got it; bob bounced; the bounce goes out to alice from <>.
        bounce = wait_for(lambda: [m for m in self.sink.messages if m["mail_from"] == ""],
                          what="the bounce")[0]
        self.assertEqual(bounce["rcpts"], [SENDER])
        text = bounce["data"].decode("latin-1")
        self.assertIn("multipart/report", text)
        self.assertIn("report-type=delivery-status", text)
        self.assertIn("Final-Recipient: rfc822; bob@dest.test", text)
        self.assertIn("Status: 5.1.1", text)
        self.assertIn("550 5.1.1 no such user bob", text)
        self.assertTrue(any(m["rcpts"] == ["carol@dest.test"] for m in self.sink.messages))
        self.wait_queue_empty()
        self.assertTrue(any("to=bob@dest.test" in l and "status=bounced dsn=5.1.1" in l
                            for l in self.delivery_lines()))
        # A message from the null sender that fails is dropped, never bounced.
        n = len(self.sink.messages)
        self.enqueue(["bob@dest.test"], sender="")
        self.ok("queue", "flush")
        wait_for(lambda: len(self.delivery_lines()) >= 4, what="the null-sender attempt")
        self.wait_queue_empty()
        self.wait_log("route=null-sender-dropped")
        time.sleep(1.0)
        self.assertEqual(len(self.sink.messages), n)

    def test_data_4xx_and_5xx(self):
        self.smarthost_config()
        self.sink.data_replies = ["452 4.3.1 full", "554 5.6.0 rejected content"]
        self.enqueue(["bob@dest.test"])
        self.start_server()
        self.wait_log("status=deferred dsn=4.3.1")
        self.ok("queue", "flush")
        self.wait_log("status=bounced dsn=5.6.0")


class TestMx(OutboundTest):
    def test_mx_delivery(self):
        self.dns.records["dest.test"] = {"MX": [(20, "backup.dest.test"), (10, "mx1.dest.test")]}
        self.dns.records["backup.dest.test"] = {"A": ["127.0.0.2"]}
        self.mx_config()
        self.enqueue(["bob@dest.test"])
        self.start_server()
        wait_for(lambda: self.sink.messages, what="the message")
        self.assertEqual(self.sink.messages[0]["data"], SENT)
        self.wait_log("status=sent")
        self.assertIn(f"relay=mx1.dest.test[127.0.0.1]:{self.sink.port}", self.read_log())
        self.assertIn(("dest.test", "MX"), self.dns.queries)

    def test_next_mx_when_the_first_refuses(self):
        # Both MX hosts share outbound_port: the first resolves to an address where nothing
        # listens on it (127.0.0.3), the second to the sink.
        self.dns.records["dest.test"] = {"MX": [(5, "dead.dest.test"), (10, "mx1.dest.test")]}
        self.dns.records["dead.dest.test"] = {"A": ["127.0.0.3"]}
        self.mx_config()
        self.enqueue(["bob@dest.test"])
        self.start_server()
        wait_for(lambda: self.sink.messages, what="the message via the second MX")
        self.assertIn("event=host-failed", self.read_log())

    def test_next_mx_after_421_greeting(self):
        busy = SmtpSink(self.sink.port, host="127.0.0.2")  # same port, another address
        self.addCleanup(busy.close)
        busy.greeting = "421 4.3.2 too busy"
        self.dns.records["dest.test"] = {"MX": [(5, "busy.dest.test"), (10, "mx1.dest.test")]}
        self.dns.records["busy.dest.test"] = {"A": ["127.0.0.2"]}
        self.mx_config()
        self.enqueue(["bob@dest.test"])
        self.start_server()
        wait_for(lambda: self.sink.messages, what="the message via the second MX")
        self.assertEqual(busy.sessions, 1)
        self.assertEqual(busy.messages, [])
        self.wait_log(f"relay=mx1.dest.test[127.0.0.1]:{self.sink.port} status=sent")

    def test_implicit_mx(self):
        self.dns.records["dest.test"] = {"A": ["127.0.0.1"]}
        self.mx_config()
        self.enqueue(["bob@dest.test"])
        self.start_server()
        wait_for(lambda: self.sink.messages, what="the message via the A record")
        self.wait_log(f"relay=dest.test[127.0.0.1]:{self.sink.port}")

    def test_null_mx_bounces(self):
        self.dns.records["dest.test"] = {"MX": [(0, "")]}
        self.mx_config()
        self.enqueue(["bob@dest.test"])
        self.start_server()
        self.wait_log("status=bounced dsn=5.1.10")
        bounce = wait_for(lambda: [m for m in self.sink.messages if m["mail_from"] == ""],
                          what="the bounce")[0]
        self.assertEqual(bounce["rcpts"], [SENDER])
        self.assertIn(b"Status: 5.1.10", bounce["data"])
        self.assertFalse(any(m["rcpts"] == ["bob@dest.test"] for m in self.sink.messages))

    def test_nxdomain_bounces_servfail_defers(self):
        self.dns.servfail.add("dest.test")
        self.mx_config()
        self.enqueue(["bob@dest.test"])
        self.enqueue(["zed@nowhere.test"])
        self.start_server()
        self.wait_log("to=zed@nowhere.test relay=none status=bounced dsn=5.1.2")
        self.wait_log("to=bob@dest.test relay=none status=deferred dsn=4.4.3")
        # zed's bounce reaches alice's server; bob stays queued for a retry.
        wait_for(lambda: [m for m in self.sink.messages if m["mail_from"] == ""], what="bounce")
        wait_for(lambda: [r[1] for r in self.queue_rows()] == ["bob@dest.test"],
                 what="only bob left in the queue")

    def test_unreadable_body_is_a_store_failure(self):
        """A body the store cannot read is a local store failure, named as one in the log and in
        the queue's last error (what a bounce would say), never "cannot connect": no host is
        blamed, and nothing reaches the sink. An integer where the body BLOB belongs makes
        SQLite refuse to open it, the way a damaged row would."""
        self.smarthost_config()
        self.enqueue(["bob@dest.test"], body=42, size=100)
        self.start_server()
        self.wait_log("status=deferred")
        rows = wait_for(lambda: [r for r in self.queue_rows() if r[4] is None], what="unclaimed")
        self.assertEqual(rows[0][2], 1)
        err = rows[0][3]
        self.assertIn("cannot be read from the store", err)
        self.assertIn("store: database failure", err)
        self.assertNotIn("connect", err)
        self.assertNotIn("not permitted", err)
        log = self.read_log()
        self.assertIn("event=store-failed", log)
        self.assertNotIn("event=host-failed", log)
        (line,) = self.delivery_lines()
        self.assertIn("status=deferred dsn=4.3.0", line)
        self.assertIn("relay=none", line)
        self.assertEqual(self.sink.messages, [])

    def test_unreachable_then_retry(self):
        port = free_port()  # nothing listens there yet
        self.write_config(f"[relay]\ndns_server = 127.0.0.1:{self.dns.port}\n"
                          f"outbound_port = {port}\n")
        self.enqueue(["bob@dest.test"])
        self.start_server()
        self.wait_log("status=deferred dsn=4.4.1")
        rows = wait_for(lambda: [r for r in self.queue_rows() if r[4] is None], what="unclaimed")
        self.assertEqual(rows[0][2], 1)
        self.assertIn("connect-failed", rows[0][3])
        sink = SmtpSink(port)
        self.addCleanup(sink.close)
        self.ok("queue", "flush")
        wait_for(lambda: sink.messages, timeout=20, what="the retried message")
        self.assertEqual(sink.messages[0]["data"], SENT)
        self.wait_queue_empty()

    def test_expiry_bounces(self):
        self.mx_config("max_age = 1s\n")
        self.sink.rcpt_replies = {"bob@dest.test": ["451 4.7.1 greylisted"]}
        self.enqueue(["bob@dest.test"])
        time.sleep(1.1)  # older than max_age at its first attempt
        self.start_server()
        self.wait_log("to=bob@dest.test")
        self.wait_log("status=bounced dsn=5.4.7")
        bounce = wait_for(lambda: [m for m in self.sink.messages if m["mail_from"] == ""],
                          what="the bounce")[0]
        self.assertIn(b"Status: 5.4.7", bounce["data"])
        self.wait_queue_empty()

    def test_kill9_during_delivery_then_restart(self):
        self.mx_config()
        self.sink.stall_data = True
        self.enqueue(["bob@dest.test"])
        self.start_server()
        self.assertTrue(self.sink.data_seen.wait(20), "the message never reached the sink")
        self.stop_server(signal.SIGKILL)
        self.assertEqual(self.sink.messages, [])  # not acknowledged: not delivered yet
        rows = self.queue_rows()
        self.assertEqual(len(rows), 1)
        self.assertIsNotNone(rows[0][4])  # still claimed by the dead process
        self.sink.stall_data = False
        self.start_server()
        wait_for(lambda: self.sink.messages, what="the message after the restart")
        self.assertEqual(len(self.sink.messages), 1)
        self.assertEqual(self.sink.messages[0]["data"], SENT)
        self.wait_log("event=released-stale entries=1")
        self.wait_queue_empty()
        time.sleep(1.0)
        self.assertEqual(len(self.sink.messages), 1)  # once, not twice

    def test_per_domain_concurrency_limit(self):
        self.mx_config()
        # Stalled before any of the body is sent, so the stop abandons the attempts.
        self.sink.stall_data_command = True
        for i in range(6):
            self.enqueue([f"user{i}@dest.test"])
        self.start_server()
        wait_for(lambda: len(self.sink.stalled) >= 4, what="four attempts in flight")
        time.sleep(1.5)
        self.assertEqual(len(self.sink.stalled), 4)  # QUEUE_RUNNER_MAX_PER_DOMAIN
        self.assertEqual(self.stop_server(), 0)
        rows = self.queue_rows()
        self.assertEqual(len(rows), 6)
        self.assertTrue(all(r[4] is None and r[2] == 0 for r in rows), rows)

    def test_graceful_stop_releases_claims(self):
        # Before the end of data is sent (DATA unanswered), a stop abandons the attempt.
        self.mx_config()
        self.sink.stall_data_command = True
        self.enqueue(["bob@dest.test"])
        self.start_server()
        wait_for(lambda: self.sink.stalled, what="the DATA command at the sink")
        self.assertEqual(self.stop_server(), 0)
        rows = self.queue_rows()
        self.assertEqual(len(rows), 1)
        self.assertIsNone(rows[0][4])  # released: due again at the next start
        self.assertEqual(rows[0][2], 0)  # and no attempt counted



class TestEndOfData(OutboundTest):
    """Only the reply to the final dot delivers, and once the dot is sent that reply is not
    thrown away by a stop or the attempt deadline (smtp_client.h, "The end of data")."""

    def test_reply_during_the_body_is_not_delivery(self):
        self.mx_config()
        self.sink.extensions = ["PIPELINING", "8BITMIME", "SIZE 100000000"]
        # Far more than the socket buffers hold: the client is still sending when it reads
        # the early reply.
        body = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 24000
        self.sink.body_reply = ("250 2.0.0 ok", 64 * 1024)
        self.enqueue(["bob@dest.test"], body=body)
        self.start_server()
        self.wait_log("status=deferred")
        self.assertEqual(self.sink.messages, [])
        self.assertEqual(self.sink.early_replies, 1)
        rows = self.queue_rows()
        self.assertEqual(len(rows), 1, rows)
        self.assertEqual(rows[0][2], 1)  # one attempt counted
        self.assertIsNone(rows[0][4])  # the claim ended: due again on the backoff schedule
        self.assertIn("replied before the end of data (protocol violation): 250 2.0.0 ok",
                      rows[0][3])
        log = self.read_log()
        self.assertIn("event=host-failed", log)
        self.assertNotIn("status=sent", log)
        [line] = self.delivery_lines()
        self.assertIn("status=deferred", line)
        self.assertIn("protocol violation", line)

    def test_stop_awaits_the_reply_to_the_end_of_data(self):
        self.mx_config()
        self.sink.data_reply_delay = 2.0
        self.enqueue(["bob@dest.test"])
        self.start_server()
        self.assertTrue(self.sink.data_seen.wait(20), "the message never reached the sink")
        self.assertEqual(self.stop_server(), 0)  # SIGTERM while the reply is delayed
        self.assertEqual(len(self.sink.messages), 1)
        self.assertEqual(self.queue_rows(), [])  # recorded delivered, not released
        log = self.read_log()
        self.assertIn("event=runner-stopping abandoned=0 awaiting=1", log)
        self.assertIn("event=awaiting-end-of-data", log)
        [line] = self.delivery_lines()
        self.assertIn("status=sent dsn=2.0.0", line)

    def test_second_signal_defers_an_unanswered_end_of_data(self):
        self.mx_config()
        self.sink.stall_data = True  # the final dot is never answered
        self.enqueue(["bob@dest.test"])
        self.start_server()
        self.assertTrue(self.sink.data_seen.wait(20), "the message never reached the sink")
        self.server.send_signal(signal.SIGTERM)
        self.wait_log("event=awaiting-end-of-data")
        self.assertEqual(self.stop_server(signal.SIGTERM), 0)
        rows = self.queue_rows()
        self.assertEqual(len(rows), 1, rows)
        # Deferred (an attempt counted, the claim ended), not released: the sink may have it.
        self.assertEqual(rows[0][2], 1)
        self.assertIsNone(rows[0][4])
        self.assertIn("no reply to the end of data", rows[0][3])
        self.assertIn("may have been delivered", rows[0][3])
        [line] = self.delivery_lines()
        self.assertIn("status=deferred dsn=4.4.2", line)

    def test_deadline_awaits_the_reply_to_the_end_of_data(self):
        self.mx_config()
        self.sink.data_reply_delay = 4.0
        self.enqueue(["bob@dest.test"])
        self.start_server(env={"POSTERN_TEST_ATTEMPT_DEADLINE_MS": "1500"})
        self.wait_log("event=attempt-deadline")
        self.wait_log("status=sent")
        self.wait_queue_empty()
        self.assertIn("awaiting=end-of-data-reply", self.read_log())
        self.assertEqual(len(self.sink.messages), 1)
        [line] = self.delivery_lines()
        self.assertIn("status=sent dsn=2.0.0", line)


class TestRelayThroughSmtp(OutboundTest):
    def test_trusted_network_relay(self):
        self.smarthost_config()
        self.ok("network", "add", "127.0.0.0/8")
        # A local recipient too: the shared stored body then starts with Return-Path (smtp_tx.c),
        # which must not be relayed.
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", "u@example.test", input="secret-password\n")
        self.start_server()
        s = socket.create_connection(("127.0.0.1", self.ports["smtp"]), timeout=10)
        f = s.makefile("rb")

        def cmd(line):
            s.sendall(line.encode() + b"\r\n")
            while True:
                r = f.readline().decode()
                if r[3:4] != "-":
                    return r

        try:
            f.readline()
            cmd("EHLO client.test")
            r = cmd(f"MAIL FROM:<{SENDER}>")
            self.assertTrue(r.startswith("250"), r)
            self.assertTrue(cmd("RCPT TO:<bob@dest.test>").startswith("250"))
            self.assertTrue(cmd("RCPT TO:<u@example.test>").startswith("250"))
            self.assertTrue(cmd("DATA").startswith("354"))
            s.sendall(b"Subject: via smtp\r\n\r\nhello\r\n..dot\r\n.\r\n")
            r = f.readline().decode()
            self.assertTrue(r.startswith("250"), r)
            cmd("QUIT")
        finally:
            s.close()
        m = wait_for(lambda: self.sink.messages, what="the relayed message")[0]
        self.assertEqual(m["rcpts"], ["bob@dest.test"])
        self.assertTrue(m["data"].endswith(b"hello\r\n.dot\r\n"), m["data"])
        self.assertTrue(m["data"].startswith(b"Received: "), m["data"][:80])
        self.assertNotIn(b"Return-Path:", m["data"])


RELAY_USER = "relay-user@sender.test"
RELAY_PASSWORD = "Sm@rt host pw 9"
# What AUTH PLAIN carries on the wire: base64 of NUL user NUL password (RFC 4616 2).
RELAY_B64 = base64.b64encode(b"\0" + RELAY_USER.encode() + b"\0" + RELAY_PASSWORD.encode())


class TestSmarthostAuth(OutboundTest):
    """[relay] smarthost_user / smarthost_password_file: AUTH PLAIN, only ever under TLS."""

    def tls_sink(self, require_client_cert=False):
        import ssl
        from test_conn import make_cert
        make_cert(self.dir, "sink.test", cert="sink-cert.pem", key="sink-key.pem")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(self.dir, "sink-cert.pem"),
                            os.path.join(self.dir, "sink-key.pem"))
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED  # we send none: the handshake fails
        self.sink.tls_context = ctx

    def auth_config(self, password=RELAY_PASSWORD):
        # A relative path: resolved against the config file's folder.
        with open(os.path.join(self.dir, "relay.pw"), "w") as f:
            f.write(password + "\n")
        self.smarthost_config(f"smarthost_user = {RELAY_USER}\n"
                              "smarthost_password_file = relay.pw\n"
                              "[server]\ntranscript = yes\n")

    def assert_no_secret(self, data, where):
        if isinstance(data, str):
            data = data.encode("utf-8", "replace")
        self.assertNotIn(RELAY_PASSWORD.encode(), data, where)
        self.assertNotIn(RELAY_B64, data, where)

    def assert_deferred_no_bounce(self, error_part):
        rows = wait_for(lambda: [r for r in self.queue_rows() if r[4] is None and r[2] >= 1],
                        what="a deferred, unclaimed entry")
        self.assertEqual(len(rows), 1)
        self.assertIn(error_part, rows[0][3])
        listing = self.ok("queue", "list").out
        self.assertIn(error_part, listing)
        self.assertIn("attempts=1", listing)
        time.sleep(0.5)
        self.assertEqual(self.sink.messages, [])  # neither the message nor a bounce
        self.assertNotIn("status=bounced", self.read_log())
        self.assertIn("status=deferred", self.read_log())

    def test_auth_plain_over_starttls(self):
        self.tls_sink()
        self.sink.auth = (RELAY_USER, RELAY_PASSWORD)
        self.auth_config()
        self.enqueue(["bob@dest.test"])
        self.start_server()
        m = wait_for(lambda: self.sink.messages, what="the message")[0]
        self.assertTrue(m["tls"])
        self.assertEqual(m["data"], SENT)
        self.assertEqual(self.sink.auths,
                         [{"user": RELAY_USER, "password": RELAY_PASSWORD, "ok": True,
                           "tls": True}])
        self.assert_no_secret(bytes(self.sink.plaintext), "plaintext at the sink")
        self.wait_log("status=sent")
        self.wait_queue_empty()
        log = self.read_log()
        self.assertIn("event=runner-started route=smarthost auth=plain", log)
        self.assertIn('event=send line="AUTH PLAIN ***"', log)  # the transcript masks it
        self.assert_no_secret(log, "the server log")
        # config check shows the file, never the password.
        out = self.ok("config", "check").out
        self.assertIn(f"smarthost_user = {RELAY_USER}", out)
        self.assertIn("smarthost_password_file = " + os.path.join(os.path.realpath(self.dir),
                                                                  "relay.pw"), out)
        self.assert_no_secret(out, "config check")

    def test_no_starttls_defers_and_never_sends_credentials(self):
        self.sink.auth = (RELAY_USER, RELAY_PASSWORD)  # AUTH offered in the clear: not taken
        self.auth_config()
        self.enqueue(["bob@dest.test"])
        self.start_server()
        self.assert_deferred_no_bounce("smarthost requires TLS for AUTH: STARTTLS not offered")
        self.assertEqual(self.sink.auths, [])
        self.assertFalse(any(c.upper().startswith(("AUTH", "MAIL")) for c in self.sink.commands))
        self.assert_no_secret(bytes(self.sink.plaintext), "plaintext at the sink")
        self.assert_no_secret(self.read_log(), "the server log")

    def test_no_auth_plain_offered_defers(self):
        self.tls_sink()  # TLS, but no AUTH at all
        self.auth_config()
        self.enqueue(["bob@dest.test"])
        self.start_server()
        self.assert_deferred_no_bounce("smarthost does not offer AUTH PLAIN after STARTTLS")
        self.assertFalse(any(c.upper().startswith(("AUTH", "MAIL")) for c in self.sink.commands))

    def test_helo_only_smarthost_defers(self):
        self.sink.auth = (RELAY_USER, RELAY_PASSWORD)
        self.sink.ehlo_reply = "502 5.5.2 EHLO not here"
        self.auth_config()
        self.enqueue(["bob@dest.test"])
        self.start_server()
        self.assert_deferred_no_bounce("smarthost requires TLS for AUTH: EHLO refused")
        self.assertIn("HELO mail.example.test", self.sink.commands)
        self.assertFalse(any(c.upper().startswith(("AUTH", "MAIL")) for c in self.sink.commands))
        self.assert_no_secret(bytes(self.sink.plaintext), "plaintext at the sink")

    def test_failed_handshake_defers_without_plaintext_retry(self):
        self.tls_sink(require_client_cert=True)
        self.sink.auth = (RELAY_USER, RELAY_PASSWORD)
        self.auth_config()
        self.enqueue(["bob@dest.test"])
        self.start_server()
        self.assert_deferred_no_bounce("smarthost requires TLS for AUTH: TLS handshake failed")
        self.assertNotIn("event=tls-fallback", self.read_log())
        self.assertEqual(self.sink.sessions, 1)  # no second session in the clear
        self.assertEqual(self.sink.auths, [])
        self.assert_no_secret(bytes(self.sink.plaintext), "plaintext at the sink")

    def test_wrong_password_defers_with_535(self):
        self.tls_sink()
        self.sink.auth = (RELAY_USER, "the right one")
        self.auth_config()
        self.enqueue(["bob@dest.test", "carol@dest.test"])
        self.start_server()
        def both_deferred():
            rows = self.queue_rows()
            done = len(rows) == 2 and all(r[4] is None and r[2] == 1 for r in rows)
            return rows if done else None

        rows = wait_for(both_deferred, what="two deferred entries")
        for r in rows:
            self.assertIn("535 5.7.8 Authentication credentials invalid", r[3])
        listing = self.ok("queue", "list").out
        self.assertIn("535 5.7.8", listing)
        self.wait_log("to=carol@dest.test")
        lines = self.delivery_lines()
        self.assertEqual(len(lines), 2, lines)
        for l in lines:
            self.assertIn("status=deferred dsn=4.7.8", l)
        self.assertEqual(len(self.sink.auths), 1)
        self.assertTrue(self.sink.auths[0]["tls"])
        self.assertFalse(self.sink.auths[0]["ok"])
        self.assertEqual(self.sink.auths[0]["password"], RELAY_PASSWORD)
        time.sleep(0.5)
        self.assertEqual(self.sink.messages, [])  # no bounce either
        self.assert_no_secret(bytes(self.sink.plaintext), "plaintext at the sink")
        self.assert_no_secret(self.read_log(), "the server log")

    def test_config_errors(self):
        cases = [
            (f"smarthost_user = {RELAY_USER}\n",
             "[relay] smarthost_user and smarthost_password_file must be set together"),
            ("smarthost_password_file = relay.pw\n",
             "[relay] smarthost_user and smarthost_password_file must be set together"),
        ]
        for extra, want in cases:
            self.smarthost_config(extra)
            r = self.cli("config", "check")
            self.assertEqual(r.code, 2, r)
            self.assertIn(f"{self.conf}: {want}", r.err)
        self.write_config(f"[relay]\nsmarthost_user = u\nsmarthost_password_file = relay.pw\n")
        r = self.cli("config", "check")
        self.assertEqual(r.code, 2, r)
        self.assertIn(f"{self.conf}: [relay] smarthost_user is set but smarthost is not", r.err)

    def test_missing_password_file_exits_3(self):
        self.smarthost_config(f"smarthost_user = {RELAY_USER}\n"
                              "smarthost_password_file = nowhere.pw\n")
        self.ok("domain", "list")  # creates the database
        proc = subprocess.run([BIN, "-c", self.conf, "serve"], capture_output=True, text=True,
                              timeout=60, cwd=self.dir)
        self.assertEqual(proc.returncode, 3, proc)
        path = os.path.join(os.path.realpath(self.dir), "nowhere.pw")
        self.assertIn(f"postern: {path}: cannot open the smarthost password file: "
                      "No such file or directory", proc.stderr)
