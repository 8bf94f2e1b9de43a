"""FastAPI app assembly: engine and producer created in the lifespan, routers included, one
error handler. ``fleet api`` serves ``create_app()`` with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from core.config import Settings, get_settings
from core.db import make_engine
from core.errors import ServiceUnavailable, install_error_handlers
from core.responses import OrjsonResponse
from core.signals import merged_catalog

log = logging.getLogger(__name__)


def product_topics(settings: Settings) -> dict[str, int]:
    """Topics the product creates on start-up (name -> partitions)."""
    return {
        settings.telemetry_topic: settings.topic_partitions,
        settings.telemetry_dlq_topic: settings.topic_partitions,
        settings.findings_topic: settings.topic_partitions,
        settings.predictions_topic: settings.topic_partitions,
        settings.services_dlq_topic: settings.topic_partitions,
        settings.ota_reports_topic: settings.topic_partitions,
        settings.ota_dlq_topic: settings.topic_partitions,
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from ingestion.producer import ProducerHolder
        from ingestion.validation import FastValidator, Limits, Validator

        app.state.settings = settings
        app.state.engine = make_engine(settings)
        catalog = merged_catalog(settings.vss_catalog_path)
        limits = Limits.from_settings(settings)
        app.state.validator = Validator(catalog, limits)
        app.state.fast_validator = (
            FastValidator(catalog, limits)
            if settings.vss_catalog_path is None and FastValidator.usable(catalog, limits)
            else None
        )
        app.state.producer = ProducerHolder(settings)
        await app.state.producer.start()
        gc.freeze()  # start-up objects live forever; spare the collector from scanning them
        try:
            yield
        finally:
            await app.state.producer.stop()
            app.state.engine.dispose()

    app = FastAPI(
        title="Fleet backend",
        version="0.1.0",
        description="Connected-vehicle backend: telemetry, diagnosis, maintenance, OTA, data.",
        lifespan=lifespan,
        default_response_class=OrjsonResponse,
    )
    install_error_handlers(app)

    from core.audit_api import router as audit_router
    from core.auth.api import router as auth_router
    from core.vehicles.api import router as vehicles_router
    from diagnostics.api import router as diagnostics_router
    from ingestion.api import router as ingest_router
    from ota.api import router as ota_router
    from services.api import router as services_router
    from ubi.api import router as ubi_router
    from ubi.privacy_api import router as privacy_router

    app.include_router(auth_router)
    app.include_router(vehicles_router)
    app.include_router(ingest_router)
    app.include_router(diagnostics_router)
    app.include_router(services_router)
    app.include_router(ota_router)
    app.include_router(audit_router)
    app.include_router(ubi_router)
    app.include_router(privacy_router)
    _merge_openapi_components(app)

    @app.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Readiness: database and Kafka reachable")
    async def readyz() -> dict[str, str]:
        from sqlalchemy import text

        def ping() -> None:
            with app.state.engine.connect() as conn:
                conn.execute(text("SELECT 1"))

        try:
            await asyncio.to_thread(ping)
        except Exception as exc:  # noqa: BLE001 - any database failure means not ready
            raise ServiceUnavailable(f"database not reachable: {exc.__class__.__name__}") from None
        if app.state.producer.producer is None:
            raise ServiceUnavailable("Kafka not reachable")
        return {"status": "ready"}

    return app


def _merge_openapi_components(app: FastAPI) -> None:
    """Add schemas of raw-body endpoints (declared with msgspec) to the OpenAPI document."""
    from fastapi.openapi.utils import get_openapi

    from ingestion.api import OPENAPI_COMPONENTS

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(OPENAPI_COMPONENTS)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_factory() -> FastAPI:
    """Entry point for ``uvicorn --factory core.app:app_factory``."""
    with contextlib.suppress(Exception):
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
    return create_app()
