/*
 * serve.h - `postern serve`: the libuv loop with the store and the writer, the TLS context, the
 * listeners and their connections, signals, the privilege drop and the graceful shutdown.
 */
#ifndef POSTERN_SERVE_H
#define POSTERN_SERVE_H

struct cfg;

/*
 * Runs until SIGTERM or SIGINT; returns the process exit code: 0 after a clean shutdown, 2 when
 * [server] user names no user, 3 when the database, the TLS files, a listening address, the loop
 * or the privilege drop could not be set up (with one line on stderr naming what failed).
 */
int serve_main(struct cfg *cfg, const char *config_path);

#endif
