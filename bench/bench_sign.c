/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Signatures per second of the token layer (hsm_key_sign from N threads)
 * next to a plain C_Sign loop written directly against the module's
 * function list (one session per thread, CKM_SHA256_RSA_PKCS), on the same
 * token, key and thread count, in the same process. Rounds alternate
 * plain/layer (and swap which goes first each round) so that a noisy
 * machine slows both alike; the medians and their ratio are printed with
 * the target (layer >= 0.97 x plain). Run by bench/run.sh; never a test.
 *
 *   bench_sign --module PATH --token LABEL --label KEY --pin-file PATH
 *              [--threads N] [--rounds R] [--seconds S]
 */
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

#include "core/pj_err.h"
#include "core/pj_secret.h"
#include "core/pj_util.h"
#include "pkcs11/hsm.h"

#define BENCH_TARGET 0.97
#define BENCH_MAX_THREADS 64
#define BENCH_MAX_ROUNDS 50

/* A JWS signing input of the size p11jwt signs (header.claims). */
static const char bench_msg[] =
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiIzTVZHOUJlbmNobWFya0N"
    "saWVudElkRm9yUDExand0QmVuY2giLCJzdWIiOiJpbnRlZ3JhdGlvbkBleGFtcGxlLmNv"
    "bSIsImF1ZCI6Imh0dHBzOi8vbG9naW4uc2FsZXNmb3JjZS5jb20iLCJleHAiOjE3MDAw"
    "MDAzMDAsImp0aSI6IjBhMWIyYzNkNGU1ZjY3ODkwYTFiMmMzZDRlNWY2Nzg5In0";

struct bench_opts {
    const char *module;
    const char *token;
    const char *label;
    const char *pin_file;
    unsigned threads;
    unsigned rounds;
    double seconds;
};

/* The plain path: the module's own function list, no layer in between. */
struct plain {
    CK_FUNCTION_LIST_PTR f;
    void *dl;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE sess[BENCH_MAX_THREADS];
    CK_OBJECT_HANDLE key[BENCH_MAX_THREADS];
    unsigned nsess;
};

enum mode { MODE_PLAIN, MODE_LAYER };

struct run {
    enum mode mode;
    struct plain *plain;
    struct hsm_key *key;
    atomic_int go;   /* 0 wait, 1 run, 2 stop */
    atomic_int fail; /* a signature failed: the run is invalid */
    char fail_msg[PJ_ERR_MSG_MAX];
    pthread_mutex_t fail_lock;
};

struct worker {
    struct run *run;
    unsigned idx;
    uint64_t count;
    double cpu; /* seconds of this thread's CPU time in the run */
    pthread_t tid;
};

static double
thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void run_fail(struct run *r, const char *fmt, ...) PJ_PRINTF(2, 3);

static void
run_fail(struct run *r, const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&r->fail_lock);
    if (atomic_load(&r->fail) == 0) {
        va_start(ap, fmt);
        vsnprintf(r->fail_msg, sizeof(r->fail_msg), fmt, ap);
        va_end(ap);
        atomic_store(&r->fail, 1);
    }
    pthread_mutex_unlock(&r->fail_lock);
}

static const char *
ckr(CK_RV rv)
{
    return hsm_ckr_name(rv);
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->run;
    const uint8_t *msg = (const uint8_t *)bench_msg;
    size_t len = sizeof(bench_msg) - 1;
    CK_MECHANISM mech = {CKM_SHA256_RSA_PKCS, NULL, 0};
    double cpu0;

    while (atomic_load(&r->go) == 0) {
        /* spin: every thread starts within microseconds of the others */
    }
    cpu0 = thread_cpu_s();
    while (atomic_load(&r->go) == 1) {
        uint8_t sig[HSM_SIG_MAX];
        if (r->mode == MODE_LAYER) {
            struct pj_err err = {0};
            size_t siglen = sizeof(sig);
            if (hsm_key_sign(r->key, msg, len, sig, &siglen, &err) != PJ_OK) {
                run_fail(r, "hsm_key_sign: %s", err.msg);
                break;
            }
        } else {
            CK_FUNCTION_LIST_PTR f = r->plain->f;
            CK_SESSION_HANDLE s = r->plain->sess[w->idx];
            CK_ULONG siglen = sizeof(sig);
            CK_RV rv = f->C_SignInit(s, &mech, r->plain->key[w->idx]);
            if (rv == CKR_OK) {
                rv =
                    f->C_Sign(s, (CK_BYTE_PTR)msg, (CK_ULONG)len, sig, &siglen);
            }
            if (rv != CKR_OK) {
                run_fail(r, "plain C_Sign: %s", ckr(rv));
                break;
            }
        }
        w->count++;
    }
    w->cpu = thread_cpu_s() - cpu0;
    return NULL;
}

