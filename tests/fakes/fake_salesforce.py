#!/usr/bin/python3
"""Fake Salesforce OAuth 2.0 JWT Bearer token endpoint for p11jwt integration tests.

It speaks HTTPS on 127.0.0.1 with a throwaway CA it makes itself, checks JWT
Bearer assertions the way Salesforce does (same order of checks where it can be
inferred, same error strings: see ../../../shared/research/salesforce.md
section 3), and lets a test inject the failures a real org produces: 503s,
slow or hung answers, broken or huge bodies, clock skew, a certificate swap and
any error pair of the catalogue.

The RS256 signature is checked by PyJWT, so the agent's JWS code is judged by
code that is not ours. Only the Python standard library, Debian's python3-jwt
and python3-cryptography are used; never install anything with pip for this.

Secrets: assertions and access tokens are never written to stdout or stderr.
Request logs carry method, path and status only; /__stats exposes the claims
of the last accepted assertion (not secret) and a SHA-256 of the last issued
access token, never the token itself.

Run `fake_salesforce.py --help` for the options and the control keys.
"""

import argparse
import base64
import datetime
import email.utils
import hashlib
import hmac
import http.server
import ipaddress
import json
import math
import os
import re
import secrets
import select
import signal
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse

try:
    import jwt  # Debian: python3-jwt (PyJWT 2.6)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError as exc:  # pragma: no cover - environment problem
    sys.stderr.write(
        "fake_salesforce: %s; run it with /usr/bin/python3 and "
        "`apt-get install -y python3-jwt python3-cryptography`\n" % exc)
    sys.exit(2)

PROG = "fake_salesforce"

TOKEN_PATH = "/services/oauth2/token"
CONTROL_PATH = "/__control"
STATS_PATH = "/__stats"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_AUDIENCE = "https://login.salesforce.com"
ORG_ID = "00Dxx0000000000EAA"
USER_ID = "005xx000000000AAA"
IDENTITY_URL = "https://login.salesforce.com/id/%s/%s" % (ORG_ID, USER_ID)

DEFAULT_MAX_BODY = 64 * 1024
DEFAULT_MAX_EXP_AHEAD_S = 300      # Salesforce documents "within 3 minutes";
                                   # the brief and DESIGN §4 use 300 s.
OVERSIZED_BYTES = 2 * 1024 * 1024  # exact size of an "oversized" answer
HANG_LIMIT_S = 120                 # a hung request never outlives this
SOCKET_TIMEOUT_S = 30              # idle or slow clients cannot pin a thread
RECENT_MAX = 50                    # entries kept in /__stats "recent"

# Salesforce's exact (error, error_description) pairs.
E_GRANT_TYPE = ("unsupported_grant_type", "grant type not supported")
E_ASSERTION = ("invalid_grant", "invalid assertion")
E_CLIENT_ID = ("invalid_client_id", "client identifier invalid")
E_AUDIENCE = ("invalid_grant", "audience is invalid")
E_USER = ("invalid_grant", "user hasn't approved this consumer")
E_EXPIRED = ("invalid_grant", "expired authorization code")
# Not a Salesforce pair (its answer to a huge body is not documented).
TOO_LARGE = ("request_too_large", "request body too large")

# A JWS compact serialisation is three base64url segments without padding.
# PyJWT's decoder is lenient (it adds padding and skips stray characters), so
# the shape is checked here first: an agent that emits '=' or '+' must fail
# loudly in tests, not be rescued by a forgiving fake.
JWS_SHAPE = re.compile(r"\A[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\Z")

HTML_503 = (
    b"<!DOCTYPE html>\n<html><head><title>Service Unavailable</title></head>"
    b"<body><h1>Service Unavailable</h1><p>The server is temporarily unable "
    b"to service your request due to maintenance downtime or capacity "
    b"problems. Please try again later.</p></body></html>\n")

# Invalid JSON that starts like a real answer, so a client cannot tell it
# apart by its first bytes.
MALFORMED_BODY = b'{"access_token":"00Dxx0000000000!AQ.truncated","instance_url":'

JSON_HEADERS = (
    ("Content-Type", "application/json;charset=UTF-8"),
    ("Cache-Control", "no-cache,must-revalidate,max-age=0,no-store,private"),
)

# Set on SIGTERM/SIGINT: delays and hangs end at once so shutdown is prompt.
STOPPING = threading.Event()


def log(msg):
    sys.stderr.write("%s: %s\n" % (PROG, msg))
    sys.stderr.flush()


