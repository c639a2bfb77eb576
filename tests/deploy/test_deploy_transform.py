"""`deploy transform`: the SageMaker job against moto, the local batch agent against real servers.

- SageMaker (moto in-process, tests/fixtures/moto_transform.py for what moto lacks): the job is
  created with what SageMaker needs, followed until it ends, its FailureReason and logs printed
  on failure, the model deleted after either way, and the architecture checked before any call.
- Local mode, pure parts (records, mini-batches, answers, joins, parameters): no server.
- Local mode's loop against the host server (the `serve` process, fast) and `deploy transform
  --local` against the real amd64 image (the arm64 image's start under emulation, the same
  local/container.py, is in test_deploy_compare.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pytest

from sagemaker_tf_deploy.local import agent, records as rec, transform as tl
from sagemaker_tf_deploy.commands.main import main
from sagemaker_tf_deploy.core.errors import DeployError
from tests.fixtures import moto_transform as mt
from tests.fixtures.moto import run_deploy
from tests.fixtures.server import free_port

DEPLOY = str(Path(sys.executable).with_name("deploy"))


# --- SageMaker, against moto -------------------------------------------------------------------

@pytest.fixture
def model_tgz(tmp_path):
    import tarfile
    src = tmp_path / "model" / "1" / "variables"
    src.mkdir(parents=True)
    (src.parent / "saved_model.pb").write_bytes(b"\x08\x01fake")
    (src / "variables.index").write_bytes(b"idx")
    out = tmp_path / "model.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(src.parent, "1")
    return out


def sm():
    return boto3.client("sagemaker")


def s3_objects():
    """What the command put in S3 (the test's own input bucket left out)."""
    s3 = boto3.client("s3")
    return [f"s3://{b['Name']}/{o['Key']}" for b in s3.list_buckets()["Buckets"] if b["Name"] != "batch-data"
            for o in s3.list_objects_v2(Bucket=b["Name"]).get("Contents", [])]


def put_input(keys=("in/part-0.csv", "in/part-1.csv")):
    s3 = boto3.client("s3")
    if "batch-data" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket="batch-data", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for key in keys:
        s3.put_object(Bucket="batch-data", Key=key, Body=b"1,2,3,4\n")


def transform(capsys, env, image, model, *extra, with_input=True):
    if with_input:
        put_input()
    return run_deploy(capsys, "transform", "--image", image, "--model-data", str(model), "--role", env["role"],
                      "--input", "s3://batch-data/in/", "--output", "s3://batch-data/out/", "--poll", "0.01", *extra)


def only_job():
    jobs = sm().list_transform_jobs()["TransformJobSummaries"]
    assert len(jobs) == 1, jobs
    return sm().describe_transform_job(TransformJobName=jobs[0]["TransformJobName"])


def test_transform_creates_the_job_waits_and_deletes_the_model(capsys, transform_moto, ecr_images, model_tgz):
    mt.script_next_job(["InProgress", "InProgress", "InProgress", "Completed"])
    code, out, err = transform(capsys, transform_moto, ecr_images["multi"], model_tgz)
    assert code == 0, err
    job = only_job()
    name = job["TransformJobName"]
    assert name.startswith("tf-graviton-transform-")
    assert job["TransformInput"] == {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://batch-data/in/"}},
        "ContentType": "text/csv", "SplitType": "Line", "CompressionType": "None"}
    assert job["TransformOutput"] == {"S3OutputPath": "s3://batch-data/out/", "AssembleWith": "Line",
                                      "Accept": "text/csv"}     # the input's type: one line per record
    assert job["TransformResources"] == {"InstanceType": "ml.c5.4xlarge", "InstanceCount": 1}   # x86: no Graviton
    # left to the container's /execution-parameters
    for key in ("MaxPayloadInMB", "MaxConcurrentTransforms", "BatchStrategy", "DataProcessing"):
        assert key not in job, key
    assert "BatchStrategy, MaxPayloadInMB, MaxConcurrentTransforms from the container's /execution-parameters" in err
    # the model existed for the job, pointed at the uploaded archive, and is gone now
    models = [n for op, n in mt.calls("create_model")]
    assert models == [job["ModelName"]]
    assert mt.calls("delete_model") == [("delete_model", job["ModelName"])]
    assert sm().list_models()["Models"] == []
    assert any(o.endswith("/model.tar.gz") for o in s3_objects())
    # waited through the statuses: one live-status line per change (stderr is not a terminal)
    assert len(mt.calls("describe_transform_job")) >= 4
    assert f"{name}: InProgress" in err and f"{name}: Completed" in err
    assert f"transform job {name} is Completed" in out
    assert "output      s3://batch-data/out/" in out
    assert f"deleted model {job['ModelName']}" in err


def test_transform_passes_the_flags_it_was_given(capsys, transform_moto, ecr_images, model_tgz):
    code, out, err = transform(capsys, transform_moto, ecr_images["amd64"], model_tgz,
                               "--instance-type", "ml.c6i.2xlarge", "--instance-count", "3",
                               "--content-type", "application/jsonlines", "--accept", "application/jsonlines",
                               "--strategy", "MultiRecord", "--max-payload-mb", "20", "--max-concurrent", "8",
                               "--join-source", "Input", "--env", "SAGEMAKER_TFS_MAX_BATCH_SIZE=256",
                               "--name", "nightly-scoring")
    assert code == 0, err
    job = only_job()
    assert job["TransformJobName"] == "nightly-scoring"
    assert job["BatchStrategy"] == "MultiRecord"
    assert job["MaxPayloadInMB"] == 20 and job["MaxConcurrentTransforms"] == 8
    assert job["DataProcessing"] == {"JoinSource": "Input"}
    assert job["TransformOutput"]["Accept"] == "application/jsonlines"
    assert job["TransformInput"]["ContentType"] == "application/jsonlines"
    assert job["TransformResources"] == {"InstanceType": "ml.c6i.2xlarge", "InstanceCount": 3}
    assert "/execution-parameters" not in err
    assert "image " in err and "ml.c6i.2xlarge is amd64: ok" in err


def test_model_env_carries_env_flags(capsys, transform_moto, ecr_images, model_tgz):
    code, out, err = transform(capsys, transform_moto, ecr_images["multi"], model_tgz,
                               "--env", "SAGEMAKER_TFS_MAX_BATCH_SIZE=256")
    assert code == 0, err
    (name, sent), = mt.MODELS.items()
    assert sent["primary_container"]["Image"] == ecr_images["multi"]
    assert sent["primary_container"]["ModelDataUrl"].endswith(f"{name}/model.tar.gz")
    env = sent["primary_container"]["Environment"]
    assert env["SAGEMAKER_TFS_MAX_BATCH_SIZE"] == "256" and env["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert "DNNL_DEFAULT_FPMATH_MODE" not in env     # the server decides BF16 from the CPU
    assert sent["execution_role_arn"] == transform_moto["role"]


def test_model_data_from_a_folder_with_code_and_from_s3(capsys, transform_moto, ecr_images, model_tgz, tmp_path):
    import tarfile
    folder = tmp_path / "with-code"
    with tarfile.open(model_tgz) as tar:
        tar.extractall(folder, filter="data")
    (folder / "code").mkdir()
    (folder / "code" / "inference.py").write_text("def input_handler(data, context):\n    return data.read()\n")
    code, out, err = transform(capsys, transform_moto, ecr_images["multi"], folder)
    assert code == 0, err
    assert "packaged" in err
    (name, sent), = mt.MODELS.items()
    assert sent["primary_container"]["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    uploaded = sent["primary_container"]["ModelDataUrl"]
    # the same archive by its s3:// URI: nothing uploaded, the model points at it
    mt.MODELS.clear()
    before = s3_objects()
    code, out, err = transform(capsys, transform_moto, ecr_images["multi"], uploaded)
    assert code == 0, err
    (name, sent), = mt.MODELS.items()
    assert sent["primary_container"]["ModelDataUrl"] == uploaded
    assert sent["primary_container"]["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert s3_objects() == before and "uploaded" not in err


def test_format_json_gives_the_result_as_one_document(capsys, transform_moto, ecr_images, model_tgz):
    code, out, err = transform(capsys, transform_moto, ecr_images["multi"], model_tgz, "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    job = only_job()
    assert doc["job"] == job["TransformJobName"] and doc["status"] == "Completed"
    assert doc["output"] == "s3://batch-data/out/" and doc["model_deleted"] is True
    assert "T" in doc["TransformEndTime"]           # ISO 8601, as every deploy --output json


def test_failed_job_prints_the_reason_and_logs_and_deletes_the_model(capsys, transform_moto, ecr_images, model_tgz):
    reason = "ClientError: See job logs for more information"
    mt.script_next_job(["InProgress", "Failed"], reason)
    code, out, err = transform(capsys, transform_moto, ecr_images["multi"], model_tgz)
    assert code == 1
    job = only_job()
    assert f"transform job {job['TransformJobName']} Failed: {reason}" in err
    assert "/aws/sagemaker/TransformJobs" in err and f"logStreamNameFilter$3D{job['TransformJobName']}" in err
    assert sm().list_models()["Models"] == []
    assert mt.calls("delete_model") == [("delete_model", job["ModelName"])]


def test_refused_job_deletes_the_model(capsys, transform_moto, ecr_images, model_tgz):
    mt.fail_next("create_transform_job", "MaxPayloadInMB * MaxConcurrentTransforms is too large")
    code, out, err = transform(capsys, transform_moto, ecr_images["multi"], model_tgz)
    assert code == 1
    assert "too large" in err
    assert len(mt.calls("create_model")) == 1
    assert sm().list_models()["Models"] == []
    assert sm().list_transform_jobs()["TransformJobSummaries"] == []
    # the upload stays (as after a job) and the output says so, with the command that removes it
    [archive] = [o for o in s3_objects() if o.endswith("/model.tar.gz")]
    assert f"model data stays in {archive} (remove it with `aws s3 rm {archive}`)" in err


def test_architecture_is_checked_before_any_call(capsys, transform_moto, ecr_images, model_tgz):
    code, out, err = transform(capsys, transform_moto, ecr_images["arm64"], model_tgz)   # ml.c5.4xlarge
    assert code != 0
    assert "has architectures [arm64] but ml.c5.4xlarge is amd64" in err
    assert mt.calls() == []                   # no model, no job, not even a describe
    assert s3_objects() == []                 # nothing uploaded
    code, out, err = transform(capsys, transform_moto, ecr_images["arm64"], model_tgz,
                               "--instance-type", "ml.m7i.xlarge", with_input=False)
    assert code != 0 and "ml.m7i.xlarge is amd64" in err
    assert mt.calls() == [] and s3_objects() == []


@pytest.mark.parametrize("graviton", ["ml.c7g.4xlarge", "ml.m6g.xlarge", "ml.c8g.2xlarge"])
def test_a_graviton_type_is_refused_with_no_aws_call(capsys, transform_moto, ecr_images, model_tgz, aws_calls,
                                                     graviton):
    """Batch transform has no Graviton instances (TransformInstanceType lists none): refused before
    any call, with the two ways forward."""
    boto3.client("s3").create_bucket(Bucket="batch-data", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    aws_calls.clear()
    code, out, err = transform(capsys, transform_moto, ecr_images["multi"], model_tgz,
                               "--instance-type", graviton, with_input=False)
    assert code == 2, err
    assert f"instance type {graviton} is Graviton, and SageMaker batch transform has no Graviton instances" in err
    assert "--instance-type ml.c5.4xlarge" in err and f"deploy transform --engine async --instance-type {graviton}" in err
    assert aws_calls == [] and s3_objects() == []


def test_a_type_batch_transform_does_not_offer_is_refused_with_the_close_one(capsys, transform_moto, ecr_images,
                                                                             model_tgz, aws_calls):
    code, out, err = transform(capsys, transform_moto, ecr_images["multi"], model_tgz,
                               "--instance-type", "ml.c5.4xlargee", with_input=False)
    assert code == 2 and "not in SageMaker's list of batch transform instance types" in err
    assert "did you mean ml.c5.4xlarge?" in err
    code, out, err = transform(capsys, transform_moto, ecr_images["multi"], model_tgz,
                               "--instance-type", "ml.c6in.xlarge", with_input=False)   # hosting has it, transform not
    assert code == 2 and "instance type ml.c6in.xlarge is not in SageMaker's list of batch transform" in err
    assert aws_calls == []


def test_an_image_outside_ecr_in_the_region_is_refused_first(capsys, transform_moto, model_tgz):
    code, out, err = transform(capsys, transform_moto, "127.0.0.1:5000/sagemaker-tf-graviton:test", model_tgz)
    assert code == 2
    assert "a SageMaker transform job pulls its image only from Amazon ECR in the job's region" in err
    code, out, err = transform(capsys, transform_moto,
                               "123456789012.dkr.ecr.us-east-1.amazonaws.com/sagemaker-tf-graviton:1.0", model_tgz)
    assert code == 2 and "the job is in eu-west-1" in err
    assert mt.calls() == [] and s3_objects() == []


def test_bad_arguments_are_refused_before_aws(capsys, transform_moto, ecr_images, model_tgz):
    code, out, err = transform(capsys, transform_moto, ecr_images["multi"], model_tgz,
                               "--strategy", "MultiRecord", "--split-type", "None")
    assert code != 0 and "needs --split-type Line" in err
    code = main(["transform", "--image", ecr_images["multi"], "--model-data", str(model_tgz),
                 "--role", transform_moto["role"], "--input", "data/", "--output", "s3://b/out/"])
    assert code != 0 and "is not an s3://BUCKET/PREFIX URI (use --local for folders)" in capsys.readouterr().err
    assert mt.calls() == [] and s3_objects() == []


def test_empty_input_prefix_is_refused_before_anything_is_created(capsys, transform_moto, ecr_images, model_tgz):
    boto3.client("s3").create_bucket(Bucket="batch-data", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    code, out, err = transform(capsys, transform_moto, ecr_images["multi"], model_tgz, with_input=False)
    assert code == 1 and "--input s3://batch-data/in/ holds no objects" in err
    assert mt.calls() == [] and s3_objects() == []


def test_timeout_stops_the_job_and_deletes_the_model(capsys, transform_moto, ecr_images, model_tgz):
    mt.script_next_job(["InProgress"])
    code, out, err = transform(capsys, transform_moto, ecr_images["multi"], model_tgz, "--timeout", "0.05")
    assert code == 1
    job = only_job()
    assert mt.calls("stop_transform_job") == [("stop_transform_job", job["TransformJobName"])]
    assert "still InProgress after" in err
    assert sm().list_models()["Models"] == []


def test_losing_track_of_a_running_job_keeps_its_model_and_says_so(capsys, transform_moto, ecr_images, model_tgz):
    mt.script_next_job(["InProgress"])
    mt.fail_next("describe_transform_job", "Rate exceeded")
    code, out, err = transform(capsys, transform_moto, ecr_images["multi"], model_tgz)
    assert code == 1 and "Rate exceeded" in err
    job = only_job()
    assert f"transform job {job['TransformJobName']} may still be running" in err
    assert mt.calls("stop_transform_job") == []
    assert [m["ModelName"] for m in sm().list_models()["Models"]] == [job["ModelName"]]


def _run_and_interrupt(transform_moto, ecr_images, model_tgz, *extra):
    put_input()
    proc = subprocess.Popen([DEPLOY, "transform", "--image", ecr_images["multi"], "--model-data", str(model_tgz),
                             "--role", transform_moto["role"], "--input", "s3://batch-data/in/",
                             "--output", "s3://batch-data/out/", "--poll", "0.05", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while not mt.calls("describe_transform_job") and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


def test_ctrl_c_stops_the_job_and_deletes_the_model(transform_moto, ecr_images, model_tgz):
    mt.script_next_job(["InProgress"])
    code, out, err = _run_and_interrupt(transform_moto, ecr_images, model_tgz)
    assert code == 130, err
    job = only_job()
    assert mt.calls("stop_transform_job") == [("stop_transform_job", job["TransformJobName"])]
    assert sm().list_models()["Models"] == []


def test_ctrl_c_with_keep_leaves_the_job_and_its_model(transform_moto, ecr_images, model_tgz):
    mt.script_next_job(["InProgress"])
    code, out, err = _run_and_interrupt(transform_moto, ecr_images, model_tgz, "--on-interrupt", "keep")
    assert code == 130, err
    job = only_job()
    assert mt.calls("stop_transform_job") == []
    assert [m["ModelName"] for m in sm().list_models()["Models"]] == [job["ModelName"]]
    assert f"stop-transform-job --transform-job-name {job['TransformJobName']}" in err


# --- local mode: the pure parts ----------------------------------------------------------------

def test_records_are_lines_or_whole_files():
    data = b"1,2\r\n\n3,4\n  \n5,6"
    assert [(r.line, r.data) for r in rec.split_records(data, "Line", 0)] == [(1, b"1,2"), (3, b"3,4"), (5, b"5,6")]
    assert [(r.line, r.data) for r in rec.split_records(data, "None", 0)] == [(1, data)]


def test_mini_batches_stay_within_the_payload_limit():
    records = [rec.Record(0, i + 1, b"x" * 99) for i in range(1000)]      # 100 bytes with the newline
    batches = list(rec.mini_batches(records, "MultiRecord", 1000))
    assert [len(b) for b, _ in batches] == [10] * 100
    assert all(len(rec.body_of(b, "Line")) <= 1000 for b, _ in batches)
    assert [r for b, _ in batches for r in b] == records                  # all, in order
    assert [len(b) for b, _ in rec.mini_batches(records[:5], "SingleRecord", 1000)] == [1] * 5
    big = records[:3] + [rec.Record(0, 4, b"y" * 2000)] + records[3:6]
    out = list(rec.mini_batches(big, "MultiRecord", 1000))
    assert [(len(b), reason is not None) for b, reason in out] == [(3, False), (1, True), (3, False)]
    assert "more than MaxPayloadInMB" in out[1][1]


def test_answers_are_split_one_line_per_record():
    assert rec.split_answer(b"0.1,0.9\n0.5,0.5\n", "text/csv", 2) == [b"0.1,0.9", b"0.5,0.5"]
    assert rec.split_answer(b'{"predictions": [[1, 2], [3, 4]]}', "application/json", 2) == [b"[1,2]", b"[3,4]"]
    with pytest.raises(ValueError, match="3 lines for 2 records"):
        rec.split_answer(b"1\n2\n3\n", "text/csv", 2)


def test_join_follows_sagemakers_rules():
    assert rec.join(b"1,2,3", b"0.9,0.1", "text/csv") == b"1,2,3,0.9,0.1"
    assert json.loads(rec.join(b'{"id": 7, "x": [1, 2]}', b"[0.9,0.1]", "application/jsonlines")) == \
        {"id": 7, "x": [1, 2], "SageMakerOutput": [0.9, 0.1]}
    assert json.loads(rec.join(b"[1, 2]", b"[0.9,0.1]", "application/jsonlines")) == \
        {"SageMakerInput": [1, 2], "SageMakerOutput": [0.9, 0.1]}
    assert json.loads(rec.join(b'{"x": 1}', b"label-a", "application/json")) == {"x": 1, "SageMakerOutput": "label-a"}


def test_parameters_come_from_flags_then_the_container_then_defaults():
    spec = tl.LocalTransformSpec(image="i", model_data="m", input=Path("."), output=Path("o"), max_payload_mb=2)
    values, sources = tl.effective_parameters(
        spec, {"BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6, "MaxConcurrentTransforms": 4})
    assert values == {"BatchStrategy": "MultiRecord", "MaxPayloadInMB": 2, "MaxConcurrentTransforms": 4}
    assert sources == {"BatchStrategy": "/execution-parameters", "MaxPayloadInMB": "flag",
                       "MaxConcurrentTransforms": "/execution-parameters"}
    values, sources = tl.effective_parameters(spec, None)
    assert values == {"BatchStrategy": "MultiRecord", "MaxPayloadInMB": 2, "MaxConcurrentTransforms": 1}
    assert tl.container_env(spec) == {"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2"}
    spec.strategy, spec.max_concurrent = "SingleRecord", 3
    assert tl.container_env(spec) == {"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2",
                                      "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD",
                                      "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "3"}


# --- local mode's loop against the host server ------------------------------------------------

def mlp_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)


def write_csv(path: Path, rows: np.ndarray, bad: dict[int, str] | None = None) -> None:
    lines = [",".join(f"{v:.6f}" for v in row) for row in rows]
    for index, text in (bad or {}).items():
        lines[index] = text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def mlp_predict(mlp_model_dir):
    import tensorflow as tf
    fn = tf.saved_model.load(str(mlp_model_dir.model_dir / "1")).signatures["serving_default"]

    def predict(rows: np.ndarray) -> np.ndarray:
        # the CSV as the server reads it: the 6-decimal text, not the float32 we started from
        exact = np.array([[float(f"{v:.6f}") for v in row] for row in rows], np.float32)
        return next(iter(fn(tf.constant(exact)).values())).numpy()
    return predict


def read_out(path: Path) -> np.ndarray:
    return np.array([[float(v) for v in line.split(",")] for line in path.read_text().splitlines()])


def local_spec(tmp_path, **kw) -> tl.LocalTransformSpec:
    return tl.LocalTransformSpec(image="-", model_data="-", input=tmp_path / "in", output=tmp_path / "out", **kw)


PARAMS = {"BatchStrategy": "MultiRecord", "MaxPayloadInMB": 1, "MaxConcurrentTransforms": 4}


@pytest.mark.parametrize("engine", ["batch", "async"])
def test_loop_keeps_order_and_counts_and_splits_by_payload(engine, tmp_path, mlp_server, mlp_predict):
    big, small = mlp_rows(30000, 1), mlp_rows(7, 2)
    write_csv(tmp_path / "in" / "big.csv", big)
    write_csv(tmp_path / "in" / "sub" / "small.csv", small)
    size = (tmp_path / "in" / "big.csv").stat().st_size
    assert size > 1024 * 1024                      # two mini-batches at 1 MB
    run = tl.transform_files(mlp_server.url, local_spec(tmp_path, engine=engine), PARAMS, quiet=True)
    assert run.failed == 0 and run.records == 30007 and run.files == 2
    assert run.requests == 2 + 1
    out_big = read_out(tmp_path / "out" / "big.csv.out")
    out_small = read_out(tmp_path / "out" / "sub" / "small.csv.out")
    assert out_big.shape == (30000, 3) and out_small.shape == (7, 3)
    np.testing.assert_allclose(out_big, mlp_predict(big), atol=1e-5)      # row i answers input row i
    np.testing.assert_allclose(out_small, mlp_predict(small), atol=1e-5)


@pytest.mark.parametrize("engine", ["batch", "async"])
def test_loop_reports_a_bad_record_with_file_and_line(engine, tmp_path, mlp_server):
    write_csv(tmp_path / "in" / "good.csv", mlp_rows(50, 3))
    write_csv(tmp_path / "in" / "bad.csv", mlp_rows(200, 4), bad={136: "0.1,0.2,oops,0.4"})
    run = tl.transform_files(mlp_server.url, local_spec(tmp_path, engine=engine), PARAMS, quiet=True)
    assert run.failed == 1
    assert [(f, line) for f, line, _ in run.failures] == [("bad.csv", 137)]
    assert "HTTP 400" in run.failures[0][2]
    assert (tmp_path / "out" / "good.csv.out").is_file()
    assert not (tmp_path / "out" / "bad.csv.out").exists()
    assert run.requests < 30                    # bisected, not one request per record


@pytest.mark.parametrize("engine", ["batch", "async"])
def test_loop_single_record_and_join(engine, tmp_path, mlp_server, mlp_predict):
    rows = mlp_rows(25, 5)
    write_csv(tmp_path / "in" / "a.csv", rows)
    params = {**PARAMS, "BatchStrategy": "SingleRecord"}
    run = tl.transform_files(mlp_server.url, local_spec(tmp_path, engine=engine, join_source="Input"), params, quiet=True)
    assert run.requests == 25 and run.failed == 0
    lines = (tmp_path / "out" / "a.csv.out").read_text().splitlines()
    inputs = (tmp_path / "in" / "a.csv").read_text().splitlines()
    assert len(lines) == 25
    for line, source in zip(lines, inputs):
        assert line.startswith(source + ",")
    joined = read_out(tmp_path / "out" / "a.csv.out")
    np.testing.assert_allclose(joined[:, 4:], mlp_predict(rows), atol=1e-5)


@pytest.mark.parametrize("engine", ["batch", "async"])
def test_loop_jsonlines_join(engine, tmp_path, mlp_server, mlp_predict):
    rows = mlp_rows(12, 6)
    lines = [json.dumps({"features": [float(f"{v:.6f}") for v in r]}) for r in rows]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text("\n".join(lines) + "\n")
    spec = local_spec(tmp_path, engine=engine, content_type="application/jsonlines", join_source="Input")
    run = tl.transform_files(mlp_server.url, spec, PARAMS, quiet=True)
    assert run.failed == 0, run.failures
    out = [json.loads(line) for line in (tmp_path / "out" / "a.jsonl.out").read_text().splitlines()]
    assert [o["features"] for o in out] == [json.loads(line)["features"] for line in lines]
    np.testing.assert_allclose([o["SageMakerOutput"] for o in out], mlp_predict(rows), atol=1e-5)


def test_engines_give_the_same_bytes_and_the_same_failures(tmp_path, mlp_server):
    write_csv(tmp_path / "in" / "a.csv", mlp_rows(20000, 30))
    write_csv(tmp_path / "in" / "b.csv", mlp_rows(300, 31), bad={7: "1,2,x,4", 250: "1,2"})
    write_csv(tmp_path / "in" / "c" / "d.csv", mlp_rows(3, 32))
    got, said = {}, []
    for engine in ("batch", "async"):
        spec = tl.LocalTransformSpec(image="-", model_data="-", input=tmp_path / "in", output=tmp_path / engine,
                                     engine=engine, join_source="Input")
        run = tl.transform_files(mlp_server.url, spec, PARAMS, quiet=True, info=said.append)
        files = {p.relative_to(tmp_path / engine).as_posix(): p.read_bytes()
                 for p in sorted((tmp_path / engine).rglob("*")) if p.is_file()}
        got[engine] = (files, run.failures, run.requests, run.records)
    assert got["batch"] == got["async"]
    files, failures, _, records = got["async"]
    assert sorted(files) == ["a.csv.out", "c/d.csv.out"] and records == 20303
    assert [(f, line) for f, line, _ in failures] == [("b.csv", 8), ("b.csv", 251)]
    staged = [m.split("staging requests in ")[1].split(",")[0] for m in said if "staging requests in" in m]
    assert len(staged) == 1 and not Path(staged[0]).exists()            # the local "S3" is removed


def test_async_engine_stopped_mid_run_leaves_no_staging_and_no_partial_out(tmp_path, mlp_server, monkeypatch):
    import threading
    write_csv(tmp_path / "in" / "a.csv", mlp_rows(2000, 33))
    write_csv(tmp_path / "in" / "b.csv", mlp_rows(2000, 34))
    read = agent.FolderSource.read

    def read_then_stop(self, name):
        if name == "b.csv":
            time.sleep(0.2)               # a.csv's requests are out
            raise KeyboardInterrupt
        return read(self, name)
    monkeypatch.setattr(agent.FolderSource, "read", read_then_stop)
    said = []
    spec = local_spec(tmp_path, engine="async")
    with pytest.raises(KeyboardInterrupt):
        tl.transform_files(mlp_server.url, spec, {**PARAMS, "BatchStrategy": "SingleRecord"}, quiet=True,
                           info=said.append)
    staged = [m.split("staging requests in ")[1].split(",")[0] for m in said if "staging requests in" in m]
    assert not Path(staged[0]).exists() and f"async: removed {staged[0]}" in said
    assert not (tmp_path / "out" / "b.csv.out").exists() and not (tmp_path / "out" / "a.csv.out").exists()
    deadline = time.monotonic() + 10
    while any(t.name.startswith("async-runtime-") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(t.name.startswith("async-runtime-") for t in threading.enumerate())


# --- deploy transform --local against the real images -------------------------------------------

def image(request, arch):
    try:
        return request.getfixturevalue(f"image_{arch}")
    except pytest.FixtureLookupError:
        pytest.skip("the container fixtures (tests/fixtures/docker.py) are not loaded")


def assert_container_removed(stderr: str) -> None:
    """The container this run started (named in its `docker run` line) is gone. Checked by name:
    other sessions on this machine may run deploy-local-* containers at the same time."""
    import re
    names = re.findall(r"docker run -d --name (deploy-local-[0-9a-f]+)", stderr)
    assert len(names) == 1, stderr[-3000:]
    proc = subprocess.run(["docker", "inspect", names[0]], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0, f"{names[0]} is still there"


def run_local(img, model_dir, tmp_path, *extra, timeout=600):
    return subprocess.run([DEPLOY, "transform", "--local", "--image", img, "--model-data", str(model_dir),
                           "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                           "--port", str(free_port()), "--env", "SAGEMAKER_MODEL_SERVER_WORKERS=1", *extra],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.container
def test_local_amd64_order_counts_payload_and_execution_parameters(request, tmp_path, mlp_model_dir, mlp_predict):
    img = image(request, "amd64")
    big, small = mlp_rows(30000, 11), mlp_rows(9, 12)
    write_csv(tmp_path / "in" / "part-0.csv", big)
    write_csv(tmp_path / "in" / "part-1.csv", small)
    proc = run_local(img, mlp_model_dir.model_dir, tmp_path, "--max-payload-mb", "1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    # started as SageMaker's agent starts it, and asked the container
    assert "-e SAGEMAKER_BATCH=true -e SAGEMAKER_MAX_PAYLOAD_IN_MB=1" in proc.stderr
    import re
    answered = json.loads(re.search(r"GET /execution-parameters: (\{.*\})", proc.stderr).group(1))
    assert answered["MaxPayloadInMB"] == 1                # the server took the environment's limit
    assert "BatchStrategy MultiRecord (/execution-parameters), MaxPayloadInMB 1 (flag), " \
           f"MaxConcurrentTransforms {answered['MaxConcurrentTransforms']} (/execution-parameters)" in proc.stderr
    assert "transformed 30,009 of 30,009 records from 2 file(s)" in proc.stdout
    assert "(3 requests)" in proc.stdout                  # 30,000 rows > 1 MB: two mini-batches
    assert "records/s" in proc.stdout
    np.testing.assert_allclose(read_out(tmp_path / "out" / "part-0.csv.out"), mlp_predict(big), atol=1e-5)
    np.testing.assert_allclose(read_out(tmp_path / "out" / "part-1.csv.out"), mlp_predict(small), atol=1e-5)
    assert_container_removed(proc.stderr)


@pytest.mark.container
def test_local_amd64_bad_record_and_join_source(request, tmp_path, mlp_model_dir, mlp_predict):
    img = image(request, "amd64")
    rows = mlp_rows(300, 13)
    write_csv(tmp_path / "in" / "ok.csv", rows)
    write_csv(tmp_path / "in" / "broken.csv", mlp_rows(40, 14), bad={9: "1,2,3"})
    proc = run_local(img, mlp_model_dir.model_dir, tmp_path, "--join-source", "Input", "--format", "json")
    assert proc.returncode == 1
    assert "FAILED broken.csv:10: HTTP 400" in proc.stderr
    assert "1 record(s) failed in broken.csv" in proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["records"], doc["transformed"], doc["failed"]) == (340, 339, 1)
    assert [(f["file"], f["line"]) for f in doc["failures"]] == [("broken.csv", 10)]
    assert doc["written"] == [str(tmp_path / "out" / "ok.csv.out")]
    assert not (tmp_path / "out" / "broken.csv.out").exists()
    inputs = (tmp_path / "in" / "ok.csv").read_text().splitlines()
    joined = (tmp_path / "out" / "ok.csv.out").read_text().splitlines()
    assert len(joined) == 300 and all(j.startswith(i + ",") for i, j in zip(inputs, joined))
    np.testing.assert_allclose(read_out(tmp_path / "out" / "ok.csv.out")[:, 4:], mlp_predict(rows), atol=1e-5)
    assert_container_removed(proc.stderr)


# The arm64 image under emulation through `deploy transform --local`'s container start
# (local/container.py, which picks --platform linux/arm64 from the image) is
# tests/deploy/test_deploy_compare.py's test_local_fpmath_check_with_the_arm64_image; the
# transform's own behaviour is architecture-free and tested above on the amd64 image.


def test_local_refuses_s3_and_empty_input_before_docker(tmp_path, mlp_model_dir):
    proc = subprocess.run([DEPLOY, "transform", "--local", "--image", "never-pulled:latest", "--model-data",
                           str(mlp_model_dir.model_dir), "--input", "s3://b/in/", "--output", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "--local reads and writes local files" in proc.stderr
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeployError, match="holds no files"):
        tl.run(tl.LocalTransformSpec(image="never-pulled:latest", model_data=str(mlp_model_dir.model_dir),
                                     input=tmp_path / "empty", output=tmp_path / "out"), print)


@pytest.mark.parametrize("engine", ["batch", "async"])
def test_loop_split_none_sends_whole_files(engine, tmp_path, mlp_server, mlp_predict):
    import io
    (tmp_path / "in").mkdir()
    batches = [np.round(mlp_rows(10 + i, 20 + i), 6) for i in range(3)]
    for i, rows in enumerate(batches):
        buf = io.BytesIO()
        np.save(buf, rows)
        (tmp_path / "in" / f"batch-{i}.npy").write_bytes(buf.getvalue())
    spec = local_spec(tmp_path, engine=engine, content_type="application/x-npy", accept="text/csv", split_type="None")
    params = {**PARAMS, "BatchStrategy": "SingleRecord"}
    run = tl.transform_files(mlp_server.url, spec, params, quiet=True)
    assert run.failed == 0 and run.records == 3 and run.requests == 3
    for i, rows in enumerate(batches):
        np.testing.assert_allclose(read_out(tmp_path / "out" / f"batch-{i}.npy.out"), mlp_predict(rows), atol=1e-5)


@pytest.mark.container
def test_local_ctrl_c_stops_the_run_and_removes_the_container(request, tmp_path, mlp_model_dir):
    img = image(request, "amd64")
    write_csv(tmp_path / "in" / "many.csv", mlp_rows(20000, 16))
    proc = subprocess.Popen([DEPLOY, "transform", "--local", "--image", img, "--model-data", str(mlp_model_dir.model_dir),
                             "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                             "--port", str(free_port()), "--strategy", "SingleRecord", "--max-concurrent", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            if line.startswith("batch: "):
                break
        time.sleep(1.0)                      # some records in flight
        proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(lines) + rest
    assert proc.returncode == 130, err[-3000:]
    assert "stopping" in err and "stopped (exit code" in err
    assert not (tmp_path / "out" / "many.csv.out").exists()     # no partial output file
    assert_container_removed(err)


@pytest.mark.parametrize("engine", ["batch", "async"])
def test_loop_many_files_each_gets_its_own_out_in_order(engine, tmp_path, mlp_server, mlp_predict):
    sizes = [1 + (i * 7) % 40 for i in range(30)]
    rows = {}
    for i, n in enumerate(sizes):
        rows[i] = mlp_rows(n, 100 + i)
        write_csv(tmp_path / "in" / f"d{i % 3}" / f"f{i:02d}.csv", rows[i])
    (tmp_path / "in" / "empty.csv").write_text("\n")
    params = {**PARAMS, "MaxConcurrentTransforms": 3}
    run = tl.transform_files(mlp_server.url, local_spec(tmp_path, engine=engine), params, quiet=True)
    assert run.failed == 0 and run.records == sum(sizes) and run.files == 31
    assert run.requests == 30                       # one mini-batch per file, none for the empty one
    for i in range(30):
        out = read_out(tmp_path / "out" / f"d{i % 3}" / f"f{i:02d}.csv.out")
        np.testing.assert_allclose(out, mlp_predict(rows[i]), atol=1e-5)
    assert (tmp_path / "out" / "empty.csv.out").read_bytes() == b""


def test_progress_is_a_bar_on_a_terminal_and_lines_otherwise():
    import io

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    bar = agent.Progress(1000, stream=tty)
    bar.add(10, 500)
    time.sleep(0.11)
    bar.add(10, 500)
    bar.close()
    text = tty.getvalue()
    assert text.startswith("\r[###############---------------]  50%  10 records")
    assert "\r[##############################] 100%  20 records" in text and text.endswith("\n")
    pipe = io.StringIO()
    lines = agent.Progress(1000, stream=pipe)
    lines.add(10, 500)
    lines.add(10, 500)
    lines.close()
    assert pipe.getvalue().splitlines()[0].startswith("progress:  50%  10 records")
    assert pipe.getvalue().splitlines()[-1].startswith("progress: 100%  20 records")
    assert "\r" not in pipe.getvalue()
    quiet = io.StringIO()
    q = agent.Progress(10, stream=quiet, quiet=True)
    q.add(10, 10)
    assert quiet.getvalue() == ""
