"""A real HAProxy (Debian package haproxy) as a child process of an e2e test, in front of
postern listeners marked `proxy`: one frontend per service on a free loopback port, its backend
listing the given postern ports with `send-proxy-v2` (PROXY protocol v2) on each server line.

HAProxy runs in the foreground (`haproxy -f CFG -db`) with its log in the test's folder; its
configuration is checked with `haproxy -c` first, so a config HAProxy refuses fails the test
with HAProxy's own words rather than as a port that never opens. It connects to postern from
127.0.0.1 and listens on 127.0.0.1 only. Every wait is bounded. What it does not do: pick
the ports, start postern, or decide what a test skips (HAPROXY is None when no haproxy binary
is installed; the tests say so in their skip).
"""
import os
import shutil
import socket
import subprocess
import time

SKIP_REASON = ("haproxy is not installed (Debian package haproxy, which scripts/bootstrap "
               "installs): the HAProxy tests cannot run")


def find_haproxy():
    return shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)),
        None)


HAPROXY = find_haproxy()


class Haproxy:
    """HAProxy for one test: frontends is {service: (front_port, [(server_name, port), ...])};
    each service gets `frontend <service>_in` on 127.0.0.1:front_port and `backend
    postern_<service>` with one server line per (name, port), each ending in server_options.
    Stopped by the test's cleanup."""

    def __init__(self, test, folder, frontends, balance="roundrobin",
                 server_options="send-proxy-v2"):
        self.test = test
        self.cfg = os.path.join(folder, "haproxy.cfg")
        self.logname = os.path.join(folder, "haproxy.log")
        text = ("global\n"
                "    maxconn 100\n"
                "defaults\n"
                "    mode tcp\n"
                "    timeout connect 5s\n"
                "    timeout client 30s\n"
                "    timeout server 30s\n")
        for service, (front, servers) in frontends.items():
            text += (f"frontend {service}_in\n"
                     f"    bind 127.0.0.1:{front}\n"
                     f"    default_backend postern_{service}\n"
                     f"backend postern_{service}\n"
                     f"    balance {balance}\n")
            for name, port in servers:
                text += f"    server {name} 127.0.0.1:{port} {server_options}\n"
        with open(self.cfg, "w") as f:
            f.write(text)
        check = subprocess.run([HAPROXY, "-c", "-f", self.cfg], capture_output=True, text=True,
                               timeout=30)
        test.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        log = open(self.logname, "w")
        self.proc = subprocess.Popen([HAPROXY, "-f", self.cfg, "-db"], stdout=log,
                                     stderr=subprocess.STDOUT, cwd=folder)
        log.close()
        test.addCleanup(self.stop)
        deadline = time.monotonic() + 20
        for front, _ in frontends.values():
            while True:
                if self.proc.poll() is not None:
                    test.fail(f"haproxy exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    socket.create_connection(("127.0.0.1", front), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        test.fail(f"haproxy is not listening on {front}:\n{self.log()}")
                    time.sleep(0.05)

    def log(self):
        with open(self.logname) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
