/* SPDX-License-Identifier: Apache-2.0 */
/* --subject parsing and --days limits (certs/cert_subject.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "certs/cert_int.h"

/* Parse subject and return the entry count; checks each NID and value. */
static void
expect_name(const char *subject, const int *nids, const char *const *values,
            int n)
{
    struct pj_err err = {0};
    X509_NAME *nm = NULL;
    int i;

    assert_int_equal(cert_subject_parse(subject, &nm, &err), PJ_OK);
    assert_non_null(nm);
    assert_int_equal(X509_NAME_entry_count(nm), n);
    for (i = 0; i < n; i++) {
        const X509_NAME_ENTRY *e = X509_NAME_get_entry(nm, i);
        const ASN1_STRING *d = X509_NAME_ENTRY_get_data(e);
        assert_int_equal(OBJ_obj2nid(X509_NAME_ENTRY_get_object(e)), nids[i]);
        assert_int_equal(ASN1_STRING_length(d), (int)strlen(values[i]));
        assert_memory_equal(ASN1_STRING_get0_data(d), values[i],
                            strlen(values[i]));
    }
    X509_NAME_free(nm);
}

static void
expect_bad(const char *subject, pj_rc want, const char *needle)
{
    struct pj_err err = {0};
    X509_NAME *nm = NULL;

    assert_int_equal(cert_subject_parse(subject, &nm, &err), want);
    assert_null(nm);
    if (strstr(err.msg, needle) == NULL) {
        fail_msg("message '%s' lacks '%s'", err.msg, needle);
    }
    pj_err_clear(&err);
    assert_int_equal(cert_subject_check(subject, &err), want);
}

static void
test_comma_form(void **state)
{
    static const int nids[] = {NID_commonName, NID_organizationName,
                               NID_countryName};
    static const char *const vals[] = {"sf-jwt", "Acme", "DE"};
    (void)state;
    expect_name("CN=sf-jwt,O=Acme,C=DE", nids, vals, 3);
    /* Spaces around names and values are not part of them. */
    expect_name("  CN = sf-jwt ,  O=Acme, C=DE ", nids, vals, 3);
    /* Names are case-insensitive. */
    expect_name("cn=sf-jwt,o=Acme,c=DE", nids, vals, 3);
}

static void
test_slash_form(void **state)
{
    static const int nids[] = {NID_commonName, NID_organizationalUnitName};
    static const char *const vals[] = {"a,b", "x/y"};
    (void)state;
    /* In the slash form a comma is plain text; '\/' keeps a slash. */
    expect_name("/CN=a,b/OU=x\\/y", nids, vals, 2);
    /* A trailing slash is tolerated, as openssl -subj does. */
    expect_name("/CN=a,b/OU=x\\/y/", nids, vals, 2);
}

static void
test_escapes(void **state)
{
    static const int nids[] = {NID_commonName, NID_organizationName};
    static const char *const vals[] = {"jwt", "Acme, Inc."};
    static const int nid1[] = {NID_commonName};
    static const char *const v1[] = {"a=b\\c"};
    (void)state;
    expect_name("CN=jwt,O=Acme\\, Inc.", nids, vals, 2);
    /* '=' after the first is part of the value; '\\' is a backslash. */
    expect_name("CN=a=b\\\\c", nid1, v1, 1);
}

static void
test_more_attrs(void **state)
{
    static const int nids[] = {NID_pkcs9_emailAddress, NID_localityName,
                               NID_stateOrProvinceName, NID_domainComponent,
                               NID_serialNumber};
    static const char *const vals[] = {"a@b.example", "Berlin", "BE", "com",
                                       "42"};
    (void)state;
    expect_name("emailAddress=a@b.example,L=Berlin,ST=BE,DC=com,"
                "serialNumber=42",
                nids, vals, 5);
}

static void
test_bad_subjects(void **state)
{
    (void)state;
    expect_bad("CN=a,FOO=b", PJ_ERR_INVALID, "unknown attribute 'FOO'");
    expect_bad("CM=typo", PJ_ERR_INVALID, "unknown attribute 'CM'");
    /* A known OID that is not on the list is still refused. */
    expect_bad("CN=a,2.5.4.3=b", PJ_ERR_INVALID, "unknown attribute '2.5.4.3'");
    expect_bad("/CN=a/commonName=b", PJ_ERR_INVALID,
               "unknown attribute 'commonName'");
    expect_bad("", PJ_ERR_INVALID, "empty");
    expect_bad("   ", PJ_ERR_INVALID, "no attributes");
    expect_bad("CN", PJ_ERR_INVALID, "not NAME=VALUE");
    expect_bad("CN=", PJ_ERR_INVALID, "has no value");
    expect_bad("CN=a,,O=b", PJ_ERR_INVALID, "empty attribute");
    expect_bad("CN=a,", PJ_ERR_INVALID, "empty attribute");
    expect_bad("//CN=a", PJ_ERR_INVALID, "empty attribute");
    expect_bad("CN=a\\", PJ_ERR_INVALID, "lone backslash");
    expect_bad("CN=a,C=Germany", PJ_ERR_CRYPTO, "value of 'C'");
    {
        char big[CERT_SUBJECT_MAX + 10];
        memset(big, 'a', sizeof(big) - 1);
        big[0] = 'C';
        big[1] = 'N';
        big[2] = '=';
        big[sizeof(big) - 1] = '\0';
        expect_bad(big, PJ_ERR_LIMIT, "characters long");
    }
    {
        char cn[80] = "CN=";
        memset(cn + 3, 'x', 70);
        cn[73] = '\0';
        expect_bad(cn, PJ_ERR_CRYPTO, "at most 64");
    }
}

static void
test_days(void **state)
{
    struct pj_err err = {0};
    (void)state;
    assert_int_equal(cert_days_check(1, false, &err), PJ_OK);
    assert_int_equal(cert_days_check(CERT_DAYS_MAX, false, &err), PJ_OK);
    assert_int_equal(cert_days_check(CERT_DAYS_MAX + 1, false, &err),
                     PJ_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "--force"));
    pj_err_clear(&err);
    assert_int_equal(cert_days_check(CERT_DAYS_MAX + 1, true, &err), PJ_OK);
    assert_int_equal(cert_days_check(CERT_DAYS_MAX_FORCE, true, &err), PJ_OK);
    assert_int_equal(cert_days_check(CERT_DAYS_MAX_FORCE + 1, true, &err),
                     PJ_ERR_LIMIT);
    pj_err_clear(&err);
    assert_int_equal(cert_days_check(0, true, &err), PJ_ERR_INVALID);
    pj_err_clear(&err);
    assert_int_equal(cert_days_check(-5, false, &err), PJ_ERR_INVALID);
    assert_non_null(strstr(err.msg, "-5"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_comma_form),   cmocka_unit_test(test_slash_form),
        cmocka_unit_test(test_escapes),      cmocka_unit_test(test_more_attrs),
        cmocka_unit_test(test_bad_subjects), cmocka_unit_test(test_days),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
