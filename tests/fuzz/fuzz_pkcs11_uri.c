/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Target functions: hsm_uri_parse (pkcs11: URI -> match criteria, with
 * libp11-kit underneath), hsm_uri_token_name, hsm_pin_source_normalize.
 * No token needed. Checks invariants of a successful parse.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pkcs11/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct hsm_uri u;
    struct pj_err err = {0};
    char *s, *norm = NULL;

    if (size > HSM_URI_MAX_BYTES + 16) {
        return 0;
    }
    if ((s = malloc(size + 1)) == NULL) {
        return 0;
    }
    memcpy(s, data, size);
    s[size] = '\0';
    if (hsm_uri_parse(s, &u, &err) == PJ_OK) {
        /* Invariants the rest of the room relies on. */
        if (u.p11 == NULL ||
            (u.label != NULL &&
             (u.label_len > HSM_LABEL_MAX || strlen(u.label) != u.label_len)) ||
            u.id_len > HSM_ID_MAX || (u.has_id && u.id_len == 0) ||
            (u.pin_source != NULL && strncmp(u.pin_source, "file:", 5) != 0 &&
             strncmp(u.pin_source, "env:", 4) != 0 &&
             strncmp(u.pin_source, "systemd:", 8) != 0) ||
            p11_kit_uri_get_pin_value(u.p11) != NULL) {
            abort();
        }
        (void)hsm_uri_token_name(&u);
        hsm_uri_cleanup(&u);
    } else if (err.msg[0] == '\0' || err.rc == PJ_OK) {
        abort(); /* every refusal says why */
    }
    if (hsm_pin_source_normalize(s, &norm, &err) == PJ_OK) {
        free(norm);
    }
    free(s);
    return 0;
}
