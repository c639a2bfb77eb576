"""`deploy create/update/autoscale/delete/list/status/invoke` against moto in server mode.

The command runs in-process (`main(argv)`) so the test can inject failures into the moto server
that lives in the same process; every AWS call still goes over HTTP to moto. The tests then
read moto's state back with boto3 to check what was really sent.
"""

from __future__ import annotations

import json
import tarfile

import pytest
import requests

from sagemaker_tf_deploy.commands.main import main
from tests.fixtures.moto import SECRET, client, fail_operation, run_deploy, script_endpoint_status

pytestmark = pytest.mark.deploy



def run(capsys, *argv):
    return run_deploy(capsys, *argv, *(("--poll", "0.05") if argv[0] in ("create", "update", "delete") else ()))


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
    return client("sagemaker")


def state():
    """Everything SageMaker-side and S3-side that could be billing or lying around."""
    s3 = client("s3")
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
    }   # no DNNL_DEFAULT_FPMATH_MODE: the server decides BF16 from the CPU
    # the uploaded object is the archive, byte for byte
    body = client("s3").get_object(Bucket=bucket, Key=f"{variant['ModelName']}/model.tar.gz")["Body"].read()
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
    assert client("s3").list_buckets()["Buckets"] == []


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
    s3 = client("s3")
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
    aas = client("application-autoscaling")
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
    assert create(capsys, aws_env, ecr_images["multi"], model_tgz, "--name", "invoked")[0] == 0
    results = [{"Body": json.dumps({"predictions": [[2.0, 1.0, 0.1]]}), "ContentType": "application/json"}] * 2
    requests.post(f"{moto_server}/moto-api/static/sagemaker/endpoint-results",
                  json={"account_id": aws_env["account"], "region": aws_env["region"], "results": results},
                  timeout=10).raise_for_status()
    code, out, err = run(capsys, "invoke", "invoked", "--json", "[[1, 2, 3, 4]]")
    assert code == 0, err
    assert json.loads(out) == {"predictions": [[2.0, 1.0, 0.1]]}
    code, out, err = run(capsys, "invoke", "invoked", "--json", "[[1, 2, 3, 5]]", "--softmax")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["classes"] == [0]
    assert doc["predictions"][0] == pytest.approx([0.659, 0.2424, 0.0986], abs=1e-3)
    assert run(capsys, "invoke", "invoked", "--json", "[[1,")[0] == 2      # usage: nothing was sent


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

    from sagemaker_tf_deploy.commands.main import Console

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


# --- issue 16: local checks first, any endpoint, the AWS CLI's conventions ---------------------

def _bad_archive(tmp_path, kind):
    if kind == "junk":
        p = tmp_path / "junk.tar.gz"
        p.write_bytes(b"this is not a tarball")
        return p
    if kind == "no-model":
        src = tmp_path / "nomodel"
        src.mkdir()
        (src / "README.txt").write_text("no model here")
        p = tmp_path / "nomodel.tar.gz"
        with tarfile.open(p, "w:gz") as tar:
            tar.add(src / "README.txt", "README.txt")
        return p
    if kind == "truncated":
        good = tmp_path / "good"
        (good / "1").mkdir(parents=True)
        (good / "1" / "saved_model.pb").write_bytes(bytes(range(256)) * 400)
        p = tmp_path / "trunc.tar.gz"
        with tarfile.open(p, "w:gz") as tar:
            tar.add(good / "1", "1")
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
        return p
    folder = tmp_path / "empty-folder"
    folder.mkdir()
    return folder


