/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The token cache state machine with a fake backend and an injected clock:
 * single-flight, waiters answered together, cached answers while refreshing,
 * refresh timing, transient backoff, permanent hold, invalidate, and the
 * pure backoff/refresh computations.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/agent.h"
#include "agent_fake.h"
#include "core/pj_util.h"

static const char conf[] = "[profile prod]\n"
                           "key = pkcs11:token=t;object=k;type=private\n"
                           "client-id = 3MVGtest\n"
                           "subject = u@example.com\n"
                           "session-lifetime = 1000\n"
                           "allow-uid = 1001\n";

static bool finished[FAKE_JOBS_MAX];

static void finish(struct agent *ag, unsigned i, const char *token,
                   enum sf_class cls, const char *sferror);

static int
setup(void **state)
{
    struct agent *ag = fake_agent_new(conf);

    /* Pretend the key is open: jobs never reach a token here. */
    ag->profs->key = (struct hsm_key *)(uintptr_t)1;
    memset(finished, 0, sizeof(finished));
    *state = ag;
    return 0;
}

static int
teardown(void **state)
{
    struct agent *ag = *state;
    unsigned i;

    /* Finish what a test left in flight, so nothing leaks. */
    for (i = 0; i < n_jobs; i++) {
        if (!finished[i]) {
            finish(ag, i, NULL, SF_CLASS_TRANSIENT, NULL);
        }
    }
    ag->profs->key = NULL;
    agent_free(ag);
    return 0;
}

static struct agent_req *
token_req(struct agent *ag, enum agent_dispatch_result want)
{
    static const char line[] = "{\"op\":\"token\"}";
    struct agent_req *req = agent_req_new((struct agent_conn *)1, &peer);

    assert_int_equal(agent_dispatch(ag, &peer, line, sizeof(line) - 1, req),
                     want);
    return req;
}

/* Finish job i: signing ok, then the HTTP answer (ok or a failure). */
static void
finish(struct agent *ag, unsigned i, const char *token, enum sf_class cls,
       const char *sferror)
{
    struct agent_job *job = jobs[i];
    struct sf_result res;

    finished[i] = true;
    struct pj_err err = {0};
    pj_rc rc = PJ_OK;

    job->rc = PJ_OK;
    agent_job_done(ag, job);
    sf_result_init(&res);
    if (token != NULL) {
        res.ok = true;
        res.token.access_token = pj_secret_dup(token, strlen(token));
        res.token.instance_url = strdup("https://acme.my.salesforce.com");
        res.token.issued_at_ms = (int64_t)ag->fake_wall_s * 1000;
    } else {
        res.fail.cls = cls;
        if (sferror != NULL) {
            pj_strlcpy(res.fail.error, sferror, sizeof(res.fail.error));
            pj_strlcpy(res.fail.error_description, "nope",
                       sizeof(res.fail.error_description));
        }
        res.fail.hint = "a hint";
        rc = cls == SF_CLASS_TRANSIENT ? PJ_ERR_HTTP : PJ_ERR_UPSTREAM;
        pj_err_set(&err, rc, "exchange failed");
    }
    agent_exchange_done(ag, job, rc, &res, &err);
    sf_result_cleanup(&res);
}

static void
test_single_flight(void **state)
{
    struct agent *ag = *state;
    struct agent_req *r[50];
    unsigned i;

    for (i = 0; i < 50; i++) {
        r[i] = token_req(ag, AGENT_PENDING);
    }
    assert_int_equal(n_jobs, 1); /* one exchange for 50 callers */
    finish(ag, 0, "TOKEN-1", SF_CLASS_NONE, NULL);
    assert_int_equal(n_http, 1);
    assert_int_equal(n_answered, 50);
    for (i = 0; i < 50; i++) {
        assert_true(r[i]->done);
        assert_non_null(strstr(r[i]->out.data, "\"access_token\":\"TOKEN-1\""));
        assert_non_null(strstr(r[i]->out.data, "\"expires_at\":1800001000"));
        agent_req_free(r[i]);
    }
    /* Cached now: answered at once, no new exchange. */
    r[0] = token_req(ag, AGENT_ANSWERED);
    assert_non_null(strstr(r[0]->out.data, "TOKEN-1"));
    agent_req_free(r[0]);
    assert_int_equal(n_jobs, 1);
}

