/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Certificate file parsing (certs/cert_parse.c): good PEM and DER, and
 * every bad input a person may hand us, each made here with OpenSSL.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "certs/cert_int.h"
#include "core/pj_util.h"

#define DAY 86400

static EVP_PKEY *key1, *key2;

struct blob {
    uint8_t *data;
    size_t len;
};

static int
setup(void **state)
{
    (void)state;
    key1 = EVP_RSA_gen(2048);
    key2 = EVP_RSA_gen(2048);
    return key1 != NULL && key2 != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(key1);
    EVP_PKEY_free(key2);
    return 0;
}

/* A self-signed certificate valid [nb, na]; pad adds a comment extension
 * of that many bytes to make it large. */
static X509 *
make_x509(EVP_PKEY *key, int64_t nb, int64_t na, size_t pad)
{
    X509 *x = X509_new();
    X509_NAME *nm = X509_NAME_new();

    assert_non_null(x);
    assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 0x1234), 1);
    assert_int_equal(X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_UTF8,
                                                (const unsigned char *)"unit",
                                                -1, -1, 0),
                     1);
    X509_set_subject_name(x, nm);
    X509_set_issuer_name(x, nm);
    ASN1_TIME_set(X509_getm_notBefore(x), (time_t)nb);
    ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na);
    X509_set_pubkey(x, key);
    if (pad > 0) {
        char *txt = malloc(pad + 1);
        X509_EXTENSION *ext;
        assert_non_null(txt);
        memset(txt, 'p', pad);
        txt[pad] = '\0';
        ext = X509V3_EXT_conf_nid(NULL, NULL, NID_netscape_comment, txt);
        assert_non_null(ext);
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
        free(txt);
    }
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    X509_NAME_free(nm);
    return x;
}

static struct blob
der_of(X509 *x)
{
    struct blob b = {0};
    unsigned char *p = NULL;
    int n = i2d_X509(x, &p);

    assert_true(n > 0);
    b.data = malloc((size_t)n);
    memcpy(b.data, p, (size_t)n);
    b.len = (size_t)n;
    OPENSSL_free(p);
    return b;
}

static struct blob
bio_blob(BIO *bio)
{
    struct blob b = {0};
    char *p = NULL;
    long n = BIO_get_mem_data(bio, &p);

    b.data = malloc((size_t)n + 1);
    memcpy(b.data, p, (size_t)n);
    b.data[n] = 0;
    b.len = (size_t)n;
    BIO_free(bio);
    return b;
}

static struct blob
pem_of(X509 *x)
{
    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_X509(bio, x), 1);
    return bio_blob(bio);
}

static struct blob
good_cert(int as_pem)
{
    int64_t now = pj_time_now();
    X509 *x = make_x509(key1, now - DAY, now + 100 * DAY, 0);
    struct blob b = as_pem ? pem_of(x) : der_of(x);
    X509_free(x);
    return b;
}

/* Parsing must fail with want and a message naming the input. */
static void
expect_refused(const struct blob *b, pj_rc want, const char *needle)
{
    struct pj_err err = {0};
    struct cert *c = NULL;

    assert_int_equal(cert_parse(b->data, b->len, "input.crt", &c, &err), want);
    assert_null(c);
    if (strstr(err.msg, "input.crt") == NULL ||
        strstr(err.msg, needle) == NULL) {
        fail_msg("message '%s' lacks 'input.crt' or '%s'", err.msg, needle);
    }
}

