# SPDX-License-Identifier: Apache-2.0
# p11jwt eca: every emitted XML file, for every combination of options,
# validates against the Metadata API v66 schema (xmllint), and its content
# is what was asked for (checked by Python's XML parser, not by our code).
# Then every bad input is refused with a message naming it.
. "$(dirname "$0")/lib.sh"
need xmllint
need openssl
need python3
python3 -c 'import cryptography' 2>/dev/null ||
    { echo "FAIL: python3-cryptography is missing" >&2; exit 1; }

XSD=$P11JWT_SRC/tests/data/metadata-v66.xsd
[ -r "$XSD" ] || XSD=$P11JWT_SRC/../shared/salesforce/metadata-v66.xsd
[ -r "$XSD" ] || { echo "FAIL: metadata-v66.xsd not found in tests/data or ../shared/salesforce" >&2; exit 1; }

softhsm_init eca
PIN=$(pin_file)
K='pkcs11:token=eca;object=jwt;type=private'
C='pkcs11:token=eca;object=jwt;type=cert'
cd "$T"
eca() { "$P11JWT" eca "$@"; }
E=ops@example.com

# ---- a key and its certificate on the token ---------------------------------
expect_ok "keygen" "$P11JWT" --pin-source "file:$PIN" keygen --key "$K"
expect_ok "cert self-signed --store" "$P11JWT" --pin-source "file:$PIN" \
    cert self-signed --key "$K" --subject CN=eca-test --store --out cert.pem
[ -s cert.pem ] || { echo "FAIL: no certificate to test with" >&2; exit 1; }
openssl x509 -in cert.pem -outform DER | base64 -w0 >cert.b64
sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' cert.pem >cert.pemtext

cat >p11jwt.conf <<CONF
[profile prod]
key = $K
client-id = CID
subject = user@example.com

[profile filecert]
key = $K
cert = $T/cert.pem
client-id = CID
subject = user@example.com
CONF

# ---- every combination validates and says what was asked -------------------
LABEL=$'Ops & <Finance> "JWT" \'HSM\' Ünïcødé'
: >manifest.tsv
n=0
for src in profile file uri; do
    for who in ps profile none; do
        for cb in yes no; do
            for enc in pem base64-der; do
                for lab in yes no; do
                    n=$((n + 1))
                    out=$T/combo/$n
                    args=(--name HsmJwtAgent --contact-email "$E" --out "$out"
                          --cert-encoding "$enc")
                    case $src in
                    profile) args+=(--profile prod) ;;
                    file) args+=(--cert "$T/cert.pem") ;;
                    uri) args+=(--cert "$C") ;;
                    esac
                    case $who in
                    ps) args+=(--permission-set HsmJwtAgent_Access) ;;
                    profile) args+=(--profile-name "System Administrator") ;;
                    esac
                    [ "$cb" = yes ] && args+=(--callback-url "https://app.example.com/cb?x=1&y=2")
                    [ "$lab" = yes ] && args+=(--label "$LABEL")
                    if "$P11JWT" -c "$T/p11jwt.conf" eca "${args[@]}" >"$T/out" 2>"$T/err"; then
                        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$src" "$who" "$cb" "$enc" "$lab" >>manifest.tsv
                    else
                        fail "combination $n ($src $who callback=$cb $enc label=$lab)"
                        sed 's/^/  | /' "$T/err" >&2
                    fi
                done
            done
        done
    done
done
[ "$(wc -l <manifest.tsv)" -eq 72 ] && pass "72 combinations written" ||
    fail "only $(wc -l <manifest.tsv) of 72 combinations written"
# The last combination had no permission set: 7 files, each listed.
if [ "$(grep -c '^p11jwt eca: wrote ' "$T/err")" -eq 7 ] &&
    grep -q "wrote $T/combo/72/force-app/main/default/externalClientApps/HsmJwtAgent.eca-meta.xml" "$T/err" &&
    grep -q "7 files written to $T/combo/72" "$T/err"; then
    pass "progress lists the files written"
else
    fail "progress lines"; sed 's/^/  | /' "$T/err" >&2
fi

