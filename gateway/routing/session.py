"""Session keys: the `X-Session-ID` header, else a signed cookie the gateway sets.

The cookie value is `<id>.<signature>` with an HMAC-SHA256 signature under a secret from config or
the environment, so every worker and every gateway replica that shares the secret accepts it, and
a forged or unsigned value is never trusted (it is replaced by a fresh session).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass

from starlette.requests import Request

SECRET_ENV = "GATEWAY_SESSION_SECRET"
COOKIE_MAX_AGE_S = 14 * 24 * 3600


def resolve_secret(configured: str | None) -> bytes:
    """Config value, else $GATEWAY_SESSION_SECRET, else a random secret for this process."""
    secret = configured or os.environ.get(SECRET_ENV) or secrets.token_urlsafe(32)
    return secret.encode()


@dataclass(frozen=True)
class SessionKey:
    key: str
    # Set when the gateway minted the session and must send the cookie back.
    cookie_value: str | None = None


class SessionSigner:
    def __init__(self, secret: bytes, header: str, cookie: str) -> None:
        self._secret = secret
        self.header = header.lower()
        self.cookie = cookie

    def sign(self, session_id: str) -> str:
        mac = hmac.new(self._secret, session_id.encode(), hashlib.sha256).digest()[:18]
        return f"{session_id}.{base64.urlsafe_b64encode(mac).decode()}"

    def verify(self, value: str) -> str | None:
        session_id, _, _ = value.rpartition(".")
        if not session_id:
            return None
        return session_id if hmac.compare_digest(self.sign(session_id), value) else None

    def session_for(self, request: Request) -> SessionKey:
        header = request.headers.get(self.header)
        if header:
            return SessionKey(header)
        cookie = request.cookies.get(self.cookie)
        if cookie:
            session_id = self.verify(cookie)
            if session_id is not None:
                return SessionKey(session_id)
        session_id = secrets.token_urlsafe(16)
        return SessionKey(session_id, cookie_value=self.sign(session_id))

    def set_cookie_header(self, value: str) -> str:
        return f"{self.cookie}={value}; Path=/; Max-Age={COOKIE_MAX_AGE_S}; HttpOnly; SameSite=Lax"
