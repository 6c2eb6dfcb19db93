/* SPDX-License-Identifier: Apache-2.0 */
#include "core/pj_log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static const char *log_ident = "p11jwt";
static bool log_syslog;
static enum pj_log_level log_level = PJ_LOG_NOTICE;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

/* Held lines (pj_log_hold); guarded by log_lock. */
#define LOG_HOLD_MAX 65536
static bool log_holding;
static char log_held[LOG_HOLD_MAX];
static size_t log_held_len;

void
pj_log_init(const char *ident, bool to_syslog, enum pj_log_level level)
{
    const char *dbg = getenv("P11JWT_DEBUG");

    log_ident = ident;
    log_syslog = to_syslog;
    log_level = level;
    if (dbg != NULL && dbg[0] != '\0' && dbg[0] != '0') {
        log_level = PJ_LOG_DEBUG;
    }
    if (to_syslog) {
        openlog(ident, LOG_PID, LOG_AUTHPRIV);
    }
}

void
pj_log_set_level(enum pj_log_level level)
{
    log_level = level;
}

bool
pj_log_enabled(enum pj_log_level level)
{
    return level <= log_level;
}

static const char *
level_name(enum pj_log_level level)
{
    switch (level) {
    case PJ_LOG_ERR:
        return "error";
    case PJ_LOG_WARN:
        return "warning";
    case PJ_LOG_NOTICE:
        return "notice";
    case PJ_LOG_INFO:
        return "info";
    case PJ_LOG_DEBUG:
        return "debug";
    }
    return "log";
}

/* Write out the held lines; log_lock held. A failed write drops them:
 * there is nowhere left to report it. */
static void
held_write_locked(void)
{
    size_t off = 0;

    while (off < log_held_len) {
        ssize_t n = write(STDERR_FILENO, log_held + off, log_held_len - off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        off += (size_t)n;
    }
    log_held_len = 0;
}

void
pj_log_hold(bool on)
{
    pthread_mutex_lock(&log_lock);
    if (!on) {
        held_write_locked();
    } else {
        fflush(stderr); /* earlier stdio output keeps its place */
    }
    log_holding = on;
    pthread_mutex_unlock(&log_lock);
}

void
pj_log_flush(void)
{
    pthread_mutex_lock(&log_lock);
    if (log_held_len > 0) {
        held_write_locked();
    }
    pthread_mutex_unlock(&log_lock);
}

void
pj_log(enum pj_log_level level, const char *fmt, ...)
{
    va_list ap;
    char line[1024];
    int n;

    if (!pj_log_enabled(level)) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (log_syslog) {
        syslog((int)level, "%s", line);
        return;
    }
    /* One fprintf per line under a lock so threads never interleave. */
    pthread_mutex_lock(&log_lock);
    if (!log_holding) {
        fprintf(stderr, "%s: %s: %s\n", log_ident, level_name(level), line);
        pthread_mutex_unlock(&log_lock);
        return;
    }
    for (int pass = 0; pass < 2; pass++) {
        size_t room = sizeof(log_held) - log_held_len;
        n = snprintf(log_held + log_held_len, room, "%s: %s: %s\n", log_ident,
                     level_name(level), line);
        if (n >= 0 && (size_t)n < room) {
            log_held_len += (size_t)n;
            break;
        }
        /* Full: write what is held, then retry into the empty buffer
         * (a line is under 1 KiB, so the second pass fits). */
        held_write_locked();
    }
    pthread_mutex_unlock(&log_lock);
}
