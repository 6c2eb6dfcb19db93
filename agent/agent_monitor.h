/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Certificate expiry monitoring (docs/monitoring.md).
 *
 * Two layers, so the agent's event loop, `p11jwt check` and the unit tests
 * share them:
 *
 *   agent_monitor_check()   reads one certificate (a file, a pkcs11: URI,
 *                           or the certificate beside an open key), compares
 *                           it with the key, and fills a plain
 *                           struct agent_cert_check. It touches the token:
 *                           the agent runs it on a worker thread.
 *   struct agent_monitor    remembers the last reported state per (profile,
 *                           active|next) and decides, from a check and an
 *                           injected wall-clock time, whether to log and run
 *                           alert-command: at every state change (including
 *                           back to ok, and a different certificate) and
 *                           once every AGENT_MONITOR_REPEAT_S while not ok.
 *                           Pure: no I/O, no clock.
 *
 * States (certs/cert.h order of checks): mismatch (drift: the certificate is
 * not the signing key's), not_yet_valid, expired, critical (< critical-days
 * left), warning (< warn-days left), ok; plus unknown when the certificate
 * could not be read at all.
 */
#ifndef AGENT_MONITOR_H
#define AGENT_MONITOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/agent_alert.h"
#include "certs/cert.h"
#include "core/pj_err.h"
#include "core/pj_log.h"

#define AGENT_MONITOR_REPEAT_S 86400 /* reminder while not ok: daily */

enum agent_cert_slot {
    AGENT_CERT_ACTIVE, /* the certificate of the key that signs now */
    AGENT_CERT_NEXT,   /* during rotation: the one that will */
    AGENT_CERT_SLOTS,
};
/* "active", "next". */
const char *agent_cert_slot_name(enum agent_cert_slot slot);

enum agent_key_match {
    AGENT_KEY_UNCHECKED, /* no key to compare with, or it failed (key_error) */
    AGENT_KEY_MATCH,
    AGENT_KEY_MISMATCH,
};

/* One certificate's check: plain data, copied freely. */
struct agent_cert_check {
    bool present;  /* this slot was checked (false: no next cert) */
    bool readable; /* false: error says why; state is meaningless */
    enum cert_state state;
    enum agent_key_match key;
    int64_t now;
    int64_t days_left; /* whole days until notAfter, negative when expired */
    int64_t not_before, not_after; /* unix seconds */
    long warn_days, critical_days;
    char source[256]; /* file path or pkcs11: URI, or "the token key's" */
    char subject[256];
    char serial[96];
    char sha256[104];           /* "AB:CD:.." of the DER certificate */
    char cert_key_fp[104];      /* SHA-256 of the certificate's public key */
    char token_key_fp[104];     /* SHA-256 of the token key's, when read */
    char error[PJ_ERR_MSG_MAX]; /* when !readable */
    char key_error[PJ_ERR_MSG_MAX]; /* when key is UNCHECKED after a failure */
};

/*
 * "ok" ... "mismatch" from cert_state_name, or "unknown" when the
 * certificate could not be read.
 */
const char *agent_cert_check_state(const struct agent_cert_check *c);
/* True when the state needs attention (anything but ok). */
bool agent_cert_check_bad(const struct agent_cert_check *c);

/*
 * Fill c from a parsed certificate (pure; tests use it directly).
 * key_fp is the token key's SPKI fingerprint or NULL.
 */
void agent_cert_check_fill(struct agent_cert_check *c, const struct cert *cert,
                           int64_t now, long warn_days, long critical_days,
                           enum agent_key_match key, const char *key_fp);
/* Mark c as unreadable, with the reason. */
void agent_cert_check_fail(struct agent_cert_check *c, const char *source,
                           int64_t now, const char *why);

/* Where a profile's certificate is and what it is compared with. */
struct agent_monitor_src {
    const char *cert;      /* file or pkcs11: URI; NULL: beside key */
    const char *module;    /* for a pkcs11: cert URI; NULL: the default */
    struct hsm_key *key;   /* open signing key, or NULL (no match check) */
    const char *key_error; /* why key is NULL, if it failed to open */
    long warn_days, critical_days;
};

/*
 * Read and check one certificate. Never fails: an unreadable certificate
 * is a check with readable = false. Blocks on the token.
 */
void agent_monitor_check(const struct agent_monitor_src *src, int64_t now,
                         struct agent_cert_check *out);

/* ---- State memory and the "once a day while not ok" rule ------------ */

enum agent_monitor_kind {
    AGENT_MONITOR_NONE,   /* nothing to say */
    AGENT_MONITOR_CHANGE, /* state or certificate changed, or first check */
    AGENT_MONITOR_REPEAT, /* still not ok, a day after the last report */
};

/* What agent_monitor_update decided. */
struct agent_monitor_event {
    enum agent_monitor_kind kind;
    bool first;              /* first check of this (profile, slot) */
    char previous_state[32]; /* "" when first */
    char profile[64];
    enum agent_cert_slot slot;
    struct agent_cert_check check;
    bool alert; /* run alert-command (all but a first check that is ok) */
};

struct agent_monitor_entry {
    char *profile;
    enum agent_cert_slot slot;
    struct agent_cert_check last; /* the last check */
    char reported_state[32];      /* the last state logged */
    char reported_sha256[104];
    int64_t reported_at; /* wall s of the last log line */
};

struct agent_monitor {
    struct agent_monitor_entry *entries;
    size_t n, cap;
    int64_t repeat_s; /* AGENT_MONITOR_REPEAT_S unless a test sets it */
};

void agent_monitor_init(struct agent_monitor *m);
void agent_monitor_cleanup(struct agent_monitor *m);

/*
 * Record a check of (profile, slot) made at now and decide what to report
 * (*ev). A clock that went backwards restarts the daily count. Fails only
 * on allocation failure.
 */
PJ_MUST_USE pj_rc agent_monitor_update(struct agent_monitor *m,
                                       const char *profile,
                                       enum agent_cert_slot slot,
                                       const struct agent_cert_check *check,
                                       int64_t now,
                                       struct agent_monitor_event *ev);

/* The last check of (profile, slot), or NULL (for status and metrics). */
const struct agent_cert_check *agent_monitor_get(const struct agent_monitor *m,
                                                 const char *profile,
                                                 enum agent_cert_slot slot);

/* Forget (profile, slot): the next certificate after a rotation. */
void agent_monitor_forget(struct agent_monitor *m, const char *profile,
                          enum agent_cert_slot slot);
/*
 * After a reload: forget every profile not in names (so a removed and
 * re-added profile starts afresh); kept profiles keep their memory, so a
 * SIGHUP does not re-send alerts.
 */
void agent_monitor_retain(struct agent_monitor *m, const char *const *names,
                          size_t n);

/*
 * The log line of an event, e.g.
 *   "profile prod: active certificate CN=x (serial 01AB) state warning
 *    (was ok): expires 2027-01-01T00:00:00Z, 20 days left"
 */
void agent_monitor_event_message(const struct agent_monitor_event *ev,
                                 char *buf, size_t n);
/* Its level: notice for ok, warning for warning, error for the rest. */
enum pj_log_level
agent_monitor_event_level(const struct agent_monitor_event *ev);
/* pj_log the event (nothing for NONE). */
void agent_monitor_event_log(const struct agent_monitor_event *ev);
/*
 * The alert-command variables for an event; message is the log line
 * (kept by the caller until agent_alert_start returns).
 */
void agent_monitor_event_vars(const struct agent_monitor_event *ev,
                              const char *message,
                              struct agent_alert_vars *vars);

#endif
