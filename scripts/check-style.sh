#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Style and banned-pattern checks (run by ctest as style/check): the C sources
# are clang-formatted, and none of the patterns that caused real bugs in our
# model codebases appears (style.md 2.11).
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
mapfile -t files < <(git ls-files -co --exclude-standard '*.c' '*.h' 2>/dev/null ||
    find core pkcs11 certs salesforce agent cli tests bench -name '*.[ch]')

if command -v clang-format >/dev/null; then
    if ! clang-format --dry-run -Werror "${files[@]}" 2>/tmp/p11jwt-format.$$; then
        echo "style: not clang-formatted (run clang-format -i):" >&2
        grep -E '^[^ ].*: (error|warning)' /tmp/p11jwt-format.$$ | cut -d: -f1 | sort -u >&2
        rc=1
    fi
    rm -f /tmp/p11jwt-format.$$
else
    echo "style: clang-format missing" >&2
    rc=1
fi

banned() {
    local pat=$1 why=$2 hits
    hits=$(grep -nE "$pat" "${files[@]}" | grep -v 'style-ok' || true)
    if [ -n "$hits" ]; then
        echo "style: $why:" >&2
        echo "$hits" >&2
        rc=1
    fi
}
banned '\b(strcpy|strcat|sprintf|vsprintf|gets|strtok|atoi)[[:space:]]*\(' \
    'unbounded or unchecked libc call (use snprintf, pj_strlcpy, pj_parse_long)'
banned 'CURLOPT_SSL_VERIFY(PEER|HOST)[^;]*,[[:space:]]*0' 'TLS verification turned off'
banned '(^|[^_[:alnum:]])free[[:space:]]*\([[:space:]]*(pin|secret|password)' 'plain free() of a secret'
banned '^[[:space:]]*//' '// comment (use /* */)'
banned 'CURLOPT_VERBOSE' 'CURLOPT_VERBOSE prints headers, i.e. tokens'

if [ "$rc" -eq 0 ]; then
    echo "style: ${#files[@]} files ok"
fi
exit "$rc"
