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

from . import archive, checks, instance, interrupts, registry
from .aws import Aws, error_code, error_message
from .errors import DeployError, UsageError

VARIANT = "AllTraffic"
TAG = {"Key": "created-by", "Value": "sagemaker-tf-graviton-deploy"}
SUBMIT_DIRECTORY = "/opt/ml/model/code"


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


def check_name(name: str, what: str = "endpoint") -> str:
    return checks.check_name(name, what)


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
    return checks.parse_env(pairs)


def split_s3(uri: str) -> tuple[str, str]:
    m = re.match(r"^s3://([^/]+)/(.+)$", uri)
    if not m:
        raise DeployError(f"{uri!r} is not an s3://BUCKET/KEY URI")
    return m.group(1), m.group(2)


# --- waiting -----------------------------------------------------------------------------------

TRANSIENT = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"})
BUSY = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack"})   # SageMaker refuses changes


def _not_found(exc: BaseException) -> bool:
    return error_code(exc) in ("ValidationException", "ResourceNotFound", "NoSuchKey", "404") and (
        "Could not find" in error_message(exc) or "not found" in error_message(exc).lower()
        or error_code(exc) in ("NoSuchKey", "404"))


def describe_endpoint_or_none(aws: Aws, name: str) -> dict | None:
    try:
        return aws.sagemaker.describe_endpoint(EndpointName=name)
    except botocore.exceptions.ClientError as exc:
        if _not_found(exc):
            return None
        raise


ROLLBACK_WAIT = 3600.0


def rollback_wait(timeout: float) -> float:
    """How long a rollback waits for SageMaker (to let a Creating endpoint go, or an update settle):
    an hour, or --timeout when longer. A stuck Creating endpoint can take that long to turn Failed;
    a second Ctrl-C stops the wait sooner."""
    return max(float(timeout), ROLLBACK_WAIT)


def _sleep(seconds: float, shield: interrupts.Shield | None = None) -> None:
    """Sleep in short slices so a shielded wait notices a second signal quickly."""
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0 or (shield is not None and shield.interrupted):
            return
        time.sleep(min(left, 0.25))


def wait_for_endpoint(aws: Aws, name: str, reporter: Reporter, *, timeout: float, poll: float,
                      gone_ok: bool = False, shield: interrupts.Shield | None = None,
                      fail_on_failed: bool = True) -> dict | None:
    """Poll describe_endpoint until a stable status; returns the description (None once deleted
    when gone_ok). Raises DeployError on Failed (with SageMaker's FailureReason), WaitTimedOut
    past TIMEOUT. With SHIELD (inside interrupts.shielded) a signal ends the wait: the last
    description is returned as it is, possibly still transient."""
    start = time.monotonic()
    try:
        while True:
            desc = describe_endpoint_or_none(aws, name)
            elapsed = time.monotonic() - start
            if desc is None:
                if gone_ok:
                    reporter.progress(name, "Deleted", elapsed)
                    return None
                raise DeployError(f"endpoint {name} is gone (deleted outside this command?)")
            status = desc["EndpointStatus"]
            reporter.progress(name, status, elapsed)
            if status == "Failed" and fail_on_failed:
                reason = desc.get("FailureReason", "no reason given")
                raise DeployError(f"endpoint {name} failed: {reason}")
            if status == "Deleting" and not gone_ok:
                raise DeployError(f"endpoint {name} is being deleted")
            if status not in TRANSIENT:
                return desc
            if shield is not None and shield.interrupted:
                return desc
            if elapsed > timeout:
                raise interrupts.WaitTimedOut(f"endpoint {name} still {status} after {elapsed:.0f} s "
                                              f"(--timeout {timeout:.0f})")
            _sleep(poll, shield)
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
        raise DeployError(f"{uri} is not a readable model.tar.gz (tar.gz of a SavedModel or Keras "
                          f"file): {type(exc).__name__}") from exc
    finally:
        body.close()


def owned_pattern(endpoint: str) -> re.Pattern:
    """Names this tool gives the models, endpoint configs and S3 prefixes of ENDPOINT:
    resource_name(ENDPOINT, TIMESTAMP), and the endpoint's own name (an unnamed create)."""
    probe = resource_name(endpoint, "0" * 8 + "-" + "0" * 6 + "-" + "0" * 3)
    prefix = probe[: -len("00000000-000000-000")]
    return re.compile(rf"^(?:{re.escape(prefix)}\d{{8}}-\d{{6}}-\d{{3}}|{re.escape(endpoint)})$")


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
    instance_check: bool = True
    on_interrupt: str = interrupts.DEFAULT_ON_INTERRUPT

    @classmethod
    def from_args(cls, args) -> "CreateSpec":
        """From `deploy create`'s parsed arguments (also with --multi-model)."""
        return cls(image=args.image, model_data=args.model_data, role=args.role, name=args.name,
                   instance_type=args.instance_type, instance_count=args.instance_count,
                   env=parse_env(args.env), bucket=args.bucket, wait=not args.no_wait,
                   timeout=args.timeout, poll=args.poll, arch_check=not args.skip_arch_check,
                   instance_check=not args.skip_instance_check, on_interrupt=args.on_interrupt)


