#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# `p11jwt doctor`: a healthy setup passes with every line ok (the agent line
# warns: no agent runs), then each line is driven to warn/fail by a broken
# setup and the test asserts the line's status and a fragment of its fix.
# SoftHSM2 token, keys made by p11jwt and by pkcs11-tool (opensc), the fake
# Salesforce endpoint (tests/fakes/fake_salesforce.py), the PKCS#11 shim to
# count C_Login calls.
. "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3
FAKE=$P11JWT_SRC/tests/fakes/fake_salesforce.py
need curl
need pkcs11-tool
[ -x "$PY" ] || { echo "FAIL: no $PY" >&2; exit 1; }
"$PY" -c 'import jwt, cryptography' 2>/dev/null ||
    { echo "FAIL: python3-jwt and python3-cryptography are needed" >&2; exit 1; }
: "${P11JWT_SHIM:?run through ctest, or set P11JWT_SHIM to libp11shim.so}"
# The fake is on 127.0.0.1; the Salesforce host names used below do not
# resolve here: no proxy may sit in between.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy
unset P11JWT_SOCKET P11JWT_CONFIG

softhsm_init sf
PIN=$(pin_file)
KEY="pkcs11:token=sf;object=sf-jwt;type=private"
"$P11JWT" keygen --key "$KEY" --pin-source "file:$PIN" >/dev/null 2>&1 ||
    { echo "FAIL: p11jwt keygen" >&2; exit 1; }
"$P11JWT" cert self-signed --key "$KEY" --subject CN=p11jwt-doctor \
    --out "$T/cert.pem" --pin-source "file:$PIN" >/dev/null 2>&1 ||
    { echo "FAIL: p11jwt cert self-signed --out" >&2; exit 1; }
"$P11JWT" cert import --key "$KEY" --in "$T/cert.pem" \
    --pin-source "file:$PIN" >/dev/null 2>&1 ||
    { echo "FAIL: p11jwt cert import" >&2; exit 1; }

"$PY" "$FAKE" --port-file "$T/port" --ca-out "$T/ca.pem" --client-id CID \
    --cert "$T/cert.pem" --user user@example.com --quiet >"$T/fake.log" 2>&1 &
FAKE_PID=$!
on_exit "kill $FAKE_PID 2>/dev/null; wait $FAKE_PID 2>/dev/null"
for _ in $(seq 100); do [ -s "$T/port" ] && break; sleep 0.1; done
[ -s "$T/port" ] || { echo "FAIL: fake Salesforce did not start" >&2;
                      cat "$T/fake.log" >&2; exit 1; }
URL=https://127.0.0.1:$(cat "$T/port")
control() {
    curl -sf --cacert "$T/ca.pem" -X POST --data "$1" "$URL/__control" \
        >/dev/null || fail "control $1"
}
posts() {
    curl -sf --cacert "$T/ca.pem" "$URL/__stats" |
        "$PY" -c 'import json,sys; print(json.load(sys.stdin)["token_requests"])'
}

SOCK=$T/agent.sock
CONF=$T/p11jwt.conf
# write_conf FILE [sed expressions...]: the healthy config, edited.
write_conf() {
    local f=$1; shift
    cat >"$f" <<EOF
[agent]
socket = $SOCK
module = $SOFTHSM_MODULE
warn-days = 30
critical-days = 7

[profile test]
key = $KEY
pin-source = file:$PIN
client-id = CID
subject = user@example.com
login-url = $URL
audience = https://login.salesforce.com
ca-file = $T/ca.pem
connect-timeout = 2
timeout = 4
EOF
    local e
    for e in "$@"; do sed -i "$e" "$f"; done
}
write_conf "$CONF"

