/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The certificate monitor (agent/agent_monitor.c): checks filled from real
 * certificates with chosen dates, the report-or-not decision at state
 * changes and once a day while not ok (time injected), and the log lines
 * and alert variables it produces.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "agent/agent_monitor.h"
#include "certs/cert.h"

#define DAY 86400
#define T0 1800000000LL /* the injected "now" */

/* A self-signed certificate with chosen dates, as PEM (new). */
static char *
make_pem(const char *cn, int64_t not_before, int64_t not_after)
{
    EVP_PKEY *pk = EVP_RSA_gen(2048);
    X509 *x = X509_new();
    X509_NAME *name;
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *out;
    long len;

    assert_non_null(pk);
    assert_non_null(x);
    assert_int_equal(X509_set_version(x, 2), 1);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 0x1234AB);
    assert_non_null(ASN1_TIME_set(X509_getm_notBefore(x), (time_t)not_before));
    assert_non_null(ASN1_TIME_set(X509_getm_notAfter(x), (time_t)not_after));
    name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_set_pubkey(x, pk);
    assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
    assert_int_equal(PEM_write_bio_X509(bio, x), 1);
    len = BIO_get_mem_data(bio, &data);
    /* Not strndup: the BIO's data is not NUL-terminated. */
    assert_non_null(out = malloc((size_t)len + 1));
    memcpy(out, data, (size_t)len);
    out[len] = '\0';
    BIO_free(bio);
    X509_free(x);
    EVP_PKEY_free(pk);
    return out;
}

static struct cert *
make_cert(const char *cn, int64_t nb, int64_t na)
{
    char *pem = make_pem(cn, nb, na);
    struct cert *c = NULL;
    struct pj_err err = {0};

    assert_int_equal(
        cert_parse((const uint8_t *)pem, strlen(pem), "test.pem", &c, &err),
        PJ_OK);
    free(pem);
    return c;
}

/* A plain check in a given state, for the decision tests. */
static struct agent_cert_check
chk(enum cert_state st, const char *sha)
{
    struct agent_cert_check c;

    memset(&c, 0, sizeof(c));
    c.present = c.readable = true;
    c.state = st;
    c.key = st == CERT_STATE_MISMATCH ? AGENT_KEY_MISMATCH : AGENT_KEY_MATCH;
    c.not_before = T0 - 10 * DAY;
    c.not_after = T0 + 20 * DAY;
    c.days_left = 20;
    snprintf(c.subject, sizeof(c.subject), "CN=x");
    snprintf(c.serial, sizeof(c.serial), "01");
    snprintf(c.sha256, sizeof(c.sha256), "%s", sha);
    return c;
}

static enum agent_monitor_kind
upd(struct agent_monitor *m, const char *prof, enum agent_cert_slot slot,
    struct agent_cert_check c, int64_t now, struct agent_monitor_event *ev)
{
    assert_int_equal(agent_monitor_update(m, prof, slot, &c, now, ev), PJ_OK);
    return ev->kind;
}

