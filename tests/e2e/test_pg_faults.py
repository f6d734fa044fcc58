"""PostgreSQL going away under load and coming back, with `postern serve` left running.

Each test starts a PostgreSQL server of its own with scripts/pg (not the shared one named by
POSTERN_TEST_PG, which other tests use: this one is stopped and started), and runs only when
POSTERN_TEST_PG is set, that is when the server's programs are installed. While a client sends
mail in a loop, the test stops the server (pg_ctl stop -m fast): SMTP must answer 451 4.3.0 (never
250, never a dropped connection) and a POP3 login -ERR [SYS/TEMP]. Then it starts the server again:
new mail must be accepted with 250 within a bounded time, by the same serve process, the log must
show the reconnection, and every message that got 250, before the outage and after it, must be
in the mailbox (read back with POP3). A second test shows what serve does when the server is down
at its start: it exits with an error that says so. Every wait is bounded; no duration is asserted.
"""
import os
import poplib
import smtplib
import subprocess
import tempfile
import threading
import time

from harness import BIN, PG_BINDIR, PosternTest, psql, wait_for

ALICE = "alice@example.test"
PASSWORD = "alice secret 1"
CONFIG = "[pop3]\nplaintext_auth = yes\n"
SCRIPTS_PG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "scripts", "pg")
# How long the server is given to answer 250 again once PostgreSQL is back: the reconnection
# backoff tops out at 5 s (storage/postgres/pg_conn.h), so this is generous.
RECOVER_S = 30.0



class PrivatePg:
    """A throwaway PostgreSQL server in a folder of its own, which the test may stop and start."""

    def __init__(self):
        # Short: the socket's path must fit in sun_path (scripts/pg checks).
        self.dir = tempfile.mkdtemp(prefix="pgf-", dir="/tmp")
        out = subprocess.run([SCRIPTS_PG, "start", self.dir], capture_output=True, text=True,
                             timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"scripts/pg start: {out.stderr.strip()}")
        self.conninfo = out.stdout.strip().splitlines()[-1]

    def _pg_ctl(self, *args):
        cmd = [os.path.join(PG_BINDIR, "pg_ctl")] + list(args)
        if os.getuid() == 0:
            # scripts/pg runs the server as this user when run as root (PostgreSQL refuses root).
            cmd = ["runuser", "-u", os.environ.get("POSTERN_PG_USER", "nobody"), "--"] + cmd
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"pg_ctl {args}: {out.stdout.strip()} {out.stderr.strip()}")

    def stop(self):
        self._pg_ctl("stop", "-D", os.path.join(self.dir, "data"), "-m", "fast", "-w", "-t", "60")

    def start(self):
        # The options scripts/pg starts it with: the socket in the folder, no TCP.
        self._pg_ctl("start", "-D", os.path.join(self.dir, "data"), "-w", "-t", "60", "-l",
                     os.path.join(self.dir, "server.log"), "-o",
                     f"-c listen_addresses='' -c port=5432 -c unix_socket_directories='{self.dir}'")

    def remove(self):
        subprocess.run([SCRIPTS_PG, "stop", self.dir], capture_output=True, timeout=180)


