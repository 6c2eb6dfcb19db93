/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The configuration file (DESIGN.md 3.1): one optional [agent] section and
 * one [profile NAME] section per Salesforce identity, parsed with libinih.
 *
 * Loading validates everything a person could get wrong and refuses the
 * whole file on the first problem, naming the file, the line and the key:
 *   "p11jwt.conf:12: unknown key 'audiance' in [profile prod]"
 * Unknown sections and keys, bad values, duplicate keys and missing required
 * keys are errors. A `pin` key is refused: the PIN never lives in the config
 * (use pin-source). Defaults are filled in at load, and user/group names in
 * allow-uid/allow-gid are resolved to numbers at load, so a loaded config is
 * plain data: the agent can compare two of them on SIGHUP without touching
 * the system again.
 *
 * Lines are limited to PJ_CONFIG_LINE_MAX - 1 characters (libinih's line
 * buffer); a longer line is an error, never silently split.
 */
#ifndef PJ_CONFIG_H
#define PJ_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/pj_err.h"

#define PJ_CONFIG_DEFAULT_PATH "/etc/p11jwt/p11jwt.conf"
#define PJ_CONFIG_ENV "P11JWT_CONFIG"
#define PJ_CONFIG_MAX_BYTES (1024 * 1024) /* a config file is small */
#define PJ_CONFIG_LINE_MAX 200            /* libinih INI_MAX_LINE */

#define PJ_CONFIG_DEFAULT_SOCKET "/run/p11jwt/agent.sock"
#define PJ_CONFIG_DEFAULT_LOGIN_URL "https://login.salesforce.com"
#define PJ_CONFIG_TEST_LOGIN_URL "https://test.salesforce.com"

/* Assertion lifetime (exp - now), seconds: Salesforce allows 3-5 minutes. */
#define PJ_ASSERTION_LIFETIME_DEFAULT_S 180
#define PJ_ASSERTION_LIFETIME_MIN_S 30
#define PJ_ASSERTION_LIFETIME_MAX_S 300
/* The org's session timeout, which is the access token's lifetime. */
#define PJ_SESSION_LIFETIME_DEFAULT_S 7200
#define PJ_SESSION_LIFETIME_MIN_S 300
#define PJ_SESSION_LIFETIME_MAX_S 86400
#define PJ_CONNECT_TIMEOUT_DEFAULT_S 10
#define PJ_TIMEOUT_DEFAULT_S 30
#define PJ_TIMEOUT_MAX_S 300
#define PJ_WARN_DAYS_DEFAULT 30
#define PJ_CRITICAL_DAYS_DEFAULT 7
#define PJ_DAYS_MAX 3650
#define PJ_MONITOR_INTERVAL_DEFAULT_S 3600 /* certificate re-check */
#define PJ_MONITOR_INTERVAL_MIN_S 60
#define PJ_MONITOR_INTERVAL_MAX_S 86400
#define PJ_ALERT_TIMEOUT_DEFAULT_S 30 /* alert-command is killed after */
#define PJ_ALERT_TIMEOUT_MAX_S 3600

#define PJ_PROFILE_NAME_MAX                                                    \
    40 /* [A-Za-z0-9._-]; libinih keeps 49 bytes of "profile NAME" */
#define PJ_CONFIG_LIST_MAX 64 /* entries in subjects, allow-* lists */

/* [agent]: every string is NULL when not set unless a default is noted. */
struct pj_config_agent {
    char *socket;          /* default PJ_CONFIG_DEFAULT_SOCKET; absolute */
    char *socket_group;    /* group name owning the socket; NULL = agent's */
    char *module;          /* PKCS#11 module path; absolute; NULL = unset */
    char *metrics_file;    /* Prometheus textfile; absolute; NULL = none */
    char *alert_command;   /* absolute program path; NULL = none */
    long warn_days;        /* default PJ_WARN_DAYS_DEFAULT */
    long critical_days;    /* default PJ_CRITICAL_DAYS_DEFAULT; <= warn */
    long monitor_interval; /* s between certificate checks */
    long alert_timeout;    /* s before a running alert-command is killed */
    unsigned line;         /* line of the [agent] header; 0 if absent */
};

/*
 * [profile NAME]. Required: key, client-id, subject. Strings not marked
 * "may be NULL" are always set after a successful load.
 */
