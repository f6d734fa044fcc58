"""DKIM signing at acceptance (README.md, "DKIM"), checked by an independent verifier: Debian's
python3-dkim (dkimpy), with its DNS lookups answered from what `postern dkim show` printed. Runs
under the system Python (/usr/bin/python3, CMakeLists.txt) because that is where the Debian
package lives; scripts/bootstrap installs it.

Every message is relayed by a trusted client (or an authenticated one on submission) and read
back as stored, which is what goes out (the one smarthost test checks that too): both signatures,
ed25519-sha256 and rsa-sha256, must verify, across folded and repeated header fields, trailing
white space, long lines, an empty body, an 8-bit body, a body of blank lines, dot-stuffed lines
and a message large enough to be spooled, also sent with BDAT; a changed header field or body must not. Messages
without Message-ID or Date get them, signed. A From outside the local domains, and local
deliveries, stay unsigned."""
import base64
import re
import socket
import sqlite3

import dkim

from harness import PosternTest
from outbound_fakes import SmtpSink
from test_outbound import wait_for

HOST = "mail.example.test"


class Client:
    """Just enough SMTP to send exact octets (the test does the dot-stuffing)."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.f = self.s.makefile("rb")
        self.reply()
        assert self.cmd("EHLO client.test").startswith("250")

    def reply(self):
        while True:
            line = self.f.readline().decode()
            if line[3:4] != "-":
                return line

    def cmd(self, line):
        self.s.sendall(line.encode() + b"\r\n")
        return self.reply()

    def send(self, sender, rcpts, content):
        assert self.cmd(f"MAIL FROM:<{sender}>").startswith("250")
        for r in rcpts:
            r = self.cmd(f"RCPT TO:<{r}>")
            assert r.startswith("250"), r
        assert self.cmd("DATA").startswith("354")
        wire = re.sub(rb"(^|\r\n)\.", rb"\1..", content)
        if wire and not wire.endswith(b"\r\n"):
            wire += b"\r\n"
        self.s.sendall(wire + b".\r\n")
        r = self.reply()
        assert r.startswith("250"), r
        return r.split()[-1]

    def send_bdat(self, sender, rcpts, content, chunk_bytes):
        """The same with BDAT (RFC 3030): content as it is, in chunks, the last one LAST."""
        assert self.cmd(f"MAIL FROM:<{sender}>").startswith("250")
        for r in rcpts:
            assert self.cmd(f"RCPT TO:<{r}>").startswith("250")
        pieces = [content[i:i + chunk_bytes] for i in range(0, len(content), chunk_bytes)]
        for p in pieces[:-1]:
            self.s.sendall(b"BDAT %d\r\n" % len(p) + p)
            r = self.reply()
            assert r.startswith("250"), r
        last = pieces[-1] if pieces else b""
        self.s.sendall(b"BDAT %d LAST\r\n" % len(last) + last)
        r = self.reply()
        assert r.startswith("250"), r
        return r.split()[-1]

    def close(self):
        try:
            self.cmd("QUIT")
        finally:
            self.s.close()


def signatures(stored):
    """The DKIM-Signature fields of a stored message's header section, unfolded."""
    head = stored.split(b"\r\n\r\n", 1)[0]
    return [f.replace(b"\r\n", b"") for f in re.findall(
        rb"^DKIM-Signature:.*?(?=\r\n[^ \t])", head + b"\r\nX", re.S | re.M)]


