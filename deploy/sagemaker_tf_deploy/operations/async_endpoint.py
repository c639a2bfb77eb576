"""Asynchronous inference endpoints: their config, auto scaling on the backlog (to zero when asked),
one request sent and its answer waited for in S3, and what `deploy status` shows of them.

An async endpoint is a real-time endpoint whose config has an AsyncInferenceConfig: requests are
objects in S3 (up to 1 GB, up to an hour of processing), queued by SageMaker, and each answer (or
failure) is written to S3. It runs on hosting instance types, so on Graviton, and it can scale to
zero instances while idle: that is how offline and bursty work gets Graviton's prices, which batch
transform cannot offer (it has no Graviton types).

API (used by `deploy create --async`, `deploy invoke --async`, `deploy status`, and by `deploy
transform --engine async`):
  AsyncSpec / check_spec(spec)            the flags, checked without a network call
  inference_config(spec) -> dict           AsyncInferenceConfig for create_endpoint_config
  scale_on_backlog(aws, endpoint, variant, min_instances, max_instances, reporter) -> dict
                                           target tracking on ApproximateBacklogSizePerInstance and,
                                           with min 0, the step policy + CloudWatch alarm on
                                           HasBacklogWithoutCapacity that scales out from zero
  invoke(aws, endpoint, input_uri, ...) -> Invocation(inference_id, output, failure)
  wait_for_answer(aws, invocation, timeout, poll) -> Answer(ok, location, body)
  backlog(aws, endpoint) -> dict           the latest ApproximateBacklogSize datapoint (or None)
The undo of scale_on_backlog is scaling.deregister (which also deletes the alarm).

Reason to change: what SageMaker's async inference takes or how its scaling is set.
"""

from __future__ import annotations

import datetime as _dt
import re
import time
from dataclasses import dataclass

import botocore.exceptions

from ..core.aws import Aws, error_message
from ..core.errors import DeployError, UsageError
from ..core.output import Reporter
from . import invoke as invoke_op, scaling, staging

_S3_PREFIX = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
BACKLOG_TARGET = 5.0           # requests waiting per instance that target tracking holds (AWS's example)
SCALE_IN_COOLDOWN = 600
SCALE_OUT_COOLDOWN = 300


@dataclass
class AsyncSpec:
    output: str                               # S3OutputPath
    failure_output: str | None = None         # S3FailurePath
    max_concurrent_invocations: int | None = None   # per instance; SageMaker picks one when unset
    min_instances: int | None = None          # with it, auto scaling on the backlog from here to the count


def check_spec(spec: AsyncSpec, instance_count: int, wait: bool) -> None:
    """UsageError for anything SageMaker or Application Auto Scaling would refuse (no network)."""
    for flag, uri in (("--async-output", spec.output), ("--async-failure-output", spec.failure_output)):
        if uri is not None and (not _S3_PREFIX.match(uri) or len(uri) > 512):
            raise UsageError(f"{flag} {uri!r} is not an s3://BUCKET/PREFIX URI (at most 512 characters)")
    if spec.max_concurrent_invocations is not None and not 1 <= spec.max_concurrent_invocations <= 1000:
        raise UsageError("--max-concurrent-invocations must be 1..1000 (SageMaker's range)")
    if spec.min_instances is not None:
        if not 0 <= spec.min_instances <= instance_count:
            raise UsageError(f"--min-instances must be 0..--instance-count ({instance_count}): auto scaling "
                             "runs between them")
        if not wait:
            raise UsageError("--min-instances sets auto scaling once the endpoint is InService: drop --no-wait")


def inference_config(spec: AsyncSpec) -> dict:
    output = {"S3OutputPath": spec.output}
    if spec.failure_output:
        output["S3FailurePath"] = spec.failure_output
    config = {"OutputConfig": output}
    if spec.max_concurrent_invocations is not None:
        config["ClientConfig"] = {"MaxConcurrentInvocationsPerInstance": spec.max_concurrent_invocations}
    return config