# doc CODE CONF [ARGS]: run doctor, keep stdout in $T/out; check the exit.
doc() {
    local code=$1 conf=$2 rc=0; shift 2
    "$P11JWT" -c "$conf" doctor "$@" >"$T/out" 2>"$T/err" || rc=$?
    if [ "$rc" -ne "$code" ]; then
        fail "doctor $* with $(basename "$conf"): exit $rc, wanted $code"
        sed 's/^/  | /' "$T/out" "$T/err" >&2
    fi
}
# line CHECK STATUS [MESSAGE-FRAGMENT]: the check's line has that status.
line() {
    local chk=$1 st=$2 frag=${3:-}
    if grep -qE "^$st +$chk +" "$T/out" &&
        { [ -z "$frag" ] || grep -E "^$st +$chk +" "$T/out" | grep -qF -- "$frag"; }; then
        pass "$chk is $st${frag:+ ($frag)}"
    else
        fail "$chk is not $st${frag:+ with '$frag'}"; sed 's/^/  | /' "$T/out" >&2
    fi
}
# fix CHECK FRAGMENT: the "fix:" line under CHECK contains FRAGMENT.
fix() {
    local chk=$1 frag=$2
    if awk -v c="$chk" '
        found { print; exit } $2 == c && $1 ~ /^(ok|warn|fail|skip)$/ { found = 1 }' \
        "$T/out" | grep -E '^ +fix: ' | grep -qF -- "$frag"; then
        pass "fix for $chk mentions '$frag'"
    else
        fail "fix for $chk lacks '$frag'"; sed 's/^/  | /' "$T/out" >&2
    fi
}

# ---- healthy setup ------------------------------------------------------
before=$(posts)
doc 0 "$CONF"
for c in config module token pin-source login key key-protection key-usage \
    certificate cert-match cert-expiry key-size audience clock-skew exchange; do
    line "$c" ok
done
line agent warn "not running"
fix agent "doctor works without the agent"
[ "$(grep -cE '^(ok|warn|fail|skip) ' "$T/out")" -eq 16 ] && pass "16 check lines" ||
    fail "not 16 check lines"
grep -qE '^15 ok, 1 warning, 0 failed, 0 skipped$' "$T/out" && pass "summary line" ||
    { fail "summary line"; cat "$T/out" >&2; }
line exchange ok "token issued for user@example.com"
[ $(($(posts) - before)) -eq 1 ] && pass "exactly one token request" ||
    fail "$(($(posts) - before)) token requests"
grep -q "00D" "$T/out" && fail "the access token was printed" || pass "no token printed"
line pin-source ok "mode 0600"
line key-protection ok "never extractable"
line key-size ok "RSA-2048"

# --json: the same checks as {check, status, message, fix}.
doc 0 "$CONF" --json
if "$PY" - "$T/out" <<'PY'; then pass "--json shape"; else fail "--json shape"; fi
import json, sys
a = json.load(open(sys.argv[1]))
assert isinstance(a, list) and len(a) == 16, len(a)
names = [c["check"] for c in a]
assert names[0] == "config" and names[-1] == "agent", names
for c in a:
    assert set(c) == {"check", "status", "message", "fix"}, c
    want = "warn" if c["check"] == "agent" else "ok"
    assert c["status"] == want, c
    assert (c["fix"] is None) == (c["status"] == "ok"), c
PY
before=$(posts)
doc 0 "$CONF" --no-exchange
line exchange skip "--no-exchange"
[ "$(posts)" -eq "$before" ] && pass "--no-exchange sends no token request" ||
    fail "--no-exchange sent a request"

# ---- config --------------------------------------------------------------
write_conf "$T/bad.conf" 's/^audience =/audiance =/'
doc 1 "$T/bad.conf"
line config fail "bad.conf:13: unknown key 'audiance'"
fix config "docs/configuration.md"
line module skip "because the config did not load"
line exchange skip "because the config did not load"
line agent warn
printf '[profile test\nkey = x\n' >"$T/syntax.conf"
doc 1 "$T/syntax.conf"
line config fail "syntax.conf:"
doc 1 "$T/none.conf"
line config fail "none.conf"
fix config "-c FILE"
write_conf "$T/two.conf" '$a [profile other]\nkey = pkcs11:token=sf;object=x\nclient-id = C\nsubject = s'
doc 1 "$T/two.conf"
line config fail "--profile"
doc 0 "$T/two.conf" --profile test --no-exchange
line config ok "profile 'test'"

# ---- module -----------------------------------------------------------
doc 1 "$CONF" --module "$T/nope.so"
line module fail "$T/nope.so"
fix module "PKCS#11 module"
fix module "from --module"
line token skip "because the module did not load"
line key skip "because the module did not load"
line audience ok
line agent warn

