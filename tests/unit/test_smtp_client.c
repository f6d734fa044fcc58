/*
 * test_smtp_client.c - the pure pieces of the outbound SMTP client: multi-line reply parsing
 * (RFC 5321 4.2), enhanced status codes (RFC 3463), EHLO keywords, and the smarthost credentials
 * (the password file, the AUTH PLAIN line of RFC 4954 4 / RFC 4616 2), and the codes
 * smtp_client_start returns when the store cannot give the body (store codes, never taken for a
 * connection's), or, with reader threads (storage/reader.h), what done reports for it. The
 * transaction itself runs against a loopback sink in tests/e2e/test_outbound.py, which also checks
 * how the runner reports such a store failure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "server/outbound/smtp_client.h"
#include <uv.h>

#include "storage/reader.h"
#include "storage/store.h"

struct reply_case {
    const char *name;
    const char *lines[6]; /* NULL-terminated */
    int want_last;        /* status of the last line fed */
    int want_code;
    size_t want_lines;
    const char *want_text;
};

static const struct reply_case reply_cases[] = {
    {"single", {"250 ok", NULL}, SMTP_REPLY_DONE, 250, 1, "250 ok"},
    {"code only", {"354", NULL}, SMTP_REPLY_DONE, 354, 1, "354"},
    {"multi",
     {"250-mx.test", "250-PIPELINING", "250 SIZE 100", NULL},
     SMTP_REPLY_DONE,
     250,
     3,
     "250-mx.test\n250-PIPELINING\n250 SIZE 100"},
    {"continuation", {"451-wait", NULL}, SMTP_REPLY_MORE, 451, 1, "451-wait"},
    {"first code wins", {"550-a", "551 b", NULL}, SMTP_REPLY_DONE, 550, 2, "550-a\n551 b"},
    {"bad letters", {"OK fine", NULL}, SMTP_REPLY_BAD, 0, 0, ""},
    {"bad separator", {"250x", NULL}, SMTP_REPLY_BAD, 0, 0, ""},
    {"bad class", {"650 no", NULL}, SMTP_REPLY_BAD, 0, 0, ""},
    {"too short", {"25", NULL}, SMTP_REPLY_BAD, 0, 0, ""},
    {"empty", {"", NULL}, SMTP_REPLY_BAD, 0, 0, ""},
};

static void test_reply_feed(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(reply_cases) / sizeof(reply_cases[0]); i++) {
        const struct reply_case *c = &reply_cases[i];
        struct smtp_reply r;
        smtp_reply_reset(&r);
        int st = SMTP_REPLY_BAD;
        for (size_t k = 0; c->lines[k] != NULL; k++)
            st = smtp_reply_feed(&r, c->lines[k], strlen(c->lines[k]));
        if (st != c->want_last || r.code != c->want_code || r.lines != c->want_lines ||
            strcmp(r.text, c->want_text) != 0)
            fail_msg("%s: got status %d code %d lines %zu text \"%s\"", c->name, st, r.code,
                     r.lines, r.text);
    }
}

/* A reply longer than the buffer keeps its code and is cut, NUL-terminated. */
static void test_reply_long_is_cut(void **state)
{
    (void)state;
    struct smtp_reply r;
    smtp_reply_reset(&r);
    char line[500];
    memset(line, 'x', sizeof(line));
    memcpy(line, "250-", 4);
    for (int i = 0; i < 10; i++)
        assert_int_equal(smtp_reply_feed(&r, line, sizeof(line)), SMTP_REPLY_MORE);
    assert_int_equal(smtp_reply_feed(&r, "250 end", 7), SMTP_REPLY_DONE);
    assert_int_equal(r.code, 250);
    assert_int_equal(r.lines, 11);
    assert_int_equal(r.len, sizeof(r.text) - 1);
    assert_int_equal(strlen(r.text), sizeof(r.text) - 1);
}

struct enhanced_case {
    int code;
    const char *text;
    const char *want;
};

