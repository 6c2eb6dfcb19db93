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
    /*
     * TPM tokens (tpm2-pkcs11): whether the key can leave the chip is told
     * by its TPM public area (TPMA_OBJECT), not by the PKCS#11 flags above,
     * which tpm2-pkcs11 lets anyone change and keeps changed
     * (research/pkcs11.md pitfall 9). tpm_area is true when the area was
     * read and its modulus is the key's; otherwise the three bits are false.
     */
    bool tpm; /* the token is a TPM */
    bool tpm_fixed_tpm, tpm_fixed_parent, tpm_sensitive_data_origin;
    bool tpm_area;
    uint32_t tpm_object_attributes; /* raw TPMA_OBJECT when tpm_area */
};

PJ_MUST_USE pj_rc hsm_key_get_info(struct hsm_key *key,
                                   struct hsm_key_info *info,
                                   struct pj_err *err);

/*
 * Can the key's private half leave the token, judged the way the token
 * deserves: on a TPM by the public area (fixedTPM, fixedParent and
 * sensitiveDataOrigin all set: made inside this TPM, never duplicable);
 * elsewhere by CKA_SENSITIVE, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE
 * and not CKA_EXTRACTABLE. *why (may be NULL) names the evidence or what
 * is missing, in words for `p11jwt doctor`.
 */
bool hsm_key_info_bound(const struct hsm_key_info *info, const char **why);

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

/* ---- Key rotation (hsm_rotate.c; docs/rotation.md) --------------------
 *
 * A profile's key URI names its key by label L (object=L). The on-token
 * labels are the rotation state: "L" is the active key, "L.next" the next
 * one, "L.retired-YYYYMMDDTHHMMSSZ" old ones. A key pair and its
 * certificate share CKA_ID and label.
 */
#define HSM_ROTATE_NEXT ".next"
#define HSM_ROTATE_RETIRED ".retired-"
#define HSM_ROTATE_RETIRED_MAX 16 /* retired keys listed by a scan */
#define HSM_ROTATE_LABEL_MAX 127  /* L + ".retired-" + 16 must fit */

struct hsm_rotate_state {
    char token[33];
    char label[HSM_ROTATE_LABEL_MAX + 1]; /* L */
    bool active, next;                    /* private keys L / L.next exist */
    uint8_t active_id[64], next_id[64];
    size_t active_id_len, next_id_len;
    bool active_cert, next_cert; /* a certificate shares the key's id */
    unsigned n_retired;          /* private keys labelled L.retired-* */
    char retired[HSM_ROTATE_RETIRED_MAX][HSM_ROTATE_LABEL_MAX + 1];
};

/*
 * The label L of a key URI (object=L), checked for rotation: present,
 * printable, short enough for the retired suffix, no id= (the id would pin
 * the key and defeat relabelling), not itself a ".next"/".retired-" label.
 */
PJ_MUST_USE pj_rc hsm_rotate_label(const char *key_uri, char *label,
                                   size_t labelsz, struct pj_err *err);

/*
 * key_uri with its object label replaced by label (NULL: removed), its id
 * replaced by id (NULL: removed) and its type set to type ("private",
 * "cert", or NULL: removed). A pin-value is never kept. *urip is new.
 */
PJ_MUST_USE pj_rc hsm_rotate_uri(const char *key_uri, const char *label,
                                 const uint8_t *id, size_t id_len,
                                 const char *type, char **urip,
                                 struct pj_err *err);

/* Read the rotation state of key_uri's label from its token (logs in). */
PJ_MUST_USE pj_rc hsm_rotate_scan(struct hsm_module *mod, const char *key_uri,
                                  const char *pin_source,
                                  struct hsm_rotate_state *st,
                                  struct pj_err *err);

/*
 * Make L.next the active key, in an order that is safe to interrupt and
 * repeat: (1) the objects of the key labelled L (public key and certificate
 * first, the private key last) are relabelled L.retired-<now as UTC> (or
 * destroyed with destroy_old); (2) the objects of L.next (likewise) are
 * relabelled L. With no L.next: PJ_ERR_NOT_FOUND. retired (may be NULL,
 * HSM_ROTATE_LABEL_MAX + 1 bytes) gets the retired label, "" if none.
 */
PJ_MUST_USE pj_rc hsm_rotate_promote(struct hsm_module *mod,
                                     const char *key_uri,
                                     const char *pin_source, int64_t now,
                                     bool destroy_old, char *retired,
                                     struct pj_err *err);

/*
 * Destroy every object labelled label (a retired key: refuses L and
 * L.next); *np (may be NULL) gets the number destroyed.
 */
PJ_MUST_USE pj_rc hsm_rotate_destroy(struct hsm_module *mod,
                                     const char *key_uri,
                                     const char *pin_source, const char *label,
                                     unsigned *np, struct pj_err *err);

#endif