# ---- token --------------------------------------------------------------
write_conf "$T/tok.conf" 's/token=sf;/token=nosuch;/'
doc 1 "$T/tok.conf" --no-exchange
line token fail "tokens present: sf"
fix token "token="
line pin-source skip "because the token was not found"
line certificate skip "because the token was not found"

# ---- PIN source ---------------------------------------------------------
OPEN=$(pin_file); chmod 644 "$OPEN"
write_conf "$T/open.conf" "s|^pin-source = .*|pin-source = file:$OPEN|"
doc 1 "$T/open.conf" --no-exchange
line pin-source fail "mode 0644"
fix pin-source "chmod 600 $OPEN"
line login skip "because the PIN source cannot be used"
write_conf "$T/nopin.conf" "s|^pin-source = .*|pin-source = file:$T/absent.pin|"
doc 1 "$T/nopin.conf" --no-exchange
line pin-source fail "does not exist"
write_conf "$T/envpin.conf" "s|^pin-source = .*|pin-source = env:DOCTOR_TEST_PIN|"
DOCTOR_TEST_PIN=$TEST_PIN doc 0 "$T/envpin.conf" --no-exchange
line pin-source ok "env:DOCTOR_TEST_PIN is set"

# ---- login: a wrong PIN is tried once, never again ------------------------
WRONG_PIN=98765432
WRONG=$(pin_file "$WRONG_PIN")
write_conf "$T/wrong.conf" "s|^pin-source = .*|pin-source = file:$WRONG|"
export P11SHIM_MODULE=$SOFTHSM_MODULE P11SHIM_STATS=$T/shim.stats
rm -f "$T/shim.stats"
doc 1 "$T/wrong.conf" --module "$P11JWT_SHIM"
line login fail "not retried"
fix login "tried C_Login once and did not retry"
line key skip "because login failed"
line exchange skip "because the key is not open"
n=$(awk '$1 == "C_Login" { print $2 }' "$T/shim.stats" 2>/dev/null)
[ "${n:-0}" -eq 1 ] && pass "C_Login attempted exactly once" ||
    fail "C_Login called ${n:-0} times"
grep -q "$WRONG_PIN" "$T/out" "$T/err" && fail "PIN leaked" || pass "wrong PIN not printed"
unset P11SHIM_MODULE P11SHIM_STATS

# ---- key ------------------------------------------------------------------
write_conf "$T/nokey.conf" 's/object=sf-jwt/object=nokey/'
doc 1 "$T/nokey.conf" --no-exchange
line login ok
line key fail "nokey"
fix key "p11jwt keygen"
line key-protection skip "because the key is not open"
line key-size skip

pkgen() { # LABEL ID KEYTYPE [ARGS]: a key pair made by pkcs11-tool
    pkcs11-tool --module "$SOFTHSM_MODULE" --token-label sf --login \
        --pin "$TEST_PIN" --keypairgen --key-type "$3" --label "$1" --id "$2" \
        "${@:4}" >/dev/null 2>&1 || { echo "FAIL: pkcs11-tool keypairgen $1" >&2; exit 1; }
}
pkgen ext 0e01 rsa:2048 --extractable
pkgen dec 0e02 rsa:2048
pkgen small 0e03 rsa:1024
for k in ext dec small; do
    write_conf "$T/$k.conf" "s/object=sf-jwt/object=$k/"
done
doc 1 "$T/ext.conf" --no-exchange
line key ok "'ext'"
line key-protection fail "CKA_EXTRACTABLE is true"
fix key-protection "p11jwt rotate start --profile test"
doc 1 "$T/dec.conf" --no-exchange
line key-protection ok
line key-usage warn "decrypt"
fix key-usage "sign-only"
# ... and a key without a certificate beside it:
line certificate fail "no certificate beside the key"
fix certificate "--store"
line cert-match skip "no certificate was read"
doc 1 "$T/small.conf" --no-exchange
line key-size fail "RSA-1024"
fix key-size "2048"

