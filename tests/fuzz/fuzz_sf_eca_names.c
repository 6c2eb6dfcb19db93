/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Target functions: sf_eca_xml_escape, sf_eca_api_name_check,
 * sf_eca_text_check, sf_eca_email_check, sf_eca_callback_check and, when
 * they all pass, sf_eca_build. Invariants: escaped text never holds a raw
 * markup character and every '&' starts an entity; an accepted API name
 * obeys the rules as restated here; a build from accepted inputs succeeds.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "salesforce/sf_eca.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_escaped(const char *out)
{
    static const char *const ents[] = {"&amp;",  "&lt;",   "&gt;",
                                       "&quot;", "&apos;", "&#13;"};
    const char *p;

    if (strpbrk(out, "<>\"'\r") != NULL) {
        abort();
    }
    for (p = strchr(out, '&'); p != NULL; p = strchr(p + 1, '&')) {
        size_t i;
        for (i = 0; i < sizeof(ents) / sizeof(ents[0]); i++) {
            if (strncmp(p, ents[i], strlen(ents[i])) == 0) {
                break;
            }
        }
        if (i == sizeof(ents) / sizeof(ents[0])) {
            abort();
        }
    }
}

static void
check_name_rules(const char *s)
{
    size_t len = strlen(s), i;

    if (len == 0 || len > 40 || !isalpha((unsigned char)s[0]) ||
        s[len - 1] == '_' || strstr(s, "__") != NULL) {
        abort();
    }
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x80 || (!isalnum(ch) && ch != '_')) {
            abort();
        }
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s, *out = NULL, *fields[4] = {0};
    struct sf_eca_opts o = {0};
    struct sf_eca_files files = {0};
    size_t i, n = 0;
    char *p;

    if (size > 4096 || (s = malloc(size + 1)) == NULL) {
        return 0;
    }
    memcpy(s, data, size);
    s[size] = '\0'; /* text stops at an embedded NUL, as argv would */

    if (sf_eca_xml_escape(s, &out, NULL) == PJ_OK) {
        check_escaped(out);
    }
    free(out);
    if (sf_eca_api_name_check(s, 40, "--name", NULL) == PJ_OK) {
        check_name_rules(s);
    }
    /* Only that they return; results are not needed. */
    if (sf_eca_email_check(s, NULL) == PJ_OK && strchr(s, '@') == NULL) {
        abort();
    }
    if (sf_eca_callback_check(s, NULL) == PJ_OK &&
        strncmp(s, "https://", 8) != 0) {
        abort();
    }
    if (sf_eca_api_version_check(s, NULL, NULL) == PJ_OK && strlen(s) != 4) {
        abort();
    }

    /* Fields split at '\n': name, label, e-mail, profile name. */
    for (p = s; n < 4; n++) {
        fields[n] = p;
        if ((p = strchr(p, '\n')) == NULL) {
            n++;
            break;
        }
        *p++ = '\0';
    }
    o.name = fields[0];
    o.label = n > 1 ? fields[1] : NULL;
    o.contact_email = n > 2 ? fields[2] : "a@example.com";
    o.profile_name = n > 3 ? fields[3] : NULL;
    o.cert_text =
        "-----BEGIN CERTIFICATE-----\nQQ==\n-----END CERTIFICATE-----";
    if (sf_eca_opts_check(&o, NULL) == PJ_OK) {
        if (sf_eca_build(&o, &files, NULL) != PJ_OK || files.n < 7) {
            abort();
        }
        for (i = 0; i < files.n; i++) {
            if (strlen(files.v[i].data) != files.v[i].len) {
                abort();
            }
        }
    }
    sf_eca_files_free(&files);
    free(s);
    return 0;
}
