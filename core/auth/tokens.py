"""The bearer-token format ``flt_<key_id>_<secret>`` and its hashing (pure functions).

``key_id`` is public (16 hex characters, it names the credential in listings and revocation);
``secret`` is 256 random bits, URL-safe base64. Only ``sha256(secret)`` is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

TOKEN_PREFIX = "flt_"
_KEY_ID_BYTES = 8
_SECRET_BYTES = 32
# token_urlsafe(32) is always 43 characters. key_id is hex, so the first "_" after the prefix
# separates it from the secret even though the secret's alphabet contains "_".
_TOKEN_RE = re.compile(r"^flt_(?P<key_id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True)
class ParsedToken:
    key_id: str
    secret: str


def new_key_id() -> str:
    return secrets.token_hex(_KEY_ID_BYTES)


def new_secret() -> str:
    return secrets.token_urlsafe(_SECRET_BYTES)


def format_token(key_id: str, secret: str) -> str:
    return f"{TOKEN_PREFIX}{key_id}_{secret}"


def parse_token(token: str) -> ParsedToken | None:
    """Split a token into its parts; None when it is not shaped like one of ours."""
    match = _TOKEN_RE.match(token)
    if match is None:
        return None
    return ParsedToken(key_id=match["key_id"], secret=match["secret"])


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, secret_hash: str) -> bool:
    """Constant-time comparison, so response timing says nothing about the stored hash."""
    return hmac.compare_digest(hash_secret(secret), secret_hash)


def token_fingerprint(token: str) -> str:
    """A cache key for a token that is useless to whoever reads process memory or logs."""
    return hashlib.sha256(token.encode()).hexdigest()
