/* SPDX-License-Identifier: Apache-2.0 */
/*
 * agent_dispatch without sockets or a token: request parsing, error codes,
 * authorisation (uid, gid, exe, subject), id echo, status and health.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "agent/agent.h"

static const char conf[] = "[profile prod]\n"
                           "key = pkcs11:token=t;object=k;type=private\n"
                           "client-id = 3MVGtest\n"
                           "subject = u@example.com\n"
                           "subjects = etl@example.com\n"
                           "allow-uid = 1001\n"
                           "allow-gid = 2000\n"
                           "[profile exe]\n"
                           "key = pkcs11:token=t;object=k;type=private\n"
                           "client-id = 3MVGtest\n"
                           "subject = u@example.com\n"
                           "allow-uid = 1001\n"
                           "allow-exe = /usr/bin/allowed\n";

static unsigned submits;

static bool
fake_submit(struct agent *ag, struct agent_job *job)
{
    (void)ag;
    (void)job;
    submits++;
    return false; /* never reached in these tests: no key is open */
}

static pj_rc
fake_http(struct agent *ag, struct agent_job *job, struct pj_err *err)
{
    (void)ag;
    (void)job;
    return pj_err_set(err, PJ_ERR_INTERNAL, "not in this test");
}

static int
setup(void **state)
{
    struct pj_config *cfg = NULL;
    struct pj_err err = {0};
    struct agent_backend be = {fake_submit, fake_http, NULL, NULL};
    struct agent *ag = NULL;

    if (pj_config_load_string(conf, "test.conf", &cfg, &err) != PJ_OK) {
        fail_msg("config: %s", err.msg);
    }
    assert_int_equal(agent_new(cfg, NULL, &be, &ag, &err), PJ_OK);
    ag->self_uid = 999; /* not the test's uid: lists decide */
    *state = ag;
    submits = 0;
    return 0;
}

static int
teardown(void **state)
{
    agent_free(*state);
    return 0;
}

static char exe_allowed[] = "/usr/bin/allowed", exe_x[] = "/usr/bin/x",
            exe_py[] = "/usr/bin/python3";
static const struct agent_peer peer_ok = {1001, 1001, 42, exe_allowed, 0};
static const struct agent_peer peer_gid = {4242, 2000, 43, exe_x, 0};
static const struct agent_peer peer_bad = {4242, 4242, 44, exe_x, 0};

/* Dispatch a line; return the parsed answer (caller decrefs). */
static json_t *
run(struct agent *ag, const struct agent_peer *peer, const char *line,
    size_t len)
{
    struct agent_req *req = agent_req_new(NULL, peer);
    json_t *ans;
    json_error_t jerr;

    assert_non_null(req);
    assert_int_equal(agent_dispatch(ag, peer, line, len, req), AGENT_ANSWERED);
    assert_true(req->done);
    assert_true(req->out.len > 0);
    assert_int_equal(req->out.data[req->out.len - 1], '\n');
    assert_null(memchr(req->out.data, '\n', req->out.len - 1));
    ans =
        json_loadb(req->out.data, req->out.len, JSON_REJECT_DUPLICATES, &jerr);
    if (ans == NULL) {
        fail_msg("answer is not JSON: %s", req->out.data);
    }
    agent_req_free(req);
    return ans;
}

static void
expect_error(struct agent *ag, const struct agent_peer *peer, const char *line,
             const char *code, const char *msg_part)
{
    json_t *a = run(ag, peer, line, strlen(line));
    const char *msg;

    assert_true(json_is_false(json_object_get(a, "ok")));
    if (strcmp(json_string_value(json_object_get(a, "error")), code) != 0) {
        fail_msg("%s: wanted %s, got %s", line, code,
                 json_string_value(json_object_get(a, "error")));
    }
    msg = json_string_value(json_object_get(a, "message"));
    assert_non_null(msg);
    if (msg_part != NULL && strstr(msg, msg_part) == NULL) {
        fail_msg("%s: message '%s' lacks '%s'", line, msg, msg_part);
    }
    json_decref(a);
}

