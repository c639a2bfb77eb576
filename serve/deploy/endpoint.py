"""SageMaker endpoint life cycle: create (with rollback), wait, invoke, update, autoscale, delete.

Nothing in here prints: progress and messages go through the `Reporter` the caller hands in.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import botocore.exceptions

from . import archive, instance, registry
from .aws import Aws, error_code, error_message
from .errors import DeployError

VARIANT = "AllTraffic"
TAG = {"Key": "created-by", "Value": "sagemaker-tf-graviton-deploy"}
SUBMIT_DIRECTORY = "/opt/ml/model/code"
_NAME_OK = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


class Reporter(Protocol):
    def info(self, message: str) -> None: ...
    def progress(self, what: str, status: str, elapsed: float) -> None: ...
    def progress_done(self) -> None: ...


# --- names and environment ---------------------------------------------------------------------

def timestamp(now: _dt.datetime | None = None) -> str:
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond // 1000:03d}"


def resource_name(base: str, stamp: str) -> str:
    """BASE-STAMP cut to SageMaker's 63 characters."""
    base = re.sub(r"[^a-zA-Z0-9-]+", "-", base).strip("-") or "model"
    return f"{base[:62 - len(stamp)].rstrip('-')}-{stamp}"


def check_name(name: str) -> str:
    if not _NAME_OK.match(name):
        raise DeployError(f"name {name!r} is not a valid SageMaker name (letters, digits and "
                          "hyphens, at most 63 characters, starting with a letter or digit)")
    return name


def default_env(region: str, has_code: bool) -> dict[str, str]:
    """The environment every model gets unless --env overrides it.

    SAGEMAKER_PROGRAM / SAGEMAKER_SUBMIT_DIRECTORY only when the archive carries
    code/inference.py: pointing the server at a folder that is not there would fail its start.
    """
    env = {
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
        "SAGEMAKER_REGION": region,
        "TF_ENABLE_ONEDNN_OPTS": "1",
        "DNNL_DEFAULT_FPMATH_MODE": "BF16",
    }
    if has_code:
        env = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": SUBMIT_DIRECTORY, **env}
    return env


def parse_env(pairs: list[str] | None) -> dict[str, str]:
    env = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise DeployError(f"--env {pair!r} is not KEY=VALUE")
        env[key] = value
    return env


def split_s3(uri: str) -> tuple[str, str]:
    m = re.match(r"^s3://([^/]+)/(.+)$", uri)
    if not m:
        raise DeployError(f"{uri!r} is not an s3://BUCKET/KEY URI")
    return m.group(1), m.group(2)


# --- waiting -----------------------------------------------------------------------------------

def wait_for_endpoint(aws: Aws, name: str, reporter: Reporter, *, timeout: float, poll: float,
                      gone_ok: bool = False) -> dict | None:
    """Poll describe_endpoint until a stable status; returns the description (None once deleted
    when gone_ok). Raises DeployError on Failed (with SageMaker's FailureReason) or timeout."""
    start = time.monotonic()
    transient = {"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting", "UpdateRollbackFailed"}
    try:
        while True:
            try:
                desc = aws.sagemaker.describe_endpoint(EndpointName=name)
            except botocore.exceptions.ClientError as exc:
                if gone_ok and error_code(exc) == "ValidationException" and "Could not find" in error_message(exc):
                    reporter.progress(name, "Deleted", time.monotonic() - start)
                    return None
                raise
            status = desc["EndpointStatus"]
            elapsed = time.monotonic() - start
            reporter.progress(name, status, elapsed)
            if status == "Failed":
                reason = desc.get("FailureReason", "no reason given")
                raise DeployError(f"endpoint {name} failed: {reason}")
            if status == "Deleting" and not gone_ok:
                raise DeployError(f"endpoint {name} is being deleted")
            if status not in transient:
                return desc
            if elapsed > timeout:
                raise DeployError(f"endpoint {name} still {status} after {elapsed:.0f} s "
                                  f"(--timeout {timeout:.0f})")
            time.sleep(poll)
    finally:
        reporter.progress_done()


# --- S3 ----------------------------------------------------------------------------------------

