/* SPDX-License-Identifier: Apache-2.0 */
/*
 * salesforce/sf_jwt.c: the assertion is exactly the JWS OpenSSL produces
 * for the expected signing input (RSASSA-PKCS1-v1_5 is deterministic), the
 * signature verifies, and every claim rule refuses bad values.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "core/pj_config.h"
#include "core/pj_util.h"
#include "salesforce/sf.h"

static EVP_PKEY *test_key;

static int
setup(void **state)
{
    (void)state;
    /* A fresh key per run: the expected value is computed from it below. */
    test_key = EVP_RSA_gen(2048);
    return test_key == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(test_key);
    return 0;
}

static int sign_calls;

/* The callback a token would provide, here OpenSSL with the test key. */
static pj_rc
sign_openssl(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig,
             size_t *siglen, struct pj_err *err)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    pj_rc rc = PJ_OK;

    sign_calls++;
    if (md == NULL ||
        EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, ctx) != 1 ||
        EVP_DigestSign(md, sig, siglen, msg, len) != 1) {
        rc = pj_err_set(err, PJ_ERR_CRYPTO, "test signing failed");
    }
    EVP_MD_CTX_free(md);
    return rc;
}

static pj_rc
sign_fails(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig,
           size_t *siglen, struct pj_err *err)
{
    (void)ctx;
    (void)msg;
    (void)len;
    (void)sig;
    (void)siglen;
    return pj_err_set(err, PJ_ERR_TOKEN, "token removed");
}

static pj_rc
sign_too_long(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig,
              size_t *siglen, struct pj_err *err)
{
    (void)ctx;
    (void)msg;
    (void)len;
    (void)sig;
    (void)err;
    *siglen = 4096;
    return PJ_OK;
}

static char *
b64(const char *s)
{
    char *out = NULL;

    assert_int_equal(pj_b64url_encode((const uint8_t *)s, strlen(s), &out),
                     PJ_OK);
    return out;
}

static const struct sf_claims good = {
    .iss = "3MVG9test.consumer.key",
    .sub = "integration@example.com",
    .aud = "https://login.salesforce.com",
    .now = 1795880347,
    .lifetime = 180,
    .jti = "AAECAwQFBgcICQoLDA0ODw",
};

static void
test_assertion_exact_jws(void **state)
{
    const char *claims_json =
        "{\"iss\":\"3MVG9test.consumer.key\",\"sub\":\"integration@example."
        "com\",\"aud\":\"https://login.salesforce.com\",\"exp\":1795880527,"
        "\"iat\":1795880347,\"jti\":\"AAECAwQFBgcICQoLDA0ODw\"}";
    char *h64 = b64("{\"alg\":\"RS256\"}"), *c64 = b64(claims_json);
    char input[1024], *sig64 = NULL, expected[2048], *jti = NULL;
    uint8_t sig[512];
    size_t siglen = sizeof(sig);
    struct pj_secret *a = NULL;
    struct pj_err err = {0};
    int64_t exp = 0;

    (void)state;
    assert_string_equal(h64, "eyJhbGciOiJSUzI1NiJ9");
    snprintf(input, sizeof(input), "%s.%s", h64, c64);
    assert_int_equal(sign_openssl(test_key, (const uint8_t *)input,
                                  strlen(input), sig, &siglen, &err),
                     PJ_OK);
    assert_int_equal(pj_b64url_encode(sig, siglen, &sig64), PJ_OK);
    snprintf(expected, sizeof(expected), "%s.%s", input, sig64);

    assert_int_equal(
        sf_assertion_build(&good, sign_openssl, test_key, &a, &exp, &jti, &err),
        PJ_OK);
    assert_string_equal((const char *)a->data, expected);
    assert_int_equal(a->len, strlen(expected));
    assert_int_equal(exp, 1795880527);
    assert_string_equal(jti, "AAECAwQFBgcICQoLDA0ODw");
    /* No padding anywhere, and exactly three segments. */
    assert_null(strchr((const char *)a->data, '='));
    pj_secret_free(a);
    free(jti);
    free(h64);
    free(c64);
    free(sig64);
}

