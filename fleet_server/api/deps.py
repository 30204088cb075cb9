"""Request dependencies: the database session, the settings, and who is calling.

A caller proves itself with an API token as a bearer token, or with the dashboard's session
cookie (a signed session id; the session lives in the database and dies with its token, at
logout or at expiry). A request carrying the cookie is the browser's ambient credential: when
it changes anything it must also carry the session's CSRF token and must not come from another
origin. A bearer token is never ambient, so bearer requests need neither.

The TUF routes also admit devices: HTTP Basic with the device's broker user (its id) and
password, checked against the hash the broker checks (`TufReaderDep`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlmodel import Session

from fleet_server import crud
from fleet_server.credentials import CheckedPasswords, mosquitto_hash, new_password
from fleet_server.models import ApiToken, DashboardSession, Device, utcnow
from fleet_server.rollouts.nudge import NudgePublisher
from fleet_server.security import (
    SAFE_METHODS,
    Role,
    basic_credentials,
    cross_origin,
    csrf_matches,
    csrf_token,
    hash_token,
    is_live,
    origin_of,
    role_allows,
    verified_session_id,
)
from fleet_server.settings import ServerSettings

# HTTP bearer, not the OAuth2 password flow: tokens are issued by admins (POST /api/v1/tokens,
# roadsign-fleet tokens issue), never exchanged for a user name and password, so the spec
# advertises no token URL.
bearer = HTTPBearer(
    auto_error=False,
    description="An API token (rsf_...), issued by an admin, as `Authorization: Bearer <token>`.",
)
COOKIE = "roadsign_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


def get_session(request: Request) -> Iterator[Session]:
    """A session for the request, committed if the handler succeeds."""
    engine: Engine = request.app.state.engine
    with Session(engine, expire_on_commit=False) as session:
        yield session
        session.commit()


def get_settings(request: Request) -> ServerSettings:
    """The settings object the app was built with."""
    settings: ServerSettings = request.app.state.settings
    return settings


# scope="function": commit before the answer leaves. FastAPI's default ends a yield dependency
# only after the response is sent, so a client acting on a 2xx at once (a login followed by a
# page) could find nothing committed yet, and a failed commit would follow a success answer.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[ServerSettings, Depends(get_settings)]


def get_nudge_publisher(request: Request) -> NudgePublisher | None:
    """Where this process sends OTA nudges; None where it sends none."""
    publisher: NudgePublisher | None = request.app.state.nudge_publisher
    return publisher


def get_engine(request: Request) -> Engine:
    """The app's engine, for work in transactions of its own (the rollout outbox)."""
    engine: Engine = request.app.state.engine
    return engine


NudgeDep = Annotated[NudgePublisher | None, Depends(get_nudge_publisher)]
EngineDep = Annotated[Engine, Depends(get_engine)]


@dataclass(frozen=True)
class Caller:
    """Who is calling: a live token, and the dashboard session when the cookie brought it."""

    token: ApiToken
    session_id: str | None = None
    dashboard_session: DashboardSession | None = None

    def csrf(self, settings: ServerSettings) -> str | None:
        """The CSRF token of the dashboard session (None for bearer callers)."""
        if self.session_id is None:
            return None
        return csrf_token(self.session_id, settings.auth.secret_key.get_secret_value())


def token_usable(token: ApiToken | None, now: datetime) -> bool:
    """Whether a token exists, is not revoked and has not expired at `now`."""
    return token is not None and is_live(
        ended_at=token.revoked_at, expires_at=token.expires_at, now=now
    )


def live_token(session: Session, secret: str) -> ApiToken | None:
    """The token whose secret `secret` is, if it exists and is still usable now."""
    token = crud.find_token(session, token_hash=hash_token(secret))
    return token if token_usable(token, utcnow()) else None


def own_origin(request: Request, settings: ServerSettings) -> str:
    """The server's origin: the configured public one, else this request's scheme and Host."""
    return settings.auth.public_origin or origin_of(str(request.base_url)) or ""


def served_over_https(request: Request, settings: ServerSettings) -> bool:
    """Whether browsers reach the dashboard over HTTPS (the session cookie is then Secure)."""
    return own_origin(request, settings).startswith("https://")


def cookie_caller(request: Request, session: Session, settings: ServerSettings) -> Caller | None:
    """The caller the session cookie proves, or None (no cookie, forged, ended, expired)."""
    cookie = request.cookies.get(COOKIE)
    key = settings.auth.secret_key.get_secret_value()
    session_id = verified_session_id(cookie, key) if cookie else None
    if session_id is None:
        return None
    found = crud.find_dashboard_session(session, session_hash=hash_token(session_id))
    if found is None:
        return None
    login, token = found
    now = utcnow()
    if not (
        is_live(ended_at=login.ended_at, expires_at=login.expires_at, now=now)
        and token_usable(token, now)
    ):
        return None
    return Caller(token=token, session_id=session_id, dashboard_session=login)


