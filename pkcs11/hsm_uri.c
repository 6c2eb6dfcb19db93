/* SPDX-License-Identifier: Apache-2.0 */
/*
 * RFC 7512 pkcs11: URIs, parsed by libp11-kit (never by hand), turned into
 * the criteria the rest of the room matches tokens and objects with.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pkcs11/internal.h"

void
hsm_uri_cleanup(struct hsm_uri *u)
{
    if (u == NULL) {
        return;
    }
    if (u->p11 != NULL) {
        p11_kit_uri_free(u->p11);
    }
    free(u->token_label);
    free(u->label);
    free(u->pin_source);
    memset(u, 0, sizeof(*u));
}

const char *
hsm_uri_token_name(const struct hsm_uri *u)
{
    return u->token_label != NULL ? u->token_label : "(any)";
}

static pj_rc uri_fail(struct hsm_uri *u, struct pj_err *err, pj_rc rc,
                      const char *fmt, ...) PJ_PRINTF(4, 5);

static pj_rc
uri_fail(struct hsm_uri *u, struct pj_err *err, pj_rc rc, const char *fmt, ...)
{
    va_list ap;

    hsm_uri_cleanup(u);
    va_start(ap, fmt);
    pj_err_setv(err, rc, fmt, ap);
    va_end(ap);
    return rc;
}

pj_rc
hsm_uri_parse(const char *uri, struct hsm_uri *u, struct pj_err *err)
{
    CK_TOKEN_INFO *ti;
    CK_ATTRIBUTE *a;
    char tmp[HSM_LABEL_MAX * 4 + 1];
    int r;

    memset(u, 0, sizeof(*u));
    if (uri == NULL || uri[0] == '\0') {
        return pj_err_set(err, PJ_ERR_INVALID, "no key URI given");
    }
    if (strlen(uri) > HSM_URI_MAX_BYTES) {
        return pj_err_set(err, PJ_ERR_LIMIT, "key URI is longer than %d bytes",
                          HSM_URI_MAX_BYTES);
    }
    if (strncmp(uri, "pkcs11:", 7) != 0) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "key URI must start with 'pkcs11:' (RFC 7512), e.g. "
                          "pkcs11:token=prod;object=sf-jwt;type=private");
    }
    if ((u->p11 = p11_kit_uri_new()) == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
    }
    r = p11_kit_uri_parse(uri, P11_KIT_URI_FOR_ANY, u->p11);
    if (r != P11_KIT_URI_OK) {
        /* Never echo the URI: it may carry a PIN. */
        return uri_fail(u, err, PJ_ERR_INVALID, "bad pkcs11: URI: %s",
                        p11_kit_uri_message(r));
    }
    if (p11_kit_uri_get_pin_value(u->p11) != NULL) {
        return uri_fail(u, err, PJ_ERR_INVALID, "%s",
                        "the key URI contains a PIN (pin-value): PINs "
                        "never go in URIs or on the command line; use "
                        "pin-source=file:PATH, env:NAME or systemd:NAME");
    }
    if (p11_kit_uri_any_unrecognized(u->p11)) {
        return uri_fail(u, err, PJ_ERR_INVALID, "%s",
                        "the key URI has an unknown attribute or value "
                        "(RFC 7512: token, serial, manufacturer, model, "
                        "object, id, type=private|public|cert, slot-*, "
                        "library-*)");
    }

    ti = p11_kit_uri_get_token_info(u->p11);
    if (ti != NULL) {
        char serial[20];
        hsm_fixed_str(ti->label, sizeof(ti->label), tmp, sizeof(tmp));
        if (tmp[0] == '\0') {
            hsm_fixed_str(ti->serialNumber, sizeof(ti->serialNumber), serial,
                          sizeof(serial));
            if (serial[0] != '\0') {
                snprintf(tmp, sizeof(tmp), "serial %s", serial);
            }
        }
        if (tmp[0] != '\0' && (u->token_label = strdup(tmp)) == NULL) {
            return uri_fail(u, err, PJ_ERR_NOMEM, "%s", "out of memory");
        }
    }

    if ((a = p11_kit_uri_get_attribute(u->p11, CKA_LABEL)) != NULL) {
        if (a->ulValueLen > HSM_LABEL_MAX) {
            return uri_fail(u, err, PJ_ERR_LIMIT,
                            "object label in the key URI is longer than %d "
                            "bytes",
                            HSM_LABEL_MAX);
        }
        if (memchr(a->pValue, '\0', a->ulValueLen) != NULL) {
            return uri_fail(u, err, PJ_ERR_INVALID, "%s",
                            "object label in the key URI contains a NUL byte");
        }
        if ((u->label = malloc(a->ulValueLen + 1)) == NULL) {
            return uri_fail(u, err, PJ_ERR_NOMEM, "%s", "out of memory");
        }
        if (a->ulValueLen > 0) {
            memcpy(u->label, a->pValue, a->ulValueLen);
        }
        u->label[a->ulValueLen] = '\0';
        u->label_len = a->ulValueLen;
    }
    if ((a = p11_kit_uri_get_attribute(u->p11, CKA_ID)) != NULL) {
        if (a->ulValueLen > HSM_ID_MAX) {
            return uri_fail(u, err, PJ_ERR_LIMIT,
                            "id in the key URI is longer than %d bytes",
                            HSM_ID_MAX);
        }
        if (a->ulValueLen == 0) {
            return uri_fail(u, err, PJ_ERR_INVALID, "%s",
                            "id in the key URI is empty");
        }
        memcpy(u->id, a->pValue, a->ulValueLen);
        u->id_len = a->ulValueLen;
        u->has_id = true;
    }
    if ((a = p11_kit_uri_get_attribute(u->p11, CKA_CLASS)) != NULL) {
        if (a->ulValueLen != sizeof(CK_OBJECT_CLASS)) {
            return uri_fail(u, err, PJ_ERR_INVALID, "%s",
                            "type in the key URI is not understood");
        }
        memcpy(&u->cls, a->pValue, sizeof(u->cls));
        u->has_class = true;
    }
    if (p11_kit_uri_get_pin_source(u->p11) != NULL) {
        struct pj_err e2 = {0};
        if (hsm_pin_source_normalize(p11_kit_uri_get_pin_source(u->p11),
                                     &u->pin_source, &e2) != PJ_OK) {
            pj_rc rc = e2.rc;
            hsm_uri_cleanup(u);
            return pj_err_set(err, rc, "key URI pin-source: %s", e2.msg);
        }
    }
    return PJ_OK;
}
