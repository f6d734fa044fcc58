/*
 * conn_proxy.c - the PROXY protocol header at the start of a connection on a listener marked
 * proxy: waiting for it (at most CONN_PROXY_HEADER_MS), parsing it with
 * common/pure/proxy_header.c, putting the client's address and port where the balancer's were,
 * taking the client's per-address place, then starting the connection like any other
 * (conn__start) and handing it the octets that followed the header. See conn.h for the contract.
 *
 * What it does not do: decide who may send a header (listener.c refuses a peer outside
 * [server] proxy_from before a struct conn exists), or know the header's format.
 *
 * Ownership: c->proxy (struct conn_proxy) is the connection's from conn__proxy_begin until the
 * header is judged or the connection is freed. Its buffer holds the header's octets only when
 * they arrive in pieces (a balancer sends the header whole, so normally the read buffer is parsed
 * in place). listener_name is borrowed from the listener, which outlives its connections.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/pure/proxy_header.h"
#include "server/net/conn.h"
#include "server/net/conn_internal.h"
#include "server/net/tls.h"

void conn__proxy_begin(struct conn *c, const char *listener_name,
                       int (*on_client)(void *arg, const struct ip_addr *client))
{
    struct conn_proxy *px = calloc(1, sizeof(*px));
    if (px == NULL) {
        conn_abort(c, "out of memory");
        return;
    }
    buf_init(&px->in, PROXY_HEADER_MAX_BYTES);
    px->listener_name = listener_name != NULL ? listener_name : "-";
    px->on_client = on_client;
    c->proxy = px;
    conn__update_reading(c);
    if (c->state == CONN_OPEN)
        conn__start_timer(c, CONN_PROXY_HEADER_MS);
}

void conn__proxy_free(struct conn *c)
{
    if (c->proxy == NULL)
        return;
    buf_free(&c->proxy->in);
    free(c->proxy);
    c->proxy = NULL;
}

void conn__proxy_fail(struct conn *c, const char *why)
{
    log_info(c->handler->proto, c->sid,
             "event=proxy-failed ip=%s port=%u listener=%s service=%s reason=\"%s\"", c->peer_text,
             (unsigned)c->peer_port, c->proxy->listener_name, conn_service_name(c->service), why);
    char reason[CONN_REASON_MAX_BYTES];
    snprintf(reason, sizeof(reason), "proxy-error: %s", why);
    conn__proxy_free(c);
    conn_abort(c, reason);
}

/*
 * Over the per-client limit once the client is known: what listener.c does at accept for a
 * direct client (the busy reply on a plaintext port, none where it would cost a handshake).
 */
static void refuse_client(struct conn *c, const char *balancer, const char *listener_name)
{
    log_info(c->handler->proto, c->sid,
             "event=refused reason=too-many-connections-from-ip ip=%s balancer=%s listener=%s "
             "service=%s",
             c->peer_text, balancer, listener_name, conn_service_name(c->service));
    if (!c->implicit_tls && c->handler->busy_reply != NULL) {
        char reply[256];
        c->handler->busy_reply(c->set->cfg, true, reply, sizeof(reply));
        if (conn_write(c, reply, strlen(reply)) == 0)
            conn_close(c, "too-many-connections-from-ip");
        return;
    }
    conn_abort(c, "too-many-connections-from-ip");
}

/* The header is complete: the client's identity, its place, then the connection starts. */
static void proxy_done(struct conn *c, const struct proxy_header *h, const unsigned char *rest,
                       size_t rest_len)
{
    char balancer[INET6_ADDRSTRLEN];
    snprintf(balancer, sizeof(balancer), "%s", c->peer_text);
    const char *listener_name = c->proxy->listener_name;
    int (*on_client)(void *arg, const struct ip_addr *client) = c->proxy->on_client;
    conn__proxy_free(c);
    uv_timer_stop(&c->timer);
    /* LOCAL (a health check), UNKNOWN and unsupported families keep the balancer's address,
     * as the specification asks. */
    if (h->kind == PROXY_KIND_PROXIED) {
        c->peer = h->src;
        ip_format(&c->peer, c->peer_text, sizeof(c->peer_text));
        c->peer_port = h->src_port;
    }
    if (on_client != NULL) {
        if (on_client(c->on_free_arg, &c->peer) != 0) {
            refuse_client(c, balancer, listener_name);
            return;
        }
        c->client_counted = true;
    }
    char via[96];
    snprintf(via, sizeof(via), " proxy=v%u kind=%s balancer=%s", h->version,
             proxy_kind_name(h->kind), balancer);
    conn__start(c, listener_name, via);
    if (c->state != CONN_OPEN || rest_len == 0)
        return;
    /* What the balancer relayed right behind the header belongs to the protocol (with implicit
     * TLS, the ClientHello). rest points into the set's read buffer, untouched until the next
     * read callback. */
    if (c->tls != NULL) {
        if (tls_feed_ciphertext(c->tls, rest, rest_len) != 0) {
            conn_abort(c, "out of memory");
            return;
        }
        conn__pump(c, NULL, 0);
    } else {
        conn__pump(c, rest, rest_len);
    }
}

void conn__proxy_input(struct conn *c, const unsigned char *data, size_t n)
{
    struct buf *in = &c->proxy->in;
    size_t old = buf_unread(in);
    const unsigned char *p = data;
    size_t have = n;
    if (old > 0) {
        /* The header came in pieces: parse it joined. The parser never wants more than
         * PROXY_HEADER_MAX_BYTES, so what does not fit is past the header anyway. */
        size_t take = n < buf_room(in) ? n : buf_room(in);
        if (buf_append(in, data, take) != 0) {
            conn_abort(c, "out of memory");
            return;
        }
        p = buf_unread_data(in);
        have = old + take;
    }
    struct proxy_header h;
    const char *why = "?";
    switch (proxy_header_parse(p, have, &h, &why)) {
    case PROXY_INVALID:
        conn__proxy_fail(c, why);
        return;
    case PROXY_NEED_MORE:
        if (old == 0 && buf_append(in, data, n) != 0)
            conn_abort(c, "out of memory");
        return;
    case PROXY_DONE:
        break;
    }
    /* A shorter prefix needed more, so the header ends inside this read: at header_bytes - old. */
    size_t rest_off = h.header_bytes - old;
    proxy_done(c, &h, data + rest_off, n - rest_off);
}
