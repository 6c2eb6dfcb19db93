/* SPDX-License-Identifier: Apache-2.0 */
/*
 * p11shim: a PKCS#11 fault-injection module for tests. It dlopens the real
 * module ($P11SHIM_MODULE, default SoftHSM2), copies its CK_FUNCTION_LIST and
 * wraps about forty entries. Each wrapped call is counted and checked against
 * the control file ($P11SHIM_CTL), which is re-read whenever its stat changes
 * (inode, size, mtime, ctime). One directive per line ('#' starts a comment):
 *
 *   <CKR_NAME|0xHEX> <scope> [count|*]   fail the next count calls (1)
 *   delay <ms> <scope> [count|*]         sleep before the calls (default *)
 *   closeall                             real C_CloseAllSessions on every
 *                                        slot, once per write of the file
 *
 * A scope is a comma list of categories (sign, session, find, slot, init,
 * all) or function names (C_Login). Each wrapped function has its own bit,
 * and a category is the union of its functions' bits, so a "sign" fault can
 * never reach C_GetSlotList (research/pkcs11.md 8.3). A missing or empty
 * file means no faults; rewriting the file resets every count.
 *
 * $P11SHIM_STATS names a file rewritten (temp + rename) on every call with
 * "C_Login 3" lines (calls so far, including failed ones), "fault:C_Sign 2"
 * lines (faults injected) and "closeall N". $P11SHIM_DEBUG=1 logs each
 * injected fault to stderr. See p11shim.md.
 *
 * Two safety rails keep the module under test memory-safe, so that a crash
 * is the caller's bug: closeall waits until no other call is inside the real
 * module (a token drops sessions between calls, it does not free them under
 * a running C_Sign), and a call on a session handle that another thread is
 * using right now (e.g. C_CloseSession of a handle the module has already
 * given to someone else) is reported on stderr and counted as "violation N"
 * in the stats file: one operation per session is the caller's contract.
 *
 * Link with -z nodelete: a module reload (dlclose + dlopen) must not reset
 * the counters or re-arm a fault that already fired.
 */
#define _GNU_SOURCE /* writer-preferring rwlock */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
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

#include <p11-kit/pkcs11.h>

#define SHIM_DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define SHIM_CTL_MAX 8192
#define SHIM_RULES_MAX 64
#define SHIM_PATH_MAX 4096
/* Files written within this window may be rewritten in the same timestamp
 * tick (timestamps are jiffy-coarse): compare their content too. */
#define SHIM_RACY_NS 50000000LL

/* Category of each wrapped function. */
enum shim_cat {
    CAT_NONE = 0,
    CAT_SIGN = 1,
    CAT_SESSION = 2,
    CAT_FIND = 4,
    CAT_SLOT = 8,
    CAT_INIT = 16,
};

/*
 * X(name, category, parameter list, argument list): every wrapped function.
 * The order gives each its bit.
 */
