# SPDX-License-Identifier: Apache-2.0
# Zero-downtime key rotation (docs/rotation.md): with the agent serving a
# client loop of token requests and forced refreshes (invalidate), `rotate
# start` makes the next key, the fake Salesforce switches its certificate at
# a random moment, and: zero failed client requests, exactly one extra
# exchange at the switch, the agent promotes and relabels the token; `rotate
# finish` and an agent restart keep the new key. Also: rotate status
# before/during/after, bad input, finish before promotion, the --csr flow,
# and `finish --force` of a next key the agent never saw.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/agent_env.sh"
rotation_setup
agent_start
R() { "$P11JWT" rotate "$@"; }

# ---- bad input -------------------------------------------------------------
expect_fail "no action" 2 "name an action" R
expect_fail "unknown action" 2 "unknown action 'frob'" R frob --profile prod
expect_fail "unknown profile" 1 "nope" R status --profile nope
expect_fail "stray argument" 2 "unexpected argument" R status --profile prod extra
expect_fail "--destroy outside finish" 2 "destroy is for" R start --profile prod --destroy
expect_fail "--out without --name" 2 "needs --name" R start --profile prod --out "$T/x"
expect_fail "--csr with --out" 2 "do not go together" \
    R start --profile prod --csr "$T/x.csr" --out "$T/x" --name A --contact-email a@example.com
expect_fail "bad --bits" 2 "bits" R start --profile prod --bits 1000
expect_fail "bad --subject" 2 "subject" R start --profile prod --subject "XX=1"
expect_fail "finish with nothing to finish" 1 "nothing to finish" R finish --profile prod

out=$(R status --profile prod --json)
check "status before: idle, active sf-jwt with certificate, no next" \
    '.state == "idle" and .active.label == "sf-jwt" and .active.certificate != null and .next == null' "$out"
check "status before: the agent signs with sf-jwt, nothing next" \
    '.agent.active == "sf-jwt" and .agent.next == null and .agent.promotions == 0' "$out"
ACTIVE_ID=$(printf '%s' "$out" | jq -r .active.id)

# IPC: op rotate needs the action, and only root / the agent's uid.
out=$(load call '{"op":"rotate","profile":"prod"}')
check "op rotate without action is bad_request" '.ok == false and .error == "bad_request"' "$out"
out=$(load call '{"op":"rotate","profile":"prod","action":"reload-keys","subject":"x"}')
check "op rotate refuses subject" '.ok == false and .error == "bad_request"' "$out"
out=$(load call '{"op":"token","profile":"prod","action":"reload-keys"}')
check "action only for op rotate" '.ok == false and .error == "bad_request"' "$out"
if id nobody >/dev/null 2>&1 && command -v setpriv >/dev/null; then
    out=$(setpriv --reuid=nobody --regid=nogroup --clear-groups \
        $PY "$LOADPY" --socket "$SOCK" call \
        '{"op":"rotate","profile":"prod","action":"reload-keys"}' 2>&1 || true)
    check "op rotate from another uid is forbidden" '.ok == false and .error == "forbidden"' "$out"
fi

# ---- the rotation under load -------------------------------------------------
out=$(load call '{"op":"token","profile":"prod"}')
check "a token before the rotation" '.ok == true' "$out"
fake_control '{"reset_stats": true}'

# Client loop: 4 threads ask for tokens; one thread invalidates the current
# token every 150 ms, forcing a real exchange each time. Stops when
# $T/stop appears; prints counts as JSON.
cat >"$T/client.py" <<'PY'
import json, os, socket, sys, threading, time
sock_path, stop = sys.argv[1], sys.argv[2]
lock = threading.Lock()
res = {"ok": 0, "failed": 0, "invalidated": 0, "errors": []}
latest = [None]
def conn():
    s = socket.socket(socket.AF_UNIX); s.connect(sock_path); s.settimeout(30)
    return s, s.makefile("rwb")
def call(f, req):
    f.write((json.dumps(req) + "\n").encode()); f.flush()
    return json.loads(f.readline())
def worker():
    s, f = conn()
    while not os.path.exists(stop):
        try:
            a = call(f, {"op": "token", "profile": "prod"})
        except Exception as e:
            a = {"ok": False, "error": "client:" + e.__class__.__name__}
            s, f = conn()
        with lock:
            if a.get("ok"):
                res["ok"] += 1; latest[0] = a["access_token"]
            else:
                res["failed"] += 1
                res["errors"].append({k: a.get(k) for k in ("error", "message")})
        time.sleep(0.01)
