/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Rotation in the agent (docs/rotation.md) with a fake backend: an
 * exchange refused with invalid_grant / invalid assertion is retried once
 * with the next key, success promotes it; other errors, a failed retry or
 * no next key change nothing; op rotate is for root and the agent's uid.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "agent/agent.h"
#include "agent_fake.h"
#include "core/pj_util.h"

static const char conf[] = "[profile prod]\n"
                           "key = pkcs11:token=t;object=k;type=private\n"
                           "client-id = 3MVGtest\n"
                           "subject = u@example.com\n"
                           "session-lifetime = 1000\n"
                           "allow-uid = 1001\n";

#define KEY_ACTIVE ((struct hsm_key *)(uintptr_t)1)
#define KEY_NEXT ((struct hsm_key *)(uintptr_t)2)

static bool done_[FAKE_JOBS_MAX];

/* Sign ok, then the HTTP answer: a token, or a Salesforce error. */
static void
finish(struct agent *ag, unsigned i, const char *token, const char *error,
       const char *desc)
{
    struct agent_job *job = jobs[i];
    struct sf_result res;
    struct pj_err err = {0};

    done_[i] = true;
    job->rc = PJ_OK;
    agent_job_done(ag, job);
    sf_result_init(&res);
    if (token != NULL) {
        res.ok = true;
        res.token.access_token = pj_secret_dup(token, strlen(token));
        res.token.instance_url = strdup("https://acme.my.salesforce.com");
        res.token.issued_at_ms = (int64_t)ag->fake_wall_s * 1000;
        agent_exchange_done(ag, job, PJ_OK, &res, NULL);
    } else {
        res.fail.cls = SF_CLASS_PERMANENT;
        pj_strlcpy(res.fail.error, error, sizeof(res.fail.error));
        pj_strlcpy(res.fail.error_description, desc,
                   sizeof(res.fail.error_description));
        res.fail.hint = "a hint";
        pj_err_set(&err, PJ_ERR_UPSTREAM, "%s: %s", error, desc);
        agent_exchange_done(ag, job, PJ_ERR_UPSTREAM, &res, &err);
    }
    sf_result_cleanup(&res);
}

static int
setup(void **state)
{
    struct agent *ag = fake_agent_new(conf);

    /* Stand-ins: jobs never reach a token here. */
    ag->profs->key = KEY_ACTIVE;
    ag->profs->rot.next = KEY_NEXT;
    ag->profs->rot.next_id[0] = 7;
    ag->profs->rot.next_id_len = 1;
    ag->profs->rot.next_since = 1799999000;
    memset(done_, 0, sizeof(done_));
    *state = ag;
    return 0;
}

static int
teardown(void **state)
{
    struct agent *ag = *state;
    unsigned i;

    for (i = 0; i < n_jobs; i++) {
        if (!done_[i]) {
            finish(ag, i, NULL, "x", "y");
        }
    }
    ag->profs->key = NULL;
    ag->profs->rot.next = NULL;
    ag->profs->rot.n_stale = 0;
    agent_free(ag);
    return 0;
}

static struct agent_req *
request(struct agent *ag, const struct agent_peer *p, const char *line,
        enum agent_dispatch_result want)
{
    struct agent_req *req = agent_req_new((struct agent_conn *)1, p);

    assert_non_null(req);
    assert_int_equal(agent_dispatch(ag, p, line, strlen(line), req), want);
    return req;
}

static json_t *
answer(struct agent_req *req)
{
    json_t *j;

    assert_true(req->done);
    j = json_loadb(req->out.data, req->out.len, 0, NULL);
    assert_non_null(j);
    return j;
}

static void
test_prof_rotation_enabled_from_label(void **state)
{
    struct agent *ag = *state;

    assert_true(ag->profs->rot.enabled);
    assert_string_equal(ag->profs->rot.active, "k");
    assert_string_equal(ag->profs->rot.next_label, "k.next");
}

