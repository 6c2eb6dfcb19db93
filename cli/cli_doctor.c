/* SPDX-License-Identifier: Apache-2.0 */
/*
 * p11jwt doctor: diagnose one profile's whole setup in one checklist, each
 * line ok / warn / fail / skip with the fix (docs/doctor.md).
 *
 * The checks run in dependency order and each records its result; the list
 * is printed at the end, as aligned text or (--json) as an array of
 * {check, status, message, fix}. A check whose input is missing because an
 * earlier one failed is "skip" with the reason. Exit 0 when nothing failed
 * (warnings allowed), 1 when something failed, 2 on a usage error.
 *
 * Safety rules doctor keeps because it runs against production tokens:
 *   - the PIN is read once for the readability check and wiped at once; it
 *     is never printed;
 *   - C_Login is attempted at most once (hsm_key_open); a rejected PIN is
 *     reported, never retried (tokens lock after a few wrong PINs);
 *   - at most one token request is sent to Salesforce (the live exchange,
 *     --no-exchange to skip it): each one counts against the org's limits;
 *   - the agent is optional: when it is not running the line is a warning.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <p11-kit/uri.h>

#include "agent/client.h"
#include "certs/cert.h"
#include "cli/cli.h"
#include "core/pj_config.h"
#include "core/pj_secret.h"
#include "core/pj_util.h"
#include "pkcs11/hsm.h"
#include "salesforce/sf.h"

#define CMD "doctor"
#define DR_MSG_MAX 700
#define DR_FIX_MAX 700
#define DR_AGENT_TIMEOUT_MS 5000

enum dr_status {
    DR_OK,
    DR_WARN,
    DR_FAIL,
    DR_SKIP,
};

/* The checklist, in the order it is printed. */
enum dr_id {
    DR_CONFIG,
    DR_MODULE,
    DR_TOKEN,
    DR_PIN,
    DR_LOGIN,
    DR_KEY,
    DR_KEY_PROT,
    DR_KEY_USAGE,
    DR_CERT,
    DR_CERT_MATCH,
    DR_CERT_EXPIRY,
    DR_KEY_SIZE,
    DR_AUDIENCE,
    DR_SKEW,
    DR_EXCHANGE,
    DR_AGENT,
    DR_N
};

/* Stable names: scripts and the tests match on them (docs/doctor.md). */
static const char *const dr_names[DR_N] = {
    "config",      "module",     "token",          "pin-source",
    "login",       "key",        "key-protection", "key-usage",
    "certificate", "cert-match", "cert-expiry",    "key-size",
    "audience",    "clock-skew", "exchange",       "agent",
};

struct dr_check {
    bool done;
    enum dr_status st;
    char msg[DR_MSG_MAX];
    char fix[DR_FIX_MAX]; /* empty: no fix */
};

struct dr_opts {
    const char *profile;
    bool json;
    bool no_exchange;
};

/* Everything the checks share; owned by cli_cmd_doctor. */
struct dr_ctx {
    struct dr_check c[DR_N];
    const char *config_path;
    struct pj_config *cfg;
    const struct pj_profile *prof;
    const char *module_path;
    const char *module_from;
    struct hsm_module *mod;
    const char *pin_source; /* borrowed: option, profile or key URI */
    char *uri_pin_source;   /* owned copy when it came from the key URI */
    struct hsm_key *key;
    struct hsm_key_info info;
    bool have_info;
    struct cert *cert;
    bool cert_matches;
    bool have_match;
    bool curl_up;
    bool skew_known;
    int64_t skew;
};

static void dr_set(struct dr_ctx *x, enum dr_id id, enum dr_status st,
                   const char *fix, const char *fmt, ...) PJ_PRINTF(5, 6);

static void
dr_set(struct dr_ctx *x, enum dr_id id, enum dr_status st, const char *fix,
       const char *fmt, ...)
{
    struct dr_check *c = &x->c[id];
    va_list ap;

    c->done = true;
    c->st = st;
    va_start(ap, fmt);
    vsnprintf(c->msg, sizeof(c->msg), fmt, ap);
    va_end(ap);
    snprintf(c->fix, sizeof(c->fix), "%s", fix != NULL ? fix : "");
}

/* Mark a check skipped because of an earlier one (unless already set). */
static void
dr_skip(struct dr_ctx *x, enum dr_id id, const char *because)
{
    if (!x->c[id].done) {
        dr_set(x, id, DR_SKIP, NULL, "skipped (because %s)", because);
    }
}

static void
dr_skip_range(struct dr_ctx *x, enum dr_id from, enum dr_id to,
              const char *because)
{
    int i;

    for (i = (int)from; i <= (int)to; i++) {
        dr_skip(x, (enum dr_id)i, because);
    }
}

static const char *
dr_status_name(enum dr_status st)
{
    switch (st) {
    case DR_OK:
        return "ok";
    case DR_WARN:
        return "warn";
    case DR_FAIL:
        return "fail";
    case DR_SKIP:
        return "skip";
    }
    return "?";
}

/* ---- config and module ------------------------------------------------ */

static void
check_config(struct dr_ctx *x, const struct dr_opts *o)
{
    struct pj_err err = {0};
    char fix[DR_FIX_MAX];

    x->config_path = pj_config_path_resolve(cli_global.config);
    if (pj_config_load_file(x->config_path, &x->cfg, &err) != PJ_OK) {
        if (err.rc == PJ_ERR_NOT_FOUND || err.rc == PJ_ERR_IO) {
            snprintf(fix, sizeof(fix),
                     "create %s (packaging/p11jwt.conf is an example) or "
                     "name the right file with -c FILE or $%s",
                     x->config_path, PJ_CONFIG_ENV);
        } else {
            snprintf(fix, sizeof(fix),
                     "correct the line named above in %s "
                     "(docs/configuration.md lists every key and value)",
                     x->config_path);
        }
        dr_set(x, DR_CONFIG, DR_FAIL, fix, "%s", err.msg);
        return;
    }
    if (pj_config_profile_select(x->cfg, o->profile, &x->prof, &err) != PJ_OK) {
        dr_set(x, DR_CONFIG, DR_FAIL,
               "name one of the profiles with --profile NAME, or add a "
               "[profile NAME] section",
               "%s: %s", x->config_path, err.msg);
        return;
    }
    dr_set(x, DR_CONFIG, DR_OK, NULL, "%s parsed; profile '%s' (line %u)",
           x->config_path, x->prof->name, x->prof->line);
}

