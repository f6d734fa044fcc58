"""SMTPUTF8 (RFC 6531, RFC 6532) against the real binary: the EHLO keyword on every SMTP port, the
MAIL parameter, 553 5.6.7 for a UTF-8 address in a transaction that did not ask for SMTPUTF8,
strict UTF-8, internationalised domains compared as A-labels (user@bücher.example and
user@xn--bcher-kva.example are one mailbox and one relay decision), the relay rule and the address
tricks in UTF-8 and A-label spellings, UTF-8 names in the admin CLI, and UTF-8 headers stored and
retrieved through POP3 byte for byte.

Clients are raw sockets (test_conn.Client) and Python's smtplib, which sends SMTPUTF8 through
mail_options. Only 127.0.0.0/8 is used.
"""
import smtplib
import sqlite3

import test_outbound
import test_smtp

from test_conn import Client
from test_smtp import HOST, OUTSIDE, PASSWORD, TLS_CONFIG, TRUSTED

DOMAIN_U = "b\u00fccher.example"
DOMAIN_A = "xn--bcher-kva.example"
JOERG_U = f"j\u00f6rg@{DOMAIN_U}"
JOERG_A = f"j\u00f6rg@{DOMAIN_A}"  # the users-table key: UTF-8 local part, A-label domain
REMOTE_U = "rem\u00f6te.test"
REMOTE_A = REMOTE_U.encode("idna").decode()
UTF8_BODY = ("From: J\u00f6rg <" + JOERG_U + ">\r\nTo: " + JOERG_U + "\r\n"
             "Subject: Gr\u00fc\u00dfe aus M\u00fcnchen \u2603\r\n\r\n"
             "Gr\u00fc\u00dfe\r\n").encode()


def latin1(text):
    """How test_conn.Client and the fake MX (outbound_fakes) show UTF-8 octets."""
    return text.encode("utf-8").decode("latin-1")


def utf8(line):
    """A reply line as the server sent it (test_conn.Client decodes as Latin-1)."""
    return line.encode("latin-1").decode("utf-8")


class Utf8Test(test_smtp.SmtpTest):
    def setUp(self):
        super().setUp()
        # Given in UTF-8, stored as the A-label (the CLI's choice, shown by `domain list`).
        self.ok("domain", "add", DOMAIN_U)
        self.ok("user", "add", JOERG_U, input=PASSWORD + "\n")

    def session(self, source=None, service="smtp"):
        c = self.connect(service, source=source)
        self.ehlo(c)
        return c


class Cli(Utf8Test):
    def test_domain_and_user_stored_as_a_label(self):
        self.assertIn(DOMAIN_A, self.ok("domain", "list").out.split())
        users = [line.split()[0] for line in self.ok("user", "list").out.splitlines()]
        self.assertIn(JOERG_A, users)
        # Either spelling names the same domain and the same user.
        r = self.cli("domain", "add", DOMAIN_A)
        self.assertEqual(r.code, 1, r)
        r = self.cli("user", "add", f"J\u00f6rg@{DOMAIN_A.upper()}", input="pw\n")
        self.assertEqual(r.code, 1, r)
        self.assertIn("already exists", r.err)
        # Only ASCII case folds: Ö is another user, in a domain that is local.
        self.ok("user", "add", f"J\u00d6RG@{DOMAIN_U}", input="pw\n")
        users = [line.split()[0] for line in self.ok("user", "list").out.splitlines()]
        self.assertIn(f"j\u00d6rg@{DOMAIN_A}", users)

    def test_c1_controls_and_bad_idna_refused(self):
        # Invalid UTF-8 is in test_admin (its message echo is not text) and test_strict_utf8.
        for bad in ["a\u0085b@" + DOMAIN_U, f"a@{DOMAIN_U}..", "a@b\u00fc_cher.example"]:
            r = self.cli("user", "add", bad, input="pw\n")
            self.assertEqual(r.code, 2, f"{bad!r}: {r}")
        r = self.cli("domain", "add", "b\u00fccher..example")
        self.assertEqual(r.code, 2, r)