@dataclass
class Created:
    """What one run created (or asked for: a field is set just before its call, so a signal that
    lands while the call is in flight still gets it undone), in creation order."""

    s3_object: tuple[str, str] | None = None
    model: str | None = None
    endpoint_config: str | None = None
    endpoint: str | None = None

    def labels(self) -> list[str]:
        out = []
        if self.endpoint:
            out.append(f"endpoint {self.endpoint}")
        if self.endpoint_config:
            out.append(f"endpoint config {self.endpoint_config}")
        if self.model:
            out.append(f"model {self.model}")
        if self.s3_object:
            out.append(f"s3://{self.s3_object[0]}/{self.s3_object[1]}")
        return out


def check_architecture(aws: Aws, image: str, instance_type: str, reporter: Reporter) -> None:
    instance.instance_arch(instance_type)   # refuse a malformed type before reading the registry
    archs = registry.image_architectures(image, aws)
    arch = instance.check_compatible(image, archs, instance_type)
    reporter.info(f"image {image}: {', '.join(sorted(archs))}; {instance_type} is {arch}: ok")


@dataclass
class LocalModel:
    """Model data after the local checks: an s3:// URI (checked later), or a tarball ready to upload."""

    uri: str | None = None
    tarball: Path | None = None
    has_code: bool | None = None
    checked: archive.CheckedModel | None = None


def prepare_model_data(model_data: str, workdir: Path, reporter: Reporter) -> LocalModel:
    """Local checks on --model-data (no network); a folder is packaged into WORKDIR."""
    checked = checks.check_model_data(model_data)
    if checked is None:
        return LocalModel(uri=model_data)
    if checked.kind == "folder":
        tarball = workdir / "model.tar.gz"
        archive.package(checked.source, tarball)
        reporter.info(f"packaged {checked.source} -> model.tar.gz ({checked.model})")
    else:
        tarball = checked.source
        reporter.info(f"model archive {checked.source}: {checked.model}")
    return LocalModel(tarball=tarball, has_code=checked.has_code, checked=checked)


def _stage_model_data(aws: Aws, model: LocalModel, bucket: str | None, key_prefix: str,
                      reporter: Reporter, created: Created) -> tuple[str, bool]:
    """Returns (s3 uri, has user code), uploading a local archive."""
    if model.uri is not None:
        bucket_name, key = split_s3(model.uri)
        try:
            aws.s3.head_object(Bucket=bucket_name, Key=key)
        except botocore.exceptions.ClientError as exc:
            raise DeployError(f"model data {model.uri} is not readable: {error_message(exc)}") from exc
        return model.uri, s3_has_user_code(aws, model.uri)
    bucket = bucket or aws.default_bucket()
    ensure_bucket(aws, bucket, reporter)
    key = f"{key_prefix}/model.tar.gz"
    size = model.tarball.stat().st_size
    created.s3_object = (bucket, key)
    aws.s3.upload_file(str(model.tarball), bucket, key)
    uri = f"s3://{bucket}/{key}"
    reporter.info(f"uploaded {model.tarball.name} ({size / 1e6:.1f} MB) -> {uri}")
    return uri, bool(model.has_code)


def _gone_or(label: str, call, reporter: Reporter, prefix: str = "rolled back: deleted") -> bool:
    """Run a delete CALL; a resource that is already gone counts as deleted."""
    try:
        call()
        reporter.info(f"{prefix} {label}")
        return True
    except botocore.exceptions.ClientError as exc:
        if _not_found(exc):
            reporter.info(f"{label} was already gone")
            return True
        reporter.info(f"could not delete {label}: {error_message(exc)}")
        return False


def _abort_uploads(aws: Aws, bucket: str, key: str) -> None:
    """Abort multipart uploads of KEY an interrupted upload_file may have left (they bill as storage)."""
    try:
        uploads = aws.s3.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads") or []
        for u in uploads:
            if u.get("Key") == key:
                aws.s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=u["UploadId"])
    except botocore.exceptions.ClientError:
        pass


