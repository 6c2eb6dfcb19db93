/* SPDX-License-Identifier: Apache-2.0 */
/*
 * External Client App metadata (sf_eca.h). A small XML writer of our own:
 * the files are flat lists of text elements, so a buffer plus one escaping
 * routine is all that is needed, and the product gains no libxml2
 * dependency. Validation against the real schema is the tests' job.
 */
#include "salesforce/sf_eca.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "core/pj_util.h"

#define SF_ECA_NS "http://soap.sforce.com/2006/04/metadata"
#define SF_ECA_SRC "force-app/main/default"

/* ---- text checks -------------------------------------------------------- */

/*
 * Decode one UTF-8 sequence at s (strict: no overlongs, no surrogates,
 * nothing above U+10FFFF). Returns its length, or 0 if invalid.
 */
static size_t
utf8_next(const unsigned char *s, uint32_t *cpp)
{
    uint32_t cp;
    size_t n, i;

    if (s[0] < 0x80) {
        *cpp = s[0];
        return 1;
    }
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        n = 2;
        cp = s[0] & 0x1fu;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        n = 3;
        cp = s[0] & 0x0fu;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        n = 4;
        cp = s[0] & 0x07u;
    } else {
        return 0;
    }
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0; /* also stops at the NUL */
        }
        cp = (cp << 6) | (s[i] & 0x3fu);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }
    *cpp = cp;
    return n;
}

/* Characters XML 1.0 can carry at all (section 2.2, Char). */
static bool
xml_char_ok(uint32_t cp)
{
    if (cp < 0x20) {
        return cp == '\t' || cp == '\n' || cp == '\r';
    }
    return cp != 0xfffe && cp != 0xffff;
}

pj_rc
sf_eca_api_name_check(const char *name, size_t max, const char *what,
                      struct pj_err *err)
{
    size_t i, len;

    if (name == NULL || name[0] == '\0') {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "%s is empty: give an API name such as HsmJwtAgent",
                          what);
    }
    len = strlen(name);
    if (len > max) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "%s '%.60s...' is %zu characters long; at most %zu "
                          "are allowed here",
                          what, name, len, max);
    }
    if (!isalpha((unsigned char)name[0]) || (unsigned char)name[0] >= 0x80) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "%s '%s' must start with a letter (A-Z or a-z)", what,
                          name);
    }
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch >= 0x80 || (!isalnum(ch) && ch != '_')) {
            if (ch >= 0x21 && ch < 0x7f) {
                return pj_err_set(err, PJ_ERR_INVALID,
                                  "%s '%s' contains '%c': Salesforce API names "
                                  "hold only letters, digits and underscores",
                                  what, name, ch);
            }
            return pj_err_set(err, PJ_ERR_INVALID,
                              "%s contains a space or a non-ASCII character "
                              "(byte 0x%02x at position %zu): Salesforce API "
                              "names hold only letters, digits and underscores",
                              what, ch, i + 1);
        }
        if (ch == '_' && name[i + 1] == '_') {
            return pj_err_set(err, PJ_ERR_INVALID,
                              "%s '%s' contains two consecutive underscores, "
                              "which Salesforce API names must not",
                              what, name);
        }
    }
    if (name[len - 1] == '_') {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "%s '%s' must not end with an underscore", what,
                          name);
    }
    return PJ_OK;
}

