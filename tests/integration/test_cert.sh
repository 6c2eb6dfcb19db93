# SPDX-License-Identifier: Apache-2.0
# p11jwt cert self-signed|csr|import|show against a private SoftHSM2 token.
# Signatures are checked by code that is not ours (openssl, and Debian's
# python3-cryptography), with the public key read from the token by
# pkcs11-tool.
. "$(dirname "$0")/lib.sh"
need openssl
need pkcs11-tool
need python3
python3 -c 'import cryptography' 2>/dev/null ||
    { echo "FAIL: python3-cryptography is missing" >&2; exit 1; }

softhsm_init certs
PIN=$(pin_file)
K1='pkcs11:token=certs;object=k1;type=private'
K2='pkcs11:token=certs;object=k2;type=private'
C1='pkcs11:token=certs;object=k1;type=cert'
cert() { "$P11JWT" cert "$@"; }
certp() { "$P11JWT" --pin-source "file:$PIN" cert "$@"; }
cd "$T"

# ---- usage errors exit 2 --------------------------------------------------
expect_ok "cert --help" cert --help
grep -q 'self-signed' "$T/out" || fail "cert --help does not list self-signed"
expect_ok "cert show --help" cert show --help
expect_fail "cert without subcommand" 2 'usage' cert
expect_fail "unknown subcommand" 2 "unknown subcommand 'bogus'" cert bogus
expect_fail "unknown option" 2 'Try' cert show --bogus
expect_fail "option of another subcommand" 2 \
    "option --in does not apply to 'self-signed'" \
    cert self-signed --key "$K1" --subject CN=x --in f
expect_fail "self-signed without --subject" 2 'required' \
    cert self-signed --key "$K1"
expect_fail "csr without --out" 2 'required' cert csr --key "$K1" --subject CN=x
expect_fail "import without --in" 2 'required' cert import --key "$K1"
expect_fail "show without --cert or --key" 2 'give --cert' cert show
expect_fail "stray argument" 2 "unexpected argument 'extra'" \
    cert show --cert x extra
expect_fail "unknown subject attribute" 2 "unknown attribute 'FOO'" \
    cert self-signed --key "$K1" --subject 'CN=a,FOO=b'
expect_fail "csr unknown subject attribute" 2 "unknown attribute 'CM'" \
    cert csr --key "$K1" --subject 'CM=a' --out r.pem
expect_fail "days over 825" 2 'over 825.*--force' \
    cert self-signed --key "$K1" --subject CN=a --days 826
expect_fail "days zero" 2 'at least 1 day' \
    cert self-signed --key "$K1" --subject CN=a --days 0
expect_fail "days not a number" 2 "not a whole number" \
    cert self-signed --key "$K1" --subject CN=a --days 12x
expect_fail "days over the forced maximum" 2 'over 9999' \
    cert self-signed --key "$K1" --subject CN=a --days 10000 --force

# ---- keys on the token ----------------------------------------------------
expect_ok "keygen k1" "$P11JWT" --pin-source "file:$PIN" keygen --key "$K1"
expect_ok "keygen k2" "$P11JWT" --pin-source "file:$PIN" keygen --key "$K2"
for k in k1 k2; do
    pkcs11-tool --module "$SOFTHSM_MODULE" --token-label certs --login \
        --pin "$TEST_PIN" --read-object --type pubkey --label "$k" \
        -o "$k.pub.der" >/dev/null 2>&1 ||
        { echo "FAIL: cannot read $k's public key from the token" >&2; exit 1; }
    openssl pkey -pubin -inform DER -in "$k.pub.der" -out "$k.pub.pem"
done

# verify_with_token CERT|CSR PUBKEY: the signature verifies with the token's
# public key, and the embedded public key is the token's.
verify_with_token() {
    python3 - "$1" "$2" <<'PY'
import sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
data = open(sys.argv[1], "rb").read()
pub = serialization.load_pem_public_key(open(sys.argv[2], "rb").read())
if b"CERTIFICATE REQUEST" in data:
    obj = x509.load_pem_x509_csr(data)
    tbs = obj.tbs_certrequest_bytes
else:
    obj = x509.load_pem_x509_certificate(data)
    tbs = obj.tbs_certificate_bytes
assert isinstance(obj.signature_hash_algorithm, hashes.SHA256)
pub.verify(obj.signature, tbs, padding.PKCS1v15(), hashes.SHA256())
der = lambda k: k.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
assert der(obj.public_key()) == der(pub), "public key differs from the token's"
PY
}

