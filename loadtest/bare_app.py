"""The HTTP baseline: the same route as the ingest, doing nothing but reading the body.

Served by uvicorn exactly like the product API (``--log-level warning --no-access-log``, same
event loop and HTTP parser), it measures what one uvicorn + FastAPI process on this machine can
take with the same bodies and the same load generator, so ``http.ratio`` is the share of that
ceiling the real ingest (auth, decode, validation, Kafka produce with acks=all) achieves.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response

app = FastAPI(title="bare ingest baseline", openapi_url=None, docs_url=None, redoc_url=None)

_ACCEPTED = b'{"status":"accepted"}'


@app.post("/v1/telemetry", status_code=202)
async def ingest(request: Request) -> Response:
    body = await request.body()
    if not body:
        return Response(b'{"error":"empty"}', status_code=422, media_type="application/json")
    return Response(_ACCEPTED, status_code=202, media_type="application/json")


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}