static bool
is_atext(unsigned char ch)
{
    return isalnum(ch) || (ch != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", ch));
}

pj_rc
sf_eca_email_check(const char *email, struct pj_err *err)
{
    const char *at, *d, *label;
    size_t len, llen, i;
    unsigned labels = 0;
    bool all_digits = true;

    if (email == NULL || email[0] == '\0') {
        return pj_err_set(err, PJ_ERR_INVALID, "--contact-email is empty");
    }
    len = strlen(email);
    at = strchr(email, '@');
    if (len > SF_ECA_EMAIL_MAX || at == NULL || strchr(at + 1, '@') != NULL) {
        goto bad;
    }
    llen = (size_t)(at - email);
    if (llen == 0 || llen > 64 || email[0] == '.' || at[-1] == '.') {
        goto bad;
    }
    for (i = 0; i < llen; i++) {
        unsigned char ch = (unsigned char)email[i];
        if (ch == '.' ? email[i + 1] == '.' : !is_atext(ch)) {
            goto bad;
        }
    }
    /* Domain: LDH labels of 1..63, at least two, a TLD not all digits. */
    d = at + 1;
    for (label = d;; d++) {
        unsigned char ch = (unsigned char)*d;
        if (ch == '.' || ch == '\0') {
            size_t n = (size_t)(d - label);
            if (n == 0 || n > 63 || label[0] == '-' || d[-1] == '-') {
                goto bad;
            }
            labels++;
            if (ch == '\0') {
                break;
            }
            label = d + 1;
            all_digits = true;
            continue;
        }
        if (!isalnum(ch) && ch != '-') {
            goto bad;
        }
        if (!isdigit(ch)) {
            all_digits = false;
        }
    }
    if (labels < 2 || all_digits) {
        goto bad;
    }
    return PJ_OK;
bad:
    return pj_err_set(err, PJ_ERR_INVALID,
                      "--contact-email '%s' is not an e-mail address like "
                      "integration-owner@example.com",
                      email);
}

pj_rc
sf_eca_api_version_check(const char *v, long *majorp, struct pj_err *err)
{
    long major;

    if (majorp != NULL) {
        *majorp = 0;
    }
    if (v == NULL || strlen(v) != 4 || !isdigit((unsigned char)v[0]) ||
        !isdigit((unsigned char)v[1]) || v[2] != '.' || v[3] != '0') {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "--api-version '%s' is not of the form NN.0 (for "
                          "example %s)",
                          v != NULL ? v : "", SF_ECA_API_DEFAULT);
    }
    major = (v[0] - '0') * 10 + (v[1] - '0');
    if (major < SF_ECA_API_MIN) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "--api-version %s is too old: the emitted fields "
                          "need %d.0 or later (the certificate field arrived "
                          "in 60.0)",
                          v, SF_ECA_API_MIN);
    }
    if (majorp != NULL) {
        *majorp = major;
    }
    return PJ_OK;
}

pj_rc
sf_eca_callback_check(const char *url, struct pj_err *err)
{
    const char *h, *p;
    size_t hostlen, i;

    if (url == NULL || url[0] == '\0') {
        return pj_err_set(err, PJ_ERR_INVALID, "--callback-url is empty");
    }
    if (strlen(url) > SF_ECA_URL_MAX) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "--callback-url is longer than %d characters",
                          SF_ECA_URL_MAX);
    }
    if (strncasecmp(url, "http://", 7) == 0) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "--callback-url '%s' must use https://, not http://",
                          url);
    }
    if (strncmp(url, "https://", 8) != 0) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "--callback-url '%s' is not an https:// URL (for "
                          "example %s)",
                          url, SF_ECA_CALLBACK_DEFAULT);
    }
    h = url + 8;
    hostlen = strcspn(h, ":/?#");
    if (hostlen == 0 || h[0] == '.' || h[0] == '-' || h[hostlen - 1] == '.' ||
        h[hostlen - 1] == '-') {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "--callback-url '%s' has no valid host name", url);
    }
    for (i = 0; i < hostlen; i++) {
        unsigned char ch = (unsigned char)h[i];
        if (!isalnum(ch) && ch != '-' && ch != '.') {
            return pj_err_set(err, PJ_ERR_INVALID,
                              "--callback-url '%s': the host may hold only "
                              "letters, digits, '-' and '.'",
                              url);
        }
    }
    for (p = h + hostlen; *p != '\0'; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch <= 0x20 || ch >= 0x7f) {
            return pj_err_set(err, PJ_ERR_INVALID,
                              "--callback-url has a space, a control or a "
                              "non-ASCII character (percent-encode it)");
        }
    }
    return PJ_OK;
}

pj_rc
sf_eca_text_check(const char *s, size_t max, bool no_comma, const char *what,
                  struct pj_err *err)
{
    const unsigned char *p;
    size_t chars = 0, n;
    uint32_t cp;

    if (s == NULL || s[0] == '\0') {
        return pj_err_set(err, PJ_ERR_INVALID, "%s is empty", what);
    }
    for (p = (const unsigned char *)s; *p != '\0'; p += n) {
        if ((n = utf8_next(p, &cp)) == 0) {
            return pj_err_set(err, PJ_ERR_INVALID,
                              "%s is not valid UTF-8 (byte %zu)", what,
                              (size_t)(p - (const unsigned char *)s) + 1);
        }
        if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0) || !xml_char_ok(cp)) {
            return pj_err_set(err, PJ_ERR_INVALID,
                              "%s contains a control character (U+%04X)", what,
                              (unsigned)cp);
        }
        if (no_comma && cp == ',') {
            return pj_err_set(err, PJ_ERR_INVALID,
                              "%s '%s' contains a comma: Salesforce stores it "
                              "in a comma-separated list",
                              what, s);
        }
        chars++;
    }
    if (chars > max) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "%s is %zu characters long; at most %zu are allowed",
                          what, chars, max);
    }
    if (s[0] == ' ' || s[strlen(s) - 1] == ' ') {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "%s '%s' starts or ends with a space", what, s);
    }
    return PJ_OK;
}

