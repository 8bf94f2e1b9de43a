"""The Uptane Image repository: TUF metadata saying which software images exist.

Built on python-tuf's Metadata API (``tuf.api.metadata``) and ``securesystemslib`` signers;
nothing here encodes canonical JSON or signs by hand.

**Roles and keys.** Root (a threshold of root keys) and targets keys are offline: changing
the targets is *prepare* (:meth:`ImageRepository.prepare_targets` returns an unsigned
targets file), *sign* (:func:`sign_file`, once per key holder, on any machine) and
*publish* (:meth:`ImageRepository.publish_targets` checks the threshold against root, then
writes it and re-signs snapshot and timestamp with the online keys). When the targets key is
online (development), :meth:`ImageRepository.add_targets` does all three. Snapshot and
timestamp are online and :meth:`ImageRepository.refresh` re-signs them before they expire.

**Targets** carry the Uptane custom fields ``hardware_identifier`` and ``release_counter``
next to any other custom data (dependencies, ...): ``{"custom": {"hardware_identifier":
"ECU-HW-1", "release_counter": 3, ...}}``. A published target is immutable: the same name
with other bytes is refused (publish a new name instead).

**Store layout** (consistent snapshots, exactly the names ``tuf.ngclient.Updater`` asks for
under the repository's metadata URL)::

    image/root.json              current root (what vehicles are provisioned with)
    image/<v>.root.json          every root version (clients walk them on rotation)
    image/timestamp.json         the only unversioned role file; written last
    image/<v>.snapshot.json
    image/<v>.targets.json

Versioned files are written before ``timestamp.json`` points at them and are never
overwritten, so a client that is half-way through an update still finds what its timestamp
named. Writers of one repository must be serialized (one process, or a lock in the store);
readers need no coordination.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from securesystemslib.signer import Key, Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError

from core.errors import Conflict, NotFound, ValidationFailed
from ota.keys import TOP_LEVEL_ROLES, KeyRing

logger = logging.getLogger(__name__)

HARDWARE_IDENTIFIER = "hardware_identifier"
RELEASE_COUNTER = "release_counter"
IMAGE_PREFIX = "image/"

_SignedT = TypeVar("_SignedT", Root, Timestamp, Snapshot, Targets)
_METADATA_NAME = re.compile(r"^(?:root|timestamp|[1-9][0-9]*\.(?:root|snapshot|targets))\.json$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


# --- errors -------------------------------------------------------------------------------


class SignatureThresholdNotMet(ValidationFailed):
    """Metadata lacks the threshold of valid signatures its delegating role requires."""

    code = "signature_threshold_not_met"


class MetadataVersionConflict(Conflict):
    """The metadata is not the next version of what the repository holds."""

    code = "metadata_version_conflict"


class InvalidTarget(ValidationFailed):
    code = "invalid_target"


class InvalidMetadata(ValidationFailed):
    code = "invalid_metadata"


class RepositoryNotInitialized(NotFound):
    code = "repository_not_initialized"


class RepositoryExists(Conflict):
    code = "repository_exists"


# --- storage ------------------------------------------------------------------------------


class MetadataStore(Protocol):
    """Where metadata files live; paths are ``/``-separated and relative."""

    def read(self, path: str) -> bytes | None: ...

    def write(self, path: str, data: bytes) -> None: ...


class MemoryStore:
    """A dict of files: tests and single-process tools."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def read(self, path: str) -> bytes | None:
        check_store_path(path)
        return self.files.get(path)

    def write(self, path: str, data: bytes) -> None:
        check_store_path(path)
        with self._lock:
            self.files[path] = bytes(data)


