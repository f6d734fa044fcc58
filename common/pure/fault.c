/*
 * fault.c - see fault.h. Names, checks, matching and the firing decision of fault injection
 * rules; no I/O, no state, safe from any thread.
 *
 * The decision draws from a counter-based generator (splitmix64 of the seed and the match
 * number) rather than a stream kept between calls: the caller keeps only two counters per
 * rule, and a rule's k-th decision is the same whichever sessions reached it before.
 */
#include "common/pure/fault.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *const point_names[FAULT_POINT_COUNT] = {
    "smtp.connect", "smtp.ehlo",  "smtp.auth", "smtp.mail", "smtp.rcpt", "smtp.data", "smtp.eod",
    "pop3.connect", "pop3.login", "pop3.stat", "pop3.retr", "pop3.dele", "pop3.quit",
};

static const char *const action_names[FAULT_ACTION_COUNT] = {
    "reply", "delay", "drop", "stall", "drop-body",
};

const char *fault_point_name(enum fault_point p)
{
    return (unsigned)p < FAULT_POINT_COUNT ? point_names[p] : "?";
}

const char *fault_action_name(enum fault_action a)
{
    return (unsigned)a < FAULT_ACTION_COUNT ? action_names[a] : "?";
}

int fault_point_parse(const char *s, enum fault_point *out)
{
    for (unsigned i = 0; i < FAULT_POINT_COUNT; i++) {
        if (strcmp(s, point_names[i]) == 0) {
            *out = (enum fault_point)i;
            return 0;
        }
    }
    return -1;
}

int fault_action_parse(const char *s, enum fault_action *out)
{
    for (unsigned i = 0; i < FAULT_ACTION_COUNT; i++) {
        if (strcmp(s, action_names[i]) == 0) {
            *out = (enum fault_action)i;
            return 0;
        }
    }
    return -1;
}

bool fault_point_is_pop3(enum fault_point p)
{
    return p >= FAULT_POP3_CONNECT && p < FAULT_POINT_COUNT;
}

struct verb_point {
    const char *verb;
    enum fault_point point;
};

static int verb_lookup(const struct verb_point *t, size_t n, const char *verb,
                       enum fault_point *out)
{
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(t[i].verb, verb) == 0) {
            *out = t[i].point;
            return 0;
        }
    }
    return -1;
}

int fault_smtp_verb_point(const char *verb, enum fault_point *out)
{
    static const struct verb_point t[] = {
        {"EHLO", FAULT_SMTP_EHLO}, {"HELO", FAULT_SMTP_EHLO}, {"AUTH", FAULT_SMTP_AUTH},
        {"MAIL", FAULT_SMTP_MAIL}, {"RCPT", FAULT_SMTP_RCPT}, {"DATA", FAULT_SMTP_DATA},
    };
    return verb_lookup(t, sizeof(t) / sizeof(t[0]), verb, out);
}

int fault_pop3_verb_point(const char *verb, enum fault_point *out)
{
    static const struct verb_point t[] = {
        {"PASS", FAULT_POP3_LOGIN}, {"AUTH", FAULT_POP3_LOGIN}, {"STAT", FAULT_POP3_STAT},
        {"LIST", FAULT_POP3_STAT},  {"UIDL", FAULT_POP3_STAT},  {"RETR", FAULT_POP3_RETR},
        {"TOP", FAULT_POP3_RETR},   {"DELE", FAULT_POP3_DELE},  {"QUIT", FAULT_POP3_QUIT},
    };
    return verb_lookup(t, sizeof(t) / sizeof(t[0]), verb, out);
}