LOCAL_REFUSALS = [
    # (extra args replacing the defaults, expected message part)
    ({"--name": "my_model"}, "has '_' at position 3: SageMaker names allow only letters, digits and hyphens"),
    ({"--name": "x" * 64}, "is 64 characters long: SageMaker allows at most 63"),
    ({"--name": "web-"}, "ends with a hyphen"),
    ({"--name": "-web"}, "starts with a hyphen"),
    ({"--instance-type": "ml.c7g.xlargee"}, "not in SageMaker's list of hosting instance types (botocore "),
    ({"--instance-type": "c7g.xlarge"}, "is not of the form ml.<family>.<size>"),
    ({"--instance-count": "0"}, "--instance-count must be at least 1"),
    ({"--image": "sagemaker-tf-graviton:dev"}, "is a local or Docker Hub name: a SageMaker endpoint pulls its image "
                                               "only from Amazon ECR in the endpoint's region (eu-west-1)"),
    ({"--image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/sagemaker-tf-graviton:multi"},
     "is in ECR in us-east-1 but the endpoint is in eu-west-1"),
    ({"--role": None}, "an execution role is required: pass --role"),
    ({"--role": "SageMakerExecutionRole"}, "is not an IAM role ARN"),
    ({"--env": "NOEQUALS"}, "--env 'NOEQUALS' is not KEY=VALUE"),
    ({"--model-data": "junk"}, "is not a tar archive (SageMaker wants a gzip-compressed tar, model.tar.gz)"),
    ({"--model-data": "no-model"}, "no loadable model in archive"),
    ({"--model-data": "truncated"}, "is a damaged or truncated tar archive"),
    ({"--model-data": "folder"}, "no loadable model in"),
    ({"--model-data": "missing"}, "does not exist"),
    ({"--model-data": "s3://Bad_Bucket/x"}, "is not an s3://BUCKET/KEY URI"),
]


@pytest.mark.parametrize("change,message", LOCAL_REFUSALS, ids=[m[:40] for _, m in LOCAL_REFUSALS])
def test_every_local_check_refuses_before_any_call(capsys, aws_env, ecr_images, model_tgz, tmp_path,
                                                   monkeypatch, aws_calls, change, message):
    monkeypatch.delenv("SAGEMAKER_ROLE_ARN", raising=False)
    opts = {"--image": ecr_images["multi"], "--model-data": str(model_tgz), "--role": aws_env["role"],
            "--name": "checked"}
    for key, value in change.items():
        if key == "--model-data" and value in ("junk", "no-model", "truncated", "folder"):
            value = str(_bad_archive(tmp_path, value))
        elif key == "--model-data" and value == "missing":
            value = str(tmp_path / "nowhere.tar.gz")
        opts[key] = value
    argv = ["create"] + [f"{k}={v}" for k, v in opts.items() if v is not None]
    code, out, err = run(capsys, *argv)
    assert code == 2, err
    assert message in err
    assert "Traceback" not in err and "deleting what this run created" not in err
    assert "/tmp/deploy-check-" not in err            # names the user's file, not a scratch folder
    assert aws_calls == []
    # update runs the same checks first
    if set(change) & {"--instance-type", "--image", "--model-data", "--env", "--instance-count"} and \
            change.get("--model-data") != "s3://Bad_Bucket/x":
        argv = ["update", "checked"] + [f"{k}={opts[k]}" for k in change]
        code, out, err = run(capsys, *argv)
        assert code == 2 and message in err and aws_calls == [], err


