/*
 * app.h - the resources a protocol session reaches through conn_app(c). Each event loop has its
 * own struct app (serve.c for the first loop, worker.c for the others), owned by that loop's owner
 * and kept alive until the loop's last connection has closed; sessions borrow. reads, reader,
 * writer and auth are the loop's own and are used on its thread only; cfg, smarthost_creds, disk
 * and dkim are the same for every loop (read-only, or thread-safe where said).
 */
#ifndef POSTERN_APP_H
#define POSTERN_APP_H

struct auth;
struct dkim_cache;
struct disk_reserve;
struct cfg;
struct reader;
struct smtp_client_creds;
struct store;
struct writer;

struct app {
    const struct cfg *cfg; /* borrowed from main */
    /* the loop thread's read connection, where the inline reader runs its jobs; nothing reads
     * through it directly */
    struct store *reads;
    /* The loop's handle for reads (storage/reader.h): every lookup a session makes is a job
     * submitted through it, done now (inline, on reads) or later on this loop (reader
     * threads). */
    struct reader *reader;
    struct writer *writer; /* group-commit writer: every change to the store goes through it */
    struct auth *auth;     /* password checks off the loop, throttling, cache */
    /* [relay] smarthost_user and its password, read at start; NULL: no smarthost AUTH */
    const struct smtp_client_creds *smarthost_creds;
    /* [smtp] min_free_space: new mail waits while the database's disk is nearly full; NULL:
     * no check. Thread-safe (disk_reserve.h). */
    struct disk_reserve *disk;
    /* Parsed DKIM keys of the local domains; thread-safe (server/smtp/dkim_cache.h). NULL: no
     * message is signed. */
    struct dkim_cache *dkim;
};

#endif
