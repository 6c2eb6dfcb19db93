# SPDX-License-Identifier: Apache-2.0
# p11jwt-agent under load: 1,000 concurrent cold `token` requests cause
# exactly one POST (single-flight); 200 concurrent clients are all answered;
# a cold exchange against a dead endpoint fails fast and cleanly; HSM faults
# injected with the PKCS#11 shim in the middle of a load are recovered from
# without a restart.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/agent_env.sh"
: "${P11JWT_SHIM:?run through ctest, or set P11JWT_SHIM to the p11shim module}"
[ -r "$P11JWT_SHIM" ] || { echo "FAIL: no shim module $P11JWT_SHIM" >&2; exit 1; }

# 1,000 client connections plus the agent's own fds.
ulimit -n 8192 || { echo "FAIL: cannot raise the fd limit to 8192" >&2; exit 1; }

agent_token_setup
fake_start
# The agent loads the shim, which forwards to SoftHSM2 and injects faults.
export P11SHIM_MODULE=$SOFTHSM_MODULE P11SHIM_CTL=$T/shim.ctl P11SHIM_STATS=$T/shim.stats
: >"$P11SHIM_CTL"
agent_write_config "$T/agent.conf" "$P11JWT_SHIM"
agent_start

# ---- single-flight: 1,000 cold requests, one POST --------------------------
fake_control '{"delay_ms": 2000, "reset_stats": true}'
out=$(load --timeout 90 concurrent 1000 '{"op":"token","profile":"prod"}')
echo "  1000 cold: $out"
check "1,000 concurrent cold token requests: all answered ok" '.ok == 1000' "$out"
check "1,000 concurrent cold token requests: one token" '.distinct_tokens == 1' "$out"
stats=$(fake_stats)
check "1,000 concurrent cold token requests: exactly one POST" '.token_requests == 1' "$stats"
check "the fake accepted the agent's assertion" '.ok == 1 and .last_claims.iss == "'"$CLIENT_ID"'"' "$stats"
fake_control '{"delay_ms": 0}'

# ---- 200 concurrent clients --------------------------------------------------
out=$(load concurrent 200 '{"op":"token","profile":"prod"}')
check "200 concurrent cached token requests: all answered ok" '.ok == 200 and .distinct_tokens == 1' "$out"
out=$(load concurrent 200 '{"op":"assertion","profile":"prod"}')
check "200 concurrent assertions (each signed on the token): all ok, all distinct" \
    '.ok == 200 and .distinct_tokens == 200' "$out"
out=$(load concurrent 200 '{"op":"status"}')
check "200 concurrent status requests: all ok" '.ok == 200' "$out"
check "still one POST after all that" '.token_requests == 1' "$(fake_stats)"

# ---- a cold exchange against a failing endpoint --------------------------------
fake_control '{"status_503": 1000}'
t0=$(date +%s%N)
out=$(load concurrent 20 "{\"op\":\"token\",\"profile\":\"prod\",\"subject\":\"$SUBJECT2\"}")
t1=$(date +%s%N)
check "cold token with the endpoint answering 503: token_unavailable for every caller" \
    '.outcomes["error:token_unavailable"] == 20' "$out"
[ $(((t1 - t0) / 1000000)) -lt 10000 ] && pass "failing endpoint answered within 10 s" ||
    fail "failing endpoint took $(((t1 - t0) / 1000000)) ms"
out=$(load call "{\"op\":\"token\",\"profile\":\"prod\",\"subject\":\"$SUBJECT2\"}")
check "during the backoff: token_unavailable with retry_after" \
    '.error == "token_unavailable" and .retry_after >= 0 and (.message | length) > 0' "$out"
out=$(load call '{"op":"token","profile":"prod"}')
check "the other subject's cached token is still served" '.ok == true' "$out"
fake_control '{"status_503": 0}'

# ---- HSM faults in the middle of a load ----------------------------------------
shim_write() { printf '%s\n' "$1" >"$T/shim.ctl.tmp" && mv "$T/shim.ctl.tmp" "$P11SHIM_CTL"; }
load load '{"op":"assertion","profile":"prod"}' '{"op":"token","profile":"prod"}' \
    --threads 4 --duration 12 >"$T/hsmload.json" &
L=$!
sleep 2
shim_write 'CKR_DEVICE_ERROR sign 3'
sleep 1
shim_write 'closeall'
sleep 1
shim_write 'CKR_SESSION_HANDLE_INVALID sign 5'
sleep 1
shim_write 'CKR_DEVICE_REMOVED sign,session 2'
sleep 1
shim_write '# no faults'
wait "$L" || true
out=$(cat "$T/hsmload.json")
echo "  hsm faults: $(printf '%s' "$out" | jq -c '{ok, failed, errors, timeline}')"
check "HSM faults mid-load: requests answered throughout" '.ok > 100' "$out"
check "HSM faults mid-load: only unavailable errors, no I/O errors" \
    '[.errors | keys[] | select(. != "error:unavailable")] | length == 0' "$out"
check "after the faults: the last 4 s all succeed" \
    '.timeline[8:12] | all(.[0] > 0 and .[1] == 0)' "$out"
grep -qE '^fault:C_Sign(Init)? [1-9]' "$P11SHIM_STATS" && pass "the shim injected sign faults" ||
    fail "no sign fault was injected: $(cat "$P11SHIM_STATS" 2>/dev/null | tr '\n' ' ')"
grep -qE '^closeall [1-9]' "$P11SHIM_STATS" && pass "the shim closed all sessions" ||
    fail "closeall did not happen"
grep -qE '^violation [1-9]' "$P11SHIM_STATS" && fail "the agent used one session from two threads" ||
    pass "no concurrent use of a session"
kill -0 "$AGENT_PID" && pass "the agent recovered without a restart (same pid)" || fail "the agent died"
out=$(load call '{"op":"status"}')
check "status: key open and signer recoveries counted" \
    '.profiles[] | select(.name == "prod") | .key_open == true and .signer.recoveries > 0' "$out"

agent_stop
[ "$AGENT_RC" -eq 0 ] && pass "SIGTERM after the load: exit 0" || fail "exit $AGENT_RC"
finish
