"""Decoding of diagnostic trouble codes (DTCs): SAE J2012 / ISO 15031-6 codes, the failure-type
byte (FTB) of SAE J2012-DA / ISO 14229-1 "DTC with FTB", and the ISO 14229-1 (UDS) status byte.

Vehicles report DTCs as strings in ``Vehicle.Diagnostics.DTCList``; diagnostic gateways may also
hand over the numeric UDS form (2 or 3 bytes, optionally followed by the status byte). Both
decode to the same :class:`Dtc`. Nothing here raises for a well-formed but unknown code: an
unassigned or manufacturer-specific code decodes structurally (system, scope, subsystem) with
``description=None``, so the lifecycle can track it. Malformed input raises
:class:`DtcFormatError` (a ``ValueError``) whose ``reason`` is a stable identifier callers can
count. The wire format is documented in ``docs/dtc.md``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from enum import IntFlag, StrEnum
from functools import cache
from importlib import resources
from typing import Any

DTC_LIST_SIGNAL = "Vehicle.Diagnostics.DTCList"
"""The VSS signal that carries DTC strings (a list of strings)."""

_HEX_DIGITS = frozenset("0123456789ABCDEF")
_SYSTEM_LETTERS = "PCBU"
"""Order matters: the index is the value of bits 15-14 of the numeric code."""


class DtcSystem(StrEnum):
    """The vehicle system a code belongs to (its first character)."""

    POWERTRAIN = "powertrain"
    CHASSIS = "chassis"
    BODY = "body"
    NETWORK = "network"


_SYSTEM_BY_LETTER: dict[str, DtcSystem] = {
    "P": DtcSystem.POWERTRAIN,
    "C": DtcSystem.CHASSIS,
    "B": DtcSystem.BODY,
    "U": DtcSystem.NETWORK,
}


class DtcScope(StrEnum):
    """Who defines a code's meaning (SAE J2012 code ranges)."""

    GENERIC = "generic"
    """ISO/SAE controlled: the same meaning on every vehicle (includes ISO/SAE-reserved gaps)."""
    MANUFACTURER = "manufacturer"
    """Manufacturer controlled: the meaning depends on make and model."""
    RESERVED = "reserved"
    """Reserved by the document (C3xxx, B3xxx, U3xxx): no meaning assigned by anyone."""


class DtcFormatError(ValueError):
    """A DTC that cannot be decoded. ``reason`` is stable, so callers can count by it."""

    def __init__(self, reason: str, value: object, detail: str) -> None:
        super().__init__(f"invalid DTC {value!r}: {detail}")
        self.reason = reason
        self.value = value


class DtcStatusBit(IntFlag):
    """The bits of the ISO 14229-1 statusOfDTC byte."""

    TEST_FAILED = 0x01
    TEST_FAILED_THIS_OPERATION_CYCLE = 0x02
    PENDING_DTC = 0x04
    CONFIRMED_DTC = 0x08
    TEST_NOT_COMPLETED_SINCE_LAST_CLEAR = 0x10
    TEST_FAILED_SINCE_LAST_CLEAR = 0x20
    TEST_NOT_COMPLETED_THIS_OPERATION_CYCLE = 0x40
    WARNING_INDICATOR_REQUESTED = 0x80


