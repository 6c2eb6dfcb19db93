/* SPDX-License-Identifier: Apache-2.0 */
/* Certificate checks and the report-or-not decision (agent_monitor.h). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent_monitor.h"
#include "core/pj_util.h"
#include "pkcs11/hsm.h"

const char *
agent_cert_slot_name(enum agent_cert_slot slot)
{
    return slot == AGENT_CERT_NEXT ? "next" : "active";
}

const char *
agent_cert_check_state(const struct agent_cert_check *c)
{
    return c->readable ? cert_state_name(c->state) : "unknown";
}

bool
agent_cert_check_bad(const struct agent_cert_check *c)
{
    return !c->readable || c->state != CERT_STATE_OK;
}

void
agent_cert_check_fill(struct agent_cert_check *c, const struct cert *cert,
                      int64_t now, long warn_days, long critical_days,
                      enum agent_key_match key, const char *key_fp)
{
    memset(c, 0, sizeof(*c));
    c->present = true;
    c->readable = true;
    c->now = now;
    c->key = key;
    c->warn_days = warn_days;
    c->critical_days = critical_days;
    c->not_before = cert_not_before(cert);
    c->not_after = cert_not_after(cert);
    c->state = cert_expiry_state(cert, now, warn_days, critical_days,
                                 key != AGENT_KEY_MISMATCH, &c->days_left);
    pj_strlcpy(c->source, cert_source(cert), sizeof(c->source));
    pj_strlcpy(c->subject, cert_subject(cert), sizeof(c->subject));
    pj_strlcpy(c->serial, cert_serial_hex(cert), sizeof(c->serial));
    pj_strlcpy(c->sha256, cert_sha256_fp(cert), sizeof(c->sha256));
    pj_strlcpy(c->cert_key_fp, cert_spki_sha256_fp(cert),
               sizeof(c->cert_key_fp));
    if (key_fp != NULL) {
        pj_strlcpy(c->token_key_fp, key_fp, sizeof(c->token_key_fp));
    }
}

void
agent_cert_check_fail(struct agent_cert_check *c, const char *source,
                      int64_t now, const char *why)
{
    memset(c, 0, sizeof(*c));
    c->present = true;
    c->readable = false;
    c->now = now;
    pj_strlcpy(c->source, source != NULL ? source : "", sizeof(c->source));
    pj_strlcpy(c->error, why != NULL ? why : "", sizeof(c->error));
}

static void check_read(const struct agent_monitor_src *src, int64_t now,
                       struct agent_cert_check *out);

void
agent_monitor_check(const struct agent_monitor_src *src, int64_t now,
                    struct agent_cert_check *out)
{
    check_read(src, now, out);
    /* Thresholds are reported even when the certificate was unreadable. */
    out->warn_days = src->warn_days;
    out->critical_days = src->critical_days;
}

static void
check_read(const struct agent_monitor_src *src, int64_t now,
           struct agent_cert_check *out)
{
    struct pj_err err = {0};
    struct cert *cert = NULL;
    enum agent_key_match key = AGENT_KEY_UNCHECKED;
    char key_fp[96] = "";
    const char *source = src->cert != NULL ? src->cert : "the token key's";
    bool match = false;

    if (src->cert != NULL) {
        if (cert_load(src->cert, src->module, NULL, &cert, &err) != PJ_OK) {
            agent_cert_check_fail(out, source, now, err.msg);
            return;
        }
    } else if (src->key == NULL) {
        char why[PJ_ERR_MSG_MAX];

        snprintf(why, sizeof(why),
                 "no cert in the profile and the key could not be opened to "
                 "find the certificate beside it: %s",
                 src->key_error != NULL ? src->key_error : "no key");
        agent_cert_check_fail(out, source, now, why);
        return;
    } else if (cert_load_key(src->key, "the certificate beside the key", &cert,
                             &err) != PJ_OK) {
        agent_cert_check_fail(out, source, now, err.msg);
        return;
    }
    pj_err_clear(&err);
    if (src->key != NULL) {
        if (cert_matches_key(cert, src->key, &match, key_fp, &err) == PJ_OK) {
            key = match ? AGENT_KEY_MATCH : AGENT_KEY_MISMATCH;
        }
    }
    agent_cert_check_fill(out, cert, now, src->warn_days, src->critical_days,
                          key, key_fp[0] != '\0' ? key_fp : NULL);
    if (src->key == NULL && src->key_error != NULL) {
        pj_strlcpy(out->key_error, src->key_error, sizeof(out->key_error));
    } else if (src->key != NULL && key == AGENT_KEY_UNCHECKED) {
        pj_strlcpy(out->key_error, err.msg, sizeof(out->key_error));
    }
    cert_free(cert);
}