def delete_endpoint_when_possible(aws: Aws, name: str, reporter: Reporter, *, timeout: float, poll: float,
                                  shield: interrupts.Shield | None = None) -> bool:
    """delete_endpoint, waiting while SageMaker refuses because the endpoint is Creating or Updating
    (it cannot delete an endpoint in those states). True once deleted or gone; False when the wait
    ran past TIMEOUT or a signal arrived in SHIELD."""
    start = time.monotonic()
    said = False
    while True:
        try:
            aws.sagemaker.delete_endpoint(EndpointName=name)
            return True
        except botocore.exceptions.ClientError as exc:
            if _not_found(exc):
                return True
            desc = describe_endpoint_or_none(aws, name)
            if desc is None:
                return True
            status = desc["EndpointStatus"]
            if status == "Deleting":
                return True
            if status not in BUSY:
                reporter.info(f"could not delete endpoint {name}: {error_message(exc)}")
                return False
            if not said:
                reporter.info(f"SageMaker cannot delete endpoint {name} while it is {status}: waiting for it "
                              "to finish, then deleting it (a second Ctrl-C stops waiting and leaves it)")
                said = True
            elapsed = time.monotonic() - start
            reporter.progress(name, status, elapsed)
            if (shield is not None and shield.interrupted) or elapsed > timeout:
                reporter.progress_done()
                return False
            _sleep(poll, shield)


def rollback(aws: Aws, created: Created, reporter: Reporter, *, timeout: float = 1800.0, poll: float = 15.0,
             shield: interrupts.Shield | None = None) -> list[str]:
    """Delete what this run created, newest first. Returns what could not be deleted."""
    left = []
    if created.endpoint:
        name = created.endpoint
        if delete_endpoint_when_possible(aws, name, reporter, timeout=timeout, poll=poll, shield=shield):
            reporter.info(f"rolled back: deleted endpoint {name}")
        else:
            left.append(f"endpoint {name}")
    if created.endpoint_config:
        if not _gone_or(f"endpoint config {created.endpoint_config}",
                        lambda: aws.sagemaker.delete_endpoint_config(EndpointConfigName=created.endpoint_config),
                        reporter):
            left.append(f"endpoint config {created.endpoint_config}")
    if created.model:
        if not _gone_or(f"model {created.model}", lambda: aws.sagemaker.delete_model(ModelName=created.model),
                        reporter):
            left.append(f"model {created.model}")
    if created.s3_object:
        bucket, key = created.s3_object
        _abort_uploads(aws, bucket, key)
        if not _gone_or(f"s3://{bucket}/{key}", lambda: aws.s3.delete_object(Bucket=bucket, Key=key), reporter):
            left.append(f"s3://{bucket}/{key}")
    return left


def check_create_locally(spec: CreateSpec, region: str, defer_unknown: bool = False):
    """Every create check that needs no network (UsageError). With DEFER_UNKNOWN an instance type
    that may just be newer than the built-in list (not a typo) is returned instead of refused, to
    be confirmed with instance.confirm_with_service once the local checks have passed."""
    if spec.name:
        checks.check_name(spec.name, "endpoint")
    checks.check_count(spec.instance_count)
    checks.check_role(spec.role)
    unknown = checks.check_instance_type(spec.instance_type, skip_list=not spec.instance_check,
                                         defer_unknown=defer_unknown)
    checks.check_image(spec.image, region)
    return unknown


def create(aws: Aws, spec: CreateSpec, reporter: Reporter) -> dict:
    """Model, endpoint config and endpoint, under the interruption rule (interrupts.py).

    Local checks first (no network), then the architecture and name checks (read-only calls),
    then the run: any failure before create_endpoint deletes what this run made; after it, a
    failure still does, while a signal or timeout does what spec.on_interrupt says.
    """
    stamp = timestamp()
    unknown_type = check_create_locally(spec, aws.region, defer_unknown=True)
    role = checks.check_role(spec.role)
    endpoint_name = spec.name or resource_name("tf-graviton", stamp)
    model_name = resource_name(endpoint_name if spec.name else "tf-graviton", stamp)
    with tempfile.TemporaryDirectory(prefix="deploy-") as tmp:
        model = prepare_model_data(spec.model_data, Path(tmp), reporter)
        # read-only calls: nothing is created before they pass
        if unknown_type is not None:
            instance.confirm_with_service(aws, unknown_type, reporter)
        if spec.arch_check:
            check_architecture(aws, spec.image, spec.instance_type, reporter)
        else:
            reporter.info("architecture check skipped (--skip-arch-check)")
        existing = describe_endpoint_or_none(aws, endpoint_name)
        if existing is not None:
            raise DeployError(f"endpoint {endpoint_name} already exists ({existing['EndpointStatus']}): use "
                              f"`deploy update {endpoint_name}` or `deploy delete {endpoint_name}`")
        created = Created()
        try:
            model_url, has_code = _stage_model_data(aws, model, spec.bucket, model_name, reporter, created)
            env = {**default_env(aws.region, has_code), **spec.env}
            created.model = model_name
            aws.sagemaker.create_model(
                ModelName=model_name,
                PrimaryContainer={"Image": spec.image, "ModelDataUrl": model_url, "Environment": env},
                ExecutionRoleArn=role,
                Tags=[TAG],
            )
            reporter.info(f"created model {model_name}")
            created.endpoint_config = model_name
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
            reporter.info(f"created endpoint config {model_name} ({spec.instance_count} x {spec.instance_type})")
            created.endpoint = endpoint_name
            aws.sagemaker.create_endpoint(EndpointName=endpoint_name, EndpointConfigName=model_name, Tags=[TAG])
            reporter.info(f"creating endpoint {endpoint_name}")
            desc = None
            if spec.wait:
                desc = wait_for_endpoint(aws, endpoint_name, reporter, timeout=spec.timeout, poll=spec.poll)
            return {"endpoint": endpoint_name, "endpoint_config": model_name, "model": model_name,
                    "model_data": model_url, "status": desc["EndpointStatus"] if desc else "Creating",
                    "region": aws.region}
        except BaseException as exc:
            with interrupts.shielded(reporter.info) as shield:    # from the first line of the cleanup on
                _stop_create(aws, spec, created, exc, reporter, shield)
            raise AssertionError("unreachable")  # pragma: no cover


