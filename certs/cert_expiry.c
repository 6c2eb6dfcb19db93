/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Expiry state, shared by `p11jwt cert show`, `p11jwt check` and the
 * agent's monitor so all three agree on where the boundaries are.
 */
#include "certs/cert_int.h"

#define DAY 86400

const char *
cert_state_name(enum cert_state state)
{
    switch (state) {
    case CERT_STATE_OK:
        return "ok";
    case CERT_STATE_WARNING:
        return "warning";
    case CERT_STATE_CRITICAL:
        return "critical";
    case CERT_STATE_EXPIRED:
        return "expired";
    case CERT_STATE_NOT_YET_VALID:
        return "not_yet_valid";
    case CERT_STATE_MISMATCH:
        return "mismatch";
    }
    return "unknown";
}

static int64_t
floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;

    return (a % b != 0 && a < 0) ? q - 1 : q;
}

enum cert_state
cert_expiry_state_at(int64_t not_before, int64_t not_after, int64_t now,
                     long warn_days, long critical_days, bool key_matches,
                     int64_t *days_left)
{
    int64_t left = not_after - now;

    if (days_left != NULL) {
        *days_left = floor_div(left, DAY);
    }
    if (!key_matches) {
        return CERT_STATE_MISMATCH;
    }
    if (now < not_before) {
        return CERT_STATE_NOT_YET_VALID;
    }
    if (left < 0) {
        return CERT_STATE_EXPIRED;
    }
    if (critical_days > 0 && left < (int64_t)critical_days * DAY) {
        return CERT_STATE_CRITICAL;
    }
    if (warn_days > 0 && left < (int64_t)warn_days * DAY) {
        return CERT_STATE_WARNING;
    }
    return CERT_STATE_OK;
}

enum cert_state
cert_expiry_state(const struct cert *cert, int64_t now, long warn_days,
                  long critical_days, bool key_matches, int64_t *days_left)
{
    return cert_expiry_state_at(cert->not_before, cert->not_after, now,
                                warn_days, critical_days, key_matches,
                                days_left);
}
