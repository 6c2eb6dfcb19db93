/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Prometheus text file (agent/agent_metrics.c): families with HELP and
 * TYPE, exact sample lines, label escaping, the atomic write.
 *
 * `test_agent_metrics --write-sample FILE` writes the nastiest sample we
 * have and exits: tests/integration/test_metrics_promtool.sh feeds it to
 * promtool.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include <cmocka.h>

#include "agent/agent_metrics.h"
#include "core/pj_util.h"

static const char *const families[][2] = {
    {"p11jwt_cert_not_after", "gauge"},
    {"p11jwt_cert_not_before", "gauge"},
    {"p11jwt_cert_expired", "gauge"},
    {"p11jwt_cert_key_match", "gauge"},
    {"p11jwt_token_requests_total", "counter"},
    {"p11jwt_signatures_total", "counter"},
    {"p11jwt_ipc_requests_total", "counter"},
    {"p11jwt_clock_skew_seconds", "gauge"},
    {"p11jwt_hsm_up", "gauge"},
};

static struct agent_metrics_profile sample_profiles[2];
static struct agent_metrics_ipc sample_ipc[2];

static void
sample(struct agent_metrics *m)
{
    struct agent_metrics_profile *p = sample_profiles;

    memset(sample_profiles, 0, sizeof(sample_profiles));
    p[0].name = "prod";
    p[0].cert[AGENT_CERT_ACTIVE] = (struct agent_metrics_cert){
        .present = true,
        .subject = "CN=api, O=Acme \"Corp\"\\EU",
        .serial = "01AB",
        .not_before = 1700000000,
        .not_after = 1800000000,
        .expired = false,
        .key_match = 1,
    };
    /* During rotation: a next certificate, with a newline and bad UTF-8. */
    p[0].cert[AGENT_CERT_NEXT] = (struct agent_metrics_cert){
        .present = true,
        .subject = "CN=next\nline, O=Caf\xc3\xa9 \xff",
        .serial = "02",
        .not_before = 1790000000,
        .not_after = 1900000000,
        .expired = false,
        .key_match = 0,
    };
    p[0].token_ok = 5;
    p[0].token_cached = 120;
    p[0].token_error = 2;
    p[0].token_denied = 1;
    p[0].sign_ok = 7;
    p[0].sign_error = 0;
    p[0].have_skew = true;
    p[0].clock_skew_s = -1.5;
    p[0].hsm_up = true;
    p[1].name = "sandbox";
    p[1].cert[AGENT_CERT_ACTIVE] = (struct agent_metrics_cert){
        .present = true,
        .subject = "CN=sb",
        .serial = "03",
        .not_before = 1600000000,
        .not_after = 1650000000,
        .expired = true,
        .key_match = -1, /* not compared: no key_match series */
    };
    p[1].hsm_up = false;
    sample_ipc[0] = (struct agent_metrics_ipc){"token", 130, 3};
    sample_ipc[1] = (struct agent_metrics_ipc){"status", 4, 0};
    memset(m, 0, sizeof(*m));
    m->profiles = sample_profiles;
    m->n_profiles = 2;
    m->ipc = sample_ipc;
    m->n_ipc = 2;
}

static char *
render(const struct agent_metrics *m)
{
    char *text = NULL;
    size_t len = 0;
    struct pj_err err = {0};

    assert_int_equal(agent_metrics_render(m, &text, &len, &err), PJ_OK);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    return text;
}

/* The text has this exact line. */
static void
has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    const char *p = text;

    while ((p = strstr(p, line)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == '\n') {
            return;
        }
        p++;
    }
    fail_msg("line not found: %s\n--- text ---\n%s", line, text);
}

static int
count(const char *text, const char *needle)
{
    int n = 0;
    const char *p = text;

    while ((p = strstr(p, needle)) != NULL) {
        n++;
        p++;
    }
    return n;
}

