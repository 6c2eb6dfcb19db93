/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hsm_keygen inside a private SoftHSM2 token (softhsm-run.sh): RSA-2048 and
 * RSA-3072 keys, and proof through Cryptoki itself that the private key
 * cannot leave the token: CKA_PRIVATE_EXPONENT is sensitive, C_WrapKey is
 * refused, SENSITIVE/EXTRACTABLE cannot be flipped back, usage is
 * sign-only. Also: existing labels are refused, bad input is refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
    } while (0)

static const char *module_path, *token, *pin_file;
static char pin_src[600];

static CK_FUNCTION_LIST *fl;
static CK_SESSION_HANDLE rs; /* a raw session of the test's own */

static CK_SLOT_ID
raw_slot(void)
{
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16, i;
    CK_TOKEN_INFO ti;
    char label[40];

    if (fl->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK) {
        return (CK_SLOT_ID)-1;
    }
    for (i = 0; i < n; i++) {
        if (fl->C_GetTokenInfo(slots[i], &ti) == CKR_OK) {
            hsm_fixed_str(ti.label, sizeof(ti.label), label, sizeof(label));
            if (strcmp(label, token) == 0) {
                return slots[i];
            }
        }
    }
    return (CK_SLOT_ID)-1;
}

static CK_OBJECT_HANDLE
raw_find(CK_OBJECT_CLASS cls, const char *label)
{
    CK_ATTRIBUTE t[2] = {{CKA_CLASS, &cls, sizeof(cls)},
                         {CKA_LABEL, (void *)label, strlen(label)}};
    CK_OBJECT_HANDLE o = 0;
    CK_ULONG got = 0;

    if (fl->C_FindObjectsInit(rs, t, 2) != CKR_OK) {
        return 0;
    }
    if (fl->C_FindObjects(rs, &o, 1, &got) != CKR_OK || got != 1) {
        o = 0;
    }
    fl->C_FindObjectsFinal(rs);
    return o;
}

static int
raw_bool(CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type)
{
    CK_BBOOL v = 2;
    CK_ATTRIBUTE a = {type, &v, sizeof(v)};

    if (fl->C_GetAttributeValue(rs, o, &a, 1) != CKR_OK) {
        return -1;
    }
    return v == CK_TRUE;
}

