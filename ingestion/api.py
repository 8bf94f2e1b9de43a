"""HTTP ingest: ``POST /v1/telemetry``.

A vehicle posts a batch of samples for its own VIN (JSON, optionally gzip-compressed). The
answer is 202 only after Kafka acknowledged the write (idempotent producer, acks=all); bad input
gets a 4xx with per-field errors; 503 when Kafka cannot take the write in time (a retry with the
same ``message_id`` is safe: downstream sinks are idempotent on ``(vin, message_id)``).

Every record carries the request's correlation id (``X-Request-ID`` or a generated one, see
``core.app.RequestContextMiddleware``) as the ``correlation_id`` header.
"""

from __future__ import annotations

import logging
import time
import zlib
from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Header, Request

from core.auth.deps import VehicleAuth
from core.errors import Forbidden, PayloadTooLarge, ValidationFailed
from core.logging import HEADER_CORRELATION_ID, correlation_id, new_correlation_id
from core.responses import OrjsonResponse
from core.telemetry import HEADER_RECEIVED_AT, HEADER_SOURCE, TelemetryMessage, decode
from ingestion.producer import ProducerHolder
from ingestion.validation import FastValidator, Validator, decode_errors

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["telemetry"])

# The body is read raw (gzip, size limits, msgspec decoding), so its schema is declared here and
# its components are merged into the OpenAPI document by ``core.app``.
(_ref,), OPENAPI_COMPONENTS = msgspec.json.schema_components(
    [TelemetryMessage], ref_template="#/components/schemas/{name}"
)


def _validated_slowly(body: bytes, validator: Validator, now_ms: int) -> TelemetryMessage:
    """Decode and validate with the exact per-field error list (what a 422 carries)."""
    try:
        message = decode(body)
    except msgspec.MsgspecError as exc:
        raise ValidationFailed([e.as_dict() for e in decode_errors(exc)]) from None
    errors = validator.validate(message, now_ms)
    if errors:
        raise ValidationFailed([e.as_dict() for e in errors])
    return message


def get_validator(request: Request) -> Validator:
    return request.app.state.validator  # type: ignore[no-any-return]


def get_producer(request: Request) -> ProducerHolder:
    return request.app.state.producer  # type: ignore[no-any-return]


async def read_body(
    request: Request, limit: int, decompressed_limit: int, encoding: str | None
) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if encoding in (None, "", "identity"):
        return body
    if encoding != "gzip":
        raise ValidationFailed(
            [
                {
                    "loc": ["header", "content-encoding"],
                    "type": "unsupported_encoding",
                    "msg": f"content encoding {encoding!r} is not supported; use gzip or none",
                }
            ],
            status_code=415,
            code="unsupported_media_type",
        )
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(body, decompressed_limit)
    except zlib.error as exc:
        raise ValidationFailed(
            [{"loc": ["body"], "type": "invalid_gzip", "msg": f"body is not valid gzip: {exc}"}]
        ) from None
    if inflater.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed body exceeds the limit of {decompressed_limit} bytes")
    if not inflater.eof or inflater.unused_data:
        raise ValidationFailed(
            [
                {
                    "loc": ["body"],
                    "type": "invalid_gzip",
                    "msg": "gzip body is truncated or has trailing bytes",
                }
            ]
        )
    return data


@router.post(
    "/telemetry",
    status_code=202,
    response_class=OrjsonResponse,
    summary="Ingest a batch of telemetry samples for the calling vehicle",
    responses={
        202: {"description": "Durably written to Kafka"},
        401: {"description": "Missing or invalid vehicle credential"},
        403: {"description": "VIN differs from the credential's VIN"},
        413: {"description": "Body too large"},
        415: {"description": "Unsupported content encoding"},
        422: {"description": "Per-field validation errors"},
        503: {"description": "Kafka unavailable; retry with the same message_id"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref}},
        }
    },
)
async def ingest_telemetry(
    request: Request,
    vehicle: VehicleAuth,
    validator: Annotated[Validator, Depends(get_validator)],
    producer: Annotated[ProducerHolder, Depends(get_producer)],
    content_encoding: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> OrjsonResponse:
    settings = request.app.state.settings
    body = await read_body(
        request,
        settings.ingest_max_body_bytes,
        settings.ingest_max_decompressed_bytes,
        content_encoding.strip().lower() if content_encoding else None,
    )
    now_ms = int(time.time() * 1000)
    fast: FastValidator | None = request.app.state.fast_validator
    typed = fast.decode_valid(body, now_ms) if fast is not None else None
    message = typed if typed is not None else _validated_slowly(body, validator, now_ms)
    if message.vin != vehicle.vin:
        raise Forbidden(
            [
                {
                    "loc": ["body", "vin"],
                    "type": "vin_mismatch",
                    "msg": "a vehicle may only send telemetry for its own VIN",
                }
            ]
        )
    request_id = correlation_id() or new_correlation_id()
    headers = [
        (HEADER_SOURCE, b"http"),
        (HEADER_RECEIVED_AT, str(now_ms).encode()),
        (HEADER_CORRELATION_ID, request_id.encode()),
    ]
    metadata = await producer.send_and_wait(
        settings.telemetry_topic, body, message.vin.encode(), headers, settings.produce_timeout_s
    )
    # DEBUG: one line per message is too much for a fleet at INFO; the id reaches the
    # workers' outcome lines through the record header either way.
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "telemetry accepted",
            extra={
                "vin": message.vin,
                "message_id": message.message_id,
                "partition": metadata.partition,
                "offset": metadata.offset,
            },
        )
    return OrjsonResponse(
        {
            "message_id": message.message_id,
            "samples": len(message.samples),
            "partition": metadata.partition,
            "offset": metadata.offset,
        },
        status_code=202,
    )
