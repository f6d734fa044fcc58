/*
 * networks.c - trusted networks: clients inside them may relay without logging in. Stored as the
 * canonical text (the unique key and what `network list` prints) plus family, network bytes and
 * prefix, from which matching is done in C with cidr_contains(), the same code the unit tests
 * cover. The table is small (a site has a handful of networks), so a scan per lookup is fine.
 */
#include "storage/sqlite/legacy.h"

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "common/pure/cidr.h"

int store_network_add(struct store *s, const struct cidr *c)
{
    char text[CIDR_STRLEN];
    cidr_format(c, text, sizeof(text));
    bool v4 = c->net.family == AF_INET;
    sqlite3_stmt *st = legacy_prepare(
        s, "INSERT INTO networks(cidr, family, net, prefix, created_ms) VALUES (?1,?2,?3,?4,?5)");
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, v4 ? 4 : 6);
    sqlite3_bind_blob(st, 3, c->net.bytes, v4 ? 4 : 16, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 4, (int)c->prefix);
    sqlite3_bind_int64(st, 5, store_now_ms());
    return legacy_step_done(s, st, "add network");
}

int store_network_del(struct store *s, const struct cidr *c)
{
    char text[CIDR_STRLEN];
    cidr_format(c, text, sizeof(text));
    sqlite3_stmt *st = legacy_prepare(s, "DELETE FROM networks WHERE cidr = ?1");
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
    return legacy_step_changed(s, st, "delete network");
}

int store_network_list(struct store *s, store_network_fn fn, void *ctx)
{
    sqlite3_stmt *st =
        legacy_prepare(s, "SELECT cidr, created_ms FROM networks ORDER BY family, net, prefix");
    if (st == NULL)
        return STORE_ERR;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct store_network n = {
            .cidr = (const char *)sqlite3_column_text(st, 0),
            .created_ms = sqlite3_column_int64(st, 1),
        };
        if (fn(ctx, &n) != 0)
            break;
    }
    return legacy_rows_end(s, st, rc, "list networks");
}

int store_network_match(struct store *s, const struct ip_addr *ip, bool *trusted_out,
                        char *match_out, size_t matchlen)
{
    *trusted_out = false;
    if (matchlen > 0)
        match_out[0] = '\0';
    bool v4 = ip->family == AF_INET;
    sqlite3_stmt *st = legacy_prepare(
        s, "SELECT cidr, net, prefix FROM networks WHERE family = ?1 ORDER BY prefix DESC");
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_int(st, 1, v4 ? 4 : 6);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct cidr c;
        memset(&c, 0, sizeof(c));
        c.net.family = ip->family;
        const void *blob = sqlite3_column_blob(st, 1);
        int bloblen = sqlite3_column_bytes(st, 1);
        int prefix = sqlite3_column_int(st, 2);
        if (blob == NULL || bloblen != (v4 ? 4 : 16) || prefix < 0 || prefix > (v4 ? 32 : 128))
            continue; /* A row not written by store_network_add: never trust it. */
        memcpy(c.net.bytes, blob, (size_t)bloblen);
        c.prefix = (unsigned)prefix;
        if (cidr_contains(&c, ip)) {
            *trusted_out = true;
            snprintf(match_out, matchlen, "%s", (const char *)sqlite3_column_text(st, 0));
            break;
        }
    }
    return legacy_rows_end(s, st, rc, "match networks");
}
