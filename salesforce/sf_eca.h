/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Salesforce External Client App (ECA) metadata for the JWT Bearer flow, as
 * a Salesforce DX source-format project (research/salesforce.md 1.1, 1.11):
 *
 *   sfdx-project.json
 *   manifest/package.xml
 *   force-app/main/default/
 *     externalClientApps/APP.eca-meta.xml
 *     extlClntAppGlobalOauthSets/APP_glbloauth.ecaGlblOauth-meta.xml
 *     extlClntAppOauthSettings/APP_oauth.ecaOauth-meta.xml
 *     extlClntAppOauthPolicies/APP_oauthPlcy.ecaOauthPlcy-meta.xml
 *     permissionsets/PS.permissionset-meta.xml        (with a permission set)
 *   README.md
 *
 * Every element is written in the sequence order of the Metadata API v66
 * WSDL, so each file validates against its XSD. consumerKey, consumerSecret
 * and oauthLink are never written and shouldRotate* are always false: a new
 * consumer key would break every `iss` in use, and a wrong oauthLink fails
 * the deploy (1.4, 1.9).
 *
 * Building is pure (inputs -> file texts, no I/O), so `rotate` can reuse it
 * with the next certificate; sf_eca_write puts the files on disk.
 */
#ifndef SF_ECA_H
#define SF_ECA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/pj_err.h"

/* API names (DeveloperName): at most 40 characters (object reference). */
#define SF_ECA_API_NAME_MAX 40
/*
 * The app name leaves room for the longest component suffix we add
 * ("_glbloauth", "_oauthPlcy": 10 characters), so every component's
 * fullName stays within SF_ECA_API_NAME_MAX.
 */
#define SF_ECA_APP_NAME_MAX 30
#define SF_ECA_PERMSET_NAME_MAX 80 /* PermissionSet.Name */
#define SF_ECA_PROFILE_NAME_MAX 255
#define SF_ECA_LABEL_MAX 80
#define SF_ECA_EMAIL_MAX 254 /* RFC 5321 path limit */
#define SF_ECA_URL_MAX 1024
/* "The certificate size can't exceed 4 KB" (1.12): warn above, as emitted. */
#define SF_ECA_CERT_TEXT_MAX 4096
/*
 * Oldest API version we emit: the certificate field needs 60.0, and
 * isCodeCredFlowEnabled / isNamedUserJwtEnabled (emitted false) need 61.0.
 * commaSeparatedProfile needs 62.0.
 */
#define SF_ECA_API_MIN 61
#define SF_ECA_API_PROFILE_MIN 62
#define SF_ECA_API_DEFAULT "66.0"
/* Callback URL when none is given: unused by JWT, harmless (1.5). */
#define SF_ECA_CALLBACK_DEFAULT                                                \
    "https://login.salesforce.com/services/oauth2/success"

enum sf_eca_cert_encoding {
    SF_ECA_CERT_PEM,        /* PEM text with armour and newlines (1.3 #1) */
    SF_ECA_CERT_BASE64_DER, /* one line of base64 DER (1.3 #2) */
};

/* "pem" or "base64-der"; false if s is neither. */
bool sf_eca_cert_encoding_parse(const char *s, enum sf_eca_cert_encoding *encp);

struct sf_eca_opts {
    const char *name;           /* app API name (required) */
    const char *label;          /* NULL: the name */
    const char *contact_email;  /* required */
    const char *permission_set; /* NULL or an API name; emitted too */
    const char *profile_name;   /* NULL or a profile name, e.g. "System
                                   Administrator"; not with permission_set */
    const char *callback_url;   /* NULL: SF_ECA_CALLBACK_DEFAULT */
    const char *api_version;    /* NULL: SF_ECA_API_DEFAULT */
    const char *cert_text;      /* from sf_eca_cert_text (required) */
};

/*
 * Salesforce API-name rules: starts with a letter; only ASCII letters,
 * digits and underscores; no "__"; does not end with '_'; at most max
 * characters. what names the option in messages ("--name").
 */
PJ_MUST_USE pj_rc sf_eca_api_name_check(const char *name, size_t max,
                                        const char *what, struct pj_err *err);

