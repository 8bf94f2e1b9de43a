"""The archive worker's native path: messages decoded straight into Arrow buffers.

``ingestion._columnar`` (Rust, ``native/``) parses and validates a record's raw bytes and
appends its samples to column buffers, so the worker creates no Python object per value. It only
accepts what the Python validators accept and stores the same values (checked with Hypothesis in
``tests/ingestion/test_columnar.py``); a record it refuses goes through the Python path, which
names the error for the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from core.signals import SignalSpec
from ingestion.archive import BASE_FIELDS, RollBuffer
from ingestion.validation import INT64_MAX, INT64_MIN, Limits, Validator

try:
    from ingestion._columnar import ColumnarDecoder
except ImportError:  # pragma: no cover - the extension is built by `pip install`
    ColumnarDecoder = None

BASE_NAMES = [f.name for f in BASE_FIELDS]


def available() -> bool:
    """Whether the native extension was built (``pip install`` builds it with cargo)."""
    return ColumnarDecoder is not None


@dataclass(frozen=True)
class DecoderSpec:
    """Everything needed to make a decoder for one archive schema (reused for every roll)."""

    specs: list[tuple[Any, ...]]
    signal_fields: list[pa.Field]
    limits: Limits

    @classmethod
    def build(
        cls, schema: pa.Schema, catalog: Mapping[str, SignalSpec], limits: Limits
    ) -> DecoderSpec:
        rules = Validator(catalog, limits).rules
        signal_fields = [f for f in schema if f.name in catalog]
        specs: list[tuple[Any, ...]] = []
        for fld in signal_fields:
            rule = rules[fld.name]
            if rule.kind == "int":
                lo = INT64_MIN if rule.lo is None else int(rule.lo)
                hi = INT64_MAX if rule.hi is None else int(rule.hi)
                specs.append((fld.name, "int", None, None, lo, hi, None))
            else:
                allowed = sorted(rule.allowed) if rule.allowed is not None else None
                specs.append((fld.name, rule.kind, rule.lo, rule.hi, None, None, allowed))
        return cls(specs, signal_fields, limits)

    def decoder(self) -> Any:
        if ColumnarDecoder is None:
            raise RuntimeError("the native decoder (ingestion._columnar) is not built")
        limits = self.limits
        return ColumnarDecoder(
            self.specs,
            max_samples=limits.max_samples,
            max_message_id_len=limits.max_message_id_len,
            max_age_ms=limits.max_age_ms,
            max_future_skew_ms=limits.max_future_skew_ms,
        )


@dataclass
class ColumnarBuffer(RollBuffer):
    """A roll's rows held in native column buffers (see :class:`RollBuffer`). The caller feeds
    ``decoder.push(raw, now_ms, partition, offset, received_at)``, which returns
    ``(vin, message_id)`` and appends the rows of a valid message (else None, and nothing is
    appended), and ``decoder.discard_last()``, which drops the last message's rows again; it
    keeps ``messages`` and ``approx_bytes`` up to date itself."""

    spec: DecoderSpec | None = None
    decoder: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.spec is None:
            raise TypeError("ColumnarBuffer needs a DecoderSpec")
        self.decoder = self.spec.decoder()

    def __len__(self) -> int:
        return int(self.decoder.rows)

    def to_table(self, schema: pa.Schema) -> pa.Table:
        assert self.spec is not None
        rows, base, columns = self.decoder.take()
        arrays: dict[str, pa.Array] = {
            name: _array(schema.field(name).type, rows, *buffers) for name, buffers in base
        }
        for fld, buffers in zip(self.spec.signal_fields, columns, strict=True):
            arrays[fld.name] = _array(fld.type, rows, *buffers)
        return pa.table(
            [arrays[f.name] if f.name in arrays else pa.nulls(rows, f.type) for f in schema],
            schema=schema,
        )


def _array(
    typ: pa.DataType, length: int, validity: bytes | None, nulls: int, buffers: Sequence[bytes]
) -> pa.Array:
    bitmap = pa.py_buffer(validity) if validity is not None else None
    wrapped = [pa.py_buffer(b) for b in buffers]
    if pa.types.is_list(typ):
        offsets, item_offsets, item_data = wrapped
        items = pa.Array.from_buffers(
            typ.value_type, item_offsets.size // 4 - 1, [None, item_offsets, item_data]
        )
        return pa.Array.from_buffers(typ, length, [bitmap, offsets], nulls, children=[items])
    return pa.Array.from_buffers(typ, length, [bitmap, *wrapped], nulls)