@dataclass(frozen=True, slots=True)
class DtcStatus:
    """The ISO 14229-1 statusOfDTC byte that an ECU reports with each DTC."""

    byte: int

    def __post_init__(self) -> None:
        if not 0 <= self.byte <= 0xFF:
            raise DtcFormatError("bad_status", self.byte, "status byte must be 0..255")

    def _bit(self, bit: DtcStatusBit) -> bool:
        return bool(self.byte & bit)

    @property
    def test_failed(self) -> bool:
        """testFailed: the most recent test of this DTC failed."""
        return self._bit(DtcStatusBit.TEST_FAILED)

    @property
    def test_failed_this_operation_cycle(self) -> bool:
        """testFailedThisOperationCycle."""
        return self._bit(DtcStatusBit.TEST_FAILED_THIS_OPERATION_CYCLE)

    @property
    def pending_dtc(self) -> bool:
        """pendingDTC: failed during the current or the last completed operation cycle."""
        return self._bit(DtcStatusBit.PENDING_DTC)

    @property
    def confirmed_dtc(self) -> bool:
        """confirmedDTC: the ECU's own debouncing confirmed the fault (stored in memory)."""
        return self._bit(DtcStatusBit.CONFIRMED_DTC)

    @property
    def test_not_completed_since_last_clear(self) -> bool:
        """testNotCompletedSinceLastClear."""
        return self._bit(DtcStatusBit.TEST_NOT_COMPLETED_SINCE_LAST_CLEAR)

    @property
    def test_failed_since_last_clear(self) -> bool:
        """testFailedSinceLastClear."""
        return self._bit(DtcStatusBit.TEST_FAILED_SINCE_LAST_CLEAR)

    @property
    def test_not_completed_this_operation_cycle(self) -> bool:
        """testNotCompletedThisOperationCycle."""
        return self._bit(DtcStatusBit.TEST_NOT_COMPLETED_THIS_OPERATION_CYCLE)

    @property
    def warning_indicator_requested(self) -> bool:
        """warningIndicatorRequested: the ECU asks for a warning lamp (e.g. the MIL)."""
        return self._bit(DtcStatusBit.WARNING_INDICATOR_REQUESTED)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the byte and every bit by its snake_case ISO 14229-1 name."""
        bits = {bit.name.lower(): bool(self.byte & bit) for bit in DtcStatusBit if bit.name}
        return {"byte": self.byte, **bits}


# --- Failure-type byte (SAE J2012-DA, ISO 14229-1 Annex D). Wording is ours (docs/dtc.md). ---

_FTB_CATEGORIES: dict[int, str] = {
    0x0: "general failure information",
    0x1: "general electrical failures",
    0x2: "general signal failures",
    0x3: "FM/PWM (frequency or pulse-width) failures",
    0x4: "system internal failures",
    0x5: "system programming failures",
    0x6: "algorithm based failures",
    0x7: "mechanical failures",
    0x8: "bus signal/message failures",
    0x9: "component failures",
}
_FTB_RESERVED_CATEGORY = "ISO/SAE reserved"
_FTB_MANUFACTURER_CATEGORY = "manufacturer/supplier specific"

_FTB_DESCRIPTIONS: dict[int, str] = {
    0x00: "no failure sub-type information",
    0x01: "general electrical failure",
    0x02: "general signal failure",
    0x03: "frequency or pulse-width signal failure",
    0x04: "system internal failure",
    0x05: "system programming failure",
    0x06: "algorithm based failure",
    0x07: "mechanical failure",
    0x08: "bus signal or message failure",
    0x09: "component failure",
    0x0F: "manufacturer/supplier specific",
    0x11: "circuit shorted to ground",
    0x12: "circuit shorted to battery (supply)",
    0x13: "circuit open",
    0x14: "circuit shorted to ground or open",
    0x15: "circuit shorted to battery or open",
    0x16: "circuit voltage below threshold",
    0x17: "circuit voltage above threshold",
    0x18: "circuit current below threshold",
    0x19: "circuit current above threshold",
    0x1A: "circuit resistance below threshold",
    0x1B: "circuit resistance above threshold",
    0x1C: "circuit voltage out of range",
    0x1D: "circuit current out of range",
    0x1E: "circuit resistance out of range",
    0x1F: "circuit intermittent",
    0x21: "signal amplitude below minimum",
    0x22: "signal amplitude above maximum",
    0x23: "signal stuck low",
    0x24: "signal stuck high",
    0x25: "signal shape or waveform wrong",
    0x26: "signal changes more slowly than expected",
    0x27: "signal changes faster than expected",
    0x28: "signal bias out of range or zero adjustment failed",
    0x29: "signal invalid",
    0x2A: "signal stuck within its range",
    0x2B: "signal cross-coupled with another signal",
    0x2F: "signal erratic",
    0x31: "no signal",
    0x32: "signal low time too short",
    0x33: "signal low time too long",
    0x34: "signal high time too short",
    0x35: "signal high time too long",
    0x36: "signal frequency too low",
    0x37: "signal frequency too high",
    0x38: "signal frequency incorrect",
    0x39: "too few pulses",
    0x3A: "too many pulses",
    0x41: "general checksum failure",
    0x42: "general memory failure",
    0x43: "special memory failure",
    0x44: "data memory failure",
    0x45: "program memory failure",
    0x46: "calibration or parameter memory failure",
    0x47: "watchdog or safety controller failure",
    0x48: "supervision software failure",
    0x49: "internal electronic failure",
    0x4A: "wrong component installed",
    0x4B: "over temperature",
    0x51: "not programmed",
    0x52: "not activated",
    0x53: "deactivated",
    0x54: "calibration missing",
    0x55: "not configured",
    0x61: "signal calculation failure",
    0x62: "signal comparison failure",
    0x63: "circuit or component protection time-out",
    0x64: "signal plausibility failure",
    0x65: "too few signal transitions or events",
    0x66: "too many signal transitions or events",
    0x67: "signal incorrect after an event",
    0x71: "actuator stuck",
    0x72: "actuator stuck open",
    0x73: "actuator stuck closed",
    0x74: "actuator slipping",
    0x75: "emergency position not reachable",
    0x76: "wrong mounting position",
    0x77: "commanded position not reachable",
    0x78: "alignment or adjustment incorrect",
    0x79: "mechanical linkage failure",
    0x7A: "fluid leak or seal failure",
    0x7B: "fluid level low",
    0x81: "invalid serial data received",
    0x82: "alive or sequence counter wrong or not updated",
    0x83: "signal protection value (checksum/CRC) wrong",
    0x84: "signal below its allowed range",
    0x85: "signal above its allowed range",
    0x86: "signal invalid",
    0x87: "message missing",
    0x88: "bus off",
    0x8F: "erratic",
    0x91: "parametric failure",
    0x92: "performance or incorrect operation",
    0x93: "no operation",
    0x94: "unexpected operation",
    0x95: "incorrect assembly",
    0x96: "component internal failure",
    0x97: "operation obstructed or blocked",
    0x98: "component or system over temperature",
}


def ftb_category(ftb: int) -> str:
    """The failure-type category of an FTB (its high nibble; 0x0A-0x0E are reserved and 0x0F and
    0xF0-0xFF manufacturer specific, per SAE J2012-DA)."""
    high, low = ftb >> 4, ftb & 0x0F
    if high == 0xF or (high == 0x0 and low == 0xF):
        return _FTB_MANUFACTURER_CATEGORY
    if high == 0x0 and 0xA <= low <= 0xE:
        return _FTB_RESERVED_CATEGORY
    return _FTB_CATEGORIES.get(high, _FTB_RESERVED_CATEGORY)


def ftb_description(ftb: int) -> str | None:
    """What a failure-type byte says, for the sub-types we describe (None for the rest)."""
    return _FTB_DESCRIPTIONS.get(ftb)


# --- Code structure (SAE J2012 code ranges) ---

_POWERTRAIN_GROUPS_P0: dict[str, str] = {
    "0": "fuel and air metering and auxiliary emission controls",
    "1": "fuel and air metering",
    "2": "fuel and air metering (injector circuit)",
    "3": "ignition system or misfire",
    "4": "auxiliary emission controls",
    "5": "vehicle speed control, idle control and auxiliary inputs",
    "6": "computer and auxiliary outputs",
    "7": "transmission",
    "8": "transmission",
    "9": "transmission",
    "A": "hybrid/EV propulsion",
    "B": "hybrid/EV propulsion",
    "C": "hybrid/EV propulsion",
    "D": "hybrid/EV propulsion",
}
_POWERTRAIN_GROUPS_P2: dict[str, str] = {
    "0": "fuel and air metering and auxiliary emission controls",
    "1": "fuel and air metering and auxiliary emission controls",
    "2": "fuel and air metering and auxiliary emission controls",
    "3": "ignition system or misfire",
    "4": "auxiliary emission controls",
    "5": "auxiliary inputs",
    "6": "computer and auxiliary outputs",
    "7": "transmission",
    "9": "fuel and air metering and auxiliary emission controls",
    "A": "fuel and air metering and auxiliary emission controls",
    "B": "fuel and air metering and auxiliary emission controls",
}
_NETWORK_GROUPS_U0: dict[str, str] = {
    "0": "network electrical",
    "1": "network communication (lost communication)",
    "2": "network communication (lost communication)",
    "3": "network software (incompatibility)",
    "4": "network data (invalid data received)",
}


def code_scope(code: str) -> DtcScope:
    """Generic, manufacturer-specific or reserved, by J2012's ranges for the system letter and
    first digit (and, for P3xxx, the third character: P3000-P33FF manufacturer, P3400-P3FFF
    ISO/SAE). ``code`` must be a canonical 5-character code."""
    letter, digit = code[0], code[1]
    if letter == "P":
        if digit in "02":
            return DtcScope.GENERIC
        if digit == "1":
            return DtcScope.MANUFACTURER
        return DtcScope.MANUFACTURER if code[2] in "0123" else DtcScope.GENERIC
    if digit == "0":
        return DtcScope.GENERIC
    if digit in "12":
        return DtcScope.MANUFACTURER
    return DtcScope.RESERVED


def code_subsystem(code: str) -> str | None:
    """The subsystem group named by the third character, where J2012 assigns one (generic
    powertrain and network codes); None for manufacturer-specific, reserved and other codes,
    whose grouping is not standardised."""
    letter, digit, group = code[0], code[1], code[2]
    if letter == "P":
        if digit == "0":
            return _POWERTRAIN_GROUPS_P0.get(group)
        if digit == "2":
            return _POWERTRAIN_GROUPS_P2.get(group)
        if digit == "3" and group == "4":
            return "cylinder deactivation"
        return None
    if letter == "U" and digit == "0":
        return _NETWORK_GROUPS_U0.get(group)
    return None


@cache
def generic_descriptions() -> dict[str, str]:
    """Code -> description for the generic codes this product explains (our own wording; see
    docs/dtc.md). Loaded once from ``diagnostics/data/dtc_generic.csv``."""
    source = resources.files("diagnostics").joinpath("data", "dtc_generic.csv")
    rows = csv.DictReader(source.read_text(encoding="utf-8").splitlines())
    return {row["code"]: row["description"] for row in rows}


def _describe(code: str) -> str | None:
    # The table holds generic codes only (a test checks it): a description of a manufacturer
    # code would be a guess about someone else's definition.
    return generic_descriptions().get(code)


# --- The decoded DTC ---


@dataclass(frozen=True, slots=True)
class Dtc:
    """One decoded DTC. Construct it with :func:`parse_dtc` or :func:`dtc_from_bytes`, or
    directly from a canonical ``code``; the structural fields are derived from the code."""

    code: str
    """The 5-character J2012 code, upper case (``P0217``)."""
    ftb: int | None = None
    """Failure-type byte (the third byte of a UDS DTC), when reported."""
    status: DtcStatus | None = None
    """ISO 14229-1 status byte, when reported."""
    system: DtcSystem = field(init=False)
    scope: DtcScope = field(init=False)
    subsystem: str | None = field(init=False)
    description: str | None = field(init=False)

    def __post_init__(self) -> None:
        _check_code(self.code)
        if self.ftb is not None and not 0 <= self.ftb <= 0xFF:
            raise DtcFormatError("bad_ftb", self.ftb, "failure-type byte must be 0..255")
        object.__setattr__(self, "system", _SYSTEM_BY_LETTER[self.code[0]])
        object.__setattr__(self, "scope", code_scope(self.code))
        object.__setattr__(self, "subsystem", code_subsystem(self.code))
        object.__setattr__(self, "description", _describe(self.code))

    @property
    def generic(self) -> bool:
        """True for ISO/SAE-controlled codes (the same meaning on every vehicle)."""
        return self.scope is DtcScope.GENERIC

    @property
    def known(self) -> bool:
        """True when we have a description for the code."""
        return self.description is not None

    @property
    def key(self) -> str:
        """The DTC's identity: code plus FTB (``P0217-4B``), without the status byte. In UDS
        the 3-byte DTC (code and FTB) names one fault; the status byte only describes it."""
        return self.code if self.ftb is None else f"{self.code}-{self.ftb:02X}"

    @property
    def text(self) -> str:
        """The canonical wire form, with FTB and status when present (``P0217-4B:2F``)."""
        return self.key if self.status is None else f"{self.key}:{self.status.byte:02X}"

    @property
    def number(self) -> int:
        """The 16-bit numeric code (bits 15-14 system, 13-12 first digit, then three nibbles)."""
        return _SYSTEM_LETTERS.index(self.code[0]) << 14 | int(self.code[1:], 16)

    @property
    def ftb_category(self) -> str | None:
        return None if self.ftb is None else ftb_category(self.ftb)

    @property
    def ftb_description(self) -> str | None:
        return None if self.ftb is None else ftb_description(self.ftb)

    def to_bytes(self) -> bytes:
        """The UDS form: 2 bytes, 3 with the FTB, and the status byte appended when present
        (a status needs the 3-byte form, so a missing FTB is sent as 0x00)."""
        raw = self.number.to_bytes(2, "big")
        if self.ftb is not None or self.status is not None:
            raw += bytes([self.ftb or 0])
        if self.status is not None:
            raw += bytes([self.status.byte])
        return raw

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready representation (for Kafka events and the API)."""
        return {
            "code": self.code,
            "key": self.key,
            "text": self.text,
            "system": self.system.value,
            "scope": self.scope.value,
            "generic": self.generic,
            "subsystem": self.subsystem,
            "description": self.description,
            "known": self.known,
            "ftb": self.ftb,
            "ftb_category": self.ftb_category,
            "ftb_description": self.ftb_description,
            "status": None if self.status is None else self.status.as_dict(),
        }


