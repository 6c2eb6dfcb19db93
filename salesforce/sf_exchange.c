/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The token exchange: request building, the libcurl transfer (usable from
 * an easy or a multi handle), and response parsing.
 */
#include "salesforce/sf.h"

#include <ctype.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "core/pj_util.h"

#define SF_TOKEN_MAX 8192 /* an access token is ~112 bytes (opaque) */
#define SF_FIELD_MAX 2048

/* ---- request -------------------------------------------------------- */

pj_rc
sf_request_build(const struct pj_profile *prof,
                 const struct pj_secret *assertion, struct sf_request **reqp,
                 struct pj_err *err)
{
    static const char grant[] =
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
        "&assertion=";
    struct sf_request *req = NULL;
    char *esc = NULL;
    size_t ulen, elen;
    pj_rc rc;

    *reqp = NULL;
    if (assertion == NULL || assertion->len == 0 ||
        assertion->len > (size_t)1 << 20) {
        return pj_err_set(err, PJ_ERR_INVALID, "no assertion to exchange");
    }
    if ((req = calloc(1, sizeof(*req))) == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
    }
    ulen = strlen(prof->login_url) + sizeof(SF_TOKEN_PATH);
    if ((req->url = malloc(ulen)) == NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
        goto out;
    }
    (void)snprintf(req->url, ulen, "%s%s", prof->login_url, SF_TOKEN_PATH);
    /* The assertion is base64url and '.', which need no escaping; escape
     * anyway so the body is right whatever it holds. */
    esc = curl_easy_escape(NULL, (const char *)assertion->data,
                           (int)assertion->len);
    if (esc == NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "cannot form-encode the assertion");
        goto out;
    }
    elen = strlen(esc);
    if ((req->body = pj_secret_new(sizeof(grant) - 1 + elen)) == NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
        goto out;
    }
    memcpy(req->body->data, grant, sizeof(grant) - 1);
    memcpy(req->body->data + sizeof(grant) - 1, esc, elen);
    req->body->len = sizeof(grant) - 1 + elen;
    req->body->data[req->body->len] = '\0';
    if (prof->ca_file != NULL &&
        (req->ca_file = strdup(prof->ca_file)) == NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
        goto out;
    }
    req->connect_timeout_ms = prof->connect_timeout * 1000;
    req->timeout_ms = prof->timeout * 1000;
    req->max_response = SF_RESPONSE_MAX_BYTES;
    *reqp = req;
    req = NULL;
    rc = PJ_OK;
out:
    if (esc != NULL) {
        OPENSSL_cleanse(esc, strlen(esc));
        curl_free(esc);
    }
    sf_request_free(req);
    return rc;
}

void
sf_request_free(struct sf_request *req)
{
    if (req == NULL) {
        return;
    }
    free(req->url);
    pj_secret_free(req->body);
    free(req->ca_file);
    free(req);
}

/* ---- result --------------------------------------------------------- */

void
sf_result_init(struct sf_result *res)
{
    memset(res, 0, sizeof(*res));
}

void
sf_result_cleanup(struct sf_result *res)
{
    pj_secret_free(res->token.access_token);
    free(res->token.instance_url);
    free(res->token.id);
    free(res->token.token_type);
    free(res->token.scope);
    if (res->token.signature != NULL) {
        OPENSSL_cleanse(res->token.signature, strlen(res->token.signature));
    }
    free(res->token.signature);
    memset(res, 0, sizeof(*res));
}

/*
 * jansson copies strings (the access token among them) into its own heap
 * blocks; a free that wipes them first keeps tokens out of freed memory.
 * Both functions are plain malloc/free underneath, so blocks allocated
 * before the switch are still freed correctly.
 */
static void *
wipe_malloc(size_t n)
{
    return malloc(n);
}

static void
wipe_free(void *p)
{
    if (p != NULL) {
        OPENSSL_cleanse(p, malloc_usable_size(p));
        free(p);
    }
}

static pthread_once_t json_once = PTHREAD_ONCE_INIT;

static void
json_wipe_init(void)
{
    json_set_alloc_funcs(wipe_malloc, wipe_free);
}

