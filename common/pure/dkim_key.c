/*
 * dkim_key.c - DKIM keys and the signature primitive (declared in dkim.h): making a key pair,
 * reading a stored private key, signing a header hash. ed25519 goes through libsodium, RSA
 * through OpenSSL's EVP interface. No I/O: keys come in and go out as text, and the caller
 * decides where they live (storage/dkim_keys.c). A struct dkim_key holds the secret; it is owned
 * by whoever loaded it and wiped when freed.
 */
#include "common/pure/dkim.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

/* RFC 8301 3.2: verifiers must accept 1024 to 4096 bits; less than 1024 must not be used. */
#define DKIM_RSA_MIN_BITS 1024
#define DKIM_RSA_MAX_BITS 4096

struct dkim_key {
    enum dkim_alg alg;
    unsigned char ed_sk[crypto_sign_SECRETKEYBYTES]; /* ed25519: seed and public key */
    EVP_PKEY *rsa;                                   /* owned; RSA only */
};

enum dkim_alg dkim_key_alg(const struct dkim_key *k)
{
    return k->alg;
}

/* bin in base64 (RFC 4648 4, padded), malloc'd. */
static char *base64(const unsigned char *bin, size_t len)
{
    size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    char *out = malloc(cap);
    if (out != NULL)
        sodium_bin2base64(out, cap, bin, len, sodium_base64_VARIANT_ORIGINAL);
    return out;
}

static int keygen_ed25519(char **private_out, char **public_out)
{
    unsigned char seed[crypto_sign_SEEDBYTES], pk[crypto_sign_PUBLICKEYBYTES];
    unsigned char sk[crypto_sign_SECRETKEYBYTES];
    randombytes_buf(seed, sizeof(seed));
    if (crypto_sign_seed_keypair(pk, sk, seed) != 0) {
        sodium_memzero(seed, sizeof(seed));
        return DKIM_ERR_CRYPTO;
    }
    *private_out = base64(seed, sizeof(seed));
    *public_out = base64(pk, sizeof(pk));
    sodium_memzero(seed, sizeof(seed));
    sodium_memzero(sk, sizeof(sk));
    return *private_out != NULL && *public_out != NULL ? 0 : DKIM_ERR_NO_MEMORY;
}

/* The PEM text of key's private half (PKCS#8), malloc'd. */
static char *rsa_private_pem(EVP_PKEY *key)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *out = NULL;
    if (bio != NULL && PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) == 1) {
        char *data = NULL;
        long n = BIO_get_mem_data(bio, &data);
        if (n > 0 && (out = malloc((size_t)n + 1)) != NULL) {
            memcpy(out, data, (size_t)n);
            out[n] = '\0';
        }
    }
    BIO_free_all(bio);
    return out;
}

/* The base64 of key's DER SubjectPublicKeyInfo, malloc'd. */
static char *rsa_public_b64(EVP_PKEY *key)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(key, &der);
    if (n <= 0)
        return NULL;
    char *out = base64(der, (size_t)n);
    OPENSSL_free(der);
    return out;
}

static int keygen_rsa(unsigned bits, char **private_out, char **public_out)
{
    if (bits < DKIM_RSA_MIN_BITS || bits > DKIM_RSA_MAX_BITS)
        return DKIM_ERR_BAD_ARGUMENT;
    EVP_PKEY *key = EVP_RSA_gen(bits);
    if (key == NULL)
        return DKIM_ERR_CRYPTO;
    *private_out = rsa_private_pem(key);
    *public_out = rsa_public_b64(key);
    EVP_PKEY_free(key);
    return *private_out != NULL && *public_out != NULL ? 0 : DKIM_ERR_CRYPTO;
}

int dkim_keygen(enum dkim_alg alg, unsigned bits, char **private_out, char **public_out)
{
    *private_out = *public_out = NULL;
    int rc = alg == DKIM_RSA ? keygen_rsa(bits, private_out, public_out)
                             : keygen_ed25519(private_out, public_out);
    if (rc != 0) {
        if (*private_out != NULL)
            sodium_memzero(*private_out, strlen(*private_out));
        free(*private_out);
        free(*public_out);
        *private_out = *public_out = NULL;
    }
    return rc;
}

