/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Recovery of the token layer (pkcs11/hsm.h) through the fault-injection
 * shim (tests/fakes/p11shim.c), inside a private SoftHSM2 token
 * (softhsm-run.sh). Part 1 checks the shim itself through raw Cryptoki, so
 * a broken shim cannot make the recovery tests pass. Part 2 opens one key
 * through the shim and, for each CKR class of the issue, injects the fault
 * and shows that hsm_key_sign recovers by itself (nothing is reopened by
 * the test), that the signature verifies against hsm_key_public_der, and,
 * from the shim's call counts, that the recovery took the right path (new
 * session, login, re-find, finalize + initialize). Part 3 signs from four
 * threads while faults are injected.
 *
 * Environment (softhsm-run.sh, ctest): P11JWT_TEST_MODULE, P11JWT_TEST_TOKEN,
 * P11JWT_TEST_PIN_FILE, P11JWT_TEST_DIR, P11JWT_SHIM.
 */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>

#include "core/pj_err.h"
#include "core/pj_log.h"
#include "core/pj_util.h"
#include "pkcs11/hsm.h"

static int passed;
static int failed;
static const char *test_name = "";

static void check_at(bool cond, int line, const char *fmt, ...) PJ_PRINTF(3, 4);

static void
check_at(bool cond, int line, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    if (cond) {
        passed++;
        printf("ok: %s: ", test_name);
        vprintf(fmt, ap);
        putchar('\n');
    } else {
        failed++;
        fprintf(stderr, "FAIL: %s (line %d): ", test_name, line);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
    }
    va_end(ap);
    fflush(stdout);
}

#define CHECK(cond, ...) check_at((cond), __LINE__, __VA_ARGS__)

static struct {
    const char *module;
    const char *token;
    const char *pin_file;
    const char *dir;
    const char *shim;
    char ctl[4096];
    char stats[4096];
    char uri[512];
    char pin_source[4200];
    char pin[64];
} env;

static const uint8_t msg[] = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJyZWNvdmVyeSJ9";

/* ---------------------------------------------------------------------- */
/* The shim's control and stats files                                      */

/* Replace the control file atomically (temp + rename: a new inode, so the
 * shim sees the change even within one timestamp tick). NULL clears it. */
