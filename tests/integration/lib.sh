# SPDX-License-Identifier: Apache-2.0
# Shared by the integration tests: a private SoftHSM2 token per run (never a
# system token), PIN files made by the test, and small assertion helpers.
# Source it from a test: . "$(dirname "$0")/lib.sh"
#
# Environment from ctest: P11JWT (the CLI), P11JWT_AGENT, P11JWT_SHIM,
# P11JWT_SRC, P11JWT_BUILD.
set -euo pipefail

: "${P11JWT:?run through ctest, or set P11JWT to the p11jwt binary}"
SOFTHSM_MODULE=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
TEST_PIN=${TEST_PIN:-1234}
TEST_SO_PIN=${TEST_SO_PIN:-5678}

T=$(mktemp -d "${TMPDIR:-/tmp}/p11jwt-test.XXXXXX")
chmod 700 "$T"
_cleanup_hooks=()
on_exit() { _cleanup_hooks+=("$1"); }
_run_cleanup() {
    local rc=$? h
    for h in "${_cleanup_hooks[@]}"; do eval "$h" || true; done
    if [ "$rc" -eq 0 ] || [ -z "${KEEP_TMP:-}" ]; then rm -rf "$T"; fi
    exit "$rc"
}
trap _run_cleanup EXIT

PASSED=0
FAILED=0
fail() { echo "FAIL: $*" >&2; FAILED=$((FAILED + 1)); }
pass() { echo "ok: $*"; PASSED=$((PASSED + 1)); }

# A test that cannot run fails: the test command installs what it needs.
need() {
    command -v "$1" >/dev/null 2>&1 || { echo "FAIL: missing tool $1" >&2; exit 1; }
}

# softhsm_init LABEL: a fresh token in a private SOFTHSM2_CONF under $T.
softhsm_init() {
    local label=$1
    need softhsm2-util
    [ -r "$SOFTHSM_MODULE" ] || { echo "FAIL: no $SOFTHSM_MODULE" >&2; exit 1; }
    mkdir -p "$T/softhsm/tokens"
    if [ ! -f "$T/softhsm/softhsm2.conf" ]; then
        cat >"$T/softhsm/softhsm2.conf" <<CONF
directories.tokendir = $T/softhsm/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
slots.mechanisms = ALL
library.reset_on_fork = false
CONF
    fi
    export SOFTHSM2_CONF=$T/softhsm/softhsm2.conf
    softhsm2-util --init-token --free --label "$label" \
        --pin "$TEST_PIN" --so-pin "$TEST_SO_PIN" >/dev/null
    export P11JWT_MODULE=$SOFTHSM_MODULE
}

# pin_file [PIN]: a 0600 PIN file; prints its path.
pin_file() {
    local f
    f=$(mktemp "$T/pin.XXXXXX")
    chmod 600 "$f"
    printf '%s\n' "${1:-$TEST_PIN}" >"$f"
    echo "$f"
}

# expect_ok DESC CMD...: the command exits 0.
expect_ok() {
    local desc=$1; shift
    if "$@" >"$T/out" 2>"$T/err"; then pass "$desc"; else
        fail "$desc: exit $? from $*"; sed 's/^/  | /' "$T/err" >&2; fi
}

# expect_fail DESC CODE PATTERN CMD...: exits CODE and stderr matches PATTERN.
expect_fail() {
    local desc=$1 code=$2 pat=$3 rc=0; shift 3
    "$@" >"$T/out" 2>"$T/err" || rc=$?
    if [ "$rc" -ne "$code" ]; then
        fail "$desc: exit $rc, wanted $code from $*"; sed 's/^/  | /' "$T/err" >&2
    elif ! grep -qE -- "$pat" "$T/err"; then
        fail "$desc: stderr does not match /$pat/"; sed 's/^/  | /' "$T/err" >&2
    else pass "$desc"; fi
}

# finish: the closing line ctest and CI read; non-zero if anything failed.
finish() {
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}
