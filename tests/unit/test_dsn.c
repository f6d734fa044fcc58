/*
 * test_dsn.c - common/pure/dsn.c, the RFC 3464 notice builder (every action, ENVID and ORCPT
 * echoed, RET=FULL and its fall-back to headers). Every built message is parsed back
 * here, independently of the builder: split into header section and body, the boundary taken
 * from the unfolded Content-Type, the body split at the delimiter lines into its three parts.
 * Checked on every message: CRLF line ends only, no line over 998 octets, no octet outside 7-bit
 * ASCII anywhere, the boundary nowhere but in its parameter and delimiter lines, the top-level
 * headers (From, To, Subject, Date format, Message-ID, MIME-Version, Auto-Submitted), each part's
 * Content-Type, the delivery-status fields per recipient, and the original header section given
 * back without its body (quoted-printable decoded when the builder had to encode it).
 * Tables: Status code mapping (dsn_status), header section lengths (dsn_header_length), and
 * whole bounces (diagnostics long, multi-line, 8-bit; originals 7-bit, 8-bit, overlong lines,
 * headers only; SMTPUTF8 recipients; expiry; local diagnostics).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/pure/dsn.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_PARTS    8
#define MAX_GROUPS   8

/* 2024-06-04 12:00:00 UTC, a Tuesday, and the day before. */
#define T_NOW_MS     1717502400000LL
#define T_ARRIVAL_MS 1717416000000LL

/* ---- parsing a message back ---- */

struct span {
    const char *p;
    size_t len;
};

struct parsed {
    struct span headers; /* header section, each line with its CRLF, without the empty line */
    struct span body;
    char boundary[128];
    size_t n_parts;
    struct span part_headers[MAX_PARTS];
    struct span part_body[MAX_PARTS];
};

/* Every line ends in CRLF, no bare CR or LF, no line over 998 octets, no 8-bit octet, no NUL. */
static void check_lines(const char *msg, size_t len)
{
    assert_true(len >= 2);
    assert_memory_equal(msg + len - 2, "\r\n", 2);
    size_t line_len = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)msg[i];
        if (c >= 0x80 || c == 0)
            fail_msg("octet 0x%02x at %zu", c, i);
        if (c == '\r') {
            if (i + 1 >= len || msg[i + 1] != '\n')
                fail_msg("bare CR at %zu", i);
            if (line_len > 998)
                fail_msg("line of %zu octets ends at %zu", line_len, i);
            line_len = 0;
            i++;
            continue;
        }
        if (c == '\n')
            fail_msg("bare LF at %zu", i);
        line_len++;
    }
}

/* The unfolded value of the first field called name in a header block (CRLF lines), into out;
 * false when there is none. */
static bool field(struct span block, const char *name, char *out, size_t outlen)
{
    size_t nlen = strlen(name);
    const char *p = block.p, *end = block.p + block.len;
    while (p < end) {
        const char *eol = strstr(p, "\r\n");
        assert_non_null(eol);
        if ((size_t)(eol - p) > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            size_t k = 0;
            const char *v = p + nlen + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            for (;;) {
                for (; v < eol; v++) {
                    assert_true(k + 1 < outlen);
                    out[k++] = *v;
                }
                /* Continuation lines start with a space or a tab: unfolding removes the CRLF. */
                if (eol + 2 < end && (eol[2] == ' ' || eol[2] == '\t')) {
                    v = eol + 2;
                    eol = strstr(v, "\r\n");
                    assert_non_null(eol);
                    continue;
                }
                break;
            }
            out[k] = '\0';
            return true;
        }
        p = eol + 2;
    }
    return false;
}

static size_t count_str(const char *hay, size_t len, const char *needle)
{
    size_t n = 0, nlen = strlen(needle);
    for (size_t i = 0; i + nlen <= len; i++) {
        if (memcmp(hay + i, needle, nlen) == 0)
            n++;
    }
    return n;
}

static const char *find_str(const char *hay, size_t len, const char *needle)
{
    size_t nlen = strlen(needle);
    for (size_t i = 0; i + nlen <= len; i++) {
        if (memcmp(hay + i, needle, nlen) == 0)
            return hay + i;
    }
    return NULL;
}