static void
ctl_write(const char *text)
{
    char tmp[4200];
    FILE *f;

    if (text == NULL) {
        if (unlink(env.ctl) != 0 && errno != ENOENT) {
            fprintf(stderr, "cannot remove %s: %s\n", env.ctl, strerror(errno));
            exit(1);
        }
        return;
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp", env.ctl);
    f = fopen(tmp, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0 ||
        rename(tmp, env.ctl) != 0) {
        fprintf(stderr, "cannot write %s: %s\n", env.ctl, strerror(errno));
        exit(1);
    }
}

/* The shim's count for a stats line ("C_Login", "fault:C_Sign",
 * "closeall"), or the sum over lines starting with prefix when it ends in
 * ':' ("fault:"). */
static uint64_t
stat_get(const char *name)
{
    char line[256];
    uint64_t sum = 0;
    size_t nlen = strlen(name);
    bool prefix = nlen > 0 && name[nlen - 1] == ':';
    FILE *f = fopen(env.stats, "r");

    if (f == NULL) {
        return 0;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        char *sp = strchr(line, ' ');
        if (sp == NULL) {
            continue;
        }
        if ((prefix && strncmp(line, name, nlen) == 0) ||
            ((size_t)(sp - line) == nlen && strncmp(line, name, nlen) == 0)) {
            sum += strtoull(sp + 1, NULL, 10);
        }
    }
    fclose(f);
    return sum;
}

struct snap {
    uint64_t init, fin, open, login, find, faults, closeall, sign, violation;
};

static struct snap
snap_take(void)
{
    struct snap s = {
        .init = stat_get("C_Initialize"),
        .fin = stat_get("C_Finalize"),
        .open = stat_get("C_OpenSession"),
        .login = stat_get("C_Login"),
        .find = stat_get("C_FindObjectsInit"),
        .faults = stat_get("fault:"),
        .closeall = stat_get("closeall"),
        .sign = stat_get("C_Sign"),
        .violation = stat_get("violation"),
    };
    return s;
}

/* ---------------------------------------------------------------------- */
/* Part 1: the shim itself, through raw Cryptoki                           */

static int64_t
mono_ms(void)
{
    return pj_time_mono_ms();
}

static void
test_shim_direct(void)
{
    void *h;
    void *sym;
    CK_C_GetFunctionList get;
    CK_FUNCTION_LIST_PTR f = NULL;
    CK_C_INITIALIZE_ARGS ia = {.flags = CKF_OS_LOCKING_OK};
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16;
    CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
    CK_SESSION_INFO si;
    CK_MECHANISM mech = {CKM_SHA256_RSA_PKCS, NULL, 0};
    CK_ATTRIBUTE attr = {CKA_LABEL, NULL, 0};
    uint64_t before, fb;
    CK_RV rv;
    int64_t t0;

    test_name = "shim";
    h = dlopen(env.shim, RTLD_NOW | RTLD_LOCAL);
    CHECK(h != NULL, "dlopen %s", env.shim);
    if (h == NULL) {
        fprintf(stderr, "  %s\n", dlerror());
        return;
    }
    sym = dlsym(h, "C_GetFunctionList");
    memcpy(&get, &sym, sizeof(get));
    CHECK(sym != NULL && get(&f) == CKR_OK && f != NULL,
          "C_GetFunctionList through the shim");
    if (f == NULL) {
        dlclose(h);
        return;
    }
    ctl_write(NULL);
    CHECK(f->C_Initialize(&ia) == CKR_OK, "C_Initialize forwards");
    CHECK(f->C_GetSlotList(CK_TRUE, slots, &n) == CKR_OK && n >= 1,
          "C_GetSlotList forwards (%lu slots)", (unsigned long)n);
    CHECK(stat_get("C_GetSlotList") >= 1, "stats file counts C_GetSlotList");

    /* A sign fault: exactly count failures, and no leak into other scopes. */
    ctl_write("CKR_DEVICE_ERROR sign 2\n");
    n = 16;
    CHECK(f->C_GetSlotList(CK_TRUE, slots, &n) == CKR_OK,
          "a sign fault does not reach C_GetSlotList");
    CHECK(f->C_OpenSession(slots[0], CKF_SERIAL_SESSION, NULL, NULL, &s) ==
              CKR_OK,
          "a sign fault does not reach C_OpenSession");
    CHECK(f->C_FindObjectsInit(s, &attr, 0) == CKR_OK &&
              f->C_FindObjectsFinal(s) == CKR_OK,
          "a sign fault does not reach the find calls");
    fb = stat_get("fault:C_SignInit");
    CHECK(f->C_SignInit(s, &mech, 0) == CKR_DEVICE_ERROR,
          "1st C_SignInit gets CKR_DEVICE_ERROR");
    CHECK(f->C_Sign(s, NULL, 0, NULL, NULL) == CKR_DEVICE_ERROR,
          "2nd sign-scope call gets CKR_DEVICE_ERROR");
    rv = f->C_SignInit(s, &mech, 0);
    CHECK(rv != CKR_DEVICE_ERROR, "3rd call forwards (real answer 0x%lx)",
          (unsigned long)rv);
    CHECK(stat_get("fault:C_SignInit") == fb + 1, "stats count the faults");

    /* Rewriting the same text re-arms it (a new write = new directives). */
    ctl_write("CKR_DEVICE_ERROR sign 1\n");
    CHECK(f->C_SignInit(s, &mech, 0) == CKR_DEVICE_ERROR, "armed once");
    CHECK(f->C_SignInit(s, &mech, 0) != CKR_DEVICE_ERROR, "then spent");
    ctl_write("CKR_DEVICE_ERROR sign 1\n");
    CHECK(f->C_SignInit(s, &mech, 0) == CKR_DEVICE_ERROR,
          "the same text written again re-arms");

    /* Function scopes, '*', hex codes, find scope. */
    ctl_write("CKR_PIN_INCORRECT C_Login *\n0x1234 slot\n"
              "CKR_GENERAL_ERROR find *\n");
    CHECK(f->C_GetSessionInfo(s, &si) == CKR_OK,
          "a C_Login fault does not reach C_GetSessionInfo");
    for (int i = 0; i < 3; i++) {
        CHECK(f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR) "x", 1) ==
                  CKR_PIN_INCORRECT,
              "'*' fails C_Login every time (%d)", i + 1);
    }
    n = 16;
    CHECK(f->C_GetSlotList(CK_TRUE, slots, &n) == 0x1234,
          "0xHEX codes are injected as given");
    n = 16;
    CHECK(f->C_GetSlotList(CK_TRUE, slots, &n) == CKR_OK, "count 1 is spent");
    CHECK(f->C_FindObjectsInit(s, &attr, 0) == CKR_GENERAL_ERROR &&
              f->C_GetAttributeValue(s, 1, &attr, 1) == CKR_GENERAL_ERROR,
          "find scope covers C_FindObjectsInit and C_GetAttributeValue");
    CHECK(f->C_SignInit(s, &mech, 0) != CKR_GENERAL_ERROR,
          "a find fault does not reach C_SignInit");

    /* Bad lines are ignored (with a warning), good ones still apply. */
    ctl_write("bogus\nCKR_NO_SUCH sign\ndelay x sign\nCKR_OK nowhere\n"
              "CKR_DEVICE_REMOVED slot 0\nCKR_TOKEN_NOT_PRESENT slot\n");
    n = 16;
    CHECK(f->C_GetSlotList(CK_TRUE, slots, &n) == CKR_TOKEN_NOT_PRESENT,
          "bad lines are skipped, the good line applies");

    /* Delay. */
    ctl_write("delay 150 C_GetSlotList\n");
    t0 = mono_ms();
    n = 16;
    rv = f->C_GetSlotList(CK_TRUE, slots, &n);
    CHECK(rv == CKR_OK && mono_ms() - t0 >= 150, "delay 150 ms (took %lld)",
          (long long)(mono_ms() - t0));

    /* closeall closes the real sessions once. */
    before = stat_get("closeall");
    ctl_write("closeall\n");
    CHECK(f->C_GetSessionInfo(s, &si) == CKR_SESSION_HANDLE_INVALID,
          "closeall: the old session is gone");
    CHECK(stat_get("closeall") == before + 1, "closeall ran once");
    CHECK(f->C_OpenSession(slots[0], CKF_SERIAL_SESSION, NULL, NULL, &s) ==
                  CKR_OK &&
              f->C_GetSessionInfo(s, &si) == CKR_OK,
          "closeall runs once per write: a new session lives");

    /* Missing file: no faults. */
    ctl_write("CKR_DEVICE_ERROR all *\n");
    n = 16;
    CHECK(f->C_GetSlotList(CK_TRUE, slots, &n) == CKR_DEVICE_ERROR,
          "all covers slot");
    ctl_write(NULL);
    n = 16;
    CHECK(f->C_GetSlotList(CK_TRUE, slots, &n) == CKR_OK,
          "removing the control file clears every fault");

    (void)f->C_CloseSession(s);
    CHECK(f->C_Finalize(NULL) == CKR_OK, "C_Finalize forwards");
    dlclose(h);
}

