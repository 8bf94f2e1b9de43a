"""Logging in to the console in the browser, and the session rules behind it over HTTP:
cookie flags, CSRF on changes, roles, logout and revocation ending the session."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from console.web import STATIC_DIR as STATIC
from core.auth.service import verify_token
from core.auth.sessions import SESSION_COOKIE, open_session, resolve_session
from core.config import Settings
from core.db import make_engine, session_scope, utcnow
from core.stack_cli import CONSOLE_OPERATOR, console_credential
from tests.console.conftest import Watched, new_operator


def test_an_operator_logs_in_and_out_in_the_browser(console: Watched, settings: Settings) -> None:
    name, token = new_operator(settings)
    page = console.page
    page.fill("#login-token", "flt_0123456789abcdef_" + "x" * 43)
    page.click("#login-submit")
    page.wait_for_selector("#login-error:has-text('invalid, expired or revoked')")

    console.log_in(token)
    assert page.inner_text("#who") == f"{name} · fleet_operator"
    cookie = next(c for c in page.context.cookies() if c["name"] == SESSION_COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # The script cannot read the session id (HttpOnly).
    assert SESSION_COOKIE not in page.evaluate("document.cookie")
    page.reload()  # the session survives a reload
    page.wait_for_selector(".topbar:not([hidden])")
    console.screenshot("login-overview")

    console.log_out()
    page.reload()
    page.wait_for_selector("#login:not([hidden])")


def test_session_cookie_rules(client: TestClient, settings: Settings) -> None:
    _name, token = new_operator(settings)
    assert client.post("/v1/session", json={"token": "nope"}).status_code == 401
    assert client.post("/v1/session", json={}).status_code == 422
    _vehicle_name, insurer = new_operator(settings, role="insurer")
    refused = client.post("/v1/session", json={"token": insurer})
    assert refused.status_code == 403 and "console is for roles" in refused.json()["detail"]

    login = client.post("/v1/session", json={"token": token})
    assert login.status_code == 201, login.text
    csrf = login.json()["csrf_token"]
    set_cookie = login.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie
    assert client.get("/v1/me").json()["role"] == "fleet_operator"  # the cookie alone reads
    assert client.get("/v1/session").json()["csrf_token"] == csrf

    # A change without the CSRF token is refused before the handler runs; with it, it passes.
    body = {"name": "x", "image_id": "00000000-0000-0000-0000-000000000000", "waves": ["100%"]}
    refused = client.post("/v1/ota/campaigns", json=body)
    assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["detail"]
    wrong = client.post("/v1/ota/campaigns", json=body, headers={"X-CSRF-Token": "0" * 64})
    assert wrong.status_code == 403
    allowed = client.post("/v1/ota/campaigns", json=body, headers={"X-CSRF-Token": csrf})
    assert allowed.status_code == 404, allowed.text  # past auth: the image does not exist

    # Authorization is the API's own: a fleet operator is no admin through the console either.
    assert client.get("/v1/principals").status_code == 403

    assert client.delete("/v1/session").status_code == 403  # logging out needs the token too
    assert client.delete("/v1/session", headers={"X-CSRF-Token": csrf}).status_code == 204
    client.cookies.clear()
    assert client.get("/v1/session").status_code == 401


def test_revoking_the_credential_ends_its_sessions(client: TestClient, settings: Settings) -> None:
    _name, admin = new_operator(settings, role="admin")
    _name, token = new_operator(settings)
    key_id = token.split("_")[1]
    session_id = _log_in(client, token)
    assert client.get("/v1/me").status_code == 200
    client.cookies.clear()
    revoked = client.delete(
        f"/v1/credentials/{key_id}", headers={"Authorization": f"Bearer {admin}"}
    )
    assert revoked.status_code == 200
    client.cookies.set(SESSION_COOKIE, session_id)
    ended = client.get("/v1/me")
    assert ended.status_code == 401 and "log in again" in ended.json()["detail"]
    assert client.get("/v1/session").status_code == 401


def _log_in(client: TestClient, token: str) -> str:
    response = client.post("/v1/session", json={"token": token})
    assert response.status_code == 201, response.text
    return response.cookies[SESSION_COOKIE]


def test_fleet_run_prints_a_working_console_credential(
    client: TestClient, settings: Settings
) -> None:
    first, second = console_credential(settings), console_credential(settings)
    assert first != second  # a fresh credential per run, for the same principal
    for token in (first, second):
        login = client.post("/v1/session", json={"token": token})
        assert login.status_code == 201, login.text
        assert login.json()["principal"]["name"] == CONSOLE_OPERATOR
        assert login.json()["principal"]["role"] == "admin"


def test_sessions_end_after_their_lifetime_or_when_idle(settings: Settings) -> None:
    _name, token = new_operator(settings)
    engine = make_engine(settings)
    idle = timedelta(minutes=30)
    t0 = utcnow()
    try:
        with session_scope(engine) as session:
            principal = verify_token(session, token)
            assert principal is not None
            sid, _row = open_session(session, principal, lifetime=timedelta(hours=8), now=t0)
        with session_scope(engine) as session:
            # Used every 20 minutes, it lives until its lifetime ends, not longer.
            for minutes in range(20, 8 * 60, 20):
                at = t0 + timedelta(minutes=minutes)
                assert resolve_session(session, sid, idle_timeout=idle, now=at) is not None
            end = t0 + timedelta(hours=8)
            assert resolve_session(session, sid, idle_timeout=idle, now=end) is None
        with session_scope(engine) as session:
            sid, _row = open_session(session, principal, lifetime=timedelta(hours=8), now=t0)
            late = t0 + idle + timedelta(seconds=1)
            assert resolve_session(session, sid, idle_timeout=idle, now=late) is None
            assert resolve_session(session, "not-a-session", idle_timeout=idle, now=t0) is None
    finally:
        engine.dispose()


def test_the_console_is_served_by_the_api_with_a_same_origin_policy(client: TestClient) -> None:
    assert client.get("/", follow_redirects=False).headers["location"] == "/console"
    page = client.get("/console")
    assert page.status_code == 200 and 'src="/console/static/app.js"' in page.text
    assert client.head("/console").status_code == 200
    for response in (page, client.get("/console/static/app.js")):
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
    # Nothing in the page's files names another origin.
    for path in sorted(STATIC.rglob("*")):
        if path.suffix in (".html", ".js", ".css"):
            assert "http://" not in path.read_text().replace("http://www.w3.org/2000/svg", "")
            assert "https://" not in path.read_text(), path
