/*
 * smtp_tx_rcpt.c - the recipients of a transaction (smtp_tx.h): the distinct local user ids and
 * remote addresses, each with the DSN parameters its RCPT gave (NOTIFY and ORCPT, RFC 3461 4.1,
 * 4.2), kept side by side so that adding, taking back (a milter's refusal) and deleting (a
 * milter's DELRCPT) keep them together; and, at end of data, those parameters in the shape
 * store_deliver takes (storage/mailbox.h).
 *
 * It owns the arrays and the strings in them; smtp_tx_clear frees them. It does not decide who
 * is a recipient (smtp_tx.c and smtp_tx_milter.c do) or what a DSN parameter means (storage/).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/smtp/smtp_tx.h"

void smtp_tx_rcpt_dsn_free(struct smtp_tx_rcpt_dsn *d)
{
    free(d->orcpt);
    free(d->address);
    memset(d, 0, sizeof(*d));
}

void smtp_tx_truncate(struct smtp_tx *tx, size_t n_local, size_t n_remote)
{
    for (size_t i = n_local; i < tx->n_local; i++)
        smtp_tx_rcpt_dsn_free(&tx->local_dsn[i]);
    for (size_t i = n_remote; i < tx->n_remote; i++)
        smtp_tx_rcpt_dsn_free(&tx->remote_dsn[i]);
    if (n_local < tx->n_local)
        tx->n_local = n_local;
    if (n_remote < tx->n_remote)
        tx->n_remote = n_remote;
}

void smtp_tx_drop_local(struct smtp_tx *tx, size_t i)
{
    smtp_tx_rcpt_dsn_free(&tx->local_dsn[i]);
    size_t rest = tx->n_local - i - 1;
    memmove(&tx->local_ids[i], &tx->local_ids[i + 1], rest * sizeof(tx->local_ids[0]));
    memmove(&tx->local_dsn[i], &tx->local_dsn[i + 1], rest * sizeof(tx->local_dsn[0]));
    tx->n_local--;
}

void smtp_tx_drop_remote(struct smtp_tx *tx, size_t i)
{
    smtp_tx_rcpt_dsn_free(&tx->remote_dsn[i]);
    size_t rest = tx->n_remote - i - 1;
    memmove(tx->remote[i], tx->remote[i + 1], rest * sizeof(tx->remote[0]));
    memmove(&tx->remote_dsn[i], &tx->remote_dsn[i + 1], rest * sizeof(tx->remote_dsn[0]));
    tx->n_remote--;
}

/*
 * The DSN parameters of a new recipient into *d (strings copied): ORCPT when given, and the
 * address of a local one that asked for a success notice. 0, or -1 when out of memory.
 */
int smtp_tx_rcpt_dsn_set(struct smtp_tx_rcpt_dsn *d, const struct smtp_rcpt_params *p,
                         const char *address)
{
    memset(d, 0, sizeof(*d));
    if (p == NULL)
        return 0;
    d->notify = p->notify;
    if (p->orcpt[0] != '\0' && (d->orcpt = strdup(p->orcpt)) == NULL)
        return -1;
    if (address != NULL && (p->notify & SMTP_NOTIFY_SUCCESS) != 0 &&
        (d->address = strdup(address)) == NULL) {
        smtp_tx_rcpt_dsn_free(d);
        return -1;
    }
    return 0;
}

/* Grows an array and its DSN twin to cap entries. 0, or -1 when out of memory (both keep their
 * old contents; a grown first array is harmless). */
static int grow_twins(void **v, size_t elem, struct smtp_tx_rcpt_dsn **dsn, size_t cap)
{
    void *p = realloc(*v, cap * elem);
    if (p == NULL)
        return -1;
    *v = p;
    struct smtp_tx_rcpt_dsn *q = realloc(*dsn, cap * sizeof(*q));
    if (q == NULL)
        return -1;
    *dsn = q;
    return 0;
}

/* Adds a local user id once, with its DSN parameters (p NULL: none). 0, or -1 when out of
 * memory. */
int smtp_tx_add_local_dsn(struct smtp_tx *tx, int64_t id, const struct smtp_rcpt_params *p,
                          const char *address)
{
    for (size_t i = 0; i < tx->n_local; i++) {
        if (tx->local_ids[i] == id)
            return 0;
    }
    if (tx->n_local == tx->cap_local) {
        size_t cap = tx->cap_local ? tx->cap_local * 2 : 8;
        void *v = tx->local_ids;
        int rc = grow_twins(&v, sizeof(*tx->local_ids), &tx->local_dsn, cap);
        tx->local_ids = v;
        if (rc != 0)
            return -1;
        tx->cap_local = cap;
    }
    if (smtp_tx_rcpt_dsn_set(&tx->local_dsn[tx->n_local], p, address) != 0)
        return -1;
    tx->local_ids[tx->n_local++] = id;
    return 0;
}

int smtp_tx_add_local(struct smtp_tx *tx, int64_t id)
{
    return smtp_tx_add_local_dsn(tx, id, NULL, NULL);
}

/* Adds a remote recipient once, with its DSN parameters (p NULL: none). 0, or -1 when out of
 * memory. */
int smtp_tx_add_remote_dsn(struct smtp_tx *tx, const char *rcpt, const struct smtp_rcpt_params *p)
{
    for (size_t i = 0; i < tx->n_remote; i++) {
        if (strcmp(tx->remote[i], rcpt) == 0)
            return 0;
    }
    if (tx->n_remote == tx->cap_remote) {
        size_t cap = tx->cap_remote ? tx->cap_remote * 2 : 8;
        void *v = tx->remote;
        int rc = grow_twins(&v, sizeof(*tx->remote), &tx->remote_dsn, cap);
        tx->remote = v;
        if (rc != 0)
            return -1;
        tx->cap_remote = cap;
    }
    if (smtp_tx_rcpt_dsn_set(&tx->remote_dsn[tx->n_remote], p, NULL) != 0)
        return -1;
    snprintf(tx->remote[tx->n_remote++], ADDRESS_STRLEN, "%s", rcpt);
    return 0;
}

int smtp_tx_add_remote(struct smtp_tx *tx, const char *rcpt)
{
    return smtp_tx_add_remote_dsn(tx, rcpt, NULL);
}

/* The recipients' DSN parameters as store_deliver takes them (storage/mailbox.h). 0, or -1 when
 * out of memory. */
int smtp_tx_dsn_prepare(struct smtp_tx *tx)
{
    size_t n = tx->n_remote > 0 ? tx->n_remote : 1;
    free(tx->remote_notify);
    free(tx->remote_orcpt);
    free(tx->delivered);
    tx->remote_notify = calloc(n, sizeof(*tx->remote_notify));
    tx->remote_orcpt = calloc(n, sizeof(*tx->remote_orcpt));
    tx->delivered = calloc(tx->n_local > 0 ? tx->n_local : 1, sizeof(*tx->delivered));
    if (tx->remote_notify == NULL || tx->remote_orcpt == NULL || tx->delivered == NULL)
        return -1;
    for (size_t i = 0; i < tx->n_remote; i++) {
        tx->remote_notify[i] = tx->remote_dsn[i].notify;
        tx->remote_orcpt[i] = tx->remote_dsn[i].orcpt;
    }
    tx->n_delivered = 0;
    for (size_t i = 0; i < tx->n_local; i++) {
        if (tx->local_dsn[i].address == NULL)
            continue;
        tx->delivered[tx->n_delivered++] = (struct dsn_recipient){
            .address = tx->local_dsn[i].address,
            .orcpt = tx->local_dsn[i].orcpt,
        };
    }
    return 0;
}
