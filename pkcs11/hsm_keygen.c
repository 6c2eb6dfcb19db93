/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Key generation ON the token with an explicit template (research/pkcs11.md
 * 1.1): token defaults differ (SoftHSM turns decrypt and unwrap on), so
 * nothing is left to them.
 *
 * Except on a TPM (tpm2-pkcs11): it derives CKA_VERIFY and CKA_ENCRYPT of
 * the public object from the TPM key it made and fails the whole call with
 * CKR_GENERAL_ERROR ("User specified and TPM specified attr mismatch") when
 * the template gives either, whatever the value (1.9.0 sets VERIFY=FALSE and
 * ENCRYPT=TRUE for a sign-only key). Both say what the public key may be
 * used for, which is public anyway, so they are left out there. The private
 * template stays whole: CKA_DECRYPT=FALSE is what makes tpm2-pkcs11 create
 * the TPM object without its decrypt attribute, sign-only in the chip.
 * (tpm2-pkcs11 1.9.0 performs CKM_RSA_PKCS as TPM2_RSA_Decrypt, which a
 * sign-only object refuses; nothing here uses it: assertions and, since
 * certs/cert_tokenkey.c signs the TBS bytes, certificates and CSRs all go
 * through CKM_SHA256_RSA_PKCS, which is TPM2_Sign.)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "core/pj_log.h"
#include "core/pj_util.h"
#include "pkcs11/internal.h"

/* Is there any object (any class) with this label or id? */
static pj_rc
object_exists(struct hsm_module *mod, CK_SESSION_HANDLE s, CK_ATTRIBUTE *t,
              bool *existsp, struct pj_err *err)
{
    CK_OBJECT_HANDLE o;
    CK_ULONG got = 0;
    CK_RV rv;

    *existsp = false;
    if ((rv = mod->fl->C_FindObjectsInit(s, t, 1)) != CKR_OK) {
        return hsm_err_ckr(err, rv, "C_FindObjectsInit");
    }
    rv = mod->fl->C_FindObjects(s, &o, 1, &got);
    (void)mod->fl->C_FindObjectsFinal(s);
    if (rv != CKR_OK) {
        return hsm_err_ckr(err, rv, "C_FindObjects");
    }
    *existsp = got > 0;
    return PJ_OK;
}

/*
 * Refuse a size the token says it cannot make, before trying: a TPM makes
 * at most RSA-3072, and a failed generation there can leave a transient
 * object loaded (pitfall 8). Sizes are in bits for RSA; a token that
 * reports something smaller than any RSA key is not trusted on this.
 */
static pj_rc
keysize_check(struct hsm_module *mod, CK_SLOT_ID slot, const char *token,
              CK_ULONG bits, struct pj_err *err)
{
    CK_MECHANISM_INFO mi;

    if (mod->fl->C_GetMechanismInfo(slot, CKM_RSA_PKCS_KEY_PAIR_GEN, &mi) !=
            CKR_OK ||
        mi.ulMaxKeySize < 1024) {
        return PJ_OK;
    }
    if (bits > mi.ulMaxKeySize || bits < mi.ulMinKeySize) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "token '%s' generates RSA keys of %lu to %lu bits; "
                          "RSA-%lu is not possible there (use --bits %s)",
                          token, mi.ulMinKeySize, mi.ulMaxKeySize, bits,
                          mi.ulMaxKeySize >= 3072 ? "3072 or 2048" : "2048");
    }
    return PJ_OK;
}

