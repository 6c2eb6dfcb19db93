/* SPDX-License-Identifier: Apache-2.0 */
/*
 * p11jwt sign: RS256 over some bytes on the token, for diagnosis (does the
 * key sign, does the signature verify with the certificate's key?).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/pj_util.h"
#include "pkcs11/hsm.h"

static const char *const CMD = "sign";

#define SIGN_INPUT_MAX_BYTES (16 * 1024 * 1024)

static void
sign_usage(FILE *f)
{
    fprintf(
        f,
        "usage: p11jwt sign --key URI [--in FILE|-] [--out FILE|-] "
        "[--base64url]\n"
        "                   [--module PATH] [--pin-source SRC]\n"
        "\n"
        "Sign the input with RS256 (RSASSA-PKCS1-v1_5, SHA-256) on the "
        "token\nand write the raw signature (or base64url with "
        "--base64url).\n"
        "\n"
        "  --key URI         pkcs11:token=NAME;object=LABEL[;type=private]\n"
        "  --in FILE         input (default '-', standard input; at most "
        "16 MiB)\n"
        "  --out FILE        output (default '-', standard output)\n"
        "  --base64url       write base64url without padding, then a "
        "newline\n"
        "  --module PATH     PKCS#11 module (else $P11JWT_MODULE, else "
        "%s)\n"
        "  --pin-source SRC  file:PATH (mode 0600), env:NAME or "
        "systemd:NAME;\n"
        "                    else the URI's pin-source\n"
        "\n"
        "Exit status: 0 ok, 1 failure, 2 usage error.\n",
        HSM_DEFAULT_MODULE);
}

static pj_rc
read_stdin(uint8_t **outp, size_t *lenp, struct pj_err *err)
{
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap), *nb;
    ssize_t r;

    if (buf == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
    }
    for (;;) {
        if (len == cap) {
            if (cap >= SIGN_INPUT_MAX_BYTES) {
                free(buf);
                return pj_err_set(err, PJ_ERR_LIMIT,
                                  "standard input is larger than %d bytes",
                                  SIGN_INPUT_MAX_BYTES);
            }
            if ((nb = realloc(buf, cap * 2)) == NULL) {
                free(buf);
                return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
            }
            buf = nb;
            cap *= 2;
        }
        r = read(STDIN_FILENO, buf + len, cap - len);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            free(buf);
            return pj_err_sys(err, "read standard input");
        }
        if (r == 0) {
            break;
        }
        len += (size_t)r;
    }
    *outp = buf;
    *lenp = len;
    return PJ_OK;
}

static pj_rc
write_all(int fd, const void *data, size_t len, struct pj_err *err)
{
    const uint8_t *p = data;
    ssize_t w;

    while (len > 0) {
        w = write(fd, p, len);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0) {
            return pj_err_sys(err, "write standard output");
        }
        p += w;
        len -= (size_t)w;
    }
    return PJ_OK;
}

int
cli_cmd_sign(int argc, char **argv)
{
    enum { OPT_KEY = CLI_OPT_FIRST_LOCAL, OPT_IN, OPT_OUT, OPT_B64 };
    static const struct option longopts[] = {
        CLI_GLOBAL_LONGOPTS,
        {"key", required_argument, NULL, OPT_KEY},
        {"in", required_argument, NULL, OPT_IN},
        {"out", required_argument, NULL, OPT_OUT},
        {"base64url", no_argument, NULL, OPT_B64},
        {NULL, 0, NULL, 0},
    };
    struct hsm_key_opts kopts = {0};
    struct hsm_module *mod = NULL;
    struct hsm_key *key = NULL;
    struct pj_err err = {0};
    const char *in = "-", *out = "-";
    uint8_t *data = NULL, sig[HSM_SIG_MAX];
    size_t len = 0, siglen = sizeof(sig);
    char *b64 = NULL;
    bool base64url = false;
    int opt, ret = CLI_FAIL;
    pj_rc rc;

    while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        if (cli_global_opt(opt, optarg)) {
            continue;
        }
        switch (opt) {
        case 'h':
            sign_usage(stdout);
            return CLI_OK;
        case OPT_KEY:
            kopts.uri = optarg;
            break;
        case OPT_IN:
            in = optarg;
            break;
        case OPT_OUT:
            out = optarg;
            break;
        case OPT_B64:
            base64url = true;
            break;
        default:
            return cli_bad_option(CMD);
        }
    }
    if (optind < argc) {
        return cli_usage(CMD, "unexpected argument '%s'", argv[optind]);
    }
    if (kopts.uri == NULL) {
        return cli_usage(CMD, "--key URI is required");
    }
    if (in[0] == '\0' || out[0] == '\0') {
        return cli_usage(CMD, "--in and --out need a file name or '-'");
    }
    kopts.pin_source = cli_global.pin_source;
    kopts.sessions = 1;

    /* Read the input first: a bad file should not cost a token login. */
    rc = strcmp(in, "-") == 0
             ? read_stdin(&data, &len, &err)
             : pj_file_read(in, SIGN_INPUT_MAX_BYTES, &data, &len, &err);
    if (rc != PJ_OK) {
        ret = cli_fail(CMD, &err);
        goto out;
    }
    if (hsm_module_load(hsm_module_path_resolve(cli_global.module), &mod,
                        &err) != PJ_OK ||
        hsm_key_open(mod, &kopts, &key, &err) != PJ_OK ||
        hsm_key_sign(key, data, len, sig, &siglen, &err) != PJ_OK) {
        ret = cli_fail(CMD, &err);
        goto out;
    }
    if (base64url) {
        size_t blen;
        if (pj_b64url_encode(sig, siglen, &b64) != PJ_OK) {
            pj_err_set(&err, PJ_ERR_NOMEM, "out of memory");
            ret = cli_fail(CMD, &err);
            goto out;
        }
        blen = strlen(b64);
        b64[blen] = '\n'; /* replaces the NUL; written with its length */
        rc = strcmp(out, "-") == 0
                 ? write_all(STDOUT_FILENO, b64, blen + 1, &err)
                 : pj_file_write_atomic(out, b64, blen + 1, 0644, &err);
        b64[blen] = '\0';
    } else {
        rc = strcmp(out, "-") == 0
                 ? write_all(STDOUT_FILENO, sig, siglen, &err)
                 : pj_file_write_atomic(out, sig, siglen, 0644, &err);
    }
    ret = rc == PJ_OK ? CLI_OK : cli_fail(CMD, &err);
out:
    free(b64);
    free(data);
    hsm_key_free(key);
    hsm_module_free(mod);
    return ret;
}
