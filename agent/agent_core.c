/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Agent state: profiles (with their keys), the token cache per (profile,
 * subject) with single-flight exchanges, refresh ahead of expiry, backoff,
 * jobs and config reload. Runs on the event-loop thread only; blocking work
 * goes to the backend (worker threads, curl multi).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "agent/agent.h"
#include "core/pj_log.h"
#include "core/pj_util.h"

static void rot_promote(struct agent *ag, struct agent_prof *pr, bool on_token);
static bool rot_retry(struct agent *ag, struct agent_job *job,
                      const struct sf_result *res);
static void prof_open_key(struct agent *ag, struct agent_prof *pr);

/* ---- clock and randomness ------------------------------------------ */

int64_t
agent_mono_ms(const struct agent *ag)
{
    return ag->fake_clock ? ag->fake_mono_ms : pj_time_mono_ms();
}

int64_t
agent_wall_s(const struct agent *ag)
{
    return ag->fake_clock ? ag->fake_wall_s : pj_time_now();
}

uint64_t
agent_rand(struct agent *ag)
{
    /* xorshift64*: jitter only, not a secret; seeded from RAND_bytes. */
    uint64_t x = ag->rng ? ag->rng : 0x9e3779b97f4a7c15ULL;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    ag->rng = x;
    return x * 0x2545f4914f6cdd1dULL;
}

int64_t
agent_backoff_ms(unsigned failures, uint64_t rnd)
{
    int64_t ceiling = AGENT_BACKOFF_BASE_MS;
    int64_t d;
    unsigned i;

    /* Full jitter (uniform in [0, min(cap, base * 2^(n-1))]), at least 1 s
     * so that a herd of failures never turns into a hot loop. */
    for (i = 1; i < failures && ceiling < AGENT_BACKOFF_CAP_MS; i++) {
        ceiling *= 2;
    }
    if (ceiling > AGENT_BACKOFF_CAP_MS) {
        ceiling = AGENT_BACKOFF_CAP_MS;
    }
    d = (int64_t)(rnd % (uint64_t)(ceiling + 1));
    return d < AGENT_BACKOFF_BASE_MS ? AGENT_BACKOFF_BASE_MS : d;
}

int64_t
agent_refresh_delay_ms(long lifetime_s, uint64_t rnd)
{
    int64_t base = (int64_t)lifetime_s * AGENT_REFRESH_PERMILLE; /* ms */
    int64_t span = base * AGENT_REFRESH_JITTER_PERMILLE / 1000;
    int64_t d = base - span + (int64_t)(rnd % (uint64_t)(2 * span + 1));
    int64_t limit =
        ((int64_t)lifetime_s - agent_expiry_margin_s(lifetime_s)) * 1000;

    /* Always refresh before the token stops being served. */
    return d < limit ? d : limit - 1000;
}

long
agent_expiry_margin_s(long lifetime_s)
{
    long m = lifetime_s / 10;
    return m > AGENT_EXPIRY_MARGIN_MAX_S ? AGENT_EXPIRY_MARGIN_MAX_S : m;
}

/* ---- names ------------------------------------------------------------ */

const char *
agent_op_name(enum agent_op op)
{
    static const char *const names[] = {"token",  "assertion", "invalidate",
                                        "status", "health",    "rotate"};
    return (unsigned)op < PJ_ARRAY_SIZE(names) ? names[op] : "invalid";
}

const char *
agent_ecode_name(enum agent_ecode code)
{
    static const char *const names[] = {
        "bad_request",       "unknown_op", "unknown_profile", "forbidden",
        "token_unavailable", "upstream",   "unavailable",     "busy",
        "internal"};
    return (unsigned)code < PJ_ARRAY_SIZE(names) ? names[code] : "internal";
}

/* ---- requests ----------------------------------------------------------- */

struct agent_req *
agent_req_new(struct agent_conn *conn, const struct agent_peer *peer)
{
    struct agent_req *req = calloc(1, sizeof(*req));

    if (req == NULL) {
        return NULL;
    }
    req->conn = conn;
    req->peer = *peer;
    req->peer.exe = NULL;
    if (peer->exe != NULL && (req->peer.exe = strdup(peer->exe)) == NULL) {
        free(req);
        return NULL;
    }
    return req;
}

void
agent_req_free(struct agent_req *req)
{
    if (req == NULL) {
        return;
    }
    agent_buf_wipe(&req->out);
    free(req->peer.exe);
    free(req->id_json);
    free(req->subject);
    free(req->profile);
    free(req);
}

/* ---- profiles ------------------------------------------------------------ */

static void
cfgref_unref(struct agent_cfgref *r)
{
    if (r != NULL && --r->refs == 0) {
        pj_config_free(r->cfg);
        free(r);
    }
}

static void
entry_free(struct agent_entry *e)
{
    pj_secret_free(e->token);
    free(e->instance_url);
    free(e->token_type);
    free(e->subject);
    free(e);
}

static void
prof_free(struct agent_prof *pr)
{
    struct agent_entry *e, *en;
    unsigned i;

    for (e = pr->entries; e != NULL; e = en) {
        en = e->next;
        entry_free(e);
    }
    for (i = 0; i < pr->rot.n_stale; i++) {
        hsm_key_free(pr->rot.stale[i]);
    }
    hsm_key_free(pr->rot.next);
    hsm_key_free(pr->key);
    cfgref_unref(pr->cfg);
    free(pr);
}

static struct agent_prof *
prof_new(struct agent_cfgref *cfg, const struct pj_profile *p)
{
    struct agent_prof *pr = calloc(1, sizeof(*pr));

    if (pr == NULL) {
        return NULL;
    }
    pr->p = p;
    pr->cfg = cfg;
    cfg->refs++;
    pr->rot.wtail = &pr->rot.waiters;
    /* Rotation needs the key named by label (object=L) and nothing else. */
    pr->rot.enabled = hsm_rotate_label(p->key, pr->rot.active,
                                       sizeof(pr->rot.active), NULL) == PJ_OK;
    if (pr->rot.enabled) {
        agent_msgf(pr->rot.next_label, sizeof(pr->rot.next_label), "%s%s",
                   pr->rot.active, HSM_ROTATE_NEXT);
    }
    agent_msgf(pr->key_error, sizeof(pr->key_error),
               "the key of profile %s has not been opened yet", p->name);
    return pr;
}

/* Drop a retired profile once no job references it. */
static void
retired_sweep(struct agent *ag)
{
    struct agent_prof **pp = &ag->retired, *pr;

    while ((pr = *pp) != NULL) {
        if (pr->refs == 0) {
            *pp = pr->next;
            pj_log_info("profile %s: old settings released", pr->p->name);
            prof_free(pr);
        } else {
            pp = &pr->next;
        }
    }
}

/* Keys replaced by a promotion, once no job can be signing with them. */
static void
stale_sweep(struct agent *ag, struct agent_prof *pr)
{
    unsigned i;

    if (pr->refs != 0) {
        return;
    }
    for (i = 0; i < pr->rot.n_stale; i++) {
        /* Without a module the keys are test stand-ins, never opened. */
        if (ag->mod != NULL) {
            hsm_key_free(pr->rot.stale[i]);
        }
        pr->rot.stale[i] = NULL;
    }
    pr->rot.n_stale = 0;
}

static void
prof_unref(struct agent *ag, struct agent_prof *pr)
{
    if (--pr->refs == 0) {
        stale_sweep(ag, pr);
        if (pr->retired) {
            retired_sweep(ag);
        }
    }
}

void
agent_prof_ref(struct agent_prof *pr)
{
    pr->refs++;
}

void
agent_prof_unref(struct agent *ag, struct agent_prof *pr)
{
    prof_unref(ag, pr);
}