class DkimSigningTest(PosternTest):
    extra_config = f"[server]\nhostname = {HOST}\n"

    def setUp(self):
        super().setUp()
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", "alice@example.test", input="alice password\n")
        self.ok("network", "add", "127.0.0.0/8")
        self.ok("dkim", "keygen", "example.test", "--selector", "ed")
        self.ok("dkim", "keygen", "example.test", "--selector", "rs", "--algorithm", "rsa")
        self.records = {}
        for line in self.ok("dkim", "show", "example.test").out.splitlines():
            name, _, rest = line.partition(" IN TXT ")
            self.records[name.lower()] = "".join(re.findall(r'"([^"]*)"', rest)).encode()
        self.assertEqual(len(self.records), 2, self.records)

    def dnsfunc(self, name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        return self.records.get(name.lower().rstrip(".") + ".")

    def verify_all(self, message):
        """(count, [result per signature]) as dkimpy sees them."""
        n = len(signatures(message))
        d = dkim.DKIM(message)
        return n, [self.verify_one(d, i) for i in range(n)]

    def verify_one(self, d, idx):
        # dkimpy answers a body hash mismatch with an exception, a bad signature with False.
        try:
            return d.verify(idx=idx, dnsfunc=self.dnsfunc)
        except dkim.ValidationError:
            return False

    def stored(self):
        con = sqlite3.connect(self.db, timeout=10)
        try:
            # Only what the client sent: the queue runner may already have failed a relayed copy
            # (dest.test has no MX here) and stored its bounce to alice, from the null sender.
            return [bytes(r[0]) for r in con.execute(
                "SELECT body FROM messages WHERE sender <> '' ORDER BY id").fetchall()]
        finally:
            con.close()

    def send_all(self, cases, port="smtp"):
        self.start_server()
        c = Client(self.ports[port])
        try:
            for content in cases:
                c.send("alice@example.test", ["bob@dest.test"], content)
        finally:
            c.close()
        return self.stored()

    def test_signatures_verify_across_message_shapes(self):
        big_line = b"y" * 990
        cases = [
            b"From: Alice\r\n <alice@example.test>\r\nTo: bob@dest.test\r\nTo: carol@dest.test\r\n"
            b"Subject: folded\r\n\tand   spaced  \r\nDate: Fri, 4 Dec 2026 10:00:00 +0000\r\n"
            b"Message-ID: <1@example.test>\r\n\r\nhello\r\n",
            b"From: alice@example.test\r\nSubject: trailing  \t\r\n\r\nline one   \r\n"
            b"two\t\t\r\n  \r\n\r\n",
            b"From: alice@example.test\r\nSubject: long\r\n\r\n" + (big_line + b"\r\n") * 50,
            b"From: alice@example.test\r\nSubject: empty body\r\n\r\n",
            b"From: alice@example.test\r\nSubject: no blank line\r\n",
            b"From: alice@example.test\r\nSubject: 8bit\r\nContent-Type: text/plain; "
            b"charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9 \xff\xfe\r\n",
            b"From: alice@example.test\r\nSubject: blank lines\r\n\r\n\r\n\r\n\r\n",
            b"From: alice@example.test\r\nSubject: dots\r\n\r\n.\r\n..\r\n.leading dot\r\n",
            # Larger than the transaction keeps in memory: the header section is spooled.
            b"From: alice@example.test\r\nSubject: spooled\r\n\r\n" +
            b"".join(b"%07d %s\r\n" % (i, b"z" * 70) for i in range(4000)),
        ]
        stored = self.send_all(cases)
        self.assertEqual(len(stored), len(cases))
        for i, m in enumerate(stored):
            n, results = self.verify_all(m)
            self.assertEqual(n, 2, f"case {i}: {m[:600]!r}")
            self.assertEqual(results, [True, True], f"case {i}: {m[:1500]!r}")
            sigs = signatures(m)
            self.assertIn(b"a=ed25519-sha256;", sigs[0])
            self.assertIn(b"a=rsa-sha256;", sigs[1])
            for line in m.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
                if line.startswith((b"DKIM-Signature:", b" ", b"\t")):
                    self.assertLessEqual(len(line), 78, line)
        # The dot-stuffed lines were stored unstuffed, and the signature covers that.
        self.assertTrue(stored[7].endswith(b"\r\n.\r\n..\r\n.leading dot\r\n"), stored[7][-60:])
        log = self.read_log()
        self.assertEqual(log.count("dkim=signed d=example.test s=ed,rs"), len(cases), log)

    def test_bdat_messages_are_signed_alike(self):
        # BDAT content feeds the same signer as DATA content, spooled parts included; a chunk
        # may end anywhere, a CRLF cut in two too.
        cases = [
            (b"From: alice@example.test\r\nSubject: bdat\r\n\r\n.\r\n..dots stay\r\n", 7),
            (b"From: alice@example.test\r\nSubject: spooled bdat\r\n\r\n" +
             b"".join(b"%07d %s\r\n" % (i, b"z" * 70) for i in range(4000)), 50_001),
        ]
        self.start_server()
        c = Client(self.ports["smtp"])
        try:
            for content, chunk_bytes in cases:
                c.send_bdat("alice@example.test", ["bob@dest.test"], content, chunk_bytes)
        finally:
            c.close()
        stored = self.stored()
        self.assertEqual(len(stored), len(cases))
        for (content, _), m in zip(cases, stored):
            self.assertTrue(m.endswith(content.split(b"\r\n\r\n", 1)[1]))
            self.assertEqual(self.verify_all(m), (2, [True, True]), m[:600])

    def test_tampering_fails(self):
        content = (b"From: alice@example.test\r\nTo: bob@dest.test\r\nSubject: original\r\n\r\n"
                   b"the body\r\n")
        m = self.send_all([content])[0]
        self.assertEqual(self.verify_all(m)[1], [True, True])
        for changed in (m.replace(b"Subject: original", b"Subject: 0riginal"),
                        m.replace(b"the body", b"the bodY"),
                        m.replace(b"From: alice", b"From: bob"),
                        m.replace(b"Subject:", b"From: mallory@evil.test\r\nSubject:")):
            self.assertNotEqual(changed, m)
            self.assertEqual(self.verify_all(changed)[1], [False, False], changed[:900])
        # Relaxed canonicalisation: white space changes do not matter.
        spaced = m.replace(b"Subject: original", b"Subject:   original  ").replace(
            b"the body\r\n", b"the   body \r\n\r\n")
        self.assertEqual(self.verify_all(spaced)[1], [True, True])

    def test_message_id_and_date_added_and_signed(self):
        m = self.send_all([b"From: alice@example.test\r\nSubject: bare\r\n\r\nhi\r\n"])[0]
        head = m.split(b"\r\n\r\n", 1)[0]
        mid = re.search(rb"^Message-ID: <([^>]+)>\r$", head + b"\r", re.M)
        self.assertTrue(mid, head)
        self.assertTrue(mid.group(1).endswith(b"@" + HOST.encode()), mid.group(1))
        self.assertRegex(head, rb"(?m)^Date: \w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r$")
        for sig in signatures(m):
            h = re.search(rb"h=([^;]*);", sig).group(1).replace(b" ", b"").replace(b"\t", b"")
            self.assertEqual(h.split(b":"), [b"from", b"from", b"subject", b"date",
                                             b"message-id"])
        self.assertEqual(self.verify_all(m)[1], [True, True])
        # Present ones are kept as they are, never a second one.
        self.stop_server()
        m = self.send_all([b"From: alice@example.test\r\nDate: Fri, 4 Dec 2026 10:00:00 +0000\r\n"
                           b"Message-ID: <own@example.test>\r\n\r\nhi\r\n"])[-1]
        self.assertEqual(m.count(b"Message-ID:"), 1)
        self.assertEqual(m.count(b"\r\nDate:"), 1)

    def test_unsigned_cases_say_why(self):
        self.ok("domain", "add", "nokey.test")
        self.start_server()
        c = Client(self.ports["smtp"])
        try:
            c.send("alice@example.test", ["bob@dest.test"],
                   b"From: someone@elsewhere.test\r\nSubject: x\r\n\r\nhi\r\n")
            c.send("alice@example.test", ["bob@dest.test"],
                   b"From: x@nokey.test\r\nSubject: x\r\n\r\nhi\r\n")
            c.send("alice@example.test", ["bob@dest.test"],
                   b"From: a@example.test, b@example.test\r\nSubject: x\r\n\r\nhi\r\n")
            c.send("alice@example.test", ["bob@dest.test"], b"Subject: no from\r\n\r\nhi\r\n")
            c.send("bob@dest.test", ["alice@example.test"],
                   b"From: alice@example.test\r\nSubject: local\r\n\r\nhi\r\n")
        finally:
            c.close()
        stored = self.stored()
        self.assertEqual([len(signatures(m)) for m in stored], [0, 0, 0, 0, 0])
        # Relayed ones got the fix-ups all the same; the local delivery did not.
        self.assertIn(b"Message-ID: <", stored[0])
        self.assertNotIn(b"Message-ID:", stored[4])
        log = self.read_log()
        for reason in ("from-not-local", "no-key", "many-from", "no-from"):
            self.assertIn(f"dkim=none reason={reason}", log)
        local_line = [l for l in log.splitlines() if "event=message" in l][-1]
        self.assertNotIn("dkim=", local_line)


class DkimSmarthostTest(DkimSigningTest):
    """Submission with AUTH for alice@example.test to a remote address, through the smarthost:
    what arrives there verifies against the records `dkim show` printed."""

    def setUp(self):
        super().setUp()
        self.sink = SmtpSink()
        self.addCleanup(self.sink.close)
        self.write_config(f"[server]\nhostname = {HOST}\n[smtp]\nplaintext_auth = yes\n"
                          f"[relay]\nsmarthost = 127.0.0.1:{self.sink.port}\n")
        self.ok("network", "del", "127.0.0.0/8")

    def test_submission_to_smarthost(self):
        self.start_server()
        c = Client(self.ports["submission"])
        try:
            auth = base64.b64encode(b"\0alice@example.test\0alice password").decode()
            self.assertTrue(c.cmd(f"AUTH PLAIN {auth}").startswith("235"))
            c.send("alice@example.test", ["bob@dest.test"],
                   b"From: Alice <alice@example.test>\r\nTo: bob@dest.test\r\n"
                   b"Subject: through the smarthost\r\n\r\nhello bob\r\n")
        finally:
            c.close()
        m = wait_for(lambda: self.sink.messages, what="the relayed message")[0]
        self.assertEqual(self.verify_all(m["data"]), (2, [True, True]))
        self.assertIn("dkim=signed d=example.test s=ed,rs", self.read_log())

    # The shapes are tested once, in the parent class.
    test_signatures_verify_across_message_shapes = None
    test_tampering_fails = None
    test_message_id_and_date_added_and_signed = None
    test_unsigned_cases_say_why = None
    test_bdat_messages_are_signed_alike = None