/* A contact e-mail address: local@domain.tld, RFC 5322 dot-atom local part. */
PJ_MUST_USE pj_rc sf_eca_email_check(const char *email, struct pj_err *err);

/* "NN.0" with NN >= SF_ECA_API_MIN; *majorp (may be NULL) gets NN. */
PJ_MUST_USE pj_rc sf_eca_api_version_check(const char *v, long *majorp,
                                           struct pj_err *err);

/* An https:// URL with a host, printable ASCII, no spaces. */
PJ_MUST_USE pj_rc sf_eca_callback_check(const char *url, struct pj_err *err);

/*
 * A display text (label, profile name): 1..max characters of valid UTF-8,
 * no control characters, no leading or trailing space. With no_comma,
 * commas are refused (the value goes into a comma-separated field).
 */
PJ_MUST_USE pj_rc sf_eca_text_check(const char *s, size_t max, bool no_comma,
                                    const char *what, struct pj_err *err);

/* Every check above, applied to opts (including the API version rules). */
PJ_MUST_USE pj_rc sf_eca_opts_check(const struct sf_eca_opts *opts,
                                    struct pj_err *err);

/*
 * The text that goes into <certificate>: PEM (pem_text, copied with its
 * trailing newline removed) or one line of base64 of der. *textp is new
 * (free()). Size is the caller's to judge: certs/ refuses DER over 4 KB,
 * and the CLI warns when the emitted text is over SF_ECA_CERT_TEXT_MAX.
 */
PJ_MUST_USE pj_rc sf_eca_cert_text(const uint8_t *der, size_t der_len,
                                   const char *pem_text,
                                   enum sf_eca_cert_encoding enc, char **textp,
                                   struct pj_err *err);

/*
 * XML character data for s: & < > " ' become entities, CR becomes &#13;.
 * Refused (PJ_ERR_INVALID): invalid UTF-8 and characters XML 1.0 cannot
 * hold (C0 controls other than TAB, LF, CR; U+FFFE, U+FFFF). *outp is new.
 */
PJ_MUST_USE pj_rc sf_eca_xml_escape(const char *s, char **outp,
                                    struct pj_err *err);

/* One emitted file: path relative to the output folder. */
struct sf_eca_file {
    char *path;
    char *data;
    size_t len;
    bool is_xml;
};

struct sf_eca_files {
    struct sf_eca_file *v;
    size_t n;
};

/* The component full names for an app: "APP_glbloauth" etc. into out. */
enum sf_eca_component {
    SF_ECA_GLOBAL_OAUTH,
    SF_ECA_OAUTH,
    SF_ECA_OAUTH_POLICIES,
};
void sf_eca_component_name(const char *app, enum sf_eca_component which,
                           char out[SF_ECA_API_NAME_MAX + 1]);

/*
 * Check opts and build every file in memory. On failure files is empty and
 * err says which input is wrong.
 */
PJ_MUST_USE pj_rc sf_eca_build(const struct sf_eca_opts *opts,
                               struct sf_eca_files *files, struct pj_err *err);

void sf_eca_files_free(struct sf_eca_files *files);

/*
 * Can dir receive the files? Absent, or an empty directory, or (with
 * force) any directory. The same check sf_eca_write makes first; callers
 * run it early to fail before touching a token.
 */
PJ_MUST_USE pj_rc sf_eca_out_check(const char *dir, bool force,
                                   struct pj_err *err);

/* Called once per file written (path relative to dir). */
typedef void (*sf_eca_written_fn)(void *ctx, const char *path);

/*
 * Write files under dir, creating folders (0755) as needed; files are
 * written atomically with mode 0644. dir must be absent or empty unless
 * force; with force only the files in files are replaced, nothing else
 * in dir is touched. Refuses a dir that is not a directory, and a path
 * component inside dir that is a symlink or not a directory.
 */
PJ_MUST_USE pj_rc sf_eca_write(const struct sf_eca_files *files,
                               const char *dir, bool force,
                               sf_eca_written_fn written, void *ctx,
                               struct pj_err *err);

#endif
