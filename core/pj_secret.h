/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Secrets (PINs, access tokens, assertions) live in one type with one free,
 * so a plain free() of a secret cannot happen. The memory is mlocked (kept
 * out of swap) and excluded from core dumps unless PJ_NO_MLOCK=1 is set
 * (tests and sanitizer builds), and is wiped with OPENSSL_cleanse on free.
 */
#ifndef PJ_SECRET_H
#define PJ_SECRET_H

#include <stdbool.h>
#include <stddef.h>

#include "core/pj_err.h"

struct pj_secret {
    unsigned char *data; /* always NUL-terminated after len bytes */
    size_t len;
    size_t cap;
    bool locked;
};

/*
 * Long-running processes: take secrets from one arena (OpenSSL's secure
 * heap: mlocked, excluded from core dumps, guard pages) set up once, instead
 * of an mlock/madvise/munlock per secret. size is a power of two; a secret
 * that does not fit falls back to its own locked pages. False if the arena
 * could not be made (secrets then use their own pages).
 */
bool pj_secret_heap_init(size_t size);

/* A new empty secret able to hold cap bytes (plus a NUL). */
PJ_MUST_USE struct pj_secret *pj_secret_new(size_t cap);
/* A new secret holding a copy of len bytes of data. */
PJ_MUST_USE struct pj_secret *pj_secret_dup(const void *data, size_t len);
/* Wipe, unlock and free; NULL is a no-op. */
void pj_secret_free(struct pj_secret *s);

/* Constant-time equality of two byte strings (lengths are not secret). */
bool pj_secret_equal(const void *a, size_t alen, const void *b, size_t blen);

#endif