# ---- self-signed ----------------------------------------------------------
expect_ok "self-signed --out --store" certp self-signed --key "$K1" \
    --subject 'CN=sf-jwt test,O=Acme\, Inc.' --out c1.pem --store
grep -q 'signing a self-signed certificate with key .k1.' "$T/err" ||
    fail "no progress line on stderr"
if verify_with_token c1.pem k1.pub.pem; then
    pass "self-signed signature verifies with the token's public key"
else fail "self-signed signature does not verify with the token key"; fi
if [ "$(openssl x509 -in c1.pem -noout -pubkey)" = "$(cat k1.pub.pem)" ]; then
    pass "certificate public key equals the token's"
else fail "certificate public key is not the token's"; fi
expect_ok "openssl verify of the self-signed certificate" \
    openssl verify -CAfile c1.pem c1.pem
openssl x509 -in c1.pem -noout -text >c1.txt
grep -q 'Signature Algorithm: sha256WithRSAEncryption' c1.txt &&
    grep -q 'Version: 3' c1.txt &&
    grep -A1 'Basic Constraints: critical' c1.txt | grep -q 'CA:FALSE' &&
    grep -A1 'Key Usage: critical' c1.txt | grep -q 'Digital Signature' &&
    grep -q 'Subject Key Identifier' c1.txt &&
    grep -q 'Subject: CN = sf-jwt test, O = "Acme, Inc."' c1.txt &&
    pass "X.509 v3 fields and extensions" ||
    { fail "X.509 fields"; cat c1.txt >&2; }