/* ---------------------------------------------------------------------- */
/* Part 2: the token layer recovers                                         */

static EVP_PKEY *
public_key(struct hsm_key *key)
{
    struct pj_err err = {0};
    uint8_t *der = NULL;
    size_t len = 0;
    const unsigned char *p;
    EVP_PKEY *pkey = NULL;

    if (hsm_key_public_der(key, &der, &len, &err) != PJ_OK) {
        fprintf(stderr, "hsm_key_public_der: %s\n", err.msg);
        return NULL;
    }
    p = der;
    pkey = d2i_PUBKEY(NULL, &p, (long)len);
    free(der);
    return pkey;
}

static bool
verify(EVP_PKEY *pkey, const uint8_t *sig, size_t siglen)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx != NULL &&
              EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pkey) == 1 &&
              EVP_DigestVerify(ctx, sig, siglen, msg, sizeof(msg) - 1) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* Sign msg; PJ_OK only when the signature also verifies. */
static pj_rc
sign_verify(struct hsm_key *key, EVP_PKEY *pkey, struct pj_err *err)
{
    uint8_t sig[HSM_SIG_MAX];
    size_t siglen = sizeof(sig);
    pj_rc rc = hsm_key_sign(key, msg, sizeof(msg) - 1, sig, &siglen, err);

    if (rc != PJ_OK) {
        return rc;
    }
    if (!verify(pkey, sig, siglen)) {
        return pj_err_set(err, PJ_ERR_CRYPTO,
                          "hsm_key_sign returned a %zu-byte signature that "
                          "does not verify",
                          siglen);
    }
    return PJ_OK;
}

