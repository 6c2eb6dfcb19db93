# SPDX-License-Identifier: Apache-2.0
# Certificate monitoring in the running agent (docs/monitoring.md): the
# profile's certificate file is replaced by certificates with chosen
# validity (40, 20 and 3 days left, expired, not yet valid, another key's)
# and the agent is told with SIGHUP. Each state must show in the status
# answer (cert.state), in the metrics file (which promtool must accept), in
# the alert-command's environment and in a log line. A hook that hangs is
# killed at its timeout while the agent keeps answering; an unchanged
# reload sends no alert.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/agent_env.sh"
need promtool
need openssl

agent_token_setup
K2_URI="pkcs11:token=agt;object=drift;type=private"
"$P11JWT" keygen --key "$K2_URI" --pin-source "file:$PIN" >/dev/null 2>"$T/err" ||
    { cat "$T/err" >&2; echo "FAIL: keygen of the second key" >&2; exit 1; }
for k in "$KEY_URI" "$K2_URI"; do
    n=$(sed 's/.*object=\([^;]*\).*/\1/' <<<"$k")
    "$P11JWT" --pin-source "file:$PIN" cert csr --key "$k" \
        --subject "CN=$n,O=Monitor Test" --out "$T/$n.csr" 2>"$T/err" ||
        { cat "$T/err" >&2; echo "FAIL: cert csr for $n" >&2; exit 1; }
done

# Certificates for the CSRs' keys, valid from now+NB to now+NA hours, from
# a throwaway CA (as tests/integration/test_check.sh does).
cat >"$T/mkcert.py" <<'PY'
import datetime, os, sys
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

csr_path, nb_h, na_h, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
ca_path = os.path.join(os.path.dirname(out), "ca.key")
if os.path.exists(ca_path):
    ca = serialization.load_pem_private_key(open(ca_path, "rb").read(), None)
else:
    ca = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    open(ca_path, "wb").write(ca.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
csr = x509.load_pem_x509_csr(open(csr_path, "rb").read())
now = datetime.datetime.utcnow().replace(microsecond=0)
cert = (x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Throwaway Test CA")]))
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(hours=nb_h))
        .not_valid_after(now + datetime.timedelta(hours=na_h))
        .sign(ca, hashes.SHA256()))
open(out, "wb").write(cert.public_bytes(serialization.Encoding.PEM))
PY
mkcert() { $PY "$T/mkcert.py" "$@" || { echo "FAIL: mkcert $*" >&2; exit 1; }; }
D=24
mkcert "$T/sf-jwt.csr" -$D $((40 * D + 1)) "$T/ok.pem"
mkcert "$T/sf-jwt.csr" -$D $((20 * D + 1)) "$T/warning.pem"
mkcert "$T/sf-jwt.csr" -$D $((3 * D + 1)) "$T/critical.pem"
mkcert "$T/sf-jwt.csr" -$((30 * D)) -$((2 * D - 1)) "$T/expired.pem"
mkcert "$T/sf-jwt.csr" $((2 * D)) $((100 * D)) "$T/not_yet_valid.pem"
mkcert "$T/drift.csr" -$D $((40 * D + 1)) "$T/mismatch.pem"
mkcert "$T/sf-jwt.csr" -$D $((60 * D + 1)) "$T/renewed.pem"

# The hook: records its whole environment, one file per run; hangs while
# $T/hang exists (to be killed at the timeout).
HOOKS=$T/hooks
mkdir -p "$HOOKS"
cat >"$T/hook.sh" <<SH
#!/bin/sh
env >"$HOOKS/run.\$\$.tmp" && mv "$HOOKS/run.\$\$.tmp" "$HOOKS/run.\$\$"
if [ -e "$T/hang" ]; then
    echo "hook \$\$ hanging" >"$T/hang.started"
    sleep 300
fi
exit 3
SH
chmod 755 "$T/hook.sh"
hook_runs() { find "$HOOKS" -name 'run.*' ! -name '*.tmp' | wc -l; }

