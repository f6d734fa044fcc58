/*
 * conn_transcript.c - the transcript (transcript = yes): every line received (event=recv) and
 * sent (event=send) logged with the connection's sid, escaped, cut at CONN_TRANSCRIPT_LINE_BYTES,
 * and masked. Which part of a line is a secret is the protocol's knowledge: the handler's
 * transcript_visible hook says how much to show, and a line after conn_mask_next_line is shown as
 * "***" whole. This file only formats; it decides nothing about what a line means.
 */
#include "server/net/conn.h"

#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "server/net/conn_internal.h"

/* Transcript: a reply longer than this per line is cut in the log (log_escape adds "..."). */
#define CONN_TRANSCRIPT_LINE_BYTES 600

/* How much of line the handler lets the transcript show (all of it without a hook). */
static size_t transcript_visible(const struct conn *c, const char *line, size_t len, bool outgoing)
{
    if (c->handler->transcript_visible == NULL)
        return len;
    size_t visible = c->handler->transcript_visible(line, len, outgoing);
    return visible < len ? visible : len;
}

/* line as one log field; past the first `visible` bytes it is masked as " ***". */
static void transcript_escape(char *esc, size_t esclen, const char *line, size_t len,
                              size_t visible)
{
    if (visible >= len) {
        log_escape(esc, esclen, line, len);
        return;
    }
    char head[CONN_TRANSCRIPT_LINE_BYTES / 2];
    /* log_escape quotes text with a space ("AUTH PLAIN"); the quotes are added here. */
    log_escape(head, sizeof(head), line, visible);
    size_t hlen = strlen(head);
    bool quoted = hlen >= 2 && head[0] == '"' && head[hlen - 1] == '"';
    snprintf(esc, esclen, "\"%.*s ***\"", (int)(quoted ? hlen - 2 : hlen),
             quoted ? head + 1 : head);
}

/* Logs every line of data (split at LF, CR dropped) as event=send, masked as the handler says. */
void conn__transcript_send(struct conn *c, const unsigned char *data, size_t len)
{
    char esc[CONN_TRANSCRIPT_LINE_BYTES];
    size_t i = 0;
    while (i < len) {
        const unsigned char *lf = memchr(data + i, '\n', len - i);
        size_t end = lf != NULL ? (size_t)(lf - data) : len;
        size_t n = end - i;
        if (n > 0 && data[i + n - 1] == '\r')
            n--;
        const char *line = (const char *)data + i;
        size_t visible = transcript_visible(c, line, n, true);
        transcript_escape(esc, sizeof(esc), line, n, visible);
        log_info(c->handler->proto, c->sid, "event=send line=%s", esc);
        i = lf != NULL ? end + 1 : len;
    }
}

void conn__transcript_recv(struct conn *c, const char *event, const char *line, size_t len)
{
    char esc[CONN_TRANSCRIPT_LINE_BYTES];
    if (c->mask_next)
        snprintf(esc, sizeof(esc), "\"***\"");
    else
        transcript_escape(esc, sizeof(esc), line, len, transcript_visible(c, line, len, false));
    log_info(c->handler->proto, c->sid, "event=%s line=%s", event, esc);
}
