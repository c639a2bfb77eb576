"""The Flask + gunicorn "bring your own container" pattern, as in SageMaker's
scikit_bring_your_own example (predictor.py), adapted to a TensorFlow SavedModel.

Deliberately plain: sync gunicorn workers, stdlib json, one model per worker loaded on
first use, no batching. Run with:  gunicorn -k sync -w N -b 127.0.0.1:PORT app:app
(MODEL_DIR = the SavedModel directory, i.e. <base>/model/1).
"""
import json
import os

import flask
import numpy as np
import tensorflow as tf

MODEL_DIR = os.environ.get("MODEL_DIR", "/opt/ml/model/1")


class ScoringService:
    model = None
    input_key = None

    @classmethod
    def get_model(cls):
        if cls.model is None:
            loaded = tf.saved_model.load(MODEL_DIR)
            sig = loaded.signatures["serving_default"]
            cls.input_key = next(iter(sig.structured_input_signature[1]))
            cls._loaded = loaded  # keep the variables alive
            cls.model = sig
        return cls.model

    @classmethod
    def predict(cls, x):
        sig = cls.get_model()
        out = sig(**{cls.input_key: tf.constant(x)})
        return next(iter(out.values())).numpy()


app = flask.Flask(__name__)


@app.route("/ping", methods=["GET"])
def ping():
    health = ScoringService.get_model() is not None
    return flask.Response(response="\n", status=200 if health else 404, mimetype="application/json")


@app.route("/invocations", methods=["POST"])
def transformation():
    if flask.request.content_type != "application/json":
        return flask.Response(response="This predictor only supports JSON data", status=415, mimetype="text/plain")
    data = np.array(json.loads(flask.request.data), dtype=np.float32)
    predictions = ScoringService.predict(data)
    return flask.Response(response=json.dumps({"predictions": predictions.tolist()}), status=200,
                          mimetype="application/json")
