/* SPDX-License-Identifier: Apache-2.0 */
/* p11jwt-agent: placeholder until the agent issue lands. */
#include <stdio.h>
#include <string.h>

int
main(int argc, char **argv)
{
    if (argc > 1 &&
        (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: p11jwt-agent -c FILE [--foreground]\n");
        return 0;
    }
    fprintf(stderr, "p11jwt-agent: not available in this version\n");
    return 1;
}