#define SHIM_FUNCTIONS(X)                                                      \
    X(C_Initialize, CAT_INIT, (CK_VOID_PTR a), (a))                            \
    X(C_Finalize, CAT_NONE, (CK_VOID_PTR a), (a))                              \
    X(C_GetInfo, CAT_NONE, (CK_INFO_PTR a), (a))                               \
    X(C_GetSlotList, CAT_SLOT, (CK_BBOOL a, CK_SLOT_ID_PTR b, CK_ULONG_PTR c), \
      (a, b, c))                                                               \
    X(C_GetSlotInfo, CAT_SLOT, (CK_SLOT_ID a, CK_SLOT_INFO_PTR b), (a, b))     \
    X(C_GetTokenInfo, CAT_SLOT, (CK_SLOT_ID a, CK_TOKEN_INFO_PTR b), (a, b))   \
    X(C_GetMechanismList, CAT_SLOT,                                            \
      (CK_SLOT_ID a, CK_MECHANISM_TYPE_PTR b, CK_ULONG_PTR c), (a, b, c))      \
    X(C_GetMechanismInfo, CAT_NONE,                                            \
      (CK_SLOT_ID a, CK_MECHANISM_TYPE b, CK_MECHANISM_INFO_PTR c), (a, b, c)) \
    X(C_InitToken, CAT_NONE,                                                   \
      (CK_SLOT_ID a, CK_UTF8CHAR_PTR b, CK_ULONG c, CK_UTF8CHAR_PTR d),        \
      (a, b, c, d))                                                            \
    X(C_InitPIN, CAT_NONE,                                                     \
      (CK_SESSION_HANDLE a, CK_UTF8CHAR_PTR b, CK_ULONG c), (a, b, c))         \
    X(C_SetPIN, CAT_NONE,                                                      \
      (CK_SESSION_HANDLE a, CK_UTF8CHAR_PTR b, CK_ULONG c, CK_UTF8CHAR_PTR d,  \
       CK_ULONG e),                                                            \
      (a, b, c, d, e))                                                         \
    X(C_OpenSession, CAT_SESSION,                                              \
      (CK_SLOT_ID a, CK_FLAGS b, CK_VOID_PTR c, CK_NOTIFY d,                   \
       CK_SESSION_HANDLE_PTR e),                                               \
      (a, b, c, d, e))                                                         \
    X(C_CloseSession, CAT_SESSION, (CK_SESSION_HANDLE a), (a))                 \
    X(C_CloseAllSessions, CAT_NONE, (CK_SLOT_ID a), (a))                       \
    X(C_GetSessionInfo, CAT_SESSION,                                           \
      (CK_SESSION_HANDLE a, CK_SESSION_INFO_PTR b), (a, b))                    \
    X(C_Login, CAT_SESSION,                                                    \
      (CK_SESSION_HANDLE a, CK_USER_TYPE b, CK_UTF8CHAR_PTR c, CK_ULONG d),    \
      (a, b, c, d))                                                            \
    X(C_Logout, CAT_SESSION, (CK_SESSION_HANDLE a), (a))                       \
    X(C_CreateObject, CAT_NONE,                                                \
      (CK_SESSION_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c,                    \
       CK_OBJECT_HANDLE_PTR d),                                                \
      (a, b, c, d))                                                            \
    X(C_DestroyObject, CAT_NONE, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b),    \
      (a, b))                                                                  \
    X(C_GetAttributeValue, CAT_FIND,                                           \
      (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c,            \
       CK_ULONG d),                                                            \
      (a, b, c, d))                                                            \
    X(C_SetAttributeValue, CAT_NONE,                                           \
      (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c,            \
       CK_ULONG d),                                                            \
      (a, b, c, d))                                                            \
    X(C_FindObjectsInit, CAT_FIND,                                             \
      (CK_SESSION_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c), (a, b, c))        \
    X(C_FindObjects, CAT_FIND,                                                 \
      (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE_PTR b, CK_ULONG c,                \
       CK_ULONG_PTR d),                                                        \
      (a, b, c, d))                                                            \
    X(C_FindObjectsFinal, CAT_NONE, (CK_SESSION_HANDLE a), (a))                \
    X(C_DigestInit, CAT_NONE, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b),       \
      (a, b))                                                                  \
    X(C_Digest, CAT_NONE,                                                      \
      (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d,          \
       CK_ULONG_PTR e),                                                        \
      (a, b, c, d, e))                                                         \
    X(C_SignInit, CAT_SIGN,                                                    \
      (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c),           \
      (a, b, c))                                                               \
    X(C_Sign, CAT_SIGN,                                                        \
      (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d,          \
       CK_ULONG_PTR e),                                                        \
      (a, b, c, d, e))                                                         \
    X(C_SignUpdate, CAT_SIGN,                                                  \
      (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c))             \
    X(C_SignFinal, CAT_SIGN,                                                   \
      (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c), (a, b, c))         \
    X(C_VerifyInit, CAT_NONE,                                                  \
      (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c),           \
      (a, b, c))                                                               \
    X(C_Verify, CAT_NONE,                                                      \
      (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d,          \
       CK_ULONG e),                                                            \
      (a, b, c, d, e))                                                         \
    X(C_DecryptInit, CAT_NONE,                                                 \
      (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c),           \
      (a, b, c))                                                               \
    X(C_GenerateKeyPair, CAT_NONE,                                             \
      (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_ATTRIBUTE_PTR c,            \
       CK_ULONG d, CK_ATTRIBUTE_PTR e, CK_ULONG f, CK_OBJECT_HANDLE_PTR g,     \
       CK_OBJECT_HANDLE_PTR h),                                                \
      (a, b, c, d, e, f, g, h))                                                \
    X(C_WrapKey, CAT_NONE,                                                     \
      (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c,            \
       CK_OBJECT_HANDLE d, CK_BYTE_PTR e, CK_ULONG_PTR f),                     \
      (a, b, c, d, e, f))                                                      \
    X(C_GenerateRandom, CAT_NONE,                                              \
      (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c))

enum shim_fn {
#define SHIM_ENUM(name, cat, params, args) FN_##name,
    SHIM_FUNCTIONS(SHIM_ENUM)
#undef SHIM_ENUM
        FN_COUNT
};

struct shim_fninfo {
    const char *name;
    unsigned cat;
};

