"""`postern relay-check` (README.md "The relay rules" and "Commands"), against the real binary
and a temporary database set up with the admin CLI: local users, unknown users and postmaster;
remote recipients from outside in both refusal styles; trusted networks (IPv4, IPv6,
IPv4-mapped); POP-before-SMTP windows (open, expired, at the limit, IPv6 prefix); SMTP AUTH;
the sender check in each mode; address tricks; and the exit codes 0/1/2/3.

Each check asserts the reply line byte for byte and the log line's leading fields."""
import os
import sqlite3
import time

from harness import PosternTest

OUTSIDE = "203.0.113.9"
OK = "250 2.1.5 Ok"
QMAIL = "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"


def sendmail_denied(rcpt):
    return f"550 5.7.1 <{rcpt}>... Relaying denied"


def unknown(rcpt):
    return f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"


def not_owned(sender, user):
    return f"553 5.7.1 <{sender}>: Sender address rejected: not owned by user <{user}>"


class RelayCheckTest(PosternTest):
    def setUp(self):
        super().setUp()
        self.ok("domain", "add", "example.test")
        self.ok("user", "add", "alice@example.test", input="secret\n")
        self.ok("user", "add", "bob@example.test", input="secret\n")

    def config(self, **relay):
        """Rewrites the config with these [relay] keys."""
        self.write_config("[relay]\n" + "".join(f"{k} = {v}\n" for k, v in relay.items()))

    def check(self, ip=OUTSIDE, frm="someone@remote.test", to="x@remote.test", user=None):
        args = ["relay-check", "--ip", ip, "--from", frm, "--to", to]
        if user is not None:
            args += ["--user", user]
        return self.cli(*args)

    def expect(self, want_reply, want_log_prefix, **kw):
        """Runs check(**kw) and asserts exit code (from the reply), both lines, nothing on stderr;
        returns the log line."""
        r = self.check(**kw)
        lines = r.out.splitlines()
        self.assertEqual(len(lines), 2, f"{kw}: {r}")
        self.assertEqual(lines[0], want_reply, f"{kw}: {r}")
        self.assertTrue(lines[1].startswith(want_log_prefix),
                        f"{kw}:\n got  {lines[1]}\n want {want_log_prefix}...")
        self.assertEqual(r.code, 0 if want_reply.startswith("250 ") else 1, f"{kw}: {r}")
        self.assertEqual(r.err, "", f"{kw}: {r}")
        return lines[1]

    def set_relayed(self, n):
        with sqlite3.connect(self.db) as c:
            c.execute("UPDATE windows SET relayed = ?", (n,))
        c.close()


class LocalRecipientTest(RelayCheckTest):
    def test_local_user_from_anyone(self):
        log = self.expect(OK, "relay=allow reason=local-mailbox ip=203.0.113.9 "
                              "from=<someone@remote.test> to=<alice@example.test>",
                          to="alice@example.test")
        self.assertEqual(log, "relay=allow reason=local-mailbox ip=203.0.113.9 "
                              "from=<someone@remote.test> to=<alice@example.test>")
        # Case, trailing dot and angle brackets do not matter; the null sender is fine.
        self.expect(OK, "relay=allow reason=local-mailbox ip=203.0.113.9 from=<> "
                        "to=<ALICE@example.test>", frm="", to="<ALICE@Example.Test.>")
        self.expect(OK, "relay=allow reason=local-mailbox ip=203.0.113.9 from=<> ",
                    frm="<>", to="bob@example.test")

    def test_unknown_local_user(self):
        self.expect(unknown("carol@example.test"),
                    "relay=deny reason=unknown-user ip=203.0.113.9 ", to="carol@example.test")
        # Not even a trusted client or a logged-in user makes it exist.
        self.ok("network", "add", "192.0.2.0/24")
        self.expect(unknown("carol@example.test"), "relay=deny reason=unknown-user ",
                    ip="192.0.2.1", to="carol@example.test")
        self.expect(unknown("carol@example.test"), "relay=deny reason=unknown-user ",
                    user="alice@example.test", frm="alice@example.test", to="carol@example.test")

    def test_postmaster(self):
        for to in ["postmaster", "<Postmaster>", "POSTMASTER", "postmaster@example.test",
                   "PostMaster@Example.TEST"]:
            self.expect(OK, "relay=allow reason=postmaster ip=203.0.113.9 ", to=to)
        self.expect(sendmail_denied("postmaster@remote.test"),
                    "relay=deny reason=not-authorized ", to="postmaster@remote.test")