static void
prove_non_extractable(const char *label, unsigned bits)
{
    CK_OBJECT_HANDLE priv = raw_find(CKO_PRIVATE_KEY, label);
    CK_OBJECT_HANDLE pub = raw_find(CKO_PUBLIC_KEY, label);
    uint8_t buf[4096];
    CK_ATTRIBUTE a = {CKA_PRIVATE_EXPONENT, buf, sizeof(buf)};
    CK_BBOOL t = CK_TRUE, f = CK_FALSE;
    CK_RV rv;

    CHECK(priv != 0 && pub != 0, "[%s] private and public objects found",
          label);
    if (priv == 0 || pub == 0) {
        return;
    }
    rv = fl->C_GetAttributeValue(rs, priv, &a, 1);
    CHECK(rv == CKR_ATTRIBUTE_SENSITIVE &&
              a.ulValueLen == CK_UNAVAILABLE_INFORMATION,
          "[%s] reading CKA_PRIVATE_EXPONENT -> %s", label, hsm_ckr_name(rv));
    a.type = CKA_PRIME_1;
    a.ulValueLen = sizeof(buf);
    rv = fl->C_GetAttributeValue(rs, priv, &a, 1);
    CHECK(rv == CKR_ATTRIBUTE_SENSITIVE, "[%s] reading CKA_PRIME_1 -> %s",
          label, hsm_ckr_name(rv));

    /* Wrap with a fresh session AES key: the token must refuse. */
    {
        CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0};
        CK_MECHANISM wrap = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
        CK_ULONG vlen = 32, wlen = sizeof(buf);
        CK_ATTRIBUTE at[] = {{CKA_TOKEN, &f, sizeof(f)},
                             {CKA_WRAP, &t, sizeof(t)},
                             {CKA_VALUE_LEN, &vlen, sizeof(vlen)}};
        CK_OBJECT_HANDLE aes = 0;
        rv = fl->C_GenerateKey(rs, &gen, at, 3, &aes);
        CHECK(rv == CKR_OK, "[%s] session AES wrapping key: %s", label,
              hsm_ckr_name(rv));
        rv = fl->C_WrapKey(rs, &wrap, aes, priv, buf, &wlen);
        CHECK(rv == CKR_KEY_UNEXTRACTABLE,
              "[%s] C_WrapKey(private key) -> %s (want "
              "CKR_KEY_UNEXTRACTABLE)",
              label, hsm_ckr_name(rv));
        fl->C_DestroyObject(rs, aes);
    }

    CHECK(raw_bool(priv, CKA_SENSITIVE) == 1 &&
              raw_bool(priv, CKA_ALWAYS_SENSITIVE) == 1,
          "[%s] CKA_SENSITIVE and CKA_ALWAYS_SENSITIVE true", label);
    CHECK(raw_bool(priv, CKA_EXTRACTABLE) == 0 &&
              raw_bool(priv, CKA_NEVER_EXTRACTABLE) == 1,
          "[%s] CKA_EXTRACTABLE false, CKA_NEVER_EXTRACTABLE true", label);
    CHECK(raw_bool(priv, CKA_PRIVATE) == 1 && raw_bool(priv, CKA_TOKEN) == 1 &&
              raw_bool(priv, CKA_LOCAL) == 1,
          "[%s] private, token object, generated on the token (CKA_LOCAL)",
          label);
    CHECK(raw_bool(priv, CKA_SIGN) == 1 && raw_bool(priv, CKA_DECRYPT) == 0 &&
              raw_bool(priv, CKA_UNWRAP) == 0 &&
              raw_bool(priv, CKA_DERIVE) == 0,
          "[%s] sign-only: CKA_SIGN true, DECRYPT/UNWRAP/DERIVE false", label);
    CHECK(raw_bool(pub, CKA_VERIFY) == 1 && raw_bool(pub, CKA_ENCRYPT) == 0 &&
              raw_bool(pub, CKA_WRAP) == 0,
          "[%s] public key: VERIFY true, ENCRYPT/WRAP false", label);

    /* One-way flags: the token refuses to turn them back. */
    {
        CK_ATTRIBUTE s0 = {CKA_SENSITIVE, &f, sizeof(f)};
        CK_ATTRIBUTE e1 = {CKA_EXTRACTABLE, &t, sizeof(t)};
        rv = fl->C_SetAttributeValue(rs, priv, &s0, 1);
        CHECK(rv != CKR_OK && raw_bool(priv, CKA_SENSITIVE) == 1,
              "[%s] setting CKA_SENSITIVE false refused (%s)", label,
              hsm_ckr_name(rv));
        rv = fl->C_SetAttributeValue(rs, priv, &e1, 1);
        CHECK(rv != CKR_OK && raw_bool(priv, CKA_EXTRACTABLE) == 0,
              "[%s] setting CKA_EXTRACTABLE true refused (%s)", label,
              hsm_ckr_name(rv));
    }
    /* MODIFIABLE stays true so a rotation can relabel the key. */
    {
        char other[160];
        CK_ATTRIBUTE l = {CKA_LABEL, other, 0};
        snprintf(other, sizeof(other), "%s-relabelled", label);
        l.ulValueLen = strlen(other);
        rv = fl->C_SetAttributeValue(rs, priv, &l, 1);
        CHECK(rv == CKR_OK, "[%s] relabel (C_SetAttributeValue CKA_LABEL): %s",
              label, hsm_ckr_name(rv));
        l.pValue = (void *)label;
        l.ulValueLen = strlen(label);
        fl->C_SetAttributeValue(rs, priv, &l, 1);
    }

    {
        uint8_t i1[64], i2[64], l1[160], l2[160];
        CK_ATTRIBUTE q1[2] = {{CKA_ID, i1, sizeof(i1)},
                              {CKA_LABEL, l1, sizeof(l1)}};
        CK_ATTRIBUTE q2[2] = {{CKA_ID, i2, sizeof(i2)},
                              {CKA_LABEL, l2, sizeof(l2)}};
        CK_ULONG mbits = 0;
        CK_ATTRIBUTE mb = {CKA_MODULUS_BITS, &mbits, sizeof(mbits)};
        int same = fl->C_GetAttributeValue(rs, priv, q1, 2) == CKR_OK &&
                   fl->C_GetAttributeValue(rs, pub, q2, 2) == CKR_OK &&
                   q1[0].ulValueLen == q2[0].ulValueLen &&
                   q1[0].ulValueLen > 0 &&
                   memcmp(i1, i2, q1[0].ulValueLen) == 0 &&
                   q1[1].ulValueLen == q2[1].ulValueLen &&
                   memcmp(l1, l2, q1[1].ulValueLen) == 0;
        CHECK(same, "[%s] public and private share CKA_ID and CKA_LABEL",
              label);
        CHECK(fl->C_GetAttributeValue(rs, pub, &mb, 1) == CKR_OK &&
                  mbits == bits,
              "[%s] CKA_MODULUS_BITS %lu (want %u)", label, mbits, bits);
    }
}

