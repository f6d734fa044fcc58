/*
 * queue_runner_internal.h - what the three files of the queue runner share: the two structs
 * and the few calls between the files. Only server/outbound/queue_runner.c, queue_route.c and
 * queue_attempt.c include it; everyone else uses queue_runner.h.
 *
 * The files, one job each:
 *   queue_runner.c   the runner: its timer, the claim job (one at a time), grouping claims into
 *                    deliveries and the list of deliveries in flight with their deadline timers,
 *                    claims handed back, start and stop;
 *   queue_route.c    routing one delivery: the smarthost or the MX hosts, their addresses, one
 *                    smtp_client at a time, copying each recipient's result back;
 *   queue_attempt.c  one delivery's bookkeeping: its allocation, the undecided recipients'
 *                    result, the writer job that records everything, the log lines.
 *
 * Who touches what. struct queue_runner belongs to queue_runner.c: the other two only read its
 * borrowed app, conns, dns, tls and stopping, and change its counters through the functions
 * below. struct delivery belongs to queue_attempt.c and queue_route.c (results and routing);
 * queue_runner.c touches only its list link, deadline timer, phase, domain and claimed ids (and
 * queue_attempt_finish only stops that timer: the runner opens and closes it).
 */
#ifndef POSTERN_QUEUE_RUNNER_INTERNAL_H
#define POSTERN_QUEUE_RUNNER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "common/pure/dsn.h"
#include "common/pure/smtp_reply.h"
#include "server/net/dns.h"
#include "server/outbound/queue_runner.h"
#include "server/outbound/smtp_client.h"
#include "common/util.h"
#include "storage/queue.h"
#include "storage/reader.h"
#include "storage/store.h"
#include "storage/writer.h"

#define RELAY_TEXT_BYTES (HOSTNAME_BUF_BYTES + 64)

enum delivery_phase {
    PH_ROUTING = 0, /* DNS and SMTP */
    PH_RECORDING,   /* the result job is with the writer */
    PH_RELEASING,   /* stopped: the release job is with the writer */
};

struct delivery {
    struct queue_runner *r; /* borrowed */
    struct delivery *next;  /* in r->active */
    enum delivery_phase phase;
    int64_t message_id;
    int64_t created_ms;
    char *sender; /* owned */
    char *domain; /* owned */
    size_t n;
    int64_t *ids;                    /* owned, n */
    int64_t *attempts;               /* owned, n: failed attempts before this one */
    char **addresses;                /* owned, n */
    unsigned *notify;                /* owned, n: DSN NOTIFY bits as received (0: none) */
    char **orcpts;                   /* owned, n: DSN ORCPT as received ("" when none) */
    struct smtp_client_rcpt *rcpts;  /* owned, n: the final result per recipient */
    char (*relay)[RELAY_TEXT_BYTES]; /* owned, n: where it was decided */
    char (*dsn)[DSN_STATUS_BYTES];   /* owned, n: own-text status ("" = from the reply) */

    /* routing */
    struct dns_query *q;
    struct dns_target *targets; /* owned */
    size_t n_targets, target_i;
    bool implicit_mx;
    uint16_t port;
    struct sockaddr_storage *addrs; /* owned */
    size_t n_addrs, addr_i, tried;
    bool no_tls;    /* retrying the current address without STARTTLS */
    bool smarthost; /* routed to relay.smarthost (AUTH there when credentials are set) */
    struct smtp_client *client;
    struct smtp_client_rcpt *cur; /* owned, n: the recipients handed to the current client */
    size_t *cur_idx;              /* owned, n */
    size_t n_cur;
    char cur_relay[RELAY_TEXT_BYTES];
    /* the last host-level failure, for recipients nobody decided */
    char last_error[SMTP_REPLY_TEXT_MAX_BYTES];
    int last_code;
    char last_relay[RELAY_TEXT_BYTES];
    /* a permanent routing failure (null MX, no such domain): bounce the undecided */
    bool perm;
    char perm_dsn[DSN_STATUS_BYTES];

    uv_timer_t deadline;
    bool timer_open; /* initialised and not yet closed */
    bool job_busy;   /* job is with the writer */

