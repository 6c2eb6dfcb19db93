/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Module loading, re-initialisation, token lookup and small Cryptoki
 * helpers shared by the rest of the room.
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/pj_log.h"
#include "core/pj_util.h"
#include "pkcs11/internal.h"

/* Every module loaded in this process, by real path (see internal.h). */
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct hsm_module *registry;

const char *
hsm_module_path_resolve(const char *explicit_path)
{
    const char *env;

    if (explicit_path != NULL && explicit_path[0] != '\0') {
        return explicit_path;
    }
    env = getenv("P11JWT_MODULE");
    if (env != NULL && env[0] != '\0') {
        return env;
    }
    return HSM_DEFAULT_MODULE;
}

static CK_RV
module_initialize(struct hsm_module *mod)
{
    CK_C_INITIALIZE_ARGS args;

    memset(&args, 0, sizeof(args));
    /* The module may use OS primitives; we call it from several threads. */
    args.flags = CKF_OS_LOCKING_OK;
    return mod->fl->C_Initialize(&args);
}

static void
module_destroy(struct hsm_module *mod)
{
    if (mod == NULL) {
        return;
    }
    if (mod->fl != NULL && mod->owns_init) {
        (void)mod->fl->C_Finalize(NULL);
    }
    if (mod->dl != NULL) {
        (void)dlclose(mod->dl);
    }
    pthread_rwlock_destroy(&mod->lock);
    pthread_mutex_destroy(&mod->tpm_mu);
    pthread_cond_destroy(&mod->tpm_cv);
    free(mod->path);
    free(mod);
}

/*
 * At exit, finalise tpm2-pkcs11 modules a caller forgot to free. Without a
 * resource manager (swtpm in CI, a TPM without /dev/tpmrm0) a process that
 * exits without C_Finalize leaves its session and transient objects loaded
 * in the TPM, and after 2-3 such exits nobody can use the TPM any more
 * (research/pkcs11.md pitfall 8). Only in the process that initialised the
 * module (a forked child would flush its parent's objects), and only if no
 * other thread is inside the module: the write lock is then kept, so a
 * thread still running blocks instead of calling a finalised module.
 */