serial=$(openssl x509 -in c1.pem -noout -serial | cut -d= -f2)
[ ${#serial} -eq 32 ] && pass "128-bit serial ($serial)" ||
    fail "serial $serial is not 128 bits"
s=$(date -d "$(openssl x509 -in c1.pem -noout -startdate | cut -d= -f2)" +%s)
e=$(date -d "$(openssl x509 -in c1.pem -noout -enddate | cut -d= -f2)" +%s)
[ $((e - s)) -eq $((365 * 86400)) ] && pass "default validity 365 days" ||
    fail "validity is $((e - s)) seconds"

# A second certificate: serials are random.
expect_ok "self-signed to stdout, 30 days" certp self-signed --key "$K1" \
    --subject /CN=second/OU=x --days 30
cp "$T/out" c2.pem
[ "$(openssl x509 -in c2.pem -noout -serial)" != "serial=$serial" ] &&
    pass "serials differ" || fail "the same serial twice"
expect_ok "days over 825 with --force" certp self-signed --key "$K1" \
    --subject CN=long --days 900 --force --out c900.pem

# ---- stored certificate is found again by URI -----------------------------
expect_ok "show the stored certificate by URI" \
    cert show --cert "$C1?pin-source=file:$PIN"
grep -q "serial:       $serial" "$T/out" &&
    grep -q 'token key:    matches' "$T/out" &&
    pass "stored certificate found by type=cert URI and matches its key" ||
    { fail "show by URI"; cat "$T/out" >&2; }
pkcs11-tool --module "$SOFTHSM_MODULE" --token-label certs --list-objects \
    --type cert 2>/dev/null >objs.txt
id1=$(pkcs11-tool --module "$SOFTHSM_MODULE" --token-label certs --login \
    --pin "$TEST_PIN" --list-objects --type privkey 2>/dev/null |
    awk '/label:.*k1/{f=1} f&&/ID:/{print $2; exit}')
grep -q "label: *k1" objs.txt && grep -q "ID: *$id1" objs.txt &&
    pass "certificate object has the key's label and id ($id1)" ||
    { fail "certificate object attributes"; cat objs.txt >&2; }
expect_ok "show without a PIN: key not checked, still exit 0" \
    cert show --cert "$C1"
grep -q 'token key:    not checked' "$T/out" ||
    fail "show without a PIN should say the key was not checked"
expect_fail "store again without --replace" 1 'replace|exists' \
    certp self-signed --key "$K1" --subject CN=again --store
expect_ok "store again with --replace" \
    certp self-signed --key "$K1" --subject CN=again --store --replace
expect_fail "--out refuses to overwrite" 1 'c1.pem exists; use --replace' \
    certp self-signed --key "$K1" --subject CN=again --out c1.pem

# ---- show: text and JSON --------------------------------------------------
expect_ok "show file with --key" certp show --cert c1.pem --key "$K1" --json
python3 - "$T/out" "$serial" <<'PY' && pass "show --json fields" || fail "show --json"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["serial"] == sys.argv[2], j["serial"]
assert j["key_match"] is True and j["state"] == "ok"
assert j["key_type"] == "RSA" and j["key_bits"] == 2048
assert j["days_left"] in (364, 365) and j["within_limit"] is True
assert j["size_der"] < j["size_pem"] and j["salesforce_limit"] == 4096
assert j["format"] == "PEM" and j["self_signed"] is True
PY
fp=$(openssl x509 -in c1.pem -noout -fingerprint -sha256 | cut -d= -f2)
grep -q "\"sha256\": \"$fp\"" "$T/out" && pass "SHA-256 fingerprint = openssl's" ||
    fail "sha256 fingerprint differs from openssl's $fp"
expect_ok "show file against the other key" certp show --cert c1.pem --key "$K2"
grep -q 'token key:    DOES NOT MATCH' "$T/out" && pass "mismatch shown" ||
    fail "mismatch not shown"
grep -q 'Salesforce limit 4096 bytes (DER): within' "$T/out" ||
    fail "size line missing"

# ---- CSR, a throwaway CA, import, show ------------------------------------
expect_ok "csr" certp csr --key "$K1" --subject 'CN=ca-signed,O=Acme' --out r1.pem
if verify_with_token r1.pem k1.pub.pem; then
    pass "CSR signature verifies with the token's public key"
else fail "CSR signature"; fi
expect_ok "openssl req -verify" openssl req -in r1.pem -verify -noout
expect_ok "csr for k2" certp csr --key "$K2" --subject CN=other --out r2.pem
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem \
    -subj '/CN=Throwaway Test CA' -days 2 2>/dev/null
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n' >ext.cnf
casign() { # CSR OUT [extra openssl x509 args]
    local csr=$1 out=$2; shift 2
    openssl x509 -req -in "$csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -days 30 -extfile ext.cnf -out "$out" "$@" 2>/dev/null
}
casign r1.pem s1.pem
casign r2.pem s2.pem
openssl x509 -in s1.pem -outform DER -out s1.der
expect_ok "import CA-signed PEM" certp import --key "$K1" --in s1.pem --replace
expect_ok "show the imported certificate beside the key" certp show --key "$K1"
grep -q 'issuer:       CN=Throwaway Test CA' "$T/out" &&
    grep -q 'subject:      CN=ca-signed, O=Acme' "$T/out" &&
    grep -q 'token key:    matches' "$T/out" &&
    grep -qE 'days left:    (29|30)' "$T/out" &&
    pass "round trip: csr -> CA -> import -> show" ||
    { fail "round trip show"; cat "$T/out" >&2; }
expect_ok "import CA-signed DER" certp import --key "$K1" --in s1.der --replace
expect_fail "import without --replace over an existing certificate" 1 \
    'replace|exists' certp import --key "$K1" --in s1.pem
expect_fail "import a certificate of another key" 1 \
    'not the token key.s certificate' certp import --key "$K1" --in s2.pem
grep -q "certificate public key SHA-256: $(openssl x509 -in s2.pem -noout -pubkey |
    openssl pkey -pubin -outform DER | openssl dgst -sha256 -r | cut -c1-8 |
    tr a-f A-F | sed 's/../&:/g; s/:$//')" "$T/err" &&
    grep -q 'token key public key SHA-256:' "$T/err" &&
    pass "mismatch shows both fingerprints" || { fail "mismatch fingerprints"; cat "$T/err" >&2; }

# ---- bad inputs -----------------------------------------------------------
printf 'this is not a certificate\n' >garbage.crt
head -c 600 s1.pem >trunc.pem
head -c 400 s1.der >trunc.der
python3 - <<'PY'
import datetime as dt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
ca_key = serialization.load_pem_private_key(open("ca.key", "rb").read(), None)
ca = x509.load_pem_x509_certificate(open("ca.pem", "rb").read())
pub = serialization.load_pem_public_key(open("k1.pub.pem", "rb").read())
now = dt.datetime.now(dt.timezone.utc)
def make(name, nb, na, comment=None):
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
         .issuer_name(ca.subject).public_key(pub)
         .serial_number(x509.random_serial_number())
         .not_valid_before(nb).not_valid_after(na))
    if comment:
        b = b.add_extension(x509.UnrecognizedExtension(
            x509.ObjectIdentifier("2.16.840.1.113730.1.13"),
            b"\x16\x82" + len(comment).to_bytes(2, "big") + comment), False)
    c = b.sign(ca_key, hashes.SHA256())
    open(name + ".pem", "wb").write(c.public_bytes(serialization.Encoding.PEM))
