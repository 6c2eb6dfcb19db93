/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to pkcs11/ (and its tests): Cryptoki types, the module and key
 * structures, URI criteria and the recovery machinery. Other rooms include
 * only pkcs11/hsm.h.
 */
#ifndef HSM_INTERNAL_H
#define HSM_INTERNAL_H

#include <pthread.h>
#include <sys/types.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include "pkcs11/hsm.h"

#define HSM_DEFAULT_SESSIONS 4
#define HSM_MAX_SESSIONS 64
#define HSM_URI_MAX_BYTES 4096
#define HSM_LABEL_MAX 127 /* struct hsm_key_info.label holds 128 */
#define HSM_ID_MAX 64     /* struct hsm_key_info.id */
#define HSM_PIN_MAX_BYTES 255
#define HSM_REINIT_ATTEMPTS 3 /* module re-initialisations per sign call */
#define HSM_BACKOFF_FIRST_MS 100
#define HSM_BACKOFF_MAX_MS 1000
#define HSM_CERT_MAX_BYTES (64 * 1024)
/* How long a caller waits for a busy TPM before PJ_ERR_TIMEOUT. */
#define HSM_TPM_WAIT_MS 5000

/*
 * tpm2-pkcs11's vendor attribute holding the key's TPM2B_PUBLIC (its
 * src/lib/attrs.h: CKA_VENDOR_DEFINED | 0x0F000000 | 2; "not stable", so
 * only read when the token is a TPM, and a failure to read is reported as
 * "unknown", never as "extractable").
 */
#define HSM_CKA_TPM2_PUB_BLOB (CKA_VENDOR_DEFINED | 0x0F000002UL)
/* TPMA_OBJECT bits (TPM 2.0 Library Part 2, 8.3.2). */
#define HSM_TPMA_FIXED_TPM (1U << 1)
#define HSM_TPMA_FIXED_PARENT (1U << 4)
#define HSM_TPMA_SENSITIVE_DATA_ORIGIN (1U << 5)
#define HSM_TPMA_USER_WITH_AUTH (1U << 6)
#define HSM_TPMA_RESTRICTED (1U << 16)
#define HSM_TPMA_DECRYPT (1U << 17)
#define HSM_TPMA_SIGN (1U << 18)

/*
 * A loaded module. Shared by every hsm_module_load of the same path in a
 * process (refcounted), because Cryptoki state is per process: two
 * independent C_Initialize/C_Finalize owners would finalise each other.
 *
 * Re-initialisation (C_Finalize + C_Initialize) invalidates every handle of
 * every key, so every Cryptoki call that uses handles runs under
 * lock (read); hsm_module_reinit takes it for writing and bumps generation.
 * Keys compare their recorded generation with the module's to learn that
 * their slot, sessions, login and object handles are gone.
 */
struct hsm_module {
    char *path;
    void *dl;
    CK_FUNCTION_LIST *fl;
    bool owns_init; /* we initialised it, so we finalise it */
    unsigned refs;
    pthread_rwlock_t lock;
    uint64_t generation; /* read under lock (any mode) */
    char description[33];
    uint64_t login_calls; /* C_Login calls, for tests (atomic) */
    uint64_t reinits;     /* successful re-initialisations (atomic) */
    struct hsm_module *next;

    /*
     * TPM tokens (tpm2-pkcs11): the chip does one command at a time and
     * concurrent callers only add tail latency (research/pkcs11.md pitfall
     * 14), so operations on a TPM token pass one at a time through this
     * gate, waiting at most tpm_wait_ms, in arrival order.
     */
    bool tpm2_pkcs11; /* the module is tpm2-pkcs11 (C_GetInfo) */
    char manufacturer[33];
    pthread_mutex_t tpm_mu; /* the gate's fields below */
    pthread_cond_t tpm_cv;  /* CLOCK_MONOTONIC */
    bool tpm_busy;
    struct hsm_tpm_waiter *tpm_head, *tpm_tail; /* FIFO of waiting callers */
    unsigned tpm_wait_ms;
    uint64_t tpm_timeouts; /* callers that gave up waiting */
    pid_t pid;             /* the process that initialised the module */
};

/* A caller waiting at the TPM gate (on its own stack). */
struct hsm_tpm_waiter {
    struct hsm_tpm_waiter *next;
    bool granted;
};

