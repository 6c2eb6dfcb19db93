/* SPDX-License-Identifier: Apache-2.0 */
/*
 * X.509 certificate objects beside a key (same CKA_ID), so a key and its
 * certificate travel together on the token.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "core/pj_util.h"
#include "pkcs11/internal.h"

/* The DER fields a CKO_CERTIFICATE carries besides CKA_VALUE. */
struct cert_fields {
    unsigned char *subject, *issuer, *serial;
    int subject_len, issuer_len, serial_len;
};

static void
cert_fields_cleanup(struct cert_fields *c)
{
    OPENSSL_free(c->subject);
    OPENSSL_free(c->issuer);
    OPENSSL_free(c->serial);
    memset(c, 0, sizeof(*c));
}

static pj_rc
cert_fields_parse(const uint8_t *der, size_t len, struct cert_fields *c,
                  struct pj_err *err)
{
    const unsigned char *p = der;
    X509 *x = NULL;
    pj_rc rc = PJ_OK;

    memset(c, 0, sizeof(*c));
    ERR_clear_error(); /* report only what this parse queues */
    if (len == 0 || len > HSM_CERT_MAX_BYTES) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "certificate of %zu bytes (empty or over %d)", len,
                          HSM_CERT_MAX_BYTES);
    }
    if ((x = d2i_X509(NULL, &p, (long)len)) == NULL || p != der + len) {
        rc = pj_err_crypto(err, "the certificate is not one DER X.509");
        goto out;
    }
    if ((c->subject_len =
             i2d_X509_NAME(X509_get_subject_name(x), &c->subject)) <= 0 ||
        (c->issuer_len = i2d_X509_NAME(X509_get_issuer_name(x), &c->issuer)) <=
            0 ||
        (c->serial_len =
             i2d_ASN1_INTEGER(X509_get_serialNumber(x), &c->serial)) <= 0) {
        rc = pj_err_crypto(err, "encoding the certificate's names");
        goto out;
    }
out:
    X509_free(x);
    if (rc != PJ_OK) {
        cert_fields_cleanup(c);
    }
    return rc;
}

/* Certificates with this id: up to max handles into objs, count in *np. */
static pj_rc
certs_with_id(struct hsm_module *mod, CK_SESSION_HANDLE s, const uint8_t *id,
              size_t idlen, CK_OBJECT_HANDLE *objs, CK_ULONG max, CK_ULONG *np,
              struct pj_err *err)
{
    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    CK_ATTRIBUTE t[2] = {{CKA_CLASS, &cls, sizeof(cls)},
                         {CKA_ID, (void *)id, idlen}};
    CK_RV rv;

    *np = 0;
    if ((rv = mod->fl->C_FindObjectsInit(s, t, 2)) != CKR_OK) {
        return hsm_err_ckr(err, rv, "C_FindObjectsInit");
    }
    rv = mod->fl->C_FindObjects(s, objs, max, np);
    (void)mod->fl->C_FindObjectsFinal(s);
    if (rv != CKR_OK) {
        return hsm_err_ckr(err, rv, "C_FindObjects");
    }
    return PJ_OK;
}

struct store_arg {
    const uint8_t *der;
    size_t len;
    const char *label;
    bool replace;
    struct cert_fields *cf;
};

static pj_rc
op_store(struct hsm_key *key, const struct hsm_ready *r, void *arg,
         struct pj_err *err)
{
    struct store_arg *a = arg;
    struct hsm_module *mod = key->mod;
    CK_SESSION_HANDLE rw = 0;
    CK_OBJECT_HANDLE old[8], cert;
    CK_ULONG nold = 0, i;
    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    CK_CERTIFICATE_TYPE ct = CKC_X_509;
    CK_BBOOL t = CK_TRUE, f = CK_FALSE;
    uint8_t *id = NULL, *lbl = NULL;
    size_t idlen = 0, lbllen = 0;
    CK_RV rv;
    pj_rc rc = PJ_OK;

