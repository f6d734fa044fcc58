/*
 * fault.c - `postern fault add|del|list`: the fault injection rules in the database, which a
 * running server with [server] faults = yes picks up within a second (server/fault/fault.c).
 * A rule is checked here by the same function the server checks it with when it loads it
 * (fault_rule_build, common/pure/fault.c), so what add accepts is what the server runs. The
 * command table rows are in admin.c; the shared types in admin_internal.h.
 *
 *   postern fault add POINT ACTION [--ip CIDR] [--user ADDR] [--from ADDR] [--to ADDR]
 *                     [--reply "CODE TEXT"] [--delay DURATION] [--after OCTETS]
 *                     [--times N] [--probability P [--seed S]] [--msg N]
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/pure/duration.h"
#include "server/cli/admin.h"
#include "server/cli/admin_internal.h"
#include "storage/faults.h"
#include "storage/store.h"

const char fault_usage[] =
    "postern fault add POINT ACTION [--ip CIDR] [--user ADDR] [--from ADDR] [--to ADDR] "
    "[--reply \"CODE TEXT\"] [--delay DURATION] [--after OCTETS] [--times N] "
    "[--probability P] [--seed S] [--msg N] | postern fault del ID | postern fault list";

/* A decimal count of at least min; -1 after saying which option is wrong. */
static int parse_count(const char *opt, const char *s, long long min, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || s[0] == '+' || s[0] == ' ') {
        admin_say_error("invalid --%s \"%s\" (expected a whole number from %lld)", opt, s, min);
        return -1;
    }
    *out = v;
    return 0;
}

int check_fault_add(const struct args *a, struct input *in)
{
    struct fault_spec *f = &in->fault;
    f->point = a->pos[0];
    f->action = a->pos[1];
    f->client = a->opt[OPT_IP] ? a->opt[OPT_IP] : "";
    f->user = a->opt[OPT_USER] ? a->opt[OPT_USER] : "";
    f->sender = a->opt[OPT_FROM] ? a->opt[OPT_FROM] : "";
    f->recipient = a->opt[OPT_TO] ? a->opt[OPT_TO] : "";
    f->reply = a->opt[OPT_REPLY] ? a->opt[OPT_REPLY] : "";
    f->ppm = FAULT_PPM_ALWAYS;
    if (a->opt[OPT_DELAY] != NULL) {
        uint64_t ms = 0;
        if (duration_parse(a->opt[OPT_DELAY], &ms) != 0 || ms > FAULT_DELAY_MAX_MS) {
            admin_say_error(
                "invalid --delay \"%s\" (expected a duration such as 500ms or 2s, at most "
                "10m)",
                a->opt[OPT_DELAY]);
            return -1;
        }
        f->delay_ms = (int64_t)ms;
    }
    if ((a->opt[OPT_AFTER] && parse_count("after", a->opt[OPT_AFTER], 0, &f->after_bytes)) ||
        (a->opt[OPT_TIMES] && parse_count("times", a->opt[OPT_TIMES], 1, &f->times)) ||
        (a->opt[OPT_SEED] && parse_count("seed", a->opt[OPT_SEED], 0, &f->seed)) ||
        (a->opt[OPT_MSG] && parse_count("msg", a->opt[OPT_MSG], 1, &f->message)))
        return -1;
    if (a->opt[OPT_PROBABILITY] != NULL) {
        uint32_t ppm = 0;
        const char *why = NULL;
        if (fault_probability_parse(a->opt[OPT_PROBABILITY], &ppm, &why) != 0) {
            admin_say_error("invalid --probability \"%s\": %s", a->opt[OPT_PROBABILITY], why);
            return -1;
        }
        f->ppm = ppm;
    }
    struct fault_rule r;
    char err[256];
    if (fault_rule_build(f, &r, err, sizeof(err)) != 0) {
        admin_say_error("invalid fault: %s; usage: %s", err, fault_usage);
        return -1;
    }
    /* Options the action ignores would make a rule that does less than it reads. */
    if ((a->opt[OPT_DELAY] && r.action != FAULT_DELAY) ||
        (a->opt[OPT_AFTER] && r.action != FAULT_DROP_BODY)) {
        admin_say_error("invalid fault: --delay goes with delay, --after with drop-body");
        return -1;
    }
    if (a->opt[OPT_SEED] && a->opt[OPT_PROBABILITY] == NULL) {
        admin_say_error("invalid fault: --seed goes with --probability");
        return -1;
    }
    return 0;
}

int check_fault_id(const struct args *a, struct input *in)
{
    int64_t id = 0;
    if (parse_count("id", a->pos[0], 1, &id) != 0)
        return -1;
    in->id = id;
    return 0;
}

/* One line per rule, key=value, the options that differ from the defaults only. */
static void format_rule(int64_t id, const struct fault_spec *f, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "%" PRId64 " %s %s", id, f->point, f->action);
    const struct {
        const char *key, *value;
    } texts[] = {{"ip", f->client}, {"user", f->user}, {"from", f->sender}, {"to", f->recipient}};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]) && n < len; i++) {
        if (texts[i].value[0] != '\0')
            n += (size_t)snprintf(buf + n, len - n, " %s=%s", texts[i].key, texts[i].value);
    }
    if (n < len && f->message > 0)
        n += (size_t)snprintf(buf + n, len - n, " msg=%" PRId64, f->message);
    if (n < len && f->reply[0] != '\0')
        n += (size_t)snprintf(buf + n, len - n, " reply=\"%s\"", f->reply);
    if (n < len && f->delay_ms > 0)
        n += (size_t)snprintf(buf + n, len - n, " delay=%" PRId64 "ms", f->delay_ms);
    if (n < len && strcmp(f->action, "drop-body") == 0)
        n += (size_t)snprintf(buf + n, len - n, " after=%" PRId64, f->after_bytes);
    if (n < len && f->times > 0)
        n += (size_t)snprintf(buf + n, len - n, " times=%" PRId64, f->times);
    if (n < len && f->ppm < FAULT_PPM_ALWAYS)
        snprintf(buf + n, len - n, " probability=%" PRId64 ".%06" PRId64 " seed=%" PRId64,
                 f->ppm / FAULT_PPM_ALWAYS, f->ppm % FAULT_PPM_ALWAYS, f->seed);
}

int run_fault_add(struct store *s, const struct args *a, const struct input *in)
{
    int64_t id = 0;
    int rc = admin_store_result(s, store_fault_add(s, &in->fault, store_now_ms(), &id), "");
    if (rc != 0)
        return rc;
    char line[1024];
    format_rule(id, &in->fault, line, sizeof(line));
    printf("added fault %s\n", line);
    if (!a->cfg->server.faults)
        admin_say_error(
            "warning: [server] faults is no: the server ignores the rules until it is yes");
    return rc;
}

int run_fault_del(struct store *s, const struct args *a, const struct input *in)
{
    char msg[100];
    snprintf(msg, sizeof(msg), "no such fault: %lld", in->id);
    int rc = admin_store_result(s, store_fault_del(s, in->id), msg);
    if (rc == 0)
        printf("deleted fault %lld\n", in->id);
    return rc;
}

static int print_rule(void *ctx, int64_t id, const struct fault_spec *f)
{
    char line[1024];
    format_rule(id, f, line, sizeof(line));
    printf("%s\n", line);
    (*(size_t *)ctx)++;
    return 0;
}

int run_fault_list(struct store *s, const struct args *a, const struct input *in)
{
    size_t rows = 0;
    int rc = admin_store_result(s, store_fault_list(s, print_rule, &rows), "");
    admin_say_if_empty(rc, rows, "no fault rules");
    return rc;
}
