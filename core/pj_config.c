/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Config loading with libinih. inih calls us once per key; it neither tells
 * the handler the line number (INI_HANDLER_LINENO is 0 in Debian's build)
 * nor reports sections without keys, so we feed it through our own line
 * reader: the reader counts lines, notices section headers and refuses
 * lines longer than inih's buffer (which it would otherwise split).
 */
#include "core/pj_config.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ini.h>

#include "core/pj_util.h"

enum cfg_type {
    T_PATH,       /* absolute path */
    T_NAME,       /* user/group name or similar word */
    T_WORD,       /* printable ASCII, no spaces: client-id, subject */
    T_WORDS,      /* comma-separated T_WORD list */
    T_KEY_URI,    /* pkcs11: URI, no pin-value */
    T_CERT,       /* pkcs11: URI or absolute path */
    T_PIN_SOURCE, /* file:/env:/systemd: */
    T_LOGIN_URL,  /* https, not a legacy instance */
    T_URL,        /* https */
    T_LONG,       /* integer in [min, max] */
    T_UIDS,       /* user names or numbers */
    T_GIDS,       /* group names or numbers */
    T_PATHS,      /* comma-separated absolute paths */
};

struct cfg_key {
    const char *name;
    enum cfg_type type;
    size_t off;
    long min, max;
};

#define AG(f) offsetof(struct pj_config_agent, f)
#define PR(f) offsetof(struct pj_profile, f)

static const struct cfg_key agent_keys[] = {
    {"socket", T_PATH, AG(socket), 0, 0},
    {"socket-group", T_NAME, AG(socket_group), 0, 0},
    {"module", T_PATH, AG(module), 0, 0},
    {"metrics-file", T_PATH, AG(metrics_file), 0, 0},
    {"alert-command", T_PATH, AG(alert_command), 0, 0},
    {"warn-days", T_LONG, AG(warn_days), 0, PJ_DAYS_MAX},
    {"critical-days", T_LONG, AG(critical_days), 0, PJ_DAYS_MAX},
    {"monitor-interval", T_LONG, AG(monitor_interval),
     PJ_MONITOR_INTERVAL_MIN_S, PJ_MONITOR_INTERVAL_MAX_S},
    {"alert-timeout", T_LONG, AG(alert_timeout), 1, PJ_ALERT_TIMEOUT_MAX_S},
};

static const struct cfg_key profile_keys[] = {
    {"key", T_KEY_URI, PR(key), 0, 0},
    {"cert", T_CERT, PR(cert), 0, 0},
    {"pin-source", T_PIN_SOURCE, PR(pin_source), 0, 0},
    {"client-id", T_WORD, PR(client_id), 0, 0},
    {"subject", T_WORD, PR(subject), 0, 0},
    {"subjects", T_WORDS, PR(subjects), 0, 0},
    {"login-url", T_LOGIN_URL, PR(login_url), 0, 0},
    {"audience", T_URL, PR(audience), 0, 0},
    {"session-lifetime", T_LONG, PR(session_lifetime),
     PJ_SESSION_LIFETIME_MIN_S, PJ_SESSION_LIFETIME_MAX_S},
    {"assertion-lifetime", T_LONG, PR(assertion_lifetime),
     PJ_ASSERTION_LIFETIME_MIN_S, PJ_ASSERTION_LIFETIME_MAX_S},
    {"allow-uid", T_UIDS, PR(allow_uid), 0, 0},
    {"allow-gid", T_GIDS, PR(allow_gid), 0, 0},
    {"allow-exe", T_PATHS, PR(allow_exe), 0, 0},
    {"ca-file", T_PATH, PR(ca_file), 0, 0},
    {"connect-timeout", T_LONG, PR(connect_timeout), 1, PJ_TIMEOUT_MAX_S},
    {"timeout", T_LONG, PR(timeout), 1, PJ_TIMEOUT_MAX_S},
    {"warn-days", T_LONG, PR(warn_days), 0, PJ_DAYS_MAX},
    {"critical-days", T_LONG, PR(critical_days), 0, PJ_DAYS_MAX},
};

enum cfg_section { SEC_NONE, SEC_AGENT, SEC_PROFILE };

struct cfg_ctx {
    struct pj_config *cfg;
    struct pj_err *err;
    pj_rc rc;        /* first failure; PJ_OK while none */
    const char *pos; /* reader position in the text */
    const char *end;
    unsigned line; /* line most recently handed to inih */
    enum cfg_section sec;
    char sec_raw[PJ_CONFIG_LINE_MAX]; /* section text as inih sees it */
    struct pj_profile *prof;          /* the current profile */
    unsigned keys_in_section;
    uint32_t seen; /* bit per key index in the current section */
    bool agent_seen;
    unsigned agent_warn_line, agent_crit_line;
};

static void cfg_fail(struct cfg_ctx *c, pj_rc rc, const char *fmt, ...)
    PJ_PRINTF(3, 4);

/* Record the first failure as "name:line: message". */
static void
cfg_fail(struct cfg_ctx *c, pj_rc rc, const char *fmt, ...)
{
    char msg[PJ_ERR_MSG_MAX];
    va_list ap;

    if (c->rc != PJ_OK) {
        return;
    }
    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    c->rc = pj_err_set(c->err, rc, "%s:%u: %s", c->cfg->path, c->line, msg);
}

static const char *
sec_label(const struct cfg_ctx *c, char *buf, size_t size)
{
    if (c->sec == SEC_AGENT) {
        (void)snprintf(buf, size, "[agent]");
        return buf;
    }
    if (c->sec == SEC_PROFILE && c->prof != NULL) {
        (void)snprintf(buf, size, "[profile %s]", c->prof->name);
        return buf;
    }
    (void)snprintf(buf, size, "(no section)");
    return buf;
}

/* ---- value parsers -------------------------------------------------- */

static bool
is_word(const char *s)
{
    const unsigned char *p;

    if (*s == '\0') {
        return false;
    }
    for (p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == ',' || *p == '"' || *p == '\\') {
            return false;
        }
    }
    return true;
}