pj_rc
sf_eca_opts_check(const struct sf_eca_opts *o, struct pj_err *err)
{
    long major = 0;

    PJ_TRY(sf_eca_api_name_check(o->name, SF_ECA_APP_NAME_MAX, "--name", err));
    if (o->label != NULL) {
        PJ_TRY(sf_eca_text_check(o->label, SF_ECA_LABEL_MAX, false, "--label",
                                 err));
    }
    PJ_TRY(sf_eca_email_check(o->contact_email, err));
    if (o->permission_set != NULL && o->profile_name != NULL) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "give --permission-set or --profile-name, not both");
    }
    if (o->permission_set != NULL) {
        PJ_TRY(sf_eca_api_name_check(o->permission_set, SF_ECA_PERMSET_NAME_MAX,
                                     "--permission-set", err));
    }
    if (o->profile_name != NULL) {
        PJ_TRY(sf_eca_text_check(o->profile_name, SF_ECA_PROFILE_NAME_MAX, true,
                                 "--profile-name", err));
    }
    if (o->callback_url != NULL) {
        PJ_TRY(sf_eca_callback_check(o->callback_url, err));
    }
    PJ_TRY(sf_eca_api_version_check(o->api_version != NULL ? o->api_version
                                                           : SF_ECA_API_DEFAULT,
                                    &major, err));
    if (o->profile_name != NULL && major < SF_ECA_API_PROFILE_MIN) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "--profile-name needs --api-version %d.0 or later "
                          "(commaSeparatedProfile arrived then)",
                          SF_ECA_API_PROFILE_MIN);
    }
    return PJ_OK;
}

bool
sf_eca_cert_encoding_parse(const char *s, enum sf_eca_cert_encoding *encp)
{
    if (strcmp(s, "pem") == 0) {
        *encp = SF_ECA_CERT_PEM;
        return true;
    }
    if (strcmp(s, "base64-der") == 0) {
        *encp = SF_ECA_CERT_BASE64_DER;
        return true;
    }
    return false;
}

pj_rc
sf_eca_cert_text(const uint8_t *der, size_t der_len, const char *pem_text,
                 enum sf_eca_cert_encoding enc, char **textp,
                 struct pj_err *err)
{
    char *out;
    size_t len;

    *textp = NULL;
    if (enc == SF_ECA_CERT_PEM) {
        if (pem_text == NULL ||
            strncmp(pem_text, "-----BEGIN CERTIFICATE-----", 27) != 0) {
            return pj_err_set(err, PJ_ERR_INTERNAL,
                              "certificate PEM text is missing");
        }
        len = strlen(pem_text);
        while (len > 0 && isspace((unsigned char)pem_text[len - 1])) {
            len--;
        }
        if ((out = strndup(pem_text, len)) == NULL) {
            return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
        }
        *textp = out;
        return PJ_OK;
    }
    if (der == NULL || der_len == 0 || der_len > INT_MAX / 2) {
        return pj_err_set(err, PJ_ERR_INTERNAL, "certificate DER is missing");
    }
    if ((out = malloc(4 * ((der_len + 2) / 3) + 1)) == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
    }
    EVP_EncodeBlock((unsigned char *)out, der, (int)der_len);
    *textp = out;
    return PJ_OK;
}

/* ---- the writer ---------------------------------------------------------- */

/* A growing text buffer; the first failure sticks and later calls no-op. */
struct xb {
    char *p;
    size_t len, cap;
    pj_rc rc;
    struct pj_err *err;
};

