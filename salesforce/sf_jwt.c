/* SPDX-License-Identifier: Apache-2.0 */
/* JWT Bearer assertions: claims, compact JWS (RS256), signed by callback. */
#include "salesforce/sf.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "core/pj_util.h"

#define SF_SIG_MAX 512 /* RSA-4096 */
/* 2001-01-01 .. 2100-01-01: anything else is a broken clock or a bug. */
#define SF_TIME_MIN 978307200LL
#define SF_TIME_MAX 4102444800LL

static bool
claim_ok(const char *s)
{
    const unsigned char *p;

    if (s == NULL || *s == '\0' || strlen(s) > SF_CLAIM_MAX) {
        return false;
    }
    for (p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p <= 0x20 || *p >= 0x7f) {
            return false;
        }
    }
    return true;
}

pj_rc
sf_claims_check(const struct sf_claims *claims, struct pj_err *err)
{
    struct pj_err uerr = {0};

    if (!claim_ok(claims->iss)) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "assertion claim iss (client-id) must be 1 to %d "
                          "printable ASCII characters without spaces",
                          SF_CLAIM_MAX);
    }
    if (!claim_ok(claims->sub)) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "assertion claim sub (the Salesforce username) must "
                          "be 1 to %d printable ASCII characters without "
                          "spaces",
                          SF_CLAIM_MAX);
    }
    if (!claim_ok(claims->aud)) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "assertion claim aud must be one https URL");
    }
    if (pj_config_url_check(claims->aud, "aud", false, &uerr) != PJ_OK) {
        return pj_err_set(err, PJ_ERR_INVALID, "assertion claim %s", uerr.msg);
    }
    if (claims->lifetime != 0 &&
        (claims->lifetime < PJ_ASSERTION_LIFETIME_MIN_S ||
         claims->lifetime > PJ_ASSERTION_LIFETIME_MAX_S)) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "assertion lifetime %ld s is outside %d..%d s "
                          "(Salesforce rejects an exp more than 5 minutes "
                          "ahead)",
                          claims->lifetime, PJ_ASSERTION_LIFETIME_MIN_S,
                          PJ_ASSERTION_LIFETIME_MAX_S);
    }
    if (claims->now != 0 &&
        (claims->now < SF_TIME_MIN || claims->now >= SF_TIME_MAX)) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "the clock reads %lld, which is not a plausible "
                          "time: fix the system clock (NTP)",
                          (long long)claims->now);
    }
    if (claims->jti != NULL && !claim_ok(claims->jti)) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "assertion claim jti must be 1 to %d printable "
                          "ASCII characters",
                          SF_CLAIM_MAX);
    }
    return PJ_OK;
}

static pj_rc
b64_str(const char *s, char **outp)
{
    return pj_b64url_encode((const uint8_t *)s, strlen(s), outp);
}

