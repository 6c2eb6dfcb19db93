/* SPDX-License-Identifier: Apache-2.0 */
/* p11jwt-agent: argument parsing; the work is in agent_server.c. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "agent/agent_server.h"
#include "core/pj_config.h"
#include "core/pj_log.h"
#include "core/pj_secret.h"
#include "core/pj_util.h"

#ifndef P11JWT_VERSION
#define P11JWT_VERSION "0.1.0"
#endif

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: p11jwt-agent [-c FILE] [--foreground] [--workers N] "
            "[--check-config]\n"
            "       p11jwt-agent --help | --version\n"
            "\n"
            "  -c, --config FILE  config file (default $P11JWT_CONFIG, then "
            "%s)\n"
            "  --foreground       accepted for compatibility: the agent "
            "always runs\n"
            "                     in the foreground (systemd, containers)\n"
            "  --workers N        signing threads, 1..%d (default %d)\n"
            "  --check-config     validate the config and exit\n"
            "\n"
            "Signals: SIGHUP reloads the config, SIGTERM/SIGINT stop after "
            "in-flight\nrequests. See docs/agent.md.\n",
            PJ_CONFIG_DEFAULT_PATH, AGENT_WORKERS_MAX, AGENT_WORKERS_DEFAULT);
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"foreground", no_argument, NULL, 'f'},
        {"workers", required_argument, NULL, 'w'},
        {"check-config", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    struct agent_serve_opts opts = {0};
    struct pj_config *cfg = NULL;
    struct pj_err err = {0};
    const char *config = NULL;
    bool check = false;
    long workers = AGENT_WORKERS_DEFAULT;
    int ch;

    /* Hygiene first: before anything opens a file or reads input. */
    if (agent_process_sanitize(&err) != PJ_OK) {
        fprintf(stderr, "p11jwt-agent: %s\n", err.msg);
        return 1;
    }
    pj_log_init("p11jwt-agent", false, PJ_LOG_NOTICE);
    if (!pj_secret_heap_init(AGENT_SECRET_HEAP)) {
        pj_log_info("no locked secure heap; secrets use their own pages");
    }
    while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config = optarg;
            break;
        case 'f':
            break;
        case 'w':
            if (pj_parse_long(optarg, 1, AGENT_WORKERS_MAX, &workers) !=
                PJ_OK) {
                fprintf(stderr,
                        "p11jwt-agent: --workers wants a number from 1 to "
                        "%d\n",
                        AGENT_WORKERS_MAX);
                return 2;
            }
            break;
        case 'k':
            check = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("p11jwt-agent %s\n", P11JWT_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "p11jwt-agent: unexpected argument '%s'\n",
                argv[optind]);
        usage(stderr);
        return 2;
    }
    config = pj_config_path_resolve(config);
    if (pj_config_load_file(config, &cfg, &err) != PJ_OK) {
        fprintf(stderr, "p11jwt-agent: %s\n", err.msg);
        return 1;
    }
    if (check) {
        printf("%s: ok (%zu profiles)\n", config, cfg->n_profiles);
        pj_config_free(cfg);
        return 0;
    }
    opts.config_path = config;
    opts.workers = (unsigned)workers;
    if (agent_serve(&opts, cfg, &err) != PJ_OK) {
        pj_log_err("%s", err.msg);
        return 1;
    }
    pj_log_notice("stopped");
    return 0;
}
