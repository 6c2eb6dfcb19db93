#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The main job on an embedded default: a SoftHSM2 token under a local state
# folder, an RSA key generated on it, a self-signed certificate made through
# the token key, the agent, and an access token fetched with `p11jwt token`.
#
# Without SF_CLIENT_ID/SF_USERNAME/SF_LOGIN_URL it starts a local fake
# Salesforce token endpoint (HTTPS with a throwaway CA; it verifies the
# signature with python3-jwt). With them set it talks to the real org.
#
# Idempotent: the token, key, PIN and certificate are made once and reused.
# State: $P11JWT_STATE (default .p11jwt-demo/ in the repository).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

step() { printf '\n== %s\n' "$*"; }

step "installing what is missing (Debian packages)"
scripts/deps.sh

step "building"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" >/dev/null
P11JWT=$repo/build/cli/p11jwt
AGENT=$repo/build/agent/p11jwt-agent

STATE=${P11JWT_STATE:-$repo/.p11jwt-demo}
mkdir -p "$STATE/softhsm/tokens" "$STATE/run"
chmod 700 "$STATE" "$STATE/run"
export SOFTHSM2_CONF=$STATE/softhsm/softhsm2.conf
export P11JWT_MODULE=/usr/lib/softhsm/libsofthsm2.so
TOKEN=p11jwt-demo
KEY="pkcs11:token=$TOKEN;object=sf-jwt;type=private"
CERT_URI="pkcs11:token=$TOKEN;object=sf-jwt;type=cert"
PIN_FILE=$STATE/user.pin

step "token '$TOKEN' (SoftHSM2, $STATE/softhsm)"
if [ ! -f "$SOFTHSM2_CONF" ]; then
    cat >"$SOFTHSM2_CONF" <<CONF
directories.tokendir = $STATE/softhsm/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
fi
if ! softhsm2-util --show-slots 2>/dev/null | grep -q "Label: *$TOKEN *$"; then
    # The PINs are made here, kept 0600 in the state folder, never printed.
    (umask 077; openssl rand -hex 12 >"$PIN_FILE"; openssl rand -hex 12 >"$STATE/so.pin")
    softhsm2-util --init-token --free --label "$TOKEN" \
        --pin "$(cat "$PIN_FILE")" --so-pin "$(cat "$STATE/so.pin")" >/dev/null
    echo "initialised"
    rm -f "$STATE/sf-jwt.crt"
else
    echo "exists"
fi

step "key $KEY"
if [ ! -f "$STATE/sf-jwt.crt" ]; then
    "$P11JWT" keygen --key "$KEY" --bits 2048 --pin-source "file:$PIN_FILE"
    "$P11JWT" cert self-signed --key "$KEY" --pin-source "file:$PIN_FILE" \
        --subject "CN=p11jwt demo,O=p11jwt" --days 365 --store \
        --out "$STATE/sf-jwt.crt"
else
    echo "exists; certificate $STATE/sf-jwt.crt"
fi
"$P11JWT" cert show --cert "$STATE/sf-jwt.crt" --key "$KEY" \
    --pin-source "file:$PIN_FILE"

pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

if [ -n "${SF_CLIENT_ID:-}" ] && [ -n "${SF_USERNAME:-}" ] && [ -n "${SF_LOGIN_URL:-}" ]; then
    step "real org: $SF_LOGIN_URL"
    CLIENT_ID=$SF_CLIENT_ID USERNAME=$SF_USERNAME LOGIN_URL=$SF_LOGIN_URL
    CA_LINE=""
    # Default aud follows login-url (docs/salesforce.md); SF_AUDIENCE overrides.
    AUD_LINE=${SF_AUDIENCE:+audience = $SF_AUDIENCE}
else
    step "fake Salesforce token endpoint on 127.0.0.1"
    CLIENT_ID=3MVG9demo.client.id USERNAME=demo@example.com
    rm -f "$STATE/run/fake.port"
    /usr/bin/python3 tests/fakes/fake_salesforce.py --port 0 \
        --port-file "$STATE/run/fake.port" --ca-out "$STATE/run/fake-ca.pem" \
        --client-id "$CLIENT_ID" --user "$USERNAME" \
        --cert "$STATE/sf-jwt.crt" --quiet &
    pids+=($!)
    for _ in $(seq 100); do [ -s "$STATE/run/fake.port" ] && break; sleep 0.1; done
    [ -s "$STATE/run/fake.port" ] || { echo "demo: the fake endpoint did not start" >&2; exit 1; }
    LOGIN_URL=https://127.0.0.1:$(cat "$STATE/run/fake.port")
    CA_LINE="ca-file = $STATE/run/fake-ca.pem"
    AUD_LINE="audience = https://login.salesforce.com"
    echo "listening at $LOGIN_URL"
fi

CONF=$STATE/p11jwt.conf
cat >"$CONF" <<CONF
# Written by scripts/demo.sh.
[agent]
socket = $STATE/run/agent.sock
module = $P11JWT_MODULE

[profile demo]
key = $KEY
cert = $CERT_URI
pin-source = file:$PIN_FILE
client-id = $CLIENT_ID
subject = $USERNAME
login-url = $LOGIN_URL
$AUD_LINE
allow-uid = $(id -u)
$CA_LINE
CONF

step "agent"
rm -f "$STATE/run/agent.sock"
"$AGENT" -c "$CONF" --foreground 2>"$STATE/run/agent.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$STATE/run/agent.sock" ] && break; sleep 0.1; done
[ -S "$STATE/run/agent.sock" ] || { echo "demo: the agent did not start:" >&2; cat "$STATE/run/agent.log" >&2; exit 1; }
echo "serving on $STATE/run/agent.sock"
export P11JWT_SOCKET=$STATE/run/agent.sock

step "p11jwt token --profile demo"
# The token is a credential: show its shape, not its value.
"$P11JWT" token --profile demo --format json >"$STATE/run/token.json"
/usr/bin/python3 - "$STATE/run/token.json" <<'PY'
import hashlib, json, sys
t = json.load(open(sys.argv[1]))
print("access token sha256 %s... for %s at %s (expires_at %s)" % (
    hashlib.sha256(t["access_token"].encode()).hexdigest()[:12],
    t["subject"], t["instance_url"], t["expires_at"]))
PY
rm -f "$STATE/run/token.json"

step "p11jwt status"
"$P11JWT" status

echo
echo "demo: ok (state in $STATE; the agent log is $STATE/run/agent.log)"
