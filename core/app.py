"""FastAPI app assembly: engine and producer created in the lifespan, routers included, one
error handler, the request-metrics and correlation-id middleware, ``/metrics``, ``/healthz``
and ``/readyz``. ``fleet api`` serves ``create_app()`` with uvicorn."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.config import Settings, get_settings
from core.db import make_engine
from core.errors import ServiceUnavailable, install_error_handlers
from core.logging import REQUEST_ID_HEADER, accept_request_id, bind
from core.metrics import (
    HTTP_REQUEST_DURATION,
    UNMATCHED_ROUTE,
    CampaignCollector,
    database_answers,
    exposition,
)
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
        app.state.metrics_registry = CollectorRegistry(auto_describe=False)
        app.state.metrics_registry.register(CampaignCollector(app.state.engine))
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
    app.add_middleware(RequestContextMiddleware, record_metrics=settings.metrics_enabled)

    from console.web import install_console
    from core.audit_api import router as audit_router
    from core.auth.api import router as auth_router
    from core.auth.session_api import router as session_router
    from core.overview_api import router as overview_router
    from core.vehicles.api import router as vehicles_router
    from diagnostics.api import router as diagnostics_router
    from ingestion.api import router as ingest_router
    from ingestion.history_api import router as history_router
    from ota.api import router as ota_router
    from services.api import router as services_router
    from ubi.api import router as ubi_router
    from ubi.privacy_api import router as privacy_router

    app.include_router(auth_router)
    app.include_router(session_router)
    app.include_router(vehicles_router)
    app.include_router(ingest_router)
    app.include_router(diagnostics_router)
    app.include_router(services_router)
    app.include_router(ota_router)
    app.include_router(audit_router)
    app.include_router(ubi_router)
    app.include_router(privacy_router)
    app.include_router(overview_router)
    app.include_router(history_router)
    install_console(app)
    _merge_openapi_components(app)

    @app.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Readiness: database and Kafka reachable")
    async def readyz() -> dict[str, str]:
        problem = await database_answers(app.state.engine)
        if problem is not None:
            raise ServiceUnavailable(problem)
        if app.state.producer.producer is None:
            raise ServiceUnavailable("Kafka not reachable")
        return {"status": "ready"}

    if settings.metrics_enabled:

        @app.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:
            """Prometheus text exposition, unauthenticated like the probes: it carries no
            VINs or other personal data (``FLEET_METRICS_ENABLED=false`` removes it)."""
            registry = getattr(app.state, "metrics_registry", None)
            extra = (registry,) if registry is not None else ()
            # The campaign collector queries the database: off the event loop.
            body = await asyncio.to_thread(exposition, *extra)
            return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app


class RequestContextMiddleware:
    """Per request: the correlation id (the caller's ``X-Request-ID`` or a new one) bound for
    every log line and echoed in the response, and the latency histogram labelled with the
    matched route's template (``/v1/vehicles/{vin}``), never the raw path."""

    def __init__(self, app: ASGIApp, *, record_metrics: bool = True) -> None:
        self.app = app
        self.record_metrics = record_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")
                break
        correlation_id = accept_request_id(request_id)
        scope.setdefault("state", {})["correlation_id"] = correlation_id
        status = 500
        header = (REQUEST_ID_HEADER.encode(), correlation_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        started = time.perf_counter()
        try:
            with bind(correlation_id=correlation_id):
                await self.app(scope, receive, send_with_id)
        finally:
            if self.record_metrics:
                route = scope.get("route")
                template = getattr(route, "path", None) or UNMATCHED_ROUTE
                HTTP_REQUEST_DURATION.labels(
                    scope["method"], template, f"{status // 100}xx"
                ).observe(time.perf_counter() - started)


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
    """Entry point for ``uvicorn --factory core.app:app_factory`` (every uvicorn process)."""
    from core.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings)
