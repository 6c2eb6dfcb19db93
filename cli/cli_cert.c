/* SPDX-License-Identifier: Apache-2.0 */
/*
 * p11jwt cert self-signed|csr|import|show: certificates for the key on the
 * token. Signing goes through our token layer (certs/cert_tokenkey.c), so
 * there is one PKCS#11 stack and one login, and the key never leaves.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "certs/cert.h"
#include "cli/cli.h"
#include "core/pj_util.h"
#include "pkcs11/hsm.h"

enum {
    OPT_KEY = CLI_OPT_FIRST_LOCAL,
    OPT_SUBJECT,
    OPT_DAYS,
    OPT_OUT,
    OPT_IN,
    OPT_CERT,
    OPT_STORE,
    OPT_FORCE,
    OPT_REPLACE,
    OPT_JSON,
};

/* Which options each subcommand takes (bit = 1 << (opt - OPT_KEY)). */
#define B(o) (1u << ((o)-OPT_KEY))

struct sub {
    const char *name;
    unsigned allowed;
    int (*run)(void);
};

static struct {
    const char *sub;
    const char *key, *subject, *out, *in, *cert;
    const char *days;
    bool store, force, replace, json;
} o;

static void
help(FILE *f)
{
    fprintf(
        f,
        "usage: p11jwt cert self-signed --key URI --subject SUBJECT [--days "
        "N]\n"
        "                               [--force] [--out FILE] [--store] "
        "[--replace]\n"
        "       p11jwt cert csr --key URI --subject SUBJECT --out FILE|-\n"
        "       p11jwt cert import --key URI --in FILE [--force] [--replace]\n"
        "       p11jwt cert show [--cert URI|FILE] [--key URI] [--json]\n"
        "\n"
        "Certificates for an RSA key on a PKCS#11 token; the token signs, "
        "the key\nnever leaves it.\n"
        "\n"
        "  self-signed  an X.509 v3 certificate (SHA-256 with RSA, random "
        "128-bit\n"
        "               serial, CA:FALSE, digitalSignature); PEM to --out "
        "FILE,\n"
        "               to stdout when neither --out nor --store is given\n"
        "  csr          a PKCS#10 request to send to a CA\n"
        "  import       store a CA-issued certificate (PEM or DER) beside "
        "the key,\n"
        "               after checking it is the key's and currently valid\n"
        "  show         subject, validity, fingerprints, key, size against\n"
        "               Salesforce's 4096-byte limit, and whether it matches "
        "the key\n"
        "\n"
        "  --key URI        pkcs11: URI of the private key "
        "(...;object=LABEL;type=private)\n"
        "  --subject S      \"CN=a,O=b\" or \"/CN=a/O=b\"; '\\,' keeps a "
        "comma. Names:\n"
        "                   CN O OU C ST L emailAddress DC UID serialNumber "
        "street\n"
        "                   title GN SN postalCode\n"
        "  --days N         validity, default %d, at most %d (%d with "
        "--force)\n"
        "  --out FILE       write PEM here ('-' is stdout); refuses to "
        "overwrite\n"
        "                   unless --replace\n"
        "  --store          store the certificate on the token with the "
        "key's id and label\n"
        "  --replace        replace an existing certificate (token object or "
        "--out file)\n"
        "  --force          self-signed: allow --days over %d; import: "
        "accept a\n"
        "                   certificate that is not valid yet\n"
        "  --in FILE        the certificate to import\n"
        "  --cert URI|FILE  the certificate to show (a pkcs11: URI with "
        "type=cert, or a file);\n"
        "                   without it, show the certificate beside --key\n"
        "  --json           machine-readable output\n"
        "global: --module PATH, --pin-source file:PATH|env:NAME|systemd:NAME\n"
        "Exit status: 0 ok, 1 failure, 2 usage error.\n",
        CERT_DAYS_DEFAULT, CERT_DAYS_MAX, CERT_DAYS_MAX_FORCE, CERT_DAYS_MAX);
}

static int
fail(const struct pj_err *err)
{
    char cmd[64];

    snprintf(cmd, sizeof(cmd), "cert %s", o.sub);
    return cli_fail(cmd, err);
}

static int
usage(const char *msg)
{
    char cmd[64];

    snprintf(cmd, sizeof(cmd), "cert %s", o.sub != NULL ? o.sub : "");
    return cli_usage(cmd, "%s", msg);
}

/* Open the module and the key named by uri. */
static pj_rc
open_key(const char *uri, struct hsm_module **modp, struct hsm_key **keyp,
         struct pj_err *err)
{
    struct hsm_key_opts kopts = {
        .uri = uri, .pin_source = cli_global.pin_source, .sessions = 1};
    pj_rc rc;

