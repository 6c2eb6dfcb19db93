/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One request line -> one answer (now or later). Parsing is strict: a JSON
 * object with known fields of the right types, no duplicate keys, no NUL
 * bytes, at most AGENT_LINE_MAX bytes. Every profile request is authorised
 * from the peer's credentials before anything else about it is looked at.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "agent/agent.h"
#include "agent/agent_monitor_glue.h"
#include "core/pj_log.h"
#include "core/pj_util.h"

#ifndef P11JWT_VERSION
#define P11JWT_VERSION "0.1.0"
#endif

/* ---- policy ----------------------------------------------------------- */

bool
agent_peer_allowed(const struct agent *ag, const struct pj_profile *p,
                   const struct agent_peer *peer, char *why, size_t whylen)
{
    bool ok = false;
    size_t i;

    if (p->n_allow_uid == 0 && p->n_allow_gid == 0) {
        /* No lists: only root and the agent's own user. */
        ok = peer->uid == 0 || peer->uid == ag->self_uid;
    }
    for (i = 0; !ok && i < p->n_allow_uid; i++) {
        ok = p->allow_uid[i] == peer->uid;
    }
    for (i = 0; !ok && i < p->n_allow_gid; i++) {
        ok = p->allow_gid[i] == peer->gid;
    }
    if (!ok) {
        if (why != NULL) {
            agent_msgf(why, whylen,
                       "uid %u (gid %u) is not allowed to use profile %s: add "
                       "it to allow-uid or allow-gid in [profile %s]",
                       (unsigned)peer->uid, (unsigned)peer->gid, p->name,
                       p->name);
        }
        return false;
    }
    if (p->n_allow_exe > 0) {
        for (i = 0; i < p->n_allow_exe; i++) {
            if (peer->exe != NULL && strcmp(peer->exe, p->allow_exe[i]) == 0) {
                return true;
            }
        }
        if (why == NULL) {
            return false;
        }
        if (peer->exe != NULL) {
            agent_msgf(why, whylen,
                       "uid %u runs %s, which is not in allow-exe of profile "
                       "%s",
                       (unsigned)peer->uid, peer->exe, p->name);
        } else if (peer->exe_errno == EACCES || peer->exe_errno == EPERM) {
            /* The kernel shows /proc/PID/exe of another user's process
             * only to root and CAP_SYS_PTRACE. */
            agent_msgf(why, whylen,
                       "profile %s has allow-exe, but the agent may not read "
                       "the executable of uid %u (pid %d): run the agent as "
                       "root or give it CAP_SYS_PTRACE (docs/operations.md)",
                       p->name, (unsigned)peer->uid, (int)peer->pid);
        } else {
            agent_msgf(why, whylen,
                       "profile %s has allow-exe, but the executable of uid "
                       "%u is not visible to the agent (another PID "
                       "namespace?)",
                       p->name, (unsigned)peer->uid);
        }
        return false;
    }
    return true;
}

static bool
peer_sees_all(const struct agent *ag, const struct agent_peer *peer)
{
    return peer->uid == 0 || peer->uid == ag->self_uid;
}

/* ---- audit ------------------------------------------------------------ */

static void
audit_word(char *dst, size_t n, const char *s)
{
    size_t i, j = 0;

    /* Values from configs and /proc: keep the line one line, spaces out. */
    for (i = 0; s != NULL && s[i] != '\0' && j + 1 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[j++] = (c <= 0x20 || c == 0x7f || c == '"') ? '_' : (char)c;
    }
    if (j == 0 && j + 1 < n) {
        dst[j++] = '-';
    }
    dst[j] = '\0';
}

void
agent_audit(const struct agent *ag, const struct agent_peer *peer,
            const char *op, const char *profile, const char *subject,
            const char *result, const char *extra)
{
    char prof[64], sub[SF_CLAIM_MAX], exe[512];

    audit_word(prof, sizeof(prof), profile);
    audit_word(sub, sizeof(sub), subject);
    audit_word(exe, sizeof(exe), peer->exe);
    pj_log_notice("audit: time=%" PRId64 " op=%s profile=%s subject=%s uid=%u "
                  "gid=%u pid=%d exe=%s result=%s%s%s",
                  agent_wall_s(ag), op, prof, sub, (unsigned)peer->uid,
                  (unsigned)peer->gid, (int)peer->pid, exe, result,
                  extra ? " " : "", extra ? extra : "");
}

