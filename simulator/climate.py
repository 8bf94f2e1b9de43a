"""Regions and their outside air temperature: a seasonal and a diurnal cycle plus a few days
of "weather" (a sum of slow sinusoids whose phases come from the region code, so every
vehicle in a region sees the same weather)."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

_DAY_S = 86_400.0
_YEAR_S = 365.2425 * _DAY_S
_WEATHER_PERIODS_D = (2.9, 5.3, 11.7)
_WEATHER_AMPLITUDES_C = (2.2, 1.6, 1.2)
_GRID_MS = 60_000


@dataclass(frozen=True)
class Region:
    code: str
    """ISO 3166-2 subdivision, e.g. ``DE-BY``."""
    city: str
    time_zone: str
    """IANA time zone."""
    lat: float
    lon: float
    temp_mean_c: float
    temp_seasonal_c: float
    """Half the difference between the mean of the warmest and the coldest month."""
    temp_diurnal_c: float
    urban_kmh: float
    highway_kmh: float
    ac_phases: int
    """AC charging: 1 (North America, Japan) or 3 (Europe) phases."""
    ac_phase_voltage: float

    @property
    def country(self) -> str:
        return self.code.split("-", 1)[0]


REGIONS: dict[str, Region] = {
    r.code: r
    for r in (
        Region("US-CA", "Los Angeles", "America/Los_Angeles", 34.05, -118.25,
               18.5, 5.0, 6.0, 56, 113, 1, 240.0),
        Region("US-MI", "Detroit", "America/Detroit", 42.33, -83.05,
               10.0, 12.5, 5.5, 56, 113, 1, 240.0),
        Region("US-TX", "Austin", "America/Chicago", 30.27, -97.74,
               21.0, 8.5, 6.5, 56, 113, 1, 240.0),
        Region("DE-BY", "Munich", "Europe/Berlin", 48.14, 11.58,
               9.0, 9.5, 5.0, 50, 130, 3, 230.0),
        Region("SE-AB", "Stockholm", "Europe/Stockholm", 59.33, 18.07,
               7.5, 10.5, 4.0, 50, 110, 3, 230.0),
        Region("JP-13", "Tokyo", "Asia/Tokyo", 35.68, 139.69,
               16.5, 10.0, 4.5, 40, 100, 1, 200.0),
        Region("AU-NSW", "Sydney", "Australia/Sydney", -33.87, 151.21,
               18.0, 5.0, 4.5, 50, 110, 1, 230.0),
    )
}  # fmt: skip


def air_temperature(region: Region, ts_ms: np.ndarray) -> np.ndarray:
    """Outside air temperature (Celsius) in ``region`` at epoch milliseconds ``ts_ms``."""
    t = np.asarray(ts_ms, dtype=float) / 1000.0
    # Coldest around 20 January in the northern hemisphere, 20 July in the southern.
    season_phase = 2 * math.pi * ((t / _YEAR_S) % 1.0 - 19.0 / 365.0)
    hemisphere = 1.0 if region.lat >= 0 else -1.0
    seasonal = -hemisphere * region.temp_seasonal_c * np.cos(season_phase)
    # Local solar time, warmest at 15:00, coldest around 03:00.
    solar_hour = (t / 3600.0 + region.lon / 15.0) % 24.0
    diurnal = region.temp_diurnal_c * np.cos(2 * math.pi * (solar_hour - 15.0) / 24.0)
    weather = np.zeros_like(t)
    seed = zlib.crc32(region.code.encode())
    for i, (period_d, amplitude) in enumerate(
        zip(_WEATHER_PERIODS_D, _WEATHER_AMPLITUDES_C, strict=True)
    ):
        phase = ((seed >> (8 * i)) & 0xFF) / 255.0 * 2 * math.pi
        weather += amplitude * np.sin(2 * math.pi * t / (period_d * _DAY_S) + phase)
    return region.temp_mean_c + seasonal + diurnal + weather


class AmbientModel:
    """``air_temperature`` for one region as plain-Python scalar maths (much cheaper than numpy
    on the handful of samples in one message), plus a per-vehicle sensor offset."""

    def __init__(self, region: Region, offset_c: float = 0.0) -> None:
        self.region = region
        self.offset_c = offset_c
        seed = zlib.crc32(region.code.encode())
        self._weather = [
            (2 * math.pi / (period_d * _DAY_S), amplitude, ((seed >> (8 * i)) & 0xFF) / 255.0)
            for i, (period_d, amplitude) in enumerate(
                zip(_WEATHER_PERIODS_D, _WEATHER_AMPLITUDES_C, strict=True)
            )
        ]
        self._hemisphere = 1.0 if region.lat >= 0 else -1.0
        self._grid: dict[int, float] = {}

    def many(self, ts_ms: list[int]) -> list[float]:
        """``at`` for each of ``ts_ms``, interpolated linearly between exact values on a fixed
        one-minute grid (the error is far below the sensor noise; the grid is absolute, so the
        result does not depend on how the timestamps are batched)."""
        out = []
        cache = self._grid
        for ts in ts_ms:
            g, rem = divmod(ts, _GRID_MS)
            a = cache.get(g)
            if a is None:
                a = cache[g] = self.at(g * _GRID_MS)
            b = cache.get(g + 1)
            if b is None:
                b = cache[g + 1] = self.at((g + 1) * _GRID_MS)
            out.append(a + (b - a) * (rem / _GRID_MS))
        if len(cache) > 64:
            for key in sorted(cache)[:-8]:
                del cache[key]
        return out

    def at(self, ts_ms: int) -> float:
        r = self.region
        t = ts_ms / 1000.0
        season_phase = 2 * math.pi * ((t / _YEAR_S) % 1.0 - 19.0 / 365.0)
        value = r.temp_mean_c - self._hemisphere * r.temp_seasonal_c * math.cos(season_phase)
        solar_hour = (t / 3600.0 + r.lon / 15.0) % 24.0
        value += r.temp_diurnal_c * math.cos(2 * math.pi * (solar_hour - 15.0) / 24.0)
        for omega, amplitude, phase in self._weather:
            value += amplitude * math.sin(omega * t + phase * 2 * math.pi)
        return value + self.offset_c
