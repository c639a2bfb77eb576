"""`deploy create/update/autoscale/delete/list/status/invoke` against moto in server mode.

The command runs in-process (`main(argv)`) so the test can inject failures into the moto server
that lives in the same process; every AWS call still goes over HTTP to moto. The tests then
read moto's state back with boto3 to check what was really sent.
"""

from __future__ import annotations

import json
import tarfile

import boto3
import pytest
import requests

from serve.deploy.cli import main
from tests.fixtures.moto import fail_operation, script_endpoint_status

pytestmark = pytest.mark.deploy

SECRET = "testing-secret-not-real"


def run(capsys, *argv):
    code = main([*argv, "--poll", "0.05"] if argv[0] in ("create", "update", "delete") else list(argv))
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    return code, out, err


@pytest.fixture
def model_tgz(tmp_path):
    """A small archive in the server's layout (content is not a real SavedModel: moto never loads it)."""
    src = tmp_path / "model"
    (src / "1" / "variables").mkdir(parents=True)
    (src / "1" / "saved_model.pb").write_bytes(b"\x08\x01fake")
    (src / "1" / "variables" / "variables.index").write_bytes(b"idx")
    out = tmp_path / "model.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(src / "1", "1")
    return out


@pytest.fixture
def model_tgz_with_code(tmp_path, model_tgz):
    code = tmp_path / "code"
    code.mkdir()
    (code / "inference.py").write_text("def input_handler(data, context):\n    return data.read()\n")
    out = tmp_path / "with-code.tar.gz"
    with tarfile.open(model_tgz) as src, tarfile.open(out, "w:gz") as tar:
        for m in src.getmembers():
            tar.addfile(m, src.extractfile(m) if m.isfile() else None)
        tar.add(code, "code")
    return out


def sm():
    return boto3.client("sagemaker")


def state():
    """Everything SageMaker-side and S3-side that could be billing or lying around."""
    s3 = boto3.client("s3")
    objects = []
    for b in s3.list_buckets()["Buckets"]:
        objects += [f"s3://{b['Name']}/{o['Key']}" for o in s3.list_objects_v2(Bucket=b["Name"]).get("Contents", [])]
    return {
        "endpoints": [e["EndpointName"] for e in sm().list_endpoints()["Endpoints"]],
        "configs": [c["EndpointConfigName"] for c in sm().list_endpoint_configs()["EndpointConfigs"]],
        "models": [m["ModelName"] for m in sm().list_models()["Models"]],
        "objects": objects,
    }


def create(capsys, aws_env, image, model, *extra):
    return run(capsys, "create", "--image", image, "--model-data", str(model), "--role", aws_env["role"], *extra)


def test_create_sends_what_sagemaker_needs(capsys, aws_env, ecr_images, model_tgz):
    code, out, err = create(capsys, aws_env, ecr_images["multi"], model_tgz, "--name", "digits")
    assert code == 0, err
    assert "endpoint digits is InService" in out

    ep = sm().describe_endpoint(EndpointName="digits")
    assert ep["EndpointStatus"] == "InService"
    cfg = sm().describe_endpoint_config(EndpointConfigName=ep["EndpointConfigName"])
    (variant,) = cfg["ProductionVariants"]
    assert variant["InstanceType"] == "ml.c7g.xlarge"
    assert variant["InitialInstanceCount"] == 1
    assert variant["VariantName"] == "AllTraffic"
    model = sm().describe_model(ModelName=variant["ModelName"])
    assert model["ExecutionRoleArn"] == aws_env["role"]
    container = model["PrimaryContainer"]
    assert container["Image"] == ecr_images["multi"]
    bucket = f"sagemaker-{aws_env['region']}-{aws_env['account']}"
    assert container["ModelDataUrl"] == f"s3://{bucket}/{variant['ModelName']}/model.tar.gz"
    assert container["Environment"] == {
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
        "SAGEMAKER_REGION": aws_env["region"],
        "TF_ENABLE_ONEDNN_OPTS": "1",
        "DNNL_DEFAULT_FPMATH_MODE": "BF16",
    }
    # the uploaded object is the archive, byte for byte
    body = boto3.client("s3").get_object(Bucket=bucket, Key=f"{variant['ModelName']}/model.tar.gz")["Body"].read()
    assert body == model_tgz.read_bytes()
    assert "ml.c7g.xlarge is arm64: ok" in err


