"""Loopback fakes for the outbound tests (Python standard library only): an SMTP sink that plays
a smarthost or an MX host, and a small DNS responder that answers MX and A questions for test
domains. Both run in daemon threads on 127.0.0.1 and are stopped by close().
"""
import base64
import binascii
import socket
import socketserver
import ssl
import struct
import threading
import time

from harness import free_port


class SmtpSink:
    """A tiny SMTP server. Per-test knobs (change them any time, they are read per command):

    extensions   EHLO keywords offered (list of str)
    ehlo_reply   None, or a reply to EHLO such as "502 5.5.1 no" (then HELO is expected)
    greeting     the greeting line
    rcpt_replies {address: [reply, ...]} replies used in order, the last one repeated
    data_replies [reply, ...] replies to the final dot, used in order, the last one repeated
    stall_data   True: never answer the final dot (the message counts as not accepted)
    stall_data_command  True: never answer DATA (the client has not sent any of the body);
                 each such session's recipients are appended to self.stalled
    body_reply   None, or (reply, octets): send reply once octets of the body have arrived,
                 before the final dot, then read nothing more and wait (a server that answers
                 too early); the message counts as not accepted
    data_reply_delay  seconds to wait after the final dot before answering it
    bdat_reply   None, or a reply to every BDAT chunk that is not the LAST one (default: 250
                 "N octets received"); BDAT (RFC 3030) is taken whenever the client sends it, so
                 offer CHUNKING in extensions to have it used. The LAST chunk's reply comes from
                 data_replies, as the final dot's does
    tls_context  an ssl.SSLContext to offer STARTTLS with
    auth         None, or (user, password): offer "AUTH PLAIN" (before and after TLS alike, so a
                 client that would send credentials in the clear gets the chance to) and check
                 "AUTH PLAIN <initial response>" against it: 235, or 535 5.7.8; MAIL before a
                 successful AUTH gets 530 5.7.0

    What it saw: self.messages, one dict per message accepted with 250 (mail_from, mail_params,
    rcpts, data bytes as received after un-stuffing, tls); self.unacked, messages whose final
    dot got no 2xx (a message sent with BDAT has "chunks", the sizes of its BDAT commands);
    self.sessions counts connections; self.commands lists every command line;
    self.rcpt_params maps each address given to RCPT to the parameters after it (the last seen).
    self.auths lists every AUTH command as a dict (user, password, ok, tls: under TLS or not);
    self.plaintext holds every octet received outside TLS, in every session.
    """

    def __init__(self, port=0, host="127.0.0.1"):
        self.extensions = ["PIPELINING", "8BITMIME", "SIZE 10000000"]
        self.ehlo_reply = None
        self.greeting = "220 sink.test ESMTP fake"
        self.rcpt_replies = {}
        self.data_replies = ["250 2.0.0 Ok: queued"]
        self.stall_data = False
        self.stall_data_command = False
        self.stalled = []
        self.body_reply = None
        self.data_reply_delay = 0
        self.bdat_reply = None
        self.early_replies = 0
        self.closing = threading.Event()
        self.tls_context = None
        self.auth = None
        self.auths = []
        self.plaintext = bytearray()
        self.messages = []
        self.unacked = []
        self.commands = []
        self.rcpt_params = {}
        self.sessions = 0
        self.data_seen = threading.Event()
        self.lock = threading.Lock()
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                sink._session(self.request)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        # Port 0 would take an ephemeral port, which a test may then need on another address
        # (127.0.0.2) where a client's outgoing connection may hold it: pick one from below the
        # ephemeral range, as harness.free_ports does for the server under test.
        self.server = Server((host, port or free_port(host)), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()

    def _next(self, table, key):
        """The next reply of a list in table[key], the last one repeated."""
        with self.lock:
            lst = table.get(key)
            if not lst:
                return None
            return lst.pop(0) if len(lst) > 1 else lst[0]

    def _session(self, sock):
        with self.lock:
            self.sessions += 1
        holder = [sock]
        try:
            self._converse(holder)
        except (OSError, ValueError):
            pass  # the client went away (a killed server, an aborted attempt)
        finally:
            holder[0].close()

    def _converse(self, holder):
        sock = holder[0]
        sock.settimeout(30)
        f = sock.makefile("rb")
        tls = False

        def send(line):
            sock.sendall(line.encode() + b"\r\n")

        send(self.greeting)
        if not self.greeting.startswith("220"):
            return
        mail_from, params, rcpts = None, "", []
        authed = False
        chunks, bdat = [], bytearray()
        while True:
            raw = f.readline(4096)
            if not raw:
                return
            if not tls:
                with self.lock:
                    self.plaintext += raw
            line = raw.rstrip(b"\r\n").decode("latin-1")
            with self.lock:
                self.commands.append(line)
            verb = line[:4].upper()
            if verb == "EHLO":
                if self.ehlo_reply:
                    send(self.ehlo_reply)
                    continue
                exts = list(self.extensions)
                if self.tls_context is not None and not tls:
                    exts.append("STARTTLS")
                if self.auth is not None:
                    exts.append("AUTH LOGIN PLAIN")
                lines = ["sink.test hello"] + exts
                for i, text in enumerate(lines):
                    send(("250 " if i == len(lines) - 1 else "250-") + text)
            elif verb == "HELO":
                send("250 sink.test")
            elif verb == "STAR":
                send("220 2.0.0 go ahead")
                sock = self.tls_context.wrap_socket(sock, server_side=True)
                holder[0] = sock
                f = sock.makefile("rb")
                tls = True
                mail_from, params, rcpts = None, "", []
                authed = False
            elif verb == "AUTH":
                authed = self._auth(line, tls)
                send("235 2.7.0 Authentication successful" if authed
                     else "535 5.7.8 Authentication credentials invalid")
            elif verb == "MAIL" and self.auth is not None and not authed:
                send("530 5.7.0 Authentication required")
            elif verb == "MAIL":
                rest = line[10:]
                addr, _, params = rest.partition(">")
                mail_from, params, rcpts = addr.lstrip("<"), params.strip(), []
                send("250 2.1.0 Ok")
            elif verb == "RCPT":
                addr, _, rparams = line[8:].strip().partition(">")
                addr = addr.lstrip("<")
                with self.lock:
                    self.rcpt_params[addr] = rparams.strip()
                reply = self._next(self.rcpt_replies, addr) or "250 2.1.5 Ok"
                if reply.startswith("2"):
                    rcpts.append(addr)
                send(reply)
            elif verb == "DATA":
                if mail_from is None or not rcpts:
                    send("554 5.5.1 no valid recipients")
                    continue
                if self.stall_data_command:
                    with self.lock:
                        self.stalled.append(rcpts)
                    self.closing.wait(60)
                    return
                send("354 End data with <CR><LF>.<CR><LF>")
                data = bytearray()
                body_reply = self.body_reply
                while True:
                    chunk = f.readline(1 << 20)
                    if not chunk:
                        return
                    if body_reply is not None and len(data) >= body_reply[1]:
                        # Answer too early, pause (the client's output backs up, so it is
                        # surely still sending the body when it reads this), then take the
                        # rest of the body and never answer the final dot.
                        send(body_reply[0])
                        with self.lock:
                            self.early_replies += 1
                        body_reply = None
                        time.sleep(0.5)
                    if chunk == b".\r\n":
                        break
                    if chunk.startswith(b"."):
                        chunk = chunk[1:]
                    data += chunk
                msg = {"mail_from": mail_from, "mail_params": params, "rcpts": rcpts,
                       "data": bytes(data), "tls": tls}
                if self.body_reply is not None:
                    with self.lock:
                        self.unacked.append(msg)
                    self.closing.wait(60)
                    return
                if self.stall_data:
                    with self.lock:
                        self.unacked.append(msg)
                    self.data_seen.set()
                    time.sleep(60)
                    return
                reply = self._next({"d": self.data_replies}, "d")
                self.data_seen.set()
                if self.data_reply_delay:
                    time.sleep(self.data_reply_delay)
                with self.lock:
                    (self.messages if reply.startswith("2") else self.unacked).append(msg)
                send(reply)
                mail_from, params, rcpts = None, "", []
            elif verb == "BDAT":
                size_text, _, last = line[5:].partition(" ")
                size = int(size_text)
                data = f.read(size)
                if len(data) != size:
                    return
                if mail_from is None or not rcpts:
                    send("503 5.5.1 need MAIL and RCPT")
                    continue
                chunks.append(size)
                bdat += data
                if last.upper() != "LAST":
                    send(self.bdat_reply or f"250 2.0.0 {size} octets received")
                    if self.bdat_reply and not self.bdat_reply.startswith("2"):
                        mail_from, params, rcpts, chunks, bdat = None, "", [], [], bytearray()
                    continue
                msg = {"mail_from": mail_from, "mail_params": params, "rcpts": rcpts,
                       "data": bytes(bdat), "tls": tls, "chunks": chunks}
                chunks, bdat = [], bytearray()
                mail_from, params, rcpts = None, "", []
                if self.stall_data:
                    with self.lock:
                        self.unacked.append(msg)
                    self.data_seen.set()
                    time.sleep(60)
                    return
                reply = self._next({"d": self.data_replies}, "d")
                self.data_seen.set()
                with self.lock:
                    (self.messages if reply.startswith("2") else self.unacked).append(msg)
                send(reply)
            elif verb == "RSET":
                mail_from, params, rcpts = None, "", []
                chunks, bdat = [], bytearray()
                send("250 2.0.0 Ok")
            elif verb == "QUIT":
                send("221 2.0.0 Bye")
                return
            else:
                send("502 5.5.2 unknown command")


    def _auth(self, line, tls):
        """Checks "AUTH PLAIN <base64 of authzid NUL user NUL password>" (RFC 4616 2)."""
        words = line.split(" ")
        entry = {"user": None, "password": None, "ok": False, "tls": tls}
        if self.auth is not None and len(words) == 3 and words[1].upper() == "PLAIN":
            try:
                parts = base64.b64decode(words[2], validate=True).split(b"\0")
            except (binascii.Error, ValueError):
                parts = []
            if len(parts) == 3:
                entry["user"] = parts[1].decode("utf-8", "replace")
                entry["password"] = parts[2].decode("utf-8", "replace")
                entry["ok"] = (parts[0] == b"" and
                               (entry["user"], entry["password"]) == tuple(self.auth))
        with self.lock:
            self.auths.append(entry)
        return entry["ok"]


def _encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


class DnsResponder:
    """A UDP DNS server for test domains on 127.0.0.1.

    records: {name: {"MX": [(pref, host)], "A": ["127.0.0.1"]}}; host "" is the root (null MX).
    servfail: names answered with SERVFAIL. Unknown names get NXDOMAIN; a known name without
    the asked type gets an empty answer (NODATA). queries lists (name, qtype) received.
    """

    TYPES = {1: "A", 15: "MX", 28: "AAAA"}

    def __init__(self):
        self.records = {}
        self.servfail = set()
        self.queries = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def close(self):
        self.running = False
        self.thread.join(5)
        self.sock.close()

    def _loop(self):
        while self.running:
            try:
                pkt, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                reply = self._answer(pkt)
            except (IndexError, struct.error, UnicodeDecodeError):
                continue
            self.sock.sendto(reply, peer)

    def _answer(self, pkt):
        qid, _flags, qd = struct.unpack("!HHH", pkt[:6])
        pos, labels = 12, []
        while pkt[pos] != 0:
            n = pkt[pos]
            labels.append(pkt[pos + 1:pos + 1 + n].decode().lower())
            pos += 1 + n
        pos += 1
        qtype, _qclass = struct.unpack("!HH", pkt[pos:pos + 4])
        question = pkt[12:pos + 4]
        name = ".".join(labels)
        self.queries.append((name, self.TYPES.get(qtype, qtype)))
        answers = []
        rcode = 0
        if name in self.servfail:
            rcode = 2
        elif name not in self.records:
            rcode = 3
        else:
            rec = self.records[name]
            if qtype == 15:
                for pref, host in rec.get("MX", []):
                    rdata = struct.pack("!H", pref) + _encode_name(host)
                    answers.append((15, rdata))
            elif qtype == 1:
                for ip in rec.get("A", []):
                    answers.append((1, socket.inet_aton(ip)))
        header = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(answers), 0, 0)
        body = question
        for rtype, rdata in answers:
            body += struct.pack("!HHHIH", 0xC00C, rtype, 1, 60, len(rdata)) + rdata
        return header + body
