/* SPDX-License-Identifier: Apache-2.0 */
/* Placeholder until the issue that builds `p11jwt check` lands. */
#include <stdio.h>

#include "cli/cli.h"

int
cli_cmd_check(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "p11jwt check: not available in this version\n");
    return CLI_FAIL;
}
