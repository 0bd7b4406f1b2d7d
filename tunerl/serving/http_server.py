"""`tunerl serve`: one module behind a stdlib HTTP server, for one machine.

    POST /v1/actions  {"observation": [...]}        -> {"action": a}
                      {"observations": [[...], ...]} -> {"actions": [a, ...]}  (one forward pass)
    GET  /health                                     -> {"status": "ok", ...}

Keep-alive (HTTP/1.1) and TCP_NODELAY with each response written in one send: without
them a small request waits ~40 ms for Nagle's algorithm and delayed ACKs (21 requests/s
measured, research notes section 5). Bad input gets a 400 with a JSON `error` naming what
is wrong; bodies over `max_body_bytes` a 413.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tunerl.serving.inference import GreedyPolicy

logger = logging.getLogger(__name__)

ACTIONS_PATH = "/v1/actions"
HEALTH_PATH = "/health"
MAX_BODY_BYTES = 16 * 1024 * 1024
# Seconds a connection may sit idle (or a request take to arrive) before it is closed.
CONNECTION_TIMEOUT_S = 60.0


class PolicyHTTPServer(ThreadingHTTPServer):
    """A thread per connection; every thread acts with the one `GreedyPolicy`."""

    daemon_threads = True

    def __init__(self, policy: GreedyPolicy, host: str = "127.0.0.1", port: int = 8000):
        self.policy = policy
        super().__init__((host, port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = CONNECTION_TIMEOUT_S
    server: PolicyHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        logger.debug("%s " + format, self.address_string(), *args)

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.wfile.write(head + body)  # one send: header and body in one segment
        self.log_request(status, len(body))

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path != HEALTH_PATH:
            self._reply(404, {"error": f"no route {self.path}; GET {HEALTH_PATH}"})
            return
        module = self.server.policy.module
        self._reply(200, {
            "status": "ok",
            "observation_space": str(module.observation_space),
            "action_space": str(module.action_space),
        })  # fmt: skip

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path != ACTIONS_PATH:
            self._reply(404, {"error": f"no route {self.path}; POST {ACTIONS_PATH}"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._reply(411, {"error": "a Content-Length header (a number) is required"})
            return
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._reply(413, {"error": f"body of {length} bytes; at most {MAX_BODY_BYTES}"})
            return
        try:
            status, payload = 200, self._actions(json.loads(self.rfile.read(length)))
        except (ValueError, TypeError) as error:
            status, payload = 400, {"error": str(error)}
        self._reply(status, payload)

    def _actions(self, request: Any) -> dict[str, Any]:
        policy = self.server.policy
        if not isinstance(request, dict) or ("observation" in request) == (
            "observations" in request
        ):
            raise ValueError(
                'the body must be a JSON object with "observation" (one) or "observations" '
                "(a list of them)"
            )
        if "observation" in request:
            return {"action": policy.actions(policy.observations([request["observation"]]))[0]}
        return {"actions": policy.actions(policy.observations(request["observations"]))}
