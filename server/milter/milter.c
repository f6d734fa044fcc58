/*
 * milter.c - see milter.h. The milters of a session are driven one step at a time: a step is a
 * short list of messages per milter (the macros, then the command; at end of message the
 * headers, end of headers, the body chunks and end of body), sent to the first milter, then the
 * next, each message answered before the next one goes unless the milter negotiated "no reply"
 * for it. One timer covers the one answer awaited at any time.
 *
 * Sockets are plain libuv streams (uv_tcp_t, uv_pipe_t) rather than server/net/conn.c: a milter
 * speaks length-prefixed binary frames on a local socket, and the connection layer's line
 * reader, TLS, transcript and connection limits are all for clients. inet: hosts are numeric
 * addresses ("localhost" is taken as 127.0.0.1): a name would need a resolver on the loop for
 * something an admin writes once.
 *
 * Lifetime: struct milter_session is the SMTP session's (milter_session_free). Each milter's
 * handle and the timer are closed there; the memory goes when the last close callback ran
 * (pending_closes), and a step in flight is forgotten (its done is never called).
 */
#include "server/milter/milter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "server/milter/milter_internal.h"

/* ---- outage log: once when a milter goes down, once when it answers again ---- */

static uv_mutex_t outage_lock;
static uv_once_t outage_once = UV_ONCE_INIT;
static struct {
    char key[MILTER_PATH_MAX + 264];
    bool down;
} outages[2 * MILTER_LIST_MAX];

static void outage_init(void)
{
    if (uv_mutex_init(&outage_lock) != 0)
        abort();
}

/* True when this changes the milter's state (so the change is worth a log line). */
static bool outage_set(const char *key, bool down)
{
    uv_once(&outage_once, outage_init);
    bool changed = false;
    uv_mutex_lock(&outage_lock);
    size_t free_slot = sizeof(outages) / sizeof(outages[0]);
    for (size_t i = 0; i < sizeof(outages) / sizeof(outages[0]); i++) {
        if (strcmp(outages[i].key, key) == 0) {
            changed = outages[i].down != down;
            outages[i].down = down;
            uv_mutex_unlock(&outage_lock);
            return changed;
        }
        if (outages[i].key[0] == '\0' && free_slot == sizeof(outages) / sizeof(outages[0]))
            free_slot = i;
    }
    if (free_slot < sizeof(outages) / sizeof(outages[0]) && down) {
        snprintf(outages[free_slot].key, sizeof(outages[free_slot].key), "%s", key);
        outages[free_slot].down = true;
        changed = true;
    }
    uv_mutex_unlock(&outage_lock);
    return changed;
}

/* ---- verdicts ---- */

static void verdict_set(struct milter_verdict *v, enum milter_verdict_kind k, const char *reply)
{
    v->kind = k;
    snprintf(v->reply, sizeof(v->reply), "%s", reply != NULL ? reply : "");
}

/* The milter could not be asked: default_action decides (milter.h). */
static void milter_failed(struct milter_session *ms, struct milter_conn *m, const char *why)
{
    if (outage_set(m->name, true))
        log_warn("milter", ms->sid, "event=milter-down milter=%s reason=\"%s\" action=%s", m->name,
                 why, ms->cfg->milter.default_action == CFG_MILTER_ACCEPT ? "accept" : "tempfail");
    milter_conn_close(ms, m);
    m->state = MILTER_DEAD;
    if (ms->cfg->milter.default_action == CFG_MILTER_TEMPFAIL)
        ms->tempfail = true;
}

/* ---- the step runner ---- */

static void step_finish(struct milter_session *ms)
{
    milter_timer_stop(ms);
    ms->busy = false;
    milter_done_fn done = ms->done;
    void *ctx = ms->done_ctx;
    ms->done = NULL;
    if (ms->tempfail && ms->verdict.kind == MILTER_V_CONTINUE)
        verdict_set(&ms->verdict, MILTER_V_TEMPFAIL,
                    "451 4.7.1 Service unavailable - try again later");
    if (done != NULL)
        done(ctx, &ms->verdict);
}

/* Sends what is next for the current milter, moving on to the next milter when one is done;
 * returns when an answer is awaited or the step is over. */