static void
xb_putn(struct xb *b, const char *s, size_t n)
{
    if (b->rc != PJ_OK) {
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap != 0 ? b->cap : 1024;
        char *np;
        while (b->len + n + 1 > cap) {
            cap *= 2;
        }
        if ((np = realloc(b->p, cap)) == NULL) {
            b->rc = pj_err_set(b->err, PJ_ERR_NOMEM, "out of memory");
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void
xb_puts(struct xb *b, const char *s)
{
    xb_putn(b, s, strlen(s));
}

/* Several strings in a row, NULL-terminated. */
static void
xb_cat(struct xb *b, ...)
{
    va_list ap;
    const char *s;

    va_start(ap, b);
    while ((s = va_arg(ap, const char *)) != NULL) {
        xb_puts(b, s);
    }
    va_end(ap);
}

static void
xb_escaped(struct xb *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n;
    uint32_t cp;

    while (*p != '\0' && b->rc == PJ_OK) {
        if ((n = utf8_next(p, &cp)) == 0) {
            b->rc = pj_err_set(b->err, PJ_ERR_INVALID,
                               "text for XML is not valid UTF-8 (byte %zu)",
                               (size_t)(p - (const unsigned char *)s) + 1);
            return;
        }
        if (!xml_char_ok(cp)) {
            b->rc = pj_err_set(b->err, PJ_ERR_INVALID,
                               "text for XML contains U+%04X, which XML "
                               "cannot hold",
                               (unsigned)cp);
            return;
        }
        switch (cp) {
        case '&':
            xb_puts(b, "&amp;");
            break;
        case '<':
            xb_puts(b, "&lt;");
            break;
        case '>':
            xb_puts(b, "&gt;");
            break;
        case '"':
            xb_puts(b, "&quot;");
            break;
        case '\'':
            xb_puts(b, "&apos;");
            break;
        case '\r': /* a literal CR would be normalised away by parsers */
            xb_puts(b, "&#13;");
            break;
        default:
            xb_putn(b, (const char *)p, n);
            break;
        }
        p += n;
    }
}

pj_rc
sf_eca_xml_escape(const char *s, char **outp, struct pj_err *err)
{
    struct xb b = {.err = err};

    *outp = NULL;
    xb_puts(&b, "");
    xb_escaped(&b, s);
    if (b.rc != PJ_OK) {
        free(b.p);
        return b.rc;
    }
    *outp = b.p;
    return PJ_OK;
}

static void
xml_begin(struct xb *b, const char *root)
{
    xb_cat(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<", root,
           " xmlns=\"" SF_ECA_NS "\">\n", NULL);
}

static void
xml_end(struct xb *b, const char *root)
{
    xb_cat(b, "</", root, ">\n", NULL);
}

static void
xml_elem(struct xb *b, const char *tag, const char *value)
{
    xb_cat(b, "    <", tag, ">", NULL);
    xb_escaped(b, value);
    xb_cat(b, "</", tag, ">\n", NULL);
}

static void
xml_bool(struct xb *b, const char *tag, bool value)
{
    xml_elem(b, tag, value ? "true" : "false");
}

/* "<app> <suffix>": labels of the components, from the checked app name. */
static void
xml_label2(struct xb *b, const char *app, const char *suffix)
{
    xb_cat(b, "    <label>", app, " ", suffix, "</label>\n", NULL);
}

/* ---- the files ------------------------------------------------------------
 */

void
sf_eca_component_name(const char *app, enum sf_eca_component which,
                      char out[SF_ECA_API_NAME_MAX + 1])
{
    static const char *const suffix[] = {
        [SF_ECA_GLOBAL_OAUTH] = "_glbloauth",
        [SF_ECA_OAUTH] = "_oauth",
        [SF_ECA_OAUTH_POLICIES] = "_oauthPlcy",
    };

    snprintf(out, SF_ECA_API_NAME_MAX + 1, "%s%s", app, suffix[which]);
}

/* Take b's text as the next file; b is reset. */
static pj_rc files_add(struct sf_eca_files *files, struct xb *b, bool is_xml,
                       struct pj_err *err, const char *fmt, ...)
    PJ_PRINTF(5, 6);

static pj_rc
files_add(struct sf_eca_files *files, struct xb *b, bool is_xml,
          struct pj_err *err, const char *fmt, ...)
{
    struct sf_eca_file *v;
    char path[PATH_MAX];
    va_list ap;
    int n;

    if (b->rc != PJ_OK) {
        return b->rc;
    }
    va_start(ap, fmt);
    n = vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        return pj_err_set(err, PJ_ERR_INTERNAL, "file name too long");
    }
    v = realloc(files->v, (files->n + 1) * sizeof(*v));
    if (v == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
    }
    files->v = v;
    if ((v[files->n].path = strdup(path)) == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
    }
    v[files->n].data = b->p;
    v[files->n].len = b->len;
    v[files->n].is_xml = is_xml;
    files->n++;
    b->p = NULL;
    b->len = b->cap = 0;
    return PJ_OK;
}

static pj_rc
build_project(const struct sf_eca_opts *o, const char *ver, struct xb *b,
              struct pj_err *err)
{
    json_t *j;
    char *s;

    j = json_pack("{s:[{s:s,s:b}],s:s,s:s,s:s}", "packageDirectories", "path",
                  "force-app", "default", 1, "name", o->name, "namespace", "",
                  "sourceApiVersion", ver);
    if (j == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM,
                          "sfdx-project.json: out of memory");
    }
    s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (s == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM,
                          "sfdx-project.json: out of memory");
    }
    xb_cat(b, s, "\n", NULL);
    free(s);
    return b->rc;
}

static void
pkg_type(struct xb *b, const char *member, const char *type)
{
    xb_cat(b, "    <types>\n        <members>", member, "</members>\n", NULL);
    xb_cat(b, "        <name>", type, "</name>\n    </types>\n", NULL);
}

