/* SPDX-License-Identifier: Apache-2.0 */
/*
 * salesforce/: the error catalogue (every pair of research/salesforce.md
 * section 3), transport/HTTP classes, response parsing, clock skew.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/pj_util.h"
#include "salesforce/sf.h"

/* The exact strings real orgs return, with the class each must get. */
static const struct {
    const char *error, *desc;
    enum sf_class cls;
    const char *hint_word; /* the hint must mention this */
} pairs[] = {
    {"invalid_grant", "user hasn't approved this consumer", SF_CLASS_PERMANENT,
     "AdminApprovedPreAuthorized"},
    {"invalid_grant", "audience is invalid", SF_CLASS_AUDIENCE,
     "test.salesforce.com"},
    {"invalid_grant", "invalid assertion", SF_CLASS_PERMANENT, "certificate"},
    {"invalid_grant", "expired authorization code", SF_CLASS_CLOCK, "NTP"},
    {"invalid_client_id", "client identifier invalid", SF_CLASS_PERMANENT,
     "Consumer Key"},
    {"invalid_app_access", "user is not admin approved to access this app",
     SF_CLASS_PERMANENT, "permission set"},
    {"app_not_found", "External client app is not installed in this org",
     SF_CLASS_AUDIENCE, "My Domain"},
    {"unsupported_grant_type", "grant type not supported", SF_CLASS_PERMANENT,
     "JWT Bearer"},
};

static void
test_catalogue_has_every_pair(void **state)
{
    size_t i, n = 0;
    const struct sf_catalogue_entry *all = sf_catalogue(&n);

    (void)state;
    assert_true(n >= PJ_ARRAY_SIZE(pairs));
    for (i = 0; i < n; i++) {
        assert_non_null(all[i].hint);
        assert_true(strlen(all[i].hint) > 20);
    }
    for (i = 0; i < PJ_ARRAY_SIZE(pairs); i++) {
        const struct sf_catalogue_entry *e =
            sf_catalogue_lookup(pairs[i].error, pairs[i].desc);
        assert_non_null(e);
        assert_non_null(e->description);
        assert_string_equal(e->description, pairs[i].desc);
        assert_int_equal(e->cls, pairs[i].cls);
        if (strstr(e->hint, pairs[i].hint_word) == NULL) {
            fail_msg("hint for %s/%s lacks '%s'", pairs[i].error, pairs[i].desc,
                     pairs[i].hint_word);
        }
    }
}

static void
test_catalogue_unknown_and_fallbacks(void **state)
{
    const struct sf_catalogue_entry *e;

    (void)state;
    /* invalid_grant is ambiguous: an unknown description is unknown. */
    assert_null(sf_catalogue_lookup("invalid_grant", "something new"));
    assert_null(sf_catalogue_lookup("invalid_grant", NULL));
    assert_null(sf_catalogue_lookup("brand_new_error", "x"));
    assert_null(sf_catalogue_lookup(NULL, NULL));
    /* Near misses are not matched: descriptions compare exactly. */
    assert_null(sf_catalogue_lookup("invalid_grant", "Audience is invalid"));
    /* Distinctive error codes keep their class with another description. */
    e = sf_catalogue_lookup("invalid_client_id", "reworded");
    assert_non_null(e);
    assert_int_equal(e->cls, SF_CLASS_PERMANENT);
    e = sf_catalogue_lookup("app_not_found", NULL);
    assert_non_null(e);
    assert_int_equal(e->cls, SF_CLASS_AUDIENCE);
}

static void
parse_error(const char *error, const char *desc, struct sf_result *res,
            struct pj_err *err, pj_rc want)
{
    char body[512];

    snprintf(body, sizeof(body),
             "{\"error\":\"%s\",\"error_description\":\"%s\"}", error, desc);
    pj_err_clear(err);
    assert_int_equal(sf_response_parse(400, (const uint8_t *)body, strlen(body),
                                       NULL, 0, res, err),
                     want);
}