/* Splits a message into header section, body and MIME parts, checking the structure. */
static void parse(const char *msg, size_t len, struct parsed *out)
{
    memset(out, 0, sizeof(*out));
    check_lines(msg, len);
    const char *sep = find_str(msg, len, "\r\n\r\n");
    assert_non_null(sep);
    out->headers = (struct span){msg, (size_t)(sep - msg) + 2};
    out->body = (struct span){sep + 4, len - (size_t)(sep + 4 - msg)};

    char ct[512];
    assert_true(field(out->headers, "Content-Type", ct, sizeof(ct)));
    assert_non_null(strstr(ct, "multipart/report"));
    assert_non_null(strstr(ct, "report-type=delivery-status"));
    const char *b = strstr(ct, "boundary=\"");
    assert_non_null(b);
    b += strlen("boundary=\"");
    const char *q = strchr(b, '"');
    assert_non_null(q);
    assert_true(q - b > 0 && q - b <= 70); /* RFC 2046 5.1.1 */
    memcpy(out->boundary, b, (size_t)(q - b));
    out->boundary[q - b] = '\0';

    char delim[160], close[160];
    snprintf(delim, sizeof(delim), "\r\n--%s\r\n", out->boundary);
    snprintf(close, sizeof(close), "\r\n--%s--\r\n", out->boundary);
    /* The boundary is nowhere but in the parameter and the delimiter lines. */
    assert_int_equal(count_str(msg, len, out->boundary), 5);
    assert_int_equal(count_str(out->body.p, out->body.len, delim), 3);
    const char *end = find_str(out->body.p, out->body.len, close);
    assert_non_null(end);
    assert_ptr_equal(end + strlen(close), msg + len); /* nothing after the close delimiter */

    const char *p = find_str(out->body.p, out->body.len, delim);
    while (p != NULL && p < end) {
        const char *start = p + strlen(delim);
        const char *next = find_str(start, (size_t)(end - start), delim);
        const char *stop = next != NULL ? next : end;
        assert_true(out->n_parts < MAX_PARTS);
        const char *psep = find_str(start, (size_t)(stop - start), "\r\n\r\n");
        assert_non_null(psep);
        size_t i = out->n_parts++;
        out->part_headers[i] = (struct span){start, (size_t)(psep - start) + 2};
        /* The CRLF before a delimiter belongs to the delimiter (RFC 2046 5.1.1). */
        out->part_body[i] = (struct span){psep + 4, (size_t)(stop - (psep + 4))};
        p = next;
    }
    assert_int_equal(out->n_parts, 3);
}

/* Groups of fields separated by empty lines (the delivery-status part). */
static size_t split_groups(struct span body, struct span *groups, size_t max)
{
    size_t n = 0;
    const char *p = body.p, *end = body.p + body.len;
    while (p < end) {
        const char *sep = find_str(p, (size_t)(end - p), "\r\n\r\n");
        const char *stop = sep != NULL ? sep + 2 : end;
        if (stop > p) {
            assert_true(n < max);
            groups[n++] = (struct span){p, (size_t)(stop - p)};
        }
        p = sep != NULL ? sep + 4 : end;
    }
    return n;
}

/* RFC 2045 6.7 decoding, for checking the original headers came back. */
static size_t qp_decode(struct span in, char *out, size_t outlen)
{
    size_t k = 0;
    for (size_t i = 0; i < in.len; i++) {
        char c = in.p[i];
        if (c == '=') {
            if (i + 2 < in.len && in.p[i + 1] == '\r' && in.p[i + 2] == '\n') {
                i += 2; /* soft line break */
                continue;
            }
            assert_true(i + 2 < in.len);
            char hex[3] = {in.p[i + 1], in.p[i + 2], 0};
            char *e = NULL;
            long v = strtol(hex, &e, 16);
            assert_true(e == hex + 2);
            assert_true(k < outlen);
            out[k++] = (char)v;
            i += 2;
            continue;
        }
        assert_true(k < outlen);
        out[k++] = c;
    }
    return k;
}

/* ---- building ---- */

static char *build(const struct dsn_info *info, const char *orig, size_t orig_len, size_t *len)
{
    unsigned char *out = NULL;
    int rc = dsn_build(info, (const unsigned char *)orig, orig_len, &out, len);
    if (rc != DSN_OK)
        fail_msg("dsn_build: %d", rc);
    assert_non_null(out);
    return (char *)out;
}

static const char orig_msg[] = "Return-Path: <alice@example.test>\r\n"
                               "Received: from client by mail.example.test\r\n"
                               "\twith ESMTPSA; Tue, 04 Jun 2024 11:00:00 +0000\r\n"
                               "From: Alice <alice@example.test>\r\n"
                               "To: bob@remote.test\r\n"
                               "Subject: lunch\r\n"
                               "\r\n"
                               "SECRET-BODY line one\r\n"
                               "SECRET-BODY line two\r\n";

static void check_top_headers(const struct parsed *m, const char *to)
{
    char v[1024];
    assert_true(field(m->headers, "From", v, sizeof(v)));
    assert_string_equal(v, "Mail Delivery System <MAILER-DAEMON@mail.example.test>");
    assert_true(field(m->headers, "To", v, sizeof(v)));
    assert_string_equal(v, to);
    assert_true(field(m->headers, "Subject", v, sizeof(v)));
    assert_string_equal(v, "Undelivered Mail Returned to Sender");
    assert_true(field(m->headers, "Date", v, sizeof(v)));
    assert_string_equal(v, "Tue, 04 Jun 2024 12:00:00 +0000");
    assert_true(field(m->headers, "MIME-Version", v, sizeof(v)));
    assert_string_equal(v, "1.0");
    assert_true(field(m->headers, "Auto-Submitted", v, sizeof(v)));
    assert_string_equal(v, "auto-replied");
    assert_true(field(m->headers, "Message-ID", v, sizeof(v)));
    size_t n = strlen(v);
    assert_true(n > 20 && v[0] == '<' && v[n - 1] == '>');
    assert_non_null(strstr(v, "@mail.example.test>"));
}

