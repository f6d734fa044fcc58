/*
 * fault.c - see fault.h: the process's fault rule cache, its reload, and the hooks' actions.
 *
 * Threads: the cache is static (no heap, nothing to free at exit) and every access holds
 * cache.lock, since several loops may run sessions. A reload reads through the calling loop's
 * own read connection (struct app's reads), which only that thread uses. Everything else here
 * (the per-connection struct, its timer) belongs to the connection's loop thread.
 *
 * Ownership: a struct fault_conn is the session's (fault_conn_new / fault_conn_free); its memory
 * goes in its timer's close callback, so a timer that fired and resumed a session that then
 * closed is still safe to touch until the callback returns. The held line is owned by the struct.
 */
#include "server/fault/fault.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/config.h"
#include "common/log.h"
#include "common/pure/smtp_parse.h"
#include "server/app.h"
#include "server/net/conn.h"
#include "storage/faults.h"

/* Rules the cache holds; more are ignored with a warning. A test arms a handful. */
#define FAULT_RULES_MAX 64
/* How often a long session looks for changed rules, at most. */
#define FAULT_RECHECK_MS 1000

struct cached_rule {
    struct fault_rule rule;
    uint64_t seen;  /* times it matched */
    uint64_t fired; /* times it fired */
};

static struct {
    pthread_mutex_t lock;
    bool loaded;
    int64_t max_id, count; /* the table version loaded */
    uint64_t checked_ms;   /* uv_now of the last version check */
    size_t n;
    struct cached_rule rules[FAULT_RULES_MAX];
    struct cached_rule next[FAULT_RULES_MAX]; /* a reload's scratch */
} cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

struct fault_conn {
    struct conn *c; /* borrowed; valid until fault_conn_free */
    fault_resume_fn resume;
    void *session; /* borrowed */
    uv_timer_t timer;
    bool timer_open;
    bool closed;
    enum fault_point held_point; /* the delayed point */
    char *held;                  /* owned: its line, or NULL */
    size_t held_len;
    int bypass; /* the point resumed now: its rules are skipped once; -1 none */
};

struct load_ctx {
    size_t n;
    size_t skipped;
    uint64_t sid;
};

static int load_row(void *arg, int64_t id, const struct fault_spec *spec)
{
    struct load_ctx *lc = arg;
    if (lc->n == FAULT_RULES_MAX) {
        lc->skipped++;
        return 0;
    }
    struct cached_rule *cr = &cache.next[lc->n];
    char err[256];
    if (fault_rule_build(spec, &cr->rule, err, sizeof(err)) != 0) {
        log_warn("fault", lc->sid, "event=fault-rule-invalid rule=%" PRId64 " error=\"%s\"", id,
                 err);
        return 0;
    }
    cr->rule.id = id;
    cr->seen = cr->fired = 0;
    for (size_t i = 0; i < cache.n; i++) {
        if (cache.rules[i].rule.id == id) {
            cr->seen = cache.rules[i].seen;
            cr->fired = cache.rules[i].fired;
        }
    }
    lc->n++;
    return 0;
}

/* Under cache.lock: reloads when the table changed; force skips the once-a-second limit. */
static void reload(struct conn *c, bool force)
{
    uint64_t now = uv_now(conn_loop(c));
    if (!force && cache.loaded && now - cache.checked_ms < FAULT_RECHECK_MS)
        return;
    cache.checked_ms = now;
    struct store *reads = ((struct app *)conn_app(c))->reads;
    int64_t max_id = 0, count = 0;
    if (store_fault_version(reads, &max_id, &count) != STORE_OK) {
        log_warn("fault", conn_sid(c), "event=fault-reload-failed error=\"%s\"",
                 store_errmsg(reads));
        return;
    }
    if (cache.loaded && max_id == cache.max_id && count == cache.count)
        return;
    struct load_ctx lc = {0, 0, conn_sid(c)};
    if (store_fault_list(reads, load_row, &lc) != STORE_OK) {
        log_warn("fault", conn_sid(c), "event=fault-reload-failed error=\"%s\"",
                 store_errmsg(reads));
        return;
    }
    memcpy(cache.rules, cache.next, lc.n * sizeof(cache.rules[0]));
    cache.n = lc.n;
    cache.max_id = max_id;
    cache.count = count;
    cache.loaded = true;
    log_info("fault", conn_sid(c), "event=faults-loaded rules=%zu ignored=%zu", lc.n, lc.skipped);
}

