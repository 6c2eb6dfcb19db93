/* SPDX-License-Identifier: Apache-2.0 */
/*
 * p11jwt eca: a Salesforce DX project that creates an External Client App
 * carrying the certificate of the token key (salesforce/sf_eca.h). The
 * certificate comes from a profile (its `cert`, else the one stored beside
 * its key) or from --cert; nothing here needs the private key or a PIN.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include "certs/cert.h"
#include "cli/cli.h"
#include "core/pj_config.h"
#include "core/pj_util.h"
#include "pkcs11/hsm.h"
#include "salesforce/sf_eca.h"

#define CMD "eca"
#define ECA_RSA_MIN_BITS 2048

enum {
    OPT_PROFILE = CLI_OPT_FIRST_LOCAL,
    OPT_CERT,
    OPT_NAME,
    OPT_EMAIL,
    OPT_OUT,
    OPT_LABEL,
    OPT_PERMSET,
    OPT_PROFILE_NAME,
    OPT_CALLBACK,
    OPT_API_VERSION,
    OPT_ENCODING,
    OPT_FORCE,
};

static void
help(FILE *f)
{
    fprintf(
        f,
        "usage: p11jwt eca (--profile P | --cert URI|FILE) --name APP\n"
        "                  --contact-email E --out DIR [--label L]\n"
        "                  [--permission-set PS | --profile-name NAME]\n"
        "                  [--callback-url U] [--api-version %s]\n"
        "                  [--cert-encoding pem|base64-der] [--force]\n"
        "\n"
        "Write a Salesforce DX project that creates an External Client "
        "App for the\nJWT Bearer flow with the token key's certificate: "
        "sfdx-project.json,\nmanifest/package.xml, README.md and, under "
        "force-app/main/default, the app,\nits global OAuth settings "
        "(with the certificate), OAuth settings (scopes\nApi,RefreshToken), "
        "OAuth policies (admin-approved users are pre-authorized)\nand, "
        "with --permission-set, the permission set. Deploy with\n"
        "'sf project deploy start --source-dir force-app'; DIR/README.md "
        "has the steps.\n"
        "\n"
        "  --profile P        take the certificate from [profile P]: its "
        "`cert`, else\n"
        "                     the certificate stored beside its key\n"
        "  --cert URI|FILE    the certificate: a pkcs11: URI (type=cert) "
        "or a PEM/DER file\n"
        "  --name APP         the app's API name: a letter first, then "
        "letters, digits,\n"
        "                     single underscores; at most %d "
        "characters\n"
        "  --contact-email E  the app's contact address\n"
        "  --out DIR          output folder: absent or empty, unless "
        "--force\n"
        "  --label L          display name (default: APP)\n"
        "  --permission-set PS  pre-authorize holders of permission set "
        "PS (API name;\n"
        "                     its metadata is emitted too)\n"
        "  --profile-name NAME  pre-authorize users with this profile, "
        "e.g.\n"
        "                     \"System Administrator\"\n"
        "  --callback-url U   https:// redirect URL, unused by JWT "
        "(default\n"
        "                     %s)\n"
        "  --api-version V    NN.0, at least %d.0 (default %s)\n"
        "  --cert-encoding E  pem (default: PEM text, as documented) or "
        "base64-der\n"
        "                     (one line of base64 DER, if an org rejects "
        "PEM)\n"
        "  --force            write into a non-empty DIR, replacing only "
        "the files\n"
        "                     this command writes\n"
        "global: -c FILE, --module PATH, --pin-source SRC (only for "
        "tokens that keep\n"
        "certificates private)\n"
        "Exit status: 0 ok, 1 failure, 2 usage error.\n",
        SF_ECA_API_DEFAULT, SF_ECA_APP_NAME_MAX, SF_ECA_CALLBACK_DEFAULT,
        SF_ECA_API_MIN, SF_ECA_API_DEFAULT);
}

/* The certificate of --profile or --cert, usable for Salesforce now. */
static pj_rc
load_cert(const char *profile, const char *cert_arg, struct cert **certp,
          struct pj_err *err)
{
    struct pj_config *cfg = NULL;
    const struct pj_profile *prof = NULL;
    char *key_cert_uri = NULL;
    const char *src = cert_arg;
    struct cert *c = NULL;
    bool is_uri;
    pj_rc rc;