/* --module, then $P11JWT_MODULE, then [agent] module, then the default. */
static void
module_resolve(struct dr_ctx *x)
{
    const char *env = getenv("P11JWT_MODULE");

    if (cli_global.module != NULL) {
        x->module_path = cli_global.module;
        x->module_from = "--module";
    } else if (env != NULL && env[0] != '\0') {
        x->module_path = env;
        x->module_from = "$P11JWT_MODULE";
    } else if (x->cfg->agent.module != NULL) {
        x->module_path = x->cfg->agent.module;
        x->module_from = "[agent] module";
    } else {
        x->module_path = hsm_module_path_resolve(NULL);
        x->module_from = "the built-in default";
    }
}

static void
check_module(struct dr_ctx *x)
{
    struct pj_err err = {0};
    char fix[DR_FIX_MAX];

    module_resolve(x);
    if (hsm_module_load(x->module_path, &x->mod, &err) != PJ_OK) {
        snprintf(fix, sizeof(fix),
                 "install the token vendor's PKCS#11 module and set "
                 "module = /path/to/module.so in [agent] of %s (it came "
                 "from %s; for SoftHSM2: apt-get install softhsm2, %s)",
                 x->config_path, x->module_from, HSM_DEFAULT_MODULE);
        dr_set(x, DR_MODULE, DR_FAIL, fix, "%s", err.msg);
        return;
    }
    dr_set(x, DR_MODULE, DR_OK, NULL, "%s loaded (from %s)", x->module_path,
           x->module_from);
}

/* ---- token, PIN source, login, key ------------------------------------ */

/*
 * The key URI reduced to its token attributes (no object, no PIN source),
 * so the token can be looked up without logging in. *outp is new (free()).
 * Also copies the URI's pin-source into x->uri_pin_source.
 */
static pj_rc
token_uri(struct dr_ctx *x, char **outp, struct pj_err *err)
{
    P11KitUri *u;
    char *s = NULL;
    int r;

    *outp = NULL;
    if ((u = p11_kit_uri_new()) == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
    }
    r = p11_kit_uri_parse(x->prof->key, P11_KIT_URI_FOR_ANY, u);
    if (r != P11_KIT_URI_OK) {
        p11_kit_uri_free(u);
        return pj_err_set(err, PJ_ERR_CONFIG, "key URI '%s' is not valid: %s",
                          x->prof->key, p11_kit_uri_message(r));
    }
    if (p11_kit_uri_get_pin_source(u) != NULL &&
        (x->uri_pin_source = strdup(p11_kit_uri_get_pin_source(u))) == NULL) {
        p11_kit_uri_free(u);
        return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
    }
    /* Certificates are public: no PIN may be used for the token lookup. */
    p11_kit_uri_set_pin_source(u, NULL);
    p11_kit_uri_set_pin_value(u, NULL);
    r = p11_kit_uri_format(u, P11_KIT_URI_FOR_TOKEN, &s);
    p11_kit_uri_free(u);
    if (r != P11_KIT_URI_OK || s == NULL) {
        free(s);
        return pj_err_set(err, PJ_ERR_NOMEM, "cannot format the token URI");
    }
    *outp = s;
    return PJ_OK;
}

static void
check_token(struct dr_ctx *x)
{
    struct pj_err err = {0};
    char *turi = NULL;
    uint8_t *der = NULL;
    size_t len = 0;
    pj_rc rc;

    if (token_uri(x, &turi, &err) != PJ_OK) {
        dr_set(x, DR_TOKEN, DR_FAIL,
               "write key = pkcs11:token=LABEL;object=LABEL;type=private "
               "(RFC 7512)",
               "%s", err.msg);
        return;
    }
    /*
     * Any certificate lookup on the token tells whether the token is there,
     * without a login: "not found (tokens present: ...)" and "ambiguous"
     * come from the token search, everything else means it was found.
     */
    rc = hsm_cert_find(x->mod, turi, NULL, &der, &len, &err);
    free(der);
    if (rc != PJ_OK && strstr(err.msg, "tokens present") != NULL) {
        dr_set(x, DR_TOKEN, DR_FAIL,
               "plug in or initialise the token, or set token= in the "
               "profile's key URI to one of the tokens present",
               "%s", err.msg);
    } else if (rc != PJ_OK && strncmp(err.msg, "token '", 7) == 0 &&
               strstr(err.msg, "ambiguous") != NULL) {
        dr_set(x, DR_TOKEN, DR_FAIL,
               "add serial=... to the key URI so it names exactly one token",
               "%s", err.msg);
    } else if (rc != PJ_OK && err.rc == PJ_ERR_TOKEN) {
        dr_set(x, DR_TOKEN, DR_FAIL,
               "check that the token is connected and its daemon or "
               "network HSM client is running",
               "%s", err.msg);
    } else {
        dr_set(x, DR_TOKEN, DR_OK, NULL, "a token matching %s is present",
               turi);
    }
    free(turi);
}

