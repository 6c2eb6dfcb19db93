# SPDX-License-Identifier: Apache-2.0
# The CLI's agent client (agent/client.c) against a fake agent that answers
# badly: not JSON, not an object, nothing, too much, errors with Salesforce
# details and control bytes, a status with missing fields; and socket paths
# that are stale or too long. Each gets a clear message and exit 1, and no
# token from an answer ever reaches a message.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
need "$PY"
S=$T/fake.sock

# fake_agent MODE: one connection at a time, answered according to MODE.
fake_agent() {
    rm -f "$S"
    $PY - "$S" "$1" <<'EOF' &
import json, os, socket, sys
path, mode = sys.argv[1], sys.argv[2]
srv = socket.socket(socket.AF_UNIX)
srv.bind(path + ".tmp"); os.rename(path + ".tmp", path); srv.listen(8)
answers = {
    "garbage": b"this is not json\n",
    "array": b"[1,2,3]\n",
    "dupkeys": b'{"ok":true,"ok":false}\n',
    "upstream": json.dumps({"ok": False, "error": "upstream",
        "message": "Salesforce refused the assertion\x1b[31m",
        "hint": "approve the app for the user", "class": "permanent",
        "access_token": "SECRET-TOKEN-must-not-show",
        "salesforce": {"error": "invalid_grant",
                       "error_description": "user hasn't approved this consumer"}}).encode() + b"\n",
    "forbidden": b'{"ok":false,"error":"forbidden","message":"uid 1001 is not allowed for profile prod"}\n',
    "noerror": b'{"ok":false}\n',
    "status": json.dumps({"ok": True, "profiles": [
        {"name": "p1"},
        {"name": "p2", "key_open": False, "key_error": "token 'x' not found",
         "tokens": [{"subject": "s@x", "state": "failed", "retry_in": 90,
                     "last_exchange": {"result": "error", "error": "invalid_grant",
                                       "class": "permanent", "time": 1}},
                    {"subject": 7, "state": ["bad"], "age": "old", "expires_at": None}]},
        "not-an-object", 42]}).encode() + b"\n",
}
while True:
    c, _ = srv.accept()
    c.recv(65536)
    if mode == "close":
        pass
    elif mode == "huge":
        try:
            c.sendall(b'{"ok":true,"pad":"' + b"x" * (2 * 1024 * 1024))
        except OSError:
            pass
    elif mode == "partial":
        c.sendall(b'{"ok":true,')
    else:
        c.sendall(answers[mode])
    c.close()
EOF
    FAKE_AGENT=$!
    for _ in $(seq 1 50); do [ -S "$S" ] && return 0; sleep 0.1; done
    echo "FAIL: fake agent did not start" >&2
    exit 1
}
stop_fake() { kill "$FAKE_AGENT" 2>/dev/null; wait "$FAKE_AGENT" 2>/dev/null || true; }
on_exit 'stop_fake'

st() { "$P11JWT" status --socket "$S" "$@"; }

fake_agent garbage
expect_fail "answer not JSON" 1 "the agent at $S sent an answer that is not a JSON object \(.*\); is it really p11jwt-agent\?" st
stop_fake; fake_agent array
expect_fail "answer a JSON array" 1 "not a JSON object" st
stop_fake; fake_agent dupkeys
expect_fail "answer with duplicate keys" 1 "not a JSON object \(.*duplicate" st
stop_fake; fake_agent close
expect_fail "agent closes without answering" 1 "closed the connection without answering" st
stop_fake; fake_agent partial
expect_fail "agent closes in the middle of an answer" 1 "closed the connection in the middle of an answer" st
stop_fake; fake_agent huge
expect_fail "answer over 1 MiB" 1 "sent an answer longer than 1048576 bytes" st
stop_fake; fake_agent upstream
expect_fail "error answer: message, code, Salesforce error, class, hint" 1 \
    "p11jwt status: agent: Salesforce refused the assertion\?\[31m \[error upstream\]; salesforce: invalid_grant: user hasn't approved this consumer \(permanent\); hint: approve the app for the user" st
grep -q $'\x1b' "$T/err" && fail "a control byte from the agent reached the terminal" ||
    pass "control bytes from the agent are replaced"
grep -q "SECRET-TOKEN" "$T/err" "$T/out" && fail "a token in an error answer was printed" ||
    pass "a token in an error answer is never printed"
stop_fake; fake_agent forbidden
expect_fail "forbidden answer" 1 "agent: uid 1001 is not allowed for profile prod \[error forbidden\]" st
stop_fake; fake_agent noerror
expect_fail "error answer without fields" 1 "agent: request failed \[error missing\]" st
stop_fake; fake_agent status
expect_ok "status answer with missing and wrong-typed fields: still a table" st
grep -qE '^p1 +- +empty' "$T/out" && pass "profile without tokens: one empty row" || fail "p1 row: $(cat "$T/out")"
grep -qE '^p2 +s@x +failed \(retry in 1m\) .*error: invalid_grant, .* ago +permanent' "$T/out" &&
    pass "failed token row: retry, last exchange, class" || fail "p2 row: $(cat "$T/out")"
grep -qE "p2 +- +NOT OPEN: token 'x' not found" "$T/out" && pass "key not open is shown" ||
    fail "key line: $(cat "$T/out")"
expect_ok "status --json passes the answer through" st --json
[ -s "$T/out" ] && jq -e '.profiles[1].name == "p2"' "$T/out" >/dev/null && pass "--json is the agent's answer" ||
    fail "--json output: $(head -c 300 "$T/out")"
stop_fake

# A stale socket file: nobody listening.
expect_fail "stale socket: agent not running" 1 \
    "agent not running at $S \(connect: Connection refused\); start p11jwt-agent or use --direct" st
long=$T/$(printf 'd%.0s' $(seq 1 120))/agent.sock
expect_fail "socket path too long" 1 "longer than 107 bytes" "$P11JWT" status --socket "$long"
expect_fail "socket path is a regular file" 1 "agent not running at $T/out|cannot connect to the agent at $T/out" \
    "$P11JWT" status --socket "$T/out"
# Resolution order: --socket over P11JWT_SOCKET over the config.
printf '[agent]\nsocket = %s/from-config.sock\n' "$T" >"$T/c.conf"
expect_fail "socket from -c FILE" 1 "at $T/from-config.sock " "$P11JWT" -c "$T/c.conf" status
expect_fail "P11JWT_SOCKET beats the config" 1 "at $T/from-env.sock " \
    env P11JWT_SOCKET="$T/from-env.sock" "$P11JWT" -c "$T/c.conf" status
expect_fail "--socket beats P11JWT_SOCKET" 1 "at $T/from-flag.sock " \
    env P11JWT_SOCKET="$T/from-env.sock" "$P11JWT" status --socket "$T/from-flag.sock"
expect_fail "P11JWT_CONFIG names the config" 1 "at $T/from-config.sock " \
    env P11JWT_CONFIG="$T/c.conf" "$P11JWT" status
printf '[agent]\nsockit = /x\n' >"$T/bad.conf"
expect_fail "a named config that does not load: its error" 1 "bad.conf:2.*sockit" \
    "$P11JWT" -c "$T/bad.conf" status
expect_fail "unexpected argument: usage" 2 "unexpected argument 'extra'" "$P11JWT" status extra
finish
