/* SPDX-License-Identifier: Apache-2.0 */
/* Certificate monitoring in the running agent (agent_monitor_glue.h). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "agent/agent_alert.h"
#include "agent/agent_metrics.h"
#include "agent/agent_monitor.h"
#include "agent/agent_monitor_glue.h"
#include "core/pj_log.h"
#include "core/pj_util.h"

struct agent_mon {
    struct agent *ag;
    bool (*submit)(void *arg, struct agent_mon_task *t);
    void *arg;
    struct agent_monitor m;
    /* rounds */
    bool due;              /* a round is wanted */
    int64_t due_since;     /* mono ms the wish was made */
    bool rerun;            /* wanted while one was running */
    unsigned outstanding;  /* tasks out */
    int64_t next_round_ms; /* mono ms of the periodic round */
    uint64_t keys_sig;     /* what the keys looked like at the last round */
    /* metrics */
    int64_t next_metrics_ms;
    char metrics_error[PJ_ERR_MSG_MAX]; /* last write failure, or "" */
    /* hooks */
    struct agent_alert *hooks[AGENT_MON_HOOKS_MAX];
    size_t n_hooks;
};

/* Something changed about a profile's keys: a round should look again. */
static uint64_t
keys_sig(const struct agent *ag)
{
    const struct agent_prof *pr;
    uint64_t h = 1469598103934665603ULL;

    for (pr = ag->profs; pr != NULL; pr = pr->next) {
        uint64_t v[5] = {
            (uint64_t)(uintptr_t)pr, (uint64_t)pr->rot.active_since,
            (uint64_t)pr->rot.next_since, (uint64_t)pr->rot.promoted_at,
            (uint64_t)(pr->key != NULL) |
                ((uint64_t)(pr->rot.next != NULL) << 1)};
        size_t i;

        for (i = 0; i < PJ_ARRAY_SIZE(v); i++) {
            h = (h ^ v[i]) * 1099511628211ULL;
        }
    }
    return h;
}

pj_rc
agent_mon_new(struct agent *ag,
              bool (*submit)(void *arg, struct agent_mon_task *t), void *arg,
              struct pj_err *err)
{
    struct agent_mon *mon = calloc(1, sizeof(*mon));

    if (mon == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM,
                          "out of memory for the certificate monitor");
    }
    mon->ag = ag;
    mon->submit = submit;
    mon->arg = arg;
    agent_monitor_init(&mon->m);
    ag->mon = mon;
    return PJ_OK;
}

void
agent_mon_free(struct agent *ag)
{
    struct agent_mon *mon = ag != NULL ? ag->mon : NULL;
    size_t i;

    if (mon == NULL) {
        return;
    }
    for (i = 0; i < mon->n_hooks; i++) {
        if (!agent_alert_done(mon->hooks[i])) {
            pj_log_warn("exiting: killing alert-command pid %ld",
                        (long)agent_alert_pid(mon->hooks[i]));
        }
        agent_alert_free(mon->hooks[i]);
    }
    agent_monitor_cleanup(&mon->m);
    free(mon);
    ag->mon = NULL;
}

void
agent_mon_request(struct agent *ag)
{
    struct agent_mon *mon = ag->mon;

    if (mon == NULL) {
        return;
    }
    if (mon->outstanding > 0) {
        mon->rerun = true;
        return;
    }
    if (!mon->due) {
        mon->due = true;
        mon->due_since = agent_mono_ms(ag);
    }
}

void
agent_mon_reloaded(struct agent *ag)
{
    struct agent_mon *mon = ag->mon;
    const char *names[256];
    const struct agent_prof *pr;
    size_t n = 0;

    if (mon == NULL) {
        return;
    }
    for (pr = ag->profs; pr != NULL && n < PJ_ARRAY_SIZE(names);
         pr = pr->next) {
        names[n++] = pr->p->name;
    }
    if (pr == NULL) { /* with more profiles than that, forget nothing */
        agent_monitor_retain(&mon->m, names, n);
    }
    /* The metrics file may have moved or appeared: write it soon. */
    mon->next_metrics_ms = 0;
    mon->metrics_error[0] = '\0';
    agent_mon_request(ag);
}

/* ---- rounds ------------------------------------------------------------ */

static void
task_free(struct agent_mon_task *t)
{
    free(t->cert);
    free(t->module);
    free(t->key_error);
    free(t);
}

