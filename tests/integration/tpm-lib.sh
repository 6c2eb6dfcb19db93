# shellcheck shell=bash
# SPDX-License-Identifier: Apache-2.0
# A private software TPM for the integration tests: swtpm on a free loopback
# port, a tpm2-pkcs11 store under $T (never ~/.tpm2_pkcs11), one token with
# a user and an SO PIN, all torn down when the test exits.
# Source it after lib.sh:
#   . "$(dirname "$0")/lib.sh"
#   . "$(dirname "$0")/tpm-lib.sh"
#   tpm_init LABEL          # swtpm up, store made, token LABEL added
#   tpm_restart             # kill swtpm and start it again on the same state
#   tpm_stop / tpm_start    # the same in two steps (a TPM that stays down)
#   tpm_flush               # flush transient objects and loaded sessions
#   tpm_da_counter          # dictionary-attack failures counted so far
#
# No resource manager runs here (tpm2-abrmd needs D-Bus), so every process
# that leaves a transient object or session loaded uses up one of swtpm's 3
# slots (research/pkcs11.md 7.1, pitfall 8). tpm2_ptool runs many tpm2-tools
# subprocesses: each goes through a wrapper under $T/tpm/bin that flushes
# transient objects after the tool exits, which is what a resource manager
# does when a client disconnects.
#
# Exports: TPM_MODULE and P11JWT_MODULE (libtpm2_pkcs11.so), TPM_PORT,
# TPM2_PKCS11_TCTI, TPM2TOOLS_TCTI, TPM2_PKCS11_STORE, TPM_LABEL.

TPM_MODULE=${TPM_MODULE:-/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so}
TPM_DIR=$T/tpm
TPM_PID=
TPM_PORT=

# Tools the fixture needs: a test that cannot run fails, naming the package.
_tpm_need() {
    local tool=$1 pkg=$2
    command -v "$tool" >/dev/null 2>&1 ||
        { echo "FAIL: missing $tool (apt-get install $pkg)" >&2; exit 1; }
}

# Is a TCP port on 127.0.0.1 free? (bash's /dev/tcp: a connect that fails)
_tpm_port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Start swtpm on TPM_PORT (server) and TPM_PORT+1 (control); wait until the
# TPM answers. Returns non-zero if it did not come up (port taken).
_tpm_spawn() {
    swtpm socket --tpm2 \
        --server "type=tcp,port=$TPM_PORT,bindaddr=127.0.0.1" \
        --ctrl "type=tcp,port=$((TPM_PORT + 1)),bindaddr=127.0.0.1" \
        --tpmstate "dir=$TPM_DIR/state" --flags startup-clear \
        --log "file=$TPM_DIR/swtpm.log,level=1" \
        >>"$TPM_DIR/swtpm.out" 2>&1 &
    TPM_PID=$!
    for _ in $(seq 100); do
        if ! kill -0 "$TPM_PID" 2>/dev/null; then
            wait "$TPM_PID" 2>/dev/null || true
            TPM_PID=
            return 1
        fi
        if /usr/bin/tpm2_getrandom 8 >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.05
    done
    echo "FAIL: swtpm on port $TPM_PORT did not answer within 5 s" >&2
    sed 's/^/  | /' "$TPM_DIR/swtpm.out" >&2 || true
    tpm_stop
    return 1
}

# tpm_start: start swtpm on the state folder. The first call picks a free
# port pair (random, retried on collision: tests may run in parallel);
# later calls (restarts) reuse the port so the exported TCTI stays right.
tpm_start() {
    local port
    mkdir -p "$TPM_DIR/state"
    if [ -n "$TPM_PORT" ]; then
        # The old listener may linger for a moment after a kill.
        for _ in $(seq 50); do
            _tpm_spawn && return 0
            sleep 0.1
        done
        echo "FAIL: swtpm could not listen again on port $TPM_PORT" >&2
        exit 1
    fi
    for _ in $(seq 20); do
        port=$((20000 + (RANDOM % 20000) * 2))
        _tpm_port_free "$port" && _tpm_port_free "$((port + 1))" || continue
        TPM_PORT=$port
        export TPM2_PKCS11_TCTI="swtpm:host=127.0.0.1,port=$TPM_PORT"
        export TPM2TOOLS_TCTI=$TPM2_PKCS11_TCTI
        _tpm_spawn && return 0
        TPM_PORT=
    done
    echo "FAIL: no free loopback port pair for swtpm after 20 tries" >&2
    sed 's/^/  | /' "$TPM_DIR/swtpm.out" >&2 || true
    exit 1
}

