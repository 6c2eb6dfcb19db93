/* SPDX-License-Identifier: Apache-2.0 */
/*
 * p11jwt check: a Nagios/Icinga plugin for the profiles' certificates. It
 * reads the certificates and the token itself, so it works when the agent
 * is down, prints one status line with perfdata on stdout, and exits with
 * the plugin codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (also for usage
 * and configuration errors, as the plugin guidelines ask).
 *
 * Per certificate: expired, critical, not yet valid and drift (the
 * certificate is not the key's) are CRITICAL; warning is WARNING; a
 * certificate that cannot be read, or a key that cannot be compared, is
 * UNKNOWN. Several profiles: the worst wins, ranked OK < WARNING < UNKNOWN
 * < CRITICAL (an unknown may hide a critical, a warning is known to be
 * less).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent_monitor.h"
#include "certs/cert.h"
#include "cli/cli.h"
#include "core/pj_config.h"
#include "core/pj_util.h"
#include "pkcs11/hsm.h"

#define NAGIOS_OK 0
#define NAGIOS_WARNING 1
#define NAGIOS_CRITICAL 2
#define NAGIOS_UNKNOWN 3

enum {
    OPT_PROFILE = CLI_OPT_FIRST_LOCAL,
    OPT_WARN,
    OPT_CRIT,
    OPT_CERT,
    OPT_NO_KEY,
};

struct item {
    char name[64]; /* profile, or "" for a lone --cert */
    struct agent_cert_check c;
    int code; /* NAGIOS_* */
};

static const char *const code_word[] = {"OK", "WARNING", "CRITICAL", "UNKNOWN"};

/* Worse first: CRITICAL, UNKNOWN, WARNING, OK. */
static int
rank(int code)
{
    static const int r[] = {0, 1, 3, 2};

    return r[code];
}

static void
help(FILE *f)
{
    fprintf(
        f,
        "usage: p11jwt check [-c FILE] [--profile P] [--warn-days N] "
        "[--critical-days N]\n"
        "                    [--cert URI|FILE] [--no-key-check]\n"
        "\n"
        "A Nagios/Icinga plugin: checks the certificate of every profile "
        "(or of\n"
        "--profile P) by reading it and the token directly, so it works "
        "when the\n"
        "agent is down. Prints one status line with perfdata:\n"
        "  P11JWT OK - profile prod: certificate CN=.. expires 2027-01-01 "
        "(120 days) | days_left=120;30;7\n"
        "\n"
        "  --profile P        check only this profile\n"
        "  --warn-days N      WARNING under N days left (default: the "
        "profile's, %d)\n"
        "  --critical-days N  CRITICAL under N days left (default: the "
        "profile's, %d)\n"
        "  --cert URI|FILE    check this certificate instead of the "
        "profile's; without\n"
        "                     --profile or -c, no configuration is read and "
        "no key compared\n"
        "  --no-key-check     do not open the key to compare it with the "
        "certificate\n"
        "                     (no PIN needed; drift is then not detected)\n"
        "\n"
        "CRITICAL: expired, under critical-days, not yet valid, or the "
        "certificate is\n"
        "not the key's (drift). WARNING: under warn-days. UNKNOWN: the "
        "certificate or\n"
        "the key cannot be read, bad configuration, usage error.\n"
        "Comparing with the key logs in with the profile's pin-source (or "
        "--pin-source).\n"
        "global: -c FILE, --module PATH, --pin-source SRC\n"
        "Exit status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.\n",
        PJ_WARN_DAYS_DEFAULT, PJ_CRITICAL_DAYS_DEFAULT);
}

/* Nagios reads stdout's first line: every failure prints one too. */
static int
unknown(const char *what, const char *msg)
{
    printf("P11JWT UNKNOWN - %s: %s\n", what, msg);
    return NAGIOS_UNKNOWN;
}

static int
usage_error(const char *msg)
{
    unknown("usage", msg);
    fprintf(stderr, "Try 'p11jwt check --help'.\n");
    return NAGIOS_UNKNOWN;
}

static void
check_profile(const struct pj_config *cfg, const struct pj_profile *p,
              const char *cert_opt, long warn, long crit, bool no_key,
              int64_t now, struct item *it)
{
    struct hsm_module *mod = NULL;
    struct hsm_key *key = NULL;
    struct pj_err err = {0};
    struct agent_monitor_src src = {0};
    char *beside = NULL;

    src.cert = cert_opt != NULL ? cert_opt : p->cert;
    src.module = cli_module_path(cfg);
    src.warn_days = warn >= 0 ? warn : p->warn_days;
    src.critical_days = crit >= 0 ? crit : p->critical_days;
    if (no_key) {
        /* Certificates are public: the one beside the key needs no PIN. */
        if (src.cert == NULL &&
            cert_uri_for_key(p->key, &beside, &err) == PJ_OK) {
            src.cert = beside;
        }
    } else {
        struct hsm_key_opts kopts = {
            .uri = p->key,
            .pin_source = cli_global.pin_source != NULL ? cli_global.pin_source
                                                        : p->pin_source,
            .sessions = 1,
        };

        if (hsm_module_load(src.module, &mod, &err) != PJ_OK ||
            hsm_key_open(mod, &kopts, &key, &err) != PJ_OK) {
            src.key_error = err.msg;
        }
        src.key = key;
    }
    agent_monitor_check(&src, now, &it->c);
    free(beside);
    hsm_key_free(key);
    hsm_module_free(mod);
}

