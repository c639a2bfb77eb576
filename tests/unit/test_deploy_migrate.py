"""`deploy migrate / promote / rollback` against moto in server mode (tests/fixtures/moto.py and
moto_migrate.py fill moto's gaps: Graviton types, update_endpoint, shadow variants, network isolation).

The x86 endpoint each test starts from is made with boto3 the way an AWS TensorFlow container
user has it: an AWS DLC image, SAGEMAKER_PROGRAM / SAGEMAKER_SUBMIT_DIRECTORY / SAGEMAKER_TFS_*
settings, a VPC, network isolation, data capture, two ml.c6i instances and auto scaling.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sagemaker_tf_deploy.commands.main import main
from tests.fixtures.moto import client, fail_operation, run_deploy, script_endpoint_status

pytestmark = pytest.mark.deploy

DEPLOY = str(Path(sys.executable).with_name("deploy"))
X86_IMAGE = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/tensorflow-inference:2.16-cpu"
MODEL_DATA = "s3://my-models/digits/model.tar.gz"
USER_ENV = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "s3://my-models/digits/sourcedir.tar.gz",
            "SAGEMAKER_TFS_DEFAULT_MODEL_NAME": "digits", "SAGEMAKER_REGION": "eu-west-1"}
VPC = {"SecurityGroupIds": ["sg-0123456789abcdef0"], "Subnets": ["subnet-0123456789abcdef0"]}
CAPTURE = {"EnableCapture": True, "InitialSamplingPercentage": 100,
           "DestinationS3Uri": "s3://my-models/capture", "CaptureOptions": [{"CaptureMode": "Input"},
                                                                          {"CaptureMode": "Output"}]}


def sm():
    return client("sagemaker")


def aas():
    return client("application-autoscaling")


def run(capsys, *argv):
    return run_deploy(capsys, *argv, *(("--poll", "0.05") if argv[0] in ("migrate", "promote", "rollback") else ()))


def scaling():
    targets = aas().describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    policies = aas().describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    return sorted((t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in targets), \
        sorted((p["ResourceId"], p["PolicyName"]) for p in policies)


def state():
    """Everything that bills or lies around, and what the endpoint runs."""
    eps = sm().list_endpoints()["Endpoints"]
    out = {"endpoints": sorted(e["EndpointName"] for e in eps),
           "configs": sorted(c["EndpointConfigName"] for c in sm().list_endpoint_configs()["EndpointConfigs"]),
           "models": sorted(m["ModelName"] for m in sm().list_models()["Models"]),
           "scaling": scaling()}
    for e in eps:
        d = sm().describe_endpoint(EndpointName=e["EndpointName"])
        out[e["EndpointName"]] = (d["EndpointConfigName"], d["EndpointStatus"],
                                  sorted(v["VariantName"] for v in d.get("ProductionVariants", [])),
                                  sorted(v["VariantName"] for v in d.get("ShadowProductionVariants", [])))
    return out


@pytest.fixture
def x86_endpoint(migrate_aws):
    """The endpoint 'digits': 2 x ml.c6i.xlarge, AWS's TF container, auto scaling 2..6."""
    s3 = client("s3")
    s3.create_bucket(Bucket="my-models", CreateBucketConfiguration={"LocationConstraint": migrate_aws["region"]})
    s3.put_object(Bucket="my-models", Key="digits/model.tar.gz", Body=b"not read by moto")
    sm().create_model(ModelName="digits-x86", ExecutionRoleArn=migrate_aws["role"],
                      PrimaryContainer={"Image": X86_IMAGE, "ModelDataUrl": MODEL_DATA, "Environment": USER_ENV},
                      VpcConfig=VPC, EnableNetworkIsolation=True)
    sm().create_endpoint_config(EndpointConfigName="digits-x86", DataCaptureConfig=CAPTURE, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "digits-x86", "InstanceType": "ml.c6i.xlarge",
        "InitialInstanceCount": 2, "InitialVariantWeight": 1.0}])
    sm().create_endpoint(EndpointName="digits", EndpointConfigName="digits-x86")
    assert main(["autoscale", "digits", "--min", "2", "--max", "6", "--target-invocations", "900"]) == 0
    return "digits"


def migration_config():
    name = sm().describe_endpoint(EndpointName="digits")["EndpointConfigName"]
    return sm().describe_endpoint_config(EndpointConfigName=name)


