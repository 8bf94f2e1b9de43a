"""What every scenario shares: the seed file ``loadtest.run_locust`` writes (credentials,
VINs, ids, pseudonyms) and the telemetry bodies it pre-generated with the simulator.

The locust process finds the seed file through ``FLEET_LOADTEST_SEED``. It is read once, at
test start (``loadtest/locustfile.py``), so users only hand out what is already in memory:
no simulation, encoding or compression in the request loop.

Telemetry file format (``telemetry.bin``, next to the seed file): records of a 17-byte ASCII
VIN, a 4-byte big-endian length and that many bytes of one gzip-compressed JSON message, in
the order the vehicle sends them.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import struct
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

SEED_ENV = "FLEET_LOADTEST_SEED"
VIN_LENGTH = 17
_LENGTH = struct.Struct(">I")
T = TypeVar("T")


@dataclass(frozen=True)
class VehicleSeed:
    vin: str
    token: str
    ecu_id: str
    """The ECU the launched campaign updates (what the vehicle reports about)."""


@dataclass(frozen=True)
class CenterSeed:
    center_id: str
    code: str
    token: str


class Roster(Generic[T]):
    """Hands out items round-robin, so that N users of a kind take N different items while
    there are enough (gevent runs users in one thread: ``next`` on a counter is atomic)."""

    def __init__(self, items: Iterable[T]) -> None:
        self.items = list(items)
        if not self.items:
            raise ValueError("nothing to hand out")
        self._next = itertools.count()

    def take(self) -> T:
        return self.items[next(self._next) % len(self.items)]


@dataclass
class SeedData:
    vehicles: Roster[VehicleSeed]
    centers: Roster[CenterSeed]
    operator_token: str
    campaign_ids: list[str]
    insurer_token: str
    pseudonyms: list[str]
    telemetry: dict[str, list[bytes]] = field(default_factory=dict)


def write_seed(path: Path, seed: dict[str, Any]) -> None:
    path.write_text(json.dumps(seed, indent=1))


def write_bodies(path: Path, bodies: Iterable[tuple[str, bytes]]) -> int:
    """Write ``(vin, gzip body)`` records; returns how many."""
    count = 0
    with path.open("wb") as out:
        for vin, body in bodies:
            encoded = vin.encode("ascii")
            if len(encoded) != VIN_LENGTH:
                raise ValueError(f"not a VIN: {vin!r}")
            out.write(encoded + _LENGTH.pack(len(body)) + body)
            count += 1
    return count


def read_bodies(path: Path) -> dict[str, list[bytes]]:
    """The bodies of :func:`write_bodies`, per VIN in sending order."""
    data = path.read_bytes()
    bodies: dict[str, list[bytes]] = defaultdict(list)
    for vin, body in _records(data):
        bodies[vin].append(body)
    return dict(bodies)


def _records(data: bytes) -> Iterator[tuple[str, bytes]]:
    at = 0
    while at < len(data):
        vin = data[at : at + VIN_LENGTH].decode("ascii")
        (length,) = _LENGTH.unpack_from(data, at + VIN_LENGTH)
        start = at + VIN_LENGTH + _LENGTH.size
        yield vin, data[start : start + length]
        at = start + length


@functools.cache
def seed_data() -> SeedData:
    """The seed of this run (read once per process)."""
    path = os.environ.get(SEED_ENV)
    if not path:
        raise RuntimeError(
            f"{SEED_ENV} is not set: start the load test with `python -m loadtest.run_locust`, "
            "which seeds a stack and writes the file"
        )
    seed_path = Path(path)
    raw = json.loads(seed_path.read_text())
    return SeedData(
        vehicles=Roster(VehicleSeed(**v) for v in raw["vehicles"]),
        centers=Roster(CenterSeed(**c) for c in raw["centers"]),
        operator_token=raw["operator_token"],
        campaign_ids=list(raw["campaign_ids"]),
        insurer_token=raw["insurer_token"],
        pseudonyms=list(raw["pseudonyms"]),
        telemetry=read_bodies(seed_path.parent / raw["telemetry_file"]),
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
