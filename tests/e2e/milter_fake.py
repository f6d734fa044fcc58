"""A test milter on python3-milter (Debian's binding of Sendmail's libmilter), run by
test_milter.py under /usr/bin/python3: `milter_fake.py SOCKET MODE`.

MODE names the step it acts at:
  connect   rejects every connection (550 at connect)
  helo      tempfails HELO/EHLO
  rcpt      rejects the recipient spam@..., with its own reply text
  slow      takes 3 seconds to answer at end of message
  eom       acts at end of message on what the Subject says:
            reject, tempfail, discard, gtube (the GTUBE string in the body: 554 with its text),
            addheader, insheader, chgheader, delheader, replbody, chgfrom, addrcpt, delrcpt,
            quarantine; anything else continues.
Every message it sees is also written to stdout as one line, "step argument", for the test to
read back what postern sent (macros included)."""
import sys
import time

import Milter

SOCKET, MODE = sys.argv[1], sys.argv[2]
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def note(*parts):
    print(" ".join(str(p) for p in parts), flush=True)


class Fake(Milter.Base):
    def __init__(self):
        self.subject = ""
        self.content = b""
        self.rcpts = []

    def connect(self, hostname, family, hostaddr):
        note("connect", hostname, hostaddr[0], self.getsymval("j"),
             self.getsymval("{client_addr}"), self.getsymval("{daemon_name}"))
        if MODE == "connect":
            self.setreply("550", "5.7.1", "go away from connect")
            return Milter.REJECT
        return Milter.CONTINUE

    def hello(self, name):
        note("helo", name)
        if MODE == "helo":
            return Milter.TEMPFAIL
        return Milter.CONTINUE

    def envfrom(self, sender, *params):
        self.subject, self.content, self.rcpts = "", b"", []
        note("mail", sender, self.getsymval("{mail_addr}"), *params)
        return Milter.CONTINUE

    def envrcpt(self, rcpt, *params):
        note("rcpt", rcpt, self.getsymval("{rcpt_addr}"))
        self.rcpts.append(rcpt)
        if MODE == "rcpt" and rcpt.lower().startswith("<spam@"):
            self.setreply("550", "5.7.1", "no spam for you")
            return Milter.REJECT
        return Milter.CONTINUE

    def header(self, name, value):
        note("header", name, value)
        if name.lower() == "subject":
            self.subject = value.strip()
        return Milter.CONTINUE

    def eoh(self):
        note("eoh")
        return Milter.CONTINUE

    def body(self, chunk):
        self.content += chunk
        return Milter.CONTINUE

    def eom(self):
        note("eom", len(self.content), self.getsymval("i"))
        if MODE == "slow":
            time.sleep(3)
        if MODE != "eom":
            return Milter.CONTINUE
        s = self.subject
        if GTUBE in self.content:
            self.setreply("554", "5.7.1", "Gtube pattern; spam detected")
            return Milter.REJECT
        if s == "reject":
            self.setreply("550", "5.7.1", "rejected by the fake milter")
            return Milter.REJECT
        if s == "tempfail":
            return Milter.TEMPFAIL
        if s == "discard":
            return Milter.DISCARD
        if s == "addheader":
            self.addheader("X-Fake-Milter", "checked")
        elif s == "insheader":
            self.addheader("X-First", "inserted", 0)
        elif s == "chgheader":
            self.chgheader("Subject", 1, "changed")
        elif s == "delheader":
            self.chgheader("X-Remove", 1, "")
        elif s == "replbody":
            self.replacebody(b"replaced body\r\n")
        elif s == "chgfrom":
            self.chgfrom("<new-sender@example.test>")
        elif s == "addrcpt":
            self.addrcpt("<bob@example.test>")
        elif s == "delrcpt":
            self.delrcpt("<bob@example.test>")
        elif s == "quarantine":
            self.quarantine("looks odd")
        return Milter.CONTINUE


Milter.factory = Fake
Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.CHGBODY | Milter.ADDRCPT |
                 Milter.DELRCPT | Milter.QUARANTINE | Milter.CHGFROM)
note("ready")
Milter.runmilter("fake", SOCKET, 60)