fake_start
PROM=$T/metrics/p11jwt.prom
mkdir -p "$T/metrics"
cp "$T/ok.pem" "$T/cur.pem"
cat >"$T/agent.conf" <<CONF
[agent]
socket = $SOCK
module = $SOFTHSM_MODULE
metrics-file = $PROM
alert-command = $T/hook.sh
alert-timeout = 10

[profile prod]
key = $KEY_URI
cert = $T/cur.pem
pin-source = file:$PIN
client-id = $CLIENT_ID
subject = $SUBJECT
login-url = https://127.0.0.1:$FAKE_PORT
audience = https://login.salesforce.com
allow-uid = root
ca-file = $T/ca.pem
timeout = 5
connect-timeout = 2
CONF

status() { load --timeout 5 call '{"op":"status","profile":"prod"}'; }
# wait_state STATE SHA256: until status shows that certificate in that state.
wait_state() {
    local want=$1 sha=$2 i st
    for i in $(seq 1 100); do
        st=$(status 2>/dev/null) || st='{}'
        if printf '%s' "$st" | jq -e --arg s "$want" --arg h "$sha" \
            '.profiles[0].cert.state == $s and .profiles[0].cert.sha256 == $h' >/dev/null 2>&1; then
            STATUS=$st
            return 0
        fi
        sleep 0.1
    done
    STATUS=$st
    return 1
}
sha_of() { openssl x509 -in "$1" -noout -fingerprint -sha256 | sed 's/^.*=//'; }
serial_of() { openssl x509 -in "$1" -noout -serial | sed 's/^serial=//'; }
not_after_of() { date -d "$(openssl x509 -in "$1" -noout -enddate | sed 's/^notAfter=//')" +%s; }
# metric NAME: the value of the active certificate's series.
metric() { sed -n "s/^$1{profile=\"prod\",key=\"active\",[^}]*} //p" "$PROM"; }
wait_metric() { # NAME VALUE
    local i
    for i in $(seq 1 50); do
        [ -f "$PROM" ] && [ "$(metric "$1")" = "$2" ] && return 0
        sleep 0.1
    done
    return 1
}
promtool_ok() {
    if promtool check metrics <"$PROM" >"$T/lint" 2>&1; then
        pass "$1: promtool check metrics accepts the file"
    else
        fail "$1: promtool rejects the metrics file"; sed 's/^/  | /' "$T/lint" >&2
    fi
}
# the hook run for a state: its environment file
hook_for() { grep -l "^P11JWT_STATE=$1\$" "$HOOKS"/run.* 2>/dev/null | head -1; }
wait_hook() {
    local i
    for i in $(seq 1 100); do
        [ -n "$(hook_for "$1")" ] && return 0
        sleep 0.1
    done
    return 1
}
hookvar() { sed -n "s/^$2=//p" "$1"; }

# ---- start: a healthy certificate is logged, not alerted -------------------
agent_start "$T/agent.conf"
SHA=$(sha_of "$T/ok.pem")
if wait_state ok "$SHA"; then
    pass "start: status cert.state ok"
else
    fail "start: status cert: $(printf '%s' "$STATUS" | jq -c '.profiles[0].cert')"
fi
check "start: days_left 40, not_after, subject, serial, key_match" \
    ".profiles[0].cert | .days_left == 40 and .not_after == $(not_after_of "$T/ok.pem") and
     .subject == \"CN=sf-jwt, O=Monitor Test\" and .serial == \"$(serial_of "$T/ok.pem")\" and
     .key_match == true and .warn_days == 30 and .critical_days == 7" "$STATUS"
check "start: no next_cert outside a rotation" '.profiles[0] | has("next_cert") | not' "$STATUS"
wait_metric p11jwt_cert_not_after "$(not_after_of "$T/ok.pem")" &&
    pass "start: metric p11jwt_cert_not_after is notAfter" ||
    fail "start: metric p11jwt_cert_not_after = '$(metric p11jwt_cert_not_after)'"
[ "$(metric p11jwt_cert_key_match)" = 1 ] && [ "$(metric p11jwt_cert_expired)" = 0 ] &&
    pass "start: key_match 1, expired 0" || fail "start: key_match/expired metrics"
