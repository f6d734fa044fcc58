/*
 * fuzz_fault.c - libFuzzer target for common/pure/fault.c.
 *
 * The input is split at newlines into a rule's text fields (point, action, client, user, sender,
 * recipient, reply, probability); its first eight octets also give the numbers. A rule that
 * builds must keep its promises: a reply or stall has a reply line of its point's protocol
 * without CR or LF, a stall sends part of it, a rule matches the facts it names at its own point
 * and no other point, and its decisions repeat. Any broken property aborts.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/pure/fault.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FIELDS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 2048)
        return 0;
    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    const char *f[FIELDS];
    char *p = text;
    for (int i = 0; i < FIELDS; i++) {
        f[i] = p;
        char *nl = p != NULL ? strchr(p, '\n') : NULL;
        if (nl != NULL)
            *nl = '\0';
        p = nl != NULL ? nl + 1 : text + size;
    }
    int64_t n[4] = {0};
    for (size_t i = 0; i < 8 && i < size; i++)
        n[i % 4] = n[i % 4] * 257 + data[i];
    uint32_t ppm = FAULT_PPM_ALWAYS;
    const char *why = NULL;
    if (fault_probability_parse(f[7], &ppm, &why) != 0) {
        if (why == NULL)
            abort();
        ppm = FAULT_PPM_ALWAYS;
    } else if (ppm > FAULT_PPM_ALWAYS) {
        abort();
    }
    struct fault_spec s = {.point = f[0],
                           .action = f[1],
                           .client = f[2],
                           .user = f[3],
                           .sender = f[4],
                           .recipient = f[5],
                           .reply = f[6],
                           .message = n[2] % 3,
                           .delay_ms = n[0] % 700000,
                           .after_bytes = n[1],
                           .times = n[2] % 5,
                           .ppm = (int64_t)ppm,
                           .seed = n[3]};
    struct fault_rule r;
    char err[256];
    if (fault_rule_build(&s, &r, err, sizeof(err)) != 0) {
        if (err[0] == '\0')
            abort();
        free(text);
        return 0;
    }
    if (r.action == FAULT_REPLY || r.action == FAULT_STALL) {
        if (r.reply[0] == '\0' || strpbrk(r.reply, "\r\n") != NULL)
            abort();
        if (fault_point_is_pop3(r.point) != (strncmp(r.reply, "-ERR", 4) == 0))
            abort();
        size_t k = fault_stall_bytes(r.reply);
        if (k == 0 || k >= strlen(r.reply) + (strlen(r.reply) < 2))
            abort();
    }
    struct fault_facts facts = {r.has_client ? &r.client.net : NULL, r.user, r.sender, r.recipient,
                                r.message};
    if (!fault_rule_matches(&r, r.point, &facts))
        abort();
    for (int q = 0; q < FAULT_POINT_COUNT; q++) {
        if (q != (int)r.point && fault_rule_matches(&r, (enum fault_point)q, &facts))
            abort();
    }
    for (uint64_t k = 0; k < 4; k++) {
        if (fault_rule_fires(&r, k, 0) != fault_rule_fires(&r, k, 0))
            abort();
    }
    if (r.times != 0 && fault_rule_fires(&r, 0, r.times))
        abort();
    free(text);
    return 0;
}
