/* SPDX-License-Identifier: Apache-2.0 */
/*
 * p11jwt rotate start|status|finish: zero-downtime key rotation
 * (docs/rotation.md). The labels on the token are the state: "L" active,
 * "L.next" next, "L.retired-<UTC>" old. start makes the next key and its
 * certificate (or a CSR), writes the ECA metadata carrying it and tells the
 * agent; the agent switches when Salesforce accepts the next key and
 * relabels the token; finish checks that and retires the old key for good.
 * Works without an agent; talks to it when it runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "agent/client.h"
#include "certs/cert.h"
#include "cli/cli.h"
#include "core/pj_config.h"
#include "core/pj_util.h"
#include "pkcs11/hsm.h"
#include "salesforce/sf_eca.h"

#define CMD "rotate"
#define ROT_AGENT_TIMEOUT_MS 30000

enum {
    OPT_PROFILE = CLI_OPT_FIRST_LOCAL,
    OPT_BITS,
    OPT_SUBJECT,
    OPT_DAYS,
    OPT_CSR,
    OPT_OUT,
    OPT_NAME,
    OPT_EMAIL,
    OPT_LABEL,
    OPT_PERMSET,
    OPT_PROFILE_NAME,
    OPT_API_VERSION,
    OPT_ENCODING,
    OPT_FORCE,
    OPT_NO_AGENT,
    OPT_DESTROY,
    OPT_JSON,
};

static void
help(FILE *f)
{
    fprintf(
        f, "usage: p11jwt rotate start  --profile P [--bits N] [--subject DN] "
           "[--days N]\n"
           "                            [--csr FILE] [--out DIR --name APP "
           "--contact-email E\n"
           "                            [--label L] [--permission-set PS | "
           "--profile-name NAME]\n"
           "                            [--api-version V] [--cert-encoding "
           "pem|base64-der]\n"
           "                            [--force]] [--no-agent]\n"
           "       p11jwt rotate status --profile P [--json] [--no-agent]\n"
           "       p11jwt rotate finish --profile P [--destroy] [--force] "
           "[--no-agent]\n"
           "\n"
           "Rotate a profile's key without a failed token request. The labels "
           "on the token\nare the state: the profile's key label L is the "
           "active key, L.next the next\none, L.retired-<UTC time> old ones "
           "(docs/rotation.md).\n"
           "\n"
           "start   generate L.next on the same token (same size as L unless "
           "--bits), its\n"
           "        self-signed certificate (subject of L's certificate unless "
           "--subject),\n"
           "        or with --csr FILE a CSR (import the signed certificate "
           "later with\n"
           "        'p11jwt cert import --key URI-of-L.next --in FILE'); with "
           "--out DIR write\n"
           "        the External Client App metadata carrying the next "
           "certificate (options\n"
           "        as for 'p11jwt eca'); tell the running agent.\n"
           "        Deploy the metadata whenever you like: the agent keeps "
           "signing with L,\n"
           "        and when Salesforce refuses it (invalid assertion) it "
           "retries once with\n"
           "        L.next and, if accepted, makes it active and relabels the "
           "token.\n"
           "status  which key is active, which is next, since when (token, and "
           "agent if\n"
           "        reachable).\n"
           "finish  after the agent made the next key active: confirm the "
           "token holds it\n"
           "        as L, and with --destroy delete the retired keys. If the "
           "token still has\n"
           "        L.next (agent not running, or its relabelling failed), "
           "finish relabels\n"
           "        only when the agent reports the next key active, or with "
           "--force.\n"
           "\n"
           "  --no-agent   do not contact the agent\n"
           "  --force      start: write into a non-empty --out DIR; finish: "
           "promote L.next\n"
           "               without the agent's word that Salesforce accepts "
           "it\n"
           "global: -c FILE, --socket PATH, --module PATH, --pin-source SRC\n"
           "Exit status: 0 ok, 1 failure, 2 usage error.\n");
}

/* --module, then $P11JWT_MODULE, then [agent] module, then the default. */
static const char *
module_path(const struct pj_config *cfg)
{
    const char *env = getenv("P11JWT_MODULE");

    if (cli_global.module != NULL) {
        return cli_global.module;
    }
    if (env != NULL && env[0] != '\0') {
        return env;
    }
    if (cfg != NULL && cfg->agent.module != NULL) {
        return cfg->agent.module;
    }
    return hsm_module_path_resolve(NULL);
}