    if ((rv = hsm_attr_get(mod, r->s, r->priv, CKA_ID, &id, &idlen)) !=
        CKR_OK) {
        return hsm_err_ckr(err, rv, "C_GetAttributeValue(CKA_ID)");
    }
    if (idlen == 0) {
        rc = pj_err_set(err, PJ_ERR_INVALID,
                        "the key on token '%s' has no CKA_ID to tie a "
                        "certificate to",
                        key->token_name);
        goto out;
    }
    if (a->label == NULL && (rv = hsm_attr_get(mod, r->s, r->priv, CKA_LABEL,
                                               &lbl, &lbllen)) != CKR_OK) {
        rc = hsm_err_ckr(err, rv, "C_GetAttributeValue(CKA_LABEL)");
        goto out;
    }
    if ((rc = certs_with_id(mod, r->s, id, idlen, old, PJ_ARRAY_SIZE(old),
                            &nold, err)) != PJ_OK) {
        goto out;
    }
    if (nold > 0 && !a->replace) {
        rc = pj_err_set(err, PJ_ERR_EXISTS,
                        "token '%s' already holds a certificate for this key; "
                        "replace it explicitly",
                        key->token_name);
        goto out;
    }
    /* Creating token objects needs a read-write session. */
    rv = mod->fl->C_OpenSession(r->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
                                NULL, NULL, &rw);
    if (rv != CKR_OK) {
        rc = hsm_err_ckr(err, rv, "C_OpenSession (read-write)");
        goto out;
    }
    {
        CK_ATTRIBUTE tmpl[] = {
            {CKA_CLASS, &cls, sizeof(cls)},
            {CKA_CERTIFICATE_TYPE, &ct, sizeof(ct)},
            {CKA_TOKEN, &t, sizeof(t)},
            {CKA_PRIVATE, &f, sizeof(f)},
            {CKA_LABEL, a->label != NULL ? (void *)a->label : (void *)lbl,
             a->label != NULL ? strlen(a->label) : lbllen},
            {CKA_ID, id, idlen},
            {CKA_SUBJECT, a->cf->subject, (CK_ULONG)a->cf->subject_len},
            {CKA_ISSUER, a->cf->issuer, (CK_ULONG)a->cf->issuer_len},
            {CKA_SERIAL_NUMBER, a->cf->serial, (CK_ULONG)a->cf->serial_len},
            {CKA_VALUE, (void *)a->der, a->len},
        };
        rv = mod->fl->C_CreateObject(rw, tmpl, PJ_ARRAY_SIZE(tmpl), &cert);
    }
    if (rv != CKR_OK) {
        rc = hsm_err_ckr(err, rv, "C_CreateObject (certificate)");
        goto close;
    }
    /* The new one exists before the old ones go: never zero certificates. */
    for (i = 0; i < nold; i++) {
        if ((rv = mod->fl->C_DestroyObject(rw, old[i])) != CKR_OK) {
            rc = pj_err_set(err, PJ_ERR_TOKEN,
                            "stored the new certificate but could not delete "
                            "the old one: C_DestroyObject failed: %s",
                            hsm_ckr_name(rv));
            break;
        }
    }
close:
    (void)mod->fl->C_CloseSession(rw);
out:
    free(id);
    free(lbl);
    return rc;
}

pj_rc
hsm_key_store_cert(struct hsm_key *key, const uint8_t *der, size_t len,
                   const char *label, bool replace, struct pj_err *err)
{
    struct cert_fields cf;
    struct store_arg a = {der, len, label, replace, &cf};
    pj_rc rc;

    if (label != NULL && strlen(label) > HSM_LABEL_MAX) {
        return pj_err_set(err, PJ_ERR_LIMIT,
                          "certificate label longer than %d bytes",
                          HSM_LABEL_MAX);
    }
    if ((rc = cert_fields_parse(der, len, &cf, err)) != PJ_OK) {
        return rc;
    }
    rc = hsm_key_run(key, op_store, &a, err);
    cert_fields_cleanup(&cf);
    return rc;
}

struct find_arg {
    uint8_t *der;
    size_t len;
};

static pj_rc
op_find_cert(struct hsm_key *key, const struct hsm_ready *r, void *arg,
             struct pj_err *err)
{
    struct find_arg *a = arg;
    struct hsm_module *mod = key->mod;
    CK_OBJECT_HANDLE objs[2];
    CK_ULONG n = 0;
    uint8_t *id = NULL;
    size_t idlen = 0;
    char hex[2 * HSM_ID_MAX + 1];
    CK_RV rv;
    pj_rc rc;