/* What a pkcs11: URI asks for, parsed by libp11-kit. */
struct hsm_uri {
    P11KitUri *p11;
    char *token_label; /* for messages: token= or serial=, or NULL */
    char *label;       /* object=, NUL-terminated copy, or NULL */
    size_t label_len;
    uint8_t id[HSM_ID_MAX];
    size_t id_len;
    bool has_id;
    CK_OBJECT_CLASS cls;
    bool has_class;
    char *pin_source; /* pin-source=, or NULL */
};

/*
 * Parse a pkcs11: URI into match criteria. Refuses a pin-value (PINs never
 * go in URIs), unknown attributes, over-long labels and ids. Errors name
 * the problem, never the URI (it may hold secrets).
 */
PJ_MUST_USE pj_rc hsm_uri_parse(const char *uri, struct hsm_uri *u,
                                struct pj_err *err);
void hsm_uri_cleanup(struct hsm_uri *u);
/* A short human name for what the URI's token attributes ask for. */
const char *hsm_uri_token_name(const struct hsm_uri *u);

/*
 * Turn a PIN source as written in a URI (RFC 7512: a file: URI or a plain
 * path) or on the command line into hsm_pin_read's form. *outp is new.
 */
PJ_MUST_USE pj_rc hsm_pin_source_normalize(const char *src, char **outp,
                                           struct pj_err *err);

/* CKR classes for recovery (research/pkcs11.md 8.1). */
enum hsm_ckr_class {
    HSM_CKR_OK,
    HSM_CKR_SESSION, /* session gone: open a new one */
    HSM_CKR_LOGIN,   /* login lost: log in again */
    HSM_CKR_HANDLE,  /* object handle stale: find the key again */
    HSM_CKR_DEVICE,  /* module/device trouble: C_Finalize + C_Initialize */
    HSM_CKR_PIN,     /* PIN rejected: never retried */
    HSM_CKR_FATAL,   /* anything else: report */
};
enum hsm_ckr_class hsm_ckr_classify(CK_RV rv);

/* Cryptoki trims nothing: fixed-width, space-padded fields. */
void hsm_fixed_str(const CK_UTF8CHAR *in, size_t n, char *out, size_t outsz);
/* Copy len bytes into out as printable text (escaping others). */
void hsm_printable(const void *in, size_t len, char *out, size_t outsz);

/* Module: C_Finalize + C_Initialize unless generation moved on already. */
PJ_MUST_USE pj_rc hsm_module_reinit(struct hsm_module *mod,
                                    uint64_t seen_generation,
                                    struct pj_err *err);

/*
 * Find the one initialised token matching u among C_GetSlotList(CK_TRUE).
 * Call with mod->lock held. On a Cryptoki failure returns PJ_ERR_TOKEN
 * with err->ckr set.
 */
PJ_MUST_USE pj_rc hsm_token_find(struct hsm_module *mod,
                                 const struct hsm_uri *u, CK_SLOT_ID *slotp,
                                 CK_TOKEN_INFO *tinfo, struct pj_err *err);

/* Log in on a session with the PIN from source; PIN wiped at once. */
PJ_MUST_USE pj_rc hsm_login(struct hsm_module *mod, CK_SESSION_HANDLE s,
                            const char *token_name, const char *pin_source,
                            struct pj_err *err);

/*
 * Find exactly one object of class cls matching u's label/id. Not found
 * and ambiguous errors list what is present. what is "private key" etc.
 */
PJ_MUST_USE pj_rc hsm_object_find(struct hsm_module *mod, CK_SESSION_HANDLE s,
                                  const struct hsm_uri *u, CK_OBJECT_CLASS cls,
                                  const char *token_name,
                                  CK_OBJECT_HANDLE *objp, struct pj_err *err);

/* Read one variable-length attribute; *valp is new (NULL when empty). */
CK_RV hsm_attr_get(struct hsm_module *mod, CK_SESSION_HANDLE s,
                   CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type, uint8_t **valp,
                   size_t *lenp);

/* Fill info for a private key object (attributes, token, module). */
PJ_MUST_USE pj_rc hsm_info_fill(struct hsm_module *mod, CK_SESSION_HANDLE s,
                                CK_SLOT_ID slot, const CK_TOKEN_INFO *tinfo,
                                CK_OBJECT_HANDLE priv,
                                struct hsm_key_info *info, struct pj_err *err);

