"""Two `postern serve` processes (nodes a and b) on one database, with different ports: what
one node does, the other sees at once (the POP3 maildrop lock, the relay window, deletions), and
a node that dies frees what it held (maildrop locks, queue claims): by its lease, or at once when
it starts again.

Backend: the SQLite file of the test's folder, which both processes open; the same tests run
again with both nodes on a fresh PostgreSQL database each (the *OnPostgresql classes, given the
ctest fixture's server in POSTERN_TEST_PG; skipped without one). POSTERN_E2E_NODES_DATABASE, a
connection string, runs the SQLite classes on that database instead. On PostgreSQL the checks
that read the SQLite file directly are skipped. The short leases come from POSTERN_TEST_NODE_LEASE_MS (server/node.h), which
only tests set. Only 127.0.0.0/8 is used; every wait is bounded.
"""
import os
import signal
import sqlite3
import subprocess
import time
import unittest

from harness import BIN, PosternTest, free_ports, merge_ini, on_postgresql
from outbound_fakes import SmtpSink
from test_conn import Client

ALICE = "alice@example.test"
PASSWORD = "s3cret-pw"
ROAMING = "127.0.0.3"
OTHER = "127.0.0.4"
SHARED_DB = os.environ.get("POSTERN_E2E_NODES_DATABASE", "")
# A lease short enough to wait out in a test (renewed every third of it).
SHORT_LEASE_MS = "2000"


