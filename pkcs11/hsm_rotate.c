/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Key rotation on the token: the labels are the state (docs/rotation.md).
 * "L" is the active key, "L.next" the next one, "L.retired-<UTC>" old ones;
 * a key pair and its certificate share CKA_ID. Every step here is
 * idempotent and ordered so that an interruption at any point leaves a
 * state the next scan reads correctly: the private key is always the last
 * object of a pair to change, and the state is judged by private keys.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/pj_log.h"
#include "core/pj_util.h"
#include "pkcs11/internal.h"

#define ROT_FIND_MAX 64 /* objects examined per class and label */

/* A logged-in R/W session on the URI's token. */
struct rot_sess {
    struct hsm_module *mod;
    struct hsm_uri u;
    CK_SESSION_HANDLE s;
    bool open, locked, gated;
    char token[40];
    char label[HSM_ROTATE_LABEL_MAX + 1]; /* L */
};

static void
rot_close(struct rot_sess *r)
{
    if (r->open) {
        (void)r->mod->fl->C_CloseSession(r->s);
    }
    if (r->locked) {
        pthread_rwlock_unlock(&r->mod->lock);
    }
    if (r->gated) {
        hsm_tpm_leave(r->mod);
    }
    hsm_uri_cleanup(&r->u);
    memset(r, 0, sizeof(*r));
}

pj_rc
hsm_rotate_label(const char *key_uri, char *label, size_t labelsz,
                 struct pj_err *err)
{
    struct hsm_uri u;
    size_t i, n;
    pj_rc rc = PJ_OK;

    if (labelsz > 0) {
        label[0] = '\0';
    }
    PJ_TRY(hsm_uri_parse(key_uri, &u, err));
    if (u.label == NULL || u.label_len == 0) {
        rc = pj_err_set(err, PJ_ERR_CONFIG,
                        "rotation needs the key URI to name the key by label "
                        "(object=LABEL): the labels on the token carry the "
                        "rotation state");
        goto out;
    }
    if (u.has_id) {
        rc = pj_err_set(err, PJ_ERR_CONFIG,
                        "rotation needs a key URI without id=: the id would "
                        "keep pointing at the old key after the rotation; "
                        "name the key by object=LABEL only");
        goto out;
    }
    n = u.label_len;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)u.label[i];
        if (c < 0x20 || c >= 0x7f) {
            rc = pj_err_set(err, PJ_ERR_CONFIG,
                            "rotation needs a printable ASCII key label");
            goto out;
        }
    }
    if (n + strlen(HSM_ROTATE_RETIRED) + 16 > HSM_ROTATE_LABEL_MAX ||
        n + 1 > labelsz) {
        rc = pj_err_set(
            err, PJ_ERR_CONFIG,
            "the key label is %zu characters; rotation needs at "
            "most %zu to add '%sYYYYMMDDTHHMMSSZ'",
            n, (size_t)HSM_ROTATE_LABEL_MAX - strlen(HSM_ROTATE_RETIRED) - 16,
            HSM_ROTATE_RETIRED);
        goto out;
    }
    if ((n >= 5 && strcmp(u.label + n - 5, HSM_ROTATE_NEXT) == 0) ||
        strstr(u.label, HSM_ROTATE_RETIRED) != NULL) {
        rc = pj_err_set(err, PJ_ERR_CONFIG,
                        "the profile's key label '%s' is a rotation label "
                        "itself; the profile must name the active key's "
                        "label (without '%s' or '%s...')",
                        u.label, HSM_ROTATE_NEXT, HSM_ROTATE_RETIRED);
        goto out;
    }
    memcpy(label, u.label, n);
    label[n] = '\0';
out:
    hsm_uri_cleanup(&u);
    return rc;
}

