/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An open key: its URI criteria, a pool of sessions, one login, and the
 * recovery loop every operation runs through (research/pkcs11.md 8.1).
 *
 * Locking: mod->lock (read) around every Cryptoki call that uses handles,
 * then key->mu for the key's shared state. A thread never waits for a pool
 * session while holding mod->lock, so a re-initialisation (write lock)
 * cannot deadlock against the pool.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "core/pj_log.h"
#include "core/pj_util.h"
#include "pkcs11/internal.h"

/* RFC 8017 9.2 note 1: DER of DigestInfo{sha256, NULL} before the hash. */
const uint8_t hsm_sha256_digestinfo[19] = {
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
    0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};

enum {
    RUN_COUNT = 1 << 0,     /* a signature: count it in the stats */
    RUN_NO_DEVICE = 1 << 1, /* at open: report device trouble at once */
};

#define RUN_MAX_SOFT_RECOVERIES 6

static unsigned
pool_acquire(struct hsm_key *key)
{
    unsigned i, pick;

    pthread_mutex_lock(&key->mu);
    for (;;) {
        pick = key->nsess;
        for (i = 0; i < key->nsess; i++) {
            if (!key->sess[i].busy) {
                pick = i;
                if (key->sess[i].open) {
                    break; /* prefer a session that is already open */
                }
            }
        }
        if (pick < key->nsess) {
            break;
        }
        pthread_cond_wait(&key->cv, &key->mu);
    }
    key->sess[pick].busy = true;
    pthread_mutex_unlock(&key->mu);
    return pick;
}

/* After the key object is (re)found: is it usable, which mechanism? */
static pj_rc
key_check_locked(struct hsm_key *key, CK_SESSION_HANDLE s, struct pj_err *err)
{
    CK_KEY_TYPE kt = 0;
    CK_ATTRIBUTE a = {CKA_KEY_TYPE, &kt, sizeof(kt)};
    uint8_t *mechs = NULL;
    size_t len = 0, i, n;
    bool sha = false, raw = false;
    char lbl[HSM_LABEL_MAX * 4 + 1] = "";

    if (key->uri.label != NULL) {
        hsm_printable(key->uri.label, key->uri.label_len, lbl, sizeof(lbl));
    }
    if (key->mod->fl->C_GetAttributeValue(s, key->priv, &a, 1) == CKR_OK &&
        kt != CKK_RSA) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "private key '%s' on token '%s' is not an RSA key "
                          "(RS256 needs RSA)",
                          lbl, key->token_name);
    }
    /* A key restricted to some mechanisms decides for the token list. */
    if (hsm_attr_get(key->mod, s, key->priv, CKA_ALLOWED_MECHANISMS, &mechs,
                     &len) == CKR_OK &&
        len >= sizeof(CK_MECHANISM_TYPE)) {
        n = len / sizeof(CK_MECHANISM_TYPE);
        for (i = 0; i < n; i++) {
            CK_MECHANISM_TYPE m;
            memcpy(&m, mechs + i * sizeof(m), sizeof(m));
            sha = sha || m == CKM_SHA256_RSA_PKCS;
            raw = raw || m == CKM_RSA_PKCS;
        }
        if (!sha) {
            key->have_sha256 = false;
        }
        if (!sha && !raw) {
            free(mechs);
            return pj_err_set(err, PJ_ERR_INVALID,
                              "private key '%s' on token '%s' allows neither "
                              "CKM_SHA256_RSA_PKCS nor CKM_RSA_PKCS",
                              lbl, key->token_name);
        }
    }
    free(mechs);
    return PJ_OK;
}

/*
 * Make session s ready: token found, session open, logged in, key found.
 * Called with mod->lock (read) and key->mu held.
 */
static pj_rc
key_prepare_locked(struct hsm_key *key, struct hsm_sess *s, uint64_t gen,
                   struct hsm_ready *r, struct pj_err *err)
{
    struct hsm_module *mod = key->mod;
    CK_SESSION_HANDLE h;
    CK_SESSION_INFO si;
    CK_RV rv;
    pj_rc rc;