static void check_part_types(const struct parsed *m, const char *orig_cte)
{
    char v[256];
    assert_true(field(m->part_headers[0], "Content-Type", v, sizeof(v)));
    assert_string_equal(v, "text/plain; charset=us-ascii");
    assert_true(field(m->part_headers[1], "Content-Type", v, sizeof(v)));
    assert_string_equal(v, "message/delivery-status");
    assert_true(field(m->part_headers[2], "Content-Type", v, sizeof(v)));
    assert_string_equal(v, "text/rfc822-headers");
    bool has = field(m->part_headers[2], "Content-Transfer-Encoding", v, sizeof(v));
    if (orig_cte == NULL) {
        assert_false(has);
    } else {
        assert_true(has);
        assert_string_equal(v, orig_cte);
    }
}

/* ---- tests ---- */

static void test_status_mapping(void **state)
{
    (void)state;
    static const struct {
        const char *status;
        int reply_code;
        const char *reply;
        bool expired;
        const char *want;
    } cases[] = {
        {NULL, 550, "550 5.1.1 <bob@remote.test>: user unknown", false, "5.1.1"},
        {NULL, 550, "550-5.7.1 policy\r\n550 5.7.1 more", false, "5.7.1"},
        {NULL, 552, "552 5.3.4 message too big", false, "5.3.4"},
        {NULL, 550, "550 user unknown", false, "5.0.0"},             /* no enhanced code */
        {NULL, 550, "550 5.1 broken", false, "5.0.0"},               /* malformed code */
        {NULL, 550, "550 5.1.1x glued", false, "5.0.0"},             /* code must end at a space */
        {NULL, 550, "550 5.1234.1 too many digits", false, "5.0.0"}, /* RFC 3463: 1-3 digits */
        {NULL, 550, "550 5.123.456 widest", false, "5.123.456"},
        {NULL, 554, "554 3.1.1 wrong class", false, "5.0.0"},
        {NULL, 451, "451 4.3.0 try later", false, "5.3.0"}, /* permanent now: class 5 */
        {NULL, 451, "451 4.4.7 timeout", true, "5.4.7"},    /* expired */
        {NULL, 250, "250 2.1.5 ok", false, "5.1.5"},
        {NULL, 0, "4.4.1 looks like a code but is our own text", false, "5.0.0"},
        {NULL, 0, "", true, "5.4.7"},
        {NULL, 0, NULL, false, "5.0.0"},
        {"5.1.10", 0, "domain has a null MX", false, "5.1.10"}, /* RFC 7505 */
        {"5.4.4", 550, "550 5.1.1 ignored: the given status wins", false, "5.4.4"},
        {"4.4.1", 0, "no answer", false, "5.4.1"},
        {"bogus", 550, "550 5.2.2 full", false, "5.2.2"}, /* bad given status: from the reply */
        {"5.2.2", 452, "452 4.2.2 full", true, "5.4.7"},  /* expiry wins */
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct dsn_recipient r = {.address = "bob@remote.test",
                                  .status = cases[i].status,
                                  .reply_code = cases[i].reply_code,
                                  .reply = cases[i].reply,
                                  .expired = cases[i].expired};
        char got[DSN_STATUS_BYTES];
        dsn_status(&r, got);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("case %zu: got %s, want %s", i, got, cases[i].want);
    }
}

static void test_header_length(void **state)
{
    (void)state;
    static const struct {
        const char *msg;
        size_t want;
    } cases[] = {
        {"A: 1\r\nB: 2\r\n\r\nbody\r\n", 12},
        {"A: 1\nB: 2\n\nbody\n", 10}, /* bare LF line ends too */
        {"A: 1\r\n\tcont\r\n\r\n", 13},
        {"\r\nbody only\r\n", 0},
        {"A: 1\r\nB: 2\r\n", 12}, /* headers only, no empty line */
        {"A: 1\r\nB: no line end", 20},
        {"", 0},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        size_t got = dsn_header_length((const unsigned char *)cases[i].msg, strlen(cases[i].msg));
        if (got != cases[i].want)
            fail_msg("case %zu: got %zu, want %zu", i, got, cases[i].want);
    }
    /* Longer than the cap: cut after the last whole line inside it. */
    size_t big = DSN_ORIG_HEADERS_MAX_BYTES + 5000;
    char *m = malloc(big);
    assert_non_null(m);
    size_t k = 0, last_end = 0;
    while (k + 100 < big) {
        memset(m + k, 'x', 98);
        m[k] = 'X';
        m[k + 1] = ':';
        m[k + 98] = '\r';
        m[k + 99] = '\n';
        k += 100;
        if (k <= DSN_ORIG_HEADERS_MAX_BYTES)
            last_end = k;
    }
    memset(m + k, 'y', big - k);
    assert_int_equal(dsn_header_length((unsigned char *)m, big), last_end);
    free(m);
}

