/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The p11jwt command: one file per subcommand (cli_<name>.c), each with a
 * `--help`. Exit codes: 0 ok, 1 failure, 2 usage (DESIGN.md 3.3); `check`
 * uses the Nagios codes instead.
 */
#ifndef CLI_H
#define CLI_H

#include <getopt.h>
#include <stdio.h>

#include <jansson.h>

#include "core/pj_err.h"

#define CLI_OK 0
#define CLI_FAIL 1
#define CLI_USAGE 2

/* Options every command accepts, before or after the command name. */
struct cli_global {
    const char *config;     /* -c FILE, else $P11JWT_CONFIG */
    const char *socket;     /* --socket PATH, else $P11JWT_SOCKET */
    const char *module;     /* --module PATH, else $P11JWT_MODULE */
    const char *pin_source; /* --pin-source SRC */
};
extern struct cli_global cli_global;

enum {
    CLI_OPT_SOCKET = 0x1000,
    CLI_OPT_MODULE,
    CLI_OPT_PIN_SOURCE,
    CLI_OPT_FIRST_LOCAL, /* commands number their own long options from here */
};

/* Spliced into each command's struct option table. */
#define CLI_GLOBAL_LONGOPTS                                                    \
    {"config", required_argument, NULL, 'c'},                                  \
        {"socket", required_argument, NULL, CLI_OPT_SOCKET},                   \
        {"module", required_argument, NULL, CLI_OPT_MODULE},                   \
        {"pin-source", required_argument, NULL, CLI_OPT_PIN_SOURCE},           \
    {                                                                          \
        "help", no_argument, NULL, 'h'                                         \
    }

struct pj_config;
/*
 * The PKCS#11 module to load: --module, then $P11JWT_MODULE, then the
 * config's [agent] module (cfg may be NULL), then the default. Borrowed.
 */
const char *cli_module_path(const struct pj_config *cfg);

/* Handle a global option from getopt_long; true if it was one. */
int cli_global_opt(int opt, const char *arg);

/* Print "p11jwt CMD: <err->msg>" to stderr; returns CLI_FAIL. */
int cli_fail(const char *cmd, const struct pj_err *err);
/* Print a usage error and a pointer to --help; returns CLI_USAGE. */
int cli_usage(const char *cmd, const char *fmt, ...) PJ_PRINTF(2, 3);
/* For a getopt_long '?' or ':' result: returns CLI_USAGE. */
int cli_bad_option(const char *cmd);

/*
 * token and assertion: asked of the agent (cli_token.c), or signed in this
 * process with --direct (cli_direct.c). Both produce the agent's answer
 * shape (DESIGN.md 3.2), printed by one function in the chosen format.
 */
enum cli_format {
    CLI_FMT_JSON,
    CLI_FMT_HEADER,
    CLI_FMT_ENV,
    CLI_FMT_RAW,
};

struct cli_fetch_opts {
    const char *cmd; /* "token" or "assertion" */
    const char *profile;
    const char *subject;
    enum cli_format format;
    int assertion_only;
    int direct;
};

/* Parse the options token and assertion share; returns -1 to go on. */
int cli_fetch_parse(int argc, char **argv, struct cli_fetch_opts *o,
                    void (*usage)(FILE *));

/* Fetch and print (cli_token.c). */
int cli_fetch(const struct cli_fetch_opts *o);

/*
 * The --direct path: config -> token key -> assertion -> exchange. On
 * CLI_OK *answerp is the answer (ok, or a Salesforce error in the agent's
 * error shape, already explained on stderr); on CLI_FAIL the failure was
 * printed and *answerp is NULL.
 */
int cli_direct_answer(const struct cli_fetch_opts *o, json_t **answerp);

int cli_cmd_keygen(int argc, char **argv);
int cli_cmd_sign(int argc, char **argv);
int cli_cmd_cert(int argc, char **argv);
int cli_cmd_eca(int argc, char **argv);
int cli_cmd_rotate(int argc, char **argv);
int cli_cmd_token(int argc, char **argv);
int cli_cmd_assertion(int argc, char **argv);
int cli_cmd_status(int argc, char **argv);
int cli_cmd_check(int argc, char **argv);
int cli_cmd_doctor(int argc, char **argv);

#endif