static void
test_refresh_serves_cached(void **state)
{
    struct agent *ag = *state;
    struct agent_req *r;

    r = token_req(ag, AGENT_PENDING);
    finish(ag, 0, "OLD", SF_CLASS_NONE, NULL);
    agent_req_free(r);
    /* Before 65% of the lifetime: no refresh. */
    ag->fake_mono_ms += 640 * 1000;
    agent_timers_run(ag);
    assert_int_equal(n_jobs, 1);
    /* After 85%: the timer starts one refresh; callers still get OLD. */
    ag->fake_mono_ms += 220 * 1000;
    agent_timers_run(ag);
    assert_int_equal(n_jobs, 2);
    r = token_req(ag, AGENT_ANSWERED);
    assert_non_null(strstr(r->out.data, "OLD"));
    agent_req_free(r);
    agent_timers_run(ag);
    assert_int_equal(n_jobs, 2); /* still one in flight */
    /* Refresh fails transiently: keep serving OLD, retry with backoff. */
    finish(ag, 1, NULL, SF_CLASS_TRANSIENT, NULL);
    r = token_req(ag, AGENT_ANSWERED);
    assert_non_null(strstr(r->out.data, "OLD"));
    agent_req_free(r);
    assert_int_equal(n_jobs, 2);
    ag->fake_mono_ms += 2001; /* first backoff is at most 1..2 s... */
    agent_timers_run(ag);
    assert_int_equal(n_jobs, 3);
    finish(ag, 2, "NEW", SF_CLASS_NONE, NULL);
    r = token_req(ag, AGENT_ANSWERED);
    assert_non_null(strstr(r->out.data, "NEW"));
    agent_req_free(r);
}

static void
test_expired_never_served(void **state)
{
    struct agent *ag = *state;
    struct agent_req *r;

    r = token_req(ag, AGENT_PENDING);
    finish(ag, 0, "T", SF_CLASS_NONE, NULL);
    agent_req_free(r);
    /* Past lifetime minus margin (1000 - 60 s): a new exchange, waiting. */
    ag->fake_mono_ms += 941 * 1000;
    r = token_req(ag, AGENT_PENDING);
    assert_int_equal(n_jobs, 2);
    finish(ag, 1, "T2", SF_CLASS_NONE, NULL);
    assert_non_null(strstr(r->out.data, "T2"));
    agent_req_free(r);
}

static void
test_transient_backoff(void **state)
{
    struct agent *ag = *state;
    struct agent_req *a, *b;

    a = token_req(ag, AGENT_PENDING);
    b = token_req(ag, AGENT_PENDING);
    finish(ag, 0, NULL, SF_CLASS_TRANSIENT, NULL);
    assert_non_null(strstr(a->out.data, "\"error\":\"token_unavailable\""));
    assert_non_null(strstr(b->out.data, "\"class\":\"transient\""));
    agent_req_free(a);
    agent_req_free(b);
    /* During the backoff: the failure at once, no new exchange. */
    a = token_req(ag, AGENT_ANSWERED);
    assert_non_null(strstr(a->out.data, "\"retry_after\":"));
    agent_req_free(a);
    assert_int_equal(n_jobs, 1);
    /* After it, the timer retries in the background. */
    ag->fake_mono_ms += 1001;
    agent_timers_run(ag);
    ag->fake_mono_ms += 1001;
    agent_timers_run(ag);
    assert_int_equal(n_jobs, 2);
}

static void
test_permanent_hold(void **state)
{
    struct agent *ag = *state;
    struct agent_req *a;
    unsigned i;

    a = token_req(ag, AGENT_PENDING);
    finish(ag, 0, NULL, SF_CLASS_PERMANENT, "invalid_grant");
    assert_non_null(strstr(a->out.data, "\"error\":\"upstream\""));
    assert_non_null(
        strstr(a->out.data, "\"salesforce\":{\"error\":\"invalid_grant\""));
    assert_non_null(strstr(a->out.data, "\"hint\":\"a hint\""));
    agent_req_free(a);
    /* No loop: 14 minutes of requests and timers start nothing. */
    for (i = 0; i < 14; i++) {
        ag->fake_mono_ms += 60 * 1000;
        agent_timers_run(ag);
        a = token_req(ag, AGENT_ANSWERED);
        assert_non_null(strstr(a->out.data, "invalid_grant"));
        agent_req_free(a);
    }
    assert_int_equal(n_jobs, 1);
    /* After the hold, a request tries once more. */
    ag->fake_mono_ms += 61 * 1000;
    a = token_req(ag, AGENT_PENDING);
    assert_int_equal(n_jobs, 2);
    finish(ag, 1, "OK", SF_CLASS_NONE, NULL);
    agent_req_free(a);
}