# tpm_stop: kill swtpm (a TPM that went away); the state folder stays.
tpm_stop() {
    if [ -n "$TPM_PID" ]; then
        kill "$TPM_PID" 2>/dev/null || true
        wait "$TPM_PID" 2>/dev/null || true
        TPM_PID=
    fi
}

# tpm_restart: a TPM reset under running clients (research 8.1: sessions
# and loaded objects are gone; only C_Finalize + C_Initialize recovers).
tpm_restart() {
    tpm_stop
    tpm_start
}

# tpm_da_counter: the TPM's dictionary-attack failure count (a number).
tpm_da_counter() {
    /usr/bin/tpm2_getcap properties-variable 2>/dev/null |
        awk '/TPM2_PT_LOCKOUT_COUNTER/ { print strtonum($2) }'
}

# tpm_flush: what a resource manager does between clients.
tpm_flush() {
    /usr/bin/tpm2_flushcontext -t >/dev/null 2>&1 || true
    /usr/bin/tpm2_flushcontext -l >/dev/null 2>&1 || true
    /usr/bin/tpm2_flushcontext -s >/dev/null 2>&1 || true
}

# tpm_init LABEL: swtpm, the flush wrappers, the store and a token LABEL
# with PIN $TEST_PIN and SO PIN $TEST_SO_PIN.
tpm_init() {
    local label=$1 t tool
    _tpm_need swtpm swtpm
    _tpm_need tpm2_ptool "libtpm2-pkcs11-tools python3-tpm2-pkcs11-tools"
    _tpm_need /usr/bin/tpm2_flushcontext tpm2-tools
    [ -r "$TPM_MODULE" ] ||
        { echo "FAIL: no $TPM_MODULE (apt-get install libtpm2-pkcs11-1)" >&2; exit 1; }
    mkdir -p "$TPM_DIR/state" "$TPM_DIR/store" "$TPM_DIR/bin"
    for t in /usr/bin/tpm2_*; do
        tool=${t##*/}
        case $tool in tpm2_ptool | tpm2_flushcontext) continue ;; esac
        printf '#!/bin/sh\n%s "$@"; rc=$?\n/usr/bin/tpm2_flushcontext -t >/dev/null 2>&1\nexit $rc\n' \
            "$t" >"$TPM_DIR/bin/$tool"
        chmod 755 "$TPM_DIR/bin/$tool"
    done
    export PATH=$TPM_DIR/bin:$PATH
    export TPM2_PKCS11_STORE=$TPM_DIR/store
    # tpm2-pkcs11 logs at "error" by default; keep it to real errors.
    export TPM2_PKCS11_LOG_LEVEL=${TPM2_PKCS11_LOG_LEVEL:-0}
    on_exit tpm_stop
    tpm_start
    # Dictionary-attack protection: swtpm allows 3 failures, forgotten one
    # per 1000 s, and counts every wrong PIN AND every restart that was not
    # an orderly shutdown (a kill, like a power loss) once DA-protected keys
    # were used. Three restarts put it in lockout, and tpm2-pkcs11 then
    # reports CKR_PIN_LOCKED. Tests restart swtpm on purpose, so allow many
    # failures and forget one per second (docs/tpm.md: real hosts differ).
    /usr/bin/tpm2_dictionarylockout --setup-parameters --max-tries=1000 \
        --recovery-time=1 --lockout-recovery-time=1 >"$TPM_DIR/da.log" 2>&1 ||
        { echo "FAIL: tpm2_dictionarylockout" >&2; sed 's/^/  | /' "$TPM_DIR/da.log" >&2; exit 1; }
    tpm2_ptool init --path "$TPM2_PKCS11_STORE" >"$TPM_DIR/ptool.log" 2>&1 ||
        { echo "FAIL: tpm2_ptool init" >&2; sed 's/^/  | /' "$TPM_DIR/ptool.log" >&2; exit 1; }
    tpm2_ptool addtoken --path "$TPM2_PKCS11_STORE" --pid=1 --label="$label" \
        --userpin="$TEST_PIN" --sopin="$TEST_SO_PIN" >>"$TPM_DIR/ptool.log" 2>&1 ||
        { echo "FAIL: tpm2_ptool addtoken" >&2; sed 's/^/  | /' "$TPM_DIR/ptool.log" >&2; exit 1; }
    tpm_flush
    TPM_LABEL=$label
    export TPM_MODULE TPM_PORT TPM_LABEL
    export P11JWT_MODULE=$TPM_MODULE
}
