/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The token layer on a TPM token (tpm2-pkcs11 on swtpm), in one process:
 * driven by tests/integration/test_tpm.sh, which owns swtpm and restarts or
 * stops it when this program asks (research/pkcs11.md 8.1: after a TPM
 * reset tpm2-pkcs11 answers CKR_GENERAL_ERROR and only C_Finalize +
 * C_Initialize recovers).
 *
 *   tpm_restart DIR MODULE URI PINFILE        the checks below
 *   tpm_restart --exit-without-free MODULE URI PINFILE
 *                                             sign, then exit() with the key
 *                                             and module still open
 *
 * Handshake with the script: the program creates DIR/<step>.ready and
 * waits for DIR/<step>.go, which the script creates after it has done the
 * step (restart, stop, start) to swtpm.
 *
 * Checks: info reports a TPM with its public area; a signature before and
 * after a swtpm restart (same bytes, counted as a recovery, nothing
 * reopened by the test); a TPM that stays down fails within a bounded time
 * and the next call after it is back succeeds; four threads signing at
 * once all succeed through the TPM gate; a caller that cannot get the TPM
 * within the wait gets PJ_ERR_TIMEOUT "TPM busy"; after CKA_EXTRACTABLE is
 * flipped to TRUE through PKCS#11 (tpm2-pkcs11 allows it, pitfall 9) the
 * key is still judged bound by its TPM public area.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "core/pj_err.h"
#include "core/pj_util.h"
#include "pkcs11/hsm.h"
#include "pkcs11/internal.h"

static int passed;
static int failed;

static void check_at(bool cond, int line, const char *fmt, ...) PJ_PRINTF(3, 4);

static void
check_at(bool cond, int line, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    if (cond) {
        passed++;
        printf("ok: ");
        vprintf(fmt, ap);
        putchar('\n');
    } else {
        failed++;
        fprintf(stderr, "FAIL (tpm_restart.c:%d): ", line);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
    }
    va_end(ap);
    fflush(stdout);
    fflush(stderr);
}

#define CHECK(cond, ...) check_at((cond), __LINE__, __VA_ARGS__)

static const char *dir;

/* Ask the script to do STEP to swtpm and wait until it has (at most 60 s). */
static bool
step(const char *name)
{
    char ready[4096], go[4096];
    struct stat st;
    FILE *f;
    int i;

    snprintf(ready, sizeof(ready), "%s/%s.ready", dir, name);
    snprintf(go, sizeof(go), "%s/%s.go", dir, name);
    if ((f = fopen(ready, "w")) == NULL) {
        return false;
    }
    fclose(f);
    for (i = 0; i < 600; i++) {
        if (stat(go, &st) == 0) {
            return true;
        }
        usleep(100 * 1000);
    }
    fprintf(stderr, "FAIL: the script did not do '%s' within 60 s\n", name);
    return false;
}

static const uint8_t msg[] = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ0cG0ifQ";

static pj_rc
sign(struct hsm_key *key, uint8_t *sig, size_t *siglen, struct pj_err *err)
{
    *siglen = HSM_SIG_MAX;
    pj_err_clear(err);
    return hsm_key_sign(key, msg, sizeof(msg) - 1, sig, siglen, err);
}

/* Does sig verify over msg with the key's public half (OpenSSL, not us)? */
static bool
verifies(struct hsm_key *key, const uint8_t *sig, size_t siglen)
{
    uint8_t *der = NULL;
    const unsigned char *p;
    size_t len = 0;
    EVP_PKEY *pk = NULL;
    EVP_MD_CTX *md = NULL;
    struct pj_err err = {0};
    bool ok = false;

    if (hsm_key_public_der(key, &der, &len, &err) != PJ_OK) {
        fprintf(stderr, "  public key: %s\n", err.msg);
        return false;
    }
    p = der;
    if ((pk = d2i_PUBKEY(NULL, &p, (long)len)) != NULL &&
        (md = EVP_MD_CTX_new()) != NULL &&
        EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pk) == 1 &&
        EVP_DigestVerify(md, sig, siglen, msg, sizeof(msg) - 1) == 1) {
        ok = true;
    }
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pk);
    free(der);
    return ok;
}

static int64_t
now_ms(void)
{
    return pj_time_mono_ms();
}

struct worker {
    struct hsm_key *key;
    int ok;
    int n;
};

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    uint8_t sig[HSM_SIG_MAX];
    size_t siglen;
    struct pj_err err;
    int i;

    for (i = 0; i < w->n; i++) {
        if (sign(w->key, sig, &siglen, &err) == PJ_OK &&
            verifies(w->key, sig, siglen)) {
            w->ok++;
        } else {
            fprintf(stderr, "  thread sign: %s\n", err.msg);
        }
    }
    return NULL;
}

