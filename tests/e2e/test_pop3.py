"""The POP3 service against the real binary (RFC 1939, 2449, 2595, 5034): every command in every
state and its error paths, logins (USER/PASS, AUTH PLAIN and LOGIN), STLS and POP3S, the [IN-USE]
lock, UPDATE and dropped connections, TOP, UIDL stability, a 20 MiB message read by a slow
reader, and the POP-before-SMTP window a login opens.

There is no SMTP delivery to fill a mailbox with yet, so messages are written straight into the
database with sqlite3 (add_message), exactly as storage/mailbox.c stores them: the body once in
messages, one mailbox row with the UIDL "<meta uidl_tag>.<mailbox id>.<received_ms>".
"""
import base64
import hashlib
import os
import poplib
import socket
import sqlite3
import ssl
import threading
import time

from harness import PosternTest, free_port
from test_conn import Client, client_tls_context, make_cert

PLAINTEXT = "[pop3]\nplaintext_auth = yes\n"
TLS_CONFIG = "[tls]\ncertificate = cert.pem\nkey = key.pem\n"
ALICE, BOB = "alice@example.test", "bob@example.test"
PW = {ALICE: "alice secret 1", BOB: "bob-secret-2"}


def body_of(subject, lines):
    return (f"From: x@example.test\r\nSubject: {subject}\r\n\r\n" +
            "".join(l + "\r\n" for l in lines)).encode()


class Pop3Test(PosternTest):
    extra_config = PLAINTEXT

    def setUp(self):
        super().setUp()
        self.ok("domain", "add", "example.test")
        for u in (ALICE, BOB):
            self.ok("user", "add", u, input=PW[u] + "\n")

    # ---- helpers ----
    def add_message(self, user, body, received_ms=None):
        received_ms = received_ms or int(time.time() * 1000)
        db = sqlite3.connect(self.db, timeout=30)
        try:
            uid = db.execute("SELECT id FROM users WHERE address = ?", (user,)).fetchone()[0]
            tag = db.execute("SELECT value FROM meta WHERE key = 'uidl_tag'").fetchone()[0]
            cur = db.execute("INSERT INTO messages(sender, size, received_ms, body) "
                             "VALUES ('x@example.test', ?, ?, ?)", (len(body), received_ms, body))
            mid = cur.lastrowid
            cur = db.execute("INSERT INTO mailbox(user_id, message_id, uidl, size, added_ms) "
                             "VALUES (?, ?, '', ?, ?)", (uid, mid, len(body), received_ms))
            eid = cur.lastrowid
            db.execute("UPDATE mailbox SET uidl = ? WHERE id = ?",
                       (f"{tag}.{eid}.{received_ms}", eid))
            db.commit()
        finally:
            db.close()
        return eid

    def mailbox_count(self, user):
        db = sqlite3.connect(self.db, timeout=30)
        try:
            return db.execute("SELECT count(*) FROM mailbox JOIN users ON users.id = user_id "
                              "WHERE address = ?", (user,)).fetchone()[0]
        finally:
            db.close()

    def pop(self, user=ALICE):
        p = poplib.POP3("127.0.0.1", self.ports["pop3"], timeout=10)
        self.addCleanup(close_quietly, p)
        p.user(user)
        p.pass_(PW[user])
        return p

    def raw(self, service="pop3", tls=False, greet=True):
        c = Client(self.ports[service], tls=tls, timeout=10)
        self.addCleanup(c.close)
        if greet:
            self.assertEqual(c.line(), "+OK postern ready.")
        return c

    def cmd(self, c, line):
        c.send(line + "\r\n")
        return c.line()

    def multi(self, c):
        lines = []
        while True:
            ln = c.line()
            if ln == ".":
                return lines
            lines.append(ln)

    def login_raw(self, c, user=ALICE):
        self.assertEqual(self.cmd(c, f"USER {user}"), "+OK Send your password")
        reply = self.cmd(c, f"PASS {PW[user]}")
        self.assertTrue(reply.startswith("+OK Logged in"), reply)
        return reply

    def windows(self):
        r = self.ok("window", "list")
        return r.out


