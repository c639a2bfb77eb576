"""The HTTP layer: SageMaker's routes, TF Serving's predict route, and status codes.

Routes only translate between HTTP and the handler: every error is a ``ServeError`` (or an
HTTP error from werkzeug, such as 413) rendered as ``{"error": "..."}``, with what the
caller must not see (tracebacks, paths, secrets) taken out by ``redact``.
"""
from __future__ import annotations

import logging
import re

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from . import codecs
from .errors import BadRequest, ModelNotReady, NotFound, ServeError
from .handlers import Invocation, Target
from .readiness import Readiness
from .redact import SecretFilter
from .settings import Settings
from .worker import WorkerState

log = logging.getLogger(__name__)
access = logging.getLogger("serve.access")

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
_TFS_TARGET = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?(?::(?P<method>\w+))?$")


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status=status, mimetype=codecs.JSON)


def create_app(settings: Settings, state: WorkerState, workers: int, secrets: SecretFilter,
               readiness: Readiness | None = None) -> Flask:
    app = Flask("serve")

    def _error(status: int, message: str, echoes_request: bool = False) -> Response:
        # a message that only repeats the caller's own request line needs no redaction
        text = secrets.mask(message) if echoes_request else secrets.for_caller(message)
        return _json(codecs.encode_error(text), status)

    # werkzeug refuses a larger Content-Length up front and stops reading a chunked body at the limit.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    limit_hint = f"the limit is {settings.max_payload_in_mb} MB (SAGEMAKER_MAX_PAYLOAD_IN_MB)"

    def require_ready():
        if state.status == "failed":
            raise ModelNotReady(f"model failed to load: {state.error}")
        if not state.ready:
            raise ModelNotReady("model is still loading; retry when GET /ping answers 200")

    def read_body() -> bytes:
        body = request.get_data(cache=False)
        declared = request.content_length
        if declared is not None and len(body) < declared:
            # the client closed early: half a body could still parse (a prefix of CSV rows, say)
            raise BadRequest(f"request body ended after {len(body)} of the {declared} bytes its "
                             f"Content-Length announced; send the whole body")
        return body

    @app.get("/ping")
    def ping():
        if state.ready and (readiness is None or readiness.all_ready()):
            return Response(b"", status=200)
        require_ready()
        raise ModelNotReady(f"{readiness.ready_workers()} of {readiness.expected} workers have loaded the "
                            f"model; retry when GET /ping answers 200")

    @app.post("/invocations")
    def invocations():
        require_ready()
        result = state.handler.handle(Invocation(
            body=read_body(),
            content_type=request.headers.get("Content-Type"),
            accept=request.headers.get("Accept"),
            custom_attributes=request.headers.get(CUSTOM_ATTRIBUTES),
        ))
        return Response(result.body, status=200, content_type=result.content_type)

    @app.get("/execution-parameters")
    def execution_parameters():
        # Each worker keeps one batch in its model while the next request is decoded.
        return _json(orjson.dumps({
            "MaxConcurrentTransforms": 2 * workers,
            "BatchStrategy": "MULTI_RECORD",
            "MaxPayloadInMB": settings.max_payload_in_mb,
        }))

    def tfs_target(target: str):
        match = _TFS_TARGET.match(target)
        if not match:
            raise NotFound(f"unknown TF Serving path /v1/models/{target}; use /v1/models/NAME[/versions/N]"
                           f"[:predict|:classify|:regress]")
        if match["label"]:
            raise NotFound("version labels are not served here; use /v1/models/NAME/versions/N")
        require_ready()
        if state.default is None:
            raise BadRequest("this server's model comes from model_fn, so TF Serving's API is not available")
        state.default.repository.get(match["name"], match["version"])  # a 404 naming what exists
        return match

    @app.post("/v1/models/<path:target>")
    def tfs_call(target: str):
        """TF Serving's REST API (predict, classify, regress) for every loaded model and version; also
        what handler(data, context) scripts call at context.rest_uri."""
        match = tfs_target(target)
        if not match["method"]:
            raise NotFound(f"POST /v1/models/{target} needs a method: :predict, :classify or :regress")
        result = state.default.handle(Invocation(read_body(), codecs.JSON, codecs.JSON),
                                      Target.of(match["name"], match["version"], match["method"]))
        return Response(result.body, status=200, content_type=result.content_type)

    @app.get("/v1/models/<path:target>")
    def tfs_status(target: str):
        match = tfs_target(target)
        if match["method"]:
            raise NotFound(f"GET /v1/models/{target}: methods are POSTed")
        versions = state.default.repository.versions(match["name"])
        shown = [match["version"]] if match["version"] else versions[::-1]
        return _json(orjson.dumps({"model_version_status": [
            {"version": v or "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            for v in shown]}))

    @app.errorhandler(ServeError)
    def serve_error(exc: ServeError):
        if exc.status >= 500 and not isinstance(exc, ModelNotReady):
            log.error("%s %s -> %d: %s", request.method, request.path, exc.status, exc.message)
        return _error(exc.status, exc.message)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"request body is larger than {limit_hint}"
        elif exc.code == 404:
            message = (f"no route {request.method} {request.path}; "
                       f"use GET /ping, POST /invocations or GET /execution-parameters")
        elif exc.code == 405:
            message = f"{request.method} is not allowed on {request.path}"
        return _error(exc.code or 500, message, echoes_request=exc.code in (404, 405))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.after_request
    def log_request(response: Response):
        # /ping every few seconds would drown everything else: INFO only at nginx level debug.
        shown = settings.access_log_level
        quiet = (request.path == "/ping" and shown != "all") or (response.status_code < 400 and shown == "failures")
        level = logging.DEBUG if quiet else logging.INFO
        if access.isEnabledFor(level):
            access.log(level, "%s %s %d %s", request.method, request.path, response.status_code,
                       response.content_length)
        return response

    return app