static const struct shim_fninfo shim_fns[FN_COUNT] = {
#define SHIM_INFO(name, cat, params, args) {#name, cat},
    SHIM_FUNCTIONS(SHIM_INFO)
#undef SHIM_INFO
};

_Static_assert(FN_COUNT <= 64, "one bit per wrapped function");

#define FN_BIT(fn) (UINT64_C(1) << (fn))
/* Functions whose first argument is not a session handle. */
static const uint64_t shim_no_session_arg =
    FN_BIT(FN_C_Initialize) | FN_BIT(FN_C_Finalize) | FN_BIT(FN_C_GetInfo) |
    FN_BIT(FN_C_GetSlotList) | FN_BIT(FN_C_GetSlotInfo) |
    FN_BIT(FN_C_GetTokenInfo) | FN_BIT(FN_C_GetMechanismList) |
    FN_BIT(FN_C_GetMechanismInfo) | FN_BIT(FN_C_InitToken) |
    FN_BIT(FN_C_OpenSession) | FN_BIT(FN_C_CloseAllSessions);

static const struct {
    const char *name;
    unsigned cat;
} shim_cats[] = {
    {"sign", CAT_SIGN},
    {"session", CAT_SESSION},
    {"find", CAT_FIND},
    {"slot", CAT_SLOT},
    {"init", CAT_INIT},
    {"all", CAT_SIGN | CAT_SESSION | CAT_FIND | CAT_SLOT | CAT_INIT},
};

#define CKR_ENTRY(n) {#n, n},
static const struct {
    const char *name;
    CK_RV rv;
} shim_ckrs[] =
    {CKR_ENTRY(CKR_OK) CKR_ENTRY(CKR_CANCEL) CKR_ENTRY(CKR_HOST_MEMORY) CKR_ENTRY(
        CKR_SLOT_ID_INVALID) CKR_ENTRY(CKR_GENERAL_ERROR)
         CKR_ENTRY(CKR_FUNCTION_FAILED) CKR_ENTRY(CKR_ARGUMENTS_BAD) CKR_ENTRY(
             CKR_NO_EVENT) CKR_ENTRY(CKR_NEED_TO_CREATE_THREADS)
             CKR_ENTRY(CKR_CANT_LOCK) CKR_ENTRY(CKR_ATTRIBUTE_READ_ONLY) CKR_ENTRY(
                 CKR_ATTRIBUTE_SENSITIVE) CKR_ENTRY(CKR_ATTRIBUTE_TYPE_INVALID)
                 CKR_ENTRY(CKR_ATTRIBUTE_VALUE_INVALID) CKR_ENTRY(
                     CKR_DATA_INVALID) CKR_ENTRY(CKR_DATA_LEN_RANGE)
                     CKR_ENTRY(CKR_DEVICE_ERROR) CKR_ENTRY(CKR_DEVICE_MEMORY) CKR_ENTRY(
                         CKR_DEVICE_REMOVED) CKR_ENTRY(CKR_ENCRYPTED_DATA_INVALID)
                         CKR_ENTRY(CKR_ENCRYPTED_DATA_LEN_RANGE) CKR_ENTRY(
                             CKR_FUNCTION_CANCELED) CKR_ENTRY(CKR_FUNCTION_NOT_PARALLEL)
                             CKR_ENTRY(CKR_FUNCTION_NOT_SUPPORTED) CKR_ENTRY(
                                 CKR_KEY_HANDLE_INVALID) CKR_ENTRY(CKR_KEY_SIZE_RANGE)
                                 CKR_ENTRY(CKR_KEY_TYPE_INCONSISTENT) CKR_ENTRY(
                                     CKR_KEY_NOT_NEEDED) CKR_ENTRY(CKR_KEY_CHANGED)
                                     CKR_ENTRY(CKR_KEY_NEEDED) CKR_ENTRY(
                                         CKR_KEY_FUNCTION_NOT_PERMITTED) CKR_ENTRY(CKR_KEY_NOT_WRAPPABLE)
                                         CKR_ENTRY(CKR_KEY_UNEXTRACTABLE) CKR_ENTRY(
                                             CKR_MECHANISM_INVALID) CKR_ENTRY(CKR_MECHANISM_PARAM_INVALID)
                                             CKR_ENTRY(CKR_OBJECT_HANDLE_INVALID) CKR_ENTRY(
                                                 CKR_OPERATION_ACTIVE) CKR_ENTRY(CKR_OPERATION_NOT_INITIALIZED)
                                                 CKR_ENTRY(CKR_PIN_INCORRECT) CKR_ENTRY(CKR_PIN_INVALID) CKR_ENTRY(
                                                     CKR_PIN_LEN_RANGE) CKR_ENTRY(CKR_PIN_EXPIRED)
                                                     CKR_ENTRY(CKR_PIN_LOCKED) CKR_ENTRY(
                                                         CKR_SESSION_CLOSED) CKR_ENTRY(CKR_SESSION_COUNT)
                                                         CKR_ENTRY(CKR_SESSION_HANDLE_INVALID) CKR_ENTRY(
                                                             CKR_SESSION_PARALLEL_NOT_SUPPORTED)
                                                             CKR_ENTRY(CKR_SESSION_READ_ONLY) CKR_ENTRY(
                                                                 CKR_SESSION_EXISTS)
                                                                 CKR_ENTRY(CKR_SESSION_READ_ONLY_EXISTS) CKR_ENTRY(
                                                                     CKR_SESSION_READ_WRITE_SO_EXISTS)
                                                                     CKR_ENTRY(CKR_SIGNATURE_INVALID) CKR_ENTRY(CKR_SIGNATURE_LEN_RANGE) CKR_ENTRY(CKR_TEMPLATE_INCOMPLETE) CKR_ENTRY(CKR_TEMPLATE_INCONSISTENT) CKR_ENTRY(CKR_TOKEN_NOT_PRESENT) CKR_ENTRY(CKR_TOKEN_NOT_RECOGNIZED) CKR_ENTRY(CKR_TOKEN_WRITE_PROTECTED) CKR_ENTRY(CKR_USER_ALREADY_LOGGED_IN) CKR_ENTRY(CKR_USER_NOT_LOGGED_IN) CKR_ENTRY(CKR_USER_PIN_NOT_INITIALIZED) CKR_ENTRY(CKR_USER_TYPE_INVALID) CKR_ENTRY(CKR_USER_ANOTHER_ALREADY_LOGGED_IN) CKR_ENTRY(CKR_USER_TOO_MANY_TYPES) CKR_ENTRY(CKR_RANDOM_SEED_NOT_SUPPORTED) CKR_ENTRY(
                                                                         CKR_RANDOM_NO_RNG) CKR_ENTRY(CKR_DOMAIN_PARAMS_INVALID)
                                                                         CKR_ENTRY(
                                                                             CKR_BUFFER_TOO_SMALL) CKR_ENTRY(CKR_SAVED_STATE_INVALID)
                                                                             CKR_ENTRY(
                                                                                 CKR_INFORMATION_SENSITIVE)
                                                                                 CKR_ENTRY(
                                                                                     CKR_STATE_UNSAVEABLE)
                                                                                     CKR_ENTRY(
                                                                                         CKR_CRYPTOKI_NOT_INITIALIZED)
                                                                                         CKR_ENTRY(
                                                                                             CKR_CRYPTOKI_ALREADY_INITIALIZED)
                                                                                             CKR_ENTRY(
                                                                                                 CKR_MUTEX_BAD)
                                                                                                 CKR_ENTRY(
                                                                                                     CKR_MUTEX_NOT_LOCKED)
                                                                                                     CKR_ENTRY(
                                                                                                         CKR_FUNCTION_REJECTED)};
