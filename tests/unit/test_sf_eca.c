/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ECA metadata (salesforce/sf_eca.h): the XML escaper, the name, e-mail,
 * version and URL rules, the file set built in memory, and --out handling.
 * Schema validation of the built files is in tests/integration/test_eca.sh.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "salesforce/sf_eca.h"

static void
escape_ok(const char *in, const char *want)
{
    struct pj_err err = {0};
    char *out = NULL;

    assert_int_equal(sf_eca_xml_escape(in, &out, &err), PJ_OK);
    assert_string_equal(out, want);
    free(out);
}

static void
escape_bad(const char *in, const char *msg_part)
{
    struct pj_err err = {0};
    char *out = (char *)1;

    assert_int_equal(sf_eca_xml_escape(in, &out, &err), PJ_ERR_INVALID);
    assert_null(out);
    assert_non_null(strstr(err.msg, msg_part));
}

static void
test_escape(void **state)
{
    (void)state;
    escape_ok("", "");
    escape_ok("plain text 123", "plain text 123");
    escape_ok("&", "&amp;");
    escape_ok("<a href=\"x\">'y'</a>",
              "&lt;a href=&quot;x&quot;&gt;&apos;y&apos;&lt;/a&gt;");
    escape_ok("&amp;", "&amp;amp;"); /* no double-unescaping */
    escape_ok("]]>", "]]&gt;");
    escape_ok("a\r\nb\tc", "a&#13;\nb\tc");
    escape_ok("\xc3\x9cn\xc3\xaf \xe2\x82\xac \xf0\x9f\x94\x91",
              "\xc3\x9cn\xc3\xaf \xe2\x82\xac \xf0\x9f\x94\x91");
    escape_ok("\xef\xbf\xbd", "\xef\xbf\xbd"); /* U+FFFD is fine */
}

static void
test_escape_refuses(void **state)
{
    (void)state;
    escape_bad("a\x01z", "U+0001");
    escape_bad("\x1b[0m", "U+001B");
}

static void
test_escape_utf8(void **state)
{
    struct pj_err err = {0};
    char *out = NULL;

    (void)state;
    /* DEL is a legal XML character; the escaper passes it through. */
    assert_int_equal(sf_eca_xml_escape("\x7f", &out, &err), PJ_OK);
    free(out);
    escape_bad("\xff", "not valid UTF-8");
    escape_bad("ab\x80", "byte 3");
    escape_bad("\xc0\xaf", "not valid UTF-8");         /* overlong '/' */
    escape_bad("\xe0\x80\xaf", "not valid UTF-8");     /* overlong */
    escape_bad("\xed\xa0\x80", "not valid UTF-8");     /* surrogate */
    escape_bad("\xf4\x90\x80\x80", "not valid UTF-8"); /* > U+10FFFF */
    escape_bad("\xc3", "not valid UTF-8");             /* truncated */
    escape_bad("\xe2\x82", "not valid UTF-8");         /* truncated */
    escape_bad("\xef\xbf\xbe", "U+FFFE");
    escape_bad("\xef\xbf\xbf", "U+FFFF");
}

static void
name_bad(const char *name, const char *msg_part)
{
    struct pj_err err = {0};

    assert_int_equal(sf_eca_api_name_check(name, 30, "--name", &err),
                     PJ_ERR_INVALID);
    if (strstr(err.msg, msg_part) == NULL) {
        fail_msg("'%s': '%s' lacks '%s'", name, err.msg, msg_part);
    }
}

static void
test_api_names(void **state)
{
    struct pj_err err = {0};

    (void)state;
    assert_int_equal(sf_eca_api_name_check("HsmJwtAgent", 30, "--name", &err),
                     PJ_OK);
    assert_int_equal(sf_eca_api_name_check("a", 30, "--name", &err), PJ_OK);
    assert_int_equal(sf_eca_api_name_check("A_b_1_2", 30, "--name", &err),
                     PJ_OK);
    assert_int_equal(sf_eca_api_name_check("AAAAAAAAAABBBBBBBBBBCCCCCCCCCC", 30,
                                           "--name", &err),
                     PJ_OK);
    name_bad("", "empty");
    name_bad(NULL, "empty");
    name_bad("AAAAAAAAAABBBBBBBBBBCCCCCCCCCCD", "31 characters");
    name_bad("1abc", "must start with a letter");
    name_bad("_abc", "must start with a letter");
    name_bad("\xc3\x84pp", "must start with a letter");
    name_bad("ab-c", "contains '-'");
    name_bad("ab.c", "contains '.'");
    name_bad("ab<c", "contains '<'");
    name_bad("ab c", "space or a non-ASCII character (byte 0x20");
    name_bad("ab\xc3\xa9", "byte 0xc3 at position 3");
    name_bad("a__b", "two consecutive underscores");
    name_bad("a___", "two consecutive underscores");
    name_bad("ab_", "must not end with an underscore");
    /* The message names the option. */
    name_bad("ab_", "--name 'ab_'");
}

