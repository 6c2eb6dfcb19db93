/* SPDX-License-Identifier: Apache-2.0 */
#include "core/pj_err.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

const char *
pj_rc_str(pj_rc rc)
{
    switch (rc) {
    case PJ_OK:
        return "ok";
    case PJ_ERR_NOMEM:
        return "out of memory";
    case PJ_ERR_INVALID:
        return "invalid";
    case PJ_ERR_LIMIT:
        return "limit";
    case PJ_ERR_NOT_FOUND:
        return "not found";
    case PJ_ERR_EXISTS:
        return "exists";
    case PJ_ERR_DENIED:
        return "denied";
    case PJ_ERR_IO:
        return "io";
    case PJ_ERR_CRYPTO:
        return "crypto";
    case PJ_ERR_TOKEN:
        return "token";
    case PJ_ERR_PIN:
        return "pin";
    case PJ_ERR_PIN_LOCKED:
        return "pin locked";
    case PJ_ERR_CONFIG:
        return "config";
    case PJ_ERR_HTTP:
        return "http";
    case PJ_ERR_UPSTREAM:
        return "upstream";
    case PJ_ERR_TIMEOUT:
        return "timeout";
    case PJ_ERR_INTERNAL:
        return "internal";
    }
    return "unknown";
}

pj_rc
pj_err_setv(struct pj_err *err, pj_rc rc, const char *fmt, va_list ap)
{
    if (err == NULL || err->rc != PJ_OK) {
        return rc;
    }
    err->rc = rc;
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    return rc;
}

pj_rc
pj_err_set(struct pj_err *err, pj_rc rc, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    pj_err_setv(err, rc, fmt, ap);
    va_end(ap);
    return rc;
}

/* Append ": detail" to err->msg, keeping it NUL-terminated. */
static void
err_append(struct pj_err *err, const char *detail)
{
    size_t used = strlen(err->msg);

    if (used + 3 < sizeof(err->msg)) {
        snprintf(err->msg + used, sizeof(err->msg) - used, ": %s", detail);
    }
}

pj_rc
pj_err_sys(struct pj_err *err, const char *fmt, ...)
{
    int saved = errno;
    va_list ap;

    if (err == NULL || err->rc != PJ_OK) {
        return PJ_ERR_IO;
    }
    va_start(ap, fmt);
    pj_err_setv(err, PJ_ERR_IO, fmt, ap);
    va_end(ap);
    err->sys = saved;
    err_append(err, strerror(saved));
    errno = saved;
    return PJ_ERR_IO;
}

pj_rc
pj_err_crypto(struct pj_err *err, const char *fmt, ...)
{
    unsigned long e;
    char buf[256];
    va_list ap;

    if (err == NULL || err->rc != PJ_OK) {
        ERR_clear_error();
        return PJ_ERR_CRYPTO;
    }
    va_start(ap, fmt);
    pj_err_setv(err, PJ_ERR_CRYPTO, fmt, ap);
    va_end(ap);
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        err_append(err, buf);
    }
    return PJ_ERR_CRYPTO;
}

void
pj_err_clear(struct pj_err *err)
{
    if (err != NULL) {
        memset(err, 0, sizeof(*err));
    }
}