# ---- certificate ----------------------------------------------------------
DEC="pkcs11:token=sf;object=dec;type=private"
"$P11JWT" cert self-signed --key "$DEC" --subject CN=other --out "$T/other.pem" \
    --pin-source "file:$PIN" >/dev/null 2>&1 || fail "cert for dec"
write_conf "$T/mismatch.conf" "/^key = /a cert = $T/other.pem"
doc 1 "$T/mismatch.conf" --no-exchange
line certificate ok "CN=other"
line cert-match fail "invalid assertion"
fix cert-match "p11jwt eca --profile test"
write_conf "$T/certfile.conf" "/^key = /a cert = $T/absent.pem"
doc 1 "$T/certfile.conf" --no-exchange
line certificate fail "absent.pem"
fix certificate "cert="
# cert = a pkcs11: URI of the certificate object (read without a login).
write_conf "$T/certuri.conf" "/^key = /a cert = pkcs11:token=sf;object=sf-jwt;type=cert"
doc 0 "$T/certuri.conf" --no-exchange
line certificate ok "from pkcs11:token=sf;object=sf-jwt;type=cert"
line cert-match ok
write_conf "$T/certuri2.conf" "/^key = /a cert = pkcs11:token=sf;object=nocert;type=cert"
doc 1 "$T/certuri2.conf" --no-exchange
line certificate fail "nocert"
# A certificate file is still checked when the module cannot load.
write_conf "$T/pem.conf" "/^key = /a cert = $T/cert.pem"
doc 1 "$T/pem.conf" --no-exchange --module "$T/nope.so"
line certificate ok "CN=p11jwt-doctor"
line cert-match skip "the key is not open"
line cert-expiry ok "days left"