/* ---- jobs ---------------------------------------------------------------- */

static struct agent_job *
job_new(struct agent *ag, enum agent_job_kind kind, struct agent_prof *pr)
{
    struct agent_job *job = calloc(1, sizeof(*job));

    if (job == NULL) {
        return NULL;
    }
    job->kind = kind;
    job->prof = pr;
    job->cfg = pr->cfg;
    job->p = pr->p;
    pr->cfg->refs++;
    pr->refs++;
    job->start_mono = agent_mono_ms(ag);
    job->start_wall = agent_wall_s(ag);
    return job;
}

void
agent_job_free(struct agent_job *job)
{
    if (job == NULL) {
        return;
    }
    pj_secret_free(job->assertion);
    free(job->jti);
    free(job->subject);
    sf_transfer_free(job->xfer);
    sf_request_free(job->sreq);
    hsm_key_free(job->key_owned);
    hsm_key_free(job->next_owned);
    free(job);
}

static void
job_release(struct agent *ag, struct agent_job *job)
{
    struct agent_prof *pr = job->prof;
    struct agent_cfgref *cfg = job->cfg;

    agent_job_free(job);
    cfgref_unref(cfg);
    prof_unref(ag, pr);
}

static pj_rc
sign_cb(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig, size_t *siglen,
        struct pj_err *err)
{
    return hsm_key_sign(ctx, msg, len, sig, siglen, err);
}

/* ---- rotation on a worker (docs/rotation.md) --------------------------- */

/*
 * The key labelled L is missing: if L.next exists, a promotion was
 * interrupted between its two steps (or L was removed); finish it so L.next
 * becomes L. True when the key may now be found.
 */
static bool
rot_repair(struct agent_job *job)
{
    struct hsm_rotate_state st;
    struct pj_err err = {0};
    char retired[HSM_ROTATE_LABEL_MAX + 1];

    if (hsm_rotate_label(job->p->key, st.label, sizeof(st.label), NULL) !=
            PJ_OK ||
        hsm_rotate_scan(job->mod, job->p->key, job->p->pin_source, &st, &err) !=
            PJ_OK ||
        st.active || !st.next) {
        return false;
    }
    if (hsm_rotate_promote(job->mod, job->p->key, job->p->pin_source,
                           job->start_wall, false, retired, &err) != PJ_OK) {
        agent_msgf(job->rot_note, sizeof(job->rot_note),
                   "completing an interrupted promotion of '%s%s' failed: %s",
                   st.label, HSM_ROTATE_NEXT, err.msg);
        return false;
    }
    agent_msgf(job->rot_note, sizeof(job->rot_note),
               "no key '%s' but '%s%s' found: completed an interrupted "
               "promotion ('%s%s' is now '%s')",
               st.label, st.label, HSM_ROTATE_NEXT, st.label, HSM_ROTATE_NEXT,
               st.label);
    return true;
}

/* Read the rotation state; open the next key (by id) if there is one. */
static void
rot_scan(struct agent_job *job)
{
    struct hsm_key_opts ko;
    struct pj_err err = {0};
    char *uri = NULL;

    if (hsm_rotate_label(job->p->key, job->rot.label, sizeof(job->rot.label),
                         NULL) != PJ_OK) {
        return; /* no rotation for this profile */
    }
    if (hsm_rotate_scan(job->mod, job->p->key, job->p->pin_source, &job->rot,
                        &err) != PJ_OK) {
        agent_msgf(job->rot_note, sizeof(job->rot_note),
                   "reading the rotation state failed: %s", err.msg);
        return;
    }
    job->rot_scanned = true;
    if (!job->rot.next || (job->have_next_id_len == job->rot.next_id_len &&
                           memcmp(job->have_next_id, job->rot.next_id,
                                  job->rot.next_id_len) == 0)) {
        return; /* none, or the one already open */
    }
    /* By id: the label changes at promotion, the id never does. */
    if (hsm_rotate_uri(job->p->key, NULL, job->rot.next_id,
                       job->rot.next_id_len, "private", &uri, &err) != PJ_OK) {
        agent_msgf(job->rot_note, sizeof(job->rot_note), "%s", err.msg);
        return;
    }
    memset(&ko, 0, sizeof(ko));
    ko.uri = uri;
    ko.pin_source = job->p->pin_source;
    ko.sessions = job->sessions;
    if (hsm_key_open(job->mod, &ko, &job->next_owned, &err) != PJ_OK) {
        agent_msgf(job->rot_note, sizeof(job->rot_note),
                   "opening the next key '%s%s' failed: %s", job->rot.label,
                   HSM_ROTATE_NEXT, err.msg);
    }
    free(uri);
}

void
agent_job_run(struct agent_job *job)
{
    struct sf_claims claims;
    struct hsm_key_opts ko;

    switch (job->kind) {
    case AGENT_JOB_OPEN_KEY:
        memset(&ko, 0, sizeof(ko));
        ko.uri = job->p->key;
        ko.pin_source = job->p->pin_source;
        ko.sessions = job->sessions;
        job->rc = hsm_key_open(job->mod, &ko, &job->key_owned, &job->err);
        if (job->rc == PJ_ERR_NOT_FOUND && rot_repair(job)) {
            memset(&job->err, 0, sizeof(job->err));
            job->rc = hsm_key_open(job->mod, &ko, &job->key_owned, &job->err);
        }
        if (job->rc == PJ_OK) {
            rot_scan(job);
        }
        return;
    case AGENT_JOB_ROTATE_SCAN:
        job->rc = PJ_OK;
        rot_scan(job);
        return;
    case AGENT_JOB_PROMOTE:
        job->rc =
            hsm_rotate_promote(job->mod, job->p->key, job->p->pin_source,
                               job->start_wall, false, job->retired, &job->err);
        return;
    case AGENT_JOB_EXCHANGE:
    case AGENT_JOB_ASSERTION:
        job->rc =
            sf_claims_from_profile(job->p, job->subject, &claims, &job->err);
        if (job->rc != PJ_OK) {
            return;
        }
        job->rc =
            sf_assertion_build(&claims, sign_cb, job->key, &job->assertion,
                               &job->exp, &job->jti, &job->err);
        if (job->rc != PJ_OK || job->kind != AGENT_JOB_EXCHANGE) {
            return;
        }
        job->rc =
            sf_request_build(job->p, job->assertion, &job->sreq, &job->err);
        /* The request holds its own (form-encoded) copy. */
        pj_secret_free(job->assertion);
        job->assertion = NULL;
        return;
    }
}

/* ---- answers ---------------------------------------------------------------
 */

static void
answer_begin(struct agent_req *req, bool ok)
{
    agent_buf_wipe(&req->out);
    agent_buf_str(&req->out, ok ? "{\"ok\":true" : "{\"ok\":false");
    if (req->id_json != NULL) {
        agent_buf_key(&req->out, "id");
        agent_buf_str(&req->out, req->id_json);
    }
}

void
agent_req_finish(struct agent *ag, struct agent_req *req, bool ok)
{
    agent_buf_str(&req->out, "}\n");
    if (req->out.oom) {
        /* Out of memory: a static answer the client can still read. */
        static const char oom[] =
            "{\"ok\":false,\"error\":\"internal\",\"message\":\"the agent "
            "ran out of memory\"}\n";
        agent_buf_wipe(&req->out);
        req->out.data = malloc(sizeof(oom));
        if (req->out.data != NULL) {
            memcpy(req->out.data, oom, sizeof(oom));
            req->out.len = sizeof(oom) - 1;
            req->out.cap = sizeof(oom);
        }
        ok = false;
    }
    req->done = true;
    ag->ipc[req->op_known ? req->op : AGENT_OP_COUNT][ok ? 0 : 1]++;
    if (req->conn == NULL && req != ag->dispatching) {
        agent_req_free(req); /* orphan: the client went away */
        return;
    }
    if (req != ag->dispatching && ag->be.answered != NULL) {
        ag->be.answered(ag, req);
    }
}

