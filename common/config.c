/*
 * config.c - loading the configuration (config.h has the contract): defaults first, then a file
 * or a string, then the checks that involve more than one key, and freeing it. Which keys exist
 * and their bounds are config_table.c's; the syntax of one value is config_value.c's; printing
 * is config_print.c's. Defaults are applied by feeding each default text through the same setter
 * as a file value, so a default can never be out of its own range. Errors name FILE:LINE
 * (OpenSMTPD's errors are the model for ours).
 *
 * inih splits "key = value" and strips comments; everything else is ours. inih calls its
 * handler only for key lines and does not pass line numbers in Debian's build, so we feed it
 * through our own line reader (ini_parse_stream). The reader counts lines, refuses over-long
 * lines and NUL bytes instead of letting them be cut, and checks [section] headers itself, so
 * an unknown section is an error even when it holds no key. The first error stops the parse.
 * This file does not bind, resolve or look anything up: values are checked for form only.
 */
#include "common/config_internal.h"

#include <errno.h>
#include <ini.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* State of one load: where the text comes from, where we are, and the first error. */
struct parse {
    struct cfg *cfg;
    const char *name;     /* FILE in messages; borrowed */
    const char *base_dir; /* for relative paths, or NULL; borrowed */
    FILE *fp;             /* source: a file, or ... */
    const char *text;     /* ... a string (read position); borrowed */
    int read_errno;       /* set when reading fp failed */
    unsigned line;
    const char *section;               /* a cfg_params[].section, or NULL before the first header */
    unsigned set_line[CFG_PARAMS_MAX]; /* line where each key was set; 0 = not in the file */
    bool failed;
    char *err;
    size_t errlen;
};

/* Text from the file quoted in a message is cut to this many bytes, then "...". */
#define QUOTE_MAX_BYTES 200

/* s, or its first QUOTE_MAX_BYTES bytes and "..." in buf (QUOTE_MAX_BYTES + 4 bytes). */
static const char *quote_cut(const char *s, char buf[QUOTE_MAX_BYTES + 4])
{
    if (strlen(s) <= QUOTE_MAX_BYTES)
        return s;
    memcpy(buf, s, QUOTE_MAX_BYTES);
    memcpy(buf + QUOTE_MAX_BYTES, "...", 4);
    return buf;
}

/* Records the first error only: "NAME:LINE: message", or "NAME: message" when line is 0. */
static void fail(struct parse *ps, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct parse *ps, unsigned line, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (ps->failed)
        return;
    ps->failed = true;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (ps->err == NULL || ps->errlen == 0)
        return;
    if (line > 0)
        snprintf(ps->err, ps->errlen, "%s:%u: %s", ps->name, line, msg);
    else
        snprintf(ps->err, ps->errlen, "%s: %s", ps->name, msg);
}