def test_create_with_code_env_overrides_and_x86(capsys, aws_env, ecr_images, model_tgz_with_code):
    code, out, err = create(capsys, aws_env, ecr_images["amd64"], model_tgz_with_code, "--name", "x86",
                            "--instance-type", "ml.c6i.2xlarge", "--instance-count", "2",
                            "--env", "SAGEMAKER_CONTAINER_LOG_LEVEL=10", "--env", "MY_FLAG=a=b")
    assert code == 0, err
    cfg_name = sm().describe_endpoint(EndpointName="x86")["EndpointConfigName"]
    (variant,) = sm().describe_endpoint_config(EndpointConfigName=cfg_name)["ProductionVariants"]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.c6i.2xlarge", 2)
    env = sm().describe_model(ModelName=variant["ModelName"])["PrimaryContainer"]["Environment"]
    assert env["SAGEMAKER_PROGRAM"] == "inference.py"
    assert env["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    assert env["SAGEMAKER_CONTAINER_LOG_LEVEL"] == "10"
    assert env["MY_FLAG"] == "a=b"


@pytest.mark.parametrize("image,instance_type", [("arm64", "ml.c6i.xlarge"), ("amd64", "ml.c7g.xlarge"),
                                                 ("amd64", "ml.m6gd.large")])
def test_architecture_mismatch_is_refused_before_anything_is_created(
        capsys, aws_env, ecr_images, model_tgz, image, instance_type):
    code, out, err = create(capsys, aws_env, ecr_images[image], model_tgz, "--instance-type", instance_type)
    assert code == 1
    assert f"has architectures [{image}]" in err and instance_type in err
    assert state() == {"endpoints": [], "configs": [], "models": [], "objects": []}
    assert boto3.client("s3").list_buckets()["Buckets"] == []


def test_missing_image_is_refused(capsys, aws_env, ecr_images, model_tgz):
    missing = ecr_images["multi"].replace(":multi", ":nope")
    code, out, err = create(capsys, aws_env, missing, model_tgz)
    assert code == 1 and "not found in ECR" in err
    assert state()["models"] == []


@pytest.mark.parametrize("operation", ["create_model", "create_endpoint_config", "create_endpoint"])
def test_failure_half_way_leaves_nothing_behind(capsys, aws_env, ecr_images, model_tgz, operation):
    with fail_operation(operation, f"{operation} says no"):
        code, out, err = create(capsys, aws_env, ecr_images["multi"], model_tgz, "--name", "half")
    assert code == 1
    assert f"{operation} says no" in err
    assert "rollback complete: nothing from this run is left" in err
    assert "rolled back: deleted s3://" in err
    assert state() == {"endpoints": [], "configs": [], "models": [], "objects": []}


def test_failed_endpoint_prints_failure_reason_and_rolls_back(capsys, aws_env, ecr_images, model_tgz):
    reason = "The primary container for production variant AllTraffic did not pass the ping health check."
    script_endpoint_status("sick", ["Creating", "Creating", "Failed"], reason)
    code, out, err = create(capsys, aws_env, ecr_images["multi"], model_tgz, "--name", "sick")
    assert code == 1
    assert f"endpoint sick failed: {reason}" in err
    assert "sick: Creating (0m00s)" in err       # the progress line (plain lines when not a TTY)
    assert "rolled back: deleted endpoint sick" in err
    assert state() == {"endpoints": [], "configs": [], "models": [], "objects": []}


def test_existing_s3_model_is_not_uploaded_nor_deleted_on_rollback(capsys, aws_env, ecr_images, model_tgz_with_code):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="my-models", CreateBucketConfiguration={"LocationConstraint": aws_env["region"]})
    s3.upload_file(str(model_tgz_with_code), "my-models", "v1/model.tar.gz")
    with fail_operation("create_endpoint"):
        code, out, err = create(capsys, aws_env, ecr_images["multi"], "s3://my-models/v1/model.tar.gz")
    assert code == 1
    assert state() == {"endpoints": [], "configs": [], "models": [],
                       "objects": ["s3://my-models/v1/model.tar.gz"]}
    code, out, err = create(capsys, aws_env, ecr_images["multi"], "s3://my-models/v1/model.tar.gz", "--name", "s3m")
    assert code == 0, err
    cfg = sm().describe_endpoint_config(EndpointConfigName=sm().describe_endpoint(EndpointName="s3m")["EndpointConfigName"])
    container = sm().describe_model(ModelName=cfg["ProductionVariants"][0]["ModelName"])["PrimaryContainer"]
    assert container["ModelDataUrl"] == "s3://my-models/v1/model.tar.gz"
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"    # code/ found inside the S3 archive
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["my-models"]


