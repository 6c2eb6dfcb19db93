/* SPDX-License-Identifier: Apache-2.0 */
/* Prometheus text exposition of the agent's state (agent_metrics.h). */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent_metrics.h"
#include "core/pj_util.h"

void
agent_metrics_cert_from_check(struct agent_metrics_cert *mc,
                              const struct agent_cert_check *c)
{
    memset(mc, 0, sizeof(*mc));
    mc->key_match = -1;
    if (c == NULL || !c->present || !c->readable) {
        return;
    }
    mc->present = true;
    mc->subject = c->subject;
    mc->serial = c->serial;
    mc->not_before = c->not_before;
    mc->not_after = c->not_after;
    mc->expired = c->now > c->not_after;
    if (c->key == AGENT_KEY_MATCH) {
        mc->key_match = 1;
    } else if (c->key == AGENT_KEY_MISMATCH) {
        mc->key_match = 0;
    }
}

/* Length of a valid UTF-8 sequence at s (at most left bytes), or 0. */
static size_t
utf8_len(const unsigned char *s, size_t left)
{
    size_t n, i;
    unsigned cp;

    if (s[0] < 0x80) {
        return 1;
    } else if ((s[0] & 0xE0) == 0xC0) {
        n = 2;
        cp = s[0] & 0x1Fu;
    } else if ((s[0] & 0xF0) == 0xE0) {
        n = 3;
        cp = s[0] & 0x0Fu;
    } else if ((s[0] & 0xF8) == 0xF0) {
        n = 4;
        cp = s[0] & 0x07u;
    } else {
        return 0;
    }
    if (n > left) {
        return 0;
    }
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    /* Overlong forms, surrogates and values past U+10FFFF. */
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) ||
        (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
        return 0;
    }
    return n;
}

/*
 * A label value: backslash, double quote and newline escaped as the
 * exposition format says; bytes that are not UTF-8 become '?', since a
 * scraper refuses the whole file otherwise.
 */
static void
put_label_value(FILE *f, const char *v)
{
    const unsigned char *s = (const unsigned char *)(v != NULL ? v : "");
    size_t left = strlen((const char *)s), n;

    while (left > 0) {
        if (*s == '\\') {
            fputs("\\\\", f);
            n = 1;
        } else if (*s == '"') {
            fputs("\\\"", f);
            n = 1;
        } else if (*s == '\n') {
            fputs("\\n", f);
            n = 1;
        } else if ((n = utf8_len(s, left)) == 0) {
            fputc('?', f);
            n = 1;
        } else {
            fwrite(s, 1, n, f);
        }
        s += n;
        left -= n;
    }
}

