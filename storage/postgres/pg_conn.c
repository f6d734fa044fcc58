/*
 * pg_conn.c - a PostgreSQL connection: opening it from a libpq connection string, setting the
 * session up, telling its failures apart (SQLSTATE -> STORE_*, a lost connection), reconnecting,
 * running statements without parameters, and LISTEN/NOTIFY. The statements with parameters are in
 * pg_stmt.c. The struct pg_conn owns its libpq connection, its statements and the channel names
 * it listens on; see pg_conn.h for which thread may call what.
 */
#include "storage/postgres/pg_internal.h"

#include "common/pure/conninfo.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The session settings postern relies on, sent again after each reconnection. synchronous_commit
 * on: a COMMIT returns once the WAL is flushed (and on the synchronous standbys the operator
 * configured), which is what a "250" or "+OK" after it promises; a server configured with it off
 * must not weaken that for postern. */
#define STR_(x) #x
#define STR(x)  STR_(x)
static const char session_setup[] =
    "SET synchronous_commit = on;"
    " SET statement_timeout = " STR(PG_STATEMENT_TIMEOUT_MS) ";"
                                                             " SET client_encoding = 'UTF8'";

bool pg_conninfo_is_pg(const char *database)
{
    return conninfo_is_postgres(database);
}

int pg_fail_msg(struct pg_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
    va_end(ap);
    c->sqlstate[0] = '\0';
    return STORE_ERR;
}

/* libpq's messages end in a newline and may span lines ("FATAL: ...\nDETAIL: ..."): one line. */
static void one_line(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\n' || s[i] == '\r' || s[i] == '\t')
            s[i] = ' ';
}

/* SQLSTATEs that mean the session is over (class 08, connection exception; the server shutting
 * down or terminating this backend), even before libpq has seen the socket close. */
static bool sqlstate_ends_session(const char *state)
{
    return strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 ||
           strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0;
}

int pg_fail(struct pg_conn *c, const PGresult *res, const char *what)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    snprintf(c->sqlstate, sizeof(c->sqlstate), "%s", state ? state : "");
    if (PQstatus(c->pq) == CONNECTION_BAD || (state != NULL && sqlstate_ends_session(state)))
        c->lost = true;
    if (primary != NULL) {
        snprintf(c->errmsg, sizeof(c->errmsg), "%s: %s (SQLSTATE %s)", what, primary,
                 state ? state : "none");
    } else {
        /* No result, or one without fields: libpq's own text (a connection failure). */
        snprintf(c->errmsg, sizeof(c->errmsg), "%s: %s", what, PQerrorMessage(c->pq));
    }
    one_line(c->errmsg);
    if (c->lost) {
        size_t n = strlen(c->errmsg);
        snprintf(c->errmsg + n, sizeof(c->errmsg) - n, " [connection lost]");
        return STORE_ERR;
    }
    if (state != NULL && strcmp(state, "23505") == 0) /* unique_violation */
        return STORE_EXISTS;
    if (state != NULL && strcmp(state, "23503") == 0) /* foreign_key_violation */
        return STORE_IN_USE;
    return STORE_ERR;
}

int pg_usable(struct pg_conn *c)
{
    if (c->lost)
        return pg_fail_msg(c, "connection to the server lost: reconnect first");
    return STORE_OK;
}

int64_t pg_cmd_changes(const PGresult *res)
{
    /* libpq's accessors take a non-const result though they only read it. */
    const char *status = PQcmdStatus((PGresult *)res);
    if (strncmp(status, "INSERT ", 7) != 0 && strncmp(status, "UPDATE ", 7) != 0 &&
        strncmp(status, "DELETE ", 7) != 0 && strncmp(status, "MERGE ", 6) != 0)
        return -1;
    int64_t n = 0;
    if (pg_parse_i64(PQcmdTuples((PGresult *)res), &n) != STORE_OK)
        return -1;
    return n;
}

void pg_note_changes(struct pg_conn *c, const PGresult *res)
{
    int64_t n = pg_cmd_changes(res);
    if (n >= 0)
        c->changes = n;
}

