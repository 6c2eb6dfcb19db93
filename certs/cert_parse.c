/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Certificate files and objects: PEM/DER detection, the refusals a person
 * needs to read (private keys, CSRs, truncation), and the computed fields
 * (names, serial, times, fingerprints, key) behind the cert.h accessors.
 */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "certs/cert_int.h"
#include "core/pj_util.h"

static const char private_key_msg[] =
    "%s holds a private key, not a certificate; never copy private keys "
    "around (the key stays on the token; give the certificate file)";

char *
cert_memdup(const char *p, size_t n)
{
    char *out = malloc(n + 1);

    if (out != NULL) {
        if (n > 0) {
            memcpy(out, p, n);
        }
        out[n] = '\0';
    }
    return out;
}

void
cert_fp_format(const uint8_t *md, size_t len, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i;

    for (i = 0; i < len; i++) {
        out[3 * i] = hex[md[i] >> 4];
        out[3 * i + 1] = hex[md[i] & 0x0f];
        out[3 * i + 2] = (i + 1 == len) ? '\0' : ':';
    }
    if (len == 0) {
        out[0] = '\0';
    }
}

static pj_rc
digest_fp(const EVP_MD *md, const uint8_t *data, size_t len,
          char out[CERT_FP_MAX], struct pj_err *err)
{
    uint8_t buf[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    if (EVP_Digest(data, len, buf, &n, md, NULL) != 1 || n > 32) {
        return pj_err_crypto(err, "computing a fingerprint failed");
    }
    cert_fp_format(buf, n, out);
    return PJ_OK;
}

pj_rc
cert_pkey_fp(EVP_PKEY *pkey, char out[CERT_FP_MAX], struct pj_err *err)
{
    unsigned char *der = NULL;
    int n;
    pj_rc rc;

    n = i2d_PUBKEY(pkey, &der);
    if (n <= 0) {
        return pj_err_crypto(err, "encoding a public key failed");
    }
    rc = digest_fp(EVP_sha256(), der, (size_t)n, out, err);
    OPENSSL_free(der);
    return rc;
}

void
cert_time_iso(int64_t t, char out[21])
{
    struct tm tm;
    time_t tt = (time_t)t;

    if (gmtime_r(&tt, &tm) == NULL ||
        strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        snprintf(out, 21, "%lld", (long long)t);
    }
}

static pj_rc
asn1_time_unix(const ASN1_TIME *t, const char *what, const char *name,
               int64_t *outp, struct pj_err *err)
{
    struct tm tm;

    memset(&tm, 0, sizeof(tm));
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "%s: the certificate's %s is not a valid time", name,
                          what);
    }
    *outp = (int64_t)timegm(&tm);
    return PJ_OK;
}

static pj_rc
name_string(const X509_NAME *nm, char **outp, struct pj_err *err)
{
    /* "CN=a, O=b" in certificate order; UTF-8 kept as UTF-8. */
    const unsigned long flags =
        XN_FLAG_SEP_CPLUS_SPC | XN_FLAG_FN_SN | XN_FLAG_DUMP_UNKNOWN_FIELDS |
        (ASN1_STRFLGS_RFC2253 & ~(unsigned long)ASN1_STRFLGS_ESC_MSB);
    BIO *bio = BIO_new(BIO_s_mem());
    char *p = NULL;
    long n;

    if (bio == NULL || X509_NAME_print_ex(bio, nm, 0, flags) < 0) {
        BIO_free(bio);
        return pj_err_crypto(err, "formatting a certificate name failed");
    }
    n = BIO_get_mem_data(bio, &p);
    *outp = cert_memdup(n > 0 ? p : "", n > 0 ? (size_t)n : 0);
    BIO_free(bio);
    if (*outp == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
    }
    return PJ_OK;
}

static pj_rc
make_pem(struct cert *c, struct pj_err *err)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *p = NULL;
    long n;

    /* Armour the DER we were given, byte for byte. */
    if (bio == NULL ||
        PEM_write_bio(bio, "CERTIFICATE", "", c->der, (long)c->der_len) <= 0) {
        BIO_free(bio);
        return pj_err_crypto(err, "%s: writing PEM failed", c->source);
    }
    n = BIO_get_mem_data(bio, &p);
    c->pem = cert_memdup(p, (size_t)n);
    c->pem_len = (size_t)n;
    BIO_free(bio);
    if (c->pem == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
    }
    return PJ_OK;
}

static const char *
key_type_name(const EVP_PKEY *pk)
{
    switch (EVP_PKEY_get_base_id(pk)) {
    case EVP_PKEY_RSA:
        return "RSA";
    case EVP_PKEY_RSA_PSS:
        return "RSA-PSS";
    case EVP_PKEY_EC:
        return "EC";
    case EVP_PKEY_ED25519:
        return "Ed25519";
    case EVP_PKEY_ED448:
        return "Ed448";
    case EVP_PKEY_DSA:
        return "DSA";
    default:
        return "unknown";
    }
}