static void
test_fill_states(void **state)
{
    struct agent_cert_check c;
    struct cert *cert;
    (void)state;

    /* 20 days left (plus an hour, so the floor is 20). */
    cert = make_cert("w", T0 - DAY, T0 + 20 * DAY + 3600);
    agent_cert_check_fill(&c, cert, T0, 30, 7, AGENT_KEY_MATCH, "AA:BB");
    assert_true(c.present && c.readable);
    assert_int_equal(c.state, CERT_STATE_WARNING);
    assert_string_equal(agent_cert_check_state(&c), "warning");
    assert_int_equal(c.days_left, 20);
    assert_int_equal(c.not_after, T0 + 20 * DAY + 3600);
    assert_string_equal(c.subject, "CN=w");
    assert_string_equal(c.serial, "1234AB");
    assert_string_equal(c.sha256, cert_sha256_fp(cert));
    assert_string_equal(c.token_key_fp, "AA:BB");
    assert_true(agent_cert_check_bad(&c));
    /* Same certificate: ok with warn 14, critical with critical 21. */
    agent_cert_check_fill(&c, cert, T0, 14, 7, AGENT_KEY_MATCH, NULL);
    assert_int_equal(c.state, CERT_STATE_OK);
    assert_false(agent_cert_check_bad(&c));
    agent_cert_check_fill(&c, cert, T0, 30, 21, AGENT_KEY_MATCH, NULL);
    assert_int_equal(c.state, CERT_STATE_CRITICAL);
    /* Drift wins over everything; an unchecked key is not drift. */
    agent_cert_check_fill(&c, cert, T0, 14, 7, AGENT_KEY_MISMATCH, NULL);
    assert_int_equal(c.state, CERT_STATE_MISMATCH);
    agent_cert_check_fill(&c, cert, T0, 14, 7, AGENT_KEY_UNCHECKED, NULL);
    assert_int_equal(c.state, CERT_STATE_OK);
    /* Later: expired. */
    agent_cert_check_fill(&c, cert, T0 + 22 * DAY, 30, 7, AGENT_KEY_MATCH,
                          NULL);
    assert_int_equal(c.state, CERT_STATE_EXPIRED);
    assert_int_equal(c.days_left, -2);
    /* Earlier: not yet valid. */
    agent_cert_check_fill(&c, cert, T0 - 2 * DAY, 30, 7, AGENT_KEY_MATCH, NULL);
    assert_int_equal(c.state, CERT_STATE_NOT_YET_VALID);
    cert_free(cert);

    agent_cert_check_fail(&c, "/x.pem", T0, "/x.pem: no such file");
    assert_true(c.present);
    assert_false(c.readable);
    assert_true(agent_cert_check_bad(&c));
    assert_string_equal(agent_cert_check_state(&c), "unknown");
}

static void
test_check_from_file(void **state)
{
    char dir[] = "/tmp/p11jwt-mon.XXXXXX", path[64], *pem;
    struct agent_cert_check c;
    struct agent_monitor_src src = {.warn_days = 30, .critical_days = 7};
    FILE *f;
    (void)state;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/c.pem", dir);
    pem = make_pem("file", T0 - DAY, T0 + 3 * DAY + 60);
    assert_non_null(f = fopen(path, "w"));
    fputs(pem, f);
    fclose(f);
    free(pem);

    src.cert = path;
    agent_monitor_check(&src, T0, &c);
    assert_true(c.readable);
    assert_int_equal(c.state, CERT_STATE_CRITICAL);
    assert_int_equal(c.days_left, 3);
    assert_int_equal(c.key, AGENT_KEY_UNCHECKED);
    assert_string_equal(c.source, path);
    assert_string_equal(c.key_error, "");
    assert_int_equal(c.warn_days, 30);

    /* A key that failed to open is reported beside the certificate. */
    src.key_error = "token 'x' not found";
    agent_monitor_check(&src, T0, &c);
    assert_true(c.readable);
    assert_string_equal(c.key_error, "token 'x' not found");

    /* Bad inputs: a missing file, garbage, no cert and no key. */
    src.key_error = NULL;
    unlink(path);
    agent_monitor_check(&src, T0, &c);
    assert_false(c.readable);
    assert_non_null(strstr(c.error, path));
    assert_int_equal(c.critical_days, 7); /* thresholds kept for perfdata */
    assert_non_null(f = fopen(path, "w"));
    fputs("-----BEGIN CERTIFICATE-----\nAAAA\n", f);
    fclose(f);
    agent_monitor_check(&src, T0, &c);
    assert_false(c.readable);
    assert_true(c.error[0] != '\0');
    unlink(path);
    rmdir(dir);

    src.cert = NULL;
    src.key_error = "PIN file missing";
    agent_monitor_check(&src, T0, &c);
    assert_false(c.readable);
    assert_non_null(strstr(c.error, "PIN file missing"));
}

