#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Signatures/s of the token layer next to a plain C_Sign loop, on a private
# SoftHSM2 token made here and removed afterwards (never a system token).
# Builds nothing: pass the build folder (default build/).
#
#   bench/run.sh [BUILD_DIR]
#   env: THREADS="1 2" ROUNDS=3 SECONDS_PER_ROUND=3 BITS=2048
#        SOFTHSM_MODULE=/usr/lib/softhsm/libsofthsm2.so KEEP_TMP=1
set -euo pipefail

BUILD=${1:-build}
THREADS=${THREADS:-1 2}
ROUNDS=${ROUNDS:-3}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-3}
BITS=${BITS:-2048}
MODULE=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
P11JWT=$BUILD/cli/p11jwt
BENCH=$BUILD/bench/bench_sign

for f in "$P11JWT" "$BENCH"; do
    [ -x "$f" ] || { echo "bench/run.sh: $f not found: build first" \
        "(cmake -S . -B $BUILD && make -C $BUILD)" >&2; exit 1; }
done
command -v softhsm2-util >/dev/null ||
    { echo "bench/run.sh: softhsm2-util missing (apt-get install softhsm2)" >&2; exit 1; }
[ -r "$MODULE" ] || { echo "bench/run.sh: no PKCS#11 module at $MODULE" >&2; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/p11jwt-bench.XXXXXX")
cleanup() { if [ -z "${KEEP_TMP:-}" ]; then rm -rf "$T"; else echo "kept $T"; fi; }
trap cleanup EXIT
chmod 700 "$T"
mkdir -p "$T/tokens"
cat >"$T/softhsm2.conf" <<CONF
directories.tokendir = $T/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
slots.mechanisms = ALL
library.reset_on_fork = false
CONF
export SOFTHSM2_CONF=$T/softhsm2.conf
PIN=$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
SO_PIN=$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
(umask 077; printf '%s\n' "$PIN" >"$T/pin")
softhsm2-util --init-token --free --label bench --pin "$PIN" --so-pin "$SO_PIN" >/dev/null
unset PIN SO_PIN

"$P11JWT" keygen --module "$MODULE" --pin-source "file:$T/pin" --bits "$BITS" \
    --key 'pkcs11:token=bench;object=bench-rs256;type=private' >/dev/null

echo "host: $(nproc) CPU(s), $(uname -sr), $(softhsm2-util --version 2>/dev/null | head -1 | sed 's/^/SoftHSM /')"
echo "key: RSA-$BITS on a private SoftHSM2 token; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for n in $THREADS; do
    "$BENCH" --module "$MODULE" --token bench --label bench-rs256 \
        --pin-file "$T/pin" --threads "$n" --rounds "$ROUNDS" \
        --seconds "$SECONDS_PER_ROUND"
done