static const struct enhanced_case enhanced_cases[] = {
    {550, "550 5.1.1 no such user", "5.1.1"},
    {451, "451 4.3.0 try later", "4.3.0"},
    {250, "250 2.0.0 Ok", "2.0.0"},
    {550, "550 no such user", "5.0.0"},
    {451, "451 try later", "4.0.0"},
    {250, "250 ok", "2.0.0"},
    {354, "354 go ahead", "2.0.0"},
    /* RFC 3463 has no class 3: a 3xx reply's "3.x.y" is not an enhanced code (found by
     * tests/fuzz/fuzz_smtp_reply.c). */
    {354, "354 3.0.0 go ahead", "2.0.0"},
    {334, "334 3.7.0 VXNlcm5hbWU6", "2.0.0"},
    {550, "550 4.1.1 class mismatch", "5.0.0"},
    {552, "552 5.3.4", "5.3.4"},
    {550, "550-5.7.1 first line\n550 5.7.1 second", "5.7.1"},
    {550, "550 5.1.10x", "5.0.0"},
    {553, "553 5.123.456 long parts", "5.123.456"},
    {0, "our own text", "4.0.0"},
};

static void test_reply_enhanced(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(enhanced_cases) / sizeof(enhanced_cases[0]); i++) {
        const struct enhanced_case *c = &enhanced_cases[i];
        char out[DSN_STATUS_BYTES];
        smtp_reply_enhanced(c->code, c->text, out);
        if (strcmp(out, c->want) != 0)
            fail_msg("%d \"%s\": got %s, want %s", c->code, c->text, out, c->want);
    }
}

struct ehlo_case {
    const char *line;
    bool pipelining, starttls, eightbitmime, size;
    uint64_t size_max;
    bool auth_plain;
};

static const struct ehlo_case ehlo_cases[] = {
    {"PIPELINING", true, false, false, false, 0, false},
    {"pipelining", true, false, false, false, 0, false},
    {"STARTTLS", false, true, false, false, 0, false},
    {"8BITMIME", false, false, true, false, 0, false},
    {"SIZE 35882577", false, false, false, true, 35882577, false},
    {"SIZE", false, false, false, true, 0, false},
    {"SIZE abc", false, false, false, true, 0, false},
    {"SIZE 99999999999999999999999", false, false, false, true, 0, false},
    {"PIPELININGX", false, false, false, false, 0, false},
    {"STARTTLSv2", false, false, false, false, 0, false},
    {"AUTH PLAIN LOGIN", false, false, false, false, 0, true},
    {"AUTH LOGIN PLAIN", false, false, false, false, 0, true},
    {"auth login  plain", false, false, false, false, 0, true},
    {"AUTH PLAIN", false, false, false, false, 0, true},
    {"AUTH LOGIN CRAM-MD5", false, false, false, false, 0, false},
    {"AUTH PLAINX LOGIN", false, false, false, false, 0, false},
    {"AUTH", false, false, false, false, 0, false},
    {"AUTH=PLAIN", false, false, false, false, 0, false}, /* pre-RFC 4954 form: ignored */
    {"AUTHX PLAIN", false, false, false, false, 0, false},
    {"", false, false, false, false, 0, false},
};

static void test_ehlo_parse(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(ehlo_cases) / sizeof(ehlo_cases[0]); i++) {
        const struct ehlo_case *c = &ehlo_cases[i];
        struct smtp_ehlo_caps caps = {0};
        smtp_ehlo_parse_line(&caps, c->line, strlen(c->line));
        if (caps.pipelining != c->pipelining || caps.starttls != c->starttls ||
            caps.eightbitmime != c->eightbitmime || caps.size != c->size ||
            caps.size_max_bytes != c->size_max || caps.auth_plain != c->auth_plain)
            fail_msg("\"%s\": got p=%d t=%d 8=%d s=%d max=%llu auth_plain=%d", c->line,
                     caps.pipelining, caps.starttls, caps.eightbitmime, caps.size,
                     (unsigned long long)caps.size_max_bytes, caps.auth_plain);
    }
}

