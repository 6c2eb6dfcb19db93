/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Target: pj_config_load_string. Invariants: success yields a config whose
 * profiles have every required key and https URLs; failure yields a
 * message naming the file; two loads of the same text compare equal.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/pj_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pj_config *a = NULL, *b = NULL;
    struct pj_err err = {0};
    char *text;
    size_t i;

    if (size > 64 * 1024 || (text = malloc(size + 1)) == NULL) {
        return 0;
    }
    memcpy(text, data, size);
    text[size] = '\0';
    if (pj_config_load_string(text, "fuzz.conf", &a, &err) != PJ_OK) {
        if (a != NULL || strncmp(err.msg, "fuzz.conf", 9) != 0) {
            abort();
        }
        free(text);
        return 0;
    }
    if (pj_config_load_string(text, "fuzz.conf", &b, &err) != PJ_OK ||
        a->n_profiles != b->n_profiles ||
        !pj_config_agent_equal(&a->agent, &b->agent)) {
        abort();
    }
    for (i = 0; i < a->n_profiles; i++) {
        const struct pj_profile *p = &a->profiles[i];
        if (p->key == NULL || p->client_id == NULL || p->subject == NULL ||
            strncmp(p->login_url, "https://", 8) != 0 ||
            strncmp(p->audience, "https://", 8) != 0 ||
            p->assertion_lifetime > PJ_ASSERTION_LIFETIME_MAX_S ||
            !pj_profile_equal(p, &b->profiles[i]) ||
            pj_config_profile(a, p->name) == NULL) {
            abort();
        }
    }
    pj_config_free(a);
    pj_config_free(b);
    free(text);
    return 0;
}