static void
build_package(const struct sf_eca_opts *o, const char *ver, struct xb *b)
{
    char glbl[SF_ECA_API_NAME_MAX + 1], oauth[SF_ECA_API_NAME_MAX + 1],
        plcy[SF_ECA_API_NAME_MAX + 1];

    sf_eca_component_name(o->name, SF_ECA_GLOBAL_OAUTH, glbl);
    sf_eca_component_name(o->name, SF_ECA_OAUTH, oauth);
    sf_eca_component_name(o->name, SF_ECA_OAUTH_POLICIES, plcy);
    xml_begin(b, "Package");
    pkg_type(b, o->name, "ExternalClientApplication");
    pkg_type(b, glbl, "ExtlClntAppGlobalOauthSettings");
    pkg_type(b, oauth, "ExtlClntAppOauthSettings");
    pkg_type(b, plcy, "ExtlClntAppOauthConfigurablePolicies");
    if (o->permission_set != NULL) {
        pkg_type(b, o->permission_set, "PermissionSet");
    }
    xml_elem(b, "version", ver);
    xml_end(b, "Package");
}

/* Elements in v66 WSDL sequence order (research 1.2); do not reorder. */
static void
build_app(const struct sf_eca_opts *o, struct xb *b)
{
    xml_begin(b, "ExternalClientApplication");
    xml_elem(b, "contactEmail", o->contact_email);
    xml_elem(b, "description",
             "OAuth 2.0 JWT Bearer client; the signing key stays on a "
             "PKCS#11 token (p11jwt)");
    xml_elem(b, "distributionState", "Local");
    xml_bool(b, "isProtected", false);
    xml_elem(b, "label", o->label != NULL ? o->label : o->name);
    xml_end(b, "ExternalClientApplication");
}

static void
build_global(const struct sf_eca_opts *o, struct xb *b)
{
    xml_begin(b, "ExtlClntAppGlobalOauthSettings");
    xml_elem(b, "callbackUrl",
             o->callback_url != NULL ? o->callback_url
                                     : SF_ECA_CALLBACK_DEFAULT);
    /* The certificate content, not a name: it enables JWT Bearer (1.3). */
    xml_elem(b, "certificate", o->cert_text);
    /* No consumerKey/consumerSecret: Salesforce generates them (1.4). */
    xml_elem(b, "externalClientApplication", o->name);
    xml_bool(b, "isClientCredentialsFlowEnabled", false);
    xml_bool(b, "isCodeCredFlowEnabled", false);
    xml_bool(b, "isConsumerSecretOptional", false);
    xml_bool(b, "isDeviceFlowEnabled", false);
    xml_bool(b, "isIntrospectAllTokens", false);
    /* true would make access tokens JWTs usable only with REST (1.5). */
    xml_bool(b, "isNamedUserJwtEnabled", false);
    xml_bool(b, "isPkceRequired", true);
    xml_bool(b, "isRefreshTokenRotationEnabled", false);
    xml_bool(b, "isSecretRequiredForRefreshToken", true);
    xml_bool(b, "isTokenExchangeEnabled", false);
    xml_label2(b, o->name, "Global OAuth");
    /* Never true: a new consumer key breaks every iss in use (1.4). */
    xml_bool(b, "shouldRotateConsumerKey", false);
    xml_bool(b, "shouldRotateConsumerSecret", false);
    xml_end(b, "ExtlClntAppGlobalOauthSettings");
}

static void
build_oauth(const struct sf_eca_opts *o, struct xb *b)
{
    xml_begin(b, "ExtlClntAppOauthSettings");
    /* RefreshToken: without it pre-authorized JWT requests fail (1.6). */
    xml_elem(b, "commaSeparatedOauthScopes", "Api,RefreshToken");
    xml_elem(b, "externalClientApplication", o->name);
    xml_label2(b, o->name, "OAuth");
    /* No oauthLink: a wrong one fails the deploy; it is generated (1.9). */
    xml_end(b, "ExtlClntAppOauthSettings");
}

static void
build_policies(const struct sf_eca_opts *o, struct xb *b)
{
    xml_begin(b, "ExtlClntAppOauthConfigurablePolicies");
    if (o->permission_set != NULL) {
        xml_elem(b, "commaSeparatedPermissionSet", o->permission_set);
    }
    if (o->profile_name != NULL) {
        xml_elem(b, "commaSeparatedProfile", o->profile_name);
    }
    xml_elem(b, "externalClientApplication", o->name);
    xml_elem(b, "ipRelaxationPolicyType", "Enforce");
    xml_bool(b, "isClientCredentialsFlowEnabled", false);
    xml_bool(b, "isGuestCodeCredFlowEnabled", false);
    xml_bool(b, "isTokenExchangeFlowEnabled", false);
    xml_label2(b, o->name, "OAuth Policies");
    /* Only users an admin approved may get tokens (1.7). */
    xml_elem(b, "permittedUsersPolicyType", "AdminApprovedPreAuthorized");
    xml_elem(b, "refreshTokenPolicyType", "Infinite");
    xml_elem(b, "sessionTimeoutInMinutes", "120");
    xml_end(b, "ExtlClntAppOauthConfigurablePolicies");
}

