/* SPDX-License-Identifier: Apache-2.0 */
/* core/: errors, base64url, files, secrets, integer parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "core/pj_err.h"
#include "core/pj_log.h"
#include "core/pj_secret.h"
#include "core/pj_util.h"

/* RFC 4648 section 10 vectors, base64url without padding. */
static void
test_b64url_encode_rfc4648_vectors(void **state)
{
    static const struct {
        const char *in, *out;
    } v[] = {{"", ""},
             {"f", "Zg"},
             {"fo", "Zm8"},
             {"foo", "Zm9v"},
             {"foob", "Zm9vYg"},
             {"fooba", "Zm9vYmE"},
             {"foobar", "Zm9vYmFy"}};
    size_t i;

    (void)state;
    for (i = 0; i < PJ_ARRAY_SIZE(v); i++) {
        char *out = NULL;
        assert_int_equal(
            pj_b64url_encode((const uint8_t *)v[i].in, strlen(v[i].in), &out),
            PJ_OK);
        assert_string_equal(out, v[i].out);
        free(out);
    }
}

static void
test_b64url_uses_url_alphabet(void **state)
{
    const uint8_t in[] = {0xfb, 0xff, 0xbf};
    char *out = NULL;
    uint8_t *back = NULL;
    size_t len = 0;

    (void)state;
    assert_int_equal(pj_b64url_encode(in, sizeof(in), &out), PJ_OK);
    assert_string_equal(out, "-_-_");
    assert_int_equal(pj_b64url_decode(out, strlen(out), &back, &len), PJ_OK);
    assert_int_equal(len, sizeof(in));
    assert_memory_equal(back, in, sizeof(in));
    free(out);
    free(back);
}

static void
test_b64url_decode_round_trip_all_lengths(void **state)
{
    uint8_t in[64];
    size_t n;

    (void)state;
    for (n = 0; n < sizeof(in); n++) {
        char *enc = NULL;
        uint8_t *dec = NULL;
        size_t len = 0;
        in[n] = (uint8_t)(n * 37 + 11);
        assert_int_equal(pj_b64url_encode(in, n, &enc), PJ_OK);
        assert_int_equal(pj_b64url_decode(enc, strlen(enc), &dec, &len), PJ_OK);
        assert_int_equal(len, n);
        if (n > 0) {
            assert_memory_equal(dec, in, n);
        }
        free(enc);
        free(dec);
    }
}

static void
test_b64url_decode_rejects_bad_input(void **state)
{
    static const char *bad[] = {"Zg==",  "Zm9v+",   "Zm9v/", "Zm 9v",
                                "Z",     "Zh", /* non-zero leftover bits */
                                "Zm9vY", "\x80\x80"};
    size_t i;

    (void)state;
    for (i = 0; i < PJ_ARRAY_SIZE(bad); i++) {
        uint8_t *out = (uint8_t *)1;
        size_t len = 99;
        assert_int_equal(pj_b64url_decode(bad[i], strlen(bad[i]), &out, &len),
                         PJ_ERR_INVALID);
        assert_null(out);
        assert_int_equal(len, 0);
    }
}

static void
test_err_keeps_first_failure(void **state)
{
    struct pj_err err = {0};

    (void)state;
    assert_int_equal(pj_err_set(&err, PJ_ERR_INVALID, "first %d", 1),
                     PJ_ERR_INVALID);
    assert_int_equal(pj_err_set(&err, PJ_ERR_IO, "second"), PJ_ERR_IO);
    assert_int_equal(err.rc, PJ_ERR_INVALID);
    assert_string_equal(err.msg, "first 1");
    assert_int_equal(pj_err_set(NULL, PJ_ERR_LIMIT, "no err"), PJ_ERR_LIMIT);
    pj_err_clear(&err);
    assert_int_equal(err.rc, PJ_OK);
    assert_string_equal(pj_rc_str(PJ_ERR_PIN), "pin");
}