    /* the result job (run may be called twice: every output is recomputed) */
    struct writer_job job;
    int64_t now_ms;
    int64_t max_age_ms;
    int64_t delay_notice_ms;                                       /* relay.delay_notice */
    const char *hostname;                                          /* borrowed from cfg */
    const char *node;                                              /* borrowed: the claiming node */
    bool *expired;                                                 /* owned, n */
    int64_t *scratch_ids;                                          /* owned, n */
    struct dsn_recipient *fail;                                    /* owned, n */
    char (*errtext)[SMTP_REPLY_TEXT_MAX_BYTES + RELAY_TEXT_BYTES]; /* owned, n */
    enum store_bounce_route route;
    size_t n_relayed, n_delayed; /* DSN notices the job stored (RFC 3461) */
    int job_rc;
};

struct queue_runner {
    uv_loop_t *loop;
    struct app *app;        /* borrowed */
    struct conn_set *conns; /* borrowed */
    struct dns *dns;        /* owned */
    struct tls_ctx *tls;    /* owned reference: client context for STARTTLS */
    uv_timer_t timer;
    bool timer_open;
    uint64_t attempt_deadline_ms; /* QUEUE_RUNNER_ATTEMPT_DEADLINE_MS, or shorter in tests */
    int64_t lease_ms;    /* STORE_QUEUE_LEASE_MS, or shorter in tests; read by the claim job too */
    uint64_t rescan_ms;  /* STORE_QUEUE_RESCAN_MS, or another in tests */
    size_t handles_open; /* the timers, every delivery's deadline timer and wake */
    bool freeing;        /* queue_runner_free was called: free when the handles are closed */

    struct delivery *active;
    size_t n_active;
    size_t jobs;  /* writer jobs and the next-due read out, not yet done (deliveries' too) */
    bool started; /* stale claims released */
    bool stopping;
    void (*stop_done)(void *);
    void *stop_arg;

    /* Announcements on the queue channel (a flush on any node) heard by listener on its own
     * thread, which wakes the loop through wake (not keeping the loop alive) to claim at once.
     * Both exist only on a backend that can listen (store_can_listen). */
    struct store_listener *listener; /* owned; stopped (joined) in queue_runner_free */
    uv_async_t wake;
    bool wake_open;

    /* the claim job */
    struct writer_job claim_job;
    bool claim_busy;
    bool claim_again; /* woken while claim_job was out: claim again when it is done */
    struct store_queue_claims claims;
    char **skip; /* owned copies, n_skip */
    size_t n_skip;
    int claim_rc;
    struct writer_job start_job;
    size_t released_stale;

    /* when to look again: a reader job (storage/reader.h) */
    struct reader_job next_due_job;
    int64_t next_due; /* its result */
    bool next_due_out;
};

/* ---- queue_runner.c ---- */

/* Hands job to the writer and counts it; -1 when the writer is gone (nothing was submitted). */
int queue_runner_submit(struct queue_runner *r, struct writer_job *job);
/* The delivery is finished with the writer: unlink it, close its deadline timer, free it. */
void queue_runner_delivery_end(struct delivery *d);
/* d's result job is done (recorded or not): count it, end d, and claim again unless stopping. */
void queue_runner_recorded(struct delivery *d);

/* ---- queue_route.c ---- */

/* Routes d (smarthost or MX lookup) and starts delivering; ends in queue_attempt_finish. */
void queue_route_start(struct delivery *d);
/* The attempt's deadline passed while routing: abandon the lookup or client and defer. */
void queue_route_deadline(struct delivery *d);
/* Abandons the lookup or client in flight (at stop); nothing is reported for it. */
void queue_route_cancel(struct delivery *d);

/* ---- queue_attempt.c ---- */

/* A delivery for claims[from..to) (one message, one domain). NULL when out of memory. */
struct delivery *queue_attempt_new(struct queue_runner *r, const struct store_queue_claims *cl,
                                   size_t from, size_t to);
void queue_attempt_free(struct delivery *d);
/* Every recipient has its result (or gets one now): hand them to the writer. */
void queue_attempt_finish(struct delivery *d);
/* A failure for every undecided recipient with nothing (more) to connect to: bounce them when
 * perm (with dsn), else defer them (own text, dsn); then queue_attempt_finish. */
void queue_attempt_failed(struct delivery *d, bool perm, const char *dsn, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