static struct agent_mon_task *
task_new(struct agent *ag, struct agent_prof *pr)
{
    const struct pj_profile *p = pr->p;
    const struct pj_config_agent *ac = &ag->cfg->cfg->agent;
    struct agent_mon_task *t = calloc(1, sizeof(*t));
    size_t s;

    if (t == NULL || (p->cert != NULL && (t->cert = strdup(p->cert)) == NULL) ||
        (ac->module != NULL && (t->module = strdup(ac->module)) == NULL) ||
        (pr->key == NULL && (t->key_error = strdup(pr->key_error)) == NULL)) {
        if (t != NULL) {
            task_free(t);
        }
        return NULL;
    }
    t->prof = pr;
    t->now = agent_wall_s(ag);
    for (s = 0; s < AGENT_CERT_SLOTS; s++) {
        t->src[s].module = t->module;
        t->src[s].warn_days = p->warn_days;
        t->src[s].critical_days = p->critical_days;
    }
    /* Active: the configured certificate, compared with the signing key,
     * or the certificate beside that key. */
    t->want[AGENT_CERT_ACTIVE] = true;
    t->src[AGENT_CERT_ACTIVE].cert = t->cert;
    t->src[AGENT_CERT_ACTIVE].key = pr->key;
    t->src[AGENT_CERT_ACTIVE].key_error = t->key_error;
    /* Next (during a rotation): the certificate beside the next key. */
    if (pr->rot.next != NULL) {
        t->want[AGENT_CERT_NEXT] = true;
        t->src[AGENT_CERT_NEXT].key = pr->rot.next;
    }
    return t;
}

/* Keys still being opened or scanned: their results are worth waiting for. */
static bool
keys_settling(const struct agent *ag)
{
    const struct agent_prof *pr;

    if (ag->opening > 0) {
        return true;
    }
    for (pr = ag->profs; pr != NULL; pr = pr->next) {
        if (pr->key_opening || pr->rot.scanning) {
            return true;
        }
    }
    return false;
}

static void
round_start(struct agent *ag, int64_t now_ms)
{
    struct agent_mon *mon = ag->mon;
    struct agent_prof *pr;

    mon->due = false;
    mon->keys_sig = keys_sig(ag);
    mon->next_round_ms =
        now_ms + (int64_t)ag->cfg->cfg->agent.monitor_interval * 1000;
    for (pr = ag->profs; pr != NULL; pr = pr->next) {
        struct agent_mon_task *t = task_new(ag, pr);

        if (t == NULL) {
            pj_log_err("profile %s: certificate check skipped: out of memory",
                       pr->p->name);
            continue;
        }
        agent_prof_ref(pr);
        mon->outstanding++;
        if (!mon->submit(mon->arg, t)) {
            agent_mon_task_done(ag, t, false);
        }
    }
}

/* ---- metrics ----------------------------------------------------------- */

static void
metrics_write(struct agent *ag)
{
    struct agent_mon *mon = ag->mon;
    const char *path = ag->cfg->cfg->agent.metrics_file;
    struct agent_metrics_profile *mp = NULL;
    struct agent_metrics_ipc ipc[AGENT_OP_COUNT + 1];
    struct agent_metrics m;
    struct agent_prof *pr;
    struct pj_err err = {0};
    size_t n = 0, i, s;

    if (path == NULL) {
        return;
    }
    for (pr = ag->profs; pr != NULL; pr = pr->next) {
        n++;
    }
    if (n > 0 && (mp = calloc(n, sizeof(*mp))) == NULL) {
        pj_log_err("metrics file %s not written: out of memory", path);
        return;
    }
    for (pr = ag->profs, i = 0; pr != NULL; pr = pr->next, i++) {
        mp[i].name = pr->p->name;
        for (s = 0; s < AGENT_CERT_SLOTS; s++) {
            const struct agent_cert_check *c = agent_monitor_get(
                &mon->m, pr->p->name, (enum agent_cert_slot)s);
            static const struct agent_cert_check none;

            agent_metrics_cert_from_check(&mp[i].cert[s], c ? c : &none);
        }
        /* token_ok counts every token answered, cached ones included. */
        mp[i].token_ok = pr->n.token_ok - pr->n.token_cached;
        mp[i].token_cached = pr->n.token_cached;
        mp[i].token_error = pr->n.token_fail;
        mp[i].token_denied = pr->n.refused;
        mp[i].sign_ok = pr->n.sign_ok;
        mp[i].sign_error = pr->n.sign_fail;
        mp[i].have_skew = pr->have_skew;
        mp[i].clock_skew_s = (double)pr->skew;
        mp[i].hsm_up = pr->key != NULL;
    }
    for (i = 0; i <= AGENT_OP_COUNT; i++) {
        ipc[i].op = agent_op_name((enum agent_op)i);
        ipc[i].ok = ag->ipc[i][0];
        ipc[i].error = ag->ipc[i][1];
    }
    memset(&m, 0, sizeof(m));
    m.profiles = mp;
    m.n_profiles = n;
    m.ipc = ipc;
    m.n_ipc = PJ_ARRAY_SIZE(ipc);
    if (agent_metrics_write(&m, path, &err) != PJ_OK) {
        /* Once per distinct failure, not every 15 s. */
        if (strcmp(mon->metrics_error, err.msg) != 0) {
            pj_log_err("metrics file not written: %s", err.msg);
            pj_strlcpy(mon->metrics_error, err.msg, sizeof(mon->metrics_error));
        }
    } else if (mon->metrics_error[0] != '\0') {
        pj_log_notice("metrics file %s written again", path);
        mon->metrics_error[0] = '\0';
    }
    free(mp);
}

