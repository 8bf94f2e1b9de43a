"""HTTP routes of OTA: software images (upload, catalog, download with ranges), the two Uptane
repositories' metadata and targets, campaigns, and the vehicle's check-in and reports."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from core.auth.deps import AUTH_ERROR_RESPONSES, CurrentPrincipal, VehicleAuth, require_roles
from core.auth.models import AuthenticatedPrincipal, Role
from core.db import session_scope
from core.deps import SessionDep, SettingsDep
from core.errors import FleetError, Forbidden, NotFound, PayloadTooLarge
from ota import campaigns, images, repos
from ota.images import ImageRead
from ota.ranges import RangeNotSatisfiable, parse_range
from ota.store import ImageTooLarge, ObjectStore

router = APIRouter(prefix="/v1/ota", tags=["ota"], responses=AUTH_ERROR_RESPONSES)
Operator = Annotated[
    AuthenticatedPrincipal, Depends(require_roles(Role.admin, Role.fleet_operator))
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Not found (`not_found`)"}}
METADATA_TYPE = "application/json"


def object_store(request: Request) -> ObjectStore:
    store: ObjectStore | None = getattr(request.app.state, "ota_store", None)
    if store is None:
        store = ObjectStore(request.app.state.settings.ota_store_location)
        request.app.state.ota_store = store
    return store


Store = Annotated[ObjectStore, Depends(object_store)]


# --- images ----------------------------------------------------------------------------------


@router.post(
    "/images",
    status_code=status.HTTP_201_CREATED,
    responses={
        409: {"description": "This name and version exist (`conflict`)"},
        413: {"description": "Larger than `FLEET_OTA_MAX_IMAGE_BYTES`"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_image(
    request: Request,
    settings: SettingsDep,
    store: Store,
    operator: Operator,
    name: Annotated[str, Query(max_length=100, examples=["bms-firmware"])],
    version: Annotated[str, Query(max_length=64, examples=["4.3.0"])],
    release_counter: Annotated[int, Query(description="Anti-rollback counter (0 or more).")],
    hardware_id: Annotated[list[str], Query(description="ECU hardware ids it fits (repeat).")],
    dependency: Annotated[
        list[str] | None, Query(description="HARDWARE_ID:MIN_VERSION another ECU needs (repeat).")
    ] = None,
) -> ImageRead:
    """Upload an image (the request body is its bytes). It is stored, hashed and published in
    the Image repository as one target per hardware id (signed at once when the targets key is
    online; otherwise `fleet ota targets sign/publish`)."""
    meta = images.parse_meta(name, version, release_counter, hardware_id, dependency or [])
    engine = request.app.state.engine

    def check_new() -> None:
        with session_scope(engine) as session:
            images.refuse_duplicate(session, meta)

    await run_in_threadpool(check_new)
    try:
        stored = await store.put_stream(request.stream(), max_bytes=settings.ota_max_image_bytes)
    except ImageTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from None
    if stored.length == 0:
        raise FleetError(
            "the request body is empty: send the image's bytes", code="empty_body", status_code=422
        )

    def register() -> ImageRead:
        from ota import service

        with session_scope(engine) as session:
            image = images.add_image(session, meta, stored, uploaded_by=operator.name)
            service.publish_image(session, settings, image, actor=operator.name)
            return images.image_read(image)

    return await run_in_threadpool(register)


@router.get("/images")
def list_images(
    session: SessionDep,
    _operator: Operator,
    name: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[ImageRead]:
    return [
        images.image_read(i)
        for i in images.list_images(session, name=name, limit=limit, offset=offset)
    ]


@router.get("/images/{image_id}", responses=NOT_FOUND)
def read_image(image_id: uuid.UUID, session: SessionDep, _operator: Operator) -> ImageRead:
    return images.image_read(images.get_image(session, image_id))


@router.get("/images/{image_id}/content", responses=NOT_FOUND)
def download_image(
    image_id: uuid.UUID, request: Request, session: SessionDep, store: Store, _operator: Operator
) -> Response:
    """The image's bytes; honours `Range` (206 with `Content-Range`, 416 past the end)."""
    image = images.get_image(session, image_id)
    return _serve_object(store, image.storage_key, image.length, image.sha256, request)


# --- the repositories (what the vehicle's TUF clients fetch) ---------------------------------