class PgFaultTest(PosternTest):
    extra_config = CONFIG

    def setUp(self):
        if not os.environ.get("POSTERN_TEST_PG"):
            self.skipTest("POSTERN_TEST_PG unset: no PostgreSQL programs (install postgresql-15 "
                          "with scripts/bootstrap and re-run cmake)")
        super().setUp()
        self.pg = PrivatePg()
        self.addCleanup(self.pg.remove)
        psql(self.pg.conninfo, "CREATE DATABASE postern_faults")
        self.database = f"{self.pg.conninfo} dbname=postern_faults"
        # A PostgreSQL node's spool directory is under TMPDIR (storage/spool.h).
        self.env["TMPDIR"] = self.dir
        self.write_config(CONFIG)
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", ALICE, input=PASSWORD + "\n")

    # ---- the client in a loop ----
    def send_one(self, n):
        """Sends message n on a connection of its own; (code, text) of the decisive reply."""
        body = f"Subject: fault-{n}\r\n\r\nmessage {n}\r\n".encode()
        try:
            s = smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=30)
        except OSError as e:
            return (None, f"connect: {e!r}")
        try:
            s.sendmail("x@remote.test", [ALICE], body)
            return (250, "")
        except smtplib.SMTPRecipientsRefused as e:
            code, text = e.recipients[ALICE]
            return (code, text.decode(errors="replace"))
        except smtplib.SMTPResponseException as e:
            return (e.smtp_code, e.smtp_error.decode(errors="replace"))
        except (smtplib.SMTPException, OSError) as e:
            return (None, repr(e))
        finally:
            try:
                s.quit()
            except (smtplib.SMTPException, OSError):
                s.close()

    def sender(self):
        n = 0
        while not self.stop_sending.is_set() and n < 2000:
            n += 1
            code, text = self.send_one(n)
            with self.lock:
                self.results.append((n, time.monotonic(), code, text))
            time.sleep(0.02)

    def accepted_since(self, t):
        with self.lock:
            return [r for r in self.results if r[2] == 250 and r[1] > t]

    def refused_since(self, t):
        with self.lock:
            return [r for r in self.results if r[2] != 250 and r[1] > t]

    def pop_subjects(self):
        p = poplib.POP3("127.0.0.1", self.ports["pop3"], timeout=30)
        try:
            p.user(ALICE)
            p.pass_(PASSWORD)
            count, _ = p.stat()
            subjects = set()
            for i in range(1, count + 1):
                _, lines, _ = p.retr(i)
                for line in lines:
                    if line.startswith(b"Subject: "):
                        subjects.add(line[len(b"Subject: "):].decode())
            return subjects
        finally:
            p.quit()

    def pop_subjects_or_none(self):
        try:
            return self.pop_subjects()
        except poplib.error_proto as e:
            # poplib gives the server's reply as bytes, its own "-ERR EOF" (the server closed the
            # connection, as when a body read fails after +OK) as str: that one is a failure.
            reply = e.args[0] if isinstance(e.args[0], bytes) else str(e.args[0]).encode()
            self.assertTrue(reply.startswith(b"-ERR [SYS/TEMP]"),
                            f"POP3 after the outage: {reply!r}\n{self.read_log()[-3000:]}")
            return None

    def test_outage_under_load(self):
        self.start_server()
        self.assertIn("backend=postgresql", self.read_log())
        self.results, self.lock = [], threading.Lock()
        self.stop_sending = threading.Event()
        t = threading.Thread(target=self.sender, daemon=True)
        t.start()
        self.addCleanup(t.join, 60)
        self.addCleanup(self.stop_sending.set)

        start = time.monotonic()
        wait_for(lambda: len(self.accepted_since(start)) >= 5, 60, "5 messages accepted")

        # A transaction past RCPT before the outage, whose end of data comes during it: the
        # writer's batch fails on the lost connection and the client is told 451 4.3.0.
        held = smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=30)
        self.addCleanup(held.close)
        held.ehlo("held.test")
        self.assertEqual(held.mail("x@remote.test")[0], 250)
        self.assertEqual(held.rcpt(ALICE)[0], 250)
        self.assertEqual(held.docmd("DATA")[0], 354)

        self.pg.stop()
        stopped = time.monotonic()
        held.send(b"Subject: held\r\n\r\nbody\r\n.\r\n")
        code, text = held.getreply()
        self.assertEqual((code, text[:5]), (451, b"4.3.0"), text)
        held.close()
        wait_for(lambda: self.refused_since(stopped), 60, "a refusal while PostgreSQL is down")
        # A POP3 login needs the database: a temporary failure, said so.
        with self.assertRaises(poplib.error_proto) as cm:
            self.pop_subjects()
        self.assertTrue(cm.exception.args[0].startswith(b"-ERR [SYS/TEMP]"), cm.exception)
        # A few more tries while it is down, so the backoff is crossed more than once.
        wait_for(lambda: len(self.refused_since(stopped)) >= 5, 60, "5 refusals while down")
        self.assertEqual(self.server.poll(), None, "serve exited while PostgreSQL was down")

        self.pg.start()
        restarted = time.monotonic()
        wait_for(lambda: len(self.accepted_since(restarted)) >= 3, RECOVER_S,
                 "3 messages accepted after PostgreSQL came back")
        self.stop_sending.set()
        t.join(60)
        self.assertFalse(t.is_alive())
        self.assertEqual(self.server.poll(), None, "serve is the same process throughout")

        refused = [r for r in self.results if r[2] != 250]
        self.assertTrue(refused)
        for n, _, code, text in refused:
            # 451 4.3.0 at RCPT (the recipient lookup) or at the end of data (the commit); a
            # dropped connection or a permanent refusal would fail the client's mail.
            self.assertEqual(code, 451, f"message {n}: {code} {text}")
            self.assertTrue(text.startswith("4.3.0"), f"message {n}: {code} {text}")
        log = self.read_log()
        self.assertIn("event=reconnected", log)
        self.assertIn("event=reconnect-failed", log)
        self.assertIn("sub=writer event=batch-failed", log)

        accepted = {f"fault-{r[0]}" for r in self.results if r[2] == 250}
        # A reader thread reconnects at its next job: at once once another connection of the
        # node has (the server is back), and a read whose idle connection the restart ended is
        # run again on a new one. A login may still meet a thread whose attempt came while the
        # server was starting: -ERR [SYS/TEMP] for a little longer, then served.
        subjects = wait_for(self.pop_subjects_or_none, RECOVER_S, "a POP3 login after the outage")
        missing = sorted(accepted - subjects)
        self.assertEqual(missing, [], "messages answered 250 but not in the mailbox")

    def test_serve_refuses_to_start_while_down(self):
        self.pg.stop()
        proc = subprocess.run([BIN, "-c", self.conf, "serve"], capture_output=True, text=True,
                              timeout=120, cwd=self.dir, env=self.env)
        out = proc.stdout + proc.stderr
        self.assertNotEqual(proc.returncode, 0, out)
        self.assertIn("postgresql", out)
        self.assertIn("event=open-failed", out)
        self.assertIn("cannot connect", out)
        self.pg.start()
        self.start_server()
