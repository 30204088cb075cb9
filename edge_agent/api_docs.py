"""The local API's constant pages: its OpenAPI document, a docs table and the upload page.

They hold no device data and cost nothing to serve, so they stay reachable without the API
token: a technician opening the upload page types the token into it, and the page sends it.
"""

from __future__ import annotations

from typing import Any

_ERRORS = {
    "400": "Malformed request: bad Content-Length, broken multipart body",
    "401": "The device has an API token and the request did not carry it (WWW-Authenticate: "
    "Bearer)",
    "411": "No Content-Length (chunked bodies are not accepted)",
    "413": "Body, file or declared image size over the device's limits",
    "415": "Not a PNG or JPEG image, or not readable",
    "503": "As many requests as the device serves at once are in progress (Retry-After)",
}


def _responses(ok: dict[str, Any], *errors: str) -> dict[str, Any]:
    return {"200": ok, **{code: {"description": _ERRORS[code]} for code in errors}}


_BINARY = {"type": "string", "format": "binary"}
_READINGS_EXAMPLE = {
    "source": "upload",
    "model": {"version": "2026.12.0", "sha256": "b0776...c1df0"},
    "readings": [
        {
            "sign_type": "speed_limit",
            "value": 50,
            "unit": "km/h",
            "confidence": 0.91,
            "bbox": [412.0, 120.0, 470.0, 178.0],
        }
    ],
}
_TOKEN: list[dict[str, list[str]]] = [{"bearer": []}]

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "RoadSign agent local API",
        "version": "1.1.0",
        "description": "Health, metrics and on-demand sign reading on one device. When the "
        "device has an API token (always, if it listens beyond loopback), every route but "
        "the constant pages needs it as a bearer token.",
    },
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "paths": {
        "/health": {
            "get": {
                "summary": "Current health of the agent",
                "security": _TOKEN,
                "responses": _responses(
                    {
                        "description": "Health as JSON",
                        "content": {
                            "application/json": {
                                "example": {"device_id": "veh-0042", "fps": 61.2, "outbox_depth": 0}
                            }
                        },
                    },
                    "401",
                    "503",
                ),
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "security": _TOKEN,
                "responses": _responses(
                    {"description": "Prometheus text format 0.0.4"}, "401", "503"
                ),
            }
        },
        "/predict": {
            "post": {
                "summary": "Read the signs in one image",
                "security": _TOKEN,
                "requestBody": {
                    "required": True,
                    "content": {
                        "image/jpeg": {"schema": _BINARY},
                        "image/png": {"schema": _BINARY},
                        "multipart/form-data": {
                            "schema": {"type": "object", "properties": {"file": _BINARY}}
                        },
                    },
                },
                "responses": _responses(
                    {
                        "description": "Readings",
                        "content": {"application/json": {"example": _READINGS_EXAMPLE}},
                    },
                    *_ERRORS,
                ),
            }
        },
        "/predict/batch": {
            "post": {
                "summary": "Read the signs in several images (multipart, one part per file, "
                "read one at a time)",
                "security": _TOKEN,
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {"files": {"type": "array", "items": _BINARY}},
                            }
                        }
                    },
                },
                "responses": _responses({"description": "One result per file"}, *_ERRORS),
            }
        },
    },
}

UPLOAD_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>RoadSign agent</title>
<style>body{font-family:sans-serif;margin:2em;max-width:50em}pre{background:#eee;padding:1em}</style>
</head><body><h1>RoadSign agent</h1>
<p><a href="/health">health</a> · <a href="/metrics">metrics</a> · <a href="/docs">API</a></p>
<form id="f"><input type="file" name="files" accept="image/*" multiple>
<input type="password" id="token" placeholder="API token, if the device has one" autocomplete="off">
<button>Read signs</button></form><pre id="out"></pre>
<script>
document.getElementById("f").onsubmit = async (e) => {
  e.preventDefault();
  const token = document.getElementById("token").value;
  const headers = token ? {Authorization: "Bearer " + token} : {};
  const r = await fetch("/predict/batch", {method: "POST", body: new FormData(e.target), headers});
  document.getElementById("out").textContent = JSON.stringify(await r.json(), null, 2);
};
</script></body></html>"""


def docs_page() -> str:
    """A human-readable table of the routes."""
    rows = "".join(
        f"<tr><td><code>{method.upper()} {path}</code></td><td>{op['summary']}</td></tr>"
        for path, item in OPENAPI["paths"].items()
        for method, op in item.items()
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>API</title></head><body>"
        f"<h1>{OPENAPI['info']['title']}</h1><table>{rows}</table>"
        f"<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a></p></body></html>"
    )