/* ---- State memory ---------------------------------------------------- */

void
agent_monitor_init(struct agent_monitor *m)
{
    memset(m, 0, sizeof(*m));
    m->repeat_s = AGENT_MONITOR_REPEAT_S;
}

void
agent_monitor_cleanup(struct agent_monitor *m)
{
    size_t i;

    for (i = 0; i < m->n; i++) {
        free(m->entries[i].profile);
    }
    free(m->entries);
    memset(m, 0, sizeof(*m));
}

static struct agent_monitor_entry *
find(const struct agent_monitor *m, const char *profile,
     enum agent_cert_slot slot)
{
    size_t i;

    for (i = 0; i < m->n; i++) {
        if (m->entries[i].slot == slot &&
            strcmp(m->entries[i].profile, profile) == 0) {
            return &m->entries[i];
        }
    }
    return NULL;
}

const struct agent_cert_check *
agent_monitor_get(const struct agent_monitor *m, const char *profile,
                  enum agent_cert_slot slot)
{
    const struct agent_monitor_entry *e = find(m, profile, slot);

    return e != NULL ? &e->last : NULL;
}

static void
remove_at(struct agent_monitor *m, size_t i)
{
    free(m->entries[i].profile);
    m->entries[i] = m->entries[m->n - 1];
    m->n--;
}

void
agent_monitor_forget(struct agent_monitor *m, const char *profile,
                     enum agent_cert_slot slot)
{
    struct agent_monitor_entry *e = find(m, profile, slot);

    if (e != NULL) {
        remove_at(m, (size_t)(e - m->entries));
    }
}

void
agent_monitor_retain(struct agent_monitor *m, const char *const *names,
                     size_t n)
{
    size_t i = 0, j;
    bool keep;

    while (i < m->n) {
        keep = false;
        for (j = 0; j < n && !keep; j++) {
            keep = strcmp(m->entries[i].profile, names[j]) == 0;
        }
        if (keep) {
            i++;
        } else {
            remove_at(m, i);
        }
    }
}

pj_rc
agent_monitor_update(struct agent_monitor *m, const char *profile,
                     enum agent_cert_slot slot,
                     const struct agent_cert_check *check, int64_t now,
                     struct agent_monitor_event *ev)
{
    struct agent_monitor_entry *e = find(m, profile, slot);
    const char *state = agent_cert_check_state(check);
    bool first = false, changed, bad;

    memset(ev, 0, sizeof(*ev));
    if (e == NULL) {
        if (m->n == m->cap) {
            size_t cap = m->cap == 0 ? 8 : m->cap * 2;
            struct agent_monitor_entry *ne =
                realloc(m->entries, cap * sizeof(*ne));

            if (ne == NULL) {
                return PJ_ERR_NOMEM;
            }
            m->entries = ne;
            m->cap = cap;
        }
        e = &m->entries[m->n];
        memset(e, 0, sizeof(*e));
        if ((e->profile = strdup(profile)) == NULL) {
            return PJ_ERR_NOMEM;
        }
        e->slot = slot;
        m->n++;
        first = true;
    }
    e->last = *check;

    bad = agent_cert_check_bad(check);
    /* A different certificate is news even in the same state (renewed). */
    changed = first || strcmp(e->reported_state, state) != 0 ||
              (check->readable && e->reported_sha256[0] != '\0' &&
               strcmp(e->reported_sha256, check->sha256) != 0);
    if (!first && now < e->reported_at) {
        e->reported_at = now; /* the clock went back: restart the day */
    }
    if (changed) {
        ev->kind = AGENT_MONITOR_CHANGE;
    } else if (bad && now - e->reported_at >= m->repeat_s) {
        ev->kind = AGENT_MONITOR_REPEAT;
    } else {
        return PJ_OK;
    }
    ev->first = first;
    pj_strlcpy(ev->previous_state, first ? "" : e->reported_state,
               sizeof(ev->previous_state));
    pj_strlcpy(ev->profile, profile, sizeof(ev->profile));
    ev->slot = slot;
    ev->check = *check;
    /* A healthy certificate at start-up is logged, not alerted. */
    ev->alert = !(first && !bad);