static void
test_families(void **state)
{
    struct agent_metrics m;
    char *text, buf[160];
    const char *help, *type, *first_sample;
    size_t i;
    (void)state;

    sample(&m);
    text = render(&m);
    for (i = 0; i < PJ_ARRAY_SIZE(families); i++) {
        snprintf(buf, sizeof(buf), "# HELP %s ", families[i][0]);
        assert_int_equal(count(text, buf), 1);
        help = strstr(text, buf);
        snprintf(buf, sizeof(buf), "# TYPE %s %s\n", families[i][0],
                 families[i][1]);
        assert_int_equal(count(text, buf), 1);
        type = strstr(text, buf);
        /* HELP, then TYPE, then the samples. */
        assert_true(help < type);
        snprintf(buf, sizeof(buf), "\n%s{", families[i][0]);
        first_sample = strstr(text, buf);
        if (first_sample != NULL) {
            assert_true(type < first_sample);
        }
        /* Counters, and only counters, end in _total. */
        assert_int_equal(strcmp(families[i][1], "counter") == 0,
                         strstr(families[i][0], "_total") != NULL);
    }
    assert_int_equal(text[strlen(text) - 1], '\n');
    free(text);
}

static void
test_samples_and_escaping(void **state)
{
    struct agent_metrics m;
    char *text;
    (void)state;

    sample(&m);
    text = render(&m);
    has_line(text, "p11jwt_cert_not_after{profile=\"prod\",key=\"active\","
                   "subject=\"CN=api, O=Acme \\\"Corp\\\"\\\\EU\","
                   "serial=\"01AB\"} 1800000000");
    /* Newline escaped, valid UTF-8 kept, an invalid byte replaced. */
    has_line(text, "p11jwt_cert_not_after{profile=\"prod\",key=\"next\","
                   "subject=\"CN=next\\nline, O=Caf\xc3\xa9 ?\","
                   "serial=\"02\"} 1900000000");
    has_line(text, "p11jwt_cert_not_before{profile=\"sandbox\",key=\"active\","
                   "subject=\"CN=sb\",serial=\"03\"} 1600000000");
    has_line(text, "p11jwt_cert_expired{profile=\"sandbox\",key=\"active\","
                   "subject=\"CN=sb\",serial=\"03\"} 1");
    has_line(text, "p11jwt_cert_expired{profile=\"prod\",key=\"active\","
                   "subject=\"CN=api, O=Acme \\\"Corp\\\"\\\\EU\","
                   "serial=\"01AB\"} 0");
    has_line(text, "p11jwt_cert_key_match{profile=\"prod\",key=\"next\","
                   "subject=\"CN=next\\nline, O=Caf\xc3\xa9 ?\","
                   "serial=\"02\"} 0");
    /* Not compared: no series rather than a false 0. */
    assert_null(strstr(text, "p11jwt_cert_key_match{profile=\"sandbox\""));
    has_line(text,
             "p11jwt_token_requests_total{profile=\"prod\",result=\"ok\"} 5");
    has_line(text, "p11jwt_token_requests_total{profile=\"prod\","
                   "result=\"cached\"} 120");
    has_line(text, "p11jwt_token_requests_total{profile=\"prod\","
                   "result=\"error\"} 2");
    has_line(text, "p11jwt_token_requests_total{profile=\"prod\","
                   "result=\"denied\"} 1");
    has_line(text, "p11jwt_token_requests_total{profile=\"sandbox\","
                   "result=\"ok\"} 0");
    has_line(text, "p11jwt_signatures_total{profile=\"prod\",result=\"ok\"} 7");
    has_line(text,
             "p11jwt_signatures_total{profile=\"prod\",result=\"error\"} 0");
    has_line(text, "p11jwt_ipc_requests_total{op=\"token\",result=\"ok\"} 130");
    has_line(text,
             "p11jwt_ipc_requests_total{op=\"token\",result=\"error\"} 3");
    has_line(text, "p11jwt_ipc_requests_total{op=\"status\",result=\"ok\"} 4");
    has_line(text, "p11jwt_clock_skew_seconds{profile=\"prod\"} -1.5");
    /* No skew measured: no sample. */
    assert_null(strstr(text, "p11jwt_clock_skew_seconds{profile=\"sandbox\""));
    has_line(text, "p11jwt_hsm_up{profile=\"prod\"} 1");
    has_line(text, "p11jwt_hsm_up{profile=\"sandbox\"} 0");
    /* No raw newline inside a label value anywhere. */
    assert_null(strstr(text, "next\nline"));
    free(text);
}

static void
test_empty(void **state)
{
    struct agent_metrics m;
    char *text;
    (void)state;

    memset(&m, 0, sizeof(m));
    text = render(&m);
    /* Only HELP and TYPE lines: every line starts with '#'. */
    for (char *l = text; *l != '\0'; l = strchr(l, '\n') + 1) {
        assert_int_equal(*l, '#');
    }
    assert_int_equal(count(text, "# TYPE "), (int)PJ_ARRAY_SIZE(families));
    free(text);
}

