"""Serves the console: ``/console`` (the page), ``/console/static/*`` (its scripts and styles,
all in this package: nothing is fetched from another origin) and ``/`` redirecting to it.

The page is a client of the public API: it logs in through ``/v1/session`` and then calls the
same ``/v1`` endpoints, with the same role checks, as the CLI and every other client. A strict
Content-Security-Policy keeps it that way: scripts, styles, images and requests may only come
from this origin.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).parent / "static"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_RAW_HEADERS = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

router = APIRouter(include_in_schema=False)


@router.api_route("/", methods=["GET", "HEAD"])
async def root() -> RedirectResponse:
    return RedirectResponse("/console", status_code=307)


@router.api_route("/console", methods=["GET", "HEAD"])
async def console_page() -> FileResponse:
    return FileResponse(
        STATIC_DIR / "index.html", headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    )


class _SecurityHeaders:
    """Adds the console's security headers to every response of the static-file app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *_RAW_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_console(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(
        "/console/static",
        _SecurityHeaders(StaticFiles(directory=STATIC_DIR)),
        name="console-static",
    )