/*
 * One timed run of one mode; returns signatures/s, or < 0 on failure.
 * *cpu_us gets the CPU time per signature (all threads), which a loaded
 * machine disturbs far less than the wall-clock rate.
 */
static double
bench_run(enum mode mode, struct plain *plain, struct hsm_key *key,
          unsigned threads, double seconds, double *cpu_us)
{
    double cpu = 0;
    struct run r = {.mode = mode, .plain = plain, .key = key};
    struct worker w[BENCH_MAX_THREADS];
    struct timespec ts;
    uint64_t total = 0;
    unsigned started = 0;
    double t0, t1;

    atomic_init(&r.go, 0);
    atomic_init(&r.fail, 0);
    pthread_mutex_init(&r.fail_lock, NULL);
    memset(w, 0, sizeof(w));
    for (unsigned i = 0; i < threads; i++) {
        w[i].run = &r;
        w[i].idx = i;
        if (pthread_create(&w[i].tid, NULL, worker_main, &w[i]) != 0) {
            fprintf(stderr, "bench_sign: cannot start thread %u\n", i);
            break;
        }
        started++;
    }
    t0 = now_s();
    atomic_store(&r.go, started == threads ? 1 : 2);
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (started == threads && nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    atomic_store(&r.go, 2);
    for (unsigned i = 0; i < started; i++) {
        pthread_join(w[i].tid, NULL);
        total += w[i].count;
        cpu += w[i].cpu;
    }
    /* The last signature of each thread ends after the stop flag, so the
     * window closes at the join: at most one signature (< 1 ms) longer. */
    t1 = now_s();
    pthread_mutex_destroy(&r.fail_lock);
    if (started != threads) {
        return -1;
    }
    if (atomic_load(&r.fail)) {
        fprintf(stderr, "bench_sign: %s\n", r.fail_msg);
        return -1;
    }
    if (cpu_us != NULL) {
        *cpu_us = total > 0 ? cpu * 1e6 / (double)total : 0;
    }
    return (double)total / (t1 - t0);
}

/* Find the token by label and open one logged-in session per thread. */
static pj_rc
plain_open(struct plain *p, const struct bench_opts *o,
           const struct pj_secret *pin, struct pj_err *err)
{
    CK_C_INITIALIZE_ARGS ia = {.flags = CKF_OS_LOCKING_OK};
    CK_C_GetFunctionList get;
    CK_SLOT_ID slots[64];
    CK_ULONG n = 64;
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE tmpl[2] = {{CKA_CLASS, &cls, sizeof(cls)},
                            {CKA_LABEL, (void *)o->label, strlen(o->label)}};
    char want[32];
    bool found = false;
    void *sym;
    CK_RV rv;

    memset(p, 0, sizeof(*p));
    /* The layer has loaded the same path: this shares its instance, which
     * is what "same token and key" means; C_Initialize then says so. */
    p->dl = dlopen(o->module, RTLD_NOW | RTLD_LOCAL);
    if (p->dl == NULL) {
        return pj_err_set(err, PJ_ERR_NOT_FOUND, "module %s: %s", o->module,
                          dlerror());
    }
    sym = dlsym(p->dl, "C_GetFunctionList");
    if (sym == NULL) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "module %s: not a PKCS#11 module", o->module);
    }
    memcpy(&get, &sym, sizeof(get));
    rv = get(&p->f);
    if (rv == CKR_OK) {
        rv = p->f->C_Initialize(&ia);
    }
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        return pj_err_set(err, PJ_ERR_TOKEN, "module %s: C_Initialize: %s",
                          o->module, ckr(rv));
    }
    rv = p->f->C_GetSlotList(CK_TRUE, slots, &n);
    if (rv != CKR_OK) {
        return pj_err_set(err, PJ_ERR_TOKEN, "C_GetSlotList: %s", ckr(rv));
    }
    memset(want, ' ', sizeof(want));
    memcpy(want, o->token, strnlen(o->token, sizeof(want)));
    for (CK_ULONG i = 0; i < n && !found; i++) {
        CK_TOKEN_INFO ti;
        if (p->f->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
            memcmp(ti.label, want, sizeof(want)) == 0) {
            p->slot = slots[i];
            found = true;
        }
    }
    if (!found) {
        return pj_err_set(err, PJ_ERR_NOT_FOUND, "token '%s' not found",
                          o->token);
    }
    for (unsigned i = 0; i < o->threads; i++) {
        CK_ULONG cnt = 0;
        rv = p->f->C_OpenSession(p->slot, CKF_SERIAL_SESSION, NULL, NULL,
                                 &p->sess[i]);
        if (rv != CKR_OK) {
            return pj_err_set(err, PJ_ERR_TOKEN, "C_OpenSession: %s", ckr(rv));
        }
        p->nsess++;
        if (i == 0) {
            /* Login is per application: the layer's login already covers
             * these sessions, which SoftHSM reports as already logged in. */
            rv = p->f->C_Login(p->sess[0], CKU_USER, pin->data,
                               (CK_ULONG)pin->len);
            if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
                return pj_err_set(err, PJ_ERR_TOKEN, "C_Login: %s", ckr(rv));
            }
        }
        rv = p->f->C_FindObjectsInit(p->sess[i], tmpl, 2);
        if (rv == CKR_OK) {
            rv = p->f->C_FindObjects(p->sess[i], &p->key[i], 1, &cnt);
            (void)p->f->C_FindObjectsFinal(p->sess[i]);
        }
        if (rv != CKR_OK || cnt != 1) {
            return pj_err_set(err, PJ_ERR_NOT_FOUND,
                              "private key '%s' not found on token '%s' (%s)",
                              o->label, o->token, ckr(rv));
        }
    }
    return PJ_OK;
}

