#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Socket client for the p11jwt-agent integration tests (standard library only).

Subcommands (all print JSON on stdout; tokens and assertions are never
printed, only the first 12 hex digits of their SHA-256 as *_fp):

  concurrent N REQ        N connections opened at once; after a barrier
                          each sends REQ and reads one answer
  load REQ...             K threads (persistent connections, reconnecting)
                          send the REQs round-robin for --duration seconds;
                          a per-second timeline of ok/failed answers
  call REQ...             one connection, requests in sequence; "@TOKEN" in
                          a REQ is replaced by the newest access_token seen,
                          "@TOKEN0" by the first
  pipeline N --profile P  N mixed requests with ids written at once; checks
                          the answers come back in order
  raw                     send raw bytes (--line, --half, --oversized) and
                          print every answer until EOF or --wait seconds
  fake-stats / fake-control
                          GET /__stats, POST /__control on the fake endpoint

--reveal FILE appends every token and assertion received to FILE (mode 0600)
so a test can grep the agent's log for them.
"""
import argparse
import hashlib
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.request

SECRET_FIELDS = ("access_token", "assertion")


def fp12(s):
    return hashlib.sha256(s.encode()).hexdigest()[:12]


class Reveal:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.seen = set()

    def add(self, value):
        if not self.path or value in self.seen:
            return
        with self.lock:
            if value in self.seen:
                return
            self.seen.add(value)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(value + "\n")


REVEAL = Reveal(None)


def redact(ans):
    """A copy of an answer with secrets replaced by fingerprints."""
    if not isinstance(ans, dict):
        return ans
    out = {}
    for k, v in ans.items():
        if k in SECRET_FIELDS and isinstance(v, str):
            REVEAL.add(v)
            out[k + "_fp"] = fp12(v)
        else:
            out[k] = v
    return out


class Conn:
    def __init__(self, path, timeout):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def readline(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("agent closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def call(self, req):
        self.send(req.encode() + b"\n")
        return json.loads(self.readline())

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def classify(ans):
    if isinstance(ans, dict) and ans.get("ok") is True:
        return "ok"
    if isinstance(ans, dict):
        return "error:" + str(ans.get("error"))
    return "error:not-an-object"


def cmd_concurrent(a):
    n = a.n
    if a.token_req:
        c = Conn(a.socket, a.timeout)
        tok = c.call(a.token_req).get("access_token")
        c.close()
        if not isinstance(tok, str):
            print(json.dumps({"client_error": "--token-req got no token"}))
            return 1
        REVEAL.add(tok)
        a.req = a.req.replace("@TOKEN", tok)
    barrier = threading.Barrier(n + 1, timeout=a.timeout)
    results = [None] * n
    lat = [0.0] * n
    tokens = {}
    lock = threading.Lock()

    def worker(i):
        c = None
        try:
            c = Conn(a.socket, a.timeout)
        except OSError as e:
            results[i] = "connect:" + (e.strerror or str(e))
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
            return
        try:
            barrier.wait()
            t0 = time.monotonic()
            ans = c.call(a.req)
            lat[i] = (time.monotonic() - t0) * 1000
            results[i] = classify(ans)
            tok = ans.get("access_token") or ans.get("assertion")
            if isinstance(tok, str):
                REVEAL.add(tok)
                with lock:
                    tokens[fp12(tok)] = tokens.get(fp12(tok), 0) + 1
        except (OSError, EOFError, ValueError, threading.BrokenBarrierError) as e:
            results[i] = "io:" + type(e).__name__ + ":" + str(e)[:80]
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.monotonic()
    for t in threads:
        t.join()
    counts = {}
    for r in results:
        counts[r] = counts.get(r, 0) + 1
    ok = counts.get("ok", 0)
    done = sorted(x for x in lat if x > 0)
    out = {
        "n": n,
        "ok": ok,
        "outcomes": counts,
        "distinct_tokens": len(tokens),
        "wall_ms": round((time.monotonic() - t0) * 1000, 1),
        "max_latency_ms": round(done[-1], 1) if done else None,
    }
    print(json.dumps(out))
    return 0 if ok == n or not a.expect_ok else 1


def cmd_load(a):
    stop = time.monotonic() + a.duration
    start = time.monotonic()
    lock = threading.Lock()
    timeline = {}
    errors = {}
    total = {"ok": 0, "failed": 0}

    def record(kind):
        sec = int(time.monotonic() - start)
        with lock:
            slot = timeline.setdefault(sec, [0, 0])
            if kind == "ok":
                slot[0] += 1
                total["ok"] += 1
            else:
                slot[1] += 1
                total["failed"] += 1
                errors[kind] = errors.get(kind, 0) + 1

    def worker(k):
        c = None
        i = k
        while time.monotonic() < stop:
            req = a.req[i % len(a.req)]
            i += 1
            try:
                if c is None:
                    c = Conn(a.socket, a.timeout)
                ans = c.call(req)
                record(classify(ans))
                tok = ans.get("access_token") or ans.get("assertion")
                if isinstance(tok, str):
                    REVEAL.add(tok)
            except (OSError, EOFError, ValueError) as e:
                record("io:" + type(e).__name__)
                if c is not None:
                    c.close()
                c = None
                time.sleep(0.05)
            if a.pause_ms:
                time.sleep(a.pause_ms / 1000.0)
        if c is not None:
            c.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = dict(total)
    out["errors"] = errors
    out["timeline"] = [timeline.get(s, [0, 0]) for s in range(int(a.duration) + 1)]
    print(json.dumps(out))
    return 0


def cmd_call(a):
    c = Conn(a.socket, a.timeout)
    first = None
    newest = None
    rc = 0
    for req in a.req:
        if newest is not None:
            req = req.replace("@TOKEN0", first).replace("@TOKEN", newest)
        elif "@TOKEN" in req:
            print(json.dumps({"client_error": "no token seen yet"}))
            return 1
        try:
            ans = c.call(req)
        except (OSError, EOFError, ValueError) as e:
            print(json.dumps({"client_error": type(e).__name__ + ": " + str(e)}))
            rc = 1
            break
        tok = ans.get("access_token") if isinstance(ans, dict) else None
        if isinstance(tok, str):
            if first is None:
                first = tok
            newest = tok
        print(json.dumps(redact(ans)))
        sys.stdout.flush()
    c.close()
    return rc


def cmd_pipeline(a):
    p = a.profile
    kinds = [
        '{"op":"health","id":%d}',
        '{"op":"token","profile":"%s","id":%%d}' % p,
        '{"op":"status","id":%d}',
        '{"op":"assertion","profile":"%s","id":%%d}' % p,
        '{"op":"nope","id":%d}',
        '{"op":"token","profile":"no-such-profile","id":%d}',
    ]
    reqs = [kinds[i % len(kinds)] % i for i in range(a.n)]
    c = Conn(a.socket, a.timeout)
    payload = ("\n".join(reqs) + "\n").encode()
    # Written from a thread so a full socket buffer cannot deadlock us.
    w = threading.Thread(target=c.send, args=(payload,))
    w.start()
    ids = []
    codes = {}
    try:
        for _ in range(a.n):
            ans = json.loads(c.readline())
            tok = ans.get("access_token") or ans.get("assertion")
            if isinstance(tok, str):
                REVEAL.add(tok)
            ids.append(ans.get("id"))
            k = classify(ans)
            codes[k] = codes.get(k, 0) + 1
    except (OSError, EOFError, ValueError) as e:
        print(json.dumps({"client_error": str(e), "answers": len(ids)}))
        return 1
    finally:
        w.join()
        c.close()
    in_order = ids == list(range(a.n))
    print(json.dumps({"n": a.n, "answers": len(ids), "in_order": in_order,
                      "outcomes": codes}))
    return 0 if in_order else 1


def cmd_raw(a):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(a.timeout)
    s.connect(a.socket)
    if a.oversized:
        s.sendall(b'{"op":"health","pad":"' + b"x" * a.oversized + b'"}\n')
    for line in a.line or []:
        s.sendall(line.encode("utf-8", "surrogateescape") + b"\n")
    if a.half:
        s.sendall(a.half.encode())
    deadline = time.monotonic() + a.wait
    buf = b""
    end = "OPEN"
    t0 = time.monotonic()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            end = "RESET"
            break
        if not chunk:
            end = "EOF"
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                print(json.dumps(redact(json.loads(line))))
            except ValueError:
                print(json.dumps({"client_error": "answer is not JSON",
                                  "len": len(line)}))
            sys.stdout.flush()
            if a.answers and a.answers > 0:
                a.answers -= 1
                if a.answers == 0:
                    end = "DONE"
                    deadline = 0
    print(json.dumps({"end": end, "after_s": round(time.monotonic() - t0, 2)}))
    s.close()
    return 0


def fake_url(a, path):
    with open(a.port_file) as f:
        port = int(f.read().strip())
    return "https://127.0.0.1:%d%s" % (port, path)


def fake_ctx(a):
    return ssl.create_default_context(cafile=a.ca)


def cmd_fake_stats(a):
    with urllib.request.urlopen(fake_url(a, "/__stats"), context=fake_ctx(a),
                                timeout=10) as r:
        sys.stdout.write(r.read().decode() + "\n")
    return 0


def cmd_fake_control(a):
    req = urllib.request.Request(fake_url(a, "/__control"), data=a.json.encode(),
                                 headers={"Content-Type": "application/json"},
                                 method="POST")
    with urllib.request.urlopen(req, context=fake_ctx(a), timeout=10) as r:
        sys.stdout.write(r.read().decode() + "\n")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--socket", default=os.environ.get("P11JWT_SOCKET"))
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--reveal", help="append received secrets to this file")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("concurrent")
    s.add_argument("n", type=int)
    s.add_argument("req")
    s.add_argument("--expect-ok", action="store_true")
    s.add_argument("--token-req", help='fetch a token first; "@TOKEN" in REQ')

    s = sub.add_parser("load")
    s.add_argument("req", nargs="+")
    s.add_argument("--threads", type=int, default=8)
    s.add_argument("--duration", type=float, default=5.0)
    s.add_argument("--pause-ms", type=float, default=0.0)

    s = sub.add_parser("call")
    s.add_argument("req", nargs="+")

    s = sub.add_parser("pipeline")
    s.add_argument("n", type=int)
    s.add_argument("--profile", required=True)

    s = sub.add_parser("raw")
    s.add_argument("--line", action="append")
    s.add_argument("--half")
    s.add_argument("--oversized", type=int, default=0)
    s.add_argument("--wait", type=float, default=3.0)
    s.add_argument("--answers", type=int, default=0,
                   help="stop after this many answers")

    for name in ("fake-stats", "fake-control"):
        s = sub.add_parser(name)
        s.add_argument("--port-file", required=True)
        s.add_argument("--ca", required=True)
        if name == "fake-control":
            s.add_argument("json")

    a = p.parse_args()
    global REVEAL
    REVEAL = Reveal(a.reveal)
    if a.cmd.startswith("fake-"):
        return {"fake-stats": cmd_fake_stats, "fake-control": cmd_fake_control}[a.cmd](a)
    if not a.socket:
        p.error("--socket or P11JWT_SOCKET is required")
    return {"concurrent": cmd_concurrent, "load": cmd_load, "call": cmd_call,
            "pipeline": cmd_pipeline, "raw": cmd_raw}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
