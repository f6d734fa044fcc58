/*
 * conninfo.c - the PostgreSQL connection string rule and password masking (conninfo.h). The
 * masking follows libpq's syntax far enough to find the password and copies everything else
 * byte for byte; it never decodes a value, so what it prints is what the operator wrote.
 */
#include "common/pure/conninfo.h"

#include <stdio.h>
#include <string.h>

static const char mask[] = "***";

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool is_uri(const char *s)
{
    return strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0;
}

bool conninfo_is_postgres(const char *database)
{
    if (database == NULL)
        return false;
    if (is_uri(database))
        return true;
    const char *p = database;
    while (is_blank(*p))
        p++;
    const char *word = p;
    while ((*p >= 'a' && *p <= 'z') || *p == '_')
        p++;
    if (p == word)
        return false;
    while (is_blank(*p))
        p++;
    return *p == '=';
}

/* An output buffer that cuts at its end and stays NUL-terminated. */
struct out {
    char *buf;
    size_t len, used;
};

static void put(struct out *o, const char *p, size_t n)
{
    if (o->len == 0)
        return;
    size_t room = o->len - 1 - o->used;
    if (n > room)
        n = room;
    memcpy(o->buf + o->used, p, n);
    o->used += n;
    o->buf[o->used] = '\0';
}

static void mask_uri(const char *s, struct out *o)
{
    const char *auth = strstr(s, "://") + 3;
    put(o, s, (size_t)(auth - s));
    size_t auth_len = strcspn(auth, "/?");
    const char *at = NULL;
    for (size_t i = 0; i < auth_len; i++)
        if (auth[i] == '@')
            at = auth + i; /* the last one: a password may hold an escaped or bare @ */
    const char *colon = at != NULL ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (colon != NULL) {
        put(o, auth, (size_t)(colon + 1 - auth));
        put(o, mask, strlen(mask));
        put(o, at, (size_t)(auth + auth_len - at));
    } else {
        put(o, auth, auth_len);
    }
    const char *p = auth + auth_len;
    /* The path, then the query's parameters one by one. */
    size_t path_len = strcspn(p, "?");
    put(o, p, path_len);
    p += path_len;
    while (*p != '\0') {
        put(o, p, 1); /* "?" or "&" */
        p++;
        size_t n = strcspn(p, "&");
        if (strncmp(p, "password=", 9) == 0) {
            put(o, p, 9);
            put(o, mask, strlen(mask));
        } else {
            put(o, p, n);
        }
        p += n;
    }
}

static void mask_pairs(const char *s, struct out *o)
{
    const char *p = s;
    while (*p != '\0') {
        const char *start = p;
        while (is_blank(*p))
            p++;
        const char *key = p;
        while (*p != '\0' && *p != '=' && !is_blank(*p))
            p++;
        size_t key_len = (size_t)(p - key);
        while (is_blank(*p))
            p++;
        if (*p != '=') {
            /* Not key=value: libpq refuses it when connecting. What follows is not shown, since
             * where a password would be in it cannot be told. */
            put(o, start, (size_t)(key - start));
            put(o, mask, strlen(mask));
            return;
        }
        p++;
        while (is_blank(*p))
            p++;
        const char *value = p;
        if (*p == '\'') {
            for (p++; *p != '\0' && *p != '\''; p++)
                if (*p == '\\' && p[1] != '\0')
                    p++;
            if (*p == '\'')
                p++;
        } else {
            while (*p != '\0' && !is_blank(*p)) {
                if (*p == '\\' && p[1] != '\0')
                    p++;
                p++;
            }
        }
        if (key_len == 8 && strncmp(key, "password", 8) == 0) {
            put(o, start, (size_t)(value - start));
            put(o, mask, strlen(mask));
        } else {
            put(o, start, (size_t)(p - start));
        }
    }
}

void conninfo_mask(const char *database, char *out, size_t len)
{
    struct out o = {.buf = out, .len = len, .used = 0};
    if (len > 0)
        out[0] = '\0';
    if (database == NULL)
        return;
    if (is_uri(database))
        mask_uri(database, &o);
    else if (conninfo_is_postgres(database))
        mask_pairs(database, &o);
    else
        put(&o, database, strlen(database));
}
