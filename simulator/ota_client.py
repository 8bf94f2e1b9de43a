"""A vehicle's Uptane client: full verification of the Director and the Image repository.

Each :meth:`UptaneClient.check` runs two ``tuf.ngclient.Updater`` refreshes from the
vehicle's provisioned roots (the cache keeps any newer roots they rotated to):

1. the **Director** at ``<director_url>/<vin>/``: what this vehicle must install, one target
   per ECU, signed by the Director's online keys;
2. the **Image repository** at ``<image_repo_url>/``: what software exists, signed by
   offline keys, so a compromised Director alone cannot make a vehicle install anything.

Then, for every Director target (Uptane "full verification"): the ECU must be one of this
vehicle's; the Director's and the Image repository's ``hardware_identifier`` must both be
the ECU's; the Image repository must list the same file name with the same length and
hashes; its ``release_counter`` must not be lower than the ECU's installed one and must
agree with the Director's. Any failure aborts the whole check with an :class:`UptaneError`
whose ``code`` is stable and goes into the vehicle's report. Downloads go through the Image
repository's updater, which checks length and hashes before a byte is kept.

Targets are downloaded from ``<image_repo_url>/targets/<sha256>.<filename>`` (consistent
snapshots: the hash prefix makes every image's URL immutable).

This module talks to the backend only through TUF metadata; it imports nothing from ``ota``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, TargetFile, Targets
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

ECU_IDENTIFIER = "ecu_identifier"
HARDWARE_IDENTIFIER = "hardware_identifier"
RELEASE_COUNTER = "release_counter"


class UptaneError(Exception):
    """Verification failed; ``code`` is one of :attr:`CODES`."""

    TAMPERED = "tampered"  # length or hashes differ (image bytes, or Director vs Image repo)
    ROLLBACK = "rollback"  # release counter lower than the installed image's
    EXPIRED = "expired"  # freeze attack: expired metadata
    MIX_AND_MATCH = "mix_and_match"  # metadata versions inconsistent or older than trusted
    WRONG_HARDWARE = "wrong_hardware"  # image for another hardware identifier
    UNKNOWN_IMAGE = "unknown_image"  # the Director lists an image the Image repo lacks
    BAD_SIGNATURE = "bad_signature"  # below the threshold of valid signatures
    UNKNOWN_ECU = "unknown_ecu"  # the Director addresses an ECU this vehicle lacks
    INVALID_METADATA = "invalid_metadata"  # malformed or missing Uptane fields
    UNAVAILABLE = "unavailable"  # a repository could not be reached
    CODES = frozenset(
        {
            TAMPERED,
            ROLLBACK,
            EXPIRED,
            MIX_AND_MATCH,
            WRONG_HARDWARE,
            UNKNOWN_IMAGE,
            BAD_SIGNATURE,
            UNKNOWN_ECU,
            INVALID_METADATA,
            UNAVAILABLE,
        }
    )

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass
class EcuState:
    """What one ECU runs now."""

    hardware_id: str
    image: str | None = None
    release_counter: int = 0


@dataclass(frozen=True)
class VerifiedUpdate:
    """An image one ECU must install, verified against both repositories."""

    ecu_identifier: str
    filename: str
    length: int
    sha256: str
    hardware_identifier: str
    release_counter: int
    custom: Mapping[str, Any]  # the Director's signed extras: preconditions, mode, deadline
    image_custom: Mapping[str, Any]  # the Image repository's extras: dependencies, ...
    target: TargetFile = field(repr=False, compare=False)  # the Image repository's entry

    @property
    def preconditions(self) -> Mapping[str, Any]:
        preconditions = self.custom.get("preconditions") or {}
        return preconditions if isinstance(preconditions, Mapping) else {"invalid": True}

    def unmet_preconditions(self, *, soc_pct: float | None, parked: bool) -> list[str]:
        """The preconditions the vehicle's state does not meet. A precondition this client
        does not know counts as unmet: a vehicle installs only what it can check."""
        unmet = []
        for name, required in self.preconditions.items():
            if name == "min_soc_pct":
                if soc_pct is None or soc_pct < required:
                    unmet.append(name)
            elif name == "parked":
                if required and not parked:
                    unmet.append(name)
            else:
                unmet.append(name)
        return unmet


class StoreFetcher(FetcherInterface):
    """Serve ngclient from functions instead of HTTP: ``routes`` maps a URL prefix to a
    function of the rest of the URL returning the file or None (404). The longest matching
    prefix wins."""

    def __init__(self, routes: Mapping[str, Callable[[str], bytes | None]]) -> None:
        self._routes = sorted(routes.items(), key=lambda route: len(route[0]), reverse=True)

    def _fetch(self, url: str) -> Iterator[bytes]:
        for prefix, read in self._routes:
            if url.startswith(prefix):
                data = read(unquote(url[len(prefix) :]))
                if data is not None:
                    return iter([data])
                break
        raise tuf_errors.DownloadHTTPError(f"{url} not found", 404)


class UptaneClient:
    """One vehicle's Uptane primary: :meth:`check`, then :meth:`download` each update."""

    def __init__(
        self,
        vin: str,
        ecus: dict[str, EcuState],
        *,
        director_url: str,
        image_repo_url: str,
        director_root: bytes,
        image_root: bytes,
        cache_dir: Path,
        fetcher: FetcherInterface | None = None,
    ) -> None:
        self.vin = vin
        self.ecus = ecus
        self._director_url = f"{director_url.rstrip('/')}/{vin}/"
        self._image_url = f"{image_repo_url.rstrip('/')}/"
        self._director_root = director_root
        self._image_root = image_root
        self._cache_dir = cache_dir
        self._fetcher = fetcher
        self._image: Updater | None = None

    def check(self) -> list[VerifiedUpdate]:
        """Refresh and verify both repositories; return what this vehicle must install
        (ECUs that already run the assigned image are left out). Raises UptaneError."""
        director = self._updater("director", self._director_url, self._director_root)
        with _verifying("director"):
            director.refresh()
        assigned = self._trusted_targets("director")
        image = self._updater("image", self._image_url, self._image_root)
        with _verifying("image"):
            image.refresh()
        updates = []
        seen_ecus: set[object] = set()
        for target in assigned.values():
            ecu_id = _custom(target, "director").get(ECU_IDENTIFIER)
            if ecu_id in seen_ecus:
                raise UptaneError(
                    UptaneError.INVALID_METADATA, f"director: ECU {ecu_id!r} is assigned twice"
                )
            seen_ecus.add(ecu_id)
            update = self._verify(target, image)
            if update is not None:
                updates.append(update)
        self._image = image
        return updates

    def download(self, update: VerifiedUpdate) -> bytes:
        """The image's bytes, fetched through the Image repository's updater (length and
        hashes verified; a verified cached copy is reused)."""
        if self._image is None:
            raise RuntimeError("call check() before download()")
        cached = self._image.find_cached_target(update.target)
        if cached is None:
            with _verifying("image"):
                cached = self._image.download_target(update.target)
        return Path(cached).read_bytes()

    def installed(self, update: VerifiedUpdate) -> None:
        """Record that ``update`` now runs on its ECU (after a simulated install)."""
        ecu = self.ecus[update.ecu_identifier]
        ecu.image = update.filename
        ecu.release_counter = update.release_counter

    def version_manifest(self) -> dict[str, Any]:
        """What each ECU runs, as the vehicle reports it on check-in."""
        return {
            "vin": self.vin,
            "ecus": {
                ecu_id: {
                    HARDWARE_IDENTIFIER: ecu.hardware_id,
                    "image": ecu.image,
                    RELEASE_COUNTER: ecu.release_counter,
                }
                for ecu_id, ecu in self.ecus.items()
            },
        }

    # -- internals --

    def _updater(self, repository: str, url: str, root: bytes) -> Updater:
        metadata_dir = self._cache_dir / repository
        metadata_dir.mkdir(parents=True, exist_ok=True)
        target_base_url = f"{url}targets/" if repository == "image" else None
        return Updater(
            str(metadata_dir),
            url,
            target_dir=str(self._cache_dir / "targets"),
            target_base_url=target_base_url,
            fetcher=self._fetcher,
            bootstrap=root,
        )

    def _trusted_targets(self, repository: str) -> dict[str, TargetFile]:
        # ngclient has no API to list all targets (python-tuf issue 1995). After a successful
        # refresh(), the top-level targets.json in its metadata directory is exactly the
        # verified copy: ngclient writes it only after verification, or has just verified it.
        data = (self._cache_dir / repository / "targets.json").read_bytes()
        return dict(Metadata[Targets].from_bytes(data).signed.targets)

    def _verify(self, director_target: TargetFile, image: Updater) -> VerifiedUpdate | None:
        name = director_target.path
        custom = _custom(director_target, "director")
        ecu_id = custom.get(ECU_IDENTIFIER)
        ecu = self.ecus.get(ecu_id) if isinstance(ecu_id, str) else None
        if ecu is None or not isinstance(ecu_id, str):
            raise UptaneError(
                UptaneError.UNKNOWN_ECU, f"{name}: this vehicle has no ECU {ecu_id!r}"
            )
        if custom.get(HARDWARE_IDENTIFIER) != ecu.hardware_id:
            raise UptaneError(
                UptaneError.WRONG_HARDWARE,
                f"{name}: the Director names hardware {custom.get(HARDWARE_IDENTIFIER)!r},"
                f" ECU {ecu_id} is {ecu.hardware_id!r}",
            )
        with _verifying("image"):
            image_target = image.get_targetinfo(name)
        if image_target is None:
            raise UptaneError(UptaneError.UNKNOWN_IMAGE, f"{name}: not in the Image repository")
        if image_target.length != director_target.length or not _same_hashes(
            image_target.hashes, director_target.hashes
        ):
            raise UptaneError(
                UptaneError.TAMPERED,
                f"{name}: length or hashes differ between the Director and the Image repository",
            )
        image_custom = _custom(image_target, "image")
        if image_custom.get(HARDWARE_IDENTIFIER) != ecu.hardware_id:
            raise UptaneError(
                UptaneError.WRONG_HARDWARE,
                f"{name} is for hardware {image_custom.get(HARDWARE_IDENTIFIER)!r},"
                f" ECU {ecu_id} is {ecu.hardware_id!r}",
            )
        release_counter = image_custom.get(RELEASE_COUNTER)
        if type(release_counter) is not int or type(custom.get(RELEASE_COUNTER)) is not int:
            raise UptaneError(UptaneError.INVALID_METADATA, f"{name}: release_counter missing")
        if release_counter < ecu.release_counter:
            raise UptaneError(
                UptaneError.ROLLBACK,
                f"{name} has release counter {release_counter}, ECU {ecu_id} runs"
                f" {ecu.release_counter}",
            )
        if custom[RELEASE_COUNTER] != release_counter:
            raise UptaneError(
                UptaneError.TAMPERED,
                f"{name}: the Director's release counter {custom[RELEASE_COUNTER]} differs from"
                f" the Image repository's {release_counter}",
            )
        if ecu.image == name and ecu.release_counter == release_counter:
            return None
        return VerifiedUpdate(
            ecu_identifier=ecu_id,
            filename=name,
            length=image_target.length,
            sha256=image_target.hashes.get("sha256", ""),
            hardware_identifier=ecu.hardware_id,
            release_counter=release_counter,
            custom={k: v for k, v in custom.items() if k not in _UPTANE_FIELDS},
            image_custom={k: v for k, v in image_custom.items() if k not in _UPTANE_FIELDS},
            target=image_target,
        )


