/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What differs on a TPM token (tpm2-pkcs11, research/pkcs11.md 7, 8.1,
 * pitfalls 8-10, 14): recognising it, the gate that lets one operation at
 * a time reach the chip, and reading the key's TPM public area, which is
 * the evidence that the key cannot leave the chip (the PKCS#11 flags are
 * not: tpm2-pkcs11 lets anyone flip CKA_EXTRACTABLE and keeps the change).
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "core/pj_log.h"
#include "core/pj_util.h"
#include "pkcs11/internal.h"

bool
hsm_token_is_tpm(const struct hsm_module *mod, const CK_TOKEN_INFO *ti)
{
    char model[sizeof(ti->model) + 1], manuf[sizeof(ti->manufacturerID) + 1];

    if (mod->tpm2_pkcs11) {
        return true;
    }
    /* Behind a proxy the module is p11-kit's; the token still tells. */
    hsm_fixed_str(ti->model, sizeof(ti->model), model, sizeof(model));
    hsm_fixed_str(ti->manufacturerID, sizeof(ti->manufacturerID), manuf,
                  sizeof(manuf));
    return strstr(model, "TPM") != NULL ||
           strstr(manuf, "tpm2-software") != NULL;
}

pj_rc
hsm_tpm_enter(struct hsm_module *mod, const char *token_name,
              struct pj_err *err)
{
    struct hsm_tpm_waiter me = {NULL, false}, **pp;
    struct timespec deadline;
    unsigned wait_ms;
    int e = 0;

    pthread_mutex_lock(&mod->tpm_mu);
    if (!mod->tpm_busy && mod->tpm_head == NULL) {
        mod->tpm_busy = true;
        pthread_mutex_unlock(&mod->tpm_mu);
        return PJ_OK;
    }
    /* Queue behind the others: the TPM serves callers in arrival order. */
    wait_ms = mod->tpm_wait_ms;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += (time_t)(wait_ms / 1000);
    deadline.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    if (mod->tpm_tail != NULL) {
        mod->tpm_tail->next = &me;
    } else {
        mod->tpm_head = &me;
    }
    mod->tpm_tail = &me;
    while (!me.granted && e != ETIMEDOUT) {
        e = pthread_cond_timedwait(&mod->tpm_cv, &mod->tpm_mu, &deadline);
    }
    if (me.granted) {
        /* hsm_tpm_leave handed the TPM to us (and unlinked us). */
        pthread_mutex_unlock(&mod->tpm_mu);
        return PJ_OK;
    }
    /* Gave up: leave the queue so the next caller is not held up. */
    for (pp = &mod->tpm_head; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == &me) {
            *pp = me.next;
            break;
        }
    }
    mod->tpm_tail = NULL;
    for (pp = &mod->tpm_head; *pp != NULL; pp = &(*pp)->next) {
        mod->tpm_tail = *pp;
    }
    mod->tpm_timeouts++;
    pthread_mutex_unlock(&mod->tpm_mu);
    return pj_err_set(err, PJ_ERR_TIMEOUT,
                      "TPM busy: token '%s' did not become free within %u ms "
                      "(a TPM signs one request at a time; lower the request "
                      "rate or raise the wait)",
                      token_name, wait_ms);
}

void
hsm_tpm_leave(struct hsm_module *mod)
{
    struct hsm_tpm_waiter *next;

    pthread_mutex_lock(&mod->tpm_mu);
    if ((next = mod->tpm_head) != NULL) {
        /* Hand over directly: a newcomer cannot overtake the queue. */
        mod->tpm_head = next->next;
        if (mod->tpm_head == NULL) {
            mod->tpm_tail = NULL;
        }
        next->next = NULL;
        next->granted = true;
        pthread_cond_broadcast(&mod->tpm_cv);
    } else {
        mod->tpm_busy = false;
    }
    pthread_mutex_unlock(&mod->tpm_mu);
}

void
hsm_module_test_tpm_wait(struct hsm_module *mod, unsigned ms)
{
    pthread_mutex_lock(&mod->tpm_mu);
    mod->tpm_wait_ms = ms;
    pthread_mutex_unlock(&mod->tpm_mu);
}

/* Big-endian readers over a bounded buffer. */
struct rd {
    const uint8_t *p;
    size_t left;
};

static bool
rd_u16(struct rd *r, uint16_t *v)
{
    if (r->left < 2) {
        return false;
    }
    *v = (uint16_t)((r->p[0] << 8) | r->p[1]);
    r->p += 2;
    r->left -= 2;
    return true;
}

static bool
rd_u32(struct rd *r, uint32_t *v)
{
    if (r->left < 4) {
        return false;
    }
    *v = ((uint32_t)r->p[0] << 24) | ((uint32_t)r->p[1] << 16) |
         ((uint32_t)r->p[2] << 8) | r->p[3];
    r->p += 4;
    r->left -= 4;
    return true;
}

static bool
rd_skip(struct rd *r, size_t n)
{
    if (r->left < n) {
        return false;
    }
    r->p += n;
    r->left -= n;
    return true;
}

#define TPM_ALG_RSA 0x0001
#define TPM_ALG_NULL 0x0010

/*
 * TPM 2.0 Library Part 2: TPM2B_PUBLIC = size(2) TPMT_PUBLIC;
 * TPMT_PUBLIC = type(2) nameAlg(2) objectAttributes(4) authPolicy(TPM2B)
 * parameters unique. For RSA the parameters are TPMS_RSA_PARMS: symmetric
 * (alg(2), and keyBits(2) mode(2) unless alg is NULL), scheme (scheme(2),
 * and hashAlg(2) unless NULL), keyBits(2), exponent(4); unique is a
 * TPM2B_PUBLIC_KEY_RSA, the modulus.
 */
bool
hsm_tpm2b_public_parse(const uint8_t *buf, size_t len, uint32_t *attrsp,
                       const uint8_t **modp, size_t *modlenp)
{
    struct rd r = {buf, len};
    uint16_t size, type, name_alg, n, alg, bits;
    uint32_t attrs, exponent;

    if (buf == NULL || !rd_u16(&r, &size) || size != r.left ||
        !rd_u16(&r, &type) || !rd_u16(&r, &name_alg) || !rd_u32(&r, &attrs)) {
        return false;
    }
    (void)name_alg;
    if (type != TPM_ALG_RSA) {
        return false;
    }
    /* authPolicy */
    if (!rd_u16(&r, &n) || !rd_skip(&r, n)) {
        return false;
    }
    /* symmetric */
    if (!rd_u16(&r, &alg) || (alg != TPM_ALG_NULL && !rd_skip(&r, 4))) {
        return false;
    }
    /* scheme */
    if (!rd_u16(&r, &alg) || (alg != TPM_ALG_NULL && !rd_skip(&r, 2))) {
        return false;
    }
    if (!rd_u16(&r, &bits) || !rd_u32(&r, &exponent)) {
        return false;
    }
    (void)exponent;
    /* unique: the modulus, keyBits long, and nothing after it */
    if (!rd_u16(&r, &n) || n != r.left || n == 0 || (size_t)n * 8 != bits) {
        return false;
    }
    *attrsp = attrs;
    if (modp != NULL) {
        *modp = r.p;
    }
    if (modlenp != NULL) {
        *modlenp = n;
    }
    return true;
}