static void
test_from_check(void **state)
{
    struct agent_cert_check c;
    struct agent_metrics_cert mc;
    (void)state;

    memset(&c, 0, sizeof(c));
    agent_metrics_cert_from_check(&mc, NULL);
    assert_false(mc.present);
    agent_metrics_cert_from_check(&mc, &c); /* not present */
    assert_false(mc.present);
    agent_cert_check_fail(&c, "x", 100, "no such file");
    agent_metrics_cert_from_check(&mc, &c);
    assert_false(mc.present);

    memset(&c, 0, sizeof(c));
    c.present = c.readable = true;
    c.now = 2000;
    c.not_before = 1000;
    c.not_after = 1999;
    c.key = AGENT_KEY_MISMATCH;
    snprintf(c.subject, sizeof(c.subject), "CN=s");
    snprintf(c.serial, sizeof(c.serial), "0F");
    agent_metrics_cert_from_check(&mc, &c);
    assert_true(mc.present);
    assert_true(mc.expired);
    assert_int_equal(mc.key_match, 0);
    assert_int_equal(mc.not_after, 1999);
    assert_int_equal(mc.not_before, 1000);
    assert_ptr_equal(mc.subject, c.subject);
    assert_string_equal(mc.serial, "0F");
    c.now = 1999; /* notAfter itself is still valid */
    c.key = AGENT_KEY_MATCH;
    agent_metrics_cert_from_check(&mc, &c);
    assert_false(mc.expired);
    assert_int_equal(mc.key_match, 1);
    c.key = AGENT_KEY_UNCHECKED;
    agent_metrics_cert_from_check(&mc, &c);
    assert_int_equal(mc.key_match, -1);
}

static void
test_write(void **state)
{
    char dir[] = "/tmp/p11jwt-metrics.XXXXXX", path[96], bad[128];
    struct agent_metrics m;
    struct pj_err err = {0};
    struct stat st;
    uint8_t *data = NULL;
    size_t len = 0;
    char *text;
    DIR *d;
    struct dirent *de;
    int files = 0;
    (void)state;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/p11jwt.prom", dir);
    sample(&m);
    umask(077); /* the mode is set explicitly, whatever the umask */
    assert_int_equal(agent_metrics_write(&m, path, &err), PJ_OK);
    umask(022);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    assert_int_equal(pj_file_read(path, 1 << 20, &data, &len, &err), PJ_OK);
    text = render(&m);
    assert_int_equal(len, strlen(text));
    assert_memory_equal(data, text, len);
    free(data);
    free(text);
    /* Rewriting replaces it; no temporary file is left behind. */
    sample_profiles[0].token_ok = 6;
    assert_int_equal(agent_metrics_write(&m, path, &err), PJ_OK);
    assert_int_equal(pj_file_read(path, 1 << 20, &data, &len, &err), PJ_OK);
    assert_non_null(strstr((char *)data, "result=\"ok\"} 6\n"));
    free(data);
    assert_non_null(d = opendir(dir));
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.') {
            files++;
            assert_string_equal(de->d_name, "p11jwt.prom");
        }
    }
    closedir(d);
    assert_int_equal(files, 1);

    /* Bad paths fail with the path in the message. */
    snprintf(bad, sizeof(bad), "%s/missing/dir/p11jwt.prom", dir);
    assert_int_not_equal(agent_metrics_write(&m, bad, &err), PJ_OK);
    assert_non_null(strstr(err.msg, "missing/dir"));
    pj_err_clear(&err);
    assert_int_equal(agent_metrics_write(&m, NULL, &err), PJ_ERR_CONFIG);
    pj_err_clear(&err);
    assert_int_equal(agent_metrics_write(&m, "", &err), PJ_ERR_CONFIG);
    unlink(path);
    rmdir(dir);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_families),
        cmocka_unit_test(test_samples_and_escaping),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_from_check),
        cmocka_unit_test(test_write),
    };

    if (argc == 3 && strcmp(argv[1], "--write-sample") == 0) {
        struct agent_metrics m;
        struct pj_err err = {0};

        sample(&m);
        if (agent_metrics_write(&m, argv[2], &err) != PJ_OK) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        return 0;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
