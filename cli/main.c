/* SPDX-License-Identifier: Apache-2.0 */
/* p11jwt: dispatch to one subcommand (cli/cli_<name>.c). */
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "cli/cli.h"
#include "core/pj_log.h"

struct cli_cmd {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct cli_cmd commands[] = {
    {"keygen", cli_cmd_keygen, "generate an RSA key pair on a PKCS#11 token"},
    {"sign", cli_cmd_sign, "sign data with RS256 on the token (diagnosis)"},
    {"cert", cli_cmd_cert, "self-signed, CSR, import and show certificates"},
    {"eca", cli_cmd_eca, "write Salesforce External Client App metadata"},
    {"rotate", cli_cmd_rotate, "rotate a profile's key and certificate"},
    {"token", cli_cmd_token, "print a Salesforce access token"},
    {"assertion", cli_cmd_assertion, "print a signed JWT Bearer assertion"},
    {"status", cli_cmd_status, "show the agent's view of every profile"},
    {"check", cli_cmd_check, "Nagios/Icinga certificate expiry check"},
    {"doctor", cli_cmd_doctor, "diagnose a profile's whole setup"},
};

static void
usage(FILE *f)
{
    size_t i;

    fprintf(f, "usage: p11jwt [-c FILE] [--socket PATH] [--module PATH] "
               "COMMAND [ARGS]\n\n"
               "Salesforce JWT Bearer tokens from a key that never leaves its "
               "PKCS#11 token.\n\ncommands:\n");
    for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    }
    fprintf(f, "\n'p11jwt COMMAND --help' describes a command.\n"
               "Exit status: 0 ok, 1 failure, 2 usage error.\n");
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_GLOBAL_LONGOPTS,
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    size_t i;

    pj_log_init("p11jwt", false, PJ_LOG_WARN);
    /* '+': stop at the command name; the command parses the rest. */
    while ((opt = getopt_long(argc, argv, "+c:hV", longopts, NULL)) != -1) {
        if (cli_global_opt(opt, optarg)) {
            continue;
        }
        switch (opt) {
        case 'h':
            usage(stdout);
            return CLI_OK;
        case 'V':
            printf("p11jwt %s\n", P11JWT_VERSION);
            return CLI_OK;
        default:
            usage(stderr);
            return CLI_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return CLI_USAGE;
    }
    for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[optind], commands[i].name) == 0) {
            int sub_argc = argc - optind;
            char **sub_argv = argv + optind;
            optind = 0; /* reset getopt for the command */
            return commands[i].run(sub_argc, sub_argv);
        }
    }
    if (strcmp(argv[optind], "help") == 0) {
        usage(stdout);
        return CLI_OK;
    }
    fprintf(stderr, "p11jwt: unknown command '%s'\n", argv[optind]);
    usage(stderr);
    return CLI_USAGE;
}
