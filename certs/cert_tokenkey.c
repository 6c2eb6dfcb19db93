/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Certificates and CSRs signed by the key on the token, over their
 * to-be-signed bytes with CKM_SHA256_RSA_PKCS (the token hashes).
 *
 * Why not OpenSSL's own sign call end to end: Debian 12 has no PKCS#11
 * provider for OpenSSL 3, and libp11/the engine would be a second PKCS#11
 * stack with a second login (and the engine breaks tpm2-pkcs11 in-process,
 * see research/pkcs11.md 4). OpenSSL only hands a custom RSA method the
 * digest, and a digest can only be signed with CKM_RSA_PKCS, which
 * tpm2-pkcs11 performs as a TPM decrypt: the key would need the decrypt
 * attribute. So: OpenSSL encodes the structure and its algorithm fields,
 * signing through an RSA method that returns a placeholder; we sign the
 * encoded TBS bytes on the token with hsm_key_sign, put the signature where
 * the placeholder was, parse the result back and verify it with OpenSSL's
 * public-key code. The deprecated RSA_METHOD calls are confined to this
 * file.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "certs/cert_int.h"
#include "pkcs11/hsm.h"

struct cert_tokenkey {
    struct hsm_key *key;
    RSA_METHOD *meth; /* one per key: its app data points back here */
    EVP_PKEY *pkey;
    struct pj_err err; /* the token's failure, kept for the caller */
};

/* What tokenkey_tbs_sign needs of an X509 or an X509_REQ. */
struct tbs_ops {
    const char *what;
    int (*ossl_sign)(void *obj, EVP_PKEY *pkey);
    int (*tbs)(void *obj, unsigned char **pp);
    int (*i2d)(void *obj, unsigned char **pp);
    void *(*d2i)(const unsigned char **pp, long len);
    int (*verify)(void *obj, EVP_PKEY *pkey);
    void (*free)(void *obj);
};

/*
 * OpenSSL's sign call ends here with the digest; the real signature is made
 * over the TBS bytes afterwards (tokenkey_tbs_sign), so this returns a
 * placeholder of the right length: zeros.
 */
static int
tokenkey_sign(int type, const unsigned char *m, unsigned int m_length,
              unsigned char *sigret, unsigned int *siglen, const RSA *rsa)
{
    (void)m;
    if (type != NID_sha256 || m_length != 32) {
        return 0;
    }
    memset(sigret, 0, (size_t)RSA_size(rsa));
    *siglen = (unsigned int)RSA_size(rsa);
    return 1;
}

/*
 * Sign *objp on the token over its TBS bytes and replace it with the signed
 * copy. The signature BIT STRING is the last element of both a Certificate
 * and a CertificationRequest, so the placeholder is the DER's last bytes.
 */
static pj_rc
tokenkey_tbs_sign(struct cert_tokenkey *tk, const struct tbs_ops *ops,
                  void **objp, struct pj_err *err)
{
    unsigned char *tbs = NULL, *der = NULL;
    const unsigned char *p;
    uint8_t sig[HSM_SIG_MAX];
    size_t siglen = sizeof(sig), i;
    int tbs_len, der_len;
    void *signed_obj = NULL;
    pj_rc rc;

    ERR_clear_error();
    if (ops->ossl_sign(*objp, tk->pkey) <= 0) {
        return pj_err_crypto(err, "encoding the %s for signing failed",
                             ops->what);
    }
    if ((tbs_len = ops->tbs(*objp, &tbs)) <= 0 ||
        (der_len = ops->i2d(*objp, &der)) <= 0) {
        rc = pj_err_crypto(err, "encoding the %s failed", ops->what);
        goto out;
    }
    if ((rc = hsm_key_sign(tk->key, tbs, (size_t)tbs_len, sig, &siglen, err)) !=
        PJ_OK) {
        goto out;
    }
    /* The placeholder: RSA_size zero bytes after the unused-bits byte. */
    if (siglen != (size_t)EVP_PKEY_get_size(tk->pkey) ||
        (size_t)der_len <= siglen + 1 || der[der_len - (int)siglen - 1] != 0) {
        rc = pj_err_set(err, PJ_ERR_INTERNAL,
                        "the %s does not end with the %zu-byte signature "
                        "placeholder",
                        ops->what, siglen);
        goto out;
    }
    for (i = 0; i < siglen; i++) {
        if (der[(size_t)der_len - siglen + i] != 0) {
            rc = pj_err_set(err, PJ_ERR_INTERNAL,
                            "the %s does not end with the signature "
                            "placeholder",
                            ops->what);
            goto out;
        }
    }
    memcpy(der + (size_t)der_len - siglen, sig, siglen);
    p = der;
    if ((signed_obj = ops->d2i(&p, der_len)) == NULL || p != der + der_len) {
        rc = pj_err_crypto(err, "reading back the signed %s failed", ops->what);
        goto out;
    }
    /* A token that signed with the wrong padding or key is caught here. */
    if (ops->verify(signed_obj, tk->pkey) != 1) {
        rc = pj_err_crypto(err,
                           "the token's signature on the %s does not verify "
                           "with the token's public key",
                           ops->what);
        goto out;
    }
    ops->free(*objp);
    *objp = signed_obj;
    signed_obj = NULL;
    rc = PJ_OK;
out:
    if (signed_obj != NULL) {
        ops->free(signed_obj);
    }
    OPENSSL_free(tbs);
    OPENSSL_free(der);
    return rc;
}