    *certp = NULL;
    if (profile != NULL) {
        if ((rc = pj_config_load_file(pj_config_path_resolve(cli_global.config),
                                      &cfg, err)) != PJ_OK ||
            (rc = pj_config_profile_select(cfg, profile, &prof, err)) !=
                PJ_OK) {
            goto out;
        }
        if (prof->cert != NULL) {
            src = prof->cert;
        } else {
            if ((rc = cert_uri_for_key(prof->key, &key_cert_uri, err)) !=
                PJ_OK) {
                goto out;
            }
            src = key_cert_uri;
        }
    }
    is_uri = strncmp(src, "pkcs11:", 7) == 0;
    if (is_uri) {
        fprintf(stderr, "p11jwt eca: reading the certificate from the "
                        "token\n");
    }
    if ((rc = cert_load(src, cli_module_path(cfg), cli_global.pin_source, &c,
                        err)) != PJ_OK ||
        (rc = cert_check_usable(c, pj_time_now(), false, err)) != PJ_OK) {
        goto out;
    }
    /* Salesforce verifies RS256 only; other keys are silently rejected. */
    if (strcmp(cert_key_type(c), "RSA") != 0 ||
        cert_key_bits(c) < ECA_RSA_MIN_BITS) {
        rc = pj_err_set(err, PJ_ERR_INVALID,
                        "%s: the certificate's key is %s-%u; Salesforce JWT "
                        "Bearer needs RSA with at least %d bits",
                        is_uri ? "the certificate on the token" : src,
                        cert_key_type(c), cert_key_bits(c), ECA_RSA_MIN_BITS);
        goto out;
    }
    *certp = c;
    c = NULL;
    rc = PJ_OK;
out:
    cert_free(c);
    free(key_cert_uri);
    pj_config_free(cfg);
    return rc;
}

struct progress {
    const char *dir;
    unsigned n;
};

static void
written(void *ctx, const char *path)
{
    struct progress *p = ctx;

    fprintf(stderr, "p11jwt eca: wrote %s/%s\n", p->dir, path);
    p->n++;
}