    if (key->gen != gen) {
        /* The module was re-initialised: every handle we had is gone. */
        key->gen = gen;
        key->slot_ok = false;
        key->logged_in = false;
        key->priv_ok = false;
    }
    if (!key->slot_ok) {
        /* Slot ids may change across re-initialisation: find by token. */
        if ((rc = hsm_token_find(mod, &key->uri, &key->slot, &key->tinfo,
                                 err)) != PJ_OK) {
            return rc;
        }
        key->slot_ok = true;
        key->have_sha256 =
            hsm_slot_has_mech(mod, key->slot, CKM_SHA256_RSA_PKCS);
        key->tpm = hsm_token_is_tpm(mod, &key->tinfo);
    }
    if (s->open && s->gen != gen) {
        s->open = false; /* died with C_Finalize; nothing to close */
        s->replace = false;
    }
    if (!s->open || s->replace) {
        rv = mod->fl->C_OpenSession(key->slot, CKF_SERIAL_SESSION, NULL, NULL,
                                    &h);
        if (rv != CKR_OK) {
            return hsm_err_ckr(err, rv, "C_OpenSession");
        }
        if (s->open) {
            /* Opened the new one first so the login survives this close. */
            (void)mod->fl->C_CloseSession(s->h);
        }
        s->h = h;
        s->gen = gen;
        s->open = true;
        s->replace = false;
        key->check_login = true;
    }
    if (key->logged_in && key->check_login) {
        if ((rv = mod->fl->C_GetSessionInfo(s->h, &si)) != CKR_OK) {
            return hsm_err_ckr(err, rv, "C_GetSessionInfo");
        }
        if (si.state == CKS_RO_PUBLIC_SESSION ||
            si.state == CKS_RW_PUBLIC_SESSION) {
            pj_log_warn("token '%s': login was lost (all sessions closed?); "
                        "logging in again",
                        key->token_name);
            key->logged_in = false;
        }
        key->check_login = false;
    }
    if (!key->logged_in) {
        if (key->pin_failed != PJ_OK) {
            /* Never log in again with a PIN the token rejected. */
            return pj_err_set(err, key->pin_failed, "%s", key->pin_msg);
        }
        if ((key->tinfo.flags & CKF_LOGIN_REQUIRED) != 0 ||
            key->pin_source != NULL) {
            rc = hsm_login(mod, s->h, key->token_name, key->pin_source, err);
            if (rc == PJ_ERR_PIN || rc == PJ_ERR_PIN_LOCKED) {
                key->pin_failed = rc;
                pj_strlcpy(key->pin_msg,
                           err != NULL ? err->msg : "PIN rejected",
                           sizeof(key->pin_msg));
            }
            if (rc != PJ_OK) {
                return rc;
            }
        }
        key->logged_in = true;
        key->check_login = false;
    }
    if (!key->priv_ok) {
        if ((rc = hsm_object_find(mod, s->h, &key->uri, CKO_PRIVATE_KEY,
                                  key->token_name, &key->priv, err)) != PJ_OK) {
            return rc;
        }
        key->priv_ok = true;
        if ((rc = key_check_locked(key, s->h, err)) != PJ_OK) {
            key->priv_ok = false;
            return rc;
        }
    }
    r->s = s->h;
    r->priv = key->priv;
    r->slot = key->slot;
    r->sha256 = key->have_sha256 && !key->force_fallback;
    return PJ_OK;
}

static void
sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0) {
    }
}

static pj_rc
key_run(struct hsm_key *key, hsm_key_op_fn op, void *arg, unsigned flags,
        struct pj_err *err)
{
    struct hsm_module *mod = key->mod;
    struct pj_err e;
    struct hsm_ready r;
    unsigned idx, reinits = 0, soft = 0, backoff = HSM_BACKOFF_FIRST_MS;
    uint64_t gen;
    enum hsm_ckr_class cls;
    bool slot_known, tpm = false;
    char last_reinit[160] = "";
    pj_rc rc;

