"""FastAPI dependency aliases shared by every router (``SessionDep``, ``SettingsDep``...).

Auth aliases (``CurrentPrincipal``, ``VehicleAuth``, ``require_roles``) live in ``core.auth.deps``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session

from core.config import Settings
from core.db import session_scope


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; committed once when the handler succeeds."""
    with session_scope(request.app.state.engine) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
# scope="function": commit right after the handler returns and *before* the response is sent,
# so a failed commit can never be reported to the client as success.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
