"""The dashboard: server-rendered Jinja2 pages (``fleet_server/templates``, autoescaped) with a
little script from ``/static``; no CDN, no framework. Charts and the map are server-side SVG.

``/login`` takes an API token and opens a server-side session: the cookie holds only the
session's signed id (HttpOnly, SameSite=Strict, Secure over HTTPS); ``POST /logout`` (with the
session's CSRF token) ends it on the server. ``/`` is the fleet overview, ``/devices/{id}`` a
device's health charts and recent readings with their crops, ``/map`` where signs were read,
``/models`` the published model versions, ``/rollouts`` and ``/rollouts/{id}`` the staged
rollouts with their operator buttons (``POST /rollouts/{id}/{command}``, admins only, with the
session's CSRF token), ``/live`` the live readings feed (server-sent events from
``/api/v1/readings/stream``, which ends when its session or token does), ``/alerts`` what needs
attention. Every page needs a live session; without one (no cookie, a forged, ended or expired
one) a page redirects to ``/login``, while the API answers 401. HTML only: the JSON the pages
load lives with its resource (``routes/readings.py``, ``routes/alerts.py``).
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session

from fleet_protocol.taxonomy import SignType
from fleet_server import crud
from fleet_server.alerts import alerts_of
from fleet_server.api.charts import health_charts
from fleet_server.api.deps import (
    COOKIE,
    Caller,
    EngineDep,
    NudgeDep,
    SessionDep,
    SettingsDep,
    cookie_caller,
    from_another_origin,
    get_settings,
    refused_as_cross_site,
    served_over_https,
    token_usable,
)
from fleet_server.api.readings_map import readings_map
from fleet_server.api.templating import render
from fleet_server.exceptions import RolloutCommandRefused, RolloutNotFound, RolloutStateInvalid
from fleet_server.models import utcnow
from fleet_server.rollouts import requests
from fleet_server.rollouts.driver import load
from fleet_server.rollouts.engine import allowed_commands
from fleet_server.rollouts.values import RolloutCommand
from fleet_server.security import hash_token, new_session_id, role_allows, sign_session
from fleet_server.settings import ServerSettings

router = APIRouter(tags=["dashboard"])
CHART_SAMPLES = 500
"""Health samples a device page charts: the newest, at a report a minute about eight hours."""
EVENTS_SHOWN = 100
"""Lines of a rollout's audit log its page shows: the newest."""
OTA_SHOWN = 20
"""OTA status reports a device page lists: the newest."""
MAP_READINGS = 2000
"""Readings the map draws at most: the newest that match."""
ROLLOUT_BUTTONS = (
    RolloutCommand.START,
    RolloutCommand.PAUSE,
    RolloutCommand.RESUME,
    RolloutCommand.ABORT,
    RolloutCommand.ROLLBACK,
)


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_page(request: Request, error: str | None = None) -> HTMLResponse:
    """The login form."""
    return render(request, "login.html", title="Log in", error=bool(error))


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


def _page(request: Request, viewer: Caller, name: str, **context: Any) -> HTMLResponse:
    """A page for a logged-in viewer: its CSRF token (logout, forms) and whether it is an admin."""
    return render(
        request,
        name,
        csrf=viewer.csrf(get_settings(request)),
        is_admin=role_allows(viewer.token.role, "admin"),  # type: ignore[arg-type]
        **context,
    )


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def overview(request: Request, session: SessionDep) -> Response:
    """Every device: status, model, last seen, fps; the model versions the fleet runs; how
    many alerts are raised."""
    if isinstance(viewer := _guard(request, session), Response):
        return viewer
    devices = crud.list_devices(session)
    versions = Counter(d.model_version or "-" for d in devices if d.status != "decommissioned")
    fps = {}
    for device in devices:
        health = crud.latest_health(session, device_id=device.device_id)
        fps[device.device_id] = health.fps if health else 0.0
    return _page(
        request,
        viewer,
        "overview.html",
        title="Fleet",
        devices=devices,
        counts=crud.count_devices_by_status(session),
        fps=fps,
        versions=sorted(versions.items()),
        alerts=len(alerts_of(session)),
    )


@router.get("/devices/{device_id}", response_class=HTMLResponse, include_in_schema=False)
def device_page(device_id: str, request: Request, session: SessionDep) -> Response:
    """Health charts, recent readings and the OTA history of one device."""
    if isinstance(viewer := _guard(request, session), Response):
        return viewer
    device = crud.get_device(session, device_id=device_id)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}")
    samples = crud.recent_health(session, device_id=device_id, limit=CHART_SAMPLES)
    readings = crud.query_readings(session, where=crud.ReadingFilter(device_id=device_id), limit=50)
    return _page(
        request,
        viewer,
        "device.html",
        title=f"Device {device_id}",
        device=device,
        charts=health_charts(samples),
        readings=readings,
        cropped=crud.readings_with_crops(session, ids=[int(r.id or 0) for r in readings]),
        ota=crud.ota_status_history(session, device_id=device_id, limit=OTA_SHOWN),
    )


@router.get("/live", response_class=HTMLResponse, include_in_schema=False)
def live_page(request: Request, session: SessionDep) -> Response:
    """Readings as they arrive."""
    if isinstance(viewer := _guard(request, session), Response):
        return viewer
    return _page(request, viewer, "live.html", title="Live readings")


@router.get("/alerts", response_class=HTMLResponse, include_in_schema=False)
def alerts_page(request: Request, session: SessionDep) -> Response:
    """Devices offline, dropping messages, slow, failing cameras, too hot."""
    if isinstance(viewer := _guard(request, session), Response):
        return viewer
    return _page(request, viewer, "alerts.html", title="Alerts", alerts=alerts_of(session))


