"""Great-circle distances between coordinates, e.g. from a vehicle to nearby service centers."""

from __future__ import annotations

import math

#: Mean Earth radius (IUGG), in kilometres.
EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees, on a spherical Earth
    (within about 0.5 % of the ellipsoidal distance). Validate input with
    :func:`check_coordinates`; this function does not."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = math.radians(lon2 - lon1) / 2
    a = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    # Rounding can push `a` a hair above 1 for antipodal points, where asin would fail.
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, max(0.0, a))))


def check_coordinates(lat: float, lon: float) -> None:
    """ValueError naming the coordinate that is not finite or out of range
    (latitude -90..90, longitude -180..180 degrees)."""
    for name, value, limit in (("latitude", lat, 90.0), ("longitude", lon, 180.0)):
        if not math.isfinite(value):
            raise ValueError(f"{name} {value!r} is not a finite number")
        if not -limit <= value <= limit:
            raise ValueError(f"{name} {value!r} is out of range [-{limit:g}, {limit:g}]")
