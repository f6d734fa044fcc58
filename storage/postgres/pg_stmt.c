/*
 * pg_stmt.c - statements with parameters on a PostgreSQL connection: the ?N -> $N rewrite, the
 * cache by SQL address, binding, running (a named prepared statement, prepared at the first step
 * and again after a reconnection), and reading the text result (integers and booleans parsed,
 * bytea decoded). The connection owns every statement (pg_conn.c frees them with it); a statement
 * owns its rewritten text, its last result and the blobs decoded from it, and borrows the text
 * and blobs bound to it until the step that sends them.
 */
#include "storage/postgres/pg_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the rewrite ---- */

static bool is_ident_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_';
}

/* Copies a quoted run starting at sql[i] (the opening quote) into out; returns the index after
 * the closing quote, or 0 when there is none. A doubled quote inside is the quote itself and
 * simply reads as the end of one run and the start of the next; backslash escapes only exist in
 * E'...' strings (standard_conforming_strings is on by default since 9.1). */
static size_t copy_quoted(const char *sql, size_t i, char *out, bool backslash_escapes)
{
    char q = sql[i];
    out[i] = sql[i];
    i++;
    while (sql[i] != '\0') {
        out[i] = sql[i];
        if (backslash_escapes && sql[i] == '\\' && sql[i + 1] != '\0') {
            out[i + 1] = sql[i + 1];
            i += 2;
            continue;
        }
        if (sql[i] == q)
            return i + 1;
        i++;
    }
    return 0;
}

int pg_sql_rewrite(const char *sql, char **out, int *nparams_out, char *why, size_t whylen)
{
    *out = NULL;
    *nparams_out = 0;
    size_t n = strlen(sql);
    /* ?N and $N have the same length, so the text keeps its length. */
    char *r = malloc(n + 1);
    if (r == NULL) {
        snprintf(why, whylen, "out of memory");
        return STORE_ERR;
    }
    int max = 0;
    size_t i = 0;
    while (i < n) {
        char ch = sql[i];
        if (ch == '\'' || ch == '"') {
            bool escapes = ch == '\'' && i > 0 && (sql[i - 1] == 'E' || sql[i - 1] == 'e') &&
                           (i < 2 || !is_ident_char(sql[i - 2]));
            size_t end = copy_quoted(sql, i, r, escapes);
            if (end == 0) {
                snprintf(why, whylen, "unterminated %s at offset %zu",
                         ch == '\'' ? "string" : "quoted identifier", i);
                free(r);
                return STORE_ERR;
            }
            i = end;
        } else if (ch == '-' && sql[i + 1] == '-') {
            while (i < n && sql[i] != '\n') {
                r[i] = sql[i];
                i++;
            }
        } else if (ch == '/' && sql[i + 1] == '*') {
            /* PostgreSQL's block comments nest. */
            int depth = 0;
            do {
                if (sql[i] == '/' && sql[i + 1] == '*') {
                    depth++;
                    r[i] = sql[i];
                    r[i + 1] = sql[i + 1];
                    i += 2;
                } else if (sql[i] == '*' && sql[i + 1] == '/') {
                    depth--;
                    r[i] = sql[i];
                    r[i + 1] = sql[i + 1];
                    i += 2;
                } else {
                    r[i] = sql[i];
                    i++;
                }
            } while (depth > 0 && i < n);
            if (depth > 0) {
                snprintf(why, whylen, "unterminated comment");
                free(r);
                return STORE_ERR;
            }
        } else if (ch == '?') {
            size_t j = i + 1;
            int num = 0;
            while (sql[j] >= '0' && sql[j] <= '9' && num <= PG_MAX_PARAMS)
                num = num * 10 + (sql[j++] - '0');
            if (j == i + 1 || num < 1 || num > PG_MAX_PARAMS) {
                snprintf(why, whylen,
                         "parameter at offset %zu: write ?1 .. ?%d (numbered, at most %d)", i,
                         PG_MAX_PARAMS, PG_MAX_PARAMS);
                free(r);
                return STORE_ERR;
            }
            r[i] = '$';
            memcpy(r + i + 1, sql + i + 1, j - i - 1);
            if (num > max)
                max = num;
            i = j;
        } else {
            r[i] = ch;
            i++;
        }
    }
    r[n] = '\0';
    *out = r;
    *nparams_out = max;
    return STORE_OK;
}

