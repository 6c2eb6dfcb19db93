#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# p11jwt-agent benchmarks, each printed next to a baseline from the same run
# (never a ctest test). Everything runs on a private SoftHSM2 token and the
# fake Salesforce endpoint made here and removed afterwards.
#
#   bench/run-agent.sh [BUILD_DIR]
#   env: THREADS=4 (signing threads = agent workers) SECONDS_PER_POINT=5
#        ROUNDS=5 CLIENTS=2xTHREADS (part a: alternating rounds, connections)
#        REQUESTS=1000000 (part d) PROCS=200 (part c process count)
#        PARTS="a b c d" KEEP_TMP=1
#
#   (a) assertions/s through the socket vs a plain C_Sign loop
#   (b) cached token requests/s, p50/p99 at 1, 16, 64 connections vs echo
#   (c) `p11jwt token` as a whole process vs one `pkcs11-tool --sign`
#       process per signature (hyperfine when installed, else a loop)
#   (d) agent RSS at start, after 100k and after 1M requests
set -euo pipefail

BUILD=$(cd "${1:-build}" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
THREADS=${THREADS:-4}
SECONDS_PER_POINT=${SECONDS_PER_POINT:-5}
ROUNDS=${ROUNDS:-5}
REQUESTS=${REQUESTS:-1000000}
PROCS=${PROCS:-200}
PARTS=${PARTS:-a b c d}
export P11JWT=$BUILD/cli/p11jwt
export P11JWT_AGENT=$BUILD/agent/p11jwt-agent
BENCH=$BUILD/bench/bench_agent
for f in "$P11JWT" "$P11JWT_AGENT" "$BENCH"; do
    [ -x "$f" ] || { echo "bench/run-agent.sh: $f not found: build first" \
        "(cmake -S . -B $BUILD && make -C $BUILD)" >&2; exit 1; }
done
export PJ_NO_MLOCK=${PJ_NO_MLOCK:-0}
TEST_PIN=$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
TEST_SO_PIN=$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
# The integration helpers make the token, key, certificate, fake and agent.
. "$SRC/tests/integration/lib.sh"
. "$SRC/tests/integration/agent_env.sh"
ulimit -n 8192 2>/dev/null || true

agent_token_setup
fake_start
agent_write_config "$T/agent.conf"
P11JWT_AGENT_ARGS=(--workers "$THREADS")
"$P11JWT_AGENT" -c "$T/agent.conf" --foreground "${P11JWT_AGENT_ARGS[@]}" >>"$AGENT_LOG" 2>&1 &
AGENT_PID=$!
on_exit '[ -n "$AGENT_PID" ] && kill $AGENT_PID 2>/dev/null; wait $AGENT_PID 2>/dev/null'
for _ in $(seq 1 200); do
    [ -S "$SOCK" ] && $PY "$LOADPY" --socket "$SOCK" --timeout 2 call '{"op":"health"}' \
        >/dev/null 2>&1 && break
    sleep 0.1
done
[ -S "$SOCK" ] || { cat "$AGENT_LOG" >&2; echo "agent did not start" >&2; exit 1; }

echo "host: $(nproc) CPU(s), $(uname -sr); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "agent: $("$P11JWT_AGENT" --version 2>/dev/null || echo '?'), $THREADS workers," \
    "RSA-2048 on SoftHSM2 $(softhsm2-util --version 2>/dev/null | head -1)"
echo

has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
B=("$BENCH" --socket "$SOCK" --profile prod --threads "$THREADS" --seconds "$SECONDS_PER_POINT")
has a && "${B[@]}" --parts a --key "$KEY_URI" --pin-source "file:$PIN" --module "$SOFTHSM_MODULE" \
    --agent-pid "$AGENT_PID" --rounds "$ROUNDS" ${CLIENTS:+--clients "$CLIENTS"}
has b && "${B[@]}" --parts b

if has c; then
    printf 'abc.def' >"$T/in.txt"
    # Is agent mode wired into `p11jwt token`? Else a one-request C client
    # process stands in for it (same exec + connect + one answer).
    if "$P11JWT" token --socket "$SOCK" --profile prod >/dev/null 2>&1; then
        TOKEN_CMD=("$P11JWT" token --socket "$SOCK" --profile prod)
        what="p11jwt token (agent, cached)"
    else
        TOKEN_CMD=("$BENCH" --socket "$SOCK" --profile prod --oneshot)
        what="bench_agent --oneshot (p11jwt token has no agent mode yet)"
    fi
    # pkcs11-tool has no PIN file option: this throwaway token's PIN is fine.
    SIGN_CMD=(pkcs11-tool --module "$SOFTHSM_MODULE" --token-label agt --login
        --pin "$TEST_PIN" --sign -m SHA256-RSA-PKCS --label sf-jwt
        -i "$T/in.txt" -o "$T/sig.bin")
    echo "(c) one process per request, $PROCS runs each"
    if command -v hyperfine >/dev/null; then
        hyperfine -N -w 5 -r "$PROCS" --export-json "$T/hf.json" \
            "${TOKEN_CMD[*]}" "${SIGN_CMD[*]}" >/dev/null
        t_tok=$(jq '.results[0].mean * 1e6' "$T/hf.json")
        t_sig=$(jq '.results[1].mean * 1e6' "$T/hf.json")
    else
        loop() {
            local n=$1 s e; shift
            s=$(date +%s%N)
            for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 || { echo "failed: $1" >&2; return 1; }; done
            e=$(date +%s%N)
            echo $(((e - s) / n / 1000))
        }
        t_tok=$(loop "$PROCS" "${TOKEN_CMD[@]}")
        t_sig=$(loop "$PROCS" "${SIGN_CMD[@]}")
    fi
    printf '    %-58s %9.0f us/process\n' "$what" "$t_tok"
    printf '    %-58s %9.0f us/process\n' "pkcs11-tool --sign (baseline)" "$t_sig"
    awk -v a="$t_tok" -v b="$t_sig" 'BEGIN { printf "    ratio baseline/agent %.2fx faster through the agent\n", b / a }'
fi
has d && "$BENCH" --socket "$SOCK" --profile prod --parts d --agent-pid "$AGENT_PID" \
    --requests "$REQUESTS"
agent_stop
echo "agent exit status after SIGTERM: $AGENT_RC"
