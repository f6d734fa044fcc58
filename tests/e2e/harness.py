"""Shared helpers for postern's black-box tests (Python standard library only).

Each test gets a temporary folder with its own postern.conf and database, runs the real
binary ($POSTERN_BIN, default build/postern) as a user would, and starts `postern serve` on free
loopback ports when it needs a server. Nothing here talks to anything but 127.0.0.0/8 (and the
test PostgreSQL server's socket), and every wait is bounded.

The database is SQLite (self.db, a file in the folder) unless a test class says
backend = "postgresql": then each test gets a fresh database of its own on the server named by
POSTERN_TEST_PG (CMake's fixture, scripts/pg), [server] database is its connection string, and the
test skips, saying why, when there is no server. on_postgresql(Class) makes that twin of a class;
a test file that uses it names POSTERN_TEST_PG, which is how CMake knows to give it the server.
self.sql() reads the database on either backend.
"""
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("POSTERN_BIN", os.path.join(ROOT, "build", "postern"))
# Test-only cheap argon2id limits (common/password.h).
os.environ.setdefault("POSTERN_TEST_FAST_HASH", "1")
# The test PostgreSQL server (a libpq connection string to its maintenance database) and the
# folder of its programs, for psql.
PG_SERVER = os.environ.get("POSTERN_TEST_PG", "")
PG_BINDIR = os.environ.get("POSTERN_PG_BINDIR", "/usr/lib/postgresql/15/bin")
_pg_counter = 0


def psql(conninfo, sql, timeout=60):
    """Runs sql with psql on conninfo; the rows as lists of strings (NULL as None)."""
    exe = os.path.join(PG_BINDIR, "psql")
    if not os.path.exists(exe):
        exe = shutil.which("psql") or exe
    proc = subprocess.run([exe, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-P",
                           "null=\\N", "-F", "\x1f", "-d", conninfo, "-c", sql],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"psql {sql!r}: {proc.stderr.strip()}")
    return [[None if v == "\\N" else v for v in line.split("\x1f")]
            for line in proc.stdout.splitlines() if line != ""]


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


# Ports for servers under test come from below the kernel's ephemeral range: a port the kernel
# hands out for bind(0) is also what it hands out as the source port of outgoing connections,
# so under parallel tests (ctest -j) a client of another test could take it between our check
# and the server's bind ("address already in use").
_PORT_LOW = 10000


def _port_candidates():
    lo, _ = _ephemeral_range()
    high = lo - 1 if lo - 1 > _PORT_LOW + 1000 else 32767
    rng = random.Random()
    for _ in range(2000):
        yield rng.randint(_PORT_LOW, high)



def wait_for(pred, timeout=20.0, what="condition"):
    """Polls pred every 50 ms until it returns something true, and returns that; fails the test
    after timeout seconds, saying what it waited for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def free_ports(n, host="127.0.0.1"):
    """n distinct ports that are free right now on host, chosen outside the ephemeral range;
    all are held open while choosing, so none is handed out twice."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks, ports = [], []
    try:
        for port in _port_candidates():
            if len(ports) == n:
                break
            if port in ports:
                continue
            s = socket.socket(family)
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            ports.append(port)
        if len(ports) < n:
            raise RuntimeError(f"no {n} free ports on {host}")
        return ports
    finally:
        for s in socks:
            s.close()


def free_port(host="127.0.0.1"):
    """A port that is free right now on host, outside the ephemeral range."""
    return free_ports(1, host)[0]


class Result:
    def __init__(self, proc):
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def __repr__(self):
        return f"Result(code={self.code}, out={self.out!r}, err={self.err!r})"


