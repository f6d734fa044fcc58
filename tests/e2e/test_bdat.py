"""CHUNKING (RFC 3030) inbound, over raw sockets: BDAT with and without LAST, pipelined with other
commands, a small message split at every chunk boundary (each position its own connection), the
size limit (552 and the rest of the chunks read and dropped), the 503 sequencing rules (BDAT
without MAIL or RCPT, DATA after BDAT, RCPT after BDAT), RSET between chunks, a BDAT whose size
cannot be read, 8-bit and binary-looking bodies, and large messages that spill into the spool
file. Outbound: BDAT to a fake MX that offers CHUNKING (the reply to the LAST chunk decides, a
refused chunk defers), DATA to one that does not. Content is stored as DATA stores it: byte for byte, except that bare CR and bare LF become
CRLF and a last line without its CRLF gets one (common/pure/smtp_data.h).

Only 127.0.0.0/8 is used; every wait is bounded.
"""
import random

import test_smtp
from test_outbound import OutboundTest, SENT, wait_for
from test_smtp import HOST, SmtpTest, TLS_CONFIG, content_of

ALICE = "alice@example.test"
SMALL = b"Subject: bdat\r\n\r\nhello\r\nworld\r\n"


class Bdat(SmtpTest):
    pop3_retr_matches = test_smtp.Data.pop3_retr_matches

    def begin(self, c, rcpt=ALICE):
        self.ehlo(c)
        self.assertEqual(self.cmd(c, "MAIL FROM:<x@remote.test>"), ["250 2.1.0 Ok"])
        self.assertEqual(self.cmd(c, f"RCPT TO:<{rcpt}>"), ["250 2.1.5 Ok"])

    def chunk(self, c, data, last=False):
        c.send(f"BDAT {len(data)}{' LAST' if last else ''}\r\n".encode() + data)
        return c.reply()

    def stored(self, user=ALICE):
        return [content_of(b) for b in self.bodies_for(user)]

    def test_ehlo_offers_chunking_on_every_port(self):
        self.start()
        for service in ("smtp", "submission"):
            c = self.connect(service)
            self.assertIn("250-CHUNKING", self.ehlo(c))
        c = self.connect("submissions", tls=True)
        reply = self.ehlo(c)
        self.assertIn("250-CHUNKING", reply)
        self.assertFalse(any("BINARYMIME" in line for line in reply))

    def test_one_last_chunk(self):
        self.start()
        c = self.connect()
        self.begin(c)
        reply = self.chunk(c, SMALL, last=True)
        self.assertTrue(reply[0].startswith("250 2.0.0 Ok: queued as "), reply)
        self.assertEqual(self.stored(), [SMALL])
        self.assertIn("Received: from client.example", self.bodies_for(ALICE)[0].decode())

    def test_chunks_then_zero_size_last(self):
        self.start()
        c = self.connect()
        self.begin(c)
        self.assertEqual(self.chunk(c, SMALL[:10]), ["250 2.0.0 10 octets received"])
        self.assertEqual(self.chunk(c, SMALL[10:]), [f"250 2.0.0 {len(SMALL) - 10} octets received"])
        self.assertEqual(self.chunk(c, b""), ["250 2.0.0 0 octets received"])
        reply = self.chunk(c, b"", last=True)
        self.assertTrue(reply[0].startswith("250 2.0.0 Ok: queued as "), reply)
        self.assertEqual(self.stored(), [SMALL])

    def test_split_at_every_boundary(self):
        self.start()
        for cut in range(len(SMALL) + 1):
            with self.subTest(cut=cut):
                c = self.connect()
                self.begin(c)
                self.assertEqual(self.chunk(c, SMALL[:cut]), [f"250 2.0.0 {cut} octets received"])
                reply = self.chunk(c, SMALL[cut:], last=True)
                self.assertTrue(reply[0].startswith("250 2.0.0 Ok: queued as "), reply)
                self.assertEqual(self.cmd(c, "QUIT"), ["221 2.0.0 Bye"])
                self.assertTrue(c.closed())  # within the per-address connection limit
                c.close()
        self.assertEqual(self.stored(), [SMALL] * (len(SMALL) + 1))

    def test_pipelined_in_one_write(self):
        self.start()
        c = self.connect()
        self.ehlo(c)
        # Looks like commands and like the DATA terminator, but is content.
        body = b"Subject: p\r\n\r\n.\r\nRSET\r\nQUIT\r\n"
        c.send(b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
               b"BDAT 5\r\n" + body[:5] + f"BDAT {len(body) - 5} LAST\r\n".encode() + body[5:] +
               b"NOOP\r\nMAIL FROM:<y@remote.test>\r\nRCPT TO:<bob@example.test>\r\n"
               b"BDAT 3 LAST\r\nx\r\nQUIT\r\n")
        got = [c.reply() for _ in range(9)]
        self.assertEqual(got[:3], [["250 2.1.0 Ok"], ["250 2.1.5 Ok"],
                                   ["250 2.0.0 5 octets received"]])
        self.assertTrue(got[3][0].startswith("250 2.0.0 Ok: queued as "), got)
        self.assertEqual(got[4:8], [["250 2.0.0 Ok"], ["250 2.1.0 Ok"], ["250 2.1.5 Ok"],
                                    got[7]])
        self.assertTrue(got[7][0].startswith("250 2.0.0 Ok: queued as "), got)
        self.assertEqual(got[8], ["221 2.0.0 Bye"])
        self.assertEqual(self.stored(), [body])
        self.assertEqual(self.stored("bob@example.test"), [b"x\r\n"])

    def test_no_dot_stuffing_and_line_ends(self):
        self.start()
        c = self.connect()
        self.begin(c)
        # Dots stay; bare CR and LF become CRLF (also when a CRLF is cut between chunks); a last
        # line without CRLF gets one.
        self.assertEqual(self.chunk(c, b"..a\r\n.\r\nb\nc\r"), ["250 2.0.0 12 octets received"])
        reply = self.chunk(c, b"\nd\re", last=True)
        self.assertTrue(reply[0].startswith("250 "), reply)
        self.assertEqual(self.stored(), [b"..a\r\n.\r\nb\r\nc\r\nd\r\ne\r\n"])

    def test_8bit_and_binary_looking_bytes(self):
        self.write_config(TLS_CONFIG + "[pop3]\nplaintext_auth = yes\n")
        self.start()
        rng = random.Random(3)
        octets = [b for b in range(256) if b not in (10, 13)]
        body = b"Subject: 8bit\r\n\r\n" + bytes(range(0x80, 0x100)) + b"\r\n" + \
            b"".join(bytes(rng.choice(octets) for _ in range(300)) + b"\r\n" for _ in range(10)) + \
            b"\x00\x01\x02\xff\r\n"
        c = self.connect()
        self.ehlo(c)
        self.assertEqual(self.cmd(c, "MAIL FROM:<x@remote.test> BODY=8BITMIME"), ["250 2.1.0 Ok"])
        self.cmd(c, "RCPT TO:<alice@example.test>")
        self.assertEqual(self.chunk(c, body[:1000]), ["250 2.0.0 1000 octets received"])
        reply = self.chunk(c, body[1000:], last=True)
        self.assertTrue(reply[0].startswith("250 2.0.0 Ok: queued as "), reply)
        stored = self.bodies_for(ALICE)[0]
        self.assertEqual(content_of(stored), body)
        self.pop3_retr_matches(ALICE, stored)

    def test_large_message_spills(self):
        self.start()
        rng = random.Random(5)
        lines = [bytes(rng.choice(b"abcdefgh.\x80\xff") for _ in range(rng.randint(0, 300)))
                 for _ in range(3000)]
        body = b"Subject: big\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"
        self.assertGreater(len(body), 3 * 128 * 1024)
        c = self.connect()
        self.begin(c)
        step = 100_000
        for off in range(0, len(body) - step, step):
            self.assertEqual(self.chunk(c, body[off:off + step]),
                             [f"250 2.0.0 {step} octets received"])
        off = (len(body) - 1) // step * step
        reply = self.chunk(c, body[off:], last=True)
        self.assertTrue(reply[0].startswith("250 2.0.0 Ok: queued as "), reply)
        self.assertEqual(self.stored(), [body])

    def test_size_limit(self):
        self.write_config(TLS_CONFIG + "[smtp]\nmax_message_size = 1K\n")
        self.start()
        c = self.connect()
        self.begin(c)
        self.assertEqual(self.chunk(c, b"a" * 600 + b"\r\n"), ["250 2.0.0 602 octets received"])
        # The chunk that passes the limit, and one pipelined behind it: 552, then 503; every
        # octet is read and dropped (the "commands" inside are never run).
        c.send(b"BDAT 600\r\n" + b"RSET\r\n" * 100 + b"BDAT 12 LAST\r\nQUIT\r\nQUIT\r\nNOOP\r\n")
        self.assertEqual(c.reply(), ["552 5.3.4 Message size exceeds fixed maximum message size"])
        self.assertEqual(c.reply(), ["503 5.5.1 Error: need MAIL command"])
        self.assertEqual(c.reply(), ["250 2.0.0 Ok"])
        self.assertEqual(self.message_count(), 0)
        # The connection goes on: a message within the limit.
        self.begin(c)
        reply = self.chunk(c, b"small\r\n", last=True)
        self.assertTrue(reply[0].startswith("250 2.0.0 Ok: queued as "), reply)
        self.assertEqual(self.stored(), [b"small\r\n"])

    def test_sequencing(self):
        self.start()
        c = self.connect()
        # Refused chunks are still read: the "QUIT" inside must not run.
        self.assertEqual(self.chunk(c, b"QUIT\r\n"), ["503 5.5.1 Error: send HELO/EHLO first"])
        self.ehlo(c)
        self.assertEqual(self.chunk(c, b"QUIT\r\n"), ["503 5.5.1 Error: need MAIL command"])
        self.cmd(c, "MAIL FROM:<x@remote.test>")
        self.assertEqual(self.chunk(c, b"QUIT\r\n", last=True),
                         ["503 5.5.1 Error: need RCPT command"])
        self.cmd(c, "RCPT TO:<alice@example.test>")
        self.assertEqual(self.chunk(c, b"abc\r\n"), ["250 2.0.0 5 octets received"])
        self.assertEqual(self.cmd(c, "DATA"), ["503 5.5.1 Error: DATA after BDAT"])
        self.assertEqual(self.cmd(c, "RCPT TO:<bob@example.test>"),
                         ["503 5.5.1 Error: RCPT after BDAT"])
        self.assertEqual(self.cmd(c, "MAIL FROM:<y@remote.test>"),
                         ["503 5.5.1 Error: nested MAIL command"])
        reply = self.chunk(c, b"def\r\n", last=True)
        self.assertTrue(reply[0].startswith("250 2.0.0 Ok: queued as "), reply)
        self.assertEqual(self.stored(), [b"abc\r\ndef\r\n"])
        # After a LAST chunk the transaction is over.
        self.assertEqual(self.chunk(c, b"x\r\n"), ["503 5.5.1 Error: need MAIL command"])
        # BDAT after a DATA transaction is a new transaction's business: MAIL first.
        self.cmd(c, "MAIL FROM:<x@remote.test>")
        self.cmd(c, "RCPT TO:<alice@example.test>")
        self.assertEqual(self.cmd(c, "DATA")[0][:3], "354")
        c.send(b"d\r\n.\r\n")
        self.assertTrue(c.reply()[0].startswith("250 2.0.0 Ok: queued as "))
        self.assertEqual(self.chunk(c, b"x\r\n", last=True), ["503 5.5.1 Error: need MAIL command"])
        self.assertEqual(self.cmd(c, "NOOP"), ["250 2.0.0 Ok"])
        self.assertEqual(len(self.stored()), 2)

    def test_rset_discards_chunks(self):
        self.start()
        c = self.connect()
        self.begin(c)
        self.assertEqual(self.chunk(c, b"first\r\n"), ["250 2.0.0 7 octets received"])
        self.assertEqual(self.cmd(c, "RSET"), ["250 2.0.0 Ok"])
        self.assertEqual(self.chunk(c, b"x\r\n", last=True), ["503 5.5.1 Error: need MAIL command"])
        self.begin(c)
        reply = self.chunk(c, b"second\r\n", last=True)
        self.assertTrue(reply[0].startswith("250 "), reply)
        self.assertEqual(self.stored(), [b"second\r\n"])

    def test_unreadable_size_closes(self):
        self.start()
        for bad in ("BDAT", "BDAT x", "BDAT -1", "BDAT 5 LASTX", "BDAT 99999999999999999999"):
            with self.subTest(bad=bad):
                c = self.connect()
                self.begin(c)
                self.assertEqual(self.cmd(c, bad), ["501 5.5.4 Syntax: BDAT size [LAST]"])
                self.assertTrue(c.closed())
                c.close()
        self.assertEqual(self.message_count(), 0)

    def test_size_split_lines_in_one_read_and_last_lower_case(self):
        self.start()
        c = self.connect()
        self.begin(c)
        c.send(b"BDAT 4 last\r\nab\r\n")
        self.assertTrue(c.reply()[0].startswith("250 2.0.0 Ok: queued as "))
        self.assertEqual(self.stored(), [b"ab\r\n"])
        self.assertIn(f"250 {HOST}", self.cmd(c, "HELO again"))


