"""Ed25519 signing keys of the OTA repositories and which of them are online.

A key is a pair of files: the private key as PEM PKCS#8 (``timestamp.pem``, mode 0600) and
its public half as TUF key JSON next to it (``timestamp.pub.json``), which is what root
metadata lists and what an operator hands over for a key rotation. Signing goes through
``securesystemslib``'s :class:`CryptoSigner`; nothing here implements cryptography.

Online and offline keys (Uptane):

* the **Image repository** keeps root and targets keys *offline*: their private files live
  where the operator keeps them (an air-gapped machine, a hardware token), and signing is an
  explicit step on files (``ota.tuf_repo.sign_file``). Only the snapshot and timestamp keys
  are online, so the service can re-sign those before they expire. A development setup may
  put the targets key online too.
* the **Director** signs per-vehicle metadata on demand, so all its keys are online.

A :class:`KeyRing` holds the signers the running service may use, by role. A role without
signers in the ring is offline: asking the ring for it raises :class:`OfflineKeyRequired`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, Key, Signer

from core.errors import Conflict

TOP_LEVEL_ROLES = ("root", "targets", "snapshot", "timestamp")
IMAGE_REPOSITORY_ONLINE_ROLES = ("snapshot", "timestamp")
DIRECTOR_ONLINE_ROLES = TOP_LEVEL_ROLES


class OfflineKeyRequired(Conflict):
    """The operation needs a key that is not online: sign the file with the offline key."""

    code = "offline_key_required"


def public_key_path(private_key_path: Path) -> Path:
    """Where the public half of ``private_key_path`` is written: ``<stem>.pub.json``."""
    return private_key_path.with_name(f"{private_key_path.stem}.pub.json")


def generate_key(path: Path) -> Key:
    """Generate an Ed25519 key pair, write it to ``path`` (private, 0600) and
    :func:`public_key_path` (public), and return the public key.

    Refuses to overwrite an existing private key file: losing a key is worse than an error.
    """
    signer = CryptoSigner.generate_ed25519()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as private_file:
        private_file.write(signer.private_bytes)
    write_public_key(public_key_path(path), signer.public_key)
    return signer.public_key


def load_signer(path: Path) -> CryptoSigner:
    """Load a signer from an Ed25519 private key file (PEM PKCS#8, unencrypted)."""
    private_key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(private_key, Ed25519PrivateKey):
        raise ValueError(f"{path}: expected an Ed25519 private key, got {type(private_key)}")
    return CryptoSigner(private_key)


def write_public_key(path: Path, key: Key) -> None:
    """Write ``key`` as JSON ``{"keyid": ..., "keytype": ..., "scheme": ..., "keyval": ...}``."""
    document = {"keyid": key.keyid, **key.to_dict()}
    data = json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as temp_file:
        temp_file.write(data)
    os.replace(temp_file.name, path)


def load_public_key(path: Path) -> Key:
    """Read a public key written by :func:`write_public_key` (or :func:`generate_key`)."""
    document = json.loads(path.read_text())
    keyid = document.pop("keyid")
    return Key.from_dict(keyid, document)


@dataclass
class KeyRing:
    """Signers the service may use without an operator, by role.

    A role missing from ``online`` (or with no signers) is offline.
    """

    online: dict[str, list[Signer]] = field(default_factory=dict)

    @classmethod
    def of(cls, signers: Mapping[str, Signer | Sequence[Signer]]) -> KeyRing:
        """``KeyRing.of({"snapshot": s, "timestamp": [t1, t2]})``."""
        online: dict[str, list[Signer]] = {}
        for role, value in signers.items():
            _check_role(role)
            online[role] = [value] if isinstance(value, Signer) else list(value)
        return cls(online)

    @classmethod
    def from_directory(cls, directory: Path, roles: Iterable[str]) -> KeyRing:
        """Load ``<role>.pem`` and ``<role>-*.pem`` from ``directory`` for each role in
        ``roles`` (for example :data:`IMAGE_REPOSITORY_ONLINE_ROLES`). A role without a key
        file stays offline."""
        online: dict[str, list[Signer]] = {}
        for role in roles:
            _check_role(role)
            paths = sorted({*directory.glob(f"{role}.pem"), *directory.glob(f"{role}-*.pem")})
            if paths:
                online[role] = [load_signer(path) for path in paths]
        return cls(online)

    def is_online(self, role: str) -> bool:
        return bool(self.online.get(role))

    def signers(self, role: str) -> list[Signer]:
        """The online signers of ``role``; raises :class:`OfflineKeyRequired` if none."""
        signers = self.online.get(role)
        if not signers:
            raise OfflineKeyRequired(
                f"the {role} key is offline: sign the metadata file with it and publish it"
            )
        return list(signers)

    def replace(self, role: str, signers: Sequence[Signer]) -> None:
        """Use ``signers`` for ``role`` from now on (after a key rotation)."""
        _check_role(role)
        self.online[role] = list(signers)


def _check_role(role: str) -> None:
    if role not in TOP_LEVEL_ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {TOP_LEVEL_ROLES}")
