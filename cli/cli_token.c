/* SPDX-License-Identifier: Apache-2.0 */
/* Placeholder until the issue that builds `p11jwt token` lands. */
#include <stdio.h>

#include "cli/cli.h"

int
cli_cmd_token(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "p11jwt token: not available in this version\n");
    return CLI_FAIL;
}
