/*
 * smtp_tx_milter.c - what the milters change in the transaction (smtp_tx.h): a recipient a milter
 * refused taken back, the message taken from the scanner for the milters to read, and at end of
 * message their envelope changes, their quarantine and their new content applied before the
 * delivery job is prepared, so what is stored (and signed) is what they decided.
 *
 * A recipient a milter adds does not go through the relay decision again (Postfix does not
 * either: the milter is trusted configuration): a local user's address is delivered to that
 * user, any other address is queued for relaying. Deleting a recipient removes it whether it
 * was local or remote.
 *
 * Which of those addresses are local users is read first, as one reader job for all of them
 * (smtp_tx_milter_lookup, storage/reader.h): inline it runs in the call, with reader threads the
 * session waits for it; smtp_tx_apply_milters then only uses what it found.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "common/password.h"
#include "server/app.h"
#include "server/milter/milter.h"
#include "server/smtp/smtp_tx.h"
#include "storage/store.h"

void smtp_tx_rcpt_mark(const struct smtp_tx *tx, struct smtp_tx_rcpt_mark *mark)
{
    *mark = (struct smtp_tx_rcpt_mark){tx->n_local, tx->n_remote, tx->n_rcpts};
}

/* Recipients are only ever appended (duplicates are not), so the counts are the undo. */
void smtp_tx_rcpt_undo(struct smtp_tx *tx, const struct smtp_tx_rcpt_mark *mark)
{
    smtp_tx_truncate(tx, mark->n_local, mark->n_remote);
    tx->n_rcpts = mark->n_rcpts;
    if (tx->n_rcpts == 0)
        tx->first_rcpt[0] = '\0';
}

int smtp_tx_take_message(struct smtp_tx *tx, struct milter_message *view)
{
    if (!tx->taken) {
        tx->spilled = tx->spooling ? smtp_data_spilled_bytes(&tx->data) : 0;
        if (smtp_data_take(&tx->data, &tx->block, &tx->block_off, &tx->block_len) != 0)
            return -1;
        tx->taken = true;
    }
    *view = (struct milter_message){
        .spool_fd = tx->spooling ? tx->spool_fd : -1,
        .spool_len = tx->spooling ? tx->spilled : 0,
        .mem = tx->block != NULL ? tx->block + tx->block_off : (const unsigned char *)"",
        .mem_len = tx->block_len,
    };
    return 0;
}

/* "<a@b>" or "a@b" into an address; 0 or -1. */
static int mod_address(const char *text, struct address *a, enum address_path_kind *kind)
{
    size_t len = strlen(text);
    if (len > 0 && text[0] == '<') {
        size_t used = 0;
        if (address_parse_path(text, len, a, kind, &used, NULL) != 0 || used != len)
            return -1;
        return 0;
    }
    *kind = ADDRESS_PATH_MAILBOX;
    return address_parse(text, len, a, NULL);
}

/* The local user an address names, or 0 when it names none (a failed read included: as
 * before the reads were jobs, the address is then relayed rather than the message refused). */
static int64_t local_user(struct store *reads, const struct address *a)
{
    char key[ADDRESS_STRLEN];
    char hash[PASSWORD_HASH_BYTES];
    int64_t id = 0;
    if (reads == NULL || address_user_key(a, key, sizeof(key)) != 0 ||
        store_user_get(reads, key, &id, hash, sizeof(hash)) != STORE_OK)
        return 0;
    return id;
}

/* On a reader thread, or inline on the loop: the lookup's own arrays only. */
static int lookup_run(struct store *st, struct reader_job *job)
{
    struct smtp_milter_lookup *l = container_of(job, struct smtp_milter_lookup, job);
    for (size_t i = 0; i < l->n; i++)
        l->ids[i] = l->is_rcpt[i] ? local_user(st, &l->addrs[i]) : 0;
    return 0;
}

static void lookup_done(struct reader_job *job, int status)
{
    struct smtp_milter_lookup *l = container_of(job, struct smtp_milter_lookup, job);
    l->done(l->ctx, status);
}

int smtp_tx_milter_lookup(struct smtp_tx *tx, struct conn *c, const struct milter_mod *mods,
                          size_t n, unsigned char *content, size_t content_len,
                          smtp_tx_done_fn done, void *ctx)
{
    smtp_tx_milter_lookup_free(tx);
    struct smtp_milter_lookup *l = calloc(1, sizeof(*l));
    if (l != NULL && n > 0) {
        l->addrs = calloc(n, sizeof(*l->addrs));
        l->ids = calloc(n, sizeof(*l->ids));
        l->is_rcpt = calloc(n, sizeof(*l->is_rcpt));
    }
    if (l == NULL || (n > 0 && (l->addrs == NULL || l->ids == NULL || l->is_rcpt == NULL))) {
        if (l != NULL) {
            free(l->addrs);
            free(l->ids);
            free(l->is_rcpt);
        }
        free(l);
        free(content);
        return -1;
    }
    tx->mlookup = l;
    l->content = content;
    l->content_len = content_len;
    l->n = n;
    /* Copied now: the milters' own list may be gone before a read on another thread runs. */
    for (size_t i = 0; i < n; i++) {
        enum address_path_kind kind;
        bool rcpt = mods[i].kind == MILTER_R_ADDRCPT || mods[i].kind == MILTER_R_ADDRCPT_PAR ||
                    mods[i].kind == MILTER_R_DELRCPT;
        l->is_rcpt[i] =
            rcpt && mods[i].value != NULL && mod_address(mods[i].value, &l->addrs[i], &kind) == 0;
    }
    l->job.run = lookup_run;
    l->job.done = lookup_done;
    l->done = done;
    l->ctx = ctx;
    struct app *app = conn_app(c);
    int st;
    if (app != NULL && reader_submit(app->reader, &l->job, &st) == READER_PENDING)
        return READER_PENDING;
    if (app == NULL)
        (void)lookup_run(NULL, &l->job); /* no store: every address is remote */
    return READER_DONE;
}

