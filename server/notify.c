/*
 * notify.c - see notify.h. A thin layer over libsystemd's sd_notify, so serve.c names states and
 * not protocol strings, and so a build without libsystemd (POSTERN_HAVE_SYSTEMD undefined) needs
 * no #ifdef anywhere else. sd_notify does nothing when NOTIFY_SOCKET is unset; a failure to send
 * is logged at debug level and otherwise ignored: the service manager's state is its own
 * business and the server keeps serving either way (with Type=notify systemd times the start out
 * if READY=1 never arrives, which the journal then shows).
 */
#include "server/notify.h"

#include "common/log.h"

#ifdef POSTERN_HAVE_SYSTEMD
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

static void send_state(const char *what, const char *text)
{
    /* 0: keep NOTIFY_SOCKET in the environment, the later states need it too. */
    int rc = sd_notify(0, text);
    if (rc < 0)
        log_debug("serve", 0, "event=notify-failed state=%s error=\"%s\"", what, strerror(-rc));
}

void notify_ready(void)
{
    send_state("ready", "READY=1\nSTATUS=serving");
}

void notify_reloading(void)
{
    /* systemd 253 and later want the monotonic time of the reload with RELOADING=1 (for
     * Type=notify-reload); older ones ignore the field. */
    struct timespec ts;
    char text[96];
    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0)
        snprintf(text, sizeof(text), "RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=%llu",
                 (unsigned long long)ts.tv_sec * 1000000ULL +
                     (unsigned long long)ts.tv_nsec / 1000ULL);
    else
        snprintf(text, sizeof(text), "RELOADING=1\nSTATUS=reloading");
    send_state("reloading", text);
}

void notify_stopping(void)
{
    send_state("stopping", "STOPPING=1\nSTATUS=stopping");
}

#else

void notify_ready(void)
{
}

void notify_reloading(void)
{
}

void notify_stopping(void)
{
}

#endif