/* Copy printable ASCII (others become '?') into a bounded buffer. */
static void
copy_printable(char *dst, size_t size, const char *src)
{
    size_t i;

    for (i = 0; src[i] != '\0' && i + 1 < size; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    dst[i] = '\0';
}

static pj_rc fail(struct sf_result *res, enum sf_class cls, const char *hint,
                  pj_rc rc, struct pj_err *err, const char *fmt, ...)
    PJ_PRINTF(6, 7);

static pj_rc
fail(struct sf_result *res, enum sf_class cls, const char *hint, pj_rc rc,
     struct pj_err *err, const char *fmt, ...)
{
    va_list ap;

    res->ok = false;
    res->fail.cls = cls;
    res->fail.hint = hint;
    res->fail.http_status = res->http_status;
    va_start(ap, fmt);
    rc = pj_err_setv(err, rc, fmt, ap);
    va_end(ap);
    return rc;
}

/* An optional string member: absent is fine, another type is not. */
static bool
opt_string(json_t *obj, const char *key, char **outp)
{
    json_t *v = json_object_get(obj, key);

    *outp = NULL;
    if (v == NULL || json_is_null(v)) {
        return true;
    }
    if (!json_is_string(v) || json_string_length(v) > SF_FIELD_MAX ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        return false;
    }
    return (*outp = strdup(json_string_value(v))) != NULL;
}

static pj_rc
parse_token(json_t *obj, struct sf_result *res, struct pj_err *err)
{
    json_t *at = json_object_get(obj, "access_token");
    json_t *ia = json_object_get(obj, "issued_at");
    struct sf_token *t = &res->token;
    struct pj_err uerr = {0};
    const char *hint_bad = "the token endpoint answered 200 without a usable "
                           "token: a proxy may be answering instead of "
                           "Salesforce; retrying later may work";
    size_t i, len;
    const char *s;

    if (at == NULL || !json_is_string(at) ||
        (len = json_string_length(at)) == 0 || len > SF_TOKEN_MAX) {
        return fail(res, SF_CLASS_UNKNOWN, hint_bad, PJ_ERR_INVALID, err,
                    "the token response has no access_token string");
    }
    s = json_string_value(at);
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch >= 0x7f) {
            return fail(res, SF_CLASS_UNKNOWN, hint_bad, PJ_ERR_INVALID, err,
                        "the access_token in the response holds a space or "
                        "a non-ASCII character");
        }
    }
    if (!opt_string(obj, "instance_url", &t->instance_url) ||
        t->instance_url == NULL) {
        return fail(res, SF_CLASS_UNKNOWN, hint_bad, PJ_ERR_INVALID, err,
                    "the token response has no instance_url string");
    }
    if (pj_config_url_check(t->instance_url, "instance_url", false, &uerr) !=
        PJ_OK) {
        return fail(res, SF_CLASS_UNKNOWN,
                    "Salesforce always answers an https instance_url: "
                    "something other than Salesforce answered",
                    PJ_ERR_INVALID, err, "the token response's %s", uerr.msg);
    }
    if (!opt_string(obj, "id", &t->id) ||
        !opt_string(obj, "token_type", &t->token_type) ||
        !opt_string(obj, "scope", &t->scope) ||
        !opt_string(obj, "signature", &t->signature)) {
        return fail(res, SF_CLASS_UNKNOWN, hint_bad, PJ_ERR_INVALID, err,
                    "the token response has a field of the wrong type (id, "
                    "token_type, scope or signature)");
    }
    if (t->token_type != NULL && strcasecmp(t->token_type, "Bearer") != 0) {
        return fail(res, SF_CLASS_UNKNOWN, hint_bad, PJ_ERR_INVALID, err,
                    "the token response has token_type '%.40s', not Bearer",
                    t->token_type);
    }
    if (ia != NULL && !json_is_null(ia)) {
        long long ms = -1;
        if (json_is_string(ia)) {
            const char *v = json_string_value(ia);
            char *end = NULL;
            if (isdigit((unsigned char)v[0]) && strlen(v) <= 16) {
                ms = strtoll(v, &end, 10);
                if (*end != '\0') {
                    ms = -1;
                }
            }
        } else if (json_is_integer(ia)) {
            ms = json_integer_value(ia);
        }
        if (ms < 0 || ms > 9999999999999LL) {
            return fail(res, SF_CLASS_UNKNOWN, hint_bad, PJ_ERR_INVALID, err,
                        "the token response's issued_at is not epoch "
                        "milliseconds");
        }
        t->issued_at_ms = ms;
    }
    if ((t->access_token = pj_secret_dup(s, len)) == NULL) {
        return fail(res, SF_CLASS_UNKNOWN, hint_bad, PJ_ERR_NOMEM, err,
                    "out of memory for the access token");
    }
    res->ok = true;
    res->fail.cls = SF_CLASS_NONE;
    return PJ_OK;
}

pj_rc
sf_response_parse(long http_status, const uint8_t *body, size_t len,
                  const char *date, int64_t now, struct sf_result *res,
                  struct pj_err *err)
{
    json_t *obj = NULL, *je, *jd;
    json_error_t jerr;
    const struct sf_catalogue_entry *ent;
    const char *hint;
    enum sf_class cls;
    pj_rc rc;

