/*
 * test_milter.c - unit tests for common/pure/milter.c, the milter protocol codec: the exact wire
 * form of every message the MTA sends, a buffer one octet short refused, framing over partial
 * input, every reply decoded, every reply cut short or given a trailing octet refused, the option
 * negotiation and the step and action tables.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <string.h>

#include "common/pure/milter.h"

#define S(lit) (const uint8_t *)lit, sizeof(lit) - 1

/* Checks out[0..n) against the expected wire form, and that one octet less does not fit. */
static void expect_wire(const uint8_t *out, size_t n, const uint8_t *want, size_t want_len)
{
    assert_int_equal(n, want_len);
    assert_memory_equal(out, want, want_len);
}

static void test_enc_optneg(void **state)
{
    (void)state;
    uint8_t out[64];
    size_t n = milter_enc_optneg(out, sizeof(out), 6, 0x1ff, 0x1fffff);
    expect_wire(out, n,
                S("\0\0\0\x0d"
                  "O"
                  "\0\0\0\x06"
                  "\0\0\x01\xff"
                  "\0\x1f\xff\xff"));
    assert_int_equal(milter_enc_optneg(out, 16, 6, 0, 0), 0);
    assert_int_equal(milter_enc_optneg(out, 17, 6, 0, 0), 17);
}

static void test_enc_macro(void **state)
{
    (void)state;
    uint8_t out[128];
    struct milter_macro m[] = {{"j", "mx.example"}, {"{client_addr}", "192.0.2.1"}, {"i", NULL}};
    size_t n = milter_enc_macro(out, sizeof(out), MILTER_CMD_CONNECT, m, 3);
    expect_wire(out, n,
                S("\0\0\0\x27"
                  "DCj\0mx.example\0{client_addr}\0"
                  "192.0.2.1\0"));
    assert_int_equal(milter_enc_macro(out, n - 1, MILTER_CMD_CONNECT, m, 3), 0);
}

static void test_enc_connect(void **state)
{
    (void)state;
    uint8_t out[128];
    size_t n =
        milter_enc_connect(out, sizeof(out), "host.example", MILTER_FAMILY_INET, 2525, "192.0.2.1");
    expect_wire(out, n,
                S("\0\0\0\x1b"
                  "Chost.example\0"
                  "4\x09\xdd"
                  "192.0.2.1\0"));
    n = milter_enc_connect(out, sizeof(out), "[2001:db8::1]", MILTER_FAMILY_UNKNOWN, 0, "");
    expect_wire(out, n,
                S("\0\0\0\x10"
                  "C[2001:db8::1]\0U"));
    assert_int_equal(milter_enc_connect(out, sizeof(out), "h", 'X', 0, ""), 0);
}

static void test_enc_steps(void **state)
{
    (void)state;
    uint8_t out[256];
    size_t n = milter_enc_helo(out, sizeof(out), "client.example");
    expect_wire(out, n,
                S("\0\0\0\x10"
                  "Hclient.example\0"));
    const char *mail[] = {"<a@b.example>", "SIZE=100"};
    n = milter_enc_args(out, sizeof(out), MILTER_CMD_MAIL, mail, 2);
    expect_wire(out, n,
                S("\0\0\0\x18"
                  "M<a@b.example>\0SIZE=100\0"));
    n = milter_enc_args(out, sizeof(out), MILTER_CMD_RCPT, mail, 1);
    expect_wire(out, n,
                S("\0\0\0\x0f"
                  "R<a@b.example>\0"));
    assert_int_equal(milter_enc_args(out, sizeof(out), MILTER_CMD_HELO, mail, 1), 0);
    assert_int_equal(milter_enc_args(out, sizeof(out), MILTER_CMD_RCPT, mail, 0), 0);
    n = milter_enc_header(out, sizeof(out), "Subject", "hi\r\n there");
    expect_wire(out, n,
                S("\0\0\0\x14"
                  "LSubject\0hi\r\n there\0"));
    assert_int_equal(milter_enc_header(out, sizeof(out), "", "x"), 0);
    n = milter_enc_body(out, sizeof(out), (const uint8_t *)"ab\0c", 4);
    expect_wire(out, n,
                S("\0\0\0\x05"
                  "Bab\0c"));
    const char empties[] = {MILTER_CMD_DATA,  MILTER_CMD_EOH,  MILTER_CMD_BODYEOB,
                            MILTER_CMD_ABORT, MILTER_CMD_QUIT, MILTER_CMD_QUIT_NC};
    for (size_t i = 0; i < sizeof(empties); i++) {
        n = milter_enc_empty(out, sizeof(out), empties[i]);
        uint8_t want[5] = {0, 0, 0, 1, (uint8_t)empties[i]};
        expect_wire(out, n, want, 5);
        assert_int_equal(milter_enc_empty(out, 4, empties[i]), 0);
    }
    assert_int_equal(milter_enc_empty(out, sizeof(out), MILTER_CMD_HELO), 0);
}

