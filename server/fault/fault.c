/*
 * fault.c - see fault.h: the process's fault rule cache, its reload, and the hooks' actions.
 *
 * Threads: the cache is static (no heap, nothing to free at exit) and every access holds
 * cache.lock, since several loops may run sessions. A reload is a job on the calling loop's
 * reader (storage/reader.h): inline it is done before the call returns, as a plain read was;
 * with reader threads it completes later on the loop. The one that matters is the reload at a
 * connection's start, which makes a rule added just before apply to that connection: until it
 * is back, the first point (the connect) is held as a delay holds it, and then decided. The
 * once-a-second rechecks of long sessions do not wait: the hooks use the rules they have, and
 * the new ones from when the read is back. Everything else here (the per-connection struct, its
 * timer) belongs to the connection's loop thread.
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
#include "common/util.h"
#include "server/net/conn.h"
#include "storage/faults.h"
#include "storage/reader.h"
#include "storage/store.h"

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
    int bypass;                /* the point resumed now: its rules are skipped once; -1 none */
    struct reload_job *reload; /* out with the reader; it points back here until we go */
    bool loading;              /* the start's reload is out: the first point waits for it */
    bool held_for_load;        /* held_point (and held) wait for that reload, not a timer */
};

/*
 * A reload: a reader job that reads the table's version and, when it changed, its rules into
 * its own scratch (no lock is held while reading: the read may be a network round trip on a
 * reader thread); its done swaps them into the cache under the lock, keeping the counts of the
 * rules that stay. It belongs to itself: it is freed in its done, and the fault_conn that asked
 * for it may be gone by then (f is NULL).
 */
struct reload_job {
    struct reader_job job;
    struct fault_conn *f; /* the asker, or NULL once it was freed */
    bool forced;          /* the connection's start: its first point waits for it */
    uint64_t sid;
    int64_t known_max_id, known_count; /* the version the cache had at submit; -1: none */
    int64_t max_id, count;
    bool changed; /* the rules were read */
    size_t n, skipped;
    char error[256];
    struct cached_rule rules[FAULT_RULES_MAX];
};

static int load_row(void *arg, int64_t id, const struct fault_spec *spec)
{
    struct reload_job *rl = arg;
    if (rl->n == FAULT_RULES_MAX) {
        rl->skipped++;
        return 0;
    }
    struct cached_rule *cr = &rl->rules[rl->n];
    char err[256];
    if (fault_rule_build(spec, &cr->rule, err, sizeof(err)) != 0) {
        log_warn("fault", rl->sid, "event=fault-rule-invalid rule=%" PRId64 " error=\"%s\"", id,
                 err);
        return 0;
    }
    cr->rule.id = id;
    cr->seen = cr->fired = 0;
    rl->n++;
    return 0;
}

/* On a reader thread, or inline on the loop: the job's own fields only. */
static int reload_run(struct store *st, struct reader_job *job)
{
    struct reload_job *rl = container_of(job, struct reload_job, job);
    int rc = store_fault_version(st, &rl->max_id, &rl->count);
    if (rc == STORE_OK && (rl->max_id != rl->known_max_id || rl->count != rl->known_count)) {
        rl->changed = true;
        rc = store_fault_list(st, load_row, rl);
    }
    if (rc != STORE_OK)
        snprintf(rl->error, sizeof(rl->error), "%s", store_errmsg(st));
    return rc;
}

static void forced_reload_back(struct fault_conn *f);

/* The reload is over, on the loop: into the cache, then the held first point if any. */
static void reload_finish(struct reload_job *rl, int status)
{
    struct fault_conn *f = rl->f;
    if (status != STORE_OK) {
        log_warn("fault", rl->sid, "event=fault-reload-failed error=\"%s\"", rl->error);
    } else if (rl->changed) {
        pthread_mutex_lock(&cache.lock);
        for (size_t j = 0; j < rl->n; j++)
            for (size_t i = 0; i < cache.n; i++)
                if (cache.rules[i].rule.id == rl->rules[j].rule.id) {
                    rl->rules[j].seen = cache.rules[i].seen;
                    rl->rules[j].fired = cache.rules[i].fired;
                }
        memcpy(cache.rules, rl->rules, rl->n * sizeof(cache.rules[0]));
        cache.n = rl->n;
        cache.max_id = rl->max_id;
        cache.count = rl->count;
        cache.loaded = true;
        pthread_mutex_unlock(&cache.lock);
        log_info("fault", rl->sid, "event=faults-loaded rules=%zu ignored=%zu", rl->n, rl->skipped);
    }
    bool forced = rl->forced;
    free(rl);
    if (f != NULL) {
        f->reload = NULL;
        if (forced)
            forced_reload_back(f);
    }
}

static void reload_done(struct reader_job *job, int status)
{
    reload_finish(container_of(job, struct reload_job, job), status);
}

