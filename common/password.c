/*
 * password.c - see password.h.
 */
#include "common/password.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

int password_init(void)
{
    return sodium_init() < 0 ? -1 : 0;
}

bool password_fast_for_tests(void)
{
    const char *v = getenv("POSTERN_TEST_FAST_HASH");
    return v != NULL && strcmp(v, "1") == 0;
}

int password_hash(const char *pw, size_t len, char out[PASSWORD_HASH_BYTES])
{
    if (len > PASSWORD_MAX_BYTES)
        return -1;
    unsigned long long ops = crypto_pwhash_OPSLIMIT_INTERACTIVE;
    size_t mem = crypto_pwhash_MEMLIMIT_INTERACTIVE;
    if (password_fast_for_tests()) {
        ops = crypto_pwhash_OPSLIMIT_MIN;
        mem = crypto_pwhash_MEMLIMIT_MIN;
    }
    if (crypto_pwhash_str(out, pw, len, ops, mem) != 0)
        return -1;
    return 0;
}

bool password_verify(const char *hash, const char *pw, size_t len)
{
    if (len > PASSWORD_MAX_BYTES)
        return false;
    return crypto_pwhash_str_verify(hash, pw, len) == 0;
}

static char dummy[PASSWORD_HASH_BYTES];
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;

static void make_dummy(void)
{
    unsigned char raw[24];
    char pw[sizeof(raw) * 2 + 1];
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(pw, sizeof(pw), raw, sizeof(raw));
    if (password_hash(pw, strlen(pw), dummy) != 0)
        dummy[0] = '\0'; /* verify against "" fails, which is the answer for an unknown user */
    sodium_memzero(pw, sizeof(pw));
}

const char *password_dummy_hash(void)
{
    pthread_once(&dummy_once, make_dummy);
    return dummy;
}
