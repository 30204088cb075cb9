"""The device's small local HTTP API, on the standard library alone (no web framework on devices).

``GET /health`` (JSON), ``GET /metrics`` (Prometheus text), ``POST /predict`` (one image, raw
body or a multipart ``file`` field) and ``POST /predict/batch`` (multipart, several files),
``GET /openapi.json``, ``GET /docs`` and an upload page at ``/``. Uploads over the profile's
limit get 413, anything that is not an image 415, both with a JSON ``detail``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np

from edge_agent.exceptions import AgentError
from edge_agent.predict import reading_fields
from edge_agent.reading.signs import SignReader

log = logging.getLogger(__name__)

MAX_BATCH_FILES = 16

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "RoadSign agent local API",
        "version": "1.0.0",
        "description": "Health, metrics and on-demand sign reading on one device.",
    },
    "paths": {
        "/health": {
            "get": {
                "summary": "Current health of the agent",
                "responses": {
                    "200": {
                        "description": "Health as JSON",
                        "content": {
                            "application/json": {
                                "example": {"device_id": "veh-0042", "fps": 61.2, "outbox_depth": 0}
                            }
                        },
                    }
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "Prometheus text format 0.0.4"}},
            }
        },
        "/predict": {
            "post": {
                "summary": "Read the signs in one image",
                "requestBody": {
                    "required": True,
                    "content": {
                        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                        "image/png": {"schema": {"type": "string", "format": "binary"}},
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {"file": {"type": "string", "format": "binary"}},
                            }
                        },
                    },
                },
                "responses": {
                    "200": {
                        "description": "Readings",
                        "content": {
                            "application/json": {
                                "example": {
                                    "source": "upload",
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
                            }
                        },
                    },
                    "413": {"description": "Upload larger than the limit"},
                    "415": {"description": "Not an image"},
                },
            }
        },
        "/predict/batch": {
            "post": {
                "summary": "Read the signs in several images (multipart, one part per file)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "files": {
                                        "type": "array",
                                        "items": {"type": "string", "format": "binary"},
                                    }
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {"description": "One result per file"},
                    "413": {"description": "Upload larger than the limit"},
                    "415": {"description": "A part is not an image"},
                },
            }
        },
    },
}

UPLOAD_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>RoadSign agent</title>
<style>body{font-family:sans-serif;margin:2em;max-width:50em}pre{background:#eee;padding:1em}</style>
</head><body><h1>RoadSign agent</h1>
<p><a href="/health">health</a> · <a href="/metrics">metrics</a> · <a href="/docs">API</a></p>
<form id="f"><input type="file" name="files" accept="image/*" multiple>
<button>Read signs</button></form><pre id="out"></pre>
<script>
document.getElementById("f").onsubmit = async (e) => {
  e.preventDefault();
  const r = await fetch("/predict/batch", {method: "POST", body: new FormData(e.target)});
  document.getElementById("out").textContent = JSON.stringify(await r.json(), null, 2);
};
</script></body></html>"""


