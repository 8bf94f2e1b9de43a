"""A directory-based registry of predictive-maintenance model versions.

Layout under the registry root (default ``settings.data_dir / "models"``)::

    ACTIVE                          the active version id (one line), replaced atomically
    versions/<version>/
        metadata.json               version, created_at, feature version and list, training data
                                    (rows, vehicles, sha256, source), config, metrics, and per
                                    model: component, horizon, file + sha256, calibrator,
                                    thresholds, the feature it requires, cross-validated metrics
        <component>-<horizon>d.txt  LightGBM model text, one per (component, horizon)

A version is written to a temporary directory and renamed into place, so a reader never sees
half a version; it is never modified afterwards. ``ACTIVE`` is written to a temporary file and
renamed over the old one (atomic on POSIX), so a running worker that checks
:meth:`ModelRegistry.active_version` (one small file read) sees either the old or the new
version and can reload without a restart (:class:`ActiveModel`).

Loading checks everything it can: missing files, sha256 of every model file, JSON and LightGBM
parse errors, and that the feature list and feature version equal the running code's (a model
trained on other features would silently score garbage). Calibrators are JSON, never pickles.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb

from core.errors import FleetError
from diagnostics.features import FEATURE_NAMES, FEATURE_VERSION
from diagnostics.pdm_model import Calibrator, ComponentModel, ModelSet

FORMAT = 1
ACTIVE = "ACTIVE"
VERSIONS = "versions"
METADATA = "metadata.json"
TMP_PREFIX = ".tmp-"


class ModelRegistryError(FleetError):
    status_code = 503
    code = "model_registry_error"


class NoActiveModel(ModelRegistryError):
    code = "no_active_model"


class ModelVersionNotFound(ModelRegistryError):
    status_code = 404
    code = "model_version_not_found"


class ModelArtifactCorrupt(ModelRegistryError):
    code = "model_artifact_corrupt"


class FeatureMismatch(ModelRegistryError):
    code = "model_feature_mismatch"


@dataclass(frozen=True)
class VersionInfo:
    version: str
    created_at: str
    active: bool
    models: int
    training_sha256: str


def default_registry_dir() -> Path:
    from core.config import get_settings

    settings = get_settings()
    return settings.pdm_registry_dir or Path(settings.data_dir) / "models"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


class ModelRegistry:
    """Versions of :class:`ModelSet` on disk (see module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def versions_dir(self) -> Path:
        return self.root / VERSIONS

    # -- writing -----------------------------------------------------------------------------
    def publish(self, models: ModelSet, *, activate: bool = False) -> str:
        """Store ``models`` as a new version (and make it active); returns the version id."""
        if not models.models:
            raise ModelRegistryError("refusing to publish a model set without models")
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        texts = {
            f"{m.component}-{m.horizon_days}d.txt": m.booster.model_to_string().encode()
            for m in models.models
        }
        content = _sha256(b"".join(_sha256(t).encode() for t in texts.values()))
        created = dt.datetime.now(dt.UTC)
        version = f"{created:%Y%m%dT%H%M%SZ}-{content[:8]}"
        while (self.versions_dir / version).exists():
            version = f"{created:%Y%m%dT%H%M%SZ}-{content[:8]}-{uuid.uuid4().hex[:4]}"
        metadata = {
            "format": FORMAT,
            "version": version,
            "created_at": created.isoformat(),
            "feature_version": models.feature_version,
            "features": list(models.feature_names),
            "components": sorted({m.component for m in models.models}),
            "horizons_days": sorted({m.horizon_days for m in models.models}),
            "training_data": models.training,
            "config": models.config,
            "metrics": models.metrics,
            "models": [
                {
                    "component": m.component,
                    "horizon_days": m.horizon_days,
                    "file": name,
                    "sha256": _sha256(texts[name]),
                    "calibration": m.calibrator.to_dict(),
                    "threshold_high": m.threshold_high,
                    "threshold_low": m.threshold_low,
                    "requires": m.requires,
                    "metrics": m.metrics,
                }
                for m, name in zip(models.models, texts, strict=True)
            ],
        }
        staging = self.versions_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            for name, text in texts.items():
                (staging / name).write_bytes(text)
            (staging / METADATA).write_text(json.dumps(metadata, indent=2, sort_keys=True))
            os.rename(staging, self.versions_dir / version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        models.version = version
        if activate:
            self.activate(version)
        return version

    def activate(self, version: str) -> None:
        """Make ``version`` the active one (atomic pointer switch)."""
        self.metadata(version)  # exists and is readable
        self.root.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.root / ACTIVE, (version + "\n").encode())

    # -- reading -----------------------------------------------------------------------------
    def active_version(self) -> str | None:
        """The active version id, or None. Cheap (one small file): poll it."""
        try:
            text = (self.root / ACTIVE).read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def versions(self) -> list[VersionInfo]:
        """Every readable version, oldest first."""
        if not self.versions_dir.exists():
            return []
        active = self.active_version()
        out = []
        for path in sorted(self.versions_dir.iterdir()):
            if path.name.startswith(TMP_PREFIX) or not path.is_dir():
                continue
            try:
                meta = self.metadata(path.name)
            except ModelRegistryError:
                continue
            out.append(
                VersionInfo(
                    path.name,
                    meta.get("created_at", ""),
                    path.name == active,
                    len(meta.get("models", [])),
                    meta.get("training_data", {}).get("sha256", ""),
                )
            )
        return sorted(out, key=lambda v: (v.created_at, v.version))

    def metadata(self, version: str) -> dict[str, Any]:
        if not version or "/" in version or version.startswith("."):
            raise ModelVersionNotFound(f"invalid model version {version!r}")
        path = self.versions_dir / version / METADATA
        if not path.parent.is_dir():
            raise ModelVersionNotFound(f"model version {version} does not exist in {self.root}")
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ModelArtifactCorrupt(f"{version}: {METADATA} is missing") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelArtifactCorrupt(f"{version}: {METADATA} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ModelArtifactCorrupt(f"{version}: unknown metadata format")
        return data

    def load(self, version: str) -> ModelSet:
        """Load and verify ``version`` (see module docstring for what is checked)."""
        meta = self.metadata(version)
        features = tuple(meta.get("features", ()))
        if meta.get("feature_version") != FEATURE_VERSION or features != FEATURE_NAMES:
            missing = sorted(set(FEATURE_NAMES) - set(features))
            extra = sorted(set(features) - set(FEATURE_NAMES))
            raise FeatureMismatch(
                f"{version} was trained on features {meta.get('feature_version')!r} "
                f"({len(features)} names), this code computes {FEATURE_VERSION!r} "
                f"({len(FEATURE_NAMES)}); missing {missing[:5]}, unknown {extra[:5]}"
            )
        models = []
        for entry in meta.get("models", []):
            models.append(self._load_model(version, entry, features))
        if not models:
            raise ModelArtifactCorrupt(f"{version}: no models listed")
        return ModelSet(
            models=models,
            feature_names=features,
            feature_version=meta["feature_version"],
            version=version,
            created_at=meta.get("created_at", ""),
            training=meta.get("training_data", {}),
            config=meta.get("config", {}),
            metrics=meta.get("metrics", {}),
        )

    def _load_model(
        self, version: str, entry: dict[str, Any], features: tuple[str, ...]
    ) -> ComponentModel:
        try:
            path = self.versions_dir / version / entry["file"]
            expected = entry["sha256"]
            calibrator = Calibrator.from_dict(entry["calibration"])
            component, horizon = str(entry["component"]), int(entry["horizon_days"])
            high, low = float(entry["threshold_high"]), float(entry["threshold_low"])
            requires = str(entry["requires"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelArtifactCorrupt(f"{version}: bad model entry {entry!r}: {exc}") from exc
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ModelArtifactCorrupt(f"{version}: model file {path.name} is missing") from exc
        if _sha256(data) != expected:
            raise ModelArtifactCorrupt(f"{version}: {path.name} does not match its sha256")
        try:
            booster = lgb.Booster(model_str=data.decode())
        except (lgb.basic.LightGBMError, UnicodeDecodeError) as exc:
            raise ModelArtifactCorrupt(f"{version}: {path.name} is not a LightGBM model") from exc
        if tuple(booster.feature_name()) != features:
            raise FeatureMismatch(f"{version}: {path.name} has another feature list")
        if requires not in features:
            raise ModelArtifactCorrupt(f"{version}: {path.name} requires unknown {requires!r}")
        return ComponentModel(
            component=component,
            horizon_days=horizon,
            booster=booster,
            calibrator=calibrator,
            threshold_high=high,
            threshold_low=low,
            requires=requires,
            metrics=entry.get("metrics", {}),
        )

    def load_active(self) -> ModelSet:
        version = self.active_version()
        if version is None:
            raise NoActiveModel(f"no active model version in {self.root} (run `fleet pdm train`)")
        return self.load(version)


class ActiveModel:
    """The active model set for a long-running worker: :meth:`get` re-reads the ``ACTIVE``
    pointer at most every ``check_every_s`` seconds and loads a new version when it changed.
    A version that fails to load is logged and skipped; the worker keeps the one it has."""

    def __init__(self, registry: ModelRegistry, *, check_every_s: float = 30.0) -> None:
        self.registry = registry
        self.check_every_s = check_every_s
        self._models: ModelSet | None = None
        self._checked = -float("inf")
        self._failed: str | None = None
        self._lock = threading.Lock()

    def get(self) -> ModelSet:
        with self._lock:
            now = time.monotonic()
            if self._models is None or now - self._checked >= self.check_every_s:
                self._checked = now
                self._refresh()
            if self._models is None:
                raise NoActiveModel(f"no loadable active model in {self.registry.root}")
            return self._models

    def _refresh(self) -> None:
        import logging

        version = self.registry.active_version()
        current = self._models.version if self._models is not None else None
        if version is None or version == current or version == self._failed:
            return
        try:
            self._models = self.registry.load(version)
            self._failed = None
            logging.getLogger("diagnostics.pdm").info("loaded model version %s", version)
        except ModelRegistryError as exc:
            self._failed = version
            if self._models is None:
                raise
            logging.getLogger("diagnostics.pdm").error(
                "model version %s not loaded, keeping %s: %s", version, current, exc
            )