def close_quietly(p):
    try:
        p.close()
    except OSError:
        pass


class Commands(Pop3Test):
    def setUp(self):
        super().setUp()
        self.bodies = [body_of("one", ["hello", ".dot line", "..two dots", "end"]),
                       body_of("two", ["x" * 100] * 5),
                       body_of("three", [])]
        self.ids = [self.add_message(ALICE, b) for b in self.bodies]
        self.start_server()

    def test_capa_in_each_state(self):
        c = self.raw()
        self.assertEqual(self.cmd(c, "CAPA"), "+OK Capability list follows")
        self.assertEqual(self.multi(c), ["TOP", "UIDL", "USER", "SASL PLAIN LOGIN", "RESP-CODES",
                                         "AUTH-RESP-CODE", "PIPELINING", "UTF8 USER",
                                         "IMPLEMENTATION postern"])
        self.login_raw(c)
        self.assertEqual(self.cmd(c, "capa"), "+OK Capability list follows")
        self.assertEqual(self.multi(c), ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE",
                                         "PIPELINING", "UTF8 USER", "IMPLEMENTATION postern"])

    def test_stat_list_uidl_retr_with_poplib(self):
        p = self.pop()
        sizes = [len(b) for b in self.bodies]
        self.assertEqual(p.stat(), (3, sum(sizes)))
        resp, lines, _ = p.list()
        self.assertEqual(resp, b"+OK 3 messages (%d octets)" % sum(sizes))
        self.assertEqual(lines, [b"%d %d" % (i + 1, s) for i, s in enumerate(sizes)])
        self.assertEqual(p.list(2), b"+OK 2 %d" % sizes[1])
        for i, b in enumerate(self.bodies):
            resp, lines, octets = p.retr(i + 1)
            self.assertEqual(resp, b"+OK %d octets" % len(b))
            # poplib undoes the stuffing; the lines are the body exactly.
            self.assertEqual(b"\r\n".join(lines) + b"\r\n", b)
        _, uidls, _ = p.uidl()
        self.assertEqual(len(set(u.split()[1] for u in uidls)), 3)
        self.assertEqual(p.noop(), b"+OK")
        self.assertEqual(p.quit(), b"+OK Bye")

    def test_retr_is_dot_stuffed_on_the_wire(self):
        c = self.raw()
        self.login_raw(c)
        self.assertEqual(self.cmd(c, "RETR 1"), f"+OK {len(self.bodies[0])} octets")
        self.assertEqual(self.multi(c), ["From: x@example.test", "Subject: one", "", "hello",
                                         "..dot line", "...two dots", "end"])
        self.assertEqual(self.cmd(c, "RETR 3"), f"+OK {len(self.bodies[2])} octets")
        self.assertEqual(self.multi(c), ["From: x@example.test", "Subject: three", ""])

    def test_top(self):
        c = self.raw()
        self.login_raw(c)
        self.assertEqual(self.cmd(c, "TOP 1 0"), "+OK Top of message follows")
        self.assertEqual(self.multi(c), ["From: x@example.test", "Subject: one", ""])
        self.assertEqual(self.cmd(c, "TOP 1 2"), "+OK Top of message follows")
        self.assertEqual(self.multi(c), ["From: x@example.test", "Subject: one", "", "hello",
                                         "..dot line"])
        self.assertEqual(self.cmd(c, "TOP 1 100"), "+OK Top of message follows")
        self.assertEqual(len(self.multi(c)), 7)
        for bad in ("TOP 1", "TOP", "TOP x 1", "TOP 1 -1", "TOP 1 1 1"):
            self.assertEqual(self.cmd(c, bad), "-ERR Syntax: TOP msg n", bad)
        self.assertEqual(self.cmd(c, "TOP 9 1"), "-ERR No such message")

    def test_wrong_state_and_errors(self):
        c = self.raw()
        for verb in ("STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL"):
            self.assertEqual(self.cmd(c, verb), "-ERR Command not valid in this state", verb)
        c = self.raw()
        self.assertEqual(self.cmd(c, "PASS x"), "-ERR Send USER first")
        self.assertEqual(self.cmd(c, "XYZZY"), "-ERR Command not implemented")
        self.assertEqual(self.cmd(c, "USER"), "-ERR Syntax: USER name")
        c = self.raw()  # a fresh one: the error counter closes after POP3_MAX_ERRORS
        self.login_raw(c)
        for verb in ("USER a", "PASS b", "AUTH PLAIN", "STLS"):
            self.assertEqual(self.cmd(c, verb), "-ERR Command not valid in this state", verb)
        self.assertEqual(self.cmd(c, "QUIT"), "+OK Bye")
        self.assertTrue(c.closed())
        c = self.raw()
        self.login_raw(c)
        for line, want in [("LIST x", "-ERR Syntax: LIST [msg]"), ("LIST 0", "-ERR No such message"),
                           ("LIST 4", "-ERR No such message"), ("UIDL 1 2", "-ERR Syntax: UIDL [msg]"),
                           ("RETR", "-ERR Syntax: RETR msg"), ("DELE 99", "-ERR No such message"),
                           ("STAT 1", "-ERR Syntax: STAT"), ("NOOP x", "-ERR Syntax: NOOP takes no argument")]:
            self.assertEqual(self.cmd(c, line), want, line)
        self.assertEqual(self.cmd(c, "RETR 1").split()[0], "+OK")
        self.multi(c)
        # Too many errors: closed.
        c = self.raw()
        for _ in range(9):
            self.assertEqual(self.cmd(c, "BAD"), "-ERR Command not implemented")
        self.assertEqual(self.cmd(c, "BAD"), "-ERR Command not implemented")
        self.assertEqual(c.line(), "-ERR Too many errors")
        self.assertTrue(c.closed())

    def test_dele_rset_and_quit_apply_in_update(self):
        c = self.raw()
        self.login_raw(c)
        self.assertEqual(self.cmd(c, "DELE 1"), "+OK Message 1 deleted")
        self.assertEqual(self.cmd(c, "DELE 1"), "-ERR Message 1 already deleted")
        for line in ("RETR 1", "LIST 1", "UIDL 1", "TOP 1 0"):
            self.assertEqual(self.cmd(c, line), "-ERR Message 1 already deleted", line)
        rest = len(self.bodies[1]) + len(self.bodies[2])
        self.assertEqual(self.cmd(c, "STAT"), f"+OK 2 {rest}")
        self.assertEqual(self.cmd(c, "LIST"), f"+OK 2 messages ({rest} octets)")
        self.assertEqual(self.multi(c), [f"2 {len(self.bodies[1])}", f"3 {len(self.bodies[2])}"])
        self.cmd(c, "UIDL")
        self.assertEqual([l.split()[0] for l in self.multi(c)], ["2", "3"])
        total = sum(len(b) for b in self.bodies)
        self.assertEqual(self.cmd(c, "RSET"), f"+OK Maildrop has 3 messages ({total} octets)")
        self.assertEqual(self.cmd(c, "STAT"), f"+OK 3 {total}")
        self.assertEqual(self.cmd(c, "DELE 2"), "+OK Message 2 deleted")
        self.assertEqual(self.cmd(c, "DELE 3"), "+OK Message 3 deleted")
        self.assertEqual(self.cmd(c, "QUIT"), "+OK Bye: 2 messages deleted")
        self.assertTrue(c.closed())
        self.wait_log("event=update user=alice@example.test deleted=2")
        self.assertEqual(self.mailbox_count(ALICE), 1)
        p = self.pop()
        self.assertEqual(p.stat(), (1, len(self.bodies[0])))

    def test_dropped_connection_deletes_nothing(self):
        c = self.raw()
        self.login_raw(c)
        self.assertEqual(self.cmd(c, "DELE 1"), "+OK Message 1 deleted")
        self.assertEqual(self.cmd(c, "DELE 2"), "+OK Message 2 deleted")
        c.close()
        self.wait_log("reason=client-closed")
        self.assertEqual(self.mailbox_count(ALICE), 3)
        p = self.pop()  # the lock was released too
        self.assertEqual(p.stat()[0], 3)

    def test_clients_that_go_while_their_reads_are_out(self):
        # A client that closes right after PASS or in the middle of a RETR leaves its read (the
        # snapshot, a chunk of the body) to finish after the connection is gone; with reader
        # threads (POSTERN_TEST_READER_THREADS, the e2e.threaded_reads run) those reads are out
        # on another thread then. The server must drop their results, free the maildrop, and go
        # on serving: each time, and after.
        big = b"Subject: big\r\n\r\n" + b"0123456789" * 30000 + b"\r\n"
        self.add_message(ALICE, big)

        def login():
            # A session that just went may hold the maildrop until its last job is back.
            deadline = time.monotonic() + 20
            while True:
                c = self.raw()
                self.assertEqual(self.cmd(c, f"USER {ALICE}"), "+OK Send your password")
                reply = self.cmd(c, f"PASS {PW[ALICE]}")
                if "[IN-USE]" not in reply or time.monotonic() > deadline:
                    self.assertTrue(reply.startswith("+OK Logged in: maildrop has 4 messages"),
                                    reply)
                    return c
                c.close()
                time.sleep(0.05)

        for i in range(12):
            if i % 2:
                c = self.raw()
                c.send(f"USER {ALICE}\r\nPASS {PW[ALICE]}\r\n")
                time.sleep(0.02 * (i % 3))
            else:
                c = login()
                c.send("RETR 4\r\n")
                c.sock.recv(1000)
            c.close()
        c = login()
        c.send("RETR 4\r\n")
        self.assertEqual(c.line(), f"+OK {len(big)} octets")
        self.assertEqual(len(self.multi(c)), big.count(b"\r\n"))

    def test_in_use(self):
        first = self.raw()
        self.login_raw(first)
        c = self.raw()
        self.cmd(c, f"USER {ALICE}")
        self.assertEqual(self.cmd(c, f"PASS {PW[ALICE]}"),
                         "-ERR [IN-USE] Maildrop is locked by another session")
        # Another user is not affected, and the first session's QUIT frees the maildrop.
        self.login_raw(self.raw(), BOB)
        self.assertEqual(self.cmd(first, "QUIT"), "+OK Bye")
        self.assertTrue(first.closed())
        time.sleep(0.2)
        self.cmd(c, f"USER {ALICE}")
        self.assertTrue(self.cmd(c, f"PASS {PW[ALICE]}").startswith("+OK Logged in"))

    def test_uidl_stable_across_sessions_and_never_reused(self):
        p = self.pop()
        _, first, _ = p.uidl()
        p.dele(3)
        p.quit()
        p = self.pop()
        _, second, _ = p.uidl()
        self.assertEqual(second, first[:2])
        self.assertEqual(p.uidl(2), b"+OK " + first[1])
        p.quit()
        # A new message never gets the UIDL of the deleted one (AUTOINCREMENT ids).
        self.add_message(ALICE, body_of("four", ["new"]))
        p = self.pop()
        _, third, _ = p.uidl()
        uids = [l.split()[1] for l in third]
        self.assertEqual(len(uids), 3)
        self.assertNotIn(first[2].split()[1], uids)
        for u in uids:
            self.assertTrue(1 <= len(u) <= 70 and all(0x21 <= ch <= 0x7e for ch in u))

    def test_pipelined_commands_wait_for_the_login(self):
        c = self.raw()
        c.send(f"USER {ALICE}\r\nPASS {PW[ALICE]}\r\nSTAT\r\nLIST 1\r\nQUIT\r\n")
        self.assertEqual(c.line(), "+OK Send your password")
        self.assertTrue(c.line().startswith("+OK Logged in"))
        self.assertTrue(c.line().startswith("+OK 3 "))
        self.assertEqual(c.line(), f"+OK 1 {len(self.bodies[0])}")
        self.assertEqual(c.line(), "+OK Bye")