static void
test_good_pem_and_der(void **state)
{
    struct pj_err err = {0};
    struct cert *cp = NULL, *cd = NULL;
    struct blob pem = good_cert(1), der;
    uint8_t md[32];
    char fp[CERT_FP_MAX];
    const uint8_t *d;
    size_t dl, pl;
    (void)state;

    assert_int_equal(cert_parse(pem.data, pem.len, "a.pem", &cp, &err), PJ_OK);
    assert_int_equal(cert_source_format(cp), CERT_FORMAT_PEM);
    d = cert_der(cp, &dl);
    der.data = malloc(dl);
    memcpy(der.data, d, dl);
    der.len = dl;
    assert_int_equal(cert_parse(der.data, der.len, "a.der", &cd, &err), PJ_OK);
    assert_int_equal(cert_source_format(cd), CERT_FORMAT_DER);
    assert_string_equal(cert_source(cd), "a.der");
    /* Same certificate either way. */
    assert_string_equal(cert_sha256_fp(cp), cert_sha256_fp(cd));
    assert_string_equal(cert_subject(cp), "CN=unit");
    assert_string_equal(cert_issuer(cp), "CN=unit");
    assert_true(cert_self_issued(cp));
    assert_string_equal(cert_serial_hex(cp), "1234");
    assert_string_equal(cert_key_type(cp), "RSA");
    assert_int_equal(cert_key_bits(cp), 2048);
    assert_true(cert_not_after(cp) - cert_not_before(cp) == 101 * DAY);
    /* The fingerprint is SHA-256 of the DER, in openssl's format. */
    EVP_Digest(der.data, der.len, md, NULL, EVP_sha256(), NULL);
    cert_fp_format(md, 32, fp);
    assert_string_equal(cert_sha256_fp(cd), fp);
    assert_int_equal(strlen(cert_sha1_fp(cd)), 59);
    /* The PEM we produce is the same text OpenSSL writes. */
    assert_string_equal(cert_pem(cd, &pl), (const char *)pem.data);
    assert_int_equal(pl, pem.len);
    assert_int_equal(cert_check_usable(cp, pj_time_now(), false, &err), PJ_OK);
    cert_free(cp);
    cert_free(cd);
    free(pem.data);
    free(der.data);
}

static void
test_pem_with_text_around(void **state)
{
    struct pj_err err = {0};
    struct cert *c = NULL;
    struct blob pem = good_cert(1);
    char *buf = malloc(pem.len + 200);
    size_t n;
    (void)state;

    /* `openssl x509 -text` output puts text before the PEM block. */
    n = (size_t)snprintf(buf, pem.len + 200,
                         "Certificate:\n  Data: blah\n%s\nmore\n",
                         (const char *)pem.data);
    assert_int_equal(cert_parse((uint8_t *)buf, n, "t.pem", &c, &err), PJ_OK);
    cert_free(c);
    free(buf);
    free(pem.data);
}

static void
test_garbage_and_empty(void **state)
{
    struct blob b = {(uint8_t *)"hello, this is not a certificate\n", 33};
    struct blob z = {(uint8_t *)"", 0};
    uint8_t seq[] = {0x30, 0x03, 0x02, 0x01, 0x01};
    struct blob s = {seq, sizeof(seq)};
    uint8_t hdr[] = {0x30, 0x84, 0xff};
    struct blob h = {hdr, sizeof(hdr)};
    (void)state;

    expect_refused(&b, PJ_ERR_INVALID, "neither PEM");
    expect_refused(&z, PJ_ERR_INVALID, "empty");
    expect_refused(&s, PJ_ERR_CRYPTO, "not a valid X.509 certificate");
    expect_refused(&h, PJ_ERR_INVALID, "DER");
}

static void
test_too_big_file(void **state)
{
    struct blob b;
    (void)state;
    b.len = CERT_FILE_MAX + 1;
    b.data = calloc(1, b.len);
    b.data[0] = 0x30;
    expect_refused(&b, PJ_ERR_LIMIT, "too large");
    free(b.data);
}