def _stop_create(aws: Aws, spec: CreateSpec, created: Created, exc: BaseException, reporter: Reporter,
                 shield: interrupts.Shield):
    """The interruption rule for create; always raises (the Interrupted itself, or a DeployError)."""
    what = interrupts.describe_stop(exc) if interrupts.is_stop(exc) else f"failed: {_describe(exc)}"
    billing = created.endpoint is not None
    if billing and interrupts.is_stop(exc) and spec.on_interrupt == interrupts.KEEP:
        name = created.endpoint
        reporter.info(f"create {what}; keeping what exists (--on-interrupt keep):")
        for label in created.labels():
            reporter.info(f"  {label}")
        reporter.info(f"endpoint {name} goes on being created by SageMaker and is billed once it is InService")
        reporter.info(f"  wait for it:  deploy wait {name}")
        reporter.info(f"  remove it:    deploy delete {name} --purge-s3")
        if isinstance(exc, interrupts.WaitTimedOut):
            raise DeployError(f"{exc}; kept (--on-interrupt keep): `deploy wait {name}` or "
                              f"`deploy delete {name} --purge-s3`") from exc
        raise exc
    reporter.info(f"create {what}; deleting what this run created")
    left = rollback(aws, created, reporter, timeout=rollback_wait(spec.timeout), poll=spec.poll, shield=shield)
    if left:
        reporter.info(f"still there: {', '.join(left)}")
        if created.endpoint and f"endpoint {created.endpoint}" in left:
            reporter.info(f"  remove it:    deploy delete {created.endpoint} --purge-s3")
        if isinstance(exc, (interrupts.Interrupted, KeyboardInterrupt)):
            raise exc
        raise DeployError(f"create {what} and these are still there: {', '.join(left)}; "
                          f"remove them with `deploy delete {created.endpoint or '...'} --purge-s3`") from exc
    reporter.info("rollback complete: nothing from this run is left")
    if isinstance(exc, (interrupts.Interrupted, KeyboardInterrupt, DeployError)):
        raise exc
    raise DeployError(f"create failed: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (DeployError, interrupts.Interrupted)):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted by SIGINT"
    return error_message(exc)


# --- describe / update -------------------------------------------------------------------------

def describe(aws: Aws, name: str, *, strict: bool = False) -> dict:
    """Endpoint, its config and its models in one dict; works on any endpoint.

    A config or model that is gone (deleted outside this tool) is None instead of an error; with
    STRICT a missing config is a DeployError (update needs it). No endpoint: DeployError.
    """
    endpoint = describe_endpoint_or_none(aws, name)
    if endpoint is None:
        raise DeployError(f"no endpoint named {name} in {aws.region}")
    config = None
    config_name = endpoint.get("EndpointConfigName")
    if config_name:
        try:
            config = aws.sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
        except botocore.exceptions.ClientError as exc:
            if not _not_found(exc):
                raise
            if strict:
                raise DeployError(f"endpoint {name} runs on endpoint config {config_name}, which is gone "
                                  f"(deleted outside deploy): `deploy update` cannot copy it; `deploy delete "
                                  f"{name}` still works, and `deploy create` makes a new one") from exc
    models = {}
    for variant in (config or {}).get("ProductionVariants", []):
        try:
            models[variant["ModelName"]] = aws.sagemaker.describe_model(ModelName=variant["ModelName"])
        except botocore.exceptions.ClientError as exc:
            if not _not_found(exc):
                raise
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
    instance_check: bool = True
    on_interrupt: str = interrupts.DEFAULT_ON_INTERRUPT


def check_update_locally(spec: UpdateSpec, region: str):
    """Every update check that needs no network; returns an instance type to confirm with the
    service (see check_create_locally) or None."""
    checks.check_count(spec.instance_count)
    if not any([spec.image, spec.model_data, spec.instance_type, spec.instance_count, spec.env, spec.role]):
        raise UsageError("nothing to update: give --image, --model-data, --instance-type, "
                         "--instance-count, --role or --env")
    checks.check_name(spec.name, "endpoint")
    if spec.role:
        checks.check_role(spec.role)
    unknown = None
    if spec.instance_type:
        unknown = checks.check_instance_type(spec.instance_type, skip_list=not spec.instance_check,
                                             defer_unknown=True)
    if spec.image:
        checks.check_image(spec.image, region)
    return unknown


def update(aws: Aws, spec: UpdateSpec, reporter: Reporter) -> dict:
    """New model + endpoint config, update_endpoint (blue/green), then remove the old ones.

    The interruption rule: before update_endpoint is sent, a stop deletes the new model/config.
    After it, the new ones are deleted only when the endpoint is certainly on the old config
    (settled, not Updating, EndpointConfigName == the old one); otherwise everything is kept and
    the live config is named, or (--on-interrupt rollback) the command waits for SageMaker to
    settle and then reverts to the old config.
    """
    unknown_type = check_update_locally(spec, aws.region)
    with tempfile.TemporaryDirectory(prefix="deploy-") as tmp:
        model = prepare_model_data(spec.model_data, Path(tmp), reporter) if spec.model_data else None
        if unknown_type is not None:
            instance.confirm_with_service(aws, unknown_type, reporter)
        current = describe(aws, spec.name, strict=True)
        endpoint, config = current["endpoint"], current["config"]
        if endpoint["EndpointStatus"] != "InService":
            raise DeployError(f"endpoint {spec.name} is {endpoint['EndpointStatus']}; it must be InService to "
                              f"update (`deploy wait {spec.name}` waits for it)")
        if len(config["ProductionVariants"]) != 1:
            raise DeployError(f"endpoint {spec.name} has {len(config['ProductionVariants'])} variants; "
                              "update handles single-variant endpoints")
        old_variant = config["ProductionVariants"][0]
        old_model = current["models"][old_variant["ModelName"]]
        if old_model is None or "PrimaryContainer" not in old_model:
            raise DeployError(f"model {old_variant['ModelName']} of {spec.name} is gone or has no single "
                              f"container (deleted outside deploy?): `deploy update` needs it to copy from; "
                              f"`deploy delete {spec.name}` still works")
        container = old_model["PrimaryContainer"]
        image = spec.image or container["Image"]
        instance_type = spec.instance_type or old_variant["InstanceType"]
        if spec.arch_check and (spec.image or spec.instance_type):
            check_architecture(aws, image, instance_type, reporter)
        old_config_name = config["EndpointConfigName"]
        stamp = timestamp()
        new_name = resource_name(spec.name, stamp)
        created = Created()
        state = {"sent": False, "scaling": None}
        try:
            env = dict(container.get("Environment") or {})
            model_url = container.get("ModelDataUrl")
            if model is not None:
                model_url, has_code = _stage_model_data(aws, model, spec.bucket, new_name, reporter, created)
                for key in ("SAGEMAKER_PROGRAM", "SAGEMAKER_SUBMIT_DIRECTORY"):
                    if env.get(key) == default_env(aws.region, True)[key]:
                        env.pop(key)
                env = {**default_env(aws.region, has_code), **env}
            env.update(spec.env)
            new_container = {"Image": image, "Environment": env}
            if model_url:
                new_container["ModelDataUrl"] = model_url
            created.model = new_name
            aws.sagemaker.create_model(ModelName=new_name, PrimaryContainer=new_container,
                                       ExecutionRoleArn=spec.role or old_model["ExecutionRoleArn"], Tags=[TAG])
            reporter.info(f"created model {new_name}")
            variant = {k: v for k, v in old_variant.items()
                       if k in ("VariantName", "InitialVariantWeight", "InitialInstanceCount", "InstanceType",
                                "AcceleratorType", "ModelDataDownloadTimeoutInSeconds",
                                "ContainerStartupHealthCheckTimeoutInSeconds", "VolumeSizeInGB")}
            variant.update(ModelName=new_name, InstanceType=instance_type)
            if spec.instance_count:
                variant["InitialInstanceCount"] = spec.instance_count
            created.endpoint_config = new_name
            aws.sagemaker.create_endpoint_config(EndpointConfigName=new_name, ProductionVariants=[variant],
                                                 Tags=[TAG])
            reporter.info(f"created endpoint config {new_name} ({variant['InitialInstanceCount']} x {instance_type})")
            state["scaling"] = _suspend_scaling(aws, spec.name, variant["VariantName"], reporter)
            state["sent"] = True
            aws.sagemaker.update_endpoint(EndpointName=spec.name, EndpointConfigName=new_name)
            reporter.info(f"updating endpoint {spec.name} (blue/green: the old fleet serves until the new one "
                          "is InService)")
            desc = wait_for_endpoint(aws, spec.name, reporter, timeout=spec.timeout, poll=spec.poll)
            if desc["EndpointConfigName"] != new_name:
                reason = desc.get("FailureReason") or "SageMaker rolled back to the previous configuration"
                raise DeployError(f"update of {spec.name} did not take: {reason}")
            _restore_scaling(aws, state["scaling"], reporter)
            state["scaling"] = None
        except BaseException as exc:
            with interrupts.shielded(reporter.info) as shield:    # from the first line of the cleanup on
                _stop_update(aws, spec, created, state, old_config_name, new_name, exc, reporter, shield)
            raise AssertionError("unreachable")  # pragma: no cover

    # the endpoint is InService on the new config: the old ones can go
    old_data = container.get("ModelDataUrl")
    for label, call in ((f"endpoint config {old_config_name}",
                         lambda: aws.sagemaker.delete_endpoint_config(EndpointConfigName=old_config_name)),
                        (f"model {old_variant['ModelName']}",
                         lambda: aws.sagemaker.delete_model(ModelName=old_variant["ModelName"]))):
        _gone_or(label, call, reporter, prefix="deleted old")
    kept_archive = None
    if old_data and old_data != new_container.get("ModelDataUrl"):
        kept_archive = old_data
        reporter.info(f"old model data stays in {old_data} (S3 storage only; `deploy delete {spec.name} "
                      "--purge-s3` removes the archives deploy uploaded for this endpoint)")
    return {"endpoint": spec.name, "endpoint_config": new_name, "model": new_name, "image": image,
            "instance_type": instance_type, "status": desc["EndpointStatus"],
            "previous_endpoint_config": old_config_name, "kept_s3_archive": kept_archive}


def _stop_update(aws: Aws, spec: UpdateSpec, created: Created, state: dict, old_config: str, new_config: str,
                 exc: BaseException, reporter: Reporter, shield: interrupts.Shield):
    """The interruption rule for update; always raises."""
    name = spec.name
    stop = interrupts.is_stop(exc)
    what = interrupts.describe_stop(exc) if stop else f"failed: {_describe(exc)}"
    signalled = isinstance(exc, (interrupts.Interrupted, KeyboardInterrupt))

    def finish(message: str | None = None):
        if signalled:
            raise exc
        raise DeployError(message or f"update {what}") from exc

    def delete_new(reason: str):
        reporter.info(f"{reason}; deleting what this run created")
        try:
            _restore_scaling(aws, state["scaling"], reporter)
        except botocore.exceptions.ClientError as err:
            reporter.info(f"could not restore auto scaling: {error_message(err)}; run `deploy autoscale` again")
        left = rollback(aws, created, reporter, timeout=rollback_wait(spec.timeout), poll=spec.poll)
        if left:
            finish(f"update {what} and these are still there: {', '.join(left)}")
        reporter.info(f"rollback complete: endpoint {name} is on {old_config}, nothing from this run is left")
        finish(str(exc) if isinstance(exc, DeployError) else None)

    if not state["sent"]:
        delete_new(f"update {what} before update_endpoint was sent: the endpoint stays on {old_config}")

    unreadable = False
    try:
        desc = describe_endpoint_or_none(aws, name)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
        reporter.info(f"could not read the state of {name}: {error_message(err)}")
        desc, unreadable = None, True
    if desc is not None and desc["EndpointStatus"] in BUSY and stop and spec.on_interrupt == interrupts.ROLLBACK:
        reporter.info(f"update {what} while {name} is {desc['EndpointStatus']}: SageMaker cannot cancel an "
                      f"update, so waiting for it to settle (--on-interrupt rollback; a second Ctrl-C stops "
                      f"waiting and keeps everything)")
        try:
            desc = wait_for_endpoint(aws, name, reporter, timeout=rollback_wait(spec.timeout), poll=spec.poll,
                                     shield=shield, fail_on_failed=False)
        except (DeployError, botocore.exceptions.ClientError) as err:
            reporter.info(f"stopped waiting: {_describe(err)}")
        if desc is not None and desc["EndpointStatus"] == "InService" and \
                desc["EndpointConfigName"] == new_config and not shield.interrupted:
            reporter.info(f"the update to {new_config} took; reverting {name} to {old_config}")
            try:
                aws.sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=old_config)
                desc = wait_for_endpoint(aws, name, reporter, timeout=rollback_wait(spec.timeout), poll=spec.poll,
                                         shield=shield, fail_on_failed=False)
            except (DeployError, botocore.exceptions.ClientError) as err:
                reporter.info(f"could not revert: {_describe(err)}")
                desc = describe_endpoint_or_none(aws, name)
    status = desc["EndpointStatus"] if desc else ("in an unknown state" if unreadable else "gone")
    live = desc.get("EndpointConfigName") if desc else None
    on_old = desc is not None and status not in TRANSIENT and live == old_config
    if on_old:
        delete_new(f"update {what}; endpoint {name} is {status} on its previous config {old_config}")
    if desc is not None and status == "InService" and live == new_config and not stop:
        # e.g. a read failed after SageMaker finished: the update did take
        reporter.info(f"endpoint {name} is InService on the new config {new_config}")
    reporter.info(f"update {what}; endpoint {name} is {status} on config {live or '?'}"
                  + (f" (moving to {new_config})" if status in BUSY else "")
                  + ": keeping everything, nothing was deleted")
    reporter.info(f"  live config:  {live or '?'}  (the old one is {old_config}, this run's is {new_config})")
    for label in created.labels():
        reporter.info(f"  kept:         {label}")
    reporter.info(f"  look:         deploy status {name}")
    if state["scaling"]:
        t = state["scaling"]["target"]
        reporter.info(f"  auto scaling was suspended for the update: once InService, `deploy autoscale {name} "
                      f"--min {t['MinCapacity']} --max {t['MaxCapacity']} --target-invocations X`")
    reporter.info(f"  remove all:   deploy delete {name} --purge-s3 (also removes the unused configs and "
                  "models this tool made for it)")
    finish(f"update {what}; kept everything, {name} is {status} on {live or '?'}")


