"""Signing webhook deliveries, and the reference verifier the project ships for receivers.

The scheme is that of the Standard Webhooks specification (standardwebhooks.com), so
receivers can also use its libraries in other languages:

* headers ``webhook-id`` (the delivery's idempotency key: the same for every retry of it),
  ``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature``;
* the signature is ``v1,`` + base64(HMAC-SHA256(key, f"{id}.{timestamp}." + body));
* secrets are ``whsec_`` + base64 of at least 24 random bytes; during a rotation the sender
  signs with the new and the old secret (space-separated signatures) and a receiver accepts
  either, so secrets change without a missed delivery;
* a receiver refuses timestamps further than ``tolerance_s`` (default 5 minutes) from its clock,
  so a captured delivery cannot be replayed later; within the window it deduplicates on
  ``webhook-id``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 300
MIN_SECRET_BYTES = 24
HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


class WebhookVerificationError(ValueError):
    """Why a delivery was refused; ``reason`` is stable (``missing_header``, ``bad_timestamp``,
    ``stale``, ``future``, ``bad_signature``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def new_secret() -> str:
    """A fresh signing secret (32 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; ValueError naming what is wrong otherwise."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is whsec_ followed by base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"a webhook secret needs at least {MIN_SECRET_BYTES} bytes of key")
    return key


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 signature>`` of one delivery attempt."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signature_headers(
    signing_secrets: Sequence[str], message_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The headers of one attempt, signed with every current secret (two during a rotation)."""
    if not signing_secrets:
        raise ValueError("at least one signing secret is needed")
    if not message_id or any(c in message_id for c in " .,"):
        raise ValueError("the webhook id must be non-empty, without spaces, dots or commas")
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        HEADER_ID: message_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: " ".join(sign(s, message_id, timestamp, body) for s in signing_secrets),
    }


def verify(
    accepted_secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> str:
    """Check a delivery as a receiver should; returns its ``webhook-id`` (the idempotency key)
    or raises :class:`WebhookVerificationError`. Header names are case-insensitive."""
    lowered = {name.lower(): value for name, value in headers.items()}
    missing = [h for h in (HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE) if h not in lowered]
    if missing:
        raise WebhookVerificationError("missing_header", f"missing header(s): {', '.join(missing)}")
    message_id, stamp = lowered[HEADER_ID], lowered[HEADER_TIMESTAMP]
    if not stamp.isdigit() or len(stamp) > 12:
        raise WebhookVerificationError("bad_timestamp", f"{HEADER_TIMESTAMP} is not Unix seconds")
    timestamp = int(stamp)
    now = time.time() if now is None else now
    if timestamp < now - tolerance_s:
        raise WebhookVerificationError("stale", f"timestamp is older than {tolerance_s} s")
    if timestamp > now + tolerance_s:
        raise WebhookVerificationError("future", f"timestamp is more than {tolerance_s} s ahead")
    offered = [part for part in lowered[HEADER_SIGNATURE].split(" ") if part]
    for secret in accepted_secrets:
        expected = sign(secret, message_id, timestamp, body)
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return message_id
    raise WebhookVerificationError("bad_signature", "no signature matches an accepted secret")
