"""A small in-process TTL cache in front of token verification.

Ingest verifies a token on every request; the cache turns that database round trip into a dict
lookup. The price is staleness: a credential revoked (or a principal disabled) in another process
keeps working here for at most ``ttl_s`` seconds. Revocation through this process's API drops the
entry at once. Entries never outlive the credential's own ``expires_at``.

The cache key is the sha256 of the token, never the token itself, and only successful
verifications are stored (caching failures would let a flood of random tokens evict real ones).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from core.auth.models import AuthenticatedPrincipal
from core.auth.tokens import token_fingerprint
from core.db import utcnow


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: AuthenticatedPrincipal
    fresh_until: float  # monotonic clock
    expires_at: datetime | None  # the credential's own expiry (wall clock, UTC)


class CredentialCache:
    """Thread-safe TTL cache of verified tokens; ``ttl_s <= 0`` disables it."""

    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def get(self, token: str, *, now: datetime | None = None) -> AuthenticatedPrincipal | None:
        key = token_fingerprint(token)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self._is_stale(entry, now or utcnow()):
                del self._entries[key]
                return None
            return entry.principal

    def put(
        self, token: str, principal: AuthenticatedPrincipal, *, expires_at: datetime | None
    ) -> None:
        if self.ttl_s <= 0:
            return
        entry = _Entry(principal, self._clock() + self.ttl_s, expires_at)
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._make_room()
            self._entries[token_fingerprint(token)] = entry

    def invalidate_credential(self, credential_id: uuid.UUID) -> None:
        self._drop(lambda p: p.credential_id == credential_id)

    def invalidate_principal(self, principal_id: uuid.UUID) -> None:
        self._drop(lambda p: p.principal_id == principal_id)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _is_stale(self, entry: _Entry, now: datetime) -> bool:
        if self._clock() >= entry.fresh_until:
            return True
        return entry.expires_at is not None and now >= entry.expires_at

    def _drop(self, matches: Callable[[AuthenticatedPrincipal], bool]) -> None:
        with self._lock:
            for key in [k for k, e in self._entries.items() if matches(e.principal)]:
                del self._entries[key]

    def _make_room(self) -> None:
        """Drop stale entries; if none are, drop the oldest (dicts keep insertion order)."""
        now = utcnow()
        for key in [k for k, e in self._entries.items() if self._is_stale(e, now)]:
            del self._entries[key]
        if len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
