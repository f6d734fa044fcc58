/*
 * fuzz_milter.c - libFuzzer target for common/pure/milter.c: what a milter sends the MTA.
 *
 * The input is read as a stream of frames, as the client reads it from a socket; each frame's
 * payload is copied into a heap buffer of exactly its length, so ASan reports any read past it,
 * and decoded. Checked: a frame never claims more than the input holds or more than
 * MILTER_FRAME_LEN_MAX; every string of a decoded reply lies inside its payload with its NUL
 * there too; a REPLYCODE's text has a 4xx or 5xx code; an OPTNEG that negotiates stays within
 * the offer; the step and action tables answer for every step. Violations trap.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/pure/milter.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* s is NULL or a string that ends, NUL included, inside p[0..len). */
static void check_inside(const char *s, const uint8_t *p, size_t len)
{
    if (s == NULL)
        return;
    const uint8_t *u = (const uint8_t *)s;
    CHECK(u >= p && u < p + len);
    CHECK(memchr(u, '\0', (size_t)(p + len - u)) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        uint8_t cmd;
        const uint8_t *payload;
        size_t len, used;
        int st = milter_frame(data + off, size - off, &cmd, &payload, &len, &used);
        if (st != MILTER_FRAME_OK)
            break;
        CHECK(used <= size - off && used == len + 5 && len + 1 <= MILTER_FRAME_LEN_MAX);
        uint8_t *copy = malloc(len > 0 ? len : 1);
        if (copy == NULL)
            return 0;
        if (len > 0)
            memcpy(copy, payload, len);
        struct milter_reply r;
        if (milter_decode_reply(cmd, copy, len, &r) == 0) {
            CHECK((uint8_t)r.kind == cmd);
            check_inside(r.text, copy, len);
            check_inside(r.name, copy, len);
            check_inside(r.value, copy, len);
            check_inside(r.addr, copy, len);
            check_inside(r.args, copy, len);
            for (int i = 0; i < MILTER_STAGE_COUNT; i++)
                check_inside(r.symlist[i], copy, len);
            if (r.kind == MILTER_R_REPLYCODE) {
                int code = milter_replycode(r.text);
                CHECK(code >= 400 && code <= 599);
            }
            if (r.kind == MILTER_R_REPLBODY)
                CHECK(r.body == copy && r.body_len == len);
            if (r.kind == MILTER_R_OPTNEG &&
                milter_negotiate(&r, MILTER_ACT_ALL, MILTER_P_OFFER) == 0)
                CHECK((r.actions & ~MILTER_ACT_ALL) == 0 && (r.protocol & ~MILTER_P_OFFER) == 0 &&
                      r.version >= MILTER_VERSION_MIN && r.version <= MILTER_VERSION);
            for (int s = MILTER_STEP_CONNECT; s <= MILTER_STEP_EOM; s++)
                (void)milter_reply_allowed(r.kind, (enum milter_step)s, r.actions);
        }
        free(copy);
        off += used;
    }
    return 0;
}