    (void)pthread_once(&json_once, json_wipe_init);
    sf_result_cleanup(res);
    res->http_status = http_status;
    if (date != NULL) {
        time_t t = curl_getdate(date, NULL);
        if (t > 0) {
            res->have_date = true;
            res->server_time = (int64_t)t;
            res->skew = (int64_t)t - now;
        }
    }
    if (len > SF_RESPONSE_MAX_BYTES) {
        (void)sf_classify_curl(CURLE_FILESIZE_EXCEEDED, &hint);
        return fail(res, SF_CLASS_TRANSIENT, hint, PJ_ERR_HTTP, err,
                    "the token endpoint's answer is larger than %d bytes",
                    SF_RESPONSE_MAX_BYTES);
    }
    if (http_status >= 500 || http_status == 429 || http_status == 408) {
        cls = sf_classify_http(http_status, &hint);
        return fail(res, cls, hint, PJ_ERR_HTTP, err,
                    "the token endpoint answered HTTP %ld", http_status);
    }
    if (body != NULL && len > 0) {
        obj =
            json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr);
    }
    if (http_status == 200) {
        if (obj == NULL || !json_is_object(obj)) {
            rc = fail(res, SF_CLASS_TRANSIENT,
                      "the token endpoint answered 200 with something that "
                      "is not a JSON object: a proxy or captive portal may "
                      "be answering; retrying later may work",
                      PJ_ERR_INVALID, err,
                      "the token response is not a JSON object%s%s",
                      obj == NULL && len > 0 ? ": " : "",
                      obj == NULL && len > 0 ? jerr.text : "");
            goto out;
        }
        rc = parse_token(obj, res, err);
        goto out;
    }
    je = obj != NULL && json_is_object(obj) ? json_object_get(obj, "error")
                                            : NULL;
    jd = obj != NULL && json_is_object(obj)
             ? json_object_get(obj, "error_description")
             : NULL;
    if (je == NULL || !json_is_string(je)) {
        cls = sf_classify_http(http_status, &hint);
        rc = fail(res, cls, hint, PJ_ERR_UPSTREAM, err,
                  "the token endpoint answered HTTP %ld without an OAuth "
                  "error [%s]",
                  http_status, sf_class_name(cls));
        goto out;
    }
    copy_printable(res->fail.error, sizeof(res->fail.error),
                   json_string_value(je));
    if (jd != NULL && json_is_string(jd)) {
        copy_printable(res->fail.error_description,
                       sizeof(res->fail.error_description),
                       json_string_value(jd));
    }
    ent = sf_catalogue_lookup(
        json_string_value(je),
        jd != NULL && json_is_string(jd) ? json_string_value(jd) : NULL);
    if (ent != NULL) {
        cls = ent->cls;
        hint = ent->hint;
    } else {
        cls = SF_CLASS_UNKNOWN;
        hint = "this error is not in p11jwt's catalogue: it is shown as "
               "Salesforce sent it; look it up in Salesforce Help (OAuth 2.0 "
               "authorization errors)";
    }
    rc = fail(res, cls, hint, PJ_ERR_UPSTREAM, err,
              "Salesforce refused the token request (HTTP %ld): %s: %s [%s]",
              http_status, res->fail.error, res->fail.error_description,
              sf_class_name(cls));
out:
    json_decref(obj);
    return rc;
}

/* ---- transfer ------------------------------------------------------- */

struct sf_transfer {
    CURL *easy;
    const struct sf_request *req;
    struct pj_secret *resp; /* the body may hold a token */
    bool overflow;
    bool have_date;
    char date[128];
    struct curl_slist *headers;
    char errbuf[CURL_ERROR_SIZE];
};

static size_t
on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct sf_transfer *x = userdata;
    size_t n = size * nmemb;

    if (n > x->req->max_response - x->resp->len) {
        x->overflow = true;
        return 0; /* CURLE_WRITE_ERROR: stop reading */
    }
    memcpy(x->resp->data + x->resp->len, ptr, n);
    x->resp->len += n;
    x->resp->data[x->resp->len] = '\0';
    return n;
}

static size_t
on_header(char *buf, size_t size, size_t nitems, void *userdata)
{
    struct sf_transfer *x = userdata;
    size_t n = size * nitems, i, j = 0;

    if (n > 5 && strncasecmp(buf, "Date:", 5) == 0) {
        for (i = 5; i < n && (buf[i] == ' ' || buf[i] == '\t'); i++) {
        }
        for (; i < n && buf[i] != '\r' && buf[i] != '\n' &&
               j + 1 < sizeof(x->date);
             i++) {
            x->date[j++] = buf[i];
        }
        x->date[j] = '\0';
        x->have_date = j > 0;
    }
    return n;
}