def scale_on_backlog(aws: Aws, endpoint: str, variant: str, min_instances: int, max_instances: int,
                     reporter: Reporter) -> dict:
    """Auto scaling as AWS documents it for async endpoints: target tracking on the backlog per
    instance; with MIN_INSTANCES 0 also a step policy that adds one instance, fired by a CloudWatch
    alarm on HasBacklogWithoutCapacity (target tracking alone never scales out from zero)."""
    resource_id = scaling.resource_id(endpoint, variant)
    dims = [{"Name": "EndpointName", "Value": endpoint}]
    aws.autoscaling.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=resource_id, ScalableDimension=scaling.DIMENSION,
        MinCapacity=min_instances, MaxCapacity=max_instances)
    aws.autoscaling.put_scaling_policy(
        PolicyName=f"{endpoint}-{variant}-backlog", ServiceNamespace="sagemaker", ResourceId=resource_id,
        ScalableDimension=scaling.DIMENSION, PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": BACKLOG_TARGET,
            "CustomizedMetricSpecification": {"MetricName": "ApproximateBacklogSizePerInstance",
                                              "Namespace": "AWS/SageMaker", "Dimensions": dims,
                                              "Statistic": "Average"},
            "ScaleInCooldown": SCALE_IN_COOLDOWN, "ScaleOutCooldown": SCALE_OUT_COOLDOWN})
    result = {"resource_id": resource_id, "min": min_instances, "max": max_instances,
              "target_backlog": BACKLOG_TARGET, "alarm": None}
    if min_instances == 0:
        policy = aws.autoscaling.put_scaling_policy(
            PolicyName=f"{endpoint}-{variant}-from-zero", ServiceNamespace="sagemaker", ResourceId=resource_id,
            ScalableDimension=scaling.DIMENSION, PolicyType="StepScaling",
            StepScalingPolicyConfiguration={
                "AdjustmentType": "ChangeInCapacity", "MetricAggregationType": "Average",
                "Cooldown": SCALE_OUT_COOLDOWN,
                "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]})
        alarm = scaling.backlog_alarm_name(endpoint, variant)
        aws.cloudwatch.put_metric_alarm(
            AlarmName=alarm, MetricName="HasBacklogWithoutCapacity", Namespace="AWS/SageMaker",
            Statistic="Average", Dimensions=dims, Period=60, EvaluationPeriods=2, DatapointsToAlarm=2,
            Threshold=1.0, ComparisonOperator="GreaterThanOrEqualToThreshold", TreatMissingData="missing",
            AlarmActions=[policy["PolicyARN"]],
            AlarmDescription=f"scales {endpoint} out from zero instances when requests wait (deploy)")
        result["alarm"] = alarm
    reporter.info(f"auto scaling {resource_id}: {min_instances}..{max_instances} instances, target "
                  f"{BACKLOG_TARGET:g} queued requests per instance"
                  + (f"; from zero on alarm {result['alarm']}" if result["alarm"] else ""))
    return result


@dataclass
class Invocation:
    endpoint: str
    inference_id: str
    output: str                 # s3:// URI the answer will be written to
    failure: str | None         # s3:// URI a failure will be written to (when the endpoint has one)


def invoke(aws: Aws, endpoint: str, input_uri: str, content_type: str | None = None,
           accept: str | None = None, inference_id: str | None = None) -> Invocation:
    """Queue one request whose body is the S3 object INPUT_URI; returns where its answer will be."""
    if not _S3_PREFIX.match(input_uri or "") or "/" not in input_uri[len("s3://"):]:
        raise UsageError(f"--input {input_uri!r} is not an s3://BUCKET/KEY URI (an async request's body "
                         "is an object in S3)")
    out = invoke_op.runtime_call(aws.runtime.invoke_endpoint_async, f"invoke {endpoint} --async",
                                 {"EndpointName": endpoint, "InputLocation": input_uri},
                                 ContentType=content_type, Accept=accept, InferenceId=inference_id)
    return Invocation(endpoint, out.get("InferenceId", ""), out["OutputLocation"], out.get("FailureLocation"))


@dataclass
class Answer:
    ok: bool
    location: str
    body: bytes
    content_type: str


def _read(aws: Aws, uri: str) -> tuple[bytes, str] | None:
    bucket, key = staging.split_s3(uri)
    try:
        obj = aws.s3.get_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise DeployError(f"cannot read {uri}: {error_message(exc)}") from exc
    return obj["Body"].read(), obj.get("ContentType", "")


def wait_for_answer(aws: Aws, invocation: Invocation, *, timeout: float = 3600.0, poll: float = 5.0) -> Answer:
    """Poll S3 until the answer or the failure object of INVOCATION exists (an async request may
    take up to an hour, SageMaker's limit, plus its time in the queue)."""
    start = time.monotonic()
    while True:
        for ok, uri in ((True, invocation.output), (False, invocation.failure)):
            if uri:
                found = _read(aws, uri)
                if found is not None:
                    return Answer(ok, uri, *found)
        if time.monotonic() - start > timeout:
            raise DeployError(f"no answer for {invocation.inference_id} after {timeout:.0f} s (--timeout): it "
                              f"will be written to {invocation.output}"
                              + (f" or {invocation.failure}" if invocation.failure else ""))
        time.sleep(poll)


def backlog(aws: Aws, endpoint: str, minutes: int = 10) -> dict | None:
    """The latest ApproximateBacklogSize datapoint of the last MINUTES ({"size", "at"}), or None."""
    now = _dt.datetime.now(_dt.timezone.utc)
    try:
        points = aws.cloudwatch.get_metric_statistics(
            Namespace="AWS/SageMaker", MetricName="ApproximateBacklogSize",
            Dimensions=[{"Name": "EndpointName", "Value": endpoint}],
            StartTime=now - _dt.timedelta(minutes=minutes), EndTime=now + _dt.timedelta(minutes=1), Period=60,
            Statistics=["Average"])["Datapoints"]
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
        return None
    if not points:
        return None
    latest = max(points, key=lambda p: p["Timestamp"])
    return {"size": latest["Average"], "at": latest["Timestamp"]}