static void test_one_recipient_full_structure(void **state)
{
    (void)state;
    struct dsn_recipient r = {
        .address = "bob@remote.test",
        .remote_mta = "mx.remote.test",
        .reply_code = 550,
        .reply = "550 5.1.1 <bob@remote.test>: Recipient address rejected: User unknown",
        .last_attempt_ms = T_NOW_MS - 1000,
    };
    struct dsn_info info = {
        .hostname = "mail.example.test",
        .sender = "alice@example.test",
        .arrival_ms = T_ARRIVAL_MS,
        .now_ms = T_NOW_MS,
        .rcpts = &r,
        .n_rcpts = 1,
    };
    size_t len = 0;
    char *msg = build(&info, orig_msg, sizeof(orig_msg) - 1, &len);
    struct parsed m;
    parse(msg, len, &m);
    check_top_headers(&m, "<alice@example.test>");
    check_part_types(&m, NULL);
    char v[1024];
    assert_false(field(m.headers, "Return-Path", v, sizeof(v)));

    /* The text part names the recipient, the host and the reply. */
    struct span text = m.part_body[0];
    assert_non_null(find_str(text.p, text.len, "<bob@remote.test>: host mx.remote.test said:"));
    assert_non_null(find_str(text.p, text.len, "User unknown"));

    struct span groups[MAX_GROUPS];
    assert_int_equal(split_groups(m.part_body[1], groups, MAX_GROUPS), 2);
    assert_true(field(groups[0], "Reporting-MTA", v, sizeof(v)));
    assert_string_equal(v, "dns; mail.example.test");
    assert_true(field(groups[0], "Arrival-Date", v, sizeof(v)));
    assert_string_equal(v, "Mon, 03 Jun 2024 12:00:00 +0000");
    assert_true(field(groups[1], "Final-Recipient", v, sizeof(v)));
    assert_string_equal(v, "rfc822; bob@remote.test");
    assert_true(field(groups[1], "Action", v, sizeof(v)));
    assert_string_equal(v, "failed");
    assert_true(field(groups[1], "Status", v, sizeof(v)));
    assert_string_equal(v, "5.1.1");
    assert_true(field(groups[1], "Remote-MTA", v, sizeof(v)));
    assert_string_equal(v, "dns; mx.remote.test");
    assert_true(field(groups[1], "Diagnostic-Code", v, sizeof(v)));
    assert_string_equal(
        v, "smtp; 550 5.1.1 <bob@remote.test>: Recipient address rejected: User unknown");
    assert_true(field(groups[1], "Last-Attempt-Date", v, sizeof(v)));
    assert_string_equal(v, "Tue, 04 Jun 2024 11:59:59 +0000");

    /* The original's header section, exactly, and nothing of its body. */
    const char *orig_body = strstr(orig_msg, "\r\n\r\n") + 2;
    size_t hlen = (size_t)(orig_body - orig_msg);
    struct span h = m.part_body[2];
    assert_int_equal(h.len, hlen);
    assert_memory_equal(h.p, orig_msg, hlen);
    assert_null(find_str(msg, len, "SECRET-BODY"));
    free(msg);
}