static pj_rc
fill_fields(struct cert *c, struct pj_err *err)
{
    X509 *x = c->x509;
    const ASN1_INTEGER *sn = X509_get0_serialNumber(x);
    BIGNUM *bn = NULL;
    char *hex = NULL;
    EVP_PKEY *pk;
    pj_rc rc;

    if ((rc = name_string(X509_get_subject_name(x), &c->subject, err)) !=
            PJ_OK ||
        (rc = name_string(X509_get_issuer_name(x), &c->issuer, err)) != PJ_OK) {
        return rc;
    }
    c->self_issued =
        X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)) == 0;
    if (sn == NULL || (bn = ASN1_INTEGER_to_BN(sn, NULL)) == NULL ||
        (hex = BN_bn2hex(bn)) == NULL) {
        BN_free(bn);
        return pj_err_crypto(err, "%s: the serial number is not readable",
                             c->source);
    }
    c->serial = strdup(hex);
    OPENSSL_free(hex);
    BN_free(bn);
    if (c->serial == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
    }
    if ((rc = asn1_time_unix(X509_get0_notBefore(x), "notBefore", c->source,
                             &c->not_before, err)) != PJ_OK ||
        (rc = asn1_time_unix(X509_get0_notAfter(x), "notAfter", c->source,
                             &c->not_after, err)) != PJ_OK) {
        return rc;
    }
    if ((rc = digest_fp(EVP_sha1(), c->der, c->der_len, c->sha1, err)) !=
            PJ_OK ||
        (rc = digest_fp(EVP_sha256(), c->der, c->der_len, c->sha256, err)) !=
            PJ_OK) {
        return rc;
    }
    pk = X509_get0_pubkey(x);
    if (pk == NULL) {
        /* An algorithm OpenSSL does not know: still show the rest. */
        ERR_clear_error();
        c->key_type = "unknown";
        c->key_bits = 0;
        pj_strlcpy(c->spki_sha256, "unknown", sizeof(c->spki_sha256));
        return PJ_OK;
    }
    c->key_type = key_type_name(pk);
    c->key_bits = (unsigned)EVP_PKEY_get_bits(pk);
    return cert_pkey_fp(pk, c->spki_sha256, err);
}

pj_rc
cert_from_der(const uint8_t *der, size_t len, const char *name,
              enum cert_format format, struct cert **certp, struct pj_err *err)
{
    struct cert *c = NULL;
    const unsigned char *p;
    pj_rc rc;

    *certp = NULL;
    if (len == 0 || len > CERT_FILE_MAX) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "%s: a certificate of %zu bytes is not plausible",
                          name, len);
    }
    if ((c = calloc(1, sizeof(*c))) == NULL ||
        (c->source = strdup(name)) == NULL || (c->der = malloc(len)) == NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
        goto out;
    }
    memcpy(c->der, der, len);
    c->der_len = len;
    c->format = format;
    p = c->der;
    c->x509 = d2i_X509(NULL, &p, (long)len);
    if (c->x509 == NULL) {
        rc = pj_err_crypto(err, "%s: not a valid X.509 certificate", name);
        goto out;
    }
    if (p != c->der + len) {
        rc = pj_err_set(err, PJ_ERR_INVALID,
                        "%s: %zu unexpected bytes after the certificate", name,
                        (size_t)(c->der + len - p));
        goto out;
    }
    if ((rc = make_pem(c, err)) != PJ_OK ||
        (rc = fill_fields(c, err)) != PJ_OK) {
        goto out;
    }
    *certp = c;
    c = NULL;
    rc = PJ_OK;
out:
    cert_free(c);
    return rc;
}

static bool
has_private_key_der(const uint8_t *data, size_t len)
{
    const unsigned char *p = data;
    EVP_PKEY *pk;
    X509_SIG *enc;

    pk = d2i_AutoPrivateKey(NULL, &p, (long)len);
    if (pk != NULL) {
        EVP_PKEY_free(pk);
        return true;
    }
    p = data;
    enc = d2i_X509_SIG(NULL, &p, (long)len); /* encrypted PKCS#8 */
    if (enc != NULL) {
        X509_SIG_free(enc);
        return true;
    }
    ERR_clear_error();
    return false;
}

static pj_rc
parse_der(const uint8_t *data, size_t len, const char *name,
          struct cert **certp, struct pj_err *err)
{
    const unsigned char *p = data;
    long olen = 0;
    int tag = 0, cls = 0, ret;
    size_t hdr, total;
    X509_REQ *req;

