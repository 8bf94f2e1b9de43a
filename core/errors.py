"""One error type for the whole product and the FastAPI handlers that render it.

Every error body is ``{"error": CODE, "detail": ...}`` with a stable, machine-readable code.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.responses import OrjsonResponse


class FleetError(Exception):
    """Base error: carries an HTTP status, a stable code and a JSON-able detail."""

    status_code: int = 400
    code: str = "bad_request"

    def __init__(
        self, detail: Any = None, *, code: str | None = None, status_code: int | None = None
    ):
        super().__init__(detail if isinstance(detail, str) else (code or self.code))
        self.detail = detail
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code


class ValidationFailed(FleetError):
    status_code = 422
    code = "validation_failed"


class NotFound(FleetError):
    status_code = 404
    code = "not_found"


class Conflict(FleetError):
    status_code = 409
    code = "conflict"


class Unauthorized(FleetError):
    status_code = 401
    code = "unauthorized"


class Forbidden(FleetError):
    status_code = 403
    code = "forbidden"


class PayloadTooLarge(FleetError):
    status_code = 413
    code = "payload_too_large"


class ServiceUnavailable(FleetError):
    status_code = 503
    code = "service_unavailable"


def error_body(code: str, detail: Any) -> dict[str, Any]:
    return {"error": code, "detail": detail}


def install_error_handlers(app: FastAPI) -> None:
    """Register the one handler for FleetError plus adapters for framework errors."""

    @app.exception_handler(FleetError)
    async def _fleet_error(_: Request, exc: FleetError) -> OrjsonResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        if exc.status_code == 503:
            headers = {"Retry-After": "5"}
        return OrjsonResponse(error_body(exc.code, exc.detail), exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> OrjsonResponse:
        detail = [
            {
                "loc": list(err.get("loc", ())),
                "msg": err.get("msg", ""),
                "type": err.get("type", ""),
            }
            for err in exc.errors()
        ]
        return OrjsonResponse(error_body("validation_failed", detail), 422)

    @app.exception_handler(DataError)
    async def _data_error(_: Request, exc: DataError) -> OrjsonResponse:
        # The database refused a value the validators let through (PostgreSQL: a NUL
        # character in text, a number out of its column's range): the client's input.
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        return OrjsonResponse(
            error_body("invalid_value", f"a value cannot be stored: {reason}"), 422
        )

    @app.exception_handler(OperationalError)
    async def _operational_error(_: Request, exc: OperationalError) -> OrjsonResponse:
        # Lost a deadlock or a serialization conflict (SQLSTATE 40P01, 40001), or the database
        # went away: nothing was stored, and the same request later will do.
        logging.getLogger("fleet.errors").warning("database unavailable: %s", exc.orig)
        body = error_body("service_unavailable", "the database is busy or unreachable; retry")
        return OrjsonResponse(body, 503, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> OrjsonResponse:
        logging.getLogger("fleet.errors").exception("unhandled error", exc_info=exc)
        return OrjsonResponse(error_body("internal_error", "unexpected server error"), 500)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> OrjsonResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return OrjsonResponse(error_body(code, exc.detail), exc.status_code)