struct rot_ctx {
    struct pj_config *cfg;
    const struct pj_profile *p;
    struct hsm_module *mod;
    const char *pin_source;
    char label[HSM_ROTATE_LABEL_MAX + 1];
    char next[HSM_ROTATE_LABEL_MAX + 8];
    struct hsm_rotate_state st;
    bool no_agent;
};

static void
ctx_cleanup(struct rot_ctx *c)
{
    hsm_module_free(c->mod);
    pj_config_free(c->cfg);
    memset(c, 0, sizeof(*c));
}

static pj_rc
ctx_open(struct rot_ctx *c, const char *profile, struct pj_err *err)
{
    PJ_TRY(pj_config_load_file(pj_config_path_resolve(cli_global.config),
                               &c->cfg, err));
    PJ_TRY(pj_config_profile_select(c->cfg, profile, &c->p, err));
    c->pin_source = cli_global.pin_source != NULL ? cli_global.pin_source
                                                  : c->p->pin_source;
    if (hsm_rotate_label(c->p->key, c->label, sizeof(c->label), err) != PJ_OK) {
        char msg[PJ_ERR_MSG_MAX];
        pj_strlcpy(msg, err->msg, sizeof(msg));
        return pj_err_set(err, PJ_ERR_CONFIG, "[profile %s] key: %s",
                          c->p->name, msg);
    }
    snprintf(c->next, sizeof(c->next), "%s%s", c->label, HSM_ROTATE_NEXT);
    PJ_TRY(hsm_module_load(module_path(c->cfg), &c->mod, err));
    return hsm_rotate_scan(c->mod, c->p->key, c->pin_source, &c->st, err);
}

/* The agent's answer to req, or NULL (reason in why). */
static json_t *
agent_ask(const struct rot_ctx *c, json_t *req, char *why, size_t whylen)
{
    struct pj_err err = {0};
    char *path = NULL;
    json_t *ans = NULL;

    why[0] = '\0';
    if (agent_client_socket_path(cli_global.socket, cli_global.config, &path,
                                 &err) != PJ_OK ||
        agent_client_request(path, req, ROT_AGENT_TIMEOUT_MS, &ans, &err) !=
            PJ_OK ||
        agent_client_answer_check(ans, &err) != PJ_OK) {
        snprintf(why, whylen, "%s", err.msg);
        json_decref(ans);
        ans = NULL;
    }
    (void)c;
    free(path);
    return ans;
}

/* The profile's rotation object from the agent (new), or NULL. */
static json_t *
agent_rotation(const struct rot_ctx *c, bool reload, char *why, size_t whylen)
{
    json_t *req, *ans, *rot = NULL, *profs, *pr;
    size_t i;

    if (reload) {
        req = json_pack("{s:s,s:s,s:s}", "op", "rotate", "profile", c->p->name,
                        "action", "reload-keys");
    } else {
        req = json_pack("{s:s,s:s}", "op", "status", "profile", c->p->name);
    }
    if (req == NULL) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    ans = agent_ask(c, req, why, whylen);
    json_decref(req);
    if (ans == NULL) {
        return NULL;
    }
    if (reload) {
        rot = json_incref(json_object_get(ans, "rotation"));
    } else if ((profs = json_object_get(ans, "profiles")) != NULL) {
        json_array_foreach(profs, i, pr)
        {
            const char *n = json_string_value(json_object_get(pr, "name"));
            if (n != NULL && strcmp(n, c->p->name) == 0) {
                rot = json_incref(json_object_get(pr, "rotation"));
            }
        }
    }
    json_decref(ans);
    if (rot == NULL || !json_is_object(rot)) {
        json_decref(rot);
        snprintf(why, whylen, "the agent's answer has no rotation state");
        return NULL;
    }
    return rot;
}

