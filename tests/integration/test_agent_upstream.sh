# SPDX-License-Identifier: Apache-2.0
# The token endpoint goes down (503, then hanging past the timeout) while a
# token is cached and the agent's refresh-ahead fires: every client request
# still gets the cached token, the agent retries with backoff, and once the
# endpoint is back the refresh succeeds.
#
# The refresh runs at about 75% of session-lifetime, whose minimum is 300 s,
# so this test takes about four and a half minutes.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/agent_env.sh"

agent_token_setup
fake_start
agent_write_config "$T/agent.conf" "$SOFTHSM_MODULE"
sed -i 's/^session-lifetime = 7200/session-lifetime = 300/' "$T/agent.conf"
agent_start

t0=$(date +%s)
out=$(load call '{"op":"token","profile":"prod"}')
check "first token" '.ok == true' "$out"
fp=$(printf '%s' "$out" | jq -r .access_token_fp)
# Down from now on: the refresh (about t0+200..250 s) meets 503s, then hangs.
fake_control '{"status_503": 1000000, "reset_stats": true}'

# Clients ask all along; in chunks, so the fault can change when the
# refresh (random within about t0+200..250 s) has met it.
failed=0
total=0
chunk() {
    local out
    out=$(load load '{"op":"token","profile":"prod"}' --threads 4 --duration "$1" --pause-ms 20)
    failed=$((failed + $(printf '%s' "$out" | jq .failed)))
    total=$((total + $(printf '%s' "$out" | jq .ok)))
    [ "$(printf '%s' "$out" | jq .failed)" -eq 0 ] ||
        echo "  failures at t0+$(($(date +%s) - t0)): $(printf '%s' "$out" | jq -c .errors)"
}
chunk 185
while [ $(($(date +%s) - t0)) -lt 255 ] &&
    [ "$(fake_stats | jq .injected.status_503)" -lt 2 ]; do
    chunk 5
done
check "the refresh met the 503s (and retried)" '.injected.status_503 >= 2' "$(fake_stats)"
fake_control '{"status_503": 0, "hang": true}'
chunk 10
[ "$failed" -eq 0 ] && [ "$total" -gt 1000 ] &&
    pass "endpoint down (503, then hanging) while a token is cached: $total requests, zero failed" ||
    fail "endpoint down while cached: $failed of $((failed + total)) requests failed"
stats=$(fake_stats)
echo "  after $(($(date +%s) - t0)) s: $(printf '%s' "$stats" | jq -c '{token_requests, injected}')"
check "the agent kept retrying into the hang" '.injected.hang >= 1' "$stats"
check "refresh retries are backed off, not a loop" '.token_requests < 40' "$stats"
out=$(load call '{"op":"token","profile":"prod"}')
if [ $(($(date +%s) - t0)) -lt 268 ]; then
    check "still the cached token" ".access_token_fp == \"$fp\"" "$out"
fi
out=$(load call '{"op":"status"}')
check "status shows the failed refresh" \
    '.profiles[0].tokens[0].last_exchange.result != "ok" or .profiles[0].tokens[0].failures > 0' "$out"

# Back up: a new token arrives (before t0+270 the cached one is served;
# after it, a backoff slot may still be pending, so allow a while).
fake_control '{"hang": false}'
ok=0
while [ $(($(date +%s) - t0)) -lt 420 ]; do
    out=$(load call '{"op":"token","profile":"prod"}')
    if printf '%s' "$out" | jq -e ".ok == true and .access_token_fp != \"$fp\"" >/dev/null; then
        ok=1
        break
    fi
    if [ $(($(date +%s) - t0)) -lt 266 ] && ! printf '%s' "$out" | jq -e '.ok == true' >/dev/null; then
        fail "request failed while the old token was valid: $out"
        break
    fi
    sleep 1
done
[ "$ok" -eq 1 ] && pass "endpoint back: a new token after $(($(date +%s) - t0)) s" ||
    fail "no new token by t0+420 s"
agent_stop
finish
