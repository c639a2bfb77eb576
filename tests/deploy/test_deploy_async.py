"""Asynchronous endpoints (issue 24): deploy create --async, invoke --async [--wait], status, delete,
against moto made strict (tests/fixtures/strict_aws.py) with its async runtime running each
request against the real host server (tests/fixtures/moto_async.py)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
import threading

import boto3
import pytest
import requests

from sagemaker_tf_deploy.commands.main import main
from tests.deploy import test_deploy_interrupts as interrupts
from tests.fixtures import moto_async as ma
from tests.fixtures.moto import Patches, gate_operation, hold_endpoint, release_endpoint

pytestmark = pytest.mark.deploy
SECRET = "testing-secret-not-real"
OUT = "s3://async-bucket/answers"
FAILED = "s3://async-bucket/failures"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    return code, out, err


def create(capsys, env, image, model, *extra):
    return run(capsys, "create", "--image", image, "--model-data", str(model), "--role", env["role"],
               "--poll", "0.01", *extra)


@pytest.fixture
def bucket(async_moto):
    boto3.client("s3").create_bucket(Bucket="async-bucket",
                                     CreateBucketConfiguration={"LocationConstraint": async_moto["region"]})
    return "async-bucket"


def objects(bucket_name="async-bucket", prefix=""):
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket_name, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def nothing_left(env):
    sm = boto3.client("sagemaker")
    aas = boto3.client("application-autoscaling")
    cw = boto3.client("cloudwatch")
    return (sm.list_endpoints()["Endpoints"] == [] and sm.list_endpoint_configs()["EndpointConfigs"] == []
            and sm.list_models()["Models"] == []
            and aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
            and cw.describe_alarms()["MetricAlarms"] == [])


def test_create_async_sets_the_config_and_scaling_to_zero(capsys, async_moto, bucket, ecr_images, model_tgz):
    code, out, err = create(capsys, async_moto, ecr_images["multi"], model_tgz, "--name", "batchy", "--async",
                            "--async-output", OUT, "--async-failure-output", FAILED,
                            "--max-concurrent-invocations", "4", "--instance-count", "3", "--min-instances", "0")
    assert code == 0, err
    sm = boto3.client("sagemaker")
    config = sm.describe_endpoint_config(EndpointConfigName=sm.describe_endpoint(EndpointName="batchy")
                                         ["EndpointConfigName"])
    assert config["AsyncInferenceConfig"] == {"OutputConfig": {"S3OutputPath": OUT, "S3FailurePath": FAILED},
                                              "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4}}
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.c7g.xlarge"      # Graviton: hosting types
    aas = boto3.client("application-autoscaling")
    [target] = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert (target["ResourceId"], target["MinCapacity"], target["MaxCapacity"]) == \
        ("endpoint/batchy/variant/AllTraffic", 0, 3)
    policies = {p["PolicyType"]: p for p in aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]}
    tracking = policies["TargetTrackingScaling"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["CustomizedMetricSpecification"]["MetricName"] == "ApproximateBacklogSizePerInstance"
    assert tracking["CustomizedMetricSpecification"]["Dimensions"] == [{"Name": "EndpointName", "Value": "batchy"}]
    step = policies["StepScaling"]
    assert step["StepScalingPolicyConfiguration"]["StepAdjustments"] == [{"MetricIntervalLowerBound": 0.0,
                                                                          "ScalingAdjustment": 1}]
    [alarm] = boto3.client("cloudwatch").describe_alarms()["MetricAlarms"]
    assert alarm["MetricName"] == "HasBacklogWithoutCapacity" and alarm["AlarmActions"] == [step["PolicyARN"]]
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and alarm["Threshold"] == 1.0
    assert "from zero on alarm batchy-AllTraffic-has-backlog-without-capacity" in err

    code, out, err = run(capsys, "delete", "batchy", "--poll", "0.01")
    assert code == 0, err
    assert "deleted CloudWatch alarm batchy-AllTraffic-has-backlog-without-capacity" in err
    assert nothing_left(async_moto)


def test_invoke_async_runs_the_request_and_waits_for_the_answer(capsys, async_moto, bucket, ecr_images, model_tgz,
                                                                mlp_server):
    assert create(capsys, async_moto, ecr_images["multi"], model_tgz, "--name", "queued", "--async",
                  "--async-output", OUT, "--async-failure-output", FAILED)[0] == 0
    ma.route_async("queued", mlp_server.url)
    body = json.dumps({"instances": [[1.0, 2.0, 3.0, 4.0]]}).encode()
    boto3.client("s3").put_object(Bucket="async-bucket", Key="requests/one.json", Body=body)
    direct = requests.post(f"{mlp_server.url}/invocations", data=body,
                           headers={"Content-Type": "application/json"}, timeout=30).json()

    code, out, err = run(capsys, "invoke", "queued", "--async", "--input", "s3://async-bucket/requests/one.json",
                         "--content-type", "application/json", "--output", "json")
    assert code == 0, err
    queued = json.loads(out)
    assert queued["output_location"] == f"{OUT}/{queued['inference_id']}.out"
    assert queued["failure_location"] == f"{FAILED}/{queued['inference_id']}-error.out"
    ma.wait_async_idle()
    assert objects(prefix="answers/") == [f"answers/{queued['inference_id']}.out"]

    code, out, err = run(capsys, "invoke", "queued", "--async", "--input", "s3://async-bucket/requests/one.json",
                         "--content-type", "application/json", "--wait", "--poll", "0.05")
    assert code == 0, err
    assert json.loads(out) == direct                       # the server's own answer, through S3
    assert [r["content_type"] for r in ma.ASYNC_INVOCATIONS] == ["application/json"] * 2


def test_a_failed_async_request_is_printed_with_exit_1(capsys, async_moto, bucket, ecr_images, model_tgz, mlp_server):
    assert create(capsys, async_moto, ecr_images["multi"], model_tgz, "--name", "failing", "--async",
                  "--async-output", OUT, "--async-failure-output", FAILED)[0] == 0
    ma.route_async("failing", mlp_server.url)
    boto3.client("s3").put_object(Bucket="async-bucket", Key="requests/bad.json", Body=b'{"instances": [[1.0]]}')
    code, out, err = run(capsys, "invoke", "failing", "--async", "--input", "s3://async-bucket/requests/bad.json",
                         "--content-type", "application/json", "--wait", "--poll", "0.05")
    assert code == 1
    assert "deploy: error: async inference" in err and f"failed ({FAILED}/" in err
    [record] = ma.ASYNC_INVOCATIONS
    assert record["status"] == 400 and record["written"] == record["failure"]
    assert objects(prefix="answers/") == []


def test_status_shows_the_backlog_and_the_instances(capsys, async_moto, bucket, ecr_images, model_tgz):
    assert create(capsys, async_moto, ecr_images["multi"], model_tgz, "--name", "watched", "--async",
                  "--async-output", OUT, "--min-instances", "0")[0] == 0
    code, out, err = run(capsys, "status", "watched")
    assert code == 0, err
    assert f"async        answers to {OUT}" in out
    assert "  instances  1" in out
    assert "  backlog    no ApproximateBacklogSize datapoint in the last 10 minutes" in out
    assert "  scaling    0..1 instances, target 5.0 queued requests per instance" in out
    boto3.client("cloudwatch").put_metric_data(Namespace="AWS/SageMaker", MetricData=[{
        "MetricName": "ApproximateBacklogSize", "Dimensions": [{"Name": "EndpointName", "Value": "watched"}],
        "Timestamp": dt.datetime.now(dt.timezone.utc), "Value": 7.0}])
    code, out, err = run(capsys, "status", "watched", "--output", "json")
    assert code == 0, err
    assert json.loads(out)["async"]["backlog"]["size"] == 7.0


@pytest.mark.parametrize("argv, message", [
    (["--min-instances", "0"], "--min-instances only with --async"),
    (["--async"], "--async needs --async-output s3://BUCKET/PREFIX"),
    (["--async", "--async-output", "answers/"], "--async-output 'answers/' is not an s3://BUCKET/PREFIX URI"),
    (["--async", "--async-output", OUT, "--max-concurrent-invocations", "0"], "must be 1..1000"),
    (["--async", "--async-output", OUT, "--min-instances", "2"], "--min-instances must be 0..--instance-count (1)"),
    (["--async", "--async-output", OUT, "--min-instances", "0", "--no-wait"], "drop --no-wait"),
])
def test_async_arguments_are_refused_before_any_call(capsys, async_moto, ecr_images, model_tgz, aws_calls,
                                                     argv, message):
    code, out, err = create(capsys, async_moto, ecr_images["multi"], model_tgz, *argv)
    assert code == 2 and message in err
    assert aws_calls == []


def test_invoke_async_arguments(capsys, async_moto):
    code, _, err = run(capsys, "invoke", "e", "--async", "--json", "{}")
    assert code == 2 and "give --input s3://BUCKET/KEY, not --file or --json" in err
    code, _, err = run(capsys, "invoke", "e", "--async", "--input", "requests/one.json")
    assert code == 2 and "is not an s3://BUCKET/KEY URI" in err
    code, _, err = run(capsys, "invoke", "e", "--input", "s3://b/k", "--json", "{}")
    assert code == 2 and "--input and --wait are for --async" in err


def test_a_failure_setting_up_scaling_rolls_everything_back(capsys, async_moto, bucket, ecr_images, model_tgz):
    """The create rule holds for the scaling step too: a failure there deletes the endpoint, its
    config, model, upload, and the scaling already registered; nothing is left billing."""
    with ma.fail_put_metric_alarm("LimitExceeded: too many alarms"):
        code, out, err = create(capsys, async_moto, ecr_images["multi"], model_tgz, "--name", "scaled", "--async",
                                "--async-output", OUT, "--min-instances", "0")
    assert code == 1 and "too many alarms" in err
    assert "deregistered auto scaling for endpoint/scaled/variant/AllTraffic" in err
    assert "rollback complete: nothing from this run is left" in err
    assert nothing_left(async_moto)
    s3 = boto3.client("s3")
    assert [o for b in s3.list_buckets()["Buckets"] for o in s3.list_objects_v2(Bucket=b["Name"]).get("Contents", [])] == []


# --- interruptions: the create rule, in every phase of an async create ----------------------------

@contextlib.contextmanager
def gate_put_scaling_policy():
    """Application Auto Scaling's put_scaling_policy blocks until the block ends (then completes):
    a signal can land while create --async is setting up its scaling. Yields an Event set on entry."""
    from moto.applicationautoscaling.models import ApplicationAutoscalingBackend

    entered, release = threading.Event(), threading.Event()
    original = ApplicationAutoscalingBackend.put_scaling_policy

    def gated(self, *args, **kwargs):
        entered.set()
        release.wait(60)
        return original(self, *args, **kwargs)
    with Patches() as patches:
        patches.set(ApplicationAutoscalingBackend, "put_scaling_policy", gated)
        try:
            yield entered
        finally:
            release.set()


def everything(bucket_name="async-bucket") -> dict:
    """What exists that an async create makes: SageMaker resources, scaling targets, policies and
    alarms, and every S3 object but those in BUCKET_NAME (the test's own, for the answers)."""
    sm, aas, cw, s3 = (boto3.client(s) for s in ("sagemaker", "application-autoscaling", "cloudwatch", "s3"))
    return {
        "endpoints": [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]],
        "configs": [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]],
        "models": [m["ModelName"] for m in sm.list_models()["Models"]],
        "targets": [t["ResourceId"] for t in aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]],
        "policies": [p["PolicyName"] for p in aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]],
        "alarms": [a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"]],
        "objects": [f"{b['Name']}/{o['Key']}" for b in s3.list_buckets()["Buckets"] if b["Name"] != bucket_name
                    for o in s3.list_objects_v2(Bucket=b["Name"]).get("Contents", [])],
    }


