"""A nearly full disk: [smtp] min_free_space keeps a reserve on the database's file system.

While free space is below it, new mail gets "452 4.3.1 Insufficient system storage" at MAIL and
at DATA, and POP3 users can still log in, fetch and delete; a login whose relay window cannot be
written (the disk is full to the last block) still succeeds, without a window. The database lives
on a small tmpfs mounted for the test, so this needs root (as in CI); it is skipped otherwise.
"""
import os
import subprocess
import time

from harness import PosternTest
from test_conn import Client

ALICE = "alice@example.test"
PASSWORD = "alice secret 1"
# 256K messages: the default reserve ("auto") is twice that, 512K, on a 4M file system.
MAX_MESSAGE = 256 * 1024
RESERVE = 2 * MAX_MESSAGE
INSUFFICIENT = "452 4.3.1 Insufficient system storage"


class DiskReserve(PosternTest):
    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest("mounting a tmpfs needs root")
        self.disk = os.path.join(self.dir, "disk")
        os.mkdir(self.disk)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", self.disk],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            self.skipTest(f"cannot mount a tmpfs: {r.stderr.strip()}")
        # Cleanups run last in, first out: the server (started later) stops before this.
        self.addCleanup(subprocess.run, ["umount", "-l", self.disk], capture_output=True,
                        timeout=30)
        self.db = os.path.join(self.disk, "postern.db")
        self.write_config(f"[server]\ndatabase = disk/postern.db\n"
                          f"[smtp]\nmax_message_size = {MAX_MESSAGE}\n"
                          "[pop3]\nplaintext_auth = yes\n")
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", ALICE, input=PASSWORD + "\n")
        self.filler = os.path.join(self.disk, "filler")

    # ---- helpers ----
    def free_bytes(self):
        v = os.statvfs(self.disk)
        return v.f_bavail * v.f_frsize

    def fill_to(self, left):
        """Grows the filler file until about `left` bytes are free (0: to the last block)."""
        chunk = b"\0" * 65536
        with open(self.filler, "ab") as f:
            try:
                while self.free_bytes() > left:
                    f.write(chunk[:max(4096, min(len(chunk), self.free_bytes() - left))])
                    f.flush()
            except OSError:
                pass  # ENOSPC: full
        self.assertLessEqual(self.free_bytes(), max(left, 0) + 65536)

    def smtp(self):
        c = Client(self.ports["smtp"])
        self.addCleanup(c.close)
        self.assertTrue(c.line().startswith("220 "))
        c.send("EHLO client.example\r\n")
        c.reply()
        return c

    def cmd(self, c, line):
        c.send(line + "\r\n")
        return c.reply()[-1]

    def mail_until(self, want, timeout=10.0):
        """MAIL on fresh sessions until the reply starts with want (the reserve's answer is
        cached for a second; a fresh session each time stays clear of the error limit)."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.smtp()
            reply = self.cmd(c, "MAIL FROM:<x@remote.test>")
            c.close()
            if reply.startswith(want):
                return reply
            self.assertLess(time.monotonic(), deadline, f"MAIL still answers {reply!r}")
            time.sleep(0.1)

    def pop(self):
        p = Client(self.ports["pop3"])
        self.addCleanup(p.close)
        self.assertEqual(p.line(), "+OK postern ready.")
        return p

    def pop_cmd(self, p, line):
        p.send(line + "\r\n")
        return p.line()

    def login(self, p):
        self.assertEqual(self.pop_cmd(p, f"USER {ALICE}"), "+OK Send your password")
        return self.pop_cmd(p, f"PASS {PASSWORD}")

    def mailbox_count(self):
        import sqlite3
        con = sqlite3.connect(self.db, timeout=10)
        try:
            return con.execute("SELECT count(*) FROM mailbox").fetchone()[0]
        finally:
            con.close()

    # ---- the tests ----
    def test_reserve_refuses_new_mail_and_pop3_still_works(self):
        self.start_server()
        # A message while there is room.
        a = self.smtp()
        self.assertEqual(self.cmd(a, "MAIL FROM:<x@remote.test>"), "250 2.1.0 Ok")
        self.assertEqual(self.cmd(a, f"RCPT TO:<{ALICE}>"), "250 2.1.5 Ok")
        self.assertTrue(self.cmd(a, "DATA").startswith("354"))
        a.send(b"Subject: one\r\n\r\n" + b"x" * 1000 + b"\r\n.\r\n")
        self.assertTrue(a.reply()[-1].startswith("250 2.0.0 Ok: queued as "))
        # A second transaction is under way when the disk fills.
        self.assertEqual(self.cmd(a, "MAIL FROM:<x@remote.test>"), "250 2.1.0 Ok")
        self.assertEqual(self.cmd(a, f"RCPT TO:<{ALICE}>"), "250 2.1.5 Ok")

        self.fill_to(RESERVE // 2)
        self.assertEqual(self.mail_until("452"), INSUFFICIENT)
        # DATA asks again: the transaction already under way is refused too, and stays.
        self.assertEqual(self.cmd(a, "DATA"), INSUFFICIENT)
        self.assertEqual(self.cmd(a, "RSET"), "250 2.0.0 Ok")
        self.assertIn("event=disk-low", self.read_log())
        self.assertEqual(self.mailbox_count(), 1)

        # POP3 still works: log in, fetch, delete.
        p = self.pop()
        self.assertTrue(self.login(p).startswith("+OK Logged in: maildrop has 1 message "))
        self.assertEqual(self.pop_cmd(p, "DELE 1"), "+OK Message 1 deleted")
        self.assertEqual(self.pop_cmd(p, "QUIT"), "+OK Bye: 1 message deleted")
        self.assertEqual(self.mailbox_count(), 0)

        # Space freed: mail is taken again.
        os.unlink(self.filler)
        self.assertEqual(self.mail_until("250"), "250 2.1.0 Ok")
        self.wait_log("event=disk-ok")

    def test_login_succeeds_when_the_window_cannot_be_written(self):
        self.start_server()
        self.fill_to(0)
        p = self.pop()
        reply = self.login(p)
        self.assertTrue(reply.startswith("+OK Logged in: maildrop has 0 messages"), reply)
        self.assertEqual(self.pop_cmd(p, "STAT"), "+OK 0 0")
        self.assertEqual(self.pop_cmd(p, "QUIT"), "+OK Bye")
        log = self.read_log()
        self.assertIn("event=window-failed", log)
        self.assertIn("login=without-window", log)
        self.assertNotIn("event=window-opened", log)


if __name__ == "__main__":
    import unittest
    unittest.main()
