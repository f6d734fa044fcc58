/*
 * dkim.h - DKIM signing (RFC 6376) as pure computation: relaxed canonicalisation of header fields
 * and of the body, the body hash fed in chunks, the choice of signed header fields, the
 * DKIM-Signature header folded for the wire, and the signature itself, ed25519-sha256 (RFC 8463)
 * or rsa-sha256. Keys are made, read and freed by common/pure/dkim_key.c (same header).
 *
 * What it does not do: no I/O, no logging, no verification of other people's signatures (tests
 * verify with the primitives below, e2e tests with an independent verifier), no simple
 * canonicalisation, no l= tag (a body length tag lets anybody append to a signed message).
 *
 * Messages come as the store holds them: CRLF line ends only, the header section (each field
 * ending in CRLF, the blank line not included) apart from the body (after the blank line,
 * unstuffed). The canonicalisers do not rely on that: a lone CR or LF is an ordinary octet to
 * them, as it is to a verifier that sees the same octets.
 *
 * Use:
 *     struct dkim_body b; dkim_body_init(&b);
 *     for each body chunk: dkim_body_update(&b, chunk, n);
 *     uint8_t bh[DKIM_HASH_BYTES]; dkim_body_final(&b, bh);
 *     char *field; rc = dkim_sign(key, "example.org", "sel", time_s, header, header_len, bh,
 *                                 &field);   // "DKIM-Signature: ...\r\n", caller frees
 * dkim_sign reads the header only, so the body may be hashed as it arrives and forgotten.
 */
#ifndef POSTERN_DKIM_H
#define POSTERN_DKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include "common/error.h"

#define DKIM_HASH_BYTES 32 /* SHA-256 */
/* RFC 5322 2.1.1: lines SHOULD stay within 78 octets, CRLF excluded; the signature header is
 * folded to that. */
#define DKIM_FOLD_COLUMNS 78
/* Header fields signed by one signature, repeats and the over-signed From included: far above
 * what a real message needs (every recommended field twice); a message that needs more is
 * relayed unsigned rather than half signed. */
#define DKIM_SIGNED_FIELDS_MAX 64
/* RFC 6376 3.1: a selector is dot-separated labels; postern keeps them to one DNS label. */
#define DKIM_SELECTOR_MAX_BYTES 63
/* RFC 5322 3.6.4: "<" id-left "@" id-right ">"; our ids stay well below a line. */
#define DKIM_MESSAGE_ID_MAX_BYTES 200

enum dkim_status {
    DKIM_ERR_NO_FROM = POSTERN_ERR_DKIM_BASE - 1,     /* no From field: nothing to sign for */
    DKIM_ERR_MANY_FROM = POSTERN_ERR_DKIM_BASE - 2,   /* more than one From field or address */
    DKIM_ERR_BAD_FROM = POSTERN_ERR_DKIM_BASE - 3,    /* a From address without a usable domain */
    DKIM_ERR_TOO_MANY = POSTERN_ERR_DKIM_BASE - 4,    /* over DKIM_SIGNED_FIELDS_MAX to sign */
    DKIM_ERR_BAD_FIELD = POSTERN_ERR_DKIM_BASE - 5,   /* a header line that is no field */
    DKIM_ERR_BAD_KEY = POSTERN_ERR_DKIM_BASE - 6,     /* a stored key that cannot be read */
    DKIM_ERR_CRYPTO = POSTERN_ERR_DKIM_BASE - 7,      /* the crypto library failed */
    DKIM_ERR_NO_MEMORY = POSTERN_ERR_DKIM_BASE - 8,   /* allocation failed */
    DKIM_ERR_BAD_ARGUMENT = POSTERN_ERR_DKIM_BASE - 9 /* a domain, selector or size out of range */
};

/* A short static text for a DKIM_ERR_* code, suitable for "dkim=none reason=..." once spaces are
 * dashes (dkim_reason). */
const char *dkim_strerror(int code);
/* The same as one token for a log line: "no-from", "bad-key", ... */
const char *dkim_reason(int code);

enum dkim_alg {
    DKIM_ED25519 = 0, /* ed25519-sha256, RFC 8463 */
    DKIM_RSA = 1,     /* rsa-sha256, RSASSA-PKCS1-v1_5 */
};
/* "ed25519" or "rsa": the k= of the DNS record and the name the CLI and the store use. */
const char *dkim_alg_name(enum dkim_alg alg);
/* Parses "ed25519" or "rsa"; -1 for anything else. */
int dkim_alg_parse(const char *name, enum dkim_alg *out);

/* ---- canonicalisation (RFC 6376 3.4.2 and 3.4.4) ---- */

/*
 * Relaxed header canonicalisation of one field ("Name: value", folds included, with or without
 * its final CRLF): the name in lower case, the colon without white space around it, CRLFs inside
 * the value removed, each run of SP/HTAB one SP, none at either end of the value. With crlf, the
 * result ends in CRLF. Writes at most len + 2 octets to out (cap must allow that) and returns the
 * length, or DKIM_ERR_BAD_FIELD when there is no colon, DKIM_ERR_BAD_ARGUMENT when cap is short.
 */
int dkim_canon_header(const char *field, size_t len, bool crlf, char *out, size_t cap);