def write_atomically(path, data, mode=0o644):
    """Write via a temp file in the same directory and rename, so a test that
    polls for the file never reads it half written."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def json_bytes(obj):
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def strict_json(data):
    """Parse JSON, rejecting duplicate keys: duplicated claims are ambiguous
    and a security tool must never emit them."""
    def pairs(items):
        obj = {}
        for key, value in items:
            if key in obj:
                raise ValueError("duplicate key")
            obj[key] = value
        return obj
    return json.loads(data, object_pairs_hook=pairs)


def b64url_decode(segment):
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


# --------------------------------------------------------------------------
# TLS material
# --------------------------------------------------------------------------

def make_tls_context(ca_out):
    """Create a throwaway CA and a server certificate for 127.0.0.1/localhost.

    EC P-256 keeps start-up fast; libcurl with OpenSSL handles it. The CA
    private key lives only in this process. The server key touches disk only
    for the instant load_cert_chain needs a file, in a 0700 directory."""
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = now - datetime.timedelta(hours=1)
    not_after = now + datetime.timedelta(days=2)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "p11jwt tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, "p11jwt fake Salesforce throwaway CA"),
    ])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True,
            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256()))

    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
            x509.DNSName("localhost"),
        ]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(srv_key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
        .sign(ca_key, hashes.SHA256()))

    pem = serialization.Encoding.PEM
    write_atomically(ca_out, ca_cert.public_bytes(pem))

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="fake-sf-tls.") as tmp:
        chain = os.path.join(tmp, "server.pem")
        fd = os.open(chain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(srv_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
            f.write(srv_cert.public_bytes(pem))
        ctx.load_cert_chain(chain)
    return ctx


def load_verification_key(path):
    """Public key of the PEM certificate Salesforce would hold for the app."""
    try:
        with open(path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError) as exc:
        raise ControlError("cert %r: cannot load a PEM certificate (%s)"
                           % (path, exc.__class__.__name__))
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ControlError("cert %r: not an RSA certificate (RS256 needs RSA)" % path)
    return key


# --------------------------------------------------------------------------
# Settings, fault injection and counters
# --------------------------------------------------------------------------

class ControlError(ValueError):
    """A bad control update; the message is returned to the test verbatim."""


def _int(key, value, minimum=0):
    # bool is an int in Python; `true` must not silently mean 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ControlError("%s: expected an integer >= %d" % (key, minimum))
    return value


def _str_list(key, value, allow_null=False):
    if value is None and allow_null:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ControlError("%s: expected a string or a list of non-empty strings%s"
                           % (key, " or null" if allow_null else ""))
    return list(value)


class State:
    """Everything a test can change, plus the counters it reads back.

    One lock guards it all; handlers take a consistent snapshot per request.
    Updates are validated in full before anything changes, so a rejected
    update (bad key, unreadable cert) leaves the previous behaviour intact."""

    SETTING_KEYS = (
        "client_id", "audience", "users", "unapproved_users", "cert",
        "instance_url", "max_exp_ahead_s",
        "status_503", "delay_ms", "hang", "malformed", "oversized", "skew_s", "error",
    )

    def __init__(self, control_file=None):
        self.lock = threading.Lock()
        self.control_file = control_file
        self.control_sig = None
        self.hmac_key = secrets.token_bytes(32)
        self.s = {
            "client_id": None, "audience": [DEFAULT_AUDIENCE], "users": None,
            "unapproved_users": [], "cert": [], "instance_url": None,
            "max_exp_ahead_s": DEFAULT_MAX_EXP_AHEAD_S,
            "status_503": 0, "delay_ms": 0, "hang": 0, "malformed": 0,
            "oversized": 0, "skew_s": 0, "error": None,
        }
        self.keys = []  # public keys matching self.s["cert"]
        self.reset_stats()

    # -- clock --------------------------------------------------------------

    def now(self):
        """The fake's clock: real time shifted by skew_s (Date header, exp)."""
        return time.time() + self.s["skew_s"]

    # -- updates ------------------------------------------------------------

    def apply(self, update):
        if not isinstance(update, dict):
            raise ControlError("control must be a JSON object")
        unknown = sorted(set(update) - set(self.SETTING_KEYS) - {"reset_stats"})
        if unknown:
            raise ControlError("unknown control key(s): %s" % ", ".join(unknown))
        new = {}
        new_keys = None
        for key, value in update.items():
            if key == "reset_stats":
                if not isinstance(value, bool):
                    raise ControlError("reset_stats: expected true or false")
            elif key == "client_id":
                if not isinstance(value, str) or not value:
                    raise ControlError("client_id: expected a non-empty string")
                new[key] = value
            elif key == "audience":
                new[key] = _str_list(key, value)
            elif key == "users":
                new[key] = _str_list(key, value, allow_null=True)
            elif key == "unapproved_users":
                new[key] = _str_list(key, value) if value else []
            elif key == "cert":
                # null or [] = no certificate: every signature fails, like an
                # app whose certificate a re-deploy cleared.
                paths = _str_list(key, value) if value else []
                new_keys = [load_verification_key(p) for p in paths]
                new[key] = [os.path.abspath(p) for p in paths]
            elif key == "instance_url":
                if value is not None and (not isinstance(value, str) or not value):
                    raise ControlError("instance_url: expected a non-empty string or null")
                new[key] = value
            elif key == "max_exp_ahead_s":
                new[key] = _int(key, value)
            elif key in ("status_503", "delay_ms", "malformed", "oversized"):
                new[key] = _int(key, value)
            elif key == "hang":
                # true = every request until turned off; N = the next N requests.
                if isinstance(value, bool):
                    new[key] = -1 if value else 0
                else:
                    new[key] = _int(key, value)
            elif key == "skew_s":
                if (isinstance(value, bool) or not isinstance(value, (int, float))
                        or not math.isfinite(value)):
                    raise ControlError("skew_s: expected a number of seconds")
                new[key] = value
            elif key == "error":
                new[key] = self._parse_error(value)
        with self.lock:
            self.s.update(new)
            if new_keys is not None:
                self.keys = new_keys
            if update.get("reset_stats"):
                self._reset_stats_locked()

    @staticmethod
    def _parse_error(value):
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ControlError("error: expected an object or null")
        extra = set(value) - {"error", "error_description", "count", "status"}
        if extra:
            raise ControlError("error: unknown field(s): %s" % ", ".join(sorted(extra)))
        err, desc = value.get("error"), value.get("error_description")
        if not isinstance(err, str) or not isinstance(desc, str):
            raise ControlError("error: needs string fields error and error_description")
        count = _int("error.count", value.get("count", 1))
        status = _int("error.status", value.get("status", 400), minimum=400)
        if status > 599:
            raise ControlError("error.status: expected 400..599")
        return {"error": err, "error_description": desc, "count": count,
                "status": status} if count else None

    def poll_control_file(self):
        """Apply the control file if it changed since last seen.

        The signature includes inode and size, not only mtime, so a test that
        rewrites the file twice within one timestamp tick (or renames a new
        file over it) is still noticed. A file that fails to parse is retried
        on the next request: it may have been caught half written."""
        if not self.control_file:
            return
        try:
            st = os.stat(self.control_file)
        except FileNotFoundError:
            return
        except OSError as exc:
            log("control file: %s" % exc.__class__.__name__)
            return
        sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self.lock:
            if sig == self.control_sig:
                return
        try:
            with open(self.control_file, "rb") as f:
                update = strict_json(f.read())
            self.apply(update)
        except (OSError, ValueError) as exc:
            log("control file rejected: %s" % exc)
            return
        with self.lock:
            self.control_sig = sig
        log("control file applied")

    # -- per request --------------------------------------------------------

    def snapshot(self):
        with self.lock:
            snap = dict(self.s)
            snap["keys"] = list(self.keys)
            return snap

    def take_fault(self):
        """Consume one injected fault for this token request, if any.

        Precedence, highest first: hang, status_503, error, malformed,
        oversized. One request consumes at most one fault."""
        with self.lock:
            s = self.s
            if s["hang"]:
                if s["hang"] > 0:
                    s["hang"] -= 1
                return ("hang", None)
            if s["status_503"]:
                s["status_503"] -= 1
                return ("status_503", None)
            if s["error"]:
                err = dict(s["error"])
                s["error"]["count"] -= 1
                if s["error"]["count"] <= 0:
                    s["error"] = None
                return ("error", err)
            for kind in ("malformed", "oversized"):
                if s[kind]:
                    s[kind] -= 1
                    return (kind, None)
        return (None, None)

    def public_settings(self):
        with self.lock:
            out = {k: self.s[k] for k in self.SETTING_KEYS}
            out["hang"] = True if self.s["hang"] < 0 else self.s["hang"]
            out["error"] = dict(self.s["error"]) if self.s["error"] else None
            return out

    # -- counters -----------------------------------------------------------

    def reset_stats(self):
        with self.lock:
            self._reset_stats_locked()

    def _reset_stats_locked(self):
        self.stats = {
            "token_requests": 0, "ok": 0, "errors": 0,
            "in_flight": 0, "max_in_flight": 0,
            "injected": {"hang": 0, "status_503": 0, "error": 0,
                         "malformed": 0, "oversized": 0},
            "last_error": None, "last_claims": None, "last_header": None,
            "last_access_token_sha256": None, "recent": [],
        }

    def enter(self):
        with self.lock:
            self.stats["in_flight"] += 1
            self.stats["max_in_flight"] = max(self.stats["max_in_flight"],
                                              self.stats["in_flight"])

    def leave(self):
        with self.lock:
            self.stats["in_flight"] -= 1

    def record(self, status, seen, error=None, injected=None, claims=None,
               header=None, token=None):
        """Count one token request; called when its outcome is decided, before
        any delay or hang, so a test sees it even while the answer is pending."""
        with self.lock:
            st = self.stats
            st["token_requests"] += 1
            if injected:
                st["injected"][injected] += 1
            if claims is not None:
                st["ok"] += 1
                st["last_claims"] = claims
                st["last_header"] = header
                st["last_access_token_sha256"] = hashlib.sha256(token.encode()).hexdigest()
            else:
                st["errors"] += 1
            if error is not None:
                st["last_error"] = {"status": status, "error": error[0],
                                    "error_description": error[1]}
            entry = {"status": status, "injected": injected,
                     "error": error[0] if error else None,
                     "error_description": error[1] if error else None}
            entry.update(seen)
            st["recent"].append(entry)
            del st["recent"][:-RECENT_MAX]

    def stats_json(self):
        with self.lock:
            return json.loads(json.dumps(self.stats))  # deep copy