/* The first rule that fires at p for facts, copied into *out; false when none. */
static bool decide(struct conn *c, enum fault_point p, const struct fault_facts *facts,
                   struct fault_rule *out)
{
    bool found = false;
    pthread_mutex_lock(&cache.lock);
    reload(c, false);
    for (size_t i = 0; i < cache.n && !found; i++) {
        struct cached_rule *cr = &cache.rules[i];
        if (!fault_rule_matches(&cr->rule, p, facts))
            continue;
        if (fault_rule_fires(&cr->rule, cr->seen++, cr->fired)) {
            cr->fired++;
            *out = cr->rule;
            found = true;
        }
    }
    pthread_mutex_unlock(&cache.lock);
    return found;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct fault_conn *f = h->data;
    free(f->held);
    free(f);
}

struct fault_conn *fault_conn_new(struct conn *c, fault_resume_fn resume, void *session)
{
    if (!conn_cfg(c)->server.faults)
        return NULL;
    struct fault_conn *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        log_error("fault", conn_sid(c), "event=fault-unavailable error=\"out of memory\"");
        return NULL;
    }
    f->c = c;
    f->resume = resume;
    f->session = session;
    f->bypass = -1;
    if (uv_timer_init(conn_loop(c), &f->timer) == 0) {
        f->timer.data = f;
        f->timer_open = true;
    }
    pthread_mutex_lock(&cache.lock);
    reload(c, true);
    pthread_mutex_unlock(&cache.lock);
    return f;
}

void fault_conn_free(struct fault_conn **fp)
{
    struct fault_conn *f = *fp;
    if (f == NULL)
        return;
    *fp = NULL;
    f->closed = true;
    if (f->timer_open) {
        uv_close((uv_handle_t *)&f->timer, on_timer_closed);
        return;
    }
    free(f->held);
    free(f);
}

static void on_delay_done(uv_timer_t *t)
{
    struct fault_conn *f = t->data;
    if (f->closed)
        return;
    char *line = f->held;
    size_t len = f->held_len;
    f->held = NULL;
    f->bypass = (int)f->held_point;
    conn_resume_reading(f->c);
    /* The session may close inside; f stays allocated until the timer's close callback. */
    f->resume(f->session, f->held_point, line, len);
    f->bypass = -1;
    free(line);
}

static enum fault_verdict delay(struct fault_conn *f, enum fault_point p, uint32_t ms,
                                const char *line, size_t len)
{
    char *copy = NULL;
    if (line != NULL) {
        copy = malloc(len + 1);
        if (copy == NULL)
            return FAULT_PASS;
        memcpy(copy, line, len);
        copy[len] = '\0';
    }
    if (!f->timer_open || uv_timer_start(&f->timer, on_delay_done, ms, 0) != 0) {
        free(copy);
        return FAULT_PASS;
    }
    free(f->held);
    f->held = copy;
    f->held_len = len;
    f->held_point = p;
    conn_pause_reading(f->c);
    return FAULT_HELD;
}