/* ---- hooks --------------------------------------------------------------- */

static void
hook_start(struct agent *ag, const struct agent_monitor_event *ev,
           const char *message)
{
    struct agent_mon *mon = ag->mon;
    const char *cmd = ag->cfg->cfg->agent.alert_command;
    struct agent_alert_vars vars;
    struct agent_alert *a = NULL;
    struct pj_err err = {0};

    if (cmd == NULL) {
        return;
    }
    if (mon->n_hooks == AGENT_MON_HOOKS_MAX) {
        pj_log_err("alert-command %s not run for profile %s (%s certificate, "
                   "state %s): %d earlier runs have not finished",
                   cmd, ev->profile, agent_cert_slot_name(ev->slot),
                   agent_cert_check_state(&ev->check), AGENT_MON_HOOKS_MAX);
        return;
    }
    agent_monitor_event_vars(ev, message, &vars);
    if (agent_alert_start(cmd, &vars, ag->cfg->cfg->agent.alert_timeout * 1000,
                          pj_time_mono_ms(), &a, &err) != PJ_OK) {
        pj_log_err("alert-command not run for profile %s: %s", ev->profile,
                   err.msg);
        return;
    }
    pj_log_info("alert-command %s started for profile %s (pid %ld)", cmd,
                ev->profile, (long)agent_alert_pid(a));
    mon->hooks[mon->n_hooks++] = a;
}

void
agent_mon_reap(struct agent *ag, int64_t now_ms)
{
    struct agent_mon *mon = ag->mon;
    size_t i = 0;

    if (mon == NULL) {
        return;
    }
    while (i < mon->n_hooks) {
        if (agent_alert_poll(mon->hooks[i], now_ms)) {
            agent_alert_log(mon->hooks[i]);
            agent_alert_free(mon->hooks[i]);
            mon->hooks[i] = mon->hooks[--mon->n_hooks];
        } else {
            i++;
        }
    }
}

size_t
agent_mon_fds(const struct agent *ag, int *fds, size_t max)
{
    const struct agent_mon *mon = ag->mon;
    size_t i, n = 0;

    if (mon == NULL) {
        return 0;
    }
    for (i = 0; i < mon->n_hooks && n < max; i++) {
        int fd = agent_alert_fd(mon->hooks[i]);
        if (fd >= 0) {
            fds[n++] = fd;
        }
    }
    return n;
}

/* ---- tasks --------------------------------------------------------------- */

void
agent_mon_task_run(struct agent_mon_task *t)
{
    size_t s;

    for (s = 0; s < AGENT_CERT_SLOTS; s++) {
        if (t->want[s]) {
            agent_monitor_check(&t->src[s], t->now, &t->out[s]);
        }
    }
}

static void
record(struct agent *ag, const char *profile, enum agent_cert_slot slot,
       const struct agent_cert_check *c, int64_t now)
{
    struct agent_mon *mon = ag->mon;
    struct agent_monitor_event ev;
    char line[1536];

    if (agent_monitor_update(&mon->m, profile, slot, c, now, &ev) != PJ_OK) {
        pj_log_err("profile %s: certificate check not recorded: out of "
                   "memory",
                   profile);
        return;
    }
    if (ev.kind == AGENT_MONITOR_NONE) {
        return;
    }
    agent_monitor_event_message(&ev, line, sizeof(line));
    pj_log(agent_monitor_event_level(&ev), "%s", line);
    if (ev.alert) {
        hook_start(ag, &ev, line);
    }
}

void
agent_mon_task_done(struct agent *ag, struct agent_mon_task *t, bool ran)
{
    struct agent_mon *mon = ag->mon;
    struct agent_prof *pr = t->prof;
    size_t s;

    if (ran && !pr->retired && !ag->stopping) {
        for (s = 0; s < AGENT_CERT_SLOTS; s++) {
            if (t->want[s]) {
                record(ag, pr->p->name, (enum agent_cert_slot)s, &t->out[s],
                       t->now);
            } else if (s == AGENT_CERT_NEXT &&
                       agent_monitor_get(&mon->m, pr->p->name,
                                         AGENT_CERT_NEXT) != NULL) {
                /* Promoted or abandoned: no next certificate any more. */
                pj_log_notice("profile %s: no next certificate any more "
                              "(rotation finished or abandoned)",
                              pr->p->name);
                agent_monitor_forget(&mon->m, pr->p->name, AGENT_CERT_NEXT);
            }
        }
    }
    task_free(t);
    agent_prof_unref(ag, pr);
    if (--mon->outstanding == 0 && !ag->stopping) {
        metrics_write(ag);
        mon->next_metrics_ms = agent_mono_ms(ag) + AGENT_MON_METRICS_MS;
        if (mon->rerun) {
            mon->rerun = false;
            agent_mon_request(ag);
        }
    }
}