# --------------------------------------------------------------------------
# Assertion checks
# --------------------------------------------------------------------------

def peek_claims(assertion):
    """iss/sub/aud of an assertion without any verification, for /__stats
    "recent" (lets a test see which aud the agent tried, in which order).
    None of these values is secret."""
    try:
        payload = strict_json(b64url_decode(assertion.split(".")[1]))
    except Exception:  # anything unparsable simply shows nothing
        return {}
    if not isinstance(payload, dict):
        return {}
    return {k: payload[k] for k in ("iss", "sub", "prn", "aud") if k in payload}


def check_assertion(form, cfg, now):
    """Return (error_pair, None, None) or (None, claims, header).

    Order of checks: grant_type, JWS shape and JSON, alg, iss (Salesforce
    finds the app, hence the certificate, by the consumer key, so an unknown
    iss is reported before the signature), signature, aud, exp, subject."""
    grant = form.get("grant_type")
    if grant != [JWT_BEARER]:
        return E_GRANT_TYPE, None, None

    assertion = form.get("assertion")
    if not assertion or len(assertion) != 1 or not JWS_SHAPE.match(assertion[0]):
        return E_ASSERTION, None, None
    token = assertion[0]
    try:
        head_b64, body_b64, _ = token.split(".")
        header = strict_json(b64url_decode(head_b64))
        claims = strict_json(b64url_decode(body_b64))
    except ValueError:  # includes binascii.Error, UnicodeDecodeError, JSON errors
        return E_ASSERTION, None, None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return E_ASSERTION, None, None
    # Only RS256 is accepted: "none", HS256 (key confusion) and PS256 are out.
    if header.get("alg") != "RS256":
        return E_ASSERTION, None, None

    if not isinstance(claims.get("iss"), str) or claims["iss"] != cfg["client_id"]:
        return E_CLIENT_ID, None, None

    # PyJWT checks the signature; claims are judged here, not by PyJWT, so
    # its own exp/aud/iat rules cannot mask or add errors.
    verified = False
    for key in cfg["keys"]:
        try:
            jwt.PyJWS().decode(token, key=key, algorithms=["RS256"])
            verified = True
            break
        except jwt.PyJWTError:
            continue
    if not verified:
        return E_ASSERTION, None, None

    # aud: one string (an array is refused, as by Salesforce). A single
    # trailing '/' is tolerated: restforce sends "https://login.salesforce.com/"
    # and real orgs accept it.
    aud = claims.get("aud")
    if not isinstance(aud, str) or aud.rstrip("/") not in [a.rstrip("/") for a in cfg["audience"]]:
        return E_AUDIENCE, None, None

    # exp: integer seconds (a float or a string is refused even though
    # Salesforce tolerates strings: the agent must send an integer), not in
    # the past, at most max_exp_ahead_s ahead (catches a milliseconds exp).
    exp = claims.get("exp")
    now_s = int(math.floor(now))
    if (isinstance(exp, bool) or not isinstance(exp, int)
            or exp < now_s or exp > now_s + cfg["max_exp_ahead_s"]):
        return E_EXPIRED, None, None

    # Salesforce: "If both [prn and sub] are specified, prn is used."
    subject = claims["prn"] if "prn" in claims else claims.get("sub")
    if (not isinstance(subject, str) or not subject
            or subject in cfg["unapproved_users"]
            or (cfg["users"] is not None and subject not in cfg["users"])):
        return E_USER, None, None

    return None, claims, header