def test_existing_endpoint_name_is_refused(capsys, aws_env, ecr_images, model_tgz):
    assert create(capsys, aws_env, ecr_images["multi"], model_tgz, "--name", "twice")[0] == 0
    before = state()
    code, out, err = create(capsys, aws_env, ecr_images["multi"], model_tgz, "--name", "twice")
    assert code == 1 and "already exists" in err
    assert state() == before


def test_update_is_blue_green_and_removes_the_old(capsys, aws_env, ecr_images, model_tgz):
    assert create(capsys, aws_env, ecr_images["multi"], model_tgz, "--name", "web")[0] == 0
    old = state()
    script_endpoint_status("web", ["Updating", "Updating", "InService"], after="update_endpoint")
    code, out, err = run(capsys, "update", "web", "--instance-type", "ml.c6g.2xlarge", "--instance-count", "3",
                         "--env", "SAGEMAKER_MODEL_SERVER_WORKERS=4")
    assert code == 0, err
    assert "web: Updating" in err
    ep = sm().describe_endpoint(EndpointName="web")
    assert ep["EndpointConfigName"] not in old["configs"]
    (variant,) = sm().describe_endpoint_config(EndpointConfigName=ep["EndpointConfigName"])["ProductionVariants"]
    assert (variant["InstanceType"], variant["InitialInstanceCount"], variant["VariantName"]) == \
        ("ml.c6g.2xlarge", 3, "AllTraffic")
    container = sm().describe_model(ModelName=variant["ModelName"])["PrimaryContainer"]
    assert container["Environment"]["SAGEMAKER_MODEL_SERVER_WORKERS"] == "4"
    assert container["Environment"]["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert container["Image"] == ecr_images["multi"]
    now = state()
    assert now["configs"] == [ep["EndpointConfigName"]] and now["models"] == [variant["ModelName"]]
    assert now["objects"] == old["objects"]     # the model data is still in use


def test_update_refuses_wrong_architecture_and_failed_update_cleans_up(capsys, aws_env, ecr_images, model_tgz):
    assert create(capsys, aws_env, ecr_images["multi"], model_tgz, "--name", "web")[0] == 0
    old = state()
    code, out, err = run(capsys, "update", "web", "--image", ecr_images["amd64"])   # still ml.c7g
    assert code == 1 and "has architectures [amd64]" in err
    assert state() == old
    with fail_operation("update_endpoint", "no capacity"):
        code, out, err = run(capsys, "update", "web", "--image", ecr_images["arm64"], "--model-data", str(model_tgz))
    assert code == 1 and "no capacity" in err
    assert state() == old


def test_autoscale_status_list_delete(capsys, aws_env, ecr_images, model_tgz):
    assert create(capsys, aws_env, ecr_images["multi"], model_tgz, "--name", "scaled")[0] == 0
    code, out, err = run(capsys, "autoscale", "scaled", "--min", "1", "--max", "4", "--target-invocations", "750")
    assert code == 0, err
    aas = boto3.client("application-autoscaling")
    (target,) = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert target["ResourceId"] == "endpoint/scaled/variant/AllTraffic"
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    (policy,) = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    cfg = policy["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert cfg["TargetValue"] == 750.0
    assert cfg["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"

    # an update keeps the scaling: deregistered for the update, as SageMaker asks, then restored
    code, out, err = run(capsys, "update", "scaled", "--instance-type", "ml.c7g.2xlarge")
    assert code == 0, err
    assert "auto scaling of endpoint/scaled/variant/AllTraffic suspended for the update" in err
    assert "restored (1..4, 1 policy)" in err
    assert len(aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]) == 1
    (policy,) = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 750.0

    code, out, err = run(capsys, "status", "scaled")
    assert code == 0
    assert "scaled  InService" in out and "1 x ml.c7g.2xlarge" in out and "1..4 instances" in out
    assert ecr_images["multi"] in out
    code, out, err = run(capsys, "list")
    assert code == 0 and "scaled" in out and "InService" in out and "1 x ml.c7g.2xlarge" in out

    code, out, err = run(capsys, "delete", "scaled")
    assert code == 0, err
    assert "model archives deploy uploaded for scaled stay in S3" in err
    assert "  s3://sagemaker-" in err
    s = state()
    assert (s["endpoints"], s["configs"], s["models"]) == ([], [], [])
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    code, out, err = run(capsys, "delete", "scaled")
    assert code == 1 and "no endpoint named scaled" in err


def test_invoke_and_softmax(capsys, aws_env, ecr_images, model_tgz, moto_server):
    assert create(capsys, aws_env, ecr_images["multi"], model_tgz, "--name", "digits")[0] == 0
    results = [{"Body": json.dumps({"predictions": [[2.0, 1.0, 0.1]]}), "ContentType": "application/json"}] * 2
    requests.post(f"{moto_server}/moto-api/static/sagemaker/endpoint-results",
                  json={"account_id": aws_env["account"], "region": aws_env["region"], "results": results},
                  timeout=10).raise_for_status()
    code, out, err = run(capsys, "invoke", "digits", "--json", "[[1, 2, 3, 4]]")
    assert code == 0, err
    assert json.loads(out) == {"predictions": [[2.0, 1.0, 0.1]]}
    code, out, err = run(capsys, "invoke", "digits", "--json", "[[1, 2, 3, 5]]", "--softmax")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["classes"] == [0]
    assert doc["predictions"][0] == pytest.approx([0.659, 0.2424, 0.0986], abs=1e-3)
    assert run(capsys, "invoke", "digits", "--json", "[[1,")[0] == 1


def test_console_script_against_moto(aws_env, ecr_images, model_tgz):
    """The installed `deploy` command, as a user runs it (subprocess; nothing injected)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    deploy = Path(sys.executable).with_name("deploy")
    cmd = [str(deploy), "create", "--image", ecr_images["multi"], "--model-data", str(model_tgz),
           "--role", aws_env["role"], "--name", "cli", "--poll", "0.1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "endpoint cli is InService" in proc.stdout
    proc = subprocess.run([str(deploy), "delete", "cli", "--poll", "0.1"], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert state()["endpoints"] == []


def test_region_sources(capsys, aws_env, ecr_images, model_tgz, monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert run(capsys, "list")[0] == 0                     # AWS_REGION alone is enough
    code, out, err = run(capsys, "list", "--region", "us-east-1")
    assert code == 0 and "no endpoints in us-east-1" in out
    monkeypatch.delenv("AWS_REGION")
    code, out, err = run(capsys, "list")
    assert code == 1 and "no AWS region" in err


def test_progress_line_on_a_tty_rewrites_itself():
    import io

    from serve.deploy.cli import Console

    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    console = Console(stream)
    console.progress("digits", "Creating", 1.2)
    console.progress("digits", "Creating", 75.0)
    console.progress_done()
    console.info("done")
    text = stream.getvalue()
    assert text.startswith("\rdigits: Creating (0m01s)")
    assert "\rdigits: Creating (1m15s)" in text
    assert text.endswith("\ndone\n")
