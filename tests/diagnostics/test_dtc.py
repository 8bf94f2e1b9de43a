"""DTC decoding: text and numeric forms, J2012 structure, FTB and the UDS status byte."""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diagnostics.dtc import (
    Dtc,
    DtcFormatError,
    DtcScope,
    DtcStatus,
    DtcSystem,
    code_from_number,
    dtc_from_bytes,
    dtc_from_number,
    ftb_category,
    generic_descriptions,
    parse_dtc,
)

WIRE_FORMAT = re.compile(r"[PCBU][0-3][0-9A-F]{3}(-[0-9A-F]{2})?(:[0-9A-F]{2})?", re.IGNORECASE)
"""The accepted text form, as an independent oracle for the parser (docs/dtc.md)."""

HEX = "0123456789abcdefABCDEF"


@st.composite
def dtc_texts(draw: st.DrawFn) -> str:
    """Any valid text form, in random letter case, with or without FTB and status."""
    code = (
        draw(st.sampled_from("PCBUpcbu"))
        + draw(st.sampled_from("0123"))
        + "".join(draw(st.lists(st.sampled_from(HEX), min_size=3, max_size=3)))
    )
    if draw(st.booleans()):
        code += "-" + "".join(draw(st.lists(st.sampled_from(HEX), min_size=2, max_size=2)))
    if draw(st.booleans()):
        code += ":" + "".join(draw(st.lists(st.sampled_from(HEX), min_size=2, max_size=2)))
    return code


# --- round trips over the whole code space ---


def test_every_16_bit_code_round_trips_through_text() -> None:
    for number in range(0x10000):
        dtc = dtc_from_number(number, with_ftb=False)
        assert parse_dtc(dtc.code).number == number
        assert dtc.to_bytes() == number.to_bytes(2, "big")


@given(dtc_texts())
def test_text_round_trips_through_bytes(text: str) -> None:
    dtc = parse_dtc(text)
    assert dtc.text == text.upper()
    again = dtc_from_bytes(dtc.to_bytes())
    assert again.code == dtc.code
    assert again.status == dtc.status
    # A status needs the 3-byte form, so a status without an FTB comes back with FTB 0x00.
    assert again.ftb == (0 if dtc.ftb is None and dtc.status is not None else dtc.ftb)


@given(st.binary(min_size=2, max_size=4))
def test_any_2_to_4_bytes_decode_and_re_encode(raw: bytes) -> None:
    dtc = dtc_from_bytes(raw)
    assert dtc.to_bytes() == raw
    assert parse_dtc(dtc.text) == dtc


@given(st.integers(min_value=0, max_value=0xFFFFFF))
def test_24_bit_numbers_carry_the_ftb_in_the_low_byte(number: int) -> None:
    dtc = dtc_from_number(number, with_ftb=True)
    assert dtc.number == number >> 8
    assert dtc.ftb == number & 0xFF


@given(st.binary().filter(lambda raw: len(raw) not in (2, 3, 4)))
def test_other_byte_lengths_are_refused(raw: bytes) -> None:
    with pytest.raises(DtcFormatError) as error:
        dtc_from_bytes(raw)
    assert error.value.reason == "bad_length"


@settings(max_examples=500)
@given(st.one_of(st.text(), st.text(alphabet="PCBUpcbu0123456789ABCDEFabcdefXx-: ", max_size=14)))
def test_parser_accepts_exactly_the_documented_format(text: str) -> None:
    if WIRE_FORMAT.fullmatch(text) and text.isascii():
        assert parse_dtc(text).text == text.upper()
    else:
        with pytest.raises(DtcFormatError) as error:
            parse_dtc(text)
        assert isinstance(error.value, ValueError)
        assert error.value.reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("P021", "too_short"),
        ("X0217", "bad_system"),
        (" P0217", "bad_system"),
        ("P4217", "bad_first_digit"),
        ("P02G7", "bad_hex_digit"),
        ("P0217-4", "bad_ftb"),
        ("P0217-XY", "bad_ftb"),
        ("P0217:", "bad_status"),
        ("P0217 ", "bad_suffix"),
        ("P0217:2F-4B", "bad_suffix"),
        ("P02ﬀ", "not_ascii"),
    ],
)
def test_invalid_strings_name_the_problem(text: str, reason: str) -> None:
    with pytest.raises(DtcFormatError) as error:
        parse_dtc(text)
    assert error.value.reason == reason
    assert repr(text) in str(error.value)