    for (;;) {
        pj_err_clear(&e);
        pthread_mutex_lock(&key->mu);
        tpm = key->tpm || mod->tpm2_pkcs11;
        pthread_mutex_unlock(&key->mu);
        /*
         * A TPM: one operation at a time for the whole module, in arrival
         * order, with a deadline (pitfall 14). Taken before the pool, so
         * the pool always has a session for the one caller let in.
         */
        if (tpm && (rc = hsm_tpm_enter(mod, key->token_name, &e)) != PJ_OK) {
            pj_err_set(err, rc, "%s", e.msg);
            goto fail;
        }
        idx = pool_acquire(key);
        pthread_rwlock_rdlock(&mod->lock);
        gen = mod->generation;
        pthread_mutex_lock(&key->mu);
        rc = key_prepare_locked(key, &key->sess[idx], gen, &r, &e);
        slot_known = key->slot_ok;
        pthread_mutex_unlock(&key->mu);
        if (rc == PJ_OK) {
            rc = op(key, &r, arg, &e);
        }
        pthread_rwlock_unlock(&mod->lock);
        if (tpm) {
            hsm_tpm_leave(mod);
        }

        if (rc == PJ_OK) {
            pthread_mutex_lock(&key->mu);
            key->sess[idx].busy = false;
            if ((flags & RUN_COUNT) != 0) {
                key->stats.signatures++;
            }
            pthread_cond_signal(&key->cv);
            pthread_mutex_unlock(&key->mu);
            return PJ_OK;
        }

        if (rc == PJ_ERR_TOKEN) {
            cls = hsm_ckr_classify(e.ckr);
        } else if (rc == PJ_ERR_NOT_FOUND && !slot_known) {
            /* Token gone from the list: only a re-initialisation rescans. */
            cls = HSM_CKR_DEVICE;
        } else {
            cls = HSM_CKR_FATAL;
        }
        if ((flags & RUN_NO_DEVICE) != 0 && cls == HSM_CKR_DEVICE) {
            cls = HSM_CKR_FATAL;
        }
        pthread_mutex_lock(&key->mu);
        /* The session may hold a half-done operation: replace it. */
        key->sess[idx].replace = key->sess[idx].open;
        switch (cls) {
        case HSM_CKR_LOGIN:
            key->logged_in = false;
            break;
        case HSM_CKR_HANDLE:
            key->priv_ok = false;
            key->check_login = true; /* private objects hide after logout */
            break;
        default:
            break;
        }
        key->sess[idx].busy = false;
        pthread_cond_signal(&key->cv);
        pthread_mutex_unlock(&key->mu);

        if (cls == HSM_CKR_SESSION || cls == HSM_CKR_LOGIN ||
            cls == HSM_CKR_HANDLE) {
            if (++soft > RUN_MAX_SOFT_RECOVERIES) {
                break;
            }
            pj_log_warn("token '%s': %s; %s", key->token_name, e.msg,
                        cls == HSM_CKR_SESSION ? "opening a new session"
                        : cls == HSM_CKR_LOGIN ? "logging in again"
                                               : "finding the key again");
            pthread_mutex_lock(&key->mu);
            key->stats.recoveries++;
            pthread_mutex_unlock(&key->mu);
            continue;
        }
        if (cls == HSM_CKR_DEVICE) {
            struct pj_err re = {0};
            if (reinits >= HSM_REINIT_ATTEMPTS) {
                /*
                 * After a failed C_Initialize every call says only "not
                 * initialised": the C_Initialize failure is the news.
                 */
                pj_err_set(err, e.rc == PJ_OK ? PJ_ERR_TOKEN : e.rc,
                           "token '%s': %s; still failing after %u module "
                           "re-initialisations (the next call tries "
                           "again)%s%s%s",
                           key->token_name, e.msg, reinits,
                           last_reinit[0] != '\0' ? "; last: " : "",
                           last_reinit,
                           tpm ? "; is the TPM reachable (TPM2_PKCS11_TCTI, "
                                 "/dev/tpmrm0)?"
                               : "");
                if (err != NULL) {
                    err->ckr = e.ckr;
                }
                rc = e.rc == PJ_OK ? PJ_ERR_TOKEN : e.rc;
                goto fail;
            }
            pj_log_warn("token '%s': %s; re-initialising the module in %u ms "
                        "(attempt %u of %d)",
                        key->token_name, e.msg, backoff, reinits + 1,
                        HSM_REINIT_ATTEMPTS);
            sleep_ms(backoff);
            backoff = backoff * 3 > HSM_BACKOFF_MAX_MS ? HSM_BACKOFF_MAX_MS
                                                       : backoff * 3;
            reinits++;
            if (hsm_module_reinit(mod, gen, &re) != PJ_OK) {
                pj_log_warn("%s", re.msg);
                pj_strlcpy(last_reinit, re.msg, sizeof(last_reinit));
            } else {
                last_reinit[0] = '\0';
            }
            pthread_mutex_lock(&key->mu);
            key->stats.recoveries++;
            pthread_mutex_unlock(&key->mu);
            continue;
        }
        break;
    }
    /* Fatal, PIN, or too many soft recoveries: report the failure as is. */
    pj_err_set(err, e.rc == PJ_OK ? PJ_ERR_INTERNAL : e.rc, "%s", e.msg);
    if (err != NULL) {
        err->ckr = e.ckr;
    }
    rc = e.rc == PJ_OK ? PJ_ERR_INTERNAL : e.rc;
fail:
    if ((flags & RUN_COUNT) != 0) {
        pthread_mutex_lock(&key->mu);
        key->stats.failures++;
        pthread_mutex_unlock(&key->mu);
    }
    return rc;
}

