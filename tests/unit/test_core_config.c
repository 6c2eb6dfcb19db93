/* SPDX-License-Identifier: Apache-2.0 */
/*
 * core/pj_config.c: a full config loads with its defaults; every kind of
 * bad input is refused with file:line and the key; URL and aud rules;
 * profile selection and equality (agent reload).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/pj_config.h"
#include "core/pj_util.h"

#define MIN_PROFILE                                                            \
    "[profile prod]\n"                                                         \
    "key = pkcs11:token=prod;object=sf-jwt;type=private\n"                     \
    "client-id = 3MVG9abc\n"                                                   \
    "subject = integration@example.com\n"

static const char full[] =
    "; comment\n"
    "# another comment\n"
    "[agent]\n"
    "socket = /run/p11jwt/agent.sock   ; dir 0750\n"
    "socket-group = p11jwt\n"
    "module = /usr/lib/softhsm/libsofthsm2.so\n"
    "metrics-file = /var/lib/prometheus/node-exporter/p11jwt.prom\n"
    "alert-command = /usr/local/libexec/p11jwt-alert\n"
    "warn-days = 40\n"
    "critical-days = 10\n"
    "monitor-interval = 600\n"
    "alert-timeout = 45\n"
    "\n"
    "[profile prod]\n"
    "key = pkcs11:token=prod;object=sf-jwt;type=private\n"
    "cert = pkcs11:token=prod;object=sf-jwt;type=cert\n"
    "pin-source = file:/etc/p11jwt/prod.pin\n"
    "client-id = 3MVG9abc\n"
    "subject = integration@example.com\n"
    "subjects = etl@example.com, sync@example.com\n"
    "login-url = https://acme.my.salesforce.com/\n"
    "audience = https://login.salesforce.com\n"
    "session-lifetime = 3600\n"
    "assertion-lifetime = 120\n"
    "allow-uid = root, 1001\n"
    "allow-gid = root\n"
    "allow-exe = /usr/bin/python3, /opt/etl/bin/run\n"
    "ca-file = /etc/ssl/certs/ca-certificates.crt\n"
    "connect-timeout = 5\n"
    "timeout = 20\n"
    "\n"
    "[profile sandbox]\n"
    "key = pkcs11:token=sb;object=k\n"
    "client-id = 3MVG9sb\n"
    "subject = x@example.com.uat\n"
    "login-url = https://acme--uat.sandbox.my.salesforce.com\n"
    "critical-days = 3\n";

static void
test_full_config(void **state)
{
    struct pj_config *cfg = NULL;
    struct pj_err err = {0};
    const struct pj_profile *p, *s;

    (void)state;
    assert_int_equal(pj_config_load_string(full, "p11jwt.conf", &cfg, &err),
                     PJ_OK);
    assert_string_equal(cfg->agent.socket, "/run/p11jwt/agent.sock");
    assert_string_equal(cfg->agent.socket_group, "p11jwt");
    assert_string_equal(cfg->agent.module, "/usr/lib/softhsm/libsofthsm2.so");
    assert_int_equal(cfg->agent.warn_days, 40);
    assert_int_equal(cfg->agent.critical_days, 10);
    assert_int_equal(cfg->agent.monitor_interval, 600);
    assert_int_equal(cfg->agent.alert_timeout, 45);
    assert_int_equal(cfg->n_profiles, 2);
    p = pj_config_profile(cfg, "prod");
    assert_non_null(p);
    assert_int_equal(p->line, 14);
    assert_string_equal(p->pin_source, "file:/etc/p11jwt/prod.pin");
    assert_int_equal(p->n_subjects, 2);
    assert_string_equal(p->subjects[1], "sync@example.com");
    /* The trailing slash is dropped so the token URL is well formed. */
    assert_string_equal(p->login_url, "https://acme.my.salesforce.com");
    assert_string_equal(p->audience, "https://login.salesforce.com");
    assert_true(p->audience_configured);
    assert_int_equal(p->session_lifetime, 3600);
    assert_int_equal(p->assertion_lifetime, 120);
    assert_int_equal(p->n_allow_uid, 2);
    assert_int_equal(p->allow_uid[0], 0); /* root resolved at load */
    assert_int_equal(p->allow_uid[1], 1001);
    assert_int_equal(p->n_allow_gid, 1);
    assert_int_equal(p->allow_gid[0], 0);
    assert_int_equal(p->n_allow_exe, 2);
    assert_string_equal(p->allow_exe[1], "/opt/etl/bin/run");
    assert_int_equal(p->connect_timeout, 5);
    assert_int_equal(p->timeout, 20);
    assert_int_equal(p->warn_days, 40); /* inherited from [agent] */
    s = pj_config_profile(cfg, "sandbox");
    assert_non_null(s);
    assert_string_equal(s->audience, "https://test.salesforce.com");
    assert_false(s->audience_configured);
    assert_int_equal(s->critical_days, 3);
    assert_int_equal(s->assertion_lifetime, PJ_ASSERTION_LIFETIME_DEFAULT_S);
    assert_int_equal(s->session_lifetime, PJ_SESSION_LIFETIME_DEFAULT_S);
    assert_null(s->ca_file);
    assert_null(pj_config_profile(cfg, "nope"));
    pj_config_free(cfg);
}