def _code_problem(code: str) -> tuple[str, str] | None:
    """(reason, detail) when ``code`` is not a canonical upper-case 5-character code."""
    if len(code) < 5:
        return "too_short", "a code has 5 characters, like P0217"
    if code[0] not in _SYSTEM_BY_LETTER:
        return "bad_system", "the first character must be P, C, B or U"
    if code[1] not in "0123":
        return "bad_first_digit", "the second character must be 0-3"
    if not all(ch in _HEX_DIGITS for ch in code[2:5]):
        return "bad_hex_digit", "characters 3-5 must be hexadecimal digits (0-9, A-F)"
    if len(code) != 5:
        return "bad_suffix", "unexpected characters after the code"
    return None


def _check_code(code: object) -> None:
    if not isinstance(code, str):
        raise DtcFormatError("not_text", code, "expected a string")
    problem = _code_problem(code)
    if problem is not None:
        raise DtcFormatError(problem[0], code, problem[1])


def _hex_byte(text: str) -> int | None:
    if len(text) == 2 and all(ch in _HEX_DIGITS for ch in text):
        return int(text, 16)
    return None


def parse_dtc(text: str) -> Dtc:
    """Decode the text form ``CODE[-FTB][:STATUS]``, e.g. ``P0217``, ``p0217-4b``,
    ``P0562:09``, ``P0217-4B:2F``. Case-insensitive; no surrounding whitespace.

    Raises :class:`DtcFormatError` naming what is wrong.
    """
    if not isinstance(text, str):
        raise DtcFormatError("not_text", text, "expected a string")
    if not text:
        raise DtcFormatError("empty", text, "empty string")
    if not text.isascii():  # also keeps str.upper() from changing the length ("ﬀ" -> "FF")
        raise DtcFormatError("not_ascii", text, "only ASCII letters, digits, '-' and ':'")
    upper = text.upper()
    code, rest = upper[:5], upper[5:]
    problem = _code_problem(code)
    if problem is not None:
        raise DtcFormatError(problem[0], text, problem[1])
    ftb: int | None = None
    status: int | None = None
    if rest.startswith("-"):
        ftb = _hex_byte(rest[1:3])
        if ftb is None:
            raise DtcFormatError("bad_ftb", text, "'-' must be followed by two hex digits (FTB)")
        rest = rest[3:]
    if rest.startswith(":"):
        status = _hex_byte(rest[1:3])
        if status is None:
            raise DtcFormatError(
                "bad_status", text, "':' must be followed by two hex digits (status byte)"
            )
        rest = rest[3:]
    if rest:
        raise DtcFormatError(
            "bad_suffix", text, "only '-XX' (FTB) and then ':XX' (status) may follow the code"
        )
    return Dtc(code, ftb, None if status is None else DtcStatus(status))