pj_rc
hsm_key_run(struct hsm_key *key, hsm_key_op_fn op, void *arg,
            struct pj_err *err)
{
    return key_run(key, op, arg, 0, err);
}

static pj_rc
op_nothing(struct hsm_key *key, const struct hsm_ready *r, void *arg,
           struct pj_err *err)
{
    (void)key;
    (void)r;
    (void)arg;
    (void)err;
    return PJ_OK;
}

pj_rc
hsm_key_open(struct hsm_module *mod, const struct hsm_key_opts *opts,
             struct hsm_key **keyp, struct pj_err *err)
{
    struct hsm_key *key = NULL;
    unsigned n;
    pj_rc rc;

    *keyp = NULL;
    if (mod == NULL || opts == NULL) {
        return pj_err_set(err, PJ_ERR_INTERNAL, "hsm_key_open: no module");
    }
    n = opts->sessions == 0 ? HSM_DEFAULT_SESSIONS : opts->sessions;
    if (n > HSM_MAX_SESSIONS) {
        return pj_err_set(err, PJ_ERR_LIMIT,
                          "%u sessions asked for; at most %d", n,
                          HSM_MAX_SESSIONS);
    }
    if ((key = calloc(1, sizeof(*key))) == NULL ||
        (key->sess = calloc(n, sizeof(*key->sess))) == NULL) {
        free(key);
        return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
    }
    key->nsess = n;
    key->mod = mod;
    hsm_module_ref(mod);
    pthread_mutex_init(&key->mu, NULL);
    pthread_cond_init(&key->cv, NULL);
    if ((rc = hsm_uri_parse(opts->uri, &key->uri, err)) != PJ_OK) {
        goto fail;
    }
    if (key->uri.has_class && key->uri.cls != CKO_PRIVATE_KEY) {
        rc = pj_err_set(err, PJ_ERR_INVALID,
                        "the key URI names type=%s; signing needs "
                        "type=private (or no type)",
                        key->uri.cls == CKO_PUBLIC_KEY    ? "public"
                        : key->uri.cls == CKO_CERTIFICATE ? "cert"
                                                          : "other");
        goto fail;
    }
    snprintf(key->token_name, sizeof(key->token_name), "%s",
             hsm_uri_token_name(&key->uri));
    if (opts->pin_source != NULL) {
        if ((rc = hsm_pin_source_normalize(opts->pin_source, &key->pin_source,
                                           err)) != PJ_OK) {
            goto fail;
        }
    } else if (key->uri.pin_source != NULL &&
               (key->pin_source = strdup(key->uri.pin_source)) == NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    /* Find, log in and check now, so configuration errors show at start. */
    if ((rc = key_run(key, op_nothing, NULL, RUN_NO_DEVICE, err)) != PJ_OK) {
        goto fail;
    }
    *keyp = key;
    return PJ_OK;
fail:
    hsm_key_free(key);
    return rc;
}

void
hsm_key_free(struct hsm_key *key)
{
    unsigned i;

    if (key == NULL) {
        return;
    }
    pthread_rwlock_rdlock(&key->mod->lock);
    for (i = 0; i < key->nsess; i++) {
        /* Closing our last session also ends our login on the token. */
        if (key->sess[i].open && key->sess[i].gen == key->mod->generation) {
            (void)key->mod->fl->C_CloseSession(key->sess[i].h);
        }
    }
    pthread_rwlock_unlock(&key->mod->lock);
    pthread_mutex_destroy(&key->mu);
    pthread_cond_destroy(&key->cv);
    hsm_uri_cleanup(&key->uri);
    free(key->pin_source);
    free(key->sess);
    hsm_module_free(key->mod);
    free(key);
}

struct sign_arg {
    const uint8_t *msg;
    size_t len;
    bool digest; /* msg is a SHA-256 digest: always CKM_RSA_PKCS */
    uint8_t *sig;
    size_t *siglen;
};

static pj_rc
op_sign(struct hsm_key *key, const struct hsm_ready *r, void *arg,
        struct pj_err *err)
{
    struct sign_arg *a = arg;
    CK_FUNCTION_LIST *fl = key->mod->fl;
    CK_MECHANISM mech = {CKM_SHA256_RSA_PKCS, NULL, 0};
    uint8_t in[sizeof(hsm_sha256_digestinfo) + SHA256_DIGEST_LENGTH];
    uint8_t out[HSM_SIG_MAX];
    const uint8_t *data = a->msg;
    CK_ULONG dlen = (CK_ULONG)a->len, olen = sizeof(out);
    CK_RV rv;

