"""Messages larger than a transaction's in-memory part (128 KiB, server/smtp/smtp_tx.h): the rest
spills into a nameless spool file in "<database>-spool" (storage/spool.h) and the writer copies it
into the database at the end of DATA.

- A message of several in-memory parts is stored byte for byte: 8-bit octets, bare LF made CRLF,
  dot-stuffed lines (one starting exactly at each spill boundary) unstuffed, sent in odd pieces.
- While such a message arrives the server holds a spool file that has no name (a deleted file in
  /proc/PID/fd); a client that drops the connection mid-body leaves no spool file, no open
  descriptor and no row.
- A restart removes spool files a crash left behind, and makes the directory 0700 again.
- The outbound facts (8-bit octets, Return-Path line length) are recorded with the message.
Only 127.0.0.0/8 is used; every wait is bounded.
"""
import os
import random
import sqlite3
import stat
import time

from test_smtp import SmtpTest, content_of

MEMORY_BYTES = 128 * 1024  # SMTP_TX_MEMORY_BYTES


def build_message(size, seed=7):
    """(wire, content): wire is what the client sends before ".\r\n", content what must be
    stored. Lines of random octets (8-bit included, no CR/LF); some end in a bare LF (stored as
    CRLF; the line after one is not a line start, so it is sent and stored as it is); a line
    starting with "." is stuffed; at every multiple of MEMORY_BYTES of content a stuffed line
    starts exactly there."""
    rng = random.Random(seed)
    wire, content = bytearray(b"Subject: big\r\n\r\n"), bytearray(b"Subject: big\r\n\r\n")
    after_bare_lf = False
    boundary = MEMORY_BYTES
    while len(content) < size:
        room = boundary - len(content)
        if 2 < room <= 300:
            n = room - 2  # a filler line so that the next line starts on the boundary
            line = bytes(rng.choice(b"abcdefgh\x80\xe9\xff") for _ in range(n))
            nxt_dot = True
        else:
            n = rng.randint(0, 200)
            line = bytes(rng.choice(range(256)) for _ in range(n)).replace(b"\r", b"x") \
                .replace(b"\n", b"y")
            if rng.random() < 0.15:
                line = b"." + line
            nxt_dot = False
        bare = rng.random() < 0.1 and not nxt_dot
        if line.startswith(b".") and not after_bare_lf:
            wire += b"." + line
        else:
            wire += line
        content += line + b"\r\n"
        wire += b"\n" if bare else b"\r\n"
        after_bare_lf = bare
        if nxt_dot:
            line = b"..boundary"
            wire += b"." + line + b"\r\n"
            content += line + b"\r\n"
            after_bare_lf = False
            boundary += MEMORY_BYTES
        elif len(content) > boundary:
            boundary += MEMORY_BYTES
    # A last CRLF line, so that the terminator that follows starts a line.
    wire += b"end\r\n"
    content += b"end\r\n"
    return bytes(wire), bytes(content)