struct fixture {
    struct hsm_key *key;
    EVP_PKEY *pkey;
};

/* Open the key through the shim and sign once, with no fault armed. */
static bool
fixture_open(struct hsm_module *mod, struct fixture *fx)
{
    struct hsm_key_opts opts = {.uri = env.uri, .pin_source = env.pin_source};
    struct pj_err err = {0};

    memset(fx, 0, sizeof(*fx));
    ctl_write(NULL);
    if (hsm_key_open(mod, &opts, &fx->key, &err) != PJ_OK) {
        CHECK(false, "hsm_key_open: %s", err.msg);
        return false;
    }
    fx->pkey = public_key(fx->key);
    if (fx->pkey == NULL) {
        CHECK(false, "public key of the test key");
        return false;
    }
    /* Warm every pool session so that a fault hits a used session. */
    for (int i = 0; i < 8; i++) {
        if (sign_verify(fx->key, fx->pkey, &err) != PJ_OK) {
            CHECK(false, "sign with no fault armed: %s", err.msg);
            return false;
        }
    }
    return true;
}

static void
fixture_close(struct fixture *fx)
{
    ctl_write(NULL);
    hsm_key_free(fx->key);
    EVP_PKEY_free(fx->pkey);
    memset(fx, 0, sizeof(*fx));
}

enum path {
    PATH_SESSION, /* new session, no re-initialise */
    PATH_LOGIN,   /* log in again, no re-initialise */
    PATH_FIND,    /* find the key again, no re-initialise */
    PATH_REINIT,  /* C_Finalize + C_Initialize */
};

static const char *const path_name[] = {"new session", "login again",
                                        "find again", "finalize+initialize"};

/* Inject one fault of ckr in sign scope and check the recovery path. */
static void
test_one_fault(struct hsm_module *mod, const char *ckr, enum path path)
{
    struct fixture fx;
    struct pj_err err = {0};
    struct snap a, b;
    char line[128];
    pj_rc rc;

    test_name = ckr;
    if (!fixture_open(mod, &fx)) {
        fixture_close(&fx);
        return;
    }
    a = snap_take();
    snprintf(line, sizeof(line), "%s sign 1\n", ckr);
    ctl_write(line);
    rc = sign_verify(fx.key, fx.pkey, &err);
    b = snap_take();
    CHECK(b.faults == a.faults + 1, "the shim injected %s once", ckr);
    CHECK(rc == PJ_OK, "hsm_key_sign recovers by itself and verifies%s%s",
          rc ? ": " : "", err.msg);
    switch (path) {
    case PATH_SESSION:
        CHECK(b.open > a.open,
              "recovery opened a new session (%" PRIu64 " C_OpenSession)",
              b.open - a.open);
        break;
    case PATH_LOGIN:
        CHECK(b.login > a.login,
              "recovery logged in again (%" PRIu64 " C_Login)",
              b.login - a.login);
        break;
    case PATH_FIND:
        CHECK(b.find > a.find,
              "recovery found the key again (%" PRIu64 " C_FindObjectsInit)",
              b.find - a.find);
        break;
    case PATH_REINIT:
        CHECK(b.fin > a.fin && b.init > a.init,
              "recovery finalized and re-initialised (%" PRIu64
              " C_Finalize, %" PRIu64 " C_Initialize)",
              b.fin - a.fin, b.init - a.init);
        break;
    }
    if (path != PATH_REINIT) {
        CHECK(b.init == a.init,
              "%s is enough: no C_Initialize (%" PRIu64 " seen)",
              path_name[path], b.init - a.init);
    }
    /* Every session of the pool still works afterwards. */
    for (int i = 0; i < 8 && rc == PJ_OK; i++) {
        rc = sign_verify(fx.key, fx.pkey, &err);
    }
    CHECK(rc == PJ_OK, "8 more signatures after recovery%s%s", rc ? ": " : "",
          err.msg);
    fixture_close(&fx);
}

