/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The token layer: the only header other rooms include for PKCS#11. It
 * exposes no Cryptoki types, so certs/, agent/ and cli/ never include
 * <p11-kit/pkcs11.h>.
 *
 * A module is loaded by path (dlopen + C_GetFunctionList), initialised once
 * with OS locking. A key is found from an RFC 7512 URI (parsed by
 * libp11-kit) by token label/serial/manufacturer/model and by object
 * label/id; slot ids are never used as identity. An open key owns a small
 * pool of sessions and one login; signing is thread-safe, one operation in
 * flight per session. Recoverable token failures (closed sessions, lost
 * login, stale handles, device errors) are handled inside hsm_key_sign; a
 * rejected PIN is never retried.
 */
#ifndef HSM_H
#define HSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/pj_err.h"
#include "core/pj_secret.h"

#define HSM_DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define HSM_SIG_MAX 512 /* RSA-4096 */

struct hsm_module;
struct hsm_key;

/*
 * The module path to use: explicit if not NULL, else $P11JWT_MODULE, else
 * HSM_DEFAULT_MODULE. The result is borrowed.
 */
const char *hsm_module_path_resolve(const char *explicit_path);

/* Load and C_Initialize a module. Errors say what failed in words. */
PJ_MUST_USE pj_rc hsm_module_load(const char *path, struct hsm_module **modp,
                                  struct pj_err *err);
/* C_Finalize and unload; NULL is a no-op. Free every key first. */
void hsm_module_free(struct hsm_module *mod);

/*
 * Read a PIN from a source: "file:PATH" (refused if group/other can read
 * it), "env:NAME", or "systemd:NAME" ($CREDENTIALS_DIRECTORY/NAME). The PIN
 * is returned in secret memory; one trailing newline is removed. Error
 * messages name the source, never the PIN.
 */
PJ_MUST_USE pj_rc hsm_pin_read(const char *source, struct pj_secret **pinp,
                               struct pj_err *err);

struct hsm_key_opts {
    const char *uri;        /* pkcs11: URI naming the private key */
    const char *pin_source; /* overrides the URI's pin-source; may be NULL */
    unsigned sessions;      /* session pool size; 0 means the default (4) */
};

/*
 * Find the private key named by opts->uri, log in once, and open its pool.
 * Not-found errors list what is present: "token 'x' not found (tokens
 * present: a, b)".
 */
PJ_MUST_USE pj_rc hsm_key_open(struct hsm_module *mod,
                               const struct hsm_key_opts *opts,
                               struct hsm_key **keyp, struct pj_err *err);
/* Close the sessions (logging out) and free; NULL is a no-op. */
void hsm_key_free(struct hsm_key *key);

/*
 * RS256: RSASSA-PKCS1-v1_5 with SHA-256 over msg, on the token
 * (CKM_SHA256_RSA_PKCS, or CKM_RSA_PKCS with the DigestInfo prefix when the
 * token lacks it). sig holds *siglen bytes on entry (HSM_SIG_MAX is always
 * enough) and the signature length on return. Thread-safe.
 */
PJ_MUST_USE pj_rc hsm_key_sign(struct hsm_key *key, const uint8_t *msg,
                               size_t len, uint8_t *sig, size_t *siglen,
                               struct pj_err *err);

/*
 * RSASSA-PKCS1-v1_5 over an already computed SHA-256 digest (for X.509
 * and CSR signing through OpenSSL). Same contract as hsm_key_sign.
 */
PJ_MUST_USE pj_rc hsm_key_sign_digest(struct hsm_key *key,
                                      const uint8_t digest[32], uint8_t *sig,
                                      size_t *siglen, struct pj_err *err);

/* The key's public half as DER SubjectPublicKeyInfo; *derp is new. */
PJ_MUST_USE pj_rc hsm_key_public_der(struct hsm_key *key, uint8_t **derp,
                                     size_t *lenp, struct pj_err *err);

/* What a person (and `p11jwt doctor`) needs to know about a key. */
struct hsm_key_info {
    char token_label[33];
    char token_serial[17];
    char token_manufacturer[33];
    char token_model[17];
    char module_description[33];
    char label[128];
    uint8_t id[64];
    size_t id_len;
    unsigned long bits;
    bool sensitive, always_sensitive;
    bool extractable, never_extractable;
    bool can_sign, can_decrypt, can_unwrap;
    bool local;           /* generated on the token */
    bool sha256_rsa_pkcs; /* the token offers CKM_SHA256_RSA_PKCS */
};

PJ_MUST_USE pj_rc hsm_key_get_info(struct hsm_key *key,
                                   struct hsm_key_info *info,
                                   struct pj_err *err);

struct hsm_keygen_opts {
    const char *uri;        /* token=... and object=... (label); id optional */
    const char *pin_source; /* overrides the URI's pin-source */
    unsigned bits;          /* 2048 (default when 0), 3072 or 4096 */
    /* Optional: called once before the (slow) generation starts. */
    void (*progress)(void *arg, const char *msg);
    void *progress_arg;
};

/*
 * Generate an RSA key pair ON the token: private key sensitive, private,
 * never extractable, sign-only (no decrypt/unwrap/derive); public and
 * private objects share CKA_LABEL and CKA_ID (a random 8-byte id unless the
 * URI has one). Refuses when an object with that label exists. info may be
 * NULL.
 */
PJ_MUST_USE pj_rc hsm_keygen(struct hsm_module *mod,
                             const struct hsm_keygen_opts *opts,
                             struct hsm_key_info *info, struct pj_err *err);

/*
 * Store a DER X.509 certificate on the key's token as a CKO_CERTIFICATE with
 * the key's CKA_ID and label (label overrides when not NULL). Replaces an
 * existing certificate with the same id when replace is true, else refuses.
 */
PJ_MUST_USE pj_rc hsm_key_store_cert(struct hsm_key *key, const uint8_t *der,
                                     size_t len, const char *label,
                                     bool replace, struct pj_err *err);

/* The DER certificate beside the key (same CKA_ID); *derp is new. */
PJ_MUST_USE pj_rc hsm_key_find_cert(struct hsm_key *key, uint8_t **derp,
                                    size_t *lenp, struct pj_err *err);

/*
 * Find a certificate by a pkcs11: URI (type=cert or no type); certificates
 * are public, so no login is needed unless pin_source is given.
 */
PJ_MUST_USE pj_rc hsm_cert_find(struct hsm_module *mod, const char *uri,
                                const char *pin_source, uint8_t **derp,
                                size_t *lenp, struct pj_err *err);

/* Counters for status and metrics. */
struct hsm_stats {
    uint64_t signatures;
    uint64_t failures;
    uint64_t recoveries;
};
void hsm_key_get_stats(struct hsm_key *key, struct hsm_stats *stats);

/* Cryptoki's name for a CK_RV ("CKR_PIN_INCORRECT"), or "CKR_0x..". */
const char *hsm_ckr_name(unsigned long ckr);

#endif