NOTHING = {k: [] for k in ("endpoints", "configs", "models", "targets", "policies", "alarms", "objects")}


# each phase gets both signals and both policies; the scaling phase, the one with most to undo, every pair
PHASES = [(phase, policy, sig) for phase in ("before the endpoint exists", "while Creating", "while scaling is set up")
          for policy, sig in (("rollback", "SIGINT"), ("keep", "SIGTERM"))] + \
         [("while scaling is set up", "rollback", "SIGTERM"), ("while scaling is set up", "keep", "SIGINT")]


@pytest.mark.parametrize("phase, policy, sig", PHASES)
def test_async_create_interrupted_in_every_phase(async_moto, bucket, ecr_images, model_tgz, phase, policy, sig):
    """deploy create --async --min-instances 0 stopped by a real signal in each phase, with each
    --on-interrupt: the rule of plain endpoints (tests/deploy/test_deploy_interrupts.py), with the
    scaling target, its two policies, the alarm and the async config covered by "nothing left"."""
    argv = interrupts.create_args(async_moto, ecr_images["multi"], model_tgz, "asy", "--async", "--async-output", OUT,
                                  "--min-instances", "0", "--on-interrupt", policy)
    if phase == "before the endpoint exists":
        with gate_operation("create_endpoint_config") as gate:
            run = interrupts.Deploy(*argv)
            assert gate["entered"].wait(60), run.err
            run.signal(sig)
            run.wait_for("rollback complete")
            gate["fail"] = True
    elif phase == "while Creating":
        hold_endpoint("asy", "Creating")
        run = interrupts.Deploy(*argv)
        run.wait_for("asy: Creating")
        run.signal(sig)
        if policy == "rollback":
            run.wait_for("SageMaker cannot delete endpoint asy while it is Creating")
            release_endpoint("asy", "InService")
    else:
        with gate_put_scaling_policy() as entered:
            run = interrupts.Deploy(*argv)
            assert entered.wait(60), run.err
            run.signal(sig)
    code, out, err = run.finish()
    assert code == interrupts.CODES[sig], err
    assert f"deploy: interrupted by {sig}" in err and "Traceback" not in err
    left = everything()
    if policy == "rollback" or phase == "before the endpoint exists":
        assert "rollback complete: nothing from this run is left" in err, err
        assert left == NOTHING, err
        return
    # keep: the endpoint stays, as asked, with nothing half-made, and the commands it names remove it
    assert left["endpoints"] == ["asy"] and len(left["configs"]) == 1 and len(left["models"]) == 1, (left, err)
    assert "deploy delete asy --purge-s3" in err
    if phase == "while Creating":
        assert left["targets"] == left["policies"] == left["alarms"] == [], left
        release_endpoint("asy", "InService")
    else:      # the scaling is whole (target, both policies, the alarm) or not there at all
        assert (left["targets"], len(left["policies"]), len(left["alarms"])) in \
            (([], 0, 0), (["endpoint/asy/variant/AllTraffic"], 2, 1)), (left, err)
    proc = subprocess.run([interrupts.DEPLOY, "delete", "asy", "--poll", "0.05", "--purge-s3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert everything() == NOTHING