class Logins(Pop3Test):
    def test_auth_plain_and_login(self):
        self.start_server()
        token = base64.b64encode(f"\0{ALICE}\0{PW[ALICE]}".encode()).decode()
        c = self.raw()
        self.assertTrue(self.cmd(c, f"AUTH PLAIN {token}").startswith("+OK Logged in"))
        self.cmd(c, "QUIT")
        c = self.raw()
        self.assertEqual(self.cmd(c, "AUTH PLAIN"), "+ ")
        self.assertTrue(self.cmd(c, token).startswith("+OK Logged in"))
        self.cmd(c, "QUIT")
        c = self.raw()
        self.assertEqual(self.cmd(c, "AUTH LOGIN"), "+ VXNlcm5hbWU6")
        self.assertEqual(self.cmd(c, base64.b64encode(BOB.encode()).decode()), "+ UGFzc3dvcmQ6")
        self.assertTrue(self.cmd(c, base64.b64encode(PW[BOB].encode()).decode())
                        .startswith("+OK Logged in"))
        c = self.raw()
        self.assertEqual(self.cmd(c, "AUTH LOGIN"), "+ VXNlcm5hbWU6")
        self.assertEqual(self.cmd(c, "*"), "-ERR Authentication cancelled")
        self.assertEqual(self.cmd(c, "AUTH CRAM-MD5"), "-ERR Unrecognized authentication type")
        self.assertEqual(self.cmd(c, "AUTH PLAIN !!!"), "-ERR Malformed authentication data")
        self.assertEqual(self.cmd(c, "AUTH"), "+OK Mechanisms follow")
        self.assertEqual(self.multi(c), ["PLAIN", "LOGIN"])
        self.assertIn("event=auth mech=PLAIN result=ok user=alice@example.test", self.read_log())

    def test_failures_same_answer_delayed_then_closed(self):
        self.start_server()
        c = self.raw()
        answers = []
        for user in (ALICE, "nobody@example.test", "not an address"):
            self.cmd(c, f"USER {user}")
            start = time.monotonic()
            answers.append(self.cmd(c, "PASS wrong"))
            self.assertGreaterEqual(time.monotonic() - start, 0.2)
        self.assertEqual(answers, ["-ERR [AUTH] Authentication failed"] * 3)
        self.assertEqual(c.line(), "-ERR Too many authentication failures")
        self.assertTrue(c.closed())
        self.assertIn("event=auth mech=USER result=fail", self.read_log())
        self.assertNotIn("wrong", self.read_log())

    def test_plaintext_refused_without_the_option_and_stls(self):
        make_cert(self.dir, "mail.example.test")
        self.write_config(TLS_CONFIG + "[pop3]\nplaintext_auth = no\n")
        self.start_server()
        c = self.raw()
        want = "-ERR [AUTH] Plaintext authentication is disabled: use STLS first"
        for line in (f"USER {ALICE}", "PASS x", "AUTH PLAIN"):
            self.assertEqual(self.cmd(c, line), want, line)
        self.cmd(c, "CAPA")
        capa = self.multi(c)
        self.assertIn("STLS", capa)
        self.assertNotIn("USER", capa)
        # Plaintext injected behind STLS must never be run after the handshake.
        c.send(f"STLS\r\nUSER {ALICE}\r\n")
        self.assertEqual(c.line(), "+OK Begin TLS negotiation")
        c.starttls()
        self.assertEqual(self.cmd(c, f"PASS {PW[ALICE]}"), "-ERR Send USER first")
        self.cmd(c, "CAPA")
        capa = self.multi(c)
        self.assertIn("USER", capa)
        self.assertNotIn("STLS", capa)
        self.login_raw(c)
        # POP3S: TLS from the start.
        s = self.raw("pop3s", tls=True)
        self.login_raw(s, BOB)

    def test_transcript_masks_the_password(self):
        self.write_config(PLAINTEXT + "[server]\ntranscript = yes\n")
        self.start_server()
        c = self.raw()
        self.login_raw(c)
        self.cmd(c, "QUIT")
        log = self.wait_log("event=disconnected")
        self.assertNotIn(PW[ALICE], log)
        self.assertIn('line="***"', log)

    def test_transcript_masks_auth_initial_response(self):
        import base64
        self.write_config(PLAINTEXT + "[server]\ntranscript = yes\n")
        self.start_server()
        c = self.raw()
        token = base64.b64encode(f"\0{ALICE}\0{PW[ALICE]}".encode()).decode()
        self.assertTrue(self.cmd(c, f"AUTH PLAIN {token}").startswith("+OK"))
        self.cmd(c, "QUIT")
        log = self.wait_log("event=disconnected")
        self.assertNotIn(token, log)
        self.assertNotIn(PW[ALICE], log)
        self.assertIn('event=recv line="AUTH PLAIN ***"', log)

    def test_transcript_sums_bodies_up(self):
        # A message body is mail, not protocol: RETR and TOP log one summary line, never a line
        # of the message (a 25 MB RETR once added 50 MB to the log).
        self.write_config(PLAINTEXT + "[server]\ntranscript = yes\n")
        body = body_of("secret", ["MARKER-7f3a1c body line", "second line"])
        self.add_message(ALICE, body)
        self.start_server()
        c = self.raw()
        self.login_raw(c)
        self.assertEqual(self.cmd(c, "RETR 1"), f"+OK {len(body)} octets")
        self.assertIn("MARKER-7f3a1c body line", self.multi(c))
        self.assertEqual(self.cmd(c, "TOP 1 1"), "+OK Top of message follows")
        self.assertIn("MARKER-7f3a1c body line", self.multi(c))
        self.assertEqual(self.cmd(c, "QUIT"), "+OK Bye")
        log = self.wait_log("event=disconnected")
        self.assertNotIn("MARKER-7f3a1c", log)
        self.assertNotIn("Subject: secret", log)
        # RETR: the body and ".", each line counted; TOP: headers, blank line, 1 line and ".".
        self.assertIn(f"event=send-body octets={len(body) + 3} lines=6\n", log)
        self.assertIn("event=send-body octets=", log)
        self.assertEqual(log.count("event=send-body"), 2)
        self.assertIn('event=send line="+OK Top of message follows"', log)
        self.assertIn('event=recv line="RETR 1"', log)


