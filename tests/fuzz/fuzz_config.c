/*
 * fuzz_config.c - libFuzzer target for the configuration reader, common/config.c (with
 * config_value.c and config_print.c behind it).
 *
 * Input layout: byte 0 picks the folder relative paths resolve against (bit 0: none, else a
 * fixed absolute one that need not exist); the rest, NUL-ended, is the file's text, loaded with
 * cfg_load_string. No file is opened or written: the reader only joins path text, and the
 * printed configuration goes to an open_memstream buffer. Every allocation is freed, so the
 * leak checker reports whatever the reader loses on any path.
 *
 * Checked: a failed load leaves one line of error text and a struct with nothing to free; a
 * successful one has every string set, at most CFG_WARNINGS_MAX warnings, and prints (cfg_print)
 * a file that loads back and prints the same text again: what `config check` shows is what
 * `serve` runs. Violations trap.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

/* A few lines past CFG_LINE_MAX_BYTES are enough to reach every error. */
#define INPUT_MAX_BYTES (4 * CFG_LINE_MAX_BYTES)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool all_zero(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        if (b[i] != 0)
            return false;
    }
    return true;
}

/* cfg printed into a malloc'd string (the caller frees it), or NULL when out of memory. */
static char *print(const struct cfg *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        return NULL;
    int rc = cfg_print(cfg, f);
    if (fclose(f) != 0 || rc != 0) {
        free(text);
        return NULL;
    }
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > INPUT_MAX_BYTES)
        return 0;
    const char *base_dir = (data[0] & 1) ? NULL : "/nonexistent/postern-fuzz";
    char *text = malloc(size);
    if (text == NULL)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';

    struct cfg cfg;
    char err[512];
    memset(err, 'x', sizeof(err));
    if (cfg_load_string(&cfg, text, "fuzz.conf", base_dir, err, sizeof(err)) != 0) {
        CHECK(memchr(err, '\0', sizeof(err)) != NULL);
        CHECK(err[0] != '\0' && strchr(err, '\n') == NULL);
        CHECK(all_zero(&cfg, sizeof(cfg)));
        cfg_free(&cfg);
        free(text);
        return 0;
    }
    CHECK(cfg.server.hostname != NULL && cfg.server.database != NULL && cfg.server.user != NULL);
    CHECK(cfg.tls.certificate != NULL && cfg.tls.key != NULL);
    CHECK(cfg.relay.smarthost_user != NULL && cfg.relay.smarthost_password_file != NULL);
    CHECK(cfg.warning_count <= CFG_WARNINGS_MAX);

    char *first = print(&cfg);
    if (first != NULL) {
        struct cfg again;
        CHECK(cfg_load_string(&again, first, "printed.conf", base_dir, err, sizeof(err)) == 0);
        char *second = print(&again);
        CHECK(second == NULL || strcmp(first, second) == 0);
        free(second);
        cfg_free(&again);
    }
    free(first);
    cfg_free(&cfg);
    free(text);
    return 0;
}
