/*
 * probe.c - see probe.h. The socket is non-blocking and every wait is a poll() bounded by the
 * probe's timeout, for plaintext and TLS alike (OpenSSL's WANT_READ/WANT_WRITE become a poll on
 * the same descriptor), so a server that stalls mid-line or mid-handshake costs one timeout, not
 * the whole run. The probe owns its descriptor, its SSL_CTX and its SSL; probe_close frees all
 * three. Nothing here judges a reply.
 */
#include "server/selftest/probe.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_err(struct probe *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_err(struct probe *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, sizeof(p->err), fmt, ap);
    va_end(ap);
}

/* Waits for events on the descriptor until the deadline: 1 ready, 0 timed out, -1 error. */
static int wait_fd(struct probe *p, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd pfd = {.fd = p->fd, .events = events};
        int n = poll(&pfd, 1, (int)left);
        if (n > 0)
            return 1;
        if (n == 0)
            return 0;
        if (errno != EINTR) {
            set_err(p, "poll: %s", strerror(errno));
            return -1;
        }
    }
}

static int try_connect(struct probe *p, const struct addrinfo *ai, int64_t deadline)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        set_err(p, "socket: %s", strerror(errno));
        return -1;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        set_err(p, "fcntl: %s", strerror(errno));
        close(fd);
        return -1;
    }
    p->fd = fd;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return 0;
    if (errno != EINPROGRESS) {
        set_err(p, "connect: %s", strerror(errno));
        goto fail;
    }
    int w = wait_fd(p, POLLOUT, deadline);
    if (w <= 0) {
        if (w == 0)
            set_err(p, "connect: timed out");
        goto fail;
    }
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
        set_err(p, "connect: %s", strerror(soerr != 0 ? soerr : errno));
        goto fail;
    }
    return 0;
fail:
    close(fd);
    p->fd = -1;
    return -1;
}

int probe_connect(struct probe *p, const char *host, uint16_t port)
{
    memset(p, 0, sizeof(*p));
    p->fd = -1;
    p->timeout_ms = PROBE_TIMEOUT_MS;
    char service[8];
    snprintf(service, sizeof(service), "%u", (unsigned)port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        set_err(p, "%s: %s", host, gai_strerror(rc));
        return -1;
    }
    int64_t deadline = now_ms() + p->timeout_ms;
    rc = -1;
    for (const struct addrinfo *ai = res; ai != NULL && rc != 0; ai = ai->ai_next)
        rc = try_connect(p, ai, deadline);
    freeaddrinfo(res);
    return rc;
}

void probe_close(struct probe *p)
{
    if (p->ssl != NULL) {
        SSL_free(p->ssl);
        p->ssl = NULL;
    }
    if (p->ctx != NULL) {
        SSL_CTX_free(p->ctx);
        p->ctx = NULL;
    }
    if (p->fd >= 0) {
        close(p->fd);
        p->fd = -1;
    }
}

/* The OpenSSL error queue's first entry, or what SSL_get_error said. */
static void ssl_err(struct probe *p, const char *what, int code)
{
    unsigned long e = ERR_get_error();
    char buf[200];
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof(buf));
    else if (code == SSL_ERROR_SYSCALL || code == SSL_ERROR_ZERO_RETURN)
        snprintf(buf, sizeof(buf), "connection closed by the server");
    else
        snprintf(buf, sizeof(buf), "SSL error %d", code);
    ERR_clear_error();
    set_err(p, "%s: %s", what, buf);
}

/* Runs one SSL call until it completes or the deadline passes; returns its result (> 0 done). */
static int ssl_drive(struct probe *p, int (*call)(SSL *, void *, int), void *buf, int len,
                     const char *what, int64_t deadline)
{
    for (;;) {
        ERR_clear_error();
        int n = call(p->ssl, buf, len);
        if (n > 0)
            return n;
        int e = SSL_get_error(p->ssl, n);
        short ev = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
        if (ev == 0) {
            ssl_err(p, what, e);
            return -1;
        }
        int w = wait_fd(p, ev, deadline);
        if (w <= 0) {
            if (w == 0)
                set_err(p, "%s: timed out", what);
            return -1;
        }
    }
}

static int ssl_read_call(SSL *s, void *buf, int len)
{
    return SSL_read(s, buf, len);
}

static int ssl_write_call(SSL *s, void *buf, int len)
{
    return SSL_write(s, buf, len);
}

static int ssl_handshake_call(SSL *s, void *buf, int len)
{
    (void)buf;
    (void)len;
    return SSL_connect(s);
}