static void test_several_recipients_and_kinds(void **state)
{
    (void)state;
    struct dsn_recipient r[] = {
        {.address = "a@remote.test",
         .remote_mta = "mx1.remote.test",
         .reply_code = 552,
         .reply = "552-5.2.2 mailbox full\r\n552 5.2.2 try another day",
         .last_attempt_ms = T_NOW_MS},
        {.address = "b@other.test",
         .reply = "connect to mx.other.test[192.0.2.1]:25: Connection refused",
         .last_attempt_ms = T_NOW_MS,
         .expired = true},
        {.address = "c@null.test", .status = "5.1.10", .reply = "domain null.test has a null MX"},
    };
    struct dsn_info info = {
        .hostname = "mail.example.test",
        .sender = "alice@example.test",
        .arrival_ms = T_ARRIVAL_MS,
        .now_ms = T_NOW_MS,
        .return_path = true,
        .rcpts = r,
        .n_rcpts = ARRAY_LEN(r),
    };
    size_t len = 0;
    char *msg = build(&info, orig_msg, sizeof(orig_msg) - 1, &len);
    struct parsed m;
    parse(msg, len, &m);
    assert_memory_equal(msg, "Return-Path: <>\r\n", 17); /* first, for local delivery */
    check_top_headers(&m, "<alice@example.test>");
    check_part_types(&m, NULL);

    static const struct {
        const char *final, *status, *remote, *diag;
        bool has_last;
    } want[] = {
        {"rfc822; a@remote.test", "5.2.2", "dns; mx1.remote.test",
         "smtp; 552-5.2.2 mailbox full 552 5.2.2 try another day", true},
        {"rfc822; b@other.test", "5.4.7", NULL,
         "X-Postern; connect to mx.other.test[192.0.2.1]:25: Connection refused", true},
        {"rfc822; c@null.test", "5.1.10", NULL, "X-Postern; domain null.test has a null MX", false},
    };
    struct span groups[MAX_GROUPS];
    assert_int_equal(split_groups(m.part_body[1], groups, MAX_GROUPS), 1 + ARRAY_LEN(want));
    for (size_t i = 0; i < ARRAY_LEN(want); i++) {
        char v[1024];
        struct span g = groups[i + 1];
        assert_true(field(g, "Final-Recipient", v, sizeof(v)));
        assert_string_equal(v, want[i].final);
        assert_true(field(g, "Action", v, sizeof(v)));
        assert_string_equal(v, "failed");
        assert_true(field(g, "Status", v, sizeof(v)));
        assert_string_equal(v, want[i].status);
        assert_int_equal(field(g, "Remote-MTA", v, sizeof(v)), want[i].remote != NULL);
        if (want[i].remote != NULL)
            assert_string_equal(v, want[i].remote);
        assert_true(field(g, "Diagnostic-Code", v, sizeof(v)));
        assert_string_equal(v, want[i].diag);
        assert_int_equal(field(g, "Last-Attempt-Date", v, sizeof(v)), want[i].has_last);
    }
    struct span text = m.part_body[0];
    assert_non_null(find_str(text.p, text.len, "<b@other.test>: delivery time expired"));
    assert_non_null(find_str(text.p, text.len, "<c@null.test>: domain null.test has a null MX"));
    free(msg);
}

/* Diagnostics that must be made safe: long (with and without spaces), 8-bit, control octets. */
static void test_diagnostics_are_folded_cut_and_7bit(void **state)
{
    (void)state;
    static char long_words[6000], one_word[6000];
    memcpy(long_words, "550 5.7.1 ", 10);
    for (size_t i = 10; i < sizeof(long_words) - 1; i++)
        long_words[i] = (i % 7 == 0) ? ' ' : (char)('a' + i % 26);
    long_words[sizeof(long_words) - 1] = '\0';
    memcpy(one_word, "550 5.7.1 ", 10);
    memset(one_word + 10, 'z', sizeof(one_word) - 11);
    one_word[sizeof(one_word) - 1] = '\0';
    static const struct {
        const char *reply;
        const char *want_in_diag; /* NULL: only the limits are checked */
        bool want_cut;
    } cases[] = {
        {long_words, NULL, true},
        {one_word, NULL, true},
        {"550 5.1.1 caf\xc3\xa9 unknown", "smtp; 550 5.1.1 caf\\xC3\\xA9 unknown", false},
        {"550 5.1.1 a\x01"
         "b\x7f"
         "c",
         "smtp; 550 5.1.1 a\\x01b\\x7Fc", false},
        {"550 5.1.1 injected\r\nX-Evil: header\r\n\r\nbody",
         "smtp; 550 5.1.1 injected X-Evil: header body", false},
        {"  550 5.1.1 spaces\t\t around  ", "smtp; 550 5.1.1 spaces around", false},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct dsn_recipient r = {.address = "bob@remote.test",
                                  .remote_mta = "mx.remote.test",
                                  .reply_code = 550,
                                  .reply = cases[i].reply};
        struct dsn_info info = {.hostname = "mail.example.test",
                                .sender = "alice@example.test",
                                .now_ms = T_NOW_MS,
                                .rcpts = &r,
                                .n_rcpts = 1};
        size_t len = 0;
        char *msg = build(&info, orig_msg, sizeof(orig_msg) - 1, &len);
        struct parsed m;
        parse(msg, len, &m); /* checks line lengths, CRLF and 7-bit */
        struct span groups[MAX_GROUPS];
        assert_int_equal(split_groups(m.part_body[1], groups, MAX_GROUPS), 2);
        static char v[16000];
        assert_true(field(groups[1], "Diagnostic-Code", v, sizeof(v)));
        if (cases[i].want_in_diag != NULL)
            assert_string_equal(v, cases[i].want_in_diag);
        size_t n = strlen(v);
        if (cases[i].want_cut) {
            assert_true(n <= DSN_DIAGNOSTIC_MAX_BYTES + 10);
            assert_string_equal(v + n - 3, "...");
        }
        /* A header injected into the reply stays inside the field. */
        assert_false(field(m.headers, "X-Evil", v, sizeof(v)));
        assert_false(field(groups[1], "X-Evil", v, sizeof(v)));
        free(msg);
    }
}

/* A reply of blanks alone (found by tests/fuzz/fuzz_dsn.c: it crashed the text part) reads as
 * no reason at all, and gives no Diagnostic-Code. */
