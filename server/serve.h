/*
 * serve.h - `postern serve`: the libuv loop with the store and the writer, the TLS context, the
 * listeners and their connections, signals, the privilege drop and the graceful shutdown.
 */
#ifndef POSTERN_SERVE_H
#define POSTERN_SERVE_H

#include <stdbool.h>
#include <stddef.h>

struct cfg;
struct smtp_client_creds;
struct tls_ctx;

/*
 * Loads what the configuration names and serve needs before anything else: the TLS certificate
 * and key (checked against each other) and the smarthost password file. `config check` calls
 * it too, so a configuration it passes is one serve can start with. Returns 0 with *tls_out and
 * *creds_out set (NULL when not configured; the caller owns both), or -1 with one line in err
 * naming the file and *tls_failed_out telling whether the TLS files were at fault.
 */
int serve_load_files(const struct cfg *cfg, struct tls_ctx **tls_out,
                     struct smtp_client_creds **creds_out, bool *tls_failed_out, char *err,
                     size_t errlen);

/*
 * Runs until SIGTERM or SIGINT; returns the process exit code: 0 after a clean shutdown, 2 when
 * [server] user names no user, 3 when the TLS files, the smarthost password file, the database,
 * a listening address, the loop or the privilege drop could not be set up (with one line on
 * stderr naming what failed). The files are loaded before the database is opened or created.
 */
int serve_main(struct cfg *cfg, const char *config_path);

#endif