class RemoteRecipientTest(RelayCheckTest):
    def test_outside_sendmail_style(self):
        log = self.expect(sendmail_denied("x@remote.test"),
                          "relay=deny reason=not-authorized ip=203.0.113.9 ")
        self.assertEqual(log, "relay=deny reason=not-authorized ip=203.0.113.9 "
                              "from=<someone@remote.test> to=<x@remote.test>")
        # A local sender from outside is no ground either.
        self.expect(sendmail_denied("x@remote.test"), "relay=deny reason=not-authorized ",
                    frm="alice@example.test")

    def test_outside_qmail_style(self):
        self.config(denied_style="qmail")
        self.expect(QMAIL, "relay=deny reason=not-authorized ip=203.0.113.9 ")
        # The other texts are the same in both styles.
        self.expect(unknown("carol@example.test"), "relay=deny reason=unknown-user ",
                    to="carol@example.test")

    def test_trusted_network_ipv4(self):
        self.ok("network", "add", "192.0.2.0/24")
        log = self.expect(OK, "relay=allow reason=trusted-network ip=192.0.2.7 ", ip="192.0.2.7",
                          frm="ceo@bank.test")
        self.assertTrue(log.endswith(" network=192.0.2.0/24"), log)
        self.expect(sendmail_denied("x@remote.test"), "relay=deny reason=not-authorized ",
                    ip="192.0.3.7")

    def test_trusted_network_ipv6(self):
        self.ok("network", "add", "2001:db8::/32")
        log = self.expect(OK, "relay=allow reason=trusted-network ip=2001:db8:1::5 ",
                          ip="2001:DB8:1::5")
        self.assertTrue(log.endswith(" network=2001:db8::/32"), log)
        self.expect(sendmail_denied("x@remote.test"), "relay=deny reason=not-authorized ",
                    ip="2001:db9::1")

    def test_trusted_network_v4_mapped(self):
        self.ok("network", "add", "192.0.2.0/24")
        self.expect(OK, "relay=allow reason=trusted-network ip=192.0.2.7 ",
                    ip="::ffff:192.0.2.7")
        self.expect(sendmail_denied("x@remote.test"), "relay=deny reason=not-authorized ",
                    ip="::ffff:192.0.3.7")
        # An IPv4-mapped network is the IPv4 one.
        self.ok("network", "del", "192.0.2.0/24")
        self.ok("network", "add", "::ffff:198.51.100.0/120")
        self.expect(OK, "relay=allow reason=trusted-network ip=198.51.100.9 ", ip="198.51.100.9")

    def test_auth_user(self):
        log = self.expect(OK, "relay=allow reason=auth ip=203.0.113.9 from=<alice@example.test> "
                              "to=<x@remote.test> user=alice@example.test",
                          user="alice@example.test", frm="alice@example.test")
        self.assertTrue(log.endswith(" sender_check=domain"), log)
        # The --user address is normalised like every user address.
        self.expect(OK, "relay=allow reason=auth ", user="Alice@EXAMPLE.test.",
                    frm="alice@example.test")

    def test_auth_unknown_user_exits_1(self):
        r = self.check(user="nobody@example.test", frm="nobody@example.test")
        self.assertEqual(r.code, 1, r)
        self.assertEqual(r.err, "postern: no such user: nobody@example.test\n")
        self.assertEqual(r.out, "")

    def test_relay_check_changes_nothing(self):
        self.ok("window", "open", "198.51.100.7", "--user", "alice@example.test")
        for _ in range(3):
            self.expect(OK, "relay=allow reason=pop-window ", ip="198.51.100.7",
                        frm="alice@example.test")
        self.assertIn(" relayed=0", self.ok("window", "list").out)