/* An operation that keeps the TPM for a while (holds the gate). */
static pj_rc
op_hold(struct hsm_key *key, const struct hsm_ready *r, void *arg,
        struct pj_err *err)
{
    (void)key;
    (void)r;
    (void)err;
    usleep(*(unsigned *)arg * 1000);
    return PJ_OK;
}

struct holder {
    struct hsm_key *key;
    unsigned ms;
    pj_rc rc;
};

static void *
holder_main(void *arg)
{
    struct holder *h = arg;
    struct pj_err err = {0};

    h->rc = hsm_key_run(h->key, op_hold, &h->ms, &err);
    return NULL;
}

/* A TPM2B_PUBLIC for an RSA-2048 key; sym and scheme NULL unless asked. */
static size_t
tpm2b_rsa(uint8_t *b, uint32_t attrs, bool sym, bool scheme, uint16_t bits,
          uint16_t nlen)
{
    size_t o = 2, i;

    b[o++] = 0x00, b[o++] = 0x01; /* TPM_ALG_RSA */
    b[o++] = 0x00, b[o++] = 0x0b; /* sha256 */
    b[o++] = (uint8_t)(attrs >> 24), b[o++] = (uint8_t)(attrs >> 16);
    b[o++] = (uint8_t)(attrs >> 8), b[o++] = (uint8_t)attrs;
    b[o++] = 0x00, b[o++] = 0x00; /* authPolicy: empty */
    if (sym) {
        b[o++] = 0x00, b[o++] = 0x06; /* AES */
        b[o++] = 0x00, b[o++] = 0x80, b[o++] = 0x00, b[o++] = 0x43;
    } else {
        b[o++] = 0x00, b[o++] = 0x10;
    }
    if (scheme) {
        b[o++] = 0x00, b[o++] = 0x14; /* RSASSA */
        b[o++] = 0x00, b[o++] = 0x0b;
    } else {
        b[o++] = 0x00, b[o++] = 0x10;
    }
    b[o++] = (uint8_t)(bits >> 8), b[o++] = (uint8_t)bits;
    b[o++] = 0, b[o++] = 0, b[o++] = 0, b[o++] = 0; /* exponent: default */
    b[o++] = (uint8_t)(nlen >> 8), b[o++] = (uint8_t)nlen;
    for (i = 0; i < nlen; i++) {
        b[o++] = (uint8_t)(i | 0x80);
    }
    b[0] = (uint8_t)((o - 2) >> 8), b[1] = (uint8_t)(o - 2);
    return o;
}

/* hsm_tpm2b_public_parse on good and bad input (it parses token data). */
static void
parser_checks(void)
{
    uint8_t b[600];
    const uint8_t *m = NULL;
    size_t len, mlen = 0, cut;
    uint32_t a = 0;
    bool any = false;

    len = tpm2b_rsa(b, 0x00060072, false, false, 2048, 256);
    CHECK(hsm_tpm2b_public_parse(b, len, &a, &m, &mlen) && a == 0x00060072 &&
              mlen == 256 && m == b + len - 256,
          "parser: RSA-2048 public area: attributes and modulus");
    len = tpm2b_rsa(b, 0x00040072, true, true, 2048, 256);
    CHECK(hsm_tpm2b_public_parse(b, len, &a, &m, &mlen) && a == 0x00040072,
          "parser: with a symmetric algorithm and a signing scheme");
    len = tpm2b_rsa(b, 0x00060072, false, false, 2048, 256);
    for (cut = 0; cut < len; cut++) {
        any = any || hsm_tpm2b_public_parse(b, cut, &a, &m, &mlen);
    }
    CHECK(!any, "parser: every truncation is refused");
    CHECK(!hsm_tpm2b_public_parse(NULL, 0, &a, NULL, NULL),
          "parser: no input is refused");
    b[len] = 0;
    CHECK(!hsm_tpm2b_public_parse(b, len + 1, &a, NULL, NULL),
          "parser: a trailing byte is refused");
    b[1] ^= 1;
    CHECK(!hsm_tpm2b_public_parse(b, len, &a, NULL, NULL),
          "parser: a wrong outer size is refused");
    len = tpm2b_rsa(b, 0x00060072, false, false, 2048, 256);
    b[3] = 0x23; /* TPM_ALG_ECC */
    CHECK(!hsm_tpm2b_public_parse(b, len, &a, NULL, NULL),
          "parser: a non-RSA key is refused");
    len = tpm2b_rsa(b, 0x00060072, false, false, 3072, 256);
    CHECK(!hsm_tpm2b_public_parse(b, len, &a, NULL, NULL),
          "parser: keyBits that disagree with the modulus are refused");
    len = tpm2b_rsa(b, 0x00060072, false, false, 0, 0);
    CHECK(!hsm_tpm2b_public_parse(b, len, &a, NULL, NULL),
          "parser: an empty modulus is refused");
}