class DirectoryStore:
    """Files under ``root``; each write is atomic (temporary file, fsync, rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def read(self, path: str) -> bytes | None:
        try:
            return (self.root / check_store_path(path)).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write(self, path: str, data: bytes) -> None:
        target = self.root / check_store_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as temp_file:
            try:
                temp_file.write(data)
                temp_file.flush()
                os.fsync(temp_file.fileno())
            except BaseException:
                os.unlink(temp_file.name)
                raise
        os.replace(temp_file.name, target)


def check_store_path(path: str) -> str:
    """Refuse paths that could leave the store (absolute, ``..``, empty segments)."""
    parts = path.split("/")
    if not path or "\\" in path or "\x00" in path or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid store path {path!r}")
    return path


def is_metadata_name(name: str) -> bool:
    """True for the file names a TUF client requests: ``timestamp.json``, ``3.targets.json``..."""
    return bool(_METADATA_NAME.fullmatch(name))


# --- expiry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpiryPolicy:
    """How long each role's metadata is valid, and how long before expiry it is re-signed."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=90)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(days=1)
    root_margin: timedelta = timedelta(days=30)
    targets_margin: timedelta = timedelta(days=14)
    snapshot_margin: timedelta = timedelta(days=2)
    timestamp_margin: timedelta = timedelta(hours=8)

    def __post_init__(self) -> None:
        for role in TOP_LEVEL_ROLES:
            if not timedelta(0) <= self.margin(role) < self.lifetime(role):
                raise ValueError(f"{role}: the re-sign margin must be shorter than the lifetime")

    def lifetime(self, role: str) -> timedelta:
        lifetimes = {
            "root": self.root,
            "targets": self.targets,
            "snapshot": self.snapshot,
            "timestamp": self.timestamp,
        }
        return lifetimes[role]

    def margin(self, role: str) -> timedelta:
        margins = {
            "root": self.root_margin,
            "targets": self.targets_margin,
            "snapshot": self.snapshot_margin,
            "timestamp": self.timestamp_margin,
        }
        return margins[role]

    def expires(self, role: str, now: datetime) -> datetime:
        return now + self.lifetime(role)

    def due(self, signed: Signed, now: datetime) -> bool:
        """True when ``signed`` expires within its role's margin (or has expired)."""
        return signed.expires - now <= self.margin(signed.type)


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- targets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageTarget:
    """One image in the Image repository, with its Uptane custom fields."""

    filename: str
    length: int
    sha256: str
    hardware_identifier: str
    release_counter: int
    custom: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_bytes(
        cls,
        filename: str,
        data: bytes,
        *,
        hardware_identifier: str,
        release_counter: int,
        custom: Mapping[str, Any] | None = None,
    ) -> ImageTarget:
        described = TargetFile.from_data(filename, data, ["sha256"])
        return cls(
            filename,
            described.length,
            described.hashes["sha256"],
            hardware_identifier,
            release_counter,
            dict(custom or {}),
        )

    @classmethod
    def from_target_file(cls, target: TargetFile) -> ImageTarget:
        custom = dict(target.custom or {})
        return cls(
            target.path,
            target.length,
            target.hashes.get("sha256", ""),
            custom.pop(HARDWARE_IDENTIFIER, ""),
            custom.pop(RELEASE_COUNTER, -1),
            custom,
        )

    def to_target_file(self) -> TargetFile:
        check_target_fields(
            self.filename, self.length, self.sha256, self.hardware_identifier, self.release_counter
        )
        check_custom(self.custom, reserved=(HARDWARE_IDENTIFIER, RELEASE_COUNTER))
        custom = {
            HARDWARE_IDENTIFIER: self.hardware_identifier,
            RELEASE_COUNTER: self.release_counter,
            **self.custom,
        }
        return TargetFile(
            self.length, {"sha256": self.sha256}, self.filename, {"custom": copy.deepcopy(custom)}
        )


def check_target_fields(
    filename: str, length: int, sha256: str, hardware_identifier: str, release_counter: int
) -> None:
    """Refuse target descriptions no vehicle could use (shared with the Director)."""
    segments = filename.split("/")
    if not filename or filename.startswith("/") or any(s in ("", ".", "..") for s in segments):
        raise InvalidTarget(f"filename {filename!r}: a relative path without empty or dot parts")
    if "\\" in filename or any(ord(c) < 32 for c in filename):
        raise InvalidTarget(f"filename {filename!r}: no backslashes or control characters")
    if type(length) is not int or length < 0:
        raise InvalidTarget(f"{filename}: length must be a non-negative integer")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise InvalidTarget(f"{filename}: sha256 must be 64 lowercase hex digits")
    if not isinstance(hardware_identifier, str) or not hardware_identifier:
        raise InvalidTarget(f"{filename}: {HARDWARE_IDENTIFIER} is required")
    if type(release_counter) is not int or release_counter < 0:
        raise InvalidTarget(f"{filename}: {RELEASE_COUNTER} must be a non-negative integer")


