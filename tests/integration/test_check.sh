# SPDX-License-Identifier: Apache-2.0
# p11jwt check (the Nagios/Icinga plugin) against a private SoftHSM2 token.
# Keys are made on the token; certificates for them with chosen validity
# are issued by a throwaway CA in python3-cryptography from the token's CSR
# (p11jwt cert self-signed only makes certificates valid from now). Each
# state is checked for its exit code, status line and perfdata.
. "$(dirname "$0")/lib.sh"
need python3
python3 -c 'import cryptography' 2>/dev/null ||
    { echo "FAIL: python3-cryptography is missing" >&2; exit 1; }

softhsm_init mon
PIN=$(pin_file)
K1='pkcs11:token=mon;object=k1;type=private'
K2='pkcs11:token=mon;object=k2;type=private'
K3='pkcs11:token=mon;object=k3;type=private'
cd "$T"

"$P11JWT" --pin-source "file:$PIN" keygen --key "$K1" >/dev/null &&
    "$P11JWT" --pin-source "file:$PIN" keygen --key "$K2" >/dev/null 2>&1 &&
    "$P11JWT" --pin-source "file:$PIN" keygen --key "$K3" >/dev/null 2>&1 ||
    { echo "FAIL: keygen on the token" >&2; exit 1; }
for k in k1 k2; do
    "$P11JWT" --pin-source "file:$PIN" cert csr \
        --key "pkcs11:token=mon;object=$k;type=private" \
        --subject "CN=$k,O=Monitor Test" --out "$k.csr" 2>/dev/null ||
        { echo "FAIL: cert csr for $k" >&2; exit 1; }
done

# mkcert CSR NOT_BEFORE_HOURS NOT_AFTER_HOURS OUT: a certificate for the
# CSR's public key, valid from now+NB to now+NA hours, from a throwaway CA.
cat >mkcert.py <<'PY'
import datetime, os, sys
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

csr_path, nb_h, na_h, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
if os.path.exists("ca.key"):
    ca = serialization.load_pem_private_key(open("ca.key", "rb").read(), None)
else:
    ca = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    open("ca.key", "wb").write(ca.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
csr = x509.load_pem_x509_csr(open(csr_path, "rb").read())
now = datetime.datetime.utcnow().replace(microsecond=0)
cert = (x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Throwaway Test CA")]))
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(hours=nb_h))
        .not_valid_after(now + datetime.timedelta(hours=na_h))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca, hashes.SHA256()))
open(out, "wb").write(cert.public_bytes(serialization.Encoding.PEM))
PY
mkcert() { python3 mkcert.py "$@" || { echo "FAIL: mkcert $*" >&2; exit 1; }; }
D=24
mkcert k1.csr -$D $((40 * D + 1)) ok.pem            # 40 days left
mkcert k1.csr -$D $((20 * D + 1)) warning.pem       # 20 days left
mkcert k1.csr -$D $((3 * D + 1)) critical.pem       # 3 days left
mkcert k1.csr -$((30 * D)) -$((2 * D - 1)) expired.pem # expired 2 days ago
mkcert k1.csr $((2 * D)) $((100 * D)) future.pem    # valid in 2 days
mkcert k2.csr -$D $((40 * D + 1)) other.pem         # k2's key, 40 days

# conf FILE [KEY=VALUE lines for the profile]...: one profile "prod".
conf() {
    local f=$1; shift
    {
        echo "[profile prod]"
        echo "key = $K1"
        echo "pin-source = file:$PIN"
        echo "client-id = CID"
        echo "subject = user@example.com"
        for l in "$@"; do echo "$l"; done
    } >"$f"
}

# expect_check DESC CODE STATUS_ERE PERF_ERE ARGS...: exit CODE, exactly one
# line on stdout, the text before '|' matches STATUS_ERE and the perfdata
# after it matches PERF_ERE.
expect_check() {
    local desc=$1 code=$2 spat=$3 ppat=$4 rc=0 lines status perf; shift 4
    "$P11JWT" check "$@" >"$T/out" 2>"$T/err" || rc=$?
    lines=$(wc -l <"$T/out")
    status=$(cut -d'|' -f1 "$T/out")
    perf=$(cut -s -d'|' -f2- "$T/out")
    if [ "$rc" -ne "$code" ]; then
        fail "$desc: exit $rc, wanted $code"
    elif [ "$lines" -ne 1 ]; then
        fail "$desc: $lines lines on stdout, wanted 1"
    elif ! grep -qE -- "$spat" <<<"$status"; then
        fail "$desc: status does not match /$spat/"
    elif [ -n "$ppat" ] && ! grep -qE -- "$ppat" <<<"$perf"; then
        fail "$desc: perfdata '$perf' does not match /$ppat/"
    else
        pass "$desc"; return 0
    fi
    sed 's/^/  out| /' "$T/out" >&2
    sed 's/^/  err| /' "$T/err" >&2
}