    *keyp = NULL;
    if ((rc = hsm_module_load(hsm_module_path_resolve(cli_global.module), modp,
                              err)) != PJ_OK) {
        return rc;
    }
    return hsm_key_open(*modp, &kopts, keyp, err);
}

static bool
exists(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0;
}

static pj_rc
write_out(const char *path, const char *text, size_t len, struct pj_err *err)
{
    if (strcmp(path, "-") == 0) {
        if (fwrite(text, 1, len, stdout) != len || fflush(stdout) != 0) {
            return pj_err_sys(err, "writing to stdout failed");
        }
        return PJ_OK;
    }
    return pj_file_write_atomic(path, text, len, 0644, err);
}

static pj_rc
check_out(struct pj_err *err)
{
    if (o.out != NULL && strcmp(o.out, "-") != 0 && exists(o.out) &&
        !o.replace) {
        return pj_err_set(err, PJ_ERR_EXISTS,
                          "%s exists; use --replace to overwrite it", o.out);
    }
    return PJ_OK;
}

static void
progress(struct hsm_key *key, const char *what)
{
    struct hsm_key_info info;
    struct pj_err e = {0};

    if (hsm_key_get_info(key, &info, &e) == PJ_OK) {
        fprintf(stderr,
                "p11jwt cert: %s with key '%s' (RSA-%lu) on token '%s'...\n",
                what, info.label, info.bits, info.token_label);
    } else {
        fprintf(stderr, "p11jwt cert: %s with the key on the token...\n", what);
    }
}

static void
summary(const struct cert *c)
{
    char na[21];

    cert_time_iso(cert_not_after(c), na);
    fprintf(stderr,
            "p11jwt cert: subject %s, serial %s, valid until %s\n"
            "p11jwt cert: SHA-256 fingerprint %s\n",
            cert_subject(c), cert_serial_hex(c), na, cert_sha256_fp(c));
}

static pj_rc
parse_days(long *daysp, struct pj_err *err)
{
    *daysp = CERT_DAYS_DEFAULT;
    if (o.days != NULL &&
        pj_parse_long(o.days, -1000000, 1000000, daysp) != PJ_OK) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "--days '%s' is not a whole number of days", o.days);
    }
    return cert_days_check(*daysp, o.force, err);
}

static int
run_self_signed(void)
{
    struct pj_err err = {0};
    struct hsm_module *mod = NULL;
    struct hsm_key *key = NULL;
    struct cert *c = NULL;
    struct cert_build_opts bopts = {0};
    const uint8_t *der;
    const char *pem;
    size_t der_len, pem_len;
    int ret = CLI_FAIL;

    if (o.key == NULL || o.subject == NULL) {
        return usage("--key URI and --subject SUBJECT are required");
    }
    if (parse_days(&bopts.days, &err) != PJ_OK ||
        cert_subject_check(o.subject, &err) != PJ_OK) {
        return usage(err.msg);
    }
    bopts.subject = o.subject;
    bopts.force = o.force;
    if (check_out(&err) != PJ_OK ||
        open_key(o.key, &mod, &key, &err) != PJ_OK) {
        ret = fail(&err);
        goto out;
    }
    progress(key, "signing a self-signed certificate");
    if (cert_self_signed(key, &bopts, &c, &err) != PJ_OK ||
        cert_check_usable(c, pj_time_now(), false, &err) != PJ_OK) {
        ret = fail(&err);
        goto out;
    }
    der = cert_der(c, &der_len);
    pem = cert_pem(c, &pem_len);
    if (o.out != NULL || !o.store) {
        if (write_out(o.out != NULL ? o.out : "-", pem, pem_len, &err) !=
            PJ_OK) {
            ret = fail(&err);
            goto out;
        }
        if (o.out != NULL && strcmp(o.out, "-") != 0) {
            fprintf(stderr, "p11jwt cert: wrote %s\n", o.out);
        }
    }
    if (o.store) {
        if (hsm_key_store_cert(key, der, der_len, NULL, o.replace, &err) !=
            PJ_OK) {
            ret = fail(&err);
            goto out;
        }
        fprintf(stderr, "p11jwt cert: stored on the token beside the key "
                        "(type=cert, same id and label)\n");
    }
    summary(c);
    ret = CLI_OK;
out:
    cert_free(c);
    hsm_key_free(key);
    hsm_module_free(mod);
    return ret;
}

