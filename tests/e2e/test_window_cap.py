"""The POP-before-SMTP window's recipient cap (relay.window_max_recipients) against the real
binary: it holds per client address over the window's life, whoever logs in and however many
SMTP sessions from that address relay at once. The check and the count are one statement in the
writer (storage/windows.c, store_window_take_relay), so nothing a client times can get past it.

Only 127.0.0.0/8 is used; POP3 logins are raw USER/PASS in plaintext (pop3.plaintext_auth).
"""
import sqlite3
import time

from test_conn import Client
from test_smtp import PASSWORD, ROAMING, TLS_CONFIG, SmtpTest, denied

CAP = 3


class WindowCap(SmtpTest):
    def config_cap(self, extra=""):
        self.write_config(TLS_CONFIG + f"[relay]\nwindow_max_recipients = {CAP}\n" +
                          "[pop3]\nplaintext_auth = yes\n" + extra)

    def relayed(self):
        return self.query("SELECT relayed FROM windows")[0][0]

    def pop3_login(self, user, source=ROAMING):
        c = Client(self.ports["pop3"], source=source)
        self.addCleanup(c.close)
        self.assertTrue(c.line().startswith("+OK"))
        c.send(f"USER {user}\r\n")
        self.assertTrue(c.line().startswith("+OK"))
        c.send(f"PASS {PASSWORD}\r\n")
        self.assertTrue(c.line().startswith("+OK"), user)
        c.send("QUIT\r\n")
        self.assertTrue(c.line().startswith("+OK"))

    def test_parallel_sessions_never_relay_more_than_the_cap(self):
        self.config_cap()
        self.ok("window", "open", ROAMING, "--user", "alice@example.test")
        self.start()
        sessions, per_session = 8, 4
        conns = []
        for _ in range(sessions):
            c = self.connect(source=ROAMING)
            self.ehlo(c)
            self.assertEqual(self.cmd(c, "MAIL FROM:<alice@example.test>"), ["250 2.1.0 Ok"])
            conns.append(c)
        # The test holds the database's write lock while every session sends its RCPTs, so
        # each one reads the count before any is written: the worst interleaving parallel
        # sessions can meet. Only the writer's own check can keep the cap then.
        lock = sqlite3.connect(self.db, timeout=10, isolation_level=None)
        self.addCleanup(lock.close)
        lock.execute("BEGIN IMMEDIATE")
        try:
            for i, c in enumerate(conns):
                c.send("".join(f"RCPT TO:<s{i}r{j}@remote.test>\r\n"
                               for j in range(per_session)))
            deadline = time.monotonic() + 10
            while (self.read_log().count("reason=pop-window") < sessions and
                   time.monotonic() < deadline):
                time.sleep(0.05)
        finally:
            lock.execute("ROLLBACK")
        accepted = 0
        for i, c in enumerate(conns):
            for j in range(per_session):
                reply = c.line()
                if reply == "250 2.1.5 Ok":
                    accepted += 1
                else:
                    self.assertEqual(reply, denied(f"s{i}r{j}@remote.test"))
        self.assertEqual(accepted, CAP)
        self.assertEqual(self.relayed(), CAP)
        self.assertIn("reason=window-limit", self.read_log())

    def test_alternating_logins_of_two_users_never_pass_the_cap(self):
        self.config_cap()
        self.start()
        accepted = 0
        for rnd in range(3):
            for user in ("alice@example.test", "bob@example.test"):
                self.pop3_login(user)
                c = self.connect(source=ROAMING)
                self.ehlo(c)
                self.assertEqual(self.cmd(c, f"MAIL FROM:<{user}>"), ["250 2.1.0 Ok"])
                for j in range(2):
                    rcpt = f"{rnd}{user[0]}{j}@remote.test"
                    reply = self.cmd(c, f"RCPT TO:<{rcpt}>")
                    if reply == ["250 2.1.5 Ok"]:
                        accepted += 1
                    else:
                        self.assertEqual(reply, [denied(rcpt)])
                self.cmd(c, "QUIT")
        self.assertEqual(accepted, CAP)
        self.assertEqual(self.relayed(), CAP)
        # The window is still open (renewed by every login): only its expiry or a close by hand
        # resets the count.
        self.assertIn("bob@example.test", self.cli("window", "list").out)
        self.ok("window", "close", ROAMING)
        self.pop3_login("alice@example.test")
        c = self.connect(source=ROAMING)
        self.ehlo(c)
        self.cmd(c, "MAIL FROM:<alice@example.test>")
        self.assertEqual(self.cmd(c, "RCPT TO:<again@remote.test>"), ["250 2.1.5 Ok"])
