/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An OpenSSL EVP_PKEY whose signatures are made by the key on the token.
 *
 * Why the deprecated RSA_METHOD API: Debian 12 has no PKCS#11 provider for
 * OpenSSL 3, and libp11/the engine would be a second PKCS#11 stack with a
 * second login (and the engine breaks tpm2-pkcs11 in-process, see
 * research/pkcs11.md 4). An RSA key with a custom method is a "foreign"
 * key to OpenSSL 3.0, which then takes the legacy path: X509_sign and
 * X509_REQ_sign hash the to-be-signed bytes and call our sign callback with
 * (NID_sha256, digest); we hand the digest to hsm_key_sign_digest. This was
 * checked on OpenSSL 3.0.22 (both calls reach the callback). The deprecated
 * calls are confined to this file.
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

static int
tokenkey_sign(int type, const unsigned char *m, unsigned int m_length,
              unsigned char *sigret, unsigned int *siglen, const RSA *rsa)
{
    struct cert_tokenkey *tk = RSA_meth_get0_app_data(RSA_get_method(rsa));
    size_t len = (size_t)RSA_size(rsa);

    if (tk == NULL) {
        return 0;
    }
    if (type != NID_sha256 || m_length != 32) {
        pj_err_set(&tk->err, PJ_ERR_INTERNAL,
                   "the token key signs only SHA-256 digests (asked for %s)",
                   OBJ_nid2sn(type));
        return 0;
    }
    if (hsm_key_sign_digest(tk->key, m, sigret, &len, &tk->err) != PJ_OK) {
        return 0;
    }
    *siglen = (unsigned int)len;
    return 1;
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

bool
cert_tokenkey_failed(struct cert_tokenkey *tk, struct pj_err *err)
{
    if (tk->err.rc == PJ_OK) {
        return false;
    }
    ERR_clear_error();
    pj_err_set(err, tk->err.rc, "%s", tk->err.msg);
    if (err != NULL && err->rc == tk->err.rc) {
        err->ckr = tk->err.ckr;
        err->sys = tk->err.sys;
    }
    return true;
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