/* Starts a reload for f unless one is out. force: the connection's start (every time);
 * otherwise at most once every FAULT_RECHECK_MS, process-wide. */
static void reload(struct fault_conn *f, bool force)
{
    if (f->reload != NULL)
        return;
    uint64_t now = uv_now(conn_loop(f->c));
    pthread_mutex_lock(&cache.lock);
    bool due = force || !cache.loaded || now - cache.checked_ms >= FAULT_RECHECK_MS;
    if (due)
        cache.checked_ms = now;
    int64_t max_id = cache.loaded ? cache.max_id : -1;
    int64_t count = cache.loaded ? cache.count : -1;
    pthread_mutex_unlock(&cache.lock);
    if (!due)
        return;
    struct reload_job *rl = calloc(1, sizeof(*rl));
    if (rl == NULL) {
        log_warn("fault", conn_sid(f->c), "event=fault-reload-failed error=\"out of memory\"");
        return;
    }
    rl->job.run = reload_run;
    rl->job.done = reload_done;
    rl->f = f;
    rl->forced = force;
    rl->sid = conn_sid(f->c);
    rl->known_max_id = max_id;
    rl->known_count = count;
    int status;
    if (reader_submit(((struct app *)conn_app(f->c))->reader, &rl->job, &status) == READER_PENDING)
        f->reload = rl;
    else
        reload_finish(rl, status);
}

/* The first rule that fires at p for facts, copied into *out; false when none. */
static bool decide(struct fault_conn *f, enum fault_point p, const struct fault_facts *facts,
                   struct fault_rule *out)
{
    bool found = false;
    reload(f, false);
    pthread_mutex_lock(&cache.lock);
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
    f->loading = true;
    reload(f, true);
    if (f->reload == NULL)
        f->loading = false; /* done already (inline), or could not start: decide with what is */
    return f;
}

void fault_conn_free(struct fault_conn **fp)
{
    struct fault_conn *f = *fp;
    if (f == NULL)
        return;
    *fp = NULL;
    f->closed = true;
    if (f->reload != NULL)
        f->reload->f = NULL; /* it finishes on its own and frees itself */
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

/* Copies line (NULL: none) for keeping while p is held: 0, or -1 when out of memory. */
static int copy_line(const char *line, size_t len, char **out)
{
    *out = NULL;
    if (line == NULL)
        return 0;
    *out = malloc(len + 1);
    if (*out == NULL)
        return -1;
    memcpy(*out, line, len);
    (*out)[len] = '\0';
    return 0;
}

/* Keeps p and its copied line (owned from here on) and stops reading until it is let go. */
static enum fault_verdict hold(struct fault_conn *f, enum fault_point p, char *copy, size_t len)
{
    free(f->held);
    f->held = copy;
    f->held_len = len;
    f->held_point = p;
    conn_pause_reading(f->c);
    return FAULT_HELD;
}

static enum fault_verdict delay(struct fault_conn *f, enum fault_point p, uint32_t ms,
                                const char *line, size_t len)
{
    char *copy;
    if (copy_line(line, len, &copy) != 0)
        return FAULT_PASS;
    if (!f->timer_open || uv_timer_start(&f->timer, on_delay_done, ms, 0) != 0) {
        free(copy);
        return FAULT_PASS;
    }
    return hold(f, p, copy, len);
}

/* Keeps p (and its line) until the start's reload is back (forced_reload_back). */
static enum fault_verdict hold_for_load(struct fault_conn *f, enum fault_point p, const char *line,
                                        size_t len)
{
    char *copy;
    if (copy_line(line, len, &copy) != 0)
        return FAULT_PASS;
    f->held_for_load = true;
    return hold(f, p, copy, len);
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
    /* Held only with a timer: its close callback is what keeps f's memory past a resume that
     * closes the session (fault_conn_free). Without one, decide with the rules there are. */
    if (f->loading && f->timer_open)
        return hold_for_load(f, p, line, len);
    struct fault_rule r;
    if (!decide(f, p, facts, &r))
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

/* The start's reload is back: the point it held is decided now. A point with a line goes back
 * to the session as if just received, so its hook runs again; one without (the connect) is
 * decided here, and passed on to the session only when nothing fired. */
static void forced_reload_back(struct fault_conn *f)
{
    f->loading = false;
    if (!f->held_for_load || f->closed)
        return;
    f->held_for_load = false;
    enum fault_point p = f->held_point;
    char *line = f->held;
    size_t len = f->held_len;
    f->held = NULL;
    conn_resume_reading(f->c);
    if (line != NULL) {
        f->resume(f->session, p, line, len);
        free(line);
        return;
    }
    struct fault_facts facts = {.client = conn_peer_ip(f->c)};
    if (run(f, p, &facts, NULL, 0, NULL) != FAULT_PASS)
        return;
    f->bypass = (int)p;
    f->resume(f->session, p, NULL, 0);
    f->bypass = -1;
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