static void test_blank_reply_reads_as_no_reason(void **state)
{
    (void)state;
    struct dsn_recipient r = {.address = "bob@remote.test", .reply = "  \r\n\t "};
    struct dsn_info info = {.hostname = "mail.example.test",
                            .sender = "alice@example.test",
                            .now_ms = T_NOW_MS,
                            .rcpts = &r,
                            .n_rcpts = 1};
    size_t len = 0;
    char *msg = build(&info, orig_msg, sizeof(orig_msg) - 1, &len);
    struct parsed m;
    parse(msg, len, &m);
    struct span text = m.part_body[0];
    assert_non_null(find_str(text.p, text.len, "<bob@remote.test>: no reason was recorded"));
    struct span groups[MAX_GROUPS];
    assert_int_equal(split_groups(m.part_body[1], groups, MAX_GROUPS), 2);
    char v[256];
    assert_false(field(groups[1], "Diagnostic-Code", v, sizeof(v)));
    free(msg);
}

/* The original header section: 7-bit as it is; 8-bit, control octets or overlong lines in
 * quoted-printable, which decodes to the original. */
static void test_original_headers_encoding(void **state)
{
    (void)state;
    static char overlong[3000];
    memcpy(overlong, "X-Long: ", 8);
    memset(overlong + 8, 'q', sizeof(overlong) - 8);
    static const struct {
        const char *headers; /* with CRLF line ends, without the empty line */
        const char *cte;     /* NULL: sent as it is */
    } cases[] = {
        {"Subject: plain\r\nFrom: a@example.test\r\n", NULL},
        {"Subject: caf\xc3\xa9 = ok\r\nFrom: a@example.test\r\n", "quoted-printable"},
        {"Subject: trailing space \r\nX-Nul: a\x01z\r\n", "quoted-printable"},
        {"Subject: bare\rcr\r\n", "quoted-printable"},
        {NULL, "quoted-printable"}, /* the overlong line, filled in below */
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char orig[4096];
        size_t hlen;
        if (cases[i].headers != NULL) {
            hlen = strlen(cases[i].headers);
            memcpy(orig, cases[i].headers, hlen);
        } else {
            memcpy(orig, overlong, sizeof(overlong));
            memcpy(orig + sizeof(overlong), "\r\n", 2);
            hlen = sizeof(overlong) + 2;
        }
        memcpy(orig + hlen, "\r\nthe body\r\n", 12);
        struct dsn_recipient r = {.address = "bob@remote.test", .reply = "rejected"};
        struct dsn_info info = {.hostname = "mail.example.test",
                                .sender = "alice@example.test",
                                .now_ms = T_NOW_MS,
                                .rcpts = &r,
                                .n_rcpts = 1};
        size_t len = 0;
        char *msg = build(&info, orig, hlen + 12, &len);
        struct parsed m;
        parse(msg, len, &m);
        check_part_types(&m, cases[i].cte);
        struct span h = m.part_body[2];
        static char decoded[8192];
        size_t dlen;
        if (cases[i].cte == NULL) {
            memcpy(decoded, h.p, h.len);
            dlen = h.len;
        } else {
            dlen = qp_decode(h, decoded, sizeof(decoded));
            /* RFC 2045 6.7 (5): encoded lines are at most 76 characters. */
            size_t line = 0;
            for (size_t k = 0; k < h.len; k++) {
                if (h.p[k] == '\r') {
                    assert_true(line <= 76);
                    line = 0;
                    k++;
                } else {
                    line++;
                }
            }
        }
        assert_int_equal(dlen, hlen);
        if (memcmp(decoded, orig, hlen) != 0)
            fail_msg("case %zu: headers did not come back", i);
        assert_null(find_str(msg, len, "the body"));
        free(msg);
    }
}

static void test_addresses_and_hostnames(void **state)
{
    (void)state;
    struct dsn_recipient r[] = {
        {.address = "j\xc3\xb6rg@b\xc3\xbc"
                    "cher.test",
         .reply = "x"},
        {.address = "\"a b\"@remote.test", .reply = "x"},
        {.address = "plus+tag=x@remote.test", .reply = "x"},
        {.address = "bad\xff@remote.test", .reply = "x"},
    };
    static const char *const want[] = {
        "utf-8; j\\x{F6}rg@b\\x{FC}cher.test",
        "rfc822; \"a b\"@remote.test",
        "rfc822; plus+tag=x@remote.test",
        "utf-8; bad\\x{FFFD}@remote.test",
    };
    struct dsn_info info = {.hostname = "mail.example.test\r\nX-Evil: 1",
                            .sender = "s\xc3\xa9nder@example.test",
                            .now_ms = T_NOW_MS,
                            .rcpts = r,
                            .n_rcpts = ARRAY_LEN(r)};
    size_t len = 0;
    char *msg = build(&info, NULL, 0, &len);
    struct parsed m;
    parse(msg, len, &m);
    char v[512];
    /* A non-ASCII sender cannot go in a 7-bit To:. */
    assert_true(field(m.headers, "To", v, sizeof(v)));
    assert_string_equal(v, "undisclosed-recipients:;");
    /* The hostname is cleaned, not trusted. */
    assert_true(field(m.headers, "From", v, sizeof(v)));
    assert_string_equal(v, "Mail Delivery System <MAILER-DAEMON@mail.example.testX-Evil:1>");
    assert_false(field(m.headers, "X-Evil", v, sizeof(v)));
    struct span groups[MAX_GROUPS];
    assert_int_equal(split_groups(m.part_body[1], groups, MAX_GROUPS), 1 + ARRAY_LEN(r));
    for (size_t i = 0; i < ARRAY_LEN(want); i++) {
        assert_true(field(groups[i + 1], "Final-Recipient", v, sizeof(v)));
        assert_string_equal(v, want[i]);
    }
    /* No original: the headers part is there and empty. */
    assert_int_equal(m.part_body[2].len, 0);
    free(msg);
}