    pj_strlcpy(e->reported_state, state, sizeof(e->reported_state));
    if (check->readable) {
        pj_strlcpy(e->reported_sha256, check->sha256,
                   sizeof(e->reported_sha256));
    }
    e->reported_at = now;
    return PJ_OK;
}

/* ---- Words ------------------------------------------------------------ */

void
agent_monitor_event_message(const struct agent_monitor_event *ev, char *buf,
                            size_t n)
{
    const struct agent_cert_check *c = &ev->check;
    char was[64] = "", what[PJ_ERR_MSG_MAX + 64], na[21], nb[21];

    if (ev->kind == AGENT_MONITOR_REPEAT) {
        snprintf(was, sizeof(was), " (still)");
    } else if (!ev->first &&
               strcmp(ev->previous_state, agent_cert_check_state(c)) != 0) {
        snprintf(was, sizeof(was), " (was %s)", ev->previous_state);
    } else if (!ev->first) {
        snprintf(was, sizeof(was), " (new certificate)");
    }
    if (!c->readable) {
        snprintf(buf, n, "profile %s: %s certificate state unknown%s: %s",
                 ev->profile, agent_cert_slot_name(ev->slot), was, c->error);
        return;
    }
    cert_time_iso(c->not_after, na);
    cert_time_iso(c->not_before, nb);
    switch (c->state) {
    case CERT_STATE_MISMATCH:
        snprintf(what, sizeof(what),
                 "does not match the signing key on the token (certificate "
                 "key SHA-256 %s, token key SHA-256 %s): Salesforce will "
                 "reject the signatures",
                 c->cert_key_fp, c->token_key_fp);
        break;
    case CERT_STATE_NOT_YET_VALID:
        snprintf(what, sizeof(what), "is not valid before %s", nb);
        break;
    case CERT_STATE_EXPIRED:
        snprintf(what, sizeof(what), "expired %s, %" PRId64 " days ago", na,
                 -c->days_left);
        break;
    default:
        snprintf(what, sizeof(what), "expires %s, %" PRId64 " days left", na,
                 c->days_left);
        break;
    }
    snprintf(
        buf, n, "profile %s: %s certificate %s (serial %s) state %s%s: %s%s%s",
        ev->profile, agent_cert_slot_name(ev->slot), c->subject, c->serial,
        agent_cert_check_state(c), was, what,
        c->key_error[0] != '\0' ? "; key not compared: " : "", c->key_error);
}

enum pj_log_level
agent_monitor_event_level(const struct agent_monitor_event *ev)
{
    if (ev->check.readable && ev->check.state == CERT_STATE_OK) {
        return PJ_LOG_NOTICE;
    }
    if (ev->check.readable && ev->check.state == CERT_STATE_WARNING) {
        return PJ_LOG_WARN;
    }
    return PJ_LOG_ERR;
}

void
agent_monitor_event_log(const struct agent_monitor_event *ev)
{
    char line[1536];

    if (ev->kind == AGENT_MONITOR_NONE) {
        return;
    }
    agent_monitor_event_message(ev, line, sizeof(line));
    pj_log(agent_monitor_event_level(ev), "%s", line);
}

void
agent_monitor_event_vars(const struct agent_monitor_event *ev,
                         const char *message, struct agent_alert_vars *vars)
{
    const struct agent_cert_check *c = &ev->check;

    memset(vars, 0, sizeof(*vars));
    vars->profile = ev->profile;
    vars->key = agent_cert_slot_name(ev->slot);
    vars->state = agent_cert_check_state(c);
    vars->previous_state = ev->previous_state;
    vars->event = ev->kind == AGENT_MONITOR_REPEAT ? "repeat" : "change";
    vars->have_dates = c->readable;
    vars->days_left = c->days_left;
    vars->not_after = c->not_after;
    vars->subject = c->readable ? c->subject : NULL;
    vars->serial = c->readable ? c->serial : NULL;
    vars->sha256 = c->readable ? c->sha256 : NULL;
    vars->message = message;
}