def ensure_bucket(aws: Aws, bucket: str, reporter: Reporter) -> bool:
    """Create BUCKET if it does not exist; True when this call created it."""
    try:
        aws.s3.head_bucket(Bucket=bucket)
        return False
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise DeployError(f"cannot use bucket {bucket}: {error_message(exc)}") from exc
    kwargs = {"Bucket": bucket}
    if aws.region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": aws.region}
    aws.s3.create_bucket(**kwargs)
    reporter.info(f"created bucket s3://{bucket}")
    return True


def s3_has_user_code(aws: Aws, uri: str) -> bool:
    bucket, key = split_s3(uri)
    try:
        body = aws.s3.get_object(Bucket=bucket, Key=key)["Body"]
    except botocore.exceptions.ClientError as exc:
        raise DeployError(f"cannot read {uri}: {error_message(exc)}") from exc
    try:
        return archive.stream_has_user_code(body)
    except Exception as exc:  # tarfile errors, truncated gzip
        raise DeployError(f"{uri} is not a readable model.tar.gz: {exc}") from exc
    finally:
        body.close()


# --- create ------------------------------------------------------------------------------------

@dataclass
class CreateSpec:
    image: str
    model_data: str                        # s3://... or a local model.tar.gz / model folder
    role: str | None = None
    name: str | None = None
    instance_type: str = "ml.c7g.xlarge"
    instance_count: int = 1
    env: dict[str, str] = field(default_factory=dict)
    bucket: str | None = None
    variant: str = VARIANT
    wait: bool = True
    timeout: float = 1800.0
    poll: float = 15.0
    arch_check: bool = True


@dataclass
class Created:
    """What one run created, in creation order, so a failure can undo exactly that."""

    s3_object: tuple[str, str] | None = None
    model: str | None = None
    endpoint_config: str | None = None
    endpoint: str | None = None


def check_architecture(aws: Aws, image: str, instance_type: str, reporter: Reporter) -> None:
    instance.instance_arch(instance_type)   # refuse a malformed type before reading the registry
    archs = registry.image_architectures(image, aws)
    arch = instance.check_compatible(image, archs, instance_type)
    reporter.info(f"image {image}: {', '.join(sorted(archs))}; {instance_type} is {arch}: ok")


def _stage_model_data(aws: Aws, model_data: str, bucket: str | None, key_prefix: str,
                      reporter: Reporter, created: Created) -> tuple[str, bool]:
    """Returns (s3 uri, has user code), uploading a local archive or folder."""
    if model_data.startswith("s3://"):
        bucket_name, key = split_s3(model_data)
        try:
            aws.s3.head_object(Bucket=bucket_name, Key=key)
        except botocore.exceptions.ClientError as exc:
            raise DeployError(f"model data {model_data} is not readable: {error_message(exc)}") from exc
        return model_data, s3_has_user_code(aws, model_data)
    path = Path(model_data)
    if not path.exists():
        raise DeployError(f"model data {model_data} does not exist")
    with tempfile.TemporaryDirectory(prefix="deploy-") as tmp:
        if path.is_dir():
            tarball = Path(tmp) / "model.tar.gz"
            archive.package(path, tarball)
            reporter.info(f"packaged {path} -> model.tar.gz")
        else:
            tarball = path
            check = Path(tmp) / "check"     # the archive must unpack safely and hold a model
            archive.safe_extract(tarball, check)
            archive.find_model(check)
        has_code = archive.has_user_code(tarball)
        bucket = bucket or aws.default_bucket()
        ensure_bucket(aws, bucket, reporter)
        key = f"{key_prefix}/model.tar.gz"
        size = tarball.stat().st_size
        aws.s3.upload_file(str(tarball), bucket, key)
        created.s3_object = (bucket, key)
        uri = f"s3://{bucket}/{key}"
        reporter.info(f"uploaded {tarball.name} ({size / 1e6:.1f} MB) -> {uri}")
        return uri, has_code