grep -q '^p11jwt_hsm_up{profile="prod"} 1$' "$PROM" &&
    pass "start: p11jwt_hsm_up 1" || fail "start: p11jwt_hsm_up"
[ "$(stat -c %a "$PROM")" = 644 ] && pass "metrics file mode 0644" ||
    fail "metrics file mode $(stat -c %a "$PROM")"
promtool_ok start
grep -q 'profile prod: active certificate CN=sf-jwt, O=Monitor Test (serial .*) state ok: expires .*, 40 days left' "$AGENT_LOG" &&
    pass "start: log line for the first check" || fail "start: no log line"
sleep 0.5
[ "$(hook_runs)" = 0 ] && pass "start: healthy certificate: no alert-command run" ||
    fail "start: alert-command ran $(hook_runs) times"

# ---- counters reach the metrics file ------------------------------------------
load --timeout 10 call '{"op":"token","profile":"prod"}' >"$T/tok" 2>&1 ||
    fail "token request: $(head -c 300 "$T/tok")"
load --timeout 10 call '{"op":"token","profile":"prod"}' >/dev/null 2>&1
kill -HUP "$AGENT_PID" # a round also rewrites the counters at once
ok_counters=0
for i in $(seq 1 50); do
    if grep -q '^p11jwt_token_requests_total{profile="prod",result="ok"} 1$' "$PROM" &&
        grep -q '^p11jwt_token_requests_total{profile="prod",result="cached"} 1$' "$PROM" &&
        grep -q '^p11jwt_signatures_total{profile="prod",result="ok"} 1$' "$PROM" &&
        grep -q '^p11jwt_ipc_requests_total{op="token",result="ok"} 2$' "$PROM"; then
        ok_counters=1; break
    fi
    sleep 0.1
done
[ $ok_counters = 1 ] && pass "token, signature and IPC counters in the metrics file" ||
    { fail "counters in the metrics file"; grep -E '_total' "$PROM" | sed 's/^/  | /' >&2; }
grep -q '^p11jwt_clock_skew_seconds{profile="prod"} ' "$PROM" &&
    pass "clock skew in the metrics file" || fail "no p11jwt_clock_skew_seconds series"
sleep 0.5
[ "$(hook_runs)" = 0 ] && pass "reload without change: no alert" ||
    fail "reload without change ran the hook $(hook_runs) times"

