/* SPDX-License-Identifier: Apache-2.0 */
#include "core/pj_log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <syslog.h>
#include <time.h>

static const char *log_ident = "p11jwt";
static bool log_syslog;
static enum pj_log_level log_level = PJ_LOG_NOTICE;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

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

void
pj_log(enum pj_log_level level, const char *fmt, ...)
{
    va_list ap;
    char line[1024];

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
    fprintf(stderr, "%s: %s: %s\n", log_ident, level_name(level), line);
    pthread_mutex_unlock(&log_lock);
}