/* ---- answers ---------------------------------------------------------- */

static void
begin_ok(struct agent_req *req)
{
    agent_buf_wipe(&req->out);
    agent_buf_str(&req->out, "{\"ok\":true");
    if (req->id_json != NULL) {
        agent_buf_key(&req->out, "id");
        agent_buf_str(&req->out, req->id_json);
    }
}

static bool
prof_healthy(const struct agent *ag, const struct agent_prof *pr, char *why,
             size_t n)
{
    const struct agent_entry *e;
    int64_t now = agent_mono_ms(ag);

    if (pr->key == NULL) {
        agent_msgf(why, n, "%s", pr->key_error);
        return false;
    }
    for (e = pr->entries; e != NULL; e = e->next) {
        if (e->fail.set && !e->last_ok &&
            (e->token == NULL || now >= e->expire_mono) && !e->in_flight) {
            agent_msgf(why, n, "profile %s subject %s: no token: %s",
                       pr->p->name, e->subject, e->fail.message);
            return false;
        }
    }
    return true;
}

static void
op_health(struct agent *ag, struct agent_req *req)
{
    const struct agent_prof *pr;
    unsigned n = 0, open = 0, bad = 0;
    char why[PJ_ERR_MSG_MAX + 128];
    struct agent_buf probs = {0};

    agent_buf_str(&probs, "[");
    for (pr = ag->profs; pr != NULL; pr = pr->next) {
        n++;
        open += pr->key != NULL;
        if (!prof_healthy(ag, pr, why, sizeof(why))) {
            if (bad++ > 0) {
                agent_buf_str(&probs, ",");
            }
            agent_buf_jstr(&probs, why);
        }
    }
    agent_buf_str(&probs, "]");
    begin_ok(req);
    agent_buf_key(&req->out, "status");
    agent_buf_jstr(&req->out, ag->stopping ? "stopping"
                              : bad > 0    ? "degraded"
                                           : "ok");
    agent_buf_key(&req->out, "profiles");
    agent_buf_int(&req->out, n);
    agent_buf_key(&req->out, "keys_open");
    agent_buf_int(&req->out, open);
    agent_buf_key(&req->out, "uptime");
    agent_buf_int(&req->out, (pj_time_mono_ms() - ag->start_mono) / 1000);
    if (bad > 0) {
        agent_buf_key(&req->out, "problems");
        agent_buf_raw(&req->out, probs.data ? probs.data : "[]",
                      probs.data ? probs.len : 2);
    }
    if (probs.oom) {
        req->out.oom = true;
    }
    agent_buf_wipe(&probs);
    agent_req_finish(ag, req, true);
}

static const char *
entry_state(const struct agent_entry *e, int64_t now)
{
    bool valid = e->token != NULL && now < e->expire_mono;

    if (valid) {
        return e->in_flight ? "refreshing" : "valid";
    }
    if (e->in_flight) {
        return "fetching";
    }
    return e->fail.set ? "failed" : "empty";
}

