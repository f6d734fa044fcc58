/*
 * listener.h - the listening sockets of every configured service, and the connection limits.
 *
 * One listening socket per configured address of [smtp] listen, submission, submissions and
 * [pop3] listen, pop3s. "*" means every address, IPv4 and IPv6: one [::] socket with IPV6_V6ONLY
 * off (IPv4 clients arrive as ::ffff:a.b.c.d, which cidr.c canonicalises), or 0.0.0.0 when the
 * host has no IPv6. An explicit "::" is IPv6 only, so "0.0.0.0:25" and "[::]:25" can both be
 * configured. Without a TLS context the implicit-TLS services (submissions, pop3s) are not
 * started, with one warning.
 *
 * Accepting: a listener accepts up to LISTENER_ACCEPT_BATCH connections per loop iteration, then
 * checks the global limit ([server] max_connections) and the per-address limit
 * (max_connections_per_ip); over a limit the client gets the handler's busy reply (plaintext
 * ports only: on an implicit-TLS port a reply would cost a handshake, so the socket is just
 * closed) and is disconnected without a struct conn ever being made. An accept error that means
 * "out of descriptors or memory" (EMFILE, ENFILE, ENOBUFS, ENOMEM) pauses every listener for
 * LISTENER_PAUSE_MS instead of spinning on it; the clients wait in the kernel's backlog.
 *
 * Proxy listeners (an address marked proxy: a load balancer connects, and a PROXY header names
 * the client): a peer outside [server] proxy_from is closed at once, without a reply (event=
 * refused reason=proxy-not-allowed). At accept such a connection counts against the global
 * limit only, because its peer is the balancer, which carries every client: counting it per
 * address would refuse everyone past max_connections_per_ip. The per-address place is taken once
 * the header named the client (server/net/conn_proxy.c), against the client's address, with the
 * same busy reply when it is over; a LOCAL or UNKNOWN header (a health check) counts against the
 * balancer's own address.
 *
 * Several loops: every loop has its own set (its own sockets on the same addresses, with
 * SO_REUSEPORT so the kernel spreads new connections over them); the sets made with a peer share
 * one table of counts under a mutex, so both limits hold for the whole process.
 *
 * What it does not do: read or write on accepted connections (server/net/conn.c), or decide what a
 * session does (the handlers).
 *
 * Ownership: the set owns its sockets, its libuv handles and one reference to the TLS context.
 * Connections it accepted report back when freed (per-address counts), so the set must be freed
 * after them: listener_set_stop() first (stop accepting), close the connections, then
 * listener_set_free(); the memory goes once every handle is closed and every connection freed.
 */
#ifndef POSTERN_LISTENER_H
#define POSTERN_LISTENER_H

#include <stdbool.h>
#include <stddef.h>

#include "server/net/conn.h"

struct cfg;
struct ip_addr;
struct listener_set;
struct tls_ctx;

/* listen(2) backlog: clients waiting to be accepted while the loop is busy or paused. */
#define LISTENER_BACKLOG 511
/* Connections accepted per listener per loop iteration, so one busy port cannot starve I/O. */
#define LISTENER_ACCEPT_BATCH 64
/* Pause after EMFILE and friends: long enough not to spin, short enough to go unnoticed. */
#define LISTENER_PAUSE_MS 500
/* Refusals logged per second at most; the rest are counted in the next line. */
#define LISTENER_REFUSALS_LOGGED_PER_SECOND 10

/*
 * Binds and listens on every configured address (cfg is borrowed and must outlive the set).
 * smtp and pop3 are the handlers for the SMTP services and the POP3 services; tls (may be NULL:
 * no STARTTLS/STLS, no implicit-TLS ports) is referenced. peer (may be NULL): another loop's set
 * whose connection counts this one shares (the limits then hold across both); reuseport: bind
 * with SO_REUSEPORT (every set on the same addresses must, the first one included). On failure
 * nothing stays open and err holds one line such as "cannot listen on 127.0.0.1:2525 (smtp):
 * address already in use". 0, or a negative errno / libuv code.
 */
int listener_set_new(struct conn_set *conns, const struct cfg *cfg, const struct conn_handler *smtp,
                     const struct conn_handler *pop3, struct tls_ctx *tls,
                     struct listener_set *peer, bool reuseport, struct listener_set **out,
                     char *err, size_t errlen);
/* New connections use tls from now on (SIGHUP reload); open ones keep theirs. NULL is refused
 * (TLS cannot be switched off by a reload). */
void listener_set_tls(struct listener_set *ls, struct tls_ctx *tls);
/* Stops accepting and closes the listening sockets (at once: a new server may bind them). */
void listener_set_stop(struct listener_set *ls);
/* Stops if needed; frees once the handles are closed and every accepted connection is freed.
 * Sets *lsp to NULL; NULL is a no-op. */
void listener_set_free(struct listener_set **lsp);
/* Listening sockets open. */
size_t listener_set_sockets(const struct listener_set *ls);
/* Connections this set accepted and not yet freed; the same over every set sharing its counts;
 * the shared count for one client (an IPv4 address, an IPv6 /64: ip_limit.h). */
size_t listener_set_connections(const struct listener_set *ls);
size_t listener_set_connections_all(const struct listener_set *ls);
unsigned listener_set_connections_from(const struct listener_set *ls, const struct ip_addr *ip);

#endif