    if (a->digest || !r->sha256) {
        mech.mechanism = CKM_RSA_PKCS;
        memcpy(in, hsm_sha256_digestinfo, sizeof(hsm_sha256_digestinfo));
        if (a->digest) {
            memcpy(in + sizeof(hsm_sha256_digestinfo), a->msg,
                   SHA256_DIGEST_LENGTH);
        } else {
            SHA256(a->msg, a->len, in + sizeof(hsm_sha256_digestinfo));
        }
        data = in;
        dlen = sizeof(in);
    }
    if ((rv = fl->C_SignInit(r->s, &mech, r->priv)) != CKR_OK) {
        return hsm_err_ckr(err, rv, "C_SignInit");
    }
    /* Our buffer always fits, so the operation always ends here. */
    if ((rv = fl->C_Sign(r->s, (CK_BYTE *)data, dlen, out, &olen)) != CKR_OK) {
        return hsm_err_ckr(err, rv, "C_Sign");
    }
    if (olen > *a->siglen) {
        return pj_err_set(err, PJ_ERR_LIMIT,
                          "signature of %lu bytes does not fit in %zu", olen,
                          *a->siglen);
    }
    memcpy(a->sig, out, olen);
    *a->siglen = olen;
    return PJ_OK;
}

pj_rc
hsm_key_sign(struct hsm_key *key, const uint8_t *msg, size_t len, uint8_t *sig,
             size_t *siglen, struct pj_err *err)
{
    struct sign_arg a = {msg, len, false, sig, siglen};

    if (msg == NULL && len > 0) {
        return pj_err_set(err, PJ_ERR_INTERNAL, "hsm_key_sign: no message");
    }
    if (len > (size_t)1 << 30) {
        return pj_err_set(err, PJ_ERR_LIMIT, "message larger than 1 GiB");
    }
    return key_run(key, op_sign, &a, RUN_COUNT, err);
}

pj_rc
hsm_key_sign_digest(struct hsm_key *key, const uint8_t digest[32], uint8_t *sig,
                    size_t *siglen, struct pj_err *err)
{
    struct sign_arg a = {digest, 32, true, sig, siglen};

    return key_run(key, op_sign, &a, RUN_COUNT, err);
}

void
hsm_key_get_stats(struct hsm_key *key, struct hsm_stats *stats)
{
    pthread_mutex_lock(&key->mu);
    *stats = key->stats;
    pthread_mutex_unlock(&key->mu);
}

void
hsm_key_test_force_fallback(struct hsm_key *key, bool on)
{
    pthread_mutex_lock(&key->mu);
    key->force_fallback = on;
    pthread_mutex_unlock(&key->mu);
}

/* The public key object beside priv (same CKA_ID), or 0. */
static CK_OBJECT_HANDLE
public_beside(struct hsm_module *mod, CK_SESSION_HANDLE s,
              CK_OBJECT_HANDLE priv)
{
    CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
    CK_ATTRIBUTE t[2] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, NULL, 0}};
    CK_OBJECT_HANDLE o = 0;
    CK_ULONG got = 0;
    uint8_t *id = NULL;
    size_t idlen = 0;

    if (hsm_attr_get(mod, s, priv, CKA_ID, &id, &idlen) != CKR_OK ||
        idlen == 0) {
        free(id);
        return 0;
    }
    t[1].pValue = id;
    t[1].ulValueLen = idlen;
    if (mod->fl->C_FindObjectsInit(s, t, 2) == CKR_OK) {
        if (mod->fl->C_FindObjects(s, &o, 1, &got) != CKR_OK || got != 1) {
            o = 0;
        }
        (void)mod->fl->C_FindObjectsFinal(s);
    }
    free(id);
    return o;
}