static bool
is_abs_path(const char *s)
{
    const unsigned char *p;

    if (s[0] != '/') {
        return false;
    }
    for (p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f || *p == ',') {
            return false;
        }
    }
    return true;
}

static bool
is_profile_name(const char *s)
{
    size_t n = strlen(s), i;

    if (n == 0 || n > PJ_PROFILE_NAME_MAX) {
        return false;
    }
    for (i = 0; i < n; i++) {
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' &&
            s[i] != '-') {
            return false;
        }
    }
    return true;
}

/* Split a comma list into trimmed items; NULL items array on failure. */
static pj_rc
split_list(const char *value, char ***itemsp, size_t *np)
{
    char **items = NULL;
    size_t n = 0;
    const char *p = value;

    *itemsp = NULL;
    *np = 0;
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *e = comma != NULL ? comma : p + strlen(p);
        const char *b = p;
        char **grown;

        while (b < e && isspace((unsigned char)*b)) {
            b++;
        }
        while (e > b && isspace((unsigned char)e[-1])) {
            e--;
        }
        if (n >= PJ_CONFIG_LIST_MAX) {
            goto limit;
        }
        grown = realloc(items, (n + 1) * sizeof(*items));
        if (grown == NULL) {
            goto nomem;
        }
        items = grown;
        if ((items[n] = strndup(b, (size_t)(e - b))) == NULL) {
            goto nomem;
        }
        n++;
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
    }
    *itemsp = items;
    *np = n;
    return PJ_OK;
limit:
    while (n > 0) {
        free(items[--n]);
    }
    free(items);
    return PJ_ERR_LIMIT;
nomem:
    while (n > 0) {
        free(items[--n]);
    }
    free(items);
    return PJ_ERR_NOMEM;
}

static void
free_list(char **items, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        free(items[i]);
    }
    free(items);
}

/* uid_t and gid_t are both unsigned int here: one id list type serves. */
_Static_assert(sizeof(uid_t) == sizeof(unsigned) &&
                   sizeof(gid_t) == sizeof(unsigned),
               "uid_t/gid_t are not unsigned int");

/* A user (uids) or group name to its number. */
static bool
lookup_id(const char *name, bool uids, unsigned *idp)
{
    char buf[8192];

    if (uids) {
        struct passwd pw, *res = NULL;
        if (getpwnam_r(name, &pw, buf, sizeof(buf), &res) != 0 || res == NULL) {
            return false;
        }
        *idp = res->pw_uid;
    } else {
        struct group gr, *res = NULL;
        if (getgrnam_r(name, &gr, buf, sizeof(buf), &res) != 0 || res == NULL) {
            return false;
        }
        *idp = res->gr_gid;
    }
    return true;
}

/* ---- URLs ----------------------------------------------------------- */

/* Host part of an already checked https URL into buf, lower-cased. */
static void
url_host(const char *url, char *buf, size_t size)
{
    const char *h = url + strlen("https://");
    size_t n = strcspn(h, ":/");
    size_t i;

    if (n >= size) {
        n = size - 1;
    }
    for (i = 0; i < n; i++) {
        buf[i] = (char)tolower((unsigned char)h[i]);
    }
    buf[n] = '\0';
}

static bool
ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);

    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* na1.salesforce.com, cs42.salesforce.com, eu12., ap3., um5., gs0. ... */
static bool
is_legacy_instance(const char *host)
{
    const char *p = host;
    size_t letters = 0, digits = 0;

    while (isalpha((unsigned char)*p)) {
        p++;
        letters++;
    }
    while (isdigit((unsigned char)*p)) {
        p++;
        digits++;
    }
    return letters > 0 && letters <= 4 && digits > 0 &&
           strcmp(p, ".salesforce.com") == 0;
}

pj_rc
pj_config_url_check(const char *url, const char *what, bool login,
                    struct pj_err *err)
{
    const char *h, *p;
    size_t hostlen, i;
    char host[256];

