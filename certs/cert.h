/* SPDX-License-Identifier: Apache-2.0 */
/*
 * X.509 for p11jwt: certificates and CSRs signed by the key on the token,
 * a parser for certificate files (PEM or DER) and token objects, key/cert
 * matching, fingerprints and the expiry state the monitor and `p11jwt
 * check` report.
 *
 * No OpenSSL types appear here: a parsed certificate is the opaque struct
 * cert, read through accessors, so the agent can include this header
 * without OpenSSL's. Strings returned by accessors are borrowed and live as
 * long as the struct cert.
 */
#ifndef CERT_H
#define CERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/pj_err.h"

struct hsm_key;
struct cert;

/*
 * Salesforce: "The certificate size can't exceed 4 KB. If it does, try
 * using a DER-encoded file" (research/salesforce.md 1.12). DER is the
 * smallest encoding, so a certificate whose DER is over this cannot be used
 * at all; the PEM size is reported beside it.
 */
#define CERT_SF_MAX_BYTES 4096
/* Largest certificate file we read; anything bigger is not a certificate. */
#define CERT_FILE_MAX (256 * 1024)
/* Longest --subject accepted. */
#define CERT_SUBJECT_MAX 1024
/* Validity limits for certificates we make. */
#define CERT_DAYS_DEFAULT 365
#define CERT_DAYS_MAX 825        /* without force */
#define CERT_DAYS_MAX_FORCE 9999 /* with force */
/* Default thresholds when no config says otherwise (DESIGN.md 3.1). */
#define CERT_WARN_DAYS_DEFAULT 30
#define CERT_CRITICAL_DAYS_DEFAULT 7

enum cert_format {
    CERT_FORMAT_PEM,
    CERT_FORMAT_DER,
    CERT_FORMAT_TOKEN, /* read from a PKCS#11 certificate object */
};

/*
 * Parse a certificate from bytes (PEM or DER, detected). name says where
 * the bytes came from ("cert.pem", a URI) and starts every error message.
 * Refused: empty input, garbage, truncated PEM or DER, trailing bytes after
 * DER, a private key ("never copy private keys around"), a CSR or public
 * key where a certificate was expected. Expiry and size are NOT refused
 * here: callers decide (see cert_check_usable).
 */
PJ_MUST_USE pj_rc cert_parse(const uint8_t *data, size_t len, const char *name,
                             struct cert **certp, struct pj_err *err);

/*
 * Load a certificate from a file path or a pkcs11: URI (type=cert). module
 * and pin_source are used only for URIs (module NULL: the default from
 * hsm_module_path_resolve; pin_source NULL: no login, certificates are
 * public).
 */
PJ_MUST_USE pj_rc cert_load(const char *path_or_uri, const char *module,
                            const char *pin_source, struct cert **certp,
                            struct pj_err *err);

/* The certificate stored beside the key on the token (same CKA_ID). */
PJ_MUST_USE pj_rc cert_load_key(struct hsm_key *key, const char *name,
                                struct cert **certp, struct pj_err *err);

/*
 * The private-key URI that belongs with a certificate URI: the same token
 * and object attributes with type=private. *key_urip is new (free()).
 */
PJ_MUST_USE pj_rc cert_key_uri_for(const char *cert_uri, char **key_urip,
                                   struct pj_err *err);

/*
 * The opposite: the certificate URI beside a key URI (type=cert), without
 * any PIN attribute (certificates are public). *cert_urip is new (free()).
 */
PJ_MUST_USE pj_rc cert_uri_for_key(const char *key_uri, char **cert_urip,
                                   struct pj_err *err);

void cert_free(struct cert *cert);

/* Accessors. */
const char *cert_source(const struct cert *cert); /* the name given */
enum cert_format cert_source_format(const struct cert *cert);
const char *cert_format_name(enum cert_format format); /* "PEM" ... */
const uint8_t *cert_der(const struct cert *cert, size_t *lenp);
/* PEM text, NUL-terminated; *lenp (may be NULL) gets its length. */
const char *cert_pem(const struct cert *cert, size_t *lenp);
const char *cert_subject(const struct cert *cert); /* "CN=a, O=b" */
const char *cert_issuer(const struct cert *cert);
bool cert_self_issued(const struct cert *cert);       /* subject == issuer */
const char *cert_serial_hex(const struct cert *cert); /* upper case */
int64_t cert_not_before(const struct cert *cert);     /* unix seconds */
int64_t cert_not_after(const struct cert *cert);
/* Fingerprints of the DER certificate, "AB:CD:..." like openssl. */
const char *cert_sha1_fp(const struct cert *cert);
const char *cert_sha256_fp(const struct cert *cert);
/* SHA-256 of the SubjectPublicKeyInfo, "AB:CD:...". */
const char *cert_spki_sha256_fp(const struct cert *cert);
const char *cert_key_type(const struct cert *cert); /* "RSA", "EC", ... */
unsigned cert_key_bits(const struct cert *cert);