def check_custom(custom: Mapping[str, Any], *, reserved: Iterable[str]) -> None:
    """Custom data is signed as canonical JSON: strings, integers, booleans, null, lists and
    objects only (canonical JSON has no floats), and it may not shadow the Uptane fields."""
    if not isinstance(custom, Mapping):
        raise InvalidTarget("custom must be an object")
    shadowed = sorted(set(custom) & set(reserved))
    if shadowed:
        raise InvalidTarget(f"custom may not set {shadowed}: they are fields of their own")
    _check_canonical(custom, "custom")


def _check_canonical(value: Any, where: str) -> None:
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        raise InvalidTarget(f"{where}: {value!r} is a float; signed metadata allows integers only")
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_canonical(item, f"{where}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidTarget(f"{where}: object keys must be strings, got {key!r}")
            _check_canonical(item, f"{where}.{key}")
        return
    raise InvalidTarget(f"{where}: {type(value).__name__} cannot be signed as JSON")


def _check_uptane_target(target: TargetFile) -> None:
    custom = target.custom
    if not isinstance(custom, Mapping):
        raise InvalidTarget(f"{target.path}: custom with {HARDWARE_IDENTIFIER} is required")
    check_target_fields(
        target.path,
        target.length,
        target.hashes.get("sha256", ""),
        custom.get(HARDWARE_IDENTIFIER, ""),
        custom.get(RELEASE_COUNTER, -1),
    )
    _check_canonical(dict(custom), "custom")


# --- signing helpers (shared with the Director) -------------------------------------------


def sign_file(data: bytes, signer: Signer) -> bytes:
    """Add ``signer``'s signature to a metadata file and return the file.

    The offline step: each key holder runs it on the file from ``prepare_targets`` (or on the
    output of the previous holder). Existing signatures are kept.
    """
    metadata = _parse(data)
    metadata.sign(signer, append=True)
    return metadata.to_bytes()


def sign_metadata(signed: _SignedT, signers: Iterable[Signer]) -> Metadata[_SignedT]:
    """Wrap ``signed`` in metadata signed by each of ``signers`` (duplicates once)."""
    metadata = Metadata(signed)
    for signer in signers:
        if signer.public_key.keyid not in metadata.signatures:
            metadata.sign(signer, append=True)
    return metadata


def verify_role(root: Root, metadata: Metadata[Any]) -> None:
    """Raise :class:`SignatureThresholdNotMet` unless ``root`` accepts ``metadata``."""
    role = metadata.signed.type
    try:
        root.verify_delegate(role, metadata.signed_bytes, metadata.signatures)
    except UnsignedMetadataError as exc:
        raise SignatureThresholdNotMet(
            f"{role} v{metadata.signed.version} refused by root v{root.version}: {exc}"
        ) from exc


def check_online_keys(root: Root, keys: KeyRing, roles: Iterable[str]) -> None:
    """Refuse to run with online keys that root does not authorize (a stale key directory
    would otherwise publish metadata every vehicle rejects)."""
    for role in roles:
        if not keys.is_online(role):
            continue
        delegated = root.roles[role]
        authorized = {s.public_key.keyid for s in keys.signers(role)} & set(delegated.keyids)
        if len(authorized) < delegated.threshold:
            raise SignatureThresholdNotMet(
                f"the online {role} keys meet {len(authorized)} of the {delegated.threshold}"
                f" signatures root v{root.version} requires"
            )


def bumped(signed: _SignedT, lifetime: timedelta, now: datetime) -> _SignedT:
    """A copy of ``signed`` with the next version and a fresh expiry."""
    copied = type(signed).from_dict(copy.deepcopy(signed.to_dict()))
    copied.version = signed.version + 1
    copied.expires = now + lifetime
    return copied  # type: ignore[return-value]


def snapshot_of(targets_version: int, version: int, expires: datetime) -> Snapshot:
    return Snapshot(
        version=version, expires=expires, meta={"targets.json": MetaFile(targets_version)}
    )


def timestamp_of(snapshot_version: int, version: int, expires: datetime) -> Timestamp:
    return Timestamp(version=version, expires=expires, snapshot_meta=MetaFile(snapshot_version))


def _parse(data: bytes) -> Metadata[Any]:
    try:
        return Metadata.from_bytes(data)
    except DeserializationError as exc:
        raise InvalidMetadata(f"not TUF metadata: {exc}") from exc


@dataclass
class RepositoryState:
    """The current, consistent set of one repository's top-level metadata."""

    root: Metadata[Root]
    timestamp: Metadata[Timestamp]
    snapshot: Metadata[Snapshot]
    targets: Metadata[Targets]


class MetadataFiles:
    """One TUF repository's files in a store: root versions under ``root_prefix``, the other
    roles under ``prefix`` (the Director shares one root among many vehicles)."""

    def __init__(self, store: MetadataStore, prefix: str, root_prefix: str) -> None:
        self.store = store
        self.prefix = prefix
        self.root_prefix = root_prefix

    def path(self, name: str) -> str:
        is_root = name == "root.json" or name.endswith(".root.json")
        return f"{self.root_prefix if is_root else self.prefix}{name}"

    def read(self, name: str) -> bytes | None:
        """The bytes a client asked for by TUF file name, or None."""
        if not is_metadata_name(name):
            return None
        return self.store.read(self.path(name))

    def load(self, name: str, role: type[_SignedT]) -> Metadata[_SignedT] | None:
        data = self.read(name)
        if data is None:
            return None
        metadata: Metadata[_SignedT] = _parse(data)
        if metadata.signed.type != role.type:
            raise InvalidMetadata(f"{self.path(name)} holds {metadata.signed.type}")
        return metadata

    def state(self) -> RepositoryState | None:
        """The current metadata (following timestamp -> snapshot -> targets), or None."""
        root = self.load("root.json", Root)
        timestamp = self.load("timestamp.json", Timestamp)
        if root is None or timestamp is None:
            return None
        snapshot_version = timestamp.signed.snapshot_meta.version
        snapshot = self.load(f"{snapshot_version}.snapshot.json", Snapshot)
        if snapshot is None:
            raise InvalidMetadata(f"{self.prefix}: snapshot v{snapshot_version} is missing")
        targets_version = snapshot.signed.meta["targets.json"].version
        targets = self.load(f"{targets_version}.targets.json", Targets)
        if targets is None:
            raise InvalidMetadata(f"{self.prefix}: targets v{targets_version} is missing")
        return RepositoryState(root, timestamp, snapshot, targets)

    def write(self, *metadata: Metadata[Any]) -> None:
        """Write in the order given; the caller puts ``timestamp`` last."""
        for item in metadata:
            signed = item.signed
            data = item.to_bytes()
            if signed.type == Timestamp.type:
                self.store.write(self.path("timestamp.json"), data)
                continue
            self.store.write(self.path(f"{signed.version}.{signed.type}.json"), data)
            if signed.type == Root.type:
                self.store.write(self.path("root.json"), data)


# --- the Image repository -----------------------------------------------------------------

ONLINE_CHAIN = ("targets", "snapshot", "timestamp")  # the roles whose metadata online keys sign


class ImageRepository:
    """The Image repository in a :class:`MetadataStore`, signing with ``keys``' online keys."""

    ONLINE_ROLES = ("targets", "snapshot", "timestamp")

    def __init__(
        self, store: MetadataStore, keys: KeyRing, expiry: ExpiryPolicy | None = None
    ) -> None:
        self.keys = keys
        self.expiry = expiry or ExpiryPolicy()
        self._files = MetadataFiles(store, IMAGE_PREFIX, IMAGE_PREFIX)
        check_online_keys(self._state().root.signed, keys, self.ONLINE_ROLES)

    @classmethod
    def create(
        cls,
        store: MetadataStore,
        *,
        root_keys: Sequence[Signer],
        root_threshold: int = 1,
        targets_keys: Sequence[Signer],
        targets_threshold: int = 1,
        snapshot_key: Signer,
        timestamp_key: Signer,
        expiry: ExpiryPolicy | None = None,
        targets_online: bool = False,
        now: datetime | None = None,
    ) -> ImageRepository:
        """Write root v1 and empty targets, snapshot and timestamp v1.

        The ceremony has every key at hand; afterwards only snapshot and timestamp (and the
        targets keys when ``targets_online``) stay in the returned repository's key ring.
        """
        files = MetadataFiles(store, IMAGE_PREFIX, IMAGE_PREFIX)
        if files.read("root.json") is not None:
            raise RepositoryExists("the Image repository already exists")
        expiry = expiry or ExpiryPolicy()
        now = now or utc_now()
        root = Root(expires=expiry.expires("root", now))
        delegations = {
            "root": (root_keys, root_threshold),
            "targets": (targets_keys, targets_threshold),
            "snapshot": ([snapshot_key], 1),
            "timestamp": ([timestamp_key], 1),
        }
        for role, (signers, threshold) in delegations.items():
            _delegate(root, role, [s.public_key for s in signers], threshold)
        root_md = sign_metadata(root, root_keys)
        targets_md = sign_metadata(Targets(expires=expiry.expires("targets", now)), targets_keys)
        snapshot_md = sign_metadata(
            snapshot_of(1, 1, expiry.expires("snapshot", now)), [snapshot_key]
        )
        timestamp_md = sign_metadata(
            timestamp_of(1, 1, expiry.expires("timestamp", now)), [timestamp_key]
        )
        for metadata in (root_md, targets_md, snapshot_md, timestamp_md):
            verify_role(root, metadata)
        files.write(targets_md, snapshot_md, root_md, timestamp_md)
        online: dict[str, Signer | Sequence[Signer]] = {
            "snapshot": snapshot_key,
            "timestamp": timestamp_key,
        }
        if targets_online:
            online["targets"] = targets_keys
        return cls(store, KeyRing.of(online), expiry)

    # -- reading --

    def read_metadata(self, name: str) -> bytes | None:
        """Serve a TUF client: ``name`` as ngclient requests it (``timestamp.json``,
        ``<v>.snapshot.json``, ``<v>.targets.json``, ``<v>.root.json``); None means 404."""
        return self._files.read(name)

    def root_bytes(self) -> bytes:
        """The current root: what a vehicle is provisioned with as its trust anchor."""
        data = self._files.read("root.json")
        if data is None:
            raise RepositoryNotInitialized("the Image repository has no root")
        return data

    def targets(self) -> dict[str, ImageTarget]:
        """The published images by filename."""
        targets = self._state().targets.signed.targets
        return {name: ImageTarget.from_target_file(t) for name, t in targets.items()}

    def versions(self) -> dict[str, int]:
        """Current version of each top-level role."""
        state = self._state()
        return {
            "root": state.root.signed.version,
            "targets": state.targets.signed.version,
            "snapshot": state.snapshot.signed.version,
            "timestamp": state.timestamp.signed.version,
        }

    # -- changing the targets --

    def prepare_targets(
        self,
        add: Sequence[ImageTarget] = (),
        *,
        remove: Sequence[str] = (),
        now: datetime | None = None,
    ) -> bytes:
        """The next targets version with ``add`` added and ``remove`` removed, unsigned: a
        file for the targets key holders to :func:`sign_file`."""
        now = now or utc_now()
        current = self._state().targets.signed
        targets = bumped(current, self.expiry.targets, now)
        for filename in remove:
            if targets.targets.pop(filename, None) is None:
                raise InvalidTarget(f"{filename}: not in the Image repository")
        for image in add:
            targets.targets[image.filename] = image.to_target_file()
        _check_immutable(current, targets)
        return Metadata(targets).to_bytes()

    def publish_targets(self, data: bytes, *, now: datetime | None = None) -> int:
        """Publish a signed targets file from :meth:`prepare_targets` and :func:`sign_file`.

        Checks that it is the next version, unexpired, signed by the threshold of targets keys
        that root names, and that its targets are well-formed Uptane targets; then writes it
        with a new snapshot and timestamp. Returns the new targets version.
        """
        now = now or utc_now()
        metadata = _parse(data)
        if not isinstance(metadata.signed, Targets):
            raise InvalidMetadata(f"expected targets metadata, got {metadata.signed.type}")
        state = self._state()
        expected = state.targets.signed.version + 1
        if metadata.signed.version != expected:
            raise MetadataVersionConflict(
                f"targets v{metadata.signed.version} is not the next version (v{expected});"
                " prepare the file again from the current repository"
            )
        if metadata.signed.is_expired(now):
            raise InvalidMetadata(f"targets v{metadata.signed.version} has expired")
        if metadata.signed.delegations is not None:
            raise InvalidMetadata("delegated targets are not supported")
        verify_role(state.root.signed, metadata)
        for target in metadata.signed.targets.values():
            _check_uptane_target(target)
        _check_immutable(state.targets.signed, metadata.signed)
        self._publish(state, now, targets=metadata)
        logger.info("published image targets v%d", metadata.signed.version)
        return metadata.signed.version

    def add_targets(
        self,
        add: Sequence[ImageTarget],
        *,
        remove: Sequence[str] = (),
        now: datetime | None = None,
    ) -> int:
        """Prepare, sign with the online targets keys, and publish in one step."""
        now = now or utc_now()
        signers = self.keys.signers("targets")
        data = self.prepare_targets(add, remove=remove, now=now)
        for signer in signers:
            data = sign_file(data, signer)
        return self.publish_targets(data, now=now)

    # -- keeping it fresh --

    def expiring(self, now: datetime | None = None) -> dict[str, datetime]:
        """Roles whose metadata expires within their re-sign margin, with the expiry."""
        now = now or utc_now()
        state = self._state()
        return {
            m.signed.type: m.signed.expires
            for m in (state.root, state.targets, state.snapshot, state.timestamp)
            if self.expiry.due(m.signed, now)
        }

    def refresh(self, now: datetime | None = None) -> list[str]:
        """Re-sign the online roles that expire within their margin; return the roles
        re-signed (``[]``, ``["timestamp"]``, ``["snapshot", "timestamp"]``, ...). Offline
        roles about to expire are logged: an operator must sign them."""
        now = now or utc_now()
        state = self._state()
        for offline in ("root", "targets"):
            signed = getattr(state, offline).signed
            if self.expiry.due(signed, now) and not self.keys.is_online(offline):
                logger.warning(
                    "image %s v%d expires %s: sign a new version offline",
                    offline,
                    signed.version,
                    signed.expires.isoformat(),
                )
        targets: Metadata[Targets] | None = None
        if self.keys.is_online("targets") and self.expiry.due(state.targets.signed, now):
            targets = sign_metadata(
                bumped(state.targets.signed, self.expiry.targets, now), self.keys.signers("targets")
            )
        return self._publish(state, now, targets=targets, only_if_due=True)

    # -- key rotation --

    def rotate(
        self,
        role: str,
        new_public_keys: Sequence[Key],
        threshold: int,
        signers_old_root: Sequence[Signer],
        signers_new_root: Sequence[Signer],
        *,
        role_signers: Sequence[Signer] | None = None,
        now: datetime | None = None,
    ) -> int:
        """Replace ``role``'s keys and threshold in a new root version; return that version.

        The new root is signed by a threshold of the old root's keys and a threshold of its
        own (TUF root rotation), so clients holding the old root follow it. For a role other
        than root, that role's metadata is re-signed with ``role_signers`` (a threshold of
        the new keys; default: the online signers) and published with the new root; online
        roles then keep signing with ``role_signers``.
        """
        if role not in TOP_LEVEL_ROLES:
            raise ValidationFailed(f"unknown role {role!r}")
        now = now or utc_now()
        state = self._state()
        old_root = state.root.signed
        new_root = bumped(old_root, self.expiry.root, now)
        _delegate(new_root, role, new_public_keys, threshold)
        root_md = sign_metadata(new_root, [*signers_old_root, *signers_new_root])
        result = new_root.get_root_verification_result(
            old_root, root_md.signed_bytes, root_md.signatures
        )
        if not result.verified:
            raise SignatureThresholdNotMet(
                f"root v{new_root.version} needs {result.first.threshold} signatures by root"
                f" v{old_root.version}'s keys and {result.second.threshold} by its own; got"
                f" {len(result.first.signed)} and {len(result.second.signed)}"
            )
        if role == "root":
            self._files.write(root_md)
        else:
            signers = list(role_signers) if role_signers is not None else self.keys.signers(role)
            self._publish(
                state, now, root=root_md, resign_role=role, resign_with=signers, only_if_due=True
            )
            if role_signers is not None and (self.keys.is_online(role) or role != "targets"):
                self.keys.replace(role, role_signers)
        logger.info("image root v%d: %s keys rotated", new_root.version, role)
        return new_root.version

    # -- internals --

    def _state(self) -> RepositoryState:
        state = self._files.state()
        if state is None:
            raise RepositoryNotInitialized("the Image repository has not been created")
        return state

    def _publish(
        self,
        state: RepositoryState,
        now: datetime,
        *,
        targets: Metadata[Targets] | None = None,
        root: Metadata[Root] | None = None,
        resign_role: str | None = None,
        resign_with: Sequence[Signer] = (),
        only_if_due: bool = False,
    ) -> list[str]:
        """Write new targets and/or root, and the snapshot and timestamp versions that follow
        (all verified against the root in force); return the roles written, root excepted.

        ``resign_role`` re-signs that role's current metadata with ``resign_with`` (key
        rotation); ``only_if_due`` re-signs snapshot and timestamp only when they expire
        within their margin or something they point at changed.
        """
        trusted_root = (root or state.root).signed
        signers = {r: resign_with if r == resign_role else () for r in ONLINE_CHAIN}
        if resign_role == "targets" and targets is None:
            targets = sign_metadata(
                bumped(state.targets.signed, self.expiry.targets, now), resign_with
            )
        snapshot: Metadata[Snapshot] | None = None
        if (
            targets is not None
            or resign_role == "snapshot"
            or not only_if_due
            or self.expiry.due(state.snapshot.signed, now)
        ):
            targets_version = (targets or state.targets).signed.version
            snapshot = sign_metadata(
                snapshot_of(
                    targets_version,
                    state.snapshot.signed.version + 1,
                    self.expiry.expires("snapshot", now),
                ),
                signers["snapshot"] or self.keys.signers("snapshot"),
            )
        timestamp: Metadata[Timestamp] | None = None
        if (
            snapshot is not None
            or resign_role == "timestamp"
            or not only_if_due
            or self.expiry.due(state.timestamp.signed, now)
        ):
            snapshot_version = (snapshot or state.snapshot).signed.version
            timestamp = sign_metadata(
                timestamp_of(
                    snapshot_version,
                    state.timestamp.signed.version + 1,
                    self.expiry.expires("timestamp", now),
                ),
                signers["timestamp"] or self.keys.signers("timestamp"),
            )
        written = [m for m in (targets, snapshot, timestamp) if m is not None]
        for metadata in written:
            verify_role(trusted_root, metadata)
        # Versioned files first, then root, then the timestamp that points at them.
        self._files.write(
            *[m for m in (targets, snapshot) if m is not None],
            *([root] if root is not None else []),
            *([timestamp] if timestamp is not None else []),
        )
        return [m.signed.type for m in written]


def _delegate(root: Root, role: str, keys: Sequence[Key], threshold: int) -> None:
    """Make ``keys`` (and only them) the keys of ``role`` with ``threshold``."""
    keyids = {key.keyid for key in keys}
    if not keys or len(keyids) != len(keys):
        raise ValidationFailed(f"{role}: give one or more distinct keys")
    if not 1 <= threshold <= len(keys):
        raise ValidationFailed(f"{role}: threshold {threshold} of {len(keys)} keys")
    for keyid in list(root.roles[role].keyids):
        root.revoke_key(keyid, role)
    for key in keys:
        root.add_key(key, role)
    root.roles[role].threshold = threshold


def _check_immutable(current: Targets, new: Targets) -> None:
    for name, target in new.targets.items():
        published = current.targets.get(name)
        if published is not None and (
            published.length != target.length or published.hashes != target.hashes
        ):
            raise InvalidTarget(f"{name}: already published with other bytes; use a new name")