void
agent_answer_error(struct agent *ag, struct agent_req *req,
                   enum agent_ecode code, const char *message,
                   const struct agent_failure *fail)
{
    answer_begin(req, false);
    agent_buf_key(&req->out, "error");
    agent_buf_jstr(&req->out, agent_ecode_name(code));
    agent_buf_key(&req->out, "message");
    agent_buf_jstr(&req->out, message);
    if (fail != NULL && fail->set) {
        if (fail->hint != NULL && fail->hint[0] != '\0') {
            agent_buf_key(&req->out, "hint");
            agent_buf_jstr(&req->out, fail->hint);
        }
        if (fail->code == AGENT_E_UPSTREAM ||
            fail->code == AGENT_E_TOKEN_UNAVAILABLE) {
            agent_buf_key(&req->out, "class");
            agent_buf_jstr(&req->out, sf_class_name(fail->cls));
        }
        if (fail->error[0] != '\0') {
            agent_buf_key(&req->out, "salesforce");
            agent_buf_str(&req->out, "{");
            agent_buf_key(&req->out, "error");
            agent_buf_jstr(&req->out, fail->error);
            agent_buf_key(&req->out, "error_description");
            agent_buf_jstr(&req->out, fail->error_description);
            agent_buf_str(&req->out, "}");
        }
    }
    if (code < AGENT_E_COUNT) {
        ag->ipc_errors[code]++;
    }
    agent_req_finish(ag, req, false);
}

static void
answer_failure(struct agent *ag, struct agent_req *req,
               const struct agent_entry *e, int64_t now)
{
    answer_begin(req, false);
    agent_buf_wipe(&req->out);
    /* Reuse agent_answer_error but add retry_after: build by hand. */
    answer_begin(req, false);
    agent_buf_key(&req->out, "error");
    agent_buf_jstr(&req->out, agent_ecode_name(e->fail.code));
    agent_buf_key(&req->out, "message");
    agent_buf_jstr(&req->out, e->fail.message);
    if (e->fail.hint != NULL && e->fail.hint[0] != '\0') {
        agent_buf_key(&req->out, "hint");
        agent_buf_jstr(&req->out, e->fail.hint);
    }
    agent_buf_key(&req->out, "class");
    agent_buf_jstr(&req->out, sf_class_name(e->fail.cls));
    if (e->fail.error[0] != '\0') {
        agent_buf_key(&req->out, "salesforce");
        agent_buf_str(&req->out, "{");
        agent_buf_key(&req->out, "error");
        agent_buf_jstr(&req->out, e->fail.error);
        agent_buf_key(&req->out, "error_description");
        agent_buf_jstr(&req->out, e->fail.error_description);
        agent_buf_str(&req->out, "}");
    }
    if (e->retry_mono > now) {
        agent_buf_key(&req->out, "retry_after");
        agent_buf_int(&req->out, (e->retry_mono - now + 999) / 1000);
    }
    ag->ipc_errors[e->fail.code]++;
    agent_req_finish(ag, req, false);
}

static void
answer_token(struct agent *ag, struct agent_req *req, struct agent_entry *e,
             bool cached)
{
    char extra[64];

    answer_begin(req, true);
    agent_buf_key(&req->out, "access_token");
    agent_buf_jstrn(&req->out, (const char *)e->token->data, e->token->len);
    agent_buf_key(&req->out, "instance_url");
    agent_buf_jstr(&req->out, e->instance_url);
    agent_buf_key(&req->out, "token_type");
    agent_buf_jstr(&req->out, e->token_type ? e->token_type : "Bearer");
    agent_buf_key(&req->out, "issued_at");
    agent_buf_int(&req->out, e->issued_at);
    agent_buf_key(&req->out, "expires_at");
    agent_buf_int(&req->out, e->expires_at);
    agent_buf_key(&req->out, "profile");
    agent_buf_jstr(&req->out, e->prof->p->name);
    agent_buf_key(&req->out, "subject");
    agent_buf_jstr(&req->out, e->subject);
    agent_msgf(extra, sizeof(extra), "cached=%d token_fp=%s", cached ? 1 : 0,
               e->token_fp);
    agent_audit(ag, &req->peer, "token", e->prof->p->name, e->subject, "ok",
                extra);
    e->prof->n.token_ok++;
    ag->total.token_ok++;
    if (cached) {
        e->prof->n.token_cached++;
        ag->total.token_cached++;
    }
    agent_req_finish(ag, req, true);
}

/* ---- cache ------------------------------------------------------------------
 */

static struct agent_entry *
entry_find(struct agent_prof *pr, const char *subject)
{
    struct agent_entry *e;

    for (e = pr->entries; e != NULL; e = e->next) {
        if (strcmp(e->subject, subject) == 0) {
            return e;
        }
    }
    return NULL;
}

static struct agent_entry *
entry_get(struct agent_prof *pr, const char *subject)
{
    struct agent_entry *e = entry_find(pr, subject), **pp;

    if (e != NULL) {
        return e;
    }
    if ((e = calloc(1, sizeof(*e))) == NULL) {
        return NULL;
    }
    if ((e->subject = strdup(subject)) == NULL) {
        free(e);
        return NULL;
    }
    e->prof = pr;
    e->wtail = &e->waiters;
    for (pp = &pr->entries; *pp != NULL; pp = &(*pp)->next) {
    }
    *pp = e;
    return e;
}

static bool
entry_valid(const struct agent_entry *e, int64_t now)
{
    return e->token != NULL && now < e->expire_mono;
}

static void
entry_drop_token(struct agent_entry *e)
{
    pj_secret_free(e->token);
    e->token = NULL;
    e->token_fp[0] = '\0';
    e->expire_mono = 0;
    e->refresh_mono = 0;
}

static struct agent_req *
entry_take_waiters(struct agent_entry *e)
{
    struct agent_req *w = e->waiters;

    e->waiters = NULL;
    e->wtail = &e->waiters;
    e->n_waiters = 0;
    return w;
}

/* Answer every waiter with an error that is not cached (key not open,
 * shutting down). */
static void
entry_fail_waiters(struct agent *ag, struct agent_entry *e,
                   enum agent_ecode code, const char *msg)
{
    struct agent_req *w = entry_take_waiters(e), *wn;

    for (; w != NULL; w = wn) {
        wn = w->wnext;
        w->wnext = NULL;
        agent_audit(ag, &w->peer, "token", e->prof->p->name, e->subject,
                    agent_ecode_name(code), NULL);
        e->prof->n.token_fail++;
        ag->total.token_fail++;
        agent_answer_error(ag, w, code, msg, NULL);
    }
}

static void
entry_start_exchange(struct agent *ag, struct agent_entry *e)
{
    struct agent_prof *pr = e->prof;
    struct agent_job *job;
    char msg[PJ_ERR_MSG_MAX + 64];

    if (e->in_flight) {
        return;
    }
    if (pr->key == NULL || ag->stopping) {
        agent_msgf(msg, sizeof(msg), "%s",
                   ag->stopping ? "the agent is shutting down" : pr->key_error);
        entry_fail_waiters(ag, e, AGENT_E_UNAVAILABLE, msg);
        return;
    }
    job = job_new(ag, AGENT_JOB_EXCHANGE, pr);
    if (job == NULL || (job->subject = strdup(e->subject)) == NULL) {
        if (job != NULL) {
            job_release(ag, job);
        }
        entry_fail_waiters(ag, e, AGENT_E_INTERNAL,
                           "the agent ran out of memory");
        return;
    }
    job->entry = e;
    job->key = pr->key;
    e->in_flight = true;
    pj_log_debug("profile %s subject %s: token exchange started", pr->p->name,
                 e->subject);
    if (!ag->be.submit(ag, job)) {
        e->in_flight = false;
        job_release(ag, job);
        entry_fail_waiters(ag, e, AGENT_E_UNAVAILABLE,
                           "the agent cannot start a signing job");
    }
}