#define SETOPT(opt, val)                                                       \
    do {                                                                       \
        if (curl_easy_setopt(x->easy, opt, val) != CURLE_OK) {                 \
            rc = pj_err_set(err, PJ_ERR_INTERNAL,                              \
                            "libcurl refused option " #opt);                   \
            goto out;                                                          \
        }                                                                      \
    } while (0)

pj_rc
sf_transfer_new(const struct sf_request *req, struct sf_transfer **xferp,
                struct pj_err *err)
{
    struct sf_transfer *x = NULL;
    struct curl_slist *h;
    pj_rc rc;

    *xferp = NULL;
    if ((x = calloc(1, sizeof(*x))) == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
    }
    x->req = req;
    if (req->max_response == 0 || req->max_response > SF_RESPONSE_MAX_BYTES ||
        (x->resp = pj_secret_new(req->max_response)) == NULL ||
        (x->easy = curl_easy_init()) == NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "cannot set up the HTTPS request");
        goto out;
    }
    h = curl_slist_append(NULL,
                          "Content-Type: application/x-www-form-urlencoded");
    if (h != NULL) {
        x->headers = h;
        h = curl_slist_append(x->headers, "Accept: application/json");
    }
    if (h == NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
        goto out;
    }
    SETOPT(CURLOPT_URL, req->url);
    SETOPT(CURLOPT_PROTOCOLS_STR, "https");
    SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "https");
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    /* Never off: there is no switch for it anywhere. */
    SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
    SETOPT(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (req->ca_file != NULL) {
        SETOPT(CURLOPT_CAINFO, req->ca_file);
    }
    SETOPT(CURLOPT_POST, 1L);
    SETOPT(CURLOPT_POSTFIELDS, (const char *)req->body->data);
    SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body->len);
    SETOPT(CURLOPT_HTTPHEADER, x->headers);
    SETOPT(CURLOPT_USERAGENT, "p11jwt");
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, req->connect_timeout_ms);
    SETOPT(CURLOPT_TIMEOUT_MS, req->timeout_ms);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)req->max_response);
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, x);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, x);
    SETOPT(CURLOPT_ERRORBUFFER, x->errbuf);
    SETOPT(CURLOPT_PRIVATE, x);
    *xferp = x;
    x = NULL;
    rc = PJ_OK;
out:
    sf_transfer_free(x);
    return rc;
}

CURL *
sf_transfer_easy(struct sf_transfer *xfer)
{
    return xfer->easy;
}

pj_rc
sf_transfer_finish(struct sf_transfer *x, CURLcode code, struct sf_result *res,
                   struct pj_err *err)
{
    long status = 0;
    int64_t now = pj_time_now();
    const char *hint;

    if (code != CURLE_OK) {
        sf_result_cleanup(res);
        if (x->have_date) {
            time_t t = curl_getdate(x->date, NULL);
            if (t > 0) {
                res->have_date = true;
                res->server_time = (int64_t)t;
                res->skew = (int64_t)t - now;
            }
        }
        (void)curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        res->http_status = status;
        if (x->overflow || code == CURLE_FILESIZE_EXCEEDED) {
            (void)sf_classify_curl(CURLE_FILESIZE_EXCEEDED, &hint);
            return fail(res, SF_CLASS_TRANSIENT, hint, PJ_ERR_HTTP, err,
                        "the answer from %s is larger than %zu bytes",
                        x->req->url, x->req->max_response);
        }
        (void)sf_classify_curl(code, &hint);
        return fail(
            res, SF_CLASS_TRANSIENT, hint,
            code == CURLE_OPERATION_TIMEDOUT ? PJ_ERR_TIMEOUT : PJ_ERR_HTTP,
            err, "POST %s failed: %s", x->req->url,
            x->errbuf[0] != '\0' ? x->errbuf : curl_easy_strerror(code));
    }
    (void)curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    return sf_response_parse(status, x->resp->data, x->resp->len,
                             x->have_date ? x->date : NULL, now, res, err);
}

void
sf_transfer_free(struct sf_transfer *x)
{
    if (x == NULL) {
        return;
    }
    if (x->easy != NULL) {
        curl_easy_cleanup(x->easy);
    }
    curl_slist_free_all(x->headers);
    pj_secret_free(x->resp);
    free(x);
}

pj_rc
sf_exchange(const struct sf_request *req, struct sf_result *res,
            struct pj_err *err)
{
    struct sf_transfer *x = NULL;
    CURLcode code;
    pj_rc rc;

    if ((rc = sf_transfer_new(req, &x, err)) != PJ_OK) {
        return rc;
    }
    code = curl_easy_perform(x->easy);
    rc = sf_transfer_finish(x, code, res, err);
    sf_transfer_free(x);
    return rc;
}

pj_rc
sf_global_init(struct pj_err *err)
{
    (void)pthread_once(&json_once, json_wipe_init);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        return pj_err_set(err, PJ_ERR_INTERNAL,
                          "libcurl could not initialise (curl_global_init)");
    }
    return PJ_OK;
}

void
sf_global_cleanup(void)
{
    curl_global_cleanup();
}