# --- autoscale ---------------------------------------------------------------------------------

def autoscale(aws: Aws, name: str, *, min_count: int, max_count: int, target: float,
              scale_in_cooldown: int = 300, scale_out_cooldown: int = 60,
              variant: str | None = None) -> dict:
    """Target tracking on SageMakerVariantInvocationsPerInstance for the endpoint's variant."""
    if not 1 <= min_count <= max_count:
        raise UsageError("need 1 <= --min <= --max")
    if target <= 0:
        raise UsageError("--target-invocations must be positive (invocations per instance per minute)")
    checks.check_name(name, "endpoint")
    current = describe(aws, name, strict=True)
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

def _tagged_ours(aws: Aws, arn: str | None) -> bool:
    if not arn:
        return False
    try:
        tags = aws.sagemaker.list_tags(ResourceArn=arn).get("Tags") or []
    except botocore.exceptions.ClientError:
        return False
    return any(t.get("Key") == TAG["Key"] and t.get("Value") == TAG["Value"] for t in tags)


def _other_endpoints(aws: Aws, name: str, stem: str) -> set[str]:
    """Names of other endpoints that look like NAME-TIMESTAMP: an unnamed `create` gives the endpoint,
    its config, its model and its S3 prefix the same name, so `deploy delete tf-graviton` must not
    take those for leftovers of an endpoint called tf-graviton."""
    names = set()
    for page in aws.sagemaker.get_paginator("list_endpoints").paginate(NameContains=stem.rstrip("-") or name):
        names.update(e["EndpointName"] for e in page["Endpoints"])
    names.discard(name)
    return names


