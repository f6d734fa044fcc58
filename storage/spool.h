/*
 * spool.h - spool files: where the part of an incoming message that does not fit the SMTP
 * transaction's in-memory part waits until the writer copies it into the database.
 *
 * Why: a transaction used to hold the whole message in memory up to max_message_size, so 100
 * clients sending 25 MB each held 2.5 GB. Now the DATA scanner (common/pure/smtp_data.h) keeps a
 * small in-memory part and spills the rest, as it arrives, into one spool file per transaction;
 * the final writer job (store_deliver, storage/mailbox.h) reads the file into the message row,
 * and the 250 still comes only after that COMMIT. Memory per transaction is the in-memory part,
 * whatever the message size; the spool files are page cache and disk, not process memory.
 *
 * Where: the directory "<database>-spool" beside a SQLite database (like its -wal and -shm files),
 * mode 0700, created and emptied by spool_dir_prepare (the writer calls it at start). A PostgreSQL
 * database has no folder on this machine: its spool directory is
 * "$TMPDIR/postern-spool-<uid>-<hash of the connection string>" (TMPDIR when it is an absolute
 * path, else SPOOL_PG_BASE_DIR), one per user and database, so two nodes on one machine or two
 * databases never share one.
 *
 * Nothing half-received is ever visible: a spool file has no name while it is in use. It is
 * created under a name ("tx-XXXXXX", mkstemp, 0600) and unlinked at once, so the only handle on
 * it is the descriptor: closing it (the transaction's end: RSET, a dropped connection, the
 * delivery's done callback) frees the space, and so does a crash. Only a crash between the create
 * and the unlink (two system calls) can leave a named file; spool_dir_prepare removes those at the
 * next start. Nothing of a spool file becomes mail until store_deliver's transaction commits.
 *
 * What it does not do: decide what spills (the scanner and server/smtp/smtp_tx.c do), or touch
 * SQLite. The functions are plain system calls; the write runs on the loop thread (a page-cache
 * write of at most the in-memory part at a time), the read on the writer thread.
 */
#ifndef POSTERN_SPOOL_H
#define POSTERN_SPOOL_H

#include <stddef.h>
#include <stdint.h>

/* Appended to the database path to name the spool directory. */
#define SPOOL_DIR_SUFFIX "-spool"
/* Where a PostgreSQL store's spool directory goes without TMPDIR: on disk, not a tmpfs in
 * memory, which would hold what spooling exists to keep out of memory (FHS: kept across
 * reboots, where /tmp may be memory). */
#define SPOOL_PG_BASE_DIR "/var/tmp"

/* The spool directory of db_path (see Where above) into out. 0, or -ENAMETOOLONG when it does not
 * fit len. */
int spool_dir_path(const char *db_path, char *out, size_t len);
/*
 * Creates the spool directory of db_path if missing (0700), refuses one that is not a directory
 * or belongs to another user (unless we are root), sets its mode to 0700, and removes leftover
 * spool files ("tx-*"; nothing else is touched). 0, or -1 with one line in err.
 */
int spool_dir_prepare(const char *db_path, char *err, size_t errlen);
/* A new anonymous spool file in db_path's spool directory: a descriptor (close-on-exec) the
 * caller owns and closes, or a negative errno code. */
int spool_file_open(const char *db_path);
/* Writes all of p[0..n) at the end of fd. 0, or a negative errno code (-ENOSPC, -EIO, ...). */
int spool_file_append(int fd, const void *p, size_t n);
/* Reads exactly n octets at offset off. 0, -EIO when the file is shorter, or a negative errno. */
int spool_file_read_at(int fd, void *buf, size_t n, uint64_t off);

#endif