static void test_enc_body_limit(void **state)
{
    (void)state;
    static uint8_t chunk[MILTER_CHUNK_MAX + 1];
    static uint8_t out[MILTER_CHUNK_MAX + 16];
    assert_int_equal(milter_enc_body(out, sizeof(out), chunk, MILTER_CHUNK_MAX),
                     MILTER_CHUNK_MAX + 5);
    assert_int_equal(milter_enc_body(out, sizeof(out), chunk, MILTER_CHUNK_MAX + 1), 0);
}

static void test_frame(void **state)
{
    (void)state;
    const uint8_t in[] = "\0\0\0\x01"
                         "c\0\0\0\x02"
                         "b!";
    uint8_t cmd;
    const uint8_t *p;
    size_t len, used;
    for (size_t n = 0; n < 5; n++)
        assert_int_equal(milter_frame(in, n, &cmd, &p, &len, &used), MILTER_FRAME_MORE);
    assert_int_equal(milter_frame(in, 5, &cmd, &p, &len, &used), MILTER_FRAME_OK);
    assert_int_equal(cmd, 'c');
    assert_int_equal(len, 0);
    assert_int_equal(used, 5);
    assert_int_equal(milter_frame(in + 5, 5, &cmd, &p, &len, &used), MILTER_FRAME_MORE);
    assert_int_equal(milter_frame(in + 5, 6, &cmd, &p, &len, &used), MILTER_FRAME_OK);
    assert_int_equal(cmd, 'b');
    assert_int_equal(len, 1);
    assert_int_equal(p[0], '!');
    assert_int_equal(milter_frame(S("\0\0\0\0c"), &cmd, &p, &len, &used), MILTER_FRAME_BAD);
    assert_int_equal(milter_frame(S("\0\x01\0\x01"), &cmd, &p, &len, &used), MILTER_FRAME_BAD);
    assert_int_equal(milter_frame(S("\0\x01\0\0"), &cmd, &p, &len, &used), MILTER_FRAME_MORE);
}

/* Decodes one reply; every shorter payload and one with an extra octet must be refused. */
static void decode_ok(uint8_t cmd, const uint8_t *p, size_t len, struct milter_reply *r,
                      bool strict_prefix)
{
    assert_int_equal(milter_decode_reply(cmd, p, len, r), 0);
    assert_int_equal(r->kind, cmd);
    if (strict_prefix)
        for (size_t n = 0; n < len; n++) {
            struct milter_reply cut;
            assert_int_equal(milter_decode_reply(cmd, p, n, &cut), -1);
        }
    uint8_t longer[256];
    assert_true(len + 1 <= sizeof(longer));
    memcpy(longer, p, len);
    longer[len] = 'x';
    struct milter_reply extra;
    if (cmd != MILTER_R_REPLBODY)
        assert_int_equal(milter_decode_reply(cmd, longer, len + 1, &extra), -1);
}

static void test_decode_verdicts(void **state)
{
    (void)state;
    const char kinds[] = {MILTER_R_ACCEPT,   MILTER_R_CONTINUE, MILTER_R_DISCARD, MILTER_R_REJECT,
                          MILTER_R_TEMPFAIL, MILTER_R_PROGRESS, MILTER_R_SKIP};
    struct milter_reply r;
    for (size_t i = 0; i < sizeof(kinds); i++)
        decode_ok((uint8_t)kinds[i], (const uint8_t *)"", 0, &r, true);
    assert_int_equal(milter_decode_reply('Z', NULL, 0, &r), -1);
}

