# SPDX-License-Identifier: Apache-2.0
# p11jwt-agent over its socket, against SoftHSM2 and the fake Salesforce
# endpoint: answers, `p11jwt status`, pipelining, bad input of every kind
# (while a well-behaved client keeps being served), invalidate, forbidden
# callers, SIGHUP reloads, SIGTERM, the audit log, and no secret in the log.
TEST_PIN='Pin-7391-5824' # distinctive, so the log can be grepped for it
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/agent_env.sh"

agent_token_setup
fake_start
agent_write_config "$T/agent.conf"
SECRETS=$T/secrets.txt
lr() { load --reveal "$SECRETS" "$@"; }

# ---- the agent is down: a clear message, exit 1 -------------------------
expect_fail "status with no agent: exit 1 and says how to fix it" 1 \
    "agent not running at $SOCK \(connect: No such file or directory\); start p11jwt-agent or use --direct" \
    "$P11JWT" status --socket "$SOCK"
expect_fail "status --json with no agent: exit 1" 1 "agent not running at $SOCK" \
    env P11JWT_SOCKET="$SOCK" "$P11JWT" status --json
expect_fail "status: bad option is a usage error" 2 "Try 'p11jwt status --help'" \
    "$P11JWT" status --bogus
expect_ok "status --help" "$P11JWT" status --help
grep -q -- "--json" "$T/out" && pass "status --help lists --json" || fail "status --help lacks --json"

# A socket we may not connect to: the message names who may.
$PY - "$SOCKROOT/closed.sock" <<'EOF' &
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o600)
s.listen(1); time.sleep(20)
EOF
CLOSED_PID=$!
on_exit 'kill $CLOSED_PID 2>/dev/null'
for _ in $(seq 1 50); do [ -S "$SOCKROOT/closed.sock" ] && break; sleep 0.1; done
expect_fail "status as a user the socket refuses: names owner and group" 1 \
    "permission denied connecting to the agent at $SOCKROOT/closed.sock: socket .* mode 0600, owner uid 0 \(root\), group root \(gid 0\).*you are uid 65534" \
    setpriv --reuid=65534 --regid=65534 --clear-groups "$P11JWT" status --socket "$SOCKROOT/closed.sock"
kill "$CLOSED_PID" 2>/dev/null || true

# ---- start -----------------------------------------------------------------
agent_start
st=$(stat -c '%a %G' "$SOCK")
[ "$st" = "660 nogroup" ] && pass "socket is 0660 group socket-group" || fail "socket mode/group: $st"
st=$(stat -c '%a' "$(dirname "$SOCK")")
[ "$st" = "750" ] && pass "socket directory is 0750" || fail "socket directory mode $st"

out=$(lr call '{"op":"health"}')
check "health answers ok" '.ok == true and .status == "ok"' "$out"

out=$(lr call '{"op":"token","profile":"prod","id":"a1"}')
check "token: shape of DESIGN 3.2" '.ok == true and .token_type == "Bearer" and
    (.access_token_fp | length) == 12 and .profile == "prod" and
    .subject == "integration@example.com" and .id == "a1" and
    (.instance_url | startswith("https://127.0.0.1:")) and
    .expires_at > .issued_at' "$out"
fp1=$(printf '%s' "$out" | jq -r .access_token_fp)
out=$(lr call '{"op":"token","profile":"prod"}' '{"op":"token"}' 2>&1 || true)
check "second token comes from the cache" "(.access_token_fp // \"\") == \"$fp1\"" \
    "$(printf '%s\n' "$out" | head -1)"
check "no profile named with two profiles: bad_request" '.error == "bad_request"' \
    "$(printf '%s\n' "$out" | sed -n 2p)"
check "one POST for two token requests" '.token_requests == 1' "$(fake_stats)"

out=$(lr call "{\"op\":\"token\",\"profile\":\"prod\",\"subject\":\"$SUBJECT2\"}")
check "token for a listed subject" ".ok == true and .subject == \"$SUBJECT2\"" "$out"
check "the fake saw that subject" ".last_claims.sub == \"$SUBJECT2\"" "$(fake_stats)"
out=$(lr call '{"op":"token","profile":"prod","subject":"boss@example.com"}')
check "token for an unlisted subject: forbidden" '.ok == false and .error == "forbidden"' "$out"

out=$(lr call '{"op":"assertion","profile":"prod"}')
check "assertion: fresh JWT with jti and exp <= now+300" \
    ".ok == true and (.assertion_fp | length) == 12 and (.jti | length) > 0 and
     .expires_at <= $(($(date +%s) + 301))" "$out"