class Smtp(Utf8Test):
    def test_ehlo_offers_smtputf8_on_every_port(self):
        self.start()
        for service, tls in [("smtp", False), ("submission", False), ("submissions", True)]:
            c = self.connect(service, tls=tls)
            self.assertIn("250-SMTPUTF8", self.ehlo(c), service)

    def test_utf8_needs_the_parameter(self):
        self.start()
        c = self.session()
        self.assertEqual(self.cmd(c, f"MAIL FROM:<{JOERG_U}>"),
                         ["553 5.6.7 Non-ASCII addresses not permitted for that sender"])
        self.assertEqual(self.cmd(c, "MAIL FROM:<x@remote.test>"), ["250 2.1.0 Ok"])
        for rcpt in [JOERG_U, JOERG_A, f"x@{DOMAIN_U}"]:
            self.assertEqual(self.cmd(c, f"RCPT TO:<{rcpt}>"),
                             ["553 5.6.7 Non-ASCII addresses not permitted for that recipient"],
                             rcpt)
        # The A-label spelling is ASCII: no SMTPUTF8 needed to reach the domain.
        self.assertEqual(self.cmd(c, f"RCPT TO:<nobody@{DOMAIN_A}>")[0][:9], "550 5.1.1")
        self.assertEqual(self.cmd(c, "RSET"), ["250 2.0.0 Ok"])
        self.assertEqual(self.cmd(c, "MAIL FROM:<x@remote.test> SMTPUTF8=1")[0][:9], "501 5.5.4")

    def test_strict_utf8(self):
        self.start()
        c = self.session()
        self.assertEqual(self.cmd(c, "MAIL FROM:<x@remote.test> SMTPUTF8"), ["250 2.1.0 Ok"])
        for rcpt in [b"j\xc3rg@" + DOMAIN_A.encode(), b"a\xc0\xaf@" + DOMAIN_A.encode(),
                     b"a\xed\xa0\x80@" + DOMAIN_A.encode(), b"a\xc2\x85@" + DOMAIN_A.encode()]:
            c.send(b"RCPT TO:<" + rcpt + b">\r\n")
            reply = c.reply()
            self.assertTrue(reply[0].startswith("501 5.1.3"), (rcpt, reply))

    def test_both_spellings_are_one_mailbox(self):
        self.start()
        c = self.session()
        self.assertEqual(self.cmd(c, "MAIL FROM:<x@remote.test> SMTPUTF8"), ["250 2.1.0 Ok"])
        for rcpt in [JOERG_U, JOERG_A, f"J\u00f6rg@B\u00dcCHER.Example.",
                     f"J\u00f6rg@{DOMAIN_A.upper()}"]:
            self.assertEqual(self.cmd(c, f"RCPT TO:<{rcpt}>"), ["250 2.1.5 Ok"], rcpt)
        # Ö is not ö: the UTF-8 part of a local part is matched as sent.
        self.assertEqual(self.cmd(c, f"RCPT TO:<j\u00d6rg@{DOMAIN_A}>")[0][:9], "550 5.1.1")
        self.assertEqual(self.cmd(c, "DATA")[0][:3], "354")
        c.send(UTF8_BODY + b".\r\n")
        self.assertTrue(c.reply()[0].startswith("250 2.0.0 Ok: queued as "))
        bodies = self.bodies_for(JOERG_A)
        self.assertEqual(len(bodies), 1)
        self.assertTrue(bodies[0].endswith(UTF8_BODY), bodies[0])

    def test_smtplib_sendmail_with_smtputf8(self):
        self.start()
        s = self.smtp(source=OUTSIDE)
        s.ehlo()
        self.assertTrue(s.has_extn("smtputf8"))
        self.assertEqual(s.sendmail(f"s\u00e9nder@{REMOTE_U}", [JOERG_U], UTF8_BODY,
                                    mail_options=["SMTPUTF8"]), {})
        with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
            s.sendmail(f"s\u00e9nder@{REMOTE_U}", [f"fr\u00efend@{REMOTE_U}"], UTF8_BODY,
                       mail_options=["SMTPUTF8"])
        code, text = cm.exception.recipients[f"fr\u00efend@{REMOTE_U}"]
        self.assertEqual(code, 550)
        self.assertTrue(text.startswith(b"5.7.1 "), text)
        self.assertEqual(len(self.bodies_for(JOERG_A)), 1)
        self.assertEqual(self.queued(), [])