static void
test_file_read_limits_and_errors(void **state)
{
    char dir[] = "/tmp/pj-unit-XXXXXX";
    char path[64];
    uint8_t *buf = NULL;
    size_t len = 0;
    struct pj_err err = {0};
    FILE *f;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/f", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("0123456789", f);
    fclose(f);

    assert_int_equal(pj_file_read(path, 10, &buf, &len, &err), PJ_OK);
    assert_int_equal(len, 10);
    assert_string_equal((char *)buf, "0123456789");
    free(buf);

    assert_int_equal(pj_file_read(path, 9, &buf, &len, &err), PJ_ERR_LIMIT);
    assert_null(buf);
    assert_non_null(strstr(err.msg, path));

    pj_err_clear(&err);
    assert_int_equal(pj_file_read(dir, 9, &buf, &len, &err), PJ_ERR_INVALID);
    assert_non_null(strstr(err.msg, "not a regular file"));

    pj_err_clear(&err);
    unlink(path);
    assert_int_equal(pj_file_read(path, 9, &buf, &len, &err), PJ_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, "no such file"));
    rmdir(dir);
}

static void
test_file_write_atomic_sets_mode(void **state)
{
    char dir[] = "/tmp/pj-unit-XXXXXX";
    char path[64];
    struct stat st;
    uint8_t *buf = NULL;
    size_t len = 0;
    struct pj_err err = {0};

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/out", dir);
    assert_int_equal(pj_file_write_atomic(path, "abc", 3, 0640, &err), PJ_OK);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
    assert_int_equal(pj_file_read(path, 100, &buf, &len, &err), PJ_OK);
    assert_int_equal(len, 3);
    free(buf);
    unlink(path);
    /* Never swap a device or a symlink for a regular file. */
    assert_int_equal(pj_file_write_atomic("/dev/null", "abc", 3, 0600, &err),
                     PJ_ERR_INVALID);
    assert_non_null(strstr(err.msg, "not a regular file"));
    assert_int_equal(stat("/dev/null", &st), 0);
    assert_true(S_ISCHR(st.st_mode));
    pj_err_clear(&err);
    snprintf(path, sizeof(path), "%s/link", dir);
    assert_int_equal(symlink("/etc/hostname", path), 0);
    assert_int_equal(pj_file_write_atomic(path, "abc", 3, 0600, &err),
                     PJ_ERR_INVALID);
    unlink(path);
    pj_err_clear(&err);
    snprintf(path, sizeof(path), "%s/missing/out", dir);
    assert_int_equal(pj_file_write_atomic(path, "abc", 3, 0600, &err),
                     PJ_ERR_IO);
    rmdir(dir);
}

static void
test_secret_dup_and_equal(void **state)
{
    struct pj_secret *s;

    (void)state;
    s = pj_secret_dup("hunter2", 7);
    assert_non_null(s);
    assert_int_equal(s->len, 7);
    assert_string_equal((char *)s->data, "hunter2");
    assert_true(pj_secret_equal(s->data, s->len, "hunter2", 7));
    assert_false(pj_secret_equal(s->data, s->len, "hunter3", 7));
    assert_false(pj_secret_equal(s->data, s->len, "hunter", 6));
    pj_secret_free(s);
    pj_secret_free(NULL);
    assert_null(pj_secret_new(2 * 1024 * 1024));
}

static void
test_secret_heap_serves_and_falls_back(void **state)
{
    struct pj_secret *small, *big, *many[256];
    size_t i, in_arena = 0;

    (void)state;
    assert_int_equal(setenv("PJ_NO_MLOCK", "1", 1), 0);
    assert_false(pj_secret_heap_init(4096)); /* PJ_NO_MLOCK=1 is honoured */
    assert_int_equal(setenv("PJ_NO_MLOCK", "0", 1), 0);
    if (!pj_secret_heap_init(4096)) {
        print_message("skipped: mlock of a 4 KiB arena refused here "
                      "(RLIMIT_MEMLOCK); the fallback path is what runs\n");
        assert_int_equal(setenv("PJ_NO_MLOCK", "1", 1), 0);
        skip();
    }
    small = pj_secret_dup("token", 5);
    assert_non_null(small);
    assert_true(CRYPTO_secure_allocated(small->data));
    assert_string_equal((char *)small->data, "token");
    /* Bigger than the arena: its own locked pages, same interface. */
    big = pj_secret_new(8192);
    assert_non_null(big);
    assert_false(CRYPTO_secure_allocated(big->data));
    assert_true(big->cap >= 8192);
    /* Fill the arena: later secrets fall back, none fails. */
    for (i = 0; i < PJ_ARRAY_SIZE(many); i++) {
        many[i] = pj_secret_dup("0123456789abcdef0123456789abcdef", 32);
        assert_non_null(many[i]);
        in_arena += CRYPTO_secure_allocated(many[i]->data) ? 1 : 0;
    }
    assert_true(in_arena > 0 && in_arena < PJ_ARRAY_SIZE(many));
    for (i = 0; i < PJ_ARRAY_SIZE(many); i++) {
        pj_secret_free(many[i]);
    }
    pj_secret_free(big);
    pj_secret_free(small);
    assert_int_equal(CRYPTO_secure_used(), 0);
    assert_int_equal(CRYPTO_secure_malloc_done(), 1);
    assert_int_equal(setenv("PJ_NO_MLOCK", "1", 1), 0);
}

