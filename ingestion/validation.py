"""Validation of telemetry messages against the signal catalog.

One implementation serves the HTTP ingest (which answers 4xx with per-field errors) and the
validation stage on the bus (which dead-letters with the same reasons), so a record that the
API refuses is exactly a record that the consumer dead-letters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from core.signals import SignalSpec, integer_bounds
from core.telemetry import SCHEMA_VERSION, TelemetryMessage
from core.vin import VIN_RE, vin_problem

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""The archive stores integers (``seq``, integer signals) as int64; larger ones are refused."""


@dataclass(frozen=True, slots=True)
class FieldError:
    loc: tuple[str | int, ...]
    type: str
    msg: str

    def as_dict(self) -> dict[str, object]:
        return {"loc": list(self.loc), "type": self.type, "msg": self.msg}


@dataclass(frozen=True, slots=True)
class Limits:
    max_samples: int = 1000
    max_signals_per_sample: int = 256
    max_future_skew_ms: int = 300_000
    max_age_ms: int = 30 * 24 * 3600 * 1000
    max_message_id_len: int = 64

    @classmethod
    def from_settings(cls, settings: object) -> Limits:
        return cls(
            max_samples=settings.ingest_max_samples,  # type: ignore[attr-defined]
            max_signals_per_sample=settings.ingest_max_signals_per_sample,  # type: ignore[attr-defined]
            max_future_skew_ms=settings.ingest_max_future_skew_s * 1000,  # type: ignore[attr-defined]
            max_age_ms=settings.ingest_max_age_s * 1000,  # type: ignore[attr-defined]
        )


@dataclass(frozen=True, slots=True)
class _Rule:
    kind: str
    lo: float | None
    hi: float | None
    allowed: frozenset[str] | None
    unit: str | None


