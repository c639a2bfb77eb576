"""Scripts written for AWS's TensorFlow serving container (``input_handler``/``output_handler`` or
``handler``), run unchanged in the HTTP workers as that container runs them in gunicorn, given the
same ``context`` fields and a real ``requests.Response`` from the model."""
from __future__ import annotations

import io
from types import ModuleType
from typing import TYPE_CHECKING, Any

from serve.contract import codecs
from serve.contract.errors import ServeError, UserCodeError
from serve.contract.handlers import DefaultHandler, Invocation, Result, Target, tfs_attributes
from serve.usercode.calls import Context, to_bytes, user_call
from serve.usercode.watchdog import Watchdog

if TYPE_CHECKING:
    import requests


class TfsHandler:
    """AWS TensorFlow serving container scripts, run unchanged."""

    def __init__(self, module: ModuleType, default: DefaultHandler, port: int, watchdog: Watchdog):
        self._module = module
        self._default = default
        self._port = port
        self._watchdog = watchdog
        self._handler = getattr(module, "handler", None)
        self._input = getattr(module, "input_handler", None)
        self._output = getattr(module, "output_handler", None)

    def context(self, invocation: Invocation) -> Context:
        attrs = tfs_attributes(invocation.custom_attributes)
        name = attrs.get("tfs-model-name", self._default.repository.default)
        version = attrs.get("tfs-model-version")
        method = attrs.get("tfs-method", "predict")
        uri = f"http://127.0.0.1:{self._port}/v1/models/{name}"
        uri += (f"/versions/{version}" if version else "") + f":{method}"
        return Context(name, version, method, uri, None, None, invocation.custom_attributes,
                       invocation.content_type or codecs.JSON, invocation.accept or codecs.JSON,
                       len(invocation.body))

    def model_response(self, request_body: Any, context: Context) -> "requests.Response":
        """What TF Serving's REST API would have answered, as the requests.Response scripts expect."""
        import requests  # only scripts of this style need it

        response = requests.Response()
        response.headers["Content-Type"] = codecs.JSON
        response.encoding = "utf-8"
        try:
            target = Target.of(context.model_name, context.model_version, context.method)
            result = self._default.handle(Invocation(to_bytes(request_body), codecs.JSON, codecs.JSON), target)
            response.status_code, response._content = 200, result.body
        except ServeError as exc:
            response.status_code, response._content = exc.status, codecs.encode_error(exc.message)
        response.reason = requests.status_codes._codes.get(response.status_code, ("",))[0].upper()
        return response

    def handle(self, invocation: Invocation) -> Result:
        return self._watchdog.run(lambda: self._handle(invocation))

    def _handle(self, invocation: Invocation) -> Result:
        context = self.context(invocation)
        data = io.BytesIO(invocation.body)
        if self._handler is not None:
            body, content_type = user_call("handler", self._handler, data, context)
            return Result(to_bytes(body), content_type or context.accept_header)
        request_body = (user_call("input_handler", self._input, data, context)
                        if self._input else invocation.body)
        response = self.model_response(request_body, context)
        if self._output is None:
            if response.status_code != 200:
                raise ServeError(response.json()["error"], status=response.status_code)
            return Result(response.content, codecs.JSON)
        try:
            body, content_type = user_call("output_handler", self._output, response, context)
        except UserCodeError as exc:
            if response.status_code != 200:  # the script re-raised the model's own complaint
                raise ServeError(response.json()["error"], status=response.status_code) from exc
            raise
        return Result(to_bytes(body), content_type or context.accept_header)