/* Keywords accumulate over the lines of one reply. */
static void test_ehlo_accumulates(void **state)
{
    (void)state;
    static const char *const lines[] = {"PIPELINING", "SIZE 1000", "ENHANCEDSTATUSCODES",
                                        "8BITMIME",   "STARTTLS",  "chunking"};
    struct smtp_ehlo_caps caps = {0};
    smtp_ehlo_parse_line(&caps, "smtputf8", 8);
    assert_true(caps.smtputf8);
    assert_false(caps.dsn);
    smtp_ehlo_parse_line(&caps, "DSNX", 4); /* another keyword */
    assert_false(caps.dsn);
    smtp_ehlo_parse_line(&caps, "dsn", 3); /* RFC 3461 */
    assert_true(caps.dsn);
    caps = (struct smtp_ehlo_caps){0};
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        smtp_ehlo_parse_line(&caps, lines[i], strlen(lines[i]));
    assert_true(caps.chunking);
    assert_true(caps.pipelining);
    assert_true(caps.starttls);
    assert_true(caps.eightbitmime);
    assert_true(caps.size);
    assert_int_equal(caps.size_max_bytes, 1000);
}

/* ---- smarthost credentials ---- */

struct auth_line_case {
    const char *user;
    const char *password;
    const char *want; /* the whole line */
};

static const struct auth_line_case auth_line_cases[] = {
    {"user", "pass", "AUTH PLAIN AHVzZXIAcGFzcw==\r\n"},
    {"alice@example.test", "s3cret pass",
     "AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzM2NyZXQgcGFzcw==\r\n"},
    {"caf\xc3\xa9", "\xc3\xa9t\xc3\xa9", "AUTH PLAIN AGNhZsOpAMOpdMOp\r\n"},
    {"u", "xxx", "AUTH PLAIN AHUAeHh4\r\n"},
};

static void test_auth_line(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(auth_line_cases) / sizeof(auth_line_cases[0]); i++) {
        const struct auth_line_case *c = &auth_line_cases[i];
        char out[SMTP_CLIENT_AUTH_LINE_MAX_BYTES];
        int n = smtp_client_auth_line(c->user, c->password, strlen(c->password), out, sizeof(out));
        assert_int_equal(n, (int)strlen(c->want));
        assert_string_equal(out, c->want);
        /* Exactly the room needed fits; one byte less does not, and leaves nothing behind. */
        char tight[128];
        assert_true(strlen(c->want) + 1 <= sizeof(tight));
        assert_int_equal(smtp_client_auth_line(c->user, c->password, strlen(c->password), tight,
                                               strlen(c->want) + 1),
                         n);
        memset(tight, 'x', sizeof(tight));
        assert_int_equal(smtp_client_auth_line(c->user, c->password, strlen(c->password), tight,
                                               strlen(c->want)),
                         -1);
        for (size_t k = 0; k < strlen(c->want); k++)
            assert_int_equal(tight[k], 0);
    }
}

/* The longest user and password fit the documented buffer. */
static void test_auth_line_longest(void **state)
{
    (void)state;
    char user[256], password[PASSWORD_MAX_BYTES + 1];
    memset(user, 'u', 255);
    user[255] = '\0';
    memset(password, 'p', PASSWORD_MAX_BYTES);
    password[PASSWORD_MAX_BYTES] = '\0';
    char out[SMTP_CLIENT_AUTH_LINE_MAX_BYTES];
    int n = smtp_client_auth_line(user, password, PASSWORD_MAX_BYTES, out, sizeof(out));
    /* "AUTH PLAIN " + base64 of 2 + 255 + 1024 = 1281 octets (1708 characters) + CRLF */
    assert_int_equal(n, 11 + 1708 + 2);
    assert_int_equal(
        smtp_client_auth_line(user, password, PASSWORD_MAX_BYTES + 1, out, sizeof(out)), -1);
}

struct creds_case {
    const char *content;
    size_t len;
    const char *want_line; /* the AUTH line for user "u", or NULL: an error */
    const char *want_err;  /* a part of the error, after the file name */
};

#define S(x) x, sizeof(x) - 1