pj_rc
hsm_rotate_uri(const char *key_uri, const char *label, const uint8_t *id,
               size_t id_len, const char *type, char **urip, struct pj_err *err)
{
    P11KitUri *uri;
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE a;
    char *out = NULL;
    int r;
    pj_rc rc = PJ_OK;

    *urip = NULL;
    if ((uri = p11_kit_uri_new()) == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
    }
    if ((r = p11_kit_uri_parse(key_uri, P11_KIT_URI_FOR_ANY, uri)) !=
        P11_KIT_URI_OK) {
        rc = pj_err_set(err, PJ_ERR_CONFIG, "bad pkcs11: key URI: %s",
                        p11_kit_uri_message(r));
        goto out;
    }
    p11_kit_uri_set_pin_value(uri, NULL);
    if (label != NULL) {
        a = (CK_ATTRIBUTE){CKA_LABEL, (void *)label, strlen(label)};
        r = p11_kit_uri_set_attribute(uri, &a);
    } else {
        r = p11_kit_uri_clear_attribute(uri, CKA_LABEL);
    }
    if (r == P11_KIT_URI_OK) {
        if (id != NULL) {
            a = (CK_ATTRIBUTE){CKA_ID, (void *)id, id_len};
            r = p11_kit_uri_set_attribute(uri, &a);
        } else {
            r = p11_kit_uri_clear_attribute(uri, CKA_ID);
        }
    }
    if (r == P11_KIT_URI_OK) {
        if (type == NULL) {
            r = p11_kit_uri_clear_attribute(uri, CKA_CLASS);
        } else {
            cls = strcmp(type, "cert") == 0 ? CKO_CERTIFICATE : CKO_PRIVATE_KEY;
            a = (CK_ATTRIBUTE){CKA_CLASS, &cls, sizeof(cls)};
            r = p11_kit_uri_set_attribute(uri, &a);
        }
    }
    if (r != P11_KIT_URI_OK ||
        p11_kit_uri_format(uri, P11_KIT_URI_FOR_ANY, &out) != P11_KIT_URI_OK) {
        rc = pj_err_set(err, PJ_ERR_INTERNAL,
                        "building a key URI for the rotation failed");
        goto out;
    }
    *urip = out;
out:
    p11_kit_uri_free(uri);
    return rc;
}

static pj_rc
rot_open(struct hsm_module *mod, const char *key_uri, const char *pin_source,
         struct rot_sess *r, struct pj_err *err)
{
    CK_SLOT_ID slot;
    CK_TOKEN_INFO ti;
    char *source_norm = NULL;
    CK_RV rv;
    pj_rc rc;

    memset(r, 0, sizeof(*r));
    r->mod = mod;
    if (mod == NULL) {
        return pj_err_set(err, PJ_ERR_INTERNAL, "rotation: no module");
    }
    PJ_TRY(hsm_rotate_label(key_uri, r->label, sizeof(r->label), err));
    PJ_TRY(hsm_uri_parse(key_uri, &r->u, err));
    if (pin_source != NULL) {
        rc = hsm_pin_source_normalize(pin_source, &source_norm, err);
    } else if (r->u.pin_source != NULL) {
        rc = (source_norm = strdup(r->u.pin_source)) == NULL
                 ? pj_err_set(err, PJ_ERR_NOMEM, "out of memory")
                 : PJ_OK;
    } else {
        rc = PJ_OK;
    }
    if (rc != PJ_OK) {
        goto fail;
    }
    if (mod->tpm2_pkcs11) {
        if ((rc = hsm_tpm_enter(mod, "(rotation)", err)) != PJ_OK) {
            goto fail;
        }
        r->gated = true;
    }
    pthread_rwlock_rdlock(&mod->lock);
    r->locked = true;
    if ((rc = hsm_token_find(mod, &r->u, &slot, &ti, err)) != PJ_OK) {
        goto fail;
    }
    hsm_fixed_str(ti.label, sizeof(ti.label), r->token, sizeof(r->token));
    rv = mod->fl->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
                                NULL, &r->s);
    if (rv != CKR_OK) {
        rc = hsm_err_ckr(err, rv, "C_OpenSession (read/write)");
        goto fail;
    }
    r->open = true;
    /* Private keys are invisible without a login. */
    if ((rc = hsm_login(mod, r->s, r->token, source_norm, err)) != PJ_OK) {
        goto fail;
    }
    free(source_norm);
    return PJ_OK;
fail:
    free(source_norm);
    rot_close(r);
    return rc;
}

/* Objects of class cls with label (and id, when id != NULL). */
static pj_rc
rot_find(struct rot_sess *r, CK_OBJECT_CLASS cls, const char *label,
         const uint8_t *id, size_t id_len, CK_OBJECT_HANDLE *objs, CK_ULONG *np,
         struct pj_err *err)
{
    CK_ATTRIBUTE t[3] = {{CKA_CLASS, &cls, sizeof(cls)},
                         {CKA_LABEL, (void *)label, strlen(label)},
                         {CKA_ID, (void *)id, id_len}};
    CK_RV rv;

