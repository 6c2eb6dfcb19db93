/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hsm_key_* inside a private SoftHSM2 token (softhsm-run.sh): RS256
 * signatures verify with OpenSSL against hsm_key_public_der; both
 * mechanisms give the same bytes; 4 threads x 200 signatures (with module
 * re-initialisations racing them) all verify; lost sessions recover; a
 * rejected PIN is never retried; errors name what is wrong; certificate
 * objects round-trip.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "pkcs11/hsm.h"
#include "pkcs11/internal.h"

static int failures;
#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (cond) {                                                            \
            printf("ok: ");                                                    \
        } else {                                                               \
            printf("FAIL: ");                                                  \
            failures++;                                                        \
        }                                                                      \
        printf(__VA_ARGS__);                                                   \
        printf("\n");                                                          \
        fflush(stdout);                                                        \
    } while (0)

static const char *module_path, *token, *pin_file, *dir;
static char pin_src[600], key_uri[300];
static struct hsm_module *mod;

static EVP_PKEY *
public_key(struct hsm_key *key)
{
    uint8_t *der = NULL;
    const unsigned char *p;
    size_t len = 0;
    struct pj_err err = {0};
    EVP_PKEY *pk = NULL;

    if (hsm_key_public_der(key, &der, &len, &err) != PJ_OK) {
        printf("hsm_key_public_der: %s\n", err.msg);
        return NULL;
    }
    p = der;
    pk = d2i_PUBKEY(NULL, &p, (long)len);
    free(der);
    return pk;
}

static bool
verify(EVP_PKEY *pk, const uint8_t *msg, size_t len, const uint8_t *sig,
       size_t siglen)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx != NULL &&
              EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pk) == 1 &&
              EVP_DigestVerify(ctx, sig, siglen, msg, len) == 1;

    EVP_MD_CTX_free(ctx);
    return ok;
}

static pj_rc
open_key(const char *uri, const char *pin_source, unsigned sessions,
         struct hsm_key **keyp, struct pj_err *err)
{
    struct hsm_key_opts o = {uri, pin_source, sessions};

    pj_err_clear(err);
    return hsm_key_open(mod, &o, keyp, err);
}

static void
write_pin(const char *path, const char *pin, mode_t mode)
{
    FILE *f = fopen(path, "w");

    if (f == NULL) {
        printf("FAIL: cannot write %s\n", path);
        exit(1);
    }
    fprintf(f, "%s\n", pin);
    fclose(f);
    chmod(path, mode);
}

static char *
read_pin(void)
{
    static char pin[64];
    FILE *f = fopen(pin_file, "r");

    if (f == NULL || fgets(pin, sizeof(pin), f) == NULL) {
        printf("FAIL: cannot read %s\n", pin_file);
        exit(1);
    }
    fclose(f);
    pin[strcspn(pin, "\n")] = '\0';
    return pin;
}

/* Close every session of this process on the token: login is lost too. */
static void
close_all_sessions(void)
{
    CK_FUNCTION_LIST *fl = hsm_module_functions(mod);
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16, i;

    if (fl->C_GetSlotList(CK_TRUE, slots, &n) == CKR_OK) {
        for (i = 0; i < n; i++) {
            fl->C_CloseAllSessions(slots[i]);
        }
    }
}