@router.get("/image/targets/{path:path}", responses=NOT_FOUND)
def image_target(
    path: str, request: Request, session: SessionDep, store: Store, principal: CurrentPrincipal
) -> Response:
    """A target file, named as TUF's consistent snapshots name it
    (`<hardware id>/<sha256>.<file name>`); honours `Range`."""
    _vehicle_or_operator(principal)
    directory, _, base = path.rpartition("/")
    digest, _, filename = base.partition(".")
    image = images.image_by_target(session, digest, filename) if len(digest) == 64 else None
    if image is None or directory not in image.hardware_ids:
        raise NotFound(f"no target {path!r}")
    return _serve_object(store, image.storage_key, image.length, image.sha256, request)


@router.get("/image/{name}", responses=NOT_FOUND)
def image_metadata(name: str, session: SessionDep, principal: CurrentPrincipal) -> Response:
    """Image repository metadata (`1.root.json`, `timestamp.json`, `3.snapshot.json` ...)."""
    _vehicle_or_operator(principal)
    data = repos.DbMetadataStore(session).read(f"image/{name}") if _safe(name) else None
    if data is None:
        raise NotFound(f"no Image repository metadata {name!r}")
    return Response(data, media_type=METADATA_TYPE, headers={"Cache-Control": "no-store"})


@router.get("/director/{vin}/{name}", responses=NOT_FOUND)
def director_metadata(
    vin: Annotated[str, Path(max_length=17)],
    name: str,
    session: SessionDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
) -> Response:
    """The Director's metadata for one vehicle; a vehicle reads only its own."""
    _vehicle_or_operator(principal, vin)
    data = repos.director(session, settings).read_metadata(vin, name) if _safe(name) else None
    if data is None:
        raise NotFound(f"no Director metadata {name!r} for {vin}")
    return Response(data, media_type=METADATA_TYPE, headers={"Cache-Control": "no-store"})


def _serve_object(
    store: ObjectStore, key: str, size: int, sha256: str, request: Request
) -> Response:
    etag = f'"{sha256}"'
    headers = {"Accept-Ranges": "bytes", "ETag": etag}
    try:
        byte_range = parse_range(request.headers.get("range"), size)
    except RangeNotSatisfiable:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    if_range = request.headers.get("if-range")
    if byte_range is not None and if_range is not None and if_range != etag:
        byte_range = None  # the client's copy is of other bytes: send them whole
    if byte_range is None:
        return StreamingResponse(
            store.read_range(key, 0, size - 1),
            media_type="application/octet-stream",
            headers={**headers, "Content-Length": str(size)},
        )
    return StreamingResponse(
        store.read_range(key, byte_range.start, byte_range.end),
        status_code=206,
        media_type="application/octet-stream",
        headers={
            **headers,
            "Content-Length": str(byte_range.length),
            "Content-Range": byte_range.content_range(size),
        },
    )


def _safe(name: str) -> bool:
    return "/" not in name and ".." not in name and name.endswith(".json") and len(name) < 128


def _vehicle_or_operator(principal: AuthenticatedPrincipal, vin: str | None = None) -> None:
    if principal.role in (Role.admin, Role.fleet_operator):
        return
    if principal.role is Role.vehicle:
        if vin is not None and principal.vin != vin:
            raise Forbidden("a vehicle may only read its own Director metadata")
        return
    raise Forbidden(f"requires a vehicle or fleet operator credential, not {principal.role}")


# --- campaigns -------------------------------------------------------------------------------


@router.post("/campaigns", status_code=status.HTTP_201_CREATED, responses=NOT_FOUND)
def create_campaign(
    body: campaigns.CampaignIn, session: SessionDep, operator: Operator
) -> campaigns.CampaignRead:
    """A draft campaign; see its dry run before launching it."""
    return campaigns.read(campaigns.create(session, body, actor=operator.name))