/* Every session closed underneath: new sessions and a new login. */
static void
test_closeall(struct hsm_module *mod)
{
    struct fixture fx;
    struct pj_err err = {0};
    struct snap a, b;
    pj_rc rc;

    test_name = "closeall";
    if (!fixture_open(mod, &fx)) {
        fixture_close(&fx);
        return;
    }
    a = snap_take();
    ctl_write("closeall\n");
    rc = sign_verify(fx.key, fx.pkey, &err);
    b = snap_take();
    CHECK(b.closeall == a.closeall + 1, "the shim closed all sessions");
    CHECK(rc == PJ_OK, "hsm_key_sign recovers%s%s", rc ? ": " : "", err.msg);
    CHECK(b.open > a.open, "a new session was opened");
    CHECK(b.login > a.login, "C_Login was called again (%" PRIu64 ")",
          b.login - a.login);
    CHECK(b.init == a.init, "no re-initialise needed");
    for (int i = 0; i < 8 && rc == PJ_OK; i++) {
        rc = sign_verify(fx.key, fx.pkey, &err);
    }
    CHECK(rc == PJ_OK, "every pool session works again%s%s", rc ? ": " : "",
          err.msg);
    fixture_close(&fx);
}

/* The digest entry point recovers the same way. */
static void
test_sign_digest(struct hsm_module *mod)
{
    struct fixture fx;
    struct pj_err err = {0};
    uint8_t digest[32];
    uint8_t sig[HSM_SIG_MAX];
    size_t siglen = sizeof(sig);
    EVP_PKEY_CTX *pctx = NULL;
    pj_rc rc;

    test_name = "sign_digest";
    if (!fixture_open(mod, &fx)) {
        fixture_close(&fx);
        return;
    }
    EVP_Digest(msg, sizeof(msg) - 1, digest, NULL, EVP_sha256(), NULL);
    ctl_write("closeall\nCKR_DEVICE_ERROR sign 1\n");
    rc = hsm_key_sign_digest(fx.key, digest, sig, &siglen, &err);
    CHECK(rc == PJ_OK, "hsm_key_sign_digest recovers%s%s", rc ? ": " : "",
          err.msg);
    if (rc == PJ_OK) {
        pctx = EVP_PKEY_CTX_new(fx.pkey, NULL);
        CHECK(pctx != NULL && EVP_PKEY_verify_init(pctx) == 1 &&
                  EVP_PKEY_CTX_set_signature_md(pctx, EVP_sha256()) == 1 &&
                  EVP_PKEY_verify(pctx, sig, siglen, digest, 32) == 1,
              "the digest signature verifies");
        EVP_PKEY_CTX_free(pctx);
    }
    fixture_close(&fx);
}

/* A device error that does not go away: a clear failure, then recovery. */
static void
test_persistent(struct hsm_module *mod, const char *name, const char *ctl,
                const char *ckr)
{
    struct fixture fx;
    struct pj_err err = {0};
    int64_t t0, took;
    pj_rc rc;

    test_name = name;
    if (!fixture_open(mod, &fx)) {
        fixture_close(&fx);
        return;
    }
    ctl_write(ctl);
    t0 = mono_ms();
    rc = sign_verify(fx.key, fx.pkey, &err);
    took = mono_ms() - t0;
    CHECK(rc == PJ_ERR_TOKEN, "hsm_key_sign fails with PJ_ERR_TOKEN (got %s)",
          pj_rc_str(rc));
    CHECK(strstr(err.msg, ckr) != NULL, "the error names %s: \"%s\"", ckr,
          err.msg);
    CHECK(took < 60000, "it gives up in bounded time (%lld ms)",
          (long long)took);
    /* Still failing: a second call also fails, cleanly. */
    pj_err_clear(&err);
    rc = sign_verify(fx.key, fx.pkey, &err);
    CHECK(rc != PJ_OK && err.msg[0] != '\0',
          "while the fault lasts, calls keep failing with a message");
    ctl_write(NULL);
    pj_err_clear(&err);
    rc = sign_verify(fx.key, fx.pkey, &err);
    CHECK(rc == PJ_OK, "after the fault clears, the next call succeeds%s%s",
          rc ? ": " : "", err.msg);
    for (int i = 0; i < 8 && rc == PJ_OK; i++) {
        rc = sign_verify(fx.key, fx.pkey, &err);
    }
    CHECK(rc == PJ_OK, "and so do 8 more%s%s", rc ? ": " : "", err.msg);
    fixture_close(&fx);
}

