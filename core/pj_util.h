/* SPDX-License-Identifier: Apache-2.0 */
/* Small shared helpers: base64url, hex, bounded strings, files, time. */
#ifndef PJ_UTIL_H
#define PJ_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/pj_err.h"

/*
 * base64url (RFC 4648 section 5) without padding. *outp is a new
 * NUL-terminated string the caller frees (or wipes and frees).
 */
PJ_MUST_USE pj_rc pj_b64url_encode(const uint8_t *in, size_t len, char **outp);
/*
 * Decode unpadded base64url; rejects padding, whitespace and characters
 * outside the alphabet. *outp is new and holds *lenp bytes.
 */
PJ_MUST_USE pj_rc pj_b64url_decode(const char *in, size_t inlen, uint8_t **outp,
                                   size_t *lenp);

/* Lower-case hex of len bytes into out, which holds 2 * len + 1 bytes. */
void pj_hex(const uint8_t *in, size_t len, char *out);

/*
 * First 12 hex digits of SHA-256 of a secret: what logs and audit lines
 * carry instead of a token. out holds 13 bytes.
 */
void pj_fingerprint12(const void *data, size_t len, char out[13]);

/* Copy src into dst of size n, always NUL-terminating; true if it fit. */
bool pj_strlcpy(char *dst, const char *src, size_t n);

/*
 * Read a whole file of at most max bytes; *outp is new, NUL-terminated,
 * *lenp bytes long. Errors name the path.
 */
PJ_MUST_USE pj_rc pj_file_read(const char *path, size_t max, uint8_t **outp,
                               size_t *lenp, struct pj_err *err);

/*
 * Write data to path atomically: a temporary file beside it with mode,
 * fsync, then rename. Errors name the path.
 */
PJ_MUST_USE pj_rc pj_file_write_atomic(const char *path, const void *data,
                                       size_t len, unsigned mode,
                                       struct pj_err *err);

/* Wall-clock seconds since the epoch (UTC). */
int64_t pj_time_now(void);
/* Monotonic milliseconds, for deadlines and measurements. */
int64_t pj_time_mono_ms(void);

/* Parse a base-10 integer in [min, max] with nothing trailing. */
PJ_MUST_USE pj_rc pj_parse_long(const char *s, long min, long max, long *outp);

#define PJ_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