static void
check_pin(struct dr_ctx *x)
{
    struct pj_err err = {0};
    struct pj_secret *pin = NULL;
    char fix[DR_FIX_MAX];
    const char *src;
    struct stat st;

    if (cli_global.pin_source != NULL) {
        x->pin_source = cli_global.pin_source;
    } else if (x->prof->pin_source != NULL) {
        x->pin_source = x->prof->pin_source;
    } else {
        x->pin_source = x->uri_pin_source; /* may be NULL */
    }
    src = x->pin_source;
    if (src == NULL) {
        dr_set(x, DR_PIN, DR_WARN,
               "if the token needs a PIN, add pin-source = "
               "file:/etc/p11jwt/NAME.pin (mode 0600) or systemd:NAME to "
               "the profile",
               "no pin-source configured (fine only for a token without "
               "login)");
        return;
    }
    /* Read and wipe at once: this only proves the source works. */
    if (hsm_pin_read(src, &pin, &err) != PJ_OK) {
        const char *path = strncmp(src, "file:", 5) == 0 ? src + 5 : src;
        switch (err.rc) {
        case PJ_ERR_DENIED:
            snprintf(fix, sizeof(fix),
                     "chmod 600 %s (and chown it to the user the agent "
                     "runs as)",
                     path);
            break;
        case PJ_ERR_NOT_FOUND:
            snprintf(fix, sizeof(fix),
                     "create the PIN source with the token's user PIN "
                     "(a file: umask 077; printf '%%s' PIN > FILE), or fix "
                     "pin-source in %s",
                     x->config_path);
            break;
        default:
            snprintf(fix, sizeof(fix),
                     "fix pin-source (file:PATH with mode 0600, env:NAME or "
                     "systemd:NAME) in %s",
                     x->config_path);
            break;
        }
        dr_set(x, DR_PIN, DR_FAIL, fix, "%s: %s", src, err.msg);
        return;
    }
    pj_secret_free(pin);
    if (strncmp(src, "file:", 5) == 0 && stat(src + 5, &st) == 0) {
        dr_set(x, DR_PIN, DR_OK, NULL,
               "%s readable, mode %04o, owner uid %u (PIN not shown)", src,
               (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid);
    } else if (strncmp(src, "env:", 4) == 0) {
        dr_set(x, DR_PIN, DR_OK, NULL,
               "%s is set (PIN not shown; a file or systemd credential "
               "keeps it out of the environment)",
               src);
    } else {
        dr_set(x, DR_PIN, DR_OK, NULL, "%s readable (PIN not shown)", src);
    }
}

/* hsm_key_open: finds the token, logs in once, finds the key. */
static void
check_login_and_key(struct dr_ctx *x)
{
    struct pj_err err = {0};
    struct hsm_key_opts kopts = {0};
    char fix[DR_FIX_MAX];
    pj_rc rc;

    kopts.uri = x->prof->key;
    kopts.pin_source = x->pin_source;
    kopts.sessions = 1;
    rc = hsm_key_open(x->mod, &kopts, &x->key, &err);
    if (rc == PJ_OK) {
        dr_set(x, DR_LOGIN, DR_OK, NULL, "%s",
               x->pin_source != NULL
                   ? "logged in to the token (one C_Login)"
                   : "the token let the key be used without a login");
        if (hsm_key_get_info(x->key, &x->info, &err) != PJ_OK) {
            dr_set(x, DR_KEY, DR_FAIL,
                   "check the token; its key attributes cannot be read", "%s",
                   err.msg);
            return;
        }
        x->have_info = true;
        if (x->c[DR_TOKEN].st == DR_OK) {
            /* Now the token's own description is known: show it. */
            dr_set(x, DR_TOKEN, DR_OK, NULL,
                   "token '%s' present (%s %s, serial %s)", x->info.token_label,
                   x->info.token_manufacturer, x->info.token_model,
                   x->info.token_serial);
        }
        dr_set(x, DR_KEY, DR_OK, NULL,
               "private key '%s' on token '%s' (module: %s)", x->info.label,
               x->info.token_label, x->info.module_description);
        return;
    }
    if (rc == PJ_ERR_PIN) {
        dr_set(x, DR_LOGIN, DR_FAIL,
               "put the token's user PIN in the PIN source; doctor tried "
               "C_Login once and did not retry (tokens lock the PIN after a "
               "few wrong tries)",
               "%s", err.msg);
        dr_skip(x, DR_KEY, "login failed");
        return;
    }
    if (rc == PJ_ERR_PIN_LOCKED) {
        dr_set(x, DR_LOGIN, DR_FAIL,
               "the token's security officer must unlock or reset the user "
               "PIN (SoftHSM2: softhsm2-util; a network HSM: its admin "
               "tool); not retried",
               "%s", err.msg);
        dr_skip(x, DR_KEY, "login failed");
        return;
    }
    if (x->pin_source == NULL && strstr(err.msg, "needs a PIN") != NULL) {
        dr_set(x, DR_LOGIN, DR_FAIL,
               "add pin-source = file:/etc/p11jwt/NAME.pin (mode 0600) to "
               "the profile",
               "%s", err.msg);
        dr_skip(x, DR_KEY, "login failed");
        return;
    }
    if (strstr(err.msg, "C_Login") != NULL ||
        strstr(err.msg, "tokens present") != NULL ||
        strstr(err.msg, "C_OpenSession") != NULL) {
        dr_set(x, DR_LOGIN, DR_FAIL,
               "check the token and its module; the error above is the "
               "token's own (not retried)",
               "%s", err.msg);
        dr_skip(x, DR_KEY, "login failed");
        return;
    }
    /* The token and login were fine; the key itself is the problem. */
    dr_set(x, DR_LOGIN, DR_OK, NULL, "%s",
           x->pin_source != NULL ? "logged in to the token (one C_Login)"
                                 : "no login needed");
    if (err.rc == PJ_ERR_NOT_FOUND) {
        snprintf(fix, sizeof(fix),
                 "generate the key on the token: p11jwt keygen --key '%s' "
                 "(sensitive, never extractable, sign-only), or fix object= "
                 "in the profile's key URI",
                 x->prof->key);
    } else {
        snprintf(fix, sizeof(fix),
                 "point key= at an RSA private key that can sign with "
                 "CKM_SHA256_RSA_PKCS or CKM_RSA_PKCS (p11jwt keygen makes "
                 "one)");
    }
    dr_set(x, DR_KEY, DR_FAIL, fix, "%s", err.msg);
}

static void
check_key_attrs(struct dr_ctx *x)
{
    const struct hsm_key_info *in = &x->info;
    char fix[DR_FIX_MAX];

    /* A key that can leave the token defeats the whole point: fail. */
    snprintf(fix, sizeof(fix),
             "replace the key with one generated on the token: p11jwt "
             "rotate start --profile %s (or p11jwt keygen), upload the new "
             "certificate, then destroy this key",
             x->prof->name);
    if (in->tpm) {
        /*
         * tpm2-pkcs11 lets anyone flip CKA_SENSITIVE/CKA_EXTRACTABLE
         * (research/pkcs11.md pitfall 9): on a TPM the evidence is the
         * key's TPM public area (fixedTPM, fixedParent,
         * sensitiveDataOrigin), not the PKCS#11 flags.
         */
        const char *why = NULL;
        bool bound = hsm_key_info_bound(in, &why);
        dr_set(x, DR_KEY_PROT, bound ? DR_OK : DR_FAIL, bound ? NULL : fix,
               "%s", why != NULL ? why : "TPM key");
    } else if (!in->sensitive) {
        dr_set(x, DR_KEY_PROT, DR_FAIL, fix,
               "CKA_SENSITIVE is false: the private key value can be read "
               "off the token");
    } else if (in->extractable) {
        dr_set(x, DR_KEY_PROT, DR_FAIL, fix,
               "CKA_EXTRACTABLE is true: the private key can be exported "
               "(wrapped) off the token");
    } else if (!in->never_extractable || !in->always_sensitive) {
        dr_set(x, DR_KEY_PROT, DR_WARN, fix,
               "the key is sensitive and not extractable now, but "
               "CKA_%s is false: it was imported or once extractable, so "
               "a copy may exist off the token",
               !in->never_extractable ? "NEVER_EXTRACTABLE"
                                      : "ALWAYS_SENSITIVE");
    } else {
        dr_set(x, DR_KEY_PROT, DR_OK, NULL, "sensitive, never extractable%s",
               in->local ? ", generated on the token" : "");
    }

    if (!in->can_sign) {
        dr_set(x, DR_KEY_USAGE, DR_FAIL,
               "generate a signing key: p11jwt keygen (CKA_SIGN true, "
               "nothing else)",
               "CKA_SIGN is false: the key cannot sign assertions");
    } else if (in->can_decrypt || in->can_unwrap) {
        /*
         * A warning, not a failure: signing works, but one RSA key used
         * for decryption too is an oracle against its own signatures.
         */
        dr_set(x, DR_KEY_USAGE, DR_WARN,
               "use a sign-only key: p11jwt keygen makes one (CKA_DECRYPT "
               "and CKA_UNWRAP false); rotate to it with p11jwt rotate start",
               "the key can also %s%s%s: one RSA key should serve one "
               "purpose",
               in->can_decrypt ? "decrypt" : "",
               in->can_decrypt && in->can_unwrap ? " and " : "",
               in->can_unwrap ? "unwrap" : "");
    } else {
        dr_set(x, DR_KEY_USAGE, DR_OK, NULL,
               "sign-only (no decrypt, no unwrap)%s",
               in->sha256_rsa_pkcs ? "; token has CKM_SHA256_RSA_PKCS" : "");
    }
}

/* ---- certificate -------------------------------------------------------- */

static void
check_cert(struct dr_ctx *x)
{
    struct pj_err err = {0};
    const struct pj_profile *p = x->prof;
    char fix[DR_FIX_MAX], kfp[96] = "", t[21];
    uint8_t *der = NULL;
    size_t len = 0;
    int64_t days = 0, now = pj_time_now();
    enum cert_state state;
    pj_rc rc;

    if (p->cert == NULL) {
        if (x->key == NULL) {
            dr_skip_range(x, DR_CERT, DR_CERT_EXPIRY,
                          "the key is not open (the certificate is read "
                          "beside it)");
            return;
        }
        rc = cert_load_key(x->key, "the token, beside the key", &x->cert, &err);
    } else if (strncmp(p->cert, "pkcs11:", 7) == 0) {
        rc = hsm_cert_find(x->mod, p->cert, NULL, &der, &len, &err);
        if (rc == PJ_OK) {
            rc = cert_parse(der, len, p->cert, &x->cert, &err);
        }
        free(der);
    } else {
        rc = cert_load(p->cert, NULL, NULL, &x->cert, &err);
    }
    if (rc != PJ_OK) {
        if (p->cert == NULL) {
            snprintf(fix, sizeof(fix),
                     "make one and store it beside the key: p11jwt cert "
                     "self-signed --key '%s' --subject CN=NAME --store "
                     "(then upload it: p11jwt eca --profile %s)",
                     p->key, p->name);
        } else {
            snprintf(fix, sizeof(fix),
                     "fix cert= in [profile %s], or make the certificate: "
                     "p11jwt cert self-signed --key '%s' --subject CN=NAME "
                     "--out FILE",
                     p->name, p->key);
        }
        dr_set(x, DR_CERT, DR_FAIL, fix, "%s", err.msg);
        dr_skip_range(x, DR_CERT_MATCH, DR_CERT_EXPIRY,
                      "no certificate was read");
        return;
    }
    {
        size_t dlen = 0;
        (void)cert_der(x->cert, &dlen);
        if (dlen > CERT_SF_MAX_BYTES) {
            dr_set(x, DR_CERT, DR_FAIL,
                   "make a smaller certificate (fewer extensions, a shorter "
                   "subject); Salesforce refuses certificates over 4 KB",
                   "'%s' (%s) is %zu bytes in DER: over Salesforce's %d",
                   cert_subject(x->cert), cert_source(x->cert), dlen,
                   CERT_SF_MAX_BYTES);
        } else {
            dr_set(x, DR_CERT, DR_OK, NULL, "'%s' from %s (serial %s)",
                   cert_subject(x->cert), cert_source(x->cert),
                   cert_serial_hex(x->cert));
        }
    }

    if (x->key == NULL) {
        dr_skip(x, DR_CERT_MATCH, "the key is not open");
    } else if (cert_matches_key(x->cert, x->key, &x->cert_matches, kfp, &err) !=
               PJ_OK) {
        dr_set(x, DR_CERT_MATCH, DR_FAIL,
               "check the token: the key's public half cannot be read", "%s",
               err.msg);
    } else if (!x->cert_matches) {
        x->have_match = true;
        snprintf(fix, sizeof(fix),
                 "make a certificate for this key (p11jwt cert self-signed "
                 "--key '%s' --subject CN=NAME --store) and upload it to the "
                 "External Client App (p11jwt eca --profile %s)",
                 p->key, p->name);
        dr_set(x, DR_CERT_MATCH, DR_FAIL, fix,
               "the certificate's public key (SHA-256 %s) is not the token "
               "key's (SHA-256 %s): Salesforce would answer 'invalid "
               "assertion'",
               cert_spki_sha256_fp(x->cert), kfp);
    } else {
        x->have_match = true;
        dr_set(x, DR_CERT_MATCH, DR_OK, NULL,
               "certificate and token key share public key SHA-256 %.23s...",
               cert_spki_sha256_fp(x->cert));
    }

    state = cert_expiry_state(x->cert, now, p->warn_days, p->critical_days,
                              true, &days);
    cert_time_iso(cert_not_after(x->cert), t);
    snprintf(fix, sizeof(fix),
             "rotate before it expires: p11jwt rotate start --profile %s, "
             "deploy the new certificate, then p11jwt rotate finish",
             p->name);
    switch (state) {
    case CERT_STATE_OK:
    case CERT_STATE_MISMATCH:
        dr_set(x, DR_CERT_EXPIRY, DR_OK, NULL,
               "%lld days left (until %s; warn at %ld, critical at %ld)",
               (long long)days, t, p->warn_days, p->critical_days);
        break;
    case CERT_STATE_WARNING:
        dr_set(x, DR_CERT_EXPIRY, DR_WARN, fix,
               "%lld days left (until %s): under warn-days %ld",
               (long long)days, t, p->warn_days);
        break;
    case CERT_STATE_CRITICAL:
        dr_set(x, DR_CERT_EXPIRY, DR_FAIL, fix,
               "%lld days left (until %s): under critical-days %ld",
               (long long)days, t, p->critical_days);
        break;
    case CERT_STATE_EXPIRED:
        dr_set(x, DR_CERT_EXPIRY, DR_FAIL, fix,
               "expired on %s: Salesforce refuses assertions it verifies "
               "with it",
               t);
        break;
    case CERT_STATE_NOT_YET_VALID: {
        char nb[21];
        cert_time_iso(cert_not_before(x->cert), nb);
        dr_set(x, DR_CERT_EXPIRY, DR_FAIL,
               "check this host's clock (NTP), or make a certificate valid "
               "from now",
               "not valid before %s", nb);
        break;
    }
    }
}

static void
check_key_size(struct dr_ctx *x)
{
    unsigned long bits = x->info.bits;

    if (!x->have_info) {
        dr_skip(x, DR_KEY_SIZE, "the key is not open");
        return;
    }
    if (bits == 0) {
        dr_set(x, DR_KEY_SIZE, DR_WARN,
               "check the key with the token's own tool (pkcs11-tool "
               "--list-objects); Salesforce needs RSA-2048 or more",
               "the token does not report the key's size (CKA_MODULUS_BITS)");
    } else if (bits < 2048) {
        dr_set(x, DR_KEY_SIZE, DR_FAIL,
               "generate an RSA key of 2048 bits or more: p11jwt keygen "
               "--bits 3072, then rotate to it",
               "RSA-%lu: below the 2048-bit minimum (NIST SP 800-131A)", bits);
    } else {
        dr_set(x, DR_KEY_SIZE, DR_OK, NULL, "RSA-%lu", bits);
    }
}

/* ---- audience and login-url --------------------------------------------- */

enum dr_host {
    HOST_LOGIN,      /* login.salesforce.com */
    HOST_TEST,       /* test.salesforce.com */
    HOST_MYDOMAIN,   /* NAME.my.salesforce.com (production, developer) */
    HOST_SANDBOX,    /* NAME--SBX.sandbox.my.salesforce.com, scratch */
    HOST_SITE,       /* Experience Cloud: *.my.site.com, *.force.com */
    HOST_LEGACY,     /* na1.salesforce.com, cs42.salesforce.com ... */
    HOST_SALESFORCE, /* another *.salesforce.com host */
    HOST_OTHER,      /* not Salesforce: a proxy or a test endpoint */
};

static void
url_host(const char *url, char *host, size_t size)
{
    const char *h = strstr(url, "://");
    size_t n;

    h = h != NULL ? h + 3 : url;
    n = strcspn(h, ":/?#");
    if (n >= size) {
        n = size - 1;
    }
    memcpy(host, h, n);
    host[n] = '\0';
    for (char *c = host; *c != '\0'; c++) {
        if (*c >= 'A' && *c <= 'Z') {
            *c = (char)(*c - 'A' + 'a');
        }
    }
}

static bool
ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);

    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static enum dr_host
