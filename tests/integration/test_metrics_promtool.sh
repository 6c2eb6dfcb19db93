# SPDX-License-Identifier: Apache-2.0
# The metrics text file validates with Prometheus's own checker:
# `promtool check metrics` (Debian package prometheus) parses the exposition
# format and lints names, HELP/TYPE and counters. The sample comes from
# test_agent_metrics --write-sample: two profiles, active and next
# certificates, subjects with quotes, backslashes, a newline and a byte that
# is not UTF-8.
. "$(dirname "$0")/lib.sh"
need promtool
: "${P11JWT_BUILD:?run through ctest, or set P11JWT_BUILD to the build folder}"
GEN=$P11JWT_BUILD/tests/test_agent_metrics
[ -x "$GEN" ] || { echo "FAIL: $GEN is not built" >&2; exit 1; }

expect_ok "write the sample metrics file" "$GEN" --write-sample "$T/p11jwt.prom"
[ "$(stat -c %a "$T/p11jwt.prom")" = 644 ] || fail "metrics file mode is not 0644"
if promtool check metrics <"$T/p11jwt.prom" >"$T/lint" 2>&1; then
    pass "promtool check metrics accepts the file"
else
    fail "promtool check metrics rejects the file"; sed 's/^/  | /' "$T/lint" >&2
fi
if [ -s "$T/lint" ]; then
    fail "promtool has lint remarks"; sed 's/^/  | /' "$T/lint" >&2
fi
for f in p11jwt_cert_not_after p11jwt_cert_expired p11jwt_token_requests_total \
    p11jwt_signatures_total p11jwt_ipc_requests_total p11jwt_clock_skew_seconds \
    p11jwt_hsm_up; do
    grep -q "^# TYPE $f " "$T/p11jwt.prom" || fail "no TYPE line for $f"
done

# Controls: promtool really checks (else the pass above proves nothing).
sed 's/\\"Corp\\"/"Corp"/' "$T/p11jwt.prom" >"$T/unescaped.prom"
if promtool check metrics <"$T/unescaped.prom" >/dev/null 2>&1; then
    fail "promtool accepted an unescaped quote in a label value"
else pass "promtool rejects an unescaped quote (control)"; fi
sed '/^# HELP p11jwt_hsm_up/d' "$T/p11jwt.prom" >"$T/nohelp.prom"
if promtool check metrics <"$T/nohelp.prom" >/dev/null 2>&1; then
    fail "promtool accepted a family without HELP"
else pass "promtool rejects a missing HELP (control)"; fi
finish
