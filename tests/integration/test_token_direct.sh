#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# `p11jwt token --direct` / `p11jwt assertion --direct` end to end: a SoftHSM
# key signs the assertion, the fake Salesforce (tests/fakes/fake_salesforce.py,
# PyJWT) verifies it and answers; every catalogue error prints its class and
# hint; skew, 503, timeouts, malformed and oversized answers; config errors.
. "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3
FAKE=$P11JWT_SRC/tests/fakes/fake_salesforce.py
need curl
[ -x "$PY" ] || { echo "FAIL: no $PY" >&2; exit 1; }
"$PY" -c 'import jwt, cryptography' 2>/dev/null ||
    { echo "FAIL: python3-jwt and python3-cryptography are needed" \
           "(apt-get install python3-jwt python3-cryptography)" >&2; exit 1; }
# The fake is on 127.0.0.1: no proxy may sit in between.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy

softhsm_init sf
PIN=$(pin_file)
KEY="pkcs11:token=sf;object=sf-jwt;type=private"
"$P11JWT" keygen --key "$KEY" --pin-source "file:$PIN" >/dev/null 2>&1 ||
    { echo "FAIL: p11jwt keygen" >&2; exit 1; }
"$P11JWT" cert self-signed --key "$KEY" --subject CN=p11jwt-test \
    --out "$T/cert.pem" --pin-source "file:$PIN" >/dev/null 2>&1 ||
    { echo "FAIL: p11jwt cert self-signed" >&2; exit 1; }

"$PY" "$FAKE" --port-file "$T/port" --ca-out "$T/ca.pem" --client-id CID \
    --cert "$T/cert.pem" --user user@example.com --user etl@example.com \
    --unapproved-user blocked@example.com --quiet >"$T/fake.log" 2>&1 &
FAKE_PID=$!
on_exit "kill $FAKE_PID 2>/dev/null; wait $FAKE_PID 2>/dev/null"
for _ in $(seq 100); do [ -s "$T/port" ] && break; sleep 0.1; done
[ -s "$T/port" ] || { echo "FAIL: fake Salesforce did not start" >&2;
                      cat "$T/fake.log" >&2; exit 1; }
PORT=$(cat "$T/port")
URL=https://127.0.0.1:$PORT

control() {
    curl -sf --cacert "$T/ca.pem" -X POST --data "$1" "$URL/__control" \
        >/dev/null || fail "control $1"
}
stat_field() {
    curl -sf --cacert "$T/ca.pem" "$URL/__stats" |
        "$PY" -c "import json,sys; print(json.load(sys.stdin)$1)"
}

CONF=$T/p11jwt.conf
write_conf() {
    cat >"$CONF" <<EOF
[profile test]
key = $KEY
pin-source = file:$PIN
client-id = CID
subject = user@example.com
subjects = etl@example.com, blocked@example.com
login-url = $URL
audience = https://login.salesforce.com
ca-file = $T/ca.pem
connect-timeout = 2
timeout = 3
$1
EOF
}
write_conf ""
tok() { "$P11JWT" -c "$CONF" token --direct "$@"; }