    *np = 0;
    rv = r->mod->fl->C_FindObjectsInit(r->s, t, id != NULL ? 3 : 2);
    if (rv != CKR_OK) {
        return hsm_err_ckr(err, rv, "C_FindObjectsInit");
    }
    rv = r->mod->fl->C_FindObjects(r->s, objs, ROT_FIND_MAX, np);
    (void)r->mod->fl->C_FindObjectsFinal(r->s);
    if (rv != CKR_OK) {
        return hsm_err_ckr(err, rv, "C_FindObjects");
    }
    return PJ_OK;
}

/* The one private key labelled label: *foundp, its id. */
static pj_rc
rot_key(struct rot_sess *r, const char *label, bool *foundp, uint8_t *id,
        size_t *id_len, struct pj_err *err)
{
    CK_OBJECT_HANDLE objs[ROT_FIND_MAX];
    CK_ULONG n;
    uint8_t *v = NULL;
    size_t vlen = 0;
    CK_RV rv;

    *foundp = false;
    *id_len = 0;
    PJ_TRY(rot_find(r, CKO_PRIVATE_KEY, label, NULL, 0, objs, &n, err));
    if (n == 0) {
        return PJ_OK;
    }
    if (n > 1) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "token '%s' has %lu private keys labelled '%s'; "
                          "rotation needs exactly one (delete or relabel "
                          "the extra ones)",
                          r->token, (unsigned long)n, label);
    }
    if ((rv = hsm_attr_get(r->mod, r->s, objs[0], CKA_ID, &v, &vlen)) !=
        CKR_OK) {
        return hsm_err_ckr(err, rv, "reading the key's CKA_ID");
    }
    if (vlen == 0 || vlen > HSM_ID_MAX) {
        free(v);
        return pj_err_set(err, PJ_ERR_INVALID,
                          "the private key '%s' on token '%s' has %s id; "
                          "rotation needs an id shared by the key pair and "
                          "its certificate",
                          label, r->token, vlen == 0 ? "no" : "an over-long");
    }
    memcpy(id, v, vlen);
    *id_len = vlen;
    *foundp = true;
    free(v);
    return PJ_OK;
}

static bool
rot_has_cert(struct rot_sess *r, const uint8_t *id, size_t id_len)
{
    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    CK_ATTRIBUTE t[2] = {{CKA_CLASS, &cls, sizeof(cls)},
                         {CKA_ID, (void *)id, id_len}};
    CK_OBJECT_HANDLE o;
    CK_ULONG n = 0;

    if (r->mod->fl->C_FindObjectsInit(r->s, t, 2) != CKR_OK) {
        return false;
    }
    if (r->mod->fl->C_FindObjects(r->s, &o, 1, &n) != CKR_OK) {
        n = 0;
    }
    (void)r->mod->fl->C_FindObjectsFinal(r->s);
    return n > 0;
}

/* Private keys whose label starts with L.retired-: labels into st. */
static pj_rc
rot_retired(struct rot_sess *r, struct hsm_rotate_state *st, struct pj_err *err)
{
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE t[1] = {{CKA_CLASS, &cls, sizeof(cls)}};
    CK_OBJECT_HANDLE objs[256];
    CK_ULONG n = 0, i;
    char prefix[HSM_ROTATE_LABEL_MAX + 16];
    size_t plen;
    CK_RV rv;

    snprintf(prefix, sizeof(prefix), "%s%s", r->label, HSM_ROTATE_RETIRED);
    plen = strlen(prefix);
    if ((rv = r->mod->fl->C_FindObjectsInit(r->s, t, 1)) != CKR_OK) {
        return hsm_err_ckr(err, rv, "C_FindObjectsInit");
    }
    rv = r->mod->fl->C_FindObjects(r->s, objs, PJ_ARRAY_SIZE(objs), &n);
    (void)r->mod->fl->C_FindObjectsFinal(r->s);
    if (rv != CKR_OK) {
        return hsm_err_ckr(err, rv, "C_FindObjects");
    }
    for (i = 0; i < n && st->n_retired < HSM_ROTATE_RETIRED_MAX; i++) {
        uint8_t *v = NULL;
        size_t vlen = 0;
        if (hsm_attr_get(r->mod, r->s, objs[i], CKA_LABEL, &v, &vlen) ==
                CKR_OK &&
            vlen > plen && vlen <= HSM_ROTATE_LABEL_MAX &&
            memcmp(v, prefix, plen) == 0) {
            memcpy(st->retired[st->n_retired], v, vlen);
            st->retired[st->n_retired][vlen] = '\0';
            st->n_retired++;
        }
        free(v);
    }
    return PJ_OK;
}

