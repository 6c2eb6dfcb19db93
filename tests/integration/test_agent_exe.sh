# SPDX-License-Identifier: Apache-2.0
# allow-exe against the real kernel: the agent reads each caller's
# /proc/PID/exe. As root it sees every caller: the listed executable is
# served, another is refused. Run as an unprivileged user (as the shipped
# systemd unit does), it cannot read another uid's executable: the caller is
# refused with a message that says why and what to change.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/agent_env.sh"
need setpriv

agent_token_setup
fake_start
PYEXE=$(readlink -f "$PY")
agent_write_config "$T/agent.conf" "$SOFTHSM_MODULE" "allow-exe = $PYEXE
allow-gid = 65534"
TOKEN='{"op":"token","profile":"prod"}'

# ---- agent as root: the caller's executable decides ------------------------
agent_start
out=$(load call "$TOKEN")
check "allow-exe = $PYEXE: python3 caller served" '.ok == true' "$out"
expect_fail "p11jwt (not in allow-exe) refused, naming its executable" 1 \
    "runs $(readlink -f "$P11JWT"), which is not in allow-exe of profile prod" \
    "$P11JWT" token --socket "$SOCK" --profile prod
grep -qE "audit: .*op=token .*exe=$(readlink -f "$P11JWT") result=forbidden" "$AGENT_LOG" &&
    pass "the refusal is audited with the executable" || fail "no audit line for the allow-exe refusal"
agent_stop

# ---- agent as uid 65534: another uid's executable is hidden from it ---------
chown -R 65534:65534 "$T" "$SOCKROOT"
cat >"$T/agent-as-nobody" <<WRAP
#!/bin/sh
exec setpriv --reuid=65534 --regid=65534 --clear-groups "$P11JWT_AGENT" "\$@"
WRAP
chmod 755 "$T/agent-as-nobody"
P11JWT_AGENT=$T/agent-as-nobody agent_start
out=$(load call "$TOKEN")
check "unprivileged agent, root caller: forbidden, says CAP_SYS_PTRACE" \
    '.error == "forbidden" and (.message | test("may not read the executable of uid 0")) and (.message | test("CAP_SYS_PTRACE"))' \
    "$out"
# The agent's own uid is the one caller whose executable it can read.
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups $PY "$LOADPY" --socket "$SOCK" call "$TOKEN")
check "unprivileged agent, caller of its own uid (python3): served" '.ok == true' "$out"
agent_stop
finish