def rollback(aws: Aws, created: Created, reporter: Reporter) -> list[str]:
    """Delete what this run created, newest first. Returns what could not be deleted."""
    left = []
    steps = []
    if created.endpoint:
        steps.append((f"endpoint {created.endpoint}",
                      lambda: aws.sagemaker.delete_endpoint(EndpointName=created.endpoint)))
    if created.endpoint_config:
        steps.append((f"endpoint config {created.endpoint_config}",
                      lambda: aws.sagemaker.delete_endpoint_config(EndpointConfigName=created.endpoint_config)))
    if created.model:
        steps.append((f"model {created.model}", lambda: aws.sagemaker.delete_model(ModelName=created.model)))
    if created.s3_object:
        bucket, key = created.s3_object
        steps.append((f"s3://{bucket}/{key}", lambda: aws.s3.delete_object(Bucket=bucket, Key=key)))
    for label, step in steps:
        try:
            step()
            reporter.info(f"rolled back: deleted {label}")
        except Exception as exc:  # keep going: delete as much as possible
            left.append(label)
            reporter.info(f"rollback: could not delete {label}: {error_message(exc)}")
    return left


def create(aws: Aws, spec: CreateSpec, reporter: Reporter) -> dict:
    """Model, endpoint config and endpoint; on any failure deletes what this run created."""
    stamp = timestamp()
    endpoint_name = check_name(spec.name) if spec.name else resource_name("tf-graviton", stamp)
    model_name = resource_name(endpoint_name if spec.name else "tf-graviton", stamp)
    if spec.instance_count < 1:
        raise DeployError("--instance-count must be at least 1")
    if not spec.role:
        raise DeployError("--role is required: the ARN of the SageMaker execution role")
    # checks first: nothing is created before they pass
    if spec.arch_check:
        check_architecture(aws, spec.image, spec.instance_type, reporter)
    else:
        instance.instance_arch(spec.instance_type)
        reporter.info("architecture check skipped (--skip-arch-check)")
    try:
        aws.sagemaker.describe_endpoint(EndpointName=endpoint_name)
        raise DeployError(f"endpoint {endpoint_name} already exists: use `deploy update {endpoint_name}` "
                          f"or `deploy delete {endpoint_name}`")
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) != "ValidationException":
            raise

    created = Created()
    try:
        model_url, has_code = _stage_model_data(aws, spec.model_data, spec.bucket, model_name,
                                                reporter, created)
        env = {**default_env(aws.region, has_code), **spec.env}
        aws.sagemaker.create_model(
            ModelName=model_name,
            PrimaryContainer={"Image": spec.image, "ModelDataUrl": model_url, "Environment": env},
            ExecutionRoleArn=spec.role,
            Tags=[TAG],
        )
        created.model = model_name
        reporter.info(f"created model {model_name}")
        aws.sagemaker.create_endpoint_config(
            EndpointConfigName=model_name,
            ProductionVariants=[{
                "VariantName": spec.variant,
                "ModelName": model_name,
                "InstanceType": spec.instance_type,
                "InitialInstanceCount": spec.instance_count,
                "InitialVariantWeight": 1.0,
            }],
            Tags=[TAG],
        )
        created.endpoint_config = model_name
        reporter.info(f"created endpoint config {model_name} ({spec.instance_count} x {spec.instance_type})")
        aws.sagemaker.create_endpoint(EndpointName=endpoint_name, EndpointConfigName=model_name, Tags=[TAG])
        created.endpoint = endpoint_name
        reporter.info(f"creating endpoint {endpoint_name}")
        desc = None
        if spec.wait:
            desc = wait_for_endpoint(aws, endpoint_name, reporter, timeout=spec.timeout, poll=spec.poll)
        return {"endpoint": endpoint_name, "endpoint_config": model_name, "model": model_name,
                "model_data": model_url, "status": desc["EndpointStatus"] if desc else "Creating"}
    except BaseException as exc:
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        reporter.info(f"create {what}: {_describe(exc)}; deleting what this run created")
        left = rollback(aws, created, reporter)
        if left:
            raise DeployError(f"create {what} and these are still there, delete them by hand: "
                              f"{', '.join(left)}") from exc
        reporter.info("rollback complete: nothing from this run is left")
        if isinstance(exc, DeployError):
            raise
        if isinstance(exc, KeyboardInterrupt):
            raise DeployError("interrupted; nothing from this run is left") from exc
        raise DeployError(f"create failed: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, DeployError) else error_message(exc)


# --- describe / update -------------------------------------------------------------------------

def describe(aws: Aws, name: str) -> dict:
    """Endpoint, its config and its models in one dict."""
    try:
        endpoint = aws.sagemaker.describe_endpoint(EndpointName=name)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "ValidationException":
            raise DeployError(f"no endpoint named {name} in {aws.region}") from exc
        raise
    config = aws.sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    models = {}
    for variant in config["ProductionVariants"]:
        try:
            models[variant["ModelName"]] = aws.sagemaker.describe_model(ModelName=variant["ModelName"])
        except botocore.exceptions.ClientError:
            models[variant["ModelName"]] = None
    return {"endpoint": endpoint, "config": config, "models": models}


@dataclass
class UpdateSpec:
    name: str
    image: str | None = None
    model_data: str | None = None
    instance_type: str | None = None
    instance_count: int | None = None
    role: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    bucket: str | None = None
    timeout: float = 1800.0
    poll: float = 15.0
    arch_check: bool = True


def update(aws: Aws, spec: UpdateSpec, reporter: Reporter) -> dict:
    """New model + endpoint config, update_endpoint (blue/green), then remove the old ones."""
    if not any([spec.image, spec.model_data, spec.instance_type, spec.instance_count, spec.env, spec.role]):
        raise DeployError("nothing to update: give --image, --model-data, --instance-type, "
                          "--instance-count, --role or --env")
    current = describe(aws, spec.name)
    endpoint, config = current["endpoint"], current["config"]
    if endpoint["EndpointStatus"] != "InService":
        raise DeployError(f"endpoint {spec.name} is {endpoint['EndpointStatus']}; it must be InService to update")
    if len(config["ProductionVariants"]) != 1:
        raise DeployError(f"endpoint {spec.name} has {len(config['ProductionVariants'])} variants; "
                          "update handles single-variant endpoints")
    old_variant = config["ProductionVariants"][0]
    old_model = current["models"][old_variant["ModelName"]]
    if old_model is None or "PrimaryContainer" not in old_model:
        raise DeployError(f"model {old_variant['ModelName']} of {spec.name} cannot be read")
    container = old_model["PrimaryContainer"]
    image = spec.image or container["Image"]
    instance_type = spec.instance_type or old_variant["InstanceType"]
    if spec.arch_check and (spec.image or spec.instance_type):
        check_architecture(aws, image, instance_type, reporter)

    stamp = timestamp()
    new_name = resource_name(spec.name, stamp)
    created = Created()
    scaling = None
    try:
        env = dict(container.get("Environment") or {})
        model_url = container.get("ModelDataUrl")
        if spec.model_data:
            model_url, has_code = _stage_model_data(aws, spec.model_data, spec.bucket, new_name,
                                                    reporter, created)
            for key in ("SAGEMAKER_PROGRAM", "SAGEMAKER_SUBMIT_DIRECTORY"):
                if env.get(key) == default_env(aws.region, True)[key]:
                    env.pop(key)
            env = {**default_env(aws.region, has_code), **env}
        env.update(spec.env)
        new_container = {"Image": image, "Environment": env}
        if model_url:
            new_container["ModelDataUrl"] = model_url
        aws.sagemaker.create_model(ModelName=new_name, PrimaryContainer=new_container,
                                   ExecutionRoleArn=spec.role or old_model["ExecutionRoleArn"], Tags=[TAG])
        created.model = new_name
        reporter.info(f"created model {new_name}")
        variant = {k: v for k, v in old_variant.items()
                   if k in ("VariantName", "InitialVariantWeight", "InitialInstanceCount", "InstanceType",
                            "AcceleratorType", "ModelDataDownloadTimeoutInSeconds",
                            "ContainerStartupHealthCheckTimeoutInSeconds", "VolumeSizeInGB")}
        variant.update(ModelName=new_name, InstanceType=instance_type)
        if spec.instance_count:
            variant["InitialInstanceCount"] = spec.instance_count
        aws.sagemaker.create_endpoint_config(EndpointConfigName=new_name, ProductionVariants=[variant], Tags=[TAG])
        created.endpoint_config = new_name
        reporter.info(f"created endpoint config {new_name} ({variant['InitialInstanceCount']} x {instance_type})")
        scaling = _suspend_scaling(aws, spec.name, variant["VariantName"], reporter)
        aws.sagemaker.update_endpoint(EndpointName=spec.name, EndpointConfigName=new_name)
        reporter.info(f"updating endpoint {spec.name} (blue/green: the old fleet serves until the new one is InService)")
        desc = wait_for_endpoint(aws, spec.name, reporter, timeout=spec.timeout, poll=spec.poll)
        _restore_scaling(aws, scaling, reporter)
        scaling = None
        if desc["EndpointConfigName"] != new_name:
            reason = desc.get("FailureReason", "SageMaker rolled back to the previous configuration")
            raise DeployError(f"update of {spec.name} did not take: {reason}")
    except BaseException as exc:
        reporter.info(f"update failed: {_describe(exc)}; the endpoint keeps its previous configuration; "
                      "deleting what this run created")
        try:
            _restore_scaling(aws, scaling, reporter)
        except botocore.exceptions.ClientError as err:
            reporter.info(f"could not restore auto scaling: {error_message(err)}; run `deploy autoscale` again")
        left = rollback(aws, created, reporter)
        if left:
            raise DeployError(f"update failed and these are still there: {', '.join(left)}") from exc
        if isinstance(exc, DeployError):
            raise
        raise DeployError(f"update failed: {_describe(exc)}") from exc

    # the endpoint is back InService on the new config: the old ones can go
    old_config_name = config["EndpointConfigName"]
    for label, call in ((f"endpoint config {old_config_name}",
                         lambda: aws.sagemaker.delete_endpoint_config(EndpointConfigName=old_config_name)),
                        (f"model {old_variant['ModelName']}",
                         lambda: aws.sagemaker.delete_model(ModelName=old_variant["ModelName"]))):
        try:
            call()
            reporter.info(f"deleted old {label}")
        except botocore.exceptions.ClientError as exc:
            reporter.info(f"could not delete old {label}: {error_message(exc)}")
    return {"endpoint": spec.name, "endpoint_config": new_name, "model": new_name,
            "image": image, "instance_type": instance_type, "status": desc["EndpointStatus"]}


# --- autoscale ---------------------------------------------------------------------------------

def autoscale(aws: Aws, name: str, *, min_count: int, max_count: int, target: float,
              scale_in_cooldown: int = 300, scale_out_cooldown: int = 60,
              variant: str | None = None) -> dict:
    """Target tracking on SageMakerVariantInvocationsPerInstance for the endpoint's variant."""
    if not 1 <= min_count <= max_count:
        raise DeployError("need 1 <= --min <= --max")
    if target <= 0:
        raise DeployError("--target-invocations must be positive (invocations per instance per minute)")
    current = describe(aws, name)
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


def _deregister_scaling(aws: Aws, name: str, variants: list[str], reporter: Reporter) -> None:
    for variant in variants:
        resource_id = f"endpoint/{name}/variant/{variant}"
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


def _read_scaling(aws: Aws, resource_id: str) -> tuple[dict, list[dict]] | None:
    """The variant's scalable target and its policies, or None when it does not auto scale."""
    targets = aws.autoscaling.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[resource_id])["ScalableTargets"]
    if not targets:
        return None
    policies = aws.autoscaling.describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId=resource_id)["ScalingPolicies"]
    return targets[0], policies


