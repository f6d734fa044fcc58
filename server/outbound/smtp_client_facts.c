/*
 * smtp_client_facts.c - a queued body's size, 8-bit octets and leading Return-Path line for the
 * outbound client; see smtp_client_facts.h. Recorded facts first, a scan of the body only for a
 * message stored without them.
 */
#include "server/outbound/smtp_client_facts.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "server/outbound/smtp_client.h"
#include "storage/queue.h"
#include "storage/store.h"

/* Reads the whole body once: size, 8-bit octets, a leading Return-Path line. A few ms for a
 * 25 MiB message on the loop, which is why it is the fallback only. */
static int scan(struct store *s, int64_t message_id, unsigned char *buf, size_t cap,
                struct smtp_client_facts *out)
{
    struct store_body_reader *r = NULL;
    int64_t size = 0;
    int rc = store_queue_body_open(s, message_id, SMTP_CLIENT_BODY_HOLD_MS, &r, &size);
    if (rc != STORE_OK)
        return rc;
    static const char rp[] = "Return-Path:";
    const size_t rp_len = sizeof(rp) - 1;
    uint64_t total = 0;
    bool first_line_open = true, is_rp = false;
    size_t n = 0;
    do {
        rc = store_body_read(r, buf, cap, &n);
        if (rc != STORE_OK)
            break;
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = buf[i];
            if (ch & 0x80)
                out->has_8bit = true;
            if (first_line_open) {
                uint64_t pos = total + i;
                if (pos < rp_len) {
                    if (tolower(ch) != tolower((unsigned char)rp[pos]))
                        first_line_open = false;
                    else if (pos == rp_len - 1)
                        is_rp = true;
                } else if (ch == '\n') {
                    first_line_open = false;
                    if (is_rp)
                        out->strip_bytes = pos + 1;
                }
            }
        }
        total += n;
    } while (n > 0);
    store_body_close(&r);
    if (rc != STORE_OK)
        return rc;
    out->size_bytes = total - out->strip_bytes;
    return STORE_OK;
}

int smtp_client_facts_get(struct store *s, int64_t message_id, unsigned char *buf, size_t cap,
                          struct smtp_client_facts *out)
{
    memset(out, 0, sizeof(*out));
    struct store_message_facts f;
    int rc = store_queue_message_facts(s, message_id, &f);
    if (rc != STORE_OK)
        return rc;
    if (!f.known)
        return scan(s, message_id, buf, cap, out);
    out->has_8bit = f.eightbit;
    out->utf8_headers = f.smtputf8;
    out->dsn_ret = f.dsn_ret;
    snprintf(out->dsn_envid, sizeof(out->dsn_envid), "%s", f.dsn_envid);
    out->strip_bytes = (uint64_t)f.return_path_bytes;
    out->size_bytes = (uint64_t)(f.size_bytes - f.return_path_bytes);
    return STORE_OK;
}
