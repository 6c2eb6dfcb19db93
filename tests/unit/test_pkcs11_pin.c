/* SPDX-License-Identifier: Apache-2.0 */
/* PIN sources (hsm_pin_read): file modes, env, systemd credentials. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "pkcs11/hsm.h"
#include "pkcs11/internal.h"

static char dir[256];

static int
setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "%s/pj-pin-XXXXXX",
             getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
    return mkdtemp(dir) == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
    char cmd[300];

    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Write content to dir/name with mode; returns "file:<path>" (static). */
static const char *
make_file(const char *name, const char *content, size_t len, mode_t mode)
{
    static char src[512];
    char path[400];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, len, f), len);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
    snprintf(src, sizeof(src), "file:%s", path);
    return src;
}

static void
test_pin_file_0600_ok_strips_newline(void **state)
{
    struct pj_secret *pin = NULL;
    struct pj_err err = {0};

    (void)state;
    assert_int_equal(
        hsm_pin_read(make_file("a", "1234\n", 5, 0600), &pin, &err), PJ_OK);
    assert_int_equal(pin->len, 4);
    assert_memory_equal(pin->data, "1234", 5);
    pj_secret_free(pin);
}

static void
test_pin_file_0400_ok_crlf_and_one_newline_only(void **state)
{
    struct pj_secret *pin = NULL;
    struct pj_err err = {0};

    (void)state;
    assert_int_equal(
        hsm_pin_read(make_file("b", "ab c\r\n", 6, 0400), &pin, &err), PJ_OK);
    assert_int_equal(pin->len, 4);
    assert_memory_equal(pin->data, "ab c", 4);
    pj_secret_free(pin);
    pin = NULL;
    /* Only one newline is removed: the rest is part of the PIN. */
    assert_int_equal(
        hsm_pin_read(make_file("b2", "12\n\n", 4, 0600), &pin, &err), PJ_OK);
    assert_int_equal(pin->len, 3);
    pj_secret_free(pin);
}

static void
check_mode_refused(mode_t mode, const char *modestr)
{
    struct pj_secret *pin = NULL;
    struct pj_err err = {0};
    char want[600];
    const char *src = make_file("m", "1234\n", 5, mode);

    assert_int_equal(hsm_pin_read(src, &pin, &err), PJ_ERR_DENIED);
    assert_null(pin);
    snprintf(want, sizeof(want),
             "PIN file %s is readable by others (mode %s); chmod 600 it",
             src + 5, modestr);
    assert_string_equal(err.msg, want);
    /* The PIN itself never shows up in a message. */
    assert_null(strstr(err.msg, "1234"));
}

static void
test_pin_file_group_or_other_readable_refused(void **state)
{
    (void)state;
    check_mode_refused(0640, "0640");
    check_mode_refused(0644, "0644");
    check_mode_refused(0604, "0604");
    check_mode_refused(0660, "0660");
}

static void
test_pin_file_missing(void **state)
{
    struct pj_secret *pin = NULL;
    struct pj_err err = {0};

    (void)state;
    assert_int_equal(hsm_pin_read("file:/nonexistent/pj-pin", &pin, &err),
                     PJ_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, "/nonexistent/pj-pin"));
    assert_non_null(strstr(err.msg, "does not exist"));
}

static void
test_pin_file_empty_refused(void **state)
{
    struct pj_secret *pin = NULL;
    struct pj_err err = {0};

    (void)state;
    assert_int_equal(hsm_pin_read(make_file("e", "\n", 1, 0600), &pin, &err),
                     PJ_ERR_INVALID);
    assert_non_null(strstr(err.msg, "is empty"));
    pj_err_clear(&err);
    assert_int_equal(hsm_pin_read(make_file("e0", "", 0, 0600), &pin, &err),
                     PJ_ERR_INVALID);
    assert_null(pin);
}

static void
test_pin_file_too_long_and_nul_refused(void **state)
{
    struct pj_secret *pin = NULL;
    struct pj_err err = {0};
    char big[400];

    (void)state;
    memset(big, '7', sizeof(big));
    assert_int_equal(
        hsm_pin_read(make_file("l", big, sizeof(big), 0600), &pin, &err),
        PJ_ERR_LIMIT);
    pj_err_clear(&err);
    assert_int_equal(hsm_pin_read(make_file("z",
                                            "12\0"
                                            "34",
                                            5, 0600),
                                  &pin, &err),
                     PJ_ERR_INVALID);
    assert_null(pin);
}

static void
test_pin_file_directory_refused(void **state)
{
    struct pj_secret *pin = NULL;
    struct pj_err err = {0};
    char src[300];

    (void)state;
    snprintf(src, sizeof(src), "file:%s", dir);
    chmod(dir, 0700);
    assert_int_equal(hsm_pin_read(src, &pin, &err), PJ_ERR_INVALID);
    assert_non_null(strstr(err.msg, "not a regular file"));
}

