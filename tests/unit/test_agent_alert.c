/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The alert-command hook (agent/agent_alert.c): real hooks (shell scripts
 * written per test) see exactly the P11JWT_* environment, stdin /dev/null
 * and none of our descriptors; the start never blocks; exit statuses are
 * reported; a hook that hangs is killed with its process group at its
 * timeout, even when it ignores SIGTERM or the agent blocks signals.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/agent_alert.h"
#include "core/pj_util.h"

static char dir[] = "/tmp/p11jwt-alert.XXXXXX";

static int
setup(void **state)
{
    (void)state;
    return mkdtemp(dir) == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* An executable script under dir; returns its path (static buffer). */
static const char *
script(const char *name, const char *body)
{
    static char path[128];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    assert_non_null(f = fopen(path, "w"));
    fprintf(f, "#!/bin/sh\n%s\n", body);
    fclose(f);
    assert_int_equal(chmod(path, 0700), 0);
    return path;
}

static const struct agent_alert_vars vars = {
    .profile = "prod",
    .key = "active",
    .state = "warning",
    .previous_state = "ok",
    .event = "change",
    .have_dates = true,
    .days_left = 20,
    .not_after = 1800000000,
    .subject = "CN=api, O=Acme",
    .serial = "01AB",
    .sha256 = "AB:CD",
    .message = "profile prod: active certificate CN=api state warning",
};

static char *
slurp(const char *name)
{
    char path[128];
    uint8_t *data = NULL;
    size_t len = 0;
    struct pj_err err = {0};

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    assert_int_equal(pj_file_read(path, 1 << 20, &data, &len, &err), PJ_OK);
    return (char *)data;
}

static void
test_env_stdin_fds_status(void **state)
{
    char body[512], *env, *in, *fds;
    struct agent_alert *a = NULL;
    struct pj_err err = {0};
    const struct agent_alert_result *r;
    char line[768];
    int leak;
    (void)state;

    /* Something the hook must not see: our environment and descriptors. */
    setenv("P11JWT_TEST_SECRET", "do-not-leak", 1);
    leak = dup2(STDERR_FILENO, 57); /* no O_CLOEXEC */
    assert_int_equal(leak, 57);
    snprintf(body, sizeof(body),
             "env | sort > %s/env.out\n"
             "readlink /proc/$$/fd/0 > %s/stdin.out\n"
             "ls /proc/$$/fd > %s/fds.out\n"
             "pwd > %s/pwd.out\n"
             "exit 3",
             dir, dir, dir, dir);
    assert_int_equal(agent_alert_start(script("env.sh", body), &vars, 5000,
                                       pj_time_mono_ms(), &a, &err),
                     PJ_OK);
    assert_true(agent_alert_pid(a) > 0);
    assert_true(agent_alert_fd(a) >= 0); /* pidfd: Linux 5.3+ */
    assert_false(agent_alert_done(a));
    assert_true(agent_alert_wait(a, 5000));
    r = agent_alert_result(a);
    assert_true(r->exited);
    assert_int_equal(r->exit_code, 3);
    assert_false(r->timed_out);
    agent_alert_describe(a, line, sizeof(line));
    assert_non_null(strstr(line, "exited with status 3"));
    assert_non_null(strstr(line, "profile prod"));
    assert_non_null(strstr(line, "state warning"));
    agent_alert_free(a);
    close(leak);
    unsetenv("P11JWT_TEST_SECRET");

    env = slurp("env.out");
    assert_non_null(strstr(env, "\nP11JWT_PROFILE=prod\n"));
    assert_non_null(strstr(env, "\nP11JWT_KEY=active\n"));
    assert_non_null(strstr(env, "\nP11JWT_STATE=warning\n"));
    assert_non_null(strstr(env, "\nP11JWT_PREVIOUS_STATE=ok\n"));
    assert_non_null(strstr(env, "\nP11JWT_EVENT=change\n"));
    assert_non_null(strstr(env, "\nP11JWT_DAYS_LEFT=20\n"));
    assert_non_null(strstr(env, "\nP11JWT_NOT_AFTER=2027-01-15T08:00:00Z\n"));
    assert_non_null(strstr(env, "\nP11JWT_NOT_AFTER_UNIX=1800000000\n"));
    assert_non_null(strstr(env, "\nP11JWT_SUBJECT=CN=api, O=Acme\n"));
    assert_non_null(strstr(env, "\nP11JWT_SERIAL=01AB\n"));
    assert_non_null(strstr(env, "\nP11JWT_SHA256=AB:CD\n"));
    assert_non_null(strstr(env, "\nP11JWT_MESSAGE=profile prod: active "));
    assert_non_null(strstr(env, "PATH=/usr/local/sbin:"));
    assert_null(strstr(env, "do-not-leak"));
    assert_null(strstr(env, "HOME="));
    free(env);
    in = slurp("stdin.out");
    /* The path, not the contents: /dev/null may not be a device in a
     * broken container. */
    assert_string_equal(in, "/dev/null\n");
    free(in);
    fds = slurp("fds.out");
    assert_null(strstr(fds, "57"));
    free(fds);
    in = slurp("pwd.out");
    assert_string_equal(in, "/\n");
    free(in);
}

static void
test_exit_zero_and_unknown_fields(void **state)
{
    struct agent_alert_vars v = {.profile = "p", .state = "unknown"};
    struct agent_alert *a = NULL;
    struct pj_err err = {0};
    char body[256], *env;
    (void)state;

    snprintf(body, sizeof(body), "env > %s/env2.out", dir);
    assert_int_equal(agent_alert_start(script("ok.sh", body), &v, 0,
                                       pj_time_mono_ms(), &a, &err),
                     PJ_OK);
    assert_true(agent_alert_wait(a, 5000));
    assert_true(agent_alert_result(a)->exited);
    assert_int_equal(agent_alert_result(a)->exit_code, 0);
    agent_alert_free(a);
    env = slurp("env2.out");
    /* Unknown fields are present and empty. */
    assert_non_null(strstr(env, "P11JWT_DAYS_LEFT=\n"));
    assert_non_null(strstr(env, "P11JWT_NOT_AFTER=\n"));
    assert_non_null(strstr(env, "P11JWT_SUBJECT=\n"));
    assert_non_null(strstr(env, "P11JWT_STATE=unknown\n"));
    free(env);
}

static void
test_hang_killed_at_timeout(void **state)
{
    struct agent_alert *a = NULL;
    struct pj_err err = {0};
    const struct agent_alert_result *r;
    sigset_t block, old;
    int64_t t0, t1;
    char body[256], *pid_s, line[768], stat_path[64];
    long child;
    FILE *f;
    char st = 0;
    (void)state;

    /* The agent blocks its signals for signalfd: the hook must not
     * inherit that mask, or SIGTERM would never reach it. */
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, &old);
    snprintf(body, sizeof(body),
             "sleep 60 &\necho $! > %s/child.pid\nwait\nexit 0", dir);
    t0 = pj_time_mono_ms();
    assert_int_equal(
        agent_alert_start(script("hang.sh", body), &vars, 300, t0, &a, &err),
        PJ_OK);
    /* Starting never waits for the hook. */
    assert_true(pj_time_mono_ms() - t0 < 1000);
    assert_false(agent_alert_poll(a, pj_time_mono_ms()));
    assert_true(agent_alert_wait(a, 5000));
    t1 = pj_time_mono_ms();
    sigprocmask(SIG_SETMASK, &old, NULL);
    r = agent_alert_result(a);
    assert_true(r->timed_out);
    assert_false(r->exited);
    assert_int_equal(r->signal, SIGTERM);
    assert_true(t1 - t0 >= 300);
    assert_true(t1 - t0 < 300 + AGENT_ALERT_KILL_GRACE_MS);
    agent_alert_describe(a, line, sizeof(line));
    assert_non_null(strstr(line, "killed by signal 15"));
    assert_non_null(strstr(line, "timed out"));
    agent_alert_free(a);
    /* The hook's own child (same process group) is gone too. */
    pid_s = slurp("child.pid");
    child = strtol(pid_s, NULL, 10);
    free(pid_s);
    assert_true(child > 0);
    usleep(100 * 1000);
    snprintf(stat_path, sizeof(stat_path), "/proc/%ld/stat", child);
    if ((f = fopen(stat_path, "r")) != NULL) {
        /* It may linger as a zombie until init reaps it: not running. */
        assert_int_equal(fscanf(f, "%*d %*s %c", &st), 1);
        fclose(f);
        assert_true(st == 'Z' || st == 'X');
    }
}

