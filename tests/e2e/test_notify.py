"""serve and the service manager (server/notify.c): with NOTIFY_SOCKET set, as systemd sets it
for a Type=notify service, serve sends READY=1 once every listener is bound, RELOADING=1 then
READY=1 around a SIGHUP, and STOPPING=1 at SIGTERM. A Python AF_UNIX datagram socket stands in
for systemd. Skipped (with the reason printed) in a build without libsystemd."""
import os
import signal
import socket
import unittest

from harness import PosternTest


def have_systemd():
    return os.environ.get("POSTERN_HAVE_SYSTEMD", "1") != "0"


class Notify(PosternTest):
    def setUp(self):
        if not have_systemd():
            print("skipped: postern was built without libsystemd (install libsystemd-dev)")
            self.skipTest("no libsystemd")
        super().setUp()
        self.sock_path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(self.sock.close)
        self.sock.bind(self.sock_path)
        self.sock.settimeout(20)

    def next_message(self):
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines() if "=" in line)

    def test_ready_reloading_stopping(self):
        self.start_server(env={"NOTIFY_SOCKET": self.sock_path})
        msg = self.next_message()
        self.assertEqual(msg.get("READY"), "1", msg)
        # READY means every listener is bound: each port answers right away.
        for name in ("smtp", "submission", "pop3"):
            with socket.create_connection(("127.0.0.1", self.ports[name]), timeout=10) as c:
                c.settimeout(10)
                self.assertTrue(c.recv(512), name)

        self.server.send_signal(signal.SIGHUP)
        msg = self.next_message()
        self.assertEqual(msg.get("RELOADING"), "1", msg)
        self.assertGreater(int(msg.get("MONOTONIC_USEC", "0")), 0, msg)
        msg = self.next_message()
        self.assertEqual(msg.get("READY"), "1", msg)

        self.server.send_signal(signal.SIGTERM)
        msg = self.next_message()
        self.assertEqual(msg.get("STOPPING"), "1", msg)
        # Wait for the stop itself: a second SIGTERM (stop_server's) could hit the process after
        # its handlers are gone.
        self.assertEqual(self.server.wait(timeout=20), 0)

    def test_without_notify_socket_nothing_is_sent(self):
        # Not named to the server: it must start, reload and stop as before, sending nothing.
        saved = os.environ.pop("NOTIFY_SOCKET", None)
        if saved is not None:
            self.addCleanup(os.environ.__setitem__, "NOTIFY_SOCKET", saved)
        self.start_server()
        self.server.send_signal(signal.SIGHUP)
        self.wait_log("event=reload")
        self.assertEqual(self.stop_server(), 0)
        self.sock.settimeout(0.2)
        with self.assertRaises(socket.timeout):
            self.sock.recv(4096)


if __name__ == "__main__":
    unittest.main()