def token_response(state, cfg, now, port):
    issued_at = str(int(now * 1000))  # epoch milliseconds, as a string
    access_token = "%s!AQ%s" % (ORG_ID[:15], secrets.token_urlsafe(72))
    # Salesforce signs id + issued_at with HMAC-SHA256 (key: consumer secret);
    # a per-process random key gives the same shape.
    sig = hmac.new(state.hmac_key, (IDENTITY_URL + issued_at).encode(), hashlib.sha256)
    body = {
        "access_token": access_token,
        "signature": base64.b64encode(sig.digest()).decode(),
        "scope": "api",
        "instance_url": cfg["instance_url"] or "https://127.0.0.1:%d" % port,
        "id": IDENTITY_URL,
        "token_type": "Bearer",
        "issued_at": issued_at,
    }
    return access_token, body


def oversized_body(port):
    """Exactly OVERSIZED_BYTES of valid JSON shaped like a token answer, so
    only a size limit (not a parse error) can stop the client."""
    head = ('{"access_token":"%s!AQoversized","instance_url":"https://127.0.0.1:%d",'
            '"id":"%s","token_type":"Bearer","scope":"api","issued_at":"0","padding":"'
            % (ORG_ID[:15], port, IDENTITY_URL)).encode()
    tail = b'"}'
    return head + b"x" * (OVERSIZED_BYTES - len(head) - len(tail)) + tail


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as libcurl expects
    def version_string(self):
        return "fake-salesforce"
    timeout = SOCKET_TIMEOUT_S

    # The Date header must follow the fake's (possibly skewed) clock: the
    # agent may estimate skew from it.
    def date_time_string(self, timestamp=None):
        if timestamp is None:
            timestamp = self.server.state.now()
        return email.utils.formatdate(timestamp, usegmt=True)

    def _path(self):
        return urllib.parse.urlsplit(self.path or "").path

    # Logs: method, path (no query string) and status only.
    def log_request(self, code="-", size="-"):
        if not self.server.quiet:
            log("%s %s %s" % (self.command or "-", self._path() or "-",
                              getattr(code, "value", code)))

    def log_error(self, format, *args):
        pass  # the status line is logged by log_request; the details may echo input

    # -- plumbing -----------------------------------------------------------

    def _send(self, status, body, headers=JSON_HEADERS):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status, obj):
        self._send(status, json_bytes(obj))

    def _read_body(self):
        """Return (body, None), or (None, (status, error pair)) once a
        411/400/413 has been sent. The limit is checked against
        Content-Length before a byte of the body is read."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return None, self._refuse(411, ("length_required", "chunked bodies are not supported"))
        raw = self.headers.get("Content-Length", "0").strip()
        if not raw.isdigit():
            return None, self._refuse(400, ("bad_request", "bad Content-Length"))
        length = int(raw)
        if length > self.server.max_body:
            refused = self._refuse(413, TOO_LARGE)
            self._drain(length)
            return None, refused
        return self.rfile.read(length), None

    def _refuse(self, status, pair):
        self.close_connection = True
        self._send_json(status, {"error": pair[0], "error_description": pair[1]})
        return status, pair

    def _drain(self, length):
        # Read (a bounded part of) the unread body so the client receives the
        # 413 instead of a connection reset.
        remaining = min(length, 4 * 1024 * 1024)
        try:
            self.connection.settimeout(2)
            while remaining > 0:
                chunk = self.rfile.read1(min(remaining, 65536))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass

    def handle_expect_100(self):
        # Refuse an oversized body before the client starts sending it.
        raw = self.headers.get("Content-Length", "0").strip()
        if raw.isdigit() and int(raw) > self.server.max_body:
            if self._path() == TOKEN_PATH:
                self.server.state.record(413, {}, error=TOO_LARGE)
            self._refuse(413, TOO_LARGE)
            return False
        return super().handle_expect_100()

    def _local_only(self):
        # The server binds 127.0.0.1 only; this is a second lock on the door.
        if self.client_address[0] != "127.0.0.1":
            self._send_json(403, {"error": "forbidden"})
            return False
        return True

    # -- routes -------------------------------------------------------------

    def do_GET(self):
        self.server.state.poll_control_file()
        path = self._path()
        if path in (STATS_PATH, CONTROL_PATH):
            if self._local_only():
                state = self.server.state
                self._send_json(200, state.stats_json() if path == STATS_PATH
                                else state.public_settings())
        elif path == TOKEN_PATH:
            self._send_json(405, {"error": "method_not_allowed"})
        else:
            self._send_json(404, {"error": "not_found"})

    def do_POST(self):
        self.server.state.poll_control_file()
        path = self._path()
        if path == TOKEN_PATH:
            self.server.state.enter()
            try:
                self._token()
            finally:
                self.server.state.leave()
        elif path == CONTROL_PATH:
            if not self._local_only():
                return
            body, refused = self._read_body()
            if refused:
                return
            try:
                self.server.state.apply(strict_json(body))
            except (ControlError, ValueError) as exc:
                self._send_json(400, {"ok": False, "message": str(exc)})
                return
            self._send_json(200, {"ok": True, "settings": self.server.state.public_settings()})
        else:
            self._send_json(404, {"error": "not_found"})

    def _token(self):
        state = self.server.state
        port = self.server.server_address[1]
        body, refused = self._read_body()
        if refused:
            state.record(refused[0], {}, error=refused[1])
            return

        # Salesforce reads a form; anything else has no usable grant_type.
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            if ctype != "application/x-www-form-urlencoded":
                raise ValueError
            form = urllib.parse.parse_qs(body.decode("ascii"), keep_blank_values=True,
                                         max_num_fields=16)
        except ValueError:  # includes UnicodeDecodeError
            form = {}
        seen = {}
        if len(form.get("assertion", [])) == 1:
            seen = peek_claims(form["assertion"][0])

        cfg = state.snapshot()
        kind, injected_error = state.take_fault()

        if kind == "hang":
            state.record(None, seen, injected="hang")
            self._hang()
            return

        if kind == "status_503":
            state.record(503, seen, injected=kind)
            reply = (503, HTML_503, (("Content-Type", "text/html;charset=UTF-8"),))
        elif kind == "error":
            pair = (injected_error["error"], injected_error["error_description"])
            state.record(injected_error["status"], seen, error=pair, injected=kind)
            reply = (injected_error["status"],
                     json_bytes({"error": pair[0], "error_description": pair[1]}),
                     JSON_HEADERS)
        elif kind == "malformed":
            state.record(200, seen, injected=kind)
            reply = (200, MALFORMED_BODY, JSON_HEADERS)
        elif kind == "oversized":
            state.record(200, seen, injected=kind)
            reply = (200, oversized_body(port), JSON_HEADERS)
        else:
            now = time.time() + cfg["skew_s"]
            error, claims, header = check_assertion(form, cfg, now)
            if error:
                state.record(400, seen, error=error)
                reply = (400, json_bytes({"error": error[0], "error_description": error[1]}),
                         JSON_HEADERS)
            else:
                access_token, answer = token_response(state, cfg, now, port)
                state.record(200, seen, claims=claims, header=header, token=access_token)
                reply = (200, json_bytes(answer), JSON_HEADERS)

        if cfg["delay_ms"] and STOPPING.wait(cfg["delay_ms"] / 1000.0):
            self.close_connection = True  # shutting down: drop the answer
            return
        self._send(*reply)

    def _hang(self):
        """Say nothing until the client closes, HANG_LIMIT_S passes or the
        server stops; then close without an answer."""
        self.close_connection = True
        conn = self.connection
        deadline = time.monotonic() + HANG_LIMIT_S
        while not STOPPING.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([conn], [], [], 0.25)
            if not readable and not conn.pending():
                continue
            try:
                if not conn.recv(4096):
                    return  # orderly close by the client
            except ssl.SSLWantReadError:
                continue
            except OSError:
                return  # reset, TLS alert or timeout: the client is gone


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True      # a hung handler never blocks process exit
    allow_reuse_address = True
    request_queue_size = 128   # the default 5 drops SYNs in concurrency tests

    def __init__(self, port, tls_ctx, state, max_body, quiet):
        self.tls_ctx = tls_ctx
        self.state = state
        self.max_body = max_body
        self.quiet = quiet
        super().__init__(("127.0.0.1", port), Handler)

    def server_bind(self):
        # HTTPServer.server_bind would resolve the host name (getfqdn), which
        # can stall on a machine without DNS; the name is known.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = self.server_address[1]

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, in the request's own thread, so a slow
        # or silent client cannot stall accept() for everyone else.
        request.settimeout(SOCKET_TIMEOUT_S)
        try:
            tls = self.tls_ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            if not self.quiet:
                log("TLS handshake failed: %s"
                    % (getattr(exc, "reason", None) or exc.__class__.__name__))
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        # The default prints a traceback whose messages could quote input;
        # the exception class is enough to debug the fake.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout, ssl.SSLError)):
            return
        log("handler error: %s" % exc.__class__.__name__)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

EPILOG = """\
endpoints (HTTPS, 127.0.0.1 only):
  POST /services/oauth2/token   the token endpoint (form body:
                                grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer
                                &assertion=<JWT>)
  GET  /__stats                 counters and the last accepted claims (JSON)
  GET  /__control               current settings (JSON)
  POST /__control               JSON object of control keys, applied atomically;
                                200 {"ok":true,"settings":{..}} or
                                400 {"ok":false,"message":".."}

