/*
 * fault.h - fault injection rules, their pure half: what a rule says (where it fires, on whom,
 * what it does, how often), checking a rule as the operator wrote it, matching it against what a
 * session knows at a point, and the deterministic decision whether it fires this time.
 *
 * It does no I/O and keeps no state: the counters a decision depends on (how many times the rule
 * was reached and fired) are the caller's (server/fault/fault.c keeps them in memory). The rules
 * are stored by storage/faults.c and changed by `postern fault` (server/cli/fault.c); acting on a
 * decision (replying, delaying, dropping) is server/fault/fault.c's.
 */
#ifndef POSTERN_FAULT_H
#define POSTERN_FAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pure/address.h"
#include "common/pure/cidr.h"

/* The named points of the two sessions where a rule can fire. */
enum fault_point {
    FAULT_SMTP_CONNECT = 0, /* before the 220 greeting */
    FAULT_SMTP_EHLO,        /* EHLO or HELO */
    FAULT_SMTP_AUTH,        /* AUTH (the user is not known yet) */
    FAULT_SMTP_MAIL,        /* MAIL FROM: the sender is its argument */
    FAULT_SMTP_RCPT,        /* RCPT TO: the recipient is its argument */
    FAULT_SMTP_DATA,        /* DATA, before the 354 */
    FAULT_SMTP_EOD,         /* the end of data, before the message is stored */
    FAULT_POP3_CONNECT,     /* before the +OK greeting */
    FAULT_POP3_LOGIN,       /* PASS (the user is USER's argument) or AUTH */
    FAULT_POP3_STAT,        /* STAT, LIST or UIDL */
    FAULT_POP3_RETR,        /* RETR or TOP */
    FAULT_POP3_DELE,        /* DELE */
    FAULT_POP3_QUIT,        /* QUIT */
    FAULT_POINT_COUNT,
};

enum fault_action {
    FAULT_REPLY = 0, /* answer with the rule's reply instead of running the command */
    FAULT_DELAY,     /* wait delay_ms, then run the command as usual */
    FAULT_DROP,      /* close the connection without an answer */
    FAULT_STALL,     /* send the first half of the reply line, then nothing */
    FAULT_DROP_BODY, /* RETR/TOP: close after after_bytes octets of the body */
    FAULT_ACTION_COUNT,
};

/* Bounds: a reply fits one line well below RFC 5321's 512 octets; a delay stays below the
 * shortest session timeout the configuration allows times sixty, so a test never waits on a
 * typo; a probability is in millionths. */
#define FAULT_REPLY_MAX_BYTES 200
#define FAULT_DELAY_MAX_MS    600000
#define FAULT_PPM_ALWAYS      1000000u

/* A rule as the operator gives it and the store keeps it: text and numbers, unchecked. */
struct fault_spec {
    const char *point;                     /* fault_point_name() */
    const char *action;                    /* fault_action_name() */
    const char *client;                    /* CIDR or bare address; "" = any */
    const char *user, *sender, *recipient; /* addresses; "" = any */
    const char *reply;                     /* "" = the action's default (stall) or none */
    int64_t message;                       /* pop3.retr, pop3.dele: the message number; 0 = any */
    int64_t delay_ms;
    int64_t after_bytes;
    int64_t times; /* 0: every time it matches */
    int64_t ppm;   /* fires with probability ppm / 1000000 */
    int64_t seed;  /* of the rule's own pseudo-random sequence */
};

/* A checked rule, ready to match. */
struct fault_rule {
    int64_t id;
    enum fault_point point;
    enum fault_action action;
    bool has_client;
    struct cidr client;
    char user[ADDRESS_STRLEN], sender[ADDRESS_STRLEN], recipient[ADDRESS_STRLEN]; /* "" = any */
    char reply[FAULT_REPLY_MAX_BYTES + 1]; /* without CRLF; "" except for reply and stall */
    uint64_t message;                      /* 0 = any */
    uint32_t delay_ms;
    uint64_t after_bytes;
    uint64_t times;
    uint32_t ppm;
    uint64_t seed;
};

/* A drop-body rule's cut as the POP3 maildrop applies it: after after_bytes octets of the
 * answer's body the connection is closed. Disarmed (zeroed) once the answer ends. */
struct fault_cut {
    bool armed;
    uint64_t after_bytes;
};

/* What the session knows at a point; NULL or "" for what it does not know (yet). */
struct fault_facts {
    const struct ip_addr *client;
    const char *user;
    const char *sender;
    const char *recipient;
    uint64_t message; /* RETR, TOP, DELE: the message number; 0 when none */
};

const char *fault_point_name(enum fault_point p);
const char *fault_action_name(enum fault_action a);
/* 0 with *out set, or -1 for an unknown name. */
int fault_point_parse(const char *s, enum fault_point *out);
int fault_action_parse(const char *s, enum fault_action *out);
bool fault_point_is_pop3(enum fault_point p);
/* The point of a command verb (case-insensitive) in SMTP or POP3; -1 when the verb has none. */
int fault_smtp_verb_point(const char *verb, enum fault_point *out);
int fault_pop3_verb_point(const char *verb, enum fault_point *out);

/*
 * "0.25", "25%", "1", "0": a probability into millionths. Six decimals at most; 0..1 only.
 * 0, or -1 with *why_out set.
 */
int fault_probability_parse(const char *s, uint32_t *ppm_out, const char **why_out);

/*
 * Checks spec and builds *out (id 0). A rule must be able to fire where it is placed: a
 * recipient only at smtp.rcpt, a sender only from smtp.mail to smtp.eod, no user at a connect
 * point, a message number only at pop3.retr and pop3.dele, drop-body only at pop3.retr; a reply is
 * a whole line of the point's protocol, an SMTP 4xx/5xx ("451 4.3.0 Try later") or a POP3 "-ERR
 * ..." (a positive answer would change the protocol state behind the session's back); printable
 * ASCII only. 0, or -1 with one line in err.
 */
int fault_rule_build(const struct fault_spec *spec, struct fault_rule *out, char *err,
                     size_t errlen);

/* Every condition the rule sets holds for facts at point p (addresses compare without case). A
 * condition on a fact that is unknown never holds. */
bool fault_rule_matches(const struct fault_rule *r, enum fault_point p,
                        const struct fault_facts *facts);

/*
 * Whether the rule fires at its seen-th match (0-based) after fired earlier firings: never once
 * times is used up; otherwise with probability ppm / 1e6 drawn from the rule's own sequence
 * (fault_draw(seed, seen)), so the same rule reached the same number of times decides the same.
 */
bool fault_rule_fires(const struct fault_rule *r, uint64_t seen, uint64_t fired);

/* The k-th number of the sequence of seed (splitmix64 of seed and k), reduced to 0..999999. */
uint32_t fault_draw(uint64_t seed, uint64_t k);

/* How many octets of reply a stall sends: the first half, at least one. */
size_t fault_stall_bytes(const char *reply);

/* The reply a stall sends part of when the rule gives none. */
const char *fault_default_stall(enum fault_point p);

#endif