void milter_run(struct milter_session *ms)
{
    while (ms->busy && ms->waiting == NULL) {
        if (ms->tempfail) {
            step_finish(ms);
            return;
        }
        if (ms->cur >= ms->n) {
            step_finish(ms);
            return;
        }
        struct milter_conn *m = &ms->m[ms->cur];
        if (m->state == MILTER_DEAD || m->accepted_session ||
            (m->accepted_message && ms->step >= MILTER_STEP_MAIL)) {
            ms->cur++;
            ms->pos = 0;
            continue;
        }
        if (m->state == MILTER_IDLE) {
            if (milter_conn_open(ms, m) != 0) {
                milter_failed(ms, m, "connect failed");
                continue;
            }
            ms->waiting = m;
            milter_timer_start(ms);
            return;
        }
        struct milter_item item;
        int rc = milter_item_make(ms, m, ms->pos, &item);
        if (rc < 0) {
            milter_failed(ms, m, "could not encode a message");
            continue;
        }
        if (rc == 0) { /* this milter has had the whole step */
            if (ms->step == MILTER_STEP_EOM && !m->accepted_message)
                m->in_message = false;
            ms->cur++;
            ms->pos = 0;
            continue;
        }
        ms->pos++;
        if (item.step_sent == false)
            continue;
        if (milter_conn_write(ms, m, item.data, item.len) != 0) {
            milter_failed(ms, m, "write failed");
            continue;
        }
        if (item.answered) {
            ms->waiting = m;
            ms->waiting_step = item.step;
            milter_timer_start(ms);
            return;
        }
    }
}

/* Starts a step; the caller set the step's inputs in ms already. */
static void step_start(struct milter_session *ms, enum milter_step step, milter_done_fn done,
                       void *ctx)
{
    ms->step = step;
    ms->cur = 0;
    ms->pos = 0;
    ms->busy = true;
    ms->done = done;
    ms->done_ctx = ctx;
    verdict_set(&ms->verdict, MILTER_V_CONTINUE, NULL);
    milter_run(ms);
}

/* A REPLYCODE's text as the client's reply: the milter's own words, first line only. */
static void reply_from_code(struct milter_session *ms, const char *text)
{
    size_t len = strcspn(text, "\r\n");
    int code = milter_replycode(text);
    char line[MILTER_REPLY_MAX_BYTES];
    snprintf(line, sizeof(line), "%.*s", (int)len, text);
    if (line[3] == '-')
        line[3] = ' ';
    verdict_set(&ms->verdict, code >= 500 ? MILTER_V_REJECT : MILTER_V_TEMPFAIL, line);
}

static int mod_add(struct milter_session *ms, const struct milter_reply *r)
{
    if (ms->n_mods == ms->cap_mods) {
        size_t cap = ms->cap_mods ? ms->cap_mods * 2 : 8;
        struct milter_mod *p = realloc(ms->mods, cap * sizeof(*p));
        if (p == NULL)
            return -1;
        ms->mods = p;
        ms->cap_mods = cap;
    }
    struct milter_mod *md = &ms->mods[ms->n_mods];
    memset(md, 0, sizeof(*md));
    md->kind = r->kind;
    md->index = r->index;
    const char *value = r->value != NULL ? r->value : r->addr != NULL ? r->addr : r->text;
    if (r->name != NULL && (md->name = strdup(r->name)) == NULL)
        return -1;
    if (value != NULL && (md->value = strdup(value)) == NULL) {
        free(md->name);
        return -1;
    }
    if (r->kind == MILTER_R_REPLBODY) {
        md->body = malloc(r->body_len > 0 ? r->body_len : 1);
        if (md->body == NULL) {
            free(md->name);
            free(md->value);
            return -1;
        }
        memcpy(md->body, r->body, r->body_len);
        md->body_len = r->body_len;
    }
    ms->n_mods++;
    return 0;
}

void milter_mods_clear(struct milter_session *ms)
{
    for (size_t i = 0; i < ms->n_mods; i++) {
        free(ms->mods[i].name);
        free(ms->mods[i].value);
        free(ms->mods[i].body);
    }
    ms->n_mods = 0;
}