/* Runs the session setup and the LISTENs again: after opening and after each reconnection. */
static int session_start(struct pg_conn *c)
{
    int status = pg_exec(c, session_setup);
    for (size_t i = 0; status == STORE_OK && i < c->n_listen; i++) {
        char *id = PQescapeIdentifier(c->pq, c->listen[i], strlen(c->listen[i]));
        if (id == NULL)
            return pg_fail(c, NULL, "listen");
        char sql[PG_NOTIFY_CHANNEL_BYTES * 2 + 16];
        snprintf(sql, sizeof(sql), "LISTEN %s", id);
        PQfreemem(id);
        status = pg_exec(c, sql);
    }
    if (status == STORE_OK)
        c->generation++;
    return status;
}

int pg_conn_open(const char *conninfo, struct pg_conn **out, char *err, size_t errlen)
{
    return pg_conn_open_as(conninfo, PG_APPLICATION_NAME, out, err, errlen);
}

int pg_conn_open_as(const char *conninfo, const char *name, struct pg_conn **out, char *err,
                    size_t errlen)
{
    *out = NULL;
    struct pg_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, errlen, "postgresql: out of memory");
        return STORE_ERR;
    }
    /* Defaults first, then the operator's string: with expand_dbname, what the string says
     * overrides the keywords before it. Keepalives find a server that vanished without closing
     * the connection (a crashed machine, a cut network) in about a minute rather than hours. */
    const char *keys[] = {
        "connect_timeout",     "fallback_application_name", "keepalives", "keepalives_idle",
        "keepalives_interval", "keepalives_count",          "dbname",     NULL};
    const char *values[] = {STR(PG_CONNECT_TIMEOUT_S), name, "1", "30", "10", "3", conninfo, NULL};
    c->pq = PQconnectdbParams(keys, values, 1);
    if (c->pq == NULL) {
        snprintf(err, errlen, "postgresql: out of memory");
        free(c);
        return STORE_ERR;
    }
    int status = STORE_OK;
    if (PQstatus(c->pq) != CONNECTION_OK) {
        status = pg_fail(c, NULL, "cannot connect");
    } else if (PQserverVersion(c->pq) < PG_MIN_SERVER_VERSION) {
        int v = PQserverVersion(c->pq);
        status = pg_fail_msg(c, "server version %d.%d is too old: postern needs %d or newer",
                             v / 10000, v % 10000, PG_MIN_SERVER_VERSION / 10000);
    } else {
        status = session_start(c);
    }
    if (status != STORE_OK) {
        snprintf(err, errlen, "postgresql: %s", c->errmsg);
        pg_conn_close(&c);
        return status;
    }
    *out = c;
    return STORE_OK;
}

void pg_conn_close(struct pg_conn **cp)
{
    struct pg_conn *c = *cp;
    if (c == NULL)
        return;
    pg_stmt_free_all(c);
    for (size_t i = 0; i < c->n_listen; i++)
        free(c->listen[i]);
    PQfinish(c->pq);
    free(c);
    *cp = NULL;
}

const char *pg_conn_errmsg(const struct pg_conn *c)
{
    return c->errmsg;
}

const char *pg_conn_sqlstate(const struct pg_conn *c)
{
    return c->sqlstate;
}

bool pg_conn_is_lost(const struct pg_conn *c)
{
    return c->lost;
}

int pg_conn_reconnect(struct pg_conn *c)
{
    /* PQreset closes the old socket and connects again with the parameters of PQconnectdbParams.
     * The new server session knows none of our prepared statements: each statement compares its
     * prepared_gen with the new generation and prepares itself again. */
    PQreset(c->pq);
    if (PQstatus(c->pq) != CONNECTION_OK) {
        c->lost = true;
        return pg_fail(c, NULL, "reconnect");
    }
    c->lost = false;
    int status = session_start(c);
    if (status != STORE_OK)
        c->lost = true;
    return status == STORE_OK ? STORE_OK : STORE_ERR;
}

int pg_conn_server_version(const struct pg_conn *c)
{
    return PQserverVersion(c->pq);
}

int pg_conn_backend_pid(const struct pg_conn *c)
{
    return PQbackendPID(c->pq);
}

bool pg_conn_in_transaction(const struct pg_conn *c)
{
    PGTransactionStatusType t = PQtransactionStatus(c->pq);
    return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}