host_class(const char *url)
{
    char host[256];

    url_host(url, host, sizeof(host));
    if (strcmp(host, "login.salesforce.com") == 0) {
        return HOST_LOGIN;
    }
    if (strcmp(host, "test.salesforce.com") == 0) {
        return HOST_TEST;
    }
    if (ends_with(host, ".sandbox.my.salesforce.com") ||
        ends_with(host, ".scratch.my.salesforce.com")) {
        return HOST_SANDBOX;
    }
    if (ends_with(host, ".my.salesforce.com")) {
        return HOST_MYDOMAIN;
    }
    if (ends_with(host, ".my.site.com") || ends_with(host, ".force.com")) {
        return HOST_SITE;
    }
    if (ends_with(host, ".salesforce.com")) {
        /* The config's own rule names legacy instance hosts. */
        return pj_config_url_check(url, "audience", true, NULL) != PJ_OK
                   ? HOST_LEGACY
                   : HOST_SALESFORCE;
    }
    return HOST_OTHER;
}

static bool
same_host(const char *a, const char *b)
{
    char ha[256], hb[256];

    url_host(a, ha, sizeof(ha));
    url_host(b, hb, sizeof(hb));
    return strcmp(ha, hb) == 0;
}

static void
check_audience(struct dr_ctx *x)
{
    const struct pj_profile *p = x->prof;
    enum dr_host l = host_class(p->login_url), a = host_class(p->audience);
    bool sandbox = l == HOST_SANDBOX || l == HOST_TEST;
    bool production = l == HOST_MYDOMAIN || l == HOST_LOGIN;
    char fix[DR_FIX_MAX];
    const char *how = p->audience_configured ? "configured" : "default";

    if (a == HOST_LEGACY) {
        snprintf(fix, sizeof(fix),
                 "set audience = %s, or the org's My Domain URL (%s)",
                 sandbox ? PJ_CONFIG_TEST_LOGIN_URL
                         : PJ_CONFIG_DEFAULT_LOGIN_URL,
                 p->login_url);
        dr_set(x, DR_AUDIENCE, DR_FAIL, fix,
               "aud %s is a legacy instance host: Salesforce refuses it",
               p->audience);
    } else if (sandbox && a == HOST_LOGIN) {
        snprintf(fix, sizeof(fix),
                 "set audience = %s (or audience = %s, the sandbox's My "
                 "Domain) in [profile %s]",
                 PJ_CONFIG_TEST_LOGIN_URL, p->login_url, p->name);
        dr_set(x, DR_AUDIENCE, DR_FAIL, fix,
               "login-url %s is a sandbox but aud is production %s: "
               "Salesforce answers 'audience is invalid'",
               p->login_url, p->audience);
    } else if (production && a == HOST_TEST) {
        snprintf(fix, sizeof(fix),
                 "set audience = %s (or audience = %s) in [profile %s]; "
                 "test.salesforce.com is for sandboxes",
                 PJ_CONFIG_DEFAULT_LOGIN_URL, p->login_url, p->name);
        dr_set(x, DR_AUDIENCE, DR_FAIL, fix,
               "login-url %s is production but aud is the sandbox login "
               "%s: Salesforce answers 'audience is invalid'",
               p->login_url, p->audience);
    } else if ((a == HOST_MYDOMAIN || a == HOST_SANDBOX || a == HOST_SITE) &&
               !same_host(p->audience, p->login_url)) {
        snprintf(fix, sizeof(fix),
                 "set audience = %s (the token host), or remove audience to "
                 "use the default",
                 p->login_url);
        dr_set(x, DR_AUDIENCE, DR_FAIL, fix,
               "aud %s names another My Domain or site than login-url %s",
               p->audience, p->login_url);
    } else if (l == HOST_LOGIN || l == HOST_TEST) {
        /* research/salesforce.md 5.3: ECAs since Spring '26. */
        dr_set(x, DR_AUDIENCE, DR_WARN,
               "set login-url = https://NAME.my.salesforce.com (Setup > My "
               "Domain); External Client Apps answer 'app_not_found' on the "
               "generic login hosts",
               "login-url %s is the generic %s login host; aud %s (%s)",
               p->login_url, sandbox ? "sandbox" : "production", p->audience,
               how);
    } else if (l == HOST_OTHER || l == HOST_SALESFORCE) {
        dr_set(x, DR_AUDIENCE, DR_OK, NULL,
               "aud %s (%s); login-url %s is not a Salesforce login host "
               "(a proxy or test endpoint): pairing not checked",
               p->audience, how, p->login_url);
    } else {
        dr_set(x, DR_AUDIENCE, DR_OK, NULL, "aud %s (%s) fits %s login-url %s",
               p->audience, how,
               l == HOST_SANDBOX ? "sandbox My Domain"
               : l == HOST_SITE  ? "Experience Cloud site"
                                 : "production My Domain",
               p->login_url);
    }
}