/* One reply from the milter being waited for. */
void milter_on_reply(struct milter_session *ms, struct milter_conn *m, uint8_t cmd,
                     const uint8_t *payload, size_t len)
{
    struct milter_reply r;
    if (ms->waiting != m || milter_decode_reply(cmd, payload, len, &r) != 0) {
        milter_failed(ms, m, ms->waiting != m ? "reply out of turn" : "malformed reply");
        goto resume;
    }
    if (m->state == MILTER_NEGOTIATING) {
        if (milter_negotiate(&r, MILTER_ACT_ALL, MILTER_P_OFFER) != 0) {
            milter_failed(ms, m, "option negotiation refused");
            goto resume;
        }
        m->actions = r.actions;
        m->protocol = r.protocol;
        m->state = MILTER_READY;
        if (outage_set(m->name, false))
            log_info("milter", ms->sid, "event=milter-up milter=%s", m->name);
        goto resume;
    }
    if (!milter_reply_allowed(r.kind, ms->waiting_step, m->actions)) {
        milter_failed(ms, m, "reply not allowed at this step");
        goto resume;
    }
    switch (r.kind) {
    case MILTER_R_CONTINUE:
        break;
    case MILTER_R_ACCEPT:
        if (ms->step <= MILTER_STEP_HELO)
            m->accepted_session = true;
        else
            m->accepted_message = true;
        ms->cur++;
        ms->pos = 0;
        break;
    case MILTER_R_REJECT:
        verdict_set(&ms->verdict, MILTER_V_REJECT, "550 5.7.1 Command rejected");
        break;
    case MILTER_R_TEMPFAIL:
        verdict_set(&ms->verdict, MILTER_V_TEMPFAIL,
                    "451 4.7.1 Service unavailable - try again later");
        break;
    case MILTER_R_REPLYCODE:
        reply_from_code(ms, r.text);
        break;
    case MILTER_R_DISCARD:
        verdict_set(&ms->verdict, MILTER_V_DISCARD, NULL);
        break;
    case MILTER_R_SKIP:
        ms->pos = milter_item_skip_body(ms);
        break;
    case MILTER_R_PROGRESS:
        milter_timer_start(ms);
        return; /* still waiting */
    default:    /* a modification or QUARANTINE, at end of message: the verdict follows */
        if (mod_add(ms, &r) != 0) {
            milter_failed(ms, m, "out of memory");
            goto resume;
        }
        return;
    }
    if (ms->verdict.kind != MILTER_V_CONTINUE) {
        char esc[MILTER_REPLY_MAX_BYTES * 2];
        log_info("milter", ms->sid, "event=milter-verdict milter=%s step=%s verdict=%s reply=%s",
                 m->name, milter_step_name(ms->step),
                 ms->verdict.kind == MILTER_V_DISCARD  ? "discard"
                 : ms->verdict.kind == MILTER_V_REJECT ? "reject"
                                                       : "tempfail",
                 log_escape(esc, sizeof(esc), ms->verdict.reply, strlen(ms->verdict.reply)));
        ms->waiting = NULL;
        step_finish(ms);
        return;
    }
resume:
    ms->waiting = NULL;
    milter_timer_stop(ms);
    milter_run(ms);
}

/* The awaited answer did not come in time. */
void milter_on_timeout(struct milter_session *ms)
{
    struct milter_conn *m = ms->waiting;
    if (m == NULL)
        return;
    ms->waiting = NULL;
    milter_failed(ms, m, "timeout");
    milter_run(ms);
}

/* The connection broke or closed while in use. */
void milter_on_error(struct milter_session *ms, struct milter_conn *m, const char *why)
{
    bool awaited = ms->waiting == m;
    milter_failed(ms, m, why);
    if (awaited) {
        ms->waiting = NULL;
        milter_timer_stop(ms);
        milter_run(ms);
    }
}

/* ---- the steps ---- */

