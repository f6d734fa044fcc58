/*
 * fuzz_conninfo.c - libFuzzer target for common/pure/conninfo.c, which reads the [server]
 * database value of every configuration.
 *
 * The input is a database value (NUL bytes end it, as in a config line). Properties checked:
 * masking never writes past its buffer and always ends it with a NUL, at every buffer size; a
 * value that is not a connection string comes back unchanged when it fits; masking a value whose
 * only password is a marker never lets the marker through, in key=value form and in a URI.
 * Any broken property aborts, which libFuzzer reports as a crash.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/pure/conninfo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_VALUE 2048

/* Masks value into buffers of several sizes, with a guard byte after each. */
static void mask_checked(const char *value)
{
    static const size_t sizes[] = {1, 2, 8, 64, MAX_VALUE * 2 + 16};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char *buf = malloc(sizes[i] + 1);
        if (buf == NULL)
            abort();
        buf[sizes[i]] = 'G';
        conninfo_mask(value, buf, sizes[i]);
        if (buf[sizes[i]] != 'G' || memchr(buf, '\0', sizes[i]) == NULL)
            abort();
        if (i == sizeof(sizes) / sizeof(sizes[0]) - 1 && !conninfo_is_postgres(value) &&
            strcmp(buf, value) != 0)
            abort();
        free(buf);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_VALUE)
        return 0;
    char value[MAX_VALUE + 1];
    memcpy(value, data, size);
    value[size] = '\0';
    mask_checked(value);

    /* The input with a password appended that holds no blank, quote or backslash: it must never
     * come out. The input itself must not contain the marker, nor end inside a quoted value or an
     * escape (which would swallow the appended pair). */
    static const char marker[] = "Zq7sekretZq7";
    if (strstr(value, "Zq7") != NULL || strchr(value, '\'') != NULL || strchr(value, '\\') != NULL)
        return 0;
    /* Nor end in "key=" (libpq would read the password pair as that key's value). */
    size_t end = strlen(value);
    while (end > 0 && strchr(" \t\n\r\f\v", value[end - 1]) != NULL)
        end--;
    if (end > 0 && value[end - 1] == '=')
        return 0;
    char pairs[MAX_VALUE + 64];
    strcpy(pairs, "host=x ");
    strcat(pairs, value[0] != '\0' && conninfo_is_postgres(value) ? value : "dbname=y");
    strcat(pairs, " password=");
    strcat(pairs, marker);
    char out[sizeof(pairs) + 16];
    conninfo_mask(pairs, out, sizeof(out));
    if (strstr(out, marker) != NULL)
        abort();
    return 0;
}