/* ---- clock skew -----------------------------------------------------------
 */

struct head_date {
    char value[128];
};

static size_t
head_header(char *buf, size_t size, size_t n, void *arg)
{
    struct head_date *d = arg;
    size_t len = size * n, v;

    if (len > 5 && strncasecmp(buf, "Date:", 5) == 0) {
        const char *p = buf + 5;
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        v = len - (size_t)(p - buf);
        while (v > 0 &&
               (p[v - 1] == '\r' || p[v - 1] == '\n' || p[v - 1] == ' ')) {
            v--;
        }
        if (v >= sizeof(d->value)) {
            v = sizeof(d->value) - 1;
        }
        memcpy(d->value, p, v);
        d->value[v] = '\0';
    }
    return len;
}

/*
 * HEAD login-url and read its Date header: no assertion, no login, so it
 * costs nothing against the org's limits. TLS verification stays on.
 */
static pj_rc
head_skew(const struct pj_profile *p, int64_t *skewp, struct pj_err *err)
{
    struct head_date d = {{0}};
    CURL *c;
    CURLcode code;
    char ebuf[CURL_ERROR_SIZE] = "";
    time_t server;
    int64_t now;

    if ((c = curl_easy_init()) == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "curl_easy_init failed");
    }
    (void)curl_easy_setopt(c, CURLOPT_URL, p->login_url);
    (void)curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    (void)curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    (void)curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    (void)curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    (void)curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, p->connect_timeout);
    (void)curl_easy_setopt(c, CURLOPT_TIMEOUT, p->timeout);
    (void)curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, head_header);
    (void)curl_easy_setopt(c, CURLOPT_HEADERDATA, &d);
    (void)curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    if (p->ca_file != NULL) {
        (void)curl_easy_setopt(c, CURLOPT_CAINFO, p->ca_file);
    }
    code = curl_easy_perform(c);
    now = pj_time_now();
    curl_easy_cleanup(c);
    if (code != CURLE_OK) {
        return pj_err_set(err, PJ_ERR_HTTP, "HEAD %s: %s", p->login_url,
                          ebuf[0] != '\0' ? ebuf : curl_easy_strerror(code));
    }
    if (d.value[0] == '\0' || (server = curl_getdate(d.value, NULL)) == -1) {
        return pj_err_set(err, PJ_ERR_INVALID, "HEAD %s: no usable Date header",
                          p->login_url);
    }
    *skewp = (int64_t)server - now;
    return PJ_OK;
}