def owned_leftovers(aws: Aws, name: str, skip: set[str] = frozenset()) -> dict[str, list[str]]:
    """Endpoint configs and models this tool made for endpoint NAME (its naming pattern and its
    created-by tag), e.g. the unused ones an interrupted `update --on-interrupt keep` left."""
    pattern = owned_pattern(name)
    contains = resource_name(name, "0" * 8 + "-" + "0" * 6 + "-" + "0" * 3)[:-len("00000000-000000-000")]
    skip = set(skip) | _other_endpoints(aws, name, contains)
    out = {"configs": [], "models": []}
    for kind, op, key, arn_key, field_name in (
            ("configs", "list_endpoint_configs", "EndpointConfigs", "EndpointConfigArn", "EndpointConfigName"),
            ("models", "list_models", "Models", "ModelArn", "ModelName")):
        for needle in sorted({contains.rstrip("-") or name, name}):
            for page in aws.sagemaker.get_paginator(op).paginate(NameContains=needle):
                for item in page[key]:
                    n = item[field_name]
                    if n in skip or n in out[kind] or not pattern.match(n):
                        continue
                    if _tagged_ours(aws, item.get(arn_key)):
                        out[kind].append(n)
    return out


def owned_archives(aws: Aws, name: str, buckets: set[str]) -> list[str]:
    """s3://BUCKET/NAME-TIMESTAMP/model.tar.gz objects deploy uploaded for endpoint NAME."""
    pattern = owned_pattern(name)
    stem = resource_name(name, "0" * 8 + "-" + "0" * 6 + "-" + "0" * 3)[:-len("00000000-000000-000")]
    found = []
    others = _other_endpoints(aws, name, stem)
    for bucket in sorted(buckets):
        try:
            for prefix in sorted({stem, f"{name}/"}):       # listing only what could be ours
                for page in aws.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                    for obj in page.get("Contents") or []:
                        top, _, rest = obj["Key"].partition("/")
                        uri = f"s3://{bucket}/{obj['Key']}"
                        if rest == "model.tar.gz" and pattern.match(top) and top not in others \
                                and uri not in found:
                            found.append(uri)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) not in ("NoSuchBucket", "404", "AccessDenied", "403"):
                raise
    return found