static void
test_email(void **state)
{
    static const char *const good[] = {
        "ops@example.com",    "o'neil&co@example.com", "a.b+c@sub.example.org",
        "x@xn--bcher-kva.ch", "A_B@EXAMPLE.COM",
    };
    static const char *const bad[] = {
        "",
        "nobody",
        "a@b",
        "@example.com",
        "a@",
        "a@@example.com",
        "a@b@example.com",
        ".a@example.com",
        "a.@example.com",
        "a..b@example.com",
        "a b@example.com",
        "a@-x.com",
        "a@x-.com",
        "a@x..com",
        "a@example.123",
        "a@exa_mple.com",
        "a(b)@example.com",
        "a@example.com.",
    };
    struct pj_err err = {0};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        pj_err_clear(&err);
        if (sf_eca_email_check(good[i], &err) != PJ_OK) {
            fail_msg("'%s' refused: %s", good[i], err.msg);
        }
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pj_err_clear(&err);
        if (sf_eca_email_check(bad[i], &err) != PJ_ERR_INVALID) {
            fail_msg("'%s' accepted", bad[i]);
        }
    }
    assert_int_equal(sf_eca_email_check(NULL, &err), PJ_ERR_INVALID);
}

static void
test_api_version(void **state)
{
    static const char *const bad[] = {"66", "66.1", "v66.0", "66.00", "6.0",
                                      "",   "66.",  "a6.0",  "100.0"};
    struct pj_err err = {0};
    long major = 0;
    size_t i;

    (void)state;
    assert_int_equal(sf_eca_api_version_check("66.0", &major, &err), PJ_OK);
    assert_int_equal(major, 66);
    assert_int_equal(sf_eca_api_version_check("61.0", &major, &err), PJ_OK);
    assert_int_equal(sf_eca_api_version_check("99.0", NULL, &err), PJ_OK);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pj_err_clear(&err);
        assert_int_equal(sf_eca_api_version_check(bad[i], &major, &err),
                         PJ_ERR_INVALID);
        assert_non_null(strstr(err.msg, "NN.0"));
        assert_int_equal(major, 0);
    }
    pj_err_clear(&err);
    assert_int_equal(sf_eca_api_version_check("60.0", &major, &err),
                     PJ_ERR_INVALID);
    assert_non_null(strstr(err.msg, "too old"));
}

static void
test_callback(void **state)
{
    struct pj_err err = {0};

    (void)state;
    assert_int_equal(sf_eca_callback_check(SF_ECA_CALLBACK_DEFAULT, &err),
                     PJ_OK);
    assert_int_equal(
        sf_eca_callback_check("https://a.example.com:8443/cb?x=1&y=2", &err),
        PJ_OK);
    assert_int_equal(
        sf_eca_callback_check("http://localhost:1717/OauthRedirect", &err),
        PJ_ERR_INVALID);
    assert_non_null(strstr(err.msg, "must use https://"));
    pj_err_clear(&err);
    assert_int_equal(sf_eca_callback_check("HTTP://x.example.com/", &err),
                     PJ_ERR_INVALID);
    assert_int_equal(sf_eca_callback_check("myapp://cb", NULL), PJ_ERR_INVALID);
    assert_int_equal(sf_eca_callback_check("https:///cb", NULL),
                     PJ_ERR_INVALID);
    assert_int_equal(sf_eca_callback_check("https://a b/", NULL),
                     PJ_ERR_INVALID);
    assert_int_equal(sf_eca_callback_check("https://x.com/a b", NULL),
                     PJ_ERR_INVALID);
    assert_int_equal(sf_eca_callback_check("https://u@x.com/", NULL),
                     PJ_ERR_INVALID);
    assert_int_equal(sf_eca_callback_check("https://x.com/\xc3\xa9", NULL),
                     PJ_ERR_INVALID);
    assert_int_equal(sf_eca_callback_check("", NULL), PJ_ERR_INVALID);
}