static void
build_permset(const struct sf_eca_opts *o, struct xb *b)
{
    xml_begin(b, "PermissionSet");
    xb_cat(b, "    <description>Pre-authorizes users for the ", o->name,
           " external client app (JWT Bearer through p11jwt)</description>\n",
           NULL);
    xml_bool(b, "hasActivationRequired", false);
    xml_elem(b, "label", o->permission_set);
    xml_end(b, "PermissionSet");
}

static void
build_readme(const struct sf_eca_opts *o, struct xb *b)
{
    char glbl[SF_ECA_API_NAME_MAX + 1], oauth[SF_ECA_API_NAME_MAX + 1],
        plcy[SF_ECA_API_NAME_MAX + 1];
    const char *app = o->name, *ps = o->permission_set;

    sf_eca_component_name(app, SF_ECA_GLOBAL_OAUTH, glbl);
    sf_eca_component_name(app, SF_ECA_OAUTH, oauth);
    sf_eca_component_name(app, SF_ECA_OAUTH_POLICIES, plcy);
    xb_cat(b, "# External Client App ", app, " for p11jwt\n\n", NULL);
    xb_puts(b,
            "Generated by `p11jwt eca`: a Salesforce DX project that creates "
            "an External\nClient App for the OAuth 2.0 JWT Bearer flow, "
            "carrying the certificate of\nthe key on your PKCS#11 token. "
            "Run every `sf` command below from this folder\n(it holds "
            "`sfdx-project.json`); `ORG` is your org alias.\n\n"
            "Your user needs the permissions \"View External Client Apps "
            "Consumer Secrets\nin Metadata\" and \"View all External Client "
            "Apps, view their settings, and\nedit their policies\".\n\n");

    xb_puts(b, "## 1. Deploy\n\n");
    if (ps != NULL) {
        xb_cat(b,
               "Assign the permission set first, so that nobody (you "
               "included) is locked out\nwhile the app admits only "
               "pre-authorized users:\n\n"
               "    sf project deploy start --metadata PermissionSet:",
               ps, " --target-org ORG\n", "    sf org assign permset --name ",
               ps, " --target-org ORG --on-behalf-of USERNAME\n\n", NULL);
    }
    xb_puts(b, "Then deploy everything:\n\n"
               "    sf project deploy start --source-dir force-app "
               "--target-org ORG\n\n"
               "or, the same through the manifest:\n\n"
               "    sf project deploy start --manifest manifest/package.xml "
               "--target-org ORG\n\n");
    xb_cat(b,
           "Salesforce also creates an OAuth policies file on the first "
           "deploy. If the\ndeploy reports a conflict on the policies, deploy "
           "in two steps:\n\n"
           "    sf project deploy start --metadata "
           "ExternalClientApplication:",
           app, " --metadata ExtlClntAppGlobalOauthSettings:", glbl,
           " --metadata ExtlClntAppOauthSettings:", oauth,
           " --target-org ORG\n"
           "    sf project deploy start --metadata "
           "ExtlClntAppOauthConfigurablePolicies:",
           plcy, " --target-org ORG\n\n", NULL);

    xb_puts(b, "## 2. Who may get tokens\n\n"
               "The app admits only pre-authorized users "
               "(AdminApprovedPreAuthorized).\n");
    if (ps != NULL) {
        xb_cat(b, "Users holding the permission set `", ps,
               "` are pre-authorized. Assign it to\nthe integration user "
               "(the JWT `sub`):\n\n"
               "    sf org assign permset --name ",
               ps,
               " --target-org ORG --on-behalf-of USERNAME\n\n"
               "If tokens still fail with `user hasn't approved this "
               "consumer`, link the\npermission set to the app "
               "explicitly:\n\n"
               "    sf data query --target-org ORG --query \"SELECT Id FROM "
               "ExternalClientApplication WHERE DeveloperName='",
               app,
               "'\"\n"
               "    sf data query --target-org ORG --query \"SELECT Id FROM "
               "PermissionSet WHERE Name='",
               ps,
               "'\"\n"
               "    sf data create record --target-org ORG --sobject "
               "SetupEntityAccess \\\n"
               "        --values \"ParentId=PERMISSION_SET_ID "
               "SetupEntityId=APP_ID\"\n\n"
               "A permission set with the \"Salesforce API Integration\" "
               "licence cannot hold\napp assignments; use a second "
               "permission set or a profile.\n\n",
               NULL);
    } else if (o->profile_name != NULL) {
        xb_cat(b, "Users with the profile \"", o->profile_name,
               "\" are pre-authorized. In orgs with another\ndefault "
               "language the profile's name may be translated; use the "
               "name the org\nshows.\n\n",
               NULL);
    } else {
        xb_cat(b,
               "No permission set or profile was given, so nobody is "
               "pre-authorized yet:\nin Setup, open External Client App "
               "Manager, ",
               app,
               ", Policies, and add a\npermission set or profile, or run "
               "`p11jwt eca` again with --permission-set.\n\n",
               NULL);
    }

    xb_puts(b, "## 3. The consumer key (JWT `iss`)\n\n"
               "Salesforce generates the consumer key on the first deploy. "
               "Retrieve it into a\nscratch folder (the retrieved file holds "
               "the key: keep it out of source\ncontrol):\n\n");
    xb_cat(b,
           "    sf project retrieve start --metadata "
           "ExtlClntAppGlobalOauthSettings:",
           glbl, " \\\n        --target-org ORG --output-dir /tmp/", app,
           "-retrieved\n"
           "    grep -r consumerKey /tmp/",
           app,
           "-retrieved\n\n"
           "or read it in Setup: External Client App Manager, ",
           app,
           ", Settings,\nOAuth Settings, Consumer Key and Secret. Put it "
           "into the p11jwt profile as\n`client-id`. For External Client "
           "Apps use the org's My Domain as `login-url`\n"
           "(https://MYDOMAIN.my.salesforce.com).\n\n",
           NULL);

    xb_puts(b, "## 4. Wait\n\n"
               "Changes to the global OAuth settings, the certificate "
               "included, take up to\n15 minutes to propagate. Token "
               "requests may fail with `invalid_grant` until\nthen.\n\n");

    xb_cat(b,
           "## 5. Later deploys\n\n"
           "Always deploy `",
           glbl,
           "` with its `<certificate>`: a deploy of that\nfile without "
           "the certificate clears it, and JWT logins then fail. The files "
           "here\nnever carry consumerKey, consumerSecret or oauthLink, and "
           "never ask Salesforce\nto rotate the consumer key.\n",
           NULL);
}

