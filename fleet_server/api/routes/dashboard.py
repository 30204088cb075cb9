"""The dashboard: server-rendered pages with a little inline script, no CDN, no framework.

``/login`` takes an API token and opens a server-side session: the cookie holds only the
session's signed id (HttpOnly, SameSite=Strict, Secure over HTTPS); ``POST /logout`` (with the
session's CSRF token) ends it on the server. ``/`` is the fleet overview, ``/devices/{id}`` a
device's health charts and recent readings with their crops, ``/live`` the live readings feed
(server-sent events from ``/api/v1/readings/stream``, which ends when its session or token does),
``/alerts`` what needs attention. Every page needs a live session; without one (no cookie, a
forged, ended or expired one) a page redirects to ``/login``, while the API answers 401. HTML
only: the JSON the pages load lives with its resource (``routes/readings.py``,
``routes/alerts.py``).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session

from fleet_server import crud
from fleet_server.alerts import ago, alerts_of
from fleet_server.api.deps import (
    COOKIE,
    CSRF_FIELD,
    Caller,
    SessionDep,
    SettingsDep,
    cookie_caller,
    from_another_origin,
    get_settings,
    refused_as_cross_site,
    served_over_https,
    token_usable,
)
from fleet_server.models import Device, HealthSample, Reading, utcnow
from fleet_server.security import (
    hash_token,
    new_session_id,
    sign_session,
)
from fleet_server.settings import ServerSettings

router = APIRouter(tags=["dashboard"])

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d2430}
header{background:#1d2430;color:#fff;padding:.6em 1.2em;display:flex;gap:1.5em;align-items:center}
header a{color:#cfe3ff;text-decoration:none}main{padding:1em 1.2em}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #dde;padding:.35em .5em;
text-align:left}.online{color:#0a7d32;font-weight:600}.offline{color:#b3261e;font-weight:600}
.card{display:inline-block;border:1px solid #dde;border-radius:6px;padding:.6em 1em;margin:.3em}
.big{font-size:1.8em;font-weight:700}img.crop{height:40px}svg{background:#f6f8fb}
header form{margin:0}header button{background:none;border:0;color:#cfe3ff;font:inherit;
cursor:pointer;padding:0}
"""


def _page(title: str, body: str, csrf: str | None = None) -> HTMLResponse:
    # Logging out changes state, so it is a POST carrying the session's CSRF token; the token
    # is also in a meta tag for scripts that send X-CSRF-Token.
    meta, logout = "", ""
    if csrf is not None:
        token = html.escape(csrf)
        meta = f"<meta name='csrf-token' content='{token}'>"
        logout = (
            "<form method='post' action='/logout'>"
            f"<input type='hidden' name='{CSRF_FIELD}' value='{token}'>"
            "<button>Log out</button></form>"
        )
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'>{meta}<title>{html.escape(title)} · "
        f"RoadSign Fleet</title><style>{STYLE}</style></head><body><header>"
        "<strong>RoadSign Fleet</strong><a href='/'>Fleet</a><a href='/live'>Live</a>"
        f"<a href='/alerts'>Alerts</a><a href='/docs'>API</a>{logout}"
        f"</header><main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    )


def _status(device: Device) -> str:
    return f"<span class='{html.escape(device.status)}'>{html.escape(device.status)}</span>"


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_page(error: str | None = None) -> HTMLResponse:
    """The login form."""
    message = "<p class='offline'>That token is not valid.</p>" if error else ""
    return _page(
        "Log in",
        f"{message}<form method='post' action='/login'>"
        "<label>API token <input type='password' name='token' autofocus "
        "size='50'></label> <button>Log in</button></form>",
    )


