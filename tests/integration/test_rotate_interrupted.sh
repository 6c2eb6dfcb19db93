# SPDX-License-Identifier: Apache-2.0
# A promotion killed between its two relabel steps (docs/rotation.md): the
# active key has already stepped aside (L -> L.retired-TIME), the next key
# still carries L.next, and no key is called L. `p11jwt rotate finish
# --force` is SIGKILLed at exactly that point: the fault shim slows every
# C_SetAttributeValue and its stats file shows when step 2 has begun but not
# yet touched the token. Then the agent starts on that token, finishes the
# promotion itself and serves tokens signed by the new key; rotate status
# agrees. Then a kill inside step 2 (the next key's public key and
# certificate already renamed): `p11jwt token --direct` says what happened
# and what to run, and `rotate finish --force` completes the promotion.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/agent_env.sh"
: "${P11JWT_SHIM:?run through ctest (P11JWT_SHIM is the fault shim)}"
rotation_setup
R() { "$P11JWT" rotate "$@"; }
# Every object's label. pkcs11-tool has no PIN file option: this throwaway
# token's PIN on its command line is fine.
labels() {
    pkcs11-tool --module "$SOFTHSM_MODULE" --token-label agt --login --pin "$TEST_PIN" \
        --list-objects 2>/dev/null | sed -n 's/^ *label: *//p' | sort | tr '\n' ' '
}

# kill_promotion N: run `rotate finish --force` through the shim with every
# C_SetAttributeValue delayed, and SIGKILL it while call N waits (calls 1-3
# are step 1: public key, certificate, private key of the active key).
kill_promotion() {
    local n=$1 c=0 pid i
    printf 'delay 400 C_SetAttributeValue\n' >"$T/shim.ctl"
    rm -f "$T/shim.stats"
    P11SHIM_MODULE=$SOFTHSM_MODULE P11SHIM_CTL=$T/shim.ctl P11SHIM_STATS=$T/shim.stats \
        "$P11JWT" --module "$P11JWT_SHIM" rotate finish --profile prod --force --no-agent \
        >"$T/finish.out" 2>&1 &
    pid=$!
    for i in $(seq 1 500); do
        c=$(awk '$1 == "C_SetAttributeValue" { print $2 }' "$T/shim.stats" 2>/dev/null || true)
        [ "${c:-0}" -ge "$n" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.02
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    [ "${c:-0}" -eq "$n" ] && pass "promotion killed while C_SetAttributeValue call $n waited" ||
        fail "promotion not killed at call $n (count ${c:-0}): $(cat "$T/finish.out")"
}

# ---- round 1: killed between the steps, the agent repairs ------------------
expect_ok "rotate start (agent not running)" R start --profile prod --days 30 --no-agent
next_cert_pem "$T/next.pem" || fail "cannot read the next certificate"
kill_promotion 4
l=$(labels)
case "$l" in
*"sf-jwt.next sf-jwt.next sf-jwt.next "*) pass "the next key still carries sf-jwt.next" ;;
*) fail "after the kill: labels $l" ;;
esac
printf '%s' "$l" | grep -qE '(^| )sf-jwt( |$)' && fail "a key is still called sf-jwt: $l" ||
    pass "no object is called sf-jwt: the kill landed between the steps"
[ "$(printf '%s' "$l" | grep -oE 'sf-jwt\.retired-[0-9TZ]+' | wc -l)" -eq 3 ] &&
    pass "the old key's three objects are sf-jwt.retired-*" || fail "labels: $l"

fake_control "{\"cert\": \"$T/next.pem\", \"reset_stats\": true}"
agent_start
out=$(load call '{"op":"token","profile":"prod"}')
check "the agent on the half-promoted token serves a token" '.ok == true' "$out"
check "signed by the new key (the fake checks against the next certificate)" \
    '.errors == 0 and .token_requests >= 1' "$(fake_stats)"
out=$(R status --profile prod --json --no-agent)
check "rotate status: sf-jwt active with its certificate, nothing next, one retired" \
    '.active.label == "sf-jwt" and .active.certificate != null and .next == null and (.retired | length) == 1' \
    "$out"
grep -q "interrupted" "$AGENT_LOG" || grep -q "is now 'sf-jwt'" "$AGENT_LOG" &&
    pass "the agent logged the repair" || fail "no repair in the agent log"
agent_stop
expect_ok "finish removes nothing by default, ends the rotation" R finish --profile prod --no-agent
expect_ok "finish --destroy removes the retired key" R finish --profile prod --destroy --no-agent

# ---- round 2: killed inside step 2, the direct mode repairs ---------------
expect_ok "rotate start again" R start --profile prod --days 30 --no-agent
next_cert_pem "$T/next2.pem" || fail "cannot read the second next certificate"
kill_promotion 6
l=$(labels)
printf '%s' "$l" | grep -qE '(^| )sf-jwt( |$)' && printf '%s' "$l" | grep -q 'sf-jwt.next' &&
    pass "killed inside step 2: public key and certificate renamed, private key not" ||
    fail "after the second kill: labels $l"
fake_control "{\"cert\": \"$T/next2.pem\", \"reset_stats\": true}"
expect_fail "p11jwt token --direct: the key is missing, and the message says why" 1 \
    "no private key 'sf-jwt' .*a key rotation stopped half-way: run 'p11jwt rotate finish --force'" \
    "$P11JWT" token --direct --profile prod
check "rotate status names the state: interrupted" '.state == "interrupted" and .active == null' \
    "$(R status --profile prod --json --no-agent)"
expect_ok "rotate finish --force completes the promotion" R finish --profile prod --force --no-agent
expect_ok "p11jwt token --direct after that" "$P11JWT" token --direct --profile prod
check "signed by the second new key" '.errors == 0 and .token_requests == 1' "$(fake_stats)"
check "rotate status: sf-jwt active, nothing next" '.active.label == "sf-jwt" and .next == null' \
    "$(R status --profile prod --json --no-agent)"
finish
