"""Vehicle Identification Numbers (ISO 3779): 17 characters, digits and capital letters except
I, O and Q. The check digit (position 9) is mandatory only in North America, so it is checked
only on request."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

VIN_RE = re.compile(r"^[A-HJ-NPR-Z0-9]{17}$")
_TRANSLITERATION = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def vin_problem(vin: str, *, check_digit: bool = False) -> str | None:
    """Return why ``vin`` is not a valid VIN, or None when it is."""
    if len(vin) != 17:
        return f"a VIN has 17 characters, got {len(vin)}"
    if not VIN_RE.fullmatch(vin):
        bad = sorted({c for c in vin if not re.match(r"[A-HJ-NPR-Z0-9]", c)})
        return f"a VIN uses digits and capital letters except I, O, Q; found {''.join(bad)!r}"
    if check_digit and vin[8] != compute_check_digit(vin):
        return f"check digit is {vin[8]!r}, expected {compute_check_digit(vin)!r}"
    return None


def compute_check_digit(vin: str) -> str:
    total = sum(_TRANSLITERATION[c] * w for c, w in zip(vin, _WEIGHTS, strict=True))
    remainder = total % 11
    return "X" if remainder == 10 else str(remainder)


def make_vin(wmi: str, vds: str, year_code: str, plant: str, serial: int) -> str:
    """Build a VIN with a correct check digit from its parts (simulator, tests)."""
    body = f"{wmi}{vds}0{year_code}{plant}{serial:06d}"
    if len(body) != 17:
        raise ValueError(f"VIN parts make {len(body)} characters, expected 17")
    return body[:8] + compute_check_digit(body) + body[9:]


def _validated_vin(vin: str) -> str:
    problem = vin_problem(vin)
    if problem is not None:
        raise ValueError(problem)
    return vin


VinStr = Annotated[
    str,
    # The schema advertises the shape; the validator explains what is wrong in plain words.
    Field(examples=["WVWZZZ1JZ3W386752"], json_schema_extra={"pattern": VIN_RE.pattern}),
    AfterValidator(_validated_vin),
]
"""A VIN field for pydantic models and FastAPI parameters (check digit not required)."""