def delete(aws: Aws, name: str, reporter: Reporter, *, wait: bool = True, timeout: float = 1800.0,
           poll: float = 15.0, if_exists: bool = False, purge_s3: bool = False) -> dict:
    """Endpoint, its config and models, auto scaling target, and the unused configs/models this tool
    made for it; lists (or with PURGE_S3 removes) the model archives it uploaded for it.

    Works on any endpoint: one whose config or model is gone, one still Creating/Updating (waits
    until SageMaker lets it go), one that is already gone (DeployError, or a quiet success with
    IF_EXISTS once nothing is left). Returns {"endpoint", "deleted", "s3_archives", "purged"}.
    """
    checks.check_name(name, "endpoint")
    deleted: list[str] = []
    endpoint = describe_endpoint_or_none(aws, name)
    current = {"config": None, "models": {}}
    config_name = None
    if endpoint is not None:
        current = describe(aws, name)
        config_name = endpoint.get("EndpointConfigName")
        if current["config"] is None and config_name:
            reporter.info(f"endpoint config {config_name} of {name} is already gone (deleted outside deploy)")
        variants = [v["VariantName"] for v in (current["config"] or endpoint).get("ProductionVariants") or []]
        _deregister_scaling(aws, name, variants, reporter)
        if endpoint["EndpointStatus"] != "Deleting":
            if not delete_endpoint_when_possible(aws, name, reporter, timeout=timeout, poll=poll):
                raise DeployError(f"endpoint {name} could not be deleted (still "
                                  f"{describe_endpoint_or_none(aws, name)['EndpointStatus']} after "
                                  f"{timeout:.0f} s): run `deploy delete {name}` again later")
        deleted.append(f"endpoint {name}")
        reporter.info(f"deleting endpoint {name}")
        if current["config"] is not None and _gone_or(
                f"endpoint config {config_name}",
                lambda: aws.sagemaker.delete_endpoint_config(EndpointConfigName=config_name), reporter,
                prefix="deleted"):
            deleted.append(f"endpoint config {config_name}")
        for model_name, desc in current["models"].items():
            if desc is None:
                reporter.info(f"model {model_name} is already gone (deleted outside deploy)")
                continue
            if _gone_or(f"model {model_name}", lambda m=model_name: aws.sagemaker.delete_model(ModelName=m),
                        reporter, prefix="deleted"):
                deleted.append(f"model {model_name}")
    leftovers = owned_leftovers(aws, name)
    for config in leftovers["configs"]:
        if _gone_or(f"endpoint config {config}",
                    lambda c=config: aws.sagemaker.delete_endpoint_config(EndpointConfigName=c),
                    reporter, prefix="deleted unused"):
            deleted.append(f"endpoint config {config}")
    for model_name in leftovers["models"]:
        if _gone_or(f"model {model_name}", lambda m=model_name: aws.sagemaker.delete_model(ModelName=m),
                    reporter, prefix="deleted unused"):
            deleted.append(f"model {model_name}")
    buckets = set()
    for desc in current["models"].values():
        data = ((desc or {}).get("PrimaryContainer") or {}).get("ModelDataUrl")
        if data and data.startswith("s3://"):
            buckets.add(split_s3(data)[0])
    try:
        buckets.add(aws.default_bucket())
    except (DeployError, botocore.exceptions.ClientError):
        pass
    archives = owned_archives(aws, name, buckets)
    purged = []
    if archives and purge_s3:
        for uri in archives:
            bucket, key = split_s3(uri)
            if _gone_or(uri, lambda b=bucket, k=key: aws.s3.delete_object(Bucket=b, Key=k), reporter,
                        prefix="deleted"):
                purged.append(uri)
    elif archives:
        reporter.info(f"model archives deploy uploaded for {name} stay in S3 (storage only; "
                      f"--purge-s3 removes them):")
        for uri in archives:
            reporter.info(f"  {uri}")
    if endpoint is None and not deleted and not purged:
        if if_exists:
            reporter.info(f"nothing to delete: no endpoint named {name} in {aws.region}, and nothing "
                          "deploy made for it is left")
            return {"endpoint": name, "deleted": [], "s3_archives": archives, "purged": [],
                    "existed": False}
        raise DeployError(f"no endpoint named {name} in {aws.region} (already deleted? "
                          "--if-exists makes that a success)")
    if endpoint is not None and wait:
        wait_for_endpoint(aws, name, reporter, timeout=timeout, poll=poll, gone_ok=True)
    return {"endpoint": name, "deleted": deleted, "s3_archives": [a for a in archives if a not in purged],
            "purged": purged, "existed": endpoint is not None}


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
    checks.check_name(name, "endpoint")
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