    if (strncasecmp(url, "http://", 7) == 0) {
        return pj_err_set(err, PJ_ERR_CONFIG,
                          "%s '%s' is refused: Salesforce token requests "
                          "must use https:// (TLS)",
                          what, url);
    }
    if (strncmp(url, "https://", 8) != 0) {
        return pj_err_set(err, PJ_ERR_CONFIG,
                          "%s '%s' is not an https:// URL (for example "
                          "https://login.salesforce.com)",
                          what, url);
    }
    h = url + 8;
    hostlen = strcspn(h, ":/?#@");
    if (h[hostlen] == '@' || strchr(h, '@') != NULL) {
        return pj_err_set(err, PJ_ERR_CONFIG,
                          "%s must not contain a user name or '@'", what);
    }
    if (hostlen == 0 || hostlen >= sizeof(host)) {
        return pj_err_set(err, PJ_ERR_CONFIG, "%s '%s' has no valid host name",
                          what, url);
    }
    for (i = 0; i < hostlen; i++) {
        unsigned char ch = (unsigned char)h[i];
        if (!isalnum(ch) && ch != '-' && ch != '.') {
            return pj_err_set(err, PJ_ERR_CONFIG,
                              "%s '%s': the host may hold only letters, "
                              "digits, '-' and '.'",
                              what, url);
        }
    }
    if (h[0] == '.' || h[0] == '-' || h[hostlen - 1] == '.' ||
        h[hostlen - 1] == '-') {
        return pj_err_set(err, PJ_ERR_CONFIG, "%s '%s' has no valid host name",
                          what, url);
    }
    p = h + hostlen;
    if (*p == ':') {
        long port;
        size_t n = strcspn(p + 1, "/?#");
        char num[8];

        if (n == 0 || n >= sizeof(num)) {
            return pj_err_set(err, PJ_ERR_CONFIG, "%s '%s' has a bad port",
                              what, url);
        }
        memcpy(num, p + 1, n);
        num[n] = '\0';
        if (pj_parse_long(num, 1, 65535, &port) != PJ_OK) {
            return pj_err_set(err, PJ_ERR_CONFIG, "%s '%s' has a bad port",
                              what, url);
        }
        p += 1 + n;
    }
    for (; *p != '\0'; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '?' || ch == '#') {
            return pj_err_set(err, PJ_ERR_CONFIG,
                              "%s '%s' must not have a query or fragment", what,
                              url);
        }
        if (ch <= 0x20 || ch >= 0x7f) {
            return pj_err_set(err, PJ_ERR_CONFIG,
                              "%s '%s' has a space or a non-ASCII character",
                              what, url);
        }
    }
    url_host(url, host, sizeof(host));
    if (login && is_legacy_instance(host)) {
        return pj_err_set(err, PJ_ERR_CONFIG,
                          "%s '%s' is a legacy instance host: Salesforce "
                          "retired logins through instance names; use the "
                          "org's My Domain (https://NAME.my.salesforce.com) "
                          "or https://login.salesforce.com "
                          "(https://test.salesforce.com for sandboxes)",
                          what, url);
    }
    if (login && ends_with(host, ".lightning.force.com")) {
        return pj_err_set(err, PJ_ERR_CONFIG,
                          "%s '%s' is the Lightning UI host, not a login "
                          "host; use the org's My Domain "
                          "(https://NAME.my.salesforce.com)",
                          what, url);
    }
    return PJ_OK;
}

char *
pj_config_default_audience(const char *login_url)
{
    char host[256];

    url_host(login_url, host, sizeof(host));
    if (ends_with(host, ".sandbox.my.salesforce.com") ||
        ends_with(host, ".scratch.my.salesforce.com")) {
        return strdup(PJ_CONFIG_TEST_LOGIN_URL);
    }
    if (ends_with(host, ".my.salesforce.com")) {
        return strdup(PJ_CONFIG_DEFAULT_LOGIN_URL);
    }
    return strdup(login_url);
}

/* ---- sections ------------------------------------------------------- */

static void profile_cleanup(struct pj_profile *p);

/* Checks and defaults once a section has ended (or the file has). */
static void section_finish_at(struct cfg_ctx *c);

/* Checks report at the section's header line; keep the reader's count. */
static void
section_finish(struct cfg_ctx *c)
{
    unsigned line = c->line;

    section_finish_at(c);
    c->line = line;
}