# ---- each state through SIGHUP ------------------------------------------------
# state  days_left  expired-metric  key_match  log level word
prev=ok
while read -r state days expired match; do
    cp "$T/$state.pem" "$T/cur.pem"
    kill -HUP "$AGENT_PID"
    SHA=$(sha_of "$T/$state.pem")
    if wait_state "$state" "$SHA"; then
        pass "$state: status cert.state $state"
    else
        fail "$state: status cert: $(printf '%s' "$STATUS" | jq -c '.profiles[0].cert')"
        continue
    fi
    check "$state: days_left $days" ".profiles[0].cert.days_left == $days" "$STATUS"
    NA=$(not_after_of "$T/$state.pem")
    if wait_metric p11jwt_cert_not_after "$NA" &&
        [ "$(metric p11jwt_cert_expired)" = "$expired" ] &&
        [ "$(metric p11jwt_cert_key_match)" = "$match" ]; then
        pass "$state: metrics not_after, expired=$expired, key_match=$match"
    else
        fail "$state: metrics: not_after '$(metric p11jwt_cert_not_after)' (want $NA)" \
            "expired '$(metric p11jwt_cert_expired)' key_match '$(metric p11jwt_cert_key_match)'"
    fi
    promtool_ok "$state"
    if wait_hook "$state"; then
        f=$(hook_for "$state")
        if [ "$(hookvar "$f" P11JWT_PROFILE)" = prod ] &&
            [ "$(hookvar "$f" P11JWT_KEY)" = active ] &&
            [ "$(hookvar "$f" P11JWT_PREVIOUS_STATE)" = "$prev" ] &&
            [ "$(hookvar "$f" P11JWT_EVENT)" = change ] &&
            [ "$(hookvar "$f" P11JWT_DAYS_LEFT)" = "$days" ] &&
            [ "$(hookvar "$f" P11JWT_NOT_AFTER_UNIX)" = "$NA" ] &&
            [ "$(hookvar "$f" P11JWT_SHA256)" = "$SHA" ] &&
            [ "$(hookvar "$f" P11JWT_SERIAL)" = "$(serial_of "$T/$state.pem")" ] &&
            hookvar "$f" P11JWT_SUBJECT | grep -q '^CN=' &&
            hookvar "$f" P11JWT_MESSAGE | grep -q "state $state (was $prev)"; then
            pass "$state: alert-command run with its P11JWT_* environment"
        else
            fail "$state: hook environment:"; grep '^P11JWT_' "$f" | sed 's/^/  | /' >&2
        fi
        # A clean environment: nothing of the agent's (P11JWT_MODULE, HOME..).
        if grep -vqE '^(P11JWT_(PROFILE|KEY|STATE|PREVIOUS_STATE|EVENT|DAYS_LEFT|NOT_AFTER|NOT_AFTER_UNIX|SUBJECT|SERIAL|SHA256|MESSAGE)|PATH|LANG|PWD|SHLVL|_)=' "$f"; then
            fail "$state: the hook saw other variables: $(grep -vE '^(P11JWT_[A-Z0-9_]+|PATH|LANG|PWD|SHLVL|_)=' "$f" | cut -d= -f1 | tr '\n' ' ')"
        else
            pass "$state: the hook's environment is clean"
        fi
    else
        fail "$state: alert-command not run (runs: $(hook_runs))"
    fi
    grep -q "profile prod: active certificate .* state $state (was $prev)" "$AGENT_LOG" &&
        pass "$state: log line 'state $state (was $prev)'" || fail "$state: no log line"
    prev=$state
done <<'STATES'
warning 20 0 1
critical 3 0 1
expired -2 1 1
not_yet_valid 99 0 1
mismatch 40 0 0
STATES
grep -q 'alert-command .*hook.sh (profile prod, active certificate, state warning) exited with status 3 after [0-9]* ms' "$AGENT_LOG" &&
    pass "the hook's exit status is logged" || fail "no log line with the hook's exit status"
grep -q 'state mismatch (was not_yet_valid): does not match the signing key' "$AGENT_LOG" &&
    pass "mismatch: the log line says drift" || fail "mismatch: log line"

# ---- an unchanged reload sends no alert ------------------------------------
n=$(hook_runs)
kill -HUP "$AGENT_PID"
sleep 1.5
[ "$(hook_runs)" = "$n" ] && pass "SIGHUP with the same certificate: no new alert" ||
    fail "SIGHUP with the same certificate ran the hook again"

# ---- a renewed certificate in the same state is news ----------------------------
cp "$T/ok.pem" "$T/cur.pem"
kill -HUP "$AGENT_PID"
wait_state ok "$(sha_of "$T/ok.pem")" && wait_hook ok &&
    pass "back to ok: alerted (change to ok)" || fail "back to ok not alerted"
n=$(hook_runs)
cp "$T/renewed.pem" "$T/cur.pem"
kill -HUP "$AGENT_PID"
if wait_state ok "$(sha_of "$T/renewed.pem")"; then
    for i in $(seq 1 50); do [ "$(hook_runs)" -gt "$n" ] && break; sleep 0.1; done
    [ "$(hook_runs)" -gt "$n" ] && pass "renewed certificate (still ok): alerted once" ||
        fail "renewed certificate: no alert"
    grep -q 'state ok (new certificate): expires .*, 60 days left' "$AGENT_LOG" &&
        pass "renewed certificate: log line '(new certificate)'" || fail "renewed: log line"
else
    fail "renewed certificate not seen"
fi

