"""HTTP route of the fleet overview (``GET /v1/fleet/overview``): admins and fleet operators."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from core import overview
from core.auth.deps import AUTH_ERROR_RESPONSES, require_roles
from core.auth.models import AuthenticatedPrincipal, Role
from core.deps import SessionDep, SettingsDep
from core.overview import FleetOverview, KafkaOverviewCache

router = APIRouter(prefix="/v1", tags=["fleet"], responses=AUTH_ERROR_RESPONSES)
Operator = Annotated[
    AuthenticatedPrincipal, Depends(require_roles(Role.admin, Role.fleet_operator))
]


async def kafka_overview_cache(request: Request) -> KafkaOverviewCache:
    """The app's cache of Kafka measurements, created on first use (on the event loop, so
    concurrent first requests share one)."""
    cache: KafkaOverviewCache | None = getattr(request.app.state, "kafka_overview_cache", None)
    if cache is None:
        cache = KafkaOverviewCache()
        request.app.state.kafka_overview_cache = cache
    return cache


KafkaCache = Annotated[KafkaOverviewCache, Depends(kafka_overview_cache)]


@router.get("/fleet/overview")
async def read_fleet_overview(
    session: SessionDep, settings: SettingsDep, kafka_cache: KafkaCache, _operator: Operator
) -> FleetOverview:
    """The fleet at a glance: vehicles by health (the rule of `GET /v1/vehicles/{vin}/health`)
    and the ones needing attention, open alarms, alerting predictions, open DTC episodes,
    unfinished OTA campaigns with their progress, and Kafka's dead-letter depths and worker lag.
    Kafka figures are at most 5 s old; when Kafka cannot be reached they are replaced by
    `"available": false` and the reason, and the rest is still answered."""
    database, kafka = await asyncio.gather(
        run_in_threadpool(overview.database_overview, session), kafka_cache.get(settings)
    )
    return FleetOverview(**dict(database), kafka=kafka)