static void
test_text(void **state)
{
    struct pj_err err = {0};
    char long81[82];

    (void)state;
    assert_int_equal(sf_eca_text_check("System Administrator", 255, true,
                                       "--profile-name", &err),
                     PJ_OK);
    /* 80 characters of two bytes each: counted as characters. */
    {
        char s[161];
        for (int i = 0; i < 80; i++) {
            s[2 * i] = '\xc3';
            s[2 * i + 1] = '\xa9';
        }
        s[160] = '\0';
        assert_int_equal(sf_eca_text_check(s, 80, false, "--label", &err),
                         PJ_OK);
    }
    memset(long81, 'x', 81);
    long81[81] = '\0';
    assert_int_equal(sf_eca_text_check(long81, 80, false, "--label", &err),
                     PJ_ERR_INVALID);
    assert_non_null(strstr(err.msg, "at most 80"));
    pj_err_clear(&err);
    assert_int_equal(sf_eca_text_check("a,b", 80, true, "--profile-name", &err),
                     PJ_ERR_INVALID);
    assert_non_null(strstr(err.msg, "comma"));
    assert_int_equal(sf_eca_text_check("a,b", 80, false, "--label", NULL),
                     PJ_OK);
    assert_int_equal(sf_eca_text_check("a\nb", 80, false, "--label", NULL),
                     PJ_ERR_INVALID);
    assert_int_equal(sf_eca_text_check("a\xc2\x85"
                                       "b",
                                       80, false, "--label", NULL),
                     PJ_ERR_INVALID); /* C1 control U+0085 */
    assert_int_equal(sf_eca_text_check(" a", 80, false, "--label", NULL),
                     PJ_ERR_INVALID);
    assert_int_equal(sf_eca_text_check("a ", 80, false, "--label", NULL),
                     PJ_ERR_INVALID);
    assert_int_equal(sf_eca_text_check("", 80, false, "--label", NULL),
                     PJ_ERR_INVALID);
    assert_int_equal(sf_eca_text_check("\xff", 80, false, "--label", NULL),
                     PJ_ERR_INVALID);
}

static const struct sf_eca_opts base = {
    .name = "HsmJwtAgent",
    .contact_email = "ops@example.com",
    .cert_text = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
};

static const struct sf_eca_file *
find(const struct sf_eca_files *f, const char *path)
{
    for (size_t i = 0; i < f->n; i++) {
        if (strcmp(f->v[i].path, path) == 0) {
            return &f->v[i];
        }
    }
    return NULL;
}

#define D "force-app/main/default/"
#define GLBL                                                                   \
    D "extlClntAppGlobalOauthSets/HsmJwtAgent_glbloauth.ecaGlblOauth-meta.xml"
#define PLCY                                                                   \
    D "extlClntAppOauthPolicies/HsmJwtAgent_oauthPlcy.ecaOauthPlcy-meta.xml"

