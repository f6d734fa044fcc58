/*
 * main.c - postern's command line: global options, help and version, loading the configuration,
 * then the command table in server/cli/admin.c, which runs serve and every administrative
 * command. Exit codes: 0 success, 1 a negative answer, 2 bad usage or configuration, 3 runtime
 * failure.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/password.h"
#include "server/cli/admin.h"

#define DEFAULT_CONFIG "postern.conf"

static void usage(FILE *out)
{
    fputs("usage: postern [-c FILE] COMMAND [ARGS]\n"
          "\n"
          "commands:\n"
          "  serve                                 run the SMTP and POP3 server\n"
          "  config check                          validate and print the configuration\n"
          "  domain add|del|list [DOMAIN]          local domains\n"
          "  user add|del|passwd|list [ADDRESS]    mailbox users (password on stdin or prompted)\n"
          "  network add|del|list [CIDR]           trusted networks allowed to relay\n"
          "  window list|open|close [IP] [--user ADDRESS] [--for DURATION]\n"
          "                                        POP-before-SMTP relay windows\n"
          "  queue list|flush|drop [ID]            the outbound queue (flush: try all now)\n"
          "  relay-check --ip IP [--user ADDRESS] --from ADDR --to ADDR\n"
          "                                        the relay decision and its reason\n"
          "  selftest [--host H --smtp PORT ...] [--user ADDRESS --password-file F]\n"
          "                                        audit a running server from the outside\n"
          "  fault add POINT ACTION [...] | fault del ID | fault list\n"
          "                                        fault injection rules ([server] faults = yes)\n"
          "\n"
          "-c FILE defaults to ./postern.conf when it exists, otherwise built-in defaults.\n"
          "exit codes: 0 ok, 1 negative answer, 2 bad usage or configuration, 3 runtime failure\n",
          out);
}

/* Removes "-c FILE", "--config FILE" and "--config=FILE" from argv wherever they stand, so the
 * option works before and after the command. Returns the new argc, or -1 when the value is
 * missing. */
static int take_config_option(int argc, char **argv, const char **path_out)
{
    int out = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc)
                return -1;
            *path_out = argv[++i];
            continue;
        }
        if (strncmp(a, "--config=", 9) == 0) {
            *path_out = a + 9;
            continue;
        }
        argv[out++] = argv[i];
    }
    return out;
}

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    int n = take_config_option(argc - 1, argv + 1, &config_path);
    if (n < 0) {
        fputs("postern: -c needs a file name\n", stderr);
        return ADMIN_USAGE;
    }
    char **args = argv + 1;
    if (n == 0) {
        usage(stderr);
        return ADMIN_USAGE;
    }
    if (strcmp(args[0], "help") == 0 || strcmp(args[0], "--help") == 0 ||
        strcmp(args[0], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(args[0], "version") == 0 || strcmp(args[0], "--version") == 0) {
        printf("postern %s\n", POSTERN_VERSION);
        return 0;
    }
    if (password_init() != 0) {
        fputs("postern: cannot initialise libsodium\n", stderr);
        return ADMIN_RUNTIME;
    }

    struct cfg cfg;
    char err[1024];
    int rc;
    if (config_path == NULL && access(DEFAULT_CONFIG, F_OK) == 0)
        config_path = DEFAULT_CONFIG;
    if (config_path != NULL)
        rc = cfg_load(&cfg, config_path, err, sizeof(err));
    else
        rc = cfg_init_defaults(&cfg) == 0 ? 0 : (snprintf(err, sizeof(err), "out of memory"), -1);
    if (rc != 0) {
        fprintf(stderr, "%s\n", err);
        cfg_free(&cfg);
        return ADMIN_USAGE;
    }
    log_set_level(cfg.server.log_level);

    if (admin_is_command(args[0])) {
        rc = admin_run(&cfg, config_path, n, args);
    } else {
        fprintf(stderr, "postern: unknown command \"%s\"\n", args[0]);
        usage(stderr);
        rc = ADMIN_USAGE;
    }
    cfg_free(&cfg);
    return rc;
}