int64_t
agent_mon_tick(struct agent *ag, int64_t now_ms)
{
    struct agent_mon *mon = ag->mon;
    int64_t wait = AGENT_MON_METRICS_MS;
    size_t i;

    if (mon == NULL) {
        return -1;
    }
    agent_mon_reap(ag, now_ms);
    for (i = 0; i < mon->n_hooks; i++) {
        int64_t d = agent_alert_deadline_ms(mon->hooks[i]) - now_ms;
        /* Without a pidfd the hook is polled on this timer. */
        if (agent_alert_fd(mon->hooks[i]) < 0 && d > 200) {
            d = 200;
        }
        if (d < wait) {
            wait = d < 0 ? 0 : d;
        }
    }
    if (ag->stopping) {
        return wait;
    }
    if (mon->outstanding == 0) {
        if (!mon->due &&
            (now_ms >= mon->next_round_ms || keys_sig(ag) != mon->keys_sig)) {
            mon->due = true;
            mon->due_since = now_ms;
        }
        if (mon->due) {
            if (!keys_settling(ag) ||
                now_ms - mon->due_since >= AGENT_MON_DEFER_MS) {
                round_start(ag, now_ms);
            } else if (wait > 100) {
                wait = 100; /* look again soon */
            }
        }
    }
    if (ag->cfg->cfg->agent.metrics_file != NULL && mon->outstanding == 0) {
        if (now_ms >= mon->next_metrics_ms) {
            metrics_write(ag);
            mon->next_metrics_ms = now_ms + AGENT_MON_METRICS_MS;
        }
        if (mon->next_metrics_ms - now_ms < wait) {
            wait = mon->next_metrics_ms - now_ms;
        }
    }
    if (mon->next_round_ms - now_ms < wait && !mon->due) {
        wait = mon->next_round_ms - now_ms;
    }
    return wait < 0 ? 0 : wait;
}

/* ---- status -------------------------------------------------------------- */

static void
cert_json(struct agent_buf *b, const struct agent_cert_check *c)
{
    agent_buf_str(b, "{");
    agent_buf_key(b, "state");
    agent_buf_jstr(b, agent_cert_check_state(c));
    agent_buf_key(b, "checked_at");
    agent_buf_int(b, c->now);
    agent_buf_key(b, "source");
    agent_buf_jstr(b, c->source);
    if (!c->readable) {
        agent_buf_key(b, "error");
        agent_buf_jstr(b, c->error);
        agent_buf_str(b, "}");
        return;
    }
    agent_buf_key(b, "not_before");
    agent_buf_int(b, c->not_before);
    agent_buf_key(b, "not_after");
    agent_buf_int(b, c->not_after);
    agent_buf_key(b, "days_left");
    agent_buf_int(b, c->days_left);
    agent_buf_key(b, "subject");
    agent_buf_jstr(b, c->subject);
    agent_buf_key(b, "serial");
    agent_buf_jstr(b, c->serial);
    agent_buf_key(b, "sha256");
    agent_buf_jstr(b, c->sha256);
    agent_buf_key(b, "key_match");
    agent_buf_str(b, c->key == AGENT_KEY_MATCH      ? "true"
                     : c->key == AGENT_KEY_MISMATCH ? "false"
                                                    : "null");
    agent_buf_key(b, "key_error");
    agent_buf_jstr(b, c->key_error[0] != '\0' ? c->key_error : NULL);
    agent_buf_key(b, "warn_days");
    agent_buf_int(b, c->warn_days);
    agent_buf_key(b, "critical_days");
    agent_buf_int(b, c->critical_days);
    agent_buf_str(b, "}");
}

void
agent_mon_status_json(const struct agent *ag, struct agent_buf *b,
                      const struct agent_prof *pr)
{
    const struct agent_cert_check *c;

    if (ag->mon == NULL) {
        return;
    }
    c = agent_monitor_get(&ag->mon->m, pr->p->name, AGENT_CERT_ACTIVE);
    agent_buf_key(b, "cert");
    if (c == NULL) {
        agent_buf_str(b, "null"); /* not checked yet */
    } else {
        cert_json(b, c);
    }
    c = agent_monitor_get(&ag->mon->m, pr->p->name, AGENT_CERT_NEXT);
    if (c != NULL) {
        agent_buf_key(b, "next_cert");
        cert_json(b, c);
    }
}