checks, in this order (HTTP 400, {"error":..,"error_description":..}):
  grant_type missing/wrong, or body not a form
                         unsupported_grant_type / grant type not supported
  assertion missing, not 3 unpadded base64url segments, header/claims not JSON
  objects, duplicate keys, alg != RS256
                         invalid_grant / invalid assertion
  iss != client id       invalid_client_id / client identifier invalid
  signature does not verify (PyJWT) with any current cert
                         invalid_grant / invalid assertion
  aud not a single string equal to an accepted audience (one trailing '/'
  ignored)               invalid_grant / audience is invalid
  exp not an integer, < now, or > now + max-exp-ahead (fake clock)
                         invalid_grant / expired authorization code
  subject (prn if present, else sub) missing, unapproved, or not in --user
                         invalid_grant / user hasn't approved this consumer
  success: 200 {"access_token","signature","scope":"api","instance_url","id",
                "token_type":"Bearer","issued_at":"<epoch ms>"}  (no expires_in)

control keys (same in --control FILE, POST /__control and, for faults, flags):
  status_503: N          next N token requests get 503 with an HTML body
  delay_ms: N            every token answer waits N ms first
  hang: true|false|N     no answer (until the client closes, the server
                         stops, or 120 s); true = all requests, N = next N
  malformed: N           next N answers are 200 with invalid JSON
  oversized: N           next N answers are 200 with a 2 MiB JSON body
  skew_s: S              fake clock = real clock + S (Date header, exp check)
  error: {"error":E,"error_description":D,"count":N[,"status":400]} | null
                         next N token requests answer that pair
  cert: PATH | [PATH..] | null   verify with these certificates from now on
  client_id, audience (string or list), users (list or null = anyone),
  unapproved_users, instance_url (string or null = default),
  max_exp_ahead_s        as the options of the same name
  reset_stats: true      zero the counters
  An update changes only the keys it names (a control file too: it is applied
  as one update each time it changes, so counts restart from the file's value).
  A bad update is refused whole and changes nothing. One token request
  consumes at most one fault; precedence: hang, status_503, error, malformed,
  oversized. Relative cert paths are resolved against the fake's cwd. Write
  the control file atomically (temp file + rename); a half-written file is
  ignored and retried on the next request.

GET /__stats:
  {"token_requests":N, "ok":N, "errors":N,   token_requests = ok + errors
   "in_flight":N, "max_in_flight":N,         token requests being answered
   "injected":{"hang":N,"status_503":N,"error":N,"malformed":N,"oversized":N},
   "last_error":{"status":400,"error":..,"error_description":..} | null,
   "last_claims":{..} | null, "last_header":{..} | null,
   "last_access_token_sha256":"<hex>" | null,
   "recent":[{"status":200|400|503|413|null(hang),"injected":kind|null,
              "error":..,"error_description":..,"iss":..,"sub":..,"aud":..}]}
  A request is counted when its outcome is decided, before delay_ms or a
  hang. "recent" keeps the last 50, oldest first; iss/sub/aud there are read
  without verification (e.g. to see which aud values were tried, in order).

Every response carries a Date header from the fake clock (real time +
skew_s). Nothing secret is logged: stderr gets method, path and status.

readiness: the CA PEM is written to --ca-out, then the server listens, then
the port number (decimal, newline) is renamed into --port-file. Wait for the
port file. Both files are written atomically; the port file is removed first
at start and again at a clean exit (SIGTERM/SIGINT -> exit 0).
"""


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="fake_salesforce.py",
        description="Fake Salesforce OAuth 2.0 JWT Bearer token endpoint "
                    "(HTTPS, 127.0.0.1) for p11jwt integration tests.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=0, help="TCP port; 0 = pick a free one (default)")
    p.add_argument("--port-file", metavar="FILE", help="write the listening port here when ready")
    p.add_argument("--ca-out", metavar="FILE", required=True,
                   help="write the throwaway CA certificate (PEM) here; "
                        "give it to the client as ca-file")
    p.add_argument("--client-id", required=True, help="consumer key the assertion's iss must equal")
    p.add_argument("--cert", metavar="FILE", action="append", default=[],
                   help="PEM certificate whose RSA key verifies assertions "
                        "(repeatable: any may match)")
    p.add_argument("--audience", action="append", default=None,
                   help="accepted aud (repeatable; default %s)" % DEFAULT_AUDIENCE)
    p.add_argument("--user", metavar="NAME", action="append", default=None,
                   help="approved subject (repeatable; default: any user)")
    p.add_argument("--unapproved-user", metavar="NAME", action="append", default=[],
                   help="subject answered with \"user hasn't approved this consumer\" (repeatable)")
    p.add_argument("--instance-url", metavar="URL",
                   help="instance_url to return (default https://127.0.0.1:<port>)")
    p.add_argument("--max-exp-ahead", metavar="S", type=int, default=DEFAULT_MAX_EXP_AHEAD_S,
                   help="largest accepted exp - now, seconds (default %(default)s)")
    p.add_argument("--control", metavar="FILE",
                   help="JSON control file, re-read before each request when it changes")
    p.add_argument("--max-body", metavar="BYTES", type=int, default=DEFAULT_MAX_BODY,
                   help="request body limit; larger bodies get 413 (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="do not log requests")
    g = p.add_argument_group("faults at start (same meaning as the control keys)")
    g.add_argument("--status-503", metavar="N", type=int, default=0)
    g.add_argument("--delay-ms", metavar="MS", type=int, default=0)
    g.add_argument("--hang", action="store_true", help="hang every token request")
    g.add_argument("--malformed", metavar="N", type=int, default=0)
    g.add_argument("--oversized", metavar="N", type=int, default=0)
    g.add_argument("--skew-s", metavar="S", type=float, default=0.0)
    g.add_argument("--error", metavar="JSON",
                   help="an error object as for the control key, e.g. "
                        "'{\"error\":\"invalid_app_access\", \"error_description\": "
                        "\"user is not admin approved to access this app\", \"count\":1}'")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    state = State(control_file=args.control)
    initial = {
        "client_id": args.client_id,
        "audience": args.audience or [DEFAULT_AUDIENCE],
        "users": args.user,
        "unapproved_users": args.unapproved_user,
        "cert": args.cert,
        "instance_url": args.instance_url,
        "max_exp_ahead_s": args.max_exp_ahead,
        "status_503": args.status_503, "delay_ms": args.delay_ms,
        "hang": args.hang, "malformed": args.malformed, "oversized": args.oversized,
        # Keep whole seconds an int so GET /__control echoes what was given.
        "skew_s": int(args.skew_s) if args.skew_s.is_integer() else args.skew_s,
    }
    try:
        if args.error:
            initial["error"] = strict_json(args.error)
        state.apply(initial)
    except ValueError as exc:  # ControlError or bad --error JSON
        log("bad option: %s" % exc)
        return 2
    if args.max_body < 1:
        log("bad option: --max-body must be positive")
        return 2
    if not args.cert:
        log("warning: no --cert given; every signature check will fail")

    if args.port_file:
        try:
            os.unlink(args.port_file)  # a stale file must not look like readiness
        except FileNotFoundError:
            pass
    tls_ctx = make_tls_context(args.ca_out)
    state.poll_control_file()  # a control file present at start applies at once
    server = Server(args.port, tls_ctx, state, args.max_body, args.quiet)
    port = server.server_address[1]

    def stop(signum, _frame):
        STOPPING.set()
        # shutdown() waits for serve_forever() to return, which runs in this
        # very thread: call it from another one.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if args.port_file:
        write_atomically(args.port_file, b"%d\n" % port)
    log("listening on https://127.0.0.1:%d" % port)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if args.port_file:
            try:
                os.unlink(args.port_file)
            except OSError:
                pass
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