int64_t pg_conn_changes(const struct pg_conn *c)
{
    return c->changes;
}

int pg_exec(struct pg_conn *c, const char *sql)
{
    if (pg_usable(c) != STORE_OK)
        return STORE_ERR;
    PGresult *res = PQexec(c->pq, sql);
    ExecStatusType t = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    int status = STORE_OK;
    if (t == PGRES_COMMAND_OK || t == PGRES_TUPLES_OK || t == PGRES_EMPTY_QUERY) {
        pg_note_changes(c, res);
        /* A COMMIT of a transaction in which a statement failed succeeds as a command but rolls
         * back, and says so only in its command tag: that is a failure, or a batch whose error
         * went unnoticed would be reported as committed. */
        if (strcmp(PQcmdStatus(res), "ROLLBACK") == 0 && strncasecmp(sql, "ROLLBACK", 8) != 0 &&
            strncasecmp(sql, "ABORT", 5) != 0)
            status = pg_fail_msg(c, "commit: an earlier statement of the transaction failed, so "
                                    "the server rolled it back");
    } else {
        status = pg_fail(c, res, "exec");
    }
    PQclear(res);
    return status;
}

/* ---- savepoints ---- */

/* Longest savepoint statement: "ROLLBACK TO " and a short name. */
#define PG_SP_SQL_BYTES 64

/* Runs verb followed by the savepoint's name ("RELEASE mailbox"). */
static int sp_exec(struct pg_conn *c, const char *verb, const char *name)
{
    char sql[PG_SP_SQL_BYTES];
    int n = snprintf(sql, sizeof(sql), "%s %s", verb, name);
    if (n < 0 || (size_t)n >= sizeof(sql))
        return pg_fail_msg(c, "savepoint name too long: %.32s", name);
    return pg_exec(c, sql);
}

/* The depth of the innermost open savepoint called name, 0 when there is none. */
static size_t sp_find(const struct pg_conn *c, const char *name)
{
    for (size_t i = c->n_sp; i > 0; i--)
        if (strcmp(c->sp_names[i - 1], name) == 0)
            return i;
    return 0;
}

int pg_sp_begin(struct pg_conn *c, const char *name)
{
    if (!pg_conn_in_transaction(c)) {
        /* What the stack held ended with its transaction (a COMMIT or ROLLBACK run directly). */
        c->n_sp = 0;
        c->sp_opened_transaction = false;
    }
    if (c->n_sp == PG_SP_DEPTH)
        return pg_fail_msg(c, "savepoint %.32s: already %d deep", name, PG_SP_DEPTH);
    bool open = c->n_sp == 0 && !pg_conn_in_transaction(c);
    if (open && pg_exec(c, "BEGIN") != STORE_OK)
        return STORE_ERR;
    int status = sp_exec(c, "SAVEPOINT", name);
    if (status != STORE_OK) {
        if (open && !c->lost)
            pg_exec(c, "ROLLBACK");
        return status;
    }
    if (open)
        c->sp_opened_transaction = true;
    c->sp_names[c->n_sp++] = name;
    return STORE_OK;
}

/* Forgets name and the savepoints after it; ends the transaction (with verb) when it was the
 * savepoint that opened it. */
static int sp_pop(struct pg_conn *c, size_t depth, const char *verb)
{
    c->n_sp = depth - 1;
    if (c->n_sp > 0 || !c->sp_opened_transaction)
        return STORE_OK;
    c->sp_opened_transaction = false;
    return pg_exec(c, verb);
}

int pg_sp_release(struct pg_conn *c, const char *name)
{
    size_t depth = sp_find(c, name);
    if (depth == 0 || !pg_conn_in_transaction(c))
        return pg_fail_msg(c, "release %.32s: no such savepoint", name);
    /* Releasing the savepoint that opened the transaction commits it, as in SQLite: the COMMIT
     * alone does both. */
    if (depth == 1 && c->sp_opened_transaction)
        return sp_pop(c, depth, "COMMIT");
    int status = sp_exec(c, "RELEASE", name);
    if (status != STORE_OK)
        return status;
    return sp_pop(c, depth, "COMMIT");
}