# ---- p11jwt status ---------------------------------------------------------
expect_ok "p11jwt status" "$P11JWT" status --socket "$SOCK"
cp "$T/out" "$T/status.txt"
sed "s/^/  | /" "$T/status.txt"
grep -qE '^PROFILE +SUBJECT +STATE +TOKEN AGE +EXPIRES IN +LAST EXCHANGE +CLASS +CLOCK SKEW +CERT EXPIRES' "$T/status.txt" &&
    pass "status: table header" || fail "status header: $(head -5 "$T/status.txt")"
grep -qE "^prod +$SUBJECT +(valid|refreshing) +[0-9]+s +1h[0-9]{2}m +ok" "$T/status.txt" &&
    pass "status: a row for the cached token (age, expires in, last exchange)" ||
    fail "status row: $(cat "$T/status.txt")"
grep -qE "^prod +$SUBJECT2 " "$T/status.txt" && pass "status: a row per subject" ||
    fail "status lacks $SUBJECT2"
grep -qE "^  prod +pkcs11:token=agt;object=sf-jwt;type=private +open, [0-9]+ signatures" "$T/status.txt" &&
    pass "status: key line" || fail "status key line: $(cat "$T/status.txt")"
expect_ok "status through P11JWT_SOCKET --json" env P11JWT_SOCKET="$SOCK" "$P11JWT" status --json
check "status --json is the agent's answer" \
    '.ok == true and (.profiles | map(.name) | index("prod")) != null' "$(cat "$T/out")"
expect_ok "status finds the socket in -c FILE" "$P11JWT" -c "$T/agent.conf" status
expect_ok "status -c FILE after the command" "$P11JWT" status -c "$T/agent.conf" --json
expect_fail "status -c missing file: exit 1 naming it" 1 "$T/nope.conf" \
    "$P11JWT" status -c "$T/nope.conf"
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$P11JWT" status --socket "$SOCK" 2>&1) &&
    printf '%s' "$out" | grep -q "No profiles you may use" &&
    pass "status as a user with no profiles: connects, lists none" ||
    fail "status as nobody: $out"

# ---- pipelining --------------------------------------------------------------
out=$(lr pipeline 200 --profile prod)
check "200 pipelined requests answered in order" \
    '.in_order == true and .answers == 200 and .outcomes["error:unknown_op"] > 0' "$out"

# ---- bad input; a well-behaved client is served all along -------------------
lr load '{"op":"token","profile":"prod"}' --threads 2 --duration 14 --pause-ms 5 >"$T/bg.json" &
BG=$!
sleep 0.5
out=$(lr raw --oversized 9000 --wait 5)
check "oversized line: bad_request" '.error == "bad_request"' "$(printf '%s\n' "$out" | head -1)"
check "oversized line: then the connection is closed" '.end == "EOF" or .end == "RESET"' "$(printf '%s\n' "$out" | tail -1)"
out=$(lr raw --line '{"op":"token",' --line '{"op":"health"}' --answers 2 --wait 5)
check "malformed JSON: bad_request" '.error == "bad_request"' "$(printf '%s\n' "$out" | sed -n 1p)"
check "malformed JSON: the connection keeps working" '.ok == true' "$(printf '%s\n' "$out" | sed -n 2p)"
out=$(lr raw --line '{"op":"fly"}' --answers 1)
check "unknown op: unknown_op" '.error == "unknown_op" and (.message | length) > 0' "$(printf '%s\n' "$out" | head -1)"
out=$(lr raw --line '{"op":"token","profile":7}' --answers 1)
check "profile as a number: bad_request" '.error == "bad_request"' "$(printf '%s\n' "$out" | head -1)"
out=$(lr raw --line '{"op":["token"]}' --answers 1)
check "op as an array: bad_request" '.error == "bad_request"' "$(printf '%s\n' "$out" | head -1)"
out=$(lr raw --line '[1,2,3]' --answers 1)
check "not an object: bad_request" '.error == "bad_request"' "$(printf '%s\n' "$out" | head -1)"
out=$(lr raw --line '{"op":"health","op":"token"}' --answers 1)
check "duplicate key: bad_request" '.error == "bad_request"' "$(printf '%s\n' "$out" | head -1)"
out=$(lr raw --line '{"op":"token","profile":"prod","colour":"blue"}' --answers 1)
check "unknown field: bad_request naming it" '.error == "bad_request" and (.message | test("colour"))' "$(printf '%s\n' "$out" | head -1)"
out=$(lr raw --line '{"op":"token","profile":"nope"}' --answers 1)
check "unknown profile: unknown_profile listing profiles" '.error == "unknown_profile" and (.message | test("prod"))' "$(printf '%s\n' "$out" | head -1)"
out=$(lr raw --line "$(printf '{"op":"health"\x01}')" --answers 1)
check "control byte in the line: bad_request" '.error == "bad_request"' "$(printf '%s\n' "$out" | head -1)"
out=$(lr raw --line '{"op":"invalidate","profile":"prod"}' --answers 1)
check "invalidate without access_token: bad_request" '.error == "bad_request"' "$(printf '%s\n' "$out" | head -1)"
t0=$(date +%s)
out=$(lr raw --half '{"op":"heal' --wait 25)
t1=$(date +%s)
check "slow client (half a line): the agent hangs up" '.end == "EOF" or .end == "RESET"' "$(printf '%s\n' "$out" | tail -1)"
[ $((t1 - t0)) -ge 9 ] && [ $((t1 - t0)) -le 20 ] && pass "slow client timed out after $((t1 - t0)) s (limit 10 s)" ||
    fail "slow client timed out after $((t1 - t0)) s, wanted about 10"
