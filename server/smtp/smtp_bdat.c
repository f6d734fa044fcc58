/*
 * smtp_bdat.c - BDAT (RFC 3030 CHUNKING) in the SMTP server session: "BDAT size [LAST]" and the
 * size octets that follow it, read in the connection's data mode (server/net/conn.h) and counted
 * exactly: no dot-stuffing and no end-of-data marker. After the chunk's last octet the line
 * reader takes over again, so pipelined commands (RFC 3030 2, RFC 2920), further BDATs among
 * them, follow at once.
 *
 * The content goes into the transaction's scanner in raw mode (smtp_tx.h, smtp_tx_bdat_*): the
 * same size limit, spool file, DKIM body hash and delivery as DATA, and the same canonical line
 * ends (bare CR and bare LF become CRLF, common/pure/smtp_data.h says why). A chunk that is not
 * the LAST is answered "250 2.0.0 N octets received"; the LAST one is stored in one writer job
 * and answered after the commit, as DATA's end is. A zero-size LAST chunk ends the message.
 *
 * Refusals (RFC 3030 2, 4): a BDAT without a transaction, or once the transaction was refused,
 * is answered at once and its octets are still read and dropped (SMTP_CHUNK_SKIP), so none of
 * them is ever run as a command. Content past smtp.max_message_size is answered 552 5.3.4 at the
 * end of the chunk that passed it and the transaction is dropped; chunks pipelined behind it are
 * then refused (503) and skipped. A BDAT whose size cannot be read leaves no way to find where
 * its octets end: it is answered 501 and the connection is closed.
 *
 * What it does not do: own the session (smtp_session.c does: the state machine, the replies'
 * counting, the writer job) or the transaction (smtp_tx.c). BINARYMIME is not offered (see
 * cmd_ehlo in smtp_session.c).
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "server/smtp/smtp_internal.h"

/* RFC 3030 2: bdat-cmd ::= "BDAT" SP chunk-size [ SP end-marker ] CRLF, chunk-size ::= 1*DIGIT.
 * 0 with the size and the LAST flag, or -1. Twenty digits pass 2^64: refused. */
static int parse_bdat(const char *args, uint64_t *size_out, bool *last_out)
{
    uint64_t v = 0;
    size_t i = 0;
    for (; args[i] >= '0' && args[i] <= '9'; i++) {
        if (i >= 19)
            return -1;
        v = v * 10 + (uint64_t)(args[i] - '0');
    }
    if (i == 0)
        return -1;
    const char *rest = args + i;
    *last_out = false;
    if (*rest == ' ') {
        rest++;
        if (strcasecmp(rest, "LAST") != 0)
            return -1;
        *last_out = true;
    } else if (*rest != '\0') {
        return -1;
    }
    *size_out = v;
    return 0;
}

/* A chunk's octets are all in (or it had none): its answer. Called with line mode back on. */
static void chunk_end(struct smtp_session *s)
{
    enum smtp_chunk what = s->chunk;
    s->chunk = SMTP_CHUNK_NONE;
    if (what != SMTP_CHUNK_STORE)
        return; /* a refused chunk was answered at its command */
    char reply[SMTP_TX_REPLY_MAX_BYTES];
    if (smtp_tx_bdat_chunk_end(s->tx, s->chunk_last, reply) != SMTP_TX_OK) {
        smtp_reply_error(s, "%s", reply);
        smtp_session_tx_reset(s);
        return;
    }
    if (s->chunk_last) {
        /* The milters' verdict and changes first, as for DATA (smtp_milter.c). */
        if (!smtp_milter_message(s))
            smtp_session_deliver(s);
        return;
    }
    conn_reply(s->conn, "250 2.0.0 %llu octets received\r\n", (unsigned long long)s->chunk_size);
}

/* The state check: true (and the refusal sent) when this chunk is not the transaction's. */
static bool refused(struct smtp_session *s)
{
    switch (s->state) {
    case SMTP_STATE_GREETED:
        smtp_reply_error(s, "503 5.5.1 Error: send HELO/EHLO first");
        return true;
    case SMTP_STATE_READY:
        smtp_reply_error(s, "503 5.5.1 Error: need MAIL command");
        return true;
    case SMTP_STATE_MAIL:
        smtp_reply_error(s, "503 5.5.1 Error: need RCPT command");
        return true;
    case SMTP_STATE_RCPT: {
        if (smtp_session_refused_for_space(s))
            return true;
        char reply[SMTP_TX_REPLY_MAX_BYTES];
        if (smtp_tx_bdat_begin(s->tx, s->conn, reply) != SMTP_TX_OK) {
            smtp_reply_error(s, "%s", reply);
            smtp_session_tx_reset(s);
            return true;
        }
        smtp_session_enter_state(s, SMTP_STATE_BDAT);
        return false;
    }
    case SMTP_STATE_BDAT:
        return false;
    case SMTP_STATE_DATA:
    case SMTP_STATE_BUSY:
        break; /* never here: the connection is in data mode or not reading */
    }
    smtp_reply_error(s, "503 5.5.1 Error: bad sequence of commands");
    return true;
}

void smtp_cmd_bdat(struct smtp_session *s, const char *args)
{
    uint64_t size = 0;
    bool last = false;
    if (parse_bdat(args, &size, &last) != 0) {
        smtp_reply_error(s, "501 5.5.4 Syntax: BDAT size [LAST]");
        conn_close(s->conn, "bdat-syntax");
        return;
    }
    s->chunk = refused(s) ? SMTP_CHUNK_SKIP : SMTP_CHUNK_STORE;
    s->chunk_size = size;
    s->chunk_left = size;
    s->chunk_last = last;
    if (size == 0) {
        chunk_end(s);
        return;
    }
    conn_set_mode_data(s->conn, true);
}

size_t smtp_bdat_data(struct smtp_session *s, const unsigned char *p, size_t n)
{
    size_t k = s->chunk_left < n ? (size_t)s->chunk_left : n;
    if (s->chunk == SMTP_CHUNK_STORE)
        smtp_tx_bdat_feed(s->tx, p, k);
    s->chunk_left -= k;
    if (s->chunk_left > 0)
        return k;
    /* The octets after the chunk are commands again (RFC 3030 2). */
    conn_set_mode_data(s->conn, false);
    session_ref_take(&s->ref);
    chunk_end(s);
    smtp_session_release(s);
    return k;
}