static void
test_defaults(void **state)
{
    struct pj_config *cfg = NULL;
    struct pj_err err = {0};
    const struct pj_profile *p;

    (void)state;
    assert_int_equal(pj_config_load_string(MIN_PROFILE, "m.conf", &cfg, &err),
                     PJ_OK);
    assert_string_equal(cfg->agent.socket, PJ_CONFIG_DEFAULT_SOCKET);
    assert_null(cfg->agent.module);
    assert_int_equal(cfg->agent.line, 0);
    p = &cfg->profiles[0];
    assert_string_equal(p->login_url, "https://login.salesforce.com");
    assert_string_equal(p->audience, "https://login.salesforce.com");
    assert_int_equal(p->connect_timeout, PJ_CONNECT_TIMEOUT_DEFAULT_S);
    assert_int_equal(p->timeout, PJ_TIMEOUT_DEFAULT_S);
    assert_int_equal(p->warn_days, PJ_WARN_DAYS_DEFAULT);
    assert_int_equal(p->critical_days, PJ_CRITICAL_DAYS_DEFAULT);
    assert_int_equal(p->n_allow_uid + p->n_allow_gid + p->n_allow_exe, 0);
    pj_config_free(cfg);
}

/* text must fail with exactly this message. */
static void
expect_error(const char *text, const char *msg)
{
    struct pj_config *cfg = (struct pj_config *)1;
    struct pj_err err = {0};

    assert_int_not_equal(pj_config_load_string(text, "p11jwt.conf", &cfg, &err),
                         PJ_OK);
    assert_null(cfg);
    if (strncmp(err.msg, msg, strlen(msg)) != 0) {
        fail_msg("got  '%s'\nwant '%s'", err.msg, msg);
    }
}

static void
test_errors_name_file_line_key(void **state)
{
    (void)state;
    expect_error(MIN_PROFILE "audiance = https://login.salesforce.com\n",
                 "p11jwt.conf:5: unknown key 'audiance' in [profile prod]");
    expect_error("[agent]\nsockit = /x\n",
                 "p11jwt.conf:2: unknown key 'sockit' in [agent]");
    expect_error(MIN_PROFILE "pin = 1234\n",
                 "p11jwt.conf:5: key 'pin' in [profile prod] is refused: the "
                 "PIN never goes in the config");
    expect_error("[profile prod]\n"
                 "key = pkcs11:token=prod;object=k;pin-value=1234\n",
                 "p11jwt.conf:2: the key URI in [profile prod] carries "
                 "pin-value");
    expect_error("key = x\n", "p11jwt.conf:1: key 'key' outside a section");
    expect_error("[profiles prod]\nkey = x\n",
                 "p11jwt.conf:1: unknown section [profiles prod]");
    expect_error("[profile a b]\n", "p11jwt.conf:1: bad profile name 'a b'");
    expect_error(MIN_PROFILE MIN_PROFILE,
                 "p11jwt.conf:5: second [profile prod] section (the first is "
                 "on line 1)");
    expect_error("[agent]\n[agent]\n", "p11jwt.conf:2: second [agent] section");
    expect_error(MIN_PROFILE "client-id = again\n",
                 "p11jwt.conf:5: key 'client-id' given twice");
    expect_error(MIN_PROFILE "this is not a key\n",
                 "p11jwt.conf:5: expected 'key = value'");
    expect_error("[agent\n", "p11jwt.conf:1: expected 'key = value'");
    expect_error(MIN_PROFILE "ca-file =\n",
                 "p11jwt.conf:5: empty value for ca-file");
}