static int
run_csr(void)
{
    struct pj_err err = {0};
    struct hsm_module *mod = NULL;
    struct hsm_key *key = NULL;
    char *pem = NULL;
    size_t len = 0;
    int ret = CLI_FAIL;

    if (o.key == NULL || o.subject == NULL || o.out == NULL) {
        return usage("--key URI, --subject SUBJECT and --out FILE "
                     "are required");
    }
    if (cert_subject_check(o.subject, &err) != PJ_OK) {
        return usage(err.msg);
    }
    if (check_out(&err) != PJ_OK ||
        open_key(o.key, &mod, &key, &err) != PJ_OK) {
        ret = fail(&err);
        goto out;
    }
    progress(key, "signing a certificate request");
    if (cert_csr(key, o.subject, &pem, &len, &err) != PJ_OK ||
        write_out(o.out, pem, len, &err) != PJ_OK) {
        ret = fail(&err);
        goto out;
    }
    if (strcmp(o.out, "-") != 0) {
        fprintf(stderr,
                "p11jwt cert: wrote %s; send it to your CA, then run "
                "'p11jwt cert import --key URI --in CERT'\n",
                o.out);
    }
    ret = CLI_OK;
out:
    free(pem);
    hsm_key_free(key);
    hsm_module_free(mod);
    return ret;
}

static int
run_import(void)
{
    struct pj_err err = {0};
    struct hsm_module *mod = NULL;
    struct hsm_key *key = NULL;
    struct cert *c = NULL;
    char key_fp[96] = "";
    const uint8_t *der;
    size_t der_len;
    bool match = false;
    int ret = CLI_FAIL;

    if (o.key == NULL || o.in == NULL) {
        return usage("--key URI and --in FILE are required");
    }
    if (strncmp(o.in, "pkcs11:", 7) == 0) {
        return usage("--in takes a certificate file (PEM or DER), not "
                     "a pkcs11: URI");
    }
    /* Everything that needs no PIN is checked before the token is. */
    if (cert_load(o.in, NULL, NULL, &c, &err) != PJ_OK ||
        cert_check_usable(c, pj_time_now(), o.force, &err) != PJ_OK ||
        open_key(o.key, &mod, &key, &err) != PJ_OK ||
        cert_matches_key(c, key, &match, key_fp, &err) != PJ_OK) {
        ret = fail(&err);
        goto out;
    }
    if (!match) {
        fprintf(stderr,
                "p11jwt cert import: %s is not the token key's certificate: "
                "its public key differs\n"
                "  certificate public key SHA-256: %s\n"
                "  token key public key SHA-256:   %s\n"
                "Was the CSR made with this key? Nothing was stored.\n",
                o.in, cert_spki_sha256_fp(c), key_fp);
        goto out;
    }
    der = cert_der(c, &der_len);
    if (hsm_key_store_cert(key, der, der_len, NULL, o.replace, &err) != PJ_OK) {
        ret = fail(&err);
        goto out;
    }
    fprintf(stderr, "p11jwt cert: stored %s on the token beside the key\n",
            o.in);
    summary(c);
    ret = CLI_OK;
out:
    cert_free(c);
    hsm_key_free(key);
    hsm_module_free(mod);
    return ret;
}

/* The key match for show: "yes", "no" or why it is unknown. */
struct match_result {
    int known; /* -1 not checked, 0 no, 1 yes */
    char key_fp[96];
    char why[PJ_ERR_MSG_MAX];
};

static void
show_text(const struct cert *c, const struct match_result *m)
{
    char nb[21], na[21];
    size_t der_len, pem_len;
    int64_t days;
    enum cert_state st;
    bool within;

    cert_der(c, &der_len);
    cert_pem(c, &pem_len);
    cert_time_iso(cert_not_before(c), nb);
    cert_time_iso(cert_not_after(c), na);
    st = cert_expiry_state(c, pj_time_now(), CERT_WARN_DAYS_DEFAULT,
                           CERT_CRITICAL_DAYS_DEFAULT, m->known != 0, &days);
    within = der_len <= CERT_SF_MAX_BYTES;
    printf("certificate:  %s (%s)\n", cert_source(c),
           cert_format_name(cert_source_format(c)));
    printf("subject:      %s\n", cert_subject(c));
    printf("issuer:       %s%s\n", cert_issuer(c),
           cert_self_issued(c) ? " (self-signed)" : "");
    printf("serial:       %s\n", cert_serial_hex(c));
    printf("not before:   %s\n", nb);
    printf("not after:    %s\n", na);
    printf("days left:    %lld\n", (long long)days);
    printf("state:        %s (warning under %d days, critical under %d)\n",
           cert_state_name(st), CERT_WARN_DAYS_DEFAULT,
           CERT_CRITICAL_DAYS_DEFAULT);
    printf("SHA-1:        %s\n", cert_sha1_fp(c));
    printf("SHA-256:      %s\n", cert_sha256_fp(c));
    printf("key:          %s %u bits, public key SHA-256 %s\n",
           cert_key_type(c), cert_key_bits(c), cert_spki_sha256_fp(c));
    if (m->known == 1) {
        printf("token key:    matches\n");
    } else if (m->known == 0) {
        printf("token key:    DOES NOT MATCH (token key SHA-256 %s)\n",
               m->key_fp);
    } else {
        printf("token key:    not checked (%s)\n", m->why);
    }
    printf("size:         %zu bytes DER, %zu bytes PEM; Salesforce limit "
           "%d bytes (DER): %s\n",
           der_len, pem_len, CERT_SF_MAX_BYTES,
           within ? "within" : "OVER THE LIMIT");
    if (within && pem_len > CERT_SF_MAX_BYTES) {
        printf("              the PEM form is over %d bytes: upload the DER "
               "file\n",
               CERT_SF_MAX_BYTES);
    }
}