def test_non_strings_are_refused_with_the_same_error_type() -> None:
    with pytest.raises(DtcFormatError) as error:
        parse_dtc(217)  # type: ignore[arg-type]
    assert error.value.reason == "not_text"


def test_direct_construction_requires_a_canonical_code() -> None:
    assert Dtc("P0217").code == "P0217"
    with pytest.raises(DtcFormatError):
        Dtc("p0217")
    with pytest.raises(DtcFormatError):
        Dtc("P0217", ftb=256)


# --- structure ---


@pytest.mark.parametrize(
    ("code", "system", "scope"),
    [
        ("P0000", DtcSystem.POWERTRAIN, DtcScope.GENERIC),
        ("P0FFF", DtcSystem.POWERTRAIN, DtcScope.GENERIC),
        ("P1000", DtcSystem.POWERTRAIN, DtcScope.MANUFACTURER),
        ("P1FFF", DtcSystem.POWERTRAIN, DtcScope.MANUFACTURER),
        ("P2000", DtcSystem.POWERTRAIN, DtcScope.GENERIC),
        ("P3000", DtcSystem.POWERTRAIN, DtcScope.MANUFACTURER),
        ("P33FF", DtcSystem.POWERTRAIN, DtcScope.MANUFACTURER),
        ("P3400", DtcSystem.POWERTRAIN, DtcScope.GENERIC),
        ("P3FFF", DtcSystem.POWERTRAIN, DtcScope.GENERIC),
        ("C0035", DtcSystem.CHASSIS, DtcScope.GENERIC),
        ("C1000", DtcSystem.CHASSIS, DtcScope.MANUFACTURER),
        ("C2FFF", DtcSystem.CHASSIS, DtcScope.MANUFACTURER),
        ("C3000", DtcSystem.CHASSIS, DtcScope.RESERVED),
        ("B0001", DtcSystem.BODY, DtcScope.GENERIC),
        ("B1000", DtcSystem.BODY, DtcScope.MANUFACTURER),
        ("B2000", DtcSystem.BODY, DtcScope.MANUFACTURER),
        ("B3FFF", DtcSystem.BODY, DtcScope.RESERVED),
        ("U0100", DtcSystem.NETWORK, DtcScope.GENERIC),
        ("U1000", DtcSystem.NETWORK, DtcScope.MANUFACTURER),
        ("U2000", DtcSystem.NETWORK, DtcScope.MANUFACTURER),
        ("U3000", DtcSystem.NETWORK, DtcScope.RESERVED),
    ],
)
def test_system_and_scope_follow_the_j2012_ranges(
    code: str, system: DtcSystem, scope: DtcScope
) -> None:
    dtc = parse_dtc(code)
    assert (dtc.system, dtc.scope, dtc.generic) == (system, scope, scope is DtcScope.GENERIC)


@pytest.mark.parametrize(
    ("code", "subsystem"),
    [
        ("P0171", "fuel and air metering"),
        ("P0217", "fuel and air metering (injector circuit)"),
        ("P0300", "ignition system or misfire"),
        ("P0420", "auxiliary emission controls"),
        ("P0562", "vehicle speed control, idle control and auxiliary inputs"),
        ("P0606", "computer and auxiliary outputs"),
        ("P0730", "transmission"),
        ("P0A80", "hybrid/EV propulsion"),
        ("P0B00", "hybrid/EV propulsion"),
        ("P0C79", "hybrid/EV propulsion"),
        ("P0D27", "hybrid/EV propulsion"),
        ("P0E00", None),
        ("P2181", "fuel and air metering and auxiliary emission controls"),
        ("P3400", "cylinder deactivation"),
        ("P1300", None),  # manufacturer codes need not follow the grouping
        ("U0100", "network communication (lost communication)"),
        ("U0401", "network data (invalid data received)"),
        ("C0035", None),
    ],
)
def test_subsystem_comes_from_the_third_character(code: str, subsystem: str | None) -> None:
    assert parse_dtc(code).subsystem == subsystem


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("P0217", "over-temperature"),
        ("P2181", "Cooling system"),
        ("P0562", "too low"),
        ("P0AFA", "voltage too low"),
        ("P0A80", "replacement"),
        ("P0301", "cylinder 1"),
        ("P0420", "bank 1"),
        ("C0035", "Left front wheel speed"),
        ("C0750", "tire pressure"),
        ("U0121", "anti-lock brake"),
    ],
)
def test_known_generic_codes_are_described(code: str, words: str) -> None:
    dtc = parse_dtc(code)
    assert dtc.known
    assert dtc.description is not None and words in dtc.description