def invalidator():
    s, f = conn()
    while not os.path.exists(stop):
        time.sleep(0.15)
        tok = latest[0]
        if tok is None:
            continue
        a = call(f, {"op": "invalidate", "profile": "prod", "access_token": tok})
        if a.get("invalidated"):
            with lock:
                res["invalidated"] += 1
ts = [threading.Thread(target=worker) for _ in range(4)] + [threading.Thread(target=invalidator)]
for t in ts: t.start()
for t in ts: t.join()
res["errors"] = res["errors"][:5]
print(json.dumps(res))
PY
rm -f "$T/stop"
$PY "$T/client.py" "$SOCK" "$T/stop" >"$T/client.out" 2>"$T/client.err" &
CLIENT_PID=$!
on_exit 'touch "$T/stop"; wait $CLIENT_PID 2>/dev/null'
sleep 1

if R start --profile prod --days 30 --out "$T/eca" --name RotApp \
    --contact-email ops@example.com >"$T/start.out" 2>"$T/start.err"; then
    pass "rotate start under load"
else
    fail "rotate start: exit $?"; sed 's/^/  | /' "$T/start.err" >&2
fi
grep -q "agent: next key loaded" "$T/start.out" &&
    pass "rotate start told the agent (next key loaded)" ||
    fail "rotate start did not load the next key into the agent: $(cat "$T/start.out")"
[ -s "$T/eca/force-app/main/default/extlClntAppGlobalOauthSets/RotApp_glbloauth.ecaGlblOauth-meta.xml" ] &&
    pass "rotate start wrote the ECA metadata" || fail "no ECA metadata in $T/eca"