int dkim_key_load(enum dkim_alg alg, const char *private_text, struct dkim_key **out)
{
    *out = NULL;
    struct dkim_key *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return DKIM_ERR_NO_MEMORY;
    k->alg = alg;
    if (alg == DKIM_ED25519) {
        unsigned char seed[crypto_sign_SEEDBYTES], pk[crypto_sign_PUBLICKEYBYTES];
        size_t n = 0;
        if (sodium_base642bin(seed, sizeof(seed), private_text, strlen(private_text), " \r\n", &n,
                              NULL, sodium_base64_VARIANT_ORIGINAL) != 0 ||
            n != sizeof(seed) || crypto_sign_seed_keypair(pk, k->ed_sk, seed) != 0) {
            sodium_memzero(seed, sizeof(seed));
            free(k);
            return DKIM_ERR_BAD_KEY;
        }
        sodium_memzero(seed, sizeof(seed));
    } else {
        BIO *bio = BIO_new_mem_buf(private_text, -1);
        k->rsa = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
        if (k->rsa == NULL || !EVP_PKEY_is_a(k->rsa, "RSA") ||
            EVP_PKEY_get_bits(k->rsa) < DKIM_RSA_MIN_BITS) {
            EVP_PKEY_free(k->rsa);
            free(k);
            return DKIM_ERR_BAD_KEY;
        }
    }
    *out = k;
    return 0;
}

void dkim_key_free(struct dkim_key **kp)
{
    struct dkim_key *k = *kp;
    if (k == NULL)
        return;
    EVP_PKEY_free(k->rsa);
    sodium_memzero(k, sizeof(*k));
    free(k);
    *kp = NULL;
}

static int sign_rsa(EVP_PKEY *key, const uint8_t hash[DKIM_HASH_BYTES], unsigned char *sig,
                    size_t *sig_len)
{
    /* EVP_PKEY_sign with a signature digest set wraps the hash in its DigestInfo, which is
     * RSASSA-PKCS1-v1_5 over SHA-256 of the header input without hashing it a second time. */
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key, NULL);
    int rc = DKIM_ERR_CRYPTO;
    if (ctx != NULL && EVP_PKEY_sign_init(ctx) == 1 &&
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1 &&
        EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1 &&
        EVP_PKEY_sign(ctx, sig, sig_len, hash, DKIM_HASH_BYTES) == 1)
        rc = 0;
    EVP_PKEY_CTX_free(ctx);
    return rc;
}

int dkim_sign_hash(const struct dkim_key *k, const uint8_t hash[DKIM_HASH_BYTES], char *out,
                   size_t cap)
{
    unsigned char sig[DKIM_RSA_MAX_BITS / 8];
    size_t sig_len = sizeof(sig);
    int rc = 0;
    if (k->alg == DKIM_RSA) {
        if ((size_t)EVP_PKEY_get_size(k->rsa) > sizeof(sig))
            return DKIM_ERR_BAD_KEY;
        rc = sign_rsa(k->rsa, hash, sig, &sig_len);
    } else {
        /* RFC 8463 3: the ed25519-sha256 signature is PureEdDSA of the SHA-256 hash. */
        unsigned long long n = 0;
        if (crypto_sign_detached(sig, &n, hash, DKIM_HASH_BYTES, k->ed_sk) != 0)
            rc = DKIM_ERR_CRYPTO;
        sig_len = (size_t)n;
    }
    if (rc != 0)
        return rc;
    if (cap < sodium_base64_ENCODED_LEN(sig_len, sodium_base64_VARIANT_ORIGINAL))
        return DKIM_ERR_BAD_ARGUMENT;
    sodium_bin2base64(out, cap, sig, sig_len, sodium_base64_VARIANT_ORIGINAL);
    return 0;
}