static void
test_refused_then_next_key_accepted_promotes(void **state)
{
    struct agent *ag = *state;
    struct agent_prof *pr = ag->profs;
    struct agent_req *req =
        request(ag, &peer, "{\"op\":\"token\"}", AGENT_PENDING);
    json_t *j;

    assert_int_equal(n_jobs, 1);
    assert_ptr_equal(jobs[0]->key, KEY_ACTIVE);
    finish(ag, 0, NULL, "invalid_grant", "invalid assertion");
    /* Not answered: one retry, signed by the next key. */
    assert_false(req->done);
    assert_int_equal(n_jobs, 2);
    assert_ptr_equal(jobs[1]->key, KEY_NEXT);
    assert_true(jobs[1]->retried);
    assert_int_equal(pr->n.rotation_retries, 1);
    finish(ag, 1, "tok-new", NULL, NULL);
    j = answer(req);
    assert_true(json_is_true(json_object_get(j, "ok")));
    json_decref(j);
    /* Promoted: the next key signs from now on; no relabel job without a
     * module (the real agent submits one). */
    assert_ptr_equal(pr->key, KEY_NEXT);
    assert_null(pr->rot.next);
    assert_int_equal(pr->n.promotions, 1);
    assert_int_equal(pr->n.rotation_retries_ok, 1);
    assert_int_equal(pr->rot.promoted_at, ag->fake_wall_s);
    assert_int_equal(n_jobs, 2);
    /* Exchanges counted once: the refused one is a retry, not a failure. */
    assert_int_equal(pr->n.exchanges_ok, 1);
    assert_int_equal(pr->n.exchanges_fail, 0);
    agent_req_free(req);

    /* The next exchange is signed by the promoted key and not retried. */
    assert_true(agent_invalidate(ag, pr, "u@example.com", "tok-new", 7));
    assert_int_equal(n_jobs, 3);
    assert_ptr_equal(jobs[2]->key, KEY_NEXT);
    finish(ag, 2, NULL, "invalid_grant", "invalid assertion");
    assert_int_equal(n_jobs, 3);
    assert_int_equal(pr->n.exchanges_fail, 1);
}

static void
test_other_error_not_retried(void **state)
{
    struct agent *ag = *state;
    struct agent_req *req =
        request(ag, &peer, "{\"op\":\"token\"}", AGENT_PENDING);
    json_t *j;

    finish(ag, 0, NULL, "invalid_grant", "user hasn't approved this consumer");
    assert_int_equal(n_jobs, 1);
    j = answer(req);
    assert_string_equal(json_string_value(json_object_get(j, "error")),
                        "upstream");
    json_decref(j);
    assert_ptr_equal(ag->profs->key, KEY_ACTIVE);
    assert_ptr_equal(ag->profs->rot.next, KEY_NEXT);
    assert_int_equal(ag->profs->n.rotation_retries, 0);
    agent_req_free(req);
}

static void
test_failed_retry_changes_nothing(void **state)
{
    struct agent *ag = *state;
    struct agent_req *req =
        request(ag, &peer, "{\"op\":\"token\"}", AGENT_PENDING);
    json_t *j;

    finish(ag, 0, NULL, "invalid_grant", "invalid assertion");
    assert_int_equal(n_jobs, 2);
    finish(ag, 1, NULL, "invalid_grant", "invalid assertion");
    /* Once only: no third exchange, the client gets the failure. */
    assert_int_equal(n_jobs, 2);
    j = answer(req);
    assert_false(json_is_true(json_object_get(j, "ok")));
    json_decref(j);
    assert_ptr_equal(ag->profs->key, KEY_ACTIVE);
    assert_ptr_equal(ag->profs->rot.next, KEY_NEXT);
    assert_int_equal(ag->profs->n.promotions, 0);
    assert_int_equal(ag->profs->n.rotation_retries, 1);
    assert_int_equal(ag->profs->n.rotation_retries_ok, 0);
    agent_req_free(req);
}

static void
test_no_next_key_no_retry(void **state)
{
    struct agent *ag = *state;
    struct agent_req *req;
    json_t *j;

    ag->profs->rot.next = NULL;
    req = request(ag, &peer, "{\"op\":\"token\"}", AGENT_PENDING);
    finish(ag, 0, NULL, "invalid_grant", "invalid assertion");
    assert_int_equal(n_jobs, 1);
    j = answer(req);
    assert_false(json_is_true(json_object_get(j, "ok")));
    json_decref(j);
    agent_req_free(req);
}