static void
section_finish_at(struct cfg_ctx *c)
{
    struct pj_profile *p = c->prof;
    char label[80];

    if (c->rc != PJ_OK) {
        return;
    }
    if (c->sec == SEC_AGENT) {
        struct pj_config_agent *a = &c->cfg->agent;
        if (a->critical_days > a->warn_days) {
            c->line = a->line;
            cfg_fail(c, PJ_ERR_CONFIG,
                     "critical-days (%ld) is larger than warn-days (%ld) in "
                     "[agent]",
                     a->critical_days, a->warn_days);
        }
        return;
    }
    if (c->sec != SEC_PROFILE || p == NULL) {
        return;
    }
    (void)sec_label(c, label, sizeof(label));
    c->line = p->line;
    if (p->key == NULL) {
        cfg_fail(c, PJ_ERR_CONFIG,
                 "missing key 'key' in %s (the pkcs11: URI of the private "
                 "key)",
                 label);
    } else if (p->client_id == NULL) {
        cfg_fail(c, PJ_ERR_CONFIG,
                 "missing key 'client-id' in %s (the app's consumer key)",
                 label);
    } else if (p->subject == NULL) {
        cfg_fail(c, PJ_ERR_CONFIG,
                 "missing key 'subject' in %s (the Salesforce username)",
                 label);
    } else if (p->connect_timeout > p->timeout) {
        cfg_fail(c, PJ_ERR_CONFIG,
                 "connect-timeout (%ld) is larger than timeout (%ld) in %s",
                 p->connect_timeout, p->timeout, label);
    }
    if (c->rc != PJ_OK) {
        return;
    }
    if (p->warn_days < 0) {
        p->warn_days = c->cfg->agent.warn_days;
    }
    if (p->critical_days < 0) {
        p->critical_days = c->cfg->agent.critical_days;
    }
    if (p->login_url == NULL &&
        (p->login_url = strdup(PJ_CONFIG_DEFAULT_LOGIN_URL)) == NULL) {
        cfg_fail(c, PJ_ERR_NOMEM, "out of memory");
        return;
    }
    if (p->audience == NULL &&
        (p->audience = pj_config_default_audience(p->login_url)) == NULL) {
        cfg_fail(c, PJ_ERR_NOMEM, "out of memory");
        return;
    }
    if (p->critical_days > p->warn_days) {
        cfg_fail(c, PJ_ERR_CONFIG,
                 "critical-days (%ld) is larger than warn-days (%ld) in %s",
                 p->critical_days, p->warn_days, label);
    }
}

/* A "[...]" line: name is the text between the brackets, untrimmed. */
static void
section_begin(struct cfg_ctx *c, const char *name)
{
    struct pj_config *cfg = c->cfg;
    struct pj_profile *grown, *p;
    size_t i;

    section_finish(c);
    if (c->rc != PJ_OK) {
        return;
    }
    c->prof = NULL;
    c->seen = 0;
    c->keys_in_section = 0;
    if (strcmp(name, "agent") == 0) {
        if (c->agent_seen) {
            cfg_fail(c, PJ_ERR_CONFIG,
                     "second [agent] section (the first is on line %u)",
                     cfg->agent.line);
            return;
        }
        c->agent_seen = true;
        c->sec = SEC_AGENT;
        cfg->agent.line = c->line;
        return;
    }
    if (strncmp(name, "profile ", 8) != 0) {
        cfg_fail(c, PJ_ERR_CONFIG,
                 "unknown section [%s] (expected [agent] or [profile NAME])",
                 name);
        return;
    }
    name += 8;
    while (*name == ' ') {
        name++;
    }
    if (!is_profile_name(name)) {
        cfg_fail(c, PJ_ERR_CONFIG,
                 "bad profile name '%s': use 1 to %d letters, digits, '.', "
                 "'_' or '-'",
                 name, PJ_PROFILE_NAME_MAX);
        return;
    }
    for (i = 0; i < cfg->n_profiles; i++) {
        if (strcmp(cfg->profiles[i].name, name) == 0) {
            cfg_fail(c, PJ_ERR_CONFIG,
                     "second [profile %s] section (the first is on line %u)",
                     name, cfg->profiles[i].line);
            return;
        }
    }
    if (cfg->n_profiles >= 1024) {
        cfg_fail(c, PJ_ERR_LIMIT, "more than 1024 profiles");
        return;
    }
    grown = realloc(cfg->profiles, (cfg->n_profiles + 1) * sizeof(*grown));
    if (grown == NULL) {
        cfg_fail(c, PJ_ERR_NOMEM, "out of memory");
        return;
    }
    cfg->profiles = grown;
    p = &cfg->profiles[cfg->n_profiles];
    memset(p, 0, sizeof(*p));
    if ((p->name = strdup(name)) == NULL) {
        cfg_fail(c, PJ_ERR_NOMEM, "out of memory");
        return;
    }
    cfg->n_profiles++;
    p->line = c->line;
    p->session_lifetime = PJ_SESSION_LIFETIME_DEFAULT_S;
    p->assertion_lifetime = PJ_ASSERTION_LIFETIME_DEFAULT_S;
    p->connect_timeout = PJ_CONNECT_TIMEOUT_DEFAULT_S;
    p->timeout = PJ_TIMEOUT_DEFAULT_S;
    p->warn_days = -1; /* inherit [agent] at the end */
    p->critical_days = -1;
    c->sec = SEC_PROFILE;
    c->prof = p;
}

/* ---- keys ----------------------------------------------------------- */