static void
test_sign_verify(void)
{
    struct hsm_key *key = NULL;
    struct hsm_key_info info;
    struct hsm_stats st;
    struct pj_err err = {0};
    const uint8_t msg[] = "header.payload";
    uint8_t s1[HSM_SIG_MAX], s2[HSM_SIG_MAX], s3[HSM_SIG_MAX], dg[32];
    size_t l1 = sizeof(s1), l2 = sizeof(s2), l3 = sizeof(s3), small = 16;
    EVP_PKEY *pk;
    pj_rc rc;

    rc = open_key(key_uri, pin_src, 0, &key, &err);
    CHECK(rc == PJ_OK, "hsm_key_open%s%s", rc ? ": " : "", err.msg);
    if (rc != PJ_OK) {
        return;
    }
    pk = public_key(key);
    CHECK(pk != NULL && EVP_PKEY_get_bits(pk) == 2048,
          "hsm_key_public_der gives an RSA-2048 SubjectPublicKeyInfo");
    rc = hsm_key_get_info(key, &info, &err);
    CHECK(rc == PJ_OK && info.sha256_rsa_pkcs && info.bits == 2048 &&
              strcmp(info.label, "sig") == 0 && !info.extractable,
          "hsm_key_get_info: label '%s', %lu bits, CKM_SHA256_RSA_PKCS %s",
          info.label, info.bits, info.sha256_rsa_pkcs ? "offered" : "missing");

    rc = hsm_key_sign(key, msg, sizeof(msg) - 1, s1, &l1, &err);
    CHECK(rc == PJ_OK && l1 == 256, "sign with CKM_SHA256_RSA_PKCS (%zu bytes)",
          l1);
    CHECK(pk != NULL && verify(pk, msg, sizeof(msg) - 1, s1, l1),
          "signature verifies with OpenSSL EVP_DigestVerify");
    s1[10] ^= 1;
    CHECK(pk != NULL && !verify(pk, msg, sizeof(msg) - 1, s1, l1),
          "a flipped bit does not verify (the check can fail)");
    s1[10] ^= 1;

    hsm_key_test_force_fallback(key, true);
    rc = hsm_key_sign(key, msg, sizeof(msg) - 1, s2, &l2, &err);
    hsm_key_test_force_fallback(key, false);
    CHECK(rc == PJ_OK && l2 == l1 && memcmp(s1, s2, l1) == 0,
          "CKM_RSA_PKCS + DigestInfo fallback gives the same bytes");
    SHA256(msg, sizeof(msg) - 1, dg);
    rc = hsm_key_sign_digest(key, dg, s3, &l3, &err);
    CHECK(rc == PJ_OK && l3 == l1 && memcmp(s1, s3, l1) == 0,
          "hsm_key_sign_digest gives the same bytes");
    pj_err_clear(&err);
    rc = hsm_key_sign(key, msg, sizeof(msg) - 1, s3, &small, &err);
    CHECK(rc == PJ_ERR_LIMIT, "a too small signature buffer: %s", err.msg);
    l3 = sizeof(s3);
    rc = hsm_key_sign(key, msg, 0, s3, &l3, &err);
    CHECK(rc == PJ_OK && verify(pk, msg, 0, s3, l3),
          "empty message signs and verifies");

    /* All sessions closed underneath: login lost, handles stale. */
    close_all_sessions();
    l2 = sizeof(s2);
    pj_err_clear(&err);
    rc = hsm_key_sign(key, msg, sizeof(msg) - 1, s2, &l2, &err);
    hsm_key_get_stats(key, &st);
    CHECK(rc == PJ_OK && memcmp(s1, s2, l1) == 0 && st.recoveries >= 1,
          "recovers after all sessions were closed (%llu recoveries)%s%s",
          (unsigned long long)st.recoveries, rc ? ": " : "", err.msg);
    CHECK(st.signatures == 5 && st.failures == 1,
          "stats: %llu signatures, %llu failures",
          (unsigned long long)st.signatures, (unsigned long long)st.failures);
    EVP_PKEY_free(pk);
    hsm_key_free(key);
}

struct thr {
    struct hsm_key *key;
    EVP_PKEY *pk;
    int id, ok, bad;
    char msg[PJ_ERR_MSG_MAX];
};

static void *
sign_thread(void *arg)
{
    struct thr *t = arg;
    uint8_t msg[64], sig[HSM_SIG_MAX];
    size_t siglen;
    struct pj_err err;
    int i;

    for (i = 0; i < 200; i++) {
        int n =
            snprintf((char *)msg, sizeof(msg), "thread %d msg %d", t->id, i);
        siglen = sizeof(sig);
        pj_err_clear(&err);
        if (hsm_key_sign(t->key, msg, (size_t)n, sig, &siglen, &err) == PJ_OK &&
            verify(t->pk, msg, (size_t)n, sig, siglen)) {
            t->ok++;
        } else {
            if (t->bad++ == 0) {
                snprintf(t->msg, sizeof(t->msg), "%s", err.msg);
            }
        }
    }
    return NULL;
}

static volatile int stop_reinit;

