/*
 * store_fixture.h - what the unit tests of the store's modules share: opening a temporary
 * database and failing the test with the store's own message when that does not work. Include
 * after <cmocka.h> and "storage/store.h".
 */
#ifndef POSTERN_TEST_STORE_FIXTURE_H
#define POSTERN_TEST_STORE_FIXTURE_H

/* Opens (creating and migrating) the database at path, or fails the running test. */
static inline struct store *open_ok(const char *path)
{
    char err[512] = "";
    struct store *s = NULL;
    if (store_open(path, &s, err, sizeof(err)) != STORE_OK)
        fail_msg("store_open: %s", err);
    return s;
}

#endif
