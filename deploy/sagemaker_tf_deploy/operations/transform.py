"""`deploy transform`: a SageMaker batch transform job from one command, or the same run locally.

    deploy transform --image IMAGE --model-data S3_URI|TAR_GZ|DIR --input s3://.../ --output s3://.../
    deploy transform --local --image IMAGE --model-data DIR|TAR_GZ --input DIR --output DIR

On SageMaker: the image's architectures are checked against the instance type before any call
that creates something; the model archive is staged as for `deploy create`; a model and a
transform job are created (MaxPayloadInMB, MaxConcurrentTransforms and BatchStrategy are left
to the container's /execution-parameters unless given); the job is followed with a live status
line; the output location is printed, or on failure SageMaker's FailureReason and where the logs
are; the model this run created is deleted when the job ends, whatever the ending.

A signal or --timeout while the job runs follows --on-interrupt: `rollback` (default) stops the
job and deletes the model, `keep` leaves the job running (and its model, which it needs) and
prints how to follow and clean up.

Locally (--local): local/transform.py does what SageMaker's batch agent does, with the image on
this machine; with --engine async, through the async endpoint's runtime played here
(local/async_runtime.py). Both run the transform loop of local/agent.py, and the summary can add a
cost line (transform_cost.py).
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import botocore.exceptions

from ..core import archive, checks, defaults, instance, interrupts, registry
from ..local import agent
from . import endpoint, resources, staging
from ..core.aws import Aws, error_message
from .cleanup import Created
from ..core.output import Reporter
from ..core.errors import DeployError

from ..core.errors import UsageError   # exit 2: refused before any network call
from ..core.interrupts import KEEP, ROLLBACK

ENGINES = ("batch", "async")
BATCH_X86_DEFAULT = instance.DEFAULT_TRANSFORM_TYPE    # the cost line's comparison
ASYNC_DEFAULT_TYPE = "ml.c7g.4xlarge"     # --engine async: a Graviton hosting type
TERMINAL = {"Completed", "Failed", "Stopped"}
CONTENT_TYPES = ("text/csv", "application/jsonlines", "application/json", "application/x-npy")


@dataclass(kw_only=True)
class SageMakerTransformSpec(agent.RecordSettings):
    """What a transform on SageMaker takes, by either engine (this module's batch job, or
    transform_async.py's async endpoint)."""
    image: str
    model_data: str
    input: str
    output: str
    role: str | None = None
    name: str | None = None
    instance_type: str = instance.DEFAULT_TRANSFORM_TYPE
    bucket: str | None = None
    arch_check: bool = True
    timeout: float = 86400.0
    poll: float = 30.0
    on_interrupt: str = ROLLBACK


@dataclass(kw_only=True)
class TransformSpec(SageMakerTransformSpec):
    instance_count: int = 1


def check_s3_prefix(uri: str, flag: str) -> str:
    if not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", uri or ""):
        raise UsageError(f"{flag} {uri!r} is not an s3://BUCKET/PREFIX URI (use --local for folders)")
    return uri


def check_spec(spec: TransformSpec) -> None:
    """Everything that can be refused without a network call."""
    check_s3_prefix(spec.input, "--input")
    check_s3_prefix(spec.output, "--output")
    if not spec.role:
        raise UsageError("--role is required: the ARN of the SageMaker execution role "
                         "(or set SAGEMAKER_ROLE_ARN)")
    if spec.instance_count < 1:
        raise UsageError("--instance-count must be at least 1")
    if spec.max_payload_mb is not None and not 0 <= spec.max_payload_mb <= 100:
        raise UsageError("--max-payload-mb must be between 0 and 100 (SageMaker's limit)")
    if spec.max_concurrent is not None and spec.max_concurrent < 1:
        raise UsageError("--max-concurrent must be at least 1")
    if spec.strategy == "MultiRecord" and spec.split_type == "None":
        raise UsageError("--strategy MultiRecord needs --split-type Line or RecordIO (a whole file is one record)")
    instance.check_transform_type(spec.instance_type)
    if spec.name:
        checks.check_name(spec.name)


def log_location(region: str, job: str) -> str:
    group = "/aws/sagemaker/TransformJobs"
    url = (f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logsV2:log-groups/"
           f"log-group/{quote(quote(group, safe=''), safe='').replace('%', '$')}$3FlogStreamNameFilter$3D{job}")
    return f"CloudWatch log group {group}, streams {job}/... ({url})"


def job_request(spec: TransformSpec, job: str, model: str) -> dict:
    request = {
        "TransformJobName": job,
        "ModelName": model,
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": spec.input}},
            "ContentType": spec.content_type,
            "SplitType": spec.split_type,
            "CompressionType": "None",
        },
        "TransformOutput": {"S3OutputPath": spec.output,
                            "AssembleWith": "Line" if spec.split_type == "Line" else "None"},
        "TransformResources": {"InstanceType": spec.instance_type, "InstanceCount": spec.instance_count},
        "Tags": [resources.TAG],
    }
    # one output line per record needs an answer in lines: ask for the input's own type unless told
    request["TransformOutput"]["Accept"] = spec.accept or spec.content_type
    if spec.strategy:
        request["BatchStrategy"] = spec.strategy
    if spec.max_payload_mb is not None:
        request["MaxPayloadInMB"] = spec.max_payload_mb
    if spec.max_concurrent is not None:
        request["MaxConcurrentTransforms"] = spec.max_concurrent
    if spec.join_source:
        request["DataProcessing"] = {"JoinSource": spec.join_source}
    return request


