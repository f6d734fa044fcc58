/*
 * error.h - the one error-code convention of postern, and postern_strerror, which names a code
 * from any layer.
 *
 * The convention. A fallible call returns 0 on success or a negative int. Every negative code
 * belongs to exactly one range, and the ranges do not overlap, so a code can never be read as
 * one layer's error when it came from another:
 *
 *   -1 .. -4095          the system's: a negated errno value (-ENOMEM, -EINVAL) or a libuv code
 *                        (UV_E*, UV_EAI_*, UV_EOF). On Unix libuv's UV_E* are the negated errno
 *                        values and its own codes (UV_EAI_*, UV_EOF = -4095) stay inside this
 *                        range too, so the two share it; uv_strerror and strerror(-rc) name them.
 *   -10001 .. -10999     storage/ (enum store_status, STORE_*), named by store_strerror.
 *   -11001 .. -11999     the bounce builder (enum dsn_status_code, DSN_ERR_*), dsn_strerror.
 *   -12001 .. -12999     the SMTP argument parsers (enum smtp_parse_status, SMTP_PARSE_*),
 *                        smtp_parse_strerror.
 *   -13001 .. -13999     DKIM signing (enum dkim_status, DKIM_ERR_*), dkim_strerror.
 *
 * Why ranges rather than out-parameters: codes are already passed through generic int slots (a
 * writer job's status, smtp_client_start's result, which carries either a store code for the
 * body or a libuv code for the connection), and the caller must be able to tell which layer
 * failed. Before, all of them started at -1, and a SQLite failure reading a message body was
 * logged and bounced as "cannot connect (operation not permitted)": -1 is EPERM. With disjoint
 * ranges a caller asks postern_err_is_store(rc) instead of guessing, and postern_strerror(rc)
 * is always right. Each range is 1000 wide, far below libuv's lowest code; the module headers
 * define their codes from the bases below, and common/error.c asserts at compile time that they
 * stay inside their ranges (tests/unit/test_error.c checks every libuv code against them).
 *
 * What is not an error code, and so not in a range: status enums that say what a parser or a
 * filter found (tls_status, smtp_reply_status, dns_status, sasl_status, linereader_status,
 * smtp_data_status). They are typed, returned from one call and consumed by its caller, never
 * passed to a strerror; each has its own _name() for logs where one exists. Nor is the "-1 and
 * one line in err" form of setup functions (writer_start, queue_runner_new, ...): there the text
 * is the error and the -1 only says "failed"; it is never interpreted as a code.
 *
 * A new module with codes of its own takes the next free base here, defines its enum from it,
 * gets a *_strerror, and is added to postern_strerror and to the assertions in error.c.
 */
#ifndef POSTERN_ERROR_H
#define POSTERN_ERROR_H

#include <stdbool.h>

/* The system range: negated errno and libuv codes are in [-POSTERN_ERR_SYSTEM_MAX, -1]. */
#define POSTERN_ERR_SYSTEM_MAX 4095

/* Each module's codes are base - 1 down to base - (POSTERN_ERR_RANGE_SIZE - 1). */
#define POSTERN_ERR_RANGE_SIZE      1000
#define POSTERN_ERR_STORE_BASE      (-10000)
#define POSTERN_ERR_DSN_BASE        (-11000)
#define POSTERN_ERR_SMTP_PARSE_BASE (-12000)
#define POSTERN_ERR_DKIM_BASE       (-13000)

/* True when code lies in the range that starts at base (see above). */
#define POSTERN_ERR_IN_RANGE(code, base) ((code) < (base) && (code) > (base)-POSTERN_ERR_RANGE_SIZE)

/* A negated errno value or a libuv code. */
bool postern_err_is_system(int code);
/* A STORE_* failure (STORE_OK is not one). */
bool postern_err_is_store(int code);

/*
 * A short static description of any code: 0 is "success", a system code is named by libuv (or
 * strerror), a module's code by that module's *_strerror; a code in no range is "unknown error
 * code". Never NULL. For log lines and the error texts of the queue.
 */
const char *postern_strerror(int code);

#endif
