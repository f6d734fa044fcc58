/*
 * password_input.c - see password_input.h. The plaintext lives only in this file's stack
 * buffers and is wiped on every return; hashing is common/password.c's.
 */
#include "server/cli/password_input.h"

#include <stdbool.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <sodium.h>

/* Reads one line without its line ending; returns its length or -1 (EOF, error, too long). */
static long read_line(FILE *f, char *buf, size_t cap)
{
    if (fgets(buf, (int)cap, f) == NULL)
        return -1;
    size_t n = strlen(buf);
    bool complete = n > 0 && buf[n - 1] == '\n';
    if (!complete && !feof(f))
        return -1; /* longer than cap */
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    return (long)n;
}

/* Prompts on the terminal with echo off. Echo goes off before the prompt is shown: TCSAFLUSH
 * discards typed-ahead input, so switching after the prompt could drop an answer typed quickly. */
static long prompt_password(FILE *tty, const char *prompt, char *buf, size_t cap)
{
    struct termios old, quiet;
    int fd = fileno(tty);
    bool restore = tcgetattr(fd, &old) == 0;
    if (restore) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ECHONL;
        if (tcsetattr(fd, TCSAFLUSH, &quiet) != 0)
            restore = false;
    }
    fputs(prompt, stderr);
    fflush(stderr);
    long n = read_line(tty, buf, cap);
    if (restore)
        tcsetattr(fd, TCSAFLUSH, &old);
    return n;
}

int password_input_hash(FILE *in, char hash_out[PASSWORD_HASH_BYTES], char *why, size_t why_len)
{
    /* Room for the longest password, its line's LF and the NUL. */
    char pw[PASSWORD_MAX_BYTES + 2], again[PASSWORD_MAX_BYTES + 2];
    long n;
    int rc = -1;
    if (!isatty(fileno(in))) {
        n = read_line(in, pw, sizeof(pw));
        if (n < 0) {
            snprintf(why, why_len,
                     "no password on standard input (expected one line of at most %d bytes)",
                     PASSWORD_MAX_BYTES);
            goto out;
        }
    } else {
        n = prompt_password(in, "Password: ", pw, sizeof(pw));
        long m = n < 0 ? -1 : prompt_password(in, "Again: ", again, sizeof(again));
        if (n < 0 || m < 0) {
            snprintf(why, why_len, "no password given");
            goto out;
        }
        if (n != m || sodium_memcmp(pw, again, (size_t)n) != 0) {
            snprintf(why, why_len, "the passwords do not match");
            goto out;
        }
    }
    if (n == 0) {
        snprintf(why, why_len, "empty password refused");
        goto out;
    }
    if (password_hash(pw, (size_t)n, hash_out) != 0) {
        snprintf(why, why_len, "cannot hash the password (out of memory?)");
        goto out;
    }
    rc = 0;
out:
    sodium_memzero(pw, sizeof(pw));
    sodium_memzero(again, sizeof(again));
    return rc;
}