static void
test_rotate_op_policy_and_answer(void **state)
{
    struct agent *ag = *state;
    struct agent_peer self = {getuid(), getgid(), 1, NULL, 0};
    struct agent_req *req;
    json_t *j, *rot;

    /* uid 1001 may use the profile, but not manage its keys. */
    req = request(ag, &peer, "{\"op\":\"rotate\",\"action\":\"reload-keys\"}",
                  AGENT_ANSWERED);
    j = answer(req);
    assert_string_equal(json_string_value(json_object_get(j, "error")),
                        "forbidden");
    json_decref(j);
    agent_req_free(req);
    if (getuid() == 1001) {
        return; /* the rest needs a caller that is the agent's uid */
    }
    req = request(ag, &self, "{\"op\":\"rotate\",\"action\":\"nope\"}",
                  AGENT_ANSWERED);
    j = answer(req);
    assert_string_equal(json_string_value(json_object_get(j, "error")),
                        "bad_request");
    json_decref(j);
    agent_req_free(req);
    /* Without a module nothing is scanned: the current state at once. */
    req = request(ag, &self,
                  "{\"op\":\"rotate\",\"profile\":\"prod\",\"action\":"
                  "\"reload-keys\",\"id\":3}",
                  AGENT_ANSWERED);
    j = answer(req);
    assert_true(json_is_true(json_object_get(j, "ok")));
    assert_int_equal(json_integer_value(json_object_get(j, "id")), 3);
    rot = json_object_get(j, "rotation");
    assert_string_equal(json_string_value(json_object_get(rot, "active")), "k");
    assert_string_equal(json_string_value(json_object_get(rot, "next")),
                        "k.next");
    assert_int_equal(json_integer_value(json_object_get(rot, "since")),
                     1799999000);
    assert_true(json_is_null(json_object_get(rot, "promoted_at")));
    json_decref(j);
    agent_req_free(req);
}

static void
test_status_has_rotation(void **state)
{
    struct agent *ag = *state;
    struct agent_req *req;
    json_t *j, *rot;

    /* status reads the signer's counters: no stand-in key for that. */
    ag->profs->key = NULL;
    req = request(ag, &peer, "{\"op\":\"status\"}", AGENT_ANSWERED);
    j = answer(req);

    rot = json_object_get(json_array_get(json_object_get(j, "profiles"), 0),
                          "rotation");
    assert_non_null(rot);
    assert_string_equal(json_string_value(json_object_get(rot, "next")),
                        "k.next");
    assert_int_equal(json_integer_value(json_object_get(rot, "promotions")), 0);
    json_decref(j);
    agent_req_free(req);
}

static void
test_rotation_label_rules(void **state)
{
    char l[HSM_ROTATE_LABEL_MAX + 1];
    struct pj_err err = {0};

    (void)state;
    assert_int_equal(
        hsm_rotate_label("pkcs11:token=t;object=sf-jwt", l, sizeof(l), &err),
        PJ_OK);
    assert_string_equal(l, "sf-jwt");
    assert_int_equal(
        hsm_rotate_label("pkcs11:token=t;id=%01", l, sizeof(l), &err),
        PJ_ERR_CONFIG);
    assert_int_equal(
        hsm_rotate_label("pkcs11:token=t;object=k;id=%01", l, sizeof(l), &err),
        PJ_ERR_CONFIG);
    assert_int_equal(
        hsm_rotate_label("pkcs11:token=t;object=k.next", l, sizeof(l), &err),
        PJ_ERR_CONFIG);
    assert_int_equal(hsm_rotate_label("pkcs11:token=t;object=k.retired-1", l,
                                      sizeof(l), &err),
                     PJ_ERR_CONFIG);
    assert_int_equal(hsm_rotate_label("not a uri", l, sizeof(l), &err),
                     PJ_ERR_INVALID);
}

static void
test_rotation_uri(void **state)
{
    struct pj_err err = {0};
    const uint8_t id[2] = {0xab, 0x01};
    char *u = NULL;

    (void)state;
    assert_int_equal(hsm_rotate_uri("pkcs11:token=t;object=k;type=private",
                                    NULL, id, sizeof(id), "private", &u, &err),
                     PJ_OK);
    assert_non_null(strstr(u, "id=%AB%01"));
    assert_null(strstr(u, "object="));
    free(u);
    assert_int_equal(hsm_rotate_uri("pkcs11:token=t;object=k;type=private",
                                    "k.next", NULL, 0, "cert", &u, &err),
                     PJ_OK);
    assert_non_null(strstr(u, "object=k.next"));
    assert_non_null(strstr(u, "type=cert"));
    free(u);
    assert_int_equal(hsm_rotate_uri("garbage", "x", NULL, 0, NULL, &u, &err),
                     PJ_ERR_CONFIG);
    assert_null(u);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_prof_rotation_enabled_from_label,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_refused_then_next_key_accepted_promotes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_error_not_retried, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_failed_retry_changes_nothing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_next_key_no_retry, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rotate_op_policy_and_answer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_status_has_rotation, setup,
                                        teardown),
        cmocka_unit_test(test_rotation_label_rules),
        cmocka_unit_test(test_rotation_uri),
    };
    return cmocka_run_group_tests_name("agent_rotate", tests, NULL, NULL);
}