static void
set_value(struct cfg_ctx *c, const struct cfg_key *k, void *base,
          const char *value, const char *label)
{
    char *field = (char *)base + k->off;
    char **items = NULL;
    size_t n = 0, i;
    pj_rc rc;
    struct pj_err uerr = {0};

    switch (k->type) {
    case T_LONG: {
        long v;
        if (pj_parse_long(value, k->min, k->max, &v) != PJ_OK) {
            if (strcmp(k->name, "assertion-lifetime") == 0) {
                cfg_fail(c, PJ_ERR_CONFIG,
                         "bad value '%s' for assertion-lifetime in %s: "
                         "seconds from %d to %d (Salesforce rejects an exp "
                         "more than 5 minutes ahead)",
                         value, label, PJ_ASSERTION_LIFETIME_MIN_S,
                         PJ_ASSERTION_LIFETIME_MAX_S);
            } else {
                cfg_fail(c, PJ_ERR_CONFIG,
                         "bad value '%s' for %s in %s: an integer from %ld "
                         "to %ld",
                         value, k->name, label, k->min, k->max);
            }
            return;
        }
        memcpy(field, &v, sizeof(v));
        return;
    }
    case T_UIDS:
    case T_GIDS:
    case T_WORDS:
    case T_PATHS:
        break;
    default: {
        char *s;
        bool ok;
        const char *why = "";

        switch (k->type) {
        case T_PATH:
            ok = is_abs_path(value);
            why = "an absolute path";
            break;
        case T_NAME:
            ok = is_word(value);
            why = "a name without spaces";
            break;
        case T_WORD:
            ok = is_word(value) && strlen(value) <= 255;
            why = "printable ASCII without spaces, commas or quotes, at "
                  "most 255 characters";
            break;
        case T_KEY_URI:
            if (strncmp(value, "pkcs11:", 7) != 0) {
                ok = false;
                why = "a pkcs11: URI (RFC 7512), e.g. "
                      "pkcs11:token=prod;object=sf-jwt;type=private";
            } else if (strstr(value, "pin-value=") != NULL) {
                cfg_fail(c, PJ_ERR_CONFIG,
                         "the key URI in %s carries pin-value: the PIN never "
                         "goes in the config; use pin-source = "
                         "file:/etc/p11jwt/NAME.pin, env:NAME or systemd:NAME",
                         label);
                return;
            } else {
                ok = is_word(value);
                why = "a pkcs11: URI without spaces";
            }
            break;
        case T_CERT:
            ok = (strncmp(value, "pkcs11:", 7) == 0 && is_word(value) &&
                  strstr(value, "pin-value=") == NULL) ||
                 is_abs_path(value);
            why = "a pkcs11: URI or the absolute path of a PEM file";
            break;
        case T_PIN_SOURCE:
            ok = (strncmp(value, "file:/", 6) == 0 && is_abs_path(value + 5)) ||
                 (strncmp(value, "env:", 4) == 0 && is_word(value + 4)) ||
                 (strncmp(value, "systemd:", 8) == 0 && is_word(value + 8));
            why = "file:/ABSOLUTE/PATH, env:NAME or systemd:NAME";
            break;
        case T_LOGIN_URL:
        case T_URL:
            if (pj_config_url_check(value, k->name, k->type == T_LOGIN_URL,
                                    &uerr) != PJ_OK) {
                cfg_fail(c, PJ_ERR_CONFIG, "%s in %s", uerr.msg, label);
                return;
            }
            ok = true;
            break;
        default:
            ok = false;
            why = "(internal: unhandled type)";
            break;
        }
        if (!ok) {
            cfg_fail(c, PJ_ERR_CONFIG, "bad value '%s' for %s in %s: %s", value,
                     k->name, label, why);
            return;
        }
        if ((s = strdup(value)) == NULL) {
            cfg_fail(c, PJ_ERR_NOMEM, "out of memory");
            return;
        }
        /* One canonical spelling: "https://host/" and "https://host" match. */
        if (k->type == T_LOGIN_URL) {
            size_t len = strlen(s);
            while (len > 8 && s[len - 1] == '/') {
                s[--len] = '\0';
            }
        }
        memcpy(field, &s, sizeof(s));
        if (k->type == T_URL && strcmp(k->name, "audience") == 0) {
            c->prof->audience_configured = true;
        }
        return;
    }
    }

    rc = split_list(value, &items, &n);
    if (rc != PJ_OK) {
        cfg_fail(c, rc,
                 rc == PJ_ERR_LIMIT ? "more than %d entries for %s in %s"
                                    : "out of memory (%d) for %s in %s",
                 PJ_CONFIG_LIST_MAX, k->name, label);
        return;
    }
    for (i = 0; i < n; i++) {
        bool ok = k->type == T_PATHS
                      ? is_abs_path(items[i])
                      : is_word(items[i]) && strlen(items[i]) <= 255;
        if (!ok) {
            cfg_fail(c, PJ_ERR_CONFIG, "bad entry '%s' in %s in %s: %s",
                     items[i], k->name, label,
                     k->type == T_PATHS
                         ? "each entry is an absolute path"
                         : "entries are separated by commas and hold no "
                           "spaces or quotes");
            free_list(items, n);
            return;
        }
    }
    if (k->type == T_WORDS) {
        c->prof->subjects = items;
        c->prof->n_subjects = n;
        return;
    }
    if (k->type == T_PATHS) {
        c->prof->allow_exe = items;
        c->prof->n_allow_exe = n;
        return;
    }
    /* allow-uid / allow-gid: numbers, or names resolved now (plain data). */
    {
        bool uids = k->type == T_UIDS;
        unsigned *ids = calloc(n, sizeof(*ids));

        if (ids == NULL) {
            free_list(items, n);
            cfg_fail(c, PJ_ERR_NOMEM, "out of memory");
            return;
        }
        for (i = 0; i < n; i++) {
            long v;
            if (pj_parse_long(items[i], 0, 0x7fffffffL, &v) == PJ_OK) {
                ids[i] = (unsigned)v;
            } else if (!lookup_id(items[i], uids, &ids[i])) {
                cfg_fail(c, PJ_ERR_CONFIG,
                         "%s in %s: no %s '%s' on this system "
                         "(give a %s name that exists or a number)",
                         k->name, label, uids ? "user" : "group", items[i],
                         uids ? "user" : "group");
                free(ids);
                free_list(items, n);
                return;
            }
        }
        if (uids) {
            c->prof->allow_uid = ids;
            c->prof->n_allow_uid = n;
        } else {
            c->prof->allow_gid = ids;
            c->prof->n_allow_gid = n;
        }
    }
    free_list(items, n);
}