static void add_warning(struct parse *ps, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_warning(struct parse *ps, unsigned line, const char *fmt, ...)
{
    struct cfg *cfg = ps->cfg;
    va_list ap;

    if (cfg->warning_count == CFG_WARNINGS_MAX)
        return;
    char *slot = cfg->warnings[cfg->warning_count++];
    int n = snprintf(slot, CFG_WARNING_MAX_BYTES, "%s:%u: ", ps->name, line);
    if (n < 0 || n >= CFG_WARNING_MAX_BYTES)
        return; /* a name this long leaves no room: the cut prefix is all we can say */
    va_start(ap, fmt);
    vsnprintf(slot + n, CFG_WARNING_MAX_BYTES - (size_t)n, fmt, ap);
    va_end(ap);
}

/* inih calls this for each "key = value" line, right after our reader returned that line. */
static int ini_handler_cb(void *user, const char *ini_section, const char *key, const char *value)
{
    struct parse *ps = user;
    const struct param *p;
    size_t index;
    char reason[256];
    char kbuf[QUOTE_MAX_BYTES + 4], vbuf[QUOTE_MAX_BYTES + 4];

    (void)ini_section; /* ours is ps->section, checked by the reader */
    if (ps->failed)
        return 0;
    if (key[0] == '\0') {
        fail(ps, ps->line, "syntax error");
        return 0;
    }
    if (ps->section == NULL) {
        fail(ps, ps->line, "key \"%s\" outside any [section]", quote_cut(key, kbuf));
        return 0;
    }
    p = cfg_param_find(ps->section, key, &index);
    if (p == NULL) {
        fail(ps, ps->line, "unknown key \"%s\" in [%s]", quote_cut(key, kbuf), ps->section);
        return 0;
    }
    if (ps->set_line[index] != 0) {
        fail(ps, ps->line, "duplicate key \"%s\" in [%s] (first set on line %u)", key, ps->section,
             ps->set_line[index]);
        return 0;
    }
    /* inih takes "key =#x" as the value "#x" (a comment needs a blank before it), but cfg_print
     * writes "key = #x", which reads back as a comment: refuse what cannot be written back. */
    if (value[0] == ';' || value[0] == '#') {
        fail(ps, ps->line,
             "bad value \"%s\" for %s in [%s]: a value cannot start with ';' or '#' (written "
             "back, it would read as a comment)",
             quote_cut(value, vbuf), key, ps->section);
        return 0;
    }
    if (cfg_param_set(ps->cfg, p, ps->base_dir, value, reason, sizeof(reason)) < 0) {
        fail(ps, ps->line, "bad value \"%s\" for %s in [%s]: %s", quote_cut(value, vbuf), key,
             ps->section, reason);
        return 0;
    }
    ps->set_line[index] = ps->line;
    if (p->type == P_UINT && *(const unsigned *)cfg_cfield(ps->cfg, p) < p->warn_below)
        add_warning(ps, ps->line, "%s = %s in [%s] %s", key, value, ps->section, p->warn_text);
    /* A switch that must not stay on by mistake (server.faults) warns whenever it is on. */
    if (p->type == P_BOOL && p->warn_text != NULL && *(const bool *)cfg_cfield(ps->cfg, p))
        add_warning(ps, ps->line, "%s = %s in [%s] %s", key, value, ps->section, p->warn_text);
    return 1;
}

static int src_getc(struct parse *ps)
{
    if (ps->fp != NULL) {
        int c = getc(ps->fp);
        if (c == EOF && ferror(ps->fp))
            ps->read_errno = errno != 0 ? errno : EIO;
        return c;
    }
    if (*ps->text == '\0')
        return EOF;
    return (unsigned char)*ps->text++;
}

/* Checks a "[name]" line (s points at '['); sets ps->section or fails. */
static void check_section_line(struct parse *ps, const char *s)
{
    const char *close = strchr(s, ']');
    const char *after;
    char name[64];
    size_t n;

    if (close == NULL) {
        fail(ps, ps->line, "syntax error");
        return;
    }
    for (after = close + 1; cfg_is_blank(*after) || *after == '\n'; after++)
        ;
    if (*after != '\0' && *after != ';' && *after != '#') {
        fail(ps, ps->line, "syntax error");
        return;
    }
    s++;
    while (s < close && cfg_is_blank(*s))
        s++;
    while (close > s && cfg_is_blank(close[-1]))
        close--;
    n = (size_t)(close - s);
    if (n >= sizeof(name))
        n = sizeof(name) - 1; /* only for the message: no known name is this long */
    memcpy(name, s, n);
    name[n] = '\0';
    ps->section = cfg_section_find(name);
    if (ps->section == NULL)
        fail(ps, ps->line, "unknown section [%s]", name);
}

/*
 * inih's fgets-like reader. Hands out one whole line per call, and is where line numbers,
 * line length, NUL bytes and section headers are checked (inih would cut a long line, stop at
 * a NUL, and never tell us about a header). Returning NULL ends the parse: at end of input,
 * and after the first error so that a later line cannot replace it.
 */
static char *ini_reader_cb(char *buf, int num, void *stream)
{
    struct parse *ps = stream;
    size_t cap = (size_t)num - 2; /* room for '\n' and NUL */
    size_t n = 0, len = 0;
    bool any = false, nul = false, cr = false;
    int c;

    if (ps->failed)
        return NULL;
    if (num < CFG_LINE_MAX_BYTES + 3) {
        fail(ps, 0, "internal error: inih line buffer of %d bytes", num);
        return NULL;
    }
    while ((c = src_getc(ps)) != EOF) {
        any = true;
        if (c == '\n')
            break;
        if (c == '\0')
            nul = true;
        /* A CR counts as part of the line until we know it ends it (CRLF). */
        if (cr)
            len++;
        cr = c == '\r';
        if (!cr)
            len++;
        if (n < cap)
            buf[n++] = (char)c;
    }
    if (ps->read_errno != 0) {
        fail(ps, 0, "cannot read: %s", strerror(ps->read_errno));
        return NULL;
    }
    if (!any)
        return NULL;
    ps->line++;
    if (len > CFG_LINE_MAX_BYTES) {
        fail(ps, ps->line, "line too long (limit %d bytes)", CFG_LINE_MAX_BYTES);
        return NULL;
    }
    if (nul) {
        fail(ps, ps->line, "syntax error");
        return NULL;
    }
    buf[n++] = '\n';
    buf[n] = '\0';

    /* A UTF-8 byte order mark before the first line is allowed and dropped. */
    if (ps->line == 1 && strncmp(buf, "\xEF\xBB\xBF", 3) == 0)
        memmove(buf, buf + 3, n - 3 + 1);

    const char *s = buf;
    while (cfg_is_blank(*s))
        s++;
    if (*s == '\n' || *s == ';' || *s == '#')
        return buf;
    if (*s == '[') {
        check_section_line(ps, s);
        return ps->failed ? NULL : buf;
    }
    /* "key: value" is inih's concession to Python; we keep one syntax. */
    const char *eq = strchr(s, '=');
    const char *colon = strchr(s, ':');
    if (eq == NULL || (colon != NULL && colon < eq) || eq == s) {
        fail(ps, ps->line, "syntax error");
        return NULL;
    }
    return buf;
}

/* inih's options are process-wide; set ours for one parse and put the old ones back. */
struct ini_options {
    bool allow_multiline, allow_bom, allow_inline_comments, stop_on_first_error, allow_no_value;
    bool use_stack;
    int max_line;
    char *start_comment_prefixes, *inline_comment_prefixes;
};

static void ini_options_save(struct ini_options *o)
{
    o->allow_multiline = ini_allow_multiline;
    o->allow_bom = ini_allow_bom;
    o->allow_inline_comments = ini_allow_inline_comments;
    o->stop_on_first_error = ini_stop_on_first_error;
    o->allow_no_value = ini_allow_no_value;
    o->use_stack = ini_use_stack;
    o->max_line = ini_max_line;
    o->start_comment_prefixes = ini_start_comment_prefixes;
    o->inline_comment_prefixes = ini_inline_comment_prefixes;
}

static void ini_options_restore(const struct ini_options *o)
{
    ini_allow_multiline = o->allow_multiline;
    ini_allow_bom = o->allow_bom;
    ini_allow_inline_comments = o->allow_inline_comments;
    ini_stop_on_first_error = o->stop_on_first_error;
    ini_allow_no_value = o->allow_no_value;
    ini_use_stack = o->use_stack;
    ini_max_line = o->max_line;
    ini_start_comment_prefixes = o->start_comment_prefixes;
    ini_inline_comment_prefixes = o->inline_comment_prefixes;
}

static void ini_options_ours(void)
{
    static char comment_prefixes[] = ";#";

    ini_allow_multiline = false; /* "key = a" + "  b" would silently be "a\nb" */
    ini_allow_bom = false;       /* the reader drops it */
    ini_allow_inline_comments = true;
    ini_inline_comment_prefixes = comment_prefixes;
    ini_start_comment_prefixes = comment_prefixes;
    ini_stop_on_first_error = true;
    ini_allow_no_value = false;
    /* The stack buffer is exactly ini_max_line bytes: line, CR LF and NUL (ini.h). */
    ini_use_stack = true;
    ini_max_line = CFG_LINE_MAX_BYTES + 3;
}

static int apply_defaults(struct parse *ps)
{
    char reason[256];

    for (size_t i = 0; i < cfg_param_count; i++) {
        if (cfg_param_set(ps->cfg, &cfg_params[i], ps->base_dir, cfg_params[i].default_text, reason,
                          sizeof(reason)) < 0) {
            fail(ps, 0, "default of %s in [%s]: %s", cfg_params[i].key, cfg_params[i].section,
                 reason);
            return -1;
        }
    }
    return 0;
}

/* Keys given as a word that stands for a value derived from other keys. */
static void derive_values(struct parse *ps)
{
    struct cfg *cfg = ps->cfg;

    if (cfg->smtp.min_free_space_bytes == CFG_SIZE_DERIVED)
        cfg->smtp.min_free_space_bytes = 2 * cfg->smtp.max_message_size_bytes;
}

/* Checks that involve more than one key. */
static void check_cross(struct parse *ps)
{
    const struct cfg *cfg = ps->cfg;

    if ((cfg->tls.certificate[0] == '\0') != (cfg->tls.key[0] == '\0')) {
        fail(ps, 0, "[tls] certificate and key must be set together");
        return;
    }
    /* Smarthost AUTH needs both halves, and a smarthost to send them to. */
    if ((cfg->relay.smarthost_user[0] == '\0') != (cfg->relay.smarthost_password_file[0] == '\0')) {
        fail(ps, 0, "[relay] smarthost_user and smarthost_password_file must be set together");
        return;
    }
    if (cfg->relay.smarthost_user[0] != '\0' && cfg->relay.smarthost.host[0] == '\0') {
        fail(ps, 0, "[relay] smarthost_user is set but smarthost is not");
        return;
    }
    if (cfg->smtp.hard_error_limit < cfg->smtp.soft_error_limit) {
        fail(ps, 0, "[smtp] hard_error_limit (%u) must be at least soft_error_limit (%u)",
             cfg->smtp.hard_error_limit, cfg->smtp.soft_error_limit);
        return;
    }
    /* A listener that waits for a PROXY header nobody may send would refuse every client. */
    for (size_t i = 0; i < cfg_param_count && cfg->server.proxy_from.count == 0; i++) {
        if (cfg_params[i].type != P_LISTEN)
            continue;
        const struct cfg_listen_list *a = cfg_cfield(cfg, &cfg_params[i]);
        for (size_t x = 0; x < a->count; x++) {
            if (!a->addrs[x].proxy)
                continue;
            char text[96];
            cfg_listen_format(&a->addrs[x], text, sizeof(text));
            fail(ps, 0, "[%s] %s: %s is marked proxy but [server] proxy_from is empty",
                 cfg_params[i].section, cfg_params[i].key, text);
            return;
        }
    }
    /* The same address:port on two listeners would fail at bind time; say it now. */
    for (size_t i = 0; i < cfg_param_count; i++) {
        if (cfg_params[i].type != P_LISTEN)
            continue;
        const struct cfg_listen_list *a = cfg_cfield(cfg, &cfg_params[i]);
        for (size_t j = i + 1; j < cfg_param_count; j++) {
            if (cfg_params[j].type != P_LISTEN)
                continue;
            const struct cfg_listen_list *b = cfg_cfield(cfg, &cfg_params[j]);
            for (size_t x = 0; x < a->count; x++) {
                for (size_t y = 0; y < b->count; y++) {
                    if (!cfg_listen_equal(&a->addrs[x], &b->addrs[y]))
                        continue;
                    char text[96];
                    cfg_listen_format(&a->addrs[x], text, sizeof(text));
                    fail(ps, 0, "%s is in both [%s] %s and [%s] %s", text, cfg_params[i].section,
                         cfg_params[i].key, cfg_params[j].section, cfg_params[j].key);
                    return;
                }
            }
        }
    }
}

/* Defaults, then the source in ps (if any), then the cross checks. */
static int load(struct parse *ps)
{
    struct cfg *cfg = ps->cfg;

    memset(cfg, 0, sizeof(*cfg));
    if (ps->err != NULL && ps->errlen > 0)
        ps->err[0] = '\0';
    if (apply_defaults(ps) == 0 && (ps->fp != NULL || ps->text != NULL)) {
        struct ini_options saved;
        ini_options_save(&saved);
        ini_options_ours();
        int r = ini_parse_stream(ini_reader_cb, ps, ini_handler_cb, ps);
        ini_options_restore(&saved);
        if (r > 0)
            fail(ps, (unsigned)r, "syntax error"); /* one inih found; ignored if we have one */
        else if (r < 0)
            fail(ps, 0, "out of memory");
    }
    if (!ps->failed)
        derive_values(ps);
    if (!ps->failed)
        check_cross(ps);
    if (ps->failed) {
        cfg_free(cfg);
        memset(cfg, 0, sizeof(*cfg));
        return -1;
    }
    return 0;
}

int cfg_init_defaults(struct cfg *cfg)
{
    struct parse ps;

    memset(&ps, 0, sizeof(ps));
    ps.cfg = cfg;
    ps.name = "(defaults)";
    return load(&ps);
}

int cfg_load_string(struct cfg *cfg, const char *text, const char *name_for_errors,
                    const char *base_dir, char *err, size_t errlen)
{
    struct parse ps;

    memset(&ps, 0, sizeof(ps));
    ps.cfg = cfg;
    ps.name = name_for_errors != NULL ? name_for_errors : "(string)";
    ps.base_dir = base_dir;
    ps.text = text != NULL ? text : "";
    ps.err = err;
    ps.errlen = errlen;
    return load(&ps);
}

int cfg_load(struct cfg *cfg, const char *path, char *err, size_t errlen)
{
    struct parse ps;
    char *copy = NULL;
    char *base_dir = NULL;
    int rc = -1;

    memset(&ps, 0, sizeof(ps));
    memset(cfg, 0, sizeof(*cfg));
    ps.cfg = cfg;
    ps.name = path;
    ps.err = err;
    ps.errlen = errlen;
    ps.fp = fopen(path, "r");
    if (ps.fp == NULL) {
        fail(&ps, 0, "cannot open: %s", strerror(errno));
        return -1;
    }
    /* Resolve the folder now: relative paths must not depend on a later chdir. */
    copy = strdup(path);
    if (copy == NULL) {
        fail(&ps, 0, "out of memory");
        goto out;
    }
    base_dir = realpath(dirname(copy), NULL);
    if (base_dir == NULL) {
        fail(&ps, 0, "cannot open: %s", strerror(errno));
        goto out;
    }
    ps.base_dir = base_dir;
    rc = load(&ps);
out:
    if (fclose(ps.fp) != 0 && rc == 0) {
        fail(&ps, 0, "cannot read: %s", strerror(errno));
        cfg_free(cfg);
        memset(cfg, 0, sizeof(*cfg));
        rc = -1;
    }
    free(base_dir);
    free(copy);
    return rc;
}

void cfg_free(struct cfg *cfg)
{
    for (size_t i = 0; i < cfg_param_count; i++) {
        const struct param *p = &cfg_params[i];
        if (p->type == P_HOSTNAME || p->type == P_USER || p->type == P_SASLNAME ||
            p->type == P_PATH || p->type == P_DATABASE || p->type == P_MILTERS) {
            char **slot = cfg_field(cfg, p);
            free(*slot);
            *slot = NULL;
        }
    }
}

bool cfg_has_tls(const struct cfg *cfg)
{
    return cfg->tls.certificate != NULL && cfg->tls.certificate[0] != '\0' &&
           cfg->tls.key != NULL && cfg->tls.key[0] != '\0';
}
