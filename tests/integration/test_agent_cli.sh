# SPDX-License-Identifier: Apache-2.0
# `p11jwt token` and `p11jwt assertion` through the agent: every format, the
# same answer shape as --direct, the assertion checked by python3-jwt against
# the certificate, and errors (unknown profile, forbidden subject, bad
# options, no agent) with their exit codes.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/agent_env.sh"

agent_token_setup
fake_start
agent_write_config "$T/agent.conf"
agent_start
export P11JWT_SOCKET=$SOCK
tok() { "$P11JWT" -c "$T/agent.conf" token --profile prod "$@"; }

expect_ok "token --format json through the agent" tok --format json
check "json: the IPC answer shape" '.ok == true and .token_type == "Bearer" and
    (.access_token | length) > 20 and .profile == "prod" and
    (.instance_url | startswith("https://")) and .expires_at > .issued_at' "$(cat "$T/out")"
TOKEN=$(jq -r .access_token "$T/out")
INSTANCE=$(jq -r .instance_url "$T/out")

expect_ok "token --format header" tok --format header
[ "$(cat "$T/out")" = "Authorization: Bearer $TOKEN" ] &&
    pass "header: the cached token" || fail "header: $(cut -c1-40 "$T/out")"
expect_ok "token --format env" tok --format env
[ "$(cat "$T/out")" = "$(printf 'SF_ACCESS_TOKEN=%s\nSF_INSTANCE_URL=%s' "$TOKEN" "$INSTANCE")" ] &&
    pass "env: SF_ACCESS_TOKEN and SF_INSTANCE_URL lines" || fail "env output"
expect_ok "token --format raw" tok --format raw
[ "$(cat "$T/out")" = "$TOKEN" ] && pass "raw: the token alone" || fail "raw output"
check "one POST for four token commands (cache)" '.token_requests == 1' "$(fake_stats)"

expect_ok "token --subject (listed)" tok --subject "$SUBJECT2" --format json
check "subject honoured" ".subject == \"$SUBJECT2\"" "$(cat "$T/out")"

expect_ok "assertion through the agent" "$P11JWT" -c "$T/agent.conf" assertion --profile prod
$PY - "$T/out" "$T/cert.pem" "$CLIENT_ID" "$SUBJECT" <<'PY' && pass "assertion verifies with python3-jwt against the certificate" || fail "assertion does not verify"
import sys, time, jwt
from cryptography import x509
jws = open(sys.argv[1]).read().strip()
pub = x509.load_pem_x509_certificate(open(sys.argv[2], "rb").read()).public_key()
c = jwt.decode(jws, pub, algorithms=["RS256"], audience="https://login.salesforce.com")
assert jwt.get_unverified_header(jws) == {"alg": "RS256"}
assert c["iss"] == sys.argv[3] and c["sub"] == sys.argv[4]
assert isinstance(c["exp"], int) and c["exp"] <= time.time() + 300 and len(c["jti"]) == 22
PY
expect_ok "assertion --format json" "$P11JWT" -c "$T/agent.conf" assertion --profile prod --format json
check "assertion json shape" '.ok == true and (.assertion | split(".") | length) == 3 and
    (.jti | length) == 22 and .expires_at > 0' "$(cat "$T/out")"

# Errors: the agent's code and message, exit 1; usage errors exit 2.
expect_fail "unknown profile: agent error named" 1 "unknown_profile" \
    "$P11JWT" -c "$T/agent.conf" token --profile nope
expect_fail "forbidden subject" 1 "forbidden" tok --subject boss@example.com
"$P11JWT" -c "$T/agent.conf" token --profile nope --format json >"$T/out" 2>/dev/null || true
check "--format json prints the error answer too" '.ok == false and .error == "unknown_profile"' "$(cat "$T/out")"
expect_fail "header is not an assertion format" 2 "unknown format 'header' \(raw or json\)" \
    "$P11JWT" assertion --format header
expect_fail "bad format" 2 "unknown format 'xml'" tok --format xml
expect_ok "token --help mentions the agent and --direct" "$P11JWT" token --help
grep -q -- "--direct" "$T/out" && grep -q "P11JWT_SOCKET" "$T/out" &&
    pass "help text" || fail "help text"

grep -qF "$TOKEN" "$AGENT_LOG" && fail "the token appears in the agent log" ||
    pass "the token never appears in the agent log"

agent_stop
expect_fail "agent stopped: clear message" 1 "agent not running at $SOCK" tok

# systemd socket activation: the listening socket is passed in (LISTEN_FDS),
# as p11jwt-agent.socket does; the agent serves on it without binding.
need systemd-socket-activate
rm -f "$SOCK"
systemd-socket-activate -E SOFTHSM2_CONF -E PJ_NO_MLOCK -l "$SOCK" \
    "$P11JWT_AGENT" -c "$T/agent.conf" --foreground >"$T/activated.log" 2>&1 &
SA_PID=$!
on_exit 'kill $SA_PID 2>/dev/null; wait $SA_PID 2>/dev/null'
# The first connection starts the agent; wait until its keys are open.
for _ in $(seq 1 100); do
    load --timeout 2 call '{"op":"health"}' 2>/dev/null | jq -e '.status == "ok"' >/dev/null 2>&1 && break
    sleep 0.2
done
expect_ok "token from a socket-activated agent" tok --format raw
[ -s "$T/out" ] && pass "socket activation: a token answered" ||
    fail "socket activation: no token"
grep -q "ready" "$T/activated.log" && pass "socket activation: the agent reported ready" ||
    fail "socket activation: no ready line"
kill -TERM "$SA_PID" 2>/dev/null; wait "$SA_PID" 2>/dev/null || true
finish