static void
test_truncated_pem(void **state)
{
    struct blob pem = good_cert(1), cut, mid;
    char *end;
    (void)state;

    /* Cut in the middle: no END line. */
    cut = pem;
    cut.len = pem.len / 2;
    expect_refused(&cut, PJ_ERR_CRYPTO, "truncated PEM");
    /* Lines missing in the middle but an END line: bad DER inside. */
    end = strstr((char *)pem.data, "-----END");
    assert_non_null(end);
    mid.data = malloc(pem.len);
    {
        size_t head = 28 + 65 * 3; /* BEGIN line + three base64 lines */
        size_t tail = pem.len - (size_t)(end - (char *)pem.data);
        memcpy(mid.data, pem.data, head);
        memcpy(mid.data + head, end, tail);
        mid.len = head + tail;
    }
    expect_refused(&mid, PJ_ERR_CRYPTO, "input.crt");
    free(mid.data);
    free(pem.data);
}

static void
test_truncated_and_padded_der(void **state)
{
    struct blob der = good_cert(0), cut, longer;
    (void)state;

    cut = der;
    cut.len = der.len - 10;
    expect_refused(&cut, PJ_ERR_INVALID, "truncated DER");
    cut.len = 3;
    expect_refused(&cut, PJ_ERR_INVALID, "truncated DER");
    longer.len = der.len + 2;
    longer.data = malloc(longer.len);
    memcpy(longer.data, der.data, der.len);
    longer.data[der.len] = '\n';
    longer.data[der.len + 1] = 0;
    expect_refused(&longer, PJ_ERR_INVALID, "2 unexpected bytes");
    free(longer.data);
    free(der.data);
}

static void
test_private_keys(void **state)
{
    BIO *bio;
    struct blob b;
    unsigned char *p = NULL;
    int n;
    struct blob cert = good_cert(1), both;
    (void)state;

    /* PKCS#8 PEM */
    bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(bio, key1, NULL, NULL, 0, NULL, NULL);
    b = bio_blob(bio);
    expect_refused(&b, PJ_ERR_DENIED, "holds a private key");
    expect_refused(&b, PJ_ERR_DENIED, "never copy private keys around");
    /* A certificate with its key in the same file: still refused. */
    both.len = cert.len + b.len;
    both.data = malloc(both.len);
    memcpy(both.data, cert.data, cert.len);
    memcpy(both.data + cert.len, b.data, b.len);
    expect_refused(&both, PJ_ERR_DENIED, "holds a private key");
    free(both.data);
    free(b.data);
    /* Traditional "RSA PRIVATE KEY" PEM */
    bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey_traditional(bio, key1, NULL, NULL, 0, NULL, NULL);
    b = bio_blob(bio);
    expect_refused(&b, PJ_ERR_DENIED, "holds a private key");
    free(b.data);
    /* PKCS#8 DER */
    n = i2d_PrivateKey(key1, &p);
    assert_true(n > 0);
    b.data = p;
    b.len = (size_t)n;
    expect_refused(&b, PJ_ERR_DENIED, "holds a private key");
    OPENSSL_free(p);
    free(cert.data);
}

static void
test_csr_and_public_key(void **state)
{
    X509_REQ *req = X509_REQ_new();
    BIO *bio;
    struct blob b;
    unsigned char *p = NULL;
    int n;
    (void)state;

    X509_REQ_set_pubkey(req, key1);
    assert_true(X509_REQ_sign(req, key1, EVP_sha256()) > 0);
    bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509_REQ(bio, req);
    b = bio_blob(bio);
    expect_refused(&b, PJ_ERR_INVALID, "certificate signing request");
    free(b.data);
    n = i2d_X509_REQ(req, &p);
    b.data = p;
    b.len = (size_t)n;
    expect_refused(&b, PJ_ERR_INVALID, "certificate signing request");
    OPENSSL_free(p);
    X509_REQ_free(req);
    bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, key1);
    b = bio_blob(bio);
    expect_refused(&b, PJ_ERR_INVALID, "first PEM block is 'PUBLIC KEY'");
    free(b.data);
}

static struct cert *
parse_x509(X509 *x)
{
    struct pj_err err = {0};
    struct cert *c = NULL;
    struct blob b = der_of(x);

    assert_int_equal(cert_parse(b.data, b.len, "input.crt", &c, &err), PJ_OK);
    free(b.data);
    X509_free(x);
    return c;
}

