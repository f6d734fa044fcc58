/*
 * schema.c - the versioned schema. migrations[i] takes a database from user_version i to i+1;
 * store.c applies the missing ones in order at open, each in its own transaction together with
 * the new PRAGMA user_version, so a crash mid-migration leaves the previous version intact.
 * Never edit a migration that has shipped: add a new one.
 */
#include "storage/sqlite/schema.h"

#include <stddef.h>

static const char *const migrations[] = {
    /* 1: local domains, users, trusted networks. */
    "CREATE TABLE domains ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  created_ms INTEGER NOT NULL);"
    "CREATE TABLE users ("
    "  id INTEGER PRIMARY KEY,"
    "  address TEXT NOT NULL UNIQUE,"
    "  domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE RESTRICT,"
    "  password_hash TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL);"
    "CREATE INDEX users_domain ON users(domain_id);"
    "CREATE TABLE networks ("
    "  id INTEGER PRIMARY KEY,"
    "  cidr TEXT NOT NULL UNIQUE,"
    "  family INTEGER NOT NULL CHECK (family IN (4, 6)),"
    "  net BLOB NOT NULL,"
    "  prefix INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL);",

    /* 2: POP-before-SMTP. pop_logins is the history of successful logins; windows holds one row
     * per client key (IPv4 address or IPv6 network), renewed by each login. */
    "CREATE TABLE pop_logins ("
    "  id INTEGER PRIMARY KEY,"
    "  ip_key TEXT NOT NULL,"
    "  user TEXT NOT NULL,"
    "  at_ms INTEGER NOT NULL);"
    "CREATE INDEX pop_logins_at ON pop_logins(at_ms);"
    "CREATE TABLE windows ("
    "  ip_key TEXT PRIMARY KEY,"
    "  user TEXT NOT NULL,"
    "  opened_ms INTEGER NOT NULL,"
    "  expires_ms INTEGER NOT NULL,"
    "  relayed INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;",

    /* 3: messages stored once, mailbox entries and the outbound queue referring to them. A
     * message row goes when its last reference goes (the triggers). AUTOINCREMENT keeps mailbox
     * ids, and so UIDLs, from ever being reused. */
    "CREATE TABLE messages ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  sender TEXT NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  received_ms INTEGER NOT NULL,"
    "  body BLOB NOT NULL);"
    "CREATE TABLE mailbox ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  message_id INTEGER NOT NULL REFERENCES messages(id),"
    "  uidl TEXT NOT NULL UNIQUE,"
    "  size INTEGER NOT NULL,"
    "  added_ms INTEGER NOT NULL);"
    "CREATE INDEX mailbox_user ON mailbox(user_id, id);"
    "CREATE INDEX mailbox_message ON mailbox(message_id);"
    "CREATE TABLE queue ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  message_id INTEGER NOT NULL REFERENCES messages(id),"
    "  sender TEXT NOT NULL,"
    "  recipient TEXT NOT NULL,"
    "  domain TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  next_attempt_ms INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  last_error TEXT NOT NULL DEFAULT '',"
    "  claimed_ms INTEGER);"
    "CREATE INDEX queue_due ON queue(next_attempt_ms);"
    "CREATE INDEX queue_message ON queue(message_id);"
    "CREATE TRIGGER mailbox_release AFTER DELETE ON mailbox BEGIN"
    "  DELETE FROM messages WHERE id = OLD.message_id"
    "    AND NOT EXISTS (SELECT 1 FROM mailbox WHERE message_id = OLD.message_id)"
    "    AND NOT EXISTS (SELECT 1 FROM queue WHERE message_id = OLD.message_id);"
    "END;"
    "CREATE TRIGGER queue_release AFTER DELETE ON queue BEGIN"
    "  DELETE FROM messages WHERE id = OLD.message_id"
    "    AND NOT EXISTS (SELECT 1 FROM mailbox WHERE message_id = OLD.message_id)"
    "    AND NOT EXISTS (SELECT 1 FROM queue WHERE message_id = OLD.message_id);"
    "END;",

    /* 4: per-database facts. uidl_tag is 64 random bits (SQLite's PRNG, seeded from the OS),
     * made once, that every UIDL carries (storage/mailbox.h): a database recreated from scratch
     * numbers its mailbox entries from 1 again but under another tag. */
    "CREATE TABLE meta ("
    "  key TEXT PRIMARY KEY,"
    "  value TEXT NOT NULL) WITHOUT ROWID;"
    "INSERT INTO meta(key, value) VALUES ('uidl_tag', lower(hex(randomblob(8))));",

    /* 5: users in address order within their domain, so where postmaster mail goes
     * (store_user_first) is one index lookup. It serves the lookups by domain_id alone too, so
     * the older index goes. */
    "CREATE INDEX users_domain_address ON users(domain_id, address); DROP INDEX users_domain;",

    /* 6: facts about a message body recorded when it is stored (storage/mailbox.c), so the
     * outbound client needs not read a whole body before MAIL: whether it has an octet above 127
     * (BODY=8BITMIME) and the length of a leading Return-Path line (dropped when relaying; 0 if
     * none). A table of its own rather than columns of messages: the facts are known only once
     * the body has been written, and updating a messages row rewrites its whole body. Messages
     * stored before this version have no row: the client then scans the body as it used to.
     * The trigger drops a message's facts with it also on a connection without foreign keys
     * (the sqlite3 shell's default), where ON DELETE CASCADE does nothing. */
    "CREATE TABLE message_facts ("
    "  message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,"
    "  eightbit INTEGER NOT NULL,"
    "  return_path_bytes INTEGER NOT NULL);"
    "CREATE TRIGGER message_facts_release AFTER DELETE ON messages BEGIN"
    "  DELETE FROM message_facts WHERE message_id = OLD.id;"
    "END;",

    /* 7: DKIM signing keys of the local domains (common/pure/dkim.h has their text forms). A
     * domain holds at most one key per algorithm, and a selector names one key of a domain, as
     * its DNS record does. The private key is stored here because the database is already the
     * one file only postern may read (storage/sqlite/db_files.c makes it 0600). Deleting a domain,
     * which needs it to have no users, deletes its keys. */
    "CREATE TABLE dkim_keys ("
    "  id INTEGER PRIMARY KEY,"
    "  domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,"
    "  selector TEXT NOT NULL,"
    "  algorithm TEXT NOT NULL CHECK (algorithm IN ('ed25519', 'rsa')),"
    "  private_key TEXT NOT NULL,"
    "  public_key TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  UNIQUE (domain_id, selector),"
    "  UNIQUE (domain_id, algorithm));",

    /* 8: fault injection rules (common/pure/fault.h), as `postern fault add` wrote them and
     * fault_rule_build checks them again when the server loads them. Rules are never edited,
     * only added and deleted, and AUTOINCREMENT never reuses an id: so (max(id), count(*)) is a
     * version of the whole table that the server can poll cheaply (server/fault/fault.c). */
    "CREATE TABLE faults ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  point TEXT NOT NULL,"
    "  action TEXT NOT NULL,"
    "  client TEXT NOT NULL DEFAULT '',"
    "  user TEXT NOT NULL DEFAULT '',"
    "  sender TEXT NOT NULL DEFAULT '',"
    "  recipient TEXT NOT NULL DEFAULT '',"
    "  reply TEXT NOT NULL DEFAULT '',"
    "  message INTEGER NOT NULL DEFAULT 0,"
    "  delay_ms INTEGER NOT NULL DEFAULT 0,"
    "  after_bytes INTEGER NOT NULL DEFAULT 0,"
    "  times INTEGER NOT NULL DEFAULT 0,"
    "  ppm INTEGER NOT NULL DEFAULT 1000000,"
    "  seed INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL);",

    /* 9: whether a message needs SMTPUTF8 to be relayed (RFC 6531 3.7.5): the client said
     * SMTPUTF8 and the header section holds octets above 127 (UTF-8 headers, RFC 6532). A UTF-8
     * envelope is seen from the queue rows themselves. 0 for messages stored before. */
    "ALTER TABLE message_facts ADD COLUMN smtputf8 INTEGER NOT NULL DEFAULT 0;",

    /* 10: a message a milter quarantined (server/milter/): stored and delivered as any other, with
     * the milter's reason here, so `postern queue list` and the log can show it. NULL: not
     * quarantined. */
    "ALTER TABLE messages ADD COLUMN quarantine TEXT;",

    /* 11: delivery status notifications (RFC 3461). Per message, ENVID as the client sent it
     * (xtext; NULL when not given) and RET (0 not given, 1 FULL, 2 HDRS); per queue row, NOTIFY
     * (bits: 1 SUCCESS, 2 FAILURE, 4 DELAY, 8 NEVER; 0 not given), ORCPT as sent (NULL when not
     * given) and whether its delay notice went out. Mailbox rows need none: a local
     * recipient's success notice is stored together with the delivery (storage/mailbox.c). */
    "ALTER TABLE messages ADD COLUMN dsn_envid TEXT;"
    "ALTER TABLE messages ADD COLUMN dsn_ret INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE queue ADD COLUMN dsn_notify INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE queue ADD COLUMN dsn_orcpt TEXT;"
    "ALTER TABLE queue ADD COLUMN delay_notified INTEGER NOT NULL DEFAULT 0;",

    /* 12: several serve processes (nodes) on one database (storage/nodes.c). nodes holds each
     * node's name, where it runs and the end of its lease, so that two processes cannot take one
     * name; pop3_locks is the POP3 maildrop lock (RFC 1939 8), one row per user held by one
     * session of one node until expires_ms; a queue row's claimed_by names the node whose claim
     * it is while claimed_ms is set (NULL for a claim made before this version, when one process
     * had the database; left as it was once the claim ends). */
    "CREATE TABLE nodes ("
    "  name TEXT PRIMARY KEY,"
    "  host TEXT NOT NULL,"
    "  pid INTEGER NOT NULL,"
    "  started_ms INTEGER NOT NULL,"
    "  expires_ms INTEGER NOT NULL);"
    "CREATE TABLE pop3_locks ("
    "  user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,"
    "  node TEXT NOT NULL,"
    "  session INTEGER NOT NULL,"
    "  expires_ms INTEGER NOT NULL);"
    "CREATE INDEX pop3_locks_node ON pop3_locks(node);"
    "ALTER TABLE queue ADD COLUMN claimed_by TEXT;",
};

_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == SCHEMA_VERSION,
               "one migration per schema version");

const char *schema_migration(int to_version)
{
    if (to_version < 1 || to_version > SCHEMA_VERSION)
        return NULL;
    return migrations[to_version - 1];
}
