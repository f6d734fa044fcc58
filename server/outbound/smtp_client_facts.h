/*
 * smtp_client_facts.h - what the outbound client must know of a queued body before MAIL: its
 * size as sent (SIZE=, RFC 1870), whether it has 8-bit octets (BODY=8BITMIME, RFC 6152), and the
 * length of a leading Return-Path line, which a relay must not pass on (RFC 5321 4.4), and the
 * DSN parameters of MAIL (RET, ENVID; RFC 3461) to pass on.
 *
 * For a message stored by this version they were recorded when it was accepted
 * (store_queue_message_facts, storage/queue.h): one indexed lookup, so a 25 MB body is not read on
 * the loop before MAIL. Only a message stored before the facts were recorded is read once, as
 * the client always used to. It does not send anything or keep anything open.
 */
#ifndef POSTERN_SMTP_CLIENT_FACTS_H
#define POSTERN_SMTP_CLIENT_FACTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pure/smtp_parse.h"

struct store;

struct smtp_client_facts {
    uint64_t size_bytes;  /* what is sent: the stored size less a Return-Path line */
    uint64_t strip_bytes; /* the Return-Path line's octets at the start, 0 if none */
    bool has_8bit;
    bool utf8_headers; /* UTF-8 headers received under SMTPUTF8: relaying them needs it too */
    int dsn_ret;       /* RET (enum smtp_dsn_ret) as received, passed on to a DSN server */
    char dsn_envid[SMTP_DSN_ENVID_MAX_BYTES + 1]; /* ENVID as received, "" when none */
};

/*
 * The facts of queued message message_id on the loop's store s; buf[0..cap) is scratch for the
 * old-message scan. STORE_OK, or a STORE_* code (STORE_NOT_FOUND: no longer queued).
 */
int smtp_client_facts_get(struct store *s, int64_t message_id, unsigned char *buf, size_t cap,
                          struct smtp_client_facts *out);

#endif