static void test_decode_replycode(void **state)
{
    (void)state;
    struct milter_reply r;
    decode_ok('y', S("550 5.7.1 Spam detected\0"), &r, true);
    assert_string_equal(r.text, "550 5.7.1 Spam detected");
    assert_int_equal(milter_replycode(r.text), 550);
    decode_ok('y', S("451-4.7.1 one\r\n451 4.7.1 two\0"), &r, true);
    assert_int_equal(milter_decode_reply('y', S("250 ok\0"), &r), -1);
    assert_int_equal(milter_decode_reply('y', S("55x no\0"), &r), -1);
    assert_int_equal(milter_decode_reply('y', S("550xno\0"), &r), -1);
    assert_int_equal(milter_decode_reply('y', S("550 a\nb\0"), &r), -1);
    assert_int_equal(milter_decode_reply('y', S("550 a\r\0"), &r), -1);
    assert_int_equal(milter_replycode("421"), 421);
}

static void test_decode_headers(void **state)
{
    (void)state;
    struct milter_reply r;
    decode_ok('h', S("X-Spam\0yes\0"), &r, true);
    assert_string_equal(r.name, "X-Spam");
    assert_string_equal(r.value, "yes");
    decode_ok('i', S("\0\0\0\x02X-First\0v\0"), &r, true);
    assert_int_equal(r.index, 2);
    assert_string_equal(r.name, "X-First");
    decode_ok('m', S("\0\0\0\x01Subject\0\0"), &r, true);
    assert_int_equal(r.index, 1);
    assert_string_equal(r.value, "");
    assert_int_equal(milter_decode_reply('h', S("\0v\0"), &r), -1);
}

static void test_decode_envelope(void **state)
{
    (void)state;
    struct milter_reply r;
    decode_ok('+', S("<new@example>\0"), &r, true);
    assert_string_equal(r.addr, "<new@example>");
    decode_ok('-', S("<old@example>\0"), &r, true);
    decode_ok('2', S("<a@example>\0NOTIFY=NEVER\0"), &r, false);
    assert_string_equal(r.args, "NOTIFY=NEVER");
    assert_int_equal(milter_decode_reply('2', S("<a@example>\0"), &r), 0);
    assert_null(r.args);
    decode_ok('e', S("<s@example>\0"), &r, true);
    assert_null(r.args);
    decode_ok('q', S("looks bad\0"), &r, true);
    assert_string_equal(r.text, "looks bad");
    decode_ok('b', S("new body\r\n"), &r, false);
    assert_int_equal(r.body_len, 10);
    decode_ok('l', S("\0\0\0\x02{mail_addr} i\0"), &r, true);
    assert_int_equal(r.stage, MILTER_STAGE_MAIL);
    assert_int_equal(milter_decode_reply('l', S("\0\0\0\x07x\0"), &r), -1);
}

static void test_decode_optneg(void **state)
{
    (void)state;
    struct milter_reply r;
    decode_ok('O', S("\0\0\0\x06\0\0\0\x01\0\0\0\x10"), &r, false);
    assert_int_equal(r.version, 6);
    assert_int_equal(r.actions, MILTER_ACT_ADDHDRS);
    assert_int_equal(r.protocol, MILTER_P_NOBODY);
    assert_int_equal(milter_negotiate(&r, MILTER_ACT_ALL, MILTER_P_OFFER), 0);
    assert_int_equal(milter_negotiate(&r, 0, MILTER_P_OFFER), -1);
    assert_int_equal(milter_decode_reply('O', S("\0\0\0\x06\0\0\0\0\0\0\0"), &r), -1);
    assert_int_equal(milter_decode_reply('O',
                                         S("\0\0\0\x06\0\0\0\0\0\0\0\0"
                                           "\0\0\0\x01{x} j\0\0\0\0\x05i\0"),
                                         &r),
                     0);
    assert_string_equal(r.symlist[MILTER_STAGE_HELO], "{x} j");
    assert_string_equal(r.symlist[MILTER_STAGE_EOM], "i");
    assert_null(r.symlist[MILTER_STAGE_CONNECT]);
    assert_int_equal(milter_decode_reply('O',
                                         S("\0\0\0\x06\0\0\0\0\0\0\0\0"
                                           "\0\0\0\x09x\0"),
                                         &r),
                     -1);
    assert_int_equal(milter_decode_reply('O', S("\0\0\0\x06\0\0\0\0\0\0\0\0\0\0\0\x01x"), &r), -1);
    r.version = 1;
    r.actions = 0;
    r.protocol = 0;
    assert_int_equal(milter_negotiate(&r, MILTER_ACT_ALL, MILTER_P_OFFER), -1);
    r.version = 6;
    r.protocol = 0x10000000u; /* a larger-size flag, never offered */
    assert_int_equal(milter_negotiate(&r, MILTER_ACT_ALL, MILTER_P_OFFER), -1);
}