# ---- success ----------------------------------------------------------
expect_ok "token --direct (json)" tok
if "$PY" - "$T/out" <<'PY'; then pass "json has the IPC shape"; else fail "json shape"; fi
import json, sys
d = json.load(open(sys.argv[1]))
assert d["ok"] is True and d["access_token"].startswith("00D")
assert d["instance_url"].startswith("https://127.0.0.1:")
assert d["token_type"] == "Bearer" and d["profile"] == "test"
assert d["subject"] == "user@example.com"
assert d["expires_at"] - d["issued_at"] == 7200
PY
[ "$(stat_field '["last_claims"]["aud"]')" = https://login.salesforce.com ] &&
    pass "aud sent as configured" || fail "aud"
exp=$(stat_field '["last_claims"]["exp"]'); iat=$(stat_field '["last_claims"]["iat"]')
[ $((exp - iat)) -eq 180 ] && pass "exp = iat + 180" || fail "exp - iat = $((exp - iat))"

expect_ok "token --format raw" tok --format raw
grep -qE '^00D[^ ]+$' "$T/out" && [ "$(wc -l <"$T/out")" -eq 1 ] &&
    pass "raw is the token alone" || fail "raw output"
expect_ok "token --format header" tok --format header
grep -qE '^Authorization: Bearer 00D' "$T/out" && pass "header format" ||
    fail "header format"
expect_ok "token --format env" tok --format env
grep -qE '^SF_ACCESS_TOKEN=00D' "$T/out" &&
    grep -qx "SF_INSTANCE_URL=$URL" "$T/out" && pass "env format" ||
    fail "env format"
expect_ok "token --subject from subjects" tok --subject etl@example.com --format raw
[ "$(stat_field '["last_claims"]["sub"]')" = etl@example.com ] &&
    pass "sub is the asked subject" || fail "sub"
expect_fail "subject not in the profile" 1 "not allowed for profile test" \
    tok --subject evil@example.com
# P11JWT_CONFIG is honoured; --profile may be left out with one profile.
expect_ok "P11JWT_CONFIG" env P11JWT_CONFIG="$CONF" "$P11JWT" token --direct --format raw

expect_ok "assertion --direct" "$P11JWT" -c "$CONF" assertion --direct --profile test
if "$PY" - "$T/out" "$T/cert.pem" <<'PY'; then pass "assertion verifies with PyJWT"; else fail "assertion verify"; fi
import sys, jwt
from cryptography import x509
a = open(sys.argv[1]).read().strip()
cert = x509.load_pem_x509_certificate(open(sys.argv[2], "rb").read())
c = jwt.decode(a, cert.public_key(), algorithms=["RS256"],
               audience="https://login.salesforce.com")
assert jwt.get_unverified_header(a) == {"alg": "RS256"}
assert c["iss"] == "CID" and c["sub"] == "user@example.com"
assert c["exp"] - c["iat"] == 180 and len(c["jti"]) == 22
PY
expect_ok "assertion --format json" "$P11JWT" -c "$CONF" assertion --direct --format json
grep -q '"assertion":"eyJhbGciOiJSUzI1NiJ9\.' "$T/out" && pass "assertion json" ||
    fail "assertion json"

# ---- every catalogue error: class and hint ------------------------------
check_error() {
    local err=$1 desc=$2 class=$3 hint=$4
    control "{\"error\":{\"error\":\"$err\",\"error_description\":\"$desc\",\"count\":1}}"
    expect_fail "$err / $desc" 1 "class: $class" tok
    grep -qF "$hint" "$T/err" && grep -qF "$err: $desc" "$T/err" &&
        pass "hint for $desc" || { fail "hint for $desc"; cat "$T/err" >&2; }
}
check_error invalid_grant "user hasn't approved this consumer" permanent AdminApprovedPreAuthorized
check_error invalid_grant "audience is invalid" audience-or-host "https://test.salesforce.com"
check_error invalid_grant "invalid assertion" permanent "certificate"
check_error invalid_grant "expired authorization code" clock NTP
check_error invalid_client_id "client identifier invalid" permanent "Consumer Key"
check_error invalid_app_access "user is not admin approved to access this app" permanent "permission set"
check_error app_not_found "External client app is not installed in this org" audience-or-host "My Domain"
check_error unsupported_grant_type "grant type not supported" permanent "JWT Bearer"
check_error something_new "Brand New Description" unknown "not in p11jwt's catalogue"

# Real checks in the fake, not injected: an unapproved user, a wrong aud.
expect_fail "unapproved user (fake's own check)" 1 "class: permanent" \
    tok --subject blocked@example.com
write_conf "" && sed -i 's|^audience = .*|audience = https://test.salesforce.com|' "$CONF"
expect_fail "wrong aud (fake's own check)" 1 "audience is invalid" tok
grep -q "class: audience-or-host" "$T/err" && pass "wrong aud class" || fail "wrong aud class"
write_conf ""
sed 's/^client-id = CID/client-id = OTHER/' "$CONF" >"$T/other.conf"
expect_fail "wrong client-id (fake's own check)" 1 "client identifier invalid" \
    "$P11JWT" -c "$T/other.conf" token --direct

# A JSON error answer on stdout too, with --format json.
control '{"error":{"error":"invalid_grant","error_description":"invalid assertion","count":1}}'
tok --format json >"$T/out" 2>"$T/err" || true
grep -q '"ok":false' "$T/out" && grep -q '"salesforce":{"error":"invalid_grant"' "$T/out" &&
    pass "json error shape" || fail "json error shape"

# ---- clock skew -------------------------------------------------------
# Date has one-second resolution: a measured skew may be off by one.
control '{"skew_s":120}'
expect_ok "token with the server 120 s ahead" tok --format raw
grep -qE "clock skew \+(119|120|121) s" "$T/err" && grep -q NTP "$T/err" &&
    pass "skew warning with NTP" || fail "skew warning"
control '{"skew_s":-400}'
expect_fail "server clock 400 s behind: exp rejected" 1 "class: clock" tok
grep -qE "clock skew -(399|400|401) s" "$T/err" && pass "skew measured on an error" ||
    fail "skew on error"
control '{"skew_s":5}'
expect_ok "small skew: no warning" tok --format raw
grep -q "skew" "$T/err" && fail "warned about 5 s" || pass "no warning at 5 s"
control '{"skew_s":0}'

# ---- transient failures -----------------------------------------------
control '{"status_503":1}'
expect_fail "503 is transient" 1 "class: transient" tok
grep -q "HTTP 503" "$T/err" && pass "503 named" || fail "503 named"
control '{"hang":1}'
start=$(date +%s)
expect_fail "timeout is transient" 1 "class: transient" tok
[ $(( $(date +%s) - start )) -le 6 ] && pass "timeout honoured" || fail "timeout took too long"
grep -q "timed out" "$T/err" && pass "timeout named" || fail "timeout named"
control '{"malformed":1}'
expect_fail "malformed JSON" 1 "not a JSON object" tok
control '{"oversized":1}'
expect_fail "oversized answer" 1 "larger than 65536 bytes" tok
# TLS: the fake's CA is not in the system store; without ca-file it fails.
write_conf "" && sed -i '/^ca-file/d' "$CONF"
expect_fail "unknown CA is refused (TLS always verified)" 1 "class: transient" tok
grep -q "ca-file" "$T/err" && pass "TLS hint names ca-file" || fail "TLS hint"
write_conf ""
# Nothing listening: connect failure.
sed "s|^login-url = .*|login-url = https://127.0.0.1:1|" "$CONF" >"$T/closed.conf"
expect_fail "connection refused is transient" 1 "class: transient" \
    "$P11JWT" -c "$T/closed.conf" token --direct
n=$(stat_field '["token_requests"]')
[ "$n" -ge 20 ] && pass "fake counted $n requests" || fail "fake counted $n"

# ---- config and usage errors ------------------------------------------
sed 's|^login-url = https|login-url = http|' "$CONF" >"$T/http.conf"
expect_fail "http:// login-url refused" 1 \
    "http.conf:7: login-url 'http://127.0.0.1:$PORT' is refused" \
    "$P11JWT" -c "$T/http.conf" token --direct
printf '[profile p]\nkey = pkcs11:object=x\naudiance = https://login.salesforce.com\n' >"$T/bad.conf"
expect_fail "unknown key with file:line" 1 \
    "bad.conf:3: unknown key 'audiance' in \[profile p\]" \
    "$P11JWT" -c "$T/bad.conf" token --direct
printf '[profile p]\nkey = pkcs11:object=x\npin = 1234\n' >"$T/pin.conf"
expect_fail "pin key refused" 1 "pin.conf:3: key 'pin' in \[profile p\] is refused" \
    "$P11JWT" -c "$T/pin.conf" token --direct
printf '[profile p]\nkey = pkcs11:object=x\nclient-id = c\nsubject = s\nassertion-lifetime = 600\n' >"$T/life.conf"
expect_fail "assertion-lifetime over 300" 1 "life.conf:5: bad value '600' for assertion-lifetime" \
    "$P11JWT" -c "$T/life.conf" assertion --direct
sed 's|^login-url = .*|login-url = https://na1.salesforce.com|' "$CONF" >"$T/legacy.conf"
expect_fail "legacy instance refused" 1 "legacy instance host" \
    "$P11JWT" -c "$T/legacy.conf" token --direct
expect_fail "missing config file" 1 "$T/none.conf" \
    "$P11JWT" -c "$T/none.conf" token --direct
cat "$CONF" >"$T/two.conf"; printf '[profile other]\nkey = %s\nclient-id = C\nsubject = s\n' "$KEY" >>"$T/two.conf"
expect_fail "two profiles need --profile" 1 "choose one with --profile" \
    "$P11JWT" -c "$T/two.conf" token --direct
expect_fail "unknown profile" 1 "no \[profile nope\]" \
    "$P11JWT" -c "$T/two.conf" token --direct --profile nope
# Without --direct the agent is asked; none runs at this socket.
expect_fail "token without --direct, no agent" 1 \
    "agent not running at $T/no-agent.sock .*start p11jwt-agent or use --direct" \
    "$P11JWT" -c "$CONF" --socket "$T/no-agent.sock" token
expect_fail "assertion without --direct, no agent" 1 "agent not running at" \
    "$P11JWT" -c "$CONF" --socket "$T/no-agent.sock" assertion
expect_fail "bad --format" 2 "unknown format" tok --format xml
expect_fail "stray argument" 2 "unexpected argument" tok extra
expect_ok "token --help" "$P11JWT" token --help
grep -q -- "--direct" "$T/out" && pass "help mentions --direct" || fail "help"
expect_ok "assertion --help" "$P11JWT" assertion --help
# A wrong PIN is reported, and the PIN never appears in the output.
WRONG=$(pin_file 987654)
sed "s|^pin-source = .*|pin-source = file:$WRONG|" "$CONF" >"$T/wrongpin.conf"
"$P11JWT" -c "$T/wrongpin.conf" token --direct >"$T/out" 2>"$T/err" && fail "wrong PIN accepted"
grep -q 987654 "$T/out" "$T/err" && fail "PIN leaked" || pass "wrong PIN fails without leaking it"

finish