static int
x509_sign_cb(void *x, EVP_PKEY *pkey)
{
    return X509_sign(x, pkey, EVP_sha256());
}
static int
x509_tbs_cb(void *x, unsigned char **pp)
{
    return i2d_re_X509_tbs(x, pp);
}
static int
x509_i2d_cb(void *x, unsigned char **pp)
{
    return i2d_X509(x, pp);
}
static void *
x509_d2i_cb(const unsigned char **pp, long len)
{
    return d2i_X509(NULL, pp, len);
}
static int
x509_verify_cb(void *x, EVP_PKEY *pkey)
{
    return X509_verify(x, pkey);
}
static void
x509_free_cb(void *x)
{
    X509_free(x);
}

static int
req_sign_cb(void *r, EVP_PKEY *pkey)
{
    return X509_REQ_sign(r, pkey, EVP_sha256());
}
static int
req_tbs_cb(void *r, unsigned char **pp)
{
    return i2d_re_X509_REQ_tbs(r, pp);
}
static int
req_i2d_cb(void *r, unsigned char **pp)
{
    return i2d_X509_REQ(r, pp);
}
static void *
req_d2i_cb(const unsigned char **pp, long len)
{
    return d2i_X509_REQ(NULL, pp, len);
}
static int
req_verify_cb(void *r, EVP_PKEY *pkey)
{
    return X509_REQ_verify(r, pkey);
}
static void
req_free_cb(void *r)
{
    X509_REQ_free(r);
}

pj_rc
cert_tokenkey_sign_x509(struct cert_tokenkey *tk, X509 **xp, struct pj_err *err)
{
    static const struct tbs_ops ops = {
        "certificate", x509_sign_cb,   x509_tbs_cb,  x509_i2d_cb,
        x509_d2i_cb,   x509_verify_cb, x509_free_cb,
    };
    void *obj = *xp;
    pj_rc rc = tokenkey_tbs_sign(tk, &ops, &obj, err);

    *xp = obj;
    return rc;
}

pj_rc
cert_tokenkey_sign_req(struct cert_tokenkey *tk, X509_REQ **reqp,
                       struct pj_err *err)
{
    static const struct tbs_ops ops = {
        "CSR",      req_sign_cb,   req_tbs_cb,  req_i2d_cb,
        req_d2i_cb, req_verify_cb, req_free_cb,
    };
    void *obj = *reqp;
    pj_rc rc = tokenkey_tbs_sign(tk, &ops, &obj, err);

    *reqp = obj;
    return rc;
}

pj_rc
cert_tokenkey_new(struct hsm_key *key, struct cert_tokenkey **tkp,
                  struct pj_err *err)
{
    struct cert_tokenkey *tk = NULL;
    uint8_t *der = NULL;
    size_t der_len = 0;
    const unsigned char *p;
    EVP_PKEY *pub = NULL;
    BIGNUM *n = NULL, *e = NULL;
    RSA *rsa = NULL;
    pj_rc rc;

    *tkp = NULL;
    if ((tk = calloc(1, sizeof(*tk))) == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
    }
    tk->key = key;
    if ((rc = hsm_key_public_der(key, &der, &der_len, err)) != PJ_OK) {
        goto out;
    }
    p = der;
    pub = d2i_PUBKEY(NULL, &p, (long)der_len);
    if (pub == NULL || EVP_PKEY_get_base_id(pub) != EVP_PKEY_RSA) {
        rc = pj_err_crypto(err, "the token key's public half is not an RSA "
                                "SubjectPublicKeyInfo");
        goto out;
    }
    if (EVP_PKEY_get_bn_param(pub, "n", &n) != 1 ||
        EVP_PKEY_get_bn_param(pub, "e", &e) != 1) {
        rc = pj_err_crypto(err, "reading the token key's modulus failed");
        goto out;
    }
    /* Public operations (verify) stay OpenSSL's; only sign is ours. */
    if ((tk->meth = RSA_meth_dup(RSA_PKCS1_OpenSSL())) == NULL ||
        RSA_meth_set1_name(tk->meth, "p11jwt token key") != 1 ||
        RSA_meth_set0_app_data(tk->meth, tk) != 1 ||
        RSA_meth_set_sign(tk->meth, tokenkey_sign) != 1 ||
        (rsa = RSA_new()) == NULL || RSA_set_method(rsa, tk->meth) != 1 ||
        RSA_set0_key(rsa, n, e, NULL) != 1) {
        rc = pj_err_crypto(err, "building the OpenSSL key for the token "
                                "failed");
        goto out;
    }
    n = e = NULL; /* owned by rsa */
    if ((tk->pkey = EVP_PKEY_new()) == NULL ||
        EVP_PKEY_assign_RSA(tk->pkey, rsa) != 1) {
        rc = pj_err_crypto(err, "building the OpenSSL key for the token "
                                "failed");
        goto out;
    }
    rsa = NULL; /* owned by tk->pkey */
    *tkp = tk;
    tk = NULL;
    rc = PJ_OK;
out:
    RSA_free(rsa);
    BN_free(n);
    BN_free(e);
    EVP_PKEY_free(pub);
    free(der);
    cert_tokenkey_free(tk);
    return rc;
}

EVP_PKEY *
cert_tokenkey_pkey(struct cert_tokenkey *tk)
{
    return tk->pkey;
}

void
cert_tokenkey_free(struct cert_tokenkey *tk)
{
    if (tk == NULL) {
        return;
    }
    /* The key first: it refers to the method. */
    EVP_PKEY_free(tk->pkey);
    RSA_meth_free(tk->meth);
    free(tk);
}