void
sf_eca_files_free(struct sf_eca_files *files)
{
    size_t i;

    if (files == NULL) {
        return;
    }
    for (i = 0; i < files->n; i++) {
        free(files->v[i].path);
        free(files->v[i].data);
    }
    free(files->v);
    files->v = NULL;
    files->n = 0;
}

pj_rc
sf_eca_build(const struct sf_eca_opts *o, struct sf_eca_files *files,
             struct pj_err *err)
{
    struct xb b = {.err = err};
    const char *ver =
        o->api_version != NULL ? o->api_version : SF_ECA_API_DEFAULT;
    char glbl[SF_ECA_API_NAME_MAX + 1], oauth[SF_ECA_API_NAME_MAX + 1],
        plcy[SF_ECA_API_NAME_MAX + 1];
    pj_rc rc;

    files->v = NULL;
    files->n = 0;
    if ((rc = sf_eca_opts_check(o, err)) != PJ_OK) {
        return rc;
    }
    if (o->cert_text == NULL || o->cert_text[0] == '\0') {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "no certificate: the app needs one for JWT Bearer");
    }
    sf_eca_component_name(o->name, SF_ECA_GLOBAL_OAUTH, glbl);
    sf_eca_component_name(o->name, SF_ECA_OAUTH, oauth);
    sf_eca_component_name(o->name, SF_ECA_OAUTH_POLICIES, plcy);

    if ((rc = build_project(o, ver, &b, err)) != PJ_OK ||
        (rc = files_add(files, &b, false, err, "sfdx-project.json")) != PJ_OK) {
        goto out;
    }
    build_package(o, ver, &b);
    if ((rc = files_add(files, &b, true, err, "manifest/package.xml")) !=
        PJ_OK) {
        goto out;
    }
    build_app(o, &b);
    if ((rc = files_add(files, &b, true, err,
                        SF_ECA_SRC "/externalClientApps/%s.eca-meta.xml",
                        o->name)) != PJ_OK) {
        goto out;
    }
    build_global(o, &b);
    if ((rc = files_add(files, &b, true, err,
                        SF_ECA_SRC "/extlClntAppGlobalOauthSets/"
                                   "%s.ecaGlblOauth-meta.xml",
                        glbl)) != PJ_OK) {
        goto out;
    }
    build_oauth(o, &b);
    if ((rc = files_add(files, &b, true, err,
                        SF_ECA_SRC "/extlClntAppOauthSettings/"
                                   "%s.ecaOauth-meta.xml",
                        oauth)) != PJ_OK) {
        goto out;
    }
    build_policies(o, &b);
    if ((rc = files_add(files, &b, true, err,
                        SF_ECA_SRC "/extlClntAppOauthPolicies/"
                                   "%s.ecaOauthPlcy-meta.xml",
                        plcy)) != PJ_OK) {
        goto out;
    }
    if (o->permission_set != NULL) {
        build_permset(o, &b);
        if ((rc = files_add(files, &b, true, err,
                            SF_ECA_SRC "/permissionsets/"
                                       "%s.permissionset-meta.xml",
                            o->permission_set)) != PJ_OK) {
            goto out;
        }
    }
    build_readme(o, &b);
    rc = files_add(files, &b, false, err, "README.md");