class Relay(Utf8Test):
    def test_trusted_network_relays_either_spelling_as_a_label(self):
        self.ok("network", "add", "127.0.0.2/32")
        self.start()
        c = self.session(source=TRUSTED)
        self.assertEqual(self.cmd(c, "MAIL FROM:<x@example.test> SMTPUTF8"), ["250 2.1.0 Ok"])
        self.assertEqual(self.cmd(c, f"RCPT TO:<fr\u00efend@{REMOTE_U}>"), ["250 2.1.5 Ok"])
        self.assertEqual(self.cmd(c, f"RCPT TO:<plain@{REMOTE_A.upper()}>"), ["250 2.1.5 Ok"])
        self.assertEqual(self.cmd(c, "DATA")[0][:3], "354")
        c.send(UTF8_BODY + b".\r\n")
        self.assertTrue(c.reply()[0].startswith("250 2.0.0 Ok: queued as "))
        self.assertEqual(self.queued(), [f"fr\u00efend@{REMOTE_A}", f"plain@{REMOTE_A}"])
        # UTF-8 headers under SMTPUTF8: the message needs SMTPUTF8 to be relayed (schema 9).
        self.assertEqual(self.query("SELECT smtputf8 FROM message_facts"), [(1,)])

    def test_8bit_headers_without_smtputf8_are_not_marked(self):
        self.ok("network", "add", "127.0.0.2/32")
        self.start()
        c = self.session(source=TRUSTED)
        self.assertEqual(self.transaction(c, "x@example.test", ["friend@remote.test"],
                                          body=UTF8_BODY.replace(JOERG_U.encode(), b"j@x.test"))
                         [-1][:3], "250")
        self.assertEqual(self.query("SELECT smtputf8 FROM message_facts"), [(0,)])

    def test_outside_remote_refused_in_both_spellings(self):
        self.start()
        for rcpt in [f"fr\u00efend@{REMOTE_U}", f"friend@{REMOTE_U}", f"friend@{REMOTE_A}"]:
            c = self.session(source=OUTSIDE)
            self.assertEqual(self.cmd(c, "MAIL FROM:<x@remote.test> SMTPUTF8"), ["250 2.1.0 Ok"])
            reply = self.cmd(c, f"RCPT TO:<{rcpt}>")
            self.assertEqual(len(reply), 1)
            self.assertTrue(reply[0].startswith("550 5.7.1"), (rcpt, reply))
        self.assertEqual(self.queued(), [])

    def test_address_tricks_never_relay_in_utf8(self):
        self.start()
        ip = "127.0.0.1"
        tricks = [
            # percent hack, bang paths, quoted local parts, in both spellings of a local domain
            (f"fr\u00efend%{REMOTE_U}@{DOMAIN_U}", "550 5.1.1"),
            (f"fr\u00efend%{REMOTE_A}@{DOMAIN_A}", "550 5.1.1"),
            (f"{REMOTE_U}!fr\u00efend@{DOMAIN_U}", "550 5.1.1"),
            (f'"fr\u00efend@{REMOTE_U}"@{DOMAIN_U}', "550 5.1.1"),
            (f'"fr\u00efend%{REMOTE_U}"@{DOMAIN_A}', "550 5.1.1"),
            # source routes through the local domain: the final address counts
            (f"@{DOMAIN_U}:fr\u00efend@{REMOTE_U}", "550 5.7.1"),
            (f"@{DOMAIN_A},@{HOST}:friend@{REMOTE_U}", "550 5.7.1"),
            # double @
            (f"fr\u00efend@{REMOTE_U}@{DOMAIN_U}", "501 5.1.3"),
            (f"fr\u00efend@{REMOTE_A}@{DOMAIN_A}", "501 5.1.3"),
            # literals, a local domain inside another, look-alikes of the local domain
            (f"fr\u00efend@[{ip}]", "550 5.7.1"),
            (f"fr\u00efend%{REMOTE_U}@[{ip}]", "550 5.7.1"),
            (f"fr\u00efend@{DOMAIN_U}.{REMOTE_U}", "550 5.7.1"),
            (f"fr\u00efend@sub.{DOMAIN_U}", "550 5.7.1"),
            ("fr\u00efend@bucher.example", "550 5.7.1"),
            ("fr\u00efend@b\u00fccher.example\u3002evil.test", "550 5.7.1"),
            (f"fr\u00efend@{DOMAIN_U}..", "501 5.1.3"),
            (f"fr\u00efend@{REMOTE_U}.", "550 5.7.1"),
        ]
        for rcpt, want in tricks:
            c = self.session()
            self.assertEqual(self.cmd(c, "MAIL FROM:<> SMTPUTF8"), ["250 2.1.0 Ok"])
            reply = self.cmd(c, f"RCPT TO:<{rcpt}>")
            self.assertEqual(len(reply), 1, rcpt)
            self.assertTrue(reply[0].startswith(want), (rcpt, reply))
            c.send("QUIT\r\n")
            c.close()
        self.assertEqual(self.queued(), [])
        self.assertEqual(self.message_count(), 0)