class Validator:
    """Checks messages against a catalog; build once, reuse for every message."""

    def __init__(self, catalog: Mapping[str, SignalSpec], limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._rules: dict[str, _Rule] = {}
        for path, spec in catalog.items():
            lo, hi = spec.min, spec.max
            bounds = integer_bounds(spec.datatype)
            if bounds is not None:
                lo = max(INT64_MIN, bounds[0] if lo is None else max(lo, bounds[0]))
                hi = min(INT64_MAX, bounds[1] if hi is None else min(hi, bounds[1]))
            allowed = frozenset(spec.allowed) if spec.allowed else None
            self._rules[path] = _Rule(spec.kind, lo, hi, allowed, spec.unit)

    @property
    def rules(self) -> Mapping[str, _Rule]:
        """Per signal path: kind, inclusive bounds, allowed values and unit."""
        return self._rules

    def validate(
        self, message: TelemetryMessage, now_ms: int, max_errors: int = 50
    ) -> list[FieldError]:
        """All problems in ``message`` (at most ``max_errors``); empty means valid."""
        errors: list[FieldError] = []
        limits = self.limits
        if message.v != SCHEMA_VERSION:
            errors.append(
                FieldError(
                    ("v",),
                    "unsupported_version",
                    f"schema version {message.v} is not supported (expected {SCHEMA_VERSION})",
                )
            )
        problem = vin_problem(message.vin)
        if problem:
            errors.append(FieldError(("vin",), "invalid_vin", problem))
        if not 1 <= len(message.message_id) <= limits.max_message_id_len:
            errors.append(
                FieldError(
                    ("message_id",),
                    "invalid_length",
                    f"message_id must have 1 to {limits.max_message_id_len} characters",
                )
            )
        if not 0 <= message.seq <= INT64_MAX:
            errors.append(
                FieldError(("seq",), "out_of_range", f"seq must be between 0 and {INT64_MAX}")
            )
        samples = message.samples
        if not samples:
            errors.append(FieldError(("samples",), "empty", "at least one sample is required"))
        elif len(samples) > limits.max_samples:
            errors.append(
                FieldError(
                    ("samples",),
                    "too_many",
                    f"{len(samples)} samples; at most {limits.max_samples} per message",
                )
            )
            return errors
        earliest = now_ms - limits.max_age_ms
        latest = now_ms + limits.max_future_skew_ms
        rules = self._rules
        for i, sample in enumerate(samples):
            ts = sample.ts
            if ts > latest:
                errors.append(
                    FieldError(
                        ("samples", i, "ts"),
                        "in_future",
                        f"timestamp {ts} is {(ts - now_ms) / 1000:.0f} s in the future "
                        f"(allowed skew {limits.max_future_skew_ms // 1000} s)",
                    )
                )
            elif ts < earliest:
                errors.append(
                    FieldError(
                        ("samples", i, "ts"),
                        "too_old",
                        f"timestamp {ts} is older than {limits.max_age_ms // 86_400_000} days",
                    )
                )
            signals = sample.signals
            if not signals:
                errors.append(
                    FieldError(
                        ("samples", i, "signals"), "empty", "a sample needs at least one signal"
                    )
                )
            elif len(signals) > limits.max_signals_per_sample:
                errors.append(
                    FieldError(
                        ("samples", i, "signals"),
                        "too_many",
                        f"{len(signals)} signals; at most {limits.max_signals_per_sample}",
                    )
                )
                continue
            for path, value in signals.items():
                rule = rules.get(path)
                if rule is None:
                    errors.append(
                        FieldError(
                            ("samples", i, "signals", path),
                            "unknown_signal",
                            f"{path!r} is not in the signal catalog",
                        )
                    )
                else:
                    msg = _check_value(rule, value)
                    if msg is not None:
                        errors.append(FieldError(("samples", i, "signals", path), msg[0], msg[1]))
            if len(errors) >= max_errors:
                return errors[:max_errors]
        return errors


def _check_value(rule: _Rule, value: object) -> tuple[str, str] | None:
    kind = rule.kind
    vt = type(value)
    if kind == "float":
        if vt is not float and vt is not int:
            return "wrong_type", f"expected a number, got {_json_type(value)}"
        if vt is float and not math.isfinite(value):  # type: ignore[arg-type]
            return "wrong_type", "expected a finite number"
    elif kind == "int":
        if vt is not int:
            return "wrong_type", f"expected an integer, got {_json_type(value)}"
    elif kind == "bool":
        return (
            None if vt is bool else ("wrong_type", f"expected a boolean, got {_json_type(value)}")
        )
    elif kind == "string":
        if vt is not str:
            return "wrong_type", f"expected a string, got {_json_type(value)}"
        if rule.allowed is not None and value not in rule.allowed:
            return "not_allowed", f"{value!r} is not one of {sorted(rule.allowed)}"
        return None
    else:  # string_list
        if vt is not list or not all(type(v) is str for v in value):  # type: ignore[attr-defined]
            return "wrong_type", f"expected a list of strings, got {_json_type(value)}"
        if rule.allowed is not None:
            bad = [v for v in value if v not in rule.allowed]  # type: ignore[attr-defined]
            if bad:
                return "not_allowed", f"{bad[0]!r} is not one of {sorted(rule.allowed)}"
        return None
    unit = f" {rule.unit}" if rule.unit else ""
    if rule.lo is not None and value < rule.lo:  # type: ignore[operator]
        return "out_of_range", f"{value}{unit} is below the minimum {rule.lo:g}{unit}"
    if rule.hi is not None and value > rule.hi:  # type: ignore[operator]
        return "out_of_range", f"{value}{unit} is above the maximum {rule.hi:g}{unit}"
    return None


def _json_type(value: object) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        type(None): "null",
        dict: "object",
    }.get(type(value), type(value).__name__)


def decode_errors(exc: msgspec.MsgspecError) -> list[FieldError]:
    """Turn a msgspec decode failure into a field error (msgspec names the JSON path)."""
    text = str(exc)
    loc: tuple[str | int, ...] = ("body",)
    if " - at `$" in text:
        text, _, path = text.partition(" - at `$")
        loc = ("body", *_parse_path(path.rstrip("`")))
    kind = "invalid_field" if isinstance(exc, msgspec.ValidationError) else "invalid_json"
    return [FieldError(loc, kind, text)]


def _parse_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for chunk in path.replace("]", "").split("["):
        for name in chunk.split("."):
            if not name:
                continue
            if name.startswith("'") or name.startswith('"'):
                parts.append(name.strip("'\""))
            elif name.isdigit():
                parts.append(int(name))
            else:
                parts.append(name)
    return parts