def check_graviton_model(name, image, role):
    model = sm().describe_model(ModelName=name)
    c = model["PrimaryContainer"]
    assert c["Image"] == image
    assert c["ModelDataUrl"] == MODEL_DATA                       # the user's model data, not a copy
    env = c["Environment"]
    for k, v in USER_ENV.items():                                # the user's settings, as they were
        assert env[k] == v
    assert env["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert "DNNL_DEFAULT_FPMATH_MODE" not in env                 # the server's BF16 default applies
    assert model["ExecutionRoleArn"] == role
    assert model["VpcConfig"] == VPC
    assert model["EnableNetworkIsolation"] is True


def test_shadow_mode(capsys, x86_endpoint, ecr_images, migrate_aws):
    before = state()
    code, out, err = run(capsys, "migrate", "digits", "--image", ecr_images["multi"], "--mode", "shadow")
    assert code == 0, err
    assert "ml.c7g.xlarge is arm64: ok" in err
    assert "DNNL_DEFAULT_FPMATH_MODE" not in err        # nothing to note: the x86 model sets none
    assert "endpoint digits is InService" in out and "deploy promote digits" in out
    cfg = migration_config()
    (x86,) = cfg["ProductionVariants"]
    assert (x86["VariantName"], x86["ModelName"], x86["InstanceType"], x86["InitialInstanceCount"]) == \
        ("AllTraffic", "digits-x86", "ml.c6i.xlarge", 2)
    (shadow,) = cfg["ShadowProductionVariants"]
    assert (shadow["VariantName"], shadow["InstanceType"], shadow["InitialInstanceCount"]) == \
        ("Graviton", "ml.c7g.xlarge", 2)
    assert shadow["InitialVariantWeight"] == 1.0                    # all requests copied
    assert cfg["DataCaptureConfig"]["DestinationS3Uri"] == CAPTURE["DestinationS3Uri"]
    check_graviton_model(shadow["ModelName"], ecr_images["multi"], migrate_aws["role"])
    now = state()
    assert now["digits"] == (cfg["EndpointConfigName"], "InService", ["AllTraffic"], ["Graviton"])
    # the old config and model stay for rollback; auto scaling still on the x86 variant
    assert set(before["configs"]) < set(now["configs"]) and set(before["models"]) < set(now["models"])
    assert now["scaling"] == before["scaling"]
    assert "suspended for the update" in err and "restored (2..6, 1 policy)" in err
    # a second migrate is refused while this one is open
    code, out, err = run(capsys, "migrate", "digits", "--image", ecr_images["multi"])
    assert code == 1 and "already being migrated" in err
    # compare cannot target a shadow variant (SageMaker does not route to them)
    code, out, err = run(capsys, "compare", "--endpoint", "digits", "--requests", str(requests_file(migrate_aws)))
    assert code == 2 and "shadow variant" in err


def requests_file(env) -> Path:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"migrate-requests-{os.getpid()}.jsonl"
    path.write_text('{"instances": [[1, 2]]}\n{"instances": [[3, 4]]}\n')
    return path


def test_canary_weights_then_promote_from_a_fresh_process(capsys, x86_endpoint, ecr_images, migrate_aws):
    code, out, err = run(capsys, "migrate", "digits", "--image", ecr_images["arm64"], "--mode", "canary",
                         "--weight", "0.25", "--instance-count", "1", "--instance-type", "ml.c7g.2xlarge")
    assert code == 0, err
    cfg = migration_config()
    weights = {v["VariantName"]: (v["InitialVariantWeight"], v["InstanceType"], v["InitialInstanceCount"])
               for v in cfg["ProductionVariants"]}
    assert weights == {"AllTraffic": (0.75, "ml.c6i.xlarge", 2), "Graviton": (0.25, "ml.c7g.2xlarge", 1)}
    live = {v["VariantName"]: v["CurrentWeight"]
            for v in sm().describe_endpoint(EndpointName="digits")["ProductionVariants"]}
    assert live == {"AllTraffic": 0.75, "Graviton": 0.25}
    graviton_model = next(v["ModelName"] for v in cfg["ProductionVariants"] if v["VariantName"] == "Graviton")

    proc = subprocess.run([DEPLOY, "promote", "digits", "--poll", "0.05"], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "runs Graviton alone (ml.c7g.2xlarge)" in proc.stdout
    final = migration_config()
    (v,) = final["ProductionVariants"]
    assert (v["VariantName"], v["ModelName"], v["InitialVariantWeight"], v["InstanceType"]) == \
        ("Graviton", graviton_model, 1.0, "ml.c7g.2xlarge")
    s = state()
    assert s["configs"] == [final["EndpointConfigName"]]             # old and migration configs gone
    assert s["models"] == [graviton_model]                           # the x86 model gone
    # auto scaling moved to the variant that now serves
    assert s["scaling"] == ([("endpoint/digits/variant/Graviton", 2, 6)],
                            [("endpoint/digits/variant/Graviton", "digits-AllTraffic-invocations")])
    code, out, err = run(capsys, "rollback", "digits")
    assert code == 1 and "no migration in progress" in err


def test_canary_weight_zero_then_rollback_from_a_fresh_process(capsys, x86_endpoint, ecr_images):
    before = state()
    code, out, err = run(capsys, "migrate", "digits", "--image", ecr_images["multi"], "--mode", "canary",
                         "--weight", "0")
    assert code == 0, err
    assert "reachable with TargetVariant only" in err
    weights = {v["VariantName"]: v["InitialVariantWeight"] for v in migration_config()["ProductionVariants"]}
    assert weights == {"AllTraffic": 1.0, "Graviton": 0.0}
    proc = subprocess.run([DEPLOY, "rollback", "digits", "--poll", "0.05"], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "back on digits-x86" in proc.stdout
    assert state() == before


def test_replace_mode_then_rollback(capsys, x86_endpoint, ecr_images):
    before = state()
    code, out, err = run(capsys, "migrate", "digits", "--image", ecr_images["multi"], "--mode", "replace")
    assert code == 0, err
    (v,) = migration_config()["ProductionVariants"]
    assert (v["VariantName"], v["InstanceType"], v["InitialInstanceCount"]) == ("Graviton", "ml.c7g.xlarge", 2)
    assert state()["scaling"][0] == [("endpoint/digits/variant/Graviton", 2, 6)]
    code, out, err = run(capsys, "rollback", "digits")
    assert code == 0, err
    assert state() == before                                         # scaling back on AllTraffic too


def test_canary_with_an_x86_fallback_pool_then_promote(capsys, x86_endpoint, ecr_images):
    """Graviton first, x86 if Graviton capacity is short: one variant, two pools (issue 24)."""
    code, out, err = run(capsys, "migrate", "digits", "--image", ecr_images["multi"], "--mode", "canary",
                         "--fallback-instance-types", "ml.c6i.xlarge")
    assert code == 0, err
    assert "ml.c7g.xlarge is arm64, ml.c6i.xlarge is amd64: ok" in err
    graviton = next(v for v in migration_config()["ProductionVariants"] if v["VariantName"] == "Graviton")
    assert graviton["InstancePools"] == [{"InstanceType": "ml.c7g.xlarge", "Priority": 1},
                                         {"InstanceType": "ml.c6i.xlarge", "Priority": 2}]
    code, out, err = run(capsys, "promote", "digits")
    assert code == 0, err
    assert "(Graviton alone, 2 x ml.c7g.xlarge, then ml.c6i.xlarge)" in err
    code, out, err = run(capsys, "migrate", "digits", "--image", ecr_images["arm64"], "--fallback-instance-types",
                         "ml.c6i.xlarge")
    assert code == 1 and "has architectures [arm64] but ml.c6i.xlarge is amd64" in err


def test_replace_mode_then_promote(capsys, x86_endpoint, ecr_images):
    code, out, err = run(capsys, "migrate", "digits", "--image", ecr_images["multi"], "--mode", "replace")
    assert code == 0, err
    cfg = migration_config()
    code, out, err = run(capsys, "promote", "digits")
    assert code == 0, err
    s = state()
    assert s["configs"] == [cfg["EndpointConfigName"]] and "digits-x86" not in s["models"]
    tags = {t["Key"] for t in sm().list_tags(ResourceArn=cfg["EndpointConfigArn"])["Tags"]}
    assert not any(k.startswith("tf-graviton-migrate:") for k in tags)
    code, out, err = run(capsys, "promote", "digits")
    assert code == 1 and "no migration in progress" in err
    code, out, err = run(capsys, "rollback", "digits")       # after promote: says what happened, and the way back
    assert code == 1 and "it was promoted to Graviton" in err and "made by `deploy promote`" in err
    assert "was not made by `deploy migrate`" not in err


@pytest.mark.parametrize("how", ["create_endpoint_config", "update_endpoint", "update Failed"])
def test_failure_half_way_leaves_the_endpoint_as_it_was(capsys, x86_endpoint, ecr_images, how):
    before = state()
    if how == "update Failed":
        # moto switches at once; SageMaker would roll back itself. Here the endpoint stays on the
        # new config after the failure, so migrate has to put it back.
        script_endpoint_status("digits", ["Updating", "Failed", "InService"],
                               "The primary container for production variant Graviton did not pass the ping "
                               "health check.", after="update_endpoint")
        code, out, err = run(capsys, "migrate", "digits", "--image", ecr_images["multi"], "--mode", "canary")
        assert "did not pass the ping health check" in err
        assert "putting endpoint digits back on digits-x86" in err
    else:
        with fail_operation(how, f"{how} says no"):
            code, out, err = run(capsys, "migrate", "digits", "--image", ecr_images["multi"], "--mode", "canary")
        assert f"{how} says no" in err
    assert code == 1
    assert "endpoint digits is as before (digits-x86); nothing from this run is left" in err
    assert state() == before


def test_refusals_create_nothing(capsys, x86_endpoint, ecr_images):
    before = state()
    code, out, err = run(capsys, "migrate", "digits", "--image", ecr_images["amd64"])
    assert code == 1 and "has architectures [amd64]" in err
    code, out, err = run(capsys, "migrate", "digits", "--image", ecr_images["multi"], "--instance-type", "ml.c6i.large")
    assert code == 2 and "not a Graviton instance type" in err      # a bad argument: docs/deploy.md's table
    code, out, err = run(capsys, "migrate", "nope", "--image", ecr_images["multi"])
    assert code == 1 and "no endpoint named nope" in err
    code, out, err = run(capsys, "migrate", "digits", "--image", ecr_images["multi"], "--mode", "replace",
                         "--weight", "0.5")
    assert code == 2 and "--weight applies to" in err
    code, out, err = run(capsys, "migrate", "digits", "--image", ecr_images["multi"], "--weight", "2")
    assert code == 2
    code, out, err = run(capsys, "promote", "digits")
    assert code == 1 and "no migration in progress" in err
    assert state() == before


def test_user_fpmath_setting_is_kept_and_can_be_overridden(capsys, migrate_aws, ecr_images):
    sm().create_model(ModelName="strict-x86", ExecutionRoleArn=migrate_aws["role"],
                      PrimaryContainer={"Image": X86_IMAGE, "ModelDataUrl": MODEL_DATA,
                                        "Environment": {"DNNL_DEFAULT_FPMATH_MODE": "STRICT"}})
    sm().create_endpoint_config(EndpointConfigName="strict-x86", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "strict-x86", "InstanceType": "ml.c6i.xlarge",
        "InitialInstanceCount": 1}])
    sm().create_endpoint(EndpointName="digits", EndpointConfigName="strict-x86")
    code, out, err = run(capsys, "migrate", "digits", "--image", ecr_images["multi"], "--mode", "replace")
    assert code == 0, err
    assert "DNNL_DEFAULT_FPMATH_MODE=STRICT kept from the x86 model" in err
    (v,) = migration_config()["ProductionVariants"]
    env = sm().describe_model(ModelName=v["ModelName"])["PrimaryContainer"]["Environment"]
    assert env["DNNL_DEFAULT_FPMATH_MODE"] == "STRICT" and env["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert run(capsys, "rollback", "digits")[0] == 0
    code, out, err = run(capsys, "migrate", "digits", "--image", ecr_images["multi"], "--mode", "replace",
                         "--env", "DNNL_DEFAULT_FPMATH_MODE=BF16")
    assert code == 0, err
    (v,) = migration_config()["ProductionVariants"]
    assert sm().describe_model(ModelName=v["ModelName"])["PrimaryContainer"]["Environment"][
        "DNNL_DEFAULT_FPMATH_MODE"] == "BF16"


@pytest.mark.parametrize("on_interrupt", ["rollback", "keep"])
def test_interrupted_while_updating(capsys, x86_endpoint, ecr_images, monkeypatch, on_interrupt):
    """SIGTERM arriving while SageMaker updates: rolled back (default), or left for `deploy rollback`."""
    import signal

    from sagemaker_tf_deploy.core import interrupts
    from sagemaker_tf_deploy.operations import waiting

    before = state()
    real_wait = waiting.wait_for_endpoint
    calls = []

    def wait(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 1:
            raise interrupts.Interrupted(signal.SIGTERM)
        return real_wait(*args, **kwargs)
    monkeypatch.setattr(waiting, "wait_for_endpoint", wait)
    code, out, err = run(capsys, "migrate", "digits", "--image", ecr_images["multi"], "--mode", "canary",
                         "--on-interrupt", on_interrupt)
    assert code == 143, err
    if on_interrupt == "rollback":
        assert "putting endpoint digits back on digits-x86" in err
        assert state() == before
    else:
        assert "--on-interrupt keep" in err and "deploy rollback digits" in err
        assert state()["digits"][2] == ["AllTraffic", "Graviton"]
        code, out, err = run(capsys, "rollback", "digits")
        assert code == 0, err
        assert state() == before
