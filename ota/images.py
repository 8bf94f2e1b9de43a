"""Software images: upload (streamed into the object store, sha256 and length computed on the
way), the catalog, and what the Image repository publishes for each."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from pydantic import Field as PydanticField
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core.db import write_lock
from core.errors import Conflict, NotFound, ValidationFailed
from ota.models import SoftwareImage
from ota.store import StoredObject

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
HARDWARE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ImageRead(BaseModel):
    id: uuid.UUID
    name: str
    version: str
    release_counter: int
    hardware_ids: list[str]
    dependencies: list[dict[str, Any]]
    sha256: str
    length: int
    filename: str
    target_paths: list[str] = PydanticField(
        description="The image's targets in the Image repository, one per hardware id."
    )
    uploaded_by: str
    created_at: datetime


@dataclass(frozen=True)
class ImageMeta:
    name: str
    version: str
    release_counter: int
    hardware_ids: list[str]
    dependencies: list[dict[str, Any]]


def parse_meta(
    name: str,
    version: str,
    release_counter: int,
    hardware_ids: Sequence[str],
    dependencies: Sequence[str],
) -> ImageMeta:
    """Validate upload parameters; every problem is named (422)."""
    errors: list[dict[str, Any]] = []

    def bad(field: str, msg: str) -> None:
        errors.append({"loc": ["query", field], "msg": msg, "type": "value_error"})

    if not NAME_RE.match(name):
        bad(
            "name",
            "1-100 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    if not VERSION_RE.match(version):
        bad("version", "1-64 letters, digits, '.', '+', '_' or '-'")
    if not 0 <= release_counter < 2**31:
        bad("release_counter", "must be between 0 and 2147483647")
    if not hardware_ids:
        bad("hardware_id", "name at least one ECU hardware id the image fits")
    for hw in hardware_ids:
        if not HARDWARE_RE.match(hw):
            bad("hardware_id", f"{hw!r} is not a hardware id (letters, digits, '.', '_', '-')")
    parsed_dependencies = []
    for dependency in dependencies:
        hw, sep, min_version = dependency.partition(":")
        if not sep or not HARDWARE_RE.match(hw) or not VERSION_RE.match(min_version):
            bad("dependency", f"{dependency!r}: write HARDWARE_ID:MIN_VERSION, e.g. MCU-HW-1:2.0")
            continue
        parsed_dependencies.append({"hardware_id": hw, "min_version": min_version})
    if errors:
        raise ValidationFailed(errors)
    return ImageMeta(
        name, version, release_counter, list(dict.fromkeys(hardware_ids)), parsed_dependencies
    )


def filename_of(meta: ImageMeta) -> str:
    return f"{meta.name}-{meta.version}.bin"


def target_paths(image: SoftwareImage) -> list[str]:
    """Target names in the Image repository: one per hardware id (Uptane targets carry one
    ``hardware_identifier`` each)."""
    return [f"{hw}/{image.filename}" for hw in image.hardware_ids]


def refuse_duplicate(session: Session, meta: ImageMeta) -> None:
    existing = session.exec(
        select(SoftwareImage).where(
            SoftwareImage.name == meta.name, SoftwareImage.version == meta.version
        )
    ).first()
    if existing is not None:
        raise Conflict(f"image {meta.name} {meta.version} exists already (id {existing.id})")


def add_image(
    session: Session, meta: ImageMeta, stored: StoredObject, *, uploaded_by: str
) -> SoftwareImage:
    refuse_duplicate(session, meta)
    image = SoftwareImage(
        name=meta.name,
        version=meta.version,
        release_counter=meta.release_counter,
        hardware_ids=meta.hardware_ids,
        dependencies=meta.dependencies,
        sha256=stored.sha256,
        length=stored.length,
        storage_key=stored.key,
        filename=filename_of(meta),
        uploaded_by=uploaded_by,
    )
    write_lock(session)  # SQLite: the savepoint nests in this transaction
    try:
        with session.begin_nested():
            session.add(image)
            session.flush()
    except IntegrityError:  # a concurrent upload of the same name and version won
        raise Conflict(f"image {meta.name} {meta.version} exists already") from None
    return image


def get_image(session: Session, image_id: uuid.UUID) -> SoftwareImage:
    image = session.get(SoftwareImage, image_id)
    if image is None:
        raise NotFound(f"no software image with id {image_id}")
    return image


def image_by_target(session: Session, sha256: str, filename: str) -> SoftwareImage | None:
    """The image behind a target file name (the same bytes may be several images)."""
    query = select(SoftwareImage).where(
        SoftwareImage.sha256 == sha256, SoftwareImage.filename == filename
    )
    return session.exec(query).first()


def list_images(
    session: Session, *, name: str | None = None, limit: int = 100, offset: int = 0
) -> list[SoftwareImage]:
    query = select(SoftwareImage).order_by(col(SoftwareImage.created_at).desc())
    if name is not None:
        query = query.where(SoftwareImage.name == name)
    return list(session.exec(query.limit(limit).offset(offset)))


def image_read(image: SoftwareImage) -> ImageRead:
    return ImageRead(
        id=image.id,
        name=image.name,
        version=image.version,
        release_counter=image.release_counter,
        hardware_ids=list(image.hardware_ids),
        dependencies=list(image.dependencies),
        sha256=image.sha256,
        length=image.length,
        filename=image.filename,
        target_paths=target_paths(image),
        uploaded_by=image.uploaded_by,
        created_at=image.created_at,
    )