class WindowTest(RelayCheckTest):
    def test_window(self):
        r = self.ok("window", "open", "198.51.100.7", "--user", "alice@example.test")
        self.assertIn("opened window 198.51.100.7", r.out)
        log = self.expect(OK, "relay=allow reason=pop-window ip=198.51.100.7 "
                              "from=<alice@example.test> to=<x@remote.test> "
                              "user=alice@example.test expires=",
                          ip="198.51.100.7", frm="alice@example.test")
        self.assertRegex(log, r" expires=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ relayed=0/100 "
                              r"sender_check=domain$")
        # The same address written as IPv4-mapped IPv6 has the same window.
        self.expect(OK, "relay=allow reason=pop-window ip=198.51.100.7 ",
                    ip="::ffff:198.51.100.7", frm="alice@example.test")
        # Another address has none.
        self.expect(sendmail_denied("x@remote.test"), "relay=deny reason=not-authorized ",
                    ip="198.51.100.8", frm="alice@example.test")
        # Closed: gone.
        self.ok("window", "close", "198.51.100.7")
        self.expect(sendmail_denied("x@remote.test"), "relay=deny reason=not-authorized ",
                    ip="198.51.100.7", frm="alice@example.test")

    def test_window_without_user_checks_no_sender(self):
        self.ok("window", "open", "198.51.100.7")
        log = self.expect(OK, "relay=allow reason=pop-window ip=198.51.100.7 "
                              "from=<ceo@bank.test> to=<x@remote.test> expires=",
                          ip="198.51.100.7", frm="ceo@bank.test")
        self.assertTrue(log.endswith(" sender_check=no-user"), log)

    def test_expired_window(self):
        self.ok("window", "open", "198.51.100.7", "--user", "alice@example.test", "--for", "1s")
        self.expect(OK, "relay=allow reason=pop-window ", ip="198.51.100.7",
                    frm="alice@example.test")
        time.sleep(1.2)
        self.expect(sendmail_denied("x@remote.test"), "relay=deny reason=not-authorized ",
                    ip="198.51.100.7", frm="alice@example.test")

    def test_window_limit(self):
        self.config(window_max_recipients=2)
        self.ok("window", "open", "198.51.100.7", "--user", "alice@example.test")
        self.set_relayed(1)
        log = self.expect(OK, "relay=allow reason=pop-window ", ip="198.51.100.7",
                          frm="alice@example.test")
        self.assertIn(" relayed=1/2 ", log)
        self.set_relayed(2)
        log = self.expect(sendmail_denied("x@remote.test"),
                          "relay=deny reason=window-limit ip=198.51.100.7 "
                          "from=<alice@example.test> to=<x@remote.test> user=alice@example.test ",
                          ip="198.51.100.7", frm="alice@example.test")
        self.assertTrue(log.endswith(" relayed=2/2"), log)
        # Local mail is still accepted, and AUTH still relays.
        self.expect(OK, "relay=allow reason=local-mailbox ", ip="198.51.100.7",
                    to="bob@example.test")
        self.expect(OK, "relay=allow reason=auth ", ip="198.51.100.7", user="alice@example.test",
                    frm="alice@example.test")
        self.config(window_max_recipients=2, denied_style="qmail")
        self.expect(QMAIL, "relay=deny reason=window-limit ", ip="198.51.100.7",
                    frm="alice@example.test")

    def test_ipv6_window_prefix(self):
        self.config(window_ipv6_prefix=64)
        r = self.ok("window", "open", "2001:db8:1:2::7", "--user", "alice@example.test")
        self.assertIn("opened window 2001:db8:1:2::/64", r.out)
        self.expect(OK, "relay=allow reason=pop-window ip=2001:db8:1:2:ffff::1 ",
                    ip="2001:db8:1:2:ffff::1", frm="alice@example.test")
        self.expect(sendmail_denied("x@remote.test"), "relay=deny reason=not-authorized ",
                    ip="2001:db8:1:3::7", frm="alice@example.test")

    def test_ipv6_window_default_prefix_is_one_host(self):
        self.ok("window", "open", "2001:db8:1:2::7", "--user", "alice@example.test")
        self.expect(OK, "relay=allow reason=pop-window ip=2001:db8:1:2::7 ",
                    ip="2001:db8:1:2::7", frm="alice@example.test")
        self.expect(sendmail_denied("x@remote.test"), "relay=deny reason=not-authorized ",
                    ip="2001:db8:1:2::8", frm="alice@example.test")