class Node:
    """One serve process with its own folder, config, ports and log, on the shared database."""

    def __init__(self, test, name, folder, db, env, extra="", proxy_from=None):
        """proxy_from (a CIDR list) marks the SMTP and POP3 listeners `proxy`, as behind a
        balancer; the other listeners stay direct."""
        self.test, self.name, self.dir = test, name, folder
        os.makedirs(folder, exist_ok=True)
        self.ports = dict(zip(("smtp", "submission", "submissions", "pop3", "pop3s"),
                              free_ports(5)))
        self.conf = os.path.join(folder, "postern.conf")
        p = self.ports
        proxy = " proxy" if proxy_from else ""
        text = (f"[server]\nhostname = {name}.example.test\nnode = {name}\ndatabase = {db}\n"
                "workers = 2\n"
                + (f"proxy_from = {proxy_from}\n" if proxy_from else "") +
                f"[smtp]\nlisten = 127.0.0.1:{p['smtp']}{proxy}\n"
                f"submission = 127.0.0.1:{p['submission']}\n"
                f"submissions = 127.0.0.1:{p['submissions']}\n"
                f"[pop3]\nlisten = 127.0.0.1:{p['pop3']}{proxy}\npop3s = 127.0.0.1:{p['pop3s']}\n"
                "plaintext_auth = yes\n")
        with open(self.conf, "w") as f:
            f.write(merge_ini(text, extra))
        self.env = env
        self.proc = None
        self.logname = os.path.join(folder, "serve.log")

    def start(self, wait_for="event=ready"):
        log = open(self.logname, "a")
        self.proc = subprocess.Popen([BIN, "-c", self.conf, "serve"], stdout=log,
                                     stderr=subprocess.STDOUT, cwd=self.dir,
                                     env=dict(os.environ, **self.env))
        log.close()
        self.test.addCleanup(self.stop)
        self.wait_log(wait_for)

    def log(self):
        with open(self.logname) as f:
            return f.read()

    def wait_log(self, needle, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if needle in text:
                return text
            if self.proc.poll() is not None:
                self.test.fail(f"node {self.name} exited with {self.proc.returncode} before "
                               f"{needle!r}:\n{text}")
            time.sleep(0.05)
        self.test.fail(f"no {needle!r} in node {self.name}'s log within {timeout}s:\n{self.log()}")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.test.fail(f"node {self.name} did not stop within 20s")

    # ---- clients ----
    def pop(self, source="127.0.0.1"):
        c = Client(self.ports["pop3"], source=source, timeout=10)
        self.test.addCleanup(c.close)
        self.test.assertEqual(c.line(), "+OK postern ready.")
        return c

    def login(self, c, user=ALICE):
        c.send(f"USER {user}\r\n")
        self.test.assertEqual(c.line(), "+OK Send your password")
        c.send(f"PASS {PASSWORD}\r\n")
        return c.line()

    def smtp(self, source="127.0.0.1"):
        c = Client(self.ports["smtp"], source=source, timeout=10)
        self.test.addCleanup(c.close)
        self.test.assertTrue(c.line().startswith("220 "))
        c.send("EHLO client.example\r\n")
        c.reply()
        return c


class NodesTest(PosternTest):
    """What both test classes below share: where the nodes' database is."""

    def shared_db(self):
        """The database both nodes open: POSTERN_E2E_NODES_DATABASE, the test's PostgreSQL
        database on the PostgreSQL run, or the SQLite file of the test's folder."""
        if SHARED_DB:
            return SHARED_DB
        return self.database if self.backend == "postgresql" else self.db

    def no_file(self):
        """True when there is no SQLite file to read the rows from directly."""
        return bool(SHARED_DB) or self.backend == "postgresql"

    def relaying_nodes(self, env):
        """Nodes a and b (not started) with env, relaying from 127.0.0.2 to self.sink, a fake
        smarthost."""
        self.sink = SmtpSink()
        self.addCleanup(self.sink.close)
        db = self.shared_db()
        self.write_config(f"[server]\ndatabase = {db}\n")
        self.ok("domain", "add", "example.test")
        self.ok("network", "add", "127.0.0.2/32")
        extra = f"[relay]\nsmarthost = 127.0.0.1:{self.sink.port}\n"
        self.a = Node(self, "a", os.path.join(self.dir, "a"), db, env, extra)
        self.b = Node(self, "b", os.path.join(self.dir, "b"), db, env, extra)

    def relay_one(self, node):
        """Relays one message from a trusted network (127.0.0.2) to bob@dest.test through node."""
        c = node.smtp(source="127.0.0.2")
        for line, want in (("MAIL FROM:<someone@example.test>", "250"),
                           ("RCPT TO:<bob@dest.test>", "250"), ("DATA", "354")):
            c.send(line + "\r\n")
            self.assertTrue(c.reply()[-1].startswith(want), line)
        c.send("Subject: across\r\n\r\nbody\r\n.\r\n")
        self.assertTrue(c.reply()[-1].startswith("250"))
        c.send("QUIT\r\n")


class TwoNodes(NodesTest):
    """Marked for both backends: see the module's docstring."""

    lease_ms = SHORT_LEASE_MS

    def setUp(self):
        super().setUp()
        db = self.shared_db()
        self.write_config(f"[server]\ndatabase = {db}\n")
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", ALICE, input=PASSWORD + "\n")
        env = {"POSTERN_TEST_NODE_LEASE_MS": self.lease_ms} if self.lease_ms else {}
        self.a = Node(self, "a", os.path.join(self.dir, "a"), db, env)
        self.b = Node(self, "b", os.path.join(self.dir, "b"), db, env)
        self.a.start()
        self.b.start()

    def cmd(self, c, line):
        c.send(line + "\r\n")
        return c.line()

    def lock_row(self):
        """(node, expires_ms) of alice's maildrop lock in the SQLite file, or None."""
        db = sqlite3.connect(self.db, timeout=30)
        try:
            return db.execute("SELECT node, expires_ms FROM pop3_locks JOIN users"
                              " ON users.id = user_id WHERE address = ?", (ALICE,)).fetchone()
        finally:
            db.close()

    def lock_holder(self):
        row = self.lock_row()
        return row[0] if row else None

    def lock_expires_ms(self):
        row = self.lock_row()
        return row[1] if row else None

    def login_until_ok(self, node, timeout=30.0):
        """Logs in on node until +OK (the lease of a dead node runs out meanwhile)."""
        deadline = time.monotonic() + timeout
        replies = []
        while time.monotonic() < deadline:
            c = node.pop()
            reply = node.login(c)
            if reply.startswith("+OK Logged in"):
                return c, replies
            replies.append(reply)
            self.cmd(c, "QUIT")
            c.close()
            time.sleep(0.2)
        self.fail(f"no login on node {node.name} within {timeout}s: {replies[-3:]}")

    def deliver(self, node, rcpt=ALICE):
        c = node.smtp()
        for line, want in ((f"MAIL FROM:<someone@remote.test>", "250"),
                           (f"RCPT TO:<{rcpt}>", "250"), ("DATA", "354")):
            c.send(line + "\r\n")
            self.assertTrue(c.reply()[-1].startswith(want))
        c.send("Subject: hello\r\n\r\nbody\r\n.\r\n")
        self.assertTrue(c.reply()[-1].startswith("250"))
        c.send("QUIT\r\n")
        c.reply()

    def test_maildrop_lock_holds_across_nodes(self):
        pa = self.a.pop()
        self.assertTrue(self.a.login(pa).startswith("+OK Logged in"))
        pb = self.b.pop()
        self.assertEqual(self.b.login(pb), "-ERR [IN-USE] Maildrop is locked by another session")
        self.b.wait_log("event=login-refused user=alice@example.test reason=in-use here=no")
        self.assertEqual(self.cmd(pa, "QUIT"), "+OK Bye")
        # The release committed before "+OK Bye": b gets in at once, no lease to wait for.
        self.assertTrue(self.b.login(pb).startswith("+OK Logged in"))
        # And now a is the one refused.
        pa2 = self.a.pop()
        self.assertEqual(self.a.login(pa2), "-ERR [IN-USE] Maildrop is locked by another session")
        self.assertEqual(self.cmd(pb, "QUIT"), "+OK Bye")

    def test_stalled_node_loses_the_lock_and_its_session_ends(self):
        self.deliver(self.b)
        pa = self.a.pop()
        self.assertTrue(self.a.login(pa).startswith("+OK Logged in: maildrop has 1 message "))
        self.assertEqual(self.cmd(pa, "DELE 1"), "+OK Message 1 deleted")
        # a stalls past its lease (stopped, not dead): b takes the maildrop over.
        self.a.proc.send_signal(signal.SIGSTOP)
        try:
            pb, _ = self.login_until_ok(self.b)
        finally:
            self.a.proc.send_signal(signal.SIGCONT)
        # a's next renewal finds the lock gone; its session ends at its next command.
        deadline = time.monotonic() + 20
        reply = "+OK"
        while reply == "+OK" and time.monotonic() < deadline:
            reply = self.cmd(pa, "NOOP")
            if reply == "+OK":
                time.sleep(0.1)
        self.assertEqual(reply, "-ERR [IN-USE] Maildrop lock lost to another session")
        self.assertTrue(pa.closed())
        self.a.wait_log("event=lock-lost")
        # b's session, the maildrop's now, goes on.
        self.assertTrue(self.cmd(pb, "STAT").startswith("+OK 1 "))
        self.assertEqual(self.cmd(pb, "QUIT"), "+OK Bye")

    def test_lock_is_renewed_while_the_session_lives(self):
        if self.no_file():
            self.skipTest("reads the lease from the SQLite file")
        pa = self.a.pop()
        self.assertTrue(self.a.login(pa).startswith("+OK Logged in"))
        first = self.lock_expires_ms()
        self.assertIsNotNone(first)
        # Past the end of the first lease (by the wall clock the leases are written in), the
        # lock is still a's: the node renewed it.
        deadline = time.monotonic() + 30
        while time.time() * 1000 <= first + 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertGreater(self.lock_expires_ms(), first)
        pb = self.b.pop()
        self.assertEqual(self.b.login(pb), "-ERR [IN-USE] Maildrop is locked by another session")
        self.assertEqual(self.cmd(pa, "NOOP"), "+OK")
        self.assertEqual(self.cmd(pa, "QUIT"), "+OK Bye")

    def test_dropped_connection_releases_the_lock(self):
        pa = self.a.pop()
        self.assertTrue(self.a.login(pa).startswith("+OK Logged in"))
        pa.close()  # no QUIT: the session's end releases the lock in a job of its own
        if self.no_file():
            c, _ = self.login_until_ok(self.b, timeout=10)
        else:
            # Released, not run out: a lease that ends leaves its row; a release deletes it.
            deadline = time.monotonic() + 10
            while self.lock_holder() is not None and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertIsNone(self.lock_holder())
            c = self.b.pop()
            self.assertTrue(self.b.login(c).startswith("+OK Logged in"))
        self.cmd(c, "QUIT")

    def test_killed_node_frees_the_lock_after_its_lease(self):
        pa = self.a.pop()
        self.assertTrue(self.a.login(pa).startswith("+OK Logged in"))
        pb = self.b.pop()
        self.assertEqual(self.b.login(pb), "-ERR [IN-USE] Maildrop is locked by another session")
        self.a.kill()
        if not self.no_file():
            # Nothing released it: only the lease can free it now.
            self.assertEqual(self.lock_holder(), "a")
        c, _ = self.login_until_ok(self.b)
        self.assertEqual(self.cmd(c, "STAT"), "+OK 0 0")
        self.assertEqual(self.cmd(c, "QUIT"), "+OK Bye")
        if not self.no_file():
            self.assertIsNone(self.lock_holder())

    def test_window_opened_on_one_node_relays_on_the_other(self):
        pa = self.a.pop(source=ROAMING)
        self.assertTrue(self.a.login(pa).startswith("+OK Logged in"))
        self.assertEqual(self.cmd(pa, "QUIT"), "+OK Bye")
        for source, want in ((ROAMING, "250 2.1.5 Ok"),
                             (OTHER, "550 5.7.1 <friend@remote.test>... Relaying denied")):
            c = self.b.smtp(source=source)
            self.assertEqual(self.cmd(c, f"MAIL FROM:<{ALICE}>"), "250 2.1.0 Ok")
            self.assertEqual(self.cmd(c, "RCPT TO:<friend@remote.test>"), want)
            c.send("QUIT\r\n")

    def test_dele_on_one_node_is_gone_on_the_other(self):
        self.deliver(self.b)
        self.deliver(self.b)
        pa = self.a.pop()
        self.assertTrue(self.a.login(pa).startswith("+OK Logged in: maildrop has 2 messages"))
        self.assertEqual(self.cmd(pa, "DELE 1"), "+OK Message 1 deleted")
        self.assertEqual(self.cmd(pa, "QUIT"), "+OK Bye: 1 message deleted")
        pb = self.b.pop()
        self.assertTrue(self.b.login(pb).startswith("+OK Logged in: maildrop has 1 message "))
        self.assertEqual(self.cmd(pb, "QUIT"), "+OK Bye")

    def test_two_processes_cannot_share_a_node_name(self):
        r = subprocess.run([BIN, "-c", self.a.conf, "serve"], capture_output=True, text=True,
                           timeout=60, cwd=self.a.dir, env=dict(os.environ, **self.a.env))
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn('node name "a" is held by pid', r.stderr)
        self.assertIn("[server] node", r.stderr)


class NodeRestart(TwoNodes):
    """The default lease (90 s): what is freed within the test's waits is freed by the restart."""

    lease_ms = ""

    # The inherited tests that wait for a lease to run out do not apply at 90 s.
    test_killed_node_frees_the_lock_after_its_lease = None
    test_maildrop_lock_holds_across_nodes = None
    test_dropped_connection_releases_the_lock = None
    test_window_opened_on_one_node_relays_on_the_other = None
    test_dele_on_one_node_is_gone_on_the_other = None
    test_two_processes_cannot_share_a_node_name = None
    test_lock_is_renewed_while_the_session_lives = None
    test_stalled_node_loses_the_lock_and_its_session_ends = None

    def test_restarted_node_drops_its_own_locks(self):
        pa = self.a.pop()
        self.assertTrue(self.a.login(pa).startswith("+OK Logged in"))
        self.a.kill()
        pb = self.b.pop()
        self.assertEqual(self.b.login(pb), "-ERR [IN-USE] Maildrop is locked by another session")
        # a comes back under the same name on the same host: its old process is dead, so it
        # takes the name over at once and drops the locks it held.
        self.a.start(wait_for="locks_dropped=1")
        self.assertIn("event=takeover node=a", self.a.log())
        self.assertTrue(self.b.login(pb).startswith("+OK Logged in"))
        self.assertEqual(self.cmd(pb, "QUIT"), "+OK Bye")


class QueueAcrossNodes(NodesTest):
    """Queue claims name their node: a node's start releases its own claims only, and the claim of
    a node that died goes to another once a lease ran out: the claim's own (an hour), or,
    sooner, the node's (a stopping node renews it while an attempt is still out). Short claim
    leases and attempt deadlines come from the test switches of server/outbound/queue_runner.h,
    short node leases from POSTERN_TEST_NODE_LEASE_MS (server/node.h)."""

    def setUp(self):
        super().setUp()
        self.relaying_nodes({"POSTERN_TEST_ATTEMPT_DEADLINE_MS": "1000",
                             "POSTERN_TEST_QUEUE_LEASE_MS": "3000"})

    def claim(self):
        db = sqlite3.connect(self.db, timeout=30)
        try:
            return db.execute("SELECT claimed_by, claimed_ms FROM queue").fetchall()
        finally:
            db.close()

    def test_dead_nodes_claim_goes_to_another_after_its_lease(self):
        self.sink.stall_data = True
        self.a.start()
        self.relay_one(self.a)
        self.assertTrue(self.sink.data_seen.wait(20), "the message never reached the sink")
        self.a.kill()  # mid-delivery: the end of data sent, no reply yet
        self.assertEqual(self.sink.messages, [])
        if not self.no_file():
            rows = self.claim()
            self.assertEqual(len(rows), 1)
            self.assertEqual(rows[0][0], "a")
        self.sink.stall_data = False
        self.b.start()
        deadline = time.monotonic() + 30
        while not self.sink.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(len(self.sink.messages), 1)
        log = self.b.wait_log("event=delivery")
        # b's start released nothing: the claim was a's, and b took it only by its lease.
        self.assertNotIn("event=released-stale", log)

    def wait_delivered(self, node, timeout=30.0):
        """Waits (bounded) for the sink to have a message, then for node's log of it."""
        deadline = time.monotonic() + timeout
        while not self.sink.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(len(self.sink.messages), 1, f"nothing delivered within {timeout}s:\n"
                         + node.log())
        return node.wait_log("event=delivery")

    def node_expires_ms(self, name):
        """expires_ms of node name's row in the shared database, or None without one."""
        rows = self.sql("SELECT expires_ms FROM nodes WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else None

    def test_dead_nodes_claim_goes_to_another_after_the_nodes_lease(self):
        # The claim's own lease stays an hour (the default); only the node's lease is short, so
        # only a's node lease running out can give b the entry within the test's wait.
        self.a.env = self.b.env = {"POSTERN_TEST_NODE_LEASE_MS": SHORT_LEASE_MS}
        self.sink.stall_data = True
        self.a.start()
        self.relay_one(self.a)
        self.assertTrue(self.sink.data_seen.wait(20), "the message never reached the sink")
        self.a.kill()  # mid-delivery: the end of data sent, no reply yet
        self.assertEqual(self.sink.messages, [])
        if not SHARED_DB:
            self.assertEqual(self.sql("SELECT claimed_by FROM queue"), [["a"]])
        self.sink.stall_data = False
        self.b.start()
        log = self.wait_delivered(self.b)
        self.assertNotIn("event=released-stale", log)  # the claim was a's, not b's own
        self.assertIn("event=claim-taken-over", log)
        self.assertIn(" from=a attempts=1", log)
        # The delivery is the second attempt: a's, interrupted, counted.
        self.assertIn("status=sent", log)
        self.assertIn(" attempts=2 ", log)

    def test_stopping_node_keeps_its_lease_until_its_attempt_ends(self):
        # a is told to stop while it awaits the reply to its end of data (which it must not
        # abandon: that reply may be a 250). The reply takes longer than a's lease, so a must
        # go on renewing its lease until the attempt is recorded, or b would take the entry
        # over as a dead node's and send it again.
        self.a.env = self.b.env = {"POSTERN_TEST_NODE_LEASE_MS": SHORT_LEASE_MS}
        self.sink.data_reply_delay = 12  # seconds: several of a's leases
        self.a.start()
        self.relay_one(self.a)
        self.assertTrue(self.sink.data_seen.wait(20), "the message never reached the sink")
        self.b.start()
        stop_ms = int(time.time() * 1000)
        self.a.proc.terminate()
        if not SHARED_DB:
            # a's lease is renewed after the stop began: it ends later than one lease after it.
            want = stop_ms + int(SHORT_LEASE_MS)
            deadline = time.monotonic() + 10
            expires = self.node_expires_ms("a")
            while (expires is not None and expires <= want) and time.monotonic() < deadline:
                time.sleep(0.1)
                expires = self.node_expires_ms("a")
            self.assertIsNotNone(expires, "a left before its attempt ended:\n" + self.a.log())
            self.assertGreater(expires, want, "a stopped renewing its lease at the stop")
        self.assertEqual(self.a.proc.wait(timeout=60), 0)
        log = self.a.log()
        self.assertIn("status=sent", log)
        self.assertIn("awaiting=1", log)
        self.assertEqual(len(self.sink.messages), 1)
        self.assertNotIn("event=claim-taken-over", self.b.log())
        if not SHARED_DB:
            self.assertEqual(str(self.sql("SELECT count(*) FROM queue")[0][0]), "0")

    def test_restart_releases_the_nodes_own_claim(self):
        # The full lease (an hour): within the test only a's restart can free a's claim.
        self.a.env = self.b.env = {}
        self.sink.stall_data = True
        self.a.start()
        self.relay_one(self.a)
        self.assertTrue(self.sink.data_seen.wait(20), "the message never reached the sink")
        self.a.kill()
        self.sink.stall_data = False
        if not self.no_file():
            self.assertEqual(self.claim()[0][0], "a")
        # b's start leaves a's claim alone...
        self.b.start()
        self.assertNotIn("event=released-stale", self.b.log())
        # ...a's restart releases it, and the message goes (from a or b, once).
        self.a.start(wait_for="event=released-stale entries=1")
        deadline = time.monotonic() + 30
        while not self.sink.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(len(self.sink.messages), 1)


class FlushAcrossNodes(NodesTest):
    """`postern queue flush` reaches every node's runner at once on PostgreSQL: each node
    LISTENs on the queue channel (storage/postgres/pg_listener.c) and claims when the flush's
    NOTIFY arrives, and again after its listening connection is lost and made again. The rescan
    that would find the flush anyway is set to ten minutes (POSTERN_TEST_QUEUE_RESCAN_MS), so
    only the notification can make the delivery within the test's wait. PostgreSQL only: SQLite
    has no notifications, and its nodes find a flush at their next rescan."""

    backend = "postgresql"

    def setUp(self):
        super().setUp()
        self.relaying_nodes({"POSTERN_TEST_QUEUE_RESCAN_MS": "600000"})  # far beyond any wait
        for node in (self.a, self.b):
            node.start()
            node.wait_log("event=test-queue-rescan ms=600000")
            node.wait_log("event=listener-connected channel=postern_queue")

    def shared_db(self):
        """The test's own database: self.sql below reads it."""
        return self.database

    def queue_one_for_tomorrow(self):
        """Relays a message through b and moves its first attempt a day ahead, as a deferral
        would: only a flush makes it due within the test. With the long rescan nothing tries it
        before the move (a node claims at its start, after an attempt ends, and when it hears
        a flush)."""
        self.relay_one(self.b)
        day_ahead = int(time.time() * 1000) + 24 * 3600 * 1000
        self.sql("UPDATE queue SET next_attempt_ms = ?, attempts = 1,"
                 " last_error = '451 4.3.0 try again later'", (day_ahead,))
        self.assertEqual(self.sql("SELECT count(*) FROM queue WHERE claimed_ms IS NULL"),
                         [["1"]])

    def flush_and_wait_delivery(self):
        r = self.ok("queue", "flush")
        self.assertIn("flushed: 1 queue entries due now", r.out)
        deadline = time.monotonic() + 30
        while not self.sink.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(len(self.sink.messages), 1,
                         "the flush did not reach a runner within 30 s:\n" + self.b.log())
        self.assertEqual(self.sink.messages[0]["rcpts"], ["bob@dest.test"])

    def listener_pids(self):
        return [row[0] for row in self.sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = ?", ("postern listener",))]

    def test_flush_is_heard_by_every_node(self):
        self.assertEqual(len(self.listener_pids()), 2)  # one per node
        self.queue_one_for_tomorrow()
        self.flush_and_wait_delivery()

    def test_flush_is_heard_after_the_listener_reconnected(self):
        self.queue_one_for_tomorrow()
        pids = self.listener_pids()
        self.assertEqual(len(pids), 2)
        for pid in pids:
            self.sql(f"SELECT pg_terminate_backend({int(pid)}, 10000)")
        for node in (self.a, self.b):
            node.wait_log("event=listener-lost channel=postern_queue")
            node.wait_log("event=listener-reconnected channel=postern_queue")
        new = self.listener_pids()
        self.assertEqual(len(new), 2)
        self.assertFalse(set(new) & set(pids))
        self.flush_and_wait_delivery()


# The same tests with both nodes on one PostgreSQL database (a fresh one per test).
TwoNodesOnPostgresql = on_postgresql(TwoNodes)
NodeRestartOnPostgresql = on_postgresql(NodeRestart)
QueueAcrossNodesOnPostgresql = on_postgresql(QueueAcrossNodes)


if __name__ == "__main__":
    unittest.main()