static void
test_transitions(void **state)
{
    struct agent_monitor m;
    struct agent_monitor_event ev;
    int64_t t = T0;
    (void)state;

    agent_monitor_init(&m);
    /* First check, ok: logged, no alert. */
    assert_int_equal(
        upd(&m, "prod", AGENT_CERT_ACTIVE, chk(CERT_STATE_OK, "S1"), t, &ev),
        AGENT_MONITOR_CHANGE);
    assert_true(ev.first);
    assert_false(ev.alert);
    assert_string_equal(ev.previous_state, "");
    /* Same again, an hour later: nothing. */
    t += 3600;
    assert_int_equal(
        upd(&m, "prod", AGENT_CERT_ACTIVE, chk(CERT_STATE_OK, "S1"), t, &ev),
        AGENT_MONITOR_NONE);
    /* ok never repeats, even after days. */
    t += 5 * DAY;
    assert_int_equal(
        upd(&m, "prod", AGENT_CERT_ACTIVE, chk(CERT_STATE_OK, "S1"), t, &ev),
        AGENT_MONITOR_NONE);
    /* ok -> warning: a change, alerted. */
    assert_int_equal(upd(&m, "prod", AGENT_CERT_ACTIVE,
                         chk(CERT_STATE_WARNING, "S1"), t, &ev),
                     AGENT_MONITOR_CHANGE);
    assert_false(ev.first);
    assert_true(ev.alert);
    assert_string_equal(ev.previous_state, "ok");
    assert_string_equal(ev.profile, "prod");
    assert_int_equal(ev.slot, AGENT_CERT_ACTIVE);
    /* Hourly checks within the day: silent. */
    for (int i = 1; i < 24; i++) {
        assert_int_equal(upd(&m, "prod", AGENT_CERT_ACTIVE,
                             chk(CERT_STATE_WARNING, "S1"), t + i * 3600, &ev),
                         AGENT_MONITOR_NONE);
    }
    /* A day after the last report: the daily reminder, alerted. */
    assert_int_equal(upd(&m, "prod", AGENT_CERT_ACTIVE,
                         chk(CERT_STATE_WARNING, "S1"), t + DAY, &ev),
                     AGENT_MONITOR_REPEAT);
    assert_true(ev.alert);
    assert_string_equal(ev.previous_state, "warning");
    /* The count restarts at the reminder. */
    assert_int_equal(upd(&m, "prod", AGENT_CERT_ACTIVE,
                         chk(CERT_STATE_WARNING, "S1"), t + 2 * DAY - 1, &ev),
                     AGENT_MONITOR_NONE);
    assert_int_equal(upd(&m, "prod", AGENT_CERT_ACTIVE,
                         chk(CERT_STATE_WARNING, "S1"), t + 2 * DAY, &ev),
                     AGENT_MONITOR_REPEAT);
    t += 2 * DAY;
    /* warning -> critical -> expired: each a change. */
    assert_int_equal(upd(&m, "prod", AGENT_CERT_ACTIVE,
                         chk(CERT_STATE_CRITICAL, "S1"), t + 60, &ev),
                     AGENT_MONITOR_CHANGE);
    assert_string_equal(ev.previous_state, "warning");
    assert_int_equal(upd(&m, "prod", AGENT_CERT_ACTIVE,
                         chk(CERT_STATE_EXPIRED, "S1"), t + 120, &ev),
                     AGENT_MONITOR_CHANGE);
    assert_string_equal(ev.previous_state, "critical");
    /* Renewed: back to ok with a new certificate, alerted (recovery). */
    assert_int_equal(upd(&m, "prod", AGENT_CERT_ACTIVE,
                         chk(CERT_STATE_OK, "S2"), t + 180, &ev),
                     AGENT_MONITOR_CHANGE);
    assert_true(ev.alert);
    assert_string_equal(ev.previous_state, "expired");
    /* A different certificate in the same state is news too. */
    assert_int_equal(upd(&m, "prod", AGENT_CERT_ACTIVE,
                         chk(CERT_STATE_OK, "S3"), t + 240, &ev),
                     AGENT_MONITOR_CHANGE);
    assert_string_equal(ev.previous_state, "ok");
    agent_monitor_cleanup(&m);
}

static void
test_first_bad_and_unknown(void **state)
{
    struct agent_monitor m;
    struct agent_monitor_event ev;
    struct agent_cert_check c;
    (void)state;

    agent_monitor_init(&m);
    /* A bad certificate at start-up is alerted at once. */
    assert_int_equal(
        upd(&m, "a", AGENT_CERT_ACTIVE, chk(CERT_STATE_MISMATCH, "S"), T0, &ev),
        AGENT_MONITOR_CHANGE);
    assert_true(ev.first);
    assert_true(ev.alert);
    /* Unreadable: state unknown, a change, then daily. */
    agent_cert_check_fail(&c, "pkcs11:token=x", T0, "token 'x' not found");
    assert_int_equal(upd(&m, "a", AGENT_CERT_ACTIVE, c, T0 + 1, &ev),
                     AGENT_MONITOR_CHANGE);
    assert_string_equal(agent_cert_check_state(&ev.check), "unknown");
    assert_string_equal(ev.previous_state, "mismatch");
    assert_int_equal(upd(&m, "a", AGENT_CERT_ACTIVE, c, T0 + 2, &ev),
                     AGENT_MONITOR_NONE);
    assert_int_equal(upd(&m, "a", AGENT_CERT_ACTIVE, c, T0 + 1 + DAY, &ev),
                     AGENT_MONITOR_REPEAT);
    agent_monitor_cleanup(&m);
}