static void
test_build(void **state)
{
    struct sf_eca_opts o = base;
    struct sf_eca_files f = {0};
    struct pj_err err = {0};
    const struct sf_eca_file *g, *p;
    size_t i;

    (void)state;
    o.permission_set = "HsmJwtAgent_Access";
    o.label = "R&D <JWT>";
    assert_int_equal(sf_eca_build(&o, &f, &err), PJ_OK);
    assert_int_equal(f.n, 8);
    assert_non_null(find(&f, "sfdx-project.json"));
    assert_non_null(find(&f, "manifest/package.xml"));
    assert_non_null(find(&f, "README.md"));
    assert_non_null(find(&f, D "externalClientApps/HsmJwtAgent.eca-meta.xml"));
    assert_non_null(find(
        &f, D "extlClntAppOauthSettings/HsmJwtAgent_oauth.ecaOauth-meta.xml"));
    assert_non_null(
        find(&f, D "permissionsets/HsmJwtAgent_Access.permissionset-meta.xml"));
    g = find(&f, GLBL);
    p = find(&f, PLCY);
    assert_non_null(g);
    assert_non_null(p);
    assert_non_null(strstr(g->data, "<certificate>-----BEGIN CERTIFICATE-----\n"
                                    "MIIB\n-----END CERTIFICATE-----"
                                    "</certificate>"));
    assert_non_null(strstr(g->data, "<callbackUrl>" SF_ECA_CALLBACK_DEFAULT));
    assert_non_null(strstr(p->data, "<commaSeparatedPermissionSet>"
                                    "HsmJwtAgent_Access<"));
    assert_non_null(strstr(p->data, ">AdminApprovedPreAuthorized<"));
    assert_non_null(
        strstr(find(&f, D "externalClientApps/HsmJwtAgent.eca-meta.xml")->data,
               "<label>R&amp;D &lt;JWT&gt;</label>"));
    for (i = 0; i < f.n; i++) {
        assert_int_equal(strlen(f.v[i].data), f.v[i].len);
        assert_null(strstr(f.v[i].data, "<consumerKey"));
        assert_null(strstr(f.v[i].data, "<consumerSecret"));
        assert_null(strstr(f.v[i].data, "<oauthLink"));
        assert_null(strstr(f.v[i].data, ">true</shouldRotate"));
    }
    sf_eca_files_free(&f);

    /* A profile instead: no permission set file, commaSeparatedProfile. */
    o = base;
    o.profile_name = "System Administrator";
    o.callback_url = "https://x.example.com/cb?a=1&b=2";
    o.api_version = "62.0";
    assert_int_equal(sf_eca_build(&o, &f, &err), PJ_OK);
    assert_int_equal(f.n, 7);
    assert_non_null(strstr(find(&f, PLCY)->data,
                           "<commaSeparatedProfile>System Administrator<"));
    assert_null(strstr(find(&f, PLCY)->data, "commaSeparatedPermissionSet"));
    assert_non_null(
        strstr(find(&f, GLBL)->data,
               "<callbackUrl>https://x.example.com/cb?a=1&amp;b=2<"));
    assert_non_null(strstr(find(&f, "manifest/package.xml")->data,
                           "<version>62.0</version>"));
    assert_non_null(strstr(find(&f, "sfdx-project.json")->data,
                           "\"sourceApiVersion\": \"62.0\""));
    sf_eca_files_free(&f);
    assert_int_equal(f.n, 0);
}

static void
test_build_refuses(void **state)
{
    struct sf_eca_opts o = base;
    struct sf_eca_files f = {0};
    struct pj_err err = {0};

    (void)state;
    o.permission_set = "P";
    o.profile_name = "Q";
    assert_int_equal(sf_eca_build(&o, &f, &err), PJ_ERR_INVALID);
    assert_non_null(strstr(err.msg, "not both"));
    assert_int_equal(f.n, 0);
    assert_null(f.v);

    o = base;
    o.profile_name = "Q";
    o.api_version = "61.0";
    pj_err_clear(&err);
    assert_int_equal(sf_eca_build(&o, &f, &err), PJ_ERR_INVALID);
    assert_non_null(strstr(err.msg, "62.0"));

    o = base;
    o.cert_text = NULL;
    pj_err_clear(&err);
    assert_int_equal(sf_eca_build(&o, &f, &err), PJ_ERR_INVALID);
    assert_non_null(strstr(err.msg, "certificate"));

    o = base;
    o.name = "My__App";
    pj_err_clear(&err);
    assert_int_equal(sf_eca_build(&o, &f, &err), PJ_ERR_INVALID);

    o = base;
    o.permission_set = "ps_";
    pj_err_clear(&err);
    assert_int_equal(sf_eca_build(&o, &f, &err), PJ_ERR_INVALID);
    assert_non_null(strstr(err.msg, "--permission-set"));
}

static void
test_component_names(void **state)
{
    char out[SF_ECA_API_NAME_MAX + 1];

    (void)state;
    sf_eca_component_name("AAAAAAAAAABBBBBBBBBBCCCCCCCCCC", SF_ECA_GLOBAL_OAUTH,
                          out);
    assert_string_equal(out, "AAAAAAAAAABBBBBBBBBBCCCCCCCCCC_glbloauth");
    assert_int_equal(strlen(out), SF_ECA_API_NAME_MAX);
    sf_eca_component_name("X", SF_ECA_OAUTH, out);
    assert_string_equal(out, "X_oauth");
    sf_eca_component_name("X", SF_ECA_OAUTH_POLICIES, out);
    assert_string_equal(out, "X_oauthPlcy");
}

