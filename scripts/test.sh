#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs every test: installs what is missing (Debian 12), builds with gcc and
# runs unit, SoftHSM2 integration and corpus-replay tests, then builds with
# clang + ASan + UBSan and runs the same tests again. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

jobs=$(nproc 2>/dev/null || echo 2)
# Tests start token stores, HTTPS servers and agents of their own; two at a
# time keeps a 2-core machine responsive.
test_jobs=${P11JWT_TEST_JOBS:-2}

section() { printf '\n=== %s ===\n' "$*"; }

# Both builds always run, so one failing does not hide the other's result.
failed=()

section "gcc build"
cmake -S . -B build -DCMAKE_C_COMPILER=gcc -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$jobs"
section "tests (gcc)"
ctest --test-dir build --output-on-failure -j "$test_jobs" || failed+=("gcc")

section "clang + ASan + UBSan build"
cmake -S . -B build-asan -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
    -DP11JWT_SANITIZE=ON -DP11JWT_FUZZ=ON >/dev/null
cmake --build build-asan -j "$jobs"
section "tests (ASan + UBSan)"
ctest --test-dir build-asan --output-on-failure -j "$test_jobs" || failed+=("ASan+UBSan")

if [ "${#failed[@]}" -ne 0 ]; then
    echo "test: failures in: ${failed[*]}" >&2
    exit 1
fi
echo "test: all tests passed in both builds (gcc; clang ASan+UBSan)"