mapfile -t xmls < <(find "$T/combo" -name '*.xml' | sort)
nx=${#xmls[@]}
if xmllint --noout --schema "$XSD" "${xmls[@]}" 2>xmllint.log; then
    ok=$(grep -c ' validates$' xmllint.log || true)
    [ "$ok" -eq "$nx" ] && pass "all $nx XML files validate against the v66 XSD" ||
        fail "xmllint: $ok of $nx validate"
else
    fail "xmllint schema validation"
    grep -v ' validates$' xmllint.log | head -20 | sed 's/^/  | /' >&2
fi
[ "$nx" -ge $((72 * 5)) ] || fail "too few XML files: $nx"
# The schema really checks order: the same file with two elements swapped
# is rejected, so the validation above is not vacuous.
g=$T/combo/1/force-app/main/default/extlClntAppGlobalOauthSets/HsmJwtAgent_glbloauth.ecaGlblOauth-meta.xml
python3 - "$g" swapped.xml <<'PY'
import sys, re
t = open(sys.argv[1]).read()
label = re.search(r"    <label>.*</label>\n", t).group(0)
t = t.replace(label, "")
t = t.replace("    <callbackUrl>", label + "    <callbackUrl>")
open(sys.argv[2], "w").write(t)
PY
if xmllint --noout --schema "$XSD" swapped.xml 2>swapped.log; then
    fail "xmllint accepted out-of-order elements"
else
    grep -q 'This element is not expected' swapped.log && pass "out-of-order element rejected by the XSD" ||
        fail "unexpected xmllint output: $(cat swapped.log)"
fi

if python3 - "$T" "$LABEL" <<'PY'; then pass "every combination's content checked"; else fail "content"; fi
import json, os, sys
import xml.etree.ElementTree as ET
T, LABEL = sys.argv[1], sys.argv[2]
NS = "{http://soap.sforce.com/2006/04/metadata}"
pem = open(f"{T}/cert.pemtext").read().rstrip("\n")
b64 = open(f"{T}/cert.b64").read().strip()
D = "force-app/main/default"
def load(out, rel, root):
    t = ET.parse(f"{out}/{rel}").getroot()
    assert t.tag == NS + root, (rel, t.tag)
    return {c.tag[len(NS):]: c.text for c in t}, [c.tag[len(NS):] for c in t]
for line in open(f"{T}/manifest.tsv"):
    n, src, who, cb, enc, lab = line.rstrip("\n").split("\t")
    out = f"{T}/combo/{n}"
    want = {"sfdx-project.json", "README.md", "manifest/package.xml",
            f"{D}/externalClientApps/HsmJwtAgent.eca-meta.xml",
            f"{D}/extlClntAppGlobalOauthSets/HsmJwtAgent_glbloauth.ecaGlblOauth-meta.xml",
            f"{D}/extlClntAppOauthSettings/HsmJwtAgent_oauth.ecaOauth-meta.xml",
            f"{D}/extlClntAppOauthPolicies/HsmJwtAgent_oauthPlcy.ecaOauthPlcy-meta.xml"}
    if who == "ps":
        want.add(f"{D}/permissionsets/HsmJwtAgent_Access.permissionset-meta.xml")
    got = {os.path.relpath(os.path.join(d, f), out)
           for d, _, fs in os.walk(out) for f in fs}
    assert got == want, (n, got ^ want)
    proj = json.load(open(f"{out}/sfdx-project.json"))
    assert proj["sourceApiVersion"] == "66.0" and \
        proj["packageDirectories"] == [{"path": "force-app", "default": True}], proj
    app, _ = load(out, f"{D}/externalClientApps/HsmJwtAgent.eca-meta.xml",
                  "ExternalClientApplication")
    assert app["label"] == (LABEL if lab == "yes" else "HsmJwtAgent"), app["label"]
    assert app["contactEmail"] == "ops@example.com"
    assert app["distributionState"] == "Local"
    g, order = load(out, f"{D}/extlClntAppGlobalOauthSets/HsmJwtAgent_glbloauth.ecaGlblOauth-meta.xml",
                    "ExtlClntAppGlobalOauthSettings")
    assert g["certificate"] == (pem if enc == "pem" else b64), n
    assert g["callbackUrl"] == ("https://app.example.com/cb?x=1&y=2" if cb == "yes"
                                else "https://login.salesforce.com/services/oauth2/success")
    assert g["externalClientApplication"] == "HsmJwtAgent"
    for k in ("consumerKey", "consumerSecret"):
        assert k not in g, k
    assert g["shouldRotateConsumerKey"] == "false" and g["shouldRotateConsumerSecret"] == "false"
    o, _ = load(out, f"{D}/extlClntAppOauthSettings/HsmJwtAgent_oauth.ecaOauth-meta.xml",
                "ExtlClntAppOauthSettings")
    assert o["commaSeparatedOauthScopes"] == "Api,RefreshToken" and "oauthLink" not in o
    p, _ = load(out, f"{D}/extlClntAppOauthPolicies/HsmJwtAgent_oauthPlcy.ecaOauthPlcy-meta.xml",
                "ExtlClntAppOauthConfigurablePolicies")
    assert p["permittedUsersPolicyType"] == "AdminApprovedPreAuthorized"
    assert p.get("commaSeparatedPermissionSet") == ("HsmJwtAgent_Access" if who == "ps" else None)
    assert p.get("commaSeparatedProfile") == ("System Administrator" if who == "profile" else None)
    pkg = ET.parse(f"{out}/manifest/package.xml").getroot()
    types = {t.find(NS + "name").text: t.find(NS + "members").text for t in pkg.findall(NS + "types")}
    assert types.get("PermissionSet") == ("HsmJwtAgent_Access" if who == "ps" else None)
    assert types["ExtlClntAppGlobalOauthSettings"] == "HsmJwtAgent_glbloauth"
    assert types["ExtlClntAppOauthConfigurablePolicies"] == "HsmJwtAgent_oauthPlcy"
    assert pkg.find(NS + "version").text == "66.0"
    for dp, _, fs in os.walk(out):
        for f in fs:
            text = open(os.path.join(dp, f)).read()
            for bad in ("<consumerKey", "<consumerSecret", "<oauthLink", ">true</shouldRotate"):
                assert bad not in text, (f, bad)
    r = open(f"{out}/README.md").read()
    assert "sf project deploy start --source-dir force-app" in r
    assert "--manifest manifest/package.xml" in r
    assert "ExtlClntAppGlobalOauthSettings:HsmJwtAgent_glbloauth" in r
    assert "15 minutes" in r
    assert ("sf org assign permset --name HsmJwtAgent_Access" in r) == (who == "ps")
PY

# The label's special characters are escaped in the file itself.
f=$T/combo/1/force-app/main/default/externalClientApps/HsmJwtAgent.eca-meta.xml
grep -qF '<label>Ops &amp; &lt;Finance&gt; &quot;JWT&quot; &apos;HSM&apos; Ünïcødé</label>' "$f" &&
    pass "label escaped" || fail "label not escaped as expected: $(grep label "$f")"

# A profile whose cert key names a file; another API version.
expect_ok "profile with cert = FILE" "$P11JWT" -c "$T/p11jwt.conf" eca --profile filecert \
    --name App2 --contact-email "$E" --out "$T/o2" --api-version 62.0 \
    --profile-name "Integration User"
grep -q '"sourceApiVersion": "62.0"' "$T/o2/sfdx-project.json" &&
    xmllint --noout --schema "$XSD" $(find "$T/o2" -name '*.xml') 2>/dev/null &&
    pass "api-version 62.0 written and valid" || fail "api-version 62.0"
expect_ok "help" eca --help
grep -q -- '--permission-set' "$T/out" || fail "help does not list --permission-set"

# ---- --out: empty or absent, or --force replacing only our files ------------
mkdir -p "$T/o3" && echo keep >"$T/o3/notes.txt"
expect_fail "non-empty --out without --force" 1 'not empty; use --force' \
    eca --cert cert.pem --name App3 --contact-email "$E" --out "$T/o3"
[ ! -e "$T/o3/sfdx-project.json" ] && pass "nothing written on refusal" || fail "wrote into a non-empty dir"
expect_ok "--force into a non-empty dir" \
    eca --cert cert.pem --name App3 --contact-email "$E" --out "$T/o3" --force
[ "$(cat "$T/o3/notes.txt")" = keep ] && [ -s "$T/o3/sfdx-project.json" ] &&
    pass "--force keeps other files" || fail "--force clobbered other files"
echo stale >"$T/o3/README.md"
expect_ok "--force again replaces our files" \
    eca --cert cert.pem --name App3 --contact-email "$E" --out "$T/o3" --force
grep -q '^# External Client App App3' "$T/o3/README.md" && pass "README replaced" || fail "README not replaced"
mkdir -p "$T/o4" && echo x >"$T/o4/x" && ln -s /tmp "$T/o4/force-app"
expect_fail "symlink inside --out" 1 'not a directory \(or is a symbolic link\)' \
    eca --cert cert.pem --name App4 --contact-email "$E" --out "$T/o4" --force
echo x >"$T/afile"
expect_fail "--out is a file" 1 'not a directory' \
    eca --cert cert.pem --name App5 --contact-email "$E" --out "$T/afile"
expect_ok "--out absent with missing parents" \
    eca --cert cert.pem --name App6 --contact-email "$E" --out "$T/deep/er/o6"

# ---- bad names, each rule --------------------------------------------------
bad_name() { expect_fail "name $1" 2 "$3" eca --cert cert.pem --name "$2" --contact-email "$E" --out "$T/bn"; }
bad_name "empty" "" 'empty'
bad_name "starting with a digit" 1App 'must start with a letter'
bad_name "starting with an underscore" _App 'must start with a letter'
bad_name "with a hyphen" My-App "contains '-'"
bad_name "with a space" 'My App' 'space or a non-ASCII'
bad_name "non-ASCII" 'Äpp' 'must start with a letter'
bad_name "non-ASCII inside" 'Appé' 'space or a non-ASCII'
bad_name "with a double underscore" My__App 'two consecutive underscores'
bad_name "ending with an underscore" MyApp_ 'must not end with an underscore'
bad_name "31 characters" AAAAAAAAAABBBBBBBBBBCCCCCCCCCCD 'is 31 characters long; at most 30'
bad_name "with XML" 'A<b>' "contains '<'"
expect_ok "30-character name" eca --cert cert.pem --name AAAAAAAAAABBBBBBBBBBCCCCCCCCCC \
    --contact-email "$E" --out "$T/n30"
expect_fail "bad permission set name" 2 '--permission-set .*two consecutive underscores' \
    eca --cert cert.pem --name App --contact-email "$E" --out "$T/bn" --permission-set PS__x
expect_fail "permission set with a trailing underscore" 2 '--permission-set .*end with an underscore' \
    eca --cert cert.pem --name App --contact-email "$E" --out "$T/bn" --permission-set PS_
expect_fail "profile name with a comma" 2 'contains a comma' \
    eca --cert cert.pem --name App --contact-email "$E" --out "$T/bn" --profile-name 'A, B'
expect_fail "label with a control character" 2 'control character' \
    eca --cert cert.pem --name App --contact-email "$E" --out "$T/bn" --label $'a\tb'
expect_fail "label not UTF-8" 2 'not valid UTF-8' \
    eca --cert cert.pem --name App --contact-email "$E" --out "$T/bn" --label $'a\xffb'
expect_fail "label too long" 2 'at most 80' \
    eca --cert cert.pem --name App --contact-email "$E" --out "$T/bn" --label "$(printf 'x%.0s' {1..81})"

# ---- other bad arguments ---------------------------------------------------
for bad in nobody a@b 'a@@example.com' '.a@example.com' 'a..b@example.com' \
    'a b@example.com' 'a@-example.com' 'a@example.123' 'a@exa_mple.com'; do
    expect_fail "email '$bad'" 2 'is not an e-mail address' \
        eca --cert cert.pem --name App --contact-email "$bad" --out "$T/bn"
done
expect_fail "http callback" 2 'must use https://, not http://' \
    eca --cert cert.pem --name App --contact-email "$E" --out "$T/bn" \
    --callback-url http://localhost:1717/OauthRedirect
expect_fail "callback without scheme" 2 'not an https:// URL' \
    eca --cert cert.pem --name App --contact-email "$E" --out "$T/bn" --callback-url app.example.com/cb
expect_fail "callback with a space" 2 'space' \
    eca --cert cert.pem --name App --contact-email "$E" --out "$T/bn" --callback-url 'https://a.example.com/a b'
for v in 66 66.1 v66.0 66.00 6.0; do
    expect_fail "api-version '$v'" 2 'not of the form NN.0' \
        eca --cert cert.pem --name App --contact-email "$E" --out "$T/bn" --api-version "$v"
done
expect_fail "api-version too old" 2 'too old' \
    eca --cert cert.pem --name App --contact-email "$E" --out "$T/bn" --api-version 59.0
expect_fail "profile-name needs 62.0" 2 'needs --api-version 62.0' \
    eca --cert cert.pem --name App --contact-email "$E" --out "$T/bn" --api-version 61.0 --profile-name X
expect_fail "bad --cert-encoding" 2 'use pem or base64-der' \
    eca --cert cert.pem --name App --contact-email "$E" --out "$T/bn" --cert-encoding der
expect_fail "both --profile and --cert" 2 'exactly one of --profile' \
    eca --profile prod --cert cert.pem --name App --contact-email "$E" --out "$T/bn"
expect_fail "neither --profile nor --cert" 2 'exactly one of --profile' \
    eca --name App --contact-email "$E" --out "$T/bn"
expect_fail "permission set and profile name" 2 'not both' \
    eca --cert cert.pem --name App --contact-email "$E" --out "$T/bn" --permission-set P --profile-name Q
expect_fail "missing --out" 2 'required' eca --cert cert.pem --name App --contact-email "$E"
expect_fail "stray argument" 2 "unexpected argument 'extra'" \
    eca --cert cert.pem --name App --contact-email "$E" --out "$T/bn" extra
[ ! -e "$T/bn" ] && pass "no output on any bad argument" || fail "$T/bn was created"

# ---- bad certificates --------------------------------------------------------
expect_fail "missing cert file" 1 'missing.pem' \
    eca --cert "$T/missing.pem" --name App --contact-email "$E" --out "$T/bc"
expect_fail "missing cert on the token" 1 'nosuch' \
    eca --cert 'pkcs11:token=eca;object=nosuch;type=cert' --name App --contact-email "$E" --out "$T/bc"
expect_fail "unknown profile" 1 "nosuch" \
    "$P11JWT" -c "$T/p11jwt.conf" eca --profile nosuch --name App --contact-email "$E" --out "$T/bc"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out key.pem 2>/dev/null
expect_fail "a private key as --cert" 1 'private key' \
    eca --cert key.pem --name App --contact-email "$E" --out "$T/bc"
python3 - "$T" <<'PY' || { echo "FAIL: could not make test certificates" >&2; exit 1; }
import datetime, sys
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
T = sys.argv[1]
now = datetime.datetime.now(datetime.timezone.utc)
def make(name, key, nb, na, extra=None):
    subj = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    b = (x509.CertificateBuilder().subject_name(subj).issuer_name(subj)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(nb).not_valid_after(na))
    if extra:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(f"h{i:04d}.example.com") for i in range(extra)]), False)
    c = b.sign(key, hashes.SHA256())
    open(f"{T}/{name}.pem", "wb").write(c.public_bytes(serialization.Encoding.PEM))