int probe_send(struct probe *p, const char *data, size_t len)
{
    int64_t deadline = now_ms() + p->timeout_ms;
    size_t off = 0;
    while (off < len) {
        if (p->ssl != NULL) {
            size_t chunk = len - off > 16384 ? 16384 : len - off;
            int n =
                ssl_drive(p, ssl_write_call, (void *)(data + off), (int)chunk, "write", deadline);
            if (n < 0)
                return -1;
            off += (size_t)n;
            continue;
        }
        ssize_t n = send(p->fd, data + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            set_err(p, "send: %s", strerror(errno));
            return -1;
        }
        int w = wait_fd(p, POLLOUT, deadline);
        if (w <= 0) {
            if (w == 0)
                set_err(p, "send: timed out");
            return -1;
        }
    }
    return 0;
}

int probe_sendf(struct probe *p, const char *fmt, ...)
{
    char line[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line)) {
        set_err(p, "command too long");
        return -1;
    }
    return probe_send(p, line, (size_t)n);
}

/* Reads more input into p->in before the deadline: > 0 octets added, 0 closed, -1 failure. */
static int fill(struct probe *p, int64_t deadline)
{
    if (p->in_len == sizeof(p->in)) {
        set_err(p, "a line longer than %zu octets", sizeof(p->in));
        return -1;
    }
    char *dst = p->in + p->in_len;
    int room = (int)(sizeof(p->in) - p->in_len);
    if (p->ssl != NULL) {
        ERR_clear_error();
        int n = ssl_drive(p, ssl_read_call, dst, room, "read", deadline);
        if (n < 0)
            return strstr(p->err, "closed") != NULL ? 0 : -1;
        p->in_len += (size_t)n;
        return n;
    }
    for (;;) {
        ssize_t n = recv(p->fd, dst, (size_t)room, 0);
        if (n > 0) {
            p->in_len += (size_t)n;
            return (int)n;
        }
        if (n == 0) {
            set_err(p, "connection closed by the server");
            return 0;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            set_err(p, "recv: %s", strerror(errno));
            return -1;
        }
        int w = wait_fd(p, POLLIN, deadline);
        if (w <= 0) {
            if (w == 0)
                set_err(p, "no answer within %d ms", p->timeout_ms);
            return -1;
        }
    }
}

/* Takes one line (without its line end: CRLF, or a bare LF) into out; 0 or -1. */
static int read_line(struct probe *p, char *out, size_t len, int64_t deadline)
{
    for (;;) {
        char *lf = memchr(p->in, '\n', p->in_len);
        if (lf != NULL) {
            size_t n = (size_t)(lf - p->in);
            size_t keep = n > 0 && p->in[n - 1] == '\r' ? n - 1 : n;
            if (keep >= len)
                keep = len - 1;
            memcpy(out, p->in, keep);
            out[keep] = '\0';
            memmove(p->in, lf + 1, p->in_len - n - 1);
            p->in_len -= n + 1;
            return 0;
        }
        if (fill(p, deadline) <= 0)
            return -1;
    }
}

int probe_smtp_reply(struct probe *p, struct probe_reply *r)
{
    int64_t deadline = now_ms() + p->timeout_ms;
    r->code = 0;
    r->text[0] = '\0';
    size_t used = 0;
    for (;;) {
        char line[1024];
        if (read_line(p, line, sizeof(line), deadline) != 0)
            return -1;
        int w = snprintf(r->text + used, sizeof(r->text) - used, "%s%s", used ? "\n" : "", line);
        if (w > 0)
            used = used + (size_t)w < sizeof(r->text) ? used + (size_t)w : sizeof(r->text) - 1;
        if (strlen(line) < 3 || line[0] < '1' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
            line[2] < '0' || line[2] > '9') {
            set_err(p, "not an SMTP reply: %.80s", line);
            return -1;
        }
        r->code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        if (line[3] != '-')
            return 0;
    }
}

/* Formats one command line, adds CRLF and sends it; -1 (with the reason in p) on failure. */
__attribute__((format(printf, 2, 0))) static int send_command(struct probe *p, const char *fmt,
                                                              va_list ap)
{
    char line[4096];
    int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
    if (n < 0 || (size_t)n >= sizeof(line) - 2) {
        set_err(p, "command too long");
        return -1;
    }
    memcpy(line + n, "\r\n", 2);
    return probe_send(p, line, (size_t)n + 2);
}