int pg_parse_i64(const char *text, int64_t *out)
{
    *out = 0;
    if (text == NULL || text[0] == '\0')
        return STORE_ERR;
    /* strtoll alone would take leading blanks and stop quietly at junk. */
    const char *p = text;
    if (*p == '-' || *p == '+')
        p++;
    if (*p < '0' || *p > '9')
        return STORE_ERR;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(text, &end, 10);
    if (errno == ERANGE)
        return STORE_ERR;
    if (*end == '.') {
        /* A numeric with a fraction (avg(), sum() of numerics): cut toward zero, as SQLite's
         * integer read of a real does. */
        end++;
        while (*end >= '0' && *end <= '9')
            end++;
    }
    if (*end != '\0')
        return STORE_ERR;
    *out = (int64_t)v;
    return STORE_OK;
}

/* ---- the cache ---- */

static void clear_result(struct pg_stmt *st)
{
    st->changes = 0;
    for (int i = 0; i < st->n_blobs; i++)
        PQfreemem(st->blobs[i].data);
    free(st->blobs);
    st->blobs = NULL;
    st->n_blobs = 0;
    PQclear(st->res);
    st->res = NULL;
    st->row = 0;
}

static void clear_bindings(struct pg_stmt *st)
{
    st->bind_error[0] = '\0';
    for (int i = 0; i < PG_MAX_PARAMS; i++) {
        free(st->params[i].owned);
        st->params[i].owned = NULL;
        st->params[i].kind = PG_BIND_NULL;
        st->params[i].value = NULL;
        st->params[i].length = 0;
    }
}

void pg_stmt_free_all(struct pg_conn *c)
{
    for (size_t i = 0; i < PG_STMT_CACHE; i++) {
        struct pg_stmt *st = c->stmts[i];
        if (st == NULL)
            continue;
        clear_result(st);
        clear_bindings(st);
        free(st->pg_sql);
        free(st);
        c->stmts[i] = NULL;
    }
}

struct pg_stmt *pg_prepare(struct pg_conn *c, const char *sql)
{
    size_t free_slot = PG_STMT_CACHE;
    for (size_t i = 0; i < PG_STMT_CACHE; i++) {
        struct pg_stmt *st = c->stmts[i];
        if (st != NULL && st->sql == sql) {
            clear_result(st);
            clear_bindings(st);
            return st;
        }
        if (st == NULL && free_slot == PG_STMT_CACHE)
            free_slot = i;
    }
    if (free_slot == PG_STMT_CACHE) {
        /* As with SQLite: evicting could free a statement a caller is still reading. */
        pg_fail_msg(c, "statement cache full (%d): raise PG_STMT_CACHE", PG_STMT_CACHE);
        return NULL;
    }
    struct pg_stmt *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        pg_fail_msg(c, "prepare: out of memory");
        return NULL;
    }
    char why[160];
    if (pg_sql_rewrite(sql, &st->pg_sql, &st->nparams, why, sizeof(why)) != STORE_OK) {
        pg_fail_msg(c, "prepare: %s in: %.200s", why, sql);
        free(st);
        return NULL;
    }
    st->base.backend = STORE_BACKEND_POSTGRES;
    st->conn = c;
    st->sql = sql;
    st->slot = (int)free_slot;
    c->stmts[free_slot] = st;
    return st;
}

int64_t pg_changes(const struct pg_stmt *st)
{
    return st->changes;
}

void pg_reset(struct pg_stmt *st)
{
    if (st != NULL)
        clear_result(st);
}

/* ---- binding ---- */

/* Records a failed bind in the connection and, unless an earlier one is there, in the statement
 * for its next step. */