static int
show_json(const struct cert *c, const struct match_result *m)
{
    char nb[21], na[21];
    size_t der_len, pem_len;
    int64_t days;
    enum cert_state st;
    json_t *j;
    char *s;

    cert_der(c, &der_len);
    cert_pem(c, &pem_len);
    cert_time_iso(cert_not_before(c), nb);
    cert_time_iso(cert_not_after(c), na);
    st = cert_expiry_state(c, pj_time_now(), CERT_WARN_DAYS_DEFAULT,
                           CERT_CRITICAL_DAYS_DEFAULT, m->known != 0, &days);
    j = json_pack(
        "{s:s, s:s, s:s, s:s, s:b, s:s, s:s, s:I, s:s, s:I, s:I, s:s, s:s, "
        "s:s, s:s, s:I, s:s, s:I, s:I, s:I, s:b}",
        "source", cert_source(c), "format",
        cert_format_name(cert_source_format(c)), "subject", cert_subject(c),
        "issuer", cert_issuer(c), "self_signed", cert_self_issued(c), "serial",
        cert_serial_hex(c), "not_before", nb, "not_before_unix",
        (json_int_t)cert_not_before(c), "not_after", na, "not_after_unix",
        (json_int_t)cert_not_after(c), "days_left", (json_int_t)days, "state",
        cert_state_name(st), "sha1", cert_sha1_fp(c), "sha256",
        cert_sha256_fp(c), "key_type", cert_key_type(c), "key_bits",
        (json_int_t)cert_key_bits(c), "spki_sha256", cert_spki_sha256_fp(c),
        "size_der", (json_int_t)der_len, "size_pem", (json_int_t)pem_len,
        "salesforce_limit", (json_int_t)CERT_SF_MAX_BYTES, "within_limit",
        der_len <= CERT_SF_MAX_BYTES);
    if (j == NULL) {
        fprintf(stderr, "p11jwt cert show: building JSON failed\n");
        return CLI_FAIL;
    }
    if (m->known < 0) {
        json_object_set_new(j, "key_match", json_null());
        json_object_set_new(j, "key_match_note", json_string(m->why));
    } else {
        json_object_set_new(j, "key_match", json_boolean(m->known == 1));
        json_object_set_new(j, "token_key_spki_sha256", json_string(m->key_fp));
    }
    s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (s == NULL) {
        return CLI_FAIL;
    }
    printf("%s\n", s);
    free(s);
    return CLI_OK;
}

static int
run_show(void)
{
    struct pj_err err = {0};
    struct hsm_module *mod = NULL;
    struct hsm_key *key = NULL;
    struct cert *c = NULL;
    struct match_result m = {.known = -1};
    char *key_uri = NULL;
    const char *kuri = o.key;
    bool match = false;
    int ret = CLI_FAIL;

    if (o.cert == NULL && o.key == NULL) {
        return usage("give --cert URI|FILE, or --key URI to show the "
                     "certificate beside the key");
    }
    if (o.cert != NULL &&
        cert_load(o.cert, cli_global.module, NULL, &c, &err) != PJ_OK) {
        ret = fail(&err);
        goto out;
    }
    pj_strlcpy(m.why, "give --key URI to compare", sizeof(m.why));
    if (kuri == NULL && strncmp(o.cert, "pkcs11:", 7) == 0) {
        /* The key with the same token, label and id as the certificate. */
        if (cert_key_uri_for(o.cert, &key_uri, &err) != PJ_OK) {
            ret = fail(&err);
            goto out;
        }
        kuri = key_uri;
    }
    if (kuri != NULL) {
        struct pj_err kerr = {0};

        if (open_key(kuri, &mod, &key, &kerr) != PJ_OK) {
            if (o.key != NULL) { /* asked for explicitly: a failure */
                ret = fail(&kerr);
                goto out;
            }
            snprintf(m.why, sizeof(m.why), "%s", kerr.msg);
        } else if (c == NULL && cert_load_key(key, o.key, &c, &err) != PJ_OK) {
            ret = fail(&err);
            goto out;
        } else if (cert_matches_key(c, key, &match, m.key_fp, &kerr) != PJ_OK) {
            snprintf(m.why, sizeof(m.why), "%s", kerr.msg);
        } else {
            m.known = match ? 1 : 0;
        }
    }
    ret = o.json ? show_json(c, &m) : (show_text(c, &m), CLI_OK);
out:
    free(key_uri);
    cert_free(c);
    hsm_key_free(key);
    hsm_module_free(mod);
    return ret;
}