@router.post("/login", include_in_schema=False)
def login(
    token: Annotated[str, Form()], request: Request, session: SessionDep, settings: SettingsDep
) -> Response:
    """Check the token; open a session that lasts `auth.session_ttl_s` (never past the token)."""
    if from_another_origin(request, settings):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-origin login refused")
    now = utcnow()
    found = crud.find_token(session, token_hash=hash_token(token))
    if found is None or not token_usable(found, now):
        return RedirectResponse("/login?error=1", status_code=status.HTTP_303_SEE_OTHER)
    ttl = settings.auth.session_ttl_s
    expires = now + timedelta(seconds=ttl)
    if found.expires_at is not None:
        expires = min(expires, found.expires_at)
    session_id = new_session_id()
    crud.create_dashboard_session(
        session, session_hash=hash_token(session_id), token_id=found.id or 0, expires_at=expires
    )
    response = RedirectResponse("/", status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        COOKIE,
        sign_session(session_id, settings.auth.secret_key.get_secret_value()),
        max_age=int((expires - now).total_seconds()),
        httponly=True,
        samesite="strict",
        secure=served_over_https(request, settings),
    )
    return response


@router.post("/logout", include_in_schema=False)
def logout(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    csrf_token: Annotated[str | None, Form()] = None,
) -> Response:
    """End the session on the server (its cookie is refused from now on) and drop the cookie."""
    caller = cookie_caller(request, session, settings)
    if caller is not None and caller.dashboard_session is not None:
        refused = refused_as_cross_site(request, caller, settings, presented=csrf_token)
        if refused is not None:
            raise HTTPException(status.HTTP_403_FORBIDDEN, refused)
        crud.end_dashboard_session(
            session, session_id=int(caller.dashboard_session.id or 0), now=utcnow()
        )
    return _to_login(request, settings)


def _to_login(request: Request, settings: ServerSettings) -> Response:
    response = RedirectResponse("/login", status_code=status.HTTP_303_SEE_OTHER)
    if COOKIE in request.cookies:
        response.delete_cookie(
            COOKIE, httponly=True, samesite="strict", secure=served_over_https(request, settings)
        )
    return response


def _guard(request: Request, session: Session) -> Caller | Response:
    """The viewer of a page, or the way to the login form (forgetting a dead cookie)."""
    settings = get_settings(request)
    caller = cookie_caller(request, session, settings)
    return caller if caller is not None else _to_login(request, settings)


def _csrf(request: Request, viewer: Caller) -> str | None:
    return viewer.csrf(get_settings(request))


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def overview(request: Request, session: SessionDep) -> Response:
    """Every device: status, model, last seen, fps."""
    if isinstance(viewer := _guard(request, session), Response):
        return viewer
    devices = crud.list_devices(session)
    counts = crud.count_devices_by_status(session)
    fps = {}
    for device in devices:
        health = crud.latest_health(session, device_id=device.device_id)
        fps[device.device_id] = health.fps if health else 0.0
    cards = "".join(
        f"<div class='card'><div class='big'>{counts.get(s, 0)}</div>{s}</div>"
        for s in ("online", "offline", "unknown", "decommissioned")
    )
    rows = "".join(
        f"<tr><td><a href='/devices/{html.escape(d.device_id)}'>{html.escape(d.device_id)}</a>"
        f"</td><td>{_status(d)}</td><td>{html.escape(d.profile or '')}</td>"
        f"<td>{html.escape(d.model_version or '-')}</td><td>{ago(d.last_seen_at)}</td>"
        f"<td>{fps[d.device_id]:.1f}</td></tr>"
        for d in devices
    )
    return _page(
        "Fleet",
        f"{cards}<table><tr><th>device</th><th>status</th><th>profile</th>"
        f"<th>model</th><th>last seen</th><th>fps</th></tr>{rows}</table>",
        _csrf(request, viewer),
    )


def _chart(samples: Sequence[HealthSample], field: str, label: str) -> str:
    values = [float(getattr(s, field) or 0) for s in samples]
    if not values:
        return ""
    top = max(max(values), 1e-9)
    width, height = 480, 120
    points = " ".join(
        f"{i * width / max(len(values) - 1, 1):.1f},{height - v / top * (height - 10):.1f}"
        for i, v in enumerate(values)
    )
    return (
        f"<figure><figcaption>{html.escape(label)} (max {top:.1f})</figcaption>"
        f"<svg width='{width}' height='{height}' role='img' aria-label='{html.escape(label)}'>"
        f"<polyline fill='none' stroke='#2b6cb0' stroke-width='2' points='{points}'/>"
        "</svg></figure>"
    )