static int
exit_without_free(const char *module, const char *uri, const char *pin_file)
{
    struct hsm_module *mod = NULL;
    struct hsm_key *key = NULL;
    struct hsm_key_opts o = {0};
    struct pj_err err = {0};
    char src[4200];
    uint8_t sig[HSM_SIG_MAX];
    size_t siglen;

    snprintf(src, sizeof(src), "file:%s", pin_file);
    o.uri = uri;
    o.pin_source = src;
    if (hsm_module_load(module, &mod, &err) != PJ_OK ||
        hsm_key_open(mod, &o, &key, &err) != PJ_OK ||
        sign(key, sig, &siglen, &err) != PJ_OK) {
        fprintf(stderr, "FAIL: %s\n", err.msg);
        return 1;
    }
    printf("ok: signed; exiting with the module still initialised\n");
    fflush(stdout);
    exit(0); /* no hsm_key_free, no hsm_module_free: the atexit hook */
}

int
main(int argc, char **argv)
{
    struct hsm_module *mod = NULL;
    struct hsm_key *key = NULL;
    struct hsm_key_opts o = {0};
    struct hsm_key_info info;
    struct hsm_stats st0, st1;
    struct pj_err err = {0};
    char src[4200];
    const char *why = "";
    bool bound;
    uint8_t s1[HSM_SIG_MAX], s2[HSM_SIG_MAX];
    size_t l1 = 0, l2 = 0;
    int64_t t0;
    pj_rc rc;

    if (argc == 5 && strcmp(argv[1], "--exit-without-free") == 0) {
        return exit_without_free(argv[2], argv[3], argv[4]);
    }
    if (argc != 5) {
        fprintf(stderr, "usage: tpm_restart DIR MODULE URI PINFILE\n");
        return 2;
    }
    dir = argv[1];
    parser_checks();
    snprintf(src, sizeof(src), "file:%s", argv[4]);
    o.uri = argv[3];
    o.pin_source = src;
    if (hsm_module_load(argv[2], &mod, &err) != PJ_OK ||
        hsm_key_open(mod, &o, &key, &err) != PJ_OK) {
        fprintf(stderr, "FAIL: opening the TPM key: %s\n", err.msg);
        hsm_key_free(key);
        hsm_module_free(mod);
        return 1;
    }

    /* ---- what the key is ------------------------------------------- */
    rc = hsm_key_get_info(key, &info, &err);
    CHECK(rc == PJ_OK, "hsm_key_get_info%s%s", rc ? ": " : "", err.msg);
    CHECK(info.tpm, "the token is recognised as a TPM (model '%s')",
          info.token_model);
    CHECK(info.tpm_area && info.tpm_fixed_tpm && info.tpm_fixed_parent &&
              info.tpm_sensitive_data_origin,
          "TPM public area read: fixedTPM %d fixedParent %d "
          "sensitiveDataOrigin %d (TPMA_OBJECT 0x%08x)",
          info.tpm_fixed_tpm, info.tpm_fixed_parent,
          info.tpm_sensitive_data_origin, (unsigned)info.tpm_object_attributes);
    bound = hsm_key_info_bound(&info, &why);
    CHECK(bound && strstr(why, "TPM public area") != NULL,
          "judged bound by the TPM public area: %s", why);

    /* ---- swtpm restarted between two signatures --------------------- */
    rc = sign(key, s1, &l1, &err);
    CHECK(rc == PJ_OK && verifies(key, s1, l1), "sign before the restart%s%s",
          rc ? ": " : "", err.msg);
    hsm_key_get_stats(key, &st0);
    if (!step("restart")) {
        goto out;
    }
    t0 = now_ms();
    rc = sign(key, s2, &l2, &err);
    hsm_key_get_stats(key, &st1);
    CHECK(rc == PJ_OK,
          "sign after the swtpm restart, same process, nothing "
          "reopened (%" PRId64 " ms)%s%s",
          now_ms() - t0, rc ? ": " : "", err.msg);
    CHECK(rc == PJ_OK && l1 == l2 && memcmp(s1, s2, l1) == 0 &&
              verifies(key, s2, l2),
          "the same signature bytes as before the restart, and it verifies");
    CHECK(st1.recoveries > st0.recoveries,
          "counted as a recovery (%" PRIu64 " -> %" PRIu64 ")", st0.recoveries,
          st1.recoveries);
    rc = sign(key, s2, &l2, &err);
    CHECK(rc == PJ_OK, "the next signature needs no recovery%s%s",
          rc ? ": " : "", err.msg);

    /* ---- swtpm down, then back ------------------------------------- */
    if (!step("stop")) {
        goto out;
    }
    t0 = now_ms();
    rc = sign(key, s2, &l2, &err);
    CHECK(rc == PJ_ERR_TOKEN,
          "sign with the TPM down fails with "
          "PJ_ERR_TOKEN (got %s: %s)",
          pj_rc_str(rc), err.msg);
    CHECK(now_ms() - t0 < 15000,
          "and gives up in bounded time (%" PRId64 " ms)", now_ms() - t0);
    CHECK(strstr(err.msg, "re-initialisation") != NULL &&
              strstr(err.msg, "C_Initialize") != NULL &&
              strstr(err.msg, "TPM") != NULL,
          "the message names the re-initialisations, the failing "
          "C_Initialize and the TPM: %s",
          err.msg);
    if (!step("start")) {
        goto out;
    }
    rc = sign(key, s2, &l2, &err);
    CHECK(rc == PJ_OK && l1 == l2 && memcmp(s1, s2, l1) == 0,
          "the next call after the TPM is back signs%s%s", rc ? ": " : "",
          err.msg);

    /* ---- concurrent signers queue at the TPM gate ------------------- */
    {
        struct worker w[4];
        pthread_t th[4];
        int i, ok = 0;

        for (i = 0; i < 4; i++) {
            w[i] = (struct worker){key, 0, 5};
            pthread_create(&th[i], NULL, worker_main, &w[i]);
        }
        for (i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            ok += w[i].ok;
        }
        CHECK(ok == 20,
              "4 threads x 5 signatures through the gate: %d/20 "
              "signed and verified",
              ok);
    }
    {
        struct holder h = {key, 1500, PJ_ERR_INTERNAL};
        pthread_t th;

        hsm_module_test_tpm_wait(mod, 200);
        pthread_create(&th, NULL, holder_main, &h);
        usleep(300 * 1000); /* the holder is inside by now */
        t0 = now_ms();
        rc = sign(key, s2, &l2, &err);
        CHECK(rc == PJ_ERR_TIMEOUT && strstr(err.msg, "TPM busy") != NULL,
              "a caller that cannot get the TPM within 200 ms: %s (%s)",
              pj_rc_str(rc), err.msg);
        CHECK(now_ms() - t0 < 1200,
              "and is told so without waiting for the "
              "holder (%" PRId64 " ms)",
              now_ms() - t0);
        pthread_join(th, NULL);
        CHECK(h.rc == PJ_OK, "the holder finished normally");
        hsm_module_test_tpm_wait(mod, 5000);
        rc = sign(key, s2, &l2, &err);
        CHECK(rc == PJ_OK, "the TPM serves again after the holder left%s%s",
              rc ? ": " : "", err.msg);
    }

    /* ---- pitfall 9: PKCS#11 flags are not evidence ------------------ */
    {
        CK_FUNCTION_LIST *fl = hsm_module_functions(mod);
        CK_SLOT_ID slots[8];
        CK_ULONG n = 8;
        CK_SESSION_HANDLE s;
        CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
        CK_ATTRIBUTE find[2] = {{CKA_CLASS, &cls, sizeof(cls)},
                                {CKA_LABEL, info.label, strlen(info.label)}};
        CK_OBJECT_HANDLE obj;
        CK_ULONG got = 0;
        CK_BBOOL yes = CK_TRUE;
        CK_ATTRIBUTE flip = {CKA_EXTRACTABLE, &yes, sizeof(yes)};
        CK_RV rv = CKR_GENERAL_ERROR;

        if (fl->C_GetSlotList(CK_TRUE, slots, &n) == CKR_OK && n > 0 &&
            fl->C_OpenSession(slots[0], CKF_SERIAL_SESSION | CKF_RW_SESSION,
                              NULL, NULL, &s) == CKR_OK) {
            if (fl->C_FindObjectsInit(s, find, 2) == CKR_OK) {
                (void)fl->C_FindObjects(s, &obj, 1, &got);
                (void)fl->C_FindObjectsFinal(s);
            }
            if (got == 1) {
                rv = fl->C_SetAttributeValue(s, obj, &flip, 1);
            }
            (void)fl->C_CloseSession(s);
        }
        if (rv == CKR_OK) {
            rc = hsm_key_get_info(key, &info, &err);
            CHECK(rc == PJ_OK && info.extractable,
                  "tpm2-pkcs11 let CKA_EXTRACTABLE be set to TRUE");
            bound = hsm_key_info_bound(&info, &why);
            CHECK(bound, "still judged bound by the TPM public area: %s", why);
        } else {
            /* A later tpm2-pkcs11 may refuse the flip: nothing to show. */
            CHECK(true, "tpm2-pkcs11 refused to flip CKA_EXTRACTABLE (%s)",
                  hsm_ckr_name(rv));
        }
    }

out:
    hsm_key_free(key);
    hsm_module_free(mod);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