static void
test_parse_long_bounds(void **state)
{
    long v = 0;

    (void)state;
    assert_int_equal(pj_parse_long("300", 1, 300, &v), PJ_OK);
    assert_int_equal(v, 300);
    assert_int_equal(pj_parse_long("301", 1, 300, &v), PJ_ERR_INVALID);
    assert_int_equal(pj_parse_long("0", 1, 300, &v), PJ_ERR_INVALID);
    assert_int_equal(pj_parse_long("12x", 1, 300, &v), PJ_ERR_INVALID);
    assert_int_equal(pj_parse_long("", 1, 300, &v), PJ_ERR_INVALID);
    assert_int_equal(pj_parse_long(NULL, 1, 300, &v), PJ_ERR_INVALID);
    assert_int_equal(pj_parse_long("99999999999999999999", 1, 300, &v),
                     PJ_ERR_INVALID);
}

static void
test_fingerprint12_is_sha256_prefix(void **state)
{
    char fp[13];

    (void)state;
    /* SHA-256("abc") = ba7816bf8f01cfea... */
    pj_fingerprint12("abc", 3, fp);
    assert_string_equal(fp, "ba7816bf8f01");
}

/* Size of what reached fd 2 so far. */
static off_t
stderr_size(void)
{
    struct stat st;

    assert_int_equal(fstat(STDERR_FILENO, &st), 0);
    return st.st_size;
}

static void
test_log_hold_writes_at_flush_only(void **state)
{
    char path[] = "/tmp/pj-log-test-XXXXXX", buf[256];
    int fd = mkstemp(path), saved = dup(STDERR_FILENO);
    const off_t first = (off_t)strlen("t: notice: first 1\n");
    const off_t info = (off_t)strlen("t: info: \n") + 900;
    off_t size;
    int i;
    FILE *f;

    (void)state;
    assert_true(fd >= 0 && saved >= 0);
    fflush(stderr);
    assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    pj_log_init("t", false, PJ_LOG_INFO);

    pj_log_hold(true);
    pj_log_notice("first %d", 1);
    pj_log_debug("below the level: never held");
    assert_int_equal(stderr_size(), 0);
    pj_log_flush();
    assert_int_equal(stderr_size(), first);

    /* More than the 64 KiB buffer: written as it fills, nothing lost. */
    for (i = 0; i < 200; i++) {
        pj_log_info("%0900d", i);
    }
    size = stderr_size();
    assert_true(size > first);
    assert_true(size < first + 200 * info);
    pj_log_hold(false); /* flushes */
    assert_int_equal(stderr_size(), first + 200 * info);
    pj_log_notice("unheld");
    fflush(stderr);
    assert_int_equal(stderr_size(),
                     first + 200 * info + (off_t)strlen("t: notice: unheld\n"));

    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    f = fdopen(fd, "r");
    assert_non_null(f);
    assert_non_null(fgets(buf, sizeof(buf), f));
    assert_string_equal(buf, "t: notice: first 1\n");
    fclose(f);
    unlink(path);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64url_encode_rfc4648_vectors),
        cmocka_unit_test(test_b64url_uses_url_alphabet),
        cmocka_unit_test(test_b64url_decode_round_trip_all_lengths),
        cmocka_unit_test(test_b64url_decode_rejects_bad_input),
        cmocka_unit_test(test_err_keeps_first_failure),
        cmocka_unit_test(test_file_read_limits_and_errors),
        cmocka_unit_test(test_file_write_atomic_sets_mode),
        cmocka_unit_test(test_secret_dup_and_equal),
        cmocka_unit_test(test_secret_heap_serves_and_falls_back),
        cmocka_unit_test(test_parse_long_bounds),
        cmocka_unit_test(test_fingerprint12_is_sha256_prefix),
        cmocka_unit_test(test_log_hold_writes_at_flush_only),
    };
    return cmocka_run_group_tests_name("core_util", tests, NULL, NULL);
}