class Windows(Pop3Test):
    def test_window_opened_by_login_not_by_failure(self):
        self.start_server()
        c = Client(self.ports["pop3"], source="127.0.0.3")
        self.addCleanup(c.close)
        c.line()
        self.cmd(c, f"USER {ALICE}")
        self.assertEqual(self.cmd(c, "PASS wrong"), "-ERR [AUTH] Authentication failed")
        self.assertNotIn("127.0.0.3", self.windows())
        self.cmd(c, f"USER {ALICE}")
        self.assertTrue(self.cmd(c, f"PASS {PW[ALICE]}").startswith("+OK"))
        out = self.windows()
        self.assertIn("127.0.0.3", out)
        self.assertIn(ALICE, out)
        self.assertIn("event=window-opened ip=127.0.0.3 key=127.0.0.3 user=alice@example.test",
                      self.read_log())

    def test_window_stays_open_while_connected_and_counts_down_after(self):
        self.write_config(PLAINTEXT + "[relay]\nwindow = 2s\n")
        self.start_server()
        c = self.raw()
        self.login_raw(c)
        time.sleep(3.5)  # longer than the window: kept open by the renewals
        self.assertIn("127.0.0.1", self.windows())
        self.cmd(c, "QUIT")
        time.sleep(1.0)
        self.assertIn("127.0.0.1", self.windows())  # counts down from the end
        time.sleep(2.5)
        self.assertNotIn("127.0.0.1", self.windows())
        # The renewals (every second here, and one at QUIT) are not logins: one row of history.
        db = sqlite3.connect(self.db, timeout=30)
        try:
            rows = db.execute("SELECT ip_key, user FROM pop_logins").fetchall()
        finally:
            db.close()
        self.assertEqual(rows, [("127.0.0.1", "alice@example.test")])

    def test_no_window_when_disabled(self):
        self.write_config(PLAINTEXT + "[relay]\nwindow = 0\n")
        self.start_server()
        c = self.raw()
        self.login_raw(c)
        self.assertNotIn("127.0.0.1", self.windows())
        self.assertNotIn("event=window-opened", self.read_log())

    def test_ipv4_mapped_client_keys_as_ipv4(self):
        try:
            probe = socket.socket(socket.AF_INET6)
            probe.bind(("::1", 0))
            probe.close()
        except OSError:
            self.skipTest("no IPv6")
        port = free_port()
        self.write_config(PLAINTEXT + f"[pop3]\nlisten = *:{port}\n")
        self.start_server()
        s = socket.socket(socket.AF_INET6)
        self.addCleanup(s.close)
        s.settimeout(10)
        try:
            s.connect(("::ffff:127.0.0.1", port))
        except OSError:
            self.skipTest("no dual-stack socket")
        f = s.makefile("rwb")
        f.readline()
        f.write(f"USER {ALICE}\r\nPASS {PW[ALICE]}\r\n".encode())
        f.flush()
        f.readline()
        self.assertTrue(f.readline().startswith(b"+OK Logged in"))
        self.assertIn("key=127.0.0.1 user=alice@example.test", self.read_log())
        self.assertNotIn("::ffff", self.windows())


