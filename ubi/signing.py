"""Signatures on partner API responses, verifiable offline.

The key is Ed25519 (PEM, PKCS8) at ``settings.partner_signing_key_location``, generated on first
use with mode 0600. Creation is atomic: the key is written to a temporary file and hard-linked
into place, which fails if the file exists, so two processes starting at once agree on one key
(the loser reads the winner's). The parsed key is cached per process for as long as the file is
unchanged (same inode, size and modification time); replacing the file rotates the key.

A response body is signed as a JWS with a detached, unencoded payload (RFC 7515 appendix F,
RFC 7797 ``"b64": false``): the ``X-Fleet-Signature`` header is
``BASE64URL(header)..BASE64URL(signature)`` and the signature covers
``BASE64URL(header) + "." + body`` -- exactly the bytes received, no re-serialisation. The
header names the key by ``kid``, its RFC 7638 JWK thumbprint; the public keys are served as a
JWK set at ``GET /v1/partner/keys``. :func:`verify` is what a receiver runs.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)
from jwt import PyJWK
from jwt.api_jws import PyJWS
from jwt.exceptions import PyJWTError

from core.config import Settings

ALGORITHM = "EdDSA"
HEADER = "X-Fleet-Signature"


class SignatureInvalid(Exception):
    """The signature does not verify against the body with any key of the JWK set."""


@dataclass(frozen=True)
class SigningKey:
    private_key: Ed25519PrivateKey
    public_jwk: dict[str, str]
    kid: str


_cache: dict[Path, tuple[tuple[int, int, int], SigningKey]] = {}
_lock = threading.Lock()


def signing_key(settings: Settings) -> SigningKey:
    """The partner signing key, created on first use, parsed once per process per file."""
    path = settings.partner_signing_key_location
    stat = _stat(path)
    if stat is None:
        _create(path)
        stat = _stat(path)
        if stat is None:
            raise RuntimeError(f"partner signing key {path} vanished after it was created")
    with _lock:
        cached = _cache.get(path)
        if cached is not None and cached[0] == stat:
            return cached[1]
        key = _load(path)
        _cache[path] = (stat, key)
        return key


def jwks(settings: Settings) -> dict[str, Any]:
    """The public JWK set (one OKP/Ed25519 key) that verifies responses."""
    key = signing_key(settings)
    return {"keys": [{**key.public_jwk, "kid": key.kid, "alg": ALGORITHM, "use": "sig"}]}


def sign(settings: Settings, body: bytes) -> str:
    """A compact JWS over ``body`` with the payload detached: ``header..signature``."""
    key = signing_key(settings)
    return PyJWS().encode(
        body,
        key.private_key,
        algorithm=ALGORITHM,
        headers={"kid": key.kid, "typ": None},
        is_payload_detached=True,
    )


def verify(body: bytes, signature: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """Check ``signature`` (the ``X-Fleet-Signature`` header) over exactly ``body`` with the
    key of the JWK set named by its ``kid``; returns the protected header. Raises
    :class:`SignatureInvalid` otherwise."""
    try:
        header = PyJWS().get_unverified_header(signature)
        candidates = [
            k
            for k in jwks.get("keys", [])
            if isinstance(k, dict) and k.get("kid") == header.get("kid")
        ]
        if not candidates:
            raise SignatureInvalid(f"no key with kid {header.get('kid')!r} in the JWK set")
        decoded = PyJWS().decode_complete(
            signature,
            PyJWK(candidates[0], algorithm=ALGORITHM),
            algorithms=[ALGORITHM],
            detached_payload=body,
        )
    except PyJWTError as exc:
        raise SignatureInvalid(str(exc)) from exc
    if decoded["header"].get("b64", True) is not False:
        raise SignatureInvalid("the signature does not have a detached, unencoded payload")
    result: dict[str, Any] = decoded["header"]
    return result


def thumbprint(public_jwk: dict[str, str]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of an OKP key: its required members
    ``crv``, ``kty``, ``x`` in lexicographic order, no whitespace."""
    required = {name: public_jwk[name] for name in ("crv", "kty", "x")}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True).encode()
    return _b64url(hashlib.sha256(canonical).digest())


def _load(path: Path) -> SigningKey:
    private_key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(private_key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    public_jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}
    return SigningKey(private_key, public_jwk, thumbprint(public_jwk))


def _create(path: Path) -> None:
    """Write a new key to ``path`` unless a file is there already (atomic, mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".partner-signing-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):  # another process won; use its key
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
