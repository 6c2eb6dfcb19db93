/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Certificate monitoring inside the running agent (docs/monitoring.md):
 * the wiring between the event loop (agent_server.c), the agent state
 * (agent.h) and the self-contained modules agent_monitor (checks and the
 * change / once-a-day rule), agent_alert (the alert-command hook) and
 * agent_metrics (the Prometheus text file).
 *
 * A check round runs one task per profile on the agent's worker threads
 * (a check reads the token, so it never runs on the loop). Rounds start at
 * start-up, after a SIGHUP, when a profile's key or rotation state changes
 * (key opened, next key found, promotion) and every [agent]
 * monitor-interval seconds (default an hour); a round waits (at most
 * AGENT_MON_DEFER_MS) while keys are being opened or rotation scans run, so it
 * sees the keys they produce. Each finished task feeds agent_monitor_update:
 * log lines and alert-command hooks at state changes and once a day while not
 * ok. Hooks run without blocking: their pidfds join the loop's poll set. The
 * metrics file is rewritten after each round and every AGENT_MON_METRICS_MS.
 *
 * Everything here runs on the loop thread except agent_mon_task_run.
 */
#ifndef AGENT_MONITOR_GLUE_H
#define AGENT_MONITOR_GLUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/agent_monitor.h"
#include "core/pj_err.h"

#define AGENT_MON_METRICS_MS 15000 /* counters in the metrics file */
#define AGENT_MON_DEFER_MS 30000   /* wait for key opens / scans at most */
#define AGENT_MON_HOOKS_MAX 16     /* alert-command processes at once */

struct agent;
struct agent_prof;
struct agent_buf;
struct agent_mon;

/* One profile's check, run on a worker. Fields are the glue's own. */
struct agent_mon_task {
    struct agent_mon_task *next; /* the server's queues */
    struct agent_prof *prof;     /* holds a ref: its keys stay open */
    int64_t now;                 /* wall s the check is made at */
    bool want[AGENT_CERT_SLOTS];
    struct agent_monitor_src src[AGENT_CERT_SLOTS];
    char *cert; /* copies: the profile may be reloaded meanwhile */
    char *module;
    char *key_error;
    struct agent_cert_check out[AGENT_CERT_SLOTS];
};

/*
 * Create the monitor of ag (ag->mon is set). submit hands a task to a
 * worker (false when it cannot: the task is then dropped by the caller of
 * submit); agent_mon_task_done must be called on the loop when it ran.
 */
PJ_MUST_USE pj_rc agent_mon_new(struct agent *ag,
                                bool (*submit)(void *arg,
                                               struct agent_mon_task *t),
                                void *arg, struct pj_err *err);
/* Kill hooks still running and free (all tasks must be done); NULL ok. */
void agent_mon_free(struct agent *ag);

/* Ask for a check round as soon as keys are settled (start-up). */
void agent_mon_request(struct agent *ag);
/* After agent_reload: forget removed profiles, then check all. */
void agent_mon_reloaded(struct agent *ag);

/*
 * Due work: start rounds, write the metrics file, enforce hook timeouts.
 * Returns ms until it wants to be called again.
 */
int64_t agent_mon_tick(struct agent *ag, int64_t now_ms);
/* The pidfds of running hooks, for the poll set; returns how many. */
size_t agent_mon_fds(const struct agent *ag, int *fds, size_t max);
/* Reap finished hooks (non-blocking; call after each poll). */
void agent_mon_reap(struct agent *ag, int64_t now_ms);

/* Worker thread: read and compare the certificates. */
void agent_mon_task_run(struct agent_mon_task *t);
/* Loop thread: record the results (ran = false: never run, shutdown). */
void agent_mon_task_done(struct agent *ag, struct agent_mon_task *t, bool ran);

/* The "cert" (and "next_cert") members of a status profile object. */
void agent_mon_status_json(const struct agent *ag, struct agent_buf *b,
                           const struct agent_prof *pr);

#endif