class Spool(SmtpTest):
    def spool_dir(self):
        return self.db + "-spool"

    def spool_fds(self):
        """The server's descriptors that point into the spool directory."""
        out = []
        fd_dir = f"/proc/{self.server.pid}/fd"
        for fd in os.listdir(fd_dir):
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if "postern.db-spool/" in target:
                out.append(target)
        return out

    def send_in_pieces(self, c, data, seed=3):
        rng = random.Random(seed)
        i = 0
        while i < len(data):
            n = rng.choice((1, 2, 3, 7, 1000, 4093, 65536, 100001))
            c.send(data[i:i + n])
            i += n

    def test_big_message_byte_for_byte(self):
        self.start()
        wire, content = build_message(5 * MEMORY_BYTES + 12345)
        c = self.connect()
        self.ehlo(c)
        self.assertEqual(self.cmd(c, "MAIL FROM:<x@remote.test> BODY=8BITMIME"), ["250 2.1.0 Ok"])
        self.cmd(c, "RCPT TO:<alice@example.test>")
        self.assertTrue(self.cmd(c, "DATA")[0].startswith("354"))
        self.send_in_pieces(c, wire + b".\r\n")
        reply = c.reply()
        self.assertTrue(reply[0].startswith("250 2.0.0 Ok: queued as "), reply)
        stored = self.bodies_for("alice@example.test")[0]
        self.assertEqual(len(content_of(stored)), len(content))
        self.assertEqual(content_of(stored), content)
        self.assertTrue(stored.startswith(b"Return-Path: <x@remote.test>\r\nReceived: "))
        self.assertEqual(self.query("SELECT size FROM messages")[0][0], len(stored))
        rp_len = stored.index(b"\r\n") + 2
        self.assertEqual(self.query("SELECT eightbit, return_path_bytes FROM message_facts"),
                         [(1, rp_len)])
        # The spool file went with the transaction, and never had a name.
        self.assertEqual(os.listdir(self.spool_dir()), [])
        self.assertEqual(self.spool_fds(), [])
        # And the same connection goes on with a small message (no spool file at all).
        self.assertEqual(self.transaction(c, "x@remote.test", ["bob@example.test"])[-1][:3], "250")
        # The facts go with their message, also on a connection without foreign keys.
        con = sqlite3.connect(self.db, timeout=10)
        with con:
            con.execute("DELETE FROM mailbox")
        con.close()
        self.assertEqual(self.query("SELECT count(*) FROM messages")[0][0], 0)
        self.assertEqual(self.query("SELECT count(*) FROM message_facts")[0][0], 0)

    def test_dropped_mid_body_leaves_nothing(self):
        self.start()
        c = self.connect()
        self.ehlo(c)
        self.cmd(c, "MAIL FROM:<x@remote.test>")
        self.cmd(c, "RCPT TO:<alice@example.test>")
        self.cmd(c, "DATA")
        wire, _ = build_message(8 * MEMORY_BYTES)
        c.send(wire)
        # The server is spooling: it holds a spool file, and that file has no name.
        deadline = time.monotonic() + 10
        while not self.spool_fds() and time.monotonic() < deadline:
            time.sleep(0.05)
        fds = self.spool_fds()
        self.assertEqual(len(fds), 1, fds)
        self.assertTrue(fds[0].endswith("(deleted)"), fds)
        self.assertEqual(os.listdir(self.spool_dir()), [])
        c.close()
        self.wait_log("reason=client-closed")
        deadline = time.monotonic() + 10
        while self.spool_fds() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.spool_fds(), [])
        self.assertEqual(os.listdir(self.spool_dir()), [])
        self.assertEqual(self.message_count(), 0)
        self.assertEqual(self.query("SELECT count(*) FROM mailbox")[0][0], 0)
        self.assertEqual(self.query("SELECT count(*) FROM message_facts")[0][0], 0)

    def test_too_big_spooled_message_leaves_nothing(self):
        self.write_config(self.extra_config + "[smtp]\nmax_message_size = 300K\n")
        self.start()
        c = self.connect()
        self.ehlo(c)
        wire, _ = build_message(4 * MEMORY_BYTES)
        self.cmd(c, "MAIL FROM:<x@remote.test>")
        self.cmd(c, "RCPT TO:<alice@example.test>")
        self.cmd(c, "DATA")
        c.send(wire + b".\r\n")
        self.assertTrue(c.reply()[0].startswith("552 5.3.4"))
        self.assertEqual(self.spool_fds(), [])
        self.assertEqual(self.message_count(), 0)

    def test_restart_cleans_leftovers(self):
        self.start()
        self.assertEqual(stat.S_IMODE(os.stat(self.spool_dir()).st_mode), 0o700)
        self.stop_server()
        # What a crash between creating a spool file and unlinking it would leave.
        for name in ("tx-AbC123", "tx-zzzzzz"):
            with open(os.path.join(self.spool_dir(), name), "wb") as f:
                f.write(b"half a message")
        os.chmod(self.spool_dir(), 0o755)
        self.start()
        self.assertEqual(os.listdir(self.spool_dir()), [])
        self.assertEqual(stat.S_IMODE(os.stat(self.spool_dir()).st_mode), 0o700)
        self.assertEqual(self.message_count(), 0)


if __name__ == "__main__":
    import unittest
    unittest.main()