static int
cfg_handler(void *user, const char *section, const char *name,
            const char *value)
{
    struct cfg_ctx *c = user;
    const struct cfg_key *keys;
    size_t nkeys, i;
    char label[80];
    void *base;

    if (c->rc != PJ_OK) {
        return 0;
    }
    if (strcmp(section, c->sec_raw) != 0 || c->sec == SEC_NONE) {
        if (section[0] == '\0' && c->sec == SEC_NONE) {
            cfg_fail(c, PJ_ERR_CONFIG,
                     "key '%s' outside a section: put it under [agent] or "
                     "[profile NAME]",
                     name);
        } else {
            cfg_fail(c, PJ_ERR_CONFIG,
                     "malformed section header: write [agent] or "
                     "[profile NAME] at the start of a line");
        }
        return 0;
    }
    (void)sec_label(c, label, sizeof(label));
    if (strcmp(name, "pin") == 0 || strcmp(name, "pin-value") == 0 ||
        strcmp(name, "password") == 0) {
        cfg_fail(c, PJ_ERR_CONFIG,
                 "key '%s' in %s is refused: the PIN never goes in the "
                 "config; use pin-source = file:/etc/p11jwt/NAME.pin (mode "
                 "0600), env:NAME or systemd:NAME",
                 name, label);
        return 0;
    }
    if (c->sec == SEC_AGENT) {
        keys = agent_keys;
        nkeys = PJ_ARRAY_SIZE(agent_keys);
        base = &c->cfg->agent;
    } else {
        keys = profile_keys;
        nkeys = PJ_ARRAY_SIZE(profile_keys);
        base = c->prof;
    }
    for (i = 0; i < nkeys; i++) {
        if (strcmp(keys[i].name, name) == 0) {
            break;
        }
    }
    if (i == nkeys) {
        cfg_fail(c, PJ_ERR_CONFIG, "unknown key '%s' in %s", name, label);
        return 0;
    }
    if ((c->seen & (1u << i)) != 0) {
        cfg_fail(c, PJ_ERR_CONFIG,
                 "key '%s' given twice in %s (or continued on an indented "
                 "line)",
                 name, label);
        return 0;
    }
    c->seen |= 1u << i;
    c->keys_in_section++;
    if (value[0] == '\0') {
        cfg_fail(c, PJ_ERR_CONFIG, "empty value for %s in %s", name, label);
        return 0;
    }
    set_value(c, &keys[i], base, value, label);
    return c->rc == PJ_OK;
}

/*
 * inih's line source. Hands over one line at a time, counting them; spots
 * "[section]" lines the way inih will read them; refuses lines that do not
 * fit inih's buffer and NUL bytes.
 */
static char *
cfg_reader(char *str, int num, void *stream)
{
    struct cfg_ctx *c = stream;
    const char *nl, *e;
    size_t len;
    char *s;

    if (c->rc != PJ_OK || c->pos >= c->end) {
        return NULL;
    }
    nl = memchr(c->pos, '\n', (size_t)(c->end - c->pos));
    e = nl != NULL ? nl + 1 : c->end;
    len = (size_t)(e - c->pos);
    c->line++;
    if (memchr(c->pos, '\0', len) != NULL) {
        cfg_fail(c, PJ_ERR_CONFIG, "NUL byte in the file");
        return NULL;
    }
    if (num <= 1 || len > (size_t)num - 1) {
        cfg_fail(c, PJ_ERR_LIMIT, "line longer than %d characters",
                 PJ_CONFIG_LINE_MAX - 2);
        return NULL;
    }
    memcpy(str, c->pos, len);
    str[len] = '\0';
    c->pos = e;

    /* inih: a line whose first non-blank character is '[' after rstrip. */
    s = str;
    if (c->line == 1 && (unsigned char)s[0] == 0xEF &&
        (unsigned char)s[1] == 0xBB && (unsigned char)s[2] == 0xBF) {
        s += 3;
    }
    if (s[0] == '[') {
        char *close = strchr(s + 1, ']');
        if (close != NULL) {
            size_t n = (size_t)(close - (s + 1));
            memcpy(c->sec_raw, s + 1, n);
            c->sec_raw[n] = '\0';
            /* inih keeps 49 bytes of a section name (MAX_SECTION 50). */
            if (n > 49) {
                cfg_fail(c, PJ_ERR_LIMIT,
                         "section name longer than 49 "
                         "characters");
                return NULL;
            }
            section_begin(c, c->sec_raw);
            if (c->rc != PJ_OK) {
                return NULL;
            }
        }
    }
    return str;
}

