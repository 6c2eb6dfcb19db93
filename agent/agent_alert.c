/* SPDX-License-Identifier: Apache-2.0 */
/* The alert-command hook: posix_spawn, pidfd, timeout (agent_alert.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/agent_alert.h"
#include "certs/cert.h"
#include "core/pj_log.h"
#include "core/pj_util.h"

#define ENV_MAX 16

struct agent_alert {
    pid_t pid;
    int pidfd;
    int64_t start_ms;
    int64_t deadline_ms;
    long timeout_ms;
    bool term_sent, kill_sent;
    bool done;
    struct agent_alert_result res;
    char command[256];
    char profile[64];
    char key[16];
    char state[32];
};

/* "NAME=value" in new memory, value cut at AGENT_ALERT_VALUE_MAX. */
static char *
env_var(const char *name, const char *value)
{
    char *s = NULL;
    size_t vlen;

    if (value == NULL) {
        value = "";
    }
    vlen = strnlen(value, AGENT_ALERT_VALUE_MAX);
    if (asprintf(&s, "%s=%.*s", name, (int)vlen, value) < 0) {
        return NULL;
    }
    return s;
}

static void
env_free(char **env)
{
    size_t i;

    for (i = 0; env[i] != NULL; i++) {
        free(env[i]);
    }
}

/* The hook's whole environment; false on allocation failure. */
static bool
env_build(const struct agent_alert_vars *v, char **env)
{
    char days[32] = "", na[21] = "", naunix[32] = "";
    size_t n = 0, i;
    struct {
        const char *name, *value;
    } vars[] = {
        {"PATH", AGENT_ALERT_PATH},
        {"LANG", "C.UTF-8"},
        {"P11JWT_PROFILE", v->profile},
        {"P11JWT_KEY", v->key},
        {"P11JWT_STATE", v->state},
        {"P11JWT_PREVIOUS_STATE", v->previous_state},
        {"P11JWT_EVENT", v->event},
        {"P11JWT_DAYS_LEFT", days},
        {"P11JWT_NOT_AFTER", na},
        {"P11JWT_NOT_AFTER_UNIX", naunix},
        {"P11JWT_SUBJECT", v->subject},
        {"P11JWT_SERIAL", v->serial},
        {"P11JWT_SHA256", v->sha256},
        {"P11JWT_MESSAGE", v->message},
    };

    if (v->have_dates) {
        snprintf(days, sizeof(days), "%" PRId64, v->days_left);
        cert_time_iso(v->not_after, na);
        snprintf(naunix, sizeof(naunix), "%" PRId64, v->not_after);
    }
    for (i = 0; i < PJ_ARRAY_SIZE(vars) && n + 1 < ENV_MAX; i++) {
        if ((env[n] = env_var(vars[i].name, vars[i].value)) == NULL) {
            env_free(env);
            return false;
        }
        env[++n] = NULL;
    }
    return true;
}

static int
pidfd_open_compat(pid_t pid)
{
#ifdef SYS_pidfd_open
    /* The fd is close-on-exec: later hooks do not inherit it. */
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

pj_rc
agent_alert_start(const char *command, const struct agent_alert_vars *vars,
                  long timeout_ms, int64_t now_ms, struct agent_alert **alertp,
                  struct pj_err *err)
{
    struct agent_alert *a = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    bool fa_init = false, attr_init = false;
    char *env[ENV_MAX] = {NULL};
    char *argv[2];
    sigset_t none, all;
    pj_rc rc = PJ_ERR_INTERNAL;
    int e;

    *alertp = NULL;
    if (command == NULL || command[0] != '/') {
        return pj_err_set(err, PJ_ERR_CONFIG,
                          "alert-command '%s' is not an absolute path",
                          command != NULL ? command : "");
    }
    if (timeout_ms <= 0) {
        timeout_ms = AGENT_ALERT_TIMEOUT_MS_DEFAULT;
    }
    if ((a = calloc(1, sizeof(*a))) == NULL || !env_build(vars, env)) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
        goto out;
    }
    a->pid = -1;
    a->pidfd = -1;
    a->timeout_ms = timeout_ms;
    pj_strlcpy(a->command, command, sizeof(a->command));
    pj_strlcpy(a->profile, vars->profile != NULL ? vars->profile : "",
               sizeof(a->profile));
    pj_strlcpy(a->key, vars->key != NULL ? vars->key : "", sizeof(a->key));
    pj_strlcpy(a->state, vars->state != NULL ? vars->state : "",
               sizeof(a->state));

    if ((e = posix_spawn_file_actions_init(&fa)) != 0) {
        errno = e;
        rc = pj_err_sys(err, "alert-command %s: posix_spawn_file_actions_init",
                        command);
        goto out;
    }
    fa_init = true;
    if ((e = posix_spawnattr_init(&attr)) != 0) {
        errno = e;
        rc = pj_err_sys(err, "alert-command %s: posix_spawnattr_init", command);
        goto out;
    }
    attr_init = true;
    sigemptyset(&none);
    sigfillset(&all);
    if ((e = posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null",
                                              O_RDONLY, 0)) != 0 ||
        (e = posix_spawn_file_actions_adddup2(&fa, STDERR_FILENO,
                                              STDOUT_FILENO)) != 0 ||
        (e = posix_spawn_file_actions_addclosefrom_np(&fa, 3)) != 0 ||
        (e = posix_spawn_file_actions_addchdir_np(&fa, "/")) != 0 ||
        (e = posix_spawnattr_setpgroup(&attr, 0)) != 0 ||
        (e = posix_spawnattr_setsigmask(&attr, &none)) != 0 ||
        (e = posix_spawnattr_setsigdefault(&attr, &all)) != 0 ||
        (e = posix_spawnattr_setflags(
             &attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                        POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_USEVFORK)) != 0) {
        errno = e;
        rc = pj_err_sys(err, "alert-command %s: setting up the spawn", command);
        goto out;
    }
    argv[0] = a->command;
    argv[1] = NULL;
    if ((e = posix_spawn(&a->pid, command, &fa, &attr, argv, env)) != 0) {
        errno = e;
        a->pid = -1;
        rc = pj_err_sys(err, "alert-command %s could not be started", command);
        goto out;
    }
    a->start_ms = now_ms;
    a->deadline_ms = now_ms + timeout_ms;
    a->pidfd = pidfd_open_compat(a->pid);
    *alertp = a;
    a = NULL;
    rc = PJ_OK;