static void
check_skew(struct dr_ctx *x, const char *source)
{
    const struct pj_profile *p = x->prof;
    struct sf_result r;
    char desc[384];
    int64_t s = x->skew;

    sf_result_init(&r);
    r.have_date = true;
    r.skew = s;
    sf_skew_describe(&r, desc, sizeof(desc));
    sf_result_cleanup(&r);
    if (s >= p->assertion_lifetime) {
        /* The server is so far ahead that exp is already past on arrival. */
        dr_set(x, DR_SKEW, DR_FAIL,
               "synchronise this host's clock (systemctl enable --now "
               "systemd-timesyncd, or chrony); Salesforce answers "
               "'expired authorization code'",
               "%s (from %s): the server is ahead by at least the assertion "
               "lifetime (%ld s), so every assertion arrives expired",
               desc, source, p->assertion_lifetime);
    } else if (p->assertion_lifetime - s > PJ_ASSERTION_LIFETIME_MAX_S) {
        dr_set(x, DR_SKEW, DR_FAIL,
               "synchronise this host's clock (systemd-timesyncd or "
               "chrony)",
               "%s (from %s): exp lands more than %d s after the server's "
               "time, which Salesforce refuses",
               desc, source, PJ_ASSERTION_LIFETIME_MAX_S);
    } else if (s > SF_SKEW_WARN_S || s < -SF_SKEW_WARN_S) {
        dr_set(x, DR_SKEW, DR_WARN,
               "synchronise this host's clock (systemd-timesyncd or "
               "chrony); skew eats into the assertion's lifetime",
               "%s (from %s)", desc, source);
    } else {
        dr_set(x, DR_SKEW, DR_OK, NULL, "%lld s against %s (from %s)",
               (long long)s, p->login_url, source);
    }
}

/* ---- live exchange ---------------------------------------------------- */

static pj_rc
sign_on_token(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig,
              size_t *siglen, struct pj_err *err)
{
    return hsm_key_sign(ctx, msg, len, sig, siglen, err);
}

static void
check_exchange(struct dr_ctx *x, struct sf_result *res)
{
    struct pj_err err = {0};
    struct sf_claims claims;
    struct pj_secret *assertion = NULL;
    struct sf_request *req = NULL;
    char *jti = NULL;
    pj_rc rc;

    if (sf_claims_from_profile(x->prof, NULL, &claims, &err) != PJ_OK ||
        sf_assertion_build(&claims, sign_on_token, x->key, &assertion, NULL,
                           &jti, &err) != PJ_OK) {
        dr_set(x, DR_EXCHANGE, DR_FAIL,
               "fix the claim or signing problem named here, then run "
               "doctor again",
               "cannot build the assertion: %s", err.msg);
        goto out;
    }
    if (sf_request_build(x->prof, assertion, &req, &err) != PJ_OK) {
        dr_set(x, DR_EXCHANGE, DR_FAIL, "fix login-url / ca-file",
               "cannot build the token request: %s", err.msg);
        goto out;
    }
    rc = sf_exchange(req, res, &err);
    if (rc == PJ_OK && res->ok) {
        dr_set(x, DR_EXCHANGE, DR_OK, NULL,
               "token issued for %s (instance_url %s; token not shown)",
               claims.sub,
               res->token.instance_url != NULL ? res->token.instance_url : "-");
    } else {
        char tag[40];
        bool tagged;

        /* The class in brackets, unless the message already carries it. */
        snprintf(tag, sizeof(tag), "[%s]", sf_class_name(res->fail.cls));
        tagged = strstr(err.msg, tag) != NULL;
        dr_set(x, DR_EXCHANGE, DR_FAIL,
               res->fail.hint != NULL ? res->fail.hint : "see the error above",
               "%s%s%s", err.msg, tagged ? "" : " ", tagged ? "" : tag);
    }
out:
    free(jti);
    sf_request_free(req);
    pj_secret_free(assertion);
}

/* ---- agent ----------------------------------------------------------------
 */

