"""``fleet ota ...``: create the repositories and their keys, upload images, the offline
targets-signing steps, key rotation, re-signing, campaigns; ``fleet audit ...``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.auth.cli import cli_session, fail

ota_app = typer.Typer(help="Over-the-air updates (docs/ota.md).", no_args_is_help=True)
targets_app = typer.Typer(
    help="Offline signing of the Image repository's targets.", no_args_is_help=True
)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
ota_app.add_typer(targets_app, name="targets")
stdout = Console()
stderr = Console(stderr=True)


@ota_app.command("init")
def init(
    root_keys: Annotated[int, typer.Option(min=1, max=15, help="Root keys to generate.")] = 3,
    root_threshold: Annotated[int, typer.Option(min=1, help="Root signatures required.")] = 2,
    offline_targets: Annotated[
        bool, typer.Option(help="Keep the targets key offline (production).")
    ] = False,
) -> None:
    """Generate the keys and create the Image repository and the Director (root v1 each)."""
    from core.config import get_settings
    from ota import repos

    settings = get_settings()
    if root_threshold > root_keys:
        fail("--root-threshold cannot exceed --root-keys")
    with cli_session() as session:
        if repos.initialized(session):
            fail("the OTA repositories exist already in this database")
        try:
            result = repos.init_repositories(
                session,
                settings,
                root_keys=root_keys,
                root_threshold=root_threshold,
                offline_targets=offline_targets,
            )
        except FileExistsError as exc:
            fail(f"a key file exists already ({exc.filename}); refusing to overwrite keys")
    stderr.print(f"Created the Image repository and the Director; keys in {result.keys_dir}.")
    stderr.print(
        "[bold]Move these offline keys off this host[/] (they sign root"
        f"{'' if result.targets_online else ' and targets'}):"
    )
    for path in result.offline:
        typer.echo(str(path))  # one per line, unwrapped: scripts read these


@ota_app.command("upload")
def upload(
    file: Annotated[Path, typer.Argument(help="The image file.")],
    name: Annotated[str, typer.Option(help="Image name, e.g. bms-firmware.")],
    version: Annotated[str, typer.Option(help="Version, e.g. 4.3.0.")],
    release_counter: Annotated[int, typer.Option(min=0, help="Anti-rollback counter.")],
    hardware_id: Annotated[list[str], typer.Option(help="ECU hardware id it fits; repeat.")],
    dependency: Annotated[
        list[str] | None, typer.Option(help="HARDWARE_ID:MIN_VERSION; repeat.")
    ] = None,
) -> None:
    """Upload an image (as the API does) and publish it when the targets key is online."""
    from core.config import get_settings
    from ota import images, service
    from ota.store import ObjectStore

    settings = get_settings()
    if not file.is_file():
        fail(f"cannot read {file}")
    with cli_session() as session:
        meta = images.parse_meta(name, version, release_counter, hardware_id, dependency or [])
        images.refuse_duplicate(session, meta)

    async def chunks() -> AsyncIterator[bytes]:
        with file.open("rb") as src:
            while chunk := src.read(1 << 20):
                yield chunk

    store = ObjectStore(settings.ota_store_location)
    stored = asyncio.run(store.put_stream(chunks(), max_bytes=settings.ota_max_image_bytes))
    with cli_session() as session:
        image = images.add_image(session, meta, stored, uploaded_by="cli")
        service.publish_image(session, settings, image, actor="cli")
        read = images.image_read(image)
    published = (
        f"targets v{image.targets_version}"
        if image.targets_version
        else ("waiting for `fleet ota targets prepare/sign/publish`")
    )
    stderr.print(f"Uploaded {read.name} {read.version} ({read.length} bytes, {published}).")
    typer.echo(read.model_dump_json())


@targets_app.command("prepare")
def targets_prepare(out: Annotated[Path, typer.Argument(help="Where to write the file.")]) -> None:
    """Write the next targets version (every unpublished image), unsigned, for the key
    holders."""
    from core.config import get_settings
    from ota import service

    with cli_session() as session:
        pending = service.prepare_pending_targets(session, get_settings())
    out.write_bytes(pending.data)
    stderr.print(
        f"Wrote {out} listing {pending.images} new image(s); sign it with "
        "`fleet ota targets sign` on the machine that holds the targets key."
    )


@targets_app.command("sign")
def targets_sign(
    file: Annotated[Path, typer.Argument(help="Targets file from `prepare` (signed in place).")],
    key: Annotated[Path, typer.Option(help="The targets private key (PEM).")],
) -> None:
    """Add one signature (works offline: no database, no network)."""
    from ota.keys import load_signer
    from ota.tuf_repo import sign_file

    try:
        file.write_bytes(sign_file(file.read_bytes(), load_signer(key)))
    except (OSError, ValueError) as exc:
        fail(f"cannot sign {file} with {key}: {exc}")
    stderr.print(f"Signed {file} with {key.name}.")


@targets_app.command("publish")
def targets_publish(file: Annotated[Path, typer.Argument(help="The signed targets file.")]) -> None:
    """Publish a signed targets file (the threshold of targets signatures is checked)."""
    from core.config import get_settings
    from ota import service

    with cli_session() as session:
        version = service.publish_pending_targets(
            session, get_settings(), file.read_bytes(), actor="cli"
        )
    stderr.print(f"Published image targets v{version}.")


@ota_app.command("refresh")
def refresh() -> None:
    """Re-sign metadata that expires soon (the `ota` worker does this periodically)."""
    from core.config import get_settings
    from ota import service
    from ota.worker import _active_vins

    with cli_session() as session:
        result = service.refresh_metadata(session, get_settings(), _active_vins(session))
    stdout.print(json.dumps(result, default=str))


@ota_app.command("rotate-key")
def rotate_key(
    role: Annotated[str, typer.Argument(help="root, targets, snapshot or timestamp.")],
    new_key: Annotated[list[Path], typer.Option(help="New private key (PEM) of the role; repeat.")],
    threshold: Annotated[int, typer.Option(min=1, help="Signatures the role needs.")] = 1,
    old_root_key: Annotated[
        list[Path] | None, typer.Option(help="Current root private key; repeat to a threshold.")
    ] = None,
    new_root_key: Annotated[
        list[Path] | None,
        typer.Option(help="Root private keys of the new root (default: the old ones)."),
    ] = None,
) -> None:
    """Rotate an Image-repository role's keys: a new root signed by a threshold of the old
    and of the new root keys; vehicles follow it on their next update check."""
    from core import audit
    from core.config import get_settings
    from ota import repos
    from ota.keys import load_signer

    settings = get_settings()
    if role not in ("root", "targets", "snapshot", "timestamp"):
        fail(f"unknown role {role!r}")
    if not old_root_key:
        fail("give the current root keys with --old-root-key (a threshold of them)")
    new_signers = [load_signer(p) for p in new_key]
    old_root = [load_signer(p) for p in old_root_key]
    new_root = (
        new_signers if role == "root" else [load_signer(p) for p in new_root_key or old_root_key]
    )
    with cli_session() as session:
        repository = repos.image_repository(session, settings)
        version = repository.rotate(
            role,
            [s.public_key for s in new_signers],
            threshold,
            old_root,
            new_root,
            role_signers=None if role == "root" else new_signers,
        )
        audit.record(
            session,
            actor="cli",
            action="key.rotate",
            subject=f"image:{role}",
            details={"root_version": version, "keyids": [s.public_key.keyid for s in new_signers]},
        )
    online = role in ("snapshot", "timestamp")
    stderr.print(
        f"Image repository root v{version}: {role} keys rotated."
        + (
            f" Put the new key in {settings.ota_keys_location / 'image'} as {role}.pem."
            if online
            else ""
        )
    )


@ota_app.command("campaigns")
def list_campaigns() -> None:
    """Campaigns, newest first."""
    from ota import campaigns

    with cli_session() as session:
        rows = [campaigns.read(c) for c in campaigns.list_campaigns(session)]
    table = Table("id", "name", "state", "wave", "pause reason")
    for c in rows:
        reason = (c.pause_reason or {}).get("code", "")
        table.add_row(str(c.id), c.name, c.state, f"{c.current_wave + 1}/{len(c.waves)}", reason)
    stdout.print(table)


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute the audit log's hash chain; exit 1 at the first broken link."""
    from core import audit

    with cli_session() as session:
        check = audit.verify_chain(session)
    if not check.ok:
        fail(f"audit chain broken at event {check.first_bad_seq}: {check.reason}")
    stderr.print(f"Audit chain intact: {check.events} events.")


@audit_app.command("list")
def audit_list(
    limit: Annotated[int, typer.Option(help="Newest first, at most this many.")] = 50,
    action: Annotated[str | None, typer.Option(help="Only this action.")] = None,
) -> None:
    from core import audit

    with cli_session() as session:
        events = audit.list_events(session, action=action, limit=limit)
    table = Table("seq", "at", "actor", "action", "subject", "details")
    for e in events:
        table.add_row(
            str(e.seq),
            f"{e.at:%Y-%m-%d %H:%M:%S}Z",
            e.actor,
            e.action,
            e.subject,
            json.dumps(e.details)[:80],
        )
    stdout.print(table)
