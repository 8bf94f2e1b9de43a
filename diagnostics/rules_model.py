"""The rules file: rule alarms a fleet operator writes in YAML, validated into pydantic models.

The format is documented in ``docs/rules.md``; :mod:`diagnostics.rules` evaluates it. This module
is only about turning a file into checked, immutable :class:`RuleSet` objects, and about errors
an operator can act on: every problem names the rule (its id and position) and the field, and
unknown signal paths get a "did you mean" from the signal catalog.

Signals are checked against :data:`core.signals.CATALOG` by default; a deployment that accepts
its own VSS tree passes :func:`core.signals.merged_catalog` as ``catalog``.

YAML note: the loader reads YAML 1.2 booleans (only ``true``/``false``), so an operator can write
``value: [OFF, ACC]`` for ``Vehicle.LowVoltageSystemState`` without PyYAML turning ``OFF`` into
``False`` (YAML 1.1 behaviour). Duplicate keys in one mapping are an error, not "last one wins";
merge keys (``<<: *anchor``) work, so per-wheel rules can share one definition.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from core.signals import CATALOG, SignalSpec

__all__ = [
    "DEFAULT_MAX_GAP_S",
    "DEFAULT_RULES_PATH",
    "ORDER_OPS",
    "RATE_BUCKETS",
    "Condition",
    "RateRule",
    "Rule",
    "RuleSet",
    "RulesFileError",
    "Severity",
    "SpreadRule",
    "ThresholdRule",
    "load_default_rules",
    "load_rules",
    "parse_rules_yaml",
]

DEFAULT_RULES_PATH = Path(__file__).with_name("default_rules.yaml")
DEFAULT_MAX_GAP_S = 120.0
"""Samples further apart than this break a duration (see docs/rules.md, "Gaps")."""
RATE_BUCKETS = 10
"""A rate window is kept as this many time buckets (see docs/rules.md, "rate")."""

Severity: TypeAlias = Literal["info", "warning", "critical"]
OrderOp: TypeAlias = Literal["<", "<=", ">", ">="]
CompareOp: TypeAlias = Literal["<", "<=", ">", ">=", "==", "!=", "in", "not_in"]
ORDER_OPS: frozenset[str] = frozenset({"<", "<=", ">", ">="})
Scalar: TypeAlias = StrictBool | float | str
"""StrictBool first: ``true`` stays a bool, ``110`` becomes 110.0, ``OFF`` stays a string."""

_RULE_ID = r"^[a-z0-9][a-z0-9_.\-]{0,99}$"
_PER_SECONDS: dict[str, float] = {"s": 1.0, "min": 60.0, "h": 3600.0}
_TEMPLATE_FIELDS = frozenset(
    {
        "vin",
        "rule_id",
        "severity",
        "signal",
        "unit",
        "value",
        "threshold",
        "clear_value",
        "duration_s",
        "peak",
    }
)
_DEFAULT_CLEAR_MESSAGE = "{rule_id} cleared after {duration_s:.0f} s"


class RulesFileError(ValueError):
    """A rules file that cannot be used; ``problems`` has one line per problem, each naming the
    rule and the field, so an HTTP endpoint can return them as field errors."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        listing = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid rules file {source}:\n{listing}")


def _catalog(info: ValidationInfo) -> Mapping[str, SignalSpec]:
    context = info.context or {}
    catalog = context.get("catalog")
    return catalog if catalog is not None else CATALOG


def _signal_spec(field: str, path: str, catalog: Mapping[str, SignalSpec]) -> SignalSpec:
    spec = catalog.get(path)
    if spec is None:
        close = difflib.get_close_matches(path, list(catalog), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"field {field!r}: unknown signal {path!r}{hint}")
    if spec.kind == "string_list":
        raise ValueError(f"field {field!r}: {path} is a string list, which rules cannot compare")
    return spec


def _check_unit(unit: str | None, spec: SignalSpec) -> None:
    if unit is not None and unit != spec.unit:
        actual = repr(spec.unit) if spec.unit else "no unit"
        raise ValueError(f"field 'unit': {spec.path} has {actual}, not {unit!r}")


def _check_in_range(field: str, number: float, spec: SignalSpec) -> None:
    """A value outside the signal's range makes a rule that can never fire (or always does)."""
    if not math.isfinite(number):
        raise ValueError(f"field {field!r}: {number} is not a finite number")
    lo, hi = spec.min, spec.max
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        raise ValueError(
            f"field {field!r}: {number:g} is outside the range of {spec.path} [{lo:g}, {hi:g}]"
            if lo is not None and hi is not None
            else f"field {field!r}: {number:g} is outside the range of {spec.path}"
        )


