/*
 * serve.h - `postern serve`: the libuv loop with the store and the writer, signals, shutdown.
 */
#ifndef POSTERN_SERVE_H
#define POSTERN_SERVE_H

struct cfg;

/* Runs until SIGTERM or SIGINT; returns the process exit code (0 after a clean shutdown,
 * 3 when the database or the loop could not be set up). */
int serve_main(struct cfg *cfg, const char *config_path);

#endif
