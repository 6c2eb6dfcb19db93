# SPDX-License-Identifier: Apache-2.0
# p11jwt keygen through the CLI, inside a private SoftHSM2 token.
. "$(dirname "$0")/lib.sh"
softhsm_init kg
PIN=$(pin_file)
need openssl

expect_ok "--help" "$P11JWT" keygen --help
grep -q -- '--bits' "$T/out" || fail "--help mentions --bits"

expect_fail "no --key is a usage error" 2 "--key URI is required" \
    "$P11JWT" keygen
expect_fail "bad --bits is a usage error" 2 "--bits must be 2048, 3072 or 4096" \
    "$P11JWT" keygen --key "pkcs11:token=kg;object=a" --bits 1024
expect_fail "stray argument is a usage error" 2 "unexpected argument" \
    "$P11JWT" keygen --key "pkcs11:token=kg;object=a" extra
expect_fail "unknown option is a usage error" 2 "Try 'p11jwt keygen --help'" \
    "$P11JWT" keygen --frobnicate

expect_ok "keygen 2048 (default)" \
    "$P11JWT" keygen --key "pkcs11:token=kg;object=jwt;type=private" \
    --pin-source "file:$PIN"
grep -q "generated RSA-2048 key on token 'kg'" "$T/out" || fail "reports token and size"
grep -q "label: jwt" "$T/out" || fail "reports the label"
grep -qE "id: +[0-9a-f]{16}$" "$T/out" || fail "reports an 8-byte hex id"
grep -q "never-extractable" "$T/out" || fail "reports never-extractable"
grep -q "no-decrypt, no-unwrap" "$T/out" || fail "reports sign-only"
grep -q "generating RSA-2048 key on token 'kg'..." "$T/err" || fail "progress line on stderr"

expect_ok "keygen 3072 with id, PIN source from the URI" \
    "$P11JWT" keygen --key "pkcs11:token=kg;object=jwt3k;id=%0a%0b?pin-source=$PIN" \
    --bits 3072
grep -q "id:    0a0b" "$T/out" || fail "uses the URI's id"
grep -q "bits:  3072" "$T/out" || fail "3072 bits"

# The module from P11JWT_MODULE was used above; --module works too.
expect_ok "--module given explicitly" env -u P11JWT_MODULE \
    "$P11JWT" keygen --module "$SOFTHSM_MODULE" \
    --key "pkcs11:token=kg;object=viaflag" --pin-source "file:$PIN"

expect_fail "existing label refused" 1 \
    "an object labelled 'jwt' already exists on token 'kg'; choose another label or delete it" \
    "$P11JWT" keygen --key "pkcs11:token=kg;object=jwt" --pin-source "file:$PIN"
expect_fail "missing token" 1 "token 'nope' not found \(tokens present: kg\)" \
    "$P11JWT" keygen --key "pkcs11:token=nope;object=x" --pin-source "file:$PIN"
expect_fail "no label" 1 "add object=LABEL" \
    "$P11JWT" keygen --key "pkcs11:token=kg" --pin-source "file:$PIN"
expect_fail "PIN in the URI refused" 1 "PINs never go in URIs" \
    "$P11JWT" keygen --key "pkcs11:token=kg;object=x?pin-value=1234"
grep -q 1234 "$T/err" && fail "the PIN is not echoed"
expect_fail "bad URI" 1 "bad pkcs11: URI" \
    "$P11JWT" keygen --key "pkcs11:token=kg;object=%zz" --pin-source "file:$PIN"
expect_fail "not a pkcs11: URI" 1 "must start with 'pkcs11:'" \
    "$P11JWT" keygen --key "token=kg" --pin-source "file:$PIN"
chmod 644 "$PIN"
expect_fail "PIN file readable by others" 1 \
    "PIN file $PIN is readable by others \(mode 0644\); chmod 600 it" \
    "$P11JWT" keygen --key "pkcs11:token=kg;object=x" --pin-source "file:$PIN"
chmod 600 "$PIN"
WRONG=$(pin_file 0000)
expect_fail "wrong PIN" 1 "rejected the PIN .*CKR_PIN_INCORRECT" \
    "$P11JWT" keygen --key "pkcs11:token=kg;object=x" --pin-source "file:$WRONG"
expect_fail "missing module" 1 "module /nonexistent/mod.so: no such file" \
    "$P11JWT" keygen --module /nonexistent/mod.so --key "pkcs11:token=kg;object=x" \
    --pin-source "file:$PIN"
expect_fail "not a PKCS#11 module" 1 "not a PKCS#11 module \(no C_GetFunctionList\)" \
    "$P11JWT" keygen --module /lib/x86_64-linux-gnu/libz.so.1 \
    --key "pkcs11:token=kg;object=x" --pin-source "file:$PIN"
expect_fail "env PIN source unset" 1 "environment variable P11JWT_NO_SUCH_PIN" \
    "$P11JWT" keygen --key "pkcs11:token=kg;object=x" --pin-source env:P11JWT_NO_SUCH_PIN
expect_ok "env PIN source" env P11JWT_TEST_PIN_ENV="$TEST_PIN" \
    "$P11JWT" keygen --key "pkcs11:token=kg;object=viaenv" --pin-source env:P11JWT_TEST_PIN_ENV
mkdir -p "$T/creds"; printf '%s\n' "$TEST_PIN" >"$T/creds/tokenpin"; chmod 400 "$T/creds/tokenpin"
expect_ok "systemd credential PIN source" env CREDENTIALS_DIRECTORY="$T/creds" \
    "$P11JWT" keygen --key "pkcs11:token=kg;object=viacred" --pin-source systemd:tokenpin
expect_fail "systemd source without CREDENTIALS_DIRECTORY" 1 "CREDENTIALS_DIRECTORY is not set" \
    env -u CREDENTIALS_DIRECTORY "$P11JWT" keygen --key "pkcs11:token=kg;object=x" \
    --pin-source systemd:tokenpin

# Non-extractable as seen by another PKCS#11 consumer (pkcs11-tool lists
# the key's access flags; the Cryptoki-level proof is itest_pkcs11_keygen).
if command -v pkcs11-tool >/dev/null 2>&1; then
    pkcs11-tool --module "$SOFTHSM_MODULE" --token-label kg --login \
        --pin "$TEST_PIN" --list-objects --type privkey >"$T/objs" 2>/dev/null || true
    if grep -A6 "label: *jwt$" "$T/objs" | grep -q "never extractable"; then
        pass "pkcs11-tool sees the key as never extractable"
    else
        fail "pkcs11-tool sees the key as never extractable"; cat "$T/objs" >&2
    fi
fi
finish
