/*
 * networks.c - trusted networks: clients inside them may relay without logging in. Stored as the
 * canonical text (the unique key and what `network list` prints) plus family, network bytes and
 * prefix, from which matching is done in C with cidr_contains(), the same code the unit tests
 * cover. The table is small (a site has a handful of networks), so a scan per lookup is fine.
 */
#include "storage/store_internal.h"

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
    struct sql_stmt *st = sql_prepare(
        s, "INSERT INTO networks(cidr, family, net, prefix, created_ms) VALUES (?1,?2,?3,?4,?5)");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, text);
    sql_bind_i64(st, 2, v4 ? 4 : 6);
    sql_bind_blob(st, 3, c->net.bytes, v4 ? 4 : 16);
    sql_bind_i64(st, 4, (int64_t)c->prefix);
    sql_bind_i64(st, 5, store_now_ms());
    return store_step_done(s, st, "add network");
}

int store_network_del(struct store *s, const struct cidr *c)
{
    char text[CIDR_STRLEN];
    cidr_format(c, text, sizeof(text));
    struct sql_stmt *st = sql_prepare(s, "DELETE FROM networks WHERE cidr = ?1");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_text(st, 1, text);
    return store_step_changed(s, st, "delete network");
}

int store_network_list(struct store *s, store_network_fn fn, void *ctx)
{
    struct sql_stmt *st =
        sql_prepare(s, "SELECT cidr, created_ms FROM networks ORDER BY family, net, prefix");
    if (st == NULL)
        return STORE_ERR;
    int rc;
    while ((rc = sql_step(st)) == SQL_ROW) {
        struct store_network n = {
            .cidr = sql_col_text(st, 0),
            .created_ms = sql_col_i64(st, 1),
        };
        if (fn(ctx, &n) != 0)
            break;
    }
    return store_rows_end(s, st, rc, "list networks");
}

int store_network_match(struct store *s, const struct ip_addr *ip, bool *trusted_out,
                        char *match_out, size_t matchlen)
{
    *trusted_out = false;
    if (matchlen > 0)
        match_out[0] = '\0';
    bool v4 = ip->family == AF_INET;
    struct sql_stmt *st = sql_prepare(
        s, "SELECT cidr, net, prefix FROM networks WHERE family = ?1 ORDER BY prefix DESC");
    if (st == NULL)
        return STORE_ERR;
    sql_bind_i64(st, 1, v4 ? 4 : 6);
    int rc;
    while ((rc = sql_step(st)) == SQL_ROW) {
        struct cidr c;
        memset(&c, 0, sizeof(c));
        c.net.family = ip->family;
        size_t bloblen = 0;
        const void *blob = sql_col_blob(st, 1, &bloblen);
        int64_t prefix = sql_col_i64(st, 2);
        if (blob == NULL || bloblen != (v4 ? 4 : 16) || prefix < 0 || prefix > (v4 ? 32 : 128))
            continue; /* A row not written by store_network_add: never trust it. */
        memcpy(c.net.bytes, blob, bloblen);
        c.prefix = (unsigned)prefix;
        if (cidr_contains(&c, ip)) {
            *trusted_out = true;
            snprintf(match_out, matchlen, "%s", sql_col_text(st, 0));
            break;
        }
    }
    return store_rows_end(s, st, rc, "match networks");
}
