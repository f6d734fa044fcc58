/*
 * probe.h - the selftest's client: one blocking-style TCP connection to the server under test,
 * optionally wrapped in TLS (implicit, or after STARTTLS/STLS), that reads SMTP replies and POP3
 * status lines. Every wait goes through poll() with the probe's timeout, so a probe never hangs
 * on a server that stops answering. It knows nothing of postern: the checks (selftest_*.c) say
 * what to send and judge the replies; this file only moves bytes and keeps a short record of
 * what went wrong for the evidence column.
 */
#ifndef POSTERN_SELFTEST_PROBE_H
#define POSTERN_SELFTEST_PROBE_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Every read waits at most this long unless the caller asks for less (a reply to any command). */
#define PROBE_TIMEOUT_MS 10000
/* A reply is kept up to this many octets for the evidence, all lines joined with "\n". */
#define PROBE_REPLY_MAX_BYTES 2048
#define PROBE_ERR_MAX_BYTES   256

/* What a TLS handshake offers: the checks for old versions and ciphers narrow it on purpose. */
struct probe_tls_opts {
    int max_version;     /* 0: the library's newest; TLS1_1_VERSION for the old-version check */
    int min_version;     /* 0: the library's oldest allowed at security level 0 */
    const char *ciphers; /* TLS 1.2 and older cipher list; NULL: the library's default */
};

struct probe {
    int fd;       /* owned; -1 when closed */
    SSL_CTX *ctx; /* owned; NULL until TLS starts */
    SSL *ssl;     /* owned; NULL in plaintext */
    char in[8192];
    size_t in_len;
    int timeout_ms;
    char err[PROBE_ERR_MAX_BYTES]; /* the last failure, for the evidence column */
};

/* An SMTP reply (all its lines) or a POP3 status line. */
struct probe_reply {
    int code; /* SMTP: the three digits; POP3: 1 for +OK, 0 for -ERR, other for anything else */
    char text[PROBE_REPLY_MAX_BYTES];
};

/* Connects to host:port (a name or a literal) within the timeout; 0 or -1 with p->err set. */
int probe_connect(struct probe *p, const char *host, uint16_t port);

/* Closes the connection (TLS without waiting for the peer's close_notify); safe to repeat. */
void probe_close(struct probe *p);

/* Sends the bytes as they are, in one write where the kernel allows; 0 or -1. */
int probe_send(struct probe *p, const char *data, size_t len);
int probe_sendf(struct probe *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reads one SMTP reply, continuation lines included; 0 or -1 (timeout, close, garbage). */
int probe_smtp_reply(struct probe *p, struct probe_reply *r);

/* Sends a command line (CRLF added) and reads its SMTP reply; 0 or -1. */
int probe_smtp_cmd(struct probe *p, struct probe_reply *r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reads one POP3 status line; 0 or -1. */
int probe_pop3_line(struct probe *p, struct probe_reply *r);

/* Sends a command line (CRLF added) and reads the POP3 status line; 0 or -1. */
int probe_pop3_cmd(struct probe *p, struct probe_reply *r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reads a POP3 multi-line body up to its "." line into out (lines joined by "\n"); 0 or -1. */
int probe_pop3_multiline(struct probe *p, char *out, size_t len);

/*
 * Starts TLS on the connection (the server side must be ready: implicit TLS, or after its
 * 220/+OK). The context is the probe's own, at security level 0 so that it can offer what the
 * checks want to see refused; certificates are not verified (the selftest judges the protocol,
 * not the PKI). Returns 0, or -1 with the handshake's error in p->err. Plaintext the server sent
 * before the handshake and that is still unread stays in p->in: the caller decides.
 */
int probe_starttls(struct probe *p, const struct probe_tls_opts *o);

/* The negotiated version and cipher, "TLSv1.3 TLS_AES_128_GCM_SHA256", or "" in plaintext. */
void probe_tls_describe(const struct probe *p, char *out, size_t len);

/* Waits up to wait_ms for any byte (application data under TLS); true when one arrived, which
 * stays readable. */
bool probe_has_input(struct probe *p, int wait_ms);

/* Copies text escaped (control octets as \r \n \xNN) and cut to at most len - 1 octets with
 * "..." when cut; for one-line evidence. */
void probe_escape(const char *text, size_t text_len, char *out, size_t len);

#endif
