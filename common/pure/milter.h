/*
 * milter.h - the Sendmail milter protocol, version 6 as Postfix speaks it, as bytes: the framing
 * (a 4-octet length in network order, then one command octet, then the payload), the encoding of
 * every message the MTA sends, the decoding of every reply a milter sends, and the option
 * negotiation (which steps a milter wants, which it answers, which actions it may take).
 *
 * Pure: no I/O, no allocation. Encoders write into a buffer the caller owns and return the octets
 * written, or 0 when the message does not fit or an argument is not encodable. A decoded reply
 * borrows the payload it was decoded from: its strings point into it and are NUL-ended inside
 * it. server/milter/ drives one milter connection with these; tests/fuzz feeds the decoder
 * anything.
 */
#ifndef POSTERN_MILTER_H
#define POSTERN_MILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The protocol version offered; a milter may answer with 2 to 6 (older libmilter). */
#define MILTER_VERSION     6
#define MILTER_VERSION_MIN 2

/* A body chunk carries at most this many octets (libmilter's MILTER_CHUNK_SIZE). */
#define MILTER_CHUNK_MAX 65535u
/*
 * A frame's length field counts the command octet and the payload. No larger message is sent or
 * taken: postern offers none of the larger-size options (SMFIP_MDS_*), so a milter's payload is
 * at most 65535 octets, as libmilter's default MILTER_MAX_DATA_SIZE.
 */
#define MILTER_FRAME_LEN_MAX (1u + 65535u)
/* The length field itself. */
#define MILTER_HEADER_LEN 4u

/* Commands the MTA sends (SMFIC_*). */
enum milter_cmd {
    MILTER_CMD_ABORT = 'A',
    MILTER_CMD_BODY = 'B',
    MILTER_CMD_CONNECT = 'C',
    MILTER_CMD_MACRO = 'D',
    MILTER_CMD_BODYEOB = 'E',
    MILTER_CMD_HELO = 'H',
    MILTER_CMD_QUIT_NC = 'K',
    MILTER_CMD_HEADER = 'L',
    MILTER_CMD_MAIL = 'M',
    MILTER_CMD_EOH = 'N',
    MILTER_CMD_OPTNEG = 'O',
    MILTER_CMD_QUIT = 'Q',
    MILTER_CMD_RCPT = 'R',
    MILTER_CMD_DATA = 'T',
};

/* Replies a milter sends (SMFIR_*). */
enum milter_reply_kind {
    MILTER_R_ADDRCPT = '+',
    MILTER_R_DELRCPT = '-',
    MILTER_R_ADDRCPT_PAR = '2',
    MILTER_R_SHUTDOWN = '4',
    MILTER_R_ACCEPT = 'a',
    MILTER_R_REPLBODY = 'b',
    MILTER_R_CONTINUE = 'c',
    MILTER_R_DISCARD = 'd',
    MILTER_R_CHGFROM = 'e',
    MILTER_R_CONN_FAIL = 'f',
    MILTER_R_ADDHEADER = 'h',
    MILTER_R_INSHEADER = 'i',
    MILTER_R_SETSYMLIST = 'l',
    MILTER_R_CHGHEADER = 'm',
    MILTER_R_PROGRESS = 'p',
    MILTER_R_QUARANTINE = 'q',
    MILTER_R_REJECT = 'r',
    MILTER_R_SKIP = 's',
    MILTER_R_TEMPFAIL = 't',
    MILTER_R_REPLYCODE = 'y',
    MILTER_R_OPTNEG = 'O',
};

/* Actions a milter may take at end of message (SMFIF_*), offered by the MTA. */
#define MILTER_ACT_ADDHDRS     0x001u
#define MILTER_ACT_CHGBODY     0x002u
#define MILTER_ACT_ADDRCPT     0x004u
#define MILTER_ACT_DELRCPT     0x008u
#define MILTER_ACT_CHGHDRS     0x010u
#define MILTER_ACT_QUARANTINE  0x020u
#define MILTER_ACT_CHGFROM     0x040u
#define MILTER_ACT_ADDRCPT_PAR 0x080u
#define MILTER_ACT_SETSYMLIST  0x100u
#define MILTER_ACT_ALL         0x1ffu