@router.get("/models", response_class=HTMLResponse, include_in_schema=False)
def models_page(request: Request, session: SessionDep) -> Response:
    """Published model versions: sha256, lineage (MLflow run, registered model, metrics) and
    the devices running each."""
    if isinstance(viewer := _guard(request, session), Response):
        return viewer
    models = crud.list_model_versions(session)
    return _page(
        request,
        viewer,
        "models.html",
        title="Models",
        models=models,
        running=crud.devices_running(session, versions=[m.version for m in models]),
        sha256=crud.target_sha256s(session, paths=[m.target_path for m in models]),
    )


@router.get("/rollouts", response_class=HTMLResponse, include_in_schema=False)
def rollouts_page(request: Request, session: SessionDep) -> Response:
    """Every rollout, newest first: status, stage, progress."""
    if isinstance(viewer := _guard(request, session), Response):
        return viewer
    rollouts, unreadable = [], []
    for row in crud.list_rollouts(session):
        try:
            rollouts.append(requests.detail(row))
        except RolloutStateInvalid as e:  # one damaged row must not hide the others
            unreadable.append((row.id, str(e)))
    return _page(
        request, viewer, "rollouts.html", title="Rollouts", rollouts=rollouts, unreadable=unreadable
    )


def _rollout_page(
    request: Request,
    session: Session,
    viewer: Caller,
    rollout_id: str,
    *,
    refused: str | None = None,
) -> HTMLResponse:
    try:
        row = requests.existing(session, rollout_id)
        detail = requests.detail(row)
    except RolloutNotFound as e:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(e)) from e
    except RolloutStateInvalid as e:
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR, f"stored rollout unusable: {e}"
        ) from e
    state = load(row)
    events = crud.rollout_events(session, rollout_id=rollout_id, after_id=0, limit=10_000)
    return _page(
        request,
        viewer,
        "rollout.html",
        status_code=status.HTTP_409_CONFLICT if refused else status.HTTP_200_OK,
        title=f"Rollout {rollout_id}",
        rollout=detail,
        stages=list(zip(state.spec.stages, state.stage_ends, strict=True)),
        policy=state.spec.policy,
        commands=[c.value for c in ROLLOUT_BUTTONS],
        allowed={c.value for c in allowed_commands(detail.status)},
        events=events[-EVENTS_SHOWN:],
        refused=refused,
    )


@router.get("/rollouts/{rollout_id}", response_class=HTMLResponse, include_in_schema=False)
def rollout_page(rollout_id: str, request: Request, session: SessionDep) -> Response:
    """One rollout: stages, gate values against their thresholds, every device, the audit log,
    and the operator's buttons (disabled for readers)."""
    if isinstance(viewer := _guard(request, session), Response):
        return viewer
    return _rollout_page(request, session, viewer, rollout_id)


@router.post("/rollouts/{rollout_id}/{command}", include_in_schema=False)
def rollout_command(
    rollout_id: str,
    command: RolloutCommand,
    request: Request,
    session: SessionDep,
    engine: EngineDep,
    settings: SettingsDep,
    publisher: NudgeDep,
    csrf_token: Annotated[str | None, Form()] = None,
) -> Response:
    """A rollout button: the same command as ``POST /api/v1/rollouts/{id}/{command}``, from a
    form carrying the session's CSRF token; back to the rollout's page."""
    if isinstance(viewer := _guard(request, session), Response):
        return viewer
    refused = refused_as_cross_site(request, viewer, settings, presented=csrf_token)
    if refused is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, refused)
    if not role_allows(viewer.token.role, "admin"):  # type: ignore[arg-type]
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs an admin token")
    # The command steps the rollout in transactions of its own: end this one's read first.
    session.commit()
    try:
        requests.run_command(engine, settings, publisher, rollout_id, command, utcnow())
    except RolloutNotFound as e:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(e)) from e
    except RolloutCommandRefused as e:
        return _rollout_page(request, session, viewer, rollout_id, refused=str(e))
    return RedirectResponse(f"/rollouts/{rollout_id}", status_code=status.HTTP_303_SEE_OTHER)


def _moment(name: str, text: str | None) -> datetime | None:
    """A time from the map's form: ISO 8601, UTC where it names no zone (datetime-local)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as e:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"{name}: not a time: {text!r}"
        ) from e
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _number(name: str, text: str | None) -> float | None:
    if not text:
        return None
    try:
        number = float(text)
    except ValueError as e:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"{name}: not a number: {text!r}"
        ) from e
    if not math.isfinite(number):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{name}: not finite")
    return number


@router.get("/map", response_class=HTMLResponse, include_in_schema=False)
def map_page(
    request: Request,
    session: SessionDep,
    sign_type: str | None = None,
    device_id: str | None = None,
    value: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Response:
    """Where signs were read: the newest positioned readings on a plain grid, filtered by sign
    type, value, device and time (the form's empty fields filter nothing)."""
    if isinstance(viewer := _guard(request, session), Response):
        return viewer
    where = crud.ReadingFilter(
        device_id=device_id or None,
        sign_type=sign_type or None,
        value=_number("value", value),
        since=_moment("since", since),
        until=_moment("until", until),
        # Only readings with a position: a bound on latitude leaves out those without one.
        min_lat=-90.0,
        max_lat=90.0,
    )
    readings = crud.query_readings(session, where=where, limit=MAP_READINGS)
    return _page(
        request,
        viewer,
        "map.html",
        title="Readings map",
        drawn=readings_map(readings),
        shown=len(readings),
        limit=MAP_READINGS,
        sign_types=[t.value for t in SignType],
        device_ids=[d.device_id for d in crud.list_devices(session)],
        chosen={
            "sign_type": sign_type or "",
            "device_id": device_id or "",
            "value": value or "",
            "since": since or "",
            "until": until or "",
        },
    )