static void
test_cert_text(void **state)
{
    static const uint8_t der[] = {'a', 'b', 'c', 'd'};
    struct pj_err err = {0};
    char *t = NULL;
    enum sf_eca_cert_encoding enc;

    (void)state;
    assert_int_equal(sf_eca_cert_text(der, sizeof(der), NULL,
                                      SF_ECA_CERT_BASE64_DER, &t, &err),
                     PJ_OK);
    assert_string_equal(t, "YWJjZA==");
    free(t);
    assert_int_equal(sf_eca_cert_text(der, sizeof(der),
                                      "-----BEGIN CERTIFICATE-----\nQQ==\n"
                                      "-----END CERTIFICATE-----\n\n",
                                      SF_ECA_CERT_PEM, &t, &err),
                     PJ_OK);
    assert_string_equal(t, "-----BEGIN CERTIFICATE-----\nQQ==\n"
                           "-----END CERTIFICATE-----");
    free(t);
    assert_int_equal(sf_eca_cert_text(der, sizeof(der), "garbage",
                                      SF_ECA_CERT_PEM, &t, &err),
                     PJ_ERR_INTERNAL);
    assert_null(t);
    assert_true(sf_eca_cert_encoding_parse("pem", &enc));
    assert_int_equal(enc, SF_ECA_CERT_PEM);
    assert_true(sf_eca_cert_encoding_parse("base64-der", &enc));
    assert_int_equal(enc, SF_ECA_CERT_BASE64_DER);
    assert_false(sf_eca_cert_encoding_parse("der", &enc));
}

static int written_count;

static void
count_written(void *ctx, const char *path)
{
    (void)ctx;
    (void)path;
    written_count++;
}

static void
test_write(void **state)
{
    char tmpl[] = "/tmp/test_sf_eca.XXXXXX", path[512], buf[64];
    struct sf_eca_files f = {0};
    struct pj_err err = {0};
    const char *dir;
    FILE *fp;

    (void)state;
    dir = mkdtemp(tmpl);
    assert_non_null(dir);
    assert_int_equal(sf_eca_build(&base, &f, &err), PJ_OK);

    /* Empty dir: fine; then not empty: refused without force. */
    written_count = 0;
    assert_int_equal(sf_eca_write(&f, dir, false, count_written, NULL, &err),
                     PJ_OK);
    assert_int_equal(written_count, (int)f.n);
    snprintf(path, sizeof(path), "%s/" GLBL, dir);
    assert_int_equal(access(path, R_OK), 0);
    assert_int_equal(sf_eca_out_check(dir, false, &err), PJ_ERR_EXISTS);
    assert_non_null(strstr(err.msg, "--force"));
    pj_err_clear(&err);
    assert_int_equal(sf_eca_write(&f, dir, false, NULL, NULL, &err),
                     PJ_ERR_EXISTS);

    /* With force, a foreign file stays; ours are rewritten. */
    snprintf(path, sizeof(path), "%s/mine.txt", dir);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("keep", fp);
    fclose(fp);
    snprintf(path, sizeof(path), "%s/README.md", dir);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("stale", fp);
    fclose(fp);
    pj_err_clear(&err);
    assert_int_equal(sf_eca_write(&f, dir, true, NULL, NULL, &err), PJ_OK);
    fp = fopen(path, "r");
    assert_non_null(fp);
    assert_non_null(fgets(buf, sizeof(buf), fp));
    fclose(fp);
    assert_non_null(strstr(buf, "# External Client App HsmJwtAgent"));
    snprintf(path, sizeof(path), "%s/mine.txt", dir);
    assert_int_equal(access(path, R_OK), 0);

    /* A file where --out should be. */
    pj_err_clear(&err);
    assert_int_equal(sf_eca_out_check(path, true, &err), PJ_ERR_EXISTS);
    assert_non_null(strstr(err.msg, "not a directory"));
    /* An absent dir (with absent parents) is created. */
    snprintf(path, sizeof(path), "%s/a/b", dir);
    pj_err_clear(&err);
    assert_int_equal(sf_eca_write(&f, path, false, NULL, NULL, &err), PJ_OK);

    sf_eca_files_free(&f);
    snprintf(path, sizeof(path), "rm -rf '%s'", dir);
    assert_int_equal(system(path), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_escape_refuses),
        cmocka_unit_test(test_escape_utf8),
        cmocka_unit_test(test_api_names),
        cmocka_unit_test(test_email),
        cmocka_unit_test(test_api_version),
        cmocka_unit_test(test_callback),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_build),
        cmocka_unit_test(test_build_refuses),
        cmocka_unit_test(test_component_names),
        cmocka_unit_test(test_cert_text),
        cmocka_unit_test(test_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