static void
test_invalidate(void **state)
{
    struct agent *ag = *state;
    struct agent_req *r;
    static const char old[] =
        "{\"op\":\"invalidate\",\"access_token\":\"OLD\"}";
    static const char cur[] =
        "{\"op\":\"invalidate\",\"access_token\":\"CUR\"}";

    r = token_req(ag, AGENT_PENDING);
    finish(ag, 0, "CUR", SF_CLASS_NONE, NULL);
    agent_req_free(r);
    /* An older token: nothing happens. */
    r = agent_req_new((struct agent_conn *)1, &peer);
    agent_dispatch(ag, &peer, old, sizeof(old) - 1, r);
    assert_non_null(strstr(r->out.data, "\"invalidated\":false"));
    agent_req_free(r);
    assert_int_equal(n_jobs, 1);
    /* The current one, many times: exactly one new exchange. */
    r = agent_req_new((struct agent_conn *)1, &peer);
    agent_dispatch(ag, &peer, cur, sizeof(cur) - 1, r);
    assert_non_null(strstr(r->out.data, "\"invalidated\":true"));
    agent_req_free(r);
    r = agent_req_new((struct agent_conn *)1, &peer);
    agent_dispatch(ag, &peer, cur, sizeof(cur) - 1, r);
    assert_non_null(strstr(r->out.data, "\"invalidated\":false"));
    agent_req_free(r);
    assert_int_equal(n_jobs, 2);
    /* Callers now wait for that exchange instead of getting CUR. */
    r = token_req(ag, AGENT_PENDING);
    finish(ag, 1, "NEXT", SF_CLASS_NONE, NULL);
    assert_non_null(strstr(r->out.data, "NEXT"));
    agent_req_free(r);
}

static void
test_orphan_waiter(void **state)
{
    struct agent *ag = *state;
    struct agent_req *r = token_req(ag, AGENT_PENDING);

    r->conn = NULL; /* the client went away: completion frees it */
    finish(ag, 0, "T", SF_CLASS_NONE, NULL);
    assert_int_equal(n_answered, 0);
}

static void
test_backoff_math(void **state)
{
    unsigned n;
    uint64_t rnd;

    (void)state;
    for (n = 1; n < 40; n++) {
        int64_t cap = n >= 10 ? AGENT_BACKOFF_CAP_MS
                              : (int64_t)AGENT_BACKOFF_BASE_MS << (n - 1);
        if (cap > AGENT_BACKOFF_CAP_MS) {
            cap = AGENT_BACKOFF_CAP_MS;
        }
        for (rnd = 0; rnd < 5000000; rnd += 99991) {
            int64_t d = agent_backoff_ms(n, rnd * 2654435761u);
            assert_true(d >= AGENT_BACKOFF_BASE_MS);
            assert_true(d <= cap);
        }
    }
    assert_int_equal(agent_backoff_ms(30, AGENT_BACKOFF_CAP_MS),
                     AGENT_BACKOFF_CAP_MS);
    assert_int_equal(agent_backoff_ms(1, 0), AGENT_BACKOFF_BASE_MS);
    for (rnd = 0; rnd < 1000; rnd++) {
        int64_t d = agent_refresh_delay_ms(7200, rnd * 7919);
        assert_true(d >= 7200 * 675);
        assert_true(d <= 7200 * 825);
    }
    /* Short lifetimes still refresh before the token stops being served. */
    assert_true(agent_refresh_delay_ms(300, UINT64_MAX) <
                (300 - agent_expiry_margin_s(300)) * 1000);
    assert_int_equal(agent_expiry_margin_s(7200), 60);
    assert_int_equal(agent_expiry_margin_s(300), 30);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_single_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refresh_serves_cached, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_expired_never_served, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_transient_backoff, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_permanent_hold, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalidate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_orphan_waiter, setup, teardown),
        cmocka_unit_test(test_backoff_math),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