static void
module_atexit(void)
{
    struct hsm_module *m;
    struct timespec ts;

    if (pthread_mutex_trylock(&registry_mu) != 0) {
        return;
    }
    for (m = registry; m != NULL; m = m->next) {
        if (!m->tpm2_pkcs11 || !m->owns_init || m->pid != getpid()) {
            continue;
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        if (pthread_rwlock_timedwrlock(&m->lock, &ts) != 0) {
            continue;
        }
        (void)m->fl->C_Finalize(NULL);
        m->owns_init = false;
    }
    pthread_mutex_unlock(&registry_mu);
}

static pthread_once_t atexit_once = PTHREAD_ONCE_INIT;

static void
atexit_register(void)
{
    (void)atexit(module_atexit);
}

pj_rc
hsm_module_load(const char *path, struct hsm_module **modp, struct pj_err *err)
{
    struct hsm_module *mod = NULL, *m;
    pthread_rwlockattr_t rwa;
    CK_C_GetFunctionList getfl;
    char real[PATH_MAX];
    struct stat st;
    CK_INFO info;
    CK_RV rv;
    const char *dlerr;
    pj_rc rc = PJ_OK;

    *modp = NULL;
    if (path == NULL || path[0] == '\0') {
        return pj_err_set(err, PJ_ERR_INVALID, "no PKCS#11 module given");
    }
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) {
            return pj_err_set(err, PJ_ERR_NOT_FOUND, "module %s: no such file",
                              path);
        }
        return pj_err_sys(err, "module %s", path);
    }
    if (!S_ISREG(st.st_mode)) {
        return pj_err_set(err, PJ_ERR_INVALID, "module %s: not a regular file",
                          path);
    }
    if (realpath(path, real) == NULL) {
        return pj_err_sys(err, "module %s", path);
    }

    pthread_mutex_lock(&registry_mu);
    for (m = registry; m != NULL; m = m->next) {
        if (strcmp(m->path, real) == 0) {
            m->refs++;
            *modp = m;
            goto out;
        }
    }
    if ((mod = calloc(1, sizeof(*mod))) == NULL ||
        (mod->path = strdup(real)) == NULL) {
        free(mod);
        mod = NULL;
        rc = pj_err_set(err, PJ_ERR_NOMEM, "module %s: out of memory", path);
        goto out;
    }
    pthread_rwlockattr_init(&rwa);
    /* Recovery must not starve behind a steady stream of signers. */
    pthread_rwlockattr_setkind_np(&rwa,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&mod->lock, &rwa);
    pthread_rwlockattr_destroy(&rwa);
    {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&mod->tpm_cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    pthread_mutex_init(&mod->tpm_mu, NULL);
    mod->tpm_wait_ms = HSM_TPM_WAIT_MS;

    (void)dlerror();
    if ((mod->dl = dlopen(real, RTLD_NOW | RTLD_LOCAL)) == NULL) {
        dlerr = dlerror();
        rc = pj_err_set(err, PJ_ERR_INVALID, "module %s: %s", path,
                        dlerr != NULL ? dlerr : "dlopen failed");
        goto out;
    }
    *(void **)&getfl = dlsym(mod->dl, "C_GetFunctionList");
    if (getfl == NULL) {
        rc = pj_err_set(
            err, PJ_ERR_INVALID,
            "module %s: not a PKCS#11 module (no C_GetFunctionList)", path);
        goto out;
    }
    if ((rv = getfl(&mod->fl)) != CKR_OK || mod->fl == NULL) {
        mod->fl = NULL;
        rc = pj_err_set(err, PJ_ERR_TOKEN,
                        "module %s: C_GetFunctionList failed: %s", path,
                        hsm_ckr_name(rv));
        if (err != NULL) {
            err->ckr = rv;
        }
        goto out;
    }
    rv = module_initialize(mod);
    if (rv == CKR_OK) {
        mod->owns_init = true;
    } else if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        rc = pj_err_set(err, PJ_ERR_TOKEN, "module %s: C_Initialize failed: %s",
                        path, hsm_ckr_name(rv));
        if (err != NULL) {
            err->ckr = rv;
        }
        goto out;
    }
    mod->pid = getpid();
    if (mod->fl->C_GetInfo(&info) == CKR_OK) {
        hsm_fixed_str(info.libraryDescription, sizeof(info.libraryDescription),
                      mod->description, sizeof(mod->description));
        hsm_fixed_str(info.manufacturerID, sizeof(info.manufacturerID),
                      mod->manufacturer, sizeof(mod->manufacturer));
        /* tpm2-pkcs11 names itself so (its src/lib/general.c). */
        mod->tpm2_pkcs11 =
            strstr(mod->manufacturer, "tpm2-software") != NULL ||
            strncmp(mod->description, "TPM2.0 Cryptoki", 15) == 0;
    }
    if (mod->tpm2_pkcs11) {
        void *keep;
        (void)pthread_once(&atexit_once, atexit_register);
        /*
         * Keep tpm2-pkcs11 mapped after dlclose (RTLD_NODELETE): 1.9.0
         * leaks its TCTI context on every failed C_Initialize (TPM
         * unreachable), and once the library is unmapped leak checkers
         * can no longer tell whose memory that was (the tests' LSan
         * suppression names the library). A process loads it once anyway.
         */
        if ((keep = dlopen(real, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE)) !=
            NULL) {
            (void)dlclose(keep);
        }
    }
    mod->refs = 1;
    mod->next = registry;
    registry = mod;
    *modp = mod;
    mod = NULL;
out:
    pthread_mutex_unlock(&registry_mu);
    if (mod != NULL) {
        module_destroy(mod);
    }
    return rc;
}

void
hsm_module_free(struct hsm_module *mod)
{
    struct hsm_module **pp;

    if (mod == NULL) {
        return;
    }
    pthread_mutex_lock(&registry_mu);
    if (--mod->refs > 0) {
        pthread_mutex_unlock(&registry_mu);
        return;
    }
    for (pp = &registry; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == mod) {
            *pp = mod->next;
            break;
        }
    }
    pthread_mutex_unlock(&registry_mu);
    module_destroy(mod);
}

pj_rc
hsm_module_reinit(struct hsm_module *mod, uint64_t seen_generation,
                  struct pj_err *err)
{
    CK_RV rv;
    pj_rc rc = PJ_OK;