static const char *
opt_name(const struct option *opts, int val)
{
    for (; opts->name != NULL; opts++) {
        if (opts->val == val) {
            return opts->name;
        }
    }
    return "?";
}

static const struct sub subs[] = {
    {"self-signed",
     B(OPT_KEY) | B(OPT_SUBJECT) | B(OPT_DAYS) | B(OPT_OUT) | B(OPT_STORE) |
         B(OPT_FORCE) | B(OPT_REPLACE),
     run_self_signed},
    {"csr", B(OPT_KEY) | B(OPT_SUBJECT) | B(OPT_OUT) | B(OPT_REPLACE), run_csr},
    {"import", B(OPT_KEY) | B(OPT_IN) | B(OPT_FORCE) | B(OPT_REPLACE),
     run_import},
    {"show", B(OPT_CERT) | B(OPT_KEY) | B(OPT_JSON), run_show},
};

int
cli_cmd_cert(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_GLOBAL_LONGOPTS,
        {"key", required_argument, NULL, OPT_KEY},
        {"subject", required_argument, NULL, OPT_SUBJECT},
        {"days", required_argument, NULL, OPT_DAYS},
        {"out", required_argument, NULL, OPT_OUT},
        {"in", required_argument, NULL, OPT_IN},
        {"cert", required_argument, NULL, OPT_CERT},
        {"store", no_argument, NULL, OPT_STORE},
        {"force", no_argument, NULL, OPT_FORCE},
        {"replace", no_argument, NULL, OPT_REPLACE},
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    const struct sub *sub = NULL;
    size_t i;
    int opt;

    memset(&o, 0, sizeof(o));
    if (argc < 2) {
        help(stderr);
        return CLI_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        help(stdout);
        return CLI_OK;
    }
    for (i = 0; i < PJ_ARRAY_SIZE(subs); i++) {
        if (strcmp(argv[1], subs[i].name) == 0) {
            sub = &subs[i];
        }
    }
    if (sub == NULL) {
        return cli_usage("cert",
                         "unknown subcommand '%s' (self-signed, csr, "
                         "import, show)",
                         argv[1]);
    }
    o.sub = sub->name;
    argc--;
    argv++;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        if (cli_global_opt(opt, optarg)) {
            continue;
        }
        if (opt == 'h') {
            help(stdout);
            return CLI_OK;
        }
        if (opt < OPT_KEY || opt > OPT_JSON) {
            char cmd[64];
            snprintf(cmd, sizeof(cmd), "cert %s", sub->name);
            return cli_bad_option(cmd);
        }
        if (!(sub->allowed & B(opt))) {
            char msg[96];
            snprintf(msg, sizeof(msg), "option --%s does not apply to '%s'",
                     opt_name(longopts, opt), sub->name);
            return usage(msg);
        }
        switch (opt) {
        case OPT_KEY:
            o.key = optarg;
            break;
        case OPT_SUBJECT:
            o.subject = optarg;
            break;
        case OPT_DAYS:
            o.days = optarg;
            break;
        case OPT_OUT:
            o.out = optarg;
            break;
        case OPT_IN:
            o.in = optarg;
            break;
        case OPT_CERT:
            o.cert = optarg;
            break;
        case OPT_STORE:
            o.store = true;
            break;
        case OPT_FORCE:
            o.force = true;
            break;
        case OPT_REPLACE:
            o.replace = true;
            break;
        case OPT_JSON:
            o.json = true;
            break;
        default:
            break;
        }
    }
    if (optind < argc) {
        char msg[PJ_ERR_MSG_MAX];
        snprintf(msg, sizeof(msg), "unexpected argument '%s'", argv[optind]);
        return usage(msg);
    }
    return sub->run();
}
