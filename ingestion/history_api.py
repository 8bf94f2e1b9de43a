"""HTTP route of a vehicle's recent signal history and track from the archive
(``GET /v1/vehicles/{vin}/signals``): fleet operators, admins and the vehicle's owners."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from core.auth.deps import AUTH_ERROR_RESPONSES, CurrentPrincipal
from core.deps import SessionDep, SettingsDep
from core.vin import VinStr
from ingestion import history
from ingestion.archive import ParquetArchive
from ingestion.history import SignalHistory
from ubi.access import authorize_vehicle

router = APIRouter(prefix="/v1", tags=["telemetry"], responses=AUTH_ERROR_RESPONSES)
RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "No vehicle with this VIN (`not_found`)"},
    422: {"description": "An unknown or non-numeric signal, or a parameter out of range"},
}
PathVin = Annotated[VinStr, Path(description="Vehicle Identification Number (17 characters)")]


def archive(request: Request) -> ParquetArchive:
    """The app's handle on the Parquet archive (``FLEET_ARCHIVE_URL``), opened on first use."""
    location = request.app.state.settings.archive_location
    found: ParquetArchive | None = getattr(request.app.state, "history_archive", None)
    if found is None or found.location != location:
        found = ParquetArchive(location)
        request.app.state.history_archive = found
    return found


Archive = Annotated[ParquetArchive, Depends(archive)]


@router.get("/vehicles/{vin}/signals", responses=RESPONSES)
def read_signal_history(
    vin: PathVin,
    session: SessionDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    store: Archive,
    signal: Annotated[
        list[str] | None,
        Query(
            description="VSS path of a numeric signal; repeat for several. Default: "
            + ", ".join(history.DEFAULT_SIGNALS),
        ),
    ] = None,
    minutes: Annotated[
        int, Query(ge=1, le=10080, description="Window length, ending at the newest sample")
    ] = 60,
    max_points: Annotated[
        int, Query(ge=10, le=2000, description="At most this many points per series and track")
    ] = 300,
) -> SignalHistory:
    """The last `minutes` of a vehicle's signals and its GPS track, ending at its newest
    archived sample (so historic and simulated data show too), each series downsampled to at
    most `max_points` by time-bucket means. The newest sample is looked for in the archive's
    newest `FLEET_SIGNALS_LOOKBACK_DAYS` days (90 by default); without archived data there:
    empty series and `"from": null, "to": null`. Admins, fleet operators and the vehicle's
    owners."""
    authorize_vehicle(session, principal, vin)
    names = history.check_signals(signal or history.DEFAULT_SIGNALS, store.catalog)
    return history.signal_history(
        store,
        vin,
        names,
        minutes=minutes,
        max_points=max_points,
        lookback_days=settings.signals_lookback_days,
    )