/*
 * The relaxed body canonicaliser and its SHA-256, fed in chunks of any size (a CRLF may be cut
 * between two chunks). Per line, each run of SP/HTAB becomes one SP and none is left at the line
 * end; empty lines at the end of the body are dropped; a body that does not end in CRLF gets one;
 * an empty body (or one of blank lines only) hashes as nothing. Memory is the struct alone: empty
 * lines are counted, not kept, until a line with content shows they were not at the end.
 */
struct dkim_body {
    crypto_hash_sha256_state sha;
    uint64_t blank_lines; /* empty lines seen and not yet hashed */
    bool wsp;             /* a SP/HTAB run not yet written (one SP, if content follows) */
    bool content;         /* the current line has content written */
    bool cr;              /* the last octet was a CR not yet known to start a CRLF */
    size_t n;             /* octets staged in out */
    unsigned char out[256];
};
void dkim_body_init(struct dkim_body *b);
void dkim_body_update(struct dkim_body *b, const void *data, size_t len);
void dkim_body_final(struct dkim_body *b, uint8_t hash_out[DKIM_HASH_BYTES]);

/* ---- the header section ---- */

/*
 * The next field of a header section from *pos: its text (name to the CRLF that ends its last
 * line, folds included) in *start and *len, and *pos moved past it. False at the end. A line
 * without a colon is a field too (dkim_canon_header refuses it); lines starting with SP/HTAB
 * before any field belong to nothing and are skipped.
 */
bool dkim_next_field(const char *hdr, size_t hdr_len, size_t *pos, size_t *start, size_t *len);
/* Whether field (as dkim_next_field gives it) is named name, case-insensitively. */
bool dkim_field_is(const char *field, size_t len, const char *name);

/*
 * The domain of the single author address in the From field (RFC 5322 3.6.2), lower case and
 * without a trailing dot, into out (cap >= 256). DKIM_ERR_NO_FROM, DKIM_ERR_MANY_FROM (two From
 * fields, or a list of addresses: the author is then ambiguous and the signature would say
 * nothing useful) or DKIM_ERR_BAD_FROM.
 */
int dkim_from_domain(const char *hdr, size_t hdr_len, char *out, size_t cap);

/*
 * The h= list for a header section: each field of RFC 6376 5.4.1's list (plus Message-ID,
 * Sender and the MIME fields, see dkim.c) as often as it occurs, From once more (so that a From
 * added later breaks the signature), lower case, ':'-separated, into out. Returns the length,
 * DKIM_ERR_NO_FROM, DKIM_ERR_TOO_MANY, or DKIM_ERR_BAD_ARGUMENT when out is short.
 */
int dkim_choose_headers(const char *hdr, size_t hdr_len, char *out, size_t cap);

/*
 * RFC 6376 3.7: the hash of the header input. For each name of h_list (':'-separated, white
 * space around names ignored), in order, the next instance of that field from the bottom of the
 * section up, relaxed, with CRLF (a name with no instance left adds nothing); then sig_field, the
 * DKIM-Signature field with an empty b= value, relaxed and without CRLF.
 */
int dkim_header_hash(const char *hdr, size_t hdr_len, const char *h_list, const char *sig_field,
                     size_t sig_len, uint8_t hash_out[DKIM_HASH_BYTES]);

/* ---- keys and signatures (common/pure/dkim_key.c) ---- */

struct dkim_key;

/*
 * Makes a key pair: ed25519 with libsodium (bits ignored), RSA with OpenSSL (bits 1024..4096;
 * RFC 8301 3.2 asks for at least 1024, 2048 is what the CLI makes). *private_out is the stored
 * form (ed25519: the 32-octet seed in base64; RSA: a PKCS#8 PEM), *public_out the p= value of
 * the DNS record (ed25519: the raw 32-octet key in base64, RFC 8463 4.2; RSA: the DER
 * SubjectPublicKeyInfo in base64, RFC 6376 3.6.1). Both malloc'd, the caller frees them.
 */
int dkim_keygen(enum dkim_alg alg, unsigned bits, char **private_out, char **public_out);
/* Reads a stored private key (dkim_keygen's form) into *out, which dkim_key_free frees. */
int dkim_key_load(enum dkim_alg alg, const char *private_text, struct dkim_key **out);
void dkim_key_free(struct dkim_key **k);
enum dkim_alg dkim_key_alg(const struct dkim_key *k);

/*
 * Signs a header hash: RSA with PKCS#1 v1.5 over SHA-256; ed25519 (RFC 8463 3) with PureEdDSA over
 * the 32-octet hash itself. The signature in base64 (no white space) into out, which needs 700
 * octets for RSA 4096. Both are deterministic, so one hash and one key give one b= value.
 */
int dkim_sign_hash(const struct dkim_key *k, const uint8_t hash[DKIM_HASH_BYTES], char *out,
                   size_t cap);

/*
 * The DKIM-Signature field for a message: v=1, a=, c=relaxed/relaxed, d=domain, s=selector,
 * t=time_s, h= (dkim_choose_headers), bh= (the body hash), b=; folded at DKIM_FOLD_COLUMNS with
 * CRLF HTAB, ending in CRLF. *field_out is malloc'd, the caller frees it.
 */
int dkim_sign(const struct dkim_key *k, const char *domain, const char *selector, int64_t time_s,
              const char *hdr, size_t hdr_len, const uint8_t body_hash[DKIM_HASH_BYTES],
              char **field_out);

#endif