static void
test_assertion_defaults_random_jti_and_lifetime(void **state)
{
    struct sf_claims c = good;
    struct pj_secret *a = NULL, *b = NULL;
    struct pj_err err = {0};
    char *jti1 = NULL, *jti2 = NULL;
    int64_t exp = 0;
    uint8_t *raw = NULL;
    size_t rawlen = 0;

    (void)state;
    c.jti = NULL;
    c.lifetime = 0;
    c.now = 0;
    assert_int_equal(
        sf_assertion_build(&c, sign_openssl, test_key, &a, &exp, &jti1, &err),
        PJ_OK);
    assert_int_equal(
        sf_assertion_build(&c, sign_openssl, test_key, &b, NULL, &jti2, &err),
        PJ_OK);
    /* 128 random bits, base64url: 22 characters that decode to 16 bytes. */
    assert_int_equal(strlen(jti1), 22);
    assert_int_equal(pj_b64url_decode(jti1, 22, &raw, &rawlen), PJ_OK);
    assert_int_equal(rawlen, 16);
    assert_string_not_equal(jti1, jti2);
    /* Default lifetime 180 s from the current clock. */
    assert_true(exp - pj_time_now() <= 180 && exp - pj_time_now() >= 175);
    pj_secret_free(a);
    pj_secret_free(b);
    free(jti1);
    free(jti2);
    free(raw);
}

static void
test_assertion_claims_decode(void **state)
{
    struct pj_secret *a = NULL;
    struct pj_err err = {0};
    const char *dot1, *dot2;
    uint8_t *json = NULL;
    size_t len = 0;
    char text[512];

    (void)state;
    assert_int_equal(
        sf_assertion_build(&good, sign_openssl, test_key, &a, NULL, NULL, &err),
        PJ_OK);
    dot1 = strchr((const char *)a->data, '.');
    dot2 = strchr(dot1 + 1, '.');
    assert_non_null(dot2);
    assert_null(strchr(dot2 + 1, '.'));
    assert_int_equal(
        pj_b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), &json, &len),
        PJ_OK);
    /* The decoded bytes are not NUL-terminated: copy them into a string. */
    assert_true(len < sizeof(text));
    memcpy(text, json, len);
    text[len] = '\0';
    /* exp and iat are integers (seconds), aud is a string. */
    assert_non_null(strstr(text, "\"exp\":1795880527,"));
    assert_non_null(strstr(text, "\"aud\":\"https://login.salesforce.com\""));
    free(json);
    pj_secret_free(a);
}

static void
expect_bad(const struct sf_claims *c, const char *needle)
{
    struct pj_secret *a = NULL;
    struct pj_err err = {0};

    sign_calls = 0;
    assert_int_equal(
        sf_assertion_build(c, sign_openssl, test_key, &a, NULL, NULL, &err),
        PJ_ERR_INVALID);
    assert_null(a);
    assert_int_equal(sign_calls, 0); /* refused before touching the key */
    if (strstr(err.msg, needle) == NULL) {
        fail_msg("message '%s' lacks '%s'", err.msg, needle);
    }
}