static int
item_code(const struct item *it, bool no_key)
{
    const struct agent_cert_check *c = &it->c;
    bool key_unknown = !no_key && c->key_error[0] != '\0';

    if (!c->readable) {
        return NAGIOS_UNKNOWN;
    }
    switch (c->state) {
    case CERT_STATE_OK:
        return key_unknown ? NAGIOS_UNKNOWN : NAGIOS_OK;
    case CERT_STATE_WARNING:
        return key_unknown ? NAGIOS_UNKNOWN : NAGIOS_WARNING;
    default:
        return NAGIOS_CRITICAL;
    }
}

/* Status text must not break the plugin output: no '|', no newline. */
static void
put_clean(FILE *f, const char *s)
{
    for (; *s != '\0'; s++) {
        fputc(*s == '|' ? '/' : (*s == '\n' || *s == '\r') ? ' ' : *s, f);
    }
}

static void
describe(FILE *f, const struct item *it, bool no_key)
{
    const struct agent_cert_check *c = &it->c;
    char na[21], nb[21];

    if (it->name[0] != '\0') {
        fprintf(f, "profile %s: ", it->name);
    }
    if (!c->readable) {
        fputs("cannot read the certificate: ", f);
        put_clean(f, c->error);
        return;
    }
    cert_time_iso(c->not_after, na);
    cert_time_iso(c->not_before, nb);
    na[10] = '\0'; /* the date is enough on one line */
    fputs("certificate ", f);
    put_clean(f, c->subject);
    switch (c->state) {
    case CERT_STATE_MISMATCH:
        fprintf(f,
                " does NOT MATCH the key on the token (drift: certificate "
                "key SHA-256 %.11s.., token key %.11s..)",
                c->cert_key_fp, c->token_key_fp);
        break;
    case CERT_STATE_NOT_YET_VALID:
        fprintf(f, " is NOT YET VALID (valid from %s)", nb);
        break;
    case CERT_STATE_EXPIRED:
        fprintf(f, " EXPIRED %s (%lld days ago)", na, (long long)-c->days_left);
        break;
    default:
        fprintf(f, " expires %s (%lld days)", na, (long long)c->days_left);
        break;
    }
    if (!no_key && c->key_error[0] != '\0') {
        fputs("; key not compared: ", f);
        put_clean(f, c->key_error);
    }
}

static int
cmp_items(const void *a, const void *b)
{
    const struct item *x = a, *y = b;

    return rank(y->code) - rank(x->code);
}

static int
report(struct item *items, size_t n, bool no_key)
{
    size_t i;
    int worst = NAGIOS_OK;

    for (i = 0; i < n; i++) {
        items[i].code = item_code(&items[i], no_key);
        if (rank(items[i].code) > rank(worst)) {
            worst = items[i].code;
        }
    }
    /* Perfdata keeps config order; the text puts the worst first. */
    printf("P11JWT %s - ", code_word[worst]);
    {
        struct item *sorted = malloc(n * sizeof(*sorted));

        if (sorted == NULL) {
            printf("out of memory\n");
            return NAGIOS_UNKNOWN;
        }
        memcpy(sorted, items, n * sizeof(*sorted));
        /* Insertion sort: stable, and n is small. */
        for (i = 1; i < n; i++) {
            struct item t = sorted[i];
            size_t j = i;

            while (j > 0 && cmp_items(&sorted[j - 1], &t) > 0) {
                sorted[j] = sorted[j - 1];
                j--;
            }
            sorted[j] = t;
        }
        for (i = 0; i < n; i++) {
            if (i > 0) {
                fputs("; ", stdout);
            }
            describe(stdout, &sorted[i], no_key);
        }
        free(sorted);
    }
    fputs(" |", stdout);
    for (i = 0; i < n; i++) {
        const struct agent_cert_check *c = &items[i].c;
        char value[32];

        if (c->readable) {
            snprintf(value, sizeof(value), "%lld", (long long)c->days_left);
        } else {
            pj_strlcpy(value, "U", sizeof(value));
        }
        /* Profile names are [A-Za-z0-9._-]: no quoting needed. */
        printf(" %s%sdays_left=%s;%ld;%ld", n > 1 ? items[i].name : "",
               n > 1 ? "_" : "", value, c->warn_days, c->critical_days);
    }
    fputs("\n", stdout);
    return worst;
}