void smtp_tx_milter_lookup_free(struct smtp_tx *tx)
{
    struct smtp_milter_lookup *l = tx->mlookup;
    if (l == NULL)
        return;
    free(l->content);
    free(l->addrs);
    free(l->ids);
    free(l->is_rcpt);
    free(l);
    tx->mlookup = NULL;
}

/* The local user the lookup found for mods[i] (smtp_tx_milter_lookup). */
static int64_t looked_up(const struct smtp_tx *tx, size_t i)
{
    const struct smtp_milter_lookup *l = tx->mlookup;
    return l != NULL && i < l->n ? l->ids[i] : 0;
}

static void del_rcpt(struct smtp_tx *tx, int64_t id, const struct address *a)
{
    char text[ADDRESS_STRLEN];
    address_format(a, text, sizeof(text));
    for (size_t i = 0; i < tx->n_remote; i++)
        if (strcasecmp(tx->remote[i], text) == 0) {
            smtp_tx_drop_remote(tx, i);
            return;
        }
    for (size_t i = 0; id != 0 && i < tx->n_local; i++)
        if (tx->local_ids[i] == id) {
            smtp_tx_drop_local(tx, i);
            return;
        }
}

static int envelope_mod(struct smtp_tx *tx, struct conn *c, const struct milter_mod *md, int64_t id)
{
    struct address a;
    enum address_path_kind kind;
    if (md->value == NULL || mod_address(md->value, &a, &kind) != 0) {
        log_warn("milter", conn_sid(c), "event=milter-mod-refused kind=%c reason=bad-address",
                 (char)md->kind);
        return 0; /* a bad address from a milter is left out, not the message */
    }
    switch (md->kind) {
    case MILTER_R_CHGFROM:
        tx->sender = a;
        tx->sender_kind = kind;
        address_format(&a, tx->sender_text, sizeof(tx->sender_text));
        return 0;
    case MILTER_R_ADDRCPT:
    case MILTER_R_ADDRCPT_PAR: {
        if (kind != ADDRESS_PATH_MAILBOX)
            return 0;
        char text[ADDRESS_STRLEN];
        address_format(&a, text, sizeof(text));
        int rc = id != 0 ? smtp_tx_add_local(tx, id) : smtp_tx_add_remote(tx, text);
        if (rc == 0 && tx->n_rcpts++ == 0)
            snprintf(tx->first_rcpt, sizeof(tx->first_rcpt), "%s", text);
        return rc;
    }
    case MILTER_R_DELRCPT:
        del_rcpt(tx, id, &a);
        return 0;
    default:
        return 0;
    }
}

int smtp_tx_apply_milters(struct smtp_tx *tx, struct conn *c, const struct milter_mod *mods,
                          size_t n, char reply[SMTP_TX_REPLY_MAX_BYTES])
{
    unsigned char *content = tx->mlookup != NULL ? tx->mlookup->content : NULL;
    size_t content_len = tx->mlookup != NULL ? tx->mlookup->content_len : 0;
    if (tx->mlookup != NULL)
        tx->mlookup->content = NULL; /* ours now */
    for (size_t i = 0; i < n; i++) {
        const struct milter_mod *md = &mods[i];
        if (md->kind == MILTER_R_QUARANTINE) {
            if (tx->quarantine == NULL &&
                (tx->quarantine = strndup(md->value != NULL ? md->value : "",
                                          SMTP_TX_QUARANTINE_MAX_BYTES - 1)) == NULL) {
                free(content);
                snprintf(reply, SMTP_TX_REPLY_MAX_BYTES, "452 4.3.1 Insufficient system storage");
                return -1;
            }
            continue;
        }
        if (envelope_mod(tx, c, md, looked_up(tx, i)) != 0) {
            free(content);
            snprintf(reply, SMTP_TX_REPLY_MAX_BYTES, "452 4.3.1 Insufficient system storage");
            return -1;
        }
    }
    if (tx->n_local + tx->n_remote == 0) {
        free(content);
        snprintf(reply, SMTP_TX_REPLY_MAX_BYTES, "554 5.7.1 No recipients left after filtering");
        return -1;
    }
    if (content == NULL)
        return 0;
    /* The new content replaces all of the old: the spool file goes, and the signer starts over
     * on what will be stored. */
    if (tx->spooling)
        (void)close(tx->spool_fd);
    tx->spooling = false;
    tx->spool_fd = -1;
    free(tx->block);
    tx->block = content;
    tx->block_off = 0;
    tx->block_len = content_len;
    bool sign = (tx->dkim != NULL && tx->dkim->on) || tx->n_remote > 0;
    if (sign && smtp_tx_dkim_start(tx) != 0) {
        snprintf(reply, SMTP_TX_REPLY_MAX_BYTES, "452 4.3.1 Insufficient system storage");
        return -1;
    }
    return 0;
}