static int bind_fail(struct pg_stmt *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int bind_fail(struct pg_stmt *st, const char *fmt, ...)
{
    char msg[sizeof(st->bind_error)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (st->bind_error[0] == '\0')
        memcpy(st->bind_error, msg, sizeof(msg));
    return pg_fail_msg(st->conn, "%s", msg);
}

/* The parameter ?idx, its old value dropped, ready to be bound: NULL (after recording why) when
 * idx is not one of the statement's. A new value counts from the next execution: the next step
 * after pg_prepare or pg_reset. */
static struct pg_stmt *bind_slot(struct pg_stmt *st, int idx)
{
    if (idx < 1 || idx > st->nparams) {
        bind_fail(st, "bind: no parameter ?%d in a statement with %d", idx, st->nparams);
        return NULL;
    }
    free(st->params[idx - 1].owned);
    st->params[idx - 1].owned = NULL;
    st->params[idx - 1].kind = PG_BIND_NULL;
    st->params[idx - 1].value = NULL;
    st->params[idx - 1].length = 0;
    return st;
}

int pg_bind_i64(struct pg_stmt *st, int idx, int64_t v)
{
    if (bind_slot(st, idx) == NULL)
        return STORE_ERR;
    snprintf(st->params[idx - 1].num, sizeof(st->params[idx - 1].num), "%" PRId64, v);
    st->params[idx - 1].kind = PG_BIND_I64;
    st->params[idx - 1].value = st->params[idx - 1].num;
    return STORE_OK;
}

int pg_bind_text(struct pg_stmt *st, int idx, const char *text, int len)
{
    if (bind_slot(st, idx) == NULL)
        return STORE_ERR;
    if (text == NULL)
        return pg_bind_null(st, idx);
    const char *value = text;
    if (len >= 0) {
        /* The text format is NUL-terminated: a text given by length is copied to add one. */
        if (memchr(text, '\0', (size_t)len) != NULL)
            return bind_fail(st, "bind: ?%d text holds a NUL byte", idx);
        char *copy = malloc((size_t)len + 1);
        if (copy == NULL)
            return bind_fail(st, "bind: out of memory");
        memcpy(copy, text, (size_t)len);
        copy[len] = '\0';
        st->params[idx - 1].owned = copy;
        value = copy;
    }
    st->params[idx - 1].kind = PG_BIND_TEXT;
    st->params[idx - 1].value = value;
    return STORE_OK;
}

int pg_bind_blob(struct pg_stmt *st, int idx, const void *data, size_t len)
{
    if (bind_slot(st, idx) == NULL)
        return STORE_ERR;
    /* A bytea is at most 1 GB; libpq takes its length as an int. */
    if (len > (size_t)1 << 30)
        return bind_fail(st, "bind: ?%d blob of %zu bytes (at most 1 GiB)", idx, len);
    st->params[idx - 1].kind = PG_BIND_BLOB;
    /* A NULL value pointer would send SQL NULL: an empty blob points at an empty string. */
    st->params[idx - 1].value = (data != NULL && len > 0) ? data : "";
    st->params[idx - 1].length = (int)len;
    return STORE_OK;
}

int pg_bind_null(struct pg_stmt *st, int idx)
{
    if (bind_slot(st, idx) == NULL)
        return STORE_ERR;
    st->params[idx - 1].kind = PG_BIND_NULL;
    return STORE_OK;
}

/* ---- running ---- */

/* Prepares st on the server unless it is prepared there, in this session, with every parameter
 * now bound to a blob declared bytea. The other parameters' types are left to the server to
 * infer from where they stand (a column, a function's argument), as the text they are sent as
 * is read by their type's own input function: "42" suits a bigint, an integer or a text. */
static int ensure_prepared(struct pg_stmt *st)
{
    struct pg_conn *c = st->conn;
    uint32_t need = 0;
    for (int i = 0; i < st->nparams; i++)
        if (st->params[i].kind == PG_BIND_BLOB)
            need |= (uint32_t)1 << i;
    bool current = st->prepared_gen == c->generation;
    if (current && (need & ~st->bytea_mask) == 0)
        return STORE_OK;
    char name[32];
    snprintf(name, sizeof(name), "postern_%d", st->slot);
    if (current) {
        char sql[48];
        snprintf(sql, sizeof(sql), "DEALLOCATE %s", name);
        if (pg_exec(c, sql) != STORE_OK)
            return STORE_ERR;
        st->prepared_gen = 0;
    } else {
        /* A new session: what the old one was told about types is forgotten too. */
        st->bytea_mask = 0;
    }
    st->bytea_mask |= need;
    Oid types[PG_MAX_PARAMS];
    for (int i = 0; i < st->nparams; i++)
        types[i] = (st->bytea_mask & ((uint32_t)1 << i)) ? PG_OID_BYTEA : 0;
    PGresult *res = PQprepare(c->pq, name, st->pg_sql, st->nparams, types);
    int status = STORE_OK;
    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
        char what[280];
        snprintf(what, sizeof(what), "prepare %.240s", st->sql);
        status = pg_fail(c, res, what);
    } else {
        st->prepared_gen = c->generation;
    }
    PQclear(res);
    return status;
}

static int execute(struct pg_stmt *st)
{
    struct pg_conn *c = st->conn;
    if (st->bind_error[0] != '\0')
        return pg_fail_msg(c, "%.240s: %s", st->sql, st->bind_error);
    if (pg_usable(c) != STORE_OK)
        return STORE_ERR;
    int status = ensure_prepared(st);
    if (status != STORE_OK)
        return status;
    const char *values[PG_MAX_PARAMS];
    int lengths[PG_MAX_PARAMS];
    int formats[PG_MAX_PARAMS];
    for (int i = 0; i < st->nparams; i++) {
        values[i] = st->params[i].kind == PG_BIND_NULL ? NULL : st->params[i].value;
        lengths[i] = st->params[i].length;
        formats[i] = st->params[i].kind == PG_BIND_BLOB ? 1 : 0;
    }
    char name[32];
    snprintf(name, sizeof(name), "postern_%d", st->slot);
    PGresult *res = PQexecPrepared(c->pq, name, st->nparams, values, lengths, formats, 0);
    ExecStatusType t = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (t != PGRES_TUPLES_OK && t != PGRES_COMMAND_OK) {
        char what[280];
        snprintf(what, sizeof(what), "%.240s", st->sql);
        status = pg_fail(c, res, what);
        PQclear(res);
        return status;
    }
    pg_note_changes(c, res);
    int64_t changed = pg_cmd_changes(res);
    st->changes = changed > 0 ? changed : 0;
    int ncols = PQnfields(res);
    if (ncols > 0) {
        st->blobs = calloc((size_t)ncols, sizeof(*st->blobs));
        if (st->blobs == NULL) {
            PQclear(res);
            return pg_fail_msg(c, "%.240s: out of memory", st->sql);
        }
        st->n_blobs = ncols;
    }
    st->res = res;
    st->row = 0;
    return STORE_OK;
}

/* Forgets the blobs decoded from the row being left. */
static void drop_row_blobs(struct pg_stmt *st)
{
    for (int i = 0; i < st->n_blobs; i++) {
        PQfreemem(st->blobs[i].data);
        st->blobs[i].data = NULL;
        st->blobs[i].len = 0;
    }
}

int pg_step(struct pg_stmt *st)
{
    if (st->res == NULL) {
        int status = execute(st);
        if (status != STORE_OK)
            return status;
    } else if (st->row < PQntuples(st->res)) {
        drop_row_blobs(st);
        st->row++;
    }
    return st->row < PQntuples(st->res) ? PG_ROW : PG_DONE;
}

/* ---- reading ---- */

static bool on_row(const struct pg_stmt *st, int col)
{
    return st->res != NULL && st->row < PQntuples(st->res) && col >= 0 && col < PQnfields(st->res);
}

int pg_col_count(const struct pg_stmt *st)
{
    return st->res ? PQnfields(st->res) : 0;
}

bool pg_col_is_null(const struct pg_stmt *st, int col)
{
    return !on_row(st, col) || PQgetisnull(st->res, st->row, col);
}

int pg_col_i64_checked(struct pg_stmt *st, int col, int64_t *out)
{
    *out = 0;
    if (!on_row(st, col))
        return pg_fail_msg(st->conn, "column %d: no such column or no row", col);
    if (PQgetisnull(st->res, st->row, col))
        return STORE_OK;
    const char *text = PQgetvalue(st->res, st->row, col);
    /* A boolean reads as SQLite's comparisons do: 1 or 0. */
    if (PQftype(st->res, col) == PG_OID_BOOL &&
        (strcmp(text, "t") == 0 || strcmp(text, "f") == 0)) {
        *out = text[0] == 't';
        return STORE_OK;
    }
    if (pg_parse_i64(text, out) != STORE_OK)
        return pg_fail_msg(st->conn, "column %d (%s): not a 64-bit integer: %.40s", col,
                           PQfname(st->res, col), text);
    return STORE_OK;
}

int64_t pg_col_i64(struct pg_stmt *st, int col)
{
    int64_t v = 0;
    if (pg_col_i64_checked(st, col, &v) != STORE_OK)
        return 0;
    return v;
}

const char *pg_col_text(const struct pg_stmt *st, int col)
{
    if (pg_col_is_null(st, col))
        return NULL;
    return PQgetvalue(st->res, st->row, col);
}

const void *pg_col_blob(struct pg_stmt *st, int col, size_t *len_out)
{
    *len_out = 0;
    if (pg_col_is_null(st, col))
        return NULL;
    const char *text = PQgetvalue(st->res, st->row, col);
    if (PQftype(st->res, col) != PG_OID_BYTEA) {
        *len_out = (size_t)PQgetlength(st->res, st->row, col);
        return text;
    }
    struct pg_blob *b = &st->blobs[col];
    if (b->data == NULL) {
        /* The text form is hex ("\x4142"), bytea_output's default; PQunescapeBytea reads it and
         * the older escape form alike. */
        b->data = PQunescapeBytea((const unsigned char *)text, &b->len);
        if (b->data == NULL) {
            pg_fail_msg(st->conn, "column %d: cannot decode bytea: out of memory", col);
            return NULL;
        }
    }
    *len_out = b->len;
    return b->data;
}