int pg_sp_undo(struct pg_conn *c, const char *name)
{
    char why[PG_ERRMSG_BYTES];
    memcpy(why, c->errmsg, sizeof(why));
    size_t depth = sp_find(c, name);
    /* No transaction left (the connection was lost, or someone ended it): nothing to undo to. */
    if (depth == 0 || !pg_conn_in_transaction(c) || c->lost) {
        c->n_sp = 0;
        c->sp_opened_transaction = false;
        if (why[0] == '\0')
            snprintf(why, sizeof(why), "undo %.32s: no transaction left", name);
        memcpy(c->errmsg, why, sizeof(why));
        return STORE_ERR;
    }
    int status;
    if (depth == 1 && c->sp_opened_transaction) {
        status = sp_pop(c, depth, "ROLLBACK");
    } else {
        status = sp_exec(c, "ROLLBACK TO", name);
        if (status == STORE_OK)
            status = sp_exec(c, "RELEASE", name);
        if (status == STORE_OK)
            status = sp_pop(c, depth, "COMMIT");
    }
    if (status == STORE_OK) {
        memcpy(c->errmsg, why, sizeof(why));
        return STORE_OK;
    }
    char cleanup[PG_ERRMSG_BYTES];
    memcpy(cleanup, c->errmsg, sizeof(cleanup));
    snprintf(c->errmsg, sizeof(c->errmsg), "%.300s (undo failed: %.180s)", why, cleanup);
    return STORE_ERR;
}

/* ---- LISTEN/NOTIFY ---- */

int pg_listen(struct pg_conn *c, const char *channel)
{
    size_t len = strlen(channel);
    if (len == 0 || len >= PG_NOTIFY_CHANNEL_BYTES)
        return pg_fail_msg(c, "listen: channel name of %zu bytes (1 to %d)", len,
                           PG_NOTIFY_CHANNEL_BYTES - 1);
    if (pg_usable(c) != STORE_OK)
        return STORE_ERR;
    size_t known = 0;
    while (known < c->n_listen && strcmp(c->listen[known], channel) != 0)
        known++;
    if (known == c->n_listen && c->n_listen == PG_LISTEN_MAX)
        return pg_fail_msg(c, "listen: already on %d channels", PG_LISTEN_MAX);
    char *id = PQescapeIdentifier(c->pq, channel, len);
    if (id == NULL)
        return pg_fail(c, NULL, "listen");
    char sql[PG_NOTIFY_CHANNEL_BYTES * 2 + 16];
    snprintf(sql, sizeof(sql), "LISTEN %s", id);
    PQfreemem(id);
    int status = pg_exec(c, sql);
    if (status != STORE_OK || known < c->n_listen)
        return status;
    char *copy = strdup(channel);
    if (copy == NULL)
        return pg_fail_msg(c, "listen: out of memory");
    c->listen[c->n_listen++] = copy;
    return STORE_OK;
}

int pg_notify(struct pg_conn *c, const char *channel, const char *payload)
{
    if (pg_usable(c) != STORE_OK)
        return STORE_ERR;
    const char *values[2] = {channel, payload};
    PGresult *res = PQexecParams(c->pq, "SELECT pg_notify($1, $2)", 2, NULL, values, NULL, NULL, 0);
    int status = STORE_OK;
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK)
        status = pg_fail(c, res, "notify");
    PQclear(res);
    return status;
}

int pg_conn_socket(const struct pg_conn *c)
{
    return c->lost ? -1 : PQsocket(c->pq);
}

int pg_notify_take(struct pg_conn *c, struct pg_notification *out)
{
    if (pg_usable(c) != STORE_OK)
        return STORE_ERR;
    PGnotify *n = PQnotifies(c->pq);
    if (n == NULL) {
        /* Reads only what the socket already holds: libpq's sockets are non-blocking. */
        if (PQconsumeInput(c->pq) == 0 || PQstatus(c->pq) == CONNECTION_BAD) {
            c->lost = true;
            return pg_fail(c, NULL, "notifications");
        }
        n = PQnotifies(c->pq);
    }
    if (n == NULL)
        return 0;
    snprintf(out->channel, sizeof(out->channel), "%s", n->relname);
    snprintf(out->payload, sizeof(out->payload), "%s", n->extra ? n->extra : "");
    out->sender_pid = n->be_pid;
    PQfreemem(n);
    return 1;
}