static void test_steps_and_actions(void **state)
{
    (void)state;
    uint32_t p = MILTER_P_NOHELO | MILTER_P_NR_RCPT | MILTER_P_NR_HDR;
    assert_false(milter_step_sent(p, MILTER_STEP_HELO));
    assert_true(milter_step_sent(p, MILTER_STEP_RCPT));
    assert_false(milter_step_answered(p, MILTER_STEP_RCPT));
    assert_false(milter_step_answered(p, MILTER_STEP_HEADER));
    assert_true(milter_step_answered(p, MILTER_STEP_MAIL));
    assert_true(milter_step_sent(~0u, MILTER_STEP_EOM));
    assert_true(milter_step_answered(~0u, MILTER_STEP_EOM));

    assert_true(milter_reply_allowed(MILTER_R_REJECT, MILTER_STEP_CONNECT, 0));
    assert_true(milter_reply_allowed(MILTER_R_REPLYCODE, MILTER_STEP_RCPT, 0));
    assert_true(milter_reply_allowed(MILTER_R_SKIP, MILTER_STEP_BODY, 0));
    assert_false(milter_reply_allowed(MILTER_R_SKIP, MILTER_STEP_EOM, 0));
    assert_true(milter_reply_allowed(MILTER_R_ADDHEADER, MILTER_STEP_EOM, MILTER_ACT_ADDHDRS));
    assert_false(milter_reply_allowed(MILTER_R_ADDHEADER, MILTER_STEP_EOM, MILTER_ACT_CHGHDRS));
    assert_false(milter_reply_allowed(MILTER_R_ADDHEADER, MILTER_STEP_RCPT, MILTER_ACT_ALL));
    assert_true(milter_reply_allowed(MILTER_R_QUARANTINE, MILTER_STEP_EOM, MILTER_ACT_ALL));
    assert_false(milter_reply_allowed(MILTER_R_OPTNEG, MILTER_STEP_EOM, MILTER_ACT_ALL));
    assert_false(milter_reply_allowed(MILTER_R_SETSYMLIST, MILTER_STEP_EOM, MILTER_ACT_ALL));
}

static void test_spec_parse(void **state)
{
    (void)state;
    struct milter_spec sp[MILTER_LIST_MAX];
    size_t n = 99;
    const char *why = NULL;
    assert_int_equal(milter_spec_parse("", sp, &n, &why), 0);
    assert_int_equal(n, 0);
    assert_int_equal(
        milter_spec_parse(" inet:127.0.0.1:11332 , unix:/run/o.sock,inet:[::1]:25", sp, &n, &why),
        0);
    assert_int_equal(n, 3);
    assert_false(sp[0].is_unix);
    assert_string_equal(sp[0].host, "127.0.0.1");
    assert_int_equal(sp[0].port, 11332);
    assert_true(sp[1].is_unix);
    assert_string_equal(sp[1].path, "/run/o.sock");
    assert_string_equal(sp[2].host, "::1");
    assert_int_equal(sp[2].port, 25);
    const char *bad[] = {"inet:127.0.0.1", "inet::25",  "inet:h:0",  "inet:h:65536",
                         "inet:h:2x",      "unix:",     "unix:rel",  "tcp:h:1",
                         "inet:h:1,",      ",inet:h:1", "inet:a b:1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        assert_int_equal(milter_spec_parse(bad[i], sp, &n, &why), -1);
        assert_non_null(why);
    }
    char many[512] = "";
    for (int i = 0; i <= MILTER_LIST_MAX; i++)
        strcat(many, i ? ",inet:h:1" : "inet:h:1");
    assert_int_equal(milter_spec_parse(many, sp, &n, &why), -1);
    char longpath[200] = "unix:/";
    memset(longpath + 6, 'p', 120);
    assert_int_equal(milter_spec_parse(longpath, sp, &n, &why), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_enc_optneg),      cmocka_unit_test(test_enc_macro),
        cmocka_unit_test(test_enc_connect),     cmocka_unit_test(test_enc_steps),
        cmocka_unit_test(test_enc_body_limit),  cmocka_unit_test(test_frame),
        cmocka_unit_test(test_decode_verdicts), cmocka_unit_test(test_decode_replycode),
        cmocka_unit_test(test_decode_headers),  cmocka_unit_test(test_decode_envelope),
        cmocka_unit_test(test_decode_optneg),   cmocka_unit_test(test_steps_and_actions),
        cmocka_unit_test(test_spec_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
