/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Loading a certificate from a file or a token, and matching it against
 * the key on the token. Kept apart from cert_parse.c so code that only
 * parses (the fuzzer, unit tests) does not pull in the token layer.
 */
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include "certs/cert_int.h"
#include "core/pj_util.h"
#include "pkcs11/hsm.h"

pj_rc
cert_load(const char *path_or_uri, const char *module, const char *pin_source,
          struct cert **certp, struct pj_err *err)
{
    struct hsm_module *mod = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    pj_rc rc;

    *certp = NULL;
    if (path_or_uri == NULL || path_or_uri[0] == '\0') {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "no certificate given (a file or a pkcs11: URI)");
    }
    if (strncmp(path_or_uri, "pkcs11:", 7) != 0) {
        if ((rc = pj_file_read(path_or_uri, CERT_FILE_MAX, &data, &len, err)) !=
            PJ_OK) {
            return rc;
        }
        rc = cert_parse(data, len, path_or_uri, certp, err);
        free(data);
        return rc;
    }
    if ((rc = hsm_module_load(hsm_module_path_resolve(module), &mod, err)) !=
            PJ_OK ||
        (rc = hsm_cert_find(mod, path_or_uri, pin_source, &data, &len, err)) !=
            PJ_OK) {
        goto out;
    }
    rc = cert_from_der(data, len, path_or_uri, CERT_FORMAT_TOKEN, certp, err);
out:
    free(data);
    hsm_module_free(mod);
    return rc;
}

pj_rc
cert_matches_key(const struct cert *cert, struct hsm_key *key, bool *matchp,
                 char key_fp[96], struct pj_err *err)
{
    uint8_t *spki = NULL;
    size_t len = 0;
    pj_rc rc;

    *matchp = false;
    if ((rc = hsm_key_public_der(key, &spki, &len, err)) != PJ_OK) {
        return rc;
    }
    rc = cert_matches_spki(cert, spki, len, matchp, key_fp, err);
    free(spki);
    return rc;
}

pj_rc
cert_load_key(struct hsm_key *key, const char *name, struct cert **certp,
              struct pj_err *err)
{
    uint8_t *der = NULL;
    size_t len = 0;
    pj_rc rc;

    *certp = NULL;
    if ((rc = hsm_key_find_cert(key, &der, &len, err)) != PJ_OK) {
        return rc;
    }
    rc = cert_from_der(der, len, name, CERT_FORMAT_TOKEN, certp, err);
    free(der);
    return rc;
}

/*
 * uri with CKA_CLASS set to cls: the key beside a certificate or the
 * certificate beside a key (same token, label and id). A pin-value is
 * dropped; so is a pin-source on the way to a certificate, which is public.
 */
static pj_rc
uri_with_class(const char *in, CK_OBJECT_CLASS cls, const char *what,
               char **outp, struct pj_err *err)
{
    P11KitUri *uri = NULL;
    CK_ATTRIBUTE attr = {CKA_CLASS, &cls, sizeof(cls)};
    char *out = NULL;
    int r;
    pj_rc rc;

    *outp = NULL;
    if ((uri = p11_kit_uri_new()) == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
    }
    r = p11_kit_uri_parse(in, P11_KIT_URI_FOR_ANY, uri);
    if (r != P11_KIT_URI_OK) {
        /* Never echo the URI: a careless one may carry a PIN. */
        rc = pj_err_set(err, PJ_ERR_INVALID,
                        "the %s URI is not a valid pkcs11: URI (%s)", what,
                        p11_kit_uri_message(r));
        goto out;
    }
    p11_kit_uri_set_pin_value(uri, NULL);
    if (cls == CKO_CERTIFICATE) {
        p11_kit_uri_set_pin_source(uri, NULL);
    }
    if (p11_kit_uri_set_attribute(uri, &attr) != P11_KIT_URI_OK ||
        p11_kit_uri_format(uri, P11_KIT_URI_FOR_ANY, &out) != P11_KIT_URI_OK) {
        rc = pj_err_set(err, PJ_ERR_INTERNAL,
                        "building a URI from the %s URI failed", what);
        goto out;
    }
    *outp = out;
    rc = PJ_OK;
out:
    p11_kit_uri_free(uri);
    return rc;
}

pj_rc
cert_key_uri_for(const char *cert_uri, char **key_urip, struct pj_err *err)
{
    return uri_with_class(cert_uri, CKO_PRIVATE_KEY, "certificate", key_urip,
                          err);
}

pj_rc
cert_uri_for_key(const char *key_uri, char **cert_urip, struct pj_err *err)
{
    return uri_with_class(key_uri, CKO_CERTIFICATE, "key", cert_urip, err);
}
