"""Application Auto Scaling of an endpoint variant: `deploy autoscale` (target tracking on
invocations per instance), what `deploy status` shows, and the suspend/restore around an update
(SageMaker's procedure for updating an endpoint that auto scales) and the deregistration on delete.

Reason to change: the scaling policy or how scaling is carried across an update.
"""

from __future__ import annotations

import botocore.exceptions

from ..core import checks
from . import resources
from ..core.aws import Aws, error_message
from ..core.errors import DeployError, UsageError
from ..core.output import Reporter


DIMENSION = "sagemaker:variant:DesiredInstanceCount"


def resource_id(endpoint: str, variant: str) -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


def backlog_alarm_name(endpoint: str, variant: str) -> str:
    """The CloudWatch alarm an async endpoint's scale-from-zero policy hangs on (async_endpoint.py)."""
    return f"{endpoint}-{variant}-has-backlog-without-capacity"


def autoscale(aws: Aws, name: str, *, min_count: int, max_count: int, target: float,
              scale_in_cooldown: int = 300, scale_out_cooldown: int = 60,
              variant: str | None = None) -> dict:
    """Target tracking on SageMakerVariantInvocationsPerInstance for the endpoint's variant."""
    if not 1 <= min_count <= max_count:
        raise UsageError("need 1 <= --min <= --max")
    if target <= 0:
        raise UsageError("--target-invocations must be positive (invocations per instance per minute)")
    checks.check_name(name, "endpoint")
    current = resources.describe(aws, name, strict=True)
    variants = [v["VariantName"] for v in current["config"]["ProductionVariants"]]
    variant = variant or variants[0]
    if variant not in variants:
        raise DeployError(f"endpoint {name} has no variant {variant} (it has {', '.join(variants)})")
    resource_id = f"endpoint/{name}/variant/{variant}"
    dimension = "sagemaker:variant:DesiredInstanceCount"
    aws.autoscaling.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=resource_id, ScalableDimension=dimension,
        MinCapacity=min_count, MaxCapacity=max_count)
    policy = f"{name}-{variant}-invocations"
    aws.autoscaling.put_scaling_policy(
        PolicyName=policy, ServiceNamespace="sagemaker", ResourceId=resource_id,
        ScalableDimension=dimension, PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(target),
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleInCooldown": scale_in_cooldown,
            "ScaleOutCooldown": scale_out_cooldown,
        })
    return {"resource_id": resource_id, "policy": policy, "min": min_count, "max": max_count,
            "target": float(target)}


def deregister(aws: Aws, name: str, variants: list[str], reporter: Reporter) -> None:
    """The variants' scalable targets (their policies go with them) and the scale-from-zero alarm
    an async endpoint has (async_endpoint.scale_on_backlog)."""
    for variant in variants:
        resource_id = f"endpoint/{name}/variant/{variant}"
        alarm = backlog_alarm_name(name, variant)
        try:
            if aws.cloudwatch.describe_alarms(AlarmNames=[alarm])["MetricAlarms"]:
                aws.cloudwatch.delete_alarms(AlarmNames=[alarm])
                reporter.info(f"deleted CloudWatch alarm {alarm}")
        except botocore.exceptions.ClientError as exc:
            reporter.info(f"could not delete CloudWatch alarm {alarm}: {error_message(exc)}")
        try:
            targets = aws.autoscaling.describe_scalable_targets(
                ServiceNamespace="sagemaker", ResourceIds=[resource_id])["ScalableTargets"]
            if targets:
                aws.autoscaling.deregister_scalable_target(
                    ServiceNamespace="sagemaker", ResourceId=resource_id,
                    ScalableDimension="sagemaker:variant:DesiredInstanceCount")
                reporter.info(f"deregistered auto scaling for {resource_id}")
        except botocore.exceptions.ClientError as exc:
            reporter.info(f"could not deregister auto scaling for {resource_id}: {error_message(exc)}")


def _read(aws: Aws, resource_id: str) -> tuple[dict, list[dict]] | None:
    """The variant's scalable target and its policies, or None when it does not auto scale."""
    targets = aws.autoscaling.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[resource_id])["ScalableTargets"]
    if not targets:
        return None
    policies = aws.autoscaling.describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId=resource_id)["ScalingPolicies"]
    return targets[0], policies


def suspend(aws: Aws, name: str, variant: str, reporter: Reporter) -> dict | None:
    """Deregister the variant's scalable target (SageMaker's procedure for updating an endpoint
    that auto scales) and return what is needed to put it back."""
    resource_id = f"endpoint/{name}/variant/{variant}"
    found = _read(aws, resource_id)
    if found is None:
        return None
    target, policies = found
    aws.autoscaling.deregister_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=resource_id,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount")
    reporter.info(f"auto scaling of {resource_id} suspended for the update")
    return {"target": target, "policies": policies}


def restore(aws: Aws, saved: dict | None, reporter: Reporter) -> None:
    if not saved:
        return
    t = saved["target"]
    aws.autoscaling.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=t["ResourceId"], ScalableDimension=t["ScalableDimension"],
        MinCapacity=t["MinCapacity"], MaxCapacity=t["MaxCapacity"])
    for p in saved["policies"]:
        kwargs = {k: p[k] for k in ("PolicyName", "ServiceNamespace", "ResourceId", "ScalableDimension",
                                    "PolicyType")}
        for key in ("TargetTrackingScalingPolicyConfiguration", "StepScalingPolicyConfiguration"):
            if p.get(key):
                kwargs[key] = p[key]
        aws.autoscaling.put_scaling_policy(**kwargs)
    reporter.info(f"auto scaling of {t['ResourceId']} restored ({t['MinCapacity']}..{t['MaxCapacity']}, "
                  f"{len(saved['policies'])} polic{'y' if len(saved['policies']) == 1 else 'ies'})")


def scaling_of(aws: Aws, name: str, variant: str) -> dict | None:
    try:
        found = _read(aws, f"endpoint/{name}/variant/{variant}")
    except botocore.exceptions.ClientError:
        return None
    if found is None:
        return None
    target, policies = found
    value = None
    for p in policies:
        cfg = p.get("TargetTrackingScalingPolicyConfiguration") or {}
        value = cfg.get("TargetValue", value)
    return {"min": target["MinCapacity"], "max": target["MaxCapacity"], "target": value}
