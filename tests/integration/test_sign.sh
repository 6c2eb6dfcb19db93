# SPDX-License-Identifier: Apache-2.0
# p11jwt sign through the CLI: RS256 signatures verified by openssl.
. "$(dirname "$0")/lib.sh"
softhsm_init sg
PIN=$(pin_file)
need openssl
KEY="pkcs11:token=sg;object=jwt;type=private"

expect_ok "--help" "$P11JWT" sign --help
grep -q -- '--base64url' "$T/out" || fail "--help mentions --base64url"
expect_fail "no --key is a usage error" 2 "--key URI is required" "$P11JWT" sign
expect_fail "stray argument is a usage error" 2 "unexpected argument" \
    "$P11JWT" sign --key "$KEY" extra
expect_fail "unknown option is a usage error" 2 "Try 'p11jwt sign --help'" \
    "$P11JWT" sign --nope
expect_fail "empty --in is a usage error" 2 "--in and --out" \
    "$P11JWT" sign --key "$KEY" --in ""

expect_ok "keygen" "$P11JWT" keygen --key "$KEY" --pin-source "file:$PIN"
pkcs11-tool --module "$SOFTHSM_MODULE" --token-label sg --read-object \
    --type pubkey --label jwt -o "$T/pub.der" >/dev/null 2>&1 ||
    { echo "FAIL: cannot export the public key" >&2; exit 1; }
openssl pkey -pubin -inform DER -in "$T/pub.der" -out "$T/pub.pem"

printf 'eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0' >"$T/msg"
expect_ok "sign a file to a file" \
    "$P11JWT" sign --key "$KEY" --pin-source "file:$PIN" --in "$T/msg" --out "$T/sig"
if openssl dgst -sha256 -verify "$T/pub.pem" -signature "$T/sig" "$T/msg" >/dev/null; then
    pass "openssl verifies the signature"; else fail "openssl verifies the signature"; fi
printf 'tampered' >"$T/msg2"
if openssl dgst -sha256 -verify "$T/pub.pem" -signature "$T/sig" "$T/msg2" >/dev/null 2>&1; then
    fail "a different message does not verify"; else pass "a different message does not verify"; fi

expect_ok "stdin to stdout, PIN source in the URI" \
    sh -c "\"$P11JWT\" sign --key '$KEY?pin-source=file:$PIN' <'$T/msg' >'$T/sig2'"
cmp -s "$T/sig" "$T/sig2" && pass "same signature (PKCS#1 v1.5 is deterministic)" ||
    fail "same signature (PKCS#1 v1.5 is deterministic)"

expect_ok "--base64url" "$P11JWT" sign --key "$KEY" --pin-source "file:$PIN" \
    --in "$T/msg" --base64url
B64=$(cat "$T/out")
[ "${#B64}" -eq 342 ] && pass "base64url of 256 bytes is 342 characters" ||
    fail "base64url length ${#B64}"
printf '%s' "$B64" | tr '_-' '/+' | sed 's/$/==/' | base64 -d >"$T/sig3" 2>/dev/null || true
cmp -s "$T/sig" "$T/sig3" && pass "base64url decodes to the raw signature" ||
    fail "base64url decodes to the raw signature"

expect_fail "missing key lists keys" 1 "no private key 'nokey' on token 'sg' \(private keys present: 'jwt'" \
    "$P11JWT" sign --key "pkcs11:token=sg;object=nokey" --pin-source "file:$PIN" --in "$T/msg"
expect_fail "missing token" 1 "token 'zz' not found \(tokens present: sg\)" \
    "$P11JWT" sign --key "pkcs11:token=zz;object=jwt" --pin-source "file:$PIN" --in "$T/msg"
expect_fail "missing input file" 1 "$T/nothing" \
    "$P11JWT" sign --key "$KEY" --pin-source "file:$PIN" --in "$T/nothing"
expect_fail "no PIN source" 1 "needs a PIN" "$P11JWT" sign --key "$KEY" --in "$T/msg"
WRONG=$(pin_file 0000)
expect_fail "wrong PIN" 1 "rejected the PIN" \
    "$P11JWT" sign --key "$KEY" --pin-source "file:$WRONG" --in "$T/msg"
grep -q 0000 "$T/err" && fail "the PIN is not echoed"
chmod 640 "$PIN"
expect_fail "PIN file mode 0640" 1 "\(mode 0640\); chmod 600 it" \
    "$P11JWT" sign --key "$KEY" --pin-source "file:$PIN" --in "$T/msg"
chmod 600 "$PIN"
expect_fail "pin-value refused" 1 "PINs never go in URIs" \
    "$P11JWT" sign --key "$KEY;pin-value=$TEST_PIN" --in "$T/msg"
expect_fail "type=public refused" 1 "needs type=private" \
    "$P11JWT" sign --key "pkcs11:token=sg;object=jwt;type=public" --pin-source "file:$PIN" --in "$T/msg"
finish