static void
test_parse_each_error_pair(void **state)
{
    struct sf_result res;
    struct pj_err err = {0};
    size_t i;

    (void)state;
    sf_result_init(&res);
    for (i = 0; i < PJ_ARRAY_SIZE(pairs); i++) {
        parse_error(pairs[i].error, pairs[i].desc, &res, &err, PJ_ERR_UPSTREAM);
        assert_false(res.ok);
        assert_int_equal(res.fail.cls, pairs[i].cls);
        assert_int_equal(res.fail.http_status, 400);
        assert_string_equal(res.fail.error, pairs[i].error);
        assert_string_equal(res.fail.error_description, pairs[i].desc);
        assert_non_null(strstr(res.fail.hint, pairs[i].hint_word));
        assert_non_null(strstr(err.msg, pairs[i].desc));
        assert_non_null(strstr(err.msg, sf_class_name(pairs[i].cls)));
    }
    /* Unknown: verbatim, class unknown, still a hint. */
    parse_error("weird_error", "Something New happened", &res, &err,
                PJ_ERR_UPSTREAM);
    assert_int_equal(res.fail.cls, SF_CLASS_UNKNOWN);
    assert_string_equal(res.fail.error, "weird_error");
    assert_string_equal(res.fail.error_description, "Something New happened");
    assert_non_null(strstr(err.msg, "weird_error: Something New happened"));
    assert_non_null(res.fail.hint);
    sf_result_cleanup(&res);
}

static const char ok_body[] =
    "{\"access_token\":\"00Dxx0000001gPL!AR8AQJXg5oj8jXSgxJfA0lBog\","
    "\"signature\":\"c2lnbmF0dXJl\",\"scope\":\"api\","
    "\"instance_url\":\"https://acme.my.salesforce.com\","
    "\"id\":\"https://login.salesforce.com/id/00Dxx0000001gPLEAY/"
    "005xx000001Sv6eAAC\",\"token_type\":\"Bearer\","
    "\"issued_at\":\"1795880347123\"}";

static void
test_parse_success(void **state)
{
    struct sf_result res;
    struct pj_err err = {0};

    (void)state;
    sf_result_init(&res);
    assert_int_equal(sf_response_parse(200, (const uint8_t *)ok_body,
                                       strlen(ok_body),
                                       "Tue, 30 Nov 2026 12:00:10 GMT",
                                       1796040000, &res, &err),
                     PJ_OK);
    assert_true(res.ok);
    assert_string_equal((const char *)res.token.access_token->data,
                        "00Dxx0000001gPL!AR8AQJXg5oj8jXSgxJfA0lBog");
    assert_string_equal(res.token.instance_url,
                        "https://acme.my.salesforce.com");
    assert_string_equal(res.token.token_type, "Bearer");
    assert_string_equal(res.token.scope, "api");
    assert_non_null(res.token.id);
    assert_non_null(res.token.signature);
    assert_int_equal(res.token.issued_at_ms, 1795880347123LL);
    assert_true(res.have_date);
    assert_int_equal(res.skew, 10);
    assert_false(sf_result_skew_bad(&res));
    sf_result_cleanup(&res);
    assert_null(res.token.access_token);
}

static void
expect_bad_200(const char *body, const char *needle)
{
    struct sf_result res;
    struct pj_err err = {0};
    pj_rc rc;

    sf_result_init(&res);
    rc = sf_response_parse(200, (const uint8_t *)body, strlen(body), NULL, 0,
                           &res, &err);
    assert_int_not_equal(rc, PJ_OK);
    assert_false(res.ok);
    assert_null(res.token.access_token);
    assert_non_null(res.fail.hint);
    if (strstr(err.msg, needle) == NULL) {
        fail_msg("message '%s' lacks '%s' for %s", err.msg, needle, body);
    }
    /* The token must never reach a message. */
    assert_null(strstr(err.msg, "SECRETTOKEN"));
    sf_result_cleanup(&res);
}

