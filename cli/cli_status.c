/* SPDX-License-Identifier: Apache-2.0 */
/*
 * p11jwt status: ask the agent what it is doing and show it as a table a
 * person can read at a glance (one row per cached (profile, subject)), or
 * the agent's JSON answer with --json. Never shows a token: the agent's
 * status answer holds none.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "agent/client.h"
#include "cli/cli.h"
#include "core/pj_util.h"

#define CMD "status"

enum { OPT_JSON = CLI_OPT_FIRST_LOCAL };

/*
 * Table columns. CERT EXPIRES comes from the agent's certificate monitor
 * (profiles[].cert): time left and state; "-" before the first check or
 * from an agent without it.
 */
enum {
    COL_PROFILE,
    COL_SUBJECT,
    COL_STATE,
    COL_AGE,
    COL_EXPIRES,
    COL_LAST,
    COL_CLASS,
    COL_SKEW,
    COL_CERT,
    NCOLS
};
static const char *const col_titles[NCOLS] = {
    "PROFILE",       "SUBJECT", "STATE",      "TOKEN AGE",    "EXPIRES IN",
    "LAST EXCHANGE", "CLASS",   "CLOCK SKEW", "CERT EXPIRES",
};

#define CELL_MAX 96

struct row {
    char cell[NCOLS][CELL_MAX];
};

struct table {
    struct row *rows;
    size_t n, cap;
};

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: p11jwt status [--socket PATH] [-c FILE] [--json]\n\n"
            "Ask the running p11jwt-agent for its state and print one row per "
            "profile and\nsubject: token state, cached token age, time until "
            "it expires, the last\nexchange with Salesforce (result and error "
            "class) and the clock skew the\nagent measured; then each "
            "profile's key and signing counters.\n\n"
            "  --socket PATH  the agent's socket (default: $P11JWT_SOCKET, "
            "the config's\n                 [agent] socket, "
            "/run/p11jwt/agent.sock)\n"
            "  -c FILE        config file to read the socket path from\n"
            "  --json         print the agent's status answer as JSON\n"
            "  -h, --help     this help\n\n"
            "Only profiles you may use are listed. Exit status: 0 ok, 1 the "
            "agent is not\nreachable or refused, 2 usage error.\n");
}

