/*
 * conn_transcript.c - the transcript (transcript = yes): every line received (event=recv) and
 * sent (event=send) logged with the connection's sid, escaped, cut at CONN_TRANSCRIPT_LINE_BYTES,
 * and masked. Which part of a line is a secret is the protocol's knowledge: the handler's
 * transcript_visible hook says how much to show, and a line after conn_mask_next_line is shown as
 * "***" whole. This file only formats; it decides nothing about what a line means.
 *
 * A message body is never logged, in either direction: it is mail, not protocol, and a 25 MB
 * RETR would add 50 MB to the log. What the session sends between conn_body_begin and
 * conn_body_end, and what it receives in data mode, is counted instead and summed up in one line
 * (event=send-body or recv-body, octets and lines) when the body ends or the connection closes.
 */
#include "server/net/conn.h"

#include <inttypes.h>
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

static uint64_t count_lf(const unsigned char *data, size_t len)
{
    uint64_t n = 0;
    for (const unsigned char *p = data, *end = data + len;
         (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++)
        n++;
    return n;
}

static void log_body(struct conn *c, const char *event, uint64_t octets, uint64_t lines,
                     bool complete)
{
    log_info(c->handler->proto, c->sid, "event=%s octets=%" PRIu64 " lines=%" PRIu64 "%s", event,
             octets, lines, complete ? "" : " complete=no");
}

void conn_body_begin(struct conn *c)
{
    if (c == NULL || c->body_out)
        return;
    c->body_out = true;
    c->body_out_octets = c->body_out_lines = 0;
}

void conn_body_end(struct conn *c)
{
    if (c == NULL || !c->body_out)
        return;
    c->body_out = false;
    if (c->set->transcript)
        log_body(c, "send-body", c->body_out_octets, c->body_out_lines, !conn_is_closing(c));
}

void conn__transcript_data_in_end(struct conn *c, bool complete)
{
    log_body(c, "recv-body", c->body_in_octets, c->body_in_lines, complete);
    c->body_in_octets = c->body_in_lines = 0;
}

void conn__transcript_data_in(struct conn *c, const unsigned char *data, size_t len, bool ended)
{
    c->body_in_octets += len;
    c->body_in_lines += count_lf(data, len);
    if (ended)
        conn__transcript_data_in_end(c, true);
}

void conn__transcript_unfinished(struct conn *c)
{
    if (c->body_out) {
        c->body_out = false;
        log_body(c, "send-body", c->body_out_octets, c->body_out_lines, false);
    }
    if (c->mode_data)
        conn__transcript_data_in_end(c, false);
}

/* Logs every line of data (split at LF, CR dropped) as event=send, masked as the handler says;
 * inside a body it only counts. */
void conn__transcript_send(struct conn *c, const unsigned char *data, size_t len)
{
    if (c->body_out) {
        c->body_out_octets += len;
        c->body_out_lines += count_lf(data, len);
        return;
    }
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
