"""The FastAPI application: routers, the dashboard's static files, the bootstrap admin token,
Prometheus /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response, status
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import Engine

from fleet_server import crud
from fleet_server.api.metrics import ApiMetrics
from fleet_server.api.routes import (
    alerts,
    dashboard,
    device_config,
    devices,
    health,
    models,
    ota,
    readings,
    rollouts,
    tokens,
    tuf,
)
from fleet_server.api.templating import render
from fleet_server.credentials import CheckedPasswords
from fleet_server.db import session_scope
from fleet_server.exceptions import MqttSetupError
from fleet_server.live_feed import live_feed
from fleet_server.models import utcnow
from fleet_server.observability import make_tracer_provider
from fleet_server.repository.refresher import start_timestamp_refresher
from fleet_server.rollouts.driver import DriverThread
from fleet_server.rollouts.nudge import MqttNudgePublisher, NudgePublisher
from fleet_server.security import hash_token
from fleet_server.services.broker_auth import BrokerSync, make_broker_sync
from fleet_server.settings import ServerSettings

log = logging.getLogger(__name__)


def ensure_bootstrap_token(engine: Engine, settings: ServerSettings) -> None:
    """Store the configured bootstrap admin token's hash; revoke any previous bootstrap token
    and every token it issued.

    Changing ``auth.bootstrap_admin_token`` is how an operator rotates it, so the old one must
    stop working, and with it what it issued: a leaked bootstrap token is rotated precisely to
    cut off what its holder did with it (tokens meant to outlive a rotation are issued with the
    CLI). Only the tokens this start-up revokes take their issued tokens along, so a restart
    never revokes anything more. A configured token that an admin revoked stays revoked:
    start-up never brings a revoked token back.
    """
    digest = hash_token(settings.auth.bootstrap_admin_token.get_secret_value())
    now = utcnow()
    with session_scope(engine) as session:
        token = crud.find_token(session, token_hash=digest)
        if token is None:
            token = crud.create_token(
                session, name="bootstrap-admin", role="admin", token_hash=digest, kind="bootstrap"
            )
        elif token.revoked_at is not None:
            log.warning("the configured bootstrap admin token was revoked; configure a new one")
        revoked = crud.revoke_tokens_of_kind(
            session, kind="bootstrap", keep_id=token.id or 0, now=now
        )
        issued = crud.revoke_issued_by(session, token_ids=revoked, now=now)
    if revoked:
        log.info(
            "revoked previous bootstrap admin token(s) %s and the tokens they issued %s",
            revoked,
            issued,
        )


def _nudge_publisher(settings: ServerSettings) -> MqttNudgePublisher | None:
    """The MQTT publisher of OTA nudges, where this process signs assignments (it holds the
    online key): nudges follow signing. None elsewhere, or if the broker settings are unusable
    (logged: a nudge only hastens what the devices' polls find anyway)."""
    if settings.tuf.online_key_file is None:
        return None
    try:
        return MqttNudgePublisher(settings.broker, settings.rollouts.nudge_client_id).start()
    except MqttSetupError as e:
        log.warning("OTA nudges are off: %s", e)
        return None


def create_app(
    settings: ServerSettings,
    engine: Engine,
    *,
    tracer_provider: TracerProvider | None = None,
    nudge_publisher: NudgePublisher | None = None,
) -> FastAPI:
    """The app, bound to one settings object and one engine (and a tracer provider); OTA
    nudges go through `nudge_publisher`, by default an MQTT one where this process signs."""
    provider = tracer_provider or make_tracer_provider(
        "roadsign-fleet-api", otlp_endpoint=settings.telemetry.otlp_endpoint
    )
    tracer = provider.get_tracer("fleet_server.api")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ensure_bootstrap_token(engine, settings)
        broker: BrokerSync | None = app.state.broker_sync
        if broker is not None:  # the broker accepts exactly the committed fleet, from now
            broker.reconcile()
        refresher = start_timestamp_refresher(engine, settings)
        made = None
        if nudge_publisher is None:
            made = _nudge_publisher(settings)
        publisher = app.state.nudge_publisher = nudge_publisher or made
        driver = None
        if settings.rollouts.enabled:
            driver = DriverThread(engine, settings, publisher).start()
        try:
            yield
        finally:
            if driver is not None:
                driver.stop()
            if made is not None:
                made.close()
            if refresher is not None:
                refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresher
            await feed.close()  # the live feed's one database connection, if it opened it
            if broker is not None:
                broker.close()

    app = FastAPI(
        title="RoadSign Fleet API",
        version="1.0.0",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load from a CDN: /docs below needs none
        redoc_url=None,
        description="Devices, readings and health of a RoadSign fleet. Authenticate "
        "with an API token as a bearer token; admins issue and revoke tokens at /api/v1/tokens.",
    )
    app.state.engine = engine
    app.state.nudge_publisher = nudge_publisher
    app.state.settings = settings
    app.state.checked_passwords = CheckedPasswords(ttl_s=settings.tuf.device_auth_cache_s)
    if settings.tuf.device_auth == "broker_password" and settings.enrolment.broker_auth == "none":
        log.warning(
            "enrolment.broker_auth is none, so devices hold no broker password: only API tokens "
            "can read /tuf (set tuf.device_auth none for an open lab repository)"
        )
    # One follower of new readings for every live stream of this process, opened by the first.
    feed = app.state.live_feed = live_feed(engine, max_streams=settings.http.max_live_streams)

    @app.middleware("http")
    async def refuse_nul_characters(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # PostgreSQL text cannot hold NUL: a query filtering on one failed with a 500.
        if "\x00" in request.url.path or any(
            "\x00" in key or "\x00" in value for key, value in request.query_params.multi_items()
        ):
            return JSONResponse(
                {"detail": "NUL characters are not allowed in the path or query"},
                status_code=status.HTTP_400_BAD_REQUEST,
            )
        return await call_next(request)

    @app.middleware("http")
    async def trace_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        with tracer.start_as_current_span(
            f"{request.method} {request.url.path}", kind=SpanKind.SERVER
        ) as span:
            span.set_attribute("http.request.method", request.method)
            span.set_attribute("url.path", request.url.path)
            response = await call_next(request)
            # The route is known only once routing ran: name the span by its template.
            route = request.scope.get("route")
            if route is not None:
                span.update_name(f"{request.method} {getattr(route, 'path', request.url.path)}")
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(StatusCode.ERROR)
            return response

    app.state.broker_sync = make_broker_sync(settings, engine)
    for module in (
        devices,
        readings,
        health,
        ota,
        device_config,
        alerts,
        tokens,
        models,
        rollouts,
        tuf,
        dashboard,
    ):
        app.include_router(module.router)

    # The dashboard's stylesheet and scripts, public like the login page that uses them.
    app.mount("/static", StaticFiles(packages=[("fleet_server", "static")]), name="static")

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        operations = [
            (method.upper(), path, op.get("summary", ""))
            for path, item in app.openapi()["paths"].items()
            for method, op in item.items()
        ]
        return render(request, "api_docs.html", operations=operations)

    api_metrics = ApiMetrics()

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> PlainTextResponse:
        with session_scope(engine) as session:
            text = api_metrics.render(session)
        return PlainTextResponse(text.decode(), media_type="text/plain; version=0.0.4")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