static void
test_delay(struct hsm_module *mod)
{
    struct fixture fx;
    struct pj_err err = {0};
    int64_t t0, took;
    pj_rc rc;

    test_name = "delay";
    if (!fixture_open(mod, &fx)) {
        fixture_close(&fx);
        return;
    }
    ctl_write("delay 300 sign\n");
    t0 = mono_ms();
    rc = sign_verify(fx.key, fx.pkey, &err);
    took = mono_ms() - t0;
    CHECK(rc == PJ_OK, "a slow token still signs%s%s", rc ? ": " : "", err.msg);
    CHECK(took >= 300, "the signature took >= 300 ms (%lld ms)",
          (long long)took);
    fixture_close(&fx);
}

/* A PIN rejected during recovery: stop, never log in again by itself. */
static void
test_pin_rejected(struct hsm_module *mod, const char *ckr, pj_rc want)
{
    struct fixture fx;
    struct pj_err err = {0};
    struct snap a, b;
    char ctl[128];
    pj_rc rc;

    test_name = ckr;
    if (!fixture_open(mod, &fx)) {
        fixture_close(&fx);
        return;
    }
    a = snap_take();
    snprintf(ctl, sizeof(ctl), "closeall\n%s C_Login *\n", ckr);
    ctl_write(ctl);
    rc = sign_verify(fx.key, fx.pkey, &err);
    b = snap_take();
    CHECK(rc == want, "hsm_key_sign fails with %s (got %s: %s)",
          pj_rc_str(want), pj_rc_str(rc), err.msg);
    CHECK(b.login == a.login + 1, "exactly one C_Login attempt (%" PRIu64 ")",
          b.login - a.login);
    CHECK(err.msg[0] != '\0' &&
              (strlen(env.pin) < 4 || strstr(err.msg, env.pin) == NULL),
          "a message without the PIN: \"%s\"", err.msg);
    /* The next request must not burn another PIN attempt either. */
    pj_err_clear(&err);
    rc = sign_verify(fx.key, fx.pkey, &err);
    b = snap_take();
    CHECK(rc != PJ_OK, "the next sign also fails (%s: %s)", pj_rc_str(rc),
          err.msg);
    CHECK(b.login == a.login + 1,
          "still exactly one C_Login attempt after a 2nd request (%" PRIu64 ")",
          b.login - a.login);
    fixture_close(&fx);
}

/* ---------------------------------------------------------------------- */
/* Part 3: four threads while faults are injected                          */

#define NTHREADS 4
#define PHASE2_SIGS 25

struct worker {
    pthread_t tid;
    struct fixture *fx;
    atomic_int *phase; /* 1: faults, 2: clean, 3: stop */
    unsigned ok, failed_clean, bad, phase2_ok, phase2_failed;
    char first_bad[PJ_ERR_MSG_MAX + 64];
    char first_p2[PJ_ERR_MSG_MAX + 64];
};

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    unsigned done2 = 0;

    for (;;) {
        int phase = atomic_load(w->phase);
        struct pj_err err = {0};
        pj_rc rc;

        if (phase == 3 || (phase == 2 && done2 >= PHASE2_SIGS)) {
            break;
        }
        rc = sign_verify(w->fx->key, w->fx->pkey, &err);
        if (phase == 2) {
            done2++;
            if (rc == PJ_OK) {
                w->phase2_ok++;
            } else if (w->phase2_failed++ == 0) {
                snprintf(w->first_p2, sizeof(w->first_p2), "%s: %s",
                         pj_rc_str(rc), err.msg);
            }
        } else if (rc == PJ_OK) {
            w->ok++;
        } else if (rc == PJ_ERR_CRYPTO || err.msg[0] == '\0') {
            /* a bad signature, or a failure nobody could act on */
            if (w->bad++ == 0) {
                snprintf(w->first_bad, sizeof(w->first_bad), "%s: '%s'",
                         pj_rc_str(rc), err.msg);
            }
        } else {
            w->failed_clean++;
        }
    }
    return NULL;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void