    free(a->der);
    a->der = NULL;
    if ((rv = hsm_attr_get(mod, r->s, r->priv, CKA_ID, &id, &idlen)) !=
        CKR_OK) {
        return hsm_err_ckr(err, rv, "C_GetAttributeValue(CKA_ID)");
    }
    if ((rc = certs_with_id(mod, r->s, id, idlen, objs, 2, &n, err)) != PJ_OK) {
        goto out;
    }
    pj_hex(id, idlen > HSM_ID_MAX ? HSM_ID_MAX : idlen, hex);
    if (n == 0) {
        rc = pj_err_set(err, PJ_ERR_NOT_FOUND,
                        "no certificate beside the key on token '%s' (CKA_ID "
                        "%s)",
                        key->token_name, hex);
        goto out;
    }
    if (n > 1) {
        rc = pj_err_set(err, PJ_ERR_INVALID,
                        "several certificates share the key's CKA_ID %s on "
                        "token '%s'",
                        hex, key->token_name);
        goto out;
    }
    if ((rv = hsm_attr_get(mod, r->s, objs[0], CKA_VALUE, &a->der, &a->len)) !=
        CKR_OK) {
        rc = hsm_err_ckr(err, rv, "C_GetAttributeValue(CKA_VALUE)");
        goto out;
    }
    if (a->len == 0) {
        rc = pj_err_set(err, PJ_ERR_INVALID,
                        "the certificate beside the key on token '%s' is "
                        "empty",
                        key->token_name);
    }
out:
    free(id);
    return rc;
}

pj_rc
hsm_key_find_cert(struct hsm_key *key, uint8_t **derp, size_t *lenp,
                  struct pj_err *err)
{
    struct find_arg a = {NULL, 0};
    pj_rc rc;

    *derp = NULL;
    *lenp = 0;
    if ((rc = hsm_key_run(key, op_find_cert, &a, err)) != PJ_OK) {
        free(a.der);
        return rc;
    }
    *derp = a.der;
    *lenp = a.len;
    return PJ_OK;
}

pj_rc
hsm_cert_find(struct hsm_module *mod, const char *uri, const char *pin_source,
              uint8_t **derp, size_t *lenp, struct pj_err *err)
{
    struct hsm_uri u;
    CK_SLOT_ID slot = 0;
    CK_TOKEN_INFO ti;
    CK_SESSION_HANDLE s = 0;
    CK_OBJECT_HANDLE o;
    bool have_session = false;
    char token[40], *src = NULL;
    uint8_t *der = NULL;
    size_t len = 0;
    CK_RV rv;
    pj_rc rc;

    *derp = NULL;
    *lenp = 0;
    if ((rc = hsm_uri_parse(uri, &u, err)) != PJ_OK) {
        return rc;
    }
    if (u.has_class && u.cls != CKO_CERTIFICATE) {
        rc = pj_err_set(err, PJ_ERR_INVALID,
                        "the certificate URI must say type=cert (or no type)");
        goto out;
    }
    if (pin_source != NULL) {
        rc = hsm_pin_source_normalize(pin_source, &src, err);
    } else if (u.pin_source != NULL) {
        rc = (src = strdup(u.pin_source)) == NULL
                 ? pj_err_set(err, PJ_ERR_NOMEM, "out of memory")
                 : PJ_OK;
    }
    if (rc != PJ_OK) {
        goto out;
    }
    pthread_rwlock_rdlock(&mod->lock);
    if ((rc = hsm_token_find(mod, &u, &slot, &ti, err)) != PJ_OK) {
        goto unlock;
    }
    hsm_fixed_str(ti.label, sizeof(ti.label), token, sizeof(token));
    if ((rv = mod->fl->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL,
                                     &s)) != CKR_OK) {
        rc = hsm_err_ckr(err, rv, "C_OpenSession");
        goto unlock;
    }
    have_session = true;
    /* Certificates are public objects: log in only when asked to. */
    if (src != NULL && (rc = hsm_login(mod, s, token, src, err)) != PJ_OK) {
        goto unlock;
    }
    if ((rc = hsm_object_find(mod, s, &u, CKO_CERTIFICATE, token, &o, err)) !=
        PJ_OK) {
        goto unlock;
    }
    if ((rv = hsm_attr_get(mod, s, o, CKA_VALUE, &der, &len)) != CKR_OK) {
        rc = hsm_err_ckr(err, rv, "C_GetAttributeValue(CKA_VALUE)");
        goto unlock;
    }
    if (len == 0) {
        rc = pj_err_set(err, PJ_ERR_INVALID,
                        "the certificate object on token '%s' is empty", token);
        goto unlock;
    }
    *derp = der;
    *lenp = len;
    der = NULL;
unlock:
    free(der);
    if (have_session) {
        (void)mod->fl->C_CloseSession(s);
    }
    pthread_rwlock_unlock(&mod->lock);
out:
    free(src);
    hsm_uri_cleanup(&u);
    return rc;
}
