/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The [agent] alert-command hook, run without ever blocking the agent.
 *
 * The hook is started with posix_spawn (glibc: clone with CLONE_VFORK, no
 * copy of the address space, so it is safe with PKCS#11 initialised, where
 * fork() is not), directly (no shell), with:
 *   - argv[0] = the command, nothing else;
 *   - a clean environment: PATH, LANG=C.UTF-8 and the P11JWT_* variables
 *     below, never the agent's own (which may hold an env: PIN source);
 *   - stdin /dev/null, stdout and stderr on the agent's stderr (journald),
 *     every other descriptor closed, working directory "/";
 *   - default signal dispositions and an empty signal mask (the agent
 *     blocks its signals for its signalfd, and a child inherits the mask);
 *   - its own process group, so a timeout kills the hook and whatever it
 *     started (curl, a shell pipeline): SIGTERM to the group at the
 *     timeout, SIGKILL AGENT_ALERT_KILL_GRACE_MS later.
 *
 * Reaping: agent_alert_fd() is a pidfd (pidfd_open, Linux 5.3+) that polls
 * readable when the hook exits; the event loop adds it to its poll set and
 * calls agent_alert_poll() when it fires and at agent_alert_deadline_ms().
 * When pidfd_open is not available the fd is -1 and the loop calls
 * agent_alert_poll() on its timer (or on SIGCHLD). The hook's pid is
 * reaped with waitpid(pid) only, never waitpid(-1), so other children are
 * left alone. SIGCHLD must not be SIG_IGN (children would be reaped by the
 * kernel and no exit status could be reported).
 *
 * Environment given to the hook (values are never secrets):
 *   P11JWT_PROFILE        profile name
 *   P11JWT_KEY            "active" or "next" (during rotation)
 *   P11JWT_STATE          ok|warning|critical|expired|not_yet_valid|
 *                         mismatch|unknown
 *   P11JWT_PREVIOUS_STATE the state before this change ("" at the first
 *                         check)
 *   P11JWT_EVENT          "change" or "repeat" (the daily reminder)
 *   P11JWT_DAYS_LEFT      whole days until notAfter (negative when expired)
 *   P11JWT_NOT_AFTER      2027-01-01T00:00:00Z
 *   P11JWT_NOT_AFTER_UNIX unix seconds
 *   P11JWT_SUBJECT        CN=.., O=..
 *   P11JWT_SERIAL         upper-case hex
 *   P11JWT_SHA256         AB:CD:.. fingerprint of the DER certificate
 *   P11JWT_MESSAGE        the log line of the event
 * Fields that are not known (an unreadable certificate) are empty.
 */
#ifndef AGENT_ALERT_H
#define AGENT_ALERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/pj_err.h"

#define AGENT_ALERT_TIMEOUT_MS_DEFAULT 30000
#define AGENT_ALERT_KILL_GRACE_MS 2000 /* SIGTERM -> SIGKILL */
#define AGENT_ALERT_VALUE_MAX 1024     /* longer values are cut */
#define AGENT_ALERT_PATH                                                       \
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* What the hook is told. Strings may be NULL (passed as empty). */
struct agent_alert_vars {
    const char *profile;
    const char *key; /* "active" | "next" */
    const char *state;
    const char *previous_state;
    const char *event; /* "change" | "repeat" */
    bool have_dates;   /* days_left and not_after are meaningful */
    int64_t days_left;
    int64_t not_after; /* unix seconds */
    const char *subject;
    const char *serial;
    const char *sha256;
    const char *message;
};

/* How a finished hook ended. */
struct agent_alert_result {
    bool exited;    /* exited normally; exit_code is valid */
    int exit_code;  /* 0..255 */
    int signal;     /* killed by this signal (when !exited) */
    bool timed_out; /* we killed it at its timeout */
    int64_t elapsed_ms;
};

struct agent_alert;

/*
 * Start command (an absolute path) with vars in its environment; it is
 * killed timeout_ms after the start (0: AGENT_ALERT_TIMEOUT_MS_DEFAULT).
 * now_ms is the monotonic clock (pj_time_mono_ms). Errors (command missing,
 * not executable, out of processes) name the command. *alertp is new.
 */
PJ_MUST_USE pj_rc agent_alert_start(const char *command,
                                    const struct agent_alert_vars *vars,
                                    long timeout_ms, int64_t now_ms,
                                    struct agent_alert **alertp,
                                    struct pj_err *err);

/* A pidfd readable once the hook has exited, or -1 (poll on a timer). */
int agent_alert_fd(const struct agent_alert *a);
pid_t agent_alert_pid(const struct agent_alert *a);
/* Monotonic ms by which agent_alert_poll must be called again. */
int64_t agent_alert_deadline_ms(const struct agent_alert *a);

/*
 * Reap the hook if it has exited, or enforce its timeout (SIGTERM to the
 * group, then SIGKILL). Never blocks. True once the hook is finished and
 * reaped; the result is then in agent_alert_result().
 */
bool agent_alert_poll(struct agent_alert *a, int64_t now_ms);
bool agent_alert_done(const struct agent_alert *a);
const struct agent_alert_result *
agent_alert_result(const struct agent_alert *a);

/*
 * "alert-command /x (profile prod, state warning) exited with status 0
 * after 12 ms" into buf. Only meaningful once done.
 */
void agent_alert_describe(const struct agent_alert *a, char *buf, size_t n);
/* Log that line: notice when it exited 0, warning otherwise. */
void agent_alert_log(const struct agent_alert *a);

/*
 * Block until the hook finishes (tests, shutdown); enforces the timeout.
 * True when it finished within max_ms.
 */
bool agent_alert_wait(struct agent_alert *a, long max_ms);

/*
 * Free; a hook still running has its group killed (SIGKILL) and is reaped,
 * which takes a moment. NULL is a no-op.
 */
void agent_alert_free(struct agent_alert *a);

#endif