make("expired", now - dt.timedelta(days=10), now - dt.timedelta(days=1))
make("future", now + dt.timedelta(days=2), now + dt.timedelta(days=30))
make("big", now - dt.timedelta(days=1), now + dt.timedelta(days=30), b"x" * 4000)
PY
expect_fail "import garbage" 1 'garbage.crt is not a certificate' \
    certp import --key "$K1" --in garbage.crt
expect_fail "import truncated PEM" 1 'trunc.pem: damaged or truncated PEM' \
    certp import --key "$K1" --in trunc.pem
expect_fail "import truncated DER" 1 'trunc.der: truncated DER' \
    certp import --key "$K1" --in trunc.der
expect_fail "import a private key" 1 \
    'ca.key holds a private key, not a certificate; never copy private keys around' \
    certp import --key "$K1" --in ca.key
expect_fail "import a CSR" 1 'r1.pem holds a certificate signing request' \
    certp import --key "$K1" --in r1.pem
expect_fail "import an expired certificate" 1 'expired.pem expired on' \
    certp import --key "$K1" --in expired.pem
expect_fail "import a not-yet-valid certificate" 1 \
    'future.pem is not valid before .*--force' \
    certp import --key "$K1" --in future.pem
expect_ok "import a not-yet-valid certificate with --force" \
    certp import --key "$K1" --in future.pem --force --replace
expect_fail "import a certificate over 4 KB" 1 \
    "big.pem is [0-9]+ bytes in DER, over Salesforce's limit of 4096" \
    certp import --key "$K1" --in big.pem
expect_ok "show a certificate over 4 KB" cert show --cert big.pem
grep -q 'OVER THE LIMIT' "$T/out" && pass "show flags the size" ||
    fail "show does not flag the size"
expect_ok "show an expired certificate" cert show --cert expired.pem
grep -q 'state:        expired' "$T/out" && pass "show says expired" ||
    fail "show does not say expired"
expect_fail "import a missing file" 1 'nope.pem' \
    certp import --key "$K1" --in nope.pem
expect_fail "show a missing file" 1 'nope.pem' cert show --cert nope.pem
expect_fail "show garbage" 1 'garbage.crt is not a certificate' \
    cert show --cert garbage.crt
expect_fail "show a private key" 1 'holds a private key' cert show --cert ca.key
expect_fail "--in with a URI" 2 'not a pkcs11: URI' \
    certp import --key "$K1" --in "$C1"
expect_fail "self-signed with a missing key" 1 'k9|not found' \
    certp self-signed --key 'pkcs11:token=certs;object=k9;type=private' \
    --subject CN=a --out k9.pem
[ ! -e k9.pem ] && pass "nothing written on failure" || fail "k9.pem was written"
expect_fail "show a certificate URI that does not exist" 1 '.' \
    cert show --cert 'pkcs11:token=certs;object=nothing;type=cert'

finish