# ---- unreadable certificate: unknown ------------------------------------------
rm -f "$T/cur.pem"
kill -HUP "$AGENT_PID"
for i in $(seq 1 100); do
    STATUS=$(status 2>/dev/null) || STATUS='{}'
    printf '%s' "$STATUS" | jq -e '.profiles[0].cert.state == "unknown"' >/dev/null 2>&1 && break
    sleep 0.1
done
check "missing file: state unknown with the reason" \
    '.profiles[0].cert.state == "unknown" and (.profiles[0].cert.error | test("cur.pem"))' "$STATUS"
wait_hook unknown && pass "missing file: alert-command run (state unknown)" ||
    fail "missing file: no alert"
for i in $(seq 1 50); do grep -q '^p11jwt_cert_not_after{' "$PROM" || break; sleep 0.1; done
grep -q '^p11jwt_cert_not_after{' "$PROM" &&
    fail "unreadable certificate still has a p11jwt_cert_not_after series" ||
    pass "unreadable certificate: no p11jwt_cert_* series"
promtool_ok unknown

# ---- rotation: the next key's certificate is checked too ---------------------
NEXT_URI="pkcs11:token=agt;object=sf-jwt.next;type=private"
"$P11JWT" keygen --key "$NEXT_URI" --pin-source "file:$PIN" >/dev/null 2>"$T/err" &&
    "$P11JWT" --pin-source "file:$PIN" cert csr --key "$NEXT_URI" \
        --subject "CN=sf-jwt-next,O=Monitor Test" --out "$T/next.csr" 2>>"$T/err" ||
    { cat "$T/err" >&2; echo "FAIL: the next key" >&2; exit 1; }
mkcert "$T/next.csr" -$D $((20 * D + 1)) "$T/next.pem"
"$P11JWT" --pin-source "file:$PIN" cert import --key "$NEXT_URI" --in "$T/next.pem" \
    >/dev/null 2>"$T/err" || { cat "$T/err" >&2; echo "FAIL: cert import (next)" >&2; exit 1; }
cp "$T/ok.pem" "$T/cur.pem"
kill -HUP "$AGENT_PID" # a reload also looks for the next key
for i in $(seq 1 100); do
    STATUS=$(status 2>/dev/null) || STATUS='{}'
    printf '%s' "$STATUS" | jq -e '.profiles[0].next_cert.state == "warning"' >/dev/null 2>&1 && break
    sleep 0.1
done
check "rotation: next_cert in status (20 days: warning, matches the next key)" \
    '.profiles[0].next_cert | .state == "warning" and .days_left == 20 and
     .key_match == true and .subject == "CN=sf-jwt-next, O=Monitor Test"' "$STATUS"
check "rotation: the active cert is unaffected" '.profiles[0].cert.state == "ok"' "$STATUS"
for i in $(seq 1 50); do
    grep -q "^p11jwt_cert_not_after{profile=\"prod\",key=\"next\",subject=\"CN=sf-jwt-next, O=Monitor Test\",serial=\"[0-9A-F]*\"} $(not_after_of "$T/next.pem")\$" "$PROM" && break
    sleep 0.1
done
grep -q "^p11jwt_cert_not_after{profile=\"prod\",key=\"next\",.*} $(not_after_of "$T/next.pem")\$" "$PROM" &&
    pass "rotation: key=\"next\" series in the metrics file" || fail "rotation: no key=next series"
promtool_ok rotation
for i in $(seq 1 50); do grep -lq '^P11JWT_KEY=next$' "$HOOKS"/run.* 2>/dev/null && break; sleep 0.1; done
f=$(grep -l '^P11JWT_KEY=next$' "$HOOKS"/run.* 2>/dev/null | head -1)
[ -n "$f" ] && [ "$(hookvar "$f" P11JWT_STATE)" = warning ] && [ "$(hookvar "$f" P11JWT_DAYS_LEFT)" = 20 ] &&
    pass "rotation: alert-command run for the next certificate (P11JWT_KEY=next)" ||
    fail "rotation: no alert for the next certificate"
grep -q 'profile prod: next certificate CN=sf-jwt-next, O=Monitor Test (serial .*) state warning' "$AGENT_LOG" &&
    pass "rotation: log line for the next certificate" || fail "rotation: no log line (next)"
