"""The dashboard's Jinja2 environment: templates from ``fleet_server/templates``, autoescaped.

Every value a page shows (device ids, tags, model versions, messages) came from a device or an
operator, so escaping is on for every template and an undefined name is an error rather than
an empty string: a typo in a template fails its test instead of hiding a field.
"""

from __future__ import annotations

from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from fleet_server.alerts import ago
from fleet_server.api.deps import CSRF_FIELD

environment = jinja2.Environment(
    loader=jinja2.PackageLoader("fleet_server", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters["ago"] = ago
environment.globals["csrf_field"] = CSRF_FIELD
templates = Jinja2Templates(env=environment)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
"""Every page's policy: the pages use only the server's own files (no inline script or style),
so a value that escaped escaping still could not run a script, load from elsewhere, or post
a form to another site; and no other site may frame a page (clickjacking the buttons)."""


def render(request: Request, name: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    """The page `name` with `context`; every page gets `csrf` (None: no logout form) and
    `is_admin` (whether the viewer may press buttons that change something)."""
    context.setdefault("csrf", None)
    context.setdefault("is_admin", False)
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