def _reading_row(reading: Reading, *, has_crop: bool) -> str:
    value = f"{reading.value:g} {reading.unit}" if reading.value is not None else ""
    crop = (
        f"<img class='crop' alt='crop' src='/api/v1/readings/{reading.id}/crop'>"
        if has_crop
        else ""
    )
    return (
        f"<tr><td>{reading.observed_at:%Y-%m-%d %H:%M:%S}</td>"
        f"<td>{html.escape(reading.sign_type)}</td><td>{html.escape(value)}</td>"
        f"<td>{reading.confidence:.2f}</td><td>{crop}</td></tr>"
    )


@router.get("/devices/{device_id}", response_class=HTMLResponse, include_in_schema=False)
def device_page(device_id: str, request: Request, session: SessionDep) -> Response:
    """Health charts and recent readings of one device."""
    if isinstance(viewer := _guard(request, session), Response):
        return viewer
    device = crud.get_device(session, device_id=device_id)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}")
    samples = crud.health_series(session, device_id=device_id, since=None, until=None, limit=500)
    readings = crud.query_readings(session, where=crud.ReadingFilter(device_id=device_id), limit=50)
    charts = "".join(
        _chart(samples, f, label)
        for f, label in (
            ("fps", "frames per second"),
            ("cpu_percent", "CPU %"),
            ("rss_mb", "memory MiB"),
            ("outbox_depth", "outbox depth"),
        )
    )
    cropped = crud.readings_with_crops(session, ids=[int(r.id or 0) for r in readings])
    rows = "".join(_reading_row(r, has_crop=r.id in cropped) for r in readings)
    return _page(
        f"Device {device_id}",
        f"<p>{_status(device)} · model {html.escape(device.model_version or '-')} · "
        f"last seen {ago(device.last_seen_at)}</p>{charts}<h2>Recent readings</h2>"
        "<table><tr><th>time (UTC)</th><th>sign</th><th>value</th><th>confidence</th>"
        f"<th>crop</th></tr>{rows}</table>",
        _csrf(request, viewer),
    )


@router.get("/live", response_class=HTMLResponse, include_in_schema=False)
def live_page(request: Request, session: SessionDep) -> Response:
    """Readings as they arrive."""
    if isinstance(viewer := _guard(request, session), Response):
        return viewer
    script = """
const table = document.getElementById('feed');
const source = new EventSource('/api/v1/readings/stream');
source.onmessage = (event) => {
  const r = JSON.parse(event.data);
  const row = table.insertRow(1);
  for (const text of [r.observed_at, r.device_id, r.sign_type,
                      r.value === null ? '' : r.value + ' ' + r.unit, r.confidence.toFixed(2)]) {
    row.insertCell().textContent = text;
  }
};
// An EventSource retries a stream that ended, but gives up on an error answer (503 when the
// server is at http.max_live_streams, 401 when the session ended): try the page again later.
source.onerror = () => {
  if (source.readyState === EventSource.CLOSED) setTimeout(() => location.reload(), 30000);
};"""
    return _page(
        "Live readings",
        "<table id='feed'><tr><th>time</th><th>device</th><th>sign</th>"
        f"<th>value</th><th>confidence</th></tr></table><script>{script}</script>",
        _csrf(request, viewer),
    )


@router.get("/alerts", response_class=HTMLResponse, include_in_schema=False)
def alerts_page(request: Request, session: SessionDep) -> Response:
    """Devices offline, dropping messages, slow, failing cameras, too hot."""
    if isinstance(viewer := _guard(request, session), Response):
        return viewer
    rows = "".join(
        f"<tr><td>{html.escape(d)}</td><td class='{'offline' if s == 'critical' else ''}'>"
        f"{s}</td><td>{html.escape(m)}</td></tr>"
        for d, s, m in alerts_of(session)
    )
    body = (
        f"<table><tr><th>device</th><th>severity</th><th>alert</th></tr>{rows}</table>"
        if rows
        else "<p>No alerts.</p>"
    )
    return _page("Alerts", body, _csrf(request, viewer))
