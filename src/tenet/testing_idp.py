"""A stand-in identity provider: key pairs, JWTs signed with them, a JWKS served over HTTP.

Tests, ``tenet audit --jwt-key`` and ``tenet bench --auth jwt`` use it to run a
tenet server in ``TENET_AUTH=jwt`` mode against something real: an HTTP server
on a free loopback port (in a thread of its own, so it answers whatever the
event loop is doing) serving an OpenID Connect discovery document at
``/.well-known/openid-configuration`` and the public keys at ``/jwks``. Keys are
made with ``cryptography`` and tokens signed with PyJWT. The provider can rotate
keys, answer slowly, fail, or stop, and counts the JWKS requests it served.

Not for production: it holds private keys in memory and has no users of its own.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass
class SigningKey:
    """One private key, its ``kid`` and the algorithm it signs with."""

    kid: str
    private: PrivateKey
    alg: str

    @classmethod
    def rsa(cls, kid: str | None = None) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(kid or f"rsa-{secrets.token_hex(4)}", key, "RS256")

    @classmethod
    def ec(cls, kid: str | None = None) -> SigningKey:
        return cls(
            kid or f"ec-{secrets.token_hex(4)}", ec.generate_private_key(ec.SECP256R1()), "ES256"
        )

    @classmethod
    def from_pem(cls, path: str | Path, kid: str | None = None) -> SigningKey:
        """A PEM private key file (RSA: RS256; EC P-256: ES256)."""
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if isinstance(key, rsa.RSAPrivateKey):
            return cls(kid or "tenet-rsa", key, "RS256")
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            return cls(kid or "tenet-ec", key, "ES256")
        raise ValueError(f"{path}: an RSA or EC P-256 private key is needed")

    def public_jwk(self) -> dict[str, Any]:
        algorithm = RSAAlgorithm if self.alg.startswith("RS") else ECAlgorithm
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        jwk.update(kid=self.kid, use="sig", alg=self.alg)
        return jwk

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def sign(
    key: SigningKey,
    subject: str | None,
    *,
    issuer: str | None,
    audience: str | None,
    ttl_s: float = 600,
    kid: str | None = "",
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A JWT for ``subject`` signed by ``key``; ``kid=""`` uses the key's own, None omits it."""
    now = time.time()
    payload: dict[str, Any] = {"iat": int(now), "exp": int(now + ttl_s)}
    if subject is not None:
        payload["sub"] = subject
    if issuer is not None:
        payload["iss"] = issuer
    if audience is not None:
        payload["aud"] = audience
    payload.update(claims)
    header = dict(headers or {})
    if kid is not None:
        header["kid"] = kid or key.kid
    return jwt.encode(payload, key.private, algorithm=key.alg, headers=header)


@dataclass
class _State:
    keys: list[SigningKey]
    issuer: str = ""
    delay_s: float = 0.0
    failing: bool = False
    jwks_requests: int = 0
    discovery_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class LocalIdentityProvider:
    """A JWKS and discovery document on a free loopback port; see the module docstring.

    ``with LocalIdentityProvider() as idp:`` starts it; ``idp.issuer`` is its URL,
    which is also the issuer its tokens name.
    """

    def __init__(self, keys: list[SigningKey] | None = None, audience: str = "tenet") -> None:
        self.audience = audience
        self._state = _State(keys=keys if keys is not None else [SigningKey.rsa(), SigningKey.ec()])
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # Serving ----------------------------------------------------------------------------------

    def start(self) -> LocalIdentityProvider:
        state = self._state

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with state.lock:
                    delay, failing = state.delay_s, state.failing
                    if self.path == "/jwks":
                        state.jwks_requests += 1
                        body: Any = {"keys": [k.public_jwk() for k in state.keys]}
                    elif self.path == "/.well-known/openid-configuration":
                        state.discovery_requests += 1
                        body = {"issuer": state.issuer, "jwks_uri": f"{state.issuer}/jwks"}
                    else:
                        body = None
                if delay:
                    time.sleep(delay)
                if failing or body is None:
                    self.send_error(503 if failing else 404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        state.issuer = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=server.serve_forever, daemon=True, name="idp")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take the provider down: its port refuses connections until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> LocalIdentityProvider:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # What it serves ---------------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        return self._state.issuer

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks"

    @property
    def keys(self) -> list[SigningKey]:
        return list(self._state.keys)

    @property
    def jwks_requests(self) -> int:
        return self._state.jwks_requests

    @property
    def discovery_requests(self) -> int:
        return self._state.discovery_requests

    def set_keys(self, keys: list[SigningKey]) -> None:
        """Publish these keys from now on (a rotation)."""
        with self._state.lock:
            self._state.keys = list(keys)

    def set_delay(self, seconds: float) -> None:
        """Answer every request this much later (a slow provider)."""
        with self._state.lock:
            self._state.delay_s = seconds

    def set_failing(self, failing: bool) -> None:
        """Answer 503 to everything (a provider in trouble)."""
        with self._state.lock:
            self._state.failing = failing

    def settings(self, *, discovery: bool = False) -> dict[str, Any]:
        """``TENET_AUTH_*`` settings (as Settings keyword arguments) trusting this provider."""
        source = (
            {"auth_oidc_issuer": self.issuer} if discovery else {"auth_jwks_url": self.jwks_url}
        )
        return {
            "auth": "jwt",
            **source,
            "auth_issuer": self.issuer,
            "auth_audience": self.audience,
        }

    def token(self, subject: str | None, *, key: SigningKey | None = None, **kwargs: Any) -> str:
        """A token of this provider for ``subject`` (see :func:`sign` for the options)."""
        kwargs.setdefault("issuer", self.issuer)
        kwargs.setdefault("audience", self.audience)
        return sign(key or self._state.keys[0], subject, **kwargs)