test_concurrent(struct hsm_module *mod)
{
    static const char *const script[] = {
        "closeall\n",
        "CKR_DEVICE_ERROR sign 2\n",
        "closeall\nCKR_SESSION_HANDLE_INVALID sign 3\n",
        "CKR_OBJECT_HANDLE_INVALID sign 2\n",
        "CKR_USER_NOT_LOGGED_IN sign 2\n",
        "CKR_DEVICE_REMOVED sign 1\ncloseall\n",
        "closeall\n",
        "CKR_GENERAL_ERROR sign 1\n",
        "CKR_TOKEN_NOT_PRESENT sign 2\n",
        "closeall\n",
    };
    struct fixture fx;
    struct worker w[NTHREADS];
    atomic_int phase = 1;
    struct snap a, b;
    unsigned ok = 0, clean = 0, bad = 0, p2ok = 0, p2fail = 0;
    int started = 0;

    test_name = "concurrent";
    if (!fixture_open(mod, &fx)) {
        fixture_close(&fx);
        return;
    }
    a = snap_take();
    memset(w, 0, sizeof(w));
    for (int i = 0; i < NTHREADS; i++) {
        w[i].fx = &fx;
        w[i].phase = &phase;
        if (pthread_create(&w[i].tid, NULL, worker_main, &w[i]) != 0) {
            break;
        }
        started++;
    }
    CHECK(started == NTHREADS, "%d threads started", started);
    sleep_ms(100);
    for (size_t i = 0; i < PJ_ARRAY_SIZE(script); i++) {
        ctl_write(script[i]);
        sleep_ms(150);
    }
    ctl_write(NULL);
    sleep_ms(100);
    b = snap_take();
    atomic_store(&phase, 2);
    for (int i = 0; i < started; i++) {
        pthread_join(w[i].tid, NULL);
        ok += w[i].ok;
        clean += w[i].failed_clean;
        bad += w[i].bad;
        p2ok += w[i].phase2_ok;
        p2fail += w[i].phase2_failed;
        if (w[i].bad != 0) {
            fprintf(stderr, "  thread %d first bad result: %s\n", i,
                    w[i].first_bad);
        }
        if (w[i].phase2_failed != 0) {
            fprintf(stderr, "  thread %d first failure after clearing: %s\n", i,
                    w[i].first_p2);
        }
    }
    printf("  under faults: %u verified, %u failed with a message, %u bad; "
           "shim injected %" PRIu64 " faults and %" PRIu64 " closealls\n",
           ok, clean, bad, b.faults - a.faults, b.closeall - a.closeall);
    CHECK(b.faults > a.faults && b.closeall > a.closeall,
          "faults were injected while the threads signed");
    CHECK(ok > 0, "signatures were made under faults (%u)", ok);
    CHECK(b.violation == a.violation,
          "no call used a session another thread was using (%" PRIu64
          " violations; see p11shim's stderr)",
          b.violation - a.violation);
    CHECK(bad == 0,
          "every result under faults verified or failed with a message "
          "(%u bad)",
          bad);
    CHECK(p2fail == 0 && p2ok == (unsigned)started * PHASE2_SIGS,
          "after clearing, all %u signatures succeed (%u failed)", p2ok,
          p2fail);
    fixture_close(&fx);
}

/* ---------------------------------------------------------------------- */

static bool
env_get(const char *name, const char **out)
{
    *out = getenv(name);
    if (*out == NULL || **out == '\0') {
        fprintf(stderr,
                "FAIL: %s is not set: run through ctest (softhsm-run.sh)\n",
                name);
        return false;
    }
    return true;
}

