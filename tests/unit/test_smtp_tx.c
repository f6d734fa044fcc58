/*
 * test_smtp_tx.c - the life of a struct smtp_tx (server/smtp/smtp_tx.c) as the SMTP session
 * drives it: allocated empty at MAIL (smtp_tx_new), cleared for a new MAIL in the same
 * allocation (smtp_tx_clear), and freed with everything hanging off it at RSET, at the end of a
 * transaction and at close (smtp_tx_free), which leaves the session's pointer NULL. Under
 * POSTERN_SANITIZE=ON, LeakSanitizer proves that a freed transaction leaves nothing behind: its
 * recipients, its signer, its quarantine reason. The commands themselves (MAIL, RCPT, DATA,
 * BDAT, delivery) need a connection, a store and a writer, and are tested end to end
 * (tests/e2e/test_smtp.py, test_bdat.py, test_dkim.py, test_milter.py).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "server/smtp/smtp_tx.h"

/* A new transaction is empty: no sender, no recipient, no signer, no spool file. */
static void test_new_is_empty(void **state)
{
    (void)state;
    struct smtp_tx *tx = smtp_tx_new(NULL, NULL);
    assert_non_null(tx);
    assert_int_equal(tx->n_local, 0);
    assert_int_equal(tx->n_remote, 0);
    assert_int_equal(tx->n_rcpts, 0);
    assert_string_equal(tx->sender_text, "");
    assert_null(tx->dkim);
    assert_null(tx->window_refusal);
    assert_false(tx->spooling);
    assert_int_equal(tx->job_kind, SMTP_JOB_NONE);
    smtp_tx_free(&tx);
    assert_null(tx);
}

/* Recipients are kept once each; clear forgets them and the struct serves the next MAIL. */
static void test_clear_then_reuse(void **state)
{
    (void)state;
    struct smtp_tx *tx = smtp_tx_new(NULL, NULL);
    assert_non_null(tx);
    for (int64_t id = 1; id <= 20; id++) /* past the first capacity: the array grows */
        assert_int_equal(smtp_tx_add_local(tx, id), 0);
    assert_int_equal(smtp_tx_add_local(tx, 7), 0);
    assert_int_equal(tx->n_local, 20);
    assert_int_equal(smtp_tx_add_remote(tx, "a@remote.test"), 0);
    assert_int_equal(smtp_tx_add_remote(tx, "a@remote.test"), 0);
    assert_int_equal(smtp_tx_add_remote(tx, "b@remote.test"), 0);
    assert_int_equal(tx->n_remote, 2);
    assert_int_equal(smtp_tx_dkim_start(tx), 0);
    assert_non_null(tx->dkim);

    smtp_tx_clear(tx);
    assert_int_equal(tx->n_local, 0);
    assert_int_equal(tx->n_remote, 0);
    assert_null(tx->local_ids);
    assert_null(tx->remote);
    assert_null(tx->dkim);

    assert_int_equal(smtp_tx_add_remote(tx, "c@remote.test"), 0);
    assert_int_equal(tx->n_remote, 1);
    assert_string_equal(tx->remote[0], "c@remote.test");
    smtp_tx_free(&tx);
    assert_null(tx);
}

/* Free takes everything with it (LeakSanitizer checks) and is safe on NULL and twice. */
static void test_free_owns_everything(void **state)
{
    (void)state;
    struct smtp_tx *tx = smtp_tx_new(NULL, NULL);
    assert_non_null(tx);
    assert_int_equal(smtp_tx_add_local(tx, 42), 0);
    assert_int_equal(smtp_tx_add_remote(tx, "r@remote.test"), 0);
    assert_int_equal(smtp_tx_dkim_start(tx), 0);
    assert_int_equal(smtp_tx_dkim_start(tx), 0); /* a second start reuses the signer */
    tx->quarantine = strdup("held by a milter");
    assert_non_null(tx->quarantine);
    smtp_tx_free(&tx);
    assert_null(tx);
    smtp_tx_free(&tx);
    smtp_tx_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_is_empty),
        cmocka_unit_test(test_clear_then_reuse),
        cmocka_unit_test(test_free_owns_everything),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