static pj_rc
keygen(struct hsm_module *mod, const char *label, const char *extra,
       unsigned bits, struct hsm_key_info *info, struct pj_err *err)
{
    char uri[512];
    struct hsm_keygen_opts o = {0};

    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=%s%s", token, label,
             extra);
    o.uri = uri;
    o.pin_source = pin_src;
    o.bits = bits;
    pj_err_clear(err);
    return hsm_keygen(mod, &o, info, err);
}

int
main(void)
{
    struct hsm_module *mod = NULL;
    struct hsm_key_info info;
    struct pj_err err = {0};
    CK_SLOT_ID slot;
    char pin[64];
    FILE *pf;
    pj_rc rc;

    module_path = getenv("P11JWT_TEST_MODULE");
    token = getenv("P11JWT_TEST_TOKEN");
    pin_file = getenv("P11JWT_TEST_PIN_FILE");
    if (module_path == NULL || token == NULL || pin_file == NULL) {
        printf("FAIL: run through softhsm-run.sh (P11JWT_TEST_* unset)\n");
        return 1;
    }
    snprintf(pin_src, sizeof(pin_src), "file:%s", pin_file);
    if (hsm_module_load(module_path, &mod, &err) != PJ_OK) {
        printf("FAIL: hsm_module_load: %s\n", err.msg);
        return 1;
    }
    fl = hsm_module_functions(mod);

    rc = keygen(mod, "kg2048", "", 0, &info, &err);
    CHECK(rc == PJ_OK, "keygen default (2048)%s%s", rc ? ": " : "", err.msg);
    CHECK(info.bits == 2048 && info.id_len == 8 &&
              strcmp(info.label, "kg2048") == 0 &&
              strcmp(info.token_label, token) == 0,
          "info: %lu bits, %zu-byte random id, label '%s'", info.bits,
          info.id_len, info.label);
    CHECK(info.sensitive && info.always_sensitive && !info.extractable &&
              info.never_extractable && info.can_sign && !info.can_decrypt &&
              !info.can_unwrap && info.local,
          "info flags: sensitive, never extractable, sign-only, local");
    rc = keygen(mod, "kg3072", ";id=%42%43;type=private", 3072, &info, &err);
    CHECK(rc == PJ_OK, "keygen 3072 with id from the URI%s%s", rc ? ": " : "",
          err.msg);
    CHECK(info.bits == 3072 && info.id_len == 2 && info.id[0] == 0x42 &&
              info.id[1] == 0x43,
          "info: 3072 bits, id 4243");

    /* Refusals. */
    rc = keygen(mod, "kg2048", "", 2048, NULL, &err);
    CHECK(rc == PJ_ERR_EXISTS &&
              strstr(err.msg, "an object labelled 'kg2048' already exists on "
                              "token") != NULL &&
              strstr(err.msg, "choose another label or delete it") != NULL,
          "existing label refused: %s", err.msg);
    rc = keygen(mod, "kgdup", ";id=%42%43", 2048, NULL, &err);
    CHECK(rc == PJ_ERR_EXISTS && strstr(err.msg, "id 4243") != NULL,
          "existing id refused: %s", err.msg);
    rc = keygen(mod, "kg1024", "", 1024, NULL, &err);
    CHECK(rc == PJ_ERR_INVALID && strstr(err.msg, "1024") != NULL,
          "1024 bits refused: %s", err.msg);
    rc = keygen(mod, "kgpub", ";type=public", 2048, NULL, &err);
    CHECK(rc == PJ_ERR_INVALID, "type=public refused: %s", err.msg);
    {
        struct hsm_keygen_opts o = {0};
        char uri[200];
        snprintf(uri, sizeof(uri), "pkcs11:token=%s", token);
        o.uri = uri;
        o.pin_source = pin_src;
        pj_err_clear(&err);
        rc = hsm_keygen(mod, &o, NULL, &err);
        CHECK(rc == PJ_ERR_INVALID && strstr(err.msg, "object=") != NULL,
              "no label refused: %s", err.msg);
        o.uri = "pkcs11:token=no-such-token;object=x";
        pj_err_clear(&err);
        rc = hsm_keygen(mod, &o, NULL, &err);
        CHECK(rc == PJ_ERR_NOT_FOUND &&
                  strstr(err.msg, "token 'no-such-token' not found (tokens "
                                  "present: ") != NULL &&
                  strstr(err.msg, token) != NULL,
              "missing token: %s", err.msg);
    }
    {
        /* A wrong PIN: PJ_ERR_PIN, and nothing is generated. */
        struct hsm_keygen_opts o = {0};
        char wrong[600], src[620], uri[200];
        FILE *w;

        snprintf(wrong, sizeof(wrong), "%s.wrong", pin_file);
        if ((w = fopen(wrong, "w")) == NULL) {
            printf("FAIL: cannot write %s\n", wrong);
            return 1;
        }
        fputs("0000\n", w);
        fclose(w);
        chmod(wrong, 0600);
        snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=kgwrong", token);
        snprintf(src, sizeof(src), "file:%s", wrong);
        o.uri = uri;
        o.pin_source = src;
        pj_err_clear(&err);
        rc = hsm_keygen(mod, &o, NULL, &err);
        CHECK(rc == PJ_ERR_PIN && err.ckr == CKR_PIN_INCORRECT &&
                  strstr(err.msg, "0000") == NULL,
              "wrong PIN: %s", err.msg);
    }

    /* The proof, through a raw session of our own. */
    slot = raw_slot();
    CHECK(slot != (CK_SLOT_ID)-1, "raw: token slot found");
    CHECK(fl->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
                            NULL, &rs) == CKR_OK,
          "raw: session opened");
    pf = fopen(pin_file, "r");
    if (pf == NULL || fgets(pin, sizeof(pin), pf) == NULL) {
        printf("FAIL: cannot read %s\n", pin_file);
        return 1;
    }
    fclose(pf);
    pin[strcspn(pin, "\n")] = '\0';
    {
        CK_RV rv = fl->C_Login(rs, CKU_USER, (CK_UTF8CHAR *)pin, strlen(pin));
        CHECK(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN,
              "raw: logged in (%s)", hsm_ckr_name(rv));
    }
    prove_non_extractable("kg2048", 2048);
    prove_non_extractable("kg3072", 3072);
    CHECK(raw_find(CKO_PRIVATE_KEY, "kgwrong") == 0 &&
              raw_find(CKO_PRIVATE_KEY, "kg1024") == 0,
          "refused keygens created nothing");
    fl->C_CloseSession(rs);
    hsm_module_free(mod);
    printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
    return failures ? 1 : 0;
}