out:
    free(b.p);
    if (rc != PJ_OK) {
        sf_eca_files_free(files);
    }
    return rc;
}

/* ---- writing ------------------------------------------------------------- */

static pj_rc
dir_is_empty(const char *dir, bool *emptyp, struct pj_err *err)
{
    DIR *d;
    struct dirent *e;

    *emptyp = true;
    if ((d = opendir(dir)) == NULL) {
        return pj_err_sys(err, "cannot read --out %s", dir);
    }
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            *emptyp = false;
            break;
        }
    }
    closedir(d);
    return PJ_OK;
}

pj_rc
sf_eca_out_check(const char *dir, bool force, struct pj_err *err)
{
    struct stat st;
    bool empty;

    if (dir == NULL || dir[0] == '\0') {
        return pj_err_set(err, PJ_ERR_INVALID, "--out is empty");
    }
    if (stat(dir, &st) != 0) {
        if (errno == ENOENT) {
            return PJ_OK;
        }
        return pj_err_sys(err, "--out %s", dir);
    }
    if (!S_ISDIR(st.st_mode)) {
        return pj_err_set(err, PJ_ERR_EXISTS,
                          "--out %s exists and is not a directory", dir);
    }
    if (force) {
        return PJ_OK;
    }
    PJ_TRY(dir_is_empty(dir, &empty, err));
    if (!empty) {
        return pj_err_set(err, PJ_ERR_EXISTS,
                          "--out %s is not empty; use --force to replace the "
                          "files p11jwt eca writes there (nothing else is "
                          "touched)",
                          dir);
    }
    return PJ_OK;
}

/* mkdir -p for path; existing components must be real directories. */
static pj_rc
make_dirs(const char *path, size_t skip, struct pj_err *err)
{
    char buf[PATH_MAX];
    struct stat st;
    size_t i, len = strlen(path);

    if (len >= sizeof(buf)) {
        return pj_err_set(err, PJ_ERR_LIMIT, "%s: path too long", path);
    }
    memcpy(buf, path, len + 1);
    for (i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0') {
            continue;
        }
        buf[i] = '\0';
        if (i <= skip) {
            /* Inside --out itself: only require that it exists. */
        } else if (lstat(buf, &st) == 0) {
            if (!S_ISDIR(st.st_mode)) {
                return pj_err_set(err, PJ_ERR_EXISTS,
                                  "%s exists and is not a directory (or is a "
                                  "symbolic link); remove it",
                                  buf);
            }
        } else if (errno != ENOENT || mkdir(buf, 0755) != 0) {
            return pj_err_sys(err, "cannot create folder %s", buf);
        }
        if (i < len) {
            buf[i] = '/';
        }
    }
    return PJ_OK;
}

pj_rc
sf_eca_write(const struct sf_eca_files *files, const char *dir, bool force,
             sf_eca_written_fn written, void *ctx, struct pj_err *err)
{
    char path[PATH_MAX], *slash;
    struct stat st;
    size_t i;
    int n;

    PJ_TRY(sf_eca_out_check(dir, force, err));
    if (stat(dir, &st) != 0 && mkdir(dir, 0755) != 0) {
        PJ_TRY(make_dirs(dir, 0, err));
    }
    for (i = 0; i < files->n; i++) {
        n = snprintf(path, sizeof(path), "%s/%s", dir, files->v[i].path);
        if (n < 0 || (size_t)n >= sizeof(path)) {
            return pj_err_set(err, PJ_ERR_LIMIT, "%s/%s: path too long", dir,
                              files->v[i].path);
        }
        if ((slash = strrchr(path, '/')) != NULL) {
            *slash = '\0';
            PJ_TRY(make_dirs(path, strlen(dir), err));
            *slash = '/';
        }
        if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
            return pj_err_set(err, PJ_ERR_EXISTS,
                              "%s exists and is not a regular file; remove it",
                              path);
        }
        PJ_TRY(pj_file_write_atomic(path, files->v[i].data, files->v[i].len,
                                    0644, err));
        if (written != NULL) {
            written(ctx, files->v[i].path);
        }
    }
    return PJ_OK;
}
