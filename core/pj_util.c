/* SPDX-License-Identifier: Apache-2.0 */
#include "core/pj_util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pj_rc
pj_b64url_encode(const uint8_t *in, size_t len, char **outp)
{
    size_t outlen, i, o = 0;
    char *out;

    *outp = NULL;
    if (len > SIZE_MAX / 4 - 4) {
        return PJ_ERR_LIMIT;
    }
    outlen = (len / 3) * 4 + (len % 3 == 0 ? 0 : len % 3 + 1);
    if ((out = malloc(outlen + 1)) == NULL) {
        return PJ_ERR_NOMEM;
    }
    /* A table-driven loop: OpenSSL's EVP_EncodeBlock pads and uses +/. */
    for (i = 0; i + 2 < len; i += 3) {
        uint32_t v =
            (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url_alphabet[(v >> 18) & 63];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64url_alphabet[(v >> 18) & 63];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64url_alphabet[(v >> 18) & 63];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
    }
    out[o] = '\0';
    *outp = out;
    return PJ_OK;
}

static int
b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '-') {
        return 62;
    }
    if (c == '_') {
        return 63;
    }
    return -1;
}

pj_rc
pj_b64url_decode(const char *in, size_t inlen, uint8_t **outp, size_t *lenp)
{
    uint8_t *out;
    size_t i, o = 0;
    uint32_t acc = 0;
    int bits = 0;

    *outp = NULL;
    *lenp = 0;
    /* A lone trailing character carries fewer than 8 bits: malformed. */
    if (inlen % 4 == 1) {
        return PJ_ERR_INVALID;
    }
    if ((out = malloc(inlen / 4 * 3 + 3)) == NULL) {
        return PJ_ERR_NOMEM;
    }
    for (i = 0; i < inlen; i++) {
        int v = b64url_value(in[i]);
        if (v < 0) {
            free(out);
            return PJ_ERR_INVALID;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* Non-zero leftover bits mean a non-canonical encoding. */
    if (acc != 0) {
        free(out);
        return PJ_ERR_INVALID;
    }
    *outp = out;
    *lenp = o;
    return PJ_OK;
}

void
pj_hex(const uint8_t *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

void
pj_fingerprint12(const void *data, size_t len, char out[13])
{
    uint8_t md[SHA256_DIGEST_LENGTH];
    char hex[2 * SHA256_DIGEST_LENGTH + 1];

    SHA256(data, len, md);
    pj_hex(md, sizeof(md), hex);
    memcpy(out, hex, 12);
    out[12] = '\0';
}

bool
pj_strlcpy(char *dst, const char *src, size_t n)
{
    size_t len = strlen(src);

    if (n == 0) {
        return false;
    }
    if (len >= n) {
        memcpy(dst, src, n - 1);
        dst[n - 1] = '\0';
        return false;
    }
    memcpy(dst, src, len + 1);
    return true;
}

pj_rc
pj_file_read(const char *path, size_t max, uint8_t **outp, size_t *lenp,
             struct pj_err *err)
{
    int fd = -1;
    uint8_t *buf = NULL;
    size_t len = 0;
    ssize_t n;
    struct stat st;
    pj_rc rc = PJ_ERR_INTERNAL;

    *outp = NULL;
    *lenp = 0;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
        rc = errno == ENOENT
                 ? pj_err_set(err, PJ_ERR_NOT_FOUND, "%s: no such file", path)
                 : pj_err_sys(err, "%s", path);
        goto out;
    }
    if (fstat(fd, &st) != 0) {
        rc = pj_err_sys(err, "%s", path);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = pj_err_set(err, PJ_ERR_INVALID, "%s: not a regular file", path);
        goto out;
    }
    if ((buf = malloc(max + 1)) == NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    /* Read one byte past max so an oversized file is detected. */
    while (len <= max) {
        n = read(fd, buf + len, max + 1 - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            rc = pj_err_sys(err, "%s", path);
            goto out;
        }
        if (n == 0) {
            break;
        }
        len += (size_t)n;
    }
    if (len > max) {
        rc = pj_err_set(err, PJ_ERR_LIMIT, "%s: larger than %zu bytes", path,
                        max);
        goto out;
    }
    buf[len] = '\0';
    *outp = buf;
    *lenp = len;
    buf = NULL;
    rc = PJ_OK;
out:
    free(buf);
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

pj_rc
pj_file_write_atomic(const char *path, const void *data, size_t len,
                     unsigned mode, struct pj_err *err)
{
    char tmp[PATH_MAX];
    const uint8_t *p = data;
    struct stat st;
    int fd = -1;
    size_t off = 0;
    ssize_t n;
    pj_rc rc = PJ_ERR_INTERNAL;

    /*
     * rename() replaces whatever is there: a device such as /dev/null, or
     * the target of a symlink, would be swapped for a regular file. Only
     * regular files are ever replaced.
     */
    if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "%s exists and is not a regular file; refusing to "
                          "replace it",
                          path);
    }
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path,
                         (long)getpid()) >= sizeof(tmp)) {
        return pj_err_set(err, PJ_ERR_LIMIT, "%s: path too long", path);
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
              (mode_t)mode);
    if (fd < 0) {
        return pj_err_sys(err, "%s", tmp);
    }
    while (off < len) {
        n = write(fd, p + off, len - off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            rc = pj_err_sys(err, "%s", tmp);
            goto out;
        }
        off += (size_t)n;
    }
    if (fchmod(fd, (mode_t)mode) != 0 || fsync(fd) != 0) {
        rc = pj_err_sys(err, "%s", tmp);
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = pj_err_sys(err, "%s", tmp);
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = pj_err_sys(err, "rename to %s", path);
        goto out;
    }
    return PJ_OK;
out:
    if (fd >= 0) {
        close(fd);
    }
    unlink(tmp);
    return rc;
}

int64_t
pj_time_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

int64_t
pj_time_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

pj_rc
pj_parse_long(const char *s, long min, long max, long *outp)
{
    char *end = NULL;
    long v;

    if (s == NULL || *s == '\0') {
        return PJ_ERR_INVALID;
    }
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        return PJ_ERR_INVALID;
    }
    *outp = v;
    return PJ_OK;
}
