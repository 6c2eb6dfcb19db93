/* SPDX-License-Identifier: Apache-2.0 */
#include "core/pj_secret.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/crypto.h>

static bool
mlock_wanted(void)
{
    const char *v = getenv("PJ_NO_MLOCK");

    return v == NULL || strcmp(v, "1") != 0;
}

bool
pj_secret_heap_init(size_t size)
{
    if (!mlock_wanted()) {
        return false; /* PJ_NO_MLOCK=1: plain memory, as documented */
    }
    /* 1: arena locked; 2: made but mlock refused (RLIMIT_MEMLOCK). Only a
     * locked arena keeps the promise, so 2 tears it down again. */
    switch (CRYPTO_secure_malloc_init(size, 32)) {
    case 1:
        return true;
    case 2:
        (void)CRYPTO_secure_malloc_done();
        return false;
    default:
        return false;
    }
}

struct pj_secret *
pj_secret_new(size_t cap)
{
    struct pj_secret *s;
    void *mem = NULL;
    size_t page, size;

    if (cap > 1024 * 1024) {
        return NULL;
    }
    if ((s = calloc(1, sizeof(*s))) == NULL) {
        return NULL;
    }
    if (CRYPTO_secure_malloc_initialized() &&
        (mem = OPENSSL_secure_zalloc(cap + 1)) != NULL) {
        s->data = mem;
        s->cap = cap;
        s->locked = true;
        return s;
    }
    /* Page-aligned and page-sized so madvise covers exactly this block. */
    page = (size_t)sysconf(_SC_PAGESIZE);
    size = (cap + 1 + page - 1) / page * page;
    if (posix_memalign(&mem, page, size) != 0) {
        free(s);
        return NULL;
    }
    memset(mem, 0, size);
    s->data = mem;
    s->cap = size - 1;
    if (mlock_wanted()) {
        /* Best effort: RLIMIT_MEMLOCK may be small for unprivileged users. */
        s->locked = mlock(s->data, size) == 0;
#ifdef MADV_DONTDUMP
        (void)madvise(s->data, size, MADV_DONTDUMP);
#endif
    }
    return s;
}

struct pj_secret *
pj_secret_dup(const void *data, size_t len)
{
    struct pj_secret *s = pj_secret_new(len);

    if (s == NULL) {
        return NULL;
    }
    memcpy(s->data, data, len);
    s->len = len;
    return s;
}

void
pj_secret_free(struct pj_secret *s)
{
    if (s == NULL) {
        return;
    }
    if (CRYPTO_secure_allocated(s->data)) {
        OPENSSL_secure_clear_free(s->data, s->cap + 1);
        OPENSSL_cleanse(s, sizeof(*s));
        free(s);
        return;
    }
    OPENSSL_cleanse(s->data, s->cap + 1);
    if (s->locked) {
        (void)munlock(s->data, s->cap + 1);
    }
    free(s->data);
    OPENSSL_cleanse(s, sizeof(*s));
    free(s);
}

bool
pj_secret_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    if (alen != blen) {
        return false;
    }
    return CRYPTO_memcmp(a, b, alen) == 0;
}
