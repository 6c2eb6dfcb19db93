/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Target: sf_response_parse. The first byte picks the HTTP status (200,
 * 400, 401, 302, 503), the rest is the body; a Date header is parsed too.
 * Invariants: ok and a token go together; a failure always has a hint.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "salesforce/sf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const long statuses[] = {200, 400, 401, 302, 503};
    struct sf_result res;
    struct pj_err err = {0};
    pj_rc rc;

    if (size == 0) {
        return 0;
    }
    sf_result_init(&res);
    rc = sf_response_parse(statuses[data[0] % 5], data + 1, size - 1,
                           "Sun, 06 Nov 1994 08:49:37 GMT", 784111777, &res,
                           &err);
    if ((rc == PJ_OK) != res.ok) {
        abort();
    }
    if (res.ok &&
        (res.token.access_token == NULL || res.token.instance_url == NULL ||
         strncmp(res.token.instance_url, "https://", 8) != 0)) {
        abort();
    }
    if (!res.ok && (res.fail.hint == NULL || err.msg[0] == '\0')) {
        abort();
    }
    sf_result_cleanup(&res);
    return 0;
}