_UPTANE_FIELDS = frozenset({ECU_IDENTIFIER, HARDWARE_IDENTIFIER, RELEASE_COUNTER})


def _custom(target: TargetFile, repository: str) -> Mapping[str, Any]:
    custom = target.custom
    if not isinstance(custom, Mapping):
        raise UptaneError(
            UptaneError.INVALID_METADATA, f"{repository}: {target.path} has no Uptane custom"
        )
    return custom


def _same_hashes(first: Mapping[str, str], second: Mapping[str, str]) -> bool:
    common = set(first) & set(second)
    return bool(common) and all(first[algorithm] == second[algorithm] for algorithm in common)


@contextlib.contextmanager
def _verifying(repository: str) -> Iterator[None]:
    """Turn python-tuf's exceptions into UptaneError codes."""
    try:
        yield
    except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
        raise UptaneError(_code(exc), f"{repository}: {exc}") from exc


def _code(exc: Exception) -> str:
    match exc:
        case tuf_errors.ExpiredMetadataError():
            return UptaneError.EXPIRED
        case tuf_errors.UnsignedMetadataError():
            return UptaneError.BAD_SIGNATURE
        case tuf_errors.BadVersionNumberError():
            return UptaneError.MIX_AND_MATCH
        case tuf_errors.LengthOrHashMismatchError() | tuf_errors.DownloadLengthMismatchError():
            return UptaneError.TAMPERED
        case tuf_errors.DownloadError():
            return UptaneError.UNAVAILABLE
        case _:
            return UptaneError.INVALID_METADATA
