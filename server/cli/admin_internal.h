/*
 * admin_internal.h - shared by the files of server/cli/ that hold command handlers (admin.c,
 * window_queue.c, dkim.c, fault.c): the options, the arguments as the dispatcher split them, what
 * check functions make of them, and the helpers that print errors and map store codes to exit
 * codes. Nothing outside server/cli/ includes this; the table itself stays in admin.c.
 */
#ifndef POSTERN_ADMIN_INTERNAL_H
#define POSTERN_ADMIN_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pure/address.h"
#include "common/pure/cidr.h"
#include "common/pure/dkim.h"
#include "common/pure/fault.h"

struct store;

/* The options any command may take; a table row says which of them it accepts. opt_names in
 * admin.c spells them, in this order. */
enum opt {
    OPT_IP,
    OPT_USER,
    OPT_FROM,
    OPT_TO,
    OPT_FOR,
    OPT_SELECTOR,
    OPT_ALGORITHM,
    OPT_BITS,
    OPT_REPLY,
    OPT_DELAY,
    OPT_AFTER,
    OPT_TIMES,
    OPT_PROBABILITY,
    OPT_SEED,
    OPT_MSG,
    OPT_COUNT,
};
#define OPT_BIT(o) (1u << (o))

/* No action takes more than two positional arguments (`fault add POINT ACTION`). */
#define ARGS_MAX_POS 2
/* The max_pos of a command that reads its own options (struct args' argc/argv). */
#define ARGS_OWN_OPTIONS UCHAR_MAX

/* The command line as the dispatcher split it; the strings are borrowed from argv. */
struct args {
    struct cfg *cfg; /* borrowed; only serve changes it (on reload) */
    const char *config_path;
    const char *pos[ARGS_MAX_POS];
    size_t npos;
    const char *opt[OPT_COUNT]; /* NULL when not given */
    int argc;                   /* the words after the command (and action), unparsed */
    char **argv;
};

/* What a check function made of the arguments: validated, normalised, ready for the store. */
struct input {
    char domain[ADDRESS_DOMAIN_MAX_BYTES + 1]; /* a domain, or the domain of address */
    bool has_domain;
    char address[ADDRESS_PATH_MAX_BYTES + 1];
    char user[ADDRESS_STRLEN]; /* --user; "" when not given */
    struct cidr net;
    char key[CIDR_STRLEN]; /* the network's text, or a window's key */
    uint64_t duration_ms;
    long long id;
    struct ip_addr ip;
    struct address sender, rcpt;
    enum address_path_kind sender_kind, rcpt_kind;
    char selector[DKIM_SELECTOR_MAX_BYTES + 1]; /* --selector, lower case; "" when not given */
    enum dkim_alg alg;                          /* --algorithm, ed25519 when not given */
    unsigned bits;                              /* --bits for RSA */
    struct fault_spec fault; /* fault add: checked by fault_rule_build; strings borrowed */
};

/* "postern: " and one line on stderr. */
void admin_say_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Ends a listing: an empty one says `what` on stderr; stdout stays empty. */
void admin_say_if_empty(int rc, size_t rows, const char *what);
/* Maps a store status to an exit code, printing negative_msg for a negative answer and the
 * database error for a failure. */
int admin_store_result(struct store *s, int status, const char *negative_msg);
/* The first positional argument as a domain, normalised into in->domain. */
int admin_check_domain(const struct args *a, struct input *in);

/* The window and queue commands (server/cli/window_queue.c). */
int window_check_ip(const struct args *a, struct input *in);
int window_check_open(const struct args *a, struct input *in);
int queue_check_id(const struct args *a, struct input *in);
int window_run_list(struct store *s, const struct args *a, const struct input *in);
int window_run_open(struct store *s, const struct args *a, const struct input *in);
int window_run_close(struct store *s, const struct args *a, const struct input *in);
int queue_run_list(struct store *s, const struct args *a, const struct input *in);
int queue_run_flush(struct store *s, const struct args *a, const struct input *in);
int queue_run_drop(struct store *s, const struct args *a, const struct input *in);

/* The dkim command (server/cli/dkim.c). */
int dkim_check_keygen(const struct args *a, struct input *in);
int dkim_check_show(const struct args *a, struct input *in);
int dkim_check_del(const struct args *a, struct input *in);
int dkim_run_keygen(struct store *s, const struct args *a, const struct input *in);
int dkim_run_list(struct store *s, const struct args *a, const struct input *in);
int dkim_run_show(struct store *s, const struct args *a, const struct input *in);
int dkim_run_del(struct store *s, const struct args *a, const struct input *in);

/* The fault command (server/cli/fault.c). */
extern const char fault_usage[];
#define FAULT_ADD_OPTS                                                                             \
    (OPT_BIT(OPT_IP) | OPT_BIT(OPT_USER) | OPT_BIT(OPT_FROM) | OPT_BIT(OPT_TO) |                   \
     OPT_BIT(OPT_REPLY) | OPT_BIT(OPT_DELAY) | OPT_BIT(OPT_AFTER) | OPT_BIT(OPT_TIMES) |           \
     OPT_BIT(OPT_PROBABILITY) | OPT_BIT(OPT_SEED) | OPT_BIT(OPT_MSG))
int check_fault_add(const struct args *a, struct input *in);
int check_fault_id(const struct args *a, struct input *in);
int run_fault_add(struct store *s, const struct args *a, const struct input *in);
int run_fault_del(struct store *s, const struct args *a, const struct input *in);
int run_fault_list(struct store *s, const struct args *a, const struct input *in);

#endif