class Pop3(Utf8Test):
    extra_config = TLS_CONFIG + "[pop3]\nplaintext_auth = yes\n"

    def test_utf8_capability_and_intact_retrieval(self):
        self.start()
        s = self.smtp(source=OUTSIDE)
        self.assertEqual(s.sendmail("x@remote.test", [JOERG_A], UTF8_BODY,
                                    mail_options=["SMTPUTF8"]), {})
        p = Client(self.ports["pop3"])
        self.addCleanup(p.close)
        self.assertTrue(p.line().startswith("+OK"))
        p.send("CAPA\r\n")
        self.assertTrue(p.line().startswith("+OK"))
        caps = []
        while True:
            line = p.line()
            if line == ".":
                break
            caps.append(line)
        self.assertIn("UTF8 USER", caps)
        p.send("UTF8\r\n")
        self.assertTrue(p.line().startswith("+OK"))
        p.send(f"USER {JOERG_U}\r\n")
        self.assertTrue(p.line().startswith("+OK"))
        p.send(f"PASS {PASSWORD}\r\n")
        reply = p.line()
        self.assertTrue(reply.startswith("+OK"), reply)
        p.send("UTF8\r\n")
        self.assertTrue(p.line().startswith("-ERR"))
        p.send("RETR 1\r\n")
        self.assertTrue(p.line().startswith("+OK"))
        lines = []
        while True:
            line = p.line()
            if line == ".":
                break
            lines.append(line.encode("latin-1"))
        self.assertTrue((b"\r\n".join(lines) + b"\r\n").endswith(UTF8_BODY))
        p.send("QUIT\r\n")
        p.line()


class Outbound(test_outbound.OutboundTest):
    def enqueue_utf8(self, recipients, sender, smtputf8_fact):
        ids = self.enqueue(recipients, sender=sender, body=UTF8_BODY, facts=(1, 0))
        con = sqlite3.connect(self.db, timeout=10)
        try:
            con.execute("UPDATE message_facts SET smtputf8 = ? WHERE message_id ="
                        " (SELECT message_id FROM queue WHERE id = ?)",
                        (int(smtputf8_fact), ids[0]))
            con.commit()
        finally:
            con.close()
        return ids

    def test_sent_with_smtputf8_to_a_server_that_offers_it(self):
        self.smarthost_config()
        self.sink.extensions = ["PIPELINING", "8BITMIME", "SMTPUTF8"]
        self.enqueue_utf8([f"fr\u00efend@{REMOTE_A}"], f"j\u00f6rg@{DOMAIN_A}", False)
        self.start_server()
        m = test_outbound.wait_for(lambda: self.sink.messages, what="the message at the sink")[0]
        self.assertIn("SMTPUTF8", m["mail_params"])
        self.assertEqual(m["mail_from"], latin1(f"j\u00f6rg@{DOMAIN_A}"))
        self.assertEqual(m["rcpts"], [latin1(f"fr\u00efend@{REMOTE_A}")])
        self.assertEqual(m["data"], UTF8_BODY)
        self.wait_queue_empty()

    def test_ascii_message_never_says_smtputf8(self):
        self.smarthost_config()
        self.sink.extensions = ["PIPELINING", "SMTPUTF8"]
        self.enqueue(["bob@dest.test"], body=b"Subject: plain\r\n\r\nx\r\n", facts=(0, 0))
        self.start_server()
        m = test_outbound.wait_for(lambda: self.sink.messages, what="the message at the sink")[0]
        self.assertNotIn("SMTPUTF8", m["mail_params"])

    def test_utf8_recipient_bounces_where_smtputf8_is_not_offered(self):
        self.smarthost_config()
        self.enqueue_utf8([f"fr\u00efend@{REMOTE_A}"], test_outbound.SENDER, False)
        self.start_server()
        self.wait_log("status=bounced dsn=5.6.7")
        self.assertFalse(any(c.startswith("RCPT") for c in self.sink.commands
                             if "fr" in c and "end@" in c))
        bounce = test_outbound.wait_for(lambda: [m for m in self.sink.messages if m["mail_from"] == ""],
                          what="the bounce")[0]
        self.assertEqual(bounce["rcpts"], [test_outbound.SENDER])
        text = bounce["data"].decode("utf-8", "replace")
        self.assertIn("Status: 5.6.7", text)
        self.assertIn("non-ASCII addresses not permitted for that\r\n recipient: 127.0.0.1 does "
                      "not offer SMTPUTF8", text)

    def test_utf8_headers_need_smtputf8_only_when_received_with_it(self):
        self.smarthost_config()
        self.enqueue_utf8(["bob@dest.test"], test_outbound.SENDER, True)
        self.enqueue_utf8(["carol@dest.test"], test_outbound.SENDER, False)
        self.start_server()
        self.wait_log("status=bounced dsn=5.6.7")
        # Legacy 8-bit headers without SMTPUTF8 are relayed as before.
        test_outbound.wait_for(lambda: any(m["rcpts"] == ["carol@dest.test"] for m in self.sink.messages),
                 what="carol's message")
        self.assertFalse(any(m["rcpts"] == ["bob@dest.test"] for m in self.sink.messages))