static void
profile_cleanup(struct pj_profile *p)
{
    free(p->name);
    free(p->key);
    free(p->cert);
    free(p->pin_source);
    free(p->client_id);
    free(p->subject);
    free_list(p->subjects, p->n_subjects);
    free(p->login_url);
    free(p->audience);
    free(p->allow_uid);
    free(p->allow_gid);
    free_list(p->allow_exe, p->n_allow_exe);
    free(p->ca_file);
}

void
pj_config_free(struct pj_config *cfg)
{
    size_t i;

    if (cfg == NULL) {
        return;
    }
    for (i = 0; i < cfg->n_profiles; i++) {
        profile_cleanup(&cfg->profiles[i]);
    }
    free(cfg->profiles);
    free(cfg->agent.socket);
    free(cfg->agent.socket_group);
    free(cfg->agent.module);
    free(cfg->agent.metrics_file);
    free(cfg->agent.alert_command);
    free(cfg->path);
    free(cfg);
}

static pj_rc
load_buffer(const char *text, size_t len, const char *name,
            struct pj_config **cfgp, struct pj_err *err)
{
    struct pj_config *cfg = NULL;
    struct cfg_ctx c;
    int line;
    pj_rc rc;

    *cfgp = NULL;
    if ((cfg = calloc(1, sizeof(*cfg))) == NULL ||
        (cfg->path = strdup(name)) == NULL) {
        free(cfg);
        return pj_err_set(err, PJ_ERR_NOMEM, "%s: out of memory", name);
    }
    cfg->agent.warn_days = PJ_WARN_DAYS_DEFAULT;
    cfg->agent.critical_days = PJ_CRITICAL_DAYS_DEFAULT;
    cfg->agent.monitor_interval = PJ_MONITOR_INTERVAL_DEFAULT_S;
    cfg->agent.alert_timeout = PJ_ALERT_TIMEOUT_DEFAULT_S;
    memset(&c, 0, sizeof(c));
    c.cfg = cfg;
    c.err = err;
    c.pos = text;
    c.end = text + len;
    if (len > PJ_CONFIG_MAX_BYTES) {
        rc = pj_err_set(err, PJ_ERR_LIMIT, "%s: larger than %d bytes", name,
                        PJ_CONFIG_MAX_BYTES);
        goto out;
    }
    line = ini_parse_stream(cfg_reader, &c, cfg_handler, &c);
    if (c.rc == PJ_OK && line > 0) {
        c.line = (unsigned)line;
        cfg_fail(&c, PJ_ERR_CONFIG,
                 "expected 'key = value', '[section]' or a comment");
    } else if (c.rc == PJ_OK && line < 0) {
        cfg_fail(&c, PJ_ERR_NOMEM, "out of memory while parsing");
    }
    section_finish(&c);
    if (c.rc == PJ_OK && cfg->agent.socket == NULL &&
        (cfg->agent.socket = strdup(PJ_CONFIG_DEFAULT_SOCKET)) == NULL) {
        cfg_fail(&c, PJ_ERR_NOMEM, "out of memory");
    }
    rc = c.rc;
    if (rc != PJ_OK) {
        goto out;
    }
    *cfgp = cfg;
    cfg = NULL;
out:
    pj_config_free(cfg);
    return rc;
}

pj_rc
pj_config_load_string(const char *text, const char *name,
                      struct pj_config **cfgp, struct pj_err *err)
{
    return load_buffer(text, strlen(text), name, cfgp, err);
}

pj_rc
pj_config_load_file(const char *path, struct pj_config **cfgp,
                    struct pj_err *err)
{
    uint8_t *data = NULL;
    size_t len = 0;
    pj_rc rc;

    *cfgp = NULL;
    rc = pj_file_read(path, PJ_CONFIG_MAX_BYTES, &data, &len, err);
    if (rc != PJ_OK) {
        return rc;
    }
    rc = load_buffer((const char *)data, len, path, cfgp, err);
    free(data);
    return rc;
}