def _check_comparison(spec: SignalSpec, op: str, value: Any) -> None:
    """Is ``<signal> <op> <value>`` meaningful for the signal's datatype?"""
    kind = spec.kind
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise ValueError(f"field 'value': op {op!r} needs a non-empty list")
        items = list(value)
    else:
        if isinstance(value, list):
            raise ValueError(f"field 'value': op {op!r} needs a single value, not a list")
        items = [value]
    if kind in ("float", "int"):
        for item in items:
            if isinstance(item, bool) or not isinstance(item, float | int):
                raise ValueError(
                    f"field 'value': {spec.path} is numeric ({spec.datatype}), got {item!r}"
                )
            _check_in_range("value", float(item), spec)
    elif kind == "bool":
        if op not in ("==", "!="):
            raise ValueError(f"field 'op': {spec.path} is a boolean; use '==' or '!='")
        if not isinstance(value, bool):
            raise ValueError(f"field 'value': {spec.path} is a boolean, got {value!r}")
    else:  # string
        if op in ORDER_OPS:
            raise ValueError(f"field 'op': {spec.path} is a string; use ==, !=, in or not_in")
        for item in items:
            if not isinstance(item, str):
                raise ValueError(f"field 'value': {spec.path} is a string, got {item!r}")
            if spec.allowed is not None and item not in spec.allowed:
                raise ValueError(
                    f"field 'value': {item!r} is not a value of {spec.path}; "
                    f"allowed: {', '.join(spec.allowed)}"
                )


def _check_clear_value(op: str, value: float, clear_value: float | None) -> None:
    if clear_value is None:
        return
    if op not in ORDER_OPS:
        raise ValueError(f"field 'clear_value': only ops <, <=, >, >= have a clear value, not {op}")
    if not math.isfinite(clear_value):
        raise ValueError("field 'clear_value': must be a finite number")
    if op in (">", ">=") and clear_value > value:
        raise ValueError(
            f"field 'clear_value': {clear_value:g} is on the wrong side of value {value:g}; "
            f"with op {op!r} the alarm clears when the value falls, so clear_value must be "
            f"<= value"
        )
    if op in ("<", "<=") and clear_value < value:
        raise ValueError(
            f"field 'clear_value': {clear_value:g} is on the wrong side of value {value:g}; "
            f"with op {op!r} the alarm clears when the value rises, so clear_value must be "
            f">= value"
        )


def _check_template(field: str, template: str, sample: Mapping[str, Any]) -> None:
    """Fail at load time, not when the first alarm fires at 3 a.m."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"field {field!r}: not a valid template: {exc}") from None
    for name in names:
        root = re.split(r"[.\[]", name, maxsplit=1)[0]
        if root not in _TEMPLATE_FIELDS:
            raise ValueError(
                f"field {field!r}: unknown placeholder {{{name}}}; "
                f"use {', '.join('{' + f + '}' for f in sorted(_TEMPLATE_FIELDS))}"
            )
    try:
        template.format(**sample)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise ValueError(f"field {field!r}: template does not format: {exc}") from None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Model):
    """One ``when`` condition: ``<signal> <op> <value>``, checked on the same sample."""

    signal: str
    op: CompareOp
    value: Scalar | list[Scalar]

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Condition:
        spec = _signal_spec("signal", self.signal, _catalog(info))
        _check_comparison(spec, self.op, self.value)
        return self


class _RuleBase(_Model):
    id: Annotated[str, Field(pattern=_RULE_ID)]
    """Stable id: alarms are stored and deduplicated under it. Lower case, digits, ``_.-``."""
    severity: Severity
    message: str
    """Template for raised events, e.g. ``"Coolant {value:.1f} C above {threshold} C"``."""
    clear_message: str = _DEFAULT_CLEAR_MESSAGE
    description: str = ""
    enabled: bool = True
    for_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    """The raise condition must hold this long (sample time) before the alarm is raised."""
    clear_for_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    """The clear condition must hold this long before the alarm clears."""
    max_gap_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    """Override of the file's ``max_gap_s`` for this rule."""
    when: tuple[Condition, ...] = ()
    """All must hold on a sample for the rule to apply to it (see docs/rules.md)."""

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every signal the rule reads (its own and its ``when`` conditions')."""
        raise NotImplementedError

    @property
    def direction(self) -> int:
        """+1 when larger values are worse (peak = max), -1 when smaller are, 0 otherwise."""
        op = getattr(self, "op", "")
        return 1 if op in (">", ">=") else -1 if op in ("<", "<=") else 0

    def _check_templates(self, unit: str, value: Any, signal: str) -> None:
        sample = {
            "vin": "WVWZZZ1KZNT000001",
            "rule_id": self.id,
            "severity": self.severity,
            "signal": signal,
            "unit": unit,
            "value": value,
            "threshold": getattr(self, "value", 0.0),
            "clear_value": getattr(self, "clear_value", None),
            "duration_s": 30.0,
            "peak": value if self.direction else None,
        }
        _check_template("message", self.message, sample)
        _check_template("clear_message", self.clear_message, sample)


class ThresholdRule(_RuleBase):
    """``<signal> <op> <value>`` for ``for_s``; clears when ``<signal> <op> <clear_value>`` is
    no longer true (hysteresis) for ``clear_for_s``."""

    kind: Literal["threshold"]
    signal: str
    unit: str | None = None
    """Optional check: must equal the catalog's unit of ``signal`` (e.g. ``Celsius``, ``kPa``)."""
    op: CompareOp
    value: Scalar | list[Scalar]
    clear_value: Annotated[float, Field(allow_inf_nan=False)] | None = None

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.signal, *(c.signal for c in self.when))

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> ThresholdRule:
        spec = _signal_spec("signal", self.signal, _catalog(info))
        _check_unit(self.unit, spec)
        _check_comparison(spec, self.op, self.value)
        if isinstance(self.value, float | int) and not isinstance(self.value, bool):
            _check_clear_value(self.op, float(self.value), self.clear_value)
            if self.clear_value is not None:
                _check_in_range("clear_value", self.clear_value, spec)
        elif self.clear_value is not None:
            raise ValueError("field 'clear_value': only numeric thresholds have a clear value")
        sample: Any = {"float": 1.5, "int": 1.0, "bool": True}.get(spec.kind, "OFF")
        self._check_templates(spec.unit or "", sample, self.signal)
        return self