int fault_probability_parse(const char *s, uint32_t *ppm_out, const char **why_out)
{
    /* Fixed point by hand: no locale, no float rounding, the same value on every machine. */
    uint64_t whole = 0, frac = 0, scale = FAULT_PPM_ALWAYS;
    const char *p = s;
    if (*p < '0' || *p > '9')
        goto bad;
    while (*p >= '0' && *p <= '9') {
        whole = whole * 10 + (uint64_t)(*p++ - '0');
        if (whole > 100)
            goto range;
    }
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            goto bad;
        while (*p >= '0' && *p <= '9') {
            if (scale == 1) {
                if (why_out)
                    *why_out = "more than six decimals";
                return -1;
            }
            scale /= 10;
            frac += (uint64_t)(*p++ - '0') * scale;
        }
    }
    uint64_t ppm = whole * FAULT_PPM_ALWAYS + frac;
    if (*p == '%') {
        p++;
        ppm /= 100;
        if (frac % 100 != 0) {
            if (why_out)
                *why_out = "more than four decimals in a percentage";
            return -1;
        }
    }
    if (*p != '\0')
        goto bad;
    if (ppm > FAULT_PPM_ALWAYS)
        goto range;
    *ppm_out = (uint32_t)ppm;
    return 0;
range:
    if (why_out)
        *why_out = "not between 0 and 1 (0% and 100%)";
    return -1;
bad:
    if (why_out)
        *why_out = "not a number such as 0.25 or 25%";
    return -1;
}

static int fail(char *err, size_t errlen, const char *what)
{
    snprintf(err, errlen, "%s", what);
    return -1;
}

/* Printable ASCII without space, shorter than the field. */
static int copy_word(const char *in, char *out, size_t outlen)
{
    size_t n = strlen(in);
    if (n >= outlen)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (in[i] <= ' ' || in[i] > '~')
            return -1;
    }
    memcpy(out, in, n + 1);
    return 0;
}

/* A whole reply line of the point's protocol, printable ASCII (space included). */
static int check_reply(const char *s, enum fault_point p)
{
    size_t n = strlen(s);
    if (n == 0 || n > FAULT_REPLY_MAX_BYTES)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < ' ' || s[i] > '~')
            return -1;
    }
    if (fault_point_is_pop3(p))
        return strncmp(s, "-ERR", 4) == 0 && (s[4] == '\0' || s[4] == ' ') ? 0 : -1;
    /* RFC 5321 4.2: three digits, then a space or the end; only refusals. */
    if ((s[0] != '4' && s[0] != '5') || s[1] < '0' || s[1] > '9' || s[2] < '0' || s[2] > '9')
        return -1;
    return s[3] == '\0' || s[3] == ' ' ? 0 : -1;
}