static void
family(FILE *f, const char *name, const char *type, const char *help)
{
    /* HELP texts are ours: no backslash or newline to escape. */
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
cert_labels(FILE *f, const char *name, const struct agent_metrics_profile *p,
            int slot)
{
    const struct agent_metrics_cert *c = &p->cert[slot];

    fprintf(f, "%s{profile=\"", name);
    put_label_value(f, p->name);
    fprintf(f, "\",key=\"%s\",subject=\"",
            agent_cert_slot_name((enum agent_cert_slot)slot));
    put_label_value(f, c->subject);
    fputs("\",serial=\"", f);
    put_label_value(f, c->serial);
    fputs("\"} ", f);
}

static void
profile_labels(FILE *f, const char *name, const char *profile,
               const char *result)
{
    fprintf(f, "%s{profile=\"", name);
    put_label_value(f, profile);
    if (result != NULL) {
        fprintf(f, "\",result=\"%s", result);
    }
    fputs("\"} ", f);
}

static void
render(FILE *f, const struct agent_metrics *m)
{
    size_t i;
    int s;
    const struct agent_metrics_profile *p;

    family(f, "p11jwt_cert_not_after", "gauge",
           "The certificate's notAfter, unix seconds (key: active, or next "
           "during rotation).");
    for (i = 0; i < m->n_profiles; i++) {
        for (s = 0; s < AGENT_CERT_SLOTS; s++) {
            if (m->profiles[i].cert[s].present) {
                cert_labels(f, "p11jwt_cert_not_after", &m->profiles[i], s);
                fprintf(f, "%" PRId64 "\n", m->profiles[i].cert[s].not_after);
            }
        }
    }
    family(f, "p11jwt_cert_not_before", "gauge",
           "The certificate's notBefore, unix seconds.");
    for (i = 0; i < m->n_profiles; i++) {
        for (s = 0; s < AGENT_CERT_SLOTS; s++) {
            if (m->profiles[i].cert[s].present) {
                cert_labels(f, "p11jwt_cert_not_before", &m->profiles[i], s);
                fprintf(f, "%" PRId64 "\n", m->profiles[i].cert[s].not_before);
            }
        }
    }
    family(f, "p11jwt_cert_expired", "gauge",
           "1 when the certificate has expired at the last check.");
    for (i = 0; i < m->n_profiles; i++) {
        for (s = 0; s < AGENT_CERT_SLOTS; s++) {
            if (m->profiles[i].cert[s].present) {
                cert_labels(f, "p11jwt_cert_expired", &m->profiles[i], s);
                fprintf(f, "%d\n", m->profiles[i].cert[s].expired ? 1 : 0);
            }
        }
    }
    family(f, "p11jwt_cert_key_match", "gauge",
           "1 when the certificate is the signing key's, 0 on drift.");
    for (i = 0; i < m->n_profiles; i++) {
        for (s = 0; s < AGENT_CERT_SLOTS; s++) {
            const struct agent_metrics_cert *c = &m->profiles[i].cert[s];

            if (c->present && c->key_match >= 0) {
                cert_labels(f, "p11jwt_cert_key_match", &m->profiles[i], s);
                fprintf(f, "%d\n", c->key_match);
            }
        }
    }
    family(f, "p11jwt_token_requests_total", "counter",
           "Access token requests by result: ok (after an exchange), "
           "cached, error, denied.");
    for (i = 0; i < m->n_profiles; i++) {
        p = &m->profiles[i];
        profile_labels(f, "p11jwt_token_requests_total", p->name, "ok");
        fprintf(f, "%" PRIu64 "\n", p->token_ok);
        profile_labels(f, "p11jwt_token_requests_total", p->name, "cached");
        fprintf(f, "%" PRIu64 "\n", p->token_cached);
        profile_labels(f, "p11jwt_token_requests_total", p->name, "error");
        fprintf(f, "%" PRIu64 "\n", p->token_error);
        profile_labels(f, "p11jwt_token_requests_total", p->name, "denied");
        fprintf(f, "%" PRIu64 "\n", p->token_denied);
    }
    family(f, "p11jwt_signatures_total", "counter",
           "Signatures made on the token, by result.");
    for (i = 0; i < m->n_profiles; i++) {
        p = &m->profiles[i];
        profile_labels(f, "p11jwt_signatures_total", p->name, "ok");
        fprintf(f, "%" PRIu64 "\n", p->sign_ok);
        profile_labels(f, "p11jwt_signatures_total", p->name, "error");
        fprintf(f, "%" PRIu64 "\n", p->sign_error);
    }
    family(f, "p11jwt_ipc_requests_total", "counter",
           "Requests on the agent socket, by operation and result.");
    for (i = 0; i < m->n_ipc; i++) {
        fputs("p11jwt_ipc_requests_total{op=\"", f);
        put_label_value(f, m->ipc[i].op);
        fprintf(f, "\",result=\"ok\"} %" PRIu64 "\n", m->ipc[i].ok);
        fputs("p11jwt_ipc_requests_total{op=\"", f);
        put_label_value(f, m->ipc[i].op);
        fprintf(f, "\",result=\"error\"} %" PRIu64 "\n", m->ipc[i].error);
    }
    family(f, "p11jwt_clock_skew_seconds", "gauge",
           "Salesforce's clock minus ours at the last exchange, seconds.");
    for (i = 0; i < m->n_profiles; i++) {
        p = &m->profiles[i];
        if (p->have_skew) {
            profile_labels(f, "p11jwt_clock_skew_seconds", p->name, NULL);
            fprintf(f, "%.9g\n", p->clock_skew_s);
        }
    }
    family(f, "p11jwt_hsm_up", "gauge",
           "1 when the profile's key is open on the token and usable.");
    for (i = 0; i < m->n_profiles; i++) {
        p = &m->profiles[i];
        profile_labels(f, "p11jwt_hsm_up", p->name, NULL);
        fprintf(f, "%d\n", p->hsm_up ? 1 : 0);
    }
}

pj_rc
agent_metrics_render(const struct agent_metrics *m, char **textp, size_t *lenp,
                     struct pj_err *err)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f;

    *textp = NULL;
    *lenp = 0;
    if ((f = open_memstream(&text, &len)) == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "metrics: out of memory");
    }
    render(f, m);
    if (ferror(f) != 0) {
        fclose(f);
        free(text);
        return pj_err_set(err, PJ_ERR_NOMEM, "metrics: out of memory");
    }
    if (fclose(f) != 0 || text == NULL) {
        free(text);
        return pj_err_set(err, PJ_ERR_NOMEM, "metrics: out of memory");
    }
    if (len > AGENT_METRICS_MAX_BYTES) {
        free(text);
        return pj_err_set(err, PJ_ERR_LIMIT,
                          "metrics: the text would be %zu bytes, over %d", len,
                          AGENT_METRICS_MAX_BYTES);
    }
    *textp = text;
    *lenp = len;
    return PJ_OK;
}

pj_rc
agent_metrics_write(const struct agent_metrics *m, const char *path,
                    struct pj_err *err)
{
    char *text = NULL;
    size_t len = 0;
    pj_rc rc;

    if (path == NULL || path[0] == '\0') {
        return pj_err_set(err, PJ_ERR_CONFIG, "metrics-file is not set");
    }
    if ((rc = agent_metrics_render(m, &text, &len, err)) != PJ_OK) {
        return rc;
    }
    /* Its errors name the path. */
    rc = pj_file_write_atomic(path, text, len, AGENT_METRICS_MODE, err);
    free(text);
    return rc;
}