static void
entry_success(struct agent *ag, struct agent_entry *e, struct agent_job *job,
              struct sf_result *res)
{
    struct agent_prof *pr = e->prof;
    long life = job->p->session_lifetime;
    struct agent_req *w, *wn;

    entry_drop_token(e);
    e->token = res->token.access_token;
    res->token.access_token = NULL;
    pj_fingerprint12(e->token->data, e->token->len, e->token_fp);
    free(e->instance_url);
    e->instance_url = res->token.instance_url;
    res->token.instance_url = NULL;
    free(e->token_type);
    e->token_type = res->token.token_type;
    res->token.token_type = NULL;
    e->issued_at = res->token.issued_at_ms > 0 ? res->token.issued_at_ms / 1000
                                               : job->start_wall;
    e->expires_at = e->issued_at + life;
    e->expire_mono =
        job->start_mono + ((int64_t)life - agent_expiry_margin_s(life)) * 1000;
    e->refresh_mono =
        job->start_mono + agent_refresh_delay_ms(life, agent_rand(ag));
    e->last_time = agent_wall_s(ag);
    e->last_ok = true;
    e->failures = 0;
    e->retry_mono = 0;
    e->hold = false;
    e->fail.set = false;
    pr->n.exchanges_ok++;
    ag->total.exchanges_ok++;
    pj_log_info(
        "profile %s subject %s: new access token %s, refresh in %" PRId64 " s",
        pr->p->name, e->subject, e->token_fp,
        (e->refresh_mono - agent_mono_ms(ag)) / 1000);
    for (w = entry_take_waiters(e); w != NULL; w = wn) {
        wn = w->wnext;
        w->wnext = NULL;
        answer_token(ag, w, e, false);
    }
}

static void
entry_failure(struct agent *ag, struct agent_entry *e,
              const struct agent_failure *f)
{
    struct agent_prof *pr = e->prof;
    int64_t now = agent_mono_ms(ag);
    bool retry = f->cls == SF_CLASS_TRANSIENT;
    struct agent_req *w, *wn;

    e->fail = *f;
    e->fail.set = true;
    e->last_time = agent_wall_s(ag);
    e->last_ok = false;
    e->failures++;
    pr->n.exchanges_fail++;
    ag->total.exchanges_fail++;
    if (retry) {
        e->hold = false;
        e->retry_mono = now + agent_backoff_ms(e->failures, agent_rand(ag));
    } else {
        /* Permanent: no loop. Answer from cache until the hold ends. */
        e->hold = true;
        e->retry_mono = now + AGENT_PERM_HOLD_MS;
    }
    pj_log_warn("profile %s subject %s: token exchange failed (%s): %s; %s "
                "in %" PRId64 " s%s",
                pr->p->name, e->subject, sf_class_name(f->cls), f->message,
                retry ? "retrying" : "not retrying automatically; next try",
                (e->retry_mono - now) / 1000,
                entry_valid(e, now) ? "; serving the cached token meanwhile"
                                    : "");
    for (w = entry_take_waiters(e); w != NULL; w = wn) {
        wn = w->wnext;
        w->wnext = NULL;
        agent_audit(ag, &w->peer, "token", pr->p->name, e->subject,
                    agent_ecode_name(f->code), NULL);
        pr->n.token_fail++;
        ag->total.token_fail++;
        answer_failure(ag, w, e, now);
    }
}

/* Failure of the signing half of an exchange (job->err). */
static void
failure_from_job(const struct agent_job *job, struct agent_failure *f)
{
    memset(f, 0, sizeof(*f));
    f->set = true;
    f->code = AGENT_E_UNAVAILABLE;
    /* Bad claims or config will not fix themselves; token hiccups may. */
    f->cls = (job->rc == PJ_ERR_INVALID || job->rc == PJ_ERR_CONFIG ||
              job->rc == PJ_ERR_PIN || job->rc == PJ_ERR_PIN_LOCKED)
                 ? SF_CLASS_PERMANENT
                 : SF_CLASS_TRANSIENT;
    agent_msgf(f->message, sizeof(f->message),
               "profile %s: signing the "
               "assertion failed: %s",
               job->p->name, job->err.msg);
}

void
agent_exchange_done(struct agent *ag, struct agent_job *job, pj_rc rc,
                    struct sf_result *res, const struct pj_err *err)
{
    struct agent_entry *e = job->entry;
    struct agent_prof *pr = job->prof;
    struct agent_failure f;

    e->in_flight = false;
    if (res != NULL && res->have_date) {
        pr->have_skew = true;
        pr->skew = res->skew;
        if (sf_result_skew_bad(res)) {
            char d[256];
            sf_skew_describe(res, d, sizeof(d));
            pj_log_warn("profile %s: %s", pr->p->name, d);
        }
    }
    if (rc == PJ_OK && res != NULL && res->ok &&
        res->token.access_token != NULL) {
        if (job->retried) {
            pr->n.rotation_retries_ok++;
            ag->total.rotation_retries_ok++;
            if (pr->rot.next != NULL && job->key == pr->rot.next) {
                rot_promote(ag, pr, false);
            }
        }
        entry_success(ag, e, job, res);
    } else if (rot_retry(ag, job, res)) {
        /* The retry finishes the entry's exchange. */
    } else {
        memset(&f, 0, sizeof(f));
        f.set = true;
        if (res != NULL && !res->ok && res->fail.cls != SF_CLASS_NONE) {
            f.cls = res->fail.cls;
            pj_strlcpy(f.error, res->fail.error, sizeof(f.error));
            pj_strlcpy(f.error_description, res->fail.error_description,
                       sizeof(f.error_description));
            f.hint = res->fail.hint;
        } else {
            f.cls = rc == PJ_ERR_HTTP || rc == PJ_ERR_TIMEOUT
                        ? SF_CLASS_TRANSIENT
                        : SF_CLASS_UNKNOWN;
        }
        f.code = (f.cls == SF_CLASS_TRANSIENT && f.error[0] == '\0')
                     ? AGENT_E_TOKEN_UNAVAILABLE
                     : AGENT_E_UPSTREAM;
        agent_msgf(f.message, sizeof(f.message), "profile %s: %s", pr->p->name,
                   err != NULL && err->msg[0] != '\0'
                       ? err->msg
                       : "the token exchange failed");
        entry_failure(ag, e, &f);
    }
    job_release(ag, job);
}

/* ---- rotation on the loop (docs/rotation.md) ---------------------------- */

static void
stale_add(struct agent_prof *pr, struct hsm_key *key)
{
    if (key == NULL) {
        return;
    }
    if (pr->rot.n_stale < AGENT_STALE_KEYS_MAX) {
        pr->rot.stale[pr->rot.n_stale++] = key;
    } else {
        /* Jobs may still sign with it: never free early. A handful of
         * promotions within one busy stretch is not expected. */
        pj_log_warn("profile %s: more than %d replaced keys held; one is "
                    "kept open until exit",
                    pr->p->name, AGENT_STALE_KEYS_MAX);
    }
}

static struct agent_peer
self_peer(void)
{
    struct agent_peer me = {getuid(), getgid(), getpid(), NULL, 0};
    return me;
}

/* The agent's own wall clock, or null when t is 0. */
static void
buf_time(struct agent_buf *b, int64_t t)
{
    if (t > 0) {
        agent_buf_int(b, t);
    } else {
        agent_buf_str(b, "null");
    }
}