def code_from_number(number: int) -> str:
    """The 5-character text of a 16-bit numeric code."""
    if not 0 <= number <= 0xFFFF:
        raise DtcFormatError("bad_number", number, "a 2-byte DTC is 0..0xFFFF")
    return f"{_SYSTEM_LETTERS[number >> 14]}{(number >> 12) & 0x3}{number & 0xFFF:03X}"


def dtc_from_bytes(raw: bytes | bytearray | memoryview) -> Dtc:
    """Decode the UDS numeric form: 2 bytes (code), 3 bytes (code + FTB), or 4 bytes (code +
    FTB + status byte, as in a ReadDTCInformation record). Every value of those lengths
    decodes; any other length raises :class:`DtcFormatError`."""
    data = bytes(raw)
    if len(data) not in (2, 3, 4):
        raise DtcFormatError("bad_length", data, "expected 2, 3 or 4 bytes")
    code = code_from_number(int.from_bytes(data[:2], "big"))
    ftb = data[2] if len(data) >= 3 else None
    status = DtcStatus(data[3]) if len(data) == 4 else None
    return Dtc(code, ftb, status)


def dtc_from_number(number: int, *, with_ftb: bool) -> Dtc:
    """Decode an integer DTC: 16 bits, or 24 bits (code << 8 | FTB) when ``with_ftb``. The width
    must be stated because 0x0217 is P0217 as 16 bits but P0002-17 as 24 bits."""
    size = 3 if with_ftb else 2
    if not isinstance(number, int) or not 0 <= number < 1 << (8 * size):
        raise DtcFormatError("bad_number", number, f"expected an integer of {size} bytes")
    return dtc_from_bytes(number.to_bytes(size, "big"))