def _suspend_scaling(aws: Aws, name: str, variant: str, reporter: Reporter) -> dict | None:
    """Deregister the variant's scalable target (SageMaker's procedure for updating an endpoint
    that auto scales) and return what is needed to put it back."""
    resource_id = f"endpoint/{name}/variant/{variant}"
    found = _read_scaling(aws, resource_id)
    if found is None:
        return None
    target, policies = found
    aws.autoscaling.deregister_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=resource_id,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount")
    reporter.info(f"auto scaling of {resource_id} suspended for the update")
    return {"target": target, "policies": policies}


def _restore_scaling(aws: Aws, saved: dict | None, reporter: Reporter) -> None:
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


# --- delete / list -----------------------------------------------------------------------------

def delete(aws: Aws, name: str, reporter: Reporter, *, wait: bool = True, timeout: float = 1800.0,
           poll: float = 15.0) -> list[str]:
    """Endpoint, its endpoint config and its models (and the auto scaling target). Returns what went."""
    current = describe(aws, name)
    config = current["config"]
    variants = [v["VariantName"] for v in config["ProductionVariants"]]
    _deregister_scaling(aws, name, variants, reporter)
    deleted = []
    aws.sagemaker.delete_endpoint(EndpointName=name)
    deleted.append(f"endpoint {name}")
    reporter.info(f"deleting endpoint {name}")
    try:
        aws.sagemaker.delete_endpoint_config(EndpointConfigName=config["EndpointConfigName"])
        deleted.append(f"endpoint config {config['EndpointConfigName']}")
        reporter.info(f"deleted endpoint config {config['EndpointConfigName']}")
    except botocore.exceptions.ClientError as exc:
        reporter.info(f"could not delete endpoint config {config['EndpointConfigName']}: {error_message(exc)}")
    for model, desc in current["models"].items():
        data = ((desc or {}).get("PrimaryContainer") or {}).get("ModelDataUrl")
        if data:
            reporter.info(f"model data stays in {data} (S3 storage only; remove it with `aws s3 rm {data}`)")
        try:
            aws.sagemaker.delete_model(ModelName=model)
            deleted.append(f"model {model}")
            reporter.info(f"deleted model {model}")
        except botocore.exceptions.ClientError as exc:
            reporter.info(f"could not delete model {model}: {error_message(exc)}")
    if wait:
        wait_for_endpoint(aws, name, reporter, timeout=timeout, poll=poll, gone_ok=True)
    return deleted


