/*
 * admin.h - the command line's commands: serve, config check, domain, user, network, window, dkim,
 * queue, relay-check and selftest, read from one table in admin.c. Each administrative command
 * opens the database itself (the same file serve uses, so they work while it runs), does one
 * thing, prints one line per result on stdout, errors as one line on stderr, and returns the
 * exit code: 0 done, 1 a negative answer (already there, not found, relay refused), 2 bad usage
 * or input, 3 runtime failure (database unavailable). selftest opens no database: it talks to a
 * running server (server/selftest/). Global options and loading the configuration are main.c's.
 */
#ifndef POSTERN_ADMIN_H
#define POSTERN_ADMIN_H

#include <stdbool.h>

struct cfg;

enum admin_exit {
    ADMIN_OK = 0,
    ADMIN_NEGATIVE = 1,
    ADMIN_USAGE = 2,
    ADMIN_RUNTIME = 3,
};

/* Whether name (argv[0] after the global options) is one of the table's commands. */
bool admin_is_command(const char *name);

/*
 * Runs the command argv[0] with its action and arguments; argv[0] must pass admin_is_command.
 * A missing or unknown action, a wrong number of arguments or a missing option prints the
 * command's usage line and returns ADMIN_USAGE. cfg is borrowed (serve reloads it in place);
 * config_path is the file it came from, NULL for the built-in defaults.
 */
int admin_run(struct cfg *cfg, const char *config_path, int argc, char **argv);

#endif