static void
test_missing_required(void **state)
{
    (void)state;
    expect_error("[agent]\nwarn-days = 50\n\n[profile p]\nclient-id = c\n"
                 "subject = s\n",
                 "p11jwt.conf:4: missing key 'key' in [profile p]");
    expect_error("[profile p]\nkey = pkcs11:object=k\nsubject = s\n",
                 "p11jwt.conf:1: missing key 'client-id' in [profile p]");
    expect_error("[profile p]\nkey = pkcs11:object=k\nclient-id = c\n"
                 "[profile q]\n",
                 "p11jwt.conf:1: missing key 'subject' in [profile p]");
    /* An empty profile at the end of the file. */
    expect_error(MIN_PROFILE "[profile q]\n",
                 "p11jwt.conf:5: missing key 'key' in [profile q]");
}

static void
test_bad_values(void **state)
{
    (void)state;
    expect_error(MIN_PROFILE "assertion-lifetime = 301\n",
                 "p11jwt.conf:5: bad value '301' for assertion-lifetime in "
                 "[profile prod]: seconds from 30 to 300 (Salesforce rejects");
    expect_error(MIN_PROFILE "assertion-lifetime = 3m\n",
                 "p11jwt.conf:5: bad value '3m' for assertion-lifetime");
    expect_error(MIN_PROFILE "session-lifetime = -1\n",
                 "p11jwt.conf:5: bad value '-1' for session-lifetime");
    expect_error(MIN_PROFILE "timeout = 0\n",
                 "p11jwt.conf:5: bad value '0' for timeout");
    expect_error(MIN_PROFILE "connect-timeout = 40\ntimeout = 30\n",
                 "p11jwt.conf:1: connect-timeout (40) is larger than timeout");
    expect_error("[agent]\nwarn-days = 5\ncritical-days = 9\n",
                 "p11jwt.conf:1: critical-days (9) is larger than warn-days");
    expect_error(MIN_PROFILE "warn-days = 99999\n",
                 "p11jwt.conf:5: bad value '99999' for warn-days");
    expect_error("[agent]\nmonitor-interval = 59\n",
                 "p11jwt.conf:2: bad value '59' for monitor-interval");
    expect_error("[agent]\nmonitor-interval = 86401\n",
                 "p11jwt.conf:2: bad value '86401' for monitor-interval");
    expect_error("[agent]\nmonitor-interval = 1h\n",
                 "p11jwt.conf:2: bad value '1h' for monitor-interval");
    expect_error("[agent]\nalert-timeout = 0\n",
                 "p11jwt.conf:2: bad value '0' for alert-timeout");
    expect_error("[agent]\nalert-timeout = 3601\n",
                 "p11jwt.conf:2: bad value '3601' for alert-timeout");
    expect_error("[profile p]\nkey = /tmp/key.pem\n",
                 "p11jwt.conf:2: bad value '/tmp/key.pem' for key in "
                 "[profile p]: a pkcs11: URI");
    expect_error(MIN_PROFILE "cert = cert.pem\n",
                 "p11jwt.conf:5: bad value 'cert.pem' for cert");
    expect_error(MIN_PROFILE "pin-source = /etc/pin\n",
                 "p11jwt.conf:5: bad value '/etc/pin' for pin-source");
    expect_error(MIN_PROFILE "pin-source = file:relative.pin\n",
                 "p11jwt.conf:5: bad value 'file:relative.pin' for "
                 "pin-source");
    expect_error(MIN_PROFILE "ca-file = certs.pem\n",
                 "p11jwt.conf:5: bad value 'certs.pem' for ca-file in "
                 "[profile prod]: an absolute path");
    expect_error("[profile p]\nclient-id = has space\n",
                 "p11jwt.conf:2: bad value 'has space' for client-id");
    expect_error(MIN_PROFILE "subjects = a@x.com, b c@x.com\n",
                 "p11jwt.conf:5: bad entry 'b c@x.com' in subjects");
    expect_error(MIN_PROFILE "subjects = a@x.com,,b@x.com\n",
                 "p11jwt.conf:5: bad entry '' in subjects");
    expect_error(MIN_PROFILE "allow-uid = no-such-user-p11jwt\n",
                 "p11jwt.conf:5: allow-uid in [profile prod]: no user "
                 "'no-such-user-p11jwt'");
    expect_error(MIN_PROFILE "allow-gid = no-such-group-p11jwt\n",
                 "p11jwt.conf:5: allow-gid in [profile prod]: no group "
                 "'no-such-group-p11jwt'");
    expect_error(MIN_PROFILE "allow-exe = python3\n",
                 "p11jwt.conf:5: bad entry 'python3' in allow-exe");
    expect_error("[agent]\nmodule = libsofthsm2.so\n",
                 "p11jwt.conf:2: bad value 'libsofthsm2.so' for module in "
                 "[agent]: an absolute path");
}