static void
status_prof(struct agent *ag, struct agent_buf *b, struct agent_prof *pr)
{
    const struct pj_profile *p = pr->p;
    const struct agent_entry *e;
    struct hsm_stats st = {0};
    int64_t now = agent_mono_ms(ag), wall = agent_wall_s(ag);
    size_t i;

    agent_buf_str(b, "{");
    agent_buf_key(b, "name");
    agent_buf_jstr(b, p->name);
    agent_buf_key(b, "key");
    agent_buf_jstr(b, p->key);
    agent_buf_key(b, "key_open");
    agent_buf_str(b, pr->key ? "true" : "false");
    agent_buf_key(b, "key_error");
    agent_buf_jstr(b, pr->key ? NULL : pr->key_error);
    agent_buf_key(b, "login_url");
    agent_buf_jstr(b, p->login_url);
    agent_buf_key(b, "audience");
    agent_buf_jstr(b, p->audience);
    agent_buf_key(b, "session_lifetime");
    agent_buf_int(b, p->session_lifetime);
    agent_buf_key(b, "subjects");
    agent_buf_str(b, "[");
    agent_buf_jstr(b, p->subject);
    for (i = 0; i < p->n_subjects; i++) {
        agent_buf_str(b, ",");
        agent_buf_jstr(b, p->subjects[i]);
    }
    agent_buf_str(b, "]");
    if (pr->key != NULL) {
        hsm_key_get_stats(pr->key, &st);
    }
    agent_buf_key(b, "signer");
    agent_buf_str(b, "{");
    agent_buf_key(b, "signatures");
    agent_buf_int(b, (int64_t)st.signatures);
    agent_buf_key(b, "failures");
    agent_buf_int(b, (int64_t)st.failures);
    agent_buf_key(b, "recoveries");
    agent_buf_int(b, (int64_t)st.recoveries);
    agent_buf_str(b, "}");
    agent_buf_key(b, "clock_skew");
    if (pr->have_skew) {
        agent_buf_int(b, pr->skew);
    } else {
        agent_buf_str(b, "null");
    }
    agent_buf_key(b, "tokens");
    agent_buf_str(b, "[");
    for (e = pr->entries; e != NULL; e = e->next) {
        bool valid = e->token != NULL && now < e->expire_mono;
        if (e != pr->entries) {
            agent_buf_str(b, ",");
        }
        agent_buf_str(b, "{");
        agent_buf_key(b, "subject");
        agent_buf_jstr(b, e->subject);
        agent_buf_key(b, "state");
        agent_buf_jstr(b, entry_state(e, now));
        if (valid) {
            agent_buf_key(b, "issued_at");
            agent_buf_int(b, e->issued_at);
            agent_buf_key(b, "expires_at");
            agent_buf_int(b, e->expires_at);
            agent_buf_key(b, "age");
            agent_buf_int(b, wall - e->issued_at);
            agent_buf_key(b, "refresh_in");
            agent_buf_int(
                b, e->refresh_mono > now ? (e->refresh_mono - now) / 1000 : 0);
        }
        agent_buf_key(b, "in_flight");
        agent_buf_str(b, e->in_flight ? "true" : "false");
        agent_buf_key(b, "waiters");
        agent_buf_int(b, e->n_waiters);
        agent_buf_key(b, "last_exchange");
        if (e->last_time == 0) {
            agent_buf_str(b, "null");
        } else {
            agent_buf_str(b, "{");
            agent_buf_key(b, "time");
            agent_buf_int(b, e->last_time);
            agent_buf_key(b, "result");
            agent_buf_jstr(b,
                           e->last_ok ? "ok" : agent_ecode_name(e->fail.code));
            agent_buf_key(b, "class");
            agent_buf_jstr(
                b, sf_class_name(e->last_ok ? SF_CLASS_NONE : e->fail.cls));
            agent_buf_key(b, "error");
            agent_buf_jstr(b, !e->last_ok && e->fail.error[0] ? e->fail.error
                                                              : NULL);
            agent_buf_key(b, "message");
            agent_buf_jstr(b, e->last_ok ? NULL : e->fail.message);
            agent_buf_str(b, "}");
        }
        agent_buf_key(b, "failures");
        agent_buf_int(b, e->failures);
        agent_buf_key(b, "retry_in");
        if (e->retry_mono > now) {
            agent_buf_int(b, (e->retry_mono - now + 999) / 1000);
        } else {
            agent_buf_str(b, "null");
        }
        agent_buf_str(b, "}");
    }
    agent_buf_str(b, "]");
    agent_buf_key(b, "in_flight");
    agent_buf_int(b, pr->refs);
    agent_buf_key(b, "rotation");
    agent_rotation_json(ag, b, pr);
    agent_mon_status_json(ag, b, pr); /* "cert", "next_cert" */
    agent_buf_str(b, "}");
}

