"""docs/tutorial.md cannot go stale: every transcript in it is produced here, against the real
server, and compared with the document. A block in the document is marked

    <!-- transcript: NAME -->
    ```
    ...
    ```

and this test plays the session NAME and expects exactly that text. After a deliberate change
to what the server says, POSTERN_TUTORIAL_UPDATE=1 rewrites the blocks from the server's answers
(then read the diff: it is what a student will see).

What varies from run to run is written as a fixed stand-in, so the transcripts stay exact: the
test's free ports are shown as the demo's (2525, 2587, 1110), queue ids as QUEUE-ID and times
as TIME. Mail for example.org is never delivered: the smarthost is a closed loopback port.
"""
import base64
import os
import re
import socket
import ssl

from harness import ROOT, PosternTest, free_port
from test_conn import TLS_CONFIG, make_cert

DOC = os.path.join(ROOT, "docs", "tutorial.md")
HOST = "mail.example.test"
ALICE = "alice@example.test"
PASSWORD = "wonderland"
DEMO_PORTS = {"smtp": 2525, "submission": 2587, "pop3": 1110}
BLOCK = re.compile(r"<!-- transcript: ([a-z0-9-]+) -->\n```\n(.*?)```\n", re.S)


def normalize(text):
    text = re.sub(r"queued as [0-9a-f.]+", "queued as QUEUE-ID", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "TIME", text)
    return text


class Session:
    """A telnet-like session that writes what it sends (C:) and receives (S:) to a transcript."""

    def __init__(self, out, port, shown_port, pop3=False, starttls=False):
        self.out = out
        self.pop3 = pop3
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        if starttls:
            # What `openssl s_client -starttls smtp` does before it hands over the keyboard.
            self.read_reply(record=False)
            self.send("EHLO laptop.example.net", record=False)
            self.read_reply(record=False)
            self.send("STARTTLS", record=False)
            self.read_reply(record=False)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self.sock = ctx.wrap_socket(self.sock)
            out.append(f"$ openssl s_client -quiet -starttls smtp -connect 127.0.0.1:{shown_port}")
        else:
            out.append(f"$ telnet 127.0.0.1 {shown_port}")
            self.read_reply()

    def line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("closed")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line.decode()

    def read_reply(self, record=True):
        lines = [self.line()]
        if not self.pop3:
            while lines[-1][3:4] == "-":
                lines.append(self.line())
        if record:
            self.out.extend("S: " + l for l in lines)
        return lines

    def send(self, text, record=True):
        if record:
            self.out.append("C: " + text if text else "C:")
        self.sock.sendall(text.encode() + b"\r\n")

    def cmd(self, text):
        self.send(text)
        return self.read_reply()

    def data(self, lines):
        self.cmd("DATA")
        for l in lines:
            self.send(l)
        return self.cmd(".")

    def close(self):
        self.sock.close()


