"""The SageMaker Python SDK 2.x as a user drives it, in local mode, against this project's image.

Run by tests/container/test_sagemaker_sdk.py with the SDK's own venv (its pins conflict with the
project's), never imported by pytest: ``python sagemaker_sdk_client.py IMAGE WORKDIR PORT``.
WORKDIR holds plain/two.tar.gz (TF Serving's half_plus_two and half_plus_three by name),
src/inference.py and batch/input.jsonl. Prints one JSON object: each step's result, or its error.
Offline: dummy credentials, telemetry opted out, code_location given, logs=False (see
/work/shared/ENVIRONMENT.md section 11).
"""
from __future__ import annotations

import json
import shutil
import sys
import traceback
from pathlib import Path

import numpy as np
from sagemaker.deserializers import NumpyDeserializer
from sagemaker.local import LocalSession
from sagemaker.model import Model
from sagemaker.predictor import Predictor
from sagemaker.serializers import CSVSerializer, NumpySerializer
from sagemaker.tensorflow import TensorFlowPredictor

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
ENV = {"SAGEMAKER_TFS_DEFAULT_MODEL_NAME": "half_plus_two"}   # as with AWS's container


def session(workdir: Path, port: int) -> LocalSession:
    sagemaker_config = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
    (workdir / "root").mkdir(exist_ok=True)
    local = LocalSession(sagemaker_config=sagemaker_config)
    local.config = {"local": {"local_code": True, "serving_port": port, "container_root": str(workdir / "root")}}
    return local


def main() -> None:
    image, workdir, port = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    parts = sys.argv[4].split(",") if len(sys.argv) > 4 else ["endpoint", "entry_point", "transform"]
    results: dict = {}
    sm = session(workdir, port)
    # local mode mounts (and unpacks into) the archive's folder as /opt/ml/model: one folder per archive
    model_data = f"file://{workdir / 'plain' / 'two.tar.gz'}"

    def step(name, fn):
        try:
            results[name] = fn()
        except Exception as exc:  # each step reports on its own; the test names the one that failed
            results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}

    if "endpoint" in parts:
        endpoint(image, sm, model_data, step)
    if "entry_point" in parts:
        entry_point(image, sm, workdir, step)
    if "transform" in parts:
        step("transform", lambda: transform(image, sm, model_data, workdir))
    print(json.dumps(results, default=str))


def endpoint(image, sm, model_data, step) -> None:
    """An endpoint on the plain archive: TensorFlowPredictor's predict, classify, regress, serializers."""
    model = Model(image_uri=image, model_data=model_data, role=ROLE, sagemaker_session=sm, env=ENV,
                  predictor_cls=TensorFlowPredictor, name="sdk-two")
    predictor = model.deploy(initial_instance_count=1, instance_type="local", endpoint_name="sdk-two")
    try:
        step("predict_json", lambda: predictor.predict({"instances": [1.0, 2.0, 5.0]}))
        other = TensorFlowPredictor("sdk-two", sagemaker_session=sm, model_name="half_plus_three")
        step("predict_other_model", lambda: other.predict({"instances": [1.0, 2.0, 5.0]}))
        versioned = TensorFlowPredictor("sdk-two", sagemaker_session=sm, model_name="half_plus_two",
                                        model_version="123")
        step("predict_version", lambda: versioned.predict({"instances": [1.0]}))
        step("classify", lambda: predictor.classify({"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]}))
        step("regress", lambda: other.regress({"signature_name": "tensorflow/serving/regress",
                                               "examples": [{"x": 1.0}, {"x": 4.0}]}))
        csv = TensorFlowPredictor("sdk-two", sagemaker_session=sm, serializer=CSVSerializer())
        step("predict_csv", lambda: csv.predict([[1.0], [2.0], [5.0]]))
        npy = TensorFlowPredictor("sdk-two", sagemaker_session=sm, serializer=NumpySerializer(),
                                  deserializer=NumpyDeserializer())
        step("predict_numpy", lambda: npy.predict(np.array([[1.0], [2.0]], np.float32)).tolist())
        step("custom_attributes", lambda: predictor.predict(
            {"instances": [1.0]}, initial_args={"CustomAttributes": "tfs-model-name=half_plus_three"}))
    finally:
        step("delete_endpoint", lambda: predictor.delete_endpoint() or "deleted")



def entry_point(image, sm, workdir, step) -> None:
    # -- entry_point: the SDK repacks the archive with code/inference.py. In local mode with local
    # code it repacks a file:// archive in place (TensorFlowModel would upload it to S3), so a copy.
    (workdir / "scripted").mkdir(exist_ok=True)
    shutil.copy(workdir / "plain" / "two.tar.gz", workdir / "scripted" / "two.tar.gz")
    scripted = Model(image_uri=image, model_data=f"file://{workdir / 'scripted' / 'two.tar.gz'}", role=ROLE,
                     entry_point="inference.py", source_dir=str(workdir / "src"),
                     code_location="s3://sdk-test-bucket/code", sagemaker_session=sm, env=ENV,
                     predictor_cls=TensorFlowPredictor, name="sdk-scripted")
    scripted_predictor = scripted.deploy(initial_instance_count=1, instance_type="local", endpoint_name="sdk-scripted")
    try:
        step("entry_point", lambda: scripted_predictor.predict({"instances": [1.0, 2.0]}))
    finally:
        step("delete_scripted", lambda: scripted_predictor.delete_endpoint() or "deleted")



def transform(image, sm, model_data, workdir):
    """Local batch transform, one JSON instance per line."""
    plain = Model(image_uri=image, model_data=model_data, role=ROLE, sagemaker_session=sm, env=ENV,
                  predictor_cls=Predictor, name="sdk-batch")
    # strategy given: local mode takes the container's /execution-parameters BatchStrategy otherwise,
    # and accepts only "MultiRecord"/"SingleRecord" there, where the container contract says MULTI_RECORD
    # (AWS's container has no such route, so the SDK keeps its default)
    transformer = plain.transformer(instance_count=1, instance_type="local", accept="application/json",
                                    strategy="MultiRecord",
                                    assemble_with="Line", output_path=f"file://{workdir / 'batch-out'}")
    transformer.transform(f"file://{workdir / 'batch'}", content_type="application/json", split_type="Line",
                          logs=False, wait=True)
    return sorted(p.name for p in (workdir / "batch-out").iterdir()), \
        (workdir / "batch-out" / "input.jsonl.out").read_text()


if __name__ == "__main__":
    main()
