"""sagemaker-inference-toolkit default handler for a TensorFlow SavedModel: the toolkit's
own decoder/encoder (stdlib json <-> numpy) and a model_fn/predict_fn, as its README shows."""
import os

import numpy as np
import tensorflow as tf
from sagemaker_inference import decoder, default_inference_handler, encoder


class TFInferenceHandler(default_inference_handler.DefaultInferenceHandler):
    def default_model_fn(self, model_dir, context=None):
        versions = sorted((d for d in os.listdir(model_dir) if d.isdigit()), key=int)
        path = os.path.join(model_dir, versions[-1]) if versions else model_dir
        loaded = tf.saved_model.load(path)
        sig = loaded.signatures["serving_default"]
        return loaded, sig, next(iter(sig.structured_input_signature[1]))

    def default_input_fn(self, input_data, content_type, context=None):
        return decoder.decode(input_data, content_type)

    def default_predict_fn(self, data, model, context=None):
        _, sig, key = model
        out = sig(**{key: tf.constant(np.asarray(data, dtype=np.float32))})
        return next(iter(out.values())).numpy()

    def default_output_fn(self, prediction, accept, context=None):
        return encoder.encode(prediction, accept)