static void
test_malformed(void **state)
{
    struct agent *ag = *state;

    expect_error(ag, &peer_ok, "not json", "bad_request", "not valid JSON");
    expect_error(ag, &peer_ok, "{\"op\":\"token\"", "bad_request", "JSON");
    expect_error(ag, &peer_ok, "[\"op\",\"token\"]", "bad_request",
                 "JSON object");
    expect_error(ag, &peer_ok, "\"token\"", "bad_request", NULL);
    expect_error(ag, &peer_ok, "{}", "bad_request", "missing 'op'");
    expect_error(ag, &peer_ok, "{\"op\":\"token\"} {\"op\":\"token\"}",
                 "bad_request", NULL);
    expect_error(ag, &peer_ok, "{\"op\":\"health\",\"op\":\"health\"}",
                 "bad_request", "duplicate");
    expect_error(ag, &peer_ok, "{\"op\":\"\\u0000\"}", "bad_request", NULL);
    /* A raw NUL byte inside the line. */
    {
        json_t *a = run(ag, &peer_ok, "{\"op\":\"health\"}\0", 16);
        assert_string_equal(json_string_value(json_object_get(a, "error")),
                            "bad_request");
        json_decref(a);
    }
}

static void
test_types_and_fields(void **state)
{
    struct agent *ag = *state;

    expect_error(ag, &peer_ok, "{\"op\":1}", "bad_request", "'op' must be");
    expect_error(ag, &peer_ok, "{\"op\":\"token\",\"profile\":7}",
                 "bad_request", "'profile' must be a string");
    expect_error(ag, &peer_ok,
                 "{\"op\":\"token\",\"profile\":\"prod\",\"subject\":null}",
                 "bad_request", "'subject' must be a string");
    expect_error(ag, &peer_ok, "{\"op\":\"token\",\"profle\":\"prod\"}",
                 "bad_request", "unknown field 'profle'");
    expect_error(ag, &peer_ok, "{\"op\":\"token\",\"id\":[1]}", "bad_request",
                 "'id'");
    expect_error(ag, &peer_ok,
                 "{\"op\":\"token\",\"profile\":\"prod\",\"access_token\":"
                 "\"x\"}",
                 "bad_request", "only for op invalidate");
    expect_error(ag, &peer_ok, "{\"op\":\"invalidate\",\"profile\":\"prod\"}",
                 "bad_request", "access_token");
}

static void
test_unknown_op_profile(void **state)
{
    struct agent *ag = *state;

    expect_error(ag, &peer_ok, "{\"op\":\"tokens\"}", "unknown_op", NULL);
    expect_error(ag, &peer_ok, "{\"op\":\"token\",\"profile\":\"nope\"}",
                 "unknown_profile", "prod, exe");
    /* Two profiles: a profile must be named. */
    expect_error(ag, &peer_ok, "{\"op\":\"token\"}", "bad_request",
                 "name a profile");
}

static void
test_oversize(void **state)
{
    struct agent *ag = *state;
    size_t n = AGENT_LINE_MAX + 1;
    char *line = malloc(n);
    json_t *a;

    assert_non_null(line);
    memset(line, ' ', n);
    memcpy(line, "{\"op\":\"health\"}", 15);
    a = run(ag, &peer_ok, line, n);
    assert_string_equal(json_string_value(json_object_get(a, "error")),
                        "bad_request");
    json_decref(a);
    /* At the cap it is fine (trailing spaces are valid JSON). */
    a = run(ag, &peer_ok, line, n - 1);
    assert_true(json_is_true(json_object_get(a, "ok")));
    json_decref(a);
    free(line);
}

