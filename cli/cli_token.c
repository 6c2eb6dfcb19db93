/* SPDX-License-Identifier: Apache-2.0 */
/*
 * p11jwt token, and what it shares with p11jwt assertion: option parsing,
 * the request to the agent, and printing an answer in the chosen format.
 * Without --direct the agent is asked (--socket, $P11JWT_SOCKET, the
 * config's socket); with --direct, cli_direct.c signs in this process. Both
 * produce the agent's answer shape (DESIGN.md 3.2), so every format means
 * the same thing either way.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "agent/client.h"
#include "cli/cli.h"
#include "core/pj_config.h"
#include "core/pj_util.h"
#include "salesforce/sf.h"

static int
format_parse(const struct cli_fetch_opts *o, const char *s,
             enum cli_format *fmtp)
{
    static const struct {
        const char *name;
        enum cli_format fmt;
        int for_assertion;
    } names[] = {{"json", CLI_FMT_JSON, 1},
                 {"header", CLI_FMT_HEADER, 0},
                 {"env", CLI_FMT_ENV, 0},
                 {"raw", CLI_FMT_RAW, 1}};
    size_t i;

    for (i = 0; i < PJ_ARRAY_SIZE(names); i++) {
        if (strcmp(s, names[i].name) == 0 &&
            (names[i].for_assertion || !o->assertion_only)) {
            *fmtp = names[i].fmt;
            return 1;
        }
    }
    return 0;
}

int
cli_fetch_parse(int argc, char **argv, struct cli_fetch_opts *o,
                void (*usage)(FILE *))
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
    int opt;

    while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        if (cli_global_opt(opt, optarg)) {
            continue;
        }
        switch (opt) {
        case 'h':
            usage(stdout);
            return CLI_OK;
        case OPT_DIRECT:
            o->direct = 1;
            break;
        case OPT_PROFILE:
            o->profile = optarg;
            break;
        case OPT_SUBJECT:
            o->subject = optarg;
            break;
        case OPT_FORMAT:
            if (!format_parse(o, optarg, &o->format)) {
                return cli_usage(o->cmd, "unknown format '%s' (%s)", optarg,
                                 o->assertion_only
                                     ? "raw or json"
                                     : "json, header, env or raw");
            }
            break;
        default:
            return cli_bad_option(o->cmd);
        }
    }
    if (optind < argc) {
        return cli_usage(o->cmd, "unexpected argument '%s'", argv[optind]);
    }
    return -1;
}

/* Print a JSON answer on one line; the text may hold a token: wiped. */
static int
print_json(const json_t *ans)
{
    char *s = json_dumps(ans, JSON_COMPACT);
    int ok;

    if (s == NULL) {
        return 0;
    }
    ok = printf("%s\n", s) > 0;
    OPENSSL_cleanse(s, strlen(s));
    free(s);
    return ok;
}

/* A string field an ok answer must have. */
static const char *
field(const json_t *ans, const char *name)
{
    const char *v = json_string_value(json_object_get(ans, name));

    return v != NULL && v[0] != '\0' ? v : NULL;
}

static int
print_answer(const struct cli_fetch_opts *o, const json_t *ans)
{
    const char *secret =
        field(ans, o->assertion_only ? "assertion" : "access_token");
    const char *url = field(ans, "instance_url");
    int ok;

    if (secret == NULL || (!o->assertion_only && url == NULL)) {
        fprintf(stderr, "p11jwt %s: the answer has no %s\n", o->cmd,
                o->assertion_only ? "assertion" : "access_token/instance_url");
        return CLI_FAIL;
    }
    switch (o->format) {
    case CLI_FMT_JSON:
        ok = print_json(ans);
        break;
    case CLI_FMT_HEADER:
        ok = printf("Authorization: Bearer %s\n", secret) > 0;
        break;
    case CLI_FMT_ENV:
        /* Lines `sf org login access-token` and shells can use. */
        ok =
            printf("SF_ACCESS_TOKEN=%s\nSF_INSTANCE_URL=%s\n", secret, url) > 0;
        break;
    case CLI_FMT_RAW:
    default:
        ok = printf("%s\n", secret) > 0;
        break;
    }
    if (!ok || fflush(stdout) != 0) {
        fprintf(stderr, "p11jwt %s: cannot write to stdout\n", o->cmd);
        return CLI_FAIL;
    }
    return CLI_OK;
}

/* Ask the agent; on CLI_OK *answerp is its answer, ok or not. */
static int
agent_answer(const struct cli_fetch_opts *o, json_t **answerp)
{
    struct pj_err err = {0};
    char *path = NULL;
    json_t *req = NULL;
    int ret = CLI_FAIL;

    *answerp = NULL;
    if (agent_client_socket_path(cli_global.socket, cli_global.config, &path,
                                 &err) != PJ_OK) {
        ret = cli_fail(o->cmd, &err);
        goto out;
    }
    req = json_pack("{s:s, s:s*, s:s*}", "op",
                    o->assertion_only ? "assertion" : "token", "profile",
                    o->profile, "subject", o->subject);
    if (req == NULL) {
        fprintf(stderr, "p11jwt %s: out of memory\n", o->cmd);
        goto out;
    }
    if (agent_client_request(path, req, 0, answerp, &err) != PJ_OK) {
        ret = cli_fail(o->cmd, &err);
        goto out;
    }
    ret = CLI_OK;
out:
    json_decref(req);
    free(path);
    return ret;
}

int
cli_fetch(const struct cli_fetch_opts *o)
{
    struct pj_err err = {0};
    json_t *ans = NULL;
    int ret;

    /* Before any JSON exists: jansson then wipes what it frees. */
    if (sf_global_init(&err) != PJ_OK) {
        return cli_fail(o->cmd, &err);
    }
    ret = o->direct ? cli_direct_answer(o, &ans) : agent_answer(o, &ans);
    if (ret != CLI_OK) {
        goto out;
    }
    if (agent_client_answer_check(ans, &err) != PJ_OK) {
        /* --direct already explained the failure on stderr. */
        if (!o->direct) {
            (void)cli_fail(o->cmd, &err);
        }
        if (o->format == CLI_FMT_JSON) {
            (void)print_json(ans);
        }
        ret = CLI_FAIL;
        goto out;
    }
    ret = print_answer(o, ans);
out:
    json_decref(ans);
    sf_global_cleanup();
    return ret;
}

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: p11jwt token [--direct] [-c FILE] [--socket PATH] "
            "[--profile P]\n"
            "                    [--subject S] [--format json|header|env|raw]\n"
            "                    [--module PATH] [--pin-source SRC]\n\n"
            "Print a Salesforce access token for a profile (OAuth 2.0 JWT "
            "Bearer flow).\n\n"
            "By default the agent is asked (its cached token, or one "
            "exchange shared\n"
            "with every other caller): --socket PATH, else $P11JWT_SOCKET, "
            "else the\n"
            "config's [agent] socket, else %s.\n\n"
            "  --direct        no agent: sign the assertion in this process "
            "with the\n"
            "                  profile's token key and exchange it at "
            "login-url\n"
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
            PJ_CONFIG_DEFAULT_SOCKET, PJ_CONFIG_DEFAULT_PATH);
}

int
cli_cmd_token(int argc, char **argv)
{
    struct cli_fetch_opts o = {.cmd = "token", .format = CLI_FMT_JSON};
    int ret = cli_fetch_parse(argc, argv, &o, usage);

    return ret >= 0 ? ret : cli_fetch(&o);
}