# ---- each state -------------------------------------------------------------
for s in ok warning critical expired future other; do conf "$s.conf" "cert = $T/$s.pem"; done
expect_check "40 days left: OK" 0 \
    '^P11JWT OK - profile prod: certificate CN=k1, O=Monitor Test expires [0-9]{4}-[0-9]{2}-[0-9]{2} \(40 days\) $' \
    '^ days_left=40;30;7$' -c ok.conf
expect_check "20 days left: WARNING" 1 \
    '^P11JWT WARNING - profile prod: certificate CN=k1.* expires .* \(20 days\)' \
    '^ days_left=20;30;7$' -c warning.conf
expect_check "3 days left: CRITICAL" 2 \
    '^P11JWT CRITICAL - profile prod: certificate CN=k1.* \(3 days\)' \
    '^ days_left=3;30;7$' -c critical.conf
expect_check "expired: CRITICAL" 2 \
    '^P11JWT CRITICAL - profile prod: certificate CN=k1.* EXPIRED [0-9-]{10} \(2 days ago\)' \
    '^ days_left=-2;30;7$' -c expired.conf
expect_check "not yet valid: CRITICAL" 2 \
    '^P11JWT CRITICAL - profile prod: certificate CN=k1.* is NOT YET VALID \(valid from [0-9-]{10}T' \
    '^ days_left=99;30;7$' -c future.conf
expect_check "certificate of another key: CRITICAL (drift)" 2 \
    '^P11JWT CRITICAL - profile prod: certificate CN=k2.* does NOT MATCH the key on the token \(drift' \
    '^ days_left=40;30;7$' -c other.conf
expect_check "drift is not seen with --no-key-check" 0 '^P11JWT OK - ' \
    '^ days_left=40;' -c other.conf --no-key-check
expect_check "--profile selects the profile" 1 '^P11JWT WARNING - profile prod:' \
    'days_left=20' -c warning.conf --profile prod

# ---- thresholds ---------------------------------------------------------------
expect_check "--warn-days 50 makes 40 days a WARNING" 1 '^P11JWT WARNING' \
    '^ days_left=40;50;7$' -c ok.conf --warn-days 50
expect_check "--critical-days 45 makes 40 days CRITICAL" 2 '^P11JWT CRITICAL' \
    '^ days_left=40;50;45$' -c ok.conf --warn-days 50 --critical-days 45
expect_check "--warn-days 10 makes 20 days OK" 0 '^P11JWT OK' \
    '^ days_left=20;10;7$' -c warning.conf --warn-days 10
conf warn45.conf "cert = $T/ok.pem" "warn-days = 45"
expect_check "profile warn-days 45 makes 40 days a WARNING" 1 '^P11JWT WARNING' \
    '^ days_left=40;45;7$' -c warn45.conf
printf '[agent]\nwarn-days = 60\ncritical-days = 41\n' >agent.conf
cat ok.conf >>agent.conf
expect_check "[agent] thresholds apply to profiles" 2 '^P11JWT CRITICAL' \
    '^ days_left=40;60;41$' -c agent.conf

# ---- the certificate beside the key on the token ------------------------------
"$P11JWT" --pin-source "file:$PIN" cert self-signed --key "$K3" \
    --subject CN=k3 --days 100 --store >/dev/null 2>&1 ||
    { echo "FAIL: self-signed --store" >&2; exit 1; }
cat >token.conf <<EOF
[profile tok]
key = $K3
pin-source = file:$PIN
client-id = CID
subject = user@example.com
EOF
expect_check "certificate on the token beside the key" 0 \
    '^P11JWT OK - profile tok: certificate CN=k3 expires .* \((99|100) days\)' \
    '^ days_left=(99|100);30;7$' -c token.conf
sed '/^pin-source/d' token.conf >token-nopin.conf
expect_check "token certificate without a PIN (--no-key-check)" 0 \
    '^P11JWT OK - profile tok: certificate CN=k3' '' \
    -c token-nopin.conf --no-key-check
expect_check "no PIN: the key cannot be compared: UNKNOWN" 3 \
    '^P11JWT UNKNOWN - profile tok: cannot read the certificate' \
    '^ days_left=U;30;7$' -c token-nopin.conf

# ---- UNKNOWN ------------------------------------------------------------------
conf missing.conf "cert = $T/nope.pem"
expect_check "missing certificate file: UNKNOWN" 3 \
    '^P11JWT UNKNOWN - profile prod: cannot read the certificate: .*nope.pem' \
    '^ days_left=U;30;7$' -c missing.conf
printf 'not a certificate\n' >garbage.pem
conf garbage.conf "cert = $T/garbage.pem"
expect_check "garbage certificate file: UNKNOWN" 3 \
    '^P11JWT UNKNOWN - profile prod: cannot read the certificate' '' -c garbage.conf
conf badpin.conf "cert = $T/ok.pem"
sed -i "s|^pin-source = .*|pin-source = file:$T/no-such-pin|" badpin.conf
expect_check "unreadable PIN: key not compared: UNKNOWN" 3 \
    '^P11JWT UNKNOWN - profile prod: certificate CN=k1.*\(40 days\); key not compared: .*no-such-pin' \
    '^ days_left=40;30;7$' -c badpin.conf