static void
test_policy(void **state)
{
    struct agent *ag = *state;

    /* uid not allowed: forbidden, names the uid and the profile. */
    expect_error(ag, &peer_bad, "{\"op\":\"token\",\"profile\":\"prod\"}",
                 "forbidden", "uid 4242");
    expect_error(ag, &peer_bad, "{\"op\":\"assertion\",\"profile\":\"prod\"}",
                 "forbidden", "profile prod");
    expect_error(ag, &peer_bad,
                 "{\"op\":\"invalidate\",\"profile\":\"prod\","
                 "\"access_token\":\"x\"}",
                 "forbidden", "uid 4242");
    expect_error(ag, &peer_bad, "{\"op\":\"status\",\"profile\":\"prod\"}",
                 "forbidden", "uid 4242");
    /* Allowed through its gid: gets past policy (the key is not open). */
    expect_error(ag, &peer_gid, "{\"op\":\"token\",\"profile\":\"prod\"}",
                 "unavailable", "key of profile prod");
    /* Subject: listed ones pass, others are refused with the uid. */
    expect_error(ag, &peer_ok,
                 "{\"op\":\"token\",\"profile\":\"prod\",\"subject\":"
                 "\"etl@example.com\"}",
                 "unavailable", NULL);
    expect_error(ag, &peer_ok,
                 "{\"op\":\"token\",\"profile\":\"prod\",\"subject\":"
                 "\"root@example.com\"}",
                 "forbidden", "uid 1001");
    /* allow-exe: the right uid with the wrong executable is refused. */
    expect_error(ag, &peer_ok, "{\"op\":\"token\",\"profile\":\"exe\"}",
                 "unavailable", NULL);
    {
        struct agent_peer other = peer_ok;
        other.exe = exe_py;
        expect_error(ag, &other, "{\"op\":\"token\",\"profile\":\"exe\"}",
                     "forbidden", "allow-exe");
        other.exe = NULL; /* pid not visible */
        other.exe_errno = ENOENT;
        expect_error(ag, &other, "{\"op\":\"token\",\"profile\":\"exe\"}",
                     "forbidden", "not visible");
        /* Another uid's process, agent not root: says what to change. */
        other.exe_errno = EACCES;
        expect_error(ag, &other, "{\"op\":\"token\",\"profile\":\"exe\"}",
                     "forbidden", "CAP_SYS_PTRACE");
    }
    assert_true(ag->total.refused >= 7);
    assert_int_equal(submits, 0);
}

static void
test_id_health_status(void **state)
{
    struct agent *ag = *state;
    json_t *a, *profs;
    const char *line;

    line = "{\"op\":\"health\",\"id\":\"abc\\\"d\"}";
    a = run(ag, &peer_bad, line, strlen(line));
    assert_string_equal(json_string_value(json_object_get(a, "id")), "abc\"d");
    assert_string_equal(json_string_value(json_object_get(a, "status")),
                        "degraded");
    assert_int_equal(json_array_size(json_object_get(a, "problems")), 2);
    json_decref(a);

    line = "{\"op\":\"nope\",\"id\":7}";
    a = run(ag, &peer_ok, line, strlen(line));
    assert_int_equal(json_integer_value(json_object_get(a, "id")), 7);
    json_decref(a);

    /* status lists only the profiles the caller may use. */
    line = "{\"op\":\"status\"}";
    a = run(ag, &peer_bad, line, strlen(line));
    assert_true(json_is_true(json_object_get(a, "ok")));
    assert_int_equal(json_array_size(json_object_get(a, "profiles")), 0);
    json_decref(a);
    a = run(ag, &peer_ok, line, strlen(line));
    profs = json_object_get(a, "profiles");
    assert_int_equal(json_array_size(profs), 2);
    assert_true(
        json_is_false(json_object_get(json_array_get(profs, 0), "key_open")));
    {
        char *dump = json_dumps(a, 0);
        assert_null(strstr(dump, "access_token"));
        free(dump);
    }
    json_decref(a);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_types_and_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_op_profile, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_oversize, setup, teardown),
        cmocka_unit_test_setup_teardown(test_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_id_health_status, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