echo "  slow client saw: $(printf '%s' "$out" | tr '\n' ' ')"
wait "$BG" || true
check "a well-behaved client was served all along" '.failed == 0 and .ok > 100' "$(cat "$T/bg.json")"
kill -0 "$AGENT_PID" && pass "agent survived the bad input" || fail "agent died"

# ---- invalidate ---------------------------------------------------------------
p0=$(fake_posts)
out=$(lr call '{"op":"token","profile":"prod"}' \
    '{"op":"invalidate","profile":"prod","access_token":"@TOKEN"}' \
    '{"op":"token","profile":"prod"}' \
    '{"op":"invalidate","profile":"prod","access_token":"@TOKEN0"}' \
    '{"op":"token","profile":"prod"}')
p1=$(fake_posts)
a=$(printf '%s\n' "$out" | sed -n 1p | jq -r .access_token_fp)
b=$(printf '%s\n' "$out" | sed -n 3p | jq -r .access_token_fp)
c=$(printf '%s\n' "$out" | sed -n 5p | jq -r .access_token_fp)
check "invalidate with the current token: invalidated" '.invalidated == true' "$(printf '%s\n' "$out" | sed -n 2p)"
check "invalidate with an old token: not invalidated" '.invalidated == false' "$(printf '%s\n' "$out" | sed -n 4p)"
[ "$a" != "$b" ] && [ "$b" = "$c" ] && pass "a new token after invalidate, kept after the old-token invalidate" ||
    fail "tokens a=$a b=$b c=$c"
[ $((p1 - p0)) -eq 1 ] && pass "invalidate current + old: exactly one POST" || fail "invalidate caused $((p1 - p0)) POSTs"
p0=$(fake_posts)
out=$(lr concurrent 50 '{"op":"invalidate","profile":"prod","access_token":"@TOKEN"}' \
    --token-req '{"op":"token","profile":"prod"}')
sleep 1
out2=$(lr concurrent 50 '{"op":"token","profile":"prod"}' --expect-ok)
p1=$(fake_posts)
check "50 clients invalidate the same token: all answered" '.ok == 50' "$out"
check "then 50 token requests: one token" '.ok == 50 and .distinct_tokens == 1' "$out2"
[ $((p1 - p0)) -eq 1 ] && pass "50 invalidates of one token: exactly one POST" || fail "50 invalidates: $((p1 - p0)) POSTs"

# ---- forbidden ---------------------------------------------------------------
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups $PY "$LOADPY" --socket "$SOCK" \
    call '{"op":"token","profile":"prod"}' '{"op":"assertion","profile":"prod"}' '{"op":"health"}' 2>&1)
check "uid 65534 not allowed: forbidden naming uid and profile" \
    '.error == "forbidden" and (.message | test("65534")) and (.message | test("prod"))' \
    "$(printf '%s\n' "$out" | sed -n 1p)"
check "uid 65534: assertion forbidden too" '.error == "forbidden"' "$(printf '%s\n' "$out" | sed -n 2p)"
check "uid 65534: health needs no authorisation" '.ok == true' "$(printf '%s\n' "$out" | sed -n 3p)"