    pthread_rwlock_wrlock(&mod->lock);
    if (mod->generation != seen_generation) {
        /* Another thread (or key) already re-initialised since we looked. */
        goto out;
    }
    (void)mod->fl->C_Finalize(NULL);
    rv = module_initialize(mod);
    /* Handles died with C_Finalize even if C_Initialize failed. */
    mod->generation++;
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        rc = pj_err_set(err, PJ_ERR_TOKEN,
                        "module %s: C_Initialize after C_Finalize failed: %s",
                        mod->path, hsm_ckr_name(rv));
        if (err != NULL) {
            err->ckr = rv;
        }
        goto out;
    }
    mod->owns_init = true;
    __atomic_add_fetch(&mod->reinits, 1, __ATOMIC_RELAXED);
    pj_log_warn("module %s re-initialised (C_Finalize + C_Initialize)",
                mod->path);
out:
    pthread_rwlock_unlock(&mod->lock);
    return rc;
}

uint64_t
hsm_module_test_login_calls(struct hsm_module *mod)
{
    return __atomic_load_n(&mod->login_calls, __ATOMIC_RELAXED);
}

CK_FUNCTION_LIST *
hsm_module_functions(struct hsm_module *mod)
{
    return mod->fl;
}

void
hsm_fixed_str(const CK_UTF8CHAR *in, size_t n, char *out, size_t outsz)
{
    size_t len = n;

    while (len > 0 && (in[len - 1] == ' ' || in[len - 1] == '\0')) {
        len--;
    }
    hsm_printable(in, len, out, outsz);
}

void
hsm_printable(const void *in, size_t len, char *out, size_t outsz)
{
    const unsigned char *p = in;
    size_t i, o = 0;

    if (outsz == 0) {
        return;
    }
    for (i = 0; i < len; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\') {
            if (o + 1 >= outsz) {
                break;
            }
            out[o++] = (char)p[i];
        } else if (p[i] >= 0x80) {
            /* UTF-8 labels are fine to show as they are. */
            if (o + 1 >= outsz) {
                break;
            }
            out[o++] = (char)p[i];
        } else {
            if (o + 4 >= outsz) {
                break;
            }
            snprintf(out + o, outsz - o, "\\x%02x", p[i]);
            o += 4;
        }
    }
    out[o] = '\0';
}

enum hsm_ckr_class
hsm_ckr_classify(CK_RV rv)
{
    switch (rv) {
    case CKR_OK:
        return HSM_CKR_OK;
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_OPERATION_ACTIVE:
        return HSM_CKR_SESSION;
    case CKR_USER_NOT_LOGGED_IN:
        return HSM_CKR_LOGIN;
    case CKR_OBJECT_HANDLE_INVALID:
    case CKR_KEY_HANDLE_INVALID:
        return HSM_CKR_HANDLE;
    case CKR_DEVICE_ERROR:
    case CKR_DEVICE_REMOVED:
    case CKR_DEVICE_MEMORY:
    case CKR_GENERAL_ERROR:
    case CKR_FUNCTION_FAILED:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_CRYPTOKI_NOT_INITIALIZED:
        return HSM_CKR_DEVICE;
    case CKR_PIN_INCORRECT:
    case CKR_PIN_LEN_RANGE:
    case CKR_PIN_EXPIRED:
    case CKR_PIN_INVALID:
    case CKR_PIN_LOCKED:
        return HSM_CKR_PIN;
    default:
        return HSM_CKR_FATAL;
    }
}