const char *
pj_config_path_resolve(const char *explicit_path)
{
    const char *env = getenv(PJ_CONFIG_ENV);

    if (explicit_path != NULL) {
        return explicit_path;
    }
    return env != NULL && env[0] != '\0' ? env : PJ_CONFIG_DEFAULT_PATH;
}

const struct pj_profile *
pj_config_profile(const struct pj_config *cfg, const char *name)
{
    size_t i;

    for (i = 0; cfg != NULL && name != NULL && i < cfg->n_profiles; i++) {
        if (strcmp(cfg->profiles[i].name, name) == 0) {
            return &cfg->profiles[i];
        }
    }
    return NULL;
}

pj_rc
pj_config_profile_select(const struct pj_config *cfg, const char *name,
                         const struct pj_profile **profp, struct pj_err *err)
{
    char names[256];
    size_t i, off = 0;

    *profp = NULL;
    if (cfg->n_profiles == 0) {
        return pj_err_set(err, PJ_ERR_NOT_FOUND,
                          "%s has no [profile NAME] section", cfg->path);
    }
    if (name == NULL && cfg->n_profiles == 1) {
        *profp = &cfg->profiles[0];
        return PJ_OK;
    }
    if (name != NULL && (*profp = pj_config_profile(cfg, name)) != NULL) {
        return PJ_OK;
    }
    names[0] = '\0';
    for (i = 0; i < cfg->n_profiles && off < sizeof(names); i++) {
        int n = snprintf(names + off, sizeof(names) - off, "%s%s",
                         i > 0 ? ", " : "", cfg->profiles[i].name);
        if (n < 0) {
            break;
        }
        off += (size_t)n;
    }
    if (name == NULL) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "%s has several profiles (%s): choose one with "
                          "--profile",
                          cfg->path, names);
    }
    return pj_err_set(err, PJ_ERR_NOT_FOUND,
                      "no [profile %s] in %s (profiles: %s)", name, cfg->path,
                      names);
}

static bool
str_eq(const char *a, const char *b)
{
    if (a == NULL || b == NULL) {
        return a == b;
    }
    return strcmp(a, b) == 0;
}

static bool
list_eq(char **a, size_t na, char **b, size_t nb)
{
    size_t i;

    if (na != nb) {
        return false;
    }
    for (i = 0; i < na; i++) {
        if (!str_eq(a[i], b[i])) {
            return false;
        }
    }
    return true;
}

bool
pj_profile_equal(const struct pj_profile *a, const struct pj_profile *b)
{
    return str_eq(a->name, b->name) && str_eq(a->key, b->key) &&
           str_eq(a->cert, b->cert) && str_eq(a->pin_source, b->pin_source) &&
           str_eq(a->client_id, b->client_id) &&
           str_eq(a->subject, b->subject) &&
           list_eq(a->subjects, a->n_subjects, b->subjects, b->n_subjects) &&
           str_eq(a->login_url, b->login_url) &&
           str_eq(a->audience, b->audience) &&
           a->audience_configured == b->audience_configured &&
           a->session_lifetime == b->session_lifetime &&
           a->assertion_lifetime == b->assertion_lifetime &&
           a->n_allow_uid == b->n_allow_uid &&
           (a->n_allow_uid == 0 ||
            memcmp(a->allow_uid, b->allow_uid,
                   a->n_allow_uid * sizeof(uid_t)) == 0) &&
           a->n_allow_gid == b->n_allow_gid &&
           (a->n_allow_gid == 0 ||
            memcmp(a->allow_gid, b->allow_gid,
                   a->n_allow_gid * sizeof(gid_t)) == 0) &&
           list_eq(a->allow_exe, a->n_allow_exe, b->allow_exe,
                   b->n_allow_exe) &&
           str_eq(a->ca_file, b->ca_file) &&
           a->connect_timeout == b->connect_timeout &&
           a->timeout == b->timeout && a->warn_days == b->warn_days &&
           a->critical_days == b->critical_days;
}

bool
pj_config_agent_equal(const struct pj_config_agent *a,
                      const struct pj_config_agent *b)
{
    return str_eq(a->socket, b->socket) &&
           str_eq(a->socket_group, b->socket_group) &&
           str_eq(a->module, b->module) &&
           str_eq(a->metrics_file, b->metrics_file) &&
           str_eq(a->alert_command, b->alert_command) &&
           a->warn_days == b->warn_days && a->critical_days == b->critical_days;
}

pj_rc
pj_profile_subject(const struct pj_profile *prof, const char *subject,
                   const char **subp, struct pj_err *err)
{
    size_t i;

    *subp = NULL;
    if (subject == NULL || strcmp(subject, prof->subject) == 0) {
        *subp = prof->subject;
        return PJ_OK;
    }
    for (i = 0; i < prof->n_subjects; i++) {
        if (strcmp(subject, prof->subjects[i]) == 0) {
            *subp = prof->subjects[i];
            return PJ_OK;
        }
    }
    return pj_err_set(err, PJ_ERR_DENIED,
                      "subject '%s' is not allowed for profile %s: add it to "
                      "'subjects' in [profile %s]",
                      subject, prof->name, prof->name);
}
