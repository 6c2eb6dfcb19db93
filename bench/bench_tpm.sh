#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# TPM signatures/s through the token layer next to a plain C_Sign loop on the
# same TPM token (bench_sign, see README.md), as a ratio. The TPM is a
# private swtpm with tpm2-pkcs11 made here by tests/integration/tpm-lib.sh
# (free loopback port, store in a temporary folder, never ~/.tpm2_pkcs11)
# and removed afterwards. Builds nothing: pass the build folder.
#
#   bench/bench_tpm.sh [BUILD_DIR]
#   env: THREADS="1 2" ROUNDS=3 SECONDS_PER_ROUND=3 BITS=2048 KEEP_TMP=1
#
# With 2 threads the plain loop lets both threads at the TPM at once, while
# the layer queues them at its TPM gate (research/pkcs11.md pitfall 14): the
# rate stays the same (one chip), only the plain loop's tail latency grows.
# swtpm figures say nothing about a discrete TPM, which is far slower:
# measure on the target host.
set -euo pipefail

BUILD=${1:-build}
THREADS=${THREADS:-1 2}
ROUNDS=${ROUNDS:-3}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-3}
BITS=${BITS:-2048}
SRC=$(cd "$(dirname "$0")/.." && pwd)
P11JWT=$BUILD/cli/p11jwt
BENCH=$BUILD/bench/bench_sign

for f in "$P11JWT" "$BENCH"; do
    [ -x "$f" ] || { echo "bench_tpm.sh: $f not found: build first" \
        "(cmake -S . -B $BUILD && make -C $BUILD)" >&2; exit 1; }
done

# What tests/integration/tpm-lib.sh expects from lib.sh.
T=$(mktemp -d "${TMPDIR:-/tmp}/p11jwt-bench-tpm.XXXXXX")
chmod 700 "$T"
_hooks=()
on_exit() { _hooks+=("$1"); }
cleanup() {
    local h
    for h in "${_hooks[@]}"; do eval "$h" || true; done
    if [ -z "${KEEP_TMP:-}" ]; then rm -rf "$T"; else echo "kept $T"; fi
}
trap cleanup EXIT
TEST_PIN=$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
TEST_SO_PIN=$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
(umask 077; printf '%s\n' "$TEST_PIN" >"$T/pin")
. "$SRC/tests/integration/tpm-lib.sh"
tpm_init bench
unset TEST_PIN TEST_SO_PIN

"$P11JWT" keygen --module "$TPM_MODULE" --pin-source "file:$T/pin" --bits "$BITS" \
    --key 'pkcs11:token=bench;object=bench-rs256;type=private' >/dev/null
tpm_flush

echo "host: $(nproc) CPU(s), $(uname -sr), swtpm $(swtpm --version 2>/dev/null | sed -n 's/.*version \([^ ,]*\).*/\1/p' | head -1)," \
     "tpm2-pkcs11 $(dpkg-query -W -f '${Version}' libtpm2-pkcs11-1 2>/dev/null || echo '?')"
echo "key: RSA-$BITS on a private swtpm (TCTI $TPM2_PKCS11_TCTI); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "reference (research/pkcs11.md 3.1): raw C_Sign about 218/s for RSA-2048, 1 thread"
for n in $THREADS; do
    "$BENCH" --module "$TPM_MODULE" --token bench --label bench-rs256 \
        --pin-file "$T/pin" --threads "$n" --rounds "$ROUNDS" \
        --seconds "$SECONDS_PER_ROUND"
    tpm_flush
done
