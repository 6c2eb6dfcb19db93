/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Prometheus text file (DESIGN.md 3.4), for node_exporter's textfile
 * collector or any scraper that reads a file. The agent fills the plain
 * struct agent_metrics below (it owns every string; nothing is freed here)
 * and calls agent_metrics_write at each certificate check and on a short
 * timer for the counters. The file is replaced atomically (temporary file,
 * fsync, rename), mode 0644: a scraper never sees half a file.
 *
 * Families (each with HELP and TYPE, all of them always present):
 *   p11jwt_cert_not_after{profile,key,subject,serial}     gauge, unix s
 *   p11jwt_cert_not_before{profile,key,subject,serial}    gauge, unix s
 *   p11jwt_cert_expired{profile,key,subject,serial}       gauge 0|1
 *   p11jwt_cert_key_match{profile,key,subject,serial}     gauge 0|1 (drift)
 *   p11jwt_token_requests_total{profile,result}           counter
 *       result: ok (fresh exchange), cached, error, denied
 *   p11jwt_signatures_total{profile,result}               counter ok|error
 *   p11jwt_ipc_requests_total{op,result}                  counter ok|error
 *   p11jwt_clock_skew_seconds{profile}                    gauge
 *   p11jwt_hsm_up{profile}                                gauge 0|1
 * key is "active" or "next". Label values are escaped per the exposition
 * format (backslash, double quote, newline).
 */
#ifndef AGENT_METRICS_H
#define AGENT_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/agent_monitor.h"
#include "core/pj_err.h"

#define AGENT_METRICS_MODE 0644
#define AGENT_METRICS_MAX_BYTES (4 * 1024 * 1024) /* refuse to build more */

struct agent_metrics_cert {
    bool present; /* false: no series for this slot */
    const char *subject;
    const char *serial;
    int64_t not_before;
    int64_t not_after;
    bool expired;  /* now > notAfter */
    int key_match; /* 1 match, 0 mismatch, -1 not known: no series */
};

struct agent_metrics_profile {
    const char *name;
    struct agent_metrics_cert cert[AGENT_CERT_SLOTS]; /* active, next */
    uint64_t token_ok, token_cached, token_error, token_denied;
    uint64_t sign_ok, sign_error;
    bool have_skew; /* a skew has been measured */
    double clock_skew_s;
    bool hsm_up; /* the key is open and the last use worked */
};

struct agent_metrics_ipc {
    const char *op; /* "token", "assertion", ... */
    uint64_t ok, error;
};

struct agent_metrics {
    const struct agent_metrics_profile *profiles;
    size_t n_profiles;
    const struct agent_metrics_ipc *ipc;
    size_t n_ipc;
};

/*
 * Fill a cert slot from a monitor check (strings are borrowed from check).
 * An unreadable or absent check gives present = false.
 */
void agent_metrics_cert_from_check(struct agent_metrics_cert *mc,
                                   const struct agent_cert_check *check);

/* The exposition text; *textp is new (free()), *lenp its length. */
PJ_MUST_USE pj_rc agent_metrics_render(const struct agent_metrics *m,
                                       char **textp, size_t *lenp,
                                       struct pj_err *err);

/* Render and replace path atomically with mode AGENT_METRICS_MODE. */
PJ_MUST_USE pj_rc agent_metrics_write(const struct agent_metrics *m,
                                      const char *path, struct pj_err *err);

#endif