def wait_for_job(aws: Aws, job: str, reporter: Reporter, *, timeout: float, poll: float) -> dict:
    start = time.monotonic()
    try:
        while True:
            desc = aws.sagemaker.describe_transform_job(TransformJobName=job)
            status = desc["TransformJobStatus"]
            elapsed = time.monotonic() - start
            reporter.progress(job, status, elapsed)
            if status in TERMINAL:
                return desc
            if elapsed > timeout:
                raise _TimedOut(f"transform job {job} still {status} after {elapsed:.0f} s "
                                f"(--timeout {timeout:.0f})")
            time.sleep(poll)
    finally:
        reporter.progress_done()


class _TimedOut(DeployError):
    pass


def _is_stop(exc: BaseException) -> bool:
    """A signal (interrupts.Interrupted, or KeyboardInterrupt) or --timeout: --on-interrupt applies."""
    return isinstance(exc, (KeyboardInterrupt, _TimedOut, interrupts.Interrupted))


def _after_stop(aws: Aws, spec: TransformSpec, exc: BaseException, job: str | None, model: str,
                reporter: Reporter) -> bool:
    """What a failure or stop while the job exists means for it; True when the model must stay."""
    if job is None:
        return False
    follow = (f"follow it with `aws sagemaker describe-transform-job --transform-job-name {job}`, "
              f"stop it with `aws sagemaker stop-transform-job --transform-job-name {job}`, "
              f"then `aws sagemaker delete-model --model-name {model}`")
    if not _is_stop(exc):          # lost track of it (the network, say): it may well be running
        reporter.info(f"transform job {job} may still be running; {follow}")
        return True
    what = str(exc) if isinstance(exc, _TimedOut) else f"interrupted ({exc or 'SIGINT'})"
    if spec.on_interrupt == KEEP:
        reporter.info(f"{what}: transform job {job} keeps running (--on-interrupt keep); {follow}")
        return True
    reporter.info(f"{what}: stopping transform job {job}")
    try:
        aws.sagemaker.stop_transform_job(TransformJobName=job)
    except botocore.exceptions.ClientError as err:
        reporter.info(f"could not stop {job}: {error_message(err)}")
    return False


def _say_data_stays(s3_object: tuple[str, str], reporter: Reporter) -> None:
    bucket, key = s3_object
    reporter.info(f"model data stays in s3://{bucket}/{key} (remove it with `aws s3 rm s3://{bucket}/{key}`)")


def _delete_model(aws: Aws, model: str, reporter: Reporter) -> bool:
    try:
        aws.sagemaker.delete_model(ModelName=model)
        reporter.info(f"deleted model {model}")
        return True
    except botocore.exceptions.ClientError as exc:
        reporter.info(f"could not delete model {model}: {error_message(exc)}; "
                      f"delete it with `aws sagemaker delete-model --model-name {model}`")
        return False


def _local_archive(model_data: str, workdir: Path, reporter: Reporter) -> tuple[Path, bool] | None:
    """A local folder or archive checked (and packaged) here; None for an s3:// URI."""
    if model_data.startswith("s3://"):
        return None
    path = Path(model_data)
    if not path.exists():
        raise UsageError(f"model data {model_data} does not exist")
    if path.is_dir():
        tarball = workdir / "model.tar.gz"
        archive.package(path, tarball)
        reporter.info(f"packaged {path} -> model.tar.gz")
    else:
        tarball = path
        archive.safe_extract(tarball, workdir / "check")    # unpacks safely and holds a model
        archive.find_model(workdir / "check")
    return tarball, archive.has_user_code(tarball)


def _stage(aws: Aws, model_data: str, local: tuple[Path, bool] | None, bucket: str | None, prefix: str,
           reporter: Reporter, created: Created) -> tuple[str, bool]:
    """(s3 uri, has user code): the s3:// archive as it is, or the local one uploaded (as create does)."""
    model = staging.LocalModel(uri=model_data) if local is None else \
        staging.LocalModel(tarball=local[0], has_code=local[1])
    return staging.stage_model_data(aws, model, bucket, prefix, reporter, created)