static void
test_pin_source_forms(void **state)
{
    struct pj_secret *pin = NULL;
    struct pj_err err = {0};
    char src[600], *norm = NULL;
    const char *f = make_file("u", "4321", 4, 0600);

    (void)state;
    /* RFC 7512 pin-source: a plain path or a file: URI. */
    assert_int_equal(hsm_pin_read(f + 5, &pin, &err), PJ_OK);
    assert_memory_equal(pin->data, "4321", 4);
    pj_secret_free(pin);
    snprintf(src, sizeof(src), "file://%s", f + 5);
    assert_int_equal(hsm_pin_read(src, &pin, &err), PJ_OK);
    pj_secret_free(pin);
    snprintf(src, sizeof(src), "file://localhost%s", f + 5);
    assert_int_equal(hsm_pin_read(src, &pin, &err), PJ_OK);
    pj_secret_free(pin);
    pin = NULL;

    assert_int_equal(hsm_pin_read("file://otherhost/etc/pin", &pin, &err),
                     PJ_ERR_INVALID);
    pj_err_clear(&err);
    assert_int_equal(hsm_pin_read("file:", &pin, &err), PJ_ERR_INVALID);
    pj_err_clear(&err);
    assert_int_equal(hsm_pin_read("1234", &pin, &err), PJ_ERR_INVALID);
    assert_non_null(strstr(err.msg, "unknown PIN source"));
    assert_null(strstr(err.msg, "1234"));
    pj_err_clear(&err);
    assert_int_equal(hsm_pin_read("", &pin, &err), PJ_ERR_INVALID);
    pj_err_clear(&err);
    assert_int_equal(hsm_pin_read(NULL, &pin, &err), PJ_ERR_INVALID);
    assert_null(pin);

    assert_int_equal(hsm_pin_source_normalize("/a/b", &norm, &err), PJ_OK);
    assert_string_equal(norm, "file:/a/b");
    free(norm);
}

static void
test_pin_env(void **state)
{
    struct pj_secret *pin = NULL;
    struct pj_err err = {0};

    (void)state;
    setenv("PJ_TEST_PIN", "9876\n", 1);
    assert_int_equal(hsm_pin_read("env:PJ_TEST_PIN", &pin, &err), PJ_OK);
    assert_int_equal(pin->len, 4);
    assert_memory_equal(pin->data, "9876", 4);
    pj_secret_free(pin);
    pin = NULL;

    unsetenv("PJ_TEST_PIN");
    assert_int_equal(hsm_pin_read("env:PJ_TEST_PIN", &pin, &err),
                     PJ_ERR_NOT_FOUND);
    assert_string_equal(err.msg, "environment variable PJ_TEST_PIN (PIN "
                                 "source) is not set");
    pj_err_clear(&err);
    setenv("PJ_TEST_PIN", "", 1);
    assert_int_equal(hsm_pin_read("env:PJ_TEST_PIN", &pin, &err),
                     PJ_ERR_INVALID);
    pj_err_clear(&err);
    assert_int_equal(hsm_pin_read("env:", &pin, &err), PJ_ERR_INVALID);
    assert_null(pin);
    unsetenv("PJ_TEST_PIN");
}

static void
test_pin_systemd(void **state)
{
    struct pj_secret *pin = NULL;
    struct pj_err err = {0};

    (void)state;
    make_file("cred", "5555\n", 5, 0400);
    unsetenv("CREDENTIALS_DIRECTORY");
    assert_int_equal(hsm_pin_read("systemd:cred", &pin, &err),
                     PJ_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, "CREDENTIALS_DIRECTORY is not set"));
    pj_err_clear(&err);

    setenv("CREDENTIALS_DIRECTORY", dir, 1);
    assert_int_equal(hsm_pin_read("systemd:cred", &pin, &err), PJ_OK);
    assert_int_equal(pin->len, 4);
    assert_memory_equal(pin->data, "5555", 4);
    pj_secret_free(pin);
    pin = NULL;

    assert_int_equal(hsm_pin_read("systemd:missing", &pin, &err),
                     PJ_ERR_NOT_FOUND);
    pj_err_clear(&err);
    assert_int_equal(hsm_pin_read("systemd:../cred", &pin, &err),
                     PJ_ERR_INVALID);
    pj_err_clear(&err);
    assert_int_equal(hsm_pin_read("systemd:", &pin, &err), PJ_ERR_INVALID);
    assert_null(pin);
    unsetenv("CREDENTIALS_DIRECTORY");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pin_file_0600_ok_strips_newline),
        cmocka_unit_test(test_pin_file_0400_ok_crlf_and_one_newline_only),
        cmocka_unit_test(test_pin_file_group_or_other_readable_refused),
        cmocka_unit_test(test_pin_file_missing),
        cmocka_unit_test(test_pin_file_empty_refused),
        cmocka_unit_test(test_pin_file_too_long_and_nul_refused),
        cmocka_unit_test(test_pin_file_directory_refused),
        cmocka_unit_test(test_pin_source_forms),
        cmocka_unit_test(test_pin_env),
        cmocka_unit_test(test_pin_systemd),
    };
    return cmocka_run_group_tests_name("pkcs11_pin", tests, setup, teardown);
}
