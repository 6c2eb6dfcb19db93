/* SPDX-License-Identifier: Apache-2.0 */
/* pkcs11: URI criteria (hsm_uri_parse), CKR names and classes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pkcs11/hsm.h"
#include "pkcs11/internal.h"

static void
test_uri_full(void **state)
{
    struct hsm_uri u;
    struct pj_err err = {0};

    (void)state;
    assert_int_equal(
        hsm_uri_parse("pkcs11:token=prod;object=sf-jwt;id=%01%ab;"
                      "type=private?pin-source=file:/etc/p11jwt/prod.pin",
                      &u, &err),
        PJ_OK);
    assert_string_equal(u.token_label, "prod");
    assert_string_equal(u.label, "sf-jwt");
    assert_int_equal(u.label_len, 6);
    assert_true(u.has_id);
    assert_int_equal(u.id_len, 2);
    assert_int_equal(u.id[0], 0x01);
    assert_int_equal(u.id[1], 0xab);
    assert_true(u.has_class);
    assert_int_equal(u.cls, CKO_PRIVATE_KEY);
    assert_string_equal(u.pin_source, "file:/etc/p11jwt/prod.pin");
    hsm_uri_cleanup(&u);
}

static void
test_uri_pin_source_forms(void **state)
{
    struct hsm_uri u;
    struct pj_err err = {0};

    (void)state;
    assert_int_equal(
        hsm_uri_parse("pkcs11:token=a?pin-source=/p/pin", &u, &err), PJ_OK);
    assert_string_equal(u.pin_source, "file:/p/pin");
    hsm_uri_cleanup(&u);
    assert_int_equal(
        hsm_uri_parse("pkcs11:token=a?pin-source=file:///p/pin", &u, &err),
        PJ_OK);
    assert_string_equal(u.pin_source, "file:/p/pin");
    hsm_uri_cleanup(&u);
    assert_int_equal(hsm_uri_parse("pkcs11:token=a?pin-source=env:X", &u, &err),
                     PJ_OK);
    assert_string_equal(u.pin_source, "env:X");
    hsm_uri_cleanup(&u);
    assert_int_equal(
        hsm_uri_parse("pkcs11:token=a?pin-source=%7cprog", &u, &err),
        PJ_ERR_INVALID);
    assert_non_null(strstr(err.msg, "pin-source"));
}

static void
test_uri_minimal_and_serial(void **state)
{
    struct hsm_uri u;
    struct pj_err err = {0};

    (void)state;
    assert_int_equal(hsm_uri_parse("pkcs11:", &u, &err), PJ_OK);
    assert_null(u.label);
    assert_false(u.has_id);
    assert_false(u.has_class);
    assert_string_equal(hsm_uri_token_name(&u), "(any)");
    hsm_uri_cleanup(&u);
    assert_int_equal(hsm_uri_parse("pkcs11:serial=abc123;object=k", &u, &err),
                     PJ_OK);
    assert_string_equal(hsm_uri_token_name(&u), "serial abc123");
    hsm_uri_cleanup(&u);
}

static void
test_uri_pin_value_refused_without_echo(void **state)
{
    struct hsm_uri u;
    struct pj_err err = {0};

    (void)state;
    assert_int_equal(
        hsm_uri_parse("pkcs11:token=a;object=b?pin-value=S3cr3tPIN", &u, &err),
        PJ_ERR_INVALID);
    assert_non_null(strstr(err.msg, "PINs never go in URIs"));
    assert_null(strstr(err.msg, "S3cr3tPIN"));
    assert_null(u.p11);
}

static void
expect_bad(const char *uri, pj_rc rc, const char *needle)
{
    struct hsm_uri u;
    struct pj_err err = {0};

    assert_int_equal(hsm_uri_parse(uri, &u, &err), rc);
    assert_non_null(strstr(err.msg, needle));
    assert_null(u.p11);
    assert_null(u.label);
}

static void
test_uri_bad(void **state)
{
    char big[HSM_URI_MAX_BYTES + 20], lbl[300];

    (void)state;
    expect_bad(NULL, PJ_ERR_INVALID, "no key URI");
    expect_bad("", PJ_ERR_INVALID, "no key URI");
    expect_bad("token=a", PJ_ERR_INVALID, "must start with 'pkcs11:'");
    expect_bad("PKCS11x:token=a", PJ_ERR_INVALID, "must start with");
    expect_bad("pkcs11:object=%zz", PJ_ERR_INVALID, "bad pkcs11: URI");
    expect_bad("pkcs11:object=%4", PJ_ERR_INVALID, "bad pkcs11: URI");
    expect_bad("pkcs11:type=banana", PJ_ERR_INVALID, "unknown attribute");
    expect_bad("pkcs11:slot-id=abc", PJ_ERR_INVALID, "bad pkcs11: URI");
    expect_bad("pkcs11:token=a;frobnicate=1", PJ_ERR_INVALID,
               "unknown attribute");
    expect_bad("pkcs11:object=a%00b", PJ_ERR_INVALID, "NUL");
    memset(lbl, 0, sizeof(lbl));
    memcpy(lbl, "pkcs11:object=", 14);
    memset(lbl + 14, 'x', 200);
    expect_bad(lbl, PJ_ERR_LIMIT, "longer than 127");
    memset(lbl, 0, sizeof(lbl));
    memcpy(lbl, "pkcs11:id=", 10);
    for (int i = 0; i < 65; i++) {
        memcpy(lbl + 10 + 3 * i, "%01", 3);
    }
    expect_bad(lbl, PJ_ERR_LIMIT, "longer than 64");
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, "pkcs11:", 7);
    expect_bad(big, PJ_ERR_LIMIT, "longer than");
}

static void
test_ckr_name(void **state)
{
    (void)state;
    assert_string_equal(hsm_ckr_name(CKR_OK), "CKR_OK");
    assert_string_equal(hsm_ckr_name(CKR_PIN_INCORRECT), "CKR_PIN_INCORRECT");
    assert_string_equal(hsm_ckr_name(0xb3), "CKR_SESSION_HANDLE_INVALID");
    assert_string_equal(hsm_ckr_name(CKR_DEVICE_REMOVED), "CKR_DEVICE_REMOVED");
    assert_string_equal(hsm_ckr_name(0x7777), "CKR_0x7777");
    assert_string_equal(hsm_ckr_name(CKR_VENDOR_DEFINED | 0x12),
                        "CKR_VENDOR_DEFINED+0x12");
}

static void
test_ckr_classes(void **state)
{
    (void)state;
    assert_int_equal(hsm_ckr_classify(CKR_SESSION_HANDLE_INVALID),
                     HSM_CKR_SESSION);
    assert_int_equal(hsm_ckr_classify(CKR_SESSION_CLOSED), HSM_CKR_SESSION);
    assert_int_equal(hsm_ckr_classify(CKR_USER_NOT_LOGGED_IN), HSM_CKR_LOGIN);
    assert_int_equal(hsm_ckr_classify(CKR_OBJECT_HANDLE_INVALID),
                     HSM_CKR_HANDLE);
    assert_int_equal(hsm_ckr_classify(CKR_KEY_HANDLE_INVALID), HSM_CKR_HANDLE);
    assert_int_equal(hsm_ckr_classify(CKR_DEVICE_ERROR), HSM_CKR_DEVICE);
    assert_int_equal(hsm_ckr_classify(CKR_DEVICE_REMOVED), HSM_CKR_DEVICE);
    assert_int_equal(hsm_ckr_classify(CKR_GENERAL_ERROR), HSM_CKR_DEVICE);
    assert_int_equal(hsm_ckr_classify(CKR_FUNCTION_FAILED), HSM_CKR_DEVICE);
    assert_int_equal(hsm_ckr_classify(CKR_TOKEN_NOT_PRESENT), HSM_CKR_DEVICE);
    assert_int_equal(hsm_ckr_classify(CKR_DEVICE_MEMORY), HSM_CKR_DEVICE);
    assert_int_equal(hsm_ckr_classify(CKR_PIN_INCORRECT), HSM_CKR_PIN);
    assert_int_equal(hsm_ckr_classify(CKR_PIN_LOCKED), HSM_CKR_PIN);
    assert_int_equal(hsm_ckr_classify(CKR_MECHANISM_INVALID), HSM_CKR_FATAL);
}

static void
test_module_path_resolve(void **state)
{
    (void)state;
    unsetenv("P11JWT_MODULE");
    assert_string_equal(hsm_module_path_resolve(NULL), HSM_DEFAULT_MODULE);
    assert_string_equal(hsm_module_path_resolve(""), HSM_DEFAULT_MODULE);
    setenv("P11JWT_MODULE", "/env/mod.so", 1);
    assert_string_equal(hsm_module_path_resolve(NULL), "/env/mod.so");
    assert_string_equal(hsm_module_path_resolve("/x.so"), "/x.so");
    unsetenv("P11JWT_MODULE");
}

static void
test_module_load_errors(void **state)
{
    struct hsm_module *mod = NULL;
    struct pj_err err = {0};

    (void)state;
    assert_int_equal(hsm_module_load("/nonexistent/mod.so", &mod, &err),
                     PJ_ERR_NOT_FOUND);
    assert_string_equal(err.msg, "module /nonexistent/mod.so: no such file");
    assert_null(mod);
    pj_err_clear(&err);
    assert_int_equal(hsm_module_load("/", &mod, &err), PJ_ERR_INVALID);
    pj_err_clear(&err);
    assert_int_equal(hsm_module_load("/etc/hostname", &mod, &err),
                     PJ_ERR_INVALID);
    assert_non_null(strstr(err.msg, "module /etc/hostname: "));
    pj_err_clear(&err);
    assert_int_equal(hsm_module_load(NULL, &mod, &err), PJ_ERR_INVALID);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uri_full),
        cmocka_unit_test(test_uri_pin_source_forms),
        cmocka_unit_test(test_uri_minimal_and_serial),
        cmocka_unit_test(test_uri_pin_value_refused_without_echo),
        cmocka_unit_test(test_uri_bad),
        cmocka_unit_test(test_ckr_name),
        cmocka_unit_test(test_ckr_classes),
        cmocka_unit_test(test_module_path_resolve),
        cmocka_unit_test(test_module_load_errors),
    };
    return cmocka_run_group_tests_name("pkcs11_uri", tests, NULL, NULL);
}