# ---- outbound: BDAT to a next hop that offers CHUNKING, DATA to one that does not ----

BIG = (b"Return-Path: <alice@sender.test>\r\nFrom: alice@sender.test\r\nSubject: chunks\r\n\r\n" +
       b"".join(b".dot line %d caf\xc3\xa9\r\n..two\r\n.\r\n" % i for i in range(3000)))
BIG_SENT = BIG[BIG.index(b"\r\n") + 2:]


class BdatOutbound(OutboundTest):
    def test_bdat_when_offered(self):
        self.sink.extensions.append("CHUNKING")
        self.mx_config()
        self.enqueue(["bob@dest.test"], body=BIG, facts=(1, BIG.index(b"\r\n") + 2))
        self.enqueue(["carol@dest.test"])
        self.start_server()
        wait_for(lambda: len(self.sink.messages) == 2, what="two messages at the sink")
        self.wait_queue_empty()
        by_rcpt = {tuple(m["rcpts"]): m for m in self.sink.messages}
        m = by_rcpt[("bob@dest.test",)]
        self.assertEqual(m["data"], BIG_SENT)  # as stored: no dot-stuffing, no Return-Path
        self.assertGreater(len(m["chunks"]), 2)
        self.assertEqual(m["chunks"][-1], 0)
        self.assertIn("BODY=8BITMIME", m["mail_params"])
        self.assertEqual(by_rcpt[("carol@dest.test",)]["data"], SENT)
        self.assertNotIn("DATA", self.sink.commands)
        self.assertEqual(self.sink.commands.count("BDAT 0 LAST"), 2)
        self.wait_log("status=sent")

    def test_data_when_not_offered(self):
        self.mx_config()
        self.enqueue(["bob@dest.test"], body=BIG)
        self.start_server()
        wait_for(lambda: len(self.sink.messages) == 1, what="the message at the sink")
        self.assertEqual(self.sink.messages[0]["data"], BIG_SENT)
        self.assertNotIn("chunks", self.sink.messages[0])
        self.assertIn("DATA", self.sink.commands)
        self.assertFalse(any(c.startswith("BDAT") for c in self.sink.commands))

    def test_refused_chunk_and_refused_last(self):
        self.sink.extensions.append("CHUNKING")
        self.sink.bdat_reply = "452 4.3.1 full"
        self.mx_config()
        self.enqueue(["bob@dest.test"], body=BIG)
        self.start_server()
        self.wait_log("status=deferred dsn=4.3.1")
        self.assertEqual(self.sink.messages, [])
        # The reply to the LAST chunk decides, as the reply to the final dot does.
        self.sink.bdat_reply = None
        self.sink.data_replies = ["554 5.6.0 rejected content"]
        self.ok("queue", "flush")
        self.wait_log("status=bounced dsn=5.6.0")
        self.assertFalse(any(m["data"] == BIG_SENT for m in self.sink.messages))
        self.assertTrue(any(m["data"] == BIG_SENT for m in self.sink.unacked))
