/*
 * admin.h - the administrative subcommands of INTERFACE.md ("Commands"): domain, user, network,
 * window, queue and config check. Each opens the database itself (the same file serve uses, so
 * they work while it runs), does one thing, prints one line per result on stdout, errors as one
 * line on stderr, and returns the exit code: 0 done, 1 a negative answer (already there, not
 * found), 2 bad usage or input, 3 runtime failure (database unavailable).
 */
#ifndef POSTERN_ADMIN_H
#define POSTERN_ADMIN_H

struct cfg;

enum admin_exit {
    ADMIN_OK = 0,
    ADMIN_NEGATIVE = 1,
    ADMIN_USAGE = 2,
    ADMIN_RUNTIME = 3,
};

/* argv[0] is the subcommand ("domain", "user", ...). */
int admin_domain(const struct cfg *cfg, int argc, char **argv);
int admin_user(const struct cfg *cfg, int argc, char **argv);
int admin_network(const struct cfg *cfg, int argc, char **argv);
int admin_window(const struct cfg *cfg, int argc, char **argv);
int admin_queue(const struct cfg *cfg, int argc, char **argv);
int admin_config(const struct cfg *cfg, int argc, char **argv);
/* postern relay-check: the relay decision and its reason, as the server would take it now;
 * 0 allowed, 1 refused. */
int admin_relay_check(const struct cfg *cfg, int argc, char **argv);

#endif