static void
test_urls(void **state)
{
    (void)state;
    expect_error(MIN_PROFILE "login-url = http://login.salesforce.com\n",
                 "p11jwt.conf:5: login-url 'http://login.salesforce.com' is "
                 "refused: Salesforce token requests must use https://");
    expect_error(MIN_PROFILE "login-url = https://na1.salesforce.com\n",
                 "p11jwt.conf:5: login-url 'https://na1.salesforce.com' is a "
                 "legacy instance host");
    expect_error(MIN_PROFILE "login-url = https://cs42.salesforce.com\n",
                 "p11jwt.conf:5: login-url 'https://cs42.salesforce.com' is a "
                 "legacy instance host");
    expect_error(MIN_PROFILE "login-url = https://acme.lightning.force.com\n",
                 "p11jwt.conf:5: login-url 'https://acme.lightning.force.com' "
                 "is the Lightning UI host");
    expect_error(MIN_PROFILE "login-url = login.salesforce.com\n",
                 "p11jwt.conf:5: login-url 'login.salesforce.com' is not an "
                 "https:// URL");
    expect_error(MIN_PROFILE "login-url = https://u:p@x.com\n",
                 "p11jwt.conf:5: login-url must not contain a user name");
    expect_error(MIN_PROFILE "login-url = https://x.com/a?b=c\n",
                 "p11jwt.conf:5: login-url 'https://x.com/a?b=c' must not "
                 "have a query");
    expect_error(MIN_PROFILE "login-url = https://x.com:99999\n",
                 "p11jwt.conf:5: login-url 'https://x.com:99999' has a bad "
                 "port");
    expect_error(MIN_PROFILE "login-url = https://\n",
                 "p11jwt.conf:5: login-url 'https://' has no valid host");
    expect_error(MIN_PROFILE "audience = http://login.salesforce.com\n",
                 "p11jwt.conf:5: audience 'http://login.salesforce.com' is "
                 "refused");
    /* na1 is fine as an aud check target (not a login host rule). */
    assert_int_equal(
        pj_config_url_check("https://127.0.0.1:8443", "login-url", true, NULL),
        PJ_OK);
    assert_int_equal(pj_config_url_check("https://acme.my.site.com/customers",
                                         "login-url", true, NULL),
                     PJ_OK);
}

static void
test_default_audience(void **state)
{
    static const struct {
        const char *login, *aud;
    } v[] = {
        {"https://login.salesforce.com", "https://login.salesforce.com"},
        {"https://test.salesforce.com", "https://test.salesforce.com"},
        {"https://acme.my.salesforce.com", "https://login.salesforce.com"},
        {"https://ACME.My.Salesforce.com", "https://login.salesforce.com"},
        {"https://acme--uat.sandbox.my.salesforce.com",
         "https://test.salesforce.com"},
        {"https://x-dev-ed.scratch.my.salesforce.com",
         "https://test.salesforce.com"},
        {"https://acme.my.site.com", "https://acme.my.site.com"},
        {"https://127.0.0.1:8443", "https://127.0.0.1:8443"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < PJ_ARRAY_SIZE(v); i++) {
        char *aud = pj_config_default_audience(v[i].login);
        assert_non_null(aud);
        assert_string_equal(aud, v[i].aud);
        free(aud);
    }
}

static void
test_long_line_and_nul(void **state)
{
    char text[600];
    struct pj_config *cfg = NULL;
    struct pj_err err = {0};
    const char with_nul[] = "[agent]\nsocket = /a\0b\n";

    (void)state;
    snprintf(text, sizeof(text), MIN_PROFILE "cert = /%0300d\n", 0);
    expect_error(text, "p11jwt.conf:5: line longer than");
    /* Loaded from a file so the NUL byte is really there. */
    {
        char path[] = "/tmp/p11jwt-cfg-XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, with_nul, sizeof(with_nul) - 1),
                         (ssize_t)(sizeof(with_nul) - 1));
        close(fd);
        assert_int_not_equal(pj_config_load_file(path, &cfg, &err), PJ_OK);
        assert_non_null(strstr(err.msg, ":2: NUL byte"));
        assert_non_null(strstr(err.msg, path));
        unlink(path);
    }
    pj_err_clear(&err);
    assert_int_not_equal(
        pj_config_load_file("/nonexistent/p11jwt.conf", &cfg, &err), PJ_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/p11jwt.conf"));
}

static void
test_select_profile(void **state)
{
    struct pj_config *one = NULL, *two = NULL, *none = NULL;
    const struct pj_profile *p = NULL;
    struct pj_err err = {0};

    (void)state;
    assert_int_equal(pj_config_load_string(MIN_PROFILE, "a", &one, &err),
                     PJ_OK);
    assert_int_equal(pj_config_load_string(full, "b", &two, &err), PJ_OK);
    assert_int_equal(pj_config_load_string("[agent]\n", "c", &none, &err),
                     PJ_OK);
    assert_int_equal(pj_config_profile_select(one, NULL, &p, &err), PJ_OK);
    assert_string_equal(p->name, "prod");
    assert_int_equal(pj_config_profile_select(two, "sandbox", &p, &err), PJ_OK);
    assert_string_equal(p->name, "sandbox");
    assert_int_equal(pj_config_profile_select(two, NULL, &p, &err),
                     PJ_ERR_INVALID);
    assert_null(p);
    assert_non_null(strstr(err.msg, "prod, sandbox"));
    assert_non_null(strstr(err.msg, "--profile"));
    pj_err_clear(&err);
    assert_int_equal(pj_config_profile_select(two, "qa", &p, &err),
                     PJ_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, "no [profile qa]"));
    pj_err_clear(&err);
    assert_int_equal(pj_config_profile_select(none, NULL, &p, &err),
                     PJ_ERR_NOT_FOUND);
    pj_config_free(one);
    pj_config_free(two);
    pj_config_free(none);
}