@router.get("/campaigns")
def list_campaigns(
    session: SessionDep,
    _operator: Operator,
    state: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[campaigns.CampaignRead]:
    return [campaigns.read(c) for c in campaigns.list_campaigns(session, state=state, limit=limit)]


@router.get("/campaigns/{campaign_id}", responses=NOT_FOUND)
def read_campaign(
    campaign_id: uuid.UUID, session: SessionDep, _operator: Operator
) -> campaigns.CampaignStatus:
    """The campaign with per-wave progress, its gate decisions and failures grouped by error
    code and hardware variant."""
    return campaigns.status(session, campaigns.get(session, campaign_id))


@router.post("/campaigns/{campaign_id}/dry-run", responses=NOT_FOUND)
def dry_run(campaign_id: uuid.UUID, session: SessionDep, _operator: Operator) -> campaigns.DryRun:
    """Vehicles eligible, blocked (by reason) or not targeted, wave sizes, expected duration."""
    return campaigns.dry_run(session, campaigns.get(session, campaign_id))


@router.post("/campaigns/{campaign_id}/approve", responses=NOT_FOUND)
def approve_campaign(
    campaign_id: uuid.UUID, session: SessionDep, operator: Operator
) -> campaigns.CampaignRead:
    """Approval by a second operator (not the creator)."""
    return campaigns.read(campaigns.approve(session, campaign_id, actor=operator.name))


@router.post("/campaigns/{campaign_id}/launch", responses=NOT_FOUND)
def launch_campaign(
    campaign_id: uuid.UUID, session: SessionDep, settings: SettingsDep, operator: Operator
) -> campaigns.CampaignRead:
    return campaigns.read(campaigns.launch(session, settings, campaign_id, actor=operator.name))


@router.post("/campaigns/{campaign_id}/pause", responses=NOT_FOUND)
def pause_campaign(
    campaign_id: uuid.UUID, session: SessionDep, settings: SettingsDep, operator: Operator
) -> campaigns.CampaignRead:
    return campaigns.read(campaigns.pause(session, settings, campaign_id, actor=operator.name))


@router.post("/campaigns/{campaign_id}/resume", responses=NOT_FOUND)
def resume_campaign(
    campaign_id: uuid.UUID, session: SessionDep, settings: SettingsDep, operator: Operator
) -> campaigns.CampaignRead:
    return campaigns.read(campaigns.resume(session, settings, campaign_id, actor=operator.name))


@router.post("/campaigns/{campaign_id}/abort", responses=NOT_FOUND)
def abort_campaign(
    campaign_id: uuid.UUID, session: SessionDep, settings: SettingsDep, operator: Operator
) -> campaigns.CampaignRead:
    return campaigns.read(campaigns.abort(session, settings, campaign_id, actor=operator.name))


@router.post("/campaigns/{campaign_id}/retry-failed", responses=NOT_FOUND)
def retry_failed(
    campaign_id: uuid.UUID, session: SessionDep, settings: SettingsDep, operator: Operator
) -> dict[str, int]:
    """A new attempt for every failed vehicle only; the campaign runs again."""
    retried = campaigns.retry_failed(session, settings, campaign_id, actor=operator.name)
    return {"retried": retried}


# --- vehicles --------------------------------------------------------------------------------


@router.get("/check-in", responses={304: {"description": "Nothing changed since the ETag"}})
def check_in(
    request: Request, session: SessionDep, settings: SettingsDep, vehicle: VehicleAuth
) -> Response:
    """What this vehicle should install (verify it through the Director's signed metadata).
    Send `If-None-Match` with the last `ETag`: 304 when nothing changed."""
    check = campaigns.check_in(session, settings, vehicle.vin)
    etag = campaigns.check_in_etag(check)
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    return Response(
        check.model_dump_json(),
        media_type="application/json",
        headers={"ETag": etag, "Cache-Control": "no-cache"},
    )


@router.put("/manifest", status_code=status.HTTP_204_NO_CONTENT)
def put_manifest(body: campaigns.ManifestIn, session: SessionDep, vehicle: VehicleAuth) -> None:
    """The vehicle's version manifest: per ECU, the image it runs and its release counter."""
    campaigns.store_manifest(session, vehicle.vin, body)


@router.post("/reports", responses=NOT_FOUND)
def post_report(
    body: campaigns.ReportIn,
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    settings: SettingsDep,
    vehicle: VehicleAuth,
) -> campaigns.ReportResult:
    """One install report (also accepted on `ota.reports.v1`). Idempotent on `report_id`;
    reports that arrive late or out of order are ignored by the record's `seq`. The
    campaign's gates run after the report is stored (the `ota` worker re-runs them too)."""
    result, campaign = campaigns.apply_report(session, settings, vehicle.vin, body)
    if campaign is not None and result.applied:
        engine = request.app.state.engine
        background.add_task(campaigns.evaluate_later, engine, settings, [campaign.id])
    return result