/* Format unix seconds as "2026-01-31T12:00:00Z" into out (21 bytes). */
void cert_time_iso(int64_t t, char out[21]);

/*
 * Compare the certificate's public key with a DER SubjectPublicKeyInfo
 * (as hsm_key_public_der returns). *spki_fp (may be NULL) receives the
 * SHA-256 fingerprint of the other key, for messages.
 */
PJ_MUST_USE pj_rc cert_matches_spki(const struct cert *cert,
                                    const uint8_t *spki, size_t len,
                                    bool *matchp, char spki_fp[96],
                                    struct pj_err *err);
/* Same against the key on the token. */
PJ_MUST_USE pj_rc cert_matches_key(const struct cert *cert, struct hsm_key *key,
                                   bool *matchp, char key_fp[96],
                                   struct pj_err *err);

/*
 * Expiry state. Checked in this order: mismatch (the certificate is not
 * the key's), not_yet_valid (now < notBefore), expired (now > notAfter;
 * notAfter itself is still valid, RFC 5280 4.1.2.5), critical (less than
 * critical_days * 86400 seconds left), warning (less than warn_days *
 * 86400 seconds left), ok.
 */
enum cert_state {
    CERT_STATE_OK,
    CERT_STATE_WARNING,
    CERT_STATE_CRITICAL,
    CERT_STATE_EXPIRED,
    CERT_STATE_NOT_YET_VALID,
    CERT_STATE_MISMATCH,
};

/* "ok", "warning", "critical", "expired", "not_yet_valid", "mismatch". */
const char *cert_state_name(enum cert_state state);

/*
 * The state from validity times; *days_left (may be NULL) gets the whole
 * days until notAfter, rounded down (negative once expired).
 */
enum cert_state cert_expiry_state_at(int64_t not_before, int64_t not_after,
                                     int64_t now, long warn_days,
                                     long critical_days, bool key_matches,
                                     int64_t *days_left);
enum cert_state cert_expiry_state(const struct cert *cert, int64_t now,
                                  long warn_days, long critical_days,
                                  bool key_matches, int64_t *days_left);

/*
 * Refuse a certificate that cannot serve Salesforce now: expired,
 * not yet valid (unless allow_future), or DER over CERT_SF_MAX_BYTES.
 * Messages name the certificate's source.
 */
PJ_MUST_USE pj_rc cert_check_usable(const struct cert *cert, int64_t now,
                                    bool allow_future, struct pj_err *err);

/*
 * Validate a subject ("CN=a,O=b" or "/CN=a/O=b"; "\," and "\/" escape)
 * without building anything: unknown attribute names are named in the
 * error.
 */
PJ_MUST_USE pj_rc cert_subject_check(const char *subject, struct pj_err *err);

/* Validate --days: 1..CERT_DAYS_MAX, or ..CERT_DAYS_MAX_FORCE with force. */
PJ_MUST_USE pj_rc cert_days_check(long days, bool force, struct pj_err *err);

struct cert_build_opts {
    const char *subject; /* "CN=..,O=.." or "/CN=../O=.." */
    long days;           /* 0 means CERT_DAYS_DEFAULT */
    bool force;          /* allow days up to CERT_DAYS_MAX_FORCE */
    int64_t now;         /* notBefore; 0 means the current time */
};

/*
 * A self-signed X.509 v3 certificate for the key on the token: SHA-256
 * with RSA, random positive 128-bit serial, basicConstraints CA:FALSE and
 * keyUsage digitalSignature (both critical), subject key identifier. The
 * signature is checked against the token's public key before returning.
 */
PJ_MUST_USE pj_rc cert_self_signed(struct hsm_key *key,
                                   const struct cert_build_opts *opts,
                                   struct cert **certp, struct pj_err *err);

/* A PKCS#10 request signed by the key on the token; *pemp is new PEM. */
PJ_MUST_USE pj_rc cert_csr(struct hsm_key *key, const char *subject,
                           char **pemp, size_t *lenp, struct pj_err *err);

#endif