static void
test_usable(void **state)
{
    int64_t now = pj_time_now();
    struct pj_err err = {0};
    struct cert *expired, *future, *big, *edge;
    size_t len;
    (void)state;

    expired = parse_x509(make_x509(key1, now - 10 * DAY, now - DAY, 0));
    assert_int_equal(cert_check_usable(expired, now, true, &err),
                     PJ_ERR_INVALID);
    assert_non_null(strstr(err.msg, "input.crt expired on"));
    assert_int_equal(cert_expiry_state(expired, now, 30, 7, true, NULL),
                     CERT_STATE_EXPIRED);
    pj_err_clear(&err);

    future = parse_x509(make_x509(key1, now + DAY, now + 10 * DAY, 0));
    assert_int_equal(cert_check_usable(future, now, false, &err),
                     PJ_ERR_INVALID);
    assert_non_null(strstr(err.msg, "input.crt is not valid before"));
    pj_err_clear(&err);
    assert_int_equal(cert_check_usable(future, now, true, &err), PJ_OK);

    /* DER just over Salesforce's 4 KB limit. */
    big = parse_x509(make_x509(key1, now - DAY, now + DAY, 3500));
    cert_der(big, &len);
    assert_true(len > CERT_SF_MAX_BYTES);
    assert_int_equal(cert_check_usable(big, now, false, &err), PJ_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "over Salesforce's limit of 4096"));
    pj_err_clear(&err);

    /* Valid right up to and including notAfter. */
    edge = parse_x509(make_x509(key1, now - DAY, now, 0));
    assert_int_equal(cert_check_usable(edge, now, false, &err), PJ_OK);
    assert_int_equal(cert_check_usable(edge, now + 1, false, &err),
                     PJ_ERR_INVALID);

    cert_free(expired);
    cert_free(future);
    cert_free(big);
    cert_free(edge);
}

static void
test_matches_spki(void **state)
{
    int64_t now = pj_time_now();
    struct pj_err err = {0};
    struct cert *c = parse_x509(make_x509(key1, now - DAY, now + DAY, 0));
    unsigned char *spki = NULL;
    char fp[96];
    bool match = false;
    int n;
    (void)state;

    n = i2d_PUBKEY(key1, &spki);
    assert_int_equal(cert_matches_spki(c, spki, (size_t)n, &match, fp, &err),
                     PJ_OK);
    assert_true(match);
    assert_string_equal(fp, cert_spki_sha256_fp(c));
    OPENSSL_free(spki);
    spki = NULL;
    n = i2d_PUBKEY(key2, &spki);
    assert_int_equal(cert_matches_spki(c, spki, (size_t)n, &match, fp, &err),
                     PJ_OK);
    assert_false(match);
    assert_string_not_equal(fp, cert_spki_sha256_fp(c));
    assert_int_equal(cert_matches_spki(c, spki, 10, &match, NULL, &err),
                     PJ_ERR_CRYPTO);
    OPENSSL_free(spki);
    cert_free(c);
}

static void
test_time_iso(void **state)
{
    char out[21];
    (void)state;
    cert_time_iso(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00Z");
    cert_time_iso(1795880347, out);
    assert_string_equal(out, "2026-11-28T15:39:07Z");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_pem_and_der),
        cmocka_unit_test(test_pem_with_text_around),
        cmocka_unit_test(test_garbage_and_empty),
        cmocka_unit_test(test_too_big_file),
        cmocka_unit_test(test_truncated_pem),
        cmocka_unit_test(test_truncated_and_padded_der),
        cmocka_unit_test(test_private_keys),
        cmocka_unit_test(test_csr_and_public_key),
        cmocka_unit_test(test_usable),
        cmocka_unit_test(test_matches_spki),
        cmocka_unit_test(test_time_iso),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
