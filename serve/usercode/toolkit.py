"""Scripts written for the sagemaker-inference-toolkit (``model_fn``, ``input_fn``, ``predict_fn``,
``output_fn`` or ``transform_fn``), run unchanged in the model process next to the model; what a
script leaves out falls back to the default path. The HTTP worker hands such a request over whole
(``modelclient.ModelClient.script``)."""
from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from serve.contract import codecs
from serve.contract.handlers import DefaultHandler, Invocation, Result, Target
from serve.contract.signature import Model
from serve.usercode.calls import Context, as_outputs, takes_context, to_bytes, user_call
from serve.usercode.source import TOOLKIT_FUNCTIONS
from serve.usercode.watchdog import Watchdog


class ToolkitHandler:
    """sagemaker-inference-toolkit scripts, run unchanged; missing functions use the defaults."""

    def __init__(self, module: ModuleType, model: Any, default: DefaultHandler | None, watchdog: Watchdog):
        self._model = model
        self._default = default
        self._watchdog = watchdog
        self._fns = {name: getattr(module, name, None) for name in TOOLKIT_FUNCTIONS}

    def _call(self, name: str, context: Context, *args):
        fn = self._fns[name]
        required = len(args)
        if takes_context(fn, required):
            args = (*args, context)
        return user_call(name, fn, *args)

    def handle(self, invocation: Invocation) -> Result:
        return self._watchdog.run(lambda: self._handle(invocation))

    def _default_predict(self, data: Any, signature_name: str | None, target: Target) -> dict[str, np.ndarray]:
        if self._default is not None and isinstance(self._model, Model):
            return self._default.predict(data, signature_name, target)
        model = self._model
        fn = getattr(model, "predict", None) or model
        return as_outputs(user_call("the model returned by model_fn", fn, data))

    def _handle(self, invocation: Invocation) -> Result:
        content_type = invocation.content_type or codecs.JSON
        accept = invocation.accept or codecs.JSON
        target = Target.from_attributes(invocation.custom_attributes)
        context = Context(target.name or getattr(self._model, "name", "model"), target.version, target.method,
                          None, None, None, invocation.custom_attributes, content_type, accept,
                          len(invocation.body))
        if self._fns["transform_fn"]:
            result = self._call("transform_fn", context, self._model, invocation.body, content_type, accept)
            return self._result(result, accept)
        if self._fns["output_fn"] is None:
            codecs.negotiate(invocation.accept)  # fail a bad Accept before doing any work
        decoded, signature = None, None
        if self._fns["input_fn"]:
            data = self._call("input_fn", context, invocation.body, content_type)
        else:
            decoded = codecs.decode(invocation.body, content_type)
            data, signature = decoded.inputs, decoded.signature_name
        if self._fns["predict_fn"]:
            prediction = self._call("predict_fn", context, data, self._model)
        else:
            prediction = self._default_predict(data, signature, target)
        if self._fns["output_fn"]:
            return self._result(self._call("output_fn", context, prediction, accept), accept)
        outputs, accept = as_outputs(prediction), codecs.negotiate(invocation.accept)
        return Result(*(decoded.reply(outputs, accept) if decoded else codecs.encode(outputs, accept)))

    @staticmethod
    def _result(result: Any, accept: str) -> Result:
        if isinstance(result, tuple) and len(result) == 2:
            return Result(to_bytes(result[0]), result[1] or accept)
        return Result(to_bytes(result), accept)