static const char *
jstr(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static json_int_t
jint(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static void
iso(json_int_t t, char out[21])
{
    if (t > 0) {
        cert_time_iso((int64_t)t, out);
    } else {
        snprintf(out, 21, "-");
    }
}

/* ---- start ------------------------------------------------------------ */

struct start_opts {
    unsigned bits;
    const char *subject;
    long days;
    const char *csr;
    const char *out;
    bool force;
    enum sf_eca_cert_encoding enc;
    struct sf_eca_opts eca;
};

static void
eca_written(void *ctx, const char *path)
{
    fprintf(stderr, "p11jwt rotate: wrote %s/%s\n", (const char *)ctx, path);
}

static pj_rc
write_eca(const struct start_opts *o, const struct cert *cert,
          struct pj_err *err)
{
    struct sf_eca_opts e = o->eca;
    struct sf_eca_files files = {0};
    char *text = NULL;
    const uint8_t *der;
    size_t der_len;
    pj_rc rc;

    der = cert_der(cert, &der_len);
    if ((rc = sf_eca_cert_text(der, der_len, cert_pem(cert, NULL), o->enc,
                               &text, err)) != PJ_OK) {
        return rc;
    }
    e.cert_text = text;
    if ((rc = sf_eca_build(&e, &files, err)) == PJ_OK) {
        rc = sf_eca_write(&files, o->out, o->force, eca_written, (void *)o->out,
                          err);
    }
    sf_eca_files_free(&files);
    free(text);
    return rc;
}

static int
cmd_start(struct rot_ctx *c, const struct start_opts *o)
{
    struct pj_err err = {0};
    struct hsm_key *active = NULL, *next = NULL;
    struct hsm_key_opts ko = {0};
    struct hsm_keygen_opts kg = {0};
    struct hsm_key_info info;
    struct cert *acert = NULL, *ncert = NULL;
    struct cert_build_opts cb = {0};
    char *next_uri = NULL, *next_cert_uri = NULL, *subject = NULL;
    char *csr = NULL, why[PJ_ERR_MSG_MAX], na[21];
    size_t csr_len;
    const uint8_t *der;
    size_t der_len;
    json_t *rot = NULL;
    int ret = CLI_FAIL;

    if (c->st.next) {
        fprintf(stderr,
                "p11jwt rotate: a rotation is already under way: token '%s' "
                "has the next key '%s'%s. Deploy its certificate and let the "
                "agent promote it, then 'p11jwt rotate finish --profile %s' "
                "(see 'p11jwt rotate status --profile %s')\n",
                c->st.token, c->next,
                c->st.next_cert ? "" : " (without a certificate yet)",
                c->p->name, c->p->name);
        return CLI_FAIL;
    }
    if (!c->st.active) {
        fprintf(stderr,
                "p11jwt rotate: token '%s' has no active key '%s' (the "
                "profile's key); create it with 'p11jwt keygen' first\n",
                c->st.token, c->label);
        return CLI_FAIL;
    }
    /* The active key: its size and certificate subject are the defaults. */
    ko.uri = c->p->key;
    ko.pin_source = c->pin_source;
    ko.sessions = 1;
    if (hsm_key_open(c->mod, &ko, &active, &err) != PJ_OK ||
        hsm_key_get_info(active, &info, &err) != PJ_OK) {
        ret = cli_fail(CMD, &err);
        goto out;
    }
    if (o->subject == NULL) {
        if (cert_load_key(active, "the active key's certificate", &acert,
                          &err) != PJ_OK) {
            fprintf(stderr,
                    "p11jwt rotate: no --subject and the active key's "
                    "certificate cannot be read (%s); give --subject "
                    "\"CN=..\"\n",
                    err.msg);
            goto out;
        }
        if ((subject = strdup(cert_subject(acert))) == NULL) {
            goto out;
        }
    } else if ((subject = strdup(o->subject)) == NULL) {
        goto out;
    }
    if (cert_subject_check(subject, &err) != PJ_OK) {
        ret = cli_fail(CMD, &err);
        goto out;
    }
    hsm_key_free(active);
    active = NULL;

    if (hsm_rotate_uri(c->p->key, c->next, NULL, 0, "private", &next_uri,
                       &err) != PJ_OK) {
        ret = cli_fail(CMD, &err);
        goto out;
    }
    kg.uri = next_uri;
    kg.pin_source = c->pin_source;
    kg.bits = o->bits != 0 ? o->bits : (unsigned)info.bits;
    fprintf(stderr,
            "p11jwt rotate: generating the next key '%s' (RSA-%u) on "
            "token '%s'...\n",
            c->next, kg.bits, c->st.token);
    if (hsm_keygen(c->mod, &kg, NULL, &err) != PJ_OK) {
        ret = cli_fail(CMD, &err);
        goto out;
    }
    ko.uri = next_uri;
    if (hsm_key_open(c->mod, &ko, &next, &err) != PJ_OK) {
        ret = cli_fail(CMD, &err);
        goto out;
    }
    if (o->csr != NULL) {
        if (cert_csr(next, subject, &csr, &csr_len, &err) != PJ_OK ||
            pj_file_write_atomic(o->csr, csr, csr_len, 0644, &err) != PJ_OK) {
            ret = cli_fail(CMD, &err);
            goto out;
        }
        fprintf(stderr,
                "p11jwt rotate: wrote the CSR for '%s' to %s; when it is "
                "signed, run\n  p11jwt cert import --key '%s' --in CERT\n"
                "then write the metadata with\n  p11jwt eca --cert "
                "'<that key URI with type=cert>' --name APP ...\n",
                c->next, o->csr, next_uri);
    } else {
        cb.subject = subject;
        cb.days = o->days;
        if (cert_self_signed(next, &cb, &ncert, &err) != PJ_OK) {
            ret = cli_fail(CMD, &err);
            goto out;
        }
        der = cert_der(ncert, &der_len);
        if (hsm_key_store_cert(next, der, der_len, c->next, false, &err) !=
            PJ_OK) {
            ret = cli_fail(CMD, &err);
            goto out;
        }
        cert_time_iso(cert_not_after(ncert), na);
        fprintf(stderr,
                "p11jwt rotate: stored the next certificate '%s' (%s, valid "
                "until %s, SHA-256 %s)\n",
                c->next, cert_subject(ncert), na, cert_sha256_fp(ncert));
        if (o->out != NULL) {
            if (write_eca(o, ncert, &err) != PJ_OK) {
                ret = cli_fail(CMD, &err);
                goto out;
            }
            fprintf(stderr,
                    "p11jwt rotate: deploy %s (see its README.md); the agent "
                    "switches to '%s' when Salesforce accepts it\n",
                    o->out, c->next);
        } else {
            if (hsm_rotate_uri(c->p->key, c->next, NULL, 0, "cert",
                               &next_cert_uri, &err) != PJ_OK) {
                ret = cli_fail(CMD, &err);
                goto out;
            }
            fprintf(stderr,
                    "p11jwt rotate: no --out: write the metadata with\n"
                    "  p11jwt eca --cert '%s' --name APP --contact-email E "
                    "--out DIR\n",
                    next_cert_uri);
        }
    }
    printf("next key '%s' created on token '%s'\n", c->next, c->st.token);
    if (!c->no_agent) {
        rot = agent_rotation(c, true, why, sizeof(why));
        if (rot != NULL) {
            printf("agent: next key %s\n",
                   jstr(rot, "next") != NULL ? "loaded" : "NOT loaded");
            if (jstr(rot, "next") == NULL) {
                fprintf(stderr,
                        "p11jwt rotate: warning: the agent did not find the "
                        "next key%s%s\n",
                        jstr(rot, "scan_error") ? ": " : "",
                        jstr(rot, "scan_error") ? jstr(rot, "scan_error") : "");
            }
        } else {
            printf("agent: not told (%s); it reads the token at its next "
                   "start or SIGHUP\n",
                   why);
        }
    }
    ret = CLI_OK;
out:
    json_decref(rot);
    hsm_key_free(active);
    hsm_key_free(next);
    cert_free(acert);
    cert_free(ncert);
    free(csr);
    free(subject);
    free(next_uri);
    free(next_cert_uri);
    return ret;
}

/* ---- status ------------------------------------------------------------ */

/* The certificate beside a key id (new), or NULL. */
static struct cert *
id_cert(const struct rot_ctx *c, const char *label, const uint8_t *id,
        size_t id_len)
{
    struct pj_err err = {0};
    struct cert *cert = NULL;
    char *uri = NULL;

    if (hsm_rotate_uri(c->p->key, NULL, id, id_len, "cert", &uri, &err) ==
        PJ_OK) {
        if (cert_load(uri, module_path(c->cfg), c->pin_source, &cert, &err) !=
            PJ_OK) {
            cert = NULL;
        }
    }
    (void)label;
    free(uri);
    return cert;
}

static json_t *
key_json(const struct rot_ctx *c, const char *label, bool present,
         const uint8_t *id, size_t id_len)
{
    struct cert *cert;
    char hex[129], na[21];
    json_t *o;

    if (!present) {
        return json_null();
    }
    pj_hex(id, id_len, hex);
    o = json_pack("{s:s,s:s}", "label", label, "id", hex);
    if ((cert = id_cert(c, label, id, id_len)) != NULL) {
        cert_time_iso(cert_not_after(cert), na);
        json_object_set_new(
            o, "certificate",
            json_pack("{s:s,s:I,s:I,s:s,s:s}", "subject", cert_subject(cert),
                      "not_before", (json_int_t)cert_not_before(cert),
                      "not_after", (json_int_t)cert_not_after(cert),
                      "not_after_iso", na, "sha256", cert_sha256_fp(cert)));
        cert_free(cert);
    } else {
        json_object_set_new(o, "certificate", json_null());
    }
    return o;
}

static const char *
state_name(const struct hsm_rotate_state *st)
{
    if (st->active && st->next) {
        return "pending";
    }
    if (st->next) {
        return "interrupted";
    }
    if (st->active) {
        return st->n_retired > 0 ? "rotated" : "idle";
    }
    return "no-key";
}

static int
cmd_status(struct rot_ctx *c, bool as_json)
{
    json_t *o, *act, *nxt, *ret_arr, *rot = NULL;
    char why[PJ_ERR_MSG_MAX], t1[21], t2[21];
    unsigned i;
    const char *state = state_name(&c->st);

    act = key_json(c, c->label, c->st.active, c->st.active_id,
                   c->st.active_id_len);
    nxt = key_json(c, c->next, c->st.next, c->st.next_id, c->st.next_id_len);
    ret_arr = json_array();
    for (i = 0; i < c->st.n_retired; i++) {
        json_array_append_new(ret_arr, json_string(c->st.retired[i]));
    }
    why[0] = '\0';
    if (!c->no_agent) {
        rot = agent_rotation(c, false, why, sizeof(why));
    }
    if (as_json) {
        o = json_pack("{s:s,s:s,s:s,s:s,s:o,s:o,s:o,s:o}", "profile",
                      c->p->name, "token", c->st.token, "label", c->label,
                      "state", state, "active", act, "next", nxt, "retired",
                      ret_arr, "agent",
                      rot != NULL ? json_incref(rot) : json_null());
        if (rot == NULL && !c->no_agent) {
            json_object_set_new(o, "agent_error", json_string(why));
        }
        json_dumpf(o, stdout, JSON_COMPACT);
        printf("\n");
        json_decref(o);
        json_decref(rot);
        return CLI_OK;
    }
    printf("profile %s: token '%s', key label '%s': %s\n", c->p->name,
           c->st.token, c->label, state);
    if (json_is_object(act)) {
        json_t *ce = json_object_get(act, "certificate");
        if (!json_is_object(ce)) {
            ce = NULL;
        }
        printf("  active:  %s (certificate: %s%s%s)\n", c->label,
               ce ? jstr(ce, "subject") : "none", ce ? ", not after " : "",
               ce ? jstr(ce, "not_after_iso") : "");
    } else {
        printf("  active:  none (no private key '%s')\n", c->label);
    }
    if (json_is_object(nxt)) {
        json_t *ce = json_object_get(nxt, "certificate");
        if (!json_is_object(ce)) {
            ce = NULL;
        }
        iso(ce ? jint(ce, "not_before") : 0, t1);
        printf("  next:    %s (certificate: %s%s%s)\n", c->next,
               ce ? jstr(ce, "subject")
                  : "none yet: import it with 'p11jwt "
                    "cert import'",
               ce ? ", made " : "", ce ? t1 : "");
    } else {
        printf("  next:    none\n");
    }
    for (i = 0; i < c->st.n_retired; i++) {
        printf("  retired: %s\n", c->st.retired[i]);
    }
    if (rot != NULL) {
        iso(jint(rot, "since"), t1);
        iso(jint(rot, "promoted_at"), t2);
        printf("  agent:   signs with '%s'; next %s%s; since %s; last "
               "promotion %s; relabel %s; retries %lld\n",
               jstr(rot, "active") ? jstr(rot, "active") : "-",
               jstr(rot, "next") ? "'" : "",
               jstr(rot, "next") ? jstr(rot, "next") : "none", t1, t2,
               jstr(rot, "relabel") ? jstr(rot, "relabel") : "-",
               (long long)jint(rot, "retries"));
    } else if (!c->no_agent) {
        printf("  agent:   not reachable (%s)\n", why);
    }
    json_decref(act);
    json_decref(nxt);
    json_decref(ret_arr);
    json_decref(rot);
    return CLI_OK;
}

/* ---- finish ------------------------------------------------------------- */

static int
cmd_finish(struct rot_ctx *c, bool destroy, bool force)
{
    struct pj_err err = {0};
    char why[PJ_ERR_MSG_MAX], retired[HSM_ROTATE_LABEL_MAX + 1];
    json_t *rot = NULL;
    bool agent_promoted = false;
    unsigned i, n, total = 0;
    int ret = CLI_FAIL;

    why[0] = '\0';
    if (!c->no_agent) {
        rot = agent_rotation(c, false, why, sizeof(why));
        /* Promoted in memory: its next is gone and it has promoted. */
        agent_promoted = rot != NULL && jstr(rot, "next") == NULL &&
                         jint(rot, "promotions") > 0;
    }
    if (c->st.next) {
        if (c->st.active && !agent_promoted && !force) {
            fprintf(stderr,
                    "p11jwt rotate: the next key '%s' has not been made "
                    "active yet: %s. Deploy its certificate (the ECA "
                    "metadata from 'rotate start'); Salesforce takes up to "
                    "15 minutes, and the agent switches on the first refused "
                    "exchange after that. Then run finish again, or use "
                    "--force if you know Salesforce has the new "
                    "certificate.\n",
                    c->next,
                    rot != NULL   ? "the agent still signs with the active key"
                    : c->no_agent ? "the agent was not asked (--no-agent)"
                                  : "the agent is not reachable");
            goto out;
        }
        /* Agent-promoted (its relabelling failed), forced, or an
         * interrupted promotion (no L): relabel now. */
        if (hsm_rotate_promote(c->mod, c->p->key, c->pin_source, pj_time_now(),
                               destroy, retired, &err) != PJ_OK) {
            ret = cli_fail(CMD, &err);
            goto out;
        }
        printf("promoted '%s' to '%s' on token '%s'%s%s%s\n", c->next, c->label,
               c->st.token, retired[0] ? "; old key is '" : "", retired,
               retired[0] ? "'" : "");
        if (destroy && c->st.active) {
            printf("old key destroyed\n");
        }
    } else if (!c->st.active) {
        fprintf(stderr, "p11jwt rotate: token '%s' has neither '%s' nor '%s'\n",
                c->st.token, c->label, c->next);
        goto out;
    } else if (c->st.n_retired == 0) {
        fprintf(stderr,
                "p11jwt rotate: nothing to finish: token '%s' has no next "
                "key '%s' and no retired key (start one with 'p11jwt rotate "
                "start --profile %s')\n",
                c->st.token, c->next, c->p->name);
        goto out;
    } else {
        printf("'%s' on token '%s' is the active key (a restart uses it)\n",
               c->label, c->st.token);
    }
    if (destroy) {
        for (i = 0; i < c->st.n_retired; i++) {
            if (hsm_rotate_destroy(c->mod, c->p->key, c->pin_source,
                                   c->st.retired[i], &n, &err) != PJ_OK) {
                ret = cli_fail(CMD, &err);
                goto out;
            }
            total += n;
            printf("destroyed '%s' (%u objects)\n", c->st.retired[i], n);
        }
    } else {
        for (i = 0; i < c->st.n_retired; i++) {
            printf("retired key kept: '%s' (--destroy deletes it)\n",
                   c->st.retired[i]);
        }
    }
    (void)total;
    if (!c->no_agent && rot != NULL) {
        /* Let the agent re-read the token (it may be the one we changed). */
        json_decref(rot);
        rot = agent_rotation(c, true, why, sizeof(why));
        if (rot != NULL) {
            printf("agent: signs with '%s'\n",
                   jstr(rot, "active") ? jstr(rot, "active") : "-");
        }
    }
    ret = CLI_OK;
out:
    json_decref(rot);
    return ret;
}

int
cli_cmd_rotate(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_GLOBAL_LONGOPTS,
        {"profile", required_argument, NULL, OPT_PROFILE},
        {"bits", required_argument, NULL, OPT_BITS},
        {"subject", required_argument, NULL, OPT_SUBJECT},
        {"days", required_argument, NULL, OPT_DAYS},
        {"csr", required_argument, NULL, OPT_CSR},
        {"out", required_argument, NULL, OPT_OUT},
        {"name", required_argument, NULL, OPT_NAME},
        {"contact-email", required_argument, NULL, OPT_EMAIL},
        {"label", required_argument, NULL, OPT_LABEL},
        {"permission-set", required_argument, NULL, OPT_PERMSET},
        {"profile-name", required_argument, NULL, OPT_PROFILE_NAME},
        {"api-version", required_argument, NULL, OPT_API_VERSION},
        {"cert-encoding", required_argument, NULL, OPT_ENCODING},
        {"force", no_argument, NULL, OPT_FORCE},
        {"no-agent", no_argument, NULL, OPT_NO_AGENT},
        {"destroy", no_argument, NULL, OPT_DESTROY},
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    struct start_opts so = {0};
    struct rot_ctx c = {0};
    struct pj_err err = {0};
    const char *profile = NULL, *action;
    bool no_agent = false, destroy = false, json = false;
    long v;
    int opt, ret;

    so.enc = SF_ECA_CERT_PEM;
    if (argc >= 2 &&
        (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        help(stdout);
        return CLI_OK;
    }
    if (argc < 2 || argv[1][0] == '-') {
        return cli_usage(CMD, "name an action: start, status or finish");
    }
    action = argv[1];
    if (strcmp(action, "start") != 0 && strcmp(action, "status") != 0 &&
        strcmp(action, "finish") != 0) {
        return cli_usage(CMD,
                         "unknown action '%s': use start, status or "
                         "finish",
                         action);
    }
    optind = 1; /* argv[1] is the action: getopt starts after it */
    while ((opt = getopt_long(argc - 1, argv + 1, "c:h", longopts, NULL)) !=
           -1) {
        if (cli_global_opt(opt, optarg)) {
            continue;
        }
        switch (opt) {
        case 'h':
            help(stdout);
            return CLI_OK;
        case OPT_PROFILE:
            profile = optarg;
            break;
        case OPT_BITS:
            if (pj_parse_long(optarg, 2048, 4096, &v) != PJ_OK ||
                (v != 2048 && v != 3072 && v != 4096)) {
                return cli_usage(CMD, "--bits '%s': use 2048, 3072 or 4096",
                                 optarg);
            }
            so.bits = (unsigned)v;
            break;
        case OPT_SUBJECT:
            so.subject = optarg;
            break;
        case OPT_DAYS:
            if (pj_parse_long(optarg, 1, CERT_DAYS_MAX, &v) != PJ_OK) {
                return cli_usage(CMD, "--days '%s': use 1..%d", optarg,
                                 CERT_DAYS_MAX);
            }
            so.days = v;
            break;
        case OPT_CSR:
            so.csr = optarg;
            break;
        case OPT_OUT:
            so.out = optarg;
            break;
        case OPT_NAME:
            so.eca.name = optarg;
            break;
        case OPT_EMAIL:
            so.eca.contact_email = optarg;
            break;
        case OPT_LABEL:
            so.eca.label = optarg;
            break;
        case OPT_PERMSET:
            so.eca.permission_set = optarg;
            break;
        case OPT_PROFILE_NAME:
            so.eca.profile_name = optarg;
            break;
        case OPT_API_VERSION:
            so.eca.api_version = optarg;
            break;
        case OPT_ENCODING:
            if (!sf_eca_cert_encoding_parse(optarg, &so.enc)) {
                return cli_usage(CMD,
                                 "--cert-encoding '%s': use pem or "
                                 "base64-der",
                                 optarg);
            }
            break;
        case OPT_FORCE:
            so.force = true;
            break;
        case OPT_NO_AGENT:
            no_agent = true;
            break;
        case OPT_DESTROY:
            destroy = true;
            break;
        case OPT_JSON:
            json = true;
            break;
        default:
            return cli_bad_option(CMD);
        }
    }
    if (optind + 1 < argc) {
        return cli_usage(CMD, "unexpected argument '%s'", argv[optind + 1]);
    }
    if (strcmp(action, "start") != 0 &&
        (so.bits || so.subject || so.days || so.csr || so.out || so.eca.name ||
         so.eca.contact_email)) {
        return cli_usage(CMD, "key, certificate and metadata options are for "
                              "'rotate start'");
    }
    if (destroy && strcmp(action, "finish") != 0) {
        return cli_usage(CMD, "--destroy is for 'rotate finish'");
    }
    if (json && strcmp(action, "status") != 0) {
        return cli_usage(CMD, "--json is for 'rotate status'");
    }
    if (strcmp(action, "start") == 0) {
        if (so.csr != NULL && so.out != NULL) {
            return cli_usage(CMD, "--csr and --out do not go together: the "
                                  "metadata needs the signed certificate "
                                  "(write it with 'p11jwt eca' after the "
                                  "import)");
        }
        if (so.out != NULL) {
            if (so.eca.name == NULL || so.eca.contact_email == NULL) {
                return cli_usage(CMD, "--out needs --name APP and "
                                      "--contact-email E");
            }
            so.eca.cert_text = "-"; /* checked for real when built */
            if (sf_eca_opts_check(&so.eca, &err) != PJ_OK) {
                return cli_usage(CMD, "%s", err.msg);
            }
            so.eca.cert_text = NULL;
            if (sf_eca_out_check(so.out, so.force, &err) != PJ_OK) {
                return cli_fail(CMD, &err);
            }
        } else if (so.eca.name != NULL || so.eca.contact_email != NULL) {
            return cli_usage(CMD, "--name and --contact-email go with --out "
                                  "DIR");
        }
        if (so.subject != NULL &&
            cert_subject_check(so.subject, &err) != PJ_OK) {
            return cli_usage(CMD, "--subject: %s", err.msg);
        }
    }
    c.no_agent = no_agent;
    if (ctx_open(&c, profile, &err) != PJ_OK) {
        ret = cli_fail(CMD, &err);
        goto out;
    }
    if (strcmp(action, "start") == 0) {
        ret = cmd_start(&c, &so);
    } else if (strcmp(action, "status") == 0) {
        ret = cmd_status(&c, json);
    } else {
        ret = cmd_finish(&c, destroy, so.force);
    }
out:
    ctx_cleanup(&c);
    return ret;
}