def test_role_from_the_environment_and_suggestion(capsys, aws_env, ecr_images, model_tgz, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_ROLE_ARN", aws_env["role"])
    code, out, err = run(capsys, "create", "--image", ecr_images["multi"], "--model-data", str(model_tgz),
                         "--name", "envrole", "--instance-type", "ml.c7g.xlargee")
    assert code == 2 and "did you mean ml.c7g.xlarge?" in err
    code, out, err = run(capsys, "create", "--image", ecr_images["multi"], "--model-data", str(model_tgz),
                         "--name", "envrole")
    assert code == 0, err
    assert sm().describe_model(ModelName=sm().list_models()["Models"][0]["ModelName"])["ExecutionRoleArn"] == \
        aws_env["role"]


def test_config_deleted_outside_the_tool(capsys, aws_env, ecr_images, model_tgz):
    assert create(capsys, aws_env, ecr_images["multi"], model_tgz, "--name", "orphan")[0] == 0
    cfg = sm().describe_endpoint(EndpointName="orphan")["EndpointConfigName"]
    sm().delete_endpoint_config(EndpointConfigName=cfg)
    code, out, err = run(capsys, "status", "orphan")
    assert code == 0, err
    assert f"config       {cfg}  (gone: deleted outside deploy)" in out
    code, out, err = run(capsys, "status", "orphan", "--output", "json")
    assert code == 0 and json.loads(out)["config"] is None
    code, out, err = run(capsys, "update", "orphan", "--instance-type", "ml.c7g.2xlarge")
    assert code == 1 and "which is gone (deleted outside deploy)" in err
    code, out, err = run(capsys, "delete", "orphan")
    assert code == 0, err
    assert f"endpoint config {cfg} of orphan is already gone" in err
    s = state()
    assert (s["endpoints"], s["configs"], s["models"]) == ([], [], [])   # its model found by name and tag
    code, out, err = run(capsys, "delete", "orphan", "--if-exists", "--purge-s3")
    assert code == 0, err
    assert state() == {"endpoints": [], "configs": [], "models": [], "objects": []}
    code, out, err = run(capsys, "delete", "orphan", "--if-exists")
    assert code == 0 and "nothing to delete" in err
    code, out, err = run(capsys, "delete", "orphan")
    assert code == 1 and "no endpoint named orphan" in err


def test_model_deleted_outside_the_tool(capsys, aws_env, ecr_images, model_tgz):
    assert create(capsys, aws_env, ecr_images["multi"], model_tgz, "--name", "nomodel")[0] == 0
    sm().delete_model(ModelName=sm().list_models()["Models"][0]["ModelName"])
    code, out, err = run(capsys, "status", "nomodel")
    assert code == 0 and "(gone: deleted outside deploy)" in out
    code, out, err = run(capsys, "delete", "nomodel", "--purge-s3")
    assert code == 0, err
    assert state() == {"endpoints": [], "configs": [], "models": [], "objects": []}


def test_update_names_the_old_archive_and_delete_purges_them(capsys, aws_env, ecr_images, model_tgz):
    assert create(capsys, aws_env, ecr_images["multi"], model_tgz, "--name", "arch")[0] == 0
    first = state()["objects"]
    code, out, err = run(capsys, "update", "arch", "--model-data", str(model_tgz))
    assert code == 0, err
    assert f"old model data stays in {first[0]}" in err
    assert len(state()["objects"]) == 2
    code, out, err = run(capsys, "delete", "arch", "--output", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert sorted(doc["s3_archives"]) == sorted(state()["objects"]) and doc["purged"] == []
    code, out, err = run(capsys, "delete", "arch", "--purge-s3", "--output", "json")
    assert code == 0, err
    assert len(json.loads(out)["purged"]) == 2 and state()["objects"] == []


def test_output_json_of_every_command(capsys, aws_env, ecr_images, model_tgz, tmp_path, moto_server):
    """--output json: one parseable document, ISO 8601 dates, no ResponseMetadata anywhere."""
    import datetime as dt

    def doc(*argv):
        code, out, err = run(capsys, *argv, "--output", "json")
        assert code == 0, err
        assert "ResponseMetadata" not in out
        return json.loads(out)

    src = tmp_path / "src" / "1"
    src.mkdir(parents=True)
    (src / "saved_model.pb").write_bytes(b"pb")
    d = doc("package", str(src.parent), "-o", str(tmp_path / "p.tar.gz"))
    assert d["archive"] == str(tmp_path / "p.tar.gz") and d["entries"] >= 2
    d = doc("create", "--image", ecr_images["multi"], "--model-data", str(model_tgz), "--role", aws_env["role"],
            "--name", "js", "--poll", "0.05")
    assert d["endpoint"] == "js" and d["status"] == "InService" and d["model_data"].startswith("s3://")
    d = doc("wait", "js", "--poll", "0.05")
    assert d["status"] == "InService"
    d = doc("list")
    assert [r["name"] for r in d] == ["js"]
    assert dt.datetime.fromisoformat(d[0]["created"]).tzinfo is not None
    d = doc("status", "js")
    assert d["endpoint"]["EndpointStatus"] == "InService"
    dt.datetime.fromisoformat(d["endpoint"]["CreationTime"])
    dt.datetime.fromisoformat(d["models"][d["config"]["ProductionVariants"][0]["ModelName"]]["CreationTime"])
    d = doc("autoscale", "js", "--min", "1", "--max", "2", "--target-invocations", "100")
    assert d["max"] == 2
    d = doc("update", "js", "--instance-count", "2", "--poll", "0.05")
    assert d["status"] == "InService" and d["previous_endpoint_config"] != d["endpoint_config"]
    results = [{"Body": json.dumps({"predictions": [[1.0, 0.0]]}), "ContentType": "application/json"}]
    requests.post(f"{moto_server}/moto-api/static/sagemaker/endpoint-results",
                  json={"account_id": aws_env["account"], "region": aws_env["region"], "results": results},
                  timeout=10).raise_for_status()
    d = doc("invoke", "js", "--json", "[[1]]")
    assert d["body"] == {"predictions": [[1.0, 0.0]]} and d["content_type"] == "application/json"
    d = doc("delete", "js", "--poll", "0.05", "--purge-s3")
    assert "endpoint js" in d["deleted"] and len(d["purged"]) == 1
    # the old spelling still works
    code, out, err = run(capsys, "list", "--json")
    assert code == 0 and json.loads(out) == []


def test_output_text_is_tab_separated(capsys, aws_env, ecr_images, model_tgz):
    assert create(capsys, aws_env, ecr_images["multi"], model_tgz, "--name", "tsv")[0] == 0
    code, out, err = run(capsys, "list", "--output", "text")
    (line,) = out.splitlines()
    name, status, created, instance_type, count = line.split("\t")
    assert (name, status, instance_type, count) == ("tsv", "InService", "ml.c7g.xlarge", "1")
    code, out, err = run(capsys, "status", "tsv", "--output", "text")
    assert "endpoint.EndpointStatus\tInService" in out.splitlines()


def test_exit_codes_version_and_help(capsys):
    from sagemaker_tf_deploy.commands.main import EXAMPLES

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("deploy ")
    assert main(["create", "--bogus"]) == 2                    # argparse
    assert main(["list", "--output", "yaml"]) == 2
    capsys.readouterr()
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    assert "130 SIGINT, 143 SIGTERM" in top
    for command in ("package", "create", "invoke", "update", "autoscale", "delete", "list", "status", "wait", "local"):
        assert main([command, "--help"]) == 0
        text = capsys.readouterr().out
        assert f"example:\n  {EXAMPLES[command]}" in text, command
        assert "--output {table,json,text}" in text
    # every subcommand ends its --help with an example (deploy models had none)
    from sagemaker_tf_deploy.commands.main import _finish_parser, build_parser
    parser = _finish_parser(build_parser())
    commands = next(a for a in parser._subparsers._group_actions).choices
    for command in commands:
        assert main([command, "--help"]) == 0
        assert "example" in capsys.readouterr().out.rsplit("\n\n", 1)[-1], command
    main(["create", "--help"])
    text = capsys.readouterr().out
    assert "--on-interrupt {rollback,keep}" in text and "default rollback" in text
    assert "required: this or $SAGEMAKER_ROLE_ARN" in " ".join(text.split())


def test_closed_pipe_is_quiet(aws_env, ecr_images, model_tgz):
    """`deploy status X | head -1` style: stdout closed before the command writes; exit 141, no traceback."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    deploy = Path(sys.executable).with_name("deploy")
    proc = subprocess.run([str(deploy), "create", "--image", ecr_images["multi"], "--model-data", str(model_tgz),
                           "--role", aws_env["role"], "--name", "pipe", "--poll", "0.05"],
                          capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert proc.returncode == 0, proc.stderr
    for cmd in (f"{deploy} status pipe", f"{deploy} list --output json", f"{deploy} --help"):
        proc = subprocess.run(["bash", "-c", f'{cmd} | true; echo "rc=${{PIPESTATUS[0]}}" >&2'],
                              capture_output=True, text=True, env=dict(os.environ), timeout=120)
        assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines()[-1] in ("rc=141", "rc=0"), proc.stderr
    proc = subprocess.run(["bash", "-c", f'{deploy} status pipe | head -1'], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)
    assert proc.stdout.startswith("endpoint     pipe  InService") and proc.stderr == ""


def test_console_is_quiet_when_piped_and_survives_a_closed_stderr():
    import io

    from sagemaker_tf_deploy.core.output import Console

    stream = io.StringIO()
    console = Console(stream)
    for i in range(50):
        console.progress("digits", "Creating", float(i))
    console.progress("digits", "InService", 51.0)
    console.progress_done()
    assert stream.getvalue().splitlines() == ["digits: Creating (0m00s)", "digits: InService (0m51s)"]

    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    console = Console(Closed())
    console.info("still working")                 # no exception: the command carries on
    console.error("also fine")


@pytest.mark.parametrize("argv,message", [
    (["invoke", "x", "--json", "[1", ], "--json is not valid JSON"),
    (["invoke", "x"], "give the request body with --file F or --json"),
    (["invoke", "bad_name", "--json", "[1]"], "has '_' at position 4"),
    (["autoscale", "x", "--min", "3", "--max", "2", "--target-invocations", "10"], "need 1 <= --min <= --max"),
    (["status", "bad.name"], "has '.' at position 4"),
    (["delete", "bad.name"], "has '.' at position 4"),
    (["update", "web"], "nothing to update"),
    (["package", "/nonexistent-model-dir"], "does not exist"),
])
def test_argument_errors_exit_2_without_calls(capsys, aws_env, aws_calls, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and message in err, err
    assert aws_calls == []


def test_purge_touches_only_this_endpoints_archives(capsys, aws_env, ecr_images, model_tgz):
    code, out, err = run(capsys, "create", "--image", ecr_images["multi"], "--model-data", str(model_tgz),
                         "--role", aws_env["role"], "--output", "json")
    assert code == 0, err
    unnamed = json.loads(out)["endpoint"]
    assert unnamed.startswith("tf-graviton-")
    for name in ("web", "web-2", "webx"):
        assert create(capsys, aws_env, ecr_images["multi"], model_tgz, "--name", name)[0] == 0
    import re
    webs = [o for o in state()["objects"] if re.search(r"/web-\d{8}-\d{6}-\d{3}/model\.tar\.gz$", o)]
    assert len(webs) == 1 and len(state()["objects"]) == 4
    code, out, err = run(capsys, "delete", "web", "--purge-s3", "--output", "json")
    assert code == 0, err
    assert json.loads(out)["purged"] == webs          # not web-2's, whose names also start "web-2..."
    code, out, err = run(capsys, "delete", unnamed, "--purge-s3")
    assert code == 0, err
    s = state()
    assert sorted(s["endpoints"]) == ["web-2", "webx"] and len(s["objects"]) == 2 and len(s["models"]) == 2


def test_an_endpoint_named_like_the_unnamed_prefix_leaves_unnamed_ones_alone(capsys, aws_env, ecr_images, model_tgz):
    """Unnamed creates are tf-graviton-TIMESTAMP, their config, model and S3 prefix too: deleting an
    endpoint called tf-graviton must not take them for its leftovers."""
    code, out, err = run(capsys, "create", "--image", ecr_images["multi"], "--model-data", str(model_tgz),
                         "--role", aws_env["role"], "--output", "json")
    assert code == 0, err
    unnamed = json.loads(out)["endpoint"]
    assert create(capsys, aws_env, ecr_images["multi"], model_tgz, "--name", "tf-graviton")[0] == 0
    code, out, err = run(capsys, "delete", "tf-graviton", "--purge-s3")
    assert code == 0, err
    s = state()
    assert s["endpoints"] == [unnamed] and s["configs"] == [unnamed] and s["models"] == [unnamed]
    assert [o.split("/")[3] for o in s["objects"]] == [unnamed]


@pytest.mark.aws_newer_than_botocore(ProductionVariantInstanceType=["ml.c9g.xlarge"])
def test_a_type_newer_than_the_list_is_confirmed_with_the_service(capsys, aws_env, ecr_images, model_tgz,
                                                                   aws_calls):
    """Not a typo (nothing close in the list): Service Quotas is asked, after the local checks and
    before anything is created; a typo is refused with no call at all (test above)."""
    from tests.fixtures.moto import SAGEMAKER_QUOTAS

    argv = ["--instance-type", "ml.c9g.xlarge", "--name", "newer"]
    code, out, err = create(capsys, aws_env, ecr_images["multi"], model_tgz, *argv)
    assert code == 2 and "Service Quotas does not list it for endpoint usage either" in err
    assert len(aws_calls) == 1 and "ServiceQuotas" in aws_calls[0] and state()["models"] == []
    SAGEMAKER_QUOTAS.append("ml.c9g.xlarge")
    code, out, err = create(capsys, aws_env, ecr_images["multi"], model_tgz, *argv)
    assert code == 0, err
    assert "Service Quotas lists it for endpoints: ok" in err
    cfg = sm().describe_endpoint_config(EndpointConfigName=sm().describe_endpoint(EndpointName="newer")["EndpointConfigName"])
    assert cfg["ProductionVariants"][0]["InstanceType"] == "ml.c9g.xlarge"