/* Close the plain sessions; the layer owns C_Finalize. */
static void
plain_close(struct plain *p)
{
    for (unsigned i = 0; i < p->nsess; i++) {
        (void)p->f->C_CloseSession(p->sess[i]);
    }
    if (p->dl != NULL) {
        dlclose(p->dl);
    }
}

/* Both paths must produce the same bytes: PKCS#1 v1.5 is deterministic. */
static pj_rc
same_signature(struct plain *p, struct hsm_key *key, struct pj_err *err)
{
    uint8_t a[HSM_SIG_MAX], b[HSM_SIG_MAX];
    size_t alen = sizeof(a);
    CK_ULONG blen = sizeof(b);
    CK_MECHANISM mech = {CKM_SHA256_RSA_PKCS, NULL, 0};
    CK_RV rv;

    PJ_TRY(hsm_key_sign(key, (const uint8_t *)bench_msg, sizeof(bench_msg) - 1,
                        a, &alen, err));
    rv = p->f->C_SignInit(p->sess[0], &mech, p->key[0]);
    if (rv == CKR_OK) {
        rv = p->f->C_Sign(p->sess[0], (CK_BYTE_PTR)bench_msg,
                          sizeof(bench_msg) - 1, b, &blen);
    }
    if (rv != CKR_OK) {
        return pj_err_set(err, PJ_ERR_TOKEN, "plain C_Sign: %s", ckr(rv));
    }
    if (alen != blen || memcmp(a, b, alen) != 0) {
        return pj_err_set(err, PJ_ERR_INTERNAL,
                          "the layer and the plain loop sign differently: "
                          "not the same key or mechanism");
    }
    return PJ_OK;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double
median(double *v, unsigned n)
{
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int
usage(void)
{
    fprintf(stderr,
            "usage: bench_sign --module PATH --token LABEL --label KEY "
            "--pin-file PATH [--threads N] [--rounds R] [--seconds S]\n");
    return 2;
}

static bool
parse_uint(const char *s, long max, unsigned *out)
{
    long v;
    if (pj_parse_long(s, 1, max, &v) != PJ_OK) {
        return false;
    }
    *out = (unsigned)v;
    return true;
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"module", required_argument, NULL, 'm'},
        {"token", required_argument, NULL, 't'},
        {"label", required_argument, NULL, 'l'},
        {"pin-file", required_argument, NULL, 'p'},
        {"threads", required_argument, NULL, 'n'},
        {"rounds", required_argument, NULL, 'r'},
        {"seconds", required_argument, NULL, 's'},
        {NULL, 0, NULL, 0},
    };
    struct bench_opts o = {.module = HSM_DEFAULT_MODULE,
                           .threads = 1,
                           .rounds = 3,
                           .seconds = 3.0};
    struct hsm_key_opts kopts = {0};
    struct hsm_module *mod = NULL;
    struct hsm_key *key = NULL;
    struct pj_secret *pin = NULL;
    struct plain plain = {0};
    struct pj_err err = {0};
    double plain_v[BENCH_MAX_ROUNDS], layer_v[BENCH_MAX_ROUNDS];
    double ratio_v[BENCH_MAX_ROUNDS];
    double plain_cpu[BENCH_MAX_ROUNDS], layer_cpu[BENCH_MAX_ROUNDS];
    double mp, ml, ratio, paired, cp, cl;
    char uri[512], source[4200];
    int opt, ret = 1;

    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'm':
            o.module = optarg;
            break;
        case 't':
            o.token = optarg;
            break;
        case 'l':
            o.label = optarg;
            break;
        case 'p':
            o.pin_file = optarg;
            break;
        case 'n':
            if (!parse_uint(optarg, BENCH_MAX_THREADS, &o.threads)) {
                return usage();
            }
            break;
        case 'r':
            if (!parse_uint(optarg, BENCH_MAX_ROUNDS, &o.rounds)) {
                return usage();
            }
            break;
        case 's': {
            char *end = NULL;
            o.seconds = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || o.seconds <= 0 ||
                o.seconds > 3600) {
                return usage();
            }
            break;
        }
        default:
            return usage();
        }
    }
    if (optind != argc || o.token == NULL || o.label == NULL ||
        o.pin_file == NULL) {
        return usage();
    }
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=%s;type=private",
             o.token, o.label);
    snprintf(source, sizeof(source), "file:%s", o.pin_file);
    kopts.uri = uri;
    kopts.pin_source = source;
    kopts.sessions = o.threads > 4 ? o.threads : 0;

    if (hsm_module_load(o.module, &mod, &err) != PJ_OK ||
        hsm_key_open(mod, &kopts, &key, &err) != PJ_OK ||
        hsm_pin_read(source, &pin, &err) != PJ_OK ||
        plain_open(&plain, &o, pin, &err) != PJ_OK ||
        same_signature(&plain, key, &err) != PJ_OK) {
        fprintf(stderr, "bench_sign: %s\n", err.msg);
        goto out;
    }
    pj_secret_free(pin);
    pin = NULL;

    printf("bench_sign: %s, token '%s', key '%s', RS256 "
           "(CKM_SHA256_RSA_PKCS), %u thread(s), %u rounds x %.1f s\n",
           o.module, o.token, o.label, o.threads, o.rounds, o.seconds);
    /* Warm both paths (first-use costs, CPU frequency) before timing. */
    if (bench_run(MODE_PLAIN, &plain, key, o.threads, 0.3, NULL) < 0 ||
        bench_run(MODE_LAYER, &plain, key, o.threads, 0.3, NULL) < 0) {
        goto out;
    }
    for (unsigned i = 0; i < o.rounds; i++) {
        /* Swap the order every round so neither always runs second. */
        bool layer_first = i % 2 == 1;
        for (int k = 0; k < 2; k++) {
            enum mode m = (k == 0) == layer_first ? MODE_LAYER : MODE_PLAIN;
            double c = 0;
            double v = bench_run(m, &plain, key, o.threads, o.seconds, &c);
            if (v < 0) {
                goto out;
            }
            if (m == MODE_LAYER) {
                layer_v[i] = v;
                layer_cpu[i] = c;
            } else {
                plain_v[i] = v;
                plain_cpu[i] = c;
            }
        }
        ratio_v[i] = layer_v[i] / plain_v[i];
        printf("  round %u: plain %8.1f sig/s %7.1f us-cpu/sig   layer %8.1f "
               "sig/s %7.1f us-cpu/sig   ratio %.3f\n",
               i + 1, plain_v[i], plain_cpu[i], layer_v[i], layer_cpu[i],
               ratio_v[i]);
        fflush(stdout);
    }
    mp = median(plain_v, o.rounds);
    ml = median(layer_v, o.rounds);
    ratio = ml / mp;
    /* Each round's two runs sit side by side in time, so the median of the
     * per-round ratios is less sensitive to a machine whose speed drifts. */
    paired = median(ratio_v, o.rounds);
    cp = median(plain_cpu, o.rounds);
    cl = median(layer_cpu, o.rounds);
    printf("threads=%u plain_median=%.1f layer_median=%.1f ratio=%.3f "
           "paired_ratio_median=%.3f cpu_us_per_sig plain=%.1f layer=%.1f "
           "cpu_ratio=%.3f target=%.2f %s\n",
           o.threads, mp, ml, ratio, paired, cp, cl, cl > 0 ? cp / cl : 0,
           BENCH_TARGET,
           ratio >= BENCH_TARGET ? "MEETS-TARGET" : "BELOW-TARGET");
    ret = 0;
out:
    pj_secret_free(pin);
    plain_close(&plain);
    hsm_key_free(key);
    hsm_module_free(mod);
    return ret;
}