static void test_random_ids_differ(void **state)
{
    (void)state;
    struct dsn_recipient r = {.address = "bob@remote.test", .reply = "x"};
    struct dsn_info info = {
        .hostname = "h.test", .sender = "a@h.test", .now_ms = T_NOW_MS, .rcpts = &r, .n_rcpts = 1};
    size_t l1 = 0, l2 = 0;
    char *m1 = build(&info, orig_msg, sizeof(orig_msg) - 1, &l1);
    char *m2 = build(&info, orig_msg, sizeof(orig_msg) - 1, &l2);
    struct parsed p1, p2;
    parse(m1, l1, &p1);
    parse(m2, l2, &p2);
    assert_string_not_equal(p1.boundary, p2.boundary);
    char id1[256], id2[256];
    assert_true(field(p1.headers, "Message-ID", id1, sizeof(id1)));
    assert_true(field(p2.headers, "Message-ID", id2, sizeof(id2)));
    assert_string_not_equal(id1, id2);
    free(m1);
    free(m2);
}

/* Each action: its Subject, Action, Status class; ENVID and ORCPT echoed, xtext decoded when
 * that gives printable ASCII, kept as xtext otherwise; only the headers returned. */
static void test_actions_envid_orcpt(void **state)
{
    (void)state;
    static const struct {
        enum dsn_action action;
        const char *subject, *action_word, *status;
    } cases[] = {
        {DSN_ACTION_FAILED, "Undelivered Mail Returned to Sender", "failed", "5.2.2"},
        {DSN_ACTION_DELAYED, "Delayed Mail (still being retried)", "delayed", "4.2.2"},
        {DSN_ACTION_DELIVERED, "Successful Mail Delivery Report", "delivered", "2.0.0"},
        {DSN_ACTION_RELAYED, "Successful Mail Delivery Report", "relayed", "2.0.0"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct dsn_recipient r[2] = {
            {.address = "bob@remote.test",
             .reply_code = 452,
             .reply = "452 4.2.2 mailbox full",
             .orcpt = "rfc822;bob+2Bold@remote.test"},
            /* "+0A" decodes to a line feed: not printable, so the xtext stays. */
            {.address = "carol@remote.test", .orcpt = "rfc822;carol+0A@remote.test"},
        };
        struct dsn_info info = {
            .hostname = "mail.example.test",
            .sender = "alice@example.test",
            .arrival_ms = T_ARRIVAL_MS,
            .now_ms = T_NOW_MS,
            .rcpts = r,
            .n_rcpts = 2,
            .action = cases[i].action,
            .envid = "QQ+2B314159",
            .return_full = true, /* only a failure may return the message */
        };
        size_t len = 0;
        char *msg = build(&info, orig_msg, sizeof(orig_msg) - 1, &len);
        struct parsed m;
        parse(msg, len, &m);
        char v[1024];
        assert_true(field(m.headers, "Subject", v, sizeof(v)));
        assert_string_equal(v, cases[i].subject);
        struct span groups[MAX_GROUPS];
        assert_int_equal(split_groups(m.part_body[1], groups, MAX_GROUPS), 3);
        assert_true(field(groups[0], "Original-Envelope-Id", v, sizeof(v)));
        assert_string_equal(v, "QQ+314159");
        assert_true(field(groups[1], "Original-Recipient", v, sizeof(v)));
        assert_string_equal(v, "rfc822; bob+old@remote.test");
        assert_true(field(groups[1], "Action", v, sizeof(v)));
        assert_string_equal(v, cases[i].action_word);
        assert_true(field(groups[1], "Status", v, sizeof(v)));
        assert_string_equal(v, cases[i].status);
        assert_true(field(groups[2], "Original-Recipient", v, sizeof(v)));
        assert_string_equal(v, "rfc822; carol+0A@remote.test");
        /* Original-Recipient comes before Final-Recipient (RFC 3464 2.3). */
        assert_true(find_str(groups[1].p, groups[1].len, "Original-Recipient") <
                    find_str(groups[1].p, groups[1].len, "Final-Recipient"));
        if (cases[i].action == DSN_ACTION_FAILED) {
            assert_true(field(m.part_headers[2], "Content-Type", v, sizeof(v)));
            assert_string_equal(v, "message/rfc822");
            assert_non_null(find_str(msg, len, "SECRET-BODY line two"));
        } else {
            check_part_types(&m, NULL);
            assert_null(find_str(msg, len, "SECRET-BODY"));
        }
        free(msg);
    }
}

/* RET=FULL: a message that a 7-bit report cannot carry as it is (8-bit, an overlong line) or
 * that is too large has its headers returned instead; without RET=FULL the headers always. */
static void test_return_full_falls_back_to_headers(void **state)
{
    (void)state;
    static const char eight[] = "Subject: x\r\n\r\ncaf\xc3\xa9 SECRET-BODY\r\n";
    char *big = malloc(DSN_RETURN_FULL_MAX_BYTES + 128);
    assert_non_null(big);
    size_t big_len = (size_t)snprintf(big, 64, "Subject: big\r\n\r\n");
    while (big_len <= DSN_RETURN_FULL_MAX_BYTES) { /* one line past the limit */
        memcpy(big + big_len, "SECRET-BODY 64 octets of text ................................\r\n",
               64);
        big_len += 64;
    }
    const struct {
        const char *orig;
        size_t len;
        bool full;
        bool whole;
    } cases[] = {
        {orig_msg, sizeof(orig_msg) - 1, true, true},
        {orig_msg, sizeof(orig_msg) - 1, false, false},
        {eight, sizeof(eight) - 1, true, false},
        {big, big_len, true, false},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct dsn_recipient r = {.address = "bob@remote.test", .reply = "no"};
        struct dsn_info info = {
            .hostname = "mail.example.test",
            .sender = "alice@example.test",
            .now_ms = T_NOW_MS,
            .rcpts = &r,
            .n_rcpts = 1,
            .return_full = cases[i].full,
        };
        size_t len = 0;
        char *msg = build(&info, cases[i].orig, cases[i].len, &len);
        struct parsed m;
        parse(msg, len, &m);
        char v[256];
        assert_true(field(m.part_headers[2], "Content-Type", v, sizeof(v)));
        assert_string_equal(v, cases[i].whole ? "message/rfc822" : "text/rfc822-headers");
        assert_int_equal(find_str(msg, len, "SECRET-BODY") != NULL, cases[i].whole);
        free(msg);
    }
    free(big);
}

static void test_refuses_bad_input(void **state)
{
    (void)state;
    static const struct dsn_recipient r = {.address = "bob@remote.test"};
    static const struct dsn_recipient no_addr = {.address = ""};
    static const struct {
        const char *host, *sender;
        const struct dsn_recipient *rcpts;
        size_t n;
    } cases[] = {
        {"h.test", "", &r, 1},               /* the null sender is never bounced */
        {"h.test", NULL, &r, 1},             /* nor is a missing one */
        {NULL, "a@h.test", &r, 1},           /* no hostname */
        {"h.test", "a@h.test", NULL, 0},     /* no recipients */
        {"h.test", "a@h.test", &r, 0},       /* none counted */
        {"h.test", "a@h.test", &no_addr, 1}, /* a recipient without an address */
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct dsn_info info = {.hostname = cases[i].host,
                                .sender = cases[i].sender,
                                .rcpts = cases[i].rcpts,
                                .n_rcpts = cases[i].n};
        unsigned char *out = (unsigned char *)"sentinel";
        size_t len = 99;
        assert_int_equal(dsn_build(&info, NULL, 0, &out, &len), DSN_ERR_INVALID);
        assert_null(out);
        assert_int_equal(len, 0);
    }
    struct dsn_info info = {.hostname = "h.test", .sender = "a@h.test", .rcpts = &r, .n_rcpts = 1};
    unsigned char *out = NULL;
    size_t len = 0;
    assert_int_equal(dsn_build(NULL, NULL, 0, &out, &len), DSN_ERR_INVALID);
    assert_int_equal(dsn_build(&info, NULL, 5, &out, &len), DSN_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_mapping),
        cmocka_unit_test(test_header_length),
        cmocka_unit_test(test_one_recipient_full_structure),
        cmocka_unit_test(test_several_recipients_and_kinds),
        cmocka_unit_test(test_diagnostics_are_folded_cut_and_7bit),
        cmocka_unit_test(test_blank_reply_reads_as_no_reason),
        cmocka_unit_test(test_original_headers_encoding),
        cmocka_unit_test(test_addresses_and_hostnames),
        cmocka_unit_test(test_random_ids_differ),
        cmocka_unit_test(test_refuses_bad_input),
        cmocka_unit_test(test_actions_envid_orcpt),
        cmocka_unit_test(test_return_full_falls_back_to_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
