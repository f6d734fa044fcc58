/*
 * config_internal.h - what the files of the configuration module share and nothing outside it
 * uses: the row type of the parameter table (config_table.c), setting one value from its text
 * (config_value.c) and formatting it back (config_print.c). config.h is the contract for
 * everyone else; config.c loads a file or string through these.
 */
#ifndef POSTERN_CONFIG_INTERNAL_H
#define POSTERN_CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"

enum param_type {
    P_HOSTNAME, /* char *, a domain name; "" means the host's own name */
    P_USER,     /* char *, a login name or "" */
    P_SASLNAME, /* char *, a SASL authentication identity or "" */
    P_PATH,     /* char *, resolved against the config file's folder */
    P_DATABASE, /* char *, a PostgreSQL connection string as written (common/pure/conninfo.h),
                   else a SQLite path resolved as P_PATH */
    P_MILTERS,  /* char *, a list of milters (common/pure/milter.h milter_spec_parse) */
    P_BOOL,     /* bool */
    P_UINT,     /* unsigned, min..max */
    P_PORT,     /* uint16_t, min..max */
    P_DURATION, /* uint64_t ms, min..max */
    P_SIZE,     /* uint64_t bytes, min..max */
    P_ENUM,     /* an enum (int-sized), one of names */
    P_LISTEN,   /* struct cfg_listen_list */
    P_CIDRS,    /* struct cfg_cidr_list */
    P_HOSTPORT, /* struct cfg_hostport, host is a name or an address */
    P_IPPORT,   /* struct cfg_hostport, host is a numeric address */
};

struct enum_name {
    const char *name;
    int value;
};

/* Stored by a P_SIZE key given its derived_word, until derive_values replaces it. */
#define CFG_SIZE_DERIVED UINT64_MAX

struct param {
    const char *section;
    const char *key;
    enum param_type type;
    size_t offset; /* of the field in struct cfg */
    const char *default_text;
    uint64_t min, max;             /* P_UINT, P_PORT, P_DURATION, P_SIZE */
    const struct enum_name *names; /* P_ENUM, ends with a NULL name */
    uint64_t warn_below;           /* P_UINT: a value below this is allowed with a warning */
    const char *warn_text; /* P_UINT below warn_below, or a P_BOOL set to yes: why it warns */
    uint16_t default_port; /* P_HOSTPORT, P_IPPORT */
    /* P_SIZE: a word accepted instead of a size, stored as CFG_SIZE_DERIVED and replaced after
     * loading by a value derived from other keys (config.c, derive_values). */
    const char *derived_word;
    /* P_LISTEN: an address may carry the "proxy" marker (the SMTP and POP3 services). */
    bool proxy_marker;
};

/*
 * The parameter table, in the order cfg_print() shows it; every key is declared there and
 * nowhere else. cfg_param_count is at most CFG_PARAMS_MAX (checked where the table is built), so
 * a load can keep one slot per parameter without allocating.
 */
#define CFG_PARAMS_MAX 64
extern const struct param cfg_params[];
extern const size_t cfg_param_count;

/* The row for section and key and its index in cfg_params, or NULL. */
const struct param *cfg_param_find(const char *section, const char *key, size_t *index_out);
/* The cfg_params[].section string equal to name, or NULL when no parameter lives there. */
const char *cfg_section_find(const char *name);

/*
 * Parses value for p into cfg (relative paths are joined to base_dir, which may be NULL); on
 * error, reason says why and the cfg is unchanged. The same function applies the defaults, so a
 * default can never be out of its own range.
 */
int cfg_param_set(struct cfg *cfg, const struct param *p, const char *base_dir, const char *value,
                  char *reason, size_t rlen);
/* Canonical text of p's value in cfg; the same text cfg_param_set accepts back. */
void cfg_param_format(const struct cfg *cfg, const struct param *p, char *buf, size_t len);

bool cfg_listen_equal(const struct cfg_listen *a, const struct cfg_listen *b);

static inline void *cfg_field(struct cfg *cfg, const struct param *p)
{
    return (char *)cfg + p->offset;
}

static inline const void *cfg_cfield(const struct cfg *cfg, const struct param *p)
{
    return (const char *)cfg + p->offset;
}

/* The blanks inih trims around a value, and our reader around a header. */
static inline bool cfg_is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

#endif