static void
test_parse_bad_success_bodies(void **state)
{
    (void)state;
    expect_bad_200("", "not a JSON object");
    expect_bad_200("<html>proxy</html>", "not a JSON object");
    expect_bad_200("[1,2]", "not a JSON object");
    expect_bad_200("{\"access_token\":\"SECRETTOKEN\"", "not a JSON object");
    expect_bad_200("{\"instance_url\":\"https://a.example.com\"}",
                   "access_token");
    expect_bad_200("{\"access_token\":\"\",\"instance_url\":\"https://a.b\"}",
                   "access_token");
    expect_bad_200("{\"access_token\":5,\"instance_url\":\"https://a.b\"}",
                   "access_token");
    expect_bad_200("{\"access_token\":\"SECRET TOKEN\","
                   "\"instance_url\":\"https://a.b\"}",
                   "space");
    expect_bad_200("{\"access_token\":\"SECRETTOKEN\"}", "instance_url");
    expect_bad_200("{\"access_token\":\"SECRETTOKEN\","
                   "\"instance_url\":\"http://acme.my.salesforce.com\"}",
                   "https");
    expect_bad_200("{\"access_token\":\"SECRETTOKEN\","
                   "\"instance_url\":\"https://a.b\",\"scope\":7}",
                   "wrong type");
    expect_bad_200("{\"access_token\":\"SECRETTOKEN\","
                   "\"instance_url\":\"https://a.b\",\"token_type\":\"MAC\"}",
                   "Bearer");
    expect_bad_200("{\"access_token\":\"SECRETTOKEN\","
                   "\"instance_url\":\"https://a.b\",\"issued_at\":\"12x\"}",
                   "issued_at");
    expect_bad_200("{\"access_token\":\"SECRETTOKEN\","
                   "\"instance_url\":\"https://a.b\",\"issued_at\":\"-5\"}",
                   "issued_at");
    /* Duplicate keys are refused (JSON_REJECT_DUPLICATES). */
    expect_bad_200("{\"access_token\":\"SECRETTOKEN\","
                   "\"access_token\":\"OTHER\","
                   "\"instance_url\":\"https://a.b\"}",
                   "duplicate");
}

static void
test_parse_http_classes(void **state)
{
    struct sf_result res;
    struct pj_err err = {0};
    const char *html = "<html>Service Unavailable</html>";

    (void)state;
    sf_result_init(&res);
    assert_int_equal(sf_response_parse(503, (const uint8_t *)html, strlen(html),
                                       NULL, 0, &res, &err),
                     PJ_ERR_HTTP);
    assert_int_equal(res.fail.cls, SF_CLASS_TRANSIENT);
    assert_true(sf_class_is_retryable(res.fail.cls));
    pj_err_clear(&err);
    assert_int_equal(sf_response_parse(500, NULL, 0, NULL, 0, &res, &err),
                     PJ_ERR_HTTP);
    assert_int_equal(res.fail.cls, SF_CLASS_TRANSIENT);
    pj_err_clear(&err);
    assert_int_equal(sf_response_parse(429, NULL, 0, NULL, 0, &res, &err),
                     PJ_ERR_HTTP);
    assert_int_equal(res.fail.cls, SF_CLASS_TRANSIENT);
    pj_err_clear(&err);
    assert_int_equal(sf_response_parse(302, NULL, 0, NULL, 0, &res, &err),
                     PJ_ERR_UPSTREAM);
    assert_int_equal(res.fail.cls, SF_CLASS_PERMANENT);
    assert_non_null(strstr(res.fail.hint, "redirect"));
    pj_err_clear(&err);
    assert_int_equal(sf_response_parse(404, (const uint8_t *)html, strlen(html),
                                       NULL, 0, &res, &err),
                     PJ_ERR_UPSTREAM);
    assert_int_equal(res.fail.cls, SF_CLASS_PERMANENT);
    pj_err_clear(&err);
    assert_int_equal(sf_response_parse(418, NULL, 0, NULL, 0, &res, &err),
                     PJ_ERR_UPSTREAM);
    assert_int_equal(res.fail.cls, SF_CLASS_UNKNOWN);
    assert_false(sf_class_is_retryable(SF_CLASS_PERMANENT));
    assert_false(sf_class_is_retryable(SF_CLASS_UNKNOWN));
    sf_result_cleanup(&res);
}

static void
test_parse_oversized(void **state)
{
    struct sf_result res;
    struct pj_err err = {0};
    size_t n = SF_RESPONSE_MAX_BYTES + 1;
    uint8_t *big = malloc(n);

    (void)state;
    memset(big, ' ', n);
    sf_result_init(&res);
    assert_int_equal(sf_response_parse(200, big, n, NULL, 0, &res, &err),
                     PJ_ERR_HTTP);
    assert_int_equal(res.fail.cls, SF_CLASS_TRANSIENT);
    assert_non_null(strstr(err.msg, "larger than"));
    free(big);
    sf_result_cleanup(&res);
}