out:
    if (fa_init) {
        posix_spawn_file_actions_destroy(&fa);
    }
    if (attr_init) {
        posix_spawnattr_destroy(&attr);
    }
    env_free(env);
    free(a);
    return rc;
}

int
agent_alert_fd(const struct agent_alert *a)
{
    return a->pidfd;
}

pid_t
agent_alert_pid(const struct agent_alert *a)
{
    return a->pid;
}

int64_t
agent_alert_deadline_ms(const struct agent_alert *a)
{
    return a->deadline_ms;
}

bool
agent_alert_done(const struct agent_alert *a)
{
    return a->done;
}

const struct agent_alert_result *
agent_alert_result(const struct agent_alert *a)
{
    return &a->res;
}

static void
finish(struct agent_alert *a, int status, int64_t now_ms)
{
    a->done = true;
    a->res.elapsed_ms = now_ms - a->start_ms;
    a->res.timed_out = a->term_sent;
    if (WIFEXITED(status)) {
        a->res.exited = true;
        a->res.exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        a->res.signal = WTERMSIG(status);
    }
    if (a->pidfd >= 0) {
        close(a->pidfd);
        a->pidfd = -1;
    }
}

bool
agent_alert_poll(struct agent_alert *a, int64_t now_ms)
{
    int status = 0;
    pid_t r;

    if (a->done) {
        return true;
    }
    do {
        r = waitpid(a->pid, &status, WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == a->pid) {
        finish(a, status, now_ms);
        return true;
    }
    if (r < 0) {
        /* ECHILD: someone else reaped it (SIGCHLD set to SIG_IGN?). */
        pj_log_warn("alert-command %s: its exit status is lost (%s); is "
                    "SIGCHLD ignored?",
                    a->command, strerror(errno));
        finish(a, 0, now_ms);
        a->res.exited = false;
        return true;
    }
    if (now_ms < a->deadline_ms) {
        return false;
    }
    /* Timed out: the whole group, so children of a shell script go too. */
    if (!a->term_sent) {
        a->term_sent = true;
        (void)kill(-a->pid, SIGTERM);
    } else {
        a->kill_sent = true;
        (void)kill(-a->pid, SIGKILL);
    }
    a->deadline_ms = now_ms + AGENT_ALERT_KILL_GRACE_MS;
    return false;
}

void
agent_alert_describe(const struct agent_alert *a, char *buf, size_t n)
{
    char how[128];

    if (!a->done) {
        snprintf(how, sizeof(how), "is still running (pid %ld)", (long)a->pid);
    } else if (a->res.exited) {
        snprintf(how, sizeof(how), "exited with status %d", a->res.exit_code);
    } else if (a->res.signal != 0) {
        snprintf(how, sizeof(how), "was killed by signal %d (%s)",
                 a->res.signal, strsignal(a->res.signal));
    } else {
        snprintf(how, sizeof(how), "ended; exit status unknown");
    }
    snprintf(buf, n,
             "alert-command %s (profile %s, %s certificate, state %s) "
             "%s%s after %" PRId64 " ms",
             a->command, a->profile, a->key, a->state, how,
             a->res.timed_out ? ", timed out" : "", a->res.elapsed_ms);
}

void
agent_alert_log(const struct agent_alert *a)
{
    char line[768];

    agent_alert_describe(a, line, sizeof(line));
    pj_log(a->done && a->res.exited && a->res.exit_code == 0 ? PJ_LOG_NOTICE
                                                             : PJ_LOG_WARN,
           "%s", line);
}

bool
agent_alert_wait(struct agent_alert *a, long max_ms)
{
    int64_t end = pj_time_mono_ms() + max_ms;
    int64_t now, left;

    for (;;) {
        now = pj_time_mono_ms();
        if (agent_alert_poll(a, now)) {
            return true;
        }
        if (now >= end) {
            return false;
        }
        left = a->deadline_ms - now;
        if (end - now < left) {
            left = end - now;
        }
        if (left < 1) {
            left = 1;
        }
        if (a->pidfd >= 0) {
            struct pollfd p = {.fd = a->pidfd, .events = POLLIN};

            (void)poll(&p, 1, (int)left);
        } else {
            struct timespec ts = {0, 10 * 1000 * 1000};

            (void)nanosleep(&ts, NULL);
        }
    }
}

void
agent_alert_free(struct agent_alert *a)
{
    int status;

    if (a == NULL) {
        return;
    }
    if (!a->done && a->pid > 0) {
        (void)kill(-a->pid, SIGKILL);
        while (waitpid(a->pid, &status, 0) < 0 && errno == EINTR) {
        }
    }
    if (a->pidfd >= 0) {
        close(a->pidfd);
    }
    free(a);
}
