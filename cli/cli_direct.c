/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The --direct path of `p11jwt token` and `p11jwt assertion`: sign in this
 * process (config -> token key -> assertion -> token exchange), for cron
 * jobs and diagnosis. It answers in the agent's shape so that one printer
 * (cli_token.c) serves both paths.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "cli/cli.h"
#include "core/pj_config.h"
#include "core/pj_log.h"
#include "core/pj_secret.h"
#include "core/pj_util.h"
#include "pkcs11/hsm.h"
#include "salesforce/sf.h"

static pj_rc
sign_on_token(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig,
              size_t *siglen, struct pj_err *err)
{
    return hsm_key_sign(ctx, msg, len, sig, siglen, err);
}

static void
print_skew(const char *cmd, const struct sf_result *res, int always)
{
    char buf[384];

    if (!res->have_date || (!always && !sf_result_skew_bad(res))) {
        return;
    }
    sf_skew_describe(res, buf, sizeof(buf));
    fprintf(stderr, "p11jwt %s: %s%s\n", cmd,
            sf_result_skew_bad(res) ? "warning: " : "", buf);
}

/* A Salesforce failure: explained on stderr, answered in the agent's shape. */
static json_t *
failure_answer(const struct cli_fetch_opts *o, const struct pj_err *err,
               const struct sf_result *res)
{
    json_t *ans;

    (void)cli_fail(o->cmd, err);
    fprintf(stderr, "  class: %s\n", sf_class_name(res->fail.cls));
    if (res->fail.hint != NULL) {
        fprintf(stderr, "  hint: %s\n", res->fail.hint);
    }
    print_skew(o->cmd, res, res->fail.cls == SF_CLASS_CLOCK);
    ans = json_pack("{s:b, s:s, s:s, s:s, s:s}", "ok", 0, "error",
                    sf_class_is_retryable(res->fail.cls) ? "token_unavailable"
                                                         : "upstream",
                    "message", err->msg, "hint",
                    res->fail.hint != NULL ? res->fail.hint : "", "class",
                    sf_class_name(res->fail.cls));
    if (ans != NULL && res->fail.error[0] != '\0') {
        (void)json_object_set_new(
            ans, "salesforce",
            json_pack("{s:s, s:s}", "error", res->fail.error,
                      "error_description", res->fail.error_description));
    }
    return ans;
}

static json_t *
token_answer(const struct pj_profile *prof, const char *sub,
             const struct sf_result *res)
{
    const struct sf_token *t = &res->token;
    int64_t issued =
        t->issued_at_ms > 0 ? t->issued_at_ms / 1000 : pj_time_now();

    return json_pack("{s:b, s:s, s:s, s:s, s:I, s:I, s:s, s:s}", "ok", 1,
                     "access_token", (const char *)t->access_token->data,
                     "instance_url", t->instance_url, "token_type",
                     t->token_type != NULL ? t->token_type : "Bearer",
                     "issued_at", (json_int_t)issued, "expires_at",
                     (json_int_t)(issued + prof->session_lifetime), "profile",
                     prof->name, "subject", sub);
}

int
cli_direct_answer(const struct cli_fetch_opts *o, json_t **answerp)
{
    struct pj_err err = {0};
    struct pj_config *cfg = NULL;
    const struct pj_profile *prof = NULL;
    struct hsm_module *mod = NULL;
    struct hsm_key *key = NULL;
    struct hsm_key_opts kopts = {0};
    struct sf_claims claims;
    struct pj_secret *assertion = NULL;
    struct sf_request *req = NULL;
    struct sf_result res;
    int64_t exp = 0;
    char *jti = NULL;
    int curl_up = 0, ret = CLI_FAIL;

    *answerp = NULL;
    sf_result_init(&res);
    if (pj_config_load_file(pj_config_path_resolve(cli_global.config), &cfg,
                            &err) != PJ_OK ||
        pj_config_profile_select(cfg, o->profile, &prof, &err) != PJ_OK ||
        sf_claims_from_profile(prof, o->subject, &claims, &err) != PJ_OK) {
        ret = cli_fail(o->cmd, &err);
        goto out;
    }
    if (hsm_module_load(cli_module_path(cfg), &mod, &err) != PJ_OK) {
        ret = cli_fail(o->cmd, &err);
        goto out;
    }
    kopts.uri = prof->key;
    kopts.pin_source = cli_global.pin_source != NULL ? cli_global.pin_source
                                                     : prof->pin_source;
    kopts.sessions = 1;
    if (hsm_key_open(mod, &kopts, &key, &err) != PJ_OK ||
        sf_assertion_build(&claims, sign_on_token, key, &assertion, &exp, &jti,
                           &err) != PJ_OK) {
        ret = cli_fail(o->cmd, &err);
        goto out;
    }
    pj_log_info("profile %s: assertion jti %s for sub %s, exp %lld", prof->name,
                jti, claims.sub, (long long)exp);
    /* The key is no longer needed: log out before the network wait. */
    hsm_key_free(key);
    key = NULL;

    if (o->assertion_only) {
        *answerp = json_pack("{s:b, s:s, s:I, s:s, s:s, s:s}", "ok", 1,
                             "assertion", (const char *)assertion->data,
                             "expires_at", (json_int_t)exp, "jti", jti,
                             "profile", prof->name, "subject", claims.sub);
        ret = *answerp != NULL ? CLI_OK : CLI_FAIL;
        goto out;
    }

    if (sf_global_init(&err) != PJ_OK) {
        ret = cli_fail(o->cmd, &err);
        goto out;
    }
    curl_up = 1;
    if (sf_request_build(prof, assertion, &req, &err) != PJ_OK) {
        ret = cli_fail(o->cmd, &err);
        goto out;
    }
    if (sf_exchange(req, &res, &err) != PJ_OK) {
        *answerp = failure_answer(o, &err, &res);
    } else {
        print_skew(o->cmd, &res, 0);
        *answerp = token_answer(prof, claims.sub, &res);
    }
    ret = *answerp != NULL ? CLI_OK : CLI_FAIL;
out:
    sf_result_cleanup(&res);
    sf_request_free(req);
    pj_secret_free(assertion);
    free(jti);
    hsm_key_free(key);
    hsm_module_free(mod);
    pj_config_free(cfg);
    if (curl_up) {
        sf_global_cleanup();
    }
    return ret;
}