pj_rc
hsm_rotate_scan(struct hsm_module *mod, const char *key_uri,
                const char *pin_source, struct hsm_rotate_state *st,
                struct pj_err *err)
{
    struct rot_sess r;
    char next[HSM_ROTATE_LABEL_MAX + 8];
    pj_rc rc;

    memset(st, 0, sizeof(*st));
    PJ_TRY(rot_open(mod, key_uri, pin_source, &r, err));
    pj_strlcpy(st->token, r.token, sizeof(st->token));
    pj_strlcpy(st->label, r.label, sizeof(st->label));
    snprintf(next, sizeof(next), "%s%s", r.label, HSM_ROTATE_NEXT);
    if ((rc = rot_key(&r, r.label, &st->active, st->active_id,
                      &st->active_id_len, err)) != PJ_OK ||
        (rc = rot_key(&r, next, &st->next, st->next_id, &st->next_id_len,
                      err)) != PJ_OK ||
        (rc = rot_retired(&r, st, err)) != PJ_OK) {
        goto out;
    }
    st->active_cert =
        st->active && rot_has_cert(&r, st->active_id, st->active_id_len);
    st->next_cert = st->next && rot_has_cert(&r, st->next_id, st->next_id_len);
out:
    rot_close(&r);
    return rc;
}

/*
 * Relabel (to != NULL) or destroy (to == NULL) the objects labelled from
 * with this id: public key and certificate first, the private key last.
 */
static pj_rc
rot_move(struct rot_sess *r, const char *from, const uint8_t *id, size_t id_len,
         const char *to, unsigned *np, struct pj_err *err)
{
    static const CK_OBJECT_CLASS order[] = {CKO_PUBLIC_KEY, CKO_CERTIFICATE,
                                            CKO_PRIVATE_KEY};
    CK_OBJECT_HANDLE objs[ROT_FIND_MAX];
    CK_ULONG n, i;
    size_t c;
    CK_RV rv;

    for (c = 0; c < PJ_ARRAY_SIZE(order); c++) {
        PJ_TRY(rot_find(r, order[c], from, id, id_len, objs, &n, err));
        for (i = 0; i < n; i++) {
            if (to != NULL) {
                CK_ATTRIBUTE a = {CKA_LABEL, (void *)to, strlen(to)};
                rv = r->mod->fl->C_SetAttributeValue(r->s, objs[i], &a, 1);
            } else {
                rv = r->mod->fl->C_DestroyObject(r->s, objs[i]);
            }
            if (rv != CKR_OK) {
                pj_rc rc = hsm_err_ckr(err, rv,
                                       to != NULL ? "C_SetAttributeValue "
                                                    "(CKA_LABEL)"
                                                  : "C_DestroyObject");
                if (err != NULL) {
                    char msg[PJ_ERR_MSG_MAX];
                    /* Truncation is fine: the message is capped. */
                    int k = snprintf(
                        msg, sizeof(msg), "%s %s '%s' on token '%s': %s",
                        to != NULL ? "relabelling" : "destroying",
                        order[c] == CKO_PRIVATE_KEY  ? "private key"
                        : order[c] == CKO_PUBLIC_KEY ? "public key"
                                                     : "certificate",
                        from, r->token, err->msg);
                    if (k > 0) {
                        pj_strlcpy(err->msg, msg, sizeof(err->msg));
                    }
                }
                return rc;
            }
            if (np != NULL) {
                (*np)++;
            }
        }
    }
    return PJ_OK;
}

