/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Self-signed certificates and CSRs, built with OpenSSL and signed by the
 * key on the token through cert_tokenkey (the private key never leaves).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "certs/cert_int.h"
#include "core/pj_util.h"
#include "pkcs11/hsm.h"

/* Salesforce accepts RSA keys of 2048 bits or more (research 1.12). */
#define CERT_MIN_RSA_BITS 2048

static pj_rc
check_key_size(EVP_PKEY *pkey, struct pj_err *err)
{
    int bits = EVP_PKEY_get_bits(pkey);

    if (bits < CERT_MIN_RSA_BITS) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "the token key is RSA-%d; Salesforce needs at least "
                          "RSA-%d: generate a new key",
                          bits, CERT_MIN_RSA_BITS);
    }
    return PJ_OK;
}

static pj_rc
add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value,
        struct pj_err *err)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    int ok;

    if (ext == NULL) {
        return pj_err_crypto(err, "building the %s extension failed",
                             OBJ_nid2sn(nid));
    }
    ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (ok != 1) {
        return pj_err_crypto(err, "adding the %s extension failed",
                             OBJ_nid2sn(nid));
    }
    return PJ_OK;
}

static pj_rc
random_serial(X509 *x, struct pj_err *err)
{
    uint8_t buf[16];
    BIGNUM *bn = NULL;
    pj_rc rc = PJ_OK;

    /* 128 random bits; an INTEGER from unsigned bytes is always positive. */
    do {
        if (RAND_bytes(buf, sizeof(buf)) != 1) {
            return pj_err_crypto(err, "the random generator failed");
        }
    } while (buf[0] == 0); /* keep the full 128 bits (and never zero) */
    if ((bn = BN_bin2bn(buf, sizeof(buf), NULL)) == NULL ||
        BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL) {
        rc = pj_err_crypto(err, "setting the serial number failed");
    }
    BN_free(bn);
    return rc;
}

pj_rc
cert_self_signed(struct hsm_key *key, const struct cert_build_opts *opts,
                 struct cert **certp, struct pj_err *err)
{
    struct cert_tokenkey *tk = NULL;
    X509_NAME *name = NULL;
    X509 *x = NULL;
    X509V3_CTX ctx;
    EVP_PKEY *pkey;
    unsigned char *der = NULL;
    int der_len;
    long days = opts->days != 0 ? opts->days : CERT_DAYS_DEFAULT;
    int64_t now = opts->now != 0 ? opts->now : pj_time_now();
    pj_rc rc;

    *certp = NULL;
    if ((rc = cert_days_check(days, opts->force, err)) != PJ_OK ||
        (rc = cert_subject_parse(opts->subject, &name, err)) != PJ_OK ||
        (rc = cert_tokenkey_new(key, &tk, err)) != PJ_OK) {
        goto out;
    }
    pkey = cert_tokenkey_pkey(tk);
    if ((rc = check_key_size(pkey, err)) != PJ_OK) {
        goto out;
    }
    if ((x = X509_new()) == NULL || X509_set_version(x, X509_VERSION_3) != 1) {
        rc = pj_err_crypto(err, "building the certificate failed");
        goto out;
    }
    if ((rc = random_serial(x, err)) != PJ_OK) {
        goto out;
    }
    if (ASN1_TIME_set(X509_getm_notBefore(x), (time_t)now) == NULL ||
        ASN1_TIME_set(X509_getm_notAfter(x), (time_t)(now + days * 86400)) ==
            NULL ||
        X509_set_subject_name(x, name) != 1 ||
        X509_set_issuer_name(x, name) != 1 || X509_set_pubkey(x, pkey) != 1) {
        rc = pj_err_crypto(err, "building the certificate failed");
        goto out;
    }
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    if ((rc = add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE",
                      err)) != PJ_OK ||
        (rc = add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature",
                      err)) != PJ_OK ||
        (rc = add_ext(x, &ctx, NID_subject_key_identifier, "hash", err)) !=
            PJ_OK) {
        goto out;
    }
    if ((rc = cert_tokenkey_sign_x509(tk, &x, err)) != PJ_OK) {
        goto out;
    }
    if ((der_len = i2d_X509(x, &der)) <= 0) {
        rc = pj_err_crypto(err, "encoding the certificate failed");
        goto out;
    }
    rc = cert_from_der(der, (size_t)der_len, "the new certificate",
                       CERT_FORMAT_PEM, certp, err);