class SpreadRule(_RuleBase):
    """``max(signals) - min(signals) <op> <value>`` on samples that carry all ``signals``."""

    kind: Literal["spread"]
    signals: Annotated[tuple[str, ...], Field(min_length=2)]
    unit: str | None = None
    op: Literal[">", ">="] = ">"
    value: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    clear_value: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None

    @property
    def inputs(self) -> tuple[str, ...]:
        return (*self.signals, *(c.signal for c in self.when))

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> SpreadRule:
        catalog = _catalog(info)
        if len(set(self.signals)) != len(self.signals):
            raise ValueError("field 'signals': a signal is listed twice")
        specs = [_signal_spec(f"signals[{i}]", p, catalog) for i, p in enumerate(self.signals)]
        for i, spec in enumerate(specs):
            if spec.kind not in ("float", "int"):
                raise ValueError(f"field 'signals[{i}]': {spec.path} is not numeric")
        units = sorted({str(spec.unit) for spec in specs})
        if len(units) > 1:
            raise ValueError(
                f"field 'signals': a spread needs one unit, these have {', '.join(units)}"
            )
        _check_unit(self.unit, specs[0])
        _check_clear_value(self.op, self.value, self.clear_value)
        self._check_templates(specs[0].unit or "", 0.05, ", ".join(self.signals))
        return self


class RateRule(_RuleBase):
    """Least-squares slope of ``signal`` over the last ``window_s``, in unit per ``per``,
    compared with ``<op> <value>`` (negative values: falling)."""

    kind: Literal["rate"]
    signal: str
    unit: str | None = None
    """Optional check of the signal's unit; ``value`` is in this unit per ``per``."""
    window_s: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    per: Literal["s", "min", "h"] = "s"
    op: OrderOp
    value: Annotated[float, Field(allow_inf_nan=False)]
    clear_value: Annotated[float, Field(allow_inf_nan=False)] | None = None

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.signal, *(c.signal for c in self.when))

    @property
    def per_seconds(self) -> float:
        """Seconds in one ``per`` unit: the slope per second is multiplied by this."""
        return _PER_SECONDS[self.per]

    @property
    def bucket_ms(self) -> int:
        """Width of one of the window's :data:`RATE_BUCKETS` buckets."""
        return max(1, math.ceil(self.window_s * 1000 / RATE_BUCKETS))

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> RateRule:
        spec = _signal_spec("signal", self.signal, _catalog(info))
        if spec.kind not in ("float", "int"):
            raise ValueError(f"field 'signal': {spec.path} is not numeric; a rate needs numbers")
        _check_unit(self.unit, spec)
        _check_clear_value(self.op, self.value, self.clear_value)
        self._check_templates(f"{spec.unit or ''}/{self.per}", -1.5, self.signal)
        return self


Rule = Annotated[ThresholdRule | SpreadRule | RateRule, Field(discriminator="kind")]


