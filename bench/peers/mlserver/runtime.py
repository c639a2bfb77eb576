"""A minimal MLServer runtime for a TensorFlow SavedModel (MLServer ships none for TF).

Decoding and encoding use MLServer's own NumpyCodec; adaptive batching is MLServer's
(max_batch_size / max_batch_time in model-settings.json): it stacks queued requests along
the first axis before predict() and splits the response back.
"""
import os

import numpy as np
import tensorflow as tf
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class TFSavedModel(MLModel):
    async def load(self) -> bool:
        path = await get_model_uri(self._settings)
        versions = sorted((d for d in os.listdir(path) if d.isdigit()), key=int)
        if versions:
            path = os.path.join(path, versions[-1])
        self._loaded = tf.saved_model.load(path)
        self._sig = self._loaded.signatures["serving_default"]
        self._key = next(iter(self._sig.structured_input_signature[1]))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        out = next(iter(self._sig(**{self._key: tf.constant(x)}).values())).numpy()
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 outputs=[NumpyCodec.encode_output(name="output_0", payload=out)])