pj_rc
hsm_rotate_promote(struct hsm_module *mod, const char *key_uri,
                   const char *pin_source, int64_t now, bool destroy_old,
                   char *retired, struct pj_err *err)
{
    struct rot_sess r;
    char next[HSM_ROTATE_LABEL_MAX + 8], old[HSM_ROTATE_LABEL_MAX + 1];
    uint8_t aid[HSM_ID_MAX], nid[HSM_ID_MAX];
    size_t aid_len, nid_len;
    bool have_active, have_next;
    time_t t = (time_t)now;
    struct tm tm;
    char ts[20];
    pj_rc rc;

    if (retired != NULL) {
        retired[0] = '\0';
    }
    PJ_TRY(rot_open(mod, key_uri, pin_source, &r, err));
    snprintf(next, sizeof(next), "%s%s", r.label, HSM_ROTATE_NEXT);
    if ((rc = rot_key(&r, r.label, &have_active, aid, &aid_len, err)) !=
            PJ_OK ||
        (rc = rot_key(&r, next, &have_next, nid, &nid_len, err)) != PJ_OK) {
        goto out;
    }
    if (!have_next) {
        rc = pj_err_set(err, PJ_ERR_NOT_FOUND,
                        "token '%s' has no next key '%s' to promote", r.token,
                        next);
        goto out;
    }
    if (have_active) {
        gmtime_r(&t, &tm);
        strftime(ts, sizeof(ts), "%Y%m%dT%H%M%SZ", &tm);
        /* hsm_rotate_label checked that L + the suffix fits. */
        if (snprintf(old, sizeof(old), "%s%s%s", r.label, HSM_ROTATE_RETIRED,
                     ts) >= (int)sizeof(old)) {
            rc = pj_err_set(err, PJ_ERR_INTERNAL, "retired label too long");
            goto out;
        }
        /* Step 1: the active key steps aside (private key last). */
        if ((rc = rot_move(&r, r.label, aid, aid_len, destroy_old ? NULL : old,
                           NULL, err)) != PJ_OK) {
            goto out;
        }
        if (retired != NULL && !destroy_old) {
            pj_strlcpy(retired, old, HSM_ROTATE_LABEL_MAX + 1);
        }
        pj_log_notice("token '%s': old key '%s' %s", r.token, r.label,
                      destroy_old ? "destroyed" : "relabelled");
    }
    /* Step 2: the next key takes the label (private key last). */
    if ((rc = rot_move(&r, next, nid, nid_len, r.label, NULL, err)) != PJ_OK) {
        goto out;
    }
    pj_log_notice("token '%s': key '%s' is now '%s'", r.token, next, r.label);
out:
    rot_close(&r);
    return rc;
}

pj_rc
hsm_rotate_destroy(struct hsm_module *mod, const char *key_uri,
                   const char *pin_source, const char *label, unsigned *np,
                   struct pj_err *err)
{
    struct rot_sess r;
    char prefix[HSM_ROTATE_LABEL_MAX + 16];
    static const CK_OBJECT_CLASS order[] = {CKO_PUBLIC_KEY, CKO_CERTIFICATE,
                                            CKO_PRIVATE_KEY};
    CK_OBJECT_HANDLE objs[ROT_FIND_MAX];
    CK_ULONG n, i;
    size_t c;
    CK_RV rv;
    pj_rc rc = PJ_OK;

    if (np != NULL) {
        *np = 0;
    }
    PJ_TRY(rot_open(mod, key_uri, pin_source, &r, err));
    snprintf(prefix, sizeof(prefix), "%s%s", r.label, HSM_ROTATE_RETIRED);
    if (label == NULL || strncmp(label, prefix, strlen(prefix)) != 0) {
        rc = pj_err_set(err, PJ_ERR_INVALID,
                        "only retired keys ('%s...') are destroyed by a "
                        "rotation",
                        prefix);
        goto out;
    }
    for (c = 0; c < PJ_ARRAY_SIZE(order); c++) {
        if ((rc = rot_find(&r, order[c], label, NULL, 0, objs, &n, err)) !=
            PJ_OK) {
            goto out;
        }
        for (i = 0; i < n; i++) {
            if ((rv = mod->fl->C_DestroyObject(r.s, objs[i])) != CKR_OK) {
                rc = hsm_err_ckr(err, rv, "C_DestroyObject");
                goto out;
            }
            if (np != NULL) {
                (*np)++;
            }
        }
    }
out:
    rot_close(&r);
    return rc;
}
