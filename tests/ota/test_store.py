"""The image object store (content-addressed, streamed uploads) and HTTP range parsing."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ota.ranges import ByteRange, RangeNotSatisfiable, parse_range
from ota.store import ImageTooLarge, ObjectStore


async def chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("url", [None, "file://"])
def test_streamed_upload_is_content_addressed(tmp_path: Path, url: str | None) -> None:
    location = str(tmp_path / "images") if url is None else f"file://{tmp_path / 'images'}"
    store = ObjectStore(location)
    data = bytes(range(256)) * 50
    stored = asyncio.run(store.put_stream(chunks(data), max_bytes=1 << 20))
    assert stored.sha256 == hashlib.sha256(data).hexdigest() and stored.length == len(data)
    assert stored.key == f"sha256/{stored.sha256}"
    assert store.read(stored.key) == data and store.size(stored.key) == len(data)
    assert b"".join(store.read_range(stored.key, 100, 2099)) == data[100:2100]
    again = store.put_bytes(data)  # the same bytes are stored once
    assert again == stored
    assert list((tmp_path / "images" / "tmp").iterdir()) == []


def test_an_oversized_upload_leaves_nothing_behind(tmp_path: Path) -> None:
    store = ObjectStore(str(tmp_path / "images"))
    with pytest.raises(ImageTooLarge):
        asyncio.run(store.put_stream(chunks(b"x" * 5000), max_bytes=4096))
    assert list((tmp_path / "images" / "tmp").iterdir()) == []
    assert not (tmp_path / "images" / "sha256").exists()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=900-", ByteRange(900, 999)),
        ("bytes=-100", ByteRange(900, 999)),
        ("bytes=-5000", ByteRange(0, 999)),
        ("bytes=990-5000", ByteRange(990, 999)),
        ("bytes=0-1,5-9", None),  # several ranges: the whole body
        ("items=0-9", None),
        ("bytes=9-0", None),
        ("bytes=-", None),
    ],
)
def test_range_parsing(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)
    assert ByteRange(10, 19).content_range(1000) == "bytes 10-19/1000"