class RuleSet(_Model):
    """A validated rules file. ``rules`` keeps file order; ids are unique."""

    version: Literal[1] = 1
    max_gap_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] = DEFAULT_MAX_GAP_S
    """Default for every rule: a gap between samples longer than this breaks a duration."""
    rules: tuple[Rule, ...]

    @model_validator(mode="after")
    def _unique_ids(self) -> RuleSet:
        seen: dict[str, int] = {}
        for index, rule in enumerate(self.rules):
            if rule.id in seen:
                raise ValueError(
                    f"rule {rule.id!r}: duplicate id (rules[{seen[rule.id]}] and rules[{index}])"
                )
            seen[rule.id] = index
        return self

    @property
    def enabled_rules(self) -> tuple[ThresholdRule | SpreadRule | RateRule, ...]:
        return tuple(rule for rule in self.rules if rule.enabled)

    @property
    def signals(self) -> tuple[str, ...]:
        """Every signal the enabled rules read, in first-use order: the columns a backfill must
        read from the archive (besides ``vin``, ``ts`` and ``received_at``)."""
        return tuple(dict.fromkeys(path for rule in self.enabled_rules for path in rule.inputs))

    def get(self, rule_id: str) -> ThresholdRule | SpreadRule | RateRule:
        """The rule with id ``rule_id``; ``KeyError`` if there is none."""
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    def gap_ms(self, rule: ThresholdRule | SpreadRule | RateRule) -> int:
        """The rule's maximum gap between samples in ms (its own, else the file's)."""
        return round((rule.max_gap_s if rule.max_gap_s is not None else self.max_gap_s) * 1000)

    @classmethod
    def from_data(
        cls,
        data: Any,
        *,
        catalog: Mapping[str, SignalSpec] | None = None,
        source: str = "<data>",
    ) -> RuleSet:
        """Validate already-parsed data (e.g. a JSON body); raises :class:`RulesFileError`."""
        if not isinstance(data, Mapping):
            raise RulesFileError(source, ["the file must be a mapping with a 'rules' list"])
        try:
            return cls.model_validate(data, context={"catalog": catalog or CATALOG})
        except ValidationError as exc:
            # Field errors stop pydantic before the duplicate-id check; report both at once.
            duplicates = _duplicate_ids(data.get("rules"))
            problems = list(dict.fromkeys(_describe(exc, data) + duplicates))
            raise RulesFileError(source, problems) from None

    @classmethod
    def from_yaml_text(
        cls,
        text: str,
        *,
        catalog: Mapping[str, SignalSpec] | None = None,
        source: str = "<text>",
    ) -> RuleSet:
        """Parse and validate YAML text; raises :class:`RulesFileError`."""
        return cls.from_data(parse_rules_yaml(text, source=source), catalog=catalog, source=source)


def parse_rules_yaml(text: str, *, source: str = "<text>") -> Any:
    """YAML text as data, read the way rules files are read (YAML 1.2 booleans, duplicate keys
    rejected); raises :class:`RulesFileError` for invalid YAML."""
    try:
        return yaml.load(text, Loader=_RulesLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise RulesFileError(source, [f"not valid YAML: {exc}"]) from None


def load_rules(
    path: str | os.PathLike[str], *, catalog: Mapping[str, SignalSpec] | None = None
) -> RuleSet:
    """Read and validate a rules file; raises ``OSError`` or :class:`RulesFileError`."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    return RuleSet.from_yaml_text(text, catalog=catalog, source=str(path))


def load_default_rules() -> RuleSet:
    """The rules shipped in ``diagnostics/default_rules.yaml``."""
    return load_rules(DEFAULT_RULES_PATH)


def _duplicate_ids(raw_rules: Any) -> list[str]:
    if not isinstance(raw_rules, list):
        return []
    first: dict[Any, int] = {}
    problems = []
    for index, raw in enumerate(raw_rules):
        rule_id = raw.get("id") if isinstance(raw, Mapping) else None
        if not isinstance(rule_id, str):
            continue
        if rule_id in first:
            problems.append(
                f"rule {rule_id!r}: duplicate id (rules[{first[rule_id]}] and rules[{index}])"
            )
        else:
            first[rule_id] = index
    return problems


def _describe(exc: ValidationError, data: Mapping[str, Any]) -> list[str]:
    """Pydantic errors as ``rule 'id' (rules[i]): field 'x': problem`` lines."""
    raw_rules = data.get("rules")
    kinds = {"threshold", "spread", "rate"}
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        where = ""
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            index = loc[1]
            rule_id = None
            if isinstance(raw_rules, list) and isinstance(raw_rules[index], Mapping):
                rule_id = raw_rules[index].get("id")
            where = f"rule {rule_id!r} (rules[{index}])" if rule_id else f"rules[{index}]"
            loc = loc[2:]
            if loc and loc[0] in kinds:
                loc = loc[1:]  # the discriminated-union tag is not a field the operator wrote
        path = ""
        for part in loc:
            if isinstance(part, int):
                path += f"[{part}]"
            else:
                path += ("." if path else "") + str(part)
        if path and not message.startswith("field "):
            message = f"field {path!r}: {message}"
        elif path:
            message = f"{path}: {message}"
        problems.append(f"{where}: {message}" if where else message)
    return problems


class _RulesLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and an error on duplicate keys."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]


_RulesLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RulesLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)