class LargeMessage(Pop3Test):
    def test_20_mib_read_by_a_slow_reader(self):
        line = b"0123456789abcdefghijklmnopqrstuvwxyz." * 2 + b"\r\n"  # 76 octets
        body = b"Subject: big\r\n\r\n" + b"." + line * (20 * 1024 * 1024 // len(line))
        self.add_message(ALICE, body)
        self.start_server()
        c = Client(self.ports["pop3"], timeout=30, rcvbuf=16384)
        self.addCleanup(c.close)
        c.line()
        self.login_raw(c)
        c.send("RETR 1\r\nNOOP\r\n")
        self.assertEqual(c.line(), f"+OK {len(body)} octets")
        # Read slowly at first: the server must wait (backpressure), not buffer it all.
        got = bytearray(c.buf)
        c.buf = b""
        for _ in range(20):
            got += c.sock.recv(4096)
            time.sleep(0.05)
        # Meanwhile another client is served.
        other = self.raw()
        self.login_raw(other, BOB)
        end = b"\r\n.\r\n"
        deadline = time.monotonic() + 120
        while not got.endswith(end + b"+OK\r\n"):
            self.assertLess(time.monotonic(), deadline)
            chunk = c.sock.recv(1 << 20)
            self.assertTrue(chunk, "closed early")
            got += chunk
        wire = bytes(got[:-len(b"+OK\r\n")])
        unstuffed = wire[:-len(end) + 2].replace(b"\r\n..", b"\r\n.")
        if unstuffed.startswith(b".."):
            unstuffed = unstuffed[1:]
        self.assertEqual(hashlib.sha256(unstuffed).hexdigest(), hashlib.sha256(body).hexdigest())
        self.assertIn(f"event=retr msg=1 top=no", self.read_log())