pj_rc
sf_assertion_build(const struct sf_claims *claims, sf_sign_fn sign,
                   void *sign_ctx, struct pj_secret **assertionp, int64_t *expp,
                   char **jtip, struct pj_err *err)
{
    json_t *obj = NULL;
    char *claims_json = NULL, *hdr64 = NULL, *claims64 = NULL;
    char *input = NULL, *sig64 = NULL, *jti = NULL, *jti_copy = NULL;
    uint8_t sig[SF_SIG_MAX], rnd[SF_JTI_BYTES];
    size_t siglen = sizeof(sig), inlen, total;
    struct pj_secret *out = NULL;
    int64_t now, exp;
    long lifetime;
    pj_rc rc;

    *assertionp = NULL;
    if (jtip != NULL) {
        *jtip = NULL;
    }
    if ((rc = sf_claims_check(claims, err)) != PJ_OK) {
        return rc;
    }
    now = claims->now != 0 ? claims->now : pj_time_now();
    if (now < SF_TIME_MIN || now >= SF_TIME_MAX) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "the clock reads %lld, which is not a plausible "
                          "time: fix the system clock (NTP)",
                          (long long)now);
    }
    lifetime = claims->lifetime != 0 ? claims->lifetime
                                     : PJ_ASSERTION_LIFETIME_DEFAULT_S;
    exp = now + lifetime;

    if (claims->jti != NULL) {
        jti = strdup(claims->jti);
        rc = jti == NULL ? PJ_ERR_NOMEM : PJ_OK;
    } else if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        rc = pj_err_crypto(err, "RAND_bytes for the assertion jti");
        goto out;
    } else {
        rc = pj_b64url_encode(rnd, sizeof(rnd), &jti);
    }
    if (rc != PJ_OK) {
        rc = pj_err_set(err, rc, "cannot make the assertion jti");
        goto out;
    }

    /* jansson keeps insertion order; JSON_COMPACT gives {"a":1,"b":2}. */
    obj = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "iss", claims->iss, "sub",
                    claims->sub, "aud", claims->aud, "exp", (json_int_t)exp,
                    "iat", (json_int_t)now, "jti", jti);
    if (obj == NULL || (claims_json = json_dumps(obj, JSON_COMPACT)) == NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM,
                        "cannot encode the assertion claims as JSON");
        goto out;
    }
    if ((rc = b64_str("{\"alg\":\"RS256\"}", &hdr64)) != PJ_OK ||
        (rc = b64_str(claims_json, &claims64)) != PJ_OK) {
        rc = pj_err_set(err, rc, "cannot base64url-encode the assertion");
        goto out;
    }
    inlen = strlen(hdr64) + 1 + strlen(claims64);
    if ((input = malloc(inlen + 1)) == NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
        goto out;
    }
    (void)snprintf(input, inlen + 1, "%s.%s", hdr64, claims64);

    rc = sign(sign_ctx, (const uint8_t *)input, inlen, sig, &siglen, err);
    if (rc != PJ_OK) {
        goto out;
    }
    if (siglen == 0 || siglen > sizeof(sig)) {
        rc = pj_err_set(err, PJ_ERR_INTERNAL,
                        "the signer returned a %zu-byte signature", siglen);
        goto out;
    }
    if ((rc = pj_b64url_encode(sig, siglen, &sig64)) != PJ_OK) {
        rc = pj_err_set(err, rc, "cannot base64url-encode the signature");
        goto out;
    }
    total = inlen + 1 + strlen(sig64);
    if ((out = pj_secret_new(total)) == NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "out of memory for the assertion");
        goto out;
    }
    memcpy(out->data, input, inlen);
    out->data[inlen] = '.';
    memcpy(out->data + inlen + 1, sig64, strlen(sig64));
    out->len = total;
    out->data[total] = '\0';
    if (jtip != NULL && (jti_copy = strdup(jti)) == NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
        goto out;
    }
    *assertionp = out;
    out = NULL;
    if (expp != NULL) {
        *expp = exp;
    }
    if (jtip != NULL) {
        *jtip = jti_copy;
        jti_copy = NULL;
    }
    rc = PJ_OK;
out:
    OPENSSL_cleanse(sig, sizeof(sig));
    if (sig64 != NULL) {
        OPENSSL_cleanse(sig64, strlen(sig64));
        free(sig64);
    }
    pj_secret_free(out);
    free(input);
    free(hdr64);
    free(claims64);
    free(claims_json);
    json_decref(obj);
    free(jti);
    free(jti_copy);
    return rc;
}

pj_rc
sf_claims_from_profile(const struct pj_profile *prof, const char *subject,
                       struct sf_claims *claims, struct pj_err *err)
{
    const char *sub = NULL;
    pj_rc rc;

    memset(claims, 0, sizeof(*claims));
    if ((rc = pj_profile_subject(prof, subject, &sub, err)) != PJ_OK) {
        return rc;
    }
    claims->iss = prof->client_id;
    claims->sub = sub;
    claims->aud = prof->audience;
    claims->lifetime = prof->assertion_lifetime;
    return PJ_OK;
}
