"""Revoking an account ends its relaying: `user del` and `user passwd` close the user's
POP-before-SMTP windows at once, and a POP3 session logged in before the change neither renews
its window nor stays connected. Against the real binary, on loopback only.
"""
import time

import test_smtp
from test_conn import Client
from test_smtp import PASSWORD, ROAMING, denied

POP3_PLAINTEXT = "[pop3]\nplaintext_auth = yes\n"
TLS_CONFIG = "[tls]\ncertificate = cert.pem\nkey = key.pem\n"


class Revocation(test_smtp.SmtpTest):
    def relay_attempt(self, source, sender="alice@example.test", rcpt="friend@remote.test"):
        c = self.connect(source=source)
        self.ehlo(c)
        self.assertEqual(self.cmd(c, f"MAIL FROM:<{sender}>"), ["250 2.1.0 Ok"])
        return c, self.cmd(c, f"RCPT TO:<{rcpt}>")

    def pop3_login(self, source=ROAMING):
        c = Client(self.ports["pop3"], source=source, timeout=10)
        self.addCleanup(c.close)
        self.assertTrue(c.line().startswith("+OK"))
        c.send("USER alice@example.test\r\n")
        self.assertTrue(c.line().startswith("+OK"))
        c.send(f"PASS {PASSWORD}\r\n")
        reply = c.line()
        self.assertTrue(reply.startswith("+OK Logged in"), reply)
        return c

    def window_keys(self):
        return [l.split()[0] for l in self.ok("window", "list").out.splitlines()]

    def test_user_del_closes_the_window_at_once(self):
        self.write_config(TLS_CONFIG + POP3_PLAINTEXT)
        self.start()
        c = self.pop3_login()
        c.send("QUIT\r\n")
        c.line()
        _, reply = self.relay_attempt(ROAMING)
        self.assertEqual(reply, ["250 2.1.5 Ok"])
        r = self.ok("user", "del", "alice@example.test")
        self.assertEqual(r.out, "deleted user alice@example.test\n")
        self.assertEqual(self.window_keys(), [])
        # The very next RCPT is refused: no window survives its user.
        _, reply = self.relay_attempt(ROAMING, sender="bob@example.test")
        self.assertEqual(reply, [denied("friend@remote.test")])

    def test_user_passwd_closes_the_window_at_once(self):
        self.ok("window", "open", ROAMING, "--user", "alice@example.test")
        self.ok("window", "open", "127.0.0.5", "--user", "bob@example.test")
        self.start()
        _, reply = self.relay_attempt(ROAMING)
        self.assertEqual(reply, ["250 2.1.5 Ok"])
        self.ok("user", "passwd", "alice@example.test", input="a new password\n")
        self.assertEqual(self.window_keys(), ["127.0.0.5"])  # only alice's window went
        _, reply = self.relay_attempt(ROAMING)
        self.assertEqual(reply, [denied("friend@remote.test")])

    def test_connected_session_stops_renewing_and_ends_after_passwd(self):
        # Renewals every second (half the window): without the check, the session would keep
        # the window open for as long as it stays connected.
        self.write_config(TLS_CONFIG + POP3_PLAINTEXT + "[relay]\nwindow = 2s\n")
        self.start()
        c = self.pop3_login()
        self.assertIn(ROAMING, self.window_keys())
        self.ok("user", "passwd", "alice@example.test", input="a new password\n")
        # The session is told and closed at its next renewal.
        line = c.line()
        self.assertEqual(line, "-ERR [AUTH] Account deleted or password changed: log in again")
        self.assertTrue(c.closed(timeout=10))
        self.wait_log("event=window-revoked key=127.0.0.3 user=alice@example.test")
        # Closed by passwd and never opened again: neither the renewal nor the close renewed it.
        time.sleep(2.5)
        self.assertEqual(self.window_keys(), [])
        _, reply = self.relay_attempt(ROAMING)
        self.assertEqual(reply, [denied("friend@remote.test")])

    def test_connected_session_of_a_deleted_user_ends(self):
        self.write_config(TLS_CONFIG + POP3_PLAINTEXT + "[relay]\nwindow = 2s\n")
        self.start()
        c = self.pop3_login()
        self.ok("user", "del", "alice@example.test")
        self.assertEqual(c.line(),
                         "-ERR [AUTH] Account deleted or password changed: log in again")
        self.assertTrue(c.closed(timeout=10))
        self.assertEqual(self.window_keys(), [])

    def test_unchanged_account_keeps_renewing(self):
        # The check passes while nothing changed: the window outlives its 2 s by renewals.
        self.write_config(TLS_CONFIG + POP3_PLAINTEXT + "[relay]\nwindow = 2s\n")
        self.start()
        c = self.pop3_login()
        self.ok("user", "passwd", "bob@example.test", input="bob's new one\n")
        time.sleep(3.5)
        self.assertIn(ROAMING, self.window_keys())
        c.send("NOOP\r\n")
        self.assertEqual(c.line(), "+OK")
