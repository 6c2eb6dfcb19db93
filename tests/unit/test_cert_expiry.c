/* SPDX-License-Identifier: Apache-2.0 */
/* Expiry states at their boundaries (certs/cert_expiry.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "certs/cert.h"

#define DAY 86400
#define NB 1700000000LL
#define NA (NB + 365LL * DAY)

static enum cert_state
at(int64_t now, int64_t *days)
{
    return cert_expiry_state_at(NB, NA, now, 30, 7, true, days);
}

static void
test_ok_and_warning(void **state)
{
    int64_t d = 0;
    (void)state;
    assert_int_equal(at(NB, &d), CERT_STATE_OK);
    assert_int_equal(d, 365);
    /* Exactly 30 days left is still ok; one second less is a warning. */
    assert_int_equal(at(NA - 30 * DAY, &d), CERT_STATE_OK);
    assert_int_equal(d, 30);
    assert_int_equal(at(NA - 30 * DAY + 1, &d), CERT_STATE_WARNING);
    assert_int_equal(d, 29);
}

static void
test_critical(void **state)
{
    int64_t d = 0;
    (void)state;
    assert_int_equal(at(NA - 7 * DAY, &d), CERT_STATE_WARNING);
    assert_int_equal(d, 7);
    assert_int_equal(at(NA - 7 * DAY + 1, &d), CERT_STATE_CRITICAL);
    assert_int_equal(d, 6);
    assert_int_equal(at(NA - 1, &d), CERT_STATE_CRITICAL);
    assert_int_equal(d, 0);
    /* notAfter itself is still inside the validity period. */
    assert_int_equal(at(NA, &d), CERT_STATE_CRITICAL);
    assert_int_equal(d, 0);
}

static void
test_expired(void **state)
{
    int64_t d = 0;
    (void)state;
    assert_int_equal(at(NA + 1, &d), CERT_STATE_EXPIRED);
    assert_int_equal(d, -1); /* rounded down: one second late is day -1 */
    assert_int_equal(at(NA + 10 * DAY, &d), CERT_STATE_EXPIRED);
    assert_int_equal(d, -10);
}

static void
test_not_yet_valid(void **state)
{
    int64_t d = 0;
    (void)state;
    assert_int_equal(at(NB - 1, &d), CERT_STATE_NOT_YET_VALID);
    assert_int_equal(d, 365);
    assert_int_equal(at(NB, NULL), CERT_STATE_OK);
}

static void
test_mismatch_first(void **state)
{
    int64_t d = 0;
    (void)state;
    /* A certificate that is not the key's is the worst news, whatever
     * its dates say. */
    assert_int_equal(cert_expiry_state_at(NB, NA, NB, 30, 7, false, &d),
                     CERT_STATE_MISMATCH);
    assert_int_equal(cert_expiry_state_at(NB, NA, NA + DAY, 30, 7, false, &d),
                     CERT_STATE_MISMATCH);
    assert_int_equal(d, -1);
}

static void
test_thresholds(void **state)
{
    (void)state;
    /* Zero thresholds switch the level off. */
    assert_int_equal(cert_expiry_state_at(NB, NA, NA - 1, 0, 0, true, NULL),
                     CERT_STATE_OK);
    /* critical larger than warn: critical wins. */
    assert_int_equal(
        cert_expiry_state_at(NB, NA, NA - 20 * DAY, 10, 30, true, NULL),
        CERT_STATE_CRITICAL);
}

static void
test_names(void **state)
{
    (void)state;
    assert_string_equal(cert_state_name(CERT_STATE_OK), "ok");
    assert_string_equal(cert_state_name(CERT_STATE_WARNING), "warning");
    assert_string_equal(cert_state_name(CERT_STATE_CRITICAL), "critical");
    assert_string_equal(cert_state_name(CERT_STATE_EXPIRED), "expired");
    assert_string_equal(cert_state_name(CERT_STATE_NOT_YET_VALID),
                        "not_yet_valid");
    assert_string_equal(cert_state_name(CERT_STATE_MISMATCH), "mismatch");
    assert_string_equal(cert_state_name((enum cert_state)99), "unknown");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok_and_warning),
        cmocka_unit_test(test_critical),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_not_yet_valid),
        cmocka_unit_test(test_mismatch_first),
        cmocka_unit_test(test_thresholds),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