class SenderCheckTest(RelayCheckTest):
    def test_domain(self):
        self.ok("window", "open", "198.51.100.7", "--user", "alice@example.test")
        for kw in [dict(user="alice@example.test"), dict(ip="198.51.100.7")]:
            via = "auth" if "user" in kw else "pop-window"
            self.expect(OK, f"relay=allow reason={via} ", frm="bob@example.test", **kw)
            self.expect(OK, f"relay=allow reason={via} ", frm="BOB@Example.Test", **kw)
            log = self.expect(OK, f"relay=allow reason={via} ", frm="", **kw)
            self.assertTrue(log.endswith(" sender_check=null-sender"), log)
            for bad in ["ceo@bank.test", "a@sub.example.test", "a@evil-example.test",
                        "alice@[203.0.113.9]"]:
                log = self.expect(not_owned(bad, "alice@example.test"),
                                  "relay=deny reason=sender-not-owned ", frm=bad, **kw)
                self.assertTrue(log.endswith(" sender_check=domain"), log)

    def test_address(self):
        self.config(sender_check="address")
        self.ok("window", "open", "198.51.100.7", "--user", "alice@example.test")
        for kw in [dict(user="alice@example.test"), dict(ip="198.51.100.7")]:
            via = "auth" if "user" in kw else "pop-window"
            self.expect(OK, f"relay=allow reason={via} ", frm="alice@example.test", **kw)
            self.expect(OK, f"relay=allow reason={via} ", frm="ALICE@example.TEST", **kw)
            self.expect(OK, f"relay=allow reason={via} ", frm="<>", **kw)
            for bad in ["bob@example.test", "alice@bank.test", '"alice"@example.test']:
                self.expect(not_owned(bad, "alice@example.test"),
                            "relay=deny reason=sender-not-owned ", frm=bad, **kw)

    def test_off(self):
        self.config(sender_check="off")
        self.ok("window", "open", "198.51.100.7", "--user", "alice@example.test")
        log = self.expect(OK, "relay=allow reason=auth ", user="alice@example.test",
                          frm="ceo@bank.test")
        self.assertTrue(log.endswith(" sender_check=off"), log)
        self.expect(OK, "relay=allow reason=pop-window ", ip="198.51.100.7", frm="ceo@bank.test")

    def test_trusted_network_is_not_checked(self):
        self.config(sender_check="address")
        self.ok("network", "add", "192.0.2.0/24")
        self.expect(OK, "relay=allow reason=trusted-network ", ip="192.0.2.7",
                    frm="ceo@bank.test", user="alice@example.test")


class AddressTrickTest(RelayCheckTest):
    # (RCPT TO as given, the reply from outside, the reason)
    TRICKS = [
        ("user%remote.test@example.test", unknown("user%remote.test@example.test"),
         "unknown-user"),
        ("alice%remote.test@example.test", unknown("alice%remote.test@example.test"),
         "unknown-user"),
        ("remote.test!alice@example.test", unknown("remote.test!alice@example.test"),
         "unknown-user"),
        ('"user@remote.test"@example.test', unknown('"user@remote.test"@example.test'),
         "unknown-user"),
        ('"alice"@example.test', unknown('"alice"@example.test'), "unknown-user"),
        ("@example.test:user@remote.test", sendmail_denied("user@remote.test"),
         "not-authorized"),
        ("<@[127.0.0.1]:user@remote.test>", sendmail_denied("user@remote.test"),
         "not-authorized"),
        ("user%remote.test@[127.0.0.1]", sendmail_denied("user%remote.test@[127.0.0.1]"),
         "not-authorized"),
        ("alice@[127.0.0.1]", sendmail_denied("alice@[127.0.0.1]"), "not-authorized"),
        ("user@[IPv6:::1]", sendmail_denied("user@[IPv6:::1]"), "not-authorized"),
        ("user@[IPv6:::ffff:127.0.0.1]", sendmail_denied("user@[127.0.0.1]"),
         "not-authorized"),
        ("alice@evil-example.test", sendmail_denied("alice@evil-example.test"),
         "not-authorized"),
        ("alice@example.test.evil", sendmail_denied("alice@example.test.evil"),
         "not-authorized"),
        ("alice@sub.example.test", sendmail_denied("alice@sub.example.test"), "not-authorized"),
    ]

    def test_tricks_refused_from_outside(self):
        for to, reply, reason in self.TRICKS:
            with self.subTest(to=to):
                self.expect(reply, f"relay=deny reason={reason} ip=203.0.113.9 ", to=to)

    def test_tricks_from_trusted_network(self):
        # Local-domain tricks stay "User unknown"; the rest is relayed as the remote address it
        # is, on the network's trust, not on the trick.
        self.ok("network", "add", "192.0.2.0/24")
        for to, reply, reason in self.TRICKS:
            with self.subTest(to=to):
                if reason == "unknown-user":
                    self.expect(reply, "relay=deny reason=unknown-user ", ip="192.0.2.7", to=to)
                else:
                    self.expect(OK, "relay=allow reason=trusted-network ", ip="192.0.2.7", to=to)

    def test_tricks_the_parser_refuses(self):
        for to in ['"relaytest@remote.test"', "remote.test!relaytest",
                   "relaytest@remote.test@[127.0.0.1]", "relaytest@remote.test@example.test",
                   "user@127.0.0.1", "user@[tag:remote.test]", "<x@remote.test> SIZE=1",
                   "user@example.test>"]:
            with self.subTest(to=to):
                r = self.check(to=to)
                self.assertEqual(r.code, 2, r)
                self.assertTrue(r.err.startswith("postern: invalid --to address"), r.err)
                self.assertEqual(r.err.count("\n"), 1, r.err)
                self.assertEqual(r.out, "")


