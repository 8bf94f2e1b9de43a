"""Reading NASA C-MAPSS trajectory files (``train_FD00x.txt`` / ``test_FD00x.txt``).

One row per engine cycle, 26 space-separated numbers: unit, cycle, 3 operational settings and
21 sensors (the NASA files end lines with trailing spaces). The reader is strict on purpose: the
window features assume that a unit's rows are contiguous and its cycles run 1, 2, 3, ... without
gaps, so a file that breaks this fails here with the line and the reason instead of giving
quietly wrong features later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

N_SETTINGS = 3
N_SENSORS = 21
N_COLUMNS = 2 + N_SETTINGS + N_SENSORS
SETTING_NAMES = tuple(f"setting_{i}" for i in range(1, N_SETTINGS + 1))
SENSOR_NAMES = tuple(f"s{i}" for i in range(1, N_SENSORS + 1))

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class CmapssFormatError(ValueError):
    """A C-MAPSS file that cannot be read; the message names the file, the line and the fault."""

    def __init__(self, path: Path | str, line: int | None, problem: str) -> None:
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class Trajectories:
    """The cycles of several engines, sorted by unit (contiguous) and then by cycle (1, 2, ...).

    ``settings`` is (rows, 3) and ``sensors`` (rows, 21); ``unit`` and ``cycle`` are per row.
    """

    unit: IntArray
    cycle: IntArray
    settings: FloatArray
    sensors: FloatArray

    @property
    def n_rows(self) -> int:
        return int(self.unit.shape[0])

    @property
    def units(self) -> IntArray:
        """Unit numbers in file order."""
        return self.unit[self.unit_starts]

    @property
    def unit_starts(self) -> IntArray:
        """Row index of the first cycle of each unit."""
        if self.n_rows == 0:
            return np.zeros(0, dtype=np.int64)
        change = np.flatnonzero(self.unit[1:] != self.unit[:-1]) + 1
        return np.concatenate([[0], change]).astype(np.int64)

    @property
    def unit_lengths(self) -> IntArray:
        """Number of cycles of each unit (same order as :attr:`units`)."""
        starts = self.unit_starts
        return np.diff(np.append(starts, self.n_rows)).astype(np.int64)

    @property
    def last_rows(self) -> IntArray:
        """Row index of the last cycle of each unit."""
        return (self.unit_starts + self.unit_lengths - 1).astype(np.int64)

    def position(self) -> IntArray:
        """0-based position of each row inside its unit (cycle - 1 for a valid file)."""
        starts = self.unit_starts
        return np.arange(self.n_rows, dtype=np.int64) - np.repeat(starts, self.unit_lengths)

    def select_units(self, units: npt.ArrayLike) -> Trajectories:
        """The rows of the given units (kept in file order)."""
        mask = np.isin(self.unit, np.asarray(units))
        return self.take_rows(np.flatnonzero(mask))

    def take_rows(self, rows: npt.ArrayLike) -> Trajectories:
        index = np.asarray(rows, dtype=np.int64)
        return Trajectories(
            unit=self.unit[index],
            cycle=self.cycle[index],
            settings=self.settings[index],
            sensors=self.sensors[index],
        )

    def truncate(self, observed_cycles: dict[int, int]) -> Trajectories:
        """Keep the first ``observed_cycles[unit]`` cycles of each listed unit (others dropped)."""
        if not observed_cycles:
            return self.take_rows(np.zeros(0, dtype=np.int64))
        units = np.array(sorted(observed_cycles), dtype=np.int64)
        limits = np.array([observed_cycles[int(u)] for u in units], dtype=np.int64)
        slot = np.minimum(np.searchsorted(units, self.unit), units.size - 1)
        per_row = np.where(units[slot] == self.unit, limits[slot], 0)
        return self.take_rows(np.flatnonzero(self.cycle <= per_row))


def parse_trajectories(text: str, source: Path | str = "<text>") -> Trajectories:
    """Parse the text of a C-MAPSS file; ``source`` only names it in error messages."""
    rows: list[list[float]] = []
    line_numbers: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue  # blank lines (e.g. a final newline twice) carry nothing
        if len(fields) != N_COLUMNS:
            raise CmapssFormatError(
                source,
                number,
                f"expected {N_COLUMNS} space-separated numbers (unit, cycle, {N_SETTINGS} "
                f"settings, {N_SENSORS} sensors), found {len(fields)}",
            )
        values: list[float] = []
        for column, field in enumerate(fields, start=1):
            try:
                value = float(field)
            except ValueError:
                raise CmapssFormatError(
                    source, number, f"column {column} is not a number: {field!r}"
                ) from None
            if not math.isfinite(value):
                raise CmapssFormatError(source, number, f"column {column} is not finite: {field!r}")
            values.append(value)
        for column, name in ((0, "unit"), (1, "cycle")):
            if values[column] != int(values[column]) or values[column] < 1:
                raise CmapssFormatError(
                    source, number, f"{name} must be a positive integer, found {fields[column]!r}"
                )
        rows.append(values)
        line_numbers.append(number)
    if not rows:
        raise CmapssFormatError(source, None, "no data rows (empty file)")
    table = np.asarray(rows, dtype=np.float64)
    trajectories = Trajectories(
        unit=table[:, 0].astype(np.int64),
        cycle=table[:, 1].astype(np.int64),
        settings=np.ascontiguousarray(table[:, 2 : 2 + N_SETTINGS]),
        sensors=np.ascontiguousarray(table[:, 2 + N_SETTINGS :]),
    )
    _check_order(trajectories, np.asarray(line_numbers), source)
    return trajectories


def read_trajectories(path: Path | str) -> Trajectories:
    """Read and validate a C-MAPSS file (see :func:`parse_trajectories`)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="ascii")
    except FileNotFoundError:
        raise CmapssFormatError(file, None, "file not found") from None
    except UnicodeDecodeError as exc:
        raise CmapssFormatError(
            file, None, f"not a plain-text C-MAPSS file (byte {exc.start} is not ASCII)"
        ) from None
    return parse_trajectories(text, file)


def _check_order(
    data: Trajectories, line_numbers: npt.NDArray[np.int64], source: Path | str
) -> None:
    """Each unit's rows contiguous, cycles 1, 2, 3, ...: the window features rely on it."""
    starts = data.unit_starts
    seen: set[int] = set()
    for start in starts.tolist():
        unit = int(data.unit[start])
        if unit in seen:
            raise CmapssFormatError(
                source,
                int(line_numbers[start]),
                f"unit {unit} appears again after other units; a unit's rows must be contiguous",
            )
        seen.add(unit)
    expected = data.position() + 1
    wrong = np.flatnonzero(data.cycle != expected)
    if wrong.size:
        row = int(wrong[0])
        raise CmapssFormatError(
            source,
            int(line_numbers[row]),
            f"unit {int(data.unit[row])}: cycle {int(data.cycle[row])} where {int(expected[row])} "
            "was expected (cycles must start at 1 and increase by 1)",
        )