void
agent_rotation_json(const struct agent *ag, struct agent_buf *b,
                    const struct agent_prof *pr)
{
    const struct agent_rotation *r = &pr->rot;

    (void)ag;
    agent_buf_str(b, "{");
    agent_buf_key(b, "enabled");
    agent_buf_str(b, r->enabled ? "true" : "false");
    agent_buf_key(b, "active");
    agent_buf_jstr(b, r->enabled ? r->active : NULL);
    agent_buf_key(b, "next");
    agent_buf_jstr(b, r->next != NULL ? r->next_label : NULL);
    agent_buf_key(b, "since");
    buf_time(b, r->next != NULL ? r->next_since : r->active_since);
    agent_buf_key(b, "active_since");
    buf_time(b, r->active_since);
    agent_buf_key(b, "next_since");
    buf_time(b, r->next != NULL ? r->next_since : 0);
    agent_buf_key(b, "promoted_at");
    buf_time(b, r->promoted_at);
    agent_buf_key(b, "retired");
    agent_buf_jstr(b, r->retired[0] ? r->retired : NULL);
    agent_buf_key(b, "relabel");
    agent_buf_jstr(b, r->promoted_at == 0   ? NULL
                      : r->relabel_pending  ? "pending"
                      : r->relabel_error[0] ? "failed"
                                            : "done");
    agent_buf_key(b, "relabel_error");
    agent_buf_jstr(b, r->relabel_error[0] ? r->relabel_error : NULL);
    agent_buf_key(b, "scan_error");
    agent_buf_jstr(b, r->scan_error[0] ? r->scan_error : NULL);
    agent_buf_key(b, "retries");
    agent_buf_int(b, (int64_t)pr->n.rotation_retries);
    agent_buf_key(b, "retries_ok");
    agent_buf_int(b, (int64_t)pr->n.rotation_retries_ok);
    agent_buf_key(b, "promotions");
    agent_buf_int(b, (int64_t)pr->n.promotions);
    agent_buf_str(b, "}");
}

static void
answer_rotation(struct agent *ag, struct agent_req *req, struct agent_prof *pr)
{
    answer_begin(req, true);
    agent_buf_key(&req->out, "profile");
    agent_buf_jstr(&req->out, pr->p->name);
    agent_buf_key(&req->out, "key_open");
    agent_buf_str(&req->out, pr->key != NULL ? "true" : "false");
    agent_buf_key(&req->out, "rotation");
    agent_rotation_json(ag, &req->out, pr);
    agent_audit(ag, &req->peer, "rotate", pr->p->name, NULL, "ok",
                pr->rot.next != NULL ? "next=1" : "next=0");
    agent_req_finish(ag, req, true);
}

static void
rot_answer_waiters(struct agent *ag, struct agent_prof *pr)
{
    struct agent_req *w = pr->rot.waiters, *wn;

    pr->rot.waiters = NULL;
    pr->rot.wtail = &pr->rot.waiters;
    for (; w != NULL; w = wn) {
        wn = w->wnext;
        w->wnext = NULL;
        answer_rotation(ag, w, pr);
    }
}

/* Submit a PROMOTE job: relabel on the token (L -> retired, L.next -> L). */
static void
rot_relabel_submit(struct agent *ag, struct agent_prof *pr)
{
    struct agent_job *job;

    if (ag->mod == NULL || pr->retired) {
        return; /* unit tests: no token */
    }
    if ((job = job_new(ag, AGENT_JOB_PROMOTE, pr)) == NULL) {
        agent_msgf(pr->rot.relabel_error, sizeof(pr->rot.relabel_error),
                   "out of memory");
        return;
    }
    job->mod = ag->mod;
    pr->rot.relabel_pending = true;
    pr->rot.relabel_error[0] = '\0';
    if (!ag->be.submit(ag, job)) {
        pr->rot.relabel_pending = false;
        agent_msgf(pr->rot.relabel_error, sizeof(pr->rot.relabel_error),
                   "the agent could not start the relabelling job");
        job_release(ag, job);
    }
}

/*
 * The next key becomes the active one in memory. on_token: the token has
 * already been relabelled (by `p11jwt rotate finish`); otherwise the agent
 * relabels it now, so a restart starts with the new key.
 */
static void
rot_promote(struct agent *ag, struct agent_prof *pr, bool on_token)
{
    struct agent_peer me = self_peer();
    char extra[HSM_ROTATE_LABEL_MAX * 2 + 64];
    int64_t now = agent_wall_s(ag);

    stale_add(pr, pr->key);
    pr->key = pr->rot.next;
    pr->rot.next = NULL;
    memcpy(pr->rot.active_id, pr->rot.next_id, pr->rot.next_id_len);
    pr->rot.active_id_len = pr->rot.next_id_len;
    pr->rot.next_id_len = 0;
    pr->rot.next_since = 0;
    pr->rot.active_since = now;
    pr->rot.promoted_at = now;
    pr->rot.retired[0] = '\0';
    pr->n.promotions++;
    ag->total.promotions++;
    pj_log_notice("profile %s: key rotation: Salesforce accepts the next key "
                  "'%s'; it is now the active key%s",
                  pr->p->name, pr->rot.next_label,
                  on_token ? " (already relabelled on the token)"
                           : "; relabelling it on the token");
    agent_msgf(extra, sizeof(extra), "action=promote active=%s relabel=%s",
               pr->rot.next_label, on_token ? "done" : "pending");
    agent_audit(ag, &me, "rotate", pr->p->name, NULL, "ok", extra);
    if (!on_token) {
        rot_relabel_submit(ag, pr);
    }
}

static bool
id_eq(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    return alen == blen && alen > 0 && memcmp(a, b, alen) == 0;
}

/* A scan (at key open or on request) finished: adopt what it found. */
static void
rot_apply_scan(struct agent *ag, struct agent_prof *pr, struct agent_job *job)
{
    const struct hsm_rotate_state *st = &job->rot;

    pr->rot.scanning = false;
    if (job->rot_note[0] != '\0') {
        pj_log_notice("profile %s: rotation: %s", pr->p->name, job->rot_note);
    }
    if (!job->rot_scanned) {
        agent_msgf(pr->rot.scan_error, sizeof(pr->rot.scan_error), "%s",
                   job->rot_note[0] ? job->rot_note : "no scan");
        goto answer;
    }
    pr->rot.scan_error[0] = '\0';
    if (st->active && pr->rot.active_id_len > 0 &&
        !id_eq(st->active_id, st->active_id_len, pr->rot.active_id,
               pr->rot.active_id_len) &&
        pr->rot.next != NULL &&
        id_eq(st->active_id, st->active_id_len, pr->rot.next_id,
              pr->rot.next_id_len)) {
        /* `rotate finish --force` promoted it on the token. */
        rot_promote(ag, pr, true);
    } else if (st->active && pr->rot.active_id_len > 0 &&
               !id_eq(st->active_id, st->active_id_len, pr->rot.active_id,
                      pr->rot.active_id_len) &&
               job->kind == AGENT_JOB_ROTATE_SCAN) {
        /* Another key took the label (e.g. `rotate finish --force` of a
         * next key the agent never saw): open it, keep signing with the
         * old one until it is open. */
        pj_log_notice("profile %s: the key labelled '%s' changed on the "
                      "token; opening it",
                      pr->p->name, pr->rot.active);
        pr->rot.active_id_len = 0;
        pr->rot.reopen = true;
        prof_open_key(ag, pr);
    } else if (st->active && pr->rot.active_id_len == 0) {
        memcpy(pr->rot.active_id, st->active_id, st->active_id_len);
        pr->rot.active_id_len = st->active_id_len;
    }
    if (st->next && job->next_owned != NULL) {
        stale_add(pr, pr->rot.next);
        pr->rot.next = job->next_owned;
        job->next_owned = NULL;
        memcpy(pr->rot.next_id, st->next_id, st->next_id_len);
        pr->rot.next_id_len = st->next_id_len;
        pr->rot.next_since = agent_wall_s(ag);
        pj_log_notice("profile %s: next key '%s' found on token '%s'%s; "
                      "signing stays with '%s' until Salesforce refuses it, "
                      "then the next key is tried once and, if accepted, "
                      "made active",
                      pr->p->name, pr->rot.next_label, st->token,
                      st->next_cert ? " with its certificate"
                                    : " (no certificate yet)",
                      pr->rot.active);
    } else if (!st->next && pr->rot.next != NULL) {
        pj_log_notice("profile %s: the next key '%s' is gone from the token; "
                      "no rotation pending",
                      pr->p->name, pr->rot.next_label);
        stale_add(pr, pr->rot.next);
        pr->rot.next = NULL;
        pr->rot.next_id_len = 0;
        pr->rot.next_since = 0;
    }
answer:
    rot_answer_waiters(ag, pr);
}