class ApiError(Exception):
    """A request the API answers with an error status and a detail."""

    def __init__(self, status: HTTPStatus, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def decode_image(data: bytes) -> np.ndarray:
    """Uploaded bytes as an RGB image, or 415."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if bgr is None:
        raise ApiError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "the upload is not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def multipart_files(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each file part of a multipart/form-data body."""
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    if not message.is_multipart():
        raise ApiError(HTTPStatus.BAD_REQUEST, "expected a multipart/form-data body")
    files = []
    for part in message.iter_parts():
        if part.get_filename() is None:
            continue
        payload = part.get_payload(decode=True)
        files.append((str(part.get_filename()), payload if isinstance(payload, bytes) else b""))
    if not files:
        raise ApiError(HTTPStatus.BAD_REQUEST, "no file parts in the upload")
    return files


class LocalApi:
    """Serves the API on a background thread."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        reader: Callable[[], SignReader],
        health: Callable[[], dict[str, object]],
        metrics: Callable[[], str],
        max_upload_bytes: int,
    ) -> None:
        self._reader_factory = reader
        self._reader: SignReader | None = None
        self._reader_lock = threading.Lock()
        self.health, self.metrics = health, metrics
        self.max_upload_bytes = max_upload_bytes
        api = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "roadsign-agent"

            def log_message(self, format: str, *args: object) -> None:
                log.debug("api: " + format, *args)

            def do_GET(self) -> None:
                api.handle(self, "GET")

            def do_POST(self) -> None:
                api.handle(self, "POST")

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as e:
            raise AgentError(f"the local API cannot listen on {host}:{port}: {e}") from e
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="local-api", daemon=True
        )

    @property
    def port(self) -> int:
        """The port it listens on (useful when 0 was asked for)."""
        return int(self._server.server_address[1])

    def start(self) -> LocalApi:
        """Start serving."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def _read(self, image: np.ndarray) -> list[dict[str, object]]:
        # One reader for the API, apart from the pipeline's; requests take turns on it.
        with self._reader_lock:
            if self._reader is None:
                self._reader = self._reader_factory()
            return [reading_fields(r) for r in self._reader.read(image)]

    def _body(self, handler: BaseHTTPRequestHandler) -> bytes:
        length = handler.headers.get("Content-Length")
        if length is None:
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        try:
            size = int(length)
        except ValueError as e:
            raise ApiError(HTTPStatus.BAD_REQUEST, "Content-Length is not a number") from e
        if size > self.max_upload_bytes:
            raise ApiError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"upload of {size} bytes is over the limit of {self.max_upload_bytes}",
            )
        return handler.rfile.read(size)

    def _uploads(self, handler: BaseHTTPRequestHandler) -> list[tuple[str, bytes]]:
        content_type = handler.headers.get("Content-Type", "")
        body = self._body(handler)
        if content_type.startswith("multipart/form-data"):
            return multipart_files(content_type, body)
        return [("upload", body)]

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        """Route one request; every failure becomes a JSON error, never a dead thread."""
        path = handler.path.split("?", 1)[0]
        try:
            if method == "GET" and path == "/health":
                self._send_json(handler, HTTPStatus.OK, self.health())
            elif method == "GET" and path == "/metrics":
                self._send(
                    handler, HTTPStatus.OK, self.metrics().encode(), "text/plain; version=0.0.4"
                )
            elif method == "GET" and path == "/openapi.json":
                self._send_json(handler, HTTPStatus.OK, OPENAPI)
            elif method == "GET" and path == "/docs":
                self._send(handler, HTTPStatus.OK, _docs_page().encode(), "text/html")
            elif method == "GET" and path == "/":
                self._send(handler, HTTPStatus.OK, UPLOAD_PAGE.encode(), "text/html")
            elif method == "POST" and path == "/predict":
                name, data = self._uploads(handler)[0]
                self._send_json(
                    handler,
                    HTTPStatus.OK,
                    {"source": name, "readings": self._read(decode_image(data))},
                )
            elif method == "POST" and path == "/predict/batch":
                uploads = self._uploads(handler)
                if len(uploads) > MAX_BATCH_FILES:
                    raise ApiError(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"at most {MAX_BATCH_FILES} files per batch",
                    )
                images = [(name, decode_image(data)) for name, data in uploads]
                results = [
                    {"source": name, "readings": self._read(image)} for name, image in images
                ]
                self._send_json(handler, HTTPStatus.OK, {"results": results})
            else:
                raise ApiError(HTTPStatus.NOT_FOUND, f"no {method} {path}")
        except ApiError as e:
            self._send_json(handler, e.status, {"detail": e.detail})
        except Exception:  # the device keeps serving whatever one request did
            log.exception("local API failed on %s %s", method, path)
            self._send_json(handler, HTTPStatus.INTERNAL_SERVER_ERROR, {"detail": "internal error"})

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler, status: HTTPStatus, body: bytes, content_type: str
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _send_json(
        self, handler: BaseHTTPRequestHandler, status: HTTPStatus, payload: object
    ) -> None:
        self._send(handler, status, json.dumps(payload).encode(), "application/json")


def _docs_page() -> str:
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
