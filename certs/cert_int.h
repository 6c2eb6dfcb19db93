/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Inside certs/ only: the parsed-certificate struct and helpers that need
 * OpenSSL types. Other rooms include certs/cert.h instead.
 */
#ifndef CERT_INT_H
#define CERT_INT_H

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "certs/cert.h"

/* "AB:CD:..." of a 32-byte digest: 32 * 3 bytes with the NUL. */
#define CERT_FP_MAX 96

struct cert {
    char *source;
    enum cert_format format;
    uint8_t *der;
    size_t der_len;
    char *pem;
    size_t pem_len;
    X509 *x509;
    char *subject;
    char *issuer;
    char *serial;
    int64_t not_before, not_after;
    char sha1[CERT_FP_MAX];
    char sha256[CERT_FP_MAX];
    char spki_sha256[CERT_FP_MAX];
    const char *key_type;
    unsigned key_bits;
    bool self_issued;
};

/* Build a struct cert around DER (copied); name as in cert_parse. */
PJ_MUST_USE pj_rc cert_from_der(const uint8_t *der, size_t len,
                                const char *name, enum cert_format format,
                                struct cert **certp, struct pj_err *err);

/* The X509 inside a parsed certificate (borrowed). */
X509 *cert_get0_x509(const struct cert *cert);

/* Parse a subject into a new X509_NAME. */
PJ_MUST_USE pj_rc cert_subject_parse(const char *subject, X509_NAME **namep,
                                     struct pj_err *err);

/*
 * A NUL-terminated copy of n bytes that need not be NUL-terminated (BIO
 * memory), unlike strndup, which may read past them looking for a NUL.
 */
char *cert_memdup(const char *p, size_t n);

/* "AB:CD:.." of a digest into out (3 * len bytes). */
void cert_fp_format(const uint8_t *md, size_t len, char *out);

/* SHA-256 fingerprint of a public key's DER SubjectPublicKeyInfo. */
PJ_MUST_USE pj_rc cert_pkey_fp(EVP_PKEY *pkey, char out[CERT_FP_MAX],
                               struct pj_err *err);

/*
 * The key on the token as an OpenSSL public key, and the signing of
 * certificates and CSRs with it (cert_tokenkey.c): the token signs the
 * to-be-signed bytes (CKM_SHA256_RSA_PKCS), so a sign-only key will do.
 */
struct cert_tokenkey;
PJ_MUST_USE pj_rc cert_tokenkey_new(struct hsm_key *key,
                                    struct cert_tokenkey **tkp,
                                    struct pj_err *err);
/* The public key (for X509_set_pubkey); owned by tk. */
EVP_PKEY *cert_tokenkey_pkey(struct cert_tokenkey *tk);
/* Sign *xp / *reqp on the token, verify, and replace it with the signed
 * copy (the old object is freed; on failure *xp is unchanged). */
PJ_MUST_USE pj_rc cert_tokenkey_sign_x509(struct cert_tokenkey *tk, X509 **xp,
                                          struct pj_err *err);
PJ_MUST_USE pj_rc cert_tokenkey_sign_req(struct cert_tokenkey *tk,
                                         X509_REQ **reqp, struct pj_err *err);
void cert_tokenkey_free(struct cert_tokenkey *tk);

#endif
