"""Small HTTP servers the tests run beside the real registry: a fault-injecting proxy (for
failures a real registry cannot be made to produce) and a token server for bearer auth."""

import base64
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that went away
            super().handle_error(request, client_address)


def serve(handler_cls, **attrs):
    handler = type("Handler", (handler_cls,), attrs)
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    return server


@dataclass
class Fault:
    """Apply ``action`` to requests matching ``method`` and ``path`` (a regex), ``times``
    times (None: always). Actions: ("status", code[, after seconds]), ("corrupt",),
    ("body", text) (the registry's answer with this body instead), ("delay", seconds),
    ("late", seconds) (the request reaches the registry at once, its answer comes that much
    later), ("reset",)."""

    method: str
    path: str
    action: tuple
    times: int | None = None
    hits: int = 0


class FaultProxy:
    def __init__(self, upstream):
        self.upstream = upstream.rstrip("/")
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.arrivals: list[float] = []  # time.monotonic() of each request, as in requests
        self.lock = threading.Lock()
        self.server = serve(_ProxyHandler, proxy=self)
        self.url = self.server.url

    def add(self, method, path, *action, times=None):
        fault = Fault(method, path, action, times)
        self.faults.append(fault)
        return fault

    def match(self, method, path):
        with self.lock:
            self.requests.append((method, path))
            self.arrivals.append(time.monotonic())
            for fault in self.faults:
                if fault.method in (method, "*") and re.search(fault.path, path) and \
                        (fault.times is None or fault.hits < fault.times):
                    fault.hits += 1
                    return fault.action
        return None

    def count(self, method, pattern):
        return sum(1 for m, p in self.requests if m == method and re.search(pattern, p))

    def first_after(self, since, method, pattern):
        """time.monotonic() of the first matching request that arrived after ``since``."""
        with self.lock:
            for at, (m, p) in zip(self.arrivals, self.requests):
                if at > since and m == method and re.search(pattern, p):
                    return at
        return None

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class _ProxyHandler(BaseHTTPRequestHandler):
    proxy: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        action = self.proxy.match(self.command, self.path)
        if action and action[0] == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            self.connection.close()
            return
        if action and action[0] == "delay":
            time.sleep(action[1])
        if action and action[0] == "status":
            time.sleep(action[2] if len(action) > 2 else 0)
            payload = json.dumps({"errors": [{"code": "INJECTED", "message": "injected"}]})
            self._send(action[1], {"Content-Type": "application/json"}, payload.encode())
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        resp = requests.request(self.command, self.proxy.upstream + self.path, headers=headers,
                                data=body, allow_redirects=False, timeout=30)
        content = resp.content
        if action and action[0] == "late":
            time.sleep(action[1])
        out = {k: v for k, v in resp.headers.items() if k.lower() not in HOP}
        if "Location" in out:
            out["Location"] = out["Location"].replace(self.proxy.upstream, self.proxy.url)
        if action and action[0] == "body":
            content = action[1].encode()
        if action and action[0] == "corrupt":
            content = b'{"schemaVersion": 2, "mediaType": "broken'
        self._send(resp.status_code, out, content)

    def _send(self, status, headers, content):
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(content) if self.command != "HEAD"
                                               else headers.get("Content-Length", 0)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = _handle


class TokenServer:
    """Issues registry bearer tokens (JWT with an x5c chain) to one user."""

    def __init__(self, root, username, password, service="hubmgr-test", issuer="test-issuer"):
        self.username, self.password = username, password
        self.service, self.issuer = service, issuer
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hubmgr test token signer")])
        now = datetime.now(timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(1)
                     .not_valid_before(now - timedelta(days=1))
                     .not_valid_after(now + timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))
        self.cert_path = root / "token-signer.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.issued = 0
        self.server = serve(_TokenHandler, tokens=self)
        self.url = self.server.url + "/token"

    def registry_auth(self):
        return {"realm": self.url, "service": self.service, "issuer": self.issuer,
                "rootcertbundle": str(self.cert_path)}

    def token(self, scopes):
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": self.username, "aud": self.service, "iat": now,
                  "nbf": now - 5, "exp": now + 300, "jti": f"t{self.issued}", "access": access}
        x5c = [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]
        self.issued += 1
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"x5c": x5c})

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class _TokenHandler(BaseHTTPRequestHandler):
    tokens: TokenServer

    def log_message(self, *args):
        pass

    def do_GET(self):
        expected = "Basic " + base64.b64encode(
            f"{self.tokens.username}:{self.tokens.password}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.end_headers()
            return
        query = parse_qs(urlsplit(self.path).query)
        body = json.dumps({"token": self.tokens.token(query.get("scope", [])),
                           "expires_in": 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