class PosternTest(unittest.TestCase):
    """A temporary postern setup: self.dir, self.conf, self.db; self.cli(...) runs a command."""

    # Extra config text appended after the defaults below, per test class.
    extra_config = ""
    # "sqlite" or "postgresql" (see the module's head comment).
    backend = "sqlite"

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="postern-e2e-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.db = os.path.join(self.dir, "postern.db")
        self.database = "postern.db"
        # Environment for the processes a test runs (postern's commands and serve).
        self.env = dict(os.environ)
        if self.backend == "postgresql":
            self.database = self.new_pg_database()
            # A PostgreSQL node's spool directory is under TMPDIR (storage/spool.h): in the
            # test's folder, so it goes with it.
            self.env["TMPDIR"] = self.dir
        self.conf = os.path.join(self.dir, "postern.conf")
        self.ports = dict(zip(("smtp", "submission", "submissions", "pop3", "pop3s"), free_ports(5)))
        self.write_config(self.extra_config)
        self.server = None

    def write_config(self, extra=""):
        p = self.ports
        # POSTERN_E2E_WORKERS=N runs every test with [server] workers = N (unset: the default,
        # one loop per core); a test's own extra config still wins.
        workers = os.environ.get("POSTERN_E2E_WORKERS", "")
        text = (
            f"[server]\nhostname = mail.example.test\ndatabase = {self.database}\n"
            + (f"workers = {int(workers)}\n" if workers else "") +
            f"[smtp]\nlisten = 127.0.0.1:{p['smtp']}\nsubmission = 127.0.0.1:{p['submission']}\n"
            f"submissions = 127.0.0.1:{p['submissions']}\n"
            f"[pop3]\nlisten = 127.0.0.1:{p['pop3']}\npop3s = 127.0.0.1:{p['pop3s']}\n"
        )
        with open(self.conf, "w") as f:
            f.write(merge_ini(text, extra))

    def new_pg_database(self):
        """A fresh PostgreSQL database for this test, dropped after it; its connection string."""
        global _pg_counter
        if not PG_SERVER:
            self.skipTest("POSTERN_TEST_PG unset: no PostgreSQL server (install postgresql-15 "
                          "with scripts/bootstrap and re-run cmake)")
        _pg_counter += 1
        name = f"postern_e2e_{os.getpid()}_{_pg_counter}"
        psql(PG_SERVER, f"DROP DATABASE IF EXISTS {name}")
        psql(PG_SERVER, f"CREATE DATABASE {name}")
        self.addCleanup(psql, PG_SERVER, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        # In key=value form a later keyword wins: this names the test's database.
        return f"{PG_SERVER} dbname={name}"

    def sql(self, query, params=()):
        """The rows of query on the test's database, either backend. Parameters are written ?,
        and on PostgreSQL quoted into the text (tests pass only their own values); values come
        back as Python values from SQLite, as strings (None for NULL) from PostgreSQL."""
        if self.backend != "postgresql":
            con = sqlite3.connect(self.db, timeout=10)
            try:
                rows = [list(r) for r in con.execute(query, params).fetchall()]
                con.commit()
                return rows
            finally:
                con.close()
        parts = query.split("?")
        if len(parts) - 1 != len(params):
            raise ValueError(f"{len(params)} parameters for {query!r}")
        text = parts[0]
        for value, rest in zip(params, parts[1:]):
            if isinstance(value, int):
                text += str(value)
            else:
                text += "'" + str(value).replace("'", "''") + "'"
            text += rest
        return psql(self.database, text)

    def blob_sql(self, data):
        """A literal of the bytes data for self.sql's text: x'..' in SQLite, bytea in PostgreSQL."""
        return ("'\\x" if self.backend == "postgresql" else "x'") + data.hex() + "'"

    def cli(self, *args, input=None, timeout=60, config=True):
        cmd = [BIN] + (["-c", self.conf] if config else []) + [str(a) for a in args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True,
                              timeout=timeout, cwd=self.dir, env=self.env)
        return Result(proc)

    def ok(self, *args, input=None):
        r = self.cli(*args, input=input)
        self.assertEqual(r.code, 0, f"{args}: {r}")
        return r

    # ---- the server ----
    def start_server(self, env=None, wait_for="event=ready"):
        log = open(os.path.join(self.dir, "serve.log"), "w+")
        self.addCleanup(log.close)
        self.server = subprocess.Popen([BIN, "-c", self.conf, "serve"], stdout=log,
                                       stderr=subprocess.STDOUT, cwd=self.dir,
                                       env=dict(self.env, **(env or {})))
        self.server_log = log
        self.addCleanup(self.stop_server)
        text = self.wait_log(wait_for)
        # POSTERN_TEST_READER_THREADS=N (the e2e.threaded_reads run, storage/reader.h): every
        # read is a job on N reader threads. A server that started without them would pass the
        # run without testing what it is for.
        threads = dict(os.environ, **(env or {})).get("POSTERN_TEST_READER_THREADS", "")
        if threads not in ("", "0") and wait_for == "event=ready":
            self.assertIn(f"event=test-reader-threads threads={threads}", text)
        return self.server

    def read_log(self):
        with open(os.path.join(self.dir, "serve.log")) as f:
            return f.read()

    def wait_log(self, needle, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.read_log()
            if needle in text:
                return text
            if self.server is not None and self.server.poll() is not None:
                self.fail(f"server exited with {self.server.returncode} before {needle!r}:\n{text}")
            time.sleep(0.05)
        self.fail(f"no {needle!r} in the server log within {timeout}s:\n{self.read_log()}")

    def stop_server(self, sig=signal.SIGTERM, timeout=20.0):
        """Stops the server and returns its exit code (None if it was not running)."""
        if self.server is None:
            return None
        if self.server.poll() is None:
            self.server.send_signal(sig)
            try:
                self.server.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait(timeout=10)
                self.fail(f"server did not stop within {timeout}s after signal {sig}")
        code = self.server.returncode
        self.server = None
        return code


def on_postgresql(cls):
    """The tests of cls again, each on a fresh PostgreSQL database (skipped without a server).
    Assign the result to a module-level name so that unittest finds it."""
    return type(cls.__name__ + "OnPostgresql", (cls,),
                {"backend": "postgresql", "__module__": cls.__module__,
                 "__doc__": f"{cls.__name__} on PostgreSQL (POSTERN_TEST_PG)."})


def merge_ini(base, extra):
    """base with extra's keys set (extra wins), keeping sections; both are simple INI texts."""
    def parse(text):
        sections, order, cur = {}, [], None
        for line in text.splitlines():
            s = line.strip()
            if not s or s[0] in ";#":
                continue
            if s.startswith("["):
                cur = s[1:-1]
                if cur not in sections:
                    sections[cur] = {}
                    order.append(cur)
                continue
            k, _, v = s.partition("=")
            sections[cur][k.strip()] = v.strip()
        return sections, order

    a, order = parse(base)
    b, border = parse(extra)
    for sec in border:
        if sec not in a:
            a[sec] = {}
            order.append(sec)
        a[sec].update(b[sec])
    out = []
    for sec in order:
        out.append(f"[{sec}]")
        out.extend(f"{k} = {v}" for k, v in a[sec].items())
    return "\n".join(out) + "\n"
