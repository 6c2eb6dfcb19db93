/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The token endpoint's error catalogue (research/salesforce.md section 3):
 * each exact error/error_description pair real orgs return, its class, and
 * what a person should do about it.
 */
#include "salesforce/sf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct sf_catalogue_entry catalogue[] = {
    {"invalid_grant", "user hasn't approved this consumer", SF_CLASS_PERMANENT,
     "pre-authorise the user: add their profile or permission set to the "
     "app's policies (AdminApprovedPreAuthorized); if that is done, check "
     "that login-url is the org's My Domain and audience matches it"},
    {"invalid_grant", "audience is invalid", SF_CLASS_AUDIENCE,
     "aud does not match this org: set audience to "
     "https://login.salesforce.com "
     "(production), https://test.salesforce.com (sandbox) or the org's My "
     "Domain URL; External Client Apps need the My Domain URL for login-url "
     "and audience"},
    {"invalid_grant", "invalid assertion", SF_CLASS_PERMANENT,
     "the signature did not verify: check that the app's certificate is the "
     "one for this key (p11jwt cert show), that it is uploaded, and that a "
     "metadata deploy did not clear it; sandbox users log in at "
     "test.salesforce.com or the sandbox My Domain"},
    {"invalid_grant", "expired authorization code", SF_CLASS_CLOCK,
     "Salesforce found exp in the past: fix this host's clock (enable NTP, "
     "e.g. timedatectl set-ntp true) and compare the measured clock skew"},
    {"invalid_client_id", "client identifier invalid", SF_CLASS_PERMANENT,
     "client-id is not a consumer key of this org: copy the Consumer Key "
     "from the app's OAuth settings; a new or recreated app can take up to "
     "15 minutes to propagate"},
    {"invalid_client_id", NULL, SF_CLASS_PERMANENT,
     "client-id is not a consumer key of this org: copy the Consumer Key "
     "from the app's OAuth settings"},
    {"invalid_app_access", "user is not admin approved to access this app",
     SF_CLASS_PERMANENT,
     "the app is admin-approved but this user is not: add the user's "
     "profile or permission set to the app's policies"},
    {"invalid_app_access", NULL, SF_CLASS_PERMANENT,
     "the user may not use this app: add the user's profile or permission "
     "set to the app's policies"},
    {"app_not_found", "External client app is not installed in this org",
     SF_CLASS_AUDIENCE,
     "the External Client App is not in the org behind this host and aud: "
     "use the org's My Domain URL for both login-url and audience, and check "
     "that the app is deployed to this org (each sandbox needs its own)"},
    {"app_not_found", NULL, SF_CLASS_AUDIENCE,
     "the app was not found in the org behind this host and aud: use the "
     "org's My Domain URL for login-url and audience"},
    {"unsupported_grant_type", "grant type not supported", SF_CLASS_PERMANENT,
     "the request did not arrive as a JWT Bearer grant: a proxy may have "
     "rewritten the body; otherwise report this p11jwt bug"},
    {"unsupported_grant_type", NULL, SF_CLASS_PERMANENT,
     "the request did not arrive as a JWT Bearer grant: a proxy may have "
     "rewritten the body; otherwise report this p11jwt bug"},
};

const struct sf_catalogue_entry *
sf_catalogue(size_t *np)
{
    *np = sizeof(catalogue) / sizeof(catalogue[0]);
    return catalogue;
}

const struct sf_catalogue_entry *
sf_catalogue_lookup(const char *error, const char *description)
{
    size_t i, n = sizeof(catalogue) / sizeof(catalogue[0]);

    if (error == NULL) {
        return NULL;
    }
    for (i = 0; i < n; i++) {
        if (strcmp(catalogue[i].error, error) == 0 &&
            catalogue[i].description != NULL && description != NULL &&
            strcmp(catalogue[i].description, description) == 0) {
            return &catalogue[i];
        }
    }
    for (i = 0; i < n; i++) {
        if (strcmp(catalogue[i].error, error) == 0 &&
            catalogue[i].description == NULL) {
            return &catalogue[i];
        }
    }
    return NULL;
}

