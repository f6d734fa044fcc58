"""Delivery status notifications (RFC 3461) end to end: the DSN keyword in EHLO, the parameters
of MAIL (RET, ENVID) and RCPT (NOTIFY, ORCPT) and the answers to malformed ones, and each notice
postern sends (RFC 3464 multipart/report): delivered for a local recipient, relayed when the next
hop does not offer DSN, delayed once after [relay] delay_notice, failed with RET, ENVID and ORCPT
respected and NOTIFY=NEVER obeyed; the parameters passed on verbatim to a next hop that offers
DSN.

Mail comes in through the SMTP port with Python's smtplib (mail_options and rcpt_options carry
the parameters) from a trusted network; the next hop is the SMTP sink of outbound_fakes.py as
the smarthost; notices go to the sender's local mailbox and are read back over POP3.
"""
import poplib
import smtplib
import socket

from test_conn import make_cert
from test_outbound import OutboundTest, wait_for

SENDER = "alice@example.test"
PASSWORD = "alice-password-1"
MESSAGE = (b"From: Alice <alice@example.test>\r\nTo: bob@dest.test\r\nSubject: dsn test\r\n"
           b"Message-ID: <dsn1@example.test>\r\n\r\nthe body text stays home\r\n")


class DsnTest(OutboundTest):
    def setUp(self):
        super().setUp()
        self.ok("network", "add", "127.0.0.0/8")
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", SENDER, input=PASSWORD + "\n")
        self.ok("user", "add", "bob@example.test", input="bob-password-1\n")
        self.ok("user", "add", "carol@example.test", input="carol-password-1\n")

    def start(self, extra=""):
        make_cert(self.dir, "mail.example.test")
        self.smarthost_config(extra + "[tls]\ncertificate = cert.pem\nkey = key.pem\n"
                              "[pop3]\nplaintext_auth = yes\n")
        self.start_server()

    def send(self, rcpts, mail_options=(), rcpt_options=(), sender=SENDER, message=MESSAGE):
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as s:
            s.ehlo("client.test")
            self.assertTrue(s.has_extn("dsn"))
            refused = s.sendmail(sender, rcpts, message, mail_options=list(mail_options),
                                 rcpt_options=list(rcpt_options))
            self.assertEqual(refused, {})

    def mailbox(self, user=SENDER, password=PASSWORD):
        """Every message in user's mailbox, as bytes."""
        p = poplib.POP3("127.0.0.1", self.ports["pop3"], timeout=10)
        try:
            p.user(user)
            p.pass_(password)
            n = len(p.list()[1])
            return [b"\r\n".join(p.retr(i + 1)[1]) for i in range(n)]
        finally:
            p.quit()

    def notices(self, n=1, what="the notice"):
        return wait_for(lambda: len(self.mailbox()) >= n and self.mailbox(), what=what)

    def raw(self):
        s = socket.create_connection(("127.0.0.1", self.ports["smtp"]), timeout=10)
        self.addCleanup(s.close)
        f = s.makefile("rb")
        f.readline()

        def cmd(line):
            s.sendall(line.encode() + b"\r\n")
            while True:
                r = f.readline().decode().rstrip("\r\n")
                if r[3:4] != "-":
                    return r
        cmd("EHLO client.test")
        return cmd


