/*
 * notify.h - tells a service manager about serve's state (systemd's sd_notify protocol): ready,
 * reloading, stopping. Without NOTIFY_SOCKET in the environment (not started by systemd as
 * Type=notify) and in a build without libsystemd every call does nothing. It decides nothing
 * about the server: serve.c says when each state begins.
 */
#ifndef POSTERN_NOTIFY_H
#define POSTERN_NOTIFY_H

/* Every listener is bound and the store is open: the service is up. Also ends a reload. */
void notify_ready(void);
/* A reload (SIGHUP) begins; notify_ready() says when it is over. */
void notify_reloading(void);
/* A graceful stop begins. */
void notify_stopping(void);

#endif
