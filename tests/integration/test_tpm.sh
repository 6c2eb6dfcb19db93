#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# p11jwt on a TPM token: tpm2-pkcs11 on a private swtpm (tpm-lib.sh), no
# resource manager. The same flows as on SoftHSM2 (keygen, sign, a
# self-signed certificate through the TPM key, an assertion accepted by the
# fake Salesforce), checked by code that is not ours (openssl, PyJWT), plus
# what differs on a TPM: the key judged by its TPM public area, RSA-4096
# refused before trying, no TPM objects left behind by any process (also
# one that exits without freeing), and, in one process (tpm_restart.c),
# recovery from a swtpm restart and from a TPM that was down, the TPM gate
# (concurrent signers queue; a deadline gives "TPM busy"), and pitfall 9.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tpm-lib.sh"

PY=/usr/bin/python3
FAKE=$P11JWT_SRC/tests/fakes/fake_salesforce.py
RESTART_BIN=${P11JWT_TPM_RESTART:-$P11JWT_BUILD/tests/tpm_restart}
need openssl
need pkcs11-tool
need curl
[ -x "$PY" ] || { echo "FAIL: no $PY" >&2; exit 1; }
"$PY" -c 'import jwt, cryptography' 2>/dev/null ||
    { echo "FAIL: python3-jwt and python3-cryptography are needed" >&2; exit 1; }
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy

tpm_init tpm
PIN=$(pin_file)
KEY="pkcs11:token=tpm;object=tpm-jwt;type=private"
p11() { "$P11JWT" --pin-source "file:$PIN" "$@"; }

# What is loaded in the TPM beyond the persistent primary: transient
# objects and loaded sessions. Without a resource manager anything a
# process leaves here stays until swtpm restarts (pitfall 8).
tpm_leftovers() {
    { /usr/bin/tpm2_getcap handles-transient; /usr/bin/tpm2_getcap handles-loaded-session; } 2>/dev/null |
        grep -c '0x' || true
}
no_leftovers() {
    local n
    n=$(tpm_leftovers)
    [ "$n" -eq 0 ] && pass "no TPM objects left loaded: $1" ||
        { fail "$n TPM handles left loaded: $1"; tpm_flush; }
}

# ---- keygen -------------------------------------------------------------
expect_ok "keygen on the TPM" p11 keygen --key "$KEY"
grep -q "bound: yes" "$T/out" && grep -q "fixedTPM, fixedParent, sensitiveDataOrigin" "$T/out" &&
    pass "keygen reports the TPM public area" ||
    { fail "keygen TPM report"; cat "$T/out" >&2; }
# Sign-only in the chip: no decrypt in PKCS#11 nor in TPMA_OBJECT (bit
# 0x20000); certificates below are still signed by this key.
attrs=$(sed -n 's/.*TPMA_OBJECT 0x\([0-9a-f]*\).*/\1/p' "$T/out")
grep -q "no-decrypt, no-unwrap" "$T/out" && [ -n "$attrs" ] && [ $((0x$attrs & 0x20000)) -eq 0 ] &&
    pass "the TPM key is sign-only (TPMA_OBJECT 0x$attrs)" ||
    fail "the TPM key is not sign-only: $(grep -E 'flags|tpm:' "$T/out")"
no_leftovers "after keygen"
expect_fail "same label again" 1 "already exists" p11 keygen --key "$KEY"
expect_fail "RSA-4096 refused before trying" 1 "RSA-4096 is not possible" \
    p11 keygen --key "pkcs11:token=tpm;object=big" --bits 4096
no_leftovers "after refused keygens"

pkcs11-tool --module "$TPM_MODULE" --token-label tpm --read-object --type pubkey \
    --label tpm-jwt -o "$T/pub.der" >/dev/null 2>&1 &&
    openssl pkey -pubin -inform DER -in "$T/pub.der" -out "$T/pub.pem" 2>/dev/null ||
    { echo "FAIL: cannot read the TPM key's public half with pkcs11-tool" >&2; exit 1; }
tpm_flush # pkcs11-tool is not ours: whatever it leaves is not our leak

# ---- sign (each a new process) -----------------------------------------
printf 'header.claims' >"$T/msg"
for i in 1 2 3; do
    if p11 sign --key "$KEY" --in "$T/msg" --out "$T/sig$i" 2>"$T/err" &&
        openssl dgst -sha256 -verify "$T/pub.pem" -signature "$T/sig$i" "$T/msg" >/dev/null; then
        pass "sign $i verifies with openssl"
    else fail "sign $i"; sed 's/^/  | /' "$T/err" >&2; fi
done
cmp -s "$T/sig1" "$T/sig3" && pass "RS256 on the TPM is deterministic" || fail "signatures differ"
no_leftovers "after 3 sign processes"
WRONG=$(pin_file 987654)
expect_fail "wrong PIN" 1 "PIN" "$P11JWT" --pin-source "file:$WRONG" sign --key "$KEY" --in "$T/msg" --out "$T/x"
grep -q 987654 "$T/err" && fail "PIN leaked" || pass "wrong PIN not echoed"
expect_fail "missing key lists what is there" 1 "tpm-jwt" \
    p11 sign --key "pkcs11:token=tpm;object=nope" --in "$T/msg" --out "$T/x"
