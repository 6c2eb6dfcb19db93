#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# The agent on a TPM token (tpm2-pkcs11 on a private swtpm): tokens and
# assertions served from a key that lives in the TPM, concurrent callers
# queued through the TPM gate, and a swtpm restart under the running agent:
# it recovers and serves again without a restart of its own. On SIGTERM it
# finalises the module, so no TPM objects are left loaded (without a
# resource manager a leak would use up swtpm's 3 slots).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tpm-lib.sh"
. "$(dirname "$0")/agent_env.sh"

tpm_init tpm
PIN=$(pin_file)
KEY_URI="pkcs11:token=tpm;object=sf-jwt;type=private"
"$P11JWT" keygen --key "$KEY_URI" --pin-source "file:$PIN" >/dev/null 2>"$T/err" ||
    { cat "$T/err" >&2; echo "FAIL: keygen on the TPM" >&2; exit 1; }
"$P11JWT" cert self-signed --key "$KEY_URI" --pin-source "file:$PIN" \
    --subject CN=p11jwt-tpm --out "$T/cert.pem" >/dev/null 2>"$T/err" ||
    { cat "$T/err" >&2; echo "FAIL: certificate through the TPM key" >&2; exit 1; }
tpm_flush

fake_start
agent_write_config "$T/agent.conf" "$TPM_MODULE"
agent_start

out=$(load call '{"op":"token","profile":"prod"}')
check "token from a TPM key, accepted by the fake" '.ok == true and .profile == "prod"' "$out"
check "the fake verified one assertion" '.ok == 1 and .token_requests == 1' "$(fake_stats)"

out=$(load concurrent 8 '{"op":"assertion","profile":"prod"}')
check "8 concurrent assertions all signed by the TPM (queued, not failed)" \
    '.ok == 8 and .outcomes.ok == 8' "$out"

# A TPM reset under the running agent: sessions and loaded objects are gone,
# tpm2-pkcs11 answers CKR_GENERAL_ERROR; only C_Finalize + C_Initialize
# recovers, which the token layer does by itself.
tpm_restart
ok=0
for _ in $(seq 1 20); do
    out=$(load call '{"op":"assertion","profile":"prod"}' 2>/dev/null || true)
    if printf '%s' "$out" | jq -e '.ok == true' >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.5
done
[ "$ok" -eq 1 ] && pass "assertion signed again after a swtpm restart, same agent" ||
    fail "no assertion after the swtpm restart: $out"
kill -0 "$AGENT_PID" 2>/dev/null && pass "the agent was not restarted" || fail "the agent died"
grep -q "re-initialised (C_Finalize + C_Initialize)" "$AGENT_LOG" && pass "the recovery is logged" ||
    fail "no recovery line in the agent log"

out=$(load call '{"op":"token","profile":"prod"}' '{"op":"invalidate","profile":"prod","access_token":"@TOKEN"}' \
    '{"op":"token","profile":"prod"}')
check "a new exchange after the restart (invalidate, then token)" \
    '.ok == true' "$(printf '%s\n' "$out" | tail -1)"
check "the fake verified the post-restart assertion" '.ok == 2' "$(fake_stats)"

# doctor judges a TPM key by its TPM public area, not by PKCS#11 flags.
"$P11JWT" -c "$T/agent.conf" doctor --profile prod --no-exchange --json >"$T/doctor.json" 2>"$T/err" || true
check "doctor: key-protection ok from the TPM public area" \
    '.[] | select(.check == "key-protection") | .status == "ok" and (.message | test("fixedTPM"))' \
    "$(cat "$T/doctor.json")"

agent_stop
[ "$AGENT_RC" -eq 0 ] && pass "SIGTERM: exit 0" || fail "agent exit status $AGENT_RC"
n=$({ /usr/bin/tpm2_getcap handles-transient; /usr/bin/tpm2_getcap handles-loaded-session; } 2>/dev/null | grep -c '0x' || true)
[ "$n" -eq 0 ] && pass "no TPM objects left loaded after the agent exits" ||
    fail "$n TPM handles left loaded after the agent exited"
grep -qF "$(cat "$PIN")" "$AGENT_LOG" && fail "the PIN appears in the agent log" ||
    pass "the PIN never appears in the agent log"
finish