class TestTutorial(PosternTest):
    extra_config = TLS_CONFIG + (
        "[smtp]\nplaintext_auth = yes\n[pop3]\nplaintext_auth = yes\n"
        "[relay]\nwindow = 30m\nsender_check = domain\ndenied_style = sendmail\n")

    def setUp(self):
        super().setUp()
        make_cert(self.dir, HOST)
        closed = free_port()
        self.write_config(self.extra_config + f"[relay]\nsmarthost = 127.0.0.1:{closed}\n")
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", ALICE, input=PASSWORD + "\n")
        self.ok("user", "add", "bob@example.test", input="builder\n")
        self.produced = {}

    def session(self, name, service, **kw):
        out = self.produced.setdefault(name, [])
        if out:
            out.append("")
        s = Session(out, self.ports[service], DEMO_PORTS[service],
                    pop3=service == "pop3", **kw)
        self.addCleanup(s.close)
        return s

    def command(self, name, *args):
        out = self.produced.setdefault(name, [])
        if out:
            out.append("")
        r = self.cli(*args)
        out.append("$ postern " + " ".join(args))
        out.extend((r.out + r.err).rstrip("\n").splitlines())
        out.append(f"(exit {r.code})")

    def roaming_attempt(self, name, rcpt_reply_expected):
        s = self.session(name, "smtp")
        s.cmd("EHLO laptop.example.net")
        s.cmd(f"MAIL FROM:<{ALICE}>")
        reply = s.cmd("RCPT TO:<friend@example.org>")
        self.assertTrue(reply[-1].startswith(rcpt_reply_expected), reply)
        return s

    def play(self):
        # 1. Away from home: the laptop is not on the ISP's network and has not logged in.
        s = self.roaming_attempt("roaming-refused", "550")
        s.cmd("QUIT")
        self.command("relay-check-refused", "relay-check", "--ip", "127.0.0.1",
                     "--from", ALICE, "--to", "friend@example.org")

        # 2. Collect mail first: the POP3 login opens the window.
        p = self.session("pop3-login", "pop3")
        p.cmd(f"USER {ALICE}")
        p.cmd(f"PASS {PASSWORD}")
        p.cmd("STAT")
        p.cmd("QUIT")
        self.command("window-list", "window", "list")

        # 3. The same message now goes through.
        s = self.roaming_attempt("roaming-relayed", "250")
        s.data([f"From: Alice <{ALICE}>", "To: <friend@example.org>", "Subject: hello",
                "", "Sent from the road.", ])
        s.cmd("QUIT")
        self.command("relay-check-window", "relay-check", "--ip", "127.0.0.1",
                     "--from", ALICE, "--to", "friend@example.org")

        # 4. The window is Alice's: it does not let her write as somebody else.
        s = self.session("spoofed-sender", "smtp")
        s.cmd("EHLO laptop.example.net")
        s.cmd("MAIL FROM:<boss@example.org>")
        s.cmd("RCPT TO:<friend@example.org>")
        s.cmd("QUIT")

        # 5. The modern way: SMTP AUTH on the submission port, under TLS.
        s = self.session("smtp-auth", "submission", starttls=True)
        s.cmd("EHLO laptop.example.net")
        token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
        s.cmd(f"AUTH PLAIN {token}")
        s.cmd(f"MAIL FROM:<{ALICE}>")
        s.cmd("RCPT TO:<friend@example.org>")
        s.cmd("RSET")
        s.cmd("QUIT")
        self.command("relay-check-auth", "relay-check", "--ip", "198.51.100.7", "--user",
                     ALICE, "--from", ALICE, "--to", "friend@example.org")

    def play_qmail(self):
        s = self.roaming_attempt("roaming-refused-qmail", "553")
        s.cmd("QUIT")

    def test_transcripts_match_the_document(self):
        self.start_server()
        self.play()
        self.stop_server()
        # The qmail wording comes from another server's configuration, without a window.
        self.write_config(self.extra_config + "[relay]\ndenied_style = qmail\n")
        self.ok("window", "close", "127.0.0.1")
        self.start_server()
        self.play_qmail()

        produced = {k: normalize("\n".join(v) + "\n") for k, v in self.produced.items()}
        with open(DOC) as f:
            doc = f.read()
        if os.environ.get("POSTERN_TUTORIAL_UPDATE") == "1":
            doc = BLOCK.sub(lambda m: f"<!-- transcript: {m.group(1)} -->\n```\n"
                            f"{produced.get(m.group(1), m.group(2))}```\n", doc)
            with open(DOC, "w") as f:
                f.write(doc)
        in_doc = {m.group(1): m.group(2) for m in BLOCK.finditer(doc)}
        self.assertEqual(sorted(in_doc), sorted(produced),
                         "the document's transcript blocks and the sessions played differ")
        for name, text in produced.items():
            self.assertEqual(in_doc[name], text, f"docs/tutorial.md, transcript {name}")


if __name__ == "__main__":
    import unittest
    unittest.main()
