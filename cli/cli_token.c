/* SPDX-License-Identifier: Apache-2.0 */
/*
 * p11jwt token / p11jwt assertion. With --direct the command signs in this
 * process (config -> token key -> assertion -> token exchange), for cron
 * jobs and diagnosis; without it, the command will ask the agent, which this
 * version does not ship yet.
 *
 * cli_direct() is shared with cli_assertion.c.
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

int
cli_direct_format_parse(const char *s, enum cli_direct_format *fmtp)
{
    static const struct {
        const char *name;
        enum cli_direct_format fmt;
    } names[] = {{"json", CLI_FMT_JSON},
                 {"header", CLI_FMT_HEADER},
                 {"env", CLI_FMT_ENV},
                 {"raw", CLI_FMT_RAW}};
    size_t i;

    for (i = 0; i < PJ_ARRAY_SIZE(names); i++) {
        if (strcmp(s, names[i].name) == 0) {
            *fmtp = names[i].fmt;
            return 1;
        }
    }
    return 0;
}

static pj_rc
sign_on_token(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig,
              size_t *siglen, struct pj_err *err)
{
    return hsm_key_sign(ctx, msg, len, sig, siglen, err);
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
    if (cfg->agent.module != NULL) {
        return cfg->agent.module;
    }
    return hsm_module_path_resolve(NULL);
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

static int
print_json(json_t *obj)
{
    char *s;
    int ok;

    if (obj == NULL) {
        return 0;
    }
    s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (s == NULL) {
        return 0;
    }
    ok = printf("%s\n", s) > 0;
    /* The text may hold a token. */
    OPENSSL_cleanse(s, strlen(s));
    free(s);
    return ok;
}

static int
print_failure(const struct cli_direct_opts *o, const struct pj_err *err,
              const struct sf_result *res)
{
    (void)cli_fail(o->cmd, err);
    fprintf(stderr, "  class: %s\n", sf_class_name(res->fail.cls));
    if (res->fail.hint != NULL) {
        fprintf(stderr, "  hint: %s\n", res->fail.hint);
    }
    print_skew(o->cmd, res, res->fail.cls == SF_CLASS_CLOCK);
    if (o->format == CLI_FMT_JSON) {
        json_t *obj = json_pack("{s:b, s:s, s:s, s:s, s:s}", "ok", 0, "error",
                                "upstream", "message", err->msg, "hint",
                                res->fail.hint != NULL ? res->fail.hint : "",
                                "class", sf_class_name(res->fail.cls));
        if (obj != NULL && res->fail.error[0] != '\0') {
            (void)json_object_set_new(
                obj, "salesforce",
                json_pack("{s:s, s:s}", "error", res->fail.error,
                          "error_description", res->fail.error_description));
        }
        (void)print_json(obj);
    }
    return CLI_FAIL;
}

static int
print_token(const struct cli_direct_opts *o, const struct pj_profile *prof,
            const char *sub, const struct sf_result *res)
{
    const struct sf_token *t = &res->token;
    const char *tok = (const char *)t->access_token->data;
    int64_t issued =
        t->issued_at_ms > 0 ? t->issued_at_ms / 1000 : pj_time_now();
    int ok = 1;

    switch (o->format) {
    case CLI_FMT_JSON:
        ok = print_json(json_pack(
            "{s:b, s:s, s:s, s:s, s:I, s:I, s:s, s:s}", "ok", 1, "access_token",
            tok, "instance_url", t->instance_url, "token_type",
            t->token_type != NULL ? t->token_type : "Bearer", "issued_at",
            (json_int_t)issued, "expires_at",
            (json_int_t)(issued + prof->session_lifetime), "profile",
            prof->name, "subject", sub));
        break;
    case CLI_FMT_HEADER:
        ok = printf("Authorization: Bearer %s\n", tok) > 0;
        break;
    case CLI_FMT_ENV:
        ok = printf("SF_ACCESS_TOKEN=%s\nSF_INSTANCE_URL=%s\n", tok,
                    t->instance_url) > 0;
        break;
    case CLI_FMT_RAW:
        ok = printf("%s\n", tok) > 0;
        break;
    }
    if (!ok || fflush(stdout) != 0) {
        fprintf(stderr, "p11jwt %s: cannot write the token to stdout\n",
                o->cmd);
        return CLI_FAIL;
    }
    return CLI_OK;
}