    if (data[0] != 0x30) {
        /* Never echo the bytes: the file may be a PIN or a key. */
        return pj_err_set(err, PJ_ERR_INVALID,
                          "%s is not a certificate: neither PEM (no "
                          "'-----BEGIN' line) nor DER (no ASN.1 SEQUENCE "
                          "at the start)",
                          name);
    }
    ret = ASN1_get_object(&p, &olen, &tag, &cls, (long)len);
    ERR_clear_error();
    hdr = (size_t)(p - data);
    if ((ret & 0x80) && hdr == 0) {
        return pj_err_set(
            err, PJ_ERR_INVALID,
            "%s: truncated DER: its ASN.1 header is incomplete or damaged",
            name);
    }
    if (ret == 0x21) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "%s: indefinite-length BER, not DER; not a "
                          "certificate file",
                          name);
    }
    total = hdr + (size_t)olen;
    if (total > len) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "%s: truncated DER: it says %zu bytes but has %zu",
                          name, total, len);
    }
    if (total < len) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "%s: %zu unexpected bytes after the DER data", name,
                          len - total);
    }
    if (has_private_key_der(data, len)) {
        return pj_err_set(err, PJ_ERR_DENIED, private_key_msg, name);
    }
    p = data;
    req = d2i_X509_REQ(NULL, &p, (long)len);
    if (req != NULL) {
        X509_REQ_free(req);
        return pj_err_set(err, PJ_ERR_INVALID,
                          "%s holds a certificate signing request (CSR), not "
                          "a certificate; have the CA sign it and give the "
                          "certificate it returns",
                          name);
    }
    ERR_clear_error();
    return cert_from_der(data, len, name, CERT_FORMAT_DER, certp, err);
}

static bool
is_cert_label(const char *label)
{
    return strcmp(label, PEM_STRING_X509) == 0 ||
           strcmp(label, PEM_STRING_X509_OLD) == 0;
}

static pj_rc
parse_pem(const uint8_t *data, size_t len, const char *name,
          struct cert **certp, struct pj_err *err)
{
    BIO *bio = NULL;
    char *label = NULL, *header = NULL;
    unsigned char *body = NULL;
    long blen = 0;
    char first[64] = "";
    int blocks = 0;
    pj_rc rc;

    /*
     * Any private key in the file is refused, even beside a certificate:
     * a file that carries one should not exist, let alone be imported.
     */
    if (memmem(data, len, "PRIVATE KEY-----", 16) != NULL) {
        return pj_err_set(err, PJ_ERR_DENIED, private_key_msg, name);
    }
    if ((bio = BIO_new_mem_buf(data, (int)len)) == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
    }
    for (;;) {
        ERR_clear_error();
        if (PEM_read_bio(bio, &label, &header, &body, &blen) != 1) {
            unsigned long e = ERR_peek_last_error();
            if (blocks > 0 && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
                ERR_clear_error();
                if (strcmp(first, PEM_STRING_X509_REQ) == 0 ||
                    strcmp(first, PEM_STRING_X509_REQ_OLD) == 0) {
                    rc = pj_err_set(err, PJ_ERR_INVALID,
                                    "%s holds a certificate signing request "
                                    "(CSR), not a certificate; have the CA "
                                    "sign it and give the certificate it "
                                    "returns",
                                    name);
                } else {
                    rc = pj_err_set(err, PJ_ERR_INVALID,
                                    "%s holds no certificate (its first PEM "
                                    "block is '%s')",
                                    name, first);
                }
            } else {
                rc = pj_err_crypto(err,
                                   "%s: damaged or truncated PEM (a "
                                   "'-----BEGIN' line without a complete, "
                                   "valid block)",
                                   name);
            }
            goto out;
        }
        if (blocks++ == 0) {
            pj_strlcpy(first, label, sizeof(first));
        }
        if (is_cert_label(label)) {
            if (blen <= 0) {
                rc = pj_err_set(err, PJ_ERR_INVALID,
                                "%s: the CERTIFICATE block is empty", name);
                goto out;
            }
            rc = cert_from_der(body, (size_t)blen, name, CERT_FORMAT_PEM, certp,
                               err);
            goto out;
        }
        OPENSSL_free(label);
        OPENSSL_free(header);
        OPENSSL_free(body);
        label = header = NULL;
        body = NULL;
    }
out:
    OPENSSL_free(label);
    OPENSSL_free(header);
    OPENSSL_free(body);
    BIO_free(bio);
    return rc;
}

