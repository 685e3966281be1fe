"""Web Push, one request at a time: RFC 8291 encryption (``aes128gcm``, by http_ece), a VAPID
signature (RFC 8292, by py_vapid) and the POST to the subscription's push service (RFC 8030).

Nothing here knows about chatd's users or messages: ``pushes.py`` decides who gets what.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import urlsplit

import http_ece
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

# A JWT is valid for 12 h here (RFC 8292 allows 24) and reused for 11 h per push service.
JWT_LIFETIME_S = 12 * 3600
JWT_REUSE_S = 11 * 3600
ENDPOINT_MAX = 2048


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate_key_pem() -> bytes:
    """A new VAPID key (P-256), PEM (PKCS #8): what `chatd dev` and the tests make once."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class VapidKey:
    """The server's VAPID key pair; the public half is the browsers' ``applicationServerKey``."""

    def __init__(self, pem: bytes, subject: str) -> None:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("the VAPID key must be an EC P-256 private key")
        self._vapid = Vapid02(private_key=key)
        self.subject = subject
        raw = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.public_key = b64url(raw)
        # Topic headers are a keyed hash of the conversation: push services see a stable
        # opaque name, not chatd's conversation id.
        secret = key.private_numbers().private_value.to_bytes(32, "big")
        self._topic_key = hashlib.sha256(b"chatd-topic:" + secret).digest()
        self._jwts: dict[str, tuple[float, str]] = {}

    @classmethod
    def from_file(cls, path: Path, subject: str) -> VapidKey:
        return cls(path.read_bytes(), subject)

    def authorization(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        cached = self._jwts.get(audience)
        if cached is not None and cached[0] > now:
            return cached[1]
        claims = {"aud": audience, "exp": int(now) + JWT_LIFETIME_S, "sub": self.subject}
        header: str = self._vapid.sign(claims)["Authorization"]
        if len(self._jwts) > 1000:
            self._jwts.clear()
        self._jwts[audience] = (now + JWT_REUSE_S, header)
        return header

    def topic(self, name: str) -> str:
        """A Topic header value (RFC 8030 §5.4: at most 32 base64url characters)."""
        return b64url(hashlib.blake2s(name.encode(), key=self._topic_key, digest_size=18).digest())


def check_keys(p256dh: str, auth: str) -> str | None:
    """Why a subscription's keys are unusable, or None."""
    try:
        point = unb64url(p256dh)
        secret = unb64url(auth)
    except (binascii.Error, ValueError):
        return "keys: expected base64url"
    if len(secret) != 16:
        return "keys.auth: expected 16 bytes"
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        return "keys.p256dh: expected an uncompressed P-256 public key"
    if len(point) != 65:
        return "keys.p256dh: expected an uncompressed P-256 public key"
    return None


def allowed(endpoint: str, patterns: tuple[str, ...]) -> bool:
    """Whether `endpoint` is on a push service of CHATD_PUSH_SERVICES (``scheme://host``, a
    host may start with ``*.``; any port, any path)."""
    parts = urlsplit(endpoint)
    host = (parts.hostname or "").lower()
    if not host or parts.username is not None or parts.password is not None:
        return False
    for pattern in patterns:
        scheme, _, wanted = pattern.partition("://")
        if parts.scheme != scheme:
            continue
        if wanted.startswith("*."):
            if host.endswith(wanted[1:]) and host != wanted[2:]:
                return True
        elif host == wanted:
            return True
    return False


def encrypt(payload: bytes, p256dh: str, auth: str) -> bytes:
    """RFC 8291: a fresh sender key per message; the record holds the salt and that key."""
    sender = ec.generate_private_key(ec.SECP256R1())
    body: bytes = http_ece.encrypt(
        payload, private_key=sender, dh=unb64url(p256dh), auth_secret=unb64url(auth), version="aes128gcm"
    )
    return body


class Outcome(Enum):
    SENT = "sent"
    GONE = "gone"  # 404/410: the subscription is no more
    RETRY = "retry"  # 429, 5xx, a network error or a timeout
    REFUSED = "refused"  # any other answer: this request will never work


@dataclass(frozen=True, slots=True)
class Answer:
    outcome: Outcome
    status: int | None = None
    retry_after_s: float | None = None


async def send(
    client: httpx.AsyncClient,
    key: VapidKey,
    endpoint: str,
    body: bytes,
    *,
    ttl_s: int,
    topic: str,
    urgency: str = "normal",
) -> Answer:
    headers = {
        "Authorization": key.authorization(endpoint),
        "Content-Encoding": "aes128gcm",
        "Content-Type": "application/octet-stream",
        "TTL": str(ttl_s),
        "Topic": topic,
        "Urgency": urgency,
    }
    try:
        response = await client.post(endpoint, content=body, headers=headers)
    except (httpx.TransportError, httpx.InvalidURL):
        return Answer(Outcome.RETRY)
    status = response.status_code
    if status in (200, 201, 202):
        return Answer(Outcome.SENT, status)
    if status in (404, 410):
        return Answer(Outcome.GONE, status)
    if status == 429 or status >= 500:
        retry_after = response.headers.get("retry-after", "")
        return Answer(Outcome.RETRY, status, float(retry_after) if retry_after.isdigit() else None)
    return Answer(Outcome.REFUSED, status)