static void
test_slots_profiles_reload(void **state)
{
    struct agent_monitor m;
    struct agent_monitor_event ev;
    const char *keep[] = {"b"};
    (void)state;

    agent_monitor_init(&m);
    /* active and next are remembered apart, and so are profiles. */
    upd(&m, "a", AGENT_CERT_ACTIVE, chk(CERT_STATE_WARNING, "A"), T0, &ev);
    assert_int_equal(upd(&m, "a", AGENT_CERT_NEXT,
                         chk(CERT_STATE_NOT_YET_VALID, "N"), T0, &ev),
                     AGENT_MONITOR_CHANGE);
    assert_true(ev.first);
    assert_int_equal(ev.slot, AGENT_CERT_NEXT);
    upd(&m, "b", AGENT_CERT_ACTIVE, chk(CERT_STATE_WARNING, "B"), T0, &ev);
    assert_true(ev.first);
    assert_int_equal(m.n, 3);
    assert_int_equal(agent_monitor_get(&m, "a", AGENT_CERT_NEXT)->state,
                     CERT_STATE_NOT_YET_VALID);
    assert_null(agent_monitor_get(&m, "c", AGENT_CERT_ACTIVE));
    /* The rotation finished: the next slot is forgotten. */
    agent_monitor_forget(&m, "a", AGENT_CERT_NEXT);
    assert_null(agent_monitor_get(&m, "a", AGENT_CERT_NEXT));
    assert_non_null(agent_monitor_get(&m, "a", AGENT_CERT_ACTIVE));
    /* Reload keeping b only: b stays quiet, a starts afresh. */
    agent_monitor_retain(&m, keep, 1);
    assert_int_equal(m.n, 1);
    assert_int_equal(upd(&m, "b", AGENT_CERT_ACTIVE,
                         chk(CERT_STATE_WARNING, "B"), T0 + 60, &ev),
                     AGENT_MONITOR_NONE);
    assert_int_equal(upd(&m, "a", AGENT_CERT_ACTIVE,
                         chk(CERT_STATE_WARNING, "A"), T0 + 60, &ev),
                     AGENT_MONITOR_CHANGE);
    assert_true(ev.first);
    agent_monitor_cleanup(&m);
}

static void
test_clock_back_and_repeat_period(void **state)
{
    struct agent_monitor m;
    struct agent_monitor_event ev;
    (void)state;

    agent_monitor_init(&m);
    upd(&m, "p", AGENT_CERT_ACTIVE, chk(CERT_STATE_CRITICAL, "S"), T0, &ev);
    /* The clock jumps back a year: the reminder comes a day after that,
     * not a year later. */
    assert_int_equal(upd(&m, "p", AGENT_CERT_ACTIVE,
                         chk(CERT_STATE_CRITICAL, "S"), T0 - 365 * DAY, &ev),
                     AGENT_MONITOR_NONE);
    assert_int_equal(upd(&m, "p", AGENT_CERT_ACTIVE,
                         chk(CERT_STATE_CRITICAL, "S"), T0 - 364 * DAY, &ev),
                     AGENT_MONITOR_REPEAT);
    /* A shorter period (tests, or a future option) is honoured. */
    m.repeat_s = 600;
    assert_int_equal(upd(&m, "p", AGENT_CERT_ACTIVE,
                         chk(CERT_STATE_CRITICAL, "S"), T0 - 364 * DAY + 599,
                         &ev),
                     AGENT_MONITOR_NONE);
    assert_int_equal(upd(&m, "p", AGENT_CERT_ACTIVE,
                         chk(CERT_STATE_CRITICAL, "S"), T0 - 364 * DAY + 600,
                         &ev),
                     AGENT_MONITOR_REPEAT);
    agent_monitor_cleanup(&m);
}