def list_endpoints(aws: Aws, name_contains: str | None = None) -> list[dict]:
    rows = []
    kwargs = {"SortBy": "CreationTime", "SortOrder": "Descending"}
    if name_contains:
        kwargs["NameContains"] = name_contains
    for page in aws.sagemaker.get_paginator("list_endpoints").paginate(**kwargs):
        for ep in page["Endpoints"]:
            row = {"name": ep["EndpointName"], "status": ep["EndpointStatus"],
                   "created": ep["CreationTime"], "instance_type": "", "count": ""}
            try:
                desc = aws.sagemaker.describe_endpoint(EndpointName=ep["EndpointName"])
                cfg = aws.sagemaker.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
                pv = cfg["ProductionVariants"][0]
                row["instance_type"] = pv.get("InstanceType", "serverless")
                live = (desc.get("ProductionVariants") or [{}])[0]
                row["count"] = live.get("CurrentInstanceCount", pv.get("InitialInstanceCount", ""))
            except botocore.exceptions.ClientError:
                pass
            rows.append(row)
    return rows


def scaling_of(aws: Aws, name: str, variant: str) -> dict | None:
    try:
        found = _read_scaling(aws, f"endpoint/{name}/variant/{variant}")
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


# --- invoke ------------------------------------------------------------------------------------

