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
from gunicorn.http.errors import NoMoreData, ParseException
from werkzeug.exceptions import ClientDisconnected, HTTPException

from serve.contract import codecs
from serve.contract.errors import (BadRequest, IncompleteBody, MalformedBody, ModelNotReady, NotFound, PayloadTooLarge, ServeError,
                     TooMuchMemory)
from serve.contract.handlers import Invocation, Target
from serve.contract.signature import version_status
from serve.contract.model_names import check_model_name
from serve.contract.readiness import Readiness
from serve.contract.redact import SecretFilter
from serve.http_worker.gunicorn_worker import close_this_connection
from serve.contract.settings import Settings
from serve.contract.tuning import Tuning
from serve.http_worker.worker import WorkerState

log = logging.getLogger(__name__)
access = logging.getLogger("serve.access")

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
_TFS_TARGET = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?(?::(?P<method>\w+))?$")


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status=status, mimetype=codecs.JSON)


def create_app(settings: Settings, state: WorkerState, tuning: Tuning, secrets: SecretFilter,
               readiness: Readiness | None = None) -> Flask:
    app = Flask("serve")

    def _error(status: int, message: str, echoes_request: bool = False, close: bool = False,
               at_once: bool = False) -> Response:
        # a message that only repeats the caller's own request line needs no redaction
        text = secrets.mask(message) if echoes_request else secrets.for_caller(message)
        response = _json(codecs.encode_error(text), status)
        if close or status == 413:  # part of the body may still be on the wire: never read it as a request
            close_this_connection(at_once)
        return response

    # werkzeug refuses a larger Content-Length up front and stops reading a chunked body at the limit.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    limit_hint = f"the limit is {settings.max_payload_in_mb} MB (SAGEMAKER_MAX_PAYLOAD_IN_MB)"

    def require_ready():
        if state.status == "failed":
            raise ModelNotReady(f"model failed to load: {state.error}")
        if not state.ready:
            raise ModelNotReady("model is still loading; retry when GET /ping answers 200")

    def read_body() -> bytes:
        try:
            return _read_body()
        except (TimeoutError, ClientDisconnected, NoMoreData):  # the socket's read deadline (ServeWorker.handle_request)
            end = "its Content-Length was reached" if request.content_length is not None else "its last chunk"
            raise IncompleteBody(f"the request body stopped arriving before {end} "
                                 f"(the client closed, or paused for {settings.model_server_body_timeout} s: "
                                 f"SAGEMAKER_MODEL_SERVER_BODY_TIMEOUT); send the whole body") from None
        except ParseException as exc:  # gunicorn's chunked reader: a bad chunk-size line, terminator, extension
            raise MalformedBody(f"the chunked request body is malformed: {exc} (each chunk is its size in hex, "
                                f"CRLF, that many bytes, CRLF; the last is 0 CRLF CRLF)") from None

    def _read_body() -> bytes:
        declared = request.content_length
        if declared is None:  # chunked: read one byte past the limit to know whether it was passed
            # (from gunicorn's own reader: werkzeug's stream would stop at the limit without a word)
            body = request.environ["wsgi.input"].read(settings.max_payload_bytes + 1)
            if len(body) > settings.max_payload_bytes:
                raise PayloadTooLarge(f"request body is larger than {limit_hint}")
            return body
        body = request.get_data(cache=False)
        if declared is not None and len(body) < declared:
            # the client closed early: half a body could still parse (a prefix of CSV rows, say)
            raise IncompleteBody(f"request body ended after {len(body)} of the {declared} bytes its "
                                 f"Content-Length announced (the client closed, or paused for "
                                 f"SAGEMAKER_MODEL_SERVER_BODY_TIMEOUT s); send the whole body")
        return body

    @app.get("/ping")
    def ping():
        # 200 only when the model processes are warm and every HTTP worker can reach them
        models_ready = state.client is None or state.client.all_ready()
        hung = state.watchdog is not None and state.watchdog.exhausted
        if state.ready and models_ready and not hung and (readiness is None or readiness.all_ready()):
            return Response(b"", status=200)
        require_ready()
        if hung:
            raise ModelNotReady("inference.py has hung on every thread it has; replace this instance")
        if not models_ready:
            raise ModelNotReady("the model process is (re)loading the model; retry when GET /ping answers 200")
        raise ModelNotReady(f"{readiness.ready_workers()} of {readiness.expected} HTTP workers are ready; "
                            f"retry when GET /ping answers 200")

    def invocation() -> Invocation:
        return Invocation(body=read_body(), content_type=request.headers.get("Content-Type"),
                          accept=request.headers.get("Accept"),
                          custom_attributes=request.headers.get(CUSTOM_ATTRIBUTES))

    @app.post("/invocations")
    def invocations():
        require_ready()
        if settings.multi_model:
            raise NotFound("this is a multi-model endpoint: invoke POST /models/NAME/invoke "
                           "(InvokeEndpoint with TargetModel)", plain=True)
        result = state.handler.handle(invocation())
        return Response(result.body, status=200, content_type=result.content_type)

    # -- multi-model endpoints (SAGEMAKER_MULTI_MODEL=true): SageMaker's /models contract -----------

    def multi_model() -> None:
        if not settings.multi_model:
            raise NotFound("the /models API is for multi-model endpoints (SAGEMAKER_MULTI_MODEL=true)")
        require_ready()

    @app.post("/models")
    def load_model():
        multi_model()
        try:
            doc = orjson.loads(read_body())
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"POST /models takes JSON {{\"model_name\": ..., \"url\": ...}}: {exc}") from None
        if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) and doc.get(k) for k in ("model_name", "url")):
            raise BadRequest('POST /models takes {"model_name": "...", "url": "/opt/ml/models/NAME/model"}', plain=True)
        check_model_name(doc["model_name"])  # one the routes below can address, or a 400 before any load
        loaded = state.client.call("mme_load", {"model_name": doc["model_name"], "url": doc["url"]},
                                   settings.tfs_wait_time_seconds)
        return _json(orjson.dumps({"modelName": loaded["modelName"], "modelUrl": loaded["modelUrl"]}))

    @app.get("/models")
    def list_models():
        # As AWS's container answers it: each loaded model's TF Serving status by name, {} when none
        # (query parameters are ignored there too)
        multi_model()
        return _json(orjson.dumps(state.client.call("mme_list", {}, 60)))

    # <path:...>: a model name may hold '/' (serve/contract/model_names.py says which names are taken)
    @app.get("/models/<path:name>")
    def get_model(name: str):
        multi_model()
        entry = state.client.call("mme_get", {"model_name": name}, 60)
        return _json(orjson.dumps({"modelName": entry["modelName"], "modelUrl": entry["modelUrl"]}))

    @app.delete("/models/<path:name>")
    def unload_model(name: str):
        multi_model()
        state.client.call("mme_unload", {"model_name": name}, settings.tfs_wait_time_seconds)
        return _json(orjson.dumps({"modelName": name, "status": "unloaded"}))

    @app.post("/models/<path:name>/invoke")
    def invoke_model(name: str):
        multi_model()
        result = state.client.whole("mme_invoke", {"model_name": name}, invocation(), settings.model_server_timeout)
        return Response(result.body, status=200, content_type=result.content_type)

    @app.get("/execution-parameters")
    def execution_parameters():
        # Two requests per HTTP worker: one decoding while the other waits on the model process,
        # whose batcher then has requests from every worker to stack.
        return _json(orjson.dumps({
            "MaxConcurrentTransforms": 2 * tuning.workers,
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
        if settings.multi_model:
            return match
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
        if settings.multi_model:  # a multi-model model's default path, by its name
            route = Target.of(None, match["version"], match["method"])
            attrs = f"tfs-method={route.method}" + (f",tfs-model-version={route.version}" if route.version else "")
            result = state.client.whole("mme_invoke", {"model_name": match["name"], "default_path": True},
                                        Invocation(read_body(), codecs.JSON, codecs.JSON, attrs),
                                        settings.model_server_timeout)
            return Response(result.body, status=200, content_type=result.content_type)
        result = state.default.handle(Invocation(read_body(), codecs.JSON, codecs.JSON),
                                      Target.of(match["name"], match["version"], match["method"]))
        return Response(result.body, status=200, content_type=result.content_type)

    @app.get("/v1/models/<path:target>")
    def tfs_status(target: str):
        match = tfs_target(target)
        if match["method"]:
            raise NotFound(f"GET /v1/models/{target}: methods are POSTed")
        version = str(int(match["version"])) if match["version"] else None  # 0123 is version 123
        if settings.multi_model:  # the versions of the model its archive serves by default
            versions = state.client.call("mme_get", {"model_name": match["name"]}, 60)["versions"]
            if version and version not in versions:
                raise NotFound(f"model '{match['name']}' has no version {version}")
        else:
            versions = state.default.repository.versions(match["name"])
        return _json(orjson.dumps(version_status([version] if version else versions[::-1])))

    @app.errorhandler(ServeError)
    def serve_error(exc: ServeError):
        if exc.status >= 500 and not isinstance(exc, ModelNotReady):
            log.error("%s %s -> %d: %s", request.method, request.path, exc.status, exc.message)
        return _error(exc.status, exc.message, echoes_request=exc.plain, close=exc.close_connection,
                      at_once=exc.close_at_once)

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

    @app.errorhandler(MemoryError)
    def out_of_memory(exc: MemoryError):
        log.warning("%s %s -> 413: %s: %s", request.method, request.path, type(exc).__name__, exc)
        return serve_error(TooMuchMemory.of(exc))

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
