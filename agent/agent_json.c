/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A tiny JSON writer for answers. Answers can carry an access token or an
 * assertion, so they are built in buffers that are wiped when freed,
 * rather than in jansson's heap strings (which are freed without wiping).
 * Allocation failure sets b->oom; the caller answers `internal`.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "agent/agent.h"

static bool
buf_grow(struct agent_buf *b, size_t more)
{
    size_t ncap;
    char *n;

    if (b->oom) {
        return false;
    }
    if (b->len + more + 1 <= b->cap) {
        return true;
    }
    ncap = b->cap ? b->cap : 256;
    while (ncap < b->len + more + 1) {
        ncap *= 2;
    }
    /* Not realloc: the old block may hold a token and must be wiped. */
    n = malloc(ncap);
    if (n == NULL) {
        b->oom = true;
        return false;
    }
    if (b->data != NULL) {
        memcpy(n, b->data, b->len);
        OPENSSL_cleanse(b->data, b->cap);
        free(b->data);
    }
    b->data = n;
    b->cap = ncap;
    return true;
}

void
agent_buf_raw(struct agent_buf *b, const char *s, size_t len)
{
    if (!buf_grow(b, len)) {
        return;
    }
    memcpy(b->data + b->len, s, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void
agent_buf_str(struct agent_buf *b, const char *s)
{
    agent_buf_raw(b, s, strlen(s));
}

void
agent_buf_jstrn(struct agent_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t i;

    if (!buf_grow(b, len * 6 + 2)) {
        return;
    }
    b->data[b->len++] = '"';
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            b->data[b->len++] = '\\';
            b->data[b->len++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            b->data[b->len++] = '\\';
            b->data[b->len++] = 'u';
            b->data[b->len++] = '0';
            b->data[b->len++] = '0';
            b->data[b->len++] = hex[c >> 4];
            b->data[b->len++] = hex[c & 15];
        } else {
            b->data[b->len++] = (char)c;
        }
    }
    b->data[b->len++] = '"';
    b->data[b->len] = '\0';
}

void
agent_buf_jstr(struct agent_buf *b, const char *s)
{
    if (s == NULL) {
        agent_buf_str(b, "null");
        return;
    }
    agent_buf_jstrn(b, s, strlen(s));
}

void
agent_buf_int(struct agent_buf *b, int64_t v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%" PRId64, v);

    agent_buf_raw(b, tmp, (size_t)n);
}

void
agent_buf_key(struct agent_buf *b, const char *key)
{
    if (b->len > 0 && b->data[b->len - 1] != '{' &&
        b->data[b->len - 1] != '[') {
        agent_buf_raw(b, ",", 1);
    }
    agent_buf_jstr(b, key);
    agent_buf_raw(b, ":", 1);
}

void
agent_msgf(char *dst, size_t n, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(dst, n, fmt, ap);
    va_end(ap);
}

void
agent_buf_wipe(struct agent_buf *b)
{
    if (b->data != NULL) {
        OPENSSL_cleanse(b->data, b->cap);
        free(b->data);
    }
    memset(b, 0, sizeof(*b));
}