static void
rot_scan_submit(struct agent *ag, struct agent_prof *pr)
{
    struct agent_job *job;

    if (pr->rot.scanning || pr->key_opening) {
        return; /* the scan (or the open, which scans) answers waiters */
    }
    if (ag->mod == NULL || ag->stopping || !pr->rot.enabled ||
        (job = job_new(ag, AGENT_JOB_ROTATE_SCAN, pr)) == NULL) {
        rot_answer_waiters(ag, pr);
        return;
    }
    job->mod = ag->mod;
    job->sessions = ag->workers;
    memcpy(job->have_next_id, pr->rot.next_id, pr->rot.next_id_len);
    job->have_next_id_len = pr->rot.next != NULL ? pr->rot.next_id_len : 0;
    pr->rot.scanning = true;
    if (!ag->be.submit(ag, job)) {
        pr->rot.scanning = false;
        job_release(ag, job);
        rot_answer_waiters(ag, pr);
    }
}

enum agent_dispatch_result
agent_rotate_request(struct agent *ag, struct agent_prof *pr,
                     const char *action, struct agent_req *req)
{
    char msg[PJ_ERR_MSG_MAX + 64];

    if (action == NULL || strcmp(action, "reload-keys") != 0) {
        agent_answer_error(ag, req, AGENT_E_BAD_REQUEST,
                           "op rotate needs \"action\":\"reload-keys\"", NULL);
        return AGENT_ANSWERED;
    }
    if (!pr->rot.enabled) {
        agent_msgf(msg, sizeof(msg),
                   "profile %s: rotation needs the key URI to name the key "
                   "by label only (object=LABEL, no id=)",
                   pr->p->name);
        agent_answer_error(ag, req, AGENT_E_BAD_REQUEST, msg, NULL);
        return AGENT_ANSWERED;
    }
    if (pr->key == NULL && !pr->key_opening) {
        agent_answer_error(ag, req, AGENT_E_UNAVAILABLE, pr->key_error, NULL);
        return AGENT_ANSWERED;
    }
    req->wnext = NULL;
    *pr->rot.wtail = req;
    pr->rot.wtail = &req->wnext;
    rot_scan_submit(ag, pr);
    return req->done ? AGENT_ANSWERED : AGENT_PENDING;
}

/*
 * Salesforce refused the assertion's signature ("invalid_grant" /
 * "invalid assertion"): retry the exchange once, signed by the other key
 * (the next key while one exists; the active one if a promotion happened
 * while this job was out). True when the retry is under way.
 */
static bool
rot_retry(struct agent *ag, struct agent_job *job, const struct sf_result *res)
{
    struct agent_prof *pr = job->prof;
    struct agent_entry *e = job->entry;
    struct hsm_key *alt;
    struct agent_job *nj;

    if (job->retried || ag->stopping || pr->retired || res == NULL || res->ok ||
        strcmp(res->fail.error, "invalid_grant") != 0 ||
        strcasecmp(res->fail.error_description, "invalid assertion") != 0) {
        return false;
    }
    alt = job->key != pr->key ? pr->key : pr->rot.next;
    if (alt == NULL || alt == job->key) {
        return false;
    }
    nj = job_new(ag, AGENT_JOB_EXCHANGE, pr);
    if (nj == NULL || (nj->subject = strdup(job->subject)) == NULL) {
        if (nj != NULL) {
            job_release(ag, nj);
        }
        return false;
    }
    nj->entry = e;
    nj->key = alt;
    nj->retried = true;
    e->in_flight = true;
    pr->n.rotation_retries++;
    ag->total.rotation_retries++;
    pj_log_notice("profile %s subject %s: Salesforce refused the assertion "
                  "signed by %s (invalid_grant: invalid assertion); retrying "
                  "once with %s",
                  pr->p->name, e->subject,
                  alt == pr->key ? "a replaced key" : "the active key",
                  alt == pr->key ? "the active key" : "the next key");
    if (!ag->be.submit(ag, nj)) {
        e->in_flight = false;
        job_release(ag, nj);
        return false;
    }
    return true;
}

/* ---- job completion
 * ---------------------------------------------------------- */

static bool
key_error_permanent(pj_rc rc)
{
    return rc == PJ_ERR_PIN || rc == PJ_ERR_PIN_LOCKED || rc == PJ_ERR_CONFIG;
}

static void
assertion_done(struct agent *ag, struct agent_job *job)
{
    struct agent_req *req = job->req;
    struct agent_prof *pr = job->prof;
    char extra[SF_CLAIM_MAX + 8];

    if (job->rc != PJ_OK) {
        char msg[PJ_ERR_MSG_MAX + 64];
        pr->n.assertion_fail++;
        ag->total.assertion_fail++;
        pr->n.sign_fail++;
        agent_msgf(msg, sizeof(msg),
                   "profile %s: signing the assertion failed: "
                   "%s",
                   pr->p->name, job->err.msg);
        agent_audit(ag, &req->peer, "assertion", pr->p->name, job->subject,
                    "unavailable", NULL);
        agent_answer_error(ag, req, AGENT_E_UNAVAILABLE, msg, NULL);
        return;
    }
    pr->n.assertion_ok++;
    ag->total.assertion_ok++;
    pr->n.sign_ok++;
    answer_begin(req, true);
    agent_buf_key(&req->out, "assertion");
    agent_buf_jstrn(&req->out, (const char *)job->assertion->data,
                    job->assertion->len);
    agent_buf_key(&req->out, "expires_at");
    agent_buf_int(&req->out, job->exp);
    agent_buf_key(&req->out, "jti");
    agent_buf_jstr(&req->out, job->jti);
    agent_buf_key(&req->out, "profile");
    agent_buf_jstr(&req->out, pr->p->name);
    agent_buf_key(&req->out, "subject");
    agent_buf_jstr(&req->out, job->subject);
    agent_msgf(extra, sizeof(extra), "jti=%s", job->jti ? job->jti : "-");
    agent_audit(ag, &req->peer, "assertion", pr->p->name, job->subject, "ok",
                extra);
    agent_req_finish(ag, req, true);
}