for spec in soon:10 crit:3; do
    lbl=${spec%%:*}; days=${spec#*:}
    K="pkcs11:token=sf;object=$lbl;type=private"
    "$P11JWT" keygen --key "$K" --pin-source "file:$PIN" >/dev/null 2>&1 || fail "keygen $lbl"
    "$P11JWT" cert self-signed --key "$K" --subject "CN=$lbl" --days "$days" \
        --store --pin-source "file:$PIN" >/dev/null 2>&1 || fail "cert $lbl"
    write_conf "$T/$lbl.conf" "s/object=sf-jwt/object=$lbl/"
done
doc 0 "$T/soon.conf" --no-exchange
line cert-expiry warn "under warn-days 30"
fix cert-expiry "p11jwt rotate start --profile test"
doc 1 "$T/crit.conf" --no-exchange
line cert-expiry fail "under critical-days 7"

# ---- audience and login-url (these hosts do not resolve here) -------------
aud_case() { # DESC LOGIN-URL AUDIENCE|- STATUS FRAGMENT [FIX]
    local f=$T/aud.conf
    write_conf "$f" "s|^login-url = .*|login-url = $2|" "s|^connect-timeout = .*|connect-timeout = 1|"
    if [ "$3" = - ]; then sed -i '/^audience =/d' "$f"; else
        sed -i "s|^audience = .*|audience = $3|" "$f"; fi
    "$P11JWT" -c "$f" doctor --no-exchange >"$T/out" 2>"$T/err" || true
    line audience "$4" "$5"
    [ -z "${6:-}" ] || fix audience "$6"
}
aud_case sandbox-prod https://acme--uat.sandbox.my.salesforce.com \
    https://login.salesforce.com fail "is a sandbox" "audience = https://test.salesforce.com"
aud_case prod-test https://acme.my.salesforce.com https://test.salesforce.com \
    fail "is production" "audience = https://login.salesforce.com"
aud_case test-login https://test.salesforce.com https://login.salesforce.com \
    fail "is a sandbox" "test.salesforce.com"
aud_case other-mydomain https://acme.my.salesforce.com https://evil.my.salesforce.com \
    fail "another My Domain" "audience = https://acme.my.salesforce.com"
aud_case legacy-aud https://acme.my.salesforce.com https://na1.salesforce.com \
    fail "legacy instance host"
aud_case generic https://login.salesforce.com https://login.salesforce.com \
    warn "generic production login host" "my.salesforce.com"
aud_case mydomain https://acme.my.salesforce.com - ok "fits production My Domain"
aud_case sandbox https://acme--uat.sandbox.my.salesforce.com - ok "fits sandbox My Domain"
aud_case sandbox-self https://acme--uat.sandbox.my.salesforce.com \
    https://acme--uat.sandbox.my.salesforce.com ok "sandbox My Domain"
line clock-skew warn "not measured"
# A legacy login-url is refused by the config itself, naming the line.
write_conf "$T/legacy.conf" "s|^login-url = .*|login-url = https://cs42.salesforce.com|"
doc 1 "$T/legacy.conf"
line config fail "legacy instance host"

# ---- clock skew from the fake's Date header --------------------------------
control '{"skew_s":120}'
doc 0 "$CONF"
line clock-skew warn "clock skew +1" # 120 s, give or take the Date header's 1 s resolution
fix clock-skew "chrony"
line exchange ok
control '{"skew_s":400}'
doc 1 "$CONF"
line clock-skew fail "arrives expired"
line exchange fail "[clock]"
fix exchange "NTP"
control '{"skew_s":-400}'
doc 1 "$CONF" --no-exchange
line clock-skew fail "more than 300 s"
control '{"skew_s":0}'

# ---- exchange errors: class and hint --------------------------------------
ex_case() { # ERROR DESCRIPTION CLASS HINT-FRAGMENT
    control "{\"error\":{\"error\":\"$1\",\"error_description\":\"$2\",\"count\":1}}"
    doc 1 "$CONF"
    line exchange fail "[$3]"
    line exchange fail "$1"
    fix exchange "$4"
}
ex_case invalid_grant "user hasn't approved this consumer" permanent AdminApprovedPreAuthorized
ex_case invalid_grant "audience is invalid" audience-or-host "https://test.salesforce.com"
ex_case invalid_grant "invalid assertion" permanent "certificate"
ex_case invalid_grant "expired authorization code" clock NTP
ex_case invalid_client_id "client identifier invalid" permanent "Consumer Key"
ex_case invalid_app_access "user is not admin approved to access this app" permanent "permission set"
ex_case app_not_found "External client app is not installed in this org" audience-or-host "My Domain"
ex_case something_new "Brand New Description" unknown "not in p11jwt's catalogue"
control '{"status_503":1}'
doc 1 "$CONF"
line exchange fail "[transient]"
line clock-skew ok
# Real checks in the fake, not injected: a wrong client-id.
write_conf "$T/cid.conf" 's/^client-id = CID/client-id = OTHER/'
doc 1 "$T/cid.conf"
line exchange fail "client identifier invalid"
# TLS is verified: without ca-file the fake's certificate is refused.
write_conf "$T/noca.conf" '/^ca-file/d'
doc 1 "$T/noca.conf"
line exchange fail "[transient]"
fix exchange "ca-file"
line clock-skew warn "not measured"

# ---- agent ------------------------------------------------------------------
doc 0 "$CONF" --socket "$T/elsewhere.sock" --no-exchange
line agent warn "$T/elsewhere.sock"
if [ -n "${P11JWT_AGENT:-}" ] && [ -x "${P11JWT_AGENT:-}" ]; then
    write_conf "$T/agent.conf" '/^timeout = /a allow-uid = root'
    "$P11JWT_AGENT" -c "$T/agent.conf" --foreground >"$T/agent.log" 2>&1 &
    AGENT_PID=$!
    on_exit "kill $AGENT_PID 2>/dev/null; wait $AGENT_PID 2>/dev/null"
    for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
    doc 0 "$T/agent.conf" --no-exchange
    line agent ok "key open"
    kill "$AGENT_PID" 2>/dev/null; wait "$AGENT_PID" 2>/dev/null || true
    doc 0 "$T/agent.conf" --no-exchange
    line agent warn "not running"
else
    fail "P11JWT_AGENT is not set: the running-agent case cannot run"
fi

# ---- usage -----------------------------------------------------------------
expect_fail "unknown option" 2 "Try 'p11jwt doctor --help'" "$P11JWT" doctor --bogus
expect_fail "stray argument" 2 "unexpected argument" "$P11JWT" doctor extra
expect_ok "doctor --help" "$P11JWT" doctor --help
grep -q -- "--no-exchange" "$T/out" && pass "help names --no-exchange" || fail "help"

finish