static void
test_curl_classes_are_transient(void **state)
{
    static const CURLcode codes[] = {
        CURLE_OPERATION_TIMEDOUT, CURLE_COULDNT_RESOLVE_HOST,
        CURLE_COULDNT_CONNECT,    CURLE_PEER_FAILED_VERIFICATION,
        CURLE_SSL_CONNECT_ERROR,  CURLE_SSL_CACERT_BADFILE,
        CURLE_RECV_ERROR,         CURLE_GOT_NOTHING,
        CURLE_WRITE_ERROR,
    };
    const char *hint = NULL;
    size_t i;

    (void)state;
    for (i = 0; i < PJ_ARRAY_SIZE(codes); i++) {
        hint = NULL;
        assert_int_equal(sf_classify_curl(codes[i], &hint), SF_CLASS_TRANSIENT);
        assert_non_null(hint);
    }
    (void)sf_classify_curl(CURLE_COULDNT_RESOLVE_HOST, &hint);
    assert_non_null(strstr(hint, "DNS"));
    (void)sf_classify_curl(CURLE_PEER_FAILED_VERIFICATION, &hint);
    assert_non_null(strstr(hint, "ca-file"));
}

static void
test_skew(void **state)
{
    struct sf_result res;
    struct pj_err err = {0};
    const char *body = "{\"error\":\"invalid_grant\",\"error_description\":"
                       "\"expired authorization code\"}";
    char buf[384];

    (void)state;
    sf_result_init(&res);
    /* Server 600 s ahead of the local clock, reported on an error too. */
    assert_int_equal(sf_response_parse(400, (const uint8_t *)body, strlen(body),
                                       "Sun, 06 Nov 1994 08:59:37 GMT",
                                       784111777, &res, &err),
                     PJ_ERR_UPSTREAM);
    assert_true(res.have_date);
    assert_int_equal(res.server_time, 784112377);
    assert_int_equal(res.skew, 600);
    assert_true(sf_result_skew_bad(&res));
    sf_skew_describe(&res, buf, sizeof(buf));
    assert_non_null(strstr(buf, "+600"));
    assert_non_null(strstr(buf, "NTP"));
    /* 30 s is the edge: not a warning; 31 s is. */
    res.skew = -30;
    assert_false(sf_result_skew_bad(&res));
    res.skew = -31;
    assert_true(sf_result_skew_bad(&res));
    /* A broken Date header is ignored, not trusted. */
    pj_err_clear(&err);
    assert_int_equal(sf_response_parse(400, (const uint8_t *)body, strlen(body),
                                       "not a date", 1000, &res, &err),
                     PJ_ERR_UPSTREAM);
    assert_false(res.have_date);
    sf_skew_describe(&res, buf, sizeof(buf));
    assert_non_null(strstr(buf, "unknown"));
    sf_result_cleanup(&res);
}

static void
test_class_names(void **state)
{
    (void)state;
    assert_string_equal(sf_class_name(SF_CLASS_PERMANENT), "permanent");
    assert_string_equal(sf_class_name(SF_CLASS_AUDIENCE), "audience-or-host");
    assert_string_equal(sf_class_name(SF_CLASS_CLOCK), "clock");
    assert_string_equal(sf_class_name(SF_CLASS_TRANSIENT), "transient");
    assert_string_equal(sf_class_name(SF_CLASS_UNKNOWN), "unknown");
    assert_string_equal(sf_class_name((enum sf_class)99), "unknown");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_catalogue_has_every_pair),
        cmocka_unit_test(test_catalogue_unknown_and_fallbacks),
        cmocka_unit_test(test_parse_each_error_pair),
        cmocka_unit_test(test_parse_success),
        cmocka_unit_test(test_parse_bad_success_bodies),
        cmocka_unit_test(test_parse_http_classes),
        cmocka_unit_test(test_parse_oversized),
        cmocka_unit_test(test_curl_classes_are_transient),
        cmocka_unit_test(test_skew),
        cmocka_unit_test(test_class_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
