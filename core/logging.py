"""Log configuration of every process: text for people (default), or one JSON object per line
(``FLEET_LOG_FORMAT=json``) with ``ts``, ``level``, ``logger``, ``msg`` and the context of the
work in hand: ``worker``, ``correlation_id``, ``vin`` and any ``extra={...}`` fields.

The correlation id follows a message from ingest to its outcome (``docs/observability.md``):
the HTTP API takes ``X-Request-ID`` (or makes one) and puts it on every Kafka record it
produces as the header :data:`HEADER_CORRELATION_ID`; a record a vehicle produced directly has
none, and its ``message_id`` serves instead. Workers set it with :func:`bind` while handling a
record, and every log line inside carries it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import msgspec

HEADER_CORRELATION_ID = "correlation_id"
"""Kafka record header with the correlation id (bytes, ASCII)."""
REQUEST_ID_HEADER = "x-request-id"

_EMPTY: Mapping[str, Any] = {}
_context: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "fleet_log_context", default=None
)
_process_context: dict[str, Any] = {}
"""Fields of every line of this process (``worker``)."""

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_VALID_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_encode = msgspec.json.Encoder().encode


def _fields() -> Mapping[str, Any]:
    return _context.get() or _EMPTY


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def accept_request_id(value: str | None) -> str:
    """A caller's ``X-Request-ID`` when it is a sane token (it ends up in logs and headers),
    else a fresh id."""
    if value and _VALID_ID.fullmatch(value):
        return value
    return new_correlation_id()


def correlation_id() -> str | None:
    """The correlation id of the work in hand, if any."""
    value = _fields().get("correlation_id")
    return None if value is None else str(value)


def header_value(headers: Sequence[tuple[str, bytes]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name:
            return value.decode("ascii", "replace") if value is not None else None
    return None


def record_correlation_id(headers: Sequence[tuple[str, bytes]] | None) -> str | None:
    """The correlation id header of a Kafka record, if it carries one."""
    return header_value(headers, HEADER_CORRELATION_ID)


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (``correlation_id``, ``vin``, ...) to every log line inside the block
    (this task or thread; ``asyncio.to_thread`` carries it along)."""
    token = _context.set({**_fields(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def set_process_context(**fields: Any) -> None:
    """Fields of every line this process writes (the worker's name); None removes one."""
    for key, value in fields.items():
        if value is None:
            _process_context.pop(key, None)
        else:
            _process_context[key] = value


class JsonFormatter(logging.Formatter):
    """One JSON object per line (msgspec): ts (ISO 8601 UTC, ms), level, logger, msg, the
    process and task context, ``extra`` fields, and ``exc`` with the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(_process_context)
        line.update(_fields())
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        try:
            return _encode(line).decode()
        except (TypeError, msgspec.EncodeError):
            return _encode({k: v if _plain(v) else repr(v) for k, v in line.items()}).decode()


class TextFormatter(logging.Formatter):
    """The human format, with the correlation id appended when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        cid = _fields().get("correlation_id")
        return f"{text} [cid={cid}]" if cid else text


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _iso(created: float) -> str:
    seconds = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + (
        f".{int((created - seconds) * 1000):03d}Z"
    )


def make_formatter(fmt: Literal["text", "json"] | str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else TextFormatter()


def configure_logging(fmt: Literal["text", "json"] | str = "text", level: str = "INFO") -> None:
    """Replace the root handlers with one stderr handler in ``fmt`` (called once per process,
    by the CLI and the API factory)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # Their records go to our handler (the API runs uvicorn without its log config).
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
