/* SPDX-License-Identifier: Apache-2.0 */
/*
 * p11jwt assertion: print a signed JWT Bearer assertion (for a tool that
 * does the exchange itself, or for diagnosis), from the agent or with
 * --direct. The work is shared with `token` (cli_token.c).
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "core/pj_config.h"

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: p11jwt assertion [--direct] [-c FILE] [--socket PATH] "
            "[--profile P]\n"
            "                        [--subject S] [--format raw|json] "
            "[--module PATH]\n"
            "                        [--pin-source SRC]\n\n"
            "Print a JWT Bearer assertion (RS256) signed on the profile's "
            "token key.\n"
            "It is a credential for its lifetime (assertion-lifetime, at "
            "most 300 s):\n"
            "do not log it.\n\n"
            "By default the agent signs it (--socket PATH, else "
            "$P11JWT_SOCKET, else\n"
            "the config's [agent] socket).\n\n"
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
    struct cli_fetch_opts o = {
        .cmd = "assertion", .format = CLI_FMT_RAW, .assertion_only = 1};
    int ret = cli_fetch_parse(argc, argv, &o, usage);

    return ret >= 0 ? ret : cli_fetch(&o);
}