class FastValidator:
    """Decode and validate in one pass: a msgspec Struct generated from the catalog (one field
    per signal, with its type, range and allowed values) so the per-value checks run in C.

    ``decode_valid`` returns a typed message only when the message is valid; for anything else
    it returns None and the caller runs :class:`Validator` for the exact error list. The two
    agree on what is valid (``tests/ingestion/test_validation.py`` checks it with Hypothesis).
    A JSON ``null`` is rejected, exactly as the slow path does (fields default to None but do
    not accept it).
    """

    def __init__(self, catalog: Mapping[str, SignalSpec], limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.paths = list(catalog)
        self.fields = [f"s{i}" for i in range(len(self.paths))]
        self.field_of = dict(zip(self.paths, self.fields, strict=True))
        rules = Validator(catalog, self.limits).rules
        signals = msgspec.defstruct(
            "Signals",
            [(f, _field_type(rules[p]), None) for p, f in self.field_of.items()],
            rename=dict(zip(self.fields, self.paths, strict=True)),
            forbid_unknown_fields=True,
            omit_defaults=True,  # encode() gives back the message without nulls
            gc=False,
        )
        sample = msgspec.defstruct(
            "TypedSample", [("ts", int), ("signals", signals)], forbid_unknown_fields=True, gc=False
        )
        message = msgspec.defstruct(
            "TypedMessage",
            [
                ("vin", str),
                ("message_id", str),
                ("seq", int),
                ("samples", list[sample]),  # type: ignore[valid-type]
                ("v", int, SCHEMA_VERSION),
                ("sent_at", int | None, None),
            ],
            forbid_unknown_fields=True,
            omit_defaults=True,
        )
        self.signals_type = signals
        self._empty = signals()
        self._decoder = msgspec.json.Decoder(message)

    @staticmethod
    def usable(catalog: Mapping[str, SignalSpec], limits: Limits) -> bool:
        """The fast path needs every message to stay under the per-sample signal limit."""
        return len(catalog) <= limits.max_signals_per_sample

    def decode_valid(self, raw: bytes, now_ms: int) -> Any | None:
        try:
            message: Any = self._decoder.decode(raw)
        except (msgspec.MsgspecError, UnicodeDecodeError):
            return None
        limits = self.limits
        samples = message.samples
        if (
            message.v != SCHEMA_VERSION
            or not VIN_RE.fullmatch(message.vin)
            or not 1 <= len(message.message_id) <= limits.max_message_id_len
            or not 0 <= message.seq <= INT64_MAX
            or not 1 <= len(samples) <= limits.max_samples
        ):
            return None
        empty = self._empty
        earliest, latest = now_ms - limits.max_age_ms, now_ms + limits.max_future_skew_ms
        for sample in samples:
            if not earliest <= sample.ts <= latest or sample.signals == empty:
                return None
        return message

    def canonical_json(self, message: Any) -> bytes:
        """A valid typed message as plain JSON (no repeated keys, no nulls, no ``sent_at``,
        which the archive does not store and may exceed 64 bits)."""
        if getattr(message, "sent_at", None) is not None:
            message = msgspec.structs.replace(message, sent_at=None)
        return msgspec.json.encode(message)

    def from_message(self, message: TelemetryMessage) -> Any:
        """The typed form of a message the slow path accepted (the two paths agree, so this
        is a safety net that should never run)."""
        field_of = self.field_of
        samples = [
            _TypedSampleView(
                s.ts, self.signals_type(**{field_of[k]: v for k, v in s.signals.items()})
            )
            for s in message.samples
        ]
        return _TypedMessageView(message.vin, message.message_id, message.seq, samples)


@dataclass(frozen=True, slots=True)
class _TypedSampleView:
    ts: int
    signals: Any


@dataclass(frozen=True, slots=True)
class _TypedMessageView:
    vin: str
    message_id: str
    seq: int
    samples: list[_TypedSampleView]


def _field_type(rule: _Rule) -> Any:
    if rule.kind == "float":
        return Annotated[float, msgspec.Meta(ge=rule.lo, le=rule.hi)]
    if rule.kind == "int":
        lo = None if rule.lo is None else int(rule.lo)
        hi = None if rule.hi is None else int(rule.hi)
        return Annotated[int, msgspec.Meta(ge=lo, le=hi)]
    if rule.kind == "bool":
        return bool
    if rule.kind == "string":
        return Literal[tuple(sorted(rule.allowed))] if rule.allowed else str  # type: ignore[misc]
    if rule.allowed:
        return list[Literal[tuple(sorted(rule.allowed))]]  # type: ignore[misc]
    return list[str]