void milter_step_connect(struct milter_session *ms, const struct milter_client_info *ci,
                         milter_done_fn done, void *ctx)
{
    snprintf(ms->hostname, sizeof(ms->hostname), "%s", ci->hostname);
    snprintf(ms->daemon, sizeof(ms->daemon), "%s", ci->daemon);
    snprintf(ms->peer_ip, sizeof(ms->peer_ip), "%s", ci->peer_ip);
    snprintf(ms->peer_name, sizeof(ms->peer_name), "%s", ci->peer_name);
    ms->peer_port = ci->peer_port;
    ms->ipv6 = ci->ipv6;
    step_start(ms, MILTER_STEP_CONNECT, done, ctx);
}

void milter_step_helo(struct milter_session *ms, const char *helo, const char *tls_version,
                      const char *auth_user, milter_done_fn done, void *ctx)
{
    snprintf(ms->helo, sizeof(ms->helo), "%s", helo);
    snprintf(ms->tls_version, sizeof(ms->tls_version), "%s", tls_version ? tls_version : "");
    snprintf(ms->auth_user, sizeof(ms->auth_user), "%s", auth_user ? auth_user : "");
    step_start(ms, MILTER_STEP_HELO, done, ctx);
}

static void step_args(struct milter_session *ms, enum milter_step step, const char *const *args,
                      size_t n, milter_done_fn done, void *ctx)
{
    ms->args = args;
    ms->n_args = n;
    /* The macro holds the address without its angle brackets, as Postfix sends it. */
    const char *a = n > 0 ? args[0] : "";
    size_t alen = strlen(a);
    if (alen >= 2 && a[0] == '<' && a[alen - 1] == '>') {
        a++;
        alen -= 2;
    }
    char *dst = step == MILTER_STEP_MAIL ? ms->mail_addr : ms->rcpt_addr;
    snprintf(dst, sizeof(ms->mail_addr), "%.*s", (int)alen, a);
    if (step == MILTER_STEP_MAIL) {
        milter_mods_clear(ms);
        for (size_t i = 0; i < ms->n; i++) {
            ms->m[i].accepted_message = false;
            ms->m[i].in_message = ms->m[i].state == MILTER_READY;
        }
    }
    step_start(ms, step, done, ctx);
}

void milter_step_mail(struct milter_session *ms, const char *const *args, size_t n,
                      milter_done_fn done, void *ctx)
{
    step_args(ms, MILTER_STEP_MAIL, args, n, done, ctx);
}

void milter_step_rcpt(struct milter_session *ms, const char *const *args, size_t n,
                      milter_done_fn done, void *ctx)
{
    step_args(ms, MILTER_STEP_RCPT, args, n, done, ctx);
}

void milter_step_message(struct milter_session *ms, const struct milter_message *msg,
                         const char *queue_id, milter_done_fn done, void *ctx)
{
    milter_mods_clear(ms);
    snprintf(ms->queue_id, sizeof(ms->queue_id), "%s", queue_id);
    if (milter_item_message_begin(ms, msg) != 0) {
        ms->done = done;
        ms->done_ctx = ctx;
        verdict_set(&ms->verdict, MILTER_V_TEMPFAIL,
                    "451 4.3.0 Error: could not read the message, try again later");
        ms->busy = true;
        step_finish(ms);
        return;
    }
    step_start(ms, MILTER_STEP_EOM, done, ctx);
}

void milter_abort(struct milter_session *ms)
{
    uint8_t buf[8];
    size_t len = milter_enc_empty(buf, sizeof(buf), MILTER_CMD_ABORT);
    for (size_t i = 0; i < ms->n; i++) {
        struct milter_conn *m = &ms->m[i];
        if (m->state == MILTER_READY && m->in_message && ms->waiting == NULL)
            if (milter_conn_write(ms, m, buf, len) != 0)
                milter_failed(ms, m, "write failed");
        m->in_message = false;
        m->accepted_message = false;
    }
    milter_mods_clear(ms);
}

const struct milter_mod *milter_mods(const struct milter_session *ms, size_t *n)
{
    *n = ms->n_mods;
    return ms->mods;
}

const char *milter_step_name(enum milter_step step)
{
    static const char *const names[] = {"connect", "helo", "mail", "rcpt", "data",
                                        "header",  "eoh",  "body", "eom"};
    return (unsigned)step < sizeof(names) / sizeof(names[0]) ? names[step] : "?";
}
