/* SPDX-License-Identifier: Apache-2.0 */
/*
 * p11jwt assertion: print a signed JWT Bearer assertion (for a tool that
 * does the exchange itself, or for diagnosis). The work is cli_direct() in
 * cli_token.c.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "core/pj_config.h"

/* Shared with cli_token.c, which defines them. */

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: p11jwt assertion --direct [-c FILE] [--profile P] "
            "[--subject S]\n"
            "                        [--format raw|json] [--module PATH] "
            "[--pin-source SRC]\n\n"
            "Print a JWT Bearer assertion (RS256) signed on the profile's "
            "token key.\n"
            "It is a credential for its lifetime (assertion-lifetime, at "
            "most 300 s):\n"
            "do not log it.\n\n"
            "  --direct        sign in this process (no agent)\n"
            "  --profile P     the [profile P] section; may be left out when "
            "the\n"
            "                  config has exactly one profile\n"
            "  --subject S     JWT sub: the profile's subject (default) or "
            "one of its\n"
            "                  subjects\n"
            "  --format F      raw (default: the assertion alone) or json\n"
            "                  ({\"ok\":true,\"assertion\":..,"
            "\"expires_at\":..})\n"
            "  -c FILE         config file (default $P11JWT_CONFIG, else "
            "%s)\n\n"
            "Exit status: 0 ok, 1 failure, 2 usage error.\n",
            PJ_CONFIG_DEFAULT_PATH);
}

int
cli_cmd_assertion(int argc, char **argv)
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
    struct cli_direct_opts o = {
        .cmd = "assertion", .format = CLI_FMT_RAW, .assertion_only = 1};
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
            if (strcmp(optarg, "raw") == 0) {
                o.format = CLI_FMT_RAW;
            } else if (strcmp(optarg, "json") == 0) {
                o.format = CLI_FMT_JSON;
            } else {
                return cli_usage("assertion",
                                 "unknown format '%s' (raw or json)", optarg);
            }
            break;
        default:
            return cli_bad_option("assertion");
        }
    }
    if (optind < argc) {
        return cli_usage("assertion", "unexpected argument '%s'", argv[optind]);
    }
    if (!direct) {
        fprintf(stderr, "p11jwt assertion: the agent is not available in this "
                        "version; use --direct to sign in this process\n");
        return CLI_FAIL;
    }
    return cli_direct(&o);
}
