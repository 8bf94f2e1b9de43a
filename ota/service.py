"""Rules of OTA that touch the database and the repositories: publishing images in the Image
repository (online, or through the offline targets-signing steps), keeping metadata fresh and
key rotation. Nothing here commits; callers own the transaction. Every security-relevant step
writes an audit event in the same transaction."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlmodel import Session, col, select

from core import audit
from core.config import Settings
from core.errors import Conflict
from ota import repos
from ota.images import target_paths
from ota.models import SoftwareImage, TufFile
from ota.tuf_repo import ImageTarget

log = logging.getLogger(__name__)

PENDING_TARGETS = "pending/image-targets.json"
"""The unsigned (or partly signed) next targets version while the targets key is offline."""


def image_targets(image: SoftwareImage) -> list[ImageTarget]:
    """The image's entries in the Image repository: one per hardware id, with Uptane's
    ``hardware_identifier`` and ``release_counter`` and our name, version and dependencies."""
    return [
        ImageTarget(
            filename=path,
            length=image.length,
            sha256=image.sha256,
            hardware_identifier=hw,
            release_counter=image.release_counter,
            custom={
                "name": image.name,
                "version": image.version,
                "dependencies": list(image.dependencies),
            },
        )
        for hw, path in zip(image.hardware_ids, target_paths(image), strict=True)
    ]


def publish_image(
    session: Session, settings: Settings, image: SoftwareImage, *, actor: str
) -> None:
    """List the image in the Image repository now when the targets key is online; otherwise
    it waits for ``fleet ota targets prepare / sign / publish``."""
    repository = repos.image_repository(session, settings)
    audit.record(
        session,
        actor=actor,
        action="image.upload",
        subject=f"image:{image.id}",
        details={
            "name": image.name,
            "version": image.version,
            "sha256": image.sha256,
            "hardware_ids": image.hardware_ids,
        },
    )
    if not repository.keys.is_online("targets"):
        log.info("image %s %s waits for offline targets signing", image.name, image.version)
        return
    image.targets_version = repository.add_targets(image_targets(image))
    session.add(image)
    session.flush()


def unpublished_images(session: Session) -> list[SoftwareImage]:
    query = select(SoftwareImage).where(col(SoftwareImage.targets_version).is_(None))
    return list(session.exec(query.order_by(col(SoftwareImage.created_at))))


@dataclass(frozen=True)
class PendingTargets:
    data: bytes
    images: int


def prepare_pending_targets(session: Session, settings: Settings) -> PendingTargets:
    """The next targets version listing every unpublished image, unsigned, kept in the
    database for the key holders to fetch, sign and publish."""
    waiting = unpublished_images(session)
    if not waiting:
        raise Conflict("every image is published; there is nothing to sign", code="nothing_to_sign")
    repository = repos.image_repository(session, settings)
    data = repository.prepare_targets([t for image in waiting for t in image_targets(image)])
    repos.DbMetadataStore(session).write(PENDING_TARGETS, data)
    return PendingTargets(data, len(waiting))


def pending_targets(session: Session) -> bytes | None:
    row = session.get(TufFile, PENDING_TARGETS, populate_existing=True)
    return None if row is None else bytes(row.data)


def publish_pending_targets(
    session: Session, settings: Settings, data: bytes, *, actor: str
) -> int:
    """Publish a signed targets file (threshold checked against root); the images it lists
    become published. Returns the targets version."""
    repository = repos.image_repository(session, settings)
    version = repository.publish_targets(data)
    listed = set(repository.targets())
    for image in unpublished_images(session):
        if set(target_paths(image)) <= listed:
            image.targets_version = version
            session.add(image)
    row = session.get(TufFile, PENDING_TARGETS)
    if row is not None:
        session.delete(row)
    audit.record(
        session,
        actor=actor,
        action="targets.publish",
        subject="image-repository",
        details={"targets_version": version},
    )
    session.flush()
    return version


def refresh_metadata(session: Session, settings: Settings, vins: list[str]) -> dict[str, object]:
    """Re-sign what expires soon: the Image repository's snapshot and timestamp and the
    Director's per-vehicle timestamps (the job ``fleet ota refresh`` and the worker run)."""
    image = repos.image_repository(session, settings).refresh()
    director = repos.director(session, settings).refresh(vins)
    return {"image": image, "director": {vin: roles for vin, roles in director.items() if roles}}