#undef CKR_ENTRY

enum rule_kind { RULE_FAIL, RULE_DELAY };

struct shim_rule {
    enum rule_kind kind;
    CK_RV rv;      /* RULE_FAIL */
    long ms;       /* RULE_DELAY */
    uint64_t mask; /* functions it applies to */
    long count;    /* calls left; -1 means until the file changes */
};

/*
 * Held shared by every forwarded call while it runs in the real module and
 * exclusively by closeall. Writer-preferring, so that a stream of signing
 * threads cannot starve closeall.
 */
static pthread_rwlock_t shim_real_lock =
    PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;

/* Everything below is guarded by shim_lock. */
static pthread_mutex_t shim_lock = PTHREAD_MUTEX_INITIALIZER;
static CK_FUNCTION_LIST shim_real; /* a copy of the real module's list */
static CK_FUNCTION_LIST shim_list; /* what callers get */
static bool shim_loaded;
static char shim_ctl_path[SHIM_PATH_MAX];
static char shim_stats_path[SHIM_PATH_MAX];
static int shim_debug; /* 1: injected faults, 2: every call */

static struct {
    bool present;
    struct stat st;
    bool racy;
    size_t len;
    char text[SHIM_CTL_MAX];
} shim_ctl;

static struct shim_rule shim_rules[SHIM_RULES_MAX];
static size_t shim_nrules;
static bool shim_closeall_pending;
static uint64_t shim_calls[FN_COUNT];
static uint64_t shim_faults[FN_COUNT];
static uint64_t shim_closealls;
static uint64_t shim_violations;