static const char *
agent_socket(struct dr_ctx *x)
{
    const char *env = getenv(AGENT_CLIENT_SOCKET_ENV);

    if (cli_global.socket != NULL && cli_global.socket[0] != '\0') {
        return cli_global.socket;
    }
    if (env != NULL && env[0] != '\0') {
        return env;
    }
    if (x->cfg != NULL && x->cfg->agent.socket != NULL) {
        return x->cfg->agent.socket;
    }
    return PJ_CONFIG_DEFAULT_SOCKET;
}

/* The agent's view of the profile: its entry in a status answer. */
static void
agent_profile_state(struct dr_ctx *x, const char *path, json_t *ans)
{
    json_t *profs = json_object_get(ans, "profiles"), *pe = NULL, *v, *toks;
    const char *name = x->prof != NULL ? x->prof->name : NULL, *pname;
    json_int_t pid = json_integer_value(json_object_get(ans, "pid"));
    json_int_t up = json_integer_value(json_object_get(ans, "uptime"));
    size_t i;

    for (i = 0; json_is_array(profs) && i < json_array_size(profs); i++) {
        v = json_array_get(profs, i);
        if (name == NULL ||
            (json_is_string(json_object_get(v, "name")) &&
             strcmp(json_string_value(json_object_get(v, "name")), name) ==
                 0)) {
            pe = v;
            break;
        }
    }
    pname = json_string_value(json_object_get(pe, "name"));
    if (pname == NULL) {
        pname = "?";
    }
    if (pe == NULL) {
        dr_set(x, DR_AGENT, DR_WARN,
               "reload the agent (systemctl reload p11jwt-agent) so it reads "
               "this config, or check allow-uid/allow-gid for this user",
               "agent at %s (pid %lld) does not list profile '%s' for this "
               "user",
               path, (long long)pid, name != NULL ? name : "-");
        return;
    }
    if (!json_is_true(json_object_get(pe, "key_open"))) {
        v = json_object_get(pe, "key_error");
        dr_set(x, DR_AGENT, DR_WARN,
               "fix the key problem named here (the lines above show the "
               "same checks in this process), then reload the agent",
               "agent at %s (pid %lld): key of profile '%s' is not open: %s",
               path, (long long)pid, pname,
               json_is_string(v) ? json_string_value(v) : "no reason given");
        return;
    }
    toks = json_object_get(pe, "tokens");
    for (i = 0; json_is_array(toks) && i < json_array_size(toks); i++) {
        json_t *t = json_array_get(toks, i), *last;
        const char *st = json_string_value(json_object_get(t, "state"));
        if (st != NULL && strcmp(st, "failed") == 0) {
            last = json_object_get(t, "last_exchange");
            v = json_object_get(last, "message");
            dr_set(x, DR_AGENT, DR_WARN,
                   "see `p11jwt status`; the exchange line above shows what "
                   "Salesforce answers now",
                   "agent at %s (pid %lld): token for %s failed: %s", path,
                   (long long)pid,
                   json_is_string(json_object_get(t, "subject"))
                       ? json_string_value(json_object_get(t, "subject"))
                       : "?",
                   json_is_string(v) ? json_string_value(v) : "no reason");
            return;
        }
    }
    dr_set(x, DR_AGENT, DR_OK, NULL,
           "agent at %s (pid %lld, up %lld s): profile '%s' key open, %zu "
           "cached token(s)",
           path, (long long)pid, (long long)up, pname,
           json_is_array(toks) ? json_array_size(toks) : (size_t)0);
}

static void
check_agent(struct dr_ctx *x)
{
    struct pj_err err = {0};
    const char *path = agent_socket(x);
    json_t *req = NULL, *ans = NULL;

    if (x->prof != NULL) {
        req = json_pack("{s:s, s:s}", "op", "status", "profile", x->prof->name);
    } else {
        req = json_pack("{s:s}", "op", "status");
    }
    if (req == NULL) {
        dr_set(x, DR_AGENT, DR_WARN, NULL, "out of memory");
        return;
    }
    if (agent_client_request(path, req, DR_AGENT_TIMEOUT_MS, &ans, &err) !=
        PJ_OK) {
        dr_set(x, DR_AGENT, DR_WARN,
               "doctor works without the agent; if clients use it, start it "
               "(systemctl start p11jwt-agent) or name its socket with "
               "--socket PATH",
               "%s", err.msg);
        goto out;
    }
    if (agent_client_answer_check(ans, &err) != PJ_OK) {
        dr_set(x, DR_AGENT, DR_WARN,
               "run doctor as a user the profile's allow-uid/allow-gid "
               "lists, or as root",
               "agent at %s answered: %s", path, err.msg);
        goto out;
    }
    agent_profile_state(x, path, ans);
out:
    json_decref(ans);
    json_decref(req);
}

/* ---- output ----------------------------------------------------------------
 */

static int
print_text(const struct dr_ctx *x)
{
    unsigned n[4] = {0, 0, 0, 0};
    int i;

    if (x->prof != NULL) {
        printf("p11jwt doctor: profile '%s' in %s\n\n", x->prof->name,
               x->config_path);
    } else {
        printf("p11jwt doctor: %s\n\n", x->config_path);
    }
    for (i = 0; i < DR_N; i++) {
        const struct dr_check *c = &x->c[i];
        n[c->st]++;
        printf("%-5s %-15s %s\n", dr_status_name(c->st), dr_names[i], c->msg);
        if (c->fix[0] != '\0' && (c->st == DR_WARN || c->st == DR_FAIL)) {
            printf("%-5s %-15s fix: %s\n", "", "", c->fix);
        }
    }
    printf("\n%u ok, %u warning%s, %u failed, %u skipped\n", n[DR_OK],
           n[DR_WARN], n[DR_WARN] == 1 ? "" : "s", n[DR_FAIL], n[DR_SKIP]);
    return fflush(stdout) == 0 ? 0 : -1;
}

static int
print_json(const struct dr_ctx *x)
{
    json_t *arr = json_array(), *o;
    char *s;
    int i, ret = -1;

    if (arr == NULL) {
        return -1;
    }
    for (i = 0; i < DR_N; i++) {
        const struct dr_check *c = &x->c[i];
        o = json_pack("{s:s, s:s, s:s, s:o}", "check", dr_names[i], "status",
                      dr_status_name(c->st), "message", c->msg, "fix",
                      c->fix[0] != '\0' ? json_string(c->fix) : json_null());
        if (o == NULL || json_array_append_new(arr, o) != 0) {
            goto out;
        }
    }
    if ((s = json_dumps(arr, JSON_INDENT(2))) == NULL) {
        goto out;
    }
    ret = printf("%s\n", s) > 0 && fflush(stdout) == 0 ? 0 : -1;
    free(s);
out:
    json_decref(arr);
    return ret;
}

/* ---- the command ------------------------------------------------------------
 */