void
agent_job_done(struct agent *ag, struct agent_job *job)
{
    struct agent_prof *pr = job->prof;
    struct agent_failure f;
    pj_rc rc;

    switch (job->kind) {
    case AGENT_JOB_OPEN_KEY:
        pr->key_opening = false;
        if (ag->opening > 0) {
            ag->opening--;
        }
        pr->rot.reopen = false;
        if (job->rc == PJ_OK && !pr->retired && !ag->stopping) {
            /* A reopen replaces a key jobs may still be signing with. */
            stale_add(pr, pr->key);
            pr->key = job->key_owned;
            job->key_owned = NULL;
            pr->key_rc = PJ_OK;
            pr->key_error[0] = '\0';
            pr->key_failures = 0;
            pr->key_retry_mono = 0;
            pj_log_notice("profile %s: key open (%s)", pr->p->name, pr->p->key);
            pr->rot.active_since = agent_wall_s(ag);
            rot_apply_scan(ag, pr, job);
        } else if (job->rc != PJ_OK) {
            if (job->rot_note[0] != '\0') {
                pj_log_warn("profile %s: rotation: %s", pr->p->name,
                            job->rot_note);
            }
            rot_answer_waiters(ag, pr);
            pr->key_rc = job->rc;
            pr->key_failures++;
            agent_msgf(pr->key_error, sizeof(pr->key_error),
                       "profile %s: the key is not open: %s", pr->p->name,
                       job->err.msg);
            if (key_error_permanent(job->rc)) {
                pr->key_retry_mono = 0;
                pj_log_err("%s (not retried: fix it and reload with "
                           "SIGHUP)",
                           pr->key_error);
            } else {
                int64_t d =
                    agent_backoff_ms(pr->key_failures + 4, agent_rand(ag));
                pr->key_retry_mono = agent_mono_ms(ag) + d;
                pj_log_err("%s (retrying in %" PRId64 " s)", pr->key_error,
                           d / 1000);
            }
        }
        break;
    case AGENT_JOB_ASSERTION:
        assertion_done(ag, job);
        break;
    case AGENT_JOB_ROTATE_SCAN:
        rot_apply_scan(ag, pr, job);
        break;
    case AGENT_JOB_PROMOTE:
        pr->rot.relabel_pending = false;
        if (job->rc == PJ_OK) {
            pj_strlcpy(pr->rot.retired, job->retired, sizeof(pr->rot.retired));
            pr->rot.relabel_error[0] = '\0';
            pj_log_notice("profile %s: token relabelled: '%s' is now '%s'%s%s"
                          "%s",
                          pr->p->name, pr->rot.next_label, pr->rot.active,
                          job->retired[0] ? ", the old key is '" : "",
                          job->retired, job->retired[0] ? "'" : "");
        } else {
            agent_msgf(pr->rot.relabel_error, sizeof(pr->rot.relabel_error),
                       "%s", job->err.msg);
            pj_log_err("profile %s: relabelling the token after the "
                       "promotion failed: %s; the agent keeps signing with "
                       "the new key, and after a restart it would try the "
                       "old one first: run `p11jwt rotate finish --profile "
                       "%s`",
                       pr->p->name, job->err.msg, pr->p->name);
        }
        break;
    case AGENT_JOB_EXCHANGE:
        if (job->rc != PJ_OK) {
            pr->n.sign_fail++;
            job->entry->in_flight = false;
            failure_from_job(job, &f);
            entry_failure(ag, job->entry, &f);
            break;
        }
        pr->n.sign_ok++;
        if (ag->stopping) {
            job->entry->in_flight = false;
            entry_fail_waiters(ag, job->entry, AGENT_E_UNAVAILABLE,
                               "the agent is shutting down");
            break;
        }
        rc = ag->be.start_http(ag, job, &job->err);
        if (rc == PJ_OK) {
            return; /* agent_exchange_done finishes it */
        }
        agent_exchange_done(ag, job, rc, NULL, &job->err);
        return;
    }
    job_release(ag, job);
}

/* ---- profiles: keys, lookup, reload
 * ------------------------------------------- */

static void
prof_open_key(struct agent *ag, struct agent_prof *pr)
{
    struct agent_job *job;

    if ((pr->key != NULL && !pr->rot.reopen) || pr->key_opening ||
        ag->stopping) {
        return;
    }
    if (ag->mod == NULL) {
        agent_msgf(pr->key_error, sizeof(pr->key_error),
                   "profile %s: the key is not open: no PKCS#11 module is "
                   "loaded",
                   pr->p->name);
        return;
    }
    if ((job = job_new(ag, AGENT_JOB_OPEN_KEY, pr)) == NULL) {
        return;
    }
    job->mod = ag->mod;
    job->sessions = ag->workers;
    pr->key_opening = true;
    pr->key_retry_mono = 0;
    ag->opening++;
    if (!ag->be.submit(ag, job)) {
        pr->key_opening = false;
        ag->opening--;
        job_release(ag, job);
    }
}

void
agent_open_keys(struct agent *ag)
{
    struct agent_prof *pr;

    for (pr = ag->profs; pr != NULL; pr = pr->next) {
        prof_open_key(ag, pr);
    }
}

struct agent_prof *
agent_prof_find(struct agent *ag, const char *name)
{
    struct agent_prof *pr;

    for (pr = ag->profs; pr != NULL; pr = pr->next) {
        if (strcmp(pr->p->name, name) == 0) {
            return pr;
        }
    }
    return NULL;
}

pj_rc
agent_new(struct pj_config *cfg, struct hsm_module *mod,
          const struct agent_backend *be, struct agent **agp,
          struct pj_err *err)
{
    struct agent *ag;
    struct agent_prof **tail;
    size_t i;

    *agp = NULL;
    if ((ag = calloc(1, sizeof(*ag))) == NULL ||
        (ag->cfg = calloc(1, sizeof(*ag->cfg))) == NULL) {
        free(ag);
        pj_config_free(cfg);
        return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
    }
    ag->cfg->cfg = cfg;
    ag->cfg->refs = 1;
    ag->mod = mod;
    ag->be = *be;
    ag->workers = AGENT_WORKERS_DEFAULT;
    ag->self_uid = getuid();
    ag->start_mono = pj_time_mono_ms();
    if (RAND_bytes((unsigned char *)&ag->rng, sizeof(ag->rng)) != 1) {
        ag->rng = (uint64_t)time(NULL) ^ (uint64_t)getpid();
    }
    tail = &ag->profs;
    for (i = 0; i < cfg->n_profiles; i++) {
        if ((*tail = prof_new(ag->cfg, &cfg->profiles[i])) == NULL) {
            agent_free(ag);
            return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
        }
        tail = &(*tail)->next;
    }
    *agp = ag;
    return PJ_OK;
}

void
agent_free(struct agent *ag)
{
    struct agent_prof *pr, *pn;

    if (ag == NULL) {
        return;
    }
    for (pr = ag->profs; pr != NULL; pr = pn) {
        pn = pr->next;
        prof_free(pr);
    }
    for (pr = ag->retired; pr != NULL; pr = pn) {
        pn = pr->next;
        prof_free(pr);
    }
    cfgref_unref(ag->cfg);
    free(ag);
}

static void
prof_retire(struct agent *ag, struct agent_prof *pr)
{
    pr->retired = true;
    pr->next = ag->retired;
    ag->retired = pr;
}