/* Decides at p and carries out what fired. */
static enum fault_verdict run(struct fault_conn *f, enum fault_point p,
                              const struct fault_facts *facts, const char *line, size_t len,
                              struct fault_cut *cut)
{
    if (f == NULL || f->closed)
        return FAULT_PASS;
    if (f->bypass == (int)p) {
        f->bypass = -1;
        return FAULT_PASS;
    }
    struct fault_rule r;
    if (!decide(f->c, p, facts, &r))
        return FAULT_PASS;
    log_info(fault_point_is_pop3(p) ? "pop3" : "smtp", conn_sid(f->c),
             "event=fault rule=%" PRId64 " point=%s action=%s", r.id, fault_point_name(p),
             fault_action_name(r.action));
    switch (r.action) {
    case FAULT_REPLY:
        conn_reply(f->c, "%s\r\n", r.reply);
        /* RFC 5321 3.8: a 421 says the server closes the channel, so it does. */
        if (strncmp(r.reply, "421", 3) == 0 && (r.reply[3] == '\0' || r.reply[3] == ' '))
            conn_close(f->c, "fault-421");
        return FAULT_TAKEN;
    case FAULT_DELAY:
        return delay(f, p, r.delay_ms, line, len);
    case FAULT_DROP:
        conn_close(f->c, "fault-drop");
        return FAULT_TAKEN;
    case FAULT_STALL:
        /* Part of a line and then silence: the client's reader waits for the rest. */
        conn_write(f->c, r.reply, fault_stall_bytes(r.reply));
        conn_pause_reading(f->c);
        return FAULT_TAKEN;
    case FAULT_DROP_BODY:
        if (cut != NULL)
            *cut = (struct fault_cut){true, r.after_bytes};
        return FAULT_PASS;
    case FAULT_ACTION_COUNT:
        break;
    }
    return FAULT_PASS;
}

enum fault_verdict fault_at(struct fault_conn *f, enum fault_point p,
                            const struct fault_facts *facts)
{
    if (f == NULL)
        return FAULT_PASS;
    struct fault_facts all = *facts;
    all.client = conn_peer_ip(f->c);
    return run(f, p, &all, NULL, 0, NULL);
}

static const char *known(const char *s)
{
    return s != NULL && s[0] != '\0' ? s : NULL;
}

/* The address in a MAIL or RCPT argument, as the transaction would write it; "" if none. */
static void path_of(const char *args, const char *keyword, char *out, size_t outlen)
{
    struct address a;
    enum address_path_kind kind;
    const char *params = NULL;
    out[0] = '\0';
    if (smtp_parse_path_arg(args, keyword, &a, &kind, &params, NULL) == 0)
        address_format(&a, out, outlen);
}

enum fault_verdict fault_smtp_command(struct fault_conn *f, const char *verb, const char *args,
                                      const char *line, size_t len, const char *user,
                                      const char *sender)
{
    enum fault_point p;
    if (f == NULL || fault_smtp_verb_point(verb, &p) != 0)
        return FAULT_PASS;
    char path[ADDRESS_STRLEN] = "";
    if (p == FAULT_SMTP_MAIL || p == FAULT_SMTP_RCPT)
        path_of(args, p == FAULT_SMTP_MAIL ? "FROM:" : "TO:", path, sizeof(path));
    struct fault_facts facts = {
        .client = conn_peer_ip(f->c),
        .user = known(user),
        .sender = p == FAULT_SMTP_MAIL ? known(path) : known(sender),
        .recipient = p == FAULT_SMTP_RCPT ? known(path) : NULL,
    };
    return run(f, p, &facts, line, len, NULL);
}

enum fault_verdict fault_pop3_command(struct fault_conn *f, const char *verb, const char *line,
                                      size_t len, const char *user, struct fault_cut *cut)
{
    enum fault_point p;
    if (f == NULL || fault_pop3_verb_point(verb, &p) != 0)
        return FAULT_PASS;
    struct fault_facts facts = {.client = conn_peer_ip(f->c), .user = known(user)};
    /* RETR, TOP and DELE name a message first; a number that does not parse names none. */
    const char *arg = strchr(line, ' ');
    if (arg != NULL && (p == FAULT_POP3_RETR || p == FAULT_POP3_DELE)) {
        char *end = NULL;
        unsigned long long n = strtoull(arg + 1, &end, 10);
        if (end != arg + 1 && (*end == '\0' || *end == ' ') && arg[1] != '-' && arg[1] != '+')
            facts.message = n;
    }
    return run(f, p, &facts, line, len, cut);
}