static void
op_status(struct agent *ag, struct agent_req *req, struct agent_prof *only)
{
    struct agent_prof *pr;
    bool first = true;

    begin_ok(req);
    agent_buf_key(&req->out, "version");
    agent_buf_jstr(&req->out, P11JWT_VERSION);
    agent_buf_key(&req->out, "pid");
    agent_buf_int(&req->out, (int64_t)getpid());
    agent_buf_key(&req->out, "uptime");
    agent_buf_int(&req->out, (pj_time_mono_ms() - ag->start_mono) / 1000);
    agent_buf_key(&req->out, "workers");
    agent_buf_int(&req->out, ag->workers);
    agent_buf_key(&req->out, "connections");
    agent_buf_int(&req->out, ag->connections);
    agent_buf_key(&req->out, "profiles");
    agent_buf_str(&req->out, "[");
    for (pr = ag->profs; pr != NULL; pr = pr->next) {
        if (only != NULL && pr != only) {
            continue;
        }
        if (!peer_sees_all(ag, &req->peer) &&
            !agent_peer_allowed(ag, pr->p, &req->peer, NULL, 0)) {
            continue;
        }
        if (!first) {
            agent_buf_str(&req->out, ",");
        }
        first = false;
        status_prof(ag, &req->out, pr);
    }
    agent_buf_str(&req->out, "]");
    agent_req_finish(ag, req, true);
}

/* ---- parsing ---------------------------------------------------------- */

static void bad(struct agent *ag, struct agent_req *req, const char *fmt, ...)
    PJ_PRINTF(3, 4);

static void
bad(struct agent *ag, struct agent_req *req, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    agent_answer_error(ag, req, AGENT_E_BAD_REQUEST, msg, NULL);
}