class Parameters(DsnTest):
    def test_ehlo_lists_dsn_on_every_port(self):
        self.start()
        for port in ("smtp", "submission"):
            with smtplib.SMTP("127.0.0.1", self.ports[port], timeout=10) as s:
                s.ehlo("client.test")
                self.assertTrue(s.has_extn("dsn"), port)
        import ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP_SSL("127.0.0.1", self.ports["submissions"], timeout=10,
                              context=ctx) as s:
            s.ehlo("client.test")
            self.assertTrue(s.has_extn("dsn"), "submissions")

    def test_malformed_and_repeated_parameters(self):
        self.start()
        cmd = self.raw()
        for line, want in [
            ("MAIL FROM:<a@remote.test> RET=BODY", "501 5.5.4 Bad MAIL parameter (RET must be "
                                                   "FULL or HDRS)"),
            ("MAIL FROM:<a@remote.test> RET=FULL RET=HDRS", "501 5.5.4 Bad MAIL parameter "
                                                            "(duplicate RET)"),
            ("MAIL FROM:<a@remote.test> ENVID=a+2b", "501 5.5.4 Bad MAIL parameter (ENVID must "
                                                     "be xtext of at most 100 characters)"),
            ("MAIL FROM:<a@remote.test> ENVID=" + "x" * 101,
             "501 5.5.4 Bad MAIL parameter (ENVID must be xtext of at most 100 characters)"),
            ("MAIL FROM:<a@remote.test> ENVID=a ENVID=a", "501 5.5.4 Bad MAIL parameter "
                                                         "(duplicate ENVID)"),
            ("MAIL FROM:<a@remote.test> XENVID=a", "555 5.5.4 Unsupported option: XENVID=a"),
            ("MAIL FROM:<a@remote.test> RET=HDRS ENVID=" + "x" * 100, "250 2.1.0 Ok"),
            ("RCPT TO:<bob@example.test> NOTIFY=NEVER,FAILURE",
             "501 5.5.4 Bad RCPT parameter (NOTIFY must be NEVER or a list of SUCCESS, FAILURE, "
             "DELAY)"),
            ("RCPT TO:<bob@example.test> NOTIFY=DELAY,DELAY",
             "501 5.5.4 Bad RCPT parameter (NOTIFY must be NEVER or a list of SUCCESS, FAILURE, "
             "DELAY)"),
            ("RCPT TO:<bob@example.test> NOTIFY=FAILURE NOTIFY=DELAY",
             "501 5.5.4 Bad RCPT parameter (duplicate NOTIFY)"),
            ("RCPT TO:<bob@example.test> ORCPT=bob@example.test",
             "501 5.5.4 Bad RCPT parameter (ORCPT must be addr-type;xtext of at most 500 "
             "characters)"),
            ("RCPT TO:<bob@example.test> ORCPT=rfc822;a ORCPT=rfc822;a",
             "501 5.5.4 Bad RCPT parameter (duplicate ORCPT)"),
            ("RCPT TO:<bob@example.test> XORCPT=1", "555 5.5.4 Unsupported option: XORCPT=1"),
            ("RCPT TO:<bob@example.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+2Bx@example.test",
             "250 2.1.5 Ok"),
            ("RCPT TO:<bob@example.test> NOTIFY=NEVER", "250 2.1.5 Ok"),
            # The longest parameters fit the longer command line RFC 3461 allows.
            ("RCPT TO:<carol@example.test> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;" + "c" * 493,
             "250 2.1.5 Ok"),
            ("RCPT TO:<carol@example.test> ORCPT=rfc822;" + "c" * 494,
             "501 5.5.4 Bad RCPT parameter (ORCPT must be addr-type;xtext of at most 500 "
             "characters)"),
        ]:
            self.assertEqual(cmd(line), want, line)