int probe_smtp_cmd(struct probe *p, struct probe_reply *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = send_command(p, fmt, ap);
    va_end(ap);
    return rc != 0 ? -1 : probe_smtp_reply(p, r);
}

int probe_pop3_line(struct probe *p, struct probe_reply *r)
{
    int64_t deadline = now_ms() + p->timeout_ms;
    if (read_line(p, r->text, sizeof(r->text), deadline) != 0) {
        r->code = -1;
        r->text[0] = '\0';
        return -1;
    }
    r->code = strncmp(r->text, "+OK", 3) == 0 ? 1 : strncmp(r->text, "-ERR", 4) == 0 ? 0 : 2;
    return 0;
}

int probe_pop3_cmd(struct probe *p, struct probe_reply *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = send_command(p, fmt, ap);
    va_end(ap);
    return rc != 0 ? -1 : probe_pop3_line(p, r);
}

int probe_pop3_multiline(struct probe *p, char *out, size_t len)
{
    int64_t deadline = now_ms() + p->timeout_ms;
    size_t used = 0;
    out[0] = '\0';
    for (;;) {
        char line[1024];
        if (read_line(p, line, sizeof(line), deadline) != 0)
            return -1;
        if (strcmp(line, ".") == 0)
            return 0;
        const char *l = line[0] == '.' ? line + 1 : line; /* RFC 1939 3: byte-stuffing */
        int w = snprintf(out + used, len - used, "%s\n", l);
        if (w > 0)
            used = used + (size_t)w < len ? used + (size_t)w : len - 1;
    }
}

int probe_starttls(struct probe *p, const struct probe_tls_opts *o)
{
    p->ctx = SSL_CTX_new(TLS_client_method());
    if (p->ctx == NULL) {
        ssl_err(p, "SSL_CTX_new", 0);
        return -1;
    }
    /* Level 0, so that the probe itself may offer TLS 1.0/1.1 and RSA key exchange when a check
     * asks for them; what the server accepts is the question, not what the probe prefers. */
    SSL_CTX_set_security_level(p->ctx, 0);
    SSL_CTX_set_verify(p->ctx, SSL_VERIFY_NONE, NULL);
    if ((o->min_version != 0 && SSL_CTX_set_min_proto_version(p->ctx, o->min_version) != 1) ||
        (o->max_version != 0 && SSL_CTX_set_max_proto_version(p->ctx, o->max_version) != 1) ||
        (o->ciphers != NULL && SSL_CTX_set_cipher_list(p->ctx, o->ciphers) != 1)) {
        ssl_err(p, "this OpenSSL cannot offer it", 0);
        return -1;
    }
    p->ssl = SSL_new(p->ctx);
    if (p->ssl == NULL || SSL_set_fd(p->ssl, p->fd) != 1) {
        ssl_err(p, "SSL_new", 0);
        return -1;
    }
    int64_t deadline = now_ms() + p->timeout_ms;
    return ssl_drive(p, ssl_handshake_call, NULL, 0, "handshake", deadline) > 0 ? 0 : -1;
}

void probe_tls_describe(const struct probe *p, char *out, size_t len)
{
    if (p->ssl == NULL) {
        snprintf(out, len, "%s", "");
        return;
    }
    snprintf(out, len, "%s %s", SSL_get_version(p->ssl), SSL_get_cipher_name(p->ssl));
}

bool probe_has_input(struct probe *p, int wait_ms)
{
    if (p->in_len > 0)
        return true;
    int saved = p->timeout_ms;
    p->timeout_ms = wait_ms;
    int n = fill(p, now_ms() + wait_ms);
    p->timeout_ms = saved;
    return n > 0;
}

void probe_escape(const char *text, size_t text_len, char *out, size_t len)
{
    size_t o = 0;
    bool cut = false;
    for (size_t i = 0; i < text_len; i++) {
        unsigned char c = (unsigned char)text[i];
        char tmp[5];
        if (c == '\r')
            snprintf(tmp, sizeof(tmp), "\\r");
        else if (c == '\n')
            snprintf(tmp, sizeof(tmp), "\\n");
        else if (c == '\\')
            snprintf(tmp, sizeof(tmp), "\\\\");
        else if (c < 0x20 || c >= 0x7f)
            snprintf(tmp, sizeof(tmp), "\\x%02x", c);
        else
            snprintf(tmp, sizeof(tmp), "%c", c);
        size_t tl = strlen(tmp);
        if (o + tl + 4 > len) {
            cut = true;
            break;
        }
        memcpy(out + o, tmp, tl);
        o += tl;
    }
    if (cut && o + 3 < len) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}