int
cli_cmd_eca(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_GLOBAL_LONGOPTS,
        {"profile", required_argument, NULL, OPT_PROFILE},
        {"cert", required_argument, NULL, OPT_CERT},
        {"name", required_argument, NULL, OPT_NAME},
        {"contact-email", required_argument, NULL, OPT_EMAIL},
        {"out", required_argument, NULL, OPT_OUT},
        {"label", required_argument, NULL, OPT_LABEL},
        {"permission-set", required_argument, NULL, OPT_PERMSET},
        {"profile-name", required_argument, NULL, OPT_PROFILE_NAME},
        {"callback-url", required_argument, NULL, OPT_CALLBACK},
        {"api-version", required_argument, NULL, OPT_API_VERSION},
        {"cert-encoding", required_argument, NULL, OPT_ENCODING},
        {"force", no_argument, NULL, OPT_FORCE},
        {NULL, 0, NULL, 0},
    };
    struct sf_eca_opts o = {0};
    enum sf_eca_cert_encoding enc = SF_ECA_CERT_PEM;
    const char *profile = NULL, *cert_arg = NULL, *out = NULL;
    bool force = false;
    struct pj_err err = {0};
    struct cert *c = NULL;
    struct sf_eca_files files = {0};
    struct progress prog = {0};
    char *cert_text = NULL;
    const uint8_t *der;
    size_t der_len;
    char na[21];
    int opt, ret = CLI_FAIL;

    while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        if (cli_global_opt(opt, optarg)) {
            continue;
        }
        switch (opt) {
        case 'h':
            help(stdout);
            return CLI_OK;
        case OPT_PROFILE:
            profile = optarg;
            break;
        case OPT_CERT:
            cert_arg = optarg;
            break;
        case OPT_NAME:
            o.name = optarg;
            break;
        case OPT_EMAIL:
            o.contact_email = optarg;
            break;
        case OPT_OUT:
            out = optarg;
            break;
        case OPT_LABEL:
            o.label = optarg;
            break;
        case OPT_PERMSET:
            o.permission_set = optarg;
            break;
        case OPT_PROFILE_NAME:
            o.profile_name = optarg;
            break;
        case OPT_CALLBACK:
            o.callback_url = optarg;
            break;
        case OPT_API_VERSION:
            o.api_version = optarg;
            break;
        case OPT_ENCODING:
            if (!sf_eca_cert_encoding_parse(optarg, &enc)) {
                return cli_usage(CMD,
                                 "--cert-encoding '%s': use pem or "
                                 "base64-der",
                                 optarg);
            }
            break;
        case OPT_FORCE:
            force = true;
            break;
        default:
            return cli_bad_option(CMD);
        }
    }
    if (optind < argc) {
        return cli_usage(CMD, "unexpected argument '%s'", argv[optind]);
    }
    if ((profile == NULL) == (cert_arg == NULL)) {
        return cli_usage(CMD, "give exactly one of --profile P and --cert "
                              "URI|FILE");
    }
    if (o.name == NULL || o.contact_email == NULL || out == NULL) {
        return cli_usage(CMD, "--name APP, --contact-email E and --out DIR "
                              "are required");
    }
    /* Every argument is checked before any file or token is touched. */
    if (sf_eca_opts_check(&o, &err) != PJ_OK) {
        return cli_usage(CMD, "%s", err.msg);
    }
    if (sf_eca_out_check(out, force, &err) != PJ_OK ||
        load_cert(profile, cert_arg, &c, &err) != PJ_OK) {
        ret = cli_fail(CMD, &err);
        goto out;
    }
    der = cert_der(c, &der_len);
    if (sf_eca_cert_text(der, der_len, cert_pem(c, NULL), enc, &cert_text,
                         &err) != PJ_OK) {
        ret = cli_fail(CMD, &err);
        goto out;
    }
    if (strlen(cert_text) > SF_ECA_CERT_TEXT_MAX) {
        fprintf(
            stderr,
            "p11jwt eca: warning: the certificate is %zu characters as "
            "%s; Salesforce documents a 4 KB limit%s\n",
            strlen(cert_text), enc == SF_ECA_CERT_PEM ? "PEM" : "base64 DER",
            enc == SF_ECA_CERT_PEM ? " (try --cert-encoding base64-der)" : "");
    }
    o.cert_text = cert_text;
    prog.dir = out;
    if (sf_eca_build(&o, &files, &err) != PJ_OK ||
        sf_eca_write(&files, out, force, written, &prog, &err) != PJ_OK) {
        ret = cli_fail(CMD, &err);
        goto out;
    }
    cert_time_iso(cert_not_after(c), na);
    fprintf(stderr,
            "p11jwt eca: %u files written to %s for app %s; certificate %s "
            "(%s), valid until %s, SHA-256 %s\n",
            prog.n, out, o.name, cert_subject(c),
            enc == SF_ECA_CERT_PEM ? "PEM" : "base64 DER", na,
            cert_sha256_fp(c));
    if (o.permission_set == NULL && o.profile_name == NULL) {
        fprintf(stderr, "p11jwt eca: note: no --permission-set or "
                        "--profile-name: no user is pre-authorized until an "
                        "admin adds one in the app's policies\n");
    }
    fprintf(stderr,
            "p11jwt eca: next: follow %s/README.md (deploy, assign, "
            "consumer key; changes take up to 15 minutes)\n",
            out);
    ret = CLI_OK;
out:
    sf_eca_files_free(&files);
    free(cert_text);
    cert_free(c);
    return ret;
}