def from_another_origin(request: Request, settings: ServerSettings) -> bool:
    """Whether the browser says `request` comes from a page of another origin than ours."""
    return cross_origin(
        origin=request.headers.get("origin"),
        referer=request.headers.get("referer"),
        own_origin=own_origin(request, settings),
    )


def refused_as_cross_site(
    request: Request, caller: Caller, settings: ServerSettings, *, presented: str | None
) -> str | None:
    """Why a state-changing request on the session cookie is refused (None: it may proceed).

    `presented` is the CSRF token the request carried: the ``X-CSRF-Token`` header for the
    API, a form field for the dashboard's own forms.
    """
    if from_another_origin(request, settings):
        return "cross-origin request refused"
    key = settings.auth.secret_key.get_secret_value()
    if caller.session_id is None or not csrf_matches(presented, caller.session_id, key):
        return f"a state-changing request on the dashboard session needs its {CSRF_HEADER}"
    return None


def _unauthorised() -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "a valid API token is required",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _caller(
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    if "authorization" in request.headers:
        # An explicit credential, good or bad, is the one judged: no fallback to the cookie.
        token = live_token(session, credentials.credentials) if credentials is not None else None
        if token is None:
            raise _unauthorised()
        return Caller(token=token)
    caller = cookie_caller(request, session, settings)
    if caller is None:
        raise _unauthorised()
    if request.method not in SAFE_METHODS:
        refused = refused_as_cross_site(
            request, caller, settings, presented=request.headers.get(CSRF_HEADER)
        )
        if refused is not None:
            raise HTTPException(status.HTTP_403_FORBIDDEN, refused)
    return caller


def still_authorised(session: Session, caller: Caller) -> bool:
    """Whether the caller's token (and dashboard session) still hold now.

    Long-lived responses (the live feed) call this every few seconds and end when it fails.
    """
    now = utcnow()
    if not token_usable(session.get(ApiToken, caller.token.id), now):
        return False
    if caller.dashboard_session is None:
        return True
    login = session.get(DashboardSession, caller.dashboard_session.id)
    return login is not None and is_live(
        ended_at=login.ended_at, expires_at=login.expires_at, now=now
    )


def require(role: Role) -> Callable[..., Caller]:
    """A dependency that admits callers whose token may act as `role`."""

    def check(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
        if not role_allows(caller.token.role, role):  # type: ignore[arg-type]
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs a {role} token")
        return caller

    return check


ReaderDep = Annotated[Caller, Depends(require("reader"))]
AdminDep = Annotated[Caller, Depends(require("admin"))]


def found_device(device: Device | None, device_id: str) -> Device:
    """`device`, or a 404 naming `device_id` when there is none."""
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}")
    return device


def existing_device(session: Session, device_id: str) -> Device:
    """The enrolled device `device_id`, or a 404 naming it (routes under /devices/{id})."""
    return found_device(crud.get_device(session, device_id=device_id), device_id)


TUF_REALM = 'Basic realm="roadsign-tuf", charset="UTF-8"'
DECOMMISSIONED = "decommissioned"


@dataclass(frozen=True)
class TufReader:
    """Who reads the TUF repository: a device (its id), or None for a token or an open one."""

    device_id: str | None


def get_checked_passwords(request: Request) -> CheckedPasswords:
    """This process's cache of recently verified device passwords."""
    checked: CheckedPasswords = request.app.state.checked_passwords
    return checked


_UNKNOWN_DEVICE_HASH = mosquitto_hash(new_password())
"""Checked for an unknown device, so that the answer takes as long as for a wrong password."""


def _tuf_unauthorised() -> HTTPException:
    # One answer for every failure: it must not tell an unknown device from a wrong password.
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "the TUF repository needs a device's broker user and password (HTTP Basic) or an API token",
        headers={"WWW-Authenticate": f'{TUF_REALM}, Bearer realm="roadsign-tuf"'},
    )


def _device_reader(
    session: Session, checked: CheckedPasswords, device_id: str, password: str
) -> TufReader | None:
    device = crud.get_device(session, device_id=device_id)
    usable = device is not None and device.status != DECOMMISSIONED
    digest = device.broker_password_hash if device is not None and usable else None
    matched = checked.matches(
        device_id, password, digest or _UNKNOWN_DEVICE_HASH, now=time.monotonic()
    )
    return TufReader(device_id=device_id) if matched and digest is not None else None


def tuf_reader(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    checked: Annotated[CheckedPasswords, Depends(get_checked_passwords)],
) -> TufReader:
    """The reader of a /tuf request, or 401 before any byte is served (`tuf.device_auth`)."""
    if settings.tuf.device_auth == "none":
        return TufReader(device_id=None)
    scheme, _, value = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "basic":
        credentials = basic_credentials(value)
        if credentials is not None:
            reader = _device_reader(session, checked, *credentials)
            if reader is not None:
                return reader
    elif scheme.lower() == "bearer" and live_token(session, value.strip()) is not None:
        return TufReader(device_id=None)
    raise _tuf_unauthorised()


TufReaderDep = Annotated[TufReader, Depends(tuf_reader)]
