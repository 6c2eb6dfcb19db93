/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A fake backend for the agent's unit tests (test_agent_cache.c,
 * test_agent_rotate.c): submitted jobs are collected in jobs[] for the test
 * to finish by hand, HTTP starts only count, and the agent runs on an
 * injected clock and random seed. Include after cmocka.h and agent/agent.h,
 * in one test file.
 */
#ifndef TESTS_UNIT_AGENT_FAKE_H
#define TESTS_UNIT_AGENT_FAKE_H

#define FAKE_JOBS_MAX 16

static struct agent_job *jobs[FAKE_JOBS_MAX];
static unsigned n_jobs, n_http, n_answered;

static const struct agent_peer peer = {1001, 1001, 1, NULL, 0};

static bool
fake_submit(struct agent *ag, struct agent_job *job)
{
    (void)ag;
    assert_true(n_jobs < FAKE_JOBS_MAX);
    jobs[n_jobs++] = job;
    return true;
}

static pj_rc
fake_http(struct agent *ag, struct agent_job *job, struct pj_err *err)
{
    (void)ag;
    (void)job;
    (void)err;
    n_http++;
    return PJ_OK;
}

static void
fake_answered(struct agent *ag, struct agent_req *req)
{
    (void)ag;
    (void)req;
    n_answered++;
}

/* An agent on conf with the fake backend, clock and seed; counters reset. */
static struct agent *
fake_agent_new(const char *conf)
{
    struct pj_config *cfg = NULL;
    struct pj_err err = {0};
    struct agent_backend be = {fake_submit, fake_http, fake_answered, NULL};
    struct agent *ag = NULL;

    assert_int_equal(pj_config_load_string(conf, "t.conf", &cfg, &err), PJ_OK);
    assert_int_equal(agent_new(cfg, NULL, &be, &ag, &err), PJ_OK);
    ag->fake_clock = true;
    ag->fake_mono_ms = 1000000;
    ag->fake_wall_s = 1800000000;
    ag->rng = 12345;
    n_jobs = n_http = n_answered = 0;
    return ag;
}

#endif