static void
test_term_ignored_then_killed(void **state)
{
    struct agent_alert *a = NULL;
    struct pj_err err = {0};
    const struct agent_alert_result *r;
    int64_t t0, t1;
    (void)state;

    t0 = pj_time_mono_ms();
    assert_int_equal(
        agent_alert_start(
            script("stubborn.sh", "trap '' TERM\nwhile :; do sleep 0.05; done"),
            &vars, 200, t0, &a, &err),
        PJ_OK);
    assert_true(agent_alert_wait(a, 10000));
    t1 = pj_time_mono_ms();
    r = agent_alert_result(a);
    assert_true(r->timed_out);
    assert_int_equal(r->signal, SIGKILL);
    assert_true(t1 - t0 >= 200 + AGENT_ALERT_KILL_GRACE_MS);
    assert_true(t1 - t0 < 200 + 3 * AGENT_ALERT_KILL_GRACE_MS);
    agent_alert_free(a);
}

static void
test_pidfd_pollable(void **state)
{
    struct agent_alert *a = NULL;
    struct pj_err err = {0};
    struct pollfd p;
    (void)state;

    assert_int_equal(agent_alert_start(script("quick.sh", "sleep 0.2"), &vars,
                                       5000, pj_time_mono_ms(), &a, &err),
                     PJ_OK);
    p.fd = agent_alert_fd(a);
    p.events = POLLIN;
    assert_true(p.fd >= 0);
    /* Not readable while it runs, readable once it exits. */
    assert_int_equal(poll(&p, 1, 0), 0);
    assert_int_equal(poll(&p, 1, 5000), 1);
    assert_true(agent_alert_poll(a, pj_time_mono_ms()));
    assert_true(agent_alert_done(a));
    assert_int_equal(agent_alert_fd(a), -1); /* closed once reaped */
    assert_int_equal(agent_alert_result(a)->exit_code, 0);
    /* Polling again is harmless. */
    assert_true(agent_alert_poll(a, pj_time_mono_ms()));
    agent_alert_free(a);
}