int fault_rule_build(const struct fault_spec *spec, struct fault_rule *out, char *err,
                     size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (spec->point == NULL || fault_point_parse(spec->point, &out->point) != 0)
        return fail(err, errlen,
                    "unknown point (smtp.connect, smtp.ehlo, smtp.auth, smtp.mail, "
                    "smtp.rcpt, smtp.data, smtp.eod, pop3.connect, pop3.login, "
                    "pop3.stat, pop3.retr, pop3.dele, pop3.quit)");
    if (spec->action == NULL || fault_action_parse(spec->action, &out->action) != 0)
        return fail(err, errlen, "unknown action (reply, delay, drop, stall, drop-body)");
    enum fault_point p = out->point;
    const char *client = spec->client ? spec->client : "";
    if (client[0] != '\0') {
        if (cidr_parse(client, &out->client, NULL) != 0)
            return fail(err, errlen, "the client is not an address or a network");
        out->has_client = true;
    }
    if (copy_word(spec->user ? spec->user : "", out->user, sizeof(out->user)) != 0 ||
        copy_word(spec->sender ? spec->sender : "", out->sender, sizeof(out->sender)) != 0 ||
        copy_word(spec->recipient ? spec->recipient : "", out->recipient, sizeof(out->recipient)) !=
            0)
        return fail(err, errlen, "an address has a space, a control character or is too long");
    if (out->recipient[0] != '\0' && p != FAULT_SMTP_RCPT)
        return fail(err, errlen, "a recipient is known only at smtp.rcpt");
    if (out->sender[0] != '\0' && (p < FAULT_SMTP_MAIL || p > FAULT_SMTP_EOD))
        return fail(err, errlen, "a sender is known only from smtp.mail to smtp.eod");
    if (out->user[0] != '\0' && (p == FAULT_SMTP_CONNECT || p == FAULT_POP3_CONNECT))
        return fail(err, errlen, "no user is known at connect");
    if (spec->message < 0 || (spec->message > 0 && p != FAULT_POP3_RETR && p != FAULT_POP3_DELE))
        return fail(err, errlen, "a message number is known only at pop3.retr and pop3.dele");
    out->message = (uint64_t)spec->message;
    const char *reply = spec->reply ? spec->reply : "";
    switch (out->action) {
    case FAULT_REPLY:
    case FAULT_STALL:
        if (reply[0] == '\0' && out->action == FAULT_STALL)
            reply = fault_default_stall(p);
        if (check_reply(reply, p) != 0)
            return fail(err, errlen,
                        fault_point_is_pop3(p)
                            ? "the reply must be one line starting \"-ERR\""
                            : "the reply must be one SMTP line with a 4xx or 5xx code, such as "
                              "\"451 4.3.0 Try again later\"");
        memcpy(out->reply, reply, strlen(reply) + 1);
        break;
    case FAULT_DELAY:
        if (spec->delay_ms < 1 || spec->delay_ms > FAULT_DELAY_MAX_MS)
            return fail(err, errlen, "a delay needs a duration from 1ms to 10m");
        out->delay_ms = (uint32_t)spec->delay_ms;
        break;
    case FAULT_DROP_BODY:
        if (p != FAULT_POP3_RETR)
            return fail(err, errlen, "drop-body fires at pop3.retr only");
        if (spec->after_bytes < 0)
            return fail(err, errlen, "the octet count must not be negative");
        out->after_bytes = (uint64_t)spec->after_bytes;
        break;
    case FAULT_DROP:
    case FAULT_ACTION_COUNT:
        break;
    }
    if (reply[0] != '\0' && out->action != FAULT_REPLY && out->action != FAULT_STALL)
        return fail(err, errlen, "only reply and stall take a reply");
    if (spec->times < 0)
        return fail(err, errlen, "times must not be negative");
    if (spec->ppm < 0 || spec->ppm > FAULT_PPM_ALWAYS)
        return fail(err, errlen, "the probability must be between 0 and 1");
    out->times = (uint64_t)spec->times;
    out->ppm = (uint32_t)spec->ppm;
    out->seed = (uint64_t)spec->seed;
    return 0;
}

static bool same_address(const char *want, const char *have)
{
    if (want[0] == '\0')
        return true;
    return have != NULL && strcasecmp(want, have) == 0;
}

bool fault_rule_matches(const struct fault_rule *r, enum fault_point p,
                        const struct fault_facts *facts)
{
    if (r->point != p)
        return false;
    if (r->has_client && (facts->client == NULL || !cidr_contains(&r->client, facts->client)))
        return false;
    if (r->message != 0 && r->message != facts->message)
        return false;
    return same_address(r->user, facts->user) && same_address(r->sender, facts->sender) &&
           same_address(r->recipient, facts->recipient);
}

uint32_t fault_draw(uint64_t seed, uint64_t k)
{
    /* splitmix64 (Steele, Lea, Flood 2014), the k-th output of the sequence started at seed. */
    uint64_t z = seed + (k + 1) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (uint32_t)(z % FAULT_PPM_ALWAYS);
}

bool fault_rule_fires(const struct fault_rule *r, uint64_t seen, uint64_t fired)
{
    if (r->times != 0 && fired >= r->times)
        return false;
    if (r->ppm >= FAULT_PPM_ALWAYS)
        return true;
    return fault_draw(r->seed, seen) < r->ppm;
}

size_t fault_stall_bytes(const char *reply)
{
    size_t n = strlen(reply);
    return n < 2 ? n : n / 2;
}

const char *fault_default_stall(enum fault_point p)
{
    return fault_point_is_pop3(p) ? "-ERR Stalled by fault injection"
                                  : "451 4.3.0 Stalled by fault injection";
}