class Notices(DsnTest):
    def test_success_notice_for_local_delivery(self):
        self.start()
        self.send(["bob@example.test"], mail_options=["ENVID=QQ314159"],
                  rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;bob+2Bold@example.test"])
        note = self.notices()[0].decode("latin-1")
        self.assertIn("Return-Path: <>", note)
        self.assertIn("Subject: Successful Mail Delivery Report", note)
        self.assertIn("report-type=delivery-status", note)
        self.assertIn("Original-Envelope-Id: QQ314159", note)
        self.assertIn("Original-Recipient: rfc822; bob+old@example.test", note)
        self.assertIn("Final-Recipient: rfc822; bob@example.test", note)
        self.assertIn("Action: delivered", note)
        self.assertIn("Status: 2.0.0", note)
        self.assertIn("Subject: dsn test", note)
        self.assertNotIn("the body text stays home", note)
        # Bob has the message itself; a recipient without NOTIFY=SUCCESS gets no notice.
        self.assertEqual(len(self.mailbox("bob@example.test", "bob-password-1")), 1)
        self.send(["bob@example.test"])
        wait_for(lambda: len(self.mailbox("bob@example.test", "bob-password-1")) == 2,
                 what="the second message")
        self.assertEqual(len(self.mailbox()), 1)

    def test_null_sender_gets_no_notice(self):
        self.start()
        self.send(["bob@example.test"], sender="", rcpt_options=["NOTIFY=SUCCESS"])
        wait_for(lambda: len(self.mailbox("bob@example.test", "bob-password-1")) == 1,
                 what="the message")
        self.assertIn("event=message", self.read_log())
        self.assertEqual(self.mailbox(), [])

    def test_next_hop_with_dsn_gets_the_parameters_verbatim(self):
        self.sink.extensions.append("DSN")
        self.start()
        self.send(["bob@dest.test"], mail_options=["RET=HDRS", "ENVID=QQ+2B314159"],
                  rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob+40x@dest.test"])
        m = wait_for(lambda: self.sink.messages, what="the relayed message")[0]
        self.assertIn("RET=HDRS ENVID=QQ+2B314159", m["mail_params"])
        self.assertEqual(self.sink.rcpt_params["bob@dest.test"],
                         "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+40x@dest.test")
        # That hop reports; postern sends no "relayed" notice of its own. The notice would be
        # logged with the delivery, in the same line batch.
        self.wait_log("status=sent")
        self.assertNotIn("event=notice", self.read_log())
        self.assertEqual(self.mailbox(), [])

    def test_next_hop_without_dsn_gets_a_relayed_notice(self):
        self.start()
        self.send(["bob@dest.test", "carol@dest.test"], mail_options=["ENVID=e1"],
                  rcpt_options=["NOTIFY=SUCCESS"])
        m = wait_for(lambda: self.sink.messages, what="the relayed message")[0]
        self.assertNotIn("ENVID", m["mail_params"])
        self.assertEqual(self.sink.rcpt_params["bob@dest.test"], "")
        note = self.notices()[0].decode("latin-1")
        self.assertIn("Action: relayed", note)
        self.assertIn("Original-Envelope-Id: e1", note)
        self.assertIn("Final-Recipient: rfc822; bob@dest.test", note)
        self.assertIn("Final-Recipient: rfc822; carol@dest.test", note)
        self.assertIn("Remote-MTA: dns; 127.0.0.1", note)
        self.wait_log("event=notice msg=")
        self.assertEqual(len(self.mailbox()), 1)

    def test_failure_with_ret_hdrs_echoes_envid_and_orcpt(self):
        self.sink.rcpt_replies = {"bob@dest.test": ["550 5.1.1 no such user bob"]}
        self.start()
        self.send(["bob@dest.test"], mail_options=["RET=HDRS", "ENVID=QQ314159"],
                  rcpt_options=["NOTIFY=FAILURE", "ORCPT=rfc822;bob+2Bold@dest.test"])
        note = self.notices()[0].decode("latin-1")
        self.assertIn("Subject: Undelivered Mail Returned to Sender", note)
        self.assertIn("Original-Envelope-Id: QQ314159", note)
        self.assertIn("Original-Recipient: rfc822; bob+old@dest.test", note)
        self.assertIn("Action: failed", note)
        self.assertIn("Status: 5.1.1", note)
        self.assertIn("Content-Type: text/rfc822-headers", note)
        self.assertIn("Subject: dsn test", note)
        self.assertNotIn("the body text stays home", note)

    def test_failure_with_ret_full_returns_the_message(self):
        self.sink.rcpt_replies = {"bob@dest.test": ["550 5.1.1 no such user bob"]}
        self.start()
        self.send(["bob@dest.test"], mail_options=["RET=FULL"])
        note = self.notices()[0].decode("latin-1")
        self.assertIn("Action: failed", note)
        self.assertIn("Content-Type: message/rfc822", note)
        self.assertIn("the body text stays home", note)

    def test_notify_never_and_notify_without_failure_suppress_the_bounce(self):
        self.sink.rcpt_replies = {"bob@dest.test": ["550 5.1.1 no such user bob"],
                                  "carol@dest.test": ["550 5.1.1 no such user carol"]}
        self.start()
        self.send(["bob@dest.test"], rcpt_options=["NOTIFY=NEVER"])
        self.wait_log("route=not-asked")
        self.send(["carol@dest.test"], rcpt_options=["NOTIFY=SUCCESS,DELAY"])
        wait_for(lambda: self.read_log().count("route=not-asked") == 2, what="the second")
        self.wait_queue_empty()
        self.assertEqual(self.mailbox(), [])
        # The same failure without NOTIFY bounces (the default is FAILURE,DELAY).
        self.send(["bob@dest.test"])
        self.assertIn("Action: failed", self.notices()[0].decode("latin-1"))

    def test_delay_notice_once_after_the_configured_time(self):
        self.sink.rcpt_replies = {"bob@dest.test": ["451 4.3.0 try later"]}
        self.start("delay_notice = 1s\n")
        self.send(["bob@dest.test"], mail_options=["ENVID=slow1"])
        # The first attempt comes with the runner's next scan, when the message is already
        # older than the 1s configured here.
        self.wait_log("event=notice")
        note = self.notices()[0].decode("latin-1")
        self.assertIn("Subject: Delayed Mail (still being retried)", note)
        self.assertIn("Action: delayed", note)
        self.assertIn("Status: 4.3.0", note)
        self.assertIn("Original-Envelope-Id: slow1", note)
        self.assertIn("451 4.3.0 try later", note)
        # Once: the next attempt is deferred too, and no second notice comes.
        self.ok("queue", "flush")
        wait_for(lambda: self.read_log().count("status=deferred") >= 2, what="a second attempt")
        self.assertEqual(self.read_log().count("action=delayed"), 1)
        self.assertEqual(len(self.mailbox()), 1)

    def test_notify_without_delay_gets_no_delay_notice(self):
        self.sink.rcpt_replies = {"bob@dest.test": ["451 4.3.0 try later"]}
        self.start("delay_notice = 1s\n")
        self.send(["bob@dest.test"], rcpt_options=["NOTIFY=FAILURE"])
        self.wait_log("status=deferred")
        self.assertNotIn("event=notice", self.read_log())
        self.assertEqual(self.mailbox(), [])

    def test_no_delay_notice_before_the_configured_time(self):
        self.sink.rcpt_replies = {"bob@dest.test": ["451 4.3.0 try later"]}
        self.start("delay_notice = 1h\n")
        self.send(["bob@dest.test"])
        self.wait_log("status=deferred")
        self.assertNotIn("event=notice", self.read_log())
        self.assertEqual(self.mailbox(), [])