static void
test_profile_equal(void **state)
{
    struct pj_config *a = NULL, *b = NULL, *c = NULL;
    struct pj_err err = {0};
    char changed[sizeof(full) + 64];
    char *pos;

    (void)state;
    assert_int_equal(pj_config_load_string(full, "a", &a, &err), PJ_OK);
    /* Same content on other lines: equal. */
    snprintf(changed, sizeof(changed), "\n\n%s", full);
    assert_int_equal(pj_config_load_string(changed, "b", &b, &err), PJ_OK);
    assert_true(pj_profile_equal(&a->profiles[0], &b->profiles[0]));
    assert_true(pj_profile_equal(&a->profiles[1], &b->profiles[1]));
    assert_true(pj_config_agent_equal(&a->agent, &b->agent));
    /* One value changed in prod: prod differs, sandbox does not. */
    snprintf(changed, sizeof(changed), "%s", full);
    pos = strstr(changed, "timeout = 20");
    pos[10] = '9';
    assert_int_equal(pj_config_load_string(changed, "c", &c, &err), PJ_OK);
    assert_false(pj_profile_equal(&a->profiles[0], &c->profiles[0]));
    assert_true(pj_profile_equal(&a->profiles[1], &c->profiles[1]));
    assert_false(pj_profile_equal(&a->profiles[0], &a->profiles[1]));
    pj_config_free(c);
    c = NULL;
    snprintf(changed, sizeof(changed), "%s", full);
    pos = strstr(changed, "warn-days = 40");
    pos[12] = '5';
    assert_int_equal(pj_config_load_string(changed, "c", &c, &err), PJ_OK);
    assert_false(pj_config_agent_equal(&a->agent, &c->agent));
    pj_config_free(a);
    pj_config_free(b);
    pj_config_free(c);
}

static void
test_path_resolve(void **state)
{
    (void)state;
    unsetenv(PJ_CONFIG_ENV);
    assert_string_equal(pj_config_path_resolve(NULL), PJ_CONFIG_DEFAULT_PATH);
    setenv(PJ_CONFIG_ENV, "/tmp/x.conf", 1);
    assert_string_equal(pj_config_path_resolve(NULL), "/tmp/x.conf");
    assert_string_equal(pj_config_path_resolve("/y.conf"), "/y.conf");
    setenv(PJ_CONFIG_ENV, "", 1);
    assert_string_equal(pj_config_path_resolve(NULL), PJ_CONFIG_DEFAULT_PATH);
    unsetenv(PJ_CONFIG_ENV);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_config),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_errors_name_file_line_key),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_urls),
        cmocka_unit_test(test_default_audience),
        cmocka_unit_test(test_long_line_and_nul),
        cmocka_unit_test(test_select_profile),
        cmocka_unit_test(test_profile_equal),
        cmocka_unit_test(test_path_resolve),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