pj_rc
cert_parse(const uint8_t *data, size_t len, const char *name,
           struct cert **certp, struct pj_err *err)
{
    *certp = NULL;
    if (name == NULL) {
        name = "certificate";
    }
    if (data == NULL || len == 0) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "%s is empty: no certificate in it", name);
    }
    if (len > CERT_FILE_MAX) {
        return pj_err_set(err, PJ_ERR_LIMIT,
                          "%s is %zu bytes: too large to be a certificate "
                          "(limit %d)",
                          name, len, CERT_FILE_MAX);
    }
    if (memmem(data, len, "-----BEGIN ", 11) != NULL) {
        return parse_pem(data, len, name, certp, err);
    }
    return parse_der(data, len, name, certp, err);
}

void
cert_free(struct cert *cert)
{
    if (cert == NULL) {
        return;
    }
    X509_free(cert->x509);
    free(cert->source);
    free(cert->der);
    free(cert->pem);
    free(cert->subject);
    free(cert->issuer);
    free(cert->serial);
    free(cert);
}

X509 *
cert_get0_x509(const struct cert *cert)
{
    return cert->x509;
}

const char *
cert_source(const struct cert *cert)
{
    return cert->source;
}

enum cert_format
cert_source_format(const struct cert *cert)
{
    return cert->format;
}

const char *
cert_format_name(enum cert_format format)
{
    switch (format) {
    case CERT_FORMAT_PEM:
        return "PEM";
    case CERT_FORMAT_DER:
        return "DER";
    case CERT_FORMAT_TOKEN:
        return "token";
    }
    return "unknown";
}

const uint8_t *
cert_der(const struct cert *cert, size_t *lenp)
{
    *lenp = cert->der_len;
    return cert->der;
}

const char *
cert_pem(const struct cert *cert, size_t *lenp)
{
    if (lenp != NULL) {
        *lenp = cert->pem_len;
    }
    return cert->pem;
}

const char *
cert_subject(const struct cert *cert)
{
    return cert->subject;
}

const char *
cert_issuer(const struct cert *cert)
{
    return cert->issuer;
}

bool
cert_self_issued(const struct cert *cert)
{
    return cert->self_issued;
}

const char *
cert_serial_hex(const struct cert *cert)
{
    return cert->serial;
}

int64_t
cert_not_before(const struct cert *cert)
{
    return cert->not_before;
}

int64_t
cert_not_after(const struct cert *cert)
{
    return cert->not_after;
}

const char *
cert_sha1_fp(const struct cert *cert)
{
    return cert->sha1;
}

const char *
cert_sha256_fp(const struct cert *cert)
{
    return cert->sha256;
}

const char *
cert_spki_sha256_fp(const struct cert *cert)
{
    return cert->spki_sha256;
}

const char *
cert_key_type(const struct cert *cert)
{
    return cert->key_type;
}

unsigned
cert_key_bits(const struct cert *cert)
{
    return cert->key_bits;
}

pj_rc
cert_matches_spki(const struct cert *cert, const uint8_t *spki, size_t len,
                  bool *matchp, char spki_fp[96], struct pj_err *err)
{
    const unsigned char *p = spki;
    EVP_PKEY *other = NULL, *mine;
    pj_rc rc;

    *matchp = false;
    other = d2i_PUBKEY(NULL, &p, (long)len);
    if (other == NULL) {
        return pj_err_crypto(err, "the token's public key is not a valid "
                                  "SubjectPublicKeyInfo");
    }
    if (spki_fp != NULL && (rc = cert_pkey_fp(other, spki_fp, err)) != PJ_OK) {
        goto out;
    }
    mine = X509_get0_pubkey(cert->x509);
    *matchp = mine != NULL && EVP_PKEY_eq(mine, other) == 1;
    ERR_clear_error();
    rc = PJ_OK;
out:
    EVP_PKEY_free(other);
    return rc;
}

pj_rc
cert_check_usable(const struct cert *cert, int64_t now, bool allow_future,
                  struct pj_err *err)
{
    char when[21];

    if (now > cert->not_after) {
        cert_time_iso(cert->not_after, when);
        return pj_err_set(err, PJ_ERR_INVALID,
                          "%s expired on %s; Salesforce will refuse it: "
                          "make a new certificate",
                          cert->source, when);
    }
    if (now < cert->not_before && !allow_future) {
        cert_time_iso(cert->not_before, when);
        return pj_err_set(err, PJ_ERR_INVALID,
                          "%s is not valid before %s (check this host's "
                          "clock; --force accepts it anyway)",
                          cert->source, when);
    }
    if (cert->der_len > CERT_SF_MAX_BYTES) {
        return pj_err_set(err, PJ_ERR_LIMIT,
                          "%s is %zu bytes in DER, over Salesforce's limit of "
                          "%d bytes: use a shorter subject or fewer extensions",
                          cert->source, cert->der_len, CERT_SF_MAX_BYTES);
    }
    return PJ_OK;
}