struct pub_arg {
    uint8_t *n, *e;
    size_t nlen, elen;
};

static pj_rc
op_public(struct hsm_key *key, const struct hsm_ready *r, void *arg,
          struct pj_err *err)
{
    struct pub_arg *a = arg;
    struct hsm_module *mod = key->mod;
    CK_OBJECT_HANDLE o = r->priv;
    CK_RV rv;

    free(a->n);
    free(a->e);
    a->n = a->e = NULL;
    rv = hsm_attr_get(mod, r->s, o, CKA_MODULUS, &a->n, &a->nlen);
    if (rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_SENSITIVE ||
        (rv == CKR_OK && a->nlen == 0)) {
        /* Some tokens only show the modulus on the public object. */
        if ((o = public_beside(mod, r->s, r->priv)) == 0) {
            return pj_err_set(err, PJ_ERR_NOT_FOUND,
                              "token '%s' shows no modulus for the key and "
                              "has no public key with its CKA_ID",
                              key->token_name);
        }
        free(a->n);
        a->n = NULL;
        rv = hsm_attr_get(mod, r->s, o, CKA_MODULUS, &a->n, &a->nlen);
    }
    if (rv != CKR_OK) {
        return hsm_err_ckr(err, rv, "C_GetAttributeValue(CKA_MODULUS)");
    }
    rv = hsm_attr_get(mod, r->s, o, CKA_PUBLIC_EXPONENT, &a->e, &a->elen);
    if (rv != CKR_OK) {
        return hsm_err_ckr(err, rv, "C_GetAttributeValue(CKA_PUBLIC_EXPONENT)");
    }
    if (a->nlen == 0 || a->elen == 0) {
        return pj_err_set(err, PJ_ERR_TOKEN,
                          "token '%s' returned an empty modulus or exponent",
                          key->token_name);
    }
    return PJ_OK;
}

/* SubjectPublicKeyInfo DER from an RSA modulus and exponent (big-endian). */
static pj_rc
rsa_spki_der(const uint8_t *n, size_t nlen, const uint8_t *e, size_t elen,
             uint8_t **derp, size_t *lenp, struct pj_err *err)
{
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    BIGNUM *bn = NULL, *be = NULL;
    unsigned char *der = NULL;
    int len;
    pj_rc rc = PJ_OK;

    ERR_clear_error(); /* modules may leave their own errors queued */
    if ((bn = BN_bin2bn(n, (int)nlen, NULL)) == NULL ||
        (be = BN_bin2bn(e, (int)elen, NULL)) == NULL ||
        (bld = OSSL_PARAM_BLD_new()) == NULL ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
        (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) == NULL ||
        EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
        rc = pj_err_crypto(err, "building the RSA public key");
        goto out;
    }
    if ((len = i2d_PUBKEY(pkey, &der)) <= 0) {
        rc = pj_err_crypto(err, "encoding the public key");
        goto out;
    }
    /* Hand back malloc memory: callers free() it. */
    if ((*derp = malloc((size_t)len)) == NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
        goto out;
    }
    memcpy(*derp, der, (size_t)len);
    *lenp = (size_t)len;
out:
    OPENSSL_free(der);
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    return rc;
}

pj_rc
hsm_key_public_der(struct hsm_key *key, uint8_t **derp, size_t *lenp,
                   struct pj_err *err)
{
    struct pub_arg a = {0};
    pj_rc rc;

