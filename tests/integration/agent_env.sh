# SPDX-License-Identifier: Apache-2.0
# Shared by tests/integration/test_agent_*.sh (source after lib.sh): a token
# with a key and certificate, the fake Salesforce endpoint, an agent config
# and a running p11jwt-agent, all under $T and all stopped on exit.
#
#   agent_token_setup        SoftHSM2 token "agt", key KEY_URI, cert.pem
#   fake_start [ARGS..]      the fake endpoint (FAKE_PORT, $T/ca.pem)
#   agent_write_config FILE [EXTRA_PROFILE_LINES]   profile "prod" (+ "other")
#   agent_start [CONF]       start the agent, wait for its socket (AGENT_PID)
#   agent_stop               SIGTERM, wait; AGENT_RC holds the exit status
#   rotation_setup           token + certificate on it, fake, one-profile
#                            config in P11JWT_CONFIG (rotation tests)
#   next_cert_pem OUT        the certificate labelled sf-jwt.next, as PEM
#   load ARGS..              tests/integration/agent_load.py --socket $SOCK
#   fake_stats | jq ..       the fake's counters
: "${P11JWT_AGENT:?run through ctest, or set P11JWT_AGENT}"
PY=/usr/bin/python3
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOADPY=$HERE/agent_load.py
FAKEPY=$HERE/../fakes/fake_salesforce.py
CLIENT_ID=3MVGfakeClientId
SUBJECT=integration@example.com
SUBJECT2=etl@example.com
need jq
need "$PY"
$PY -c 'import jwt, cryptography' 2>/dev/null ||
    { echo "FAIL: /usr/bin/python3 lacks python3-jwt/python3-cryptography" >&2; exit 1; }

# The socket lives outside $T (0700) so a test can connect as another user.
SOCKROOT=$(mktemp -d /tmp/p11jwt-sock.XXXXXX)
chmod 711 "$SOCKROOT"
SOCK=$SOCKROOT/run/agent.sock
on_exit 'rm -rf "$SOCKROOT"'
AGENT_LOG=$T/agent.log
AGENT_PID=
FAKE_PID=

agent_token_setup() {
    softhsm_init agt
    PIN=$(pin_file)
    KEY_URI="pkcs11:token=agt;object=sf-jwt;type=private"
    "$P11JWT" keygen --key "$KEY_URI" --pin-source "file:$PIN" >/dev/null 2>"$T/err" ||
        { cat "$T/err" >&2; echo "FAIL: keygen" >&2; exit 1; }
    if ! "$P11JWT" cert self-signed --key "$KEY_URI" --pin-source "file:$PIN" \
        --subject CN=p11jwt-test --out "$T/cert.pem" >/dev/null 2>"$T/err"; then
        # Without the cert command: a certificate carrying the token's public
        # key, signed by a throwaway key (the fake only needs the public key).
        need pkcs11-tool
        pkcs11-tool --module "$P11JWT_MODULE" --token-label agt --read-object \
            --type pubkey --label sf-jwt -o "$T/pub.der" >/dev/null 2>&1
        openssl pkey -pubin -inform DER -in "$T/pub.der" -out "$T/pub.pem"
        openssl genpkey -algorithm RSA -out "$T/throwaway.key" 2>/dev/null
        openssl x509 -new -force_pubkey "$T/pub.pem" -subj /CN=p11jwt-test \
            -key "$T/throwaway.key" -days 30 -out "$T/cert.pem"
    fi
}

fake_start() {
    rm -f "$T/fake.port"
    [ -f "$T/fake.ctl" ] || echo '{}' >"$T/fake.ctl"
    $PY "$FAKEPY" --port 0 --port-file "$T/fake.port" --ca-out "$T/ca.pem" \
        --client-id "$CLIENT_ID" --cert "$T/cert.pem" --quiet \
        --control "$T/fake.ctl" "$@" 2>"$T/fake.log" &
    FAKE_PID=$!
    on_exit 'kill $FAKE_PID 2>/dev/null; wait $FAKE_PID 2>/dev/null'
    local i
    for i in $(seq 1 150); do
        [ -s "$T/fake.port" ] && break
        kill -0 "$FAKE_PID" 2>/dev/null ||
            { cat "$T/fake.log" >&2; echo "FAIL: fake endpoint died" >&2; exit 1; }
        sleep 0.1
    done
    [ -s "$T/fake.port" ] || { echo "FAIL: fake endpoint not ready" >&2; exit 1; }
    FAKE_PORT=$(cat "$T/fake.port")
}