class UsageTest(RelayCheckTest):
    def test_usage_errors_exit_2(self):
        cases = [
            (["relay-check"], "missing --ip"),
            (["relay-check", "--ip", OUTSIDE, "--from", ""], "missing --to"),
            (["relay-check", "--ip", OUTSIDE, "--to", "x@remote.test"], "missing --from"),
            (["relay-check", "--from", "", "--to", "x@remote.test"], "missing --ip"),
            (["relay-check", "--ip", "1.2.3", "--from", "", "--to", "x@remote.test"],
             'invalid IP address "1.2.3"'),
            (["relay-check", "--ip", "mail.example.test", "--from", "", "--to", "x@r.test"],
             "invalid IP address"),
            (["relay-check", "--ip", OUTSIDE, "--from", "a@b@c", "--to", "x@remote.test"],
             "invalid --from address"),
            (["relay-check", "--ip", OUTSIDE, "--from", "Postmaster", "--to", "x@remote.test"],
             "invalid --from address"),
            (["relay-check", "--ip", OUTSIDE, "--from", "", "--to", ""],
             "the null path is not a recipient"),
            (["relay-check", "--ip", OUTSIDE, "--from", "", "--to", "<>"],
             "the null path is not a recipient"),
            (["relay-check", "--ip", OUTSIDE, "--from", "", "--to", "x@remote.test",
              "--user", '"a"@example.test'], "invalid --user address"),
            (["relay-check", "--ip", OUTSIDE, "--ip", OUTSIDE, "--from", "", "--to", "x@r.test"],
             "option --ip given twice"),
            (["relay-check", "--ip", OUTSIDE, "--from", "", "--to", "x@r.test", "extra"],
             'unexpected argument "extra"'),
            (["relay-check", "--ip", OUTSIDE, "--from", "", "--to", "x@r.test", "--frob", "1"],
             "unknown option --frob"),
            (["relay-check", "--ip", OUTSIDE, "--from", "", "--to"], "option --to needs a value"),
        ]
        for args, want in cases:
            with self.subTest(args=args):
                r = self.cli(*args)
                self.assertEqual(r.code, 2, r)
                self.assertTrue(r.err.startswith("postern: "), r.err)
                self.assertIn(want, r.err)
                self.assertEqual(r.err.count("\n"), 1, r.err)
                self.assertEqual(r.out, "")

    def test_equals_form_and_help(self):
        r = self.cli("relay-check", f"--ip={OUTSIDE}", "--from=", "--to=alice@example.test")
        self.assertEqual(r.code, 0, r)
        self.assertEqual(r.out.splitlines()[0], OK)
        self.assertIn("relay-check --ip IP", self.ok("help").out)

    def test_database_failure_exits_3(self):
        blocker = os.path.join(self.dir, "not-a-folder")
        with open(blocker, "w") as f:
            f.write("x")
        self.write_config(f"[server]\ndatabase = {blocker}/postern.db\n")
        r = self.check()
        self.assertEqual(r.code, 3, r)
        self.assertTrue(r.err.startswith("postern: "), r.err)
        self.assertEqual(r.err.count("\n"), 1, r.err)
        self.assertEqual(r.out, "")


if __name__ == "__main__":
    import unittest
    unittest.main()