    *derp = NULL;
    *lenp = 0;
    if ((rc = key_run(key, op_public, &a, 0, err)) == PJ_OK) {
        rc = rsa_spki_der(a.n, a.nlen, a.e, a.elen, derp, lenp, err);
    }
    free(a.n);
    free(a.e);
    return rc;
}

static bool
attr_bool(struct hsm_module *mod, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
          CK_ATTRIBUTE_TYPE t)
{
    CK_BBOOL v = CK_FALSE;
    CK_ATTRIBUTE a = {t, &v, sizeof(v)};

    return mod->fl->C_GetAttributeValue(s, o, &a, 1) == CKR_OK && v == CK_TRUE;
}

/*
 * The TPM public area tpm2-pkcs11 keeps for the key. It is evidence because
 * the TPM itself checks it: TPM2_Load refuses a private blob whose public
 * area was changed, so a key that signs has this area. Its modulus must be
 * the key's, or the area says nothing about this key.
 */
static void
tpm_area_fill(struct hsm_module *mod, CK_SESSION_HANDLE s,
              CK_OBJECT_HANDLE priv, struct hsm_key_info *info)
{
    uint8_t *blob = NULL, *n = NULL;
    const uint8_t *mod_area = NULL;
    size_t blen = 0, nlen = 0, alen = 0, i = 0, j = 0;
    uint32_t attrs = 0;

    if (hsm_attr_get(mod, s, priv, HSM_CKA_TPM2_PUB_BLOB, &blob, &blen) !=
            CKR_OK ||
        !hsm_tpm2b_public_parse(blob, blen, &attrs, &mod_area, &alen)) {
        pj_log_warn("token '%s': cannot read the key's TPM public area; "
                    "whether the key can leave the TPM is unknown",
                    info->token_label);
        goto out;
    }
    if (hsm_attr_get(mod, s, priv, CKA_MODULUS, &n, &nlen) == CKR_OK) {
        /* Compare as numbers: either side may carry leading zeros. */
        while (i < nlen && n[i] == 0) {
            i++;
        }
        while (j < alen && mod_area[j] == 0) {
            j++;
        }
    }
    if (n == NULL || nlen - i != alen - j ||
        memcmp(n + i, mod_area + j, alen - j) != 0) {
        pj_log_warn("token '%s': the TPM public area stored for key '%s' is "
                    "not the key's (modulus differs); not trusting it",
                    info->token_label, info->label);
        goto out;
    }
    info->tpm_area = true;
    info->tpm_object_attributes = attrs;
    info->tpm_fixed_tpm = (attrs & HSM_TPMA_FIXED_TPM) != 0;
    info->tpm_fixed_parent = (attrs & HSM_TPMA_FIXED_PARENT) != 0;
    info->tpm_sensitive_data_origin =
        (attrs & HSM_TPMA_SENSITIVE_DATA_ORIGIN) != 0;
out:
    free(blob);
    free(n);
}

bool
hsm_key_info_bound(const struct hsm_key_info *info, const char **why)
{
    const char *w;
    bool ok;

    if (info->tpm) {
        if (!info->tpm_area) {
            w = "TPM public area unreadable: cannot tell whether the key can "
                "leave the TPM";
            ok = false;
        } else if (!info->tpm_sensitive_data_origin) {
            w = "the key was made outside the TPM and imported "
                "(TPM sensitiveDataOrigin is clear): a copy may exist";
            ok = false;
        } else if (!info->tpm_fixed_tpm || !info->tpm_fixed_parent) {
            w = "the TPM key may be duplicated to another TPM (fixedTPM or "
                "fixedParent is clear)";
            ok = false;
        } else {
            w = "made inside the TPM and bound to it (TPM public area: "
                "fixedTPM, fixedParent, sensitiveDataOrigin; the PKCS#11 "
                "flags are not evidence on tpm2-pkcs11)";
            ok = true;
        }
    } else if (info->extractable || !info->never_extractable) {
        w = "the key is or was extractable (CKA_EXTRACTABLE / "
            "CKA_NEVER_EXTRACTABLE)";
        ok = false;
    } else if (!info->sensitive || !info->always_sensitive) {
        w = "the key is or was not sensitive (CKA_SENSITIVE / "
            "CKA_ALWAYS_SENSITIVE)";
        ok = false;
    } else {
        w = "sensitive and never extractable on the token (PKCS#11 flags)";
        ok = true;
    }
    if (why != NULL) {
        *why = w;
    }
    return ok;
}