/* Session handles inside the real module right now, and who uses them. */
#define SHIM_INFLIGHT_MAX 256
static struct {
    CK_SESSION_HANDLE h;
    enum shim_fn fn;
    bool used;
} shim_inflight[SHIM_INFLIGHT_MAX];

/* One call through the shim, from shim_enter to shim_leave. */
struct shim_call {
    bool forwarded; /* holds shim_real_lock shared */
    int slot;       /* index in shim_inflight, or -1 */
};

static void shim_warn(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void
shim_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("p11shim: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static const char *
shim_ckr_name(CK_RV rv)
{
    for (size_t i = 0; i < sizeof(shim_ckrs) / sizeof(shim_ckrs[0]); i++) {
        if (shim_ckrs[i].rv == rv) {
            return shim_ckrs[i].name;
        }
    }
    return "CKR_(other)";
}

/* Read the paths from the environment (on load and on C_Initialize). */
static void
shim_env_locked(void)
{
    const char *ctl = getenv("P11SHIM_CTL");
    const char *stats = getenv("P11SHIM_STATS");
    const char *debug = getenv("P11SHIM_DEBUG");

    snprintf(shim_ctl_path, sizeof(shim_ctl_path), "%s", ctl ? ctl : "");
    snprintf(shim_stats_path, sizeof(shim_stats_path), "%s",
             stats ? stats : "");
    shim_debug = debug != NULL ? (int)strtol(debug, NULL, 10) : 0;
}

static bool
shim_parse_scope(const char *s, uint64_t *maskp)
{
    char buf[256];
    char *save = NULL;
    uint64_t mask = 0;

    if (snprintf(buf, sizeof(buf), "%s", s) >= (int)sizeof(buf)) {
        return false;
    }
    for (char *tok = strtok_r(buf, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        bool found = false;
        for (size_t i = 0; i < sizeof(shim_cats) / sizeof(shim_cats[0]); i++) {
            if (strcmp(tok, shim_cats[i].name) == 0) {
                for (size_t f = 0; f < FN_COUNT; f++) {
                    if (shim_fns[f].cat & shim_cats[i].cat) {
                        mask |= UINT64_C(1) << f;
                    }
                }
                found = true;
            }
        }
        for (size_t f = 0; f < FN_COUNT && !found; f++) {
            if (strcmp(tok, shim_fns[f].name) == 0) {
                mask |= UINT64_C(1) << f;
                found = true;
            }
        }
        if (!found) {
            return false;
        }
    }
    *maskp = mask;
    return mask != 0;
}

static bool
shim_parse_count(const char *s, long *countp)
{
    char *end = NULL;
    long v;

    if (s == NULL) {
        return true; /* keep the default */
    }
    if (strcmp(s, "*") == 0) {
        *countp = -1;
        return true;
    }
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1) {
        return false;
    }
    *countp = v;
    return true;
}

static bool
shim_parse_ckr(const char *s, CK_RV *rvp)
{
    if (strncmp(s, "0x", 2) == 0 || strncmp(s, "0X", 2) == 0) {
        char *end = NULL;
        errno = 0;
        unsigned long v = strtoul(s + 2, &end, 16);
        if (errno != 0 || end == s + 2 || *end != '\0') {
            return false;
        }
        *rvp = v;
        return true;
    }
    for (size_t i = 0; i < sizeof(shim_ckrs) / sizeof(shim_ckrs[0]); i++) {
        if (strcmp(s, shim_ckrs[i].name) == 0) {
            *rvp = shim_ckrs[i].rv;
            return true;
        }
    }
    return false;
}

/* Replace the rules with the directives in text (which strtok_r edits). */
static void
shim_parse_locked(char *text)
{
    char *save = NULL;
    unsigned lineno = 0;

    shim_nrules = 0;
    shim_closeall_pending = false;
    for (char *line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char *tok[5] = {NULL};
        char *tsave = NULL;
        char *hash = strchr(line, '#');
        size_t n = 0;
        struct shim_rule r = {0};

        lineno++;
        if (hash != NULL) {
            *hash = '\0';
        }
        for (char *t = strtok_r(line, " \t\r", &tsave); t != NULL && n < 5;
             t = strtok_r(NULL, " \t\r", &tsave)) {
            tok[n++] = t;
        }
        if (n == 0) {
            continue;
        }
        if (strcmp(tok[0], "closeall") == 0 && n == 1) {
            shim_closeall_pending = true;
            continue;
        }
        if (shim_nrules == SHIM_RULES_MAX) {
            shim_warn("%s:%u: more than %d rules; line ignored", shim_ctl_path,
                      lineno, SHIM_RULES_MAX);
            continue;
        }
        if (strcmp(tok[0], "delay") == 0 && (n == 3 || n == 4)) {
            char *end = NULL;
            errno = 0;
            r.kind = RULE_DELAY;
            r.ms = strtol(tok[1], &end, 10);
            r.count = -1;
            if (errno != 0 || end == tok[1] || *end != '\0' || r.ms < 0 ||
                r.ms > 600000 || !shim_parse_scope(tok[2], &r.mask) ||
                !shim_parse_count(n == 4 ? tok[3] : NULL, &r.count)) {
                shim_warn("%s:%u: want 'delay <ms> <scope> [count|*]'; "
                          "line ignored",
                          shim_ctl_path, lineno);
                continue;
            }
        } else if (n == 2 || n == 3) {
            r.kind = RULE_FAIL;
            r.count = 1;
            if (!shim_parse_ckr(tok[0], &r.rv)) {
                shim_warn("%s:%u: '%s' is neither a directive (delay, "
                          "closeall) nor a CKR name or 0xHEX; line ignored",
                          shim_ctl_path, lineno, tok[0]);
                continue;
            }
            if (!shim_parse_scope(tok[1], &r.mask) ||
                !shim_parse_count(n == 3 ? tok[2] : NULL, &r.count)) {
                shim_warn("%s:%u: want '<CKR_NAME|0xHEX> <scope> [count|*]' "
                          "(scopes: sign session find slot init all "
                          "or C_Name); line ignored",
                          shim_ctl_path, lineno);
                continue;
            }
        } else {
            shim_warn("%s:%u: unknown directive '%s'; line ignored",
                      shim_ctl_path, lineno, tok[0]);
            continue;
        }
        shim_rules[shim_nrules++] = r;
    }
}

static int64_t
shim_ts_ns(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec;
}

static bool
shim_same_stat(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev &&
           a->st_size == b->st_size &&
           shim_ts_ns(&a->st_mtim) == shim_ts_ns(&b->st_mtim) &&
           shim_ts_ns(&a->st_ctim) == shim_ts_ns(&b->st_ctim);
}

/* Load the control file into buf; false if it cannot be read. */
static bool
shim_read_ctl(char *buf, size_t cap, size_t *lenp, struct stat *stp)
{
    FILE *f = fopen(shim_ctl_path, "re");
    size_t len;

    if (f == NULL) {
        return false;
    }
    if (fstat(fileno(f), stp) != 0) {
        fclose(f);
        return false;
    }
    len = fread(buf, 1, cap - 1, f);
    if (!feof(f)) {
        shim_warn("%s: longer than %zu bytes; the rest is ignored",
                  shim_ctl_path, cap - 1);
    }
    fclose(f);
    buf[len] = '\0';
    *lenp = len;
    return true;
}

/* Re-read the control file if it changed since the last call. */
static void
shim_refresh_locked(void)
{
    static char buf[SHIM_CTL_MAX];
    struct stat st;
    struct timespec now;
    size_t len = 0;

    if (shim_ctl_path[0] == '\0' || stat(shim_ctl_path, &st) != 0) {
        if (shim_ctl.present) {
            shim_ctl.present = false;
            shim_nrules = 0;
            shim_closeall_pending = false;
        }
        return;
    }
    if (shim_ctl.present && shim_same_stat(&st, &shim_ctl.st) &&
        !shim_ctl.racy) {
        return;
    }
    if (!shim_read_ctl(buf, sizeof(buf), &len, &st)) {
        return;
    }
    if (shim_ctl.present && shim_same_stat(&st, &shim_ctl.st)) {
        /* Racy: same stat, so only a content change means a new write. */
        if (len == shim_ctl.len && memcmp(buf, shim_ctl.text, len) == 0) {
            clock_gettime(CLOCK_REALTIME, &now);
            shim_ctl.racy =
                shim_ts_ns(&now) - shim_ts_ns(&st.st_mtim) < SHIM_RACY_NS;
            return;
        }
    }
    memcpy(shim_ctl.text, buf, len + 1);
    shim_ctl.len = len;
    shim_ctl.st = st;
    shim_ctl.present = true;
    clock_gettime(CLOCK_REALTIME, &now);
    shim_ctl.racy = shim_ts_ns(&now) - shim_ts_ns(&st.st_mtim) < SHIM_RACY_NS;
    /* buf is a scratch copy: the racy check compares against the text. */
    shim_parse_locked(buf);
}

static void
shim_write_stats_locked(void)
{
    char tmp[SHIM_PATH_MAX + 32];
    FILE *f;

    if (shim_stats_path[0] == '\0') {
        return;
    }
    if (snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", shim_stats_path,
                 (long)getpid()) >= (int)sizeof(tmp)) {
        return;
    }
    f = fopen(tmp, "we");
    if (f == NULL) {
        shim_warn("cannot write stats file %s: %s", tmp, strerror(errno));
        return;
    }
    for (size_t i = 0; i < FN_COUNT; i++) {
        if (shim_calls[i] != 0) {
            fprintf(f, "%s %" PRIu64 "\n", shim_fns[i].name, shim_calls[i]);
        }
    }
    for (size_t i = 0; i < FN_COUNT; i++) {
        if (shim_faults[i] != 0) {
            fprintf(f, "fault:%s %" PRIu64 "\n", shim_fns[i].name,
                    shim_faults[i]);
        }
    }
    fprintf(f, "closeall %" PRIu64 "\n", shim_closealls);
    fprintf(f, "violation %" PRIu64 "\n", shim_violations);
    if (fclose(f) != 0 || rename(tmp, shim_stats_path) != 0) {
        shim_warn("cannot write stats file %s: %s", shim_stats_path,
                  strerror(errno));
        unlink(tmp);
    }
}

/* Close every session of the real module, as if the token dropped them. */
static void
shim_closeall(void)
{
    CK_SLOT_ID slots[64];
    CK_ULONG n = 64;
    CK_RV rv = shim_real.C_GetSlotList(CK_FALSE, slots, &n);

    if (rv != CKR_OK) {
        shim_warn("closeall: C_GetSlotList failed: %s (0x%lx)",
                  shim_ckr_name(rv), (unsigned long)rv);
        return;
    }
    pthread_rwlock_wrlock(&shim_real_lock);
    for (CK_ULONG i = 0; i < n; i++) {
        (void)shim_real.C_CloseAllSessions(slots[i]);
    }
    pthread_rwlock_unlock(&shim_real_lock);
    if (shim_debug) {
        shim_warn("closeall: closed the sessions of %lu slots",
                  (unsigned long)n);
    }
}

/* Record that h is in use; report if another thread is using it. */
static int
shim_track_locked(enum shim_fn fn, CK_SESSION_HANDLE h)
{
    int free_slot = -1;

    if ((shim_no_session_arg & FN_BIT(fn)) != 0 || h == CK_INVALID_HANDLE) {
        return -1;
    }
    for (int i = 0; i < SHIM_INFLIGHT_MAX; i++) {
        if (!shim_inflight[i].used) {
            if (free_slot < 0) {
                free_slot = i;
            }
        } else if (shim_inflight[i].h == h) {
            shim_violations++;
            shim_warn("VIOLATION: %s(session %lu) while another thread is "
                      "inside %s on the same session (one operation per "
                      "session; a stale handle may now belong to someone "
                      "else)",
                      shim_fns[fn].name, (unsigned long)h,
                      shim_fns[shim_inflight[i].fn].name);
        }
    }
    if (free_slot >= 0) {
        shim_inflight[free_slot].h = h;
        shim_inflight[free_slot].fn = fn;
        shim_inflight[free_slot].used = true;
    }
    return free_slot;
}

/*
 * Every wrapped call starts here: count it, apply the control file, and
 * return the CKR to inject (CKR_OK to forward). Sleeps and closeall run
 * outside the lock so that a delayed thread does not stall the others.
 */
static CK_RV
shim_enter(enum shim_fn fn, CK_SESSION_HANDLE h, struct shim_call *call)
{
    uint64_t bit = FN_BIT(fn);
    CK_RV rv = CKR_OK;
    long delay_ms = 0;
    bool closeall;

    call->forwarded = false;
    call->slot = -1;
    pthread_mutex_lock(&shim_lock);
    shim_refresh_locked();
    shim_calls[fn]++;
    for (size_t i = 0; i < shim_nrules; i++) {
        struct shim_rule *r = &shim_rules[i];
        if (!(r->mask & bit) || r->count == 0) {
            continue;
        }
        if (r->kind == RULE_DELAY) {
            delay_ms += r->ms;
        } else if (rv == CKR_OK) {
            rv = r->rv;
        } else {
            continue; /* one injected CKR per call: keep this rule's count */
        }
        if (r->count > 0) {
            r->count--;
        }
    }
    if (rv != CKR_OK) {
        shim_faults[fn]++;
    } else {
        call->slot = shim_track_locked(fn, h);
    }
    closeall = shim_closeall_pending;
    shim_closeall_pending = false;
    if (closeall) {
        shim_closealls++;
    }
    shim_write_stats_locked();
    pthread_mutex_unlock(&shim_lock);

    if (closeall) {
        shim_closeall();
    }
    if (delay_ms > 0) {
        struct timespec ts = {.tv_sec = delay_ms / 1000,
                              .tv_nsec = (delay_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
    if (rv != CKR_OK) {
        if (shim_debug) {
            shim_warn("%s -> %s (0x%lx) injected", shim_fns[fn].name,
                      shim_ckr_name(rv), (unsigned long)rv);
        }
        return rv;
    }
    pthread_rwlock_rdlock(&shim_real_lock);
    call->forwarded = true;
    return CKR_OK;
}

static void
shim_leave(const struct shim_call *call, enum shim_fn fn, CK_SESSION_HANDLE h,
           CK_RV rv)
{
    if (shim_debug >= 2) {
        if ((shim_no_session_arg & FN_BIT(fn)) != 0) {
            shim_warn("%s -> %s", shim_fns[fn].name, shim_ckr_name(rv));
        } else {
            shim_warn("%s(session %lu) -> %s", shim_fns[fn].name,
                      (unsigned long)h, shim_ckr_name(rv));
        }
    }
    if (call->forwarded) {
        pthread_rwlock_unlock(&shim_real_lock);
    }
    if (call->slot >= 0) {
        pthread_mutex_lock(&shim_lock);
        shim_inflight[call->slot].used = false;
        pthread_mutex_unlock(&shim_lock);
    }
}

/* The first parameter of every wrapper is named a; it is a session handle
 * unless shim_no_session_arg says otherwise (then it is ignored). */
#define SHIM_WRAP(name, cat, params, args)                                     \
    static CK_RV shim_##name params                                            \
    {                                                                          \
        struct shim_call call;                                                 \
        CK_RV rv =                                                             \
            shim_enter(FN_##name, (CK_SESSION_HANDLE)(uintptr_t)(a), &call);   \
        if (rv == CKR_OK) {                                                    \
            rv = shim_real.name args;                                          \
        }                                                                      \
        shim_leave(&call, FN_##name, (CK_SESSION_HANDLE)(uintptr_t)(a), rv);   \
        return rv;                                                             \
    }
SHIM_FUNCTIONS(SHIM_WRAP)
#undef SHIM_WRAP

/* C_Initialize also picks up the environment again, for reloads. */
static CK_RV
shim_init_entry(CK_VOID_PTR args)
{
    pthread_mutex_lock(&shim_lock);
    shim_env_locked();
    pthread_mutex_unlock(&shim_lock);
    return shim_C_Initialize(args);
}

static CK_RV
shim_load_locked(void)
{
    const char *path = getenv("P11SHIM_MODULE");
    CK_C_GetFunctionList get;
    CK_FUNCTION_LIST_PTR real = NULL;
    void *h;
    CK_RV rv;

    if (path == NULL || *path == '\0') {
        path = SHIM_DEFAULT_MODULE;
    }
    h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        shim_warn("cannot load the real module %s: %s", path, dlerror());
        return CKR_GENERAL_ERROR;
    }
    /* A function pointer from dlsym: go through memcpy, as POSIX allows. */
    {
        void *sym = dlsym(h, "C_GetFunctionList");
        if (sym == NULL) {
            shim_warn("%s: no C_GetFunctionList: not a PKCS#11 module", path);
            dlclose(h);
            return CKR_GENERAL_ERROR;
        }
        memcpy(&get, &sym, sizeof(get));
    }
    rv = get(&real);
    if (rv != CKR_OK || real == NULL) {
        shim_warn("%s: C_GetFunctionList failed: %s (0x%lx)", path,
                  shim_ckr_name(rv), (unsigned long)rv);
        dlclose(h);
        return rv != CKR_OK ? rv : CKR_GENERAL_ERROR;
    }
    /* The real module stays loaded for the life of the process. */
    shim_real = *real;
    shim_list = *real;
#define SHIM_INSTALL(name, cat, params, args) shim_list.name = shim_##name;
    SHIM_FUNCTIONS(SHIM_INSTALL)
#undef SHIM_INSTALL
    shim_list.C_Initialize = shim_init_entry;
    shim_list.C_GetFunctionList = C_GetFunctionList;
    shim_loaded = true;
    return CKR_OK;
}

CK_RV
C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    CK_RV rv = CKR_OK;

    if (list == NULL) {
        return CKR_ARGUMENTS_BAD;
    }
    pthread_mutex_lock(&shim_lock);
    shim_env_locked();
    if (!shim_loaded) {
        rv = shim_load_locked();
    }
    pthread_mutex_unlock(&shim_lock);
    if (rv == CKR_OK) {
        *list = &shim_list;
    }
    return rv;
}