@pytest.mark.parametrize("code", ["P1ABC", "P0FFF", "B1000", "U3FFF", "C0999"])
def test_unknown_codes_still_decode(code: str) -> None:
    dtc = parse_dtc(code)
    assert (dtc.known, dtc.description, dtc.code) == (False, None, code)


def test_description_table_is_modest_and_covers_generic_codes_only() -> None:
    table = generic_descriptions()
    assert 30 <= len(table) <= 150
    for code, description in table.items():
        dtc = Dtc(code)  # canonical, valid
        assert dtc.generic, code
        assert description.strip() == description and description


# --- FTB and status byte ---


@pytest.mark.parametrize(
    ("ftb", "category", "description"),
    [
        (0x00, "general failure information", "no failure sub-type information"),
        (0x11, "general electrical failures", "circuit shorted to ground"),
        (0x13, "general electrical failures", "circuit open"),
        (0x29, "general signal failures", "signal invalid"),
        (0x31, "FM/PWM (frequency or pulse-width) failures", "no signal"),
        (0x4B, "system internal failures", "over temperature"),
        (0x54, "system programming failures", "calibration missing"),
        (0x64, "algorithm based failures", "signal plausibility failure"),
        (0x7B, "mechanical failures", "fluid level low"),
        (0x87, "bus signal/message failures", "message missing"),
        (0x98, "component failures", "component or system over temperature"),
        (0x0B, "ISO/SAE reserved", None),
        (0xA3, "ISO/SAE reserved", None),
        (0x0F, "manufacturer/supplier specific", "manufacturer/supplier specific"),
        (0xF5, "manufacturer/supplier specific", None),
        (0x5E, "system programming failures", None),
    ],
)
def test_failure_type_byte(ftb: int, category: str, description: str | None) -> None:
    dtc = Dtc("P0217", ftb=ftb)
    assert (dtc.ftb_category, dtc.ftb_description) == (category, description)
    assert dtc.key == f"P0217-{ftb:02X}"


def test_every_ftb_has_a_category() -> None:
    assert all(ftb_category(ftb) for ftb in range(256))


STATUS_BITS = [
    "test_failed",
    "test_failed_this_operation_cycle",
    "pending_dtc",
    "confirmed_dtc",
    "test_not_completed_since_last_clear",
    "test_failed_since_last_clear",
    "test_not_completed_this_operation_cycle",
    "warning_indicator_requested",
]


@pytest.mark.parametrize(("bit", "name"), list(enumerate(STATUS_BITS)))
def test_each_status_bit_has_its_iso_14229_meaning(bit: int, name: str) -> None:
    status = parse_dtc(f"P0562:{1 << bit:02X}").status
    assert status is not None
    assert [getattr(status, other) for other in STATUS_BITS] == [o == name for o in STATUS_BITS]
    assert status.as_dict()[name] is True


def test_status_and_ftb_together() -> None:
    dtc = parse_dtc("p0217-4b:2f")
    assert dtc.text == "P0217-4B:2F"
    assert dtc.key == "P0217-4B"
    assert dtc.status == DtcStatus(0x2F)
    assert dtc.status.confirmed_dtc and dtc.status.pending_dtc and dtc.status.test_failed
    assert not dtc.status.warning_indicator_requested
    assert dtc_from_bytes(bytes([0x02, 0x17, 0x4B, 0x2F])) == dtc


def test_numeric_width_must_be_stated() -> None:
    assert dtc_from_number(0x0217, with_ftb=False).text == "P0217"
    assert dtc_from_number(0x0217, with_ftb=True).text == "P0002-17"
    assert code_from_number(0xC100) == "U0100"
    with pytest.raises(DtcFormatError):
        dtc_from_number(0x10000, with_ftb=False)


def test_as_dict_is_json_ready() -> None:
    data = orjson.loads(orjson.dumps(parse_dtc("P0AFA-16:09").as_dict()))
    assert data["code"] == "P0AFA"
    assert data["key"] == "P0AFA-16"
    assert data["system"] == "powertrain"
    assert data["generic"] is True
    assert data["ftb_description"] == "circuit voltage below threshold"
    assert data["status"]["confirmed_dtc"] is True