fake_stats() { $PY "$LOADPY" fake-stats --port-file "$T/fake.port" --ca "$T/ca.pem"; }
fake_control() {
    $PY "$LOADPY" fake-control --port-file "$T/fake.port" --ca "$T/ca.pem" "$1" >/dev/null
}
fake_posts() { fake_stats | jq .token_requests; }

# agent_write_config FILE [MODULE] [extra lines for profile prod]
agent_write_config() {
    local f=$1 module=${2:-$SOFTHSM_MODULE} extra=${3:-}
    cat >"$f" <<CONF
[agent]
socket = $SOCK
socket-group = nogroup
module = $module

[profile prod]
key = $KEY_URI
pin-source = file:$PIN
client-id = $CLIENT_ID
subject = $SUBJECT
subjects = $SUBJECT2
login-url = https://127.0.0.1:$FAKE_PORT
audience = https://login.salesforce.com
session-lifetime = 7200
allow-uid = root
ca-file = $T/ca.pem
timeout = 5
connect-timeout = 2
$extra

[profile other]
key = $KEY_URI
pin-source = file:$PIN
client-id = $CLIENT_ID
subject = other@example.com
login-url = https://127.0.0.1:$FAKE_PORT
audience = https://login.salesforce.com
allow-uid = 4242
ca-file = $T/ca.pem
CONF
}

agent_start() {
    local conf=${1:-$T/agent.conf} i
    "$P11JWT_AGENT" -c "$conf" --foreground >>"$AGENT_LOG" 2>&1 &
    AGENT_PID=$!
    on_exit '[ -n "$AGENT_PID" ] && kill $AGENT_PID 2>/dev/null; wait $AGENT_PID 2>/dev/null'
    for i in $(seq 1 200); do
        if [ -S "$SOCK" ] && $PY "$LOADPY" --socket "$SOCK" --timeout 2 call \
            '{"op":"health"}' >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$AGENT_PID" 2>/dev/null ||
            { sed 's/^/  | /' "$AGENT_LOG" >&2; echo "FAIL: agent exited at start" >&2; exit 1; }
        sleep 0.1
    done
    sed 's/^/  | /' "$AGENT_LOG" >&2
    echo "FAIL: agent socket $SOCK not ready after 20 s" >&2
    exit 1
}

agent_stop() {
    AGENT_RC=0
    [ -n "$AGENT_PID" ] || return 0
    kill -TERM "$AGENT_PID" 2>/dev/null || true
    wait "$AGENT_PID" || AGENT_RC=$?
    AGENT_PID=
}

load() { $PY "$LOADPY" --socket "$SOCK" "$@"; }

rotation_setup() {
    need pkcs11-tool
    need openssl
    agent_token_setup
    # The active key's certificate on the token, beside the key (rotate
    # start takes its subject for the next one).
    "$P11JWT" cert import --key "$KEY_URI" --pin-source "file:$PIN" --in "$T/cert.pem" \
        >/dev/null 2>"$T/err" || { cat "$T/err" >&2; echo "FAIL: cert import" >&2; exit 1; }
    fake_start
    agent_write_config "$T/agent.conf" "$SOFTHSM_MODULE"
    # One profile only: "other" shares the key URI and is not needed here.
    sed -i '/^\[profile other\]/,$d' "$T/agent.conf"
    export P11JWT_CONFIG=$T/agent.conf P11JWT_SOCKET=$SOCK
}

next_cert_pem() {
    pkcs11-tool --module "$SOFTHSM_MODULE" --token-label agt --read-object --type cert \
        --label sf-jwt.next -o "$1.der" >/dev/null 2>&1 &&
        openssl x509 -inform DER -in "$1.der" -out "$1"
}

# check DESC JQ_EXPR JSON: pass when the jq expression is true for JSON.
check() {
    local desc=$1 expr=$2 json=$3
    if printf '%s\n' "$json" | jq -e "$expr" >/dev/null 2>&1; then
        pass "$desc"
    else
        fail "$desc: $expr is not true for: $(printf '%s' "$json" | head -c 600)"
    fi
}
