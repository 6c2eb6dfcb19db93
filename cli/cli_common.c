/* SPDX-License-Identifier: Apache-2.0 */
#include "cli/cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/pj_config.h"
#include "pkcs11/hsm.h"

struct cli_global cli_global;

int
cli_global_opt(int opt, const char *arg)
{
    switch (opt) {
    case 'c':
        cli_global.config = arg;
        return 1;
    case CLI_OPT_SOCKET:
        cli_global.socket = arg;
        return 1;
    case CLI_OPT_MODULE:
        cli_global.module = arg;
        return 1;
    case CLI_OPT_PIN_SOURCE:
        cli_global.pin_source = arg;
        return 1;
    default:
        return 0;
    }
}

const char *
cli_module_path(const struct pj_config *cfg)
{
    const char *env = getenv("P11JWT_MODULE");

    if (cli_global.module == NULL && (env == NULL || env[0] == '\0') &&
        cfg != NULL && cfg->agent.module != NULL) {
        return cfg->agent.module;
    }
    return hsm_module_path_resolve(cli_global.module);
}

int
cli_fail(const char *cmd, const struct pj_err *err)
{
    fprintf(stderr, "p11jwt %s: %s\n", cmd,
            err->msg[0] != '\0' ? err->msg : pj_rc_str(err->rc));
    return CLI_FAIL;
}

int
cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "p11jwt %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'p11jwt %s --help'.\n", cmd);
    return CLI_USAGE;
}

int
cli_bad_option(const char *cmd)
{
    /* getopt_long already printed what was wrong. */
    fprintf(stderr, "Try 'p11jwt %s --help'.\n", cmd);
    return CLI_USAGE;
}