/*
 * Is this token a TPM behind tpm2-pkcs11? The module says so in C_GetInfo
 * (manufacturer "tpm2-software.github.io", library "TPM2.0 Cryptoki"); behind
 * a proxy (p11-kit-client) only the token shows it: model "SW   TPM" on
 * swtpm, or a model/manufacturer naming a TPM.
 */
bool hsm_token_is_tpm(const struct hsm_module *mod, const CK_TOKEN_INFO *ti);

/*
 * The TPM gate (see struct hsm_module): enter waits in arrival order for at
 * most mod->tpm_wait_ms, else PJ_ERR_TIMEOUT "TPM busy"; leave lets the
 * next caller in.
 */
PJ_MUST_USE pj_rc hsm_tpm_enter(struct hsm_module *mod, const char *token_name,
                                struct pj_err *err);
void hsm_tpm_leave(struct hsm_module *mod);

/*
 * Parse a TPM2B_PUBLIC (as tpm2-pkcs11 stores it) far enough to return its
 * TPMA_OBJECT bits and, for an RSA key, its modulus (borrowed, inside buf).
 * False if buf is not a well-formed RSA TPM2B_PUBLIC.
 */
bool hsm_tpm2b_public_parse(const uint8_t *buf, size_t len, uint32_t *attrsp,
                            const uint8_t **modp, size_t *modlenp);

/* Does the slot's token offer mech? */
bool hsm_slot_has_mech(struct hsm_module *mod, CK_SLOT_ID slot,
                       CK_MECHANISM_TYPE mech);

/* SHA-256 DigestInfo prefix (RFC 8017 9.2 note 1). */
extern const uint8_t hsm_sha256_digestinfo[19];

/* One session of a key's pool. */
struct hsm_sess {
    CK_SESSION_HANDLE h;
    uint64_t gen; /* module generation the handle belongs to */
    bool open;
    bool busy;
    bool replace; /* open a fresh one, then close h */
};

struct hsm_key {
    struct hsm_module *mod;
    struct hsm_uri uri;
    char *pin_source; /* normalised source, never the PIN; may be NULL */
    char token_name[80];

    pthread_mutex_t mu; /* everything below */
    pthread_cond_t cv;
    struct hsm_sess *sess;
    unsigned nsess;

    uint64_t gen; /* module generation of slot/login/priv */
    bool slot_ok;
    CK_SLOT_ID slot;
    CK_TOKEN_INFO tinfo;
    bool logged_in;
    bool check_login; /* ask C_GetSessionInfo before trusting logged_in */
    bool priv_ok;
    CK_OBJECT_HANDLE priv;
    bool have_sha256;    /* token offers CKM_SHA256_RSA_PKCS */
    bool force_fallback; /* test hook */
    bool tpm;            /* the token is a TPM: operations use the gate */

    pj_rc pin_failed; /* PJ_ERR_PIN/PIN_LOCKED once the PIN was rejected */
    char pin_msg[PJ_ERR_MSG_MAX];

    struct hsm_stats stats;
};

/* What an operation gets: a ready session, the key handle, the mechanism. */
struct hsm_ready {
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE priv;
    CK_SLOT_ID slot;
    bool sha256; /* use CKM_SHA256_RSA_PKCS */
};

/*
 * Run op on a ready session of key (slot found, logged in, key found),
 * recovering per CKR class: at most HSM_REINIT_ATTEMPTS module
 * re-initialisations with backoff. op reports a Cryptoki failure with
 * hsm_err_ckr (PJ_ERR_TOKEN + err->ckr), which is what recovery looks at;
 * other codes end the call as they are.
 */
typedef pj_rc (*hsm_key_op_fn)(struct hsm_key *key, const struct hsm_ready *r,
                               void *arg, struct pj_err *err);
PJ_MUST_USE pj_rc hsm_key_run(struct hsm_key *key, hsm_key_op_fn op, void *arg,
                              struct pj_err *err);

/* "<what> failed: CKR_..." as PJ_ERR_TOKEN with err->ckr = rv. */
pj_rc hsm_err_ckr(struct pj_err *err, CK_RV rv, const char *what);

/* Take another reference on a loaded module (keys hold one). */
void hsm_module_ref(struct hsm_module *mod);

/* Test hooks. */
void hsm_key_test_force_fallback(struct hsm_key *key, bool on);
void hsm_module_test_tpm_wait(struct hsm_module *mod, unsigned ms);
uint64_t hsm_module_test_login_calls(struct hsm_module *mod);
CK_FUNCTION_LIST *hsm_module_functions(struct hsm_module *mod);

#endif