expect_check "expired wins over an uncomparable key: CRITICAL" 2 \
    '^P11JWT CRITICAL - .*EXPIRED' '' -c badpin.conf --cert "$T/expired.pem"
printf '[profile prod]\nkey = %s\n' "$K1" >bad.conf
expect_check "bad configuration: UNKNOWN" 3 '^P11JWT UNKNOWN - bad configuration: .*bad.conf' '' -c bad.conf
expect_check "missing configuration: UNKNOWN" 3 '^P11JWT UNKNOWN - bad configuration' '' -c "$T/none.conf"
expect_check "unknown profile: UNKNOWN" 3 "^P11JWT UNKNOWN - profile: .*bogus" '' -c ok.conf --profile bogus

# ---- usage errors are UNKNOWN (3), as plugins must ----------------------------
expect_check "unknown option" 3 '^P11JWT UNKNOWN - usage' '' -c ok.conf --bogus
expect_check "stray argument" 3 "^P11JWT UNKNOWN - usage: unexpected argument 'extra'" '' -c ok.conf extra
expect_check "--warn-days not a number" 3 "^P11JWT UNKNOWN - usage: --warn-days '3x'" '' -c ok.conf --warn-days 3x
expect_check "--warn-days negative" 3 '^P11JWT UNKNOWN - usage' '' -c ok.conf --warn-days -1
expect_check "--critical-days over --warn-days" 3 '^P11JWT UNKNOWN - usage: --critical-days' '' \
    -c ok.conf --warn-days 5 --critical-days 10
expect_ok "check --help" "$P11JWT" check --help
grep -q 'CRITICAL' "$T/out" || fail "check --help does not explain the states"

# ---- a certificate alone, no configuration ------------------------------------
expect_check "--cert FILE alone (no config, no key)" 1 \
    '^P11JWT WARNING - certificate CN=k1.*\(20 days\)' '^ days_left=20;30;7$' \
    --cert "$T/warning.pem"
expect_check "--cert alone with thresholds" 0 '^P11JWT OK' '^ days_left=20;14;3$' \
    --cert "$T/warning.pem" --warn-days 14 --critical-days 3
expect_check "--cert with --profile compares with the profile's key" 2 \
    'does NOT MATCH' '' -c ok.conf --profile prod --cert "$T/other.pem"

# ---- several profiles: the worst wins, one line, perfdata per profile ---------
two() {
    local f=$1; shift
    : >"$f"
    local name cert
    for pair in "$@"; do
        name=${pair%%=*}; cert=${pair#*=}
        printf '[profile %s]\nkey = %s\npin-source = file:%s\nclient-id = CID\nsubject = u@example.com\ncert = %s\n' \
            "$name" "$K1" "$PIN" "$cert" >>"$f"
    done
}
two multi-ok.conf "a=$T/ok.pem" "b=$T/ok.pem"
expect_check "two profiles OK" 0 '^P11JWT OK - profile a: .*; profile b: ' \
    '^ a_days_left=40;30;7 b_days_left=40;30;7$' -c multi-ok.conf
two multi-warn.conf "a=$T/ok.pem" "b=$T/warning.pem"
expect_check "ok + warning: WARNING, the warning first" 1 \
    '^P11JWT WARNING - profile b: .*\(20 days\); profile a: .*\(40 days\)' \
    '^ a_days_left=40;30;7 b_days_left=20;30;7$' -c multi-warn.conf
two multi-crit.conf "a=$T/warning.pem" "b=$T/nope.pem" "c=$T/expired.pem"
expect_check "warning + unknown + expired: CRITICAL" 2 \
    '^P11JWT CRITICAL - profile c: .*EXPIRED.*; profile b: cannot read.*; profile a: ' \
    '^ a_days_left=20;30;7 b_days_left=U;30;7 c_days_left=-2;30;7$' -c multi-crit.conf
two multi-unk.conf "a=$T/warning.pem" "b=$T/nope.pem"
expect_check "warning + unknown: UNKNOWN" 3 '^P11JWT UNKNOWN - profile b: cannot read' \
    '' -c multi-unk.conf
expect_check "--profile picks one of several" 1 '^P11JWT WARNING - profile a:' \
    '^ days_left=20;30;7$' -c multi-unk.conf --profile a

# A '|' in a subject must not end the status text early.
"$P11JWT" --pin-source "file:$PIN" cert csr --key "$K1" \
    --subject 'CN=pipe|name' --out pipe.csr 2>/dev/null &&
    mkcert pipe.csr -$D $((40 * D + 1)) pipe.pem &&
    conf pipe.conf "cert = $T/pipe.pem" &&
    expect_check "'|' in a subject is replaced in the status text" 0 \
        '^P11JWT OK - profile prod: certificate CN=pipe/name expires' \
        '^ days_left=40;30;7$' -c pipe.conf

finish