static const struct creds_case creds_cases[] = {
    {S("xxx\n"), "AUTH PLAIN AHUAeHh4\r\n", NULL},
    {S("xxx\r\n"), "AUTH PLAIN AHUAeHh4\r\n", NULL},
    {S("xxx"), "AUTH PLAIN AHUAeHh4\r\n", NULL},
    {S("xxx\nsecond line ignored\n"), "AUTH PLAIN AHUAeHh4\r\n", NULL},
    {S(""), NULL, ": the first line (the smarthost password) is empty"},
    {S("\nxxx\n"), NULL, ": the first line (the smarthost password) is empty"},
    {S("\r\n"), NULL, ": the first line (the smarthost password) is empty"},
    {S("x\0y\n"), NULL, ": the smarthost password holds a NUL octet"},
};

static void write_file(const char *path, const char *content, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(content, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static void test_creds_load(void **state)
{
    (void)state;
    char dir[] = "/tmp/postern-test-creds-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof(path), "%s/pw", dir);
    for (size_t i = 0; i < sizeof(creds_cases) / sizeof(creds_cases[0]); i++) {
        const struct creds_case *c = &creds_cases[i];
        write_file(path, c->content, c->len);
        struct smtp_client_creds *creds = NULL;
        char err[512] = "";
        int rc = smtp_client_creds_load("u", path, &creds, err, sizeof(err));
        if (c->want_line != NULL) {
            if (rc != 0)
                fail_msg("case %zu: %s", i, err);
            char out[SMTP_CLIENT_AUTH_LINE_MAX_BYTES];
            int n = smtp_client_creds_auth_line(creds, out, sizeof(out));
            assert_int_equal(n, (int)strlen(c->want_line));
            assert_string_equal(out, c->want_line);
            smtp_client_creds_free(&creds);
            assert_null(creds);
        } else {
            assert_int_equal(rc, -1);
            assert_null(creds);
            char want[256];
            snprintf(want, sizeof(want), "%s%s", path, c->want_err);
            assert_string_equal(err, want);
        }
    }
    /* The longest password loads; one octet more is refused. */
    char big[PASSWORD_MAX_BYTES + 2];
    memset(big, 'p', sizeof(big));
    big[PASSWORD_MAX_BYTES] = '\n';
    write_file(path, big, PASSWORD_MAX_BYTES + 1);
    struct smtp_client_creds *creds = NULL;
    char err[512] = "";
    assert_int_equal(smtp_client_creds_load("u", path, &creds, err, sizeof(err)), 0);
    smtp_client_creds_free(&creds);
    big[PASSWORD_MAX_BYTES] = 'p';
    write_file(path, big, sizeof(big));
    assert_int_equal(smtp_client_creds_load("u", path, &creds, err, sizeof(err)), -1);
    char want[256];
    snprintf(want, sizeof(want), "%s: the smarthost password is longer than 1024 bytes", path);
    assert_string_equal(err, want);
    assert_int_equal(unlink(path), 0);

    /* A missing file names the file and the reason. */
    assert_int_equal(smtp_client_creds_load("u", path, &creds, err, sizeof(err)), -1);
    assert_null(creds);
    snprintf(want, sizeof(want),
             "%s: cannot open the smarthost password file: No such file or directory", path);
    assert_string_equal(err, want);
    assert_int_equal(rmdir(dir), 0);
    smtp_client_creds_free(&creds); /* NULL: a no-op */
}

static void no_done(void *arg, const struct smtp_client_result *res)
{
    (void)arg;
    (void)res;
    fail_msg("done must not run when smtp_client_start fails");
}

struct store_outcome {
    int calls;
    struct smtp_client_result res;
};

static void store_done(void *arg, const struct smtp_client_result *res)
{
    struct store_outcome *o = arg;
    o->calls++;
    o->res = *res;
}

/*
 * A body the store cannot read fails the start with STORE_ERR, a code that no errno or libuv
 * code equals, so the runner reports a store failure and blames no host; a message that left the
 * queue is STORE_NOT_FOUND. The body is read before any connection is made (conns stays unused).
 */
static void test_start_store_failure(void **state)
{
    (void)state;
    char dir[] = "/tmp/postern-client-XXXXXX", path[64], err[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/db", dir);
    struct store *st = NULL;
    assert_int_equal(store_open(path, &st, err, sizeof(err)), STORE_OK);
    /* An integer where the body BLOB belongs: SQLite refuses to open it as a blob. */
    assert_int_equal(store_exec_for_tests(st,
                                          "INSERT INTO messages (id, sender, size, received_ms,"
                                          " body) VALUES (1, 'a@b.test', 10, 0, 42);"
                                          "INSERT INTO queue (message_id, sender, recipient,"
                                          " domain, created_ms, next_attempt_ms)"
                                          " VALUES (1, 'a@b.test', 'c@d.test', 'd.test', 0, 0);"),
                     STORE_OK);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct reader *reads = NULL;
    assert_int_equal(reader_start(&loop, path, 0, st, &reads, err, sizeof(err)), 0);
    char store_error[256] = "";
    struct sockaddr_storage addr = {.ss_family = AF_INET};
    struct smtp_client_rcpt rcpt = {.address = "c@d.test"};
    struct smtp_client_params p = {
        .addr = (const struct sockaddr *)&addr,
        .remote_host = "mx.d.test",
        .helo_name = "postern.test",
        .sender = "a@b.test",
        .rcpts = &rcpt,
        .n_rcpts = 1,
        .reads = reads,
        .message_id = 1,
        .done = no_done,
        .store_error = store_error,
        .store_error_len = sizeof(store_error),
    };
    struct smtp_client *c = NULL;
    int rc = smtp_client_start(&p, &c);
    assert_null(c);
    if (rc != STORE_ERR || !postern_err_is_store(rc) || postern_err_is_system(rc))
        fail_msg("unreadable body: got %d (%s), want STORE_ERR", rc, postern_strerror(rc));
    assert_string_equal(postern_strerror(rc), "store: database failure");
    assert_non_null(strstr(store_error, "queued message 1"));
    p.message_id = 2; /* not queued */
    assert_int_equal(smtp_client_start(&p, &c), STORE_NOT_FOUND);
    assert_null(c);
    reader_stop(&reads);

    /* On reader threads the start returns 0 at once; done then reports the same store
     * failures, with the store's words, and the client frees itself. */
    assert_int_equal(reader_start(&loop, path, 1, NULL, &reads, err, sizeof(err)), 0);
    p.reads = reads;
    p.done = store_done;
    struct store_outcome got[2] = {0};
    for (int i = 0; i < 2; i++) {
        p.message_id = i + 1;
        p.arg = &got[i];
        assert_int_equal(smtp_client_start(&p, &c), 0);
        assert_non_null(c);
        assert_int_equal(got[i].calls, 0);
    }
    for (int turns = 0; turns < 100000 && (got[0].calls == 0 || got[1].calls == 0); turns++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(got[0].calls, 1);
    assert_int_equal(got[0].res.store_rc, STORE_ERR);
    assert_false(got[0].res.host_failed);
    assert_non_null(strstr(got[0].res.error, "queued message 1"));
    assert_int_equal(got[1].calls, 1);
    assert_int_equal(got[1].res.store_rc, STORE_NOT_FOUND);
    assert_int_equal(rcpt.status, SMTP_RCPT_PENDING);

    /* Cancelled while its read is out: done never runs, the read's done frees the client. */
    struct store_outcome none = {0};
    p.message_id = 1;
    p.arg = &none;
    assert_int_equal(smtp_client_start(&p, &c), 0);
    smtp_client_cancel(&c);
    assert_null(c);
    reader_stop(&reads); /* delivers the read: ASan sees the client freed */
    assert_int_equal(none.calls, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    store_close(&st);
    char side[80];
    unlink(path);
    snprintf(side, sizeof(side), "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    unlink(side);
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_feed),          cmocka_unit_test(test_reply_long_is_cut),
        cmocka_unit_test(test_reply_enhanced),      cmocka_unit_test(test_ehlo_parse),
        cmocka_unit_test(test_ehlo_accumulates),    cmocka_unit_test(test_auth_line),
        cmocka_unit_test(test_auth_line_longest),   cmocka_unit_test(test_creds_load),
        cmocka_unit_test(test_start_store_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