no_leftovers "after failed sign processes"

# ---- certificate through the TPM key ----------------------------------
expect_ok "cert self-signed --store on the TPM" \
    p11 cert self-signed --key "$KEY" --subject CN=p11jwt-tpm --out "$T/cert.pem" --store
openssl verify -check_ss_sig -CAfile "$T/cert.pem" "$T/cert.pem" >/dev/null 2>&1 &&
    pass "certificate signature verifies (openssl)" || fail "certificate signature"
[ "$(openssl x509 -in "$T/cert.pem" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum)" = \
  "$(openssl pkey -pubin -in "$T/pub.pem" -outform DER | sha256sum)" ] &&
    pass "certificate holds the TPM key" || fail "certificate key differs"
pkcs11-tool --module "$TPM_MODULE" --token-label tpm --list-objects --type cert 2>/dev/null |
    grep -q tpm-jwt && pass "certificate stored on the TPM token" || fail "certificate not stored"
tpm_flush

# ---- an assertion accepted by the fake Salesforce ----------------------
"$PY" "$FAKE" --port-file "$T/port" --ca-out "$T/ca.pem" --client-id CID \
    --cert "$T/cert.pem" --user user@example.com --quiet >"$T/fake.log" 2>&1 &
FAKE_PID=$!
on_exit "kill $FAKE_PID 2>/dev/null; wait $FAKE_PID 2>/dev/null"
for _ in $(seq 150); do [ -s "$T/port" ] && break; sleep 0.1; done
[ -s "$T/port" ] || { echo "FAIL: fake Salesforce did not start" >&2; cat "$T/fake.log" >&2; exit 1; }
cat >"$T/p11jwt.conf" <<EOF
[profile tpm]
key = $KEY
pin-source = file:$PIN
client-id = CID
subject = user@example.com
login-url = https://127.0.0.1:$(cat "$T/port")
audience = https://login.salesforce.com
ca-file = $T/ca.pem
EOF
expect_ok "token --direct signed on the TPM" "$P11JWT" -c "$T/p11jwt.conf" token --direct --format raw
grep -qE '^00D' "$T/out" && pass "the fake accepted the TPM-signed assertion" || fail "no access token"
expect_ok "assertion --direct" "$P11JWT" -c "$T/p11jwt.conf" assertion --direct
"$PY" - "$T/out" "$T/cert.pem" <<'PY' && pass "assertion verifies with PyJWT" || fail "assertion verify"
import sys, jwt
from cryptography import x509
a = open(sys.argv[1]).read().strip()
cert = x509.load_pem_x509_certificate(open(sys.argv[2], "rb").read())
c = jwt.decode(a, cert.public_key(), algorithms=["RS256"], audience="https://login.salesforce.com")
assert c["iss"] == "CID" and c["sub"] == "user@example.com"
PY
no_leftovers "after token and assertion"

# ---- a process that exits without freeing the module -------------------
# Three such leaks exhaust swtpm's slots (0x902) unless the layer's atexit
# hook finalises tpm2-pkcs11. So: four in a row, then a normal signature.
if [ -x "$RESTART_BIN" ]; then
    ok=0
    for i in 1 2 3 4; do
        "$RESTART_BIN" --exit-without-free "$TPM_MODULE" "$KEY" "$PIN" >/dev/null 2>"$T/err" &&
            ok=$((ok + 1))
    done
    [ "$ok" -eq 4 ] && pass "4 processes exiting without hsm_module_free signed" ||
        { fail "only $ok of 4 exit-without-free runs signed"; sed 's/^/  | /' "$T/err" >&2; }
    no_leftovers "after processes that exited without freeing"
else
    fail "tpm_restart is not built ($RESTART_BIN): add it to tests/CMakeLists.txt"
fi

# ---- swtpm restarted between two processes -----------------------------
tpm_restart
expect_ok "sign after a swtpm restart (new process)" p11 sign --key "$KEY" --in "$T/msg" --out "$T/sig4"
cmp -s "$T/sig1" "$T/sig4" && pass "same signature after the restart" || fail "signature after restart"

# ---- one process across a swtpm restart, a TPM down, concurrency ---------
if [ -x "$RESTART_BIN" ]; then
    mkdir -p "$T/steps"
    "$RESTART_BIN" "$T/steps" "$TPM_MODULE" "$KEY" "$PIN" >"$T/restart.out" 2>"$T/restart.err" &
    RPID=$!
    for s in restart stop start; do
        for _ in $(seq 900); do
            [ -e "$T/steps/$s.ready" ] && break
            kill -0 "$RPID" 2>/dev/null || break
            sleep 0.1
        done
        [ -e "$T/steps/$s.ready" ] || break
        case $s in
        restart) tpm_restart ;;
        stop) tpm_stop ;;
        start) tpm_start ;;
        esac
        touch "$T/steps/$s.go"
    done
    rc=0
    wait "$RPID" || rc=$?
    sed 's/^/  /' "$T/restart.out"
    if [ "$rc" -eq 0 ]; then pass "tpm_restart: all in-process checks"
    else fail "tpm_restart exited $rc"; sed 's/^/  | /' "$T/restart.err" >&2; fi
    no_leftovers "after the in-process test"
fi

finish