static void *
reinit_thread(void *arg)
{
    int *count = arg;
    struct timespec ts = {0, 30 * 1000000L};

    while (!stop_reinit && *count < 5) {
        uint64_t gen;
        struct pj_err err = {0};
        nanosleep(&ts, NULL);
        pthread_rwlock_rdlock(&mod->lock);
        gen = mod->generation;
        pthread_rwlock_unlock(&mod->lock);
        if (hsm_module_reinit(mod, gen, &err) == PJ_OK) {
            (*count)++;
        }
    }
    return NULL;
}

static void
test_threads(bool with_reinit)
{
    struct hsm_key *key = NULL;
    struct pj_err err = {0};
    struct thr t[4];
    pthread_t th[4], rt;
    struct hsm_stats st;
    int i, ok = 0, bad = 0, reinits = 0;
    EVP_PKEY *pk;
    struct timespec a, b;

    if (open_key(key_uri, pin_src, 4, &key, &err) != PJ_OK) {
        CHECK(false, "hsm_key_open: %s", err.msg);
        return;
    }
    pk = public_key(key);
    clock_gettime(CLOCK_MONOTONIC, &a);
    stop_reinit = 0;
    if (with_reinit) {
        pthread_create(&rt, NULL, reinit_thread, &reinits);
    }
    for (i = 0; i < 4; i++) {
        memset(&t[i], 0, sizeof(t[i]));
        t[i].key = key;
        t[i].pk = pk;
        t[i].id = i;
        pthread_create(&th[i], NULL, sign_thread, &t[i]);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ok += t[i].ok;
        bad += t[i].bad;
        if (t[i].bad > 0) {
            printf("  thread %d: %s\n", i, t[i].msg);
        }
    }
    stop_reinit = 1;
    if (with_reinit) {
        pthread_join(rt, NULL);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    hsm_key_get_stats(key, &st);
    CHECK(ok == 800 && bad == 0,
          "4 threads x 200 signatures%s: %d verify, %d fail (%.0f sig/s, %llu "
          "recoveries)",
          with_reinit ? " racing module re-initialisations" : "", ok, bad,
          800.0 / ((double)(b.tv_sec - a.tv_sec) +
                   (double)(b.tv_nsec - a.tv_nsec) / 1e9),
          (unsigned long long)st.recoveries);
    if (with_reinit) {
        CHECK(reinits >= 1, "%d module re-initialisations happened meanwhile",
              reinits);
    }
    CHECK(st.signatures == 800, "stats count %llu signatures",
          (unsigned long long)st.signatures);
    EVP_PKEY_free(pk);
    hsm_key_free(key);
}

static void
test_errors(void)
{
    struct hsm_module *m2 = NULL;
    struct hsm_key *key = NULL;
    struct pj_err err = {0};
    char uri[300], wrong[600], src[620], loose[600], lsrc[620];
    uint64_t before;
    pj_rc rc;

    rc = hsm_module_load("/nonexistent/libnope.so", &m2, &err);
    CHECK(rc == PJ_ERR_NOT_FOUND &&
              strcmp(err.msg, "module /nonexistent/libnope.so: no such "
                              "file") == 0,
          "missing module: %s", err.msg);
    pj_err_clear(&err);
    rc = hsm_module_load("/lib/x86_64-linux-gnu/libz.so.1", &m2, &err);
    CHECK(rc == PJ_ERR_INVALID &&
              strstr(err.msg, "not a PKCS#11 module (no C_GetFunctionList)") !=
                  NULL,
          "non-PKCS#11 library: %s", err.msg);

    snprintf(uri, sizeof(uri), "pkcs11:token=nope;object=sig");
    rc = open_key(uri, pin_src, 0, &key, &err);
    CHECK(rc == PJ_ERR_NOT_FOUND &&
              strstr(err.msg, "token 'nope' not found (tokens present: ") &&
              strstr(err.msg, token),
          "missing token: %s", err.msg);
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=nokey", token);
    rc = open_key(uri, pin_src, 0, &key, &err);
    CHECK(rc == PJ_ERR_NOT_FOUND &&
              strstr(err.msg, "no private key 'nokey' on token") &&
              strstr(err.msg, "'sig'"),
          "missing key lists keys present: %s", err.msg);
    snprintf(uri, sizeof(uri), "pkcs11:token=%s", token);
    rc = open_key(uri, pin_src, 0, &key, &err);
    CHECK(rc == PJ_ERR_INVALID && strstr(err.msg, "ambiguous") &&
              strstr(err.msg, "'sig'") && strstr(err.msg, "'other'"),
          "ambiguous key lists matches: %s", err.msg);
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=sig;type=cert", token);
    rc = open_key(uri, pin_src, 0, &key, &err);
    CHECK(rc == PJ_ERR_INVALID, "type=cert refused: %s", err.msg);
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=sig", token);
    rc = open_key(uri, NULL, 0, &key, &err);
    CHECK(rc == PJ_ERR_INVALID && strstr(err.msg, "needs a PIN"),
          "no PIN source: %s", err.msg);

    /* PIN file with a bad mode: refused before any C_Login. */
    snprintf(loose, sizeof(loose), "%s/loose.pin", dir);
    write_pin(loose, read_pin(), 0644);
    snprintf(lsrc, sizeof(lsrc), "file:%s", loose);
    before = hsm_module_test_login_calls(mod);
    rc = open_key(key_uri, lsrc, 0, &key, &err);
    CHECK(rc == PJ_ERR_DENIED && strstr(err.msg, "(mode 0644); chmod 600 it") &&
              hsm_module_test_login_calls(mod) == before,
          "PIN file mode 0644 refused, no login: %s", err.msg);

    /* Wrong PIN: PJ_ERR_PIN after exactly one C_Login. */
    snprintf(wrong, sizeof(wrong), "%s/wrong.pin", dir);
    write_pin(wrong, "99999999", 0600);
    snprintf(src, sizeof(src), "file:%s", wrong);
    close_all_sessions(); /* no login left over from earlier keys */
    before = hsm_module_test_login_calls(mod);
    rc = open_key(key_uri, src, 0, &key, &err);
    CHECK(rc == PJ_ERR_PIN && err.ckr == CKR_PIN_INCORRECT &&
              hsm_module_test_login_calls(mod) == before + 1 &&
              strstr(err.msg, "99999999") == NULL,
          "wrong PIN: PJ_ERR_PIN after one C_Login: %s", err.msg);
}

/*
 * A PIN rejected during recovery is never tried again: after the rejection
 * the PIN source is fixed, yet the key keeps failing fast without C_Login.
 */
static void
test_pin_not_retried_in_recovery(void)
{
    struct hsm_key *key = NULL;
    struct pj_err err = {0};
    char path[600], src[620], good[64];
    uint8_t sig[HSM_SIG_MAX];
    size_t siglen = sizeof(sig);
    uint64_t before;
    pj_rc rc;

    snprintf(good, sizeof(good), "%s", read_pin());
    snprintf(path, sizeof(path), "%s/rotating.pin", dir);
    write_pin(path, good, 0600);
    snprintf(src, sizeof(src), "file:%s", path);
    if (open_key(key_uri, src, 1, &key, &err) != PJ_OK) {
        CHECK(false, "hsm_key_open: %s", err.msg);
        return;
    }
    write_pin(path, "11111111", 0600);
    close_all_sessions();
    before = hsm_module_test_login_calls(mod);
    rc = hsm_key_sign(key, (const uint8_t *)"x", 1, sig, &siglen, &err);
    CHECK(rc == PJ_ERR_PIN && hsm_module_test_login_calls(mod) == before + 1,
          "re-login with a wrong PIN fails with PJ_ERR_PIN: %s", err.msg);
    write_pin(path, good, 0600);
    pj_err_clear(&err);
    siglen = sizeof(sig);
    rc = hsm_key_sign(key, (const uint8_t *)"x", 1, sig, &siglen, &err);
    CHECK(rc == PJ_ERR_PIN && hsm_module_test_login_calls(mod) == before + 1,
          "then fails fast without another C_Login (%llu logins)",
          (unsigned long long)(hsm_module_test_login_calls(mod) - before));
    hsm_key_free(key);
}

static void
test_certs(void)
{
    struct hsm_key *key = NULL;
    struct pj_err err = {0};
    EVP_PKEY *sw = EVP_RSA_gen(2048);
    X509 *x = X509_new();
    unsigned char *der = NULL;
    uint8_t *got = NULL;
    size_t gotlen = 0;
    char uri[300];
    int len;
    pj_rc rc;

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 4242);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"itest", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_set_pubkey(x, sw);
    X509_sign(x, sw, EVP_sha256());
    len = i2d_X509(x, &der);

    if (open_key(key_uri, pin_src, 1, &key, &err) != PJ_OK) {
        CHECK(false, "hsm_key_open: %s", err.msg);
        goto out;
    }
    rc = hsm_key_find_cert(key, &got, &gotlen, &err);
    CHECK(rc == PJ_ERR_NOT_FOUND, "no certificate yet: %s", err.msg);
    pj_err_clear(&err);
    rc = hsm_key_store_cert(key, der, (size_t)len, NULL, false, &err);
    CHECK(rc == PJ_OK, "store certificate%s%s", rc ? ": " : "", err.msg);
    rc = hsm_key_find_cert(key, &got, &gotlen, &err);
    CHECK(rc == PJ_OK && gotlen == (size_t)len && memcmp(got, der, gotlen) == 0,
          "find it beside the key, same DER");
    free(got);
    got = NULL;
    rc = hsm_key_store_cert(key, der, (size_t)len, NULL, false, &err);
    CHECK(rc == PJ_ERR_EXISTS, "second store refused: %s", err.msg);
    pj_err_clear(&err);
    rc = hsm_key_store_cert(key, der, (size_t)len, "sig-cert", true, &err);
    CHECK(rc == PJ_OK, "replace works%s%s", rc ? ": " : "", err.msg);
    rc = hsm_key_store_cert(key, der, 10, NULL, true, &err);
    CHECK(rc == PJ_ERR_CRYPTO, "truncated DER refused: %s", err.msg);
    pj_err_clear(&err);
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=sig-cert;type=cert",
             token);
    rc = hsm_cert_find(mod, uri, NULL, &got, &gotlen, &err);
    CHECK(rc == PJ_OK && gotlen == (size_t)len && memcmp(got, der, gotlen) == 0,
          "hsm_cert_find by URI without login%s%s", rc ? ": " : "", err.msg);
    free(got);
    got = NULL;
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=nocert;type=cert",
             token);
    rc = hsm_cert_find(mod, uri, NULL, &got, &gotlen, &err);
    CHECK(rc == PJ_ERR_NOT_FOUND && strstr(err.msg, "'sig-cert'"),
          "missing certificate lists those present: %s", err.msg);