int
cli_direct(const struct cli_direct_opts *o)
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

    sf_result_init(&res);
    if (pj_config_load_file(pj_config_path_resolve(cli_global.config), &cfg,
                            &err) != PJ_OK ||
        pj_config_profile_select(cfg, o->profile, &prof, &err) != PJ_OK ||
        sf_claims_from_profile(prof, o->subject, &claims, &err) != PJ_OK) {
        ret = cli_fail(o->cmd, &err);
        goto out;
    }
    if (hsm_module_load(module_path(cfg), &mod, &err) != PJ_OK) {
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
        if (o->format == CLI_FMT_JSON) {
            ret = print_json(json_pack("{s:b, s:s, s:I}", "ok", 1, "assertion",
                                       (const char *)assertion->data,
                                       "expires_at", (json_int_t)exp))
                      ? CLI_OK
                      : CLI_FAIL;
        } else {
            ret = printf("%s\n", (const char *)assertion->data) > 0 &&
                          fflush(stdout) == 0
                      ? CLI_OK
                      : CLI_FAIL;
        }
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
        ret = print_failure(o, &err, &res);
        goto out;
    }
    print_skew(o->cmd, &res, 0);
    ret = print_token(o, prof, claims.sub, &res);
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

static void
usage(FILE *f)
{
    fprintf(
        f,
        "usage: p11jwt token --direct [-c FILE] [--profile P] [--subject S]\n"
        "                    [--format json|header|env|raw] [--module PATH]\n"
        "                    [--pin-source SRC]\n\n"
        "Print a Salesforce access token for a profile (OAuth 2.0 JWT "
        "Bearer flow).\n\n"
        "  --direct        sign the assertion in this process with the "
        "profile's\n"
        "                  token key and exchange it at login-url (no "
        "agent)\n"
        "  --profile P     the [profile P] section; may be left out when "
        "the\n"
        "                  config has exactly one profile\n"
        "  --subject S     JWT sub: the profile's subject (default) or one "
        "of its\n"
        "                  subjects\n"
        "  --format F      json (default: the agent's answer shape), "
        "header\n"
        "                  (Authorization: Bearer ...), env "
        "(SF_ACCESS_TOKEN=...,\n"
        "                  SF_INSTANCE_URL=...), raw (the token alone)\n"
        "  -c FILE         config file (default $P11JWT_CONFIG, else "
        "%s)\n\n"
        "Failures print Salesforce's error, its class (permanent, "
        "audience-or-host,\n"
        "clock, transient, unknown) and a hint. Exit status: 0 ok, 1 "
        "failure,\n"
        "2 usage error.\n",
        PJ_CONFIG_DEFAULT_PATH);
}

int
cli_cmd_token(int argc, char **argv)
{
    enum {
        OPT_DIRECT = CLI_OPT_FIRST_LOCAL,
        OPT_PROFILE,
        OPT_SUBJECT,
        OPT_FORMAT,
    };
    static const struct option longopts[] = {
        CLI_GLOBAL_LONGOPTS,
        {"direct", no_argument, NULL, OPT_DIRECT},
        {"profile", required_argument, NULL, OPT_PROFILE},
        {"subject", required_argument, NULL, OPT_SUBJECT},
        {"format", required_argument, NULL, OPT_FORMAT},
        {NULL, 0, NULL, 0},
    };
    struct cli_direct_opts o = {.cmd = "token", .format = CLI_FMT_JSON};
    int opt, direct = 0;

    while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        if (cli_global_opt(opt, optarg)) {
            continue;
        }
        switch (opt) {
        case 'h':
            usage(stdout);
            return CLI_OK;
        case OPT_DIRECT:
            direct = 1;
            break;
        case OPT_PROFILE:
            o.profile = optarg;
            break;
        case OPT_SUBJECT:
            o.subject = optarg;
            break;
        case OPT_FORMAT:
            if (!cli_direct_format_parse(optarg, &o.format)) {
                return cli_usage("token",
                                 "unknown format '%s' (json, header, env or "
                                 "raw)",
                                 optarg);
            }
            break;
        default:
            return cli_bad_option("token");
        }
    }
    if (optind < argc) {
        return cli_usage("token", "unexpected argument '%s'", argv[optind]);
    }
    if (!direct) {
        fprintf(stderr,
                "p11jwt token: the agent is not available in this version; "
                "use --direct to sign in this process\n");
        return CLI_FAIL;
    }
    return cli_direct(&o);
}