struct pj_profile {
    char *name;
    char *key;        /* pkcs11: URI of the private key */
    char *cert;       /* pkcs11: URI or absolute PEM path; may be NULL */
    char *pin_source; /* file:PATH | env:NAME | systemd:NAME; may be NULL */
    char *client_id;  /* JWT iss: the app's consumer key */
    char *subject;    /* default JWT sub (a Salesforce username) */
    char **subjects;  /* other subs callers may ask for */
    size_t n_subjects;
    /*
     * Token host, https only, no query or fragment, no trailing slash.
     * Default PJ_CONFIG_DEFAULT_LOGIN_URL. Legacy instance hosts (na1.,
     * cs42.salesforce.com ...) are refused.
     */
    char *login_url;
    /*
     * JWT aud, one https URL. When not configured: login-url, except for a
     * My Domain (*.my.salesforce.com -> https://login.salesforce.com,
     * *.sandbox.my.salesforce.com -> https://test.salesforce.com).
     */
    char *audience;
    bool audience_configured; /* audience came from the file */
    long session_lifetime;    /* seconds; default 7200 */
    long assertion_lifetime;  /* seconds; default 180, at most 300 */
    uid_t *allow_uid;         /* names resolved at load */
    size_t n_allow_uid;
    gid_t *allow_gid; /* names resolved at load */
    size_t n_allow_gid;
    char **allow_exe; /* absolute executable paths */
    size_t n_allow_exe;
    char *ca_file;        /* CA bundle for TLS; may be NULL (system) */
    long connect_timeout; /* seconds; default 10 */
    long timeout;         /* seconds, whole exchange; default 30 */
    long warn_days;       /* default: [agent] warn-days */
    long critical_days;   /* default: [agent] critical-days */
    unsigned line;        /* line of the [profile NAME] header */
};

struct pj_config {
    char *path; /* the name used in messages (file path or test name) */
    struct pj_config_agent agent;
    struct pj_profile *profiles; /* in file order */
    size_t n_profiles;
};

/*
 * The config path to use: explicit if not NULL, else $P11JWT_CONFIG if set
 * and not empty, else PJ_CONFIG_DEFAULT_PATH. The result is borrowed.
 */
const char *pj_config_path_resolve(const char *explicit_path);

/*
 * Load and validate a config file (at most PJ_CONFIG_MAX_BYTES). On success
 * *cfgp is new; on failure it is NULL and err names file:line:key.
 */
PJ_MUST_USE pj_rc pj_config_load_file(const char *path, struct pj_config **cfgp,
                                      struct pj_err *err);

/*
 * The same from a NUL-terminated string (tests, fuzzing); name is what
 * messages call the file ("test.conf").
 */
PJ_MUST_USE pj_rc pj_config_load_string(const char *text, const char *name,
                                        struct pj_config **cfgp,
                                        struct pj_err *err);

/* Free a config; NULL is a no-op. */
void pj_config_free(struct pj_config *cfg);

/* The profile called name, or NULL. The result is borrowed from cfg. */
const struct pj_profile *pj_config_profile(const struct pj_config *cfg,
                                           const char *name);

/*
 * The profile a command means: name if not NULL, else the only profile.
 * Errors: no such profile (listing those present), no profiles, or more
 * than one profile and no name.
 */
PJ_MUST_USE pj_rc pj_config_profile_select(const struct pj_config *cfg,
                                           const char *name,
                                           const struct pj_profile **profp,
                                           struct pj_err *err);

/*
 * True when two profiles mean the same thing (every field compared, line
 * numbers ignored): on reload the agent keeps the cached tokens of profiles
 * that compare equal.
 */
bool pj_profile_equal(const struct pj_profile *a, const struct pj_profile *b);

/* The same for [agent] (line numbers ignored). */
bool pj_config_agent_equal(const struct pj_config_agent *a,
                           const struct pj_config_agent *b);

/*
 * The JWT sub to use: subject if NULL, else subject itself when it is the
 * profile's subject or one of its subjects; otherwise PJ_ERR_DENIED naming
 * the profile. *subp is borrowed from the profile or is subject.
 */
PJ_MUST_USE pj_rc pj_profile_subject(const struct pj_profile *prof,
                                     const char *subject, const char **subp,
                                     struct pj_err *err);

/*
 * URL rules shared by the config and the salesforce/ room.
 *
 * pj_config_url_check: url is "https://HOST[:PORT][/PATH]" with a DNS host
 * name (letters, digits, '-', '.') or "localhost"/an IPv4 literal, no user
 * info, query or fragment. what names the key in messages. Refuses http://
 * and legacy Salesforce instance hosts when login is true.
 */
PJ_MUST_USE pj_rc pj_config_url_check(const char *url, const char *what,
                                      bool login, struct pj_err *err);

/*
 * The default aud for a login URL (already checked): a new string, or NULL
 * on allocation failure.
 */
char *pj_config_default_audience(const char *login_url);

#endif