static void
test_claim_rules(void **state)
{
    struct sf_claims c;

    (void)state;
    c = good, c.iss = NULL, expect_bad(&c, "iss");
    c = good, c.iss = "", expect_bad(&c, "iss");
    c = good, c.iss = "has space", expect_bad(&c, "iss");
    c = good, c.sub = NULL, expect_bad(&c, "sub");
    c = good, c.sub = "", expect_bad(&c, "sub");
    c = good, c.sub = "user\n@example.com", expect_bad(&c, "sub");
    c = good, c.aud = NULL, expect_bad(&c, "aud");
    c = good, c.aud = "login.salesforce.com", expect_bad(&c, "aud");
    c = good, c.aud = "http://login.salesforce.com", expect_bad(&c, "https");
    c = good, c.aud = "[\"https://login.salesforce.com\"]",
    expect_bad(&c, "aud");
    c = good, c.aud = "https://login.salesforce.com?x=1",
    expect_bad(&c, "query");
    c = good, c.lifetime = 301, expect_bad(&c, "5 minutes");
    c = good, c.lifetime = 3600, expect_bad(&c, "5 minutes");
    c = good, c.lifetime = -1, expect_bad(&c, "lifetime");
    c = good, c.lifetime = 5, expect_bad(&c, "lifetime");
    c = good, c.now = 1000, expect_bad(&c, "clock");
    c = good, c.now = 1795880347000LL, expect_bad(&c, "clock"); /* ms */
    c = good, c.jti = "", expect_bad(&c, "jti");
    c = good, c.jti = "a b", expect_bad(&c, "jti");
    {
        char big[SF_CLAIM_MAX + 2];
        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        c = good, c.sub = big, expect_bad(&c, "sub");
    }
    /* The edges that are allowed. */
    c = good;
    c.lifetime = 300;
    assert_int_equal(sf_claims_check(&c, NULL), PJ_OK);
    c.lifetime = PJ_ASSERTION_LIFETIME_MIN_S;
    assert_int_equal(sf_claims_check(&c, NULL), PJ_OK);
}

static void
test_signer_failures_pass_through(void **state)
{
    struct pj_secret *a = NULL;
    struct pj_err err = {0};

    (void)state;
    assert_int_equal(
        sf_assertion_build(&good, sign_fails, NULL, &a, NULL, NULL, &err),
        PJ_ERR_TOKEN);
    assert_string_equal(err.msg, "token removed");
    assert_null(a);
    pj_err_clear(&err);
    assert_int_equal(
        sf_assertion_build(&good, sign_too_long, NULL, &a, NULL, NULL, &err),
        PJ_ERR_INTERNAL);
    assert_null(a);
}

static void
test_claims_from_profile(void **state)
{
    struct pj_config *cfg = NULL;
    const struct pj_profile *p;
    struct sf_claims c;
    struct pj_err err = {0};

    (void)state;
    assert_int_equal(
        pj_config_load_string("[profile prod]\n"
                              "key = pkcs11:token=t;object=k\n"
                              "client-id = CID\n"
                              "subject = a@example.com\n"
                              "subjects = b@example.com, c@example.com\n"
                              "login-url = https://acme.my.salesforce.com\n"
                              "assertion-lifetime = 120\n",
                              "t.conf", &cfg, &err),
        PJ_OK);
    p = pj_config_profile(cfg, "prod");
    assert_int_equal(sf_claims_from_profile(p, NULL, &c, &err), PJ_OK);
    assert_string_equal(c.iss, "CID");
    assert_string_equal(c.sub, "a@example.com");
    assert_string_equal(c.aud, "https://login.salesforce.com");
    assert_int_equal(c.lifetime, 120);
    assert_int_equal(sf_claims_from_profile(p, "c@example.com", &c, &err),
                     PJ_OK);
    assert_string_equal(c.sub, "c@example.com");
    assert_int_equal(sf_claims_from_profile(p, "evil@example.com", &c, &err),
                     PJ_ERR_DENIED);
    assert_non_null(strstr(err.msg, "subjects"));
    pj_config_free(cfg);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_assertion_exact_jws),
        cmocka_unit_test(test_assertion_defaults_random_jti_and_lifetime),
        cmocka_unit_test(test_assertion_claims_decode),
        cmocka_unit_test(test_claim_rules),
        cmocka_unit_test(test_signer_failures_pass_through),
        cmocka_unit_test(test_claims_from_profile),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