static const struct {
    CK_RV rv;
    const char *name;
} ckr_names[] = {
    /* Every CKR_ name in <p11-kit/pkcs11.h>. */
    {CKR_OK, "CKR_OK"},
    {CKR_CANCEL, "CKR_CANCEL"},
    {CKR_HOST_MEMORY, "CKR_HOST_MEMORY"},
    {CKR_SLOT_ID_INVALID, "CKR_SLOT_ID_INVALID"},
    {CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR"},
    {CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED"},
    {CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD"},
    {CKR_NO_EVENT, "CKR_NO_EVENT"},
    {CKR_NEED_TO_CREATE_THREADS, "CKR_NEED_TO_CREATE_THREADS"},
    {CKR_CANT_LOCK, "CKR_CANT_LOCK"},
    {CKR_ATTRIBUTE_READ_ONLY, "CKR_ATTRIBUTE_READ_ONLY"},
    {CKR_ATTRIBUTE_SENSITIVE, "CKR_ATTRIBUTE_SENSITIVE"},
    {CKR_ATTRIBUTE_TYPE_INVALID, "CKR_ATTRIBUTE_TYPE_INVALID"},
    {CKR_ATTRIBUTE_VALUE_INVALID, "CKR_ATTRIBUTE_VALUE_INVALID"},
    {CKR_ACTION_PROHIBITED, "CKR_ACTION_PROHIBITED"},
    {CKR_DATA_INVALID, "CKR_DATA_INVALID"},
    {CKR_DATA_LEN_RANGE, "CKR_DATA_LEN_RANGE"},
    {CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR"},
    {CKR_DEVICE_MEMORY, "CKR_DEVICE_MEMORY"},
    {CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED"},
    {CKR_ENCRYPTED_DATA_INVALID, "CKR_ENCRYPTED_DATA_INVALID"},
    {CKR_ENCRYPTED_DATA_LEN_RANGE, "CKR_ENCRYPTED_DATA_LEN_RANGE"},
    {CKR_FUNCTION_CANCELED, "CKR_FUNCTION_CANCELED"},
    {CKR_FUNCTION_NOT_PARALLEL, "CKR_FUNCTION_NOT_PARALLEL"},
    {CKR_FUNCTION_NOT_SUPPORTED, "CKR_FUNCTION_NOT_SUPPORTED"},
    {CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID"},
    {CKR_KEY_SIZE_RANGE, "CKR_KEY_SIZE_RANGE"},
    {CKR_KEY_TYPE_INCONSISTENT, "CKR_KEY_TYPE_INCONSISTENT"},
    {CKR_KEY_NOT_NEEDED, "CKR_KEY_NOT_NEEDED"},
    {CKR_KEY_CHANGED, "CKR_KEY_CHANGED"},
    {CKR_KEY_NEEDED, "CKR_KEY_NEEDED"},
    {CKR_KEY_INDIGESTIBLE, "CKR_KEY_INDIGESTIBLE"},
    {CKR_KEY_FUNCTION_NOT_PERMITTED, "CKR_KEY_FUNCTION_NOT_PERMITTED"},
    {CKR_KEY_NOT_WRAPPABLE, "CKR_KEY_NOT_WRAPPABLE"},
    {CKR_KEY_UNEXTRACTABLE, "CKR_KEY_UNEXTRACTABLE"},
    {CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID"},
    {CKR_MECHANISM_PARAM_INVALID, "CKR_MECHANISM_PARAM_INVALID"},
    {CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID"},
    {CKR_OPERATION_ACTIVE, "CKR_OPERATION_ACTIVE"},
    {CKR_OPERATION_NOT_INITIALIZED, "CKR_OPERATION_NOT_INITIALIZED"},
    {CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT"},
    {CKR_PIN_INVALID, "CKR_PIN_INVALID"},
    {CKR_PIN_LEN_RANGE, "CKR_PIN_LEN_RANGE"},
    {CKR_PIN_EXPIRED, "CKR_PIN_EXPIRED"},
    {CKR_PIN_LOCKED, "CKR_PIN_LOCKED"},
    {CKR_SESSION_CLOSED, "CKR_SESSION_CLOSED"},
    {CKR_SESSION_COUNT, "CKR_SESSION_COUNT"},
    {CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID"},
    {CKR_SESSION_PARALLEL_NOT_SUPPORTED, "CKR_SESSION_PARALLEL_NOT_SUPPORTED"},
    {CKR_SESSION_READ_ONLY, "CKR_SESSION_READ_ONLY"},
    {CKR_SESSION_EXISTS, "CKR_SESSION_EXISTS"},
    {CKR_SESSION_READ_ONLY_EXISTS, "CKR_SESSION_READ_ONLY_EXISTS"},
    {CKR_SESSION_READ_WRITE_SO_EXISTS, "CKR_SESSION_READ_WRITE_SO_EXISTS"},
    {CKR_SIGNATURE_INVALID, "CKR_SIGNATURE_INVALID"},
    {CKR_SIGNATURE_LEN_RANGE, "CKR_SIGNATURE_LEN_RANGE"},
    {CKR_TEMPLATE_INCOMPLETE, "CKR_TEMPLATE_INCOMPLETE"},
    {CKR_TEMPLATE_INCONSISTENT, "CKR_TEMPLATE_INCONSISTENT"},
    {CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT"},
    {CKR_TOKEN_NOT_RECOGNIZED, "CKR_TOKEN_NOT_RECOGNIZED"},
    {CKR_TOKEN_WRITE_PROTECTED, "CKR_TOKEN_WRITE_PROTECTED"},
    {CKR_UNWRAPPING_KEY_SIZE_RANGE, "CKR_UNWRAPPING_KEY_SIZE_RANGE"},
    {CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
     "CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT"},
    {CKR_USER_ALREADY_LOGGED_IN, "CKR_USER_ALREADY_LOGGED_IN"},
    {CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN"},
    {CKR_USER_PIN_NOT_INITIALIZED, "CKR_USER_PIN_NOT_INITIALIZED"},
    {CKR_USER_TYPE_INVALID, "CKR_USER_TYPE_INVALID"},
    {CKR_USER_ANOTHER_ALREADY_LOGGED_IN, "CKR_USER_ANOTHER_ALREADY_LOGGED_IN"},
    {CKR_USER_TOO_MANY_TYPES, "CKR_USER_TOO_MANY_TYPES"},
    {CKR_WRAPPED_KEY_INVALID, "CKR_WRAPPED_KEY_INVALID"},
    {CKR_WRAPPED_KEY_LEN_RANGE, "CKR_WRAPPED_KEY_LEN_RANGE"},
    {CKR_WRAPPING_KEY_HANDLE_INVALID, "CKR_WRAPPING_KEY_HANDLE_INVALID"},
    {CKR_WRAPPING_KEY_SIZE_RANGE, "CKR_WRAPPING_KEY_SIZE_RANGE"},
    {CKR_WRAPPING_KEY_TYPE_INCONSISTENT, "CKR_WRAPPING_KEY_TYPE_INCONSISTENT"},
    {CKR_RANDOM_SEED_NOT_SUPPORTED, "CKR_RANDOM_SEED_NOT_SUPPORTED"},
    {CKR_RANDOM_NO_RNG, "CKR_RANDOM_NO_RNG"},
    {CKR_DOMAIN_PARAMS_INVALID, "CKR_DOMAIN_PARAMS_INVALID"},
    {CKR_CURVE_NOT_SUPPORTED, "CKR_CURVE_NOT_SUPPORTED"},
    {CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL"},
    {CKR_SAVED_STATE_INVALID, "CKR_SAVED_STATE_INVALID"},
    {CKR_INFORMATION_SENSITIVE, "CKR_INFORMATION_SENSITIVE"},
    {CKR_STATE_UNSAVEABLE, "CKR_STATE_UNSAVEABLE"},
    {CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED"},
    {CKR_CRYPTOKI_ALREADY_INITIALIZED, "CKR_CRYPTOKI_ALREADY_INITIALIZED"},
    {CKR_MUTEX_BAD, "CKR_MUTEX_BAD"},
    {CKR_MUTEX_NOT_LOCKED, "CKR_MUTEX_NOT_LOCKED"},
    {CKR_NEW_PIN_MODE, "CKR_NEW_PIN_MODE"},
    {CKR_NEXT_OTP, "CKR_NEXT_OTP"},
    {CKR_EXCEEDED_MAX_ITERATIONS, "CKR_EXCEEDED_MAX_ITERATIONS"},
    {CKR_FIPS_SELF_TEST_FAILED, "CKR_FIPS_SELF_TEST_FAILED"},
    {CKR_LIBRARY_LOAD_FAILED, "CKR_LIBRARY_LOAD_FAILED"},
    {CKR_PIN_TOO_WEAK, "CKR_PIN_TOO_WEAK"},
    {CKR_PUBLIC_KEY_INVALID, "CKR_PUBLIC_KEY_INVALID"},
    {CKR_FUNCTION_REJECTED, "CKR_FUNCTION_REJECTED"},
};

const char *
hsm_ckr_name(unsigned long ckr)
{
    static __thread char buf[48];
    size_t i;

    for (i = 0; i < PJ_ARRAY_SIZE(ckr_names); i++) {
        if (ckr_names[i].rv == ckr) {
            return ckr_names[i].name;
        }
    }
    if ((ckr & CKR_VENDOR_DEFINED) != 0) {
        snprintf(buf, sizeof(buf), "CKR_VENDOR_DEFINED+0x%lx",
                 ckr & ~CKR_VENDOR_DEFINED);
    } else {
        snprintf(buf, sizeof(buf), "CKR_0x%lx", ckr);
    }
    return buf;
}

bool
hsm_slot_has_mech(struct hsm_module *mod, CK_SLOT_ID slot,
                  CK_MECHANISM_TYPE mech)
{
    CK_MECHANISM_TYPE *list = NULL;
    CK_ULONG n = 0, i;
    bool found = false;

    if (mod->fl->C_GetMechanismList(slot, NULL, &n) != CKR_OK || n == 0 ||
        n > 4096) {
        return false;
    }
    if ((list = calloc(n, sizeof(*list))) == NULL) {
        return false;
    }
    if (mod->fl->C_GetMechanismList(slot, list, &n) == CKR_OK) {
        for (i = 0; i < n; i++) {
            if (list[i] == mech) {
                found = true;
                break;
            }
        }
    }
    free(list);
    return found;
}

static void
list_append(char *buf, size_t sz, const char *item)
{
    size_t used = strlen(buf);

    if (used + 2 >= sz) {
        return;
    }
    snprintf(buf + used, sz - used, "%s%s", used > 0 ? ", " : "", item);
}

pj_rc
hsm_err_ckr(struct pj_err *err, CK_RV rv, const char *what)
{
    if (err != NULL && err->rc == PJ_OK) {
        pj_err_set(err, PJ_ERR_TOKEN, "%s failed: %s", what, hsm_ckr_name(rv));
        err->ckr = rv;
    }
    return PJ_ERR_TOKEN;
}

void
hsm_module_ref(struct hsm_module *mod)
{
    pthread_mutex_lock(&registry_mu);
    mod->refs++;
    pthread_mutex_unlock(&registry_mu);
}

pj_rc
hsm_token_find(struct hsm_module *mod, const struct hsm_uri *u,
               CK_SLOT_ID *slotp, CK_TOKEN_INFO *tinfo, struct pj_err *err)
{
    CK_SLOT_ID *slots = NULL, found_slot = 0;
    CK_ULONG n = 0, i;
    CK_TOKEN_INFO ti;
    CK_SLOT_INFO si;
    CK_RV rv;
    char present[256] = "", matches[256] = "", label[40], serial[20];
    unsigned nmatch = 0;
    pj_rc rc = PJ_OK;

    if ((rv = mod->fl->C_GetSlotList(CK_TRUE, NULL, &n)) != CKR_OK) {
        return hsm_err_ckr(err, rv, "C_GetSlotList");
    }
    if (n > 0) {
        if (n > 1024 || (slots = calloc(n, sizeof(*slots))) == NULL) {
            return pj_err_set(err, PJ_ERR_NOMEM, "too many slots (%lu)", n);
        }
        if ((rv = mod->fl->C_GetSlotList(CK_TRUE, slots, &n)) != CKR_OK) {
            rc = hsm_err_ckr(err, rv, "C_GetSlotList");
            goto out;
        }
    }
    for (i = 0; i < n; i++) {
        rv = mod->fl->C_GetTokenInfo(slots[i], &ti);
        if (rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_TOKEN_NOT_RECOGNIZED) {
            continue;
        }
        if (rv != CKR_OK) {
            rc = hsm_err_ckr(err, rv, "C_GetTokenInfo");
            goto out;
        }
        /* SoftHSM always offers a free, uninitialised token: not a match. */
        if ((ti.flags & CKF_TOKEN_INITIALIZED) == 0) {
            continue;
        }
        hsm_fixed_str(ti.label, sizeof(ti.label), label, sizeof(label));
        hsm_fixed_str(ti.serialNumber, sizeof(ti.serialNumber), serial,
                      sizeof(serial));
        list_append(present, sizeof(present), label);
        if (!p11_kit_uri_match_token_info(u->p11, &ti)) {
            continue;
        }
        if (mod->fl->C_GetSlotInfo(slots[i], &si) == CKR_OK &&
            !p11_kit_uri_match_slot_info(u->p11, &si)) {
            continue;
        }
        if (p11_kit_uri_get_slot_id(u->p11) != (CK_SLOT_ID)-1 &&
            p11_kit_uri_get_slot_id(u->p11) != slots[i]) {
            continue;
        }
        nmatch++;
        {
            char item[80];
            snprintf(item, sizeof(item), "'%s' (serial %s)", label, serial);
            list_append(matches, sizeof(matches), item);
        }
        if (nmatch == 1) {
            found_slot = slots[i];
            *tinfo = ti;
        }
    }
    if (nmatch == 0) {
        rc = pj_err_set(
            err, PJ_ERR_NOT_FOUND, "token '%s' not found (tokens present: %s)",
            hsm_uri_token_name(u), present[0] != '\0' ? present : "none");
        goto out;
    }
    if (nmatch > 1) {
        rc = pj_err_set(err, PJ_ERR_INVALID,
                        "token '%s' is ambiguous: %u tokens match (%s); add "
                        "serial= to the URI",
                        hsm_uri_token_name(u), nmatch, matches);
        goto out;
    }
    *slotp = found_slot;
out:
    free(slots);
    return rc;
}

CK_RV
hsm_attr_get(struct hsm_module *mod, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
             CK_ATTRIBUTE_TYPE type, uint8_t **valp, size_t *lenp)
{
    CK_ATTRIBUTE a = {type, NULL, 0};
    CK_RV rv;

    *valp = NULL;
    *lenp = 0;
    if ((rv = mod->fl->C_GetAttributeValue(s, o, &a, 1)) != CKR_OK) {
        return rv;
    }
    if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION) {
        return CKR_ATTRIBUTE_SENSITIVE;
    }
    if (a.ulValueLen == 0) {
        return CKR_OK;
    }
    if (a.ulValueLen > 1024 * 1024 ||
        (a.pValue = malloc(a.ulValueLen)) == NULL) {
        return CKR_HOST_MEMORY;
    }
    if ((rv = mod->fl->C_GetAttributeValue(s, o, &a, 1)) != CKR_OK) {
        free(a.pValue);
        return rv;
    }
    *valp = a.pValue;
    *lenp = a.ulValueLen;
    return CKR_OK;
}

/* Describe an object for not-found/ambiguous lists: label, else id hex. */
static void
object_describe(struct hsm_module *mod, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
                char *out, size_t outsz)
{
    uint8_t *v = NULL;
    size_t len = 0;
    char hex[2 * 16 + 1];

    out[0] = '\0';
    if (hsm_attr_get(mod, s, o, CKA_LABEL, &v, &len) == CKR_OK && len > 0) {
        char lbl[64];
        hsm_printable(v, len, lbl, sizeof(lbl));
        snprintf(out, outsz, "'%s'", lbl);
    }
    free(v);
    v = NULL;
    if (hsm_attr_get(mod, s, o, CKA_ID, &v, &len) == CKR_OK && len > 0) {
        size_t used = strlen(out);
        pj_hex(v, len > 16 ? 16 : len, hex);
        snprintf(out + used, outsz - used, "%sid %s", used > 0 ? " " : "", hex);
    }
    free(v);
    if (out[0] == '\0') {
        snprintf(out, outsz, "(no label)");
    }
}

static const char *
class_name(CK_OBJECT_CLASS cls)
{
    switch (cls) {
    case CKO_PRIVATE_KEY:
        return "private key";
    case CKO_PUBLIC_KEY:
        return "public key";
    case CKO_CERTIFICATE:
        return "certificate";
    default:
        return "object";
    }
}

/* Is o labelled u's label + ".next", the next key of a rotation? */
static bool
is_next_of(struct hsm_module *mod, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
           const struct hsm_uri *u)
{
    const size_t sl = sizeof(HSM_ROTATE_NEXT) - 1;
    uint8_t *v = NULL;
    size_t len = 0;
    bool yes;

    if (hsm_attr_get(mod, s, o, CKA_LABEL, &v, &len) != CKR_OK) {
        return false;
    }
    yes = len == u->label_len + sl && memcmp(v, u->label, u->label_len) == 0 &&
          memcmp(v + u->label_len, HSM_ROTATE_NEXT, sl) == 0;
    free(v);
    return yes;
}

pj_rc
hsm_object_find(struct hsm_module *mod, CK_SESSION_HANDLE s,
                const struct hsm_uri *u, CK_OBJECT_CLASS cls,
                const char *token_name, CK_OBJECT_HANDLE *objp,
                struct pj_err *err)
{
    CK_ATTRIBUTE tmpl[3];
    CK_ULONG nt = 0, got = 0;
    CK_OBJECT_HANDLE objs[16];
    CK_RV rv;
    char want[600], list[256] = "", item[96], lbl[HSM_LABEL_MAX * 4 + 1];
    const char *what = class_name(cls);
    bool next_seen = false;
    unsigned i;
    pj_rc rc = PJ_OK;

    tmpl[nt++] = (CK_ATTRIBUTE){CKA_CLASS, &cls, sizeof(cls)};
    if (u->label != NULL) {
        tmpl[nt++] = (CK_ATTRIBUTE){CKA_LABEL, u->label, u->label_len};
    }
    if (u->has_id) {
        tmpl[nt++] = (CK_ATTRIBUTE){CKA_ID, (void *)u->id, u->id_len};
    }
    want[0] = '\0';
    if (u->label != NULL) {
        hsm_printable(u->label, u->label_len, lbl, sizeof(lbl));
        snprintf(want, sizeof(want), "'%s'", lbl);
    }
    if (u->has_id) {
        char hex[2 * HSM_ID_MAX + 1];
        size_t used = strlen(want);
        pj_hex(u->id, u->id_len, hex);
        snprintf(want + used, sizeof(want) - used, "%sid %s",
                 used > 0 ? " " : "", hex);
    }

    if ((rv = mod->fl->C_FindObjectsInit(s, tmpl, nt)) != CKR_OK) {
        return hsm_err_ckr(err, rv, "C_FindObjectsInit");
    }
    rv = mod->fl->C_FindObjects(s, objs, PJ_ARRAY_SIZE(objs), &got);
    (void)mod->fl->C_FindObjectsFinal(s);
    if (rv != CKR_OK) {
        return hsm_err_ckr(err, rv, "C_FindObjects");
    }
    if (got == 1) {
        *objp = objs[0];
        return PJ_OK;
    }
    if (got > 1) {
        for (i = 0; i < got; i++) {
            object_describe(mod, s, objs[i], item, sizeof(item));
            list_append(list, sizeof(list), item);
        }
        return pj_err_set(err, PJ_ERR_INVALID,
                          "%s %s is ambiguous on token '%s': %lu match (%s); "
                          "add id= to the URI",
                          what, want[0] != '\0' ? want : "(any)", token_name,
                          got, list);
    }
    /* Not found: list what is there, so the person can fix the URI. */
    nt = 1;
    if ((rv = mod->fl->C_FindObjectsInit(s, tmpl, nt)) == CKR_OK) {
        if (mod->fl->C_FindObjects(s, objs, PJ_ARRAY_SIZE(objs), &got) !=
            CKR_OK) {
            got = 0;
        }
        (void)mod->fl->C_FindObjectsFinal(s);
        for (i = 0; i < got; i++) {
            object_describe(mod, s, objs[i], item, sizeof(item));
            list_append(list, sizeof(list), item);
            if (u->label != NULL && !next_seen) {
                next_seen = is_next_of(mod, s, objs[i], u);
            }
        }
    }
    rc = pj_err_set(err, PJ_ERR_NOT_FOUND,
                    "no %s %s on token '%s' (%ss present: %s)%s%s%s", what,
                    want[0] != '\0' ? want : "(any)", token_name, what,
                    list[0] != '\0' ? list : "none",
                    next_seen ? "; a key rotation stopped half-way: run "
                                "'p11jwt rotate finish --force' (or start "
                                "the agent) to make '"
                              : "",
                    next_seen ? lbl : "",
                    next_seen ? HSM_ROTATE_NEXT "' the key again" : "");
    return rc;
}
