"""The object store of software images: a local directory by default, or any pyarrow
filesystem by URL (``s3://bucket/prefix``, ``gs://...``, ``file:///...``), which covers
S3-compatible stores (MinIO, Ceph) with ``?endpoint_override=...``.

Images are content-addressed (``sha256/<hex>``): an upload streams to a temporary object while
its sha256 and length are computed, then moves to its address, so a half-written upload is
never visible and the same bytes uploaded twice are stored once.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

CHUNK = 1024 * 1024


class ImageTooLarge(ValueError):
    pass


@dataclass(frozen=True)
class StoredObject:
    key: str
    sha256: str
    length: int


class ObjectStore:
    def __init__(self, location: str) -> None:
        if "://" in location:
            self.fs, self.root = pafs.FileSystem.from_uri(location)
        else:
            Path(location).mkdir(parents=True, exist_ok=True)
            self.fs, self.root = pafs.LocalFileSystem(), str(Path(location).resolve())
        self.location = location
        self.fs.create_dir(self._path("tmp"), recursive=True)

    def _path(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{key}"

    async def put_stream(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> StoredObject:
        """Store an upload; refuses (and removes) one longer than ``max_bytes``."""
        tmp = f"tmp/{uuid.uuid4().hex}"
        digest, length = hashlib.sha256(), 0
        try:
            with self.fs.open_output_stream(self._path(tmp)) as out:
                async for chunk in chunks:
                    length += len(chunk)
                    if length > max_bytes:
                        raise ImageTooLarge(f"the image is larger than {max_bytes} bytes")
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            self._delete(tmp)
            raise
        return self._commit(tmp, digest.hexdigest(), length)

    def put_bytes(self, data: bytes) -> StoredObject:
        tmp = f"tmp/{uuid.uuid4().hex}"
        with self.fs.open_output_stream(self._path(tmp)) as out:
            out.write(data)
        return self._commit(tmp, hashlib.sha256(data).hexdigest(), len(data))

    def _commit(self, tmp: str, sha256: str, length: int) -> StoredObject:
        key = f"sha256/{sha256}"
        if self.fs.get_file_info(self._path(key)).type == pafs.FileType.NotFound:
            self.fs.create_dir(self._path("sha256"), recursive=True)
            self.fs.move(self._path(tmp), self._path(key))
        else:
            self._delete(tmp)  # the same bytes are stored already
        return StoredObject(key=key, sha256=sha256, length=length)

    def _delete(self, key: str) -> None:
        with contextlib.suppress(OSError):  # FileNotFoundError is an OSError
            self.fs.delete_file(self._path(key))

    def size(self, key: str) -> int | None:
        info = self.fs.get_file_info(self._path(key))
        return None if info.type == pafs.FileType.NotFound else int(info.size)

    def read_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start..end`` inclusive, in chunks."""
        with self.fs.open_input_file(self._path(key)) as src:
            src.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = src.read(min(CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    def read(self, key: str) -> bytes:
        with self.fs.open_input_file(self._path(key)) as src:
            return bytes(src.read())
