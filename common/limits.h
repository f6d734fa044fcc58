/*
 * limits.h - the protocol limits, in one place: every line length, name length and argument size
 * an RFC sets (or that postern sets for the protocols, where the RFC leaves it open), each with
 * its section and the working behind its number. One name per limit: a module that needs the
 * same number under another view (without the CRLF, with room for a NUL) derives it from the
 * name here rather than writing the number again.
 *
 * What is not here: a module's own tuning (buffer sizes, hash tables, timeouts, turns per loop
 * iteration) stays beside the code it tunes, and limits an operator may change (message size,
 * recipients per message, connections) are settings in common/config.c's parameter table, whose
 * defaults cite their RFC there. Every value counts octets unless its name says otherwise.
 */
#ifndef POSTERN_LIMITS_H
#define POSTERN_LIMITS_H

/* ---- SMTP lines (RFC 5321 4.5.3.1; each counts its CRLF) ----------------------------------- */

/* RFC 5321 4.5.3.1.4: a command line is at most 512 octets including the CRLF. */
#define SMTP_LINE_MAX_BYTES 512
/*
 * What the SMTP server reads as one command line: RFC 5321 4.5.3.1.4 lets an extension raise the
 * 512, and DSN does (RFC 3461 4): an RCPT may be longer by 500 octets for ORCPT and 14 for
 * NOTIFY, a MAIL by 100 for ENVID and 8 for RET. The largest, RCPT's, is taken for every command:
 * the reader does not know the verb before it has the line. The line reader's buffer is sized
 * for AUTH's longer lines anyway, so this costs no memory.
 */
#define SMTP_COMMAND_LINE_MAX_BYTES (SMTP_LINE_MAX_BYTES + 500 + 14)
/*
 * RFC 5321 4.5.3.1.5: a reply line is at most 512 octets including the CRLF. The outbound client
 * reads replies with it, and a reply postern builds (relay_policy.h) fits a buffer this size
 * without the CRLF.
 */
#define SMTP_REPLY_LINE_MAX_BYTES 512
/*
 * RFC 5321 4.5.3.1.6: a text line of a message is at most 1000 octets including the CRLF. The
 * DATA scanner counts longer lines instead of refusing them: RFC 5321 4.5.3.1 asks servers to
 * accept what they can, and refusing would bounce mail a broken client already wrote.
 */
#define SMTP_TEXT_LINE_MAX_BYTES 1000
/*
 * RFC 4954 4: SASL responses are not bound by the 512-octet command limit, and "12288 octets is
 * considered to be a sufficient line length limit" for deployed mechanisms; a longer response
 * fails the AUTH command with 500. Only the lines answering a 334 challenge get this limit.
 */
#define SMTP_AUTH_LINE_MAX_BYTES 12288
/* RFC 1870 3: the SIZE value is at most 20 digits (a 64-bit count has 20). */
#define SMTP_SIZE_MAX_DIGITS 20

/* ---- addresses and host names -------------------------------------------------------------- */

/* RFC 5321 4.5.3.1.1: a local part is at most 64 octets, counted on the unquoted content. */
#define ADDRESS_LOCAL_MAX_BYTES 64
/*
 * RFC 5321 4.5.3.1.2: a domain is at most 255 octets. Also the bound for what stands where a
 * domain may (an EHLO/HELO argument kept for the Received header, a host name in a bounce).
 */
#define ADDRESS_DOMAIN_MAX_BYTES 255
/* RFC 5321 4.5.3.1.3: a path is at most 256 octets, "<" and ">" and any route included. */
#define ADDRESS_PATH_MAX_BYTES 256
/*
 * RFC 1035 3.1: a name is at most 255 octets on the wire, where each label costs its length octet
 * and the root one more; as dotted text without the trailing dot that is 253 characters. Domains,
 * host names and certificate names are checked against this.
 */
#define DNS_NAME_MAX_BYTES 253
/* RFC 1035 2.3.4: a label is at most 63 octets. */
#define DNS_LABEL_MAX_BYTES 63
/* Room for a host name as text and its NUL: DNS_NAME_MAX_BYTES + 1, rounded up to 256. */
#define HOSTNAME_BUF_BYTES 256

/* ---- message format ------------------------------------------------------------------------ */

/* RFC 5322 2.1.1: a line is at most 998 characters without its CRLF: the SMTP text line limit. */
#define MESSAGE_LINE_MAX_BYTES (SMTP_TEXT_LINE_MAX_BYTES - 2)
/* RFC 5322 2.1.1: ...and should be at most 78; header fields postern writes fold there. */
#define MESSAGE_FOLD_COLUMN 78
/* RFC 2045 6.7 (5): quoted-printable lines are at most 76 characters, the soft break's "=" in. */
#define MIME_QP_LINE_MAX_BYTES 76

/* ---- SASL and passwords -------------------------------------------------------------------- */

/*
 * RFC 4616 2: a PLAIN authcid or authzid is at most 255 octets (and a LOGIN user name gets the
 * same cap). More than any address postern keeps: a path is at most ADDRESS_PATH_MAX_BYTES with
 * its angle brackets. Also the bound for smarthost_user in the configuration.
 */
#define SASL_USER_MAX_BYTES 255
/*
 * Passwords longer than this are refused, whether a client sends them or the smarthost password
 * file holds them: RFC 4616 2 only asks for 255, and a longer one only makes hashing slow for an
 * attacker's benefit. 1024 leaves room for any generated password.
 */
#define PASSWORD_MAX_BYTES 1024
/*
 * The longest base64 SASL line accepted, without CRLF: PLAIN's authzid NUL authcid NUL passwd at
 * their caps is 255 + 1 + 255 + 1 + 1024 = 1536 octets, which base64 makes 4 * 1536 / 3 = 2048.
 * Sessions let lines this long through while an exchange runs; anything longer is malformed.
 */
#define SASL_LINE_MAX_BYTES 2048

/* ---- POP3 ---------------------------------------------------------------------------------- */

/* RFC 2449 4: a command line is at most 255 octets including the CRLF. */
#define POP3_LINE_MAX_BYTES 255
/* RFC 2449 3: keywords are 3 or 4 characters in RFC 1939 and at most 40 in extensions. */
#define POP3_VERB_MAX_BYTES 40
/*
 * RFC 5034 4: a SASL response line is not bound by the 255-octet command limit; the longest
 * postern accepts is a SASL line and its CRLF.
 */
#define POP3_SASL_LINE_MAX_BYTES (SASL_LINE_MAX_BYTES + 2)
/* RFC 1939 7: a unique-id (UIDL) is 1 to 70 characters from 0x21 to 0x7E. */
#define POP3_UIDL_MAX_BYTES 70

#endif