rsa2k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
make("expired", rsa2k, now - datetime.timedelta(days=30), now - datetime.timedelta(days=1))
make("future", rsa2k, now + datetime.timedelta(days=2), now + datetime.timedelta(days=30))
make("ec", ec.generate_private_key(ec.SECP256R1()), now, now + datetime.timedelta(days=30))
make("rsa1024", rsa.generate_private_key(public_exponent=65537, key_size=1024), now,
     now + datetime.timedelta(days=30))
make("big", rsa2k, now, now + datetime.timedelta(days=30), extra=200)
make("mid", rsa2k, now, now + datetime.timedelta(days=30), extra=150)
PY
expect_fail "expired certificate" 1 'expired' \
    eca --cert expired.pem --name App --contact-email "$E" --out "$T/bc"
expect_fail "not-yet-valid certificate" 1 'not valid' \
    eca --cert future.pem --name App --contact-email "$E" --out "$T/bc"
expect_fail "EC certificate" 1 'needs RSA with at least 2048 bits' \
    eca --cert ec.pem --name App --contact-email "$E" --out "$T/bc"
expect_fail "RSA-1024 certificate" 1 'RSA-1024.*needs RSA' \
    eca --cert rsa1024.pem --name App --contact-email "$E" --out "$T/bc"
expect_fail "certificate over 4 KB" 1 '4096' \
    eca --cert big.pem --name App --contact-email "$E" --out "$T/bc"
[ ! -e "$T/bc" ] && pass "no output on any bad certificate" || fail "$T/bc was created"
# Under 4 KB as DER but over it as PEM: written, with a warning.
expect_ok "certificate over 4 KB as PEM only" \
    eca --cert mid.pem --name App --contact-email "$E" --out "$T/mid"
grep -q 'warning: the certificate is .* characters as PEM' "$T/err" &&
    pass "PEM size warning" || fail "no PEM size warning"

finish