def check_input(aws: Aws, uri: str) -> int:
    """The input prefix must hold at least one object (SageMaker would start instances and then
    fail with "No S3 objects found"). Returns how many (of the first 1000) it holds."""
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    try:
        listed = aws.s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1000)
    except botocore.exceptions.ClientError as exc:
        raise DeployError(f"cannot list --input {uri}: {error_message(exc)}") from exc
    count = sum(1 for o in listed.get("Contents", []) if not o["Key"].endswith("/"))
    if not count:
        raise DeployError(f"--input {uri} holds no objects: nothing to transform")
    return count


def run_remote(aws: Aws, spec: TransformSpec, reporter: Reporter) -> dict:
    check_spec(spec)
    try:    # SageMaker pulls only from ECR in the job's region (no network to tell)
        registry.check_ecr_location(spec.image, aws.region)
    except UsageError as exc:
        raise UsageError(str(exc).replace("a SageMaker endpoint pulls", "a SageMaker transform job pulls")
                         .replace("the endpoint's", "the job's").replace("the endpoint is", "the job is")) from None
    with tempfile.TemporaryDirectory(prefix="deploy-transform-") as tmp:
        local = _local_archive(spec.model_data, Path(tmp), reporter)
        # then the architecture: nothing is created (or uploaded) before it passes
        if spec.arch_check:
            endpoint.check_architecture(aws, spec.image, spec.instance_type, reporter)
        else:
            reporter.info("architecture check skipped (--skip-arch-check)")
        count = check_input(aws, spec.input)
        reporter.info(f"input {spec.input}: {count if count < 1000 else 'at least 1000'} object(s)")
        return _run_job(aws, spec, local, reporter)


def _run_job(aws: Aws, spec: TransformSpec, local: tuple[Path, bool] | None, reporter: Reporter) -> dict:
    stamp = resources.timestamp()
    job = spec.name or resources.resource_name("tf-graviton-transform", stamp)
    model = resources.resource_name(job if spec.name else "tf-graviton-transform", stamp)
    created = Created()
    job_created = False
    try:
        model_url, has_code = _stage(aws, spec.model_data, local, spec.bucket, model, reporter, created)
        env = {**defaults.default_env(aws.region, has_code), **spec.env}
        aws.sagemaker.create_model(
            ModelName=model,
            PrimaryContainer={"Image": spec.image, "ModelDataUrl": model_url, "Environment": env},
            ExecutionRoleArn=spec.role, Tags=[resources.TAG])
        created.model = model
        reporter.info(f"created model {model}")
        aws.sagemaker.create_transform_job(**job_request(spec, job, model))
        left_to_container = [k for k, v in (("BatchStrategy", spec.strategy),
                                            ("MaxPayloadInMB", spec.max_payload_mb),
                                            ("MaxConcurrentTransforms", spec.max_concurrent)) if v is None]
        reporter.info(f"created transform job {job} ({spec.instance_count} x {spec.instance_type}, "
                      f"{spec.input} -> {spec.output})"
                      + (f"; {', '.join(left_to_container)} from the container's /execution-parameters"
                         if left_to_container else ""))
        job_created = True
        desc = wait_for_job(aws, job, reporter, timeout=spec.timeout, poll=spec.poll)
    except BaseException as exc:
        # the clean-up runs to its end: further signals are reported, not obeyed
        with interrupts.shielded(reporter.info):
            keep_model = _after_stop(aws, spec, exc, job if job_created else None, model, reporter)
            if created.model and not keep_model:
                _delete_model(aws, created.model, reporter)
            if created.model is None and created.s3_object:   # nothing uses the upload
                bucket, key = created.s3_object
                try:
                    aws.s3.delete_object(Bucket=bucket, Key=key)
                    reporter.info(f"deleted s3://{bucket}/{key}")
                except botocore.exceptions.ClientError as err:
                    reporter.info(f"could not delete s3://{bucket}/{key}: {error_message(err)}")
                    _say_data_stays(created.s3_object, reporter)
            elif created.s3_object:     # as after a job: the archive stays for a rerun, and is named
                _say_data_stays(created.s3_object, reporter)
        if isinstance(exc, (DeployError, KeyboardInterrupt)) or _is_stop(exc):
            raise
        if isinstance(exc, botocore.exceptions.ClientError):
            raise DeployError(f"transform failed: {error_message(exc)}") from exc
        raise
    deleted = _delete_model(aws, model, reporter)
    if created.s3_object:
        _say_data_stays(created.s3_object, reporter)
    status = desc["TransformJobStatus"]
    result = {"job": job, "status": status, "model": model, "model_deleted": deleted,
              "output": desc.get("TransformOutput", {}).get("S3OutputPath", spec.output),
              "instance_type": spec.instance_type, "instance_count": spec.instance_count,
              "logs": log_location(aws.region, job)}
    for key in ("TransformStartTime", "TransformEndTime"):
        if desc.get(key):
            result[key] = desc[key]
    if status != "Completed":
        reason = desc.get("FailureReason") or "no reason given"
        raise DeployError(f"transform job {job} {status}: {reason}\n"
                          f"  logs: {result['logs']}")
    return result


# --- the command -----------------------------------------------------------------------------------