pj_rc
hsm_info_fill(struct hsm_module *mod, CK_SESSION_HANDLE s, CK_SLOT_ID slot,
              const CK_TOKEN_INFO *tinfo, CK_OBJECT_HANDLE priv,
              struct hsm_key_info *info, struct pj_err *err)
{
    uint8_t *v = NULL;
    size_t len = 0, i;
    CK_RV rv;

    memset(info, 0, sizeof(*info));
    hsm_fixed_str(tinfo->label, sizeof(tinfo->label), info->token_label,
                  sizeof(info->token_label));
    hsm_fixed_str(tinfo->serialNumber, sizeof(tinfo->serialNumber),
                  info->token_serial, sizeof(info->token_serial));
    hsm_fixed_str(tinfo->manufacturerID, sizeof(tinfo->manufacturerID),
                  info->token_manufacturer, sizeof(info->token_manufacturer));
    hsm_fixed_str(tinfo->model, sizeof(tinfo->model), info->token_model,
                  sizeof(info->token_model));
    pj_strlcpy(info->module_description, mod->description,
               sizeof(info->module_description));
    if ((rv = hsm_attr_get(mod, s, priv, CKA_LABEL, &v, &len)) != CKR_OK) {
        return hsm_err_ckr(err, rv, "C_GetAttributeValue(CKA_LABEL)");
    }
    hsm_printable(v, len, info->label, sizeof(info->label));
    free(v);
    v = NULL;
    if ((rv = hsm_attr_get(mod, s, priv, CKA_ID, &v, &len)) != CKR_OK) {
        return hsm_err_ckr(err, rv, "C_GetAttributeValue(CKA_ID)");
    }
    info->id_len = len > sizeof(info->id) ? sizeof(info->id) : len;
    if (info->id_len > 0) {
        memcpy(info->id, v, info->id_len);
    }
    free(v);
    v = NULL;
    if (hsm_attr_get(mod, s, priv, CKA_MODULUS, &v, &len) == CKR_OK &&
        len > 0) {
        for (i = 0; i < len && v[i] == 0; i++) {
        }
        if (i < len) {
            unsigned top = v[i], b = 0;
            while (top != 0) {
                b++;
                top >>= 1;
            }
            info->bits = (unsigned long)((len - i - 1) * 8 + b);
        }
    }
    free(v);
    info->sensitive = attr_bool(mod, s, priv, CKA_SENSITIVE);
    info->always_sensitive = attr_bool(mod, s, priv, CKA_ALWAYS_SENSITIVE);
    info->extractable = attr_bool(mod, s, priv, CKA_EXTRACTABLE);
    info->never_extractable = attr_bool(mod, s, priv, CKA_NEVER_EXTRACTABLE);
    info->can_sign = attr_bool(mod, s, priv, CKA_SIGN);
    info->can_decrypt = attr_bool(mod, s, priv, CKA_DECRYPT);
    info->can_unwrap = attr_bool(mod, s, priv, CKA_UNWRAP);
    info->local = attr_bool(mod, s, priv, CKA_LOCAL);
    info->sha256_rsa_pkcs = hsm_slot_has_mech(mod, slot, CKM_SHA256_RSA_PKCS);
    if ((info->tpm = hsm_token_is_tpm(mod, tinfo))) {
        tpm_area_fill(mod, s, priv, info);
    }
    return PJ_OK;
}

static pj_rc
op_info(struct hsm_key *key, const struct hsm_ready *r, void *arg,
        struct pj_err *err)
{
    CK_TOKEN_INFO ti;

    pthread_mutex_lock(&key->mu);
    ti = key->tinfo;
    pthread_mutex_unlock(&key->mu);
    return hsm_info_fill(key->mod, r->s, r->slot, &ti, r->priv, arg, err);
}

pj_rc
hsm_key_get_info(struct hsm_key *key, struct hsm_key_info *info,
                 struct pj_err *err)
{
    return key_run(key, op_info, info, 0, err);
}