/* Protocol flags (SMFIP_*): steps a milter does not want, and steps it does not answer. */
#define MILTER_P_NOCONNECT   0x000001u
#define MILTER_P_NOHELO      0x000002u
#define MILTER_P_NOMAIL      0x000004u
#define MILTER_P_NORCPT      0x000008u
#define MILTER_P_NOBODY      0x000010u
#define MILTER_P_NOHDRS      0x000020u
#define MILTER_P_NOEOH       0x000040u
#define MILTER_P_NR_HDR      0x000080u
#define MILTER_P_NOUNKNOWN   0x000100u
#define MILTER_P_NODATA      0x000200u
#define MILTER_P_SKIP        0x000400u /* the MTA understands SMFIR_SKIP */
#define MILTER_P_RCPT_REJ    0x000800u /* the milter wants rejected recipients too */
#define MILTER_P_NR_CONN     0x001000u
#define MILTER_P_NR_HELO     0x002000u
#define MILTER_P_NR_MAIL     0x004000u
#define MILTER_P_NR_RCPT     0x008000u
#define MILTER_P_NR_DATA     0x010000u
#define MILTER_P_NR_UNKN     0x020000u
#define MILTER_P_NR_EOH      0x040000u
#define MILTER_P_NR_BODY     0x080000u
#define MILTER_P_HDR_LEADSPC 0x100000u /* header values keep their leading space */
/*
 * What postern offers: every "no step" and "no reply" flag and SKIP. Not RCPT_REJ (rejected
 * recipients are never shown), not HDR_LEADSPC (values are sent without the space after the
 * colon, the libmilter default), not the larger-size flags (MILTER_FRAME_LEN_MAX).
 */
#define MILTER_P_OFFER                                                                             \
    (MILTER_P_NOCONNECT | MILTER_P_NOHELO | MILTER_P_NOMAIL | MILTER_P_NORCPT | MILTER_P_NOBODY |  \
     MILTER_P_NOHDRS | MILTER_P_NOEOH | MILTER_P_NR_HDR | MILTER_P_NOUNKNOWN | MILTER_P_NODATA |   \
     MILTER_P_SKIP | MILTER_P_NR_CONN | MILTER_P_NR_HELO | MILTER_P_NR_MAIL | MILTER_P_NR_RCPT |   \
     MILTER_P_NR_DATA | MILTER_P_NR_UNKN | MILTER_P_NR_EOH | MILTER_P_NR_BODY)

/* Macro stages (SMFIM_*), the index a SETSYMLIST names. */
enum milter_stage {
    MILTER_STAGE_CONNECT = 0,
    MILTER_STAGE_HELO = 1,
    MILTER_STAGE_MAIL = 2,
    MILTER_STAGE_RCPT = 3,
    MILTER_STAGE_DATA = 4,
    MILTER_STAGE_EOM = 5,
    MILTER_STAGE_EOH = 6,
    MILTER_STAGE_COUNT = 7,
};

/* The steps of a session, for the negotiated "skip" and "no reply" questions. */
enum milter_step {
    MILTER_STEP_CONNECT,
    MILTER_STEP_HELO,
    MILTER_STEP_MAIL,
    MILTER_STEP_RCPT,
    MILTER_STEP_DATA,
    MILTER_STEP_HEADER,
    MILTER_STEP_EOH,
    MILTER_STEP_BODY,
    MILTER_STEP_EOM,
};

/* Address families of SMFIC_CONNECT. */
#define MILTER_FAMILY_UNKNOWN 'U'
#define MILTER_FAMILY_UNIX    'L'
#define MILTER_FAMILY_INET    '4'
#define MILTER_FAMILY_INET6   '6'

/* One macro: name as milters ask for it ("j", "{client_addr}"), value. Both borrowed. */
struct milter_macro {
    const char *name;
    const char *value;
};

/* ---- encoding: each returns the octets written into out[0..cap), or 0 ---- */

size_t milter_enc_optneg(uint8_t *out, size_t cap, uint32_t version, uint32_t actions,
                         uint32_t protocol);
/* cmd is the command the macros are for (MILTER_CMD_CONNECT, ...); a NULL value is skipped. */
size_t milter_enc_macro(uint8_t *out, size_t cap, char cmd, const struct milter_macro *m, size_t n);
/* family MILTER_FAMILY_UNKNOWN sends neither port nor address. */
size_t milter_enc_connect(uint8_t *out, size_t cap, const char *hostname, char family,
                          uint16_t port, const char *address);