/* A printable, bounded copy of a client string for messages. */
static void
clip(char *dst, size_t n, const char *s)
{
    size_t i, j = 0;

    for (i = 0; s[i] != '\0' && j + 4 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[j++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
    }
    if (s[i] != '\0') {
        dst[j++] = '.';
        dst[j++] = '.';
    }
    dst[j] = '\0';
}

static const char *const op_names[] = {"token",  "assertion", "invalidate",
                                       "status", "health",    "rotate"};

static void
list_profiles(const struct agent *ag, char *buf, size_t n)
{
    const struct agent_prof *pr;
    size_t used = 0;

    buf[0] = '\0';
    for (pr = ag->profs; pr != NULL && used + 1 < n; pr = pr->next) {
        agent_msgf(buf + used, n - used, "%s%s", pr == ag->profs ? "" : ", ",
                   pr->p->name);
        used += strlen(buf + used);
    }
    if (ag->profs == NULL) {
        agent_msgf(buf, n, "none configured");
    }
}

static enum agent_dispatch_result
dispatch_obj(struct agent *ag, const struct agent_peer *peer, json_t *root,
             struct agent_req *req)
{
    const char *key, *opname = NULL, *profile = NULL, *subject = NULL,
                     *token = NULL, *action = NULL;
    size_t token_len = 0;
    json_t *v;
    char c1[96], c2[PJ_ERR_MSG_MAX], why[PJ_ERR_MSG_MAX];
    struct agent_prof *pr = NULL;
    const char *sub = NULL;
    struct pj_err err = {0};
    size_t i;

    /* id first, so that even error answers carry it. */
    if ((v = json_object_get(root, "id")) != NULL) {
        if (json_is_string(v) && json_string_length(v) <= 128) {
            struct agent_buf b = {0};
            agent_buf_jstrn(&b, json_string_value(v), json_string_length(v));
            req->id_json = b.oom ? NULL : b.data;
        } else if (json_is_integer(v)) {
            char tmp[32];
            agent_msgf(tmp, sizeof(tmp), "%" JSON_INTEGER_FORMAT,
                       json_integer_value(v));
            req->id_json = strdup(tmp);
        } else {
            bad(ag, req,
                "'id' must be a string of at most 128 bytes or an "
                "integer");
            return AGENT_ANSWERED;
        }
    }
    json_object_foreach(root, key, v)
    {
        const char **slot = NULL;
        if (strcmp(key, "id") == 0) {
            continue;
        } else if (strcmp(key, "op") == 0) {
            slot = &opname;
        } else if (strcmp(key, "profile") == 0) {
            slot = &profile;
        } else if (strcmp(key, "subject") == 0) {
            slot = &subject;
        } else if (strcmp(key, "access_token") == 0) {
            slot = &token;
            token_len = json_string_length(v);
        } else if (strcmp(key, "action") == 0) {
            slot = &action;
        } else {
            clip(c1, sizeof(c1), key);
            bad(ag, req,
                "unknown field '%s': requests have op, profile, "
                "subject, access_token, action and id",
                c1);
            return AGENT_ANSWERED;
        }
        if (!json_is_string(v)) {
            bad(ag, req, "'%s' must be a string", key);
            return AGENT_ANSWERED;
        }
        *slot = json_string_value(v);
        if (slot != &token && strlen(*slot) != json_string_length(v)) {
            bad(ag, req, "'%s' contains a NUL character", key);
            return AGENT_ANSWERED;
        }
    }
    if (opname == NULL) {
        bad(ag, req,
            "missing 'op': one of token, assertion, invalidate, "
            "status, health, rotate");
        return AGENT_ANSWERED;
    }
    for (i = 0; i < PJ_ARRAY_SIZE(op_names); i++) {
        if (strcmp(opname, op_names[i]) == 0) {
            req->op = (enum agent_op)i;
            req->op_known = true;
            break;
        }
    }
    if (!req->op_known) {
        clip(c1, sizeof(c1), opname);
        agent_answer_error(ag, req, AGENT_E_UNKNOWN_OP,
                           "unknown op: use token, assertion, invalidate, "
                           "status, health or rotate",
                           NULL);
        (void)c1;
        return AGENT_ANSWERED;
    }
    if (req->op == AGENT_OP_HEALTH) {
        op_health(ag, req);
        return AGENT_ANSWERED;
    }
    if (req->op != AGENT_OP_INVALIDATE && token != NULL) {
        bad(ag, req, "'access_token' is only for op invalidate");
        return AGENT_ANSWERED;
    }
    if (req->op != AGENT_OP_ROTATE && action != NULL) {
        bad(ag, req, "'action' is only for op rotate");
        return AGENT_ANSWERED;
    }
    if (req->op == AGENT_OP_ROTATE && subject != NULL) {
        bad(ag, req, "'subject' is not used by op rotate");
        return AGENT_ANSWERED;
    }
    if (req->op == AGENT_OP_STATUS && subject != NULL) {
        bad(ag, req, "'subject' is not used by op status");
        return AGENT_ANSWERED;
    }
    if (profile != NULL) {
        pr = agent_prof_find(ag, profile);
        if (pr == NULL) {
            clip(c1, sizeof(c1), profile);
            list_profiles(ag, c2, sizeof(c2) - 200);
            agent_msgf(why, sizeof(why), "no profile '%s' (profiles: %s)", c1,
                       c2);
            agent_answer_error(ag, req, AGENT_E_UNKNOWN_PROFILE, why, NULL);
            return AGENT_ANSWERED;
        }
    } else if (req->op != AGENT_OP_STATUS) {
        if (ag->profs != NULL && ag->profs->next == NULL) {
            pr = ag->profs;
        } else {
            list_profiles(ag, c2, sizeof(c2) - 200);
            agent_msgf(why, sizeof(why),
                       "name a profile with 'profile' "
                       "(profiles: %s)",
                       c2);
            agent_answer_error(ag, req,
                               ag->profs == NULL ? AGENT_E_UNKNOWN_PROFILE
                                                 : AGENT_E_BAD_REQUEST,
                               why, NULL);
            return AGENT_ANSWERED;
        }
    }
    if (req->op == AGENT_OP_STATUS) {
        if (pr != NULL &&
            !agent_peer_allowed(ag, pr->p, peer, why, sizeof(why))) {
            agent_audit(ag, peer, "status", pr->p->name, NULL, "forbidden",
                        NULL);
            ag->total.refused++;
            pr->n.refused++;
            agent_answer_error(ag, req, AGENT_E_FORBIDDEN, why, NULL);
            return AGENT_ANSWERED;
        }
        op_status(ag, req, pr);
        return AGENT_ANSWERED;
    }
    if ((req->profile = strdup(pr->p->name)) == NULL) {
        agent_answer_error(ag, req, AGENT_E_INTERNAL,
                           "the agent ran out of memory", NULL);
        return AGENT_ANSWERED;
    }
    if (req->op == AGENT_OP_ROTATE) {
        /* Key management: root and the agent's own user only. */
        if (!peer_sees_all(ag, peer)) {
            agent_msgf(why, sizeof(why),
                       "uid %u may not ask for op rotate: only root and the "
                       "agent's user (uid %u) may",
                       (unsigned)peer->uid, (unsigned)ag->self_uid);
            agent_audit(ag, peer, "rotate", pr->p->name, NULL, "forbidden",
                        NULL);
            ag->total.refused++;
            pr->n.refused++;
            agent_answer_error(ag, req, AGENT_E_FORBIDDEN, why, NULL);
            return AGENT_ANSWERED;
        }
        return agent_rotate_request(ag, pr, action, req);
    }
    if (!agent_peer_allowed(ag, pr->p, peer, why, sizeof(why))) {
        char extra[PJ_ERR_MSG_MAX + 16];
        agent_msgf(extra, sizeof(extra), "reason=\"%s\"", why);
        agent_audit(ag, peer, agent_op_name(req->op), pr->p->name, subject,
                    "forbidden", extra);
        ag->total.refused++;
        pr->n.refused++;
        agent_answer_error(ag, req, AGENT_E_FORBIDDEN, why, NULL);
        return AGENT_ANSWERED;
    }
    if (pj_profile_subject(pr->p, subject, &sub, &err) != PJ_OK) {
        char extra[64];
        agent_msgf(why, sizeof(why), "uid %u: %s", (unsigned)peer->uid,
                   err.msg);
        agent_msgf(extra, sizeof(extra), "reason=subject_not_allowed");
        agent_audit(ag, peer, agent_op_name(req->op), pr->p->name, subject,
                    "forbidden", extra);
        ag->total.refused++;
        pr->n.refused++;
        agent_answer_error(ag, req, AGENT_E_FORBIDDEN, why, NULL);
        return AGENT_ANSWERED;
    }
    if ((req->subject = strdup(sub)) == NULL) {
        agent_answer_error(ag, req, AGENT_E_INTERNAL,
                           "the agent ran out of memory", NULL);
        return AGENT_ANSWERED;
    }
    switch (req->op) {
    case AGENT_OP_TOKEN:
        return agent_token_request(ag, pr, req->subject, req);
    case AGENT_OP_ASSERTION:
        return agent_assertion_request(ag, pr, req->subject, req);
    case AGENT_OP_INVALIDATE: {
        bool hit;
        if (token == NULL) {
            bad(ag, req,
                "op invalidate needs 'access_token' (the token "
                "that was refused)");
            return AGENT_ANSWERED;
        }
        hit = agent_invalidate(ag, pr, req->subject, token, token_len);
        {
            char fp[13], extra[48];
            pj_fingerprint12(token, token_len, fp);
            agent_msgf(extra, sizeof(extra), "invalidated=%d token_fp=%s",
                       hit ? 1 : 0, fp);
            agent_audit(ag, peer, "invalidate", pr->p->name, req->subject, "ok",
                        extra);
        }
        begin_ok(req);
        agent_buf_key(&req->out, "invalidated");
        agent_buf_str(&req->out, hit ? "true" : "false");
        agent_req_finish(ag, req, true);
        return AGENT_ANSWERED;
    }
    default:
        agent_answer_error(ag, req, AGENT_E_INTERNAL, "unhandled op", NULL);
        return AGENT_ANSWERED;
    }
}

enum agent_dispatch_result
agent_dispatch(struct agent *ag, const struct agent_peer *peer,
               const char *line, size_t len, struct agent_req *req)
{
    json_error_t jerr;
    json_t *root;
    enum agent_dispatch_result r;

    ag->dispatching = req;
    if (len > AGENT_LINE_MAX) {
        bad(ag, req, "request line longer than %d bytes", AGENT_LINE_MAX);
        r = AGENT_ANSWERED;
        goto out;
    }
    if (memchr(line, '\0', len) != NULL) {
        bad(ag, req, "request contains a NUL byte");
        r = AGENT_ANSWERED;
        goto out;
    }
    root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL && json_error_code(&jerr) == json_error_duplicate_key) {
        bad(ag, req, "request has a duplicate key (near byte %d)",
            jerr.position);
        r = AGENT_ANSWERED;
        goto out;
    }
    if (root == NULL) {
        /* jerr.text can quote the input; keep only the position. */
        bad(ag, req,
            "request is not valid JSON (line must be one JSON "
            "object): error near byte %d",
            jerr.position);
        r = AGENT_ANSWERED;
        goto out;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        bad(ag, req, "request must be a JSON object");
        r = AGENT_ANSWERED;
        goto out;
    }
    r = dispatch_obj(ag, peer, root, req);
    json_decref(root);
out:
    ag->dispatching = NULL;
    if (r == AGENT_PENDING && req->done) {
        r = AGENT_ANSWERED;
    }
    return r;
}
