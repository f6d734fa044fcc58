/*
 * app.h - the server-wide resources a protocol session reaches through conn_app(c). serve.c owns
 * every one of them and keeps them alive until the last connection has closed; sessions borrow.
 * Everything here is used on the loop thread only.
 */
#ifndef POSTERN_APP_H
#define POSTERN_APP_H

struct auth;
struct disk_reserve;
struct cfg;
struct smtp_client_creds;
struct store;
struct writer;

struct app {
    const struct cfg *cfg; /* borrowed from main */
    struct store *reads;   /* the loop thread's read connection: short lookups only */
    struct writer *writer; /* group-commit writer: every change to the store goes through it */
    struct auth *auth;     /* password checks off the loop, throttling, cache */
    /* [relay] smarthost_user and its password, read at start; NULL: no smarthost AUTH */
    const struct smtp_client_creds *smarthost_creds;
    /* [smtp] min_free_space: new mail waits while the database's disk is nearly full; NULL:
     * no check. Thread-safe (disk_reserve.h). */
    struct disk_reserve *disk;
};

#endif
