/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Salesforce OAuth 2.0 JWT Bearer flow (research/salesforce.md 3-5):
 *
 *   1. sf_assertion_build: claims + RS256 compact JWS, signed through a
 *      callback (this room never includes PKCS#11 headers).
 *   2. sf_request_build: the POST to <login-url>/services/oauth2/token.
 *   3. Perform it, either
 *        - blocking: sf_exchange (curl easy), or
 *        - async: sf_transfer_new -> add sf_transfer_easy() to a CURLM ->
 *          on CURLMSG_DONE call sf_transfer_finish with the CURLcode.
 *   4. sf_response_parse: (HTTP status, body, Date) -> a token, or a
 *      failure classed by the error catalogue with a hint a person can act
 *      on; clock skew measured from Date either way.
 *
 * Secrets (assertions, form bodies, response bodies, access tokens) live in
 * struct pj_secret and never reach logs or error messages.
 */
#ifndef SF_H
#define SF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "core/pj_config.h"
#include "core/pj_err.h"
#include "core/pj_secret.h"

#define SF_TOKEN_PATH "/services/oauth2/token"
#define SF_GRANT_TYPE "urn:ietf:params:oauth:grant-type:jwt-bearer"
#define SF_RESPONSE_MAX_BYTES (64 * 1024) /* a token response is ~1 KiB */
#define SF_SKEW_WARN_S 30                 /* |skew| above this is a warning */
#define SF_JTI_BYTES 16                   /* 128 random bits */
#define SF_CLAIM_MAX 512                  /* bytes in iss, sub, aud, jti */

/* ---- 1. Assertion ---------------------------------------------------- */

/*
 * The signature callback: RSASSA-PKCS1-v1_5 with SHA-256 over msg (the JWS
 * signing input). sig holds *siglen bytes on entry (512 is enough for
 * RSA-4096); *siglen is the signature length on return. For the token:
 * hsm_key_sign with ctx = the struct hsm_key.
 */
typedef pj_rc (*sf_sign_fn)(void *ctx, const uint8_t *msg, size_t len,
                            uint8_t *sig, size_t *siglen, struct pj_err *err);

struct sf_claims {
    const char *iss; /* client-id (consumer key) */
    const char *sub; /* Salesforce username */
    const char *aud; /* one https URL */
    int64_t now;     /* iat; 0 means pj_time_now() */
    long lifetime;   /* exp = now + lifetime; 0 means 180; 1..300 */
    const char *jti; /* NULL: 128 bits from RAND_bytes, base64url (tests) */
};

/*
 * Check claims against Salesforce's rules: iss and sub non-empty printable
 * ASCII without spaces, aud one https URL, lifetime in
 * [PJ_ASSERTION_LIFETIME_MIN_S, PJ_ASSERTION_LIFETIME_MAX_S] (or 0), now
 * after 2001 and before 2100, each string at most SF_CLAIM_MAX bytes.
 * Errors name the claim.
 */
PJ_MUST_USE pj_rc sf_claims_check(const struct sf_claims *claims,
                                  struct pj_err *err);

/*
 * Build and sign an assertion:
 *   base64url({"alg":"RS256"}) "." base64url({"iss","sub","aud","exp",
 *   "iat","jti"} in that order, compact JSON) "." base64url(signature)
 * On success *assertionp is a new secret; expp (may be NULL) gets exp and
 * jtip (may be NULL) a copy of the jti (not secret: logs may carry it),
 * which the caller frees.
 */
PJ_MUST_USE pj_rc sf_assertion_build(const struct sf_claims *claims,
                                     sf_sign_fn sign, void *sign_ctx,
                                     struct pj_secret **assertionp,
                                     int64_t *expp, char **jtip,
                                     struct pj_err *err);

/*
 * Claims from a profile: iss = client-id, aud = audience, lifetime =
 * assertion-lifetime, sub = subject (NULL: the profile's subject; others
 * must be listed in subject/subjects). Borrows strings from prof.
 */
PJ_MUST_USE pj_rc sf_claims_from_profile(const struct pj_profile *prof,
                                         const char *subject,
                                         struct sf_claims *claims,
                                         struct pj_err *err);

/* ---- 2. Request ------------------------------------------------------ */

struct sf_request {
    char *url;               /* https://.../services/oauth2/token */
    struct pj_secret *body;  /* grant_type=...&assertion=... (secret) */
    char *ca_file;           /* NULL: the system's CA store */
    long connect_timeout_ms; /* > 0 */
    long timeout_ms;         /* > 0, whole transfer */
    size_t max_response;     /* body cap; SF_RESPONSE_MAX_BYTES */
};

/*
 * A token request for a profile (login-url, ca-file, timeouts) carrying
 * assertion (copied, form-encoded). *reqp is new.
 */
PJ_MUST_USE pj_rc sf_request_build(const struct pj_profile *prof,
                                   const struct pj_secret *assertion,
                                   struct sf_request **reqp,
                                   struct pj_err *err);

/* Wipe the body and free; NULL is a no-op. */
void sf_request_free(struct sf_request *req);

/* ---- 4. Result (before 3, which fills it) ---------------------------- */

enum sf_class {
    SF_CLASS_NONE = 0,  /* success */
    SF_CLASS_PERMANENT, /* fix the setup; retrying will not help */
    SF_CLASS_AUDIENCE,  /* aud / token host mismatch: try another pair */
    SF_CLASS_CLOCK,     /* exp rejected: check NTP */
    SF_CLASS_TRANSIENT, /* 5xx, timeout, DNS, TLS, connect: back off */
    SF_CLASS_UNKNOWN,   /* not in the catalogue: passed through verbatim */
};

/* "ok", "permanent", "audience-or-host", "clock", "transient", "unknown". */
const char *sf_class_name(enum sf_class cls);

/* Whether the agent should retry automatically (transient only). */
bool sf_class_is_retryable(enum sf_class cls);

struct sf_token {
    struct pj_secret *access_token; /* required */
    char *instance_url;             /* required, https */
    char *id;                       /* optional fields: NULL when absent */
    char *token_type;
    char *scope;
    char *signature;
    int64_t issued_at_ms; /* issued_at (epoch ms); 0 when absent */
};

struct sf_failure {
    enum sf_class cls;
    long http_status; /* 0 when no HTTP answer */
    char error[128];  /* Salesforce "error" (printable only) */
    char error_description[256];
    const char *hint; /* static; never NULL after a failure */
};

struct sf_result {
    bool ok;
    struct sf_token token;  /* when ok */
    struct sf_failure fail; /* when !ok */
    bool have_date;         /* the response carried a parseable Date */
    int64_t server_time;    /* Date, epoch seconds */
    int64_t skew;           /* server_time - local time, seconds */
    long http_status;       /* 0 when no HTTP answer */
};

/* Zero a result before first use. */
void sf_result_init(struct sf_result *res);
/* Wipe and free what a result holds; it can then be reused. */
void sf_result_cleanup(struct sf_result *res);

/* Whether the measured skew deserves the NTP warning. */
bool sf_result_skew_bad(const struct sf_result *res);

/*
 * Parse a token endpoint answer. date is the Date header value (may be
 * NULL), now the local time it is compared with. Returns PJ_OK with
 * res->ok for a token; PJ_ERR_UPSTREAM for a Salesforce error (res->fail
 * classed by the catalogue) and other non-5xx statuses; PJ_ERR_HTTP for
 * 5xx/429/408 and bodies over SF_RESPONSE_MAX_BYTES (transient);
 * PJ_ERR_INVALID for a 200 that is not a JSON object (transient: a proxy)
 * or lacks a usable access_token/https instance_url (unknown). JSON is
 * parsed with JSON_REJECT_DUPLICATES. err->msg states error, description
 * and class; it never contains the token. res must have been initialised
 * (sf_result_init); what it held is released first.
 */
PJ_MUST_USE pj_rc sf_response_parse(long http_status, const uint8_t *body,
                                    size_t len, const char *date, int64_t now,
                                    struct sf_result *res, struct pj_err *err);

/* ---- 3. Transport ---------------------------------------------------- */

struct sf_transfer;

/*
 * A configured curl easy handle for req (req must outlive the transfer):
 * POST, https only, TLS peer and host verification on (never off), CA file,
 * timeouts, no redirects, body capped at req->max_response, Date captured.
 */
PJ_MUST_USE pj_rc sf_transfer_new(const struct sf_request *req,
                                  struct sf_transfer **xferp,
                                  struct pj_err *err);

/* The easy handle, for curl_multi_add_handle. Borrowed. */
CURL *sf_transfer_easy(struct sf_transfer *xfer);

/*
 * After the transfer ended with code (curl_easy_perform's result or the
 * CURLMSG_DONE result): classify transport failures (timeouts, DNS, TLS,
 * connect, oversized body: transient) or parse the answer with
 * sf_response_parse. The caller removes the handle from its multi first.
 */
PJ_MUST_USE pj_rc sf_transfer_finish(struct sf_transfer *xfer, CURLcode code,
                                     struct sf_result *res, struct pj_err *err);

/* Wipe buffers, clean up the easy handle and free; NULL is a no-op. */
void sf_transfer_free(struct sf_transfer *xfer);

/*
 * Blocking: new + curl_easy_perform + finish + free. curl_global_init must
 * have run (sf_global_init).
 */
PJ_MUST_USE pj_rc sf_exchange(const struct sf_request *req,
                              struct sf_result *res, struct pj_err *err);

/* curl_global_init once per process; call before threads start. */
PJ_MUST_USE pj_rc sf_global_init(struct pj_err *err);
void sf_global_cleanup(void);

/* ---- Error catalogue ------------------------------------------------- */

struct sf_catalogue_entry {
    const char *error;       /* Salesforce "error" */
    const char *description; /* exact error_description; NULL = any */
    enum sf_class cls;
    const char *hint;
};

/* The whole catalogue (for tests and docs). */
const struct sf_catalogue_entry *sf_catalogue(size_t *np);

/*
 * The entry for an error/description pair (description compared exactly,
 * then an entry with NULL description for the same error); NULL when not
 * catalogued.
 */
const struct sf_catalogue_entry *sf_catalogue_lookup(const char *error,
                                                     const char *description);

/*
 * Classify a transport failure (timeouts, DNS, connect, TLS, oversized
 * answers: all transient); *hintp gets a static hint naming the likely
 * fix.
 */
enum sf_class sf_classify_curl(CURLcode code, const char **hintp);

/* Classify an HTTP status without a catalogued body (5xx -> transient). */
enum sf_class sf_classify_http(long status, const char **hintp);

/*
 * A one-line description of the skew for a person, with the NTP fix when
 * it is over SF_SKEW_WARN_S ("clock skew 42 s (server ahead): ...").
 */
void sf_skew_describe(const struct sf_result *res, char *buf, size_t size);

#endif