static void
test_messages_and_vars(void **state)
{
    struct agent_monitor m;
    struct agent_monitor_event ev;
    struct agent_alert_vars v;
    struct agent_cert_check c;
    char line[1536];
    (void)state;

    agent_monitor_init(&m);
    upd(&m, "prod", AGENT_CERT_ACTIVE, chk(CERT_STATE_OK, "S"), T0, &ev);
    agent_monitor_event_message(&ev, line, sizeof(line));
    assert_string_equal(line, "profile prod: active certificate CN=x (serial "
                              "01) state ok: expires 2027-02-04T08:00:00Z, "
                              "20 days left");
    assert_int_equal(agent_monitor_event_level(&ev), PJ_LOG_NOTICE);

    upd(&m, "prod", AGENT_CERT_ACTIVE, chk(CERT_STATE_WARNING, "S"), T0, &ev);
    agent_monitor_event_message(&ev, line, sizeof(line));
    assert_non_null(strstr(line, "state warning (was ok): expires "));
    assert_int_equal(agent_monitor_event_level(&ev), PJ_LOG_WARN);
    agent_monitor_event_vars(&ev, line, &v);
    assert_string_equal(v.profile, "prod");
    assert_string_equal(v.key, "active");
    assert_string_equal(v.state, "warning");
    assert_string_equal(v.previous_state, "ok");
    assert_string_equal(v.event, "change");
    assert_true(v.have_dates);
    assert_int_equal(v.days_left, 20);
    assert_int_equal(v.not_after, T0 + 20 * DAY);
    assert_string_equal(v.subject, "CN=x");
    assert_string_equal(v.serial, "01");
    assert_string_equal(v.sha256, "S");
    assert_ptr_equal(v.message, line);

    c = chk(CERT_STATE_EXPIRED, "S");
    c.days_left = -3;
    upd(&m, "prod", AGENT_CERT_ACTIVE, c, T0, &ev);
    agent_monitor_event_message(&ev, line, sizeof(line));
    assert_non_null(strstr(line, "state expired (was warning): expired "));
    assert_non_null(strstr(line, "3 days ago"));
    assert_int_equal(agent_monitor_event_level(&ev), PJ_LOG_ERR);

    c = chk(CERT_STATE_MISMATCH, "S");
    snprintf(c.cert_key_fp, sizeof(c.cert_key_fp), "CE:RT");
    snprintf(c.token_key_fp, sizeof(c.token_key_fp), "TO:KN");
    upd(&m, "prod", AGENT_CERT_NEXT, c, T0, &ev);
    agent_monitor_event_message(&ev, line, sizeof(line));
    assert_non_null(strstr(line, "profile prod: next certificate"));
    assert_non_null(strstr(line, "does not match the signing key"));
    assert_non_null(strstr(line, "CE:RT"));
    assert_non_null(strstr(line, "TO:KN"));

    agent_cert_check_fail(&c, "x.pem", T0, "x.pem: no such file");
    upd(&m, "prod", AGENT_CERT_NEXT, c, T0, &ev);
    agent_monitor_event_message(&ev, line, sizeof(line));
    assert_string_equal(line, "profile prod: next certificate state unknown "
                              "(was mismatch): x.pem: no such file");
    agent_monitor_event_vars(&ev, line, &v);
    assert_false(v.have_dates);
    assert_null(v.subject);
    assert_string_equal(v.state, "unknown");

    /* Reminder wording. */
    upd(&m, "prod", AGENT_CERT_NEXT, c, T0 + DAY, &ev);
    assert_int_equal(ev.kind, AGENT_MONITOR_REPEAT);
    agent_monitor_event_message(&ev, line, sizeof(line));
    assert_non_null(strstr(line, "state unknown (still)"));
    agent_monitor_event_vars(&ev, line, &v);
    assert_string_equal(v.event, "repeat");
    agent_monitor_cleanup(&m);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fill_states),
        cmocka_unit_test(test_check_from_file),
        cmocka_unit_test(test_transitions),
        cmocka_unit_test(test_first_bad_and_unknown),
        cmocka_unit_test(test_slots_profiles_reload),
        cmocka_unit_test(test_clock_back_and_repeat_period),
        cmocka_unit_test(test_messages_and_vars),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
