/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: the certificate file parser (PEM/DER detection,
 * private-key and CSR refusal, computed fields). Whatever the bytes, it
 * must return an error or a certificate whose accessors all work.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "certs/cert.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pj_err err = {0};
    struct cert *c = NULL;
    const uint8_t *der;
    size_t der_len = 0, pem_len = 0;
    volatile size_t sink = 0;
    int64_t days = 0;

    if (cert_parse(data, size, "fuzz", &c, &err) != PJ_OK) {
        if (c != NULL || err.msg[0] == '\0') {
            abort(); /* a failure must say why and return nothing */
        }
        return 0;
    }
    der = cert_der(c, &der_len);
    sink += der_len + (der != NULL);
    sink += strlen(cert_pem(c, &pem_len)) + pem_len;
    sink += strlen(cert_subject(c)) + strlen(cert_issuer(c));
    sink += strlen(cert_serial_hex(c)) + strlen(cert_sha1_fp(c));
    sink += strlen(cert_sha256_fp(c)) + strlen(cert_spki_sha256_fp(c));
    sink += strlen(cert_key_type(c)) + cert_key_bits(c);
    sink += (size_t)cert_expiry_state(c, 1795880347, 30, 7, true, &days);
    pj_err_clear(&err);
    if (cert_check_usable(c, 1795880347, false, &err) != PJ_OK) {
        sink++;
    }
    /* Our own DER must parse back to the same certificate. */
    {
        struct cert *again = NULL;
        struct pj_err e2 = {0};
        if (cert_parse(der, der_len, "again", &again, &e2) != PJ_OK ||
            strcmp(cert_sha256_fp(again), cert_sha256_fp(c)) != 0) {
            abort();
        }
        cert_free(again);
    }
    (void)sink;
    cert_free(c);
    return 0;
}
