"""Web Push, one request at a time: RFC 8291 encryption (``aes128gcm``, RFC 8188, written here
on `cryptography`), a VAPID signature (RFC 8292, by py_vapid) and the POST to the
subscription's push service (RFC 8030).

Nothing here knows about chatd's users or messages: ``pushes.py`` decides who gets what.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from py_vapid import Vapid02

# A JWT is valid for 12 h here (RFC 8292 allows 24) and reused for 11 h per push service.
JWT_LIFETIME_S = 12 * 3600
JWT_REUSE_S = 11 * 3600
ENDPOINT_MAX = 2048
RECORD_SIZE = 4096  # RFC 8291 §4: a push message is one record of at most 4096 octets


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


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(hashes.SHA256(), length, salt, info).derive(ikm)


def encrypt(payload: bytes, p256dh: str, auth: str) -> bytes:
    """RFC 8291: a fresh sender key and salt per message, one ``aes128gcm`` record (RFC 8188
    §2) whose header carries the salt and the sender's public key."""
    if len(payload) > RECORD_SIZE - 86 - 17:  # header, padding delimiter, tag
        raise ValueError("a push payload must fit in one 4096-octet record")
    receiver = unb64url(p256dh)
    sender = ec.generate_private_key(ec.SECP256R1())
    sender_public = sender.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    shared = sender.exchange(
        ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), receiver)
    )
    ikm = _hkdf(unb64url(auth), shared, b"WebPush: info\x00" + receiver + sender_public, 32)
    salt = os.urandom(16)
    cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    record = AESGCM(cek).encrypt(nonce, payload + b"\x02", None)  # 0x02: the last record
    header = salt + struct.pack("!IB", RECORD_SIZE, len(sender_public)) + sender_public
    return header + record


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
