"""The dkim command (README.md, "DKIM"): keygen for local domains only, one key per algorithm
and domain, the default selector, list, show printing the zone-file line exactly (RSA values cut
into strings of at most 255 octets), del, and the private key kept in the database only."""
import base64
import datetime
import re

from harness import PosternTest, on_postgresql

RECORD = re.compile(r'^([a-z0-9-]+)\._domainkey\.([a-z0-9.-]+)\. IN TXT((?: "[^"]{1,255}")+)$')


def record_value(line):
    m = RECORD.match(line)
    assert m, line
    return m.group(1), m.group(2), "".join(re.findall(r'"([^"]*)"', m.group(3)))


class DkimCliTest(PosternTest):
    def setUp(self):
        super().setUp()
        self.ok("domain", "add", "example.test")

    def test_keygen_ed25519_default_selector_and_show(self):
        r = self.ok("dkim", "keygen", "Example.TEST")
        today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
        sel, dom, value = record_value(r.out.strip())
        self.assertEqual((sel, dom), (f"postern{today}", "example.test"))
        m = re.fullmatch(r"v=DKIM1; k=ed25519; p=([A-Za-z0-9+/=]+)", value)
        self.assertTrue(m, value)
        self.assertEqual(len(base64.b64decode(m.group(1))), 32)
        self.assertEqual(self.ok("dkim", "show", "example.test").out, r.out)
        self.assertEqual(self.ok("dkim", "show", "example.test", "--selector", sel).out, r.out)
        self.assertEqual(self.ok("dkim", "list").out.split()[:3],
                         ["example.test", sel, "ed25519"])

    def test_rsa_record_is_split_into_255_octet_strings(self):
        r = self.ok("dkim", "keygen", "example.test", "--algorithm", "rsa",
                    "--selector", "Big1")
        line = r.out.strip()
        self.assertTrue(line.startswith('big1._domainkey.example.test. IN TXT "v=DKIM1; k=rsa; p='),
                        line)
        strings = re.findall(r'"([^"]*)"', line)
        self.assertGreater(len(strings), 1)
        self.assertTrue(all(len(s) == 255 for s in strings[:-1]), strings)
        _, _, value = record_value(line)
        der = base64.b64decode(value.split("p=")[1])
        self.assertGreater(len(der), 256)  # a 2048-bit SubjectPublicKeyInfo

    def test_one_key_per_algorithm(self):
        self.ok("dkim", "keygen", "example.test", "--selector", "one")
        r = self.cli("dkim", "keygen", "example.test", "--selector", "two")
        self.assertEqual(r.code, 1, r)
        self.assertEqual(r.err, "postern: example.test already has an ed25519 key (selector one); "
                         "a domain holds one key per algorithm: delete it first with: "
                         "postern dkim del example.test --selector one\n")
        # An RSA key beside it is fine, and both are shown, ed25519 first.
        self.ok("dkim", "keygen", "example.test", "--algorithm", "rsa", "--bits", "1024")
        shown = self.ok("dkim", "show", "example.test").out.splitlines()
        self.assertEqual(len(shown), 2)
        self.assertIn("k=ed25519", shown[0])
        self.assertIn("k=rsa", shown[1])
        # The same selector for the other algorithm is refused.
        self.ok("dkim", "del", "example.test", "--selector", "one")
        r = self.cli("dkim", "keygen", "example.test", "--selector",
                     self.ok("dkim", "list").out.split()[1])
        self.assertEqual(r.code, 1, r)
        self.assertIn("is taken by its other key", r.err)

    def test_same_day_defaults_do_not_clash(self):
        a = record_value(self.ok("dkim", "keygen", "example.test").out.strip())[0]
        b = record_value(self.ok("dkim", "keygen", "example.test", "--algorithm", "rsa",
                                 "--bits", "1024").out.strip())[0]
        self.assertNotEqual(a, b)
        self.assertEqual(b, a + "-rsa")

    def test_list_and_del(self):
        r = self.cli("dkim", "list")
        self.assertEqual((r.code, r.out, r.err), (0, "", "postern: no DKIM keys\n"))
        self.ok("domain", "add", "other.test")
        self.ok("dkim", "keygen", "other.test", "--selector", "s1")
        self.ok("dkim", "keygen", "example.test", "--selector", "s2")
        rows = [l.split() for l in self.ok("dkim", "list").out.splitlines()]
        self.assertEqual([r[:3] for r in rows],
                         [["example.test", "s2", "ed25519"], ["other.test", "s1", "ed25519"]])
        self.assertRegex(rows[0][3], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        r = self.ok("dkim", "del", "other.test", "--selector", "S1")
        self.assertIn("deleted DKIM key s1 for other.test", r.out)
        r = self.cli("dkim", "del", "other.test", "--selector", "s1")
        self.assertEqual((r.code, r.err), (1, "postern: no DKIM key s1 for other.test\n"))
        r = self.cli("dkim", "show", "other.test")
        self.assertEqual(r.code, 1, r)
        self.assertIn("no DKIM keys for other.test", r.err)

    def test_refusals_and_usage(self):
        r = self.cli("dkim", "keygen", "nowhere.test")
        self.assertEqual(r.code, 1, r)
        self.assertEqual(r.err, "postern: nowhere.test is not a local domain; add it with: "
                         "postern domain add nowhere.test\n")
        for args in [("dkim",), ("dkim", "frob"), ("dkim", "keygen"),
                     ("dkim", "keygen", "example.test", "--algorithm", "dsa"),
                     ("dkim", "keygen", "example.test", "--bits", "2048"),
                     ("dkim", "keygen", "example.test", "--algorithm", "rsa", "--bits", "512"),
                     ("dkim", "keygen", "example.test", "--selector", "a.b"),
                     ("dkim", "keygen", "example.test", "--selector", "-a"),
                     ("dkim", "del", "example.test"), ("dkim", "show"),
                     ("dkim", "list", "example.test"), ("dkim", "show", "bad..domain")]:
            r = self.cli(*args)
            self.assertEqual(r.code, 2, f"{args}: {r}")
            self.assertEqual(r.err.count("\n"), 1, r.err)
        self.assertEqual(self.cli("dkim", "list").out, "")

    def test_private_key_stays_in_the_database(self):
        r = self.ok("dkim", "keygen", "example.test", "--algorithm", "rsa", "--bits", "1024")
        priv, = self.sql("SELECT substr(private_key, 1, 40) FROM dkim_keys")[0]
        self.assertTrue(priv.startswith("-----BEGIN PRIVATE KEY-----"), priv[:40])
        for args in [("dkim", "list"), ("dkim", "show", "example.test")]:
            out = self.ok(*args).out
            self.assertNotIn("PRIVATE", out)
        self.assertNotIn("PRIVATE", r.out + r.err)

    def test_domain_del_takes_its_keys(self):
        self.ok("dkim", "keygen", "example.test")
        self.ok("domain", "del", "example.test")
        self.assertEqual(self.ok("dkim", "list").out, "")


# The same commands on PostgreSQL (POSTERN_TEST_PG): each test on a fresh database.
DkimCliTestOnPostgresql = on_postgresql(DkimCliTest)