def invoke(aws: Aws, name: str, body: bytes, content_type: str, accept: str | None = None,
           custom_attributes: str | None = None) -> tuple[bytes, str]:
    kwargs = {"EndpointName": name, "Body": body, "ContentType": content_type}
    if accept:
        kwargs["Accept"] = accept
    if custom_attributes:
        kwargs["CustomAttributes"] = custom_attributes
    try:
        out = aws.runtime.invoke_endpoint(**kwargs)
    except botocore.exceptions.ClientError as exc:
        raise DeployError(f"invoke {name}: {error_message(exc)}") from exc
    return out["Body"].read(), out.get("ContentType", "")


def softmax_response(body: bytes) -> dict:
    """{"predictions": [[logits...], ...]} -> {"predictions": [[probabilities...]], "classes": [argmax...]}.

    Rows that already are probabilities (non-negative, summing to 1) are left as they are.
    """
    try:
        doc = json.loads(body)
        rows = doc["predictions"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DeployError('--softmax needs a JSON response of the form {"predictions": [[...], ...]}') from exc
    if rows and not isinstance(rows[0], list):
        rows = [rows]
    out = []
    for row in rows:
        values = [float(v) for v in row]
        if values and all(v >= 0 for v in values) and abs(sum(values) - 1.0) < 1e-4:
            out.append(values)
            continue
        top = max(values)
        exps = [math.exp(v - top) for v in values]
        total = sum(exps)
        out.append([e / total for e in exps])
    return {"predictions": out, "classes": [max(range(len(r)), key=r.__getitem__) for r in out]}