const char *
sf_class_name(enum sf_class cls)
{
    switch (cls) {
    case SF_CLASS_NONE:
        return "ok";
    case SF_CLASS_PERMANENT:
        return "permanent";
    case SF_CLASS_AUDIENCE:
        return "audience-or-host";
    case SF_CLASS_CLOCK:
        return "clock";
    case SF_CLASS_TRANSIENT:
        return "transient";
    case SF_CLASS_UNKNOWN:
    default:
        return "unknown";
    }
}

bool
sf_class_is_retryable(enum sf_class cls)
{
    return cls == SF_CLASS_TRANSIENT;
}

enum sf_class
sf_classify_curl(CURLcode code, const char **hintp)
{
    switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
        *hintp = "the token endpoint did not answer in time: check the "
                 "network path to login-url; raise timeout if the link is "
                 "slow; retrying later may work";
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        *hintp = "the login-url host name did not resolve: check DNS and "
                 "the spelling of login-url";
        break;
    case CURLE_COULDNT_CONNECT:
        *hintp = "could not connect to login-url: check the firewall, proxy "
                 "settings and that the host is reachable on port 443";
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_ISSUER_ERROR:
        *hintp = "TLS failed: the server certificate did not verify or the "
                 "handshake broke; check ca-file (a TLS-inspecting proxy "
                 "needs its CA there) and the system clock; verification is "
                 "never turned off";
        break;
    case CURLE_WRITE_ERROR:
    case CURLE_FILESIZE_EXCEEDED:
        *hintp = "the answer was larger than a token response can be: a "
                 "proxy or captive portal may be answering instead of "
                 "Salesforce";
        break;
    case CURLE_UNSUPPORTED_PROTOCOL:
        *hintp = "only https is allowed: check login-url";
        break;
    default:
        *hintp = "the HTTPS request failed before Salesforce answered: "
                 "check the network path to login-url; retrying later may "
                 "work";
        break;
    }
    return SF_CLASS_TRANSIENT;
}

enum sf_class
sf_classify_http(long status, const char **hintp)
{
    if (status >= 500 || status == 429 || status == 408) {
        *hintp = "Salesforce (or a proxy) is unavailable or throttling: "
                 "retry later with backoff; check status.salesforce.com";
        return SF_CLASS_TRANSIENT;
    }
    if (status >= 300 && status < 400) {
        *hintp = "the token endpoint redirected, and redirects are not "
                 "followed: set login-url to the org's My Domain URL "
                 "(https://NAME.my.salesforce.com)";
        return SF_CLASS_PERMANENT;
    }
    if (status == 404) {
        *hintp = "no token endpoint at this URL: login-url must be the "
                 "host only (https://NAME.my.salesforce.com), without a path";
        return SF_CLASS_PERMANENT;
    }
    *hintp = "an answer p11jwt does not know: look the error up in "
             "Salesforce Help (OAuth 2.0 authorization errors)";
    return SF_CLASS_UNKNOWN;
}

bool
sf_result_skew_bad(const struct sf_result *res)
{
    return res->have_date &&
           (res->skew > SF_SKEW_WARN_S || res->skew < -SF_SKEW_WARN_S);
}

void
sf_skew_describe(const struct sf_result *res, char *buf, size_t size)
{
    long long s = (long long)res->skew;

    if (size == 0) {
        return;
    }
    if (!res->have_date) {
        (void)snprintf(buf, size, "clock skew unknown (no Date header)");
        return;
    }
    if (!sf_result_skew_bad(res)) {
        (void)snprintf(buf, size, "clock skew %+lld s (within %d s)", s,
                       SF_SKEW_WARN_S);
        return;
    }
    (void)snprintf(buf, size,
                   "clock skew %+lld s: this host's clock is %lld s %s "
                   "Salesforce's; fix it with NTP (timedatectl set-ntp true, "
                   "or chrony/ntpd), or assertions will be rejected",
                   s, s < 0 ? -s : s, s > 0 ? "behind" : "ahead of");
}
