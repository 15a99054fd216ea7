"""A small local control endpoint for a running pipeline (``edgesdk run --control PORT``):
add and remove sources without a restart, and read their states.

    GET    /sources                        -> {"cam0": {"state": "live", ...}, ...}
    POST   /sources  {"uri": SPEC, "id": NAME, "weight": W}   -> 201 {"id": NAME}
    DELETE /sources/NAME                   -> 200 {"removed": NAME}

It listens on 127.0.0.1 only (anyone on the box who can reach the port can change the
sources; there is no authentication). Errors are JSON ``{"error": "..."}`` with 400/404.
"""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

from ..errors import EdgeSDKError, SinkError

log = logging.getLogger("edgesdk.streaming")
MAX_BODY = 64 * 1024


class ControlServer:
    def __init__(self, pipeline: Any, port: int = 0, host: str = "127.0.0.1") -> None:
        self.pipeline = pipeline
        handler = type("Handler", (_Handler,), {"control": self})
        try:
            self.httpd = ThreadingHTTPServer((host, int(port)), handler)
        except OSError as e:
            raise SinkError(f"cannot serve the control endpoint on {host}:{port}: {e.strerror or e}; "
                            "pick another --control port") from e
        self.port: int = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="control", daemon=True)
        self._thread.start()
        log.info("control endpoint on http://%s:%d/sources", host, self.port)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    control: ControlServer

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: the pipeline logs what happens
        log.debug("control: " + fmt, *args)

    def _reply(self, code: int, body: Any) -> None:
        data = json.dumps(body, default=str).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Optional[dict]:
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            return None
        try:
            body = json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def do_GET(self) -> None:  # noqa: N802 (http.server's names)
        if self.path.rstrip("/") != "/sources":
            return self._reply(404, {"error": "only /sources is here"})
        self._reply(200, self.control.pipeline.snapshot()["sources"])

    def do_POST(self) -> None:  # noqa: N802
        if self.path.rstrip("/") != "/sources":
            return self._reply(404, {"error": "POST /sources with {\"uri\": ..., \"id\": ..., \"weight\": ...}"})
        body = self._body()
        if body is None or "uri" not in body or set(body) - {"uri", "id", "weight"}:
            extra = sorted(set(body) - {"uri", "id", "weight"}) if body else []
            return self._reply(400, {"error": "send a JSON object with 'uri' (and optional 'id', 'weight')"
                                              + (f"; unknown key(s) {', '.join(map(str, extra))}" if extra else "")})
        try:
            sid = self.control.pipeline.add_source(body["uri"], body.get("id"), body.get("weight", 1.0))
        except EdgeSDKError as exc:
            return self._reply(400, {"error": str(exc)})
        self._reply(201, {"id": sid})

    def do_DELETE(self) -> None:  # noqa: N802
        prefix = "/sources/"
        if not self.path.startswith(prefix) or len(self.path) <= len(prefix):
            return self._reply(404, {"error": "DELETE /sources/NAME"})
        name = self.path[len(prefix):]
        try:
            self.control.pipeline.remove_source(name)
        except EdgeSDKError as exc:
            return self._reply(404, {"error": str(exc)})
        self._reply(200, {"removed": name})
