/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The project's one error type: a small code plus a caller-owned detail
 * struct holding the first failure in words a person can act on.
 *
 * Lower layers fill struct pj_err at the point of detection and return the
 * same code; callers pass the code up unchanged and never rewrite err. The
 * top frame (a CLI command, an agent request) prints or logs err->msg once.
 * Messages never contain PINs, tokens or assertions.
 */
#ifndef PJ_ERR_H
#define PJ_ERR_H

#include <stdarg.h>

#define PJ_MUST_USE __attribute__((warn_unused_result))
#define PJ_PRINTF(f, a) __attribute__((format(printf, f, a)))

typedef enum {
    PJ_OK = 0,
    PJ_ERR_NOMEM,
    PJ_ERR_INVALID,    /* malformed input from a user, file or peer */
    PJ_ERR_LIMIT,      /* input exceeds a named bound */
    PJ_ERR_NOT_FOUND,  /* token, object, file, profile does not exist */
    PJ_ERR_EXISTS,     /* refusing to overwrite something that exists */
    PJ_ERR_DENIED,     /* policy refused the request */
    PJ_ERR_IO,         /* a syscall failed; errno in err->sys */
    PJ_ERR_CRYPTO,     /* OpenSSL failed; its error queue is in msg */
    PJ_ERR_TOKEN,      /* PKCS#11 failed; CK_RV in err->ckr */
    PJ_ERR_PIN,        /* PIN rejected: never retried automatically */
    PJ_ERR_PIN_LOCKED, /* PIN locked on the token */
    PJ_ERR_CONFIG,     /* bad configuration */
    PJ_ERR_HTTP,       /* transport failure (DNS, TLS, timeout, 5xx) */
    PJ_ERR_UPSTREAM,   /* the server answered with an error */
    PJ_ERR_TIMEOUT,    /* a deadline passed */
    PJ_ERR_INTERNAL,   /* a bug: an invariant did not hold */
} pj_rc;

#define PJ_ERR_MSG_MAX 512

struct pj_err {
    pj_rc rc;
    unsigned long ckr; /* CK_RV when rc is PJ_ERR_TOKEN/PIN/PIN_LOCKED */
    int sys;           /* errno when rc is PJ_ERR_IO */
    char msg[PJ_ERR_MSG_MAX];
};

/* A short stable name for rc ("invalid", "token", ...). */
const char *pj_rc_str(pj_rc rc);

/*
 * Record a failure in err (err may be NULL) unless one is already recorded:
 * the first failure is the one a person needs. Returns rc.
 */
pj_rc pj_err_set(struct pj_err *err, pj_rc rc, const char *fmt, ...)
    PJ_PRINTF(3, 4);
pj_rc pj_err_setv(struct pj_err *err, pj_rc rc, const char *fmt, va_list ap)
    PJ_PRINTF(3, 0);

/* Like pj_err_set with PJ_ERR_IO, appending strerror(errno). */
pj_rc pj_err_sys(struct pj_err *err, const char *fmt, ...) PJ_PRINTF(2, 3);

/*
 * Like pj_err_set with PJ_ERR_CRYPTO, appending OpenSSL's queued error
 * strings; drains the queue.
 */
pj_rc pj_err_crypto(struct pj_err *err, const char *fmt, ...) PJ_PRINTF(2, 3);

/* Forget a recorded failure so err can be reused. */
void pj_err_clear(struct pj_err *err);

#define PJ_TRY(expr)                                                           \
    do {                                                                       \
        pj_rc _r = (expr);                                                     \
        if (_r != PJ_OK) {                                                     \
            return _r;                                                         \
        }                                                                      \
    } while (0)

#endif
