#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what p11jwt needs to build, run and test on Debian 12, only when
# something is missing (idempotent; apt-get runs only if a package is absent).
set -euo pipefail

PACKAGES=(
    # build
    build-essential cmake pkg-config clang libclang-rt-14-dev
    libssl-dev libp11-kit-dev libcurl4-openssl-dev libjansson-dev
    libinih-dev libsystemd-dev libcmocka-dev
    # run
    openssl ca-certificates softhsm2 p11-kit
    # test: fake Salesforce (signatures checked by code that is not ours),
    # metadata schema checks, PKCS#11 cross-checks
    python3 python3-jwt python3-cryptography libxml2-utils opensc jq socat curl
    util-linux systemd
    # TPM tokens: a software TPM and tpm2-pkcs11 (tests/integration/tpm-lib.sh)
    swtpm swtpm-tools tpm2-tools libtpm2-pkcs11-1 libtpm2-pkcs11-tools
    python3-tpm2-pkcs11-tools
    # promtool checks the metrics file (Debian ships it only in prometheus)
    prometheus
)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing+=("$p")
    fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages: ${missing[*]}" >&2
    echo "deps: run as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
