/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Logging. One line per event to stderr (journald picks it up) or syslog.
 * Never pass a PIN, access token or assertion to these functions: log a
 * fingerprint (pj_fingerprint12) or a jti instead.
 */
#ifndef PJ_LOG_H
#define PJ_LOG_H

#include <stdbool.h>

#include "core/pj_err.h"

enum pj_log_level {
    PJ_LOG_ERR = 3,
    PJ_LOG_WARN = 4,
    PJ_LOG_NOTICE = 5,
    PJ_LOG_INFO = 6,
    PJ_LOG_DEBUG = 7,
};

/*
 * ident names the program; to_syslog sends lines to syslog(LOG_AUTHPRIV)
 * instead of stderr. The level can be raised with P11JWT_DEBUG=1.
 */
void pj_log_init(const char *ident, bool to_syslog, enum pj_log_level level);
void pj_log_set_level(enum pj_log_level level);
bool pj_log_enabled(enum pj_log_level level);
void pj_log(enum pj_log_level level, const char *fmt, ...) PJ_PRINTF(2, 3);

/*
 * Batching for a busy event loop: after pj_log_hold(true), stderr lines
 * collect in memory (from any thread) and reach stderr at pj_log_flush(),
 * or at once when the buffer fills. One write per loop iteration instead of
 * one per audit line. The agent flushes before it sends any answer, so an
 * audited answer never leaves before its audit line is written.
 * pj_log_hold(false) flushes. Syslog output is never held.
 */
void pj_log_hold(bool on);
void pj_log_flush(void);

#define pj_log_err(...) pj_log(PJ_LOG_ERR, __VA_ARGS__)
#define pj_log_warn(...) pj_log(PJ_LOG_WARN, __VA_ARGS__)
#define pj_log_notice(...) pj_log(PJ_LOG_NOTICE, __VA_ARGS__)
#define pj_log_info(...) pj_log(PJ_LOG_INFO, __VA_ARGS__)
#define pj_log_debug(...)                                                      \
    do {                                                                       \
        if (pj_log_enabled(PJ_LOG_DEBUG)) {                                    \
            pj_log(PJ_LOG_DEBUG, __VA_ARGS__);                                 \
        }                                                                      \
    } while (0)

#endif
