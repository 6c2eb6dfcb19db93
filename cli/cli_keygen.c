/* SPDX-License-Identifier: Apache-2.0 */
/* p11jwt keygen: an RSA key pair generated ON a PKCS#11 token. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/pj_util.h"
#include "pkcs11/hsm.h"

static const char *const CMD = "keygen";

static void
keygen_usage(FILE *f)
{
    fprintf(f,
            "usage: p11jwt keygen --key URI [--bits 2048|3072|4096] "
            "[--module PATH] [--pin-source SRC]\n"
            "\n"
            "Generate an RSA key pair on the token named by URI: private key\n"
            "sensitive, private, never extractable and sign-only (no decrypt,\n"
            "unwrap or derive); public and private objects share CKA_LABEL\n"
            "and CKA_ID. Refuses when an object with that label exists.\n"
            "\n"
            "  --key URI         pkcs11:token=NAME;object=LABEL[;id=%%HEX..]"
            "[;type=private]\n"
            "  --bits N          2048 (default), 3072 or 4096\n"
            "  --module PATH     PKCS#11 module (else $P11JWT_MODULE, else "
            "%s)\n"
            "  --pin-source SRC  file:PATH (mode 0600), env:NAME or "
            "systemd:NAME;\n"
            "                    else the URI's pin-source. Never the PIN "
            "itself.\n"
            "\n"
            "Exit status: 0 ok, 1 failure, 2 usage error.\n",
            HSM_DEFAULT_MODULE);
}

static void
keygen_progress(void *arg, const char *msg)
{
    (void)arg;
    fprintf(stderr, "p11jwt keygen: %s\n", msg);
}

int
cli_cmd_keygen(int argc, char **argv)
{
    enum { OPT_KEY = CLI_OPT_FIRST_LOCAL, OPT_BITS };
    static const struct option longopts[] = {
        CLI_GLOBAL_LONGOPTS,
        {"key", required_argument, NULL, OPT_KEY},
        {"bits", required_argument, NULL, OPT_BITS},
        {NULL, 0, NULL, 0},
    };
    struct hsm_keygen_opts opts = {0};
    struct hsm_module *mod = NULL;
    struct hsm_key_info info;
    struct pj_err err = {0};
    char hex[2 * sizeof(info.id) + 1];
    const char *path;
    long bits = 2048;
    int opt, ret;

    while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        if (cli_global_opt(opt, optarg)) {
            continue;
        }
        switch (opt) {
        case 'h':
            keygen_usage(stdout);
            return CLI_OK;
        case OPT_KEY:
            opts.uri = optarg;
            break;
        case OPT_BITS:
            if (pj_parse_long(optarg, 0, 65536, &bits) != PJ_OK ||
                (bits != 2048 && bits != 3072 && bits != 4096)) {
                return cli_usage(CMD, "--bits must be 2048, 3072 or 4096");
            }
            break;
        default:
            return cli_bad_option(CMD);
        }
    }
    if (optind < argc) {
        return cli_usage(CMD, "unexpected argument '%s'", argv[optind]);
    }
    if (opts.uri == NULL) {
        return cli_usage(CMD, "--key URI is required");
    }
    opts.bits = (unsigned)bits;
    opts.pin_source = cli_global.pin_source;
    opts.progress = keygen_progress;

    path = hsm_module_path_resolve(cli_global.module);
    if (hsm_module_load(path, &mod, &err) != PJ_OK ||
        hsm_keygen(mod, &opts, &info, &err) != PJ_OK) {
        ret = cli_fail(CMD, &err);
        goto out;
    }
    pj_hex(info.id, info.id_len, hex);
    printf("generated RSA-%lu key on token '%s' (serial %s)\n", info.bits,
           info.token_label, info.token_serial);
    printf("  label: %s\n", info.label);
    printf("  id:    %s\n", hex);
    printf("  bits:  %lu\n", info.bits);
    printf("  flags: %s%s%s%s%s%s%s\n",
           info.sensitive ? "sensitive" : "NOT-sensitive",
           info.always_sensitive ? ", always-sensitive" : "",
           info.extractable ? ", EXTRACTABLE" : ", not-extractable",
           info.never_extractable ? ", never-extractable" : "",
           info.local ? ", local" : "", info.can_sign ? ", sign" : "",
           info.can_decrypt || info.can_unwrap ? ", DECRYPT/UNWRAP"
                                               : ", no-decrypt, no-unwrap");
    if (info.tpm) {
        const char *why;
        bool bound = hsm_key_info_bound(&info, &why);
        /*
         * On a TPM the PKCS#11 flags above are not evidence (tpm2-pkcs11
         * lets anyone change them); the TPM public area is.
         */
        if (info.tpm_area) {
            printf("  tpm:   %s%s%s (TPMA_OBJECT 0x%08" PRIx32 ")\n",
                   info.tpm_fixed_tpm ? "fixedTPM" : "NOT-fixedTPM",
                   info.tpm_fixed_parent ? ", fixedParent"
                                         : ", NOT-fixedParent",
                   info.tpm_sensitive_data_origin ? ", sensitiveDataOrigin"
                                                  : ", NOT-sensitiveDataOrigin",
                   info.tpm_object_attributes);
        }
        printf("  bound: %s: %s\n", bound ? "yes" : "NO", why);
    }
    ret = CLI_OK;
out:
    hsm_module_free(mod);
    return ret;
}