next_cert_pem "$T/next.pem" || fail "cannot read the next certificate from the token"
# The metadata carries exactly that certificate.
grep -q "$(sed -n 2p "$T/next.pem")" "$T"/eca/force-app/main/default/extlClntAppGlobalOauthSets/*.xml &&
    pass "the metadata carries the next certificate" ||
    fail "the metadata does not carry the next certificate"

out=$(R status --profile prod --json)
check "status during: pending, next sf-jwt.next with certificate" \
    '.state == "pending" and .next.label == "sf-jwt.next" and .next.certificate != null' "$out"
check "status during: the agent still signs with sf-jwt, next loaded, since set" \
    '.agent.active == "sf-jwt" and .agent.next == "sf-jwt.next" and .agent.since > 0 and .agent.promoted_at == null' "$out"
expect_fail "rotate start twice" 1 "already under way" R start --profile prod
expect_fail "finish before promotion" 1 "has not been made active" R finish --profile prod
R status --profile prod >"$T/status.txt" 2>&1 &&
    grep -q "next:    sf-jwt.next" "$T/status.txt" &&
    pass "status (text) names the next key" || fail "status text: $(cat "$T/status.txt")"

# Salesforce switches to the new certificate at a random moment.
sleep "$(awk -v r=$RANDOM 'BEGIN{printf "%.2f", 1 + (r % 300) / 100}')"
fake_control "{\"cert\": \"$T/next.pem\"}"
for _ in $(seq 1 100); do
    out=$(load call '{"op":"status","profile":"prod"}')
    printf '%s' "$out" | jq -e '.profiles[0].rotation.promotions == 1 and .profiles[0].rotation.relabel == "done"' >/dev/null && break
    sleep 0.1
done
check "the agent promoted the next key and relabelled the token" \
    '.profiles[0].rotation.promotions == 1 and .profiles[0].rotation.active == "sf-jwt" and .profiles[0].rotation.next == null and .profiles[0].rotation.relabel == "done" and (.profiles[0].rotation.retired | startswith("sf-jwt.retired-"))' "$out"
sleep 1.5
touch "$T/stop"
wait $CLIENT_PID || true
res=$(cat "$T/client.out")
echo "  client: $(printf '%s' "$res" | jq -c .)"
stats=$(fake_stats)
echo "  fake: $(printf '%s' "$stats" | jq -c '{token_requests, ok, errors, last_error}')"
check "zero failed client requests over the whole rotation" '.failed == 0 and .ok > 100' "$res"
check "refreshes were forced throughout (invalidations)" '.invalidated >= 10' "$res"
inv=$(printf '%s' "$res" | jq .invalidated)
check "exactly one extra exchange at the switch (one refused, one per refresh)" \
    ".errors == 1 and .last_error.error_description == \"invalid assertion\" and .token_requests == $inv + 1" "$stats"
check "the agent counted one retry and one promotion" \
    '.profiles[0].rotation.retries == 1 and .profiles[0].rotation.retries_ok == 1' \
    "$(load call '{"op":"status","profile":"prod"}')"
grep -q "op=rotate .*action=promote" "$AGENT_LOG" &&
    pass "the promotion is audited" || fail "no audit line for the promotion"

out=$(R status --profile prod --json)
check "status after: rotated, the active key is the new one, old one retired" \
    ".state == \"rotated\" and .next == null and .active.id != \"$ACTIVE_ID\" and (.retired | length) == 1" "$out"
expect_ok "rotate finish after the promotion" R finish --profile prod
grep -q "is the active key" "$T/out" && grep -q "retired key kept" "$T/out" &&
    pass "finish reports the active key and the kept retired key" ||
    fail "finish output: $(cat "$T/out")"

# Restart: the agent uses the new key at once (no refused exchange).
agent_stop
agent_start
fake_control '{"reset_stats": true}'
out=$(load call '{"op":"token","profile":"prod"}')
check "after a restart: a token" '.ok == true' "$out"
check "after a restart: no refused exchange (signs with the new key)" \
    '.errors == 0 and .ok == 1' "$(fake_stats)"
expect_ok "rotate finish --destroy" R finish --profile prod --destroy
grep -q "destroyed 'sf-jwt.retired-" "$T/out" && pass "retired key destroyed" ||
    fail "finish --destroy output: $(cat "$T/out")"
check "status: idle again, nothing retired" '.state == "idle" and (.retired | length) == 0' \
    "$(R status --profile prod --json)"

# ---- the --csr flow, and finish --force of a key the agent never saw -------
expect_ok "rotate start --csr --no-agent" R start --profile prod --csr "$T/next.csr" --no-agent
openssl req -in "$T/next.csr" -noout -verify >/dev/null 2>&1 &&
    pass "the CSR verifies" || fail "the CSR does not verify"
check "status: next without a certificate; agent does not know it" \
    '.state == "pending" and .next.certificate == null and .agent.next == null' \
    "$(R status --profile prod --json)"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/ca.key" -subj /CN=test-ca \
    -days 2 -out "$T/ca-cert.pem" 2>/dev/null
openssl x509 -req -in "$T/next.csr" -CA "$T/ca-cert.pem" -CAkey "$T/ca.key" \
    -CAcreateserial -days 30 -out "$T/csr-cert.pem" 2>/dev/null
expect_ok "cert import for sf-jwt.next" "$P11JWT" cert import \
    --key "pkcs11:token=agt;object=sf-jwt.next;type=private" --pin-source "file:$PIN" \
    --in "$T/csr-cert.pem"
check "status: the next key now has its certificate" '.next.certificate != null' \
    "$(R status --profile prod --json)"
expect_fail "finish before promotion (csr flow)" 1 "has not been made active" R finish --profile prod
fake_control "{\"cert\": \"$T/csr-cert.pem\", \"reset_stats\": true}"
expect_ok "finish --force promotes on the token" R finish --profile prod --force
for _ in $(seq 1 50); do
    out=$(load call '{"op":"token","profile":"prod"}' '{"op":"invalidate","profile":"prod","access_token":"@TOKEN"}' '{"op":"token","profile":"prod"}')
    [ "$(fake_stats | jq .errors)" = 0 ] || break
    printf '%s' "$out" | jq -e -s 'all(.ok)' >/dev/null && break
    sleep 0.1
done
check "after finish --force the agent signs with the promoted key" \
    '.errors == 0 and .ok >= 1' "$(fake_stats)"

agent_stop
[ "$AGENT_RC" -eq 0 ] && pass "agent exit 0" || fail "agent exit $AGENT_RC"
if grep -E "audit:.*(access_token|eyJ)" "$AGENT_LOG" >/dev/null; then
    fail "a token or assertion in the agent log"
fi
finish