pj_rc
hsm_keygen(struct hsm_module *mod, const struct hsm_keygen_opts *opts,
           struct hsm_key_info *info, struct pj_err *err)
{
    struct hsm_uri u;
    CK_SLOT_ID slot = 0;
    CK_TOKEN_INFO ti;
    CK_SESSION_HANDLE s = 0;
    bool have_session = false, exists, tpm = false, gated = false;
    CK_BBOOL t = CK_TRUE, f = CK_FALSE;
    CK_ULONG bits;
    CK_BYTE e[] = {0x01, 0x00, 0x01};
    CK_BYTE id[HSM_ID_MAX];
    size_t idlen;
    CK_MECHANISM mech = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
    CK_OBJECT_HANDLE pub = 0, priv = 0;
    CK_ATTRIBUTE probe;
    char token[40], lbl[HSM_LABEL_MAX * 4 + 1],
        *source = NULL; /* where the PIN comes from, not the PIN */
    char msg[200], hex[2 * HSM_ID_MAX + 1];
    CK_RV rv;
    pj_rc rc;

    if (info != NULL) {
        memset(info, 0, sizeof(*info));
    }
    if (mod == NULL || opts == NULL) {
        return pj_err_set(err, PJ_ERR_INTERNAL, "hsm_keygen: no module");
    }
    bits = opts->bits == 0 ? 2048 : opts->bits;
    if (bits != 2048 && bits != 3072 && bits != 4096) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "RSA key size %lu is not supported (use 2048, 3072 "
                          "or 4096)",
                          bits);
    }
    if ((rc = hsm_uri_parse(opts->uri, &u, err)) != PJ_OK) {
        return rc;
    }
    if (u.has_class && u.cls != CKO_PRIVATE_KEY) {
        rc = pj_err_set(err, PJ_ERR_INVALID,
                        "keygen makes a key pair: use type=private (or no "
                        "type) in the URI");
        goto out;
    }
    if (u.label == NULL || u.label_len == 0) {
        rc = pj_err_set(err, PJ_ERR_INVALID,
                        "keygen needs a label: add object=LABEL to the URI");
        goto out;
    }
    hsm_printable(u.label, u.label_len, lbl, sizeof(lbl));
    if (opts->pin_source != NULL) {
        rc = hsm_pin_source_normalize(opts->pin_source, &source, err);
    } else if (u.pin_source != NULL) {
        rc = (source = strdup(u.pin_source)) == NULL
                 ? pj_err_set(err, PJ_ERR_NOMEM, "out of memory")
                 : PJ_OK;
    }
    if (rc != PJ_OK) {
        goto out;
    }
    if (u.has_id) {
        memcpy(id, u.id, u.id_len);
        idlen = u.id_len;
    } else {
        idlen = 8;
        if (RAND_bytes(id, (int)idlen) != 1) {
            rc = pj_err_crypto(err, "random key id");
            goto out;
        }
    }

    /* One caller at a time on a TPM (see hsm_tpm.c). */
    if (mod->tpm2_pkcs11 &&
        (rc = hsm_tpm_enter(mod, "(keygen)", err)) != PJ_OK) {
        goto out;
    }
    gated = mod->tpm2_pkcs11;
    pthread_rwlock_rdlock(&mod->lock);
    if ((rc = hsm_token_find(mod, &u, &slot, &ti, err)) != PJ_OK) {
        goto unlock;
    }
    hsm_fixed_str(ti.label, sizeof(ti.label), token, sizeof(token));
    tpm = hsm_token_is_tpm(mod, &ti);
    if ((rc = keysize_check(mod, slot, token, bits, err)) != PJ_OK) {
        goto unlock;
    }
    if ((ti.flags & CKF_WRITE_PROTECTED) != 0) {
        rc = pj_err_set(err, PJ_ERR_DENIED, "token '%s' is write-protected",
                        token);
        goto unlock;
    }
    rv = mod->fl->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
                                NULL, &s);
    if (rv != CKR_OK) {
        rc = hsm_err_ckr(err, rv, "C_OpenSession");
        goto unlock;
    }
    have_session = true;
    if ((rc = hsm_login(mod, s, token, source, err)) != PJ_OK) {
        goto unlock;
    }
    /* Logged in, so private objects are visible to the check too. */
    probe = (CK_ATTRIBUTE){CKA_LABEL, u.label, u.label_len};
    if ((rc = object_exists(mod, s, &probe, &exists, err)) != PJ_OK) {
        goto unlock;
    }
    if (exists) {
        rc = pj_err_set(err, PJ_ERR_EXISTS,
                        "an object labelled '%s' already exists on token "
                        "'%s'; choose another label or delete it",
                        lbl, token);
        goto unlock;
    }
    probe = (CK_ATTRIBUTE){CKA_ID, id, idlen};
    if ((rc = object_exists(mod, s, &probe, &exists, err)) != PJ_OK) {
        goto unlock;
    }
    if (exists) {
        pj_hex(id, idlen, hex);
        rc = pj_err_set(err, PJ_ERR_EXISTS,
                        "an object with id %s already exists on token '%s'; "
                        "choose another id",
                        hex, token);
        goto unlock;
    }

    {
        CK_ATTRIBUTE pubt[] = {
            {CKA_TOKEN, &t, sizeof(t)},
            {CKA_PRIVATE, &f, sizeof(f)},
            {CKA_WRAP, &f, sizeof(f)},
            {CKA_MODULUS_BITS, &bits, sizeof(bits)},
            {CKA_PUBLIC_EXPONENT, e, sizeof(e)},
            {CKA_LABEL, u.label, u.label_len},
            {CKA_ID, id, idlen},
            /* Last, so a TPM's template can leave them out (see top). */
            {CKA_VERIFY, &t, sizeof(t)},
            {CKA_ENCRYPT, &f, sizeof(f)},
        };
        CK_ULONG npub = PJ_ARRAY_SIZE(pubt) - (tpm ? 2 : 0);
        /*
         * SENSITIVE and EXTRACTABLE are one-way by the standard: the token
         * refuses to turn them back. MODIFIABLE stays TRUE so a rotation can
         * relabel the key (C_SetAttributeValue(CKA_LABEL)).
         */
        CK_ATTRIBUTE privt[] = {
            {CKA_TOKEN, &t, sizeof(t)},
            {CKA_PRIVATE, &t, sizeof(t)},
            {CKA_SENSITIVE, &t, sizeof(t)},
            {CKA_EXTRACTABLE, &f, sizeof(f)},
            {CKA_SIGN, &t, sizeof(t)},
            {CKA_DECRYPT, &f, sizeof(f)},
            {CKA_UNWRAP, &f, sizeof(f)},
            {CKA_DERIVE, &f, sizeof(f)},
            {CKA_MODIFIABLE, &t, sizeof(t)},
            {CKA_LABEL, u.label, u.label_len},
            {CKA_ID, id, idlen},
        };

        if (opts->progress != NULL) {
            snprintf(msg, sizeof(msg),
                     "generating RSA-%lu key on token '%s'...", bits, token);
            opts->progress(opts->progress_arg, msg);
        }
        rv = mod->fl->C_GenerateKeyPair(s, &mech, pubt, npub, privt,
                                        PJ_ARRAY_SIZE(privt), &pub, &priv);
        if (rv != CKR_OK) {
            rc = pj_err_set(err, PJ_ERR_TOKEN,
                            "C_GenerateKeyPair (RSA-%lu) on token '%s' "
                            "failed: %s",
                            bits, token, hsm_ckr_name(rv));
            if (err != NULL) {
                err->ckr = rv;
            }
            goto unlock;
        }
    }
    pj_hex(id, idlen, hex);
    pj_log_info("generated RSA-%lu key '%s' (id %s) on token '%s'", bits, lbl,
                hex, token);
    if (info != NULL) {
        rc = hsm_info_fill(mod, s, slot, &ti, priv, info, err);
    }
unlock:
    if (have_session) {
        (void)mod->fl->C_CloseSession(s);
    }
    pthread_rwlock_unlock(&mod->lock);
    if (gated) {
        hsm_tpm_leave(mod);
    }
out:
    free(source);
    hsm_uri_cleanup(&u);
    return rc;
}