static void
test_free_running_kills(void **state)
{
    struct agent_alert *a = NULL;
    struct pj_err err = {0};
    pid_t pid;
    (void)state;

    assert_int_equal(agent_alert_start(script("long.sh", "sleep 60"), &vars,
                                       60000, pj_time_mono_ms(), &a, &err),
                     PJ_OK);
    pid = agent_alert_pid(a);
    agent_alert_free(a); /* kills and reaps */
    assert_int_equal(kill(pid, 0), -1);
    assert_int_equal(errno, ESRCH);
    agent_alert_free(NULL);
}

static void
test_bad_commands(void **state)
{
    struct agent_alert *a = (struct agent_alert *)1;
    struct pj_err err = {0};
    char path[128];
    (void)state;

    assert_int_equal(agent_alert_start("notify.sh", &vars, 0, 0, &a, &err),
                     PJ_ERR_CONFIG);
    assert_null(a);
    assert_non_null(strstr(err.msg, "notify.sh"));
    assert_non_null(strstr(err.msg, "absolute"));
    pj_err_clear(&err);
    assert_int_equal(agent_alert_start(NULL, &vars, 0, 0, &a, &err),
                     PJ_ERR_CONFIG);
    pj_err_clear(&err);
    snprintf(path, sizeof(path), "%s/no-such-hook", dir);
    assert_int_equal(agent_alert_start(path, &vars, 0, 0, &a, &err), PJ_ERR_IO);
    assert_null(a);
    assert_non_null(strstr(err.msg, "no-such-hook"));
    assert_non_null(strstr(err.msg, "could not be started"));
    pj_err_clear(&err);
    /* Not executable. */
    script("noexec.sh", "exit 0");
    snprintf(path, sizeof(path), "%s/noexec.sh", dir);
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(agent_alert_start(path, &vars, 0, 0, &a, &err), PJ_ERR_IO);
    assert_non_null(strstr(err.msg, "noexec.sh"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_env_stdin_fds_status),
        cmocka_unit_test(test_exit_zero_and_unknown_fields),
        cmocka_unit_test(test_hang_killed_at_timeout),
        cmocka_unit_test(test_term_ignored_then_killed),
        cmocka_unit_test(test_pidfd_pollable),
        cmocka_unit_test(test_free_running_kills),
        cmocka_unit_test(test_bad_commands),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