static void
run_checks(struct dr_ctx *x, const struct dr_opts *o)
{
    struct pj_err err = {0};
    struct sf_result res;
    const char *skew_from = "a HEAD of login-url";
    char skew_err[PJ_ERR_MSG_MAX] = "";
    bool exchanged = false;

    sf_result_init(&res);
    check_config(x, o);
    if (x->prof == NULL) {
        dr_skip_range(x, DR_MODULE, DR_EXCHANGE, "the config did not load");
        goto agent;
    }

    check_module(x);
    if (x->mod == NULL) {
        dr_skip_range(x, DR_TOKEN, DR_KEY_USAGE, "the module did not load");
    } else {
        check_token(x);
        if (x->c[DR_TOKEN].st == DR_FAIL) {
            dr_skip_range(x, DR_PIN, DR_KEY_USAGE, "the token was not found");
        } else {
            check_pin(x);
            if (x->c[DR_PIN].st == DR_FAIL) {
                dr_skip_range(x, DR_LOGIN, DR_KEY_USAGE,
                              "the PIN source cannot be used");
            } else {
                check_login_and_key(x);
            }
        }
    }
    if (x->have_info) {
        check_key_attrs(x);
    } else {
        dr_skip_range(x, DR_KEY_PROT, DR_KEY_USAGE, "the key is not open");
    }
    /* A certificate file can be checked even without the token. */
    if (x->prof->cert != NULL && strncmp(x->prof->cert, "pkcs11:", 7) != 0) {
        check_cert(x);
    } else if (x->mod == NULL) {
        dr_skip_range(x, DR_CERT, DR_CERT_EXPIRY, "the module did not load");
    } else if (x->c[DR_TOKEN].st == DR_FAIL) {
        dr_skip_range(x, DR_CERT, DR_CERT_EXPIRY, "the token was not found");
    } else {
        check_cert(x);
    }
    check_key_size(x);
    check_audience(x);

    if (sf_global_init(&err) != PJ_OK) {
        dr_set(x, DR_SKEW, DR_WARN, NULL, "%s", err.msg);
        dr_set(x, DR_EXCHANGE, DR_FAIL, NULL, "%s", err.msg);
        goto agent;
    }
    x->curl_up = true;
    if (head_skew(x->prof, &x->skew, &err) == PJ_OK) {
        x->skew_known = true;
    } else {
        snprintf(skew_err, sizeof(skew_err), "%s", err.msg);
    }
    pj_err_clear(&err);

    if (o->no_exchange) {
        dr_set(x, DR_EXCHANGE, DR_SKIP, NULL,
               "skipped (because of --no-exchange)");
    } else if (x->key == NULL) {
        dr_skip(x, DR_EXCHANGE, "the key is not open");
    } else {
        check_exchange(x, &res);
        exchanged = true;
    }
    /* The token POST's Date serves when HEAD gave none. */
    if (!x->skew_known && exchanged && res.have_date) {
        x->skew_known = true;
        x->skew = res.skew;
        skew_from = "the token response";
    }
    if (x->skew_known) {
        check_skew(x, skew_from);
    } else {
        dr_set(x, DR_SKEW, DR_WARN,
               "make login-url reachable from this host (DNS, proxy, "
               "firewall, ca-file); see the exchange line",
               "not measured: %s", skew_err);
    }

agent:
    check_agent(x);
    sf_result_cleanup(&res);
}

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: p11jwt doctor [-c FILE] [--profile P] [--json] "
            "[--no-exchange]\n"
            "                     [--socket PATH] [--module PATH] "
            "[--pin-source SRC]\n\n"
            "Diagnose a profile's whole setup: one line per check, ok / "
            "warn / fail,\n"
            "with the fix. Checks, in order: config, module, token, "
            "pin-source, login\n"
            "(attempted once, never retried), key, key-protection, "
            "key-usage,\n"
            "certificate, cert-match, cert-expiry, key-size, audience, "
            "clock-skew,\n"
            "exchange (one live token request), agent. A check that needs "
            "an earlier\n"
            "one that failed is shown as skipped.\n\n"
            "  --profile P     the [profile P] section (may be left out "
            "with one profile)\n"
            "  --json          print an array of {check, status, message, "
            "fix}\n"
            "  --no-exchange   do not send a token request to Salesforce\n"
            "  --socket PATH   the agent's socket (default: [agent] socket)\n"
            "  -c FILE         config file (default $P11JWT_CONFIG, else "
            "%s)\n\n"
            "Exit status: 0 nothing failed (warnings allowed), 1 something "
            "failed,\n"
            "2 usage error.\n",
            PJ_CONFIG_DEFAULT_PATH);
}

int
cli_cmd_doctor(int argc, char **argv)
{
    enum {
        OPT_PROFILE = CLI_OPT_FIRST_LOCAL,
        OPT_JSON,
        OPT_NO_EXCHANGE,
    };
    static const struct option longopts[] = {
        CLI_GLOBAL_LONGOPTS,
        {"profile", required_argument, NULL, OPT_PROFILE},
        {"json", no_argument, NULL, OPT_JSON},
        {"no-exchange", no_argument, NULL, OPT_NO_EXCHANGE},
        {NULL, 0, NULL, 0},
    };
    struct dr_opts o = {0};
    struct dr_ctx *x;
    int opt, i, ret = CLI_OK;

    while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        if (cli_global_opt(opt, optarg)) {
            continue;
        }
        switch (opt) {
        case 'h':
            usage(stdout);
            return CLI_OK;
        case OPT_PROFILE:
            o.profile = optarg;
            break;
        case OPT_JSON:
            o.json = true;
            break;
        case OPT_NO_EXCHANGE:
            o.no_exchange = true;
            break;
        default:
            return cli_bad_option(CMD);
        }
    }
    if (optind < argc) {
        return cli_usage(CMD, "unexpected argument '%s'", argv[optind]);
    }
    if ((x = calloc(1, sizeof(*x))) == NULL) {
        fprintf(stderr, "p11jwt %s: out of memory\n", CMD);
        return CLI_FAIL;
    }
    run_checks(x, &o);
    for (i = 0; i < DR_N; i++) {
        if (!x->c[i].done) {
            /* Every path sets every line; this is a bug if it shows. */
            dr_set(x, (enum dr_id)i, DR_FAIL, NULL, "internal: not run");
        }
        if (x->c[i].st == DR_FAIL) {
            ret = CLI_FAIL;
        }
    }
    if ((o.json ? print_json(x) : print_text(x)) != 0) {
        fprintf(stderr, "p11jwt %s: cannot write to stdout\n", CMD);
        ret = CLI_FAIL;
    }
    cert_free(x->cert);
    hsm_key_free(x->key);
    hsm_module_free(x->mod);
    if (x->curl_up) {
        sf_global_cleanup();
    }
    free(x->uri_pin_source);
    pj_config_free(x->cfg);
    free(x);
    return ret;
}