/* A printable copy: control characters from the agent become '?'. */
static void
cell_set(char *out, const char *in)
{
    size_t i;

    if (in == NULL) {
        in = "-";
    }
    for (i = 0; in[i] != '\0' && i + 1 < CELL_MAX; i++) {
        unsigned char c = (unsigned char)in[i];
        out[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    out[i] = '\0';
}

/* "45s", "12m", "1h48m", "3d4h": durations people read at a glance. */
static void
fmt_dur(char *out, size_t n, int64_t s)
{
    const char *sign = s < 0 ? "-" : "";

    if (s < 0) {
        s = -s;
    }
    if (s < 60) {
        snprintf(out, n, "%s%" PRId64 "s", sign, s);
    } else if (s < 3600) {
        snprintf(out, n, "%s%" PRId64 "m", sign, s / 60);
    } else if (s < 86400) {
        snprintf(out, n, "%s%" PRId64 "h%02" PRId64 "m", sign, s / 3600,
                 (s % 3600) / 60);
    } else {
        snprintf(out, n, "%s%" PRId64 "d%" PRId64 "h", sign, s / 86400,
                 (s % 86400) / 3600);
    }
}

static bool
get_int(const json_t *obj, const char *key, int64_t *out)
{
    const json_t *v = json_object_get(obj, key);

    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        *out = (int64_t)json_real_value(v);
        return true;
    }
    return false;
}

static const char *
get_str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

static struct row *
table_add(struct table *t)
{
    struct row *nr;
    size_t i;

    if (t->n == t->cap) {
        size_t ncap = t->cap == 0 ? 8 : t->cap * 2;
        if ((nr = realloc(t->rows, ncap * sizeof(*nr))) == NULL) {
            return NULL;
        }
        t->rows = nr;
        t->cap = ncap;
    }
    nr = &t->rows[t->n++];
    for (i = 0; i < NCOLS; i++) {
        cell_set(nr->cell[i], "-");
    }
    return nr;
}

static void
fill_skew(struct row *r, const json_t *prof)
{
    int64_t skew;
    char buf[32];

    if (get_int(prof, "clock_skew", &skew)) {
        snprintf(buf, sizeof(buf), "%s%" PRId64 "s", skew > 0 ? "+" : "", skew);
        cell_set(r->cell[COL_SKEW], buf);
    }
}

static void
fill_cert(struct row *r, const json_t *prof, int64_t now)
{
    const json_t *cert = json_object_get(prof, "cert");
    int64_t not_after;
    char buf[CELL_MAX], dur[32];
    const char *state;

    /* Absent from older agents, null before the first check. */
    if (!json_is_object(cert)) {
        return;
    }
    state = get_str(cert, "state");
    if (!get_int(cert, "not_after", &not_after)) {
        /* "unknown": the certificate could not be read (see `error`). */
        cell_set(r->cell[COL_CERT], state);
        return;
    }
    fmt_dur(dur, sizeof(dur), not_after - now);
    snprintf(buf, sizeof(buf), "%s%s%s%s", not_after <= now ? "EXPIRED " : "",
             not_after <= now ? "" : dur, state != NULL ? " " : "",
             state != NULL ? state : "");
    cell_set(r->cell[COL_CERT], buf);
}

static void
fill_token(struct row *r, const json_t *tok, int64_t now)
{
    const json_t *last = json_object_get(tok, "last_exchange");
    int64_t v, t, expires;
    char buf[CELL_MAX], dur[32];
    const char *state = get_str(tok, "state");
    const char *result, *error;

    cell_set(r->cell[COL_SUBJECT], get_str(tok, "subject"));
    if (state != NULL && get_int(tok, "retry_in", &v)) {
        fmt_dur(dur, sizeof(dur), v);
        snprintf(buf, sizeof(buf), "%s (retry in %s)", state, dur);
        cell_set(r->cell[COL_STATE], buf);
    } else if (state != NULL) {
        cell_set(r->cell[COL_STATE], state);
    }
    if (get_int(tok, "age", &v) ||
        (get_int(tok, "issued_at", &t) && (v = now - t, true))) {
        if (get_int(tok, "expires_at", &expires) || v >= 0) {
            fmt_dur(dur, sizeof(dur), v);
            cell_set(r->cell[COL_AGE], dur);
        }
    }
    if (get_int(tok, "expires_at", &expires)) {
        if (expires <= now) {
            cell_set(r->cell[COL_EXPIRES], "expired");
        } else {
            fmt_dur(dur, sizeof(dur), expires - now);
            cell_set(r->cell[COL_EXPIRES], dur);
        }
    }
    if (json_is_object(last)) {
        result = get_str(last, "result");
        error = get_str(last, "error");
        if (get_int(last, "time", &t)) {
            fmt_dur(dur, sizeof(dur), now - t);
            snprintf(buf, sizeof(buf), "%s%s%s, %s ago",
                     result != NULL ? result : "?", error != NULL ? ": " : "",
                     error != NULL ? error : "", dur);
        } else {
            snprintf(buf, sizeof(buf), "%s%s%s", result != NULL ? result : "?",
                     error != NULL ? ": " : "", error != NULL ? error : "");
        }
        cell_set(r->cell[COL_LAST], buf);
        cell_set(r->cell[COL_CLASS], get_str(last, "class"));
    }
}

static void
print_table(const struct table *t)
{
    size_t w[NCOLS], i, c, len;

    for (c = 0; c < NCOLS; c++) {
        w[c] = strlen(col_titles[c]);
        for (i = 0; i < t->n; i++) {
            len = strlen(t->rows[i].cell[c]);
            if (len > w[c]) {
                w[c] = len;
            }
        }
    }
    for (c = 0; c < NCOLS; c++) {
        printf("%-*s%s", c + 1 < NCOLS ? (int)w[c] : 0, col_titles[c],
               c + 1 < NCOLS ? "  " : "\n");
    }
    for (i = 0; i < t->n; i++) {
        for (c = 0; c < NCOLS; c++) {
            printf("%-*s%s", c + 1 < NCOLS ? (int)w[c] : 0, t->rows[i].cell[c],
                   c + 1 < NCOLS ? "  " : "\n");
        }
    }
}

static void
print_keys(const json_t *profiles)
{
    const json_t *prof, *signer;
    char name[CELL_MAX], key[CELL_MAX * 3], kerr[CELL_MAX * 3];
    int64_t sigs = 0, fails = 0, recov = 0;
    size_t i, w = 0;
    int nw;

    printf("\nKEYS\n");
    json_array_foreach(profiles, i, prof)
    {
        cell_set(name, get_str(prof, "name"));
        if (strlen(name) > w) {
            w = strlen(name);
        }
    }
    nw = (int)w;
    json_array_foreach(profiles, i, prof)
    {
        cell_set(name, get_str(prof, "name"));
        /* Key URIs are long: they get their own lines, not a column. */
        snprintf(key, sizeof(key), "%s",
                 get_str(prof, "key") != NULL ? get_str(prof, "key") : "-");
        cell_set(kerr, get_str(prof, "key_error"));
        signer = json_object_get(prof, "signer");
        sigs = fails = recov = 0;
        (void)get_int(signer, "signatures", &sigs);
        (void)get_int(signer, "failures", &fails);
        (void)get_int(signer, "recoveries", &recov);
        if (json_is_false(json_object_get(prof, "key_open"))) {
            printf("  %-*s  %s  NOT OPEN: %s\n", nw, name, key, kerr);
        } else {
            printf("  %-*s  %s  open, %" PRId64 " signatures, %" PRId64
                   " failed, %" PRId64 " recoveries\n",
                   nw, name, key, sigs, fails, recov);
        }
    }
}

/* One certificate line: subject, not-after, days left, state. */
static void
print_cert_line(int nw, const char *name, const char *which, const json_t *cert)
{
    char subj[CELL_MAX * 3], when[32] = "-", state[CELL_MAX];
    int64_t not_after, days;
    time_t t;
    struct tm tm;

    cell_set(state, get_str(cert, "state"));
    cell_set(subj, get_str(cert, "subject"));
    if (!get_int(cert, "not_after", &not_after)) {
        cell_set(subj, get_str(cert, "error"));
        printf("  %-*s  %-6s  %s  %s\n", nw, name, which, state, subj);
        return;
    }
    t = (time_t)not_after;
    if (gmtime_r(&t, &tm) != NULL) {
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    if (!get_int(cert, "days_left", &days)) {
        days = 0;
    }
    printf("  %-*s  %-6s  %-13s  not after %s (%" PRId64 " days)  %s\n", nw,
           name, which, state, when, days, subj);
}

/* The certificate monitor's view: the active and, in rotation, next cert. */
static void
print_certs(const json_t *profiles)
{
    const json_t *prof, *cert;
    char name[CELL_MAX];
    size_t i, w = 0;

    json_array_foreach(profiles, i, prof)
    {
        cell_set(name, get_str(prof, "name"));
        if (strlen(name) > w) {
            w = strlen(name);
        }
    }
    printf("\nCERTIFICATES\n");
    json_array_foreach(profiles, i, prof)
    {
        cell_set(name, get_str(prof, "name"));
        cert = json_object_get(prof, "cert");
        if (!json_is_object(cert)) {
            printf("  %-*s  active  not checked yet\n", (int)w, name);
        } else {
            print_cert_line((int)w, name, "active", cert);
        }
        cert = json_object_get(prof, "next_cert");
        if (json_is_object(cert)) {
            print_cert_line((int)w, name, "next", cert);
        }
    }
}

static int
print_status(const json_t *ans, const char *path)
{
    const json_t *profiles = json_object_get(ans, "profiles");
    const json_t *prof, *tokens, *tok, *subjects;
    struct table t = {0};
    struct row *r;
    int64_t now = pj_time_now(), v;
    char up[32] = "?";
    size_t i, j;
    int rc = CLI_FAIL;

    if (get_int(ans, "uptime", &v)) {
        fmt_dur(up, sizeof(up), v);
    }
    printf("p11jwt-agent %s at %s: pid %" PRId64 ", up %s",
           get_str(ans, "version") != NULL ? get_str(ans, "version") : "?",
           path, get_int(ans, "pid", &v) ? v : (int64_t)0, up);
    if (get_int(ans, "workers", &v)) {
        printf(", %" PRId64 " workers", v);
    }
    if (get_int(ans, "connections", &v)) {
        printf(", %" PRId64 " connections", v);
    }
    printf("\n\n");
    if (!json_is_array(profiles) || json_array_size(profiles) == 0) {
        printf("No profiles you may use (the agent lists only profiles whose "
               "allow-uid/allow-gid\nadmit you).\n");
        return CLI_OK;
    }
    json_array_foreach(profiles, i, prof)
    {
        tokens = json_object_get(prof, "tokens");
        if (!json_is_array(tokens) || json_array_size(tokens) == 0) {
            /* Nothing fetched yet: one row for the default subject. */
            if ((r = table_add(&t)) == NULL) {
                goto nomem;
            }
            cell_set(r->cell[COL_PROFILE], get_str(prof, "name"));
            subjects = json_object_get(prof, "subjects");
            cell_set(r->cell[COL_SUBJECT],
                     json_string_value(json_array_get(subjects, 0)));
            cell_set(r->cell[COL_STATE], "empty");
            fill_skew(r, prof);
            fill_cert(r, prof, now);
            continue;
        }
        json_array_foreach(tokens, j, tok)
        {
            if ((r = table_add(&t)) == NULL) {
                goto nomem;
            }
            cell_set(r->cell[COL_PROFILE], get_str(prof, "name"));
            fill_token(r, tok, now);
            fill_skew(r, prof);
            fill_cert(r, prof, now);
        }
    }
    print_table(&t);
    print_keys(profiles);
    print_certs(profiles);
    rc = CLI_OK;
    goto out;
nomem:
    fprintf(stderr, "p11jwt status: out of memory\n");
out:
    free(t.rows);
    return rc;
}

int
cli_cmd_status(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_GLOBAL_LONGOPTS,
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    struct pj_err err = {0};
    json_t *req = NULL, *ans = NULL;
    char *path = NULL;
    bool as_json = false;
    int opt, rc = CLI_FAIL;

    while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        if (cli_global_opt(opt, optarg)) {
            continue;
        }
        switch (opt) {
        case 'h':
            usage(stdout);
            return CLI_OK;
        case OPT_JSON:
            as_json = true;
            break;
        default:
            return cli_bad_option(CMD);
        }
    }
    if (optind < argc) {
        return cli_usage(CMD, "unexpected argument '%s'", argv[optind]);
    }
    if (agent_client_socket_path(cli_global.socket, cli_global.config, &path,
                                 &err) != PJ_OK) {
        rc = cli_fail(CMD, &err);
        goto out;
    }
    if ((req = json_pack("{s:s}", "op", "status")) == NULL) {
        fprintf(stderr, "p11jwt status: out of memory\n");
        goto out;
    }
    if (agent_client_request(path, req, 0, &ans, &err) != PJ_OK ||
        agent_client_answer_check(ans, &err) != PJ_OK) {
        rc = cli_fail(CMD, &err);
        goto out;
    }
    if (as_json) {
        if (json_dumpf(ans, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) !=
                0 ||
            fputc('\n', stdout) == EOF) {
            fprintf(stderr, "p11jwt status: cannot write to stdout\n");
            goto out;
        }
        rc = CLI_OK;
    } else {
        rc = print_status(ans, path);
    }
    if (fflush(stdout) != 0) {
        fprintf(stderr, "p11jwt status: cannot write to stdout\n");
        rc = CLI_FAIL;
    }
out:
    json_decref(ans);
    json_decref(req);
    free(path);
    return rc;
}