static bool
setup(void)
{
    FILE *f;

    if (!env_get("P11JWT_TEST_MODULE", &env.module) ||
        !env_get("P11JWT_TEST_TOKEN", &env.token) ||
        !env_get("P11JWT_TEST_PIN_FILE", &env.pin_file) ||
        !env_get("P11JWT_TEST_DIR", &env.dir) ||
        !env_get("P11JWT_SHIM", &env.shim)) {
        return false;
    }
    snprintf(env.ctl, sizeof(env.ctl), "%s/shim.ctl", env.dir);
    snprintf(env.stats, sizeof(env.stats), "%s/shim.stats", env.dir);
    snprintf(env.uri, sizeof(env.uri),
             "pkcs11:token=%s;object=recovery;type=private", env.token);
    snprintf(env.pin_source, sizeof(env.pin_source), "file:%s", env.pin_file);
    f = fopen(env.pin_file, "r");
    if (f != NULL) {
        if (fgets(env.pin, sizeof(env.pin), f) != NULL) {
            env.pin[strcspn(env.pin, "\r\n")] = '\0';
        }
        fclose(f);
    }
    setenv("P11SHIM_MODULE", env.module, 1);
    setenv("P11SHIM_CTL", env.ctl, 1);
    setenv("P11SHIM_STATS", env.stats, 1);
    ctl_write(NULL);
    return true;
}

/* The key, generated on the token through the real module. */
static bool
keygen(void)
{
    struct hsm_module *mod = NULL;
    struct hsm_keygen_opts opts = {
        .uri = env.uri, .pin_source = env.pin_source, .bits = 2048};
    struct pj_err err = {0};
    pj_rc rc;

    test_name = "keygen";
    rc = hsm_module_load(env.module, &mod, &err);
    if (rc == PJ_OK) {
        rc = hsm_keygen(mod, &opts, NULL, &err);
    }
    hsm_module_free(mod);
    CHECK(rc == PJ_OK, "hsm_keygen on the real module%s%s", rc ? ": " : "",
          err.msg);
    return rc == PJ_OK;
}

int
main(void)
{
    static const struct {
        const char *ckr;
        enum path path;
    } faults[] = {
        {"CKR_SESSION_HANDLE_INVALID", PATH_SESSION},
        {"CKR_SESSION_CLOSED", PATH_SESSION},
        {"CKR_USER_NOT_LOGGED_IN", PATH_LOGIN},
        {"CKR_OBJECT_HANDLE_INVALID", PATH_FIND},
        {"CKR_KEY_HANDLE_INVALID", PATH_FIND},
        {"CKR_DEVICE_ERROR", PATH_REINIT},
        {"CKR_DEVICE_REMOVED", PATH_REINIT},
        {"CKR_GENERAL_ERROR", PATH_REINIT},
        {"CKR_TOKEN_NOT_PRESENT", PATH_REINIT},
    };
    struct hsm_module *mod = NULL;
    struct pj_err err = {0};

    pj_log_init("itest_pkcs11_recovery", false, PJ_LOG_INFO);
    if (!setup()) {
        return 1;
    }
    test_shim_direct();
    if (!keygen()) {
        goto out;
    }
    test_name = "load";
    if (hsm_module_load(env.shim, &mod, &err) != PJ_OK) {
        CHECK(false, "hsm_module_load(shim): %s", err.msg);
        goto out;
    }
    for (size_t i = 0; i < PJ_ARRAY_SIZE(faults); i++) {
        test_one_fault(mod, faults[i].ckr, faults[i].path);
    }
    test_closeall(mod);
    test_sign_digest(mod);
    test_persistent(mod, "persistent sign", "CKR_DEVICE_ERROR sign *\n",
                    "CKR_DEVICE_ERROR");
    test_persistent(mod, "persistent all", "CKR_DEVICE_REMOVED all *\n",
                    "CKR_DEVICE_REMOVED");
    test_delay(mod);
    test_pin_rejected(mod, "CKR_PIN_INCORRECT", PJ_ERR_PIN);
    test_pin_rejected(mod, "CKR_PIN_LOCKED", PJ_ERR_PIN_LOCKED);
    test_concurrent(mod);
    test_name = "contract";
    CHECK(stat_get("violation") == 0,
          "no session was used by two threads at once in any test");
out:
    ctl_write(NULL);
    hsm_module_free(mod);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