out:
    hsm_key_free(key);
    OPENSSL_free(der);
    X509_free(x);
    EVP_PKEY_free(sw);
}

int
main(void)
{
    struct pj_err err = {0};
    struct hsm_keygen_opts ko = {0};
    char uri[300];

    module_path = getenv("P11JWT_TEST_MODULE");
    token = getenv("P11JWT_TEST_TOKEN");
    pin_file = getenv("P11JWT_TEST_PIN_FILE");
    dir = getenv("P11JWT_TEST_DIR");
    if (module_path == NULL || token == NULL || pin_file == NULL ||
        dir == NULL) {
        printf("FAIL: run through softhsm-run.sh (P11JWT_TEST_* unset)\n");
        return 1;
    }
    snprintf(pin_src, sizeof(pin_src), "file:%s", pin_file);
    snprintf(key_uri, sizeof(key_uri),
             "pkcs11:token=%s;object=sig;type=private", token);
    if (hsm_module_load(module_path, &mod, &err) != PJ_OK) {
        printf("FAIL: hsm_module_load: %s\n", err.msg);
        return 1;
    }
    ko.uri = key_uri;
    ko.pin_source = pin_src;
    if (hsm_keygen(mod, &ko, NULL, &err) != PJ_OK) {
        printf("FAIL: hsm_keygen: %s\n", err.msg);
        return 1;
    }
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=other", token);
    ko.uri = uri;
    if (hsm_keygen(mod, &ko, NULL, &err) != PJ_OK) {
        printf("FAIL: hsm_keygen: %s\n", err.msg);
        return 1;
    }
    test_sign_verify();
    test_threads(false);
    test_threads(true);
    test_errors();
    test_pin_not_retried_in_recovery();
    test_certs();
    hsm_module_free(mod);
    printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
    return failures ? 1 : 0;
}
