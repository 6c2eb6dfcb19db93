/* SPDX-License-Identifier: Apache-2.0 */
/* Target functions: pj_b64url_decode, pj_b64url_encode (round trip). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/pj_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *dec = NULL;
    char *enc = NULL;
    size_t len = 0;

    if (pj_b64url_decode((const char *)data, size, &dec, &len) == PJ_OK) {
        /* Canonical input must re-encode to exactly itself. */
        if (pj_b64url_encode(dec, len, &enc) != PJ_OK || strlen(enc) != size ||
            memcmp(enc, data, size) != 0) {
            abort();
        }
    }
    free(dec);
    free(enc);
    return 0;
}
