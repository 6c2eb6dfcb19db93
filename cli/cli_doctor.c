/* SPDX-License-Identifier: Apache-2.0 */
/* Placeholder until the issue that builds `p11jwt doctor` lands. */
#include <stdio.h>

#include "cli/cli.h"

int
cli_cmd_doctor(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "p11jwt doctor: not available in this version\n");
    return CLI_FAIL;
}