P11JWT_SOCKET=$SOCK "$P11JWT" -c "$T/agent.conf" status >"$T/table" 2>&1 &&
    grep -q 'CERT EXPIRES' "$T/table" && grep -qE 'prod .*[0-9]+d.* ok' "$T/table" &&
    pass "p11jwt status shows the certificate column" ||
    { fail "p11jwt status table"; sed 's/^/  | /' "$T/table" >&2; }
grep -qE '^  prod +next +warning +not after [0-9-]+T[0-9:]+Z \(20 days\) +CN=sf-jwt-next, O=Monitor Test' "$T/table" &&
    grep -qE '^  prod +active +[a-z_]+ +not after [0-9-]+T[0-9:]+Z \([0-9-]+ days\) +CN=' "$T/table" &&
    pass "p11jwt status lists both certificates: subject, not-after, days left, state" ||
    { fail "p11jwt status CERTIFICATES section"; sed 's/^/  | /' "$T/table" >&2; }

# ---- a hook that hangs is killed at its timeout; the agent keeps answering ----
touch "$T/hang"
cp "$T/warning.pem" "$T/cur.pem"
kill -HUP "$AGENT_PID"
for i in $(seq 1 100); do [ -s "$T/hang.started" ] && break; sleep 0.1; done
[ -s "$T/hang.started" ] && pass "hanging hook started" || fail "hanging hook did not start"
HANG_PID=$(sed 's/hook \([0-9]*\) hanging/\1/' "$T/hang.started" 2>/dev/null)
# Each answer within 3 s (python start-up included, on a loaded machine),
# while the hook blocks until its 10 s alert-timeout: the loop does not wait.
slow=0 n=0 worst=0
t0=$(date +%s)
while [ $(($(date +%s) - t0)) -lt 8 ]; do
    for req in '{"op":"health"}' '{"op":"token","profile":"prod"}'; do
        s=$(date +%s%N)
        if ! load --timeout 3 call "$req" >"$T/ans" 2>&1 || ! jq -e '.ok == true' "$T/ans" >/dev/null 2>&1; then
            slow=$((slow + 1)); echo "  | $req: $(head -c 200 "$T/ans")" >&2
        fi
        e=$((($(date +%s%N) - s) / 1000000))
        [ "$e" -gt "$worst" ] && worst=$e
        n=$((n + 1))
    done
    sleep 0.2
done
[ $slow = 0 ] && [ "$worst" -lt 3000 ] &&
    pass "the agent answers while the hook hangs ($n answers, slowest $worst ms)" ||
    fail "$slow failed answers, slowest $worst ms, while the hook hung"
# alert-timeout = 10 s, SIGKILL 2 s after SIGTERM.
killed=0
for i in $(seq 1 300); do
    if grep -q 'alert-command .* state warning) was killed by signal 15 (.*), timed out after 1[0-9][0-9][0-9][0-9] ms' "$AGENT_LOG"; then
        killed=1; break
    fi
    sleep 0.2
done
[ $killed = 1 ] && pass "hanging hook killed at its 10 s alert-timeout, logged" ||
    { fail "hanging hook: no timeout line"; grep alert-command "$AGENT_LOG" | tail -3 | sed 's/^/  | /' >&2; }
if [ -n "$HANG_PID" ] && kill -0 "$HANG_PID" 2>/dev/null; then
    fail "the hook's process $HANG_PID is still alive"
else
    pass "the hook's process is gone"
fi
pgrep -f "sleep 300" -P "$HANG_PID" >/dev/null 2>&1 &&
    fail "the hook's child (sleep) survived" || pass "the hook's process group is gone"
rm -f "$T/hang"
check "still answering after the timeout" '.ok == true' \
    "$(load --timeout 2 call '{"op":"health"}' 2>&1)"

agent_stop
[ "$AGENT_RC" = 0 ] && pass "agent exits 0 on SIGTERM" || fail "agent exit $AGENT_RC"
finish