# ---- SIGHUP -------------------------------------------------------------------
cp "$T/agent.conf" "$T/agent.conf.good"
printf '[profile prod]\nkey = %s\naudiance = typo\n' "$KEY_URI" >"$T/agent.conf"
p0=$(fake_posts)
kill -HUP "$AGENT_PID"
sleep 1
kill -0 "$AGENT_PID" && pass "SIGHUP with a broken config: still running" || fail "agent died on a broken config"
out=$(lr call '{"op":"token","profile":"prod"}' '{"op":"token","profile":"other"}')
check "broken config rejected: old profile still served" '.ok == true' "$(printf '%s\n' "$out" | sed -n 1p)"
check "broken config rejected: other profile still known" '.error != "unknown_profile"' "$(printf '%s\n' "$out" | sed -n 2p)"
[ "$(fake_posts)" -eq "$p0" ] && pass "broken reload kept the cached token" || fail "broken reload caused a POST"
grep -q "audiance" "$AGENT_LOG" && pass "the reason for the refused reload is logged" ||
    fail "log does not name the bad key"

# Change only profile other: prod keeps its cached token.
sed 's/^subject = other@example.com/subject = other2@example.com/' "$T/agent.conf.good" >"$T/agent.conf"
kill -HUP "$AGENT_PID"
sleep 1
p0=$(fake_posts)
out=$(lr call '{"op":"token","profile":"prod"}')
check "reload changing another profile: prod still served" '.ok == true' "$out"
[ "$(fake_posts)" -eq "$p0" ] && pass "unchanged profile kept its cached token" || fail "unchanged profile lost its token"
# Change prod: a new subject becomes allowed.
sed "s/^subjects = .*/subjects = $SUBJECT2, new@example.com/" "$T/agent.conf.good" >"$T/agent.conf"
kill -HUP "$AGENT_PID"
ok=0
for _ in $(seq 1 30); do
    out=$(lr call '{"op":"token","profile":"prod","subject":"new@example.com"}')
    if printf '%s' "$out" | jq -e '.ok == true' >/dev/null; then ok=1; break; fi
    sleep 0.2
done
[ "$ok" -eq 1 ] && pass "reload with a changed profile: new subject served" || fail "changed profile: $out"

# ---- audit and secrets --------------------------------------------------------
grep -qE 'audit: .*op=token .*profile=prod .*uid=0 .*result=ok.*token_fp=[0-9a-f]{12}' "$AGENT_LOG" &&
    pass "audit line for an issued token" || fail "no token audit line"
grep -qE 'audit: .*op=assertion .*result=ok.*jti=' "$AGENT_LOG" && pass "audit line for an assertion" ||
    fail "no assertion audit line"
grep -qE 'audit: .*uid=65534.*result=forbidden' "$AGENT_LOG" && pass "audit line for a refusal" ||
    fail "no forbidden audit line"

# ---- SIGTERM finishes in-flight work and exits 0 ------------------------------
fake_control '{"delay_ms": 1500}'
lr call '{"op":"token","profile":"prod"}' \
    '{"op":"invalidate","profile":"prod","access_token":"@TOKEN"}' \
    '{"op":"token","profile":"prod"}' >"$T/inflight.json" &
INF=$!
sleep 0.6
agent_stop
wait "$INF" || true
[ "$AGENT_RC" -eq 0 ] && pass "SIGTERM: exit 0" || fail "SIGTERM: exit $AGENT_RC"
check "SIGTERM: the in-flight token request was answered" '.ok == true' "$(sed -n 3p "$T/inflight.json")"
fake_control '{"delay_ms": 0}'
expect_fail "status after the agent stopped: exit 1, clear message" 1 \
    "agent not running at $SOCK .*start p11jwt-agent or use --direct" "$P11JWT" status --socket "$SOCK"

n=$(sort -u "$SECRETS" | wc -l)
[ "$n" -ge 5 ] && pass "collected $n distinct tokens/assertions handed to clients" || fail "only $n secrets collected"
if grep -F -q -f "$SECRETS" "$AGENT_LOG"; then fail "a token or assertion appears in the agent's log"; else
    pass "no token or assertion in the agent's log"; fi
if grep -F -q -f "$SECRETS" "$T/status.txt"; then fail "a token appears in p11jwt status"; else
    pass "no token in p11jwt status output"; fi
if grep -F -q -- "$TEST_PIN" "$AGENT_LOG"; then fail "the PIN appears in the agent's log"; else
    pass "no PIN in the agent's log"; fi
finish