static int
parse_days(const char *opt, const char *arg, long *outp)
{
    char msg[160];

    if (pj_parse_long(arg, 0, PJ_DAYS_MAX, outp) != PJ_OK) {
        snprintf(msg, sizeof(msg),
                 "%s '%s' is not a whole number of days "
                 "from 0 to %d",
                 opt, arg, PJ_DAYS_MAX);
        usage_error(msg);
        return -1;
    }
    return 0;
}

int
cli_cmd_check(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_GLOBAL_LONGOPTS,
        {"profile", required_argument, NULL, OPT_PROFILE},
        {"warn-days", required_argument, NULL, OPT_WARN},
        {"critical-days", required_argument, NULL, OPT_CRIT},
        {"cert", required_argument, NULL, OPT_CERT},
        {"no-key-check", no_argument, NULL, OPT_NO_KEY},
        {NULL, 0, NULL, 0},
    };
    const char *profile = NULL, *cert = NULL;
    long warn = -1, crit = -1;
    bool no_key = false;
    struct pj_config *cfg = NULL;
    struct pj_err err = {0};
    struct item *items = NULL;
    size_t n = 0, i;
    int64_t now = pj_time_now();
    int ret = NAGIOS_UNKNOWN, opt;

    optind = 0;
    while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        if (cli_global_opt(opt, optarg)) {
            continue;
        }
        switch (opt) {
        case 'h':
            help(stdout);
            return CLI_OK;
        case OPT_PROFILE:
            profile = optarg;
            break;
        case OPT_WARN:
            if (parse_days("--warn-days", optarg, &warn) != 0) {
                return NAGIOS_UNKNOWN;
            }
            break;
        case OPT_CRIT:
            if (parse_days("--critical-days", optarg, &crit) != 0) {
                return NAGIOS_UNKNOWN;
            }
            break;
        case OPT_CERT:
            cert = optarg;
            break;
        case OPT_NO_KEY:
            no_key = true;
            break;
        default:
            return usage_error("unknown option (getopt said which above)");
        }
    }
    if (optind < argc) {
        char msg[160];

        snprintf(msg, sizeof(msg), "unexpected argument '%.100s'",
                 argv[optind]);
        return usage_error(msg);
    }
    if (warn >= 0 && crit >= 0 && crit > warn) {
        return usage_error("--critical-days must not be over --warn-days");
    }

    if (cert != NULL && profile == NULL && cli_global.config == NULL) {
        /* A lone certificate: no configuration, no key. */
        struct agent_monitor_src src = {
            .cert = cert,
            .module = cli_module_path(NULL),
            .warn_days = warn >= 0 ? warn : PJ_WARN_DAYS_DEFAULT,
            .critical_days = crit >= 0 ? crit : PJ_CRITICAL_DAYS_DEFAULT,
        };
        struct item it = {0};

        if (src.critical_days > src.warn_days) {
            src.critical_days = src.warn_days;
        }
        agent_monitor_check(&src, now, &it.c);
        return report(&it, 1, true);
    }

    if (pj_config_load_file(pj_config_path_resolve(cli_global.config), &cfg,
                            &err) != PJ_OK) {
        ret = unknown("bad configuration", err.msg);
        goto out;
    }
    if (profile != NULL || cert != NULL) {
        const struct pj_profile *p;

        if (pj_config_profile_select(cfg, profile, &p, &err) != PJ_OK) {
            ret = unknown("profile", err.msg);
            goto out;
        }
        if ((items = calloc(1, sizeof(*items))) == NULL) {
            ret = unknown("check", "out of memory");
            goto out;
        }
        pj_strlcpy(items[0].name, p->name, sizeof(items[0].name));
        check_profile(cfg, p, cert, warn, crit, no_key, now, &items[0]);
        n = 1;
    } else {
        if (cfg->n_profiles == 0) {
            ret = unknown("bad configuration", "no [profile NAME] section");
            goto out;
        }
        if ((items = calloc(cfg->n_profiles, sizeof(*items))) == NULL) {
            ret = unknown("check", "out of memory");
            goto out;
        }
        for (i = 0; i < cfg->n_profiles; i++) {
            pj_strlcpy(items[i].name, cfg->profiles[i].name,
                       sizeof(items[i].name));
            check_profile(cfg, &cfg->profiles[i], NULL, warn, crit, no_key, now,
                          &items[i]);
        }
        n = cfg->n_profiles;
    }
    ret = report(items, n, no_key);
out:
    free(items);
    pj_config_free(cfg);
    return ret;
}