size_t milter_enc_helo(uint8_t *out, size_t cap, const char *helo);
/* args[0] is the address in angle brackets, the rest its ESMTP parameters ("SIZE=100"). */
size_t milter_enc_args(uint8_t *out, size_t cap, char cmd, const char *const *args, size_t n);
/* value without the space after the colon; folded lines keep their CRLF and leading space. */
size_t milter_enc_header(uint8_t *out, size_t cap, const char *name, const char *value);
/* len at most MILTER_CHUNK_MAX. */
size_t milter_enc_body(uint8_t *out, size_t cap, const uint8_t *chunk, size_t len);
/* A command with no payload: DATA, EOH, BODYEOB, ABORT, QUIT, QUIT_NC. */
size_t milter_enc_empty(uint8_t *out, size_t cap, char cmd);

/* ---- framing and decoding ---- */

enum milter_frame_status {
    MILTER_FRAME_MORE = 0, /* not a whole frame yet */
    MILTER_FRAME_OK = 1,   /* *cmd, *payload, *len and *used are set */
    MILTER_FRAME_BAD = -1, /* a length of 0 or over MILTER_FRAME_LEN_MAX: the stream is void */
};

/* Looks for one frame at the start of in[0..n). *payload points into in. */
int milter_frame(const uint8_t *in, size_t n, uint8_t *cmd, const uint8_t **payload, size_t *len,
                 size_t *used);

/* One decoded reply; pointers borrow the payload. Fields not used by kind are zero. */
struct milter_reply {
    enum milter_reply_kind kind;
    const char *text;    /* REPLYCODE ("550 5.7.1 ..."), QUARANTINE reason, SETSYMLIST list */
    const char *name;    /* header name (ADDHEADER, INSHEADER, CHGHEADER) */
    const char *value;   /* header value; "" in CHGHEADER deletes the header */
    const char *addr;    /* ADDRCPT, ADDRCPT_PAR, DELRCPT, CHGFROM */
    const char *args;    /* ADDRCPT_PAR, CHGFROM: ESMTP parameters or NULL */
    uint32_t index;      /* INSHEADER (position), CHGHEADER (nth of that name, from 1) */
    const uint8_t *body; /* REPLBODY chunk */
    size_t body_len;
    /* OPTNEG */
    uint32_t version, actions, protocol;
    const char *symlist[MILTER_STAGE_COUNT]; /* OPTNEG's macro lists per stage, or NULL */
    uint32_t stage;                          /* SETSYMLIST */
};

/* 0 and r filled, or -1: an unknown command, a missing NUL, a field short or left over. */
int milter_decode_reply(uint8_t cmd, const uint8_t *payload, size_t len, struct milter_reply *r);

/*
 * The milter's answer to our offer: 0 when it is one we can honour (version 2..6, actions and
 * protocol flags within the offer), -1 otherwise.
 */
int milter_negotiate(const struct milter_reply *r, uint32_t offer_actions, uint32_t offer_protocol);

/* Whether a negotiated protocol sends this step at all, and whether the milter answers it. */
bool milter_step_sent(uint32_t protocol, enum milter_step step);
bool milter_step_answered(uint32_t protocol, enum milter_step step);

/*
 * Whether a reply of this kind may come at this step: the verdicts anywhere, SKIP only to a body
 * chunk, the modifications and QUARANTINE only at end of message and only when their action was
 * negotiated, PROGRESS only at end of message.
 */
bool milter_reply_allowed(enum milter_reply_kind kind, enum milter_step step, uint32_t actions);

/* ---- where milters listen: "inet:HOST:PORT" or "unix:/path", a comma-separated list ---- */

/* Milters per list: more than a few in a row is a configuration mistake, not a need. */
#define MILTER_LIST_MAX 8
/* A socket path as struct sockaddr_un holds it (108 on Linux, NUL included). */
#define MILTER_PATH_MAX 108

struct milter_spec {
    bool is_unix;
    char host[256]; /* inet: a name or an address; IPv6 in brackets is taken without them */
    uint16_t port;
    char path[MILTER_PATH_MAX]; /* unix: absolute */
};

/*
 * Reads a list such as "inet:127.0.0.1:11332, unix:/run/opendkim/opendkim.sock" into out[0..*n).
 * "" is the empty list. 0, or -1 with *why saying what is wrong.
 */
int milter_spec_parse(const char *text, struct milter_spec out[MILTER_LIST_MAX], size_t *n,
                      const char **why);

/* A REPLYCODE text is "4xx" or "5xx" then SP, "-" or end; the code, or 0 when malformed. */
int milter_replycode(const char *text);

#endif
