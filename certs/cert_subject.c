/* SPDX-License-Identifier: Apache-2.0 */
/*
 * --subject parsing: "CN=a,O=b" (the form people type) or "/CN=a/O=b" (the
 * form `openssl req -subj` takes). A backslash escapes the next character,
 * so "O=Acme\, Inc." keeps its comma. Only well-known attribute names are
 * accepted: a typo like "CM=" must fail loudly, not produce a certificate
 * with an odd OID in it.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "certs/cert_int.h"
#include "core/pj_util.h"

static const char *const known_attrs[] = {
    "CN",           "O",
    "OU",           "C",
    "ST",           "L",
    "emailAddress", "DC",
    "UID",          "serialNumber",
    "street",       "title",
    "GN",           "SN",
    "postalCode",
};

static const char known_list[] =
    "CN, O, OU, C, ST, L, emailAddress, DC, UID, serialNumber, street, "
    "title, GN, SN, postalCode";

static char *
trim(char *s)
{
    char *e;

    while (*s != '\0' && isspace((unsigned char)*s)) {
        s++;
    }
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) {
        *--e = '\0';
    }
    return s;
}

/* Remove backslash escapes in place. */
static void
unescape(char *s)
{
    char *w = s;

    for (; *s != '\0'; s++) {
        if (*s == '\\' && s[1] != '\0') {
            s++;
        }
        *w++ = *s;
    }
    *w = '\0';
}

static pj_rc
add_attr(X509_NAME *nm, const char *subject, char *comp, struct pj_err *err)
{
    char *eq, *name, *value;
    const char *canon = NULL;
    size_t i;
    int nid;

    /* Attribute names never contain escapes: the first '=' ends them. */
    eq = strchr(comp, '=');
    if (eq == NULL) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "subject '%s': '%s' is not NAME=VALUE", subject,
                          trim(comp));
    }
    *eq = '\0';
    name = trim(comp);
    value = eq + 1;
    unescape(value);
    value = trim(value);
    for (i = 0; i < PJ_ARRAY_SIZE(known_attrs); i++) {
        if (strcasecmp(name, known_attrs[i]) == 0) {
            canon = known_attrs[i];
            break;
        }
    }
    if (canon == NULL) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "subject '%s': unknown attribute '%s' (use %s)",
                          subject, name, known_list);
    }
    nid = OBJ_txt2nid(canon);
    if (nid == NID_undef) {
        return pj_err_set(err, PJ_ERR_INTERNAL,
                          "subject: OpenSSL does not know attribute '%s'",
                          canon);
    }
    if (value[0] == '\0') {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "subject '%s': attribute '%s' has no value", subject,
                          canon);
    }
    ERR_clear_error();
    if (X509_NAME_add_entry_by_NID(nm, nid, MBSTRING_UTF8,
                                   (const unsigned char *)value, -1, -1,
                                   0) != 1) {
        return pj_err_crypto(err,
                             "subject '%s': the value of '%s' is not "
                             "acceptable (C takes a 2-letter country code; "
                             "CN, O and OU at most 64 characters)",
                             subject, canon);
    }
    return PJ_OK;
}

pj_rc
cert_subject_parse(const char *subject, X509_NAME **namep, struct pj_err *err)
{
    X509_NAME *nm = NULL;
    char *buf = NULL, *s, *start;
    char sep;
    size_t len;
    int count = 0;
    pj_rc rc;

    *namep = NULL;
    if (subject == NULL || subject[0] == '\0') {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "the subject is empty: give e.g. "
                          "--subject \"CN=salesforce-jwt,O=Example\"");
    }
    len = strlen(subject);
    if (len > CERT_SUBJECT_MAX) {
        return pj_err_set(err, PJ_ERR_LIMIT,
                          "the subject is %zu characters long (limit %d)", len,
                          CERT_SUBJECT_MAX);
    }
    if ((buf = strdup(subject)) == NULL || (nm = X509_NAME_new()) == NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
        goto out;
    }
    s = trim(buf);
    if (*s == '\0' || strcmp(s, "/") == 0) {
        rc = pj_err_set(err, PJ_ERR_INVALID,
                        "subject '%s' is empty: it has "
                        "no attributes",
                        subject);
        goto out;
    }
    sep = ',';
    if (*s == '/') {
        sep = '/';
        s++;
    }
    start = s;
    for (;; s++) {
        if (*s == '\\') {
            if (s[1] == '\0') {
                rc = pj_err_set(err, PJ_ERR_INVALID,
                                "subject '%s' ends with a lone backslash",
                                subject);
                goto out;
            }
            s++;
            continue;
        }
        if (*s != sep && *s != '\0') {
            continue;
        }
        {
            bool end = *s == '\0';
            *s = '\0';
            if (trim(start)[0] == '\0') {
                if (!(end && sep == '/' && count > 0)) {
                    rc = pj_err_set(err, PJ_ERR_INVALID,
                                    "subject '%s' has an empty attribute "
                                    "(two separators in a row?)",
                                    subject);
                    goto out;
                }
            } else {
                if ((rc = add_attr(nm, subject, start, err)) != PJ_OK) {
                    goto out;
                }
                count++;
            }
            if (end) {
                break;
            }
            start = s + 1;
        }
    }
    if (count == 0) {
        rc = pj_err_set(err, PJ_ERR_INVALID, "subject '%s' has no attributes",
                        subject);
        goto out;
    }
    *namep = nm;
    nm = NULL;
    rc = PJ_OK;
out:
    X509_NAME_free(nm);
    free(buf);
    return rc;
}

pj_rc
cert_subject_check(const char *subject, struct pj_err *err)
{
    X509_NAME *nm = NULL;
    pj_rc rc = cert_subject_parse(subject, &nm, err);

    X509_NAME_free(nm);
    return rc;
}

pj_rc
cert_days_check(long days, bool force, struct pj_err *err)
{
    if (days < 1) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "--days %ld: a certificate must be valid for at "
                          "least 1 day",
                          days);
    }
    if (!force && days > CERT_DAYS_MAX) {
        return pj_err_set(err, PJ_ERR_LIMIT,
                          "--days %ld is over %d (about 27 months, the "
                          "longest a public CA issues); use --force to make "
                          "it anyway",
                          days, CERT_DAYS_MAX);
    }
    if (days > CERT_DAYS_MAX_FORCE) {
        return pj_err_set(err, PJ_ERR_LIMIT, "--days %ld is over %d", days,
                          CERT_DAYS_MAX_FORCE);
    }
    return PJ_OK;
}
