/*
 * dkim.c - the dkim command: keygen, list, show and del, rows of the table in admin.c. Keys are
 * made by common/pure/dkim_key.c and stored by storage/dkim_keys.c; this file checks the
 * arguments, enforces "one key per algorithm and domain" with a message that says which key is
 * in the way, and prints the DNS record to publish. It never prints a private key.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/pure/date.h"
#include "common/pure/dkim.h"
#include "server/cli/admin.h"
#include "server/cli/admin_internal.h"
#include "storage/store.h"

/* RSA keys the CLI makes unless told otherwise: RFC 8301 3.2 says signers SHOULD use at least
 * 2048 bits. */
#define DKIM_CLI_RSA_BITS 2048
/* RFC 1035 3.3.14: a TXT record is a list of character-strings of at most 255 octets each. */
#define DKIM_TXT_STRING_MAX 255

/* A selector as a DNS label (RFC 6376 3.1 allows dotted names; one label keeps the record
 * name simple): letters, digits and hyphens, no hyphen at either end, stored in lower case. */
static int check_selector(const char *sel, struct input *in)
{
    size_t n = strlen(sel);
    bool ok = n > 0 && n <= DKIM_SELECTOR_MAX_BYTES && sel[0] != '-' && sel[n - 1] != '-';
    for (size_t i = 0; ok && i < n; i++) {
        char c = sel[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
    }
    if (!ok) {
        admin_say_error("invalid selector \"%s\": letters, digits and inner hyphens, at most %d",
                        sel, DKIM_SELECTOR_MAX_BYTES);
        return -1;
    }
    for (size_t i = 0; i <= n; i++)
        in->selector[i] = (char)(sel[i] >= 'A' && sel[i] <= 'Z' ? sel[i] + ('a' - 'A') : sel[i]);
    return 0;
}

int dkim_check_keygen(const struct args *a, struct input *in)
{
    const char *sel = a->opt[OPT_SELECTOR], *alg = a->opt[OPT_ALGORITHM], *bits = a->opt[OPT_BITS];
    if (admin_check_domain(a, in) != 0)
        return -1;
    if (sel != NULL && check_selector(sel, in) != 0)
        return -1;
    in->alg = DKIM_ED25519;
    if (alg != NULL && dkim_alg_parse(alg, &in->alg) != 0) {
        admin_say_error("invalid algorithm \"%s\" (expected ed25519 or rsa)", alg);
        return -1;
    }
    in->bits = DKIM_CLI_RSA_BITS;
    if (bits != NULL) {
        char *end = NULL;
        unsigned long b = strtoul(bits, &end, 10);
        if (in->alg != DKIM_RSA) {
            admin_say_error("--bits is for RSA keys only (an ed25519 key has no size to choose)");
            return -1;
        }
        if (end == bits || *end != '\0' || bits[0] == '-' || b < 1024 || b > 4096) {
            admin_say_error("invalid --bits \"%s\" (expected 1024 to 4096; 2048 is the default)",
                            bits);
            return -1;
        }
        in->bits = (unsigned)b;
    }
    return 0;
}

int dkim_check_show(const struct args *a, struct input *in)
{
    if (admin_check_domain(a, in) != 0)
        return -1;
    return a->opt[OPT_SELECTOR] != NULL ? check_selector(a->opt[OPT_SELECTOR], in) : 0;
}

int dkim_check_del(const struct args *a, struct input *in)
{
    return dkim_check_show(a, in);
}

/* The keys a domain has now, as far as keygen needs to know. */
struct existing {
    char selector[2][DKIM_SELECTOR_MAX_BYTES + 1]; /* by enum dkim_alg; "" when none */
};

static int note_key(void *ctx, const struct store_dkim_key *k)
{
    struct existing *e = ctx;
    enum dkim_alg alg;
    if (dkim_alg_parse(k->algorithm, &alg) == 0)
        snprintf(e->selector[alg], sizeof(e->selector[alg]), "%s", k->selector);
    return 0;
}

/* One zone-file line; the TXT value cut into character-strings of at most 255 octets. */
static int print_record(const char *domain, const char *selector, const char *algorithm,
                        const char *public_key)
{
    char value[2048];
    int n = snprintf(value, sizeof(value), "v=DKIM1; k=%s; p=%s", algorithm, public_key);
    if (n < 0 || (size_t)n >= sizeof(value))
        return -1;
    if (printf("%s._domainkey.%s. IN TXT", selector, domain) < 0)
        return -1;
    for (int off = 0; off < n; off += DKIM_TXT_STRING_MAX) {
        int len = n - off < DKIM_TXT_STRING_MAX ? n - off : DKIM_TXT_STRING_MAX;
        if (printf(" \"%.*s\"", len, value + off) < 0)
            return -1;
    }
    return putchar('\n') == EOF ? -1 : 0;
}

int dkim_run_keygen(struct store *s, const struct args *a, const struct input *in)
{
    const char *alg = dkim_alg_name(in->alg);
    bool local = false;
    char msg[1200];
    int rc = admin_store_result(s, store_domain_is_local(s, in->domain, &local), "");
    if (rc != ADMIN_OK)
        return rc;
    if (!local) {
        snprintf(msg, sizeof(msg), "%s is not a local domain; add it with: postern domain add %s",
                 in->domain, in->domain);
        return admin_store_result(s, STORE_NO_DOMAIN, msg);
    }
    struct existing e = {0};
    if ((rc = admin_store_result(s, store_dkim_key_list(s, in->domain, false, note_key, &e), "")) !=
        ADMIN_OK)
        return rc;
    if (e.selector[in->alg][0] != '\0') {
        snprintf(msg, sizeof(msg),
                 "%s already has an %s key (selector %s); a domain holds one key per algorithm: "
                 "delete it first with: postern dkim del %s --selector %s",
                 in->domain, alg, e.selector[in->alg], in->domain, e.selector[in->alg]);
        return admin_store_result(s, STORE_EXISTS, msg);
    }
    char selector[DKIM_SELECTOR_MAX_BYTES + 1];
    const char *other = e.selector[in->alg == DKIM_RSA ? DKIM_ED25519 : DKIM_RSA];
    if (in->selector[0] != '\0') {
        snprintf(selector, sizeof(selector), "%s", in->selector);
    } else {
        /* postern + the UTC date; the domain's other key may have taken it today. */
        char day[32];
        date_iso8601(store_now_ms(), day, sizeof(day));
        snprintf(selector, sizeof(selector), "postern%.4s%.2s%.2s", day, day + 5, day + 8);
        if (strcmp(selector, other) == 0)
            snprintf(selector, sizeof(selector), "postern%.4s%.2s%.2s-%s", day, day + 5, day + 8,
                     alg);
    }
    if (strcmp(selector, other) == 0) {
        snprintf(msg, sizeof(msg),
                 "selector %s of %s is taken by its other key; choose another "
                 "with --selector",
                 selector, in->domain);
        return admin_store_result(s, STORE_EXISTS, msg);
    }
    char *priv = NULL, *pub = NULL;
    int krc = dkim_keygen(in->alg, in->bits, &priv, &pub);
    if (krc != 0) {
        admin_say_error("cannot make the key: %s", dkim_strerror(krc));
        return ADMIN_RUNTIME;
    }
    snprintf(msg, sizeof(msg),
             "cannot add the key: %s has a key with this selector or algorithm, "
             "or is no longer a local domain",
             in->domain);
    rc = admin_store_result(s, store_dkim_key_add(s, in->domain, selector, alg, priv, pub), msg);
    if (rc == ADMIN_OK && print_record(in->domain, selector, alg, pub) != 0) {
        admin_say_error("cannot write the record");
        rc = ADMIN_RUNTIME;
    }
    sodium_memzero(priv, strlen(priv));
    free(priv);
    free(pub);
    return rc;
}

static int print_key(void *ctx, const struct store_dkim_key *k)
{
    ++*(size_t *)ctx;
    char when[32];
    date_iso8601(k->created_ms, when, sizeof(when));
    printf("%s %s %s %s\n", k->domain, k->selector, k->algorithm, when);
    return 0;
}

int dkim_run_list(struct store *s, const struct args *a, const struct input *in)
{
    size_t rows = 0;
    int rc = admin_store_result(s, store_dkim_key_list(s, NULL, false, print_key, &rows), "");
    admin_say_if_empty(rc, rows, "no DKIM keys");
    return rc;
}

struct show {
    const char *selector; /* "" for all */
    size_t rows;
    bool failed;
};

static int show_key(void *ctx, const struct store_dkim_key *k)
{
    struct show *sh = ctx;
    if (sh->selector[0] != '\0' && strcmp(sh->selector, k->selector) != 0)
        return 0;
    sh->rows++;
    if (print_record(k->domain, k->selector, k->algorithm, k->public_key) != 0) {
        sh->failed = true;
        return 1;
    }
    return 0;
}

int dkim_run_show(struct store *s, const struct args *a, const struct input *in)
{
    struct show sh = {.selector = in->selector};
    int rc = admin_store_result(s, store_dkim_key_list(s, in->domain, false, show_key, &sh), "");
    if (rc == ADMIN_OK && sh.failed) {
        admin_say_error("cannot write the record");
        return ADMIN_RUNTIME;
    }
    if (rc == ADMIN_OK && sh.rows == 0) {
        char msg[900];
        if (in->selector[0] != '\0')
            snprintf(msg, sizeof(msg), "no DKIM key %s for %s", in->selector, in->domain);
        else
            snprintf(msg, sizeof(msg), "no DKIM keys for %s; make one with: postern dkim keygen %s",
                     in->domain, in->domain);
        return admin_store_result(s, STORE_NOT_FOUND, msg);
    }
    return rc;
}

int dkim_run_del(struct store *s, const struct args *a, const struct input *in)
{
    char msg[900];
    snprintf(msg, sizeof(msg), "no DKIM key %s for %s", in->selector, in->domain);
    int rc = admin_store_result(s, store_dkim_key_del(s, in->domain, in->selector), msg);
    if (rc == ADMIN_OK)
        printf("deleted DKIM key %s for %s (remove %s._domainkey.%s from DNS once mail signed "
               "with it has been delivered)\n",
               in->selector, in->domain, in->selector, in->domain);
    return rc;
}