void
agent_reload(struct agent *ag, struct pj_config *cfg)
{
    struct agent_cfgref *nref = calloc(1, sizeof(*nref));
    struct agent_prof *old = ag->profs, *nlist = NULL, **tail = &nlist;
    struct agent_prof *pr, **pp;
    const struct pj_config_agent *oa = &ag->cfg->cfg->agent;
    size_t i;
    unsigned kept = 0, fresh = 0, dropped = 0;

    if (nref == NULL) {
        pj_log_err("reload: out of memory; keeping the old config");
        pj_config_free(cfg);
        return;
    }
    nref->cfg = cfg;
    nref->refs = 1;
    if (!pj_config_agent_equal(oa, &cfg->agent)) {
        if ((oa->socket == NULL) != (cfg->agent.socket == NULL) ||
            (oa->socket && strcmp(oa->socket, cfg->agent.socket) != 0) ||
            (oa->module == NULL) != (cfg->agent.module == NULL) ||
            (oa->module && strcmp(oa->module, cfg->agent.module) != 0) ||
            (oa->socket_group == NULL) != (cfg->agent.socket_group == NULL) ||
            (oa->socket_group &&
             strcmp(oa->socket_group, cfg->agent.socket_group) != 0)) {
            pj_log_warn("reload: socket, socket-group and module changes in "
                        "[agent] take effect only after a restart");
        }
    }
    for (i = 0; i < cfg->n_profiles; i++) {
        const struct pj_profile *p = &cfg->profiles[i];
        struct agent_prof *match = NULL;

        for (pp = &old; *pp != NULL; pp = &(*pp)->next) {
            if (strcmp((*pp)->p->name, p->name) == 0) {
                break;
            }
        }
        if (*pp != NULL && pj_profile_equal((*pp)->p, p)) {
            match = *pp;
            *pp = match->next;
            match->next = NULL;
            /* Same meaning: keep key and cache, point at the new text. */
            match->p = p;
            cfgref_unref(match->cfg);
            match->cfg = nref;
            nref->refs++;
            kept++;
        } else {
            match = prof_new(nref, p);
            if (match == NULL) {
                pj_log_err("reload: out of memory for profile %s", p->name);
                continue;
            }
            fresh++;
        }
        *tail = match;
        tail = &match->next;
    }
    for (pr = old; pr != NULL; pr = old) {
        old = pr->next;
        prof_retire(ag, pr);
        dropped++;
    }
    ag->profs = nlist;
    cfgref_unref(ag->cfg);
    ag->cfg = nref;
    retired_sweep(ag);
    pj_log_notice("reloaded %s: %u profiles kept, %u new or changed, %u "
                  "replaced or removed",
                  cfg->path, kept, fresh, dropped);
    agent_open_keys(ag);
    /* A reload is also how an operator says "look at the token again"
     * (docs/rotation.md): kept profiles re-read their rotation state. */
    for (pr = ag->profs; pr != NULL; pr = pr->next) {
        if (pr->key != NULL) {
            rot_scan_submit(ag, pr);
        }
    }
}

/* ---- token ops (called from dispatch)
 * ----------------------------------------- */

enum agent_dispatch_result
agent_token_request(struct agent *ag, struct agent_prof *pr,
                    const char *subject, struct agent_req *req)
{
    int64_t now = agent_mono_ms(ag);
    struct agent_entry *e = entry_get(pr, subject);

    if (e == NULL) {
        agent_answer_error(ag, req, AGENT_E_INTERNAL,
                           "the agent ran out of memory", NULL);
        return AGENT_ANSWERED;
    }
    if (entry_valid(e, now)) {
        answer_token(ag, req, e, true);
        if (now >= e->refresh_mono && !e->in_flight &&
            (e->retry_mono == 0 || now >= e->retry_mono)) {
            entry_start_exchange(ag, e);
        }
        return AGENT_ANSWERED;
    }
    if (e->token != NULL) {
        entry_drop_token(e); /* expired: never served */
    }
    if (!e->in_flight && e->fail.set && e->retry_mono > now) {
        /* In backoff or hold: answer the last failure, no new exchange. */
        agent_audit(ag, &req->peer, "token", pr->p->name, e->subject,
                    agent_ecode_name(e->fail.code), "cached_failure=1");
        pr->n.token_fail++;
        ag->total.token_fail++;
        answer_failure(ag, req, e, now);
        return AGENT_ANSWERED;
    }
    req->wnext = NULL;
    *e->wtail = req;
    e->wtail = &req->wnext;
    e->n_waiters++;
    entry_start_exchange(ag, e);
    return req->done ? AGENT_ANSWERED : AGENT_PENDING;
}

enum agent_dispatch_result
agent_assertion_request(struct agent *ag, struct agent_prof *pr,
                        const char *subject, struct agent_req *req)
{
    struct agent_job *job;

    if (pr->key == NULL || ag->stopping) {
        agent_audit(ag, &req->peer, "assertion", pr->p->name, subject,
                    "unavailable", NULL);
        agent_answer_error(
            ag, req, AGENT_E_UNAVAILABLE,
            ag->stopping ? "the agent is shutting down" : pr->key_error, NULL);
        return AGENT_ANSWERED;
    }
    job = job_new(ag, AGENT_JOB_ASSERTION, pr);
    if (job == NULL || (job->subject = strdup(subject)) == NULL) {
        if (job != NULL) {
            job_release(ag, job);
        }
        agent_answer_error(ag, req, AGENT_E_INTERNAL,
                           "the agent ran out of memory", NULL);
        return AGENT_ANSWERED;
    }
    job->req = req;
    job->key = pr->key;
    if (!ag->be.submit(ag, job)) {
        job_release(ag, job);
        agent_answer_error(ag, req, AGENT_E_UNAVAILABLE,
                           "the agent cannot start a signing job", NULL);
        return AGENT_ANSWERED;
    }
    return AGENT_PENDING;
}

bool
agent_invalidate(struct agent *ag, struct agent_prof *pr, const char *subject,
                 const char *token, size_t len)
{
    struct agent_entry *e = entry_find(pr, subject);

    if (e == NULL || e->token == NULL ||
        !pj_secret_equal(e->token->data, e->token->len, token, len)) {
        return false;
    }
    entry_drop_token(e);
    if (!e->hold) {
        /* Clear a backoff too: the caller proved the token is dead. */
        e->retry_mono = 0;
        entry_start_exchange(ag, e);
    }
    return true;
}

/* ---- timers -----------------------------------------------------------------
 */

static int64_t
min_deadline(int64_t a, int64_t b)
{
    if (a < 0) {
        return b;
    }
    if (b < 0) {
        return a;
    }
    return a < b ? a : b;
}

int64_t
agent_timers_run(struct agent *ag)
{
    int64_t now = agent_mono_ms(ag), next = -1;
    struct agent_prof *pr;
    struct agent_entry *e;

    for (pr = ag->profs; pr != NULL; pr = pr->next) {
        if (pr->key == NULL && !pr->key_opening && pr->key_retry_mono > 0) {
            if (now >= pr->key_retry_mono) {
                prof_open_key(ag, pr);
            } else {
                next = min_deadline(next, pr->key_retry_mono - now);
            }
        }
        for (e = pr->entries; e != NULL; e = e->next) {
            if (e->token != NULL && now >= e->expire_mono) {
                pj_log_warn("profile %s subject %s: cached token expired "
                            "without a successful refresh",
                            pr->p->name, e->subject);
                entry_drop_token(e);
            }
            if (e->in_flight) {
                continue;
            }
            if (e->token != NULL) {
                int64_t due = e->refresh_mono;
                if (e->retry_mono > due) {
                    due = e->retry_mono;
                }
                if (now < due) {
                    next = min_deadline(next, due - now);
                } else if (pr->key != NULL) {
                    entry_start_exchange(ag, e);
                }
                if (!e->in_flight) {
                    next = min_deadline(next, e->expire_mono - now);
                }
            } else if (e->fail.set && !e->hold && e->retry_mono > 0) {
                /* Transient failure without a token: retry in the
                 * background so the next caller finds one. */
                if (now < e->retry_mono) {
                    next = min_deadline(next, e->retry_mono - now);
                } else if (pr->key != NULL) {
                    entry_start_exchange(ag, e);
                }
            }
        }
    }
    return next;
}

unsigned
agent_busy(const struct agent *ag)
{
    const struct agent_prof *pr;
    unsigned n = 0;

    for (pr = ag->profs; pr != NULL; pr = pr->next) {
        n += pr->refs;
    }
    for (pr = ag->retired; pr != NULL; pr = pr->next) {
        n += pr->refs;
    }
    return n;
}
