/*
 * config_print.c - the configuration as text: each value in the canonical form config_value.c
 * accepts back, and `postern config check`'s whole file of effective values, section by section
 * in the parameter table's order, which loads back to the same struct cfg.
 */
#include <stdio.h>
#include <string.h>

#include "common/config_internal.h"
#include "common/pure/conninfo.h"
#include "common/pure/duration.h"

static void hostport_format(const struct cfg_hostport *hp, char *buf, size_t len)
{
    if (hp->host[0] == '\0')
        snprintf(buf, len, "%s", "");
    else if (strchr(hp->host, ':') != NULL)
        snprintf(buf, len, "[%s]:%u", hp->host, (unsigned)hp->port);
    else
        snprintf(buf, len, "%s:%u", hp->host, (unsigned)hp->port);
}

void cfg_param_format(const struct cfg *cfg, const struct param *p, char *buf, size_t len)
{
    const void *field = cfg_cfield(cfg, p);

    buf[0] = '\0';
    switch (p->type) {
    case P_HOSTNAME:
    case P_USER:
    case P_SASLNAME:
    case P_DATABASE: {
        /* `config check` prints what is in effect, but never a password in clear. */
        const char *s = *(char *const *)field;
        conninfo_mask(s != NULL ? s : "", buf, len);
        break;
    }
    case P_PATH:
    case P_MILTERS: {
        const char *s = *(char *const *)field;
        snprintf(buf, len, "%s", s != NULL ? s : "");
        break;
    }
    case P_BOOL:
        snprintf(buf, len, "%s", *(const bool *)field ? "yes" : "no");
        break;
    case P_UINT:
        snprintf(buf, len, "%u", *(const unsigned *)field);
        break;
    case P_PORT:
        snprintf(buf, len, "%u", (unsigned)*(const uint16_t *)field);
        break;
    case P_DURATION:
        duration_format(*(const uint64_t *)field, buf, len);
        break;
    case P_SIZE:
        size_format(*(const uint64_t *)field, buf, len);
        break;
    case P_ENUM:
        for (const struct enum_name *e = p->names; e->name != NULL; e++) {
            if (*(const int *)field == e->value) {
                snprintf(buf, len, "%s", e->name);
                break;
            }
        }
        break;
    case P_LISTEN: {
        const struct cfg_listen_list *list = field;
        size_t used = 0;
        for (size_t i = 0; i < list->count && used < len; i++) {
            char text[96];
            cfg_listen_format(&list->addrs[i], text, sizeof(text));
            int n = snprintf(buf + used, len - used, "%s%s%s", i > 0 ? ", " : "", text,
                             list->addrs[i].proxy ? " proxy" : "");
            if (n < 0)
                break;
            used += (size_t)n;
        }
        break;
    }
    case P_CIDRS: {
        const struct cfg_cidr_list *list = field;
        size_t used = 0;
        for (size_t i = 0; i < list->count && used < len; i++) {
            char text[CIDR_STRLEN];
            cidr_format(&list->nets[i], text, sizeof(text));
            int n = snprintf(buf + used, len - used, "%s%s", i > 0 ? ", " : "", text);
            if (n < 0)
                break;
            used += (size_t)n;
        }
        break;
    }
    case P_HOSTPORT:
    case P_IPPORT:
        hostport_format(field, buf, len);
        break;
    }
}

int cfg_print(const struct cfg *cfg, FILE *out)
{
    const char *section = NULL;
    char value[CFG_LINE_MAX_BYTES];

    for (size_t i = 0; i < cfg_param_count; i++) {
        const struct param *p = &cfg_params[i];
        if (section == NULL || strcmp(section, p->section) != 0) {
            if (fprintf(out, "%s[%s]\n", section != NULL ? "\n" : "", p->section) < 0)
                return -1;
            section = p->section;
        }
        cfg_param_format(cfg, p, value, sizeof(value));
        if (fprintf(out, "%s =%s%s\n", p->key, value[0] != '\0' ? " " : "", value) < 0)
            return -1;
    }
    return fflush(out) == 0 ? 0 : -1;
}