out:
    OPENSSL_free(der);
    X509_free(x);
    X509_NAME_free(name);
    cert_tokenkey_free(tk);
    return rc;
}

static pj_rc
req_add_exts(X509_REQ *req, struct pj_err *err)
{
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    X509_EXTENSION *e1, *e2;
    pj_rc rc = PJ_OK;

    /* What we ask the CA for; it decides what it issues. */
    e1 = X509V3_EXT_conf_nid(NULL, NULL, NID_basic_constraints,
                             "critical,CA:FALSE");
    e2 = X509V3_EXT_conf_nid(NULL, NULL, NID_key_usage,
                             "critical,digitalSignature");
    if (exts == NULL || e1 == NULL || e2 == NULL ||
        sk_X509_EXTENSION_push(exts, e1) <= 0) {
        X509_EXTENSION_free(e1);
        X509_EXTENSION_free(e2);
        rc = pj_err_crypto(err, "building the CSR's extensions failed");
        goto out;
    }
    if (sk_X509_EXTENSION_push(exts, e2) <= 0) {
        X509_EXTENSION_free(e2);
        rc = pj_err_crypto(err, "building the CSR's extensions failed");
        goto out;
    }
    if (X509_REQ_add_extensions(req, exts) != 1) {
        rc = pj_err_crypto(err, "adding the CSR's extensions failed");
    }
out:
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    return rc;
}

pj_rc
cert_csr(struct hsm_key *key, const char *subject, char **pemp, size_t *lenp,
         struct pj_err *err)
{
    struct cert_tokenkey *tk = NULL;
    X509_NAME *name = NULL;
    X509_REQ *req = NULL;
    EVP_PKEY *pkey;
    BIO *bio = NULL;
    char *p = NULL;
    long n;
    pj_rc rc;

    *pemp = NULL;
    if ((rc = cert_subject_parse(subject, &name, err)) != PJ_OK ||
        (rc = cert_tokenkey_new(key, &tk, err)) != PJ_OK) {
        goto out;
    }
    pkey = cert_tokenkey_pkey(tk);
    if ((rc = check_key_size(pkey, err)) != PJ_OK) {
        goto out;
    }
    if ((req = X509_REQ_new()) == NULL || X509_REQ_set_version(req, 0) != 1 ||
        X509_REQ_set_subject_name(req, name) != 1 ||
        X509_REQ_set_pubkey(req, pkey) != 1) {
        rc = pj_err_crypto(err, "building the CSR failed");
        goto out;
    }
    if ((rc = req_add_exts(req, err)) != PJ_OK) {
        goto out;
    }
    if ((rc = cert_tokenkey_sign_req(tk, &req, err)) != PJ_OK) {
        goto out;
    }
    if ((bio = BIO_new(BIO_s_mem())) == NULL ||
        PEM_write_bio_X509_REQ(bio, req) != 1) {
        rc = pj_err_crypto(err, "writing the CSR as PEM failed");
        goto out;
    }
    n = BIO_get_mem_data(bio, &p);
    if ((*pemp = cert_memdup(p, (size_t)n)) == NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (lenp != NULL) {
        *lenp = (size_t)n;
    }
    rc = PJ_OK;
out:
    BIO_free(bio);
    X509_REQ_free(req);
    X509_NAME_free(name);
    cert_tokenkey_free(tk);
    return rc;
}
