"""`deploy transform --engine async` on AWS: batch transform's result from an asynchronous inference
endpoint, the SageMaker path to Graviton for offline work (batch transform has no Graviton types).

    deploy transform --engine async --instance-type ml.c7g.4xlarge --max-instances N --image ... \\
        --model-data ... --input s3://.../ --output s3://.../ [--keep]

In order:
  1. the local checks (no network): S3 URIs, role, a hosting instance type, the batch options;
  2. read-only calls: the image in ECR in the region and its architectures against the type, the
     input prefix's objects;
  3. `deploy create --async` (endpoint.create with async_endpoint.AsyncSpec): the model archive
     staged, the model, an endpoint config with AsyncInferenceConfig (answers to
     s3://BUCKET/RUN/outputs/, failures to .../failures/), the endpoint with --max-instances
     instances, then auto scaling from 0 to --max-instances on the backlog
     (async_endpoint.scale_on_backlog: ApproximateBacklogSizePerInstance, and the step policy on
     HasBacklogWithoutCapacity with its CloudWatch alarm for scaling up from zero); create's own
     interruption rule covers this phase;
  4. the transform loop (local/agent.py) with async_io.AsyncS3Sender: requests staged under
     s3://BUCKET/RUN/requests/, invoked asynchronously, up to --max-in-flight out, answers read
     back, transient failures sent again; `<file>.out` written under --output as files complete;
  5. the end, whatever it was: the endpoint, its config, the model, the scaling target, policies
     and alarm, and everything under s3://BUCKET/RUN/ are removed. With --keep, the endpoint stays,
     scaled to zero instances (it bills nothing until invoked), and the command says how to remove it.

SageMaker's async runtime does not call /execution-parameters: BatchStrategy and MaxPayloadInMB are
the flags', else SageMaker's batch defaults (MultiRecord, 6 MB), and the container is given
SAGEMAKER_MAX_PAYLOAD_IN_MB so its limit is the requests'. --max-concurrent is the endpoint's
MaxConcurrentInvocationsPerInstance (left to SageMaker when not given).

Interruption (core/interrupts.py): a signal or --timeout before the endpoint exists undoes what the
run made; after, --on-interrupt rollback (default) stops invoking, cancels what is out and removes
everything as at the end; keep leaves the endpoint scaled to zero and the staged objects, and
names them with the commands that remove them. The clean-up runs shielded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import botocore.exceptions

from ..core import checks, defaults, interrupts
from ..core.aws import Aws, error_message
from ..core.errors import DeployError, UsageError
from ..core.output import Reporter
from ..local import agent, records as rec
from . import async_endpoint, async_io, endpoint, resources, staging, transform, waiting

ROLLBACK, KEEP = interrupts.ROLLBACK, interrupts.KEEP
DEFAULT_INSTANCE_TYPE = transform.ASYNC_DEFAULT_TYPE
DEFAULT_PER_INSTANCE = 4          # requests in flight per instance when --max-concurrent is not given


@dataclass(kw_only=True)
class AsyncTransformSpec(transform.SageMakerTransformSpec):
    instance_type: str = DEFAULT_INSTANCE_TYPE
    max_instances: int = 1
    max_in_flight: int | None = None
    collect_poll: float = 1.0
    keep: bool = False

    @property
    def in_flight(self) -> int:
        return self.max_in_flight or 2 * self.max_instances * (self.max_concurrent or DEFAULT_PER_INSTANCE)


def check_spec(spec: AsyncTransformSpec) -> None:
    """Everything that can be refused without a network call (UsageError, exit 2)."""
    transform.check_s3_prefix(spec.input, "--input")
    transform.check_s3_prefix(spec.output, "--output")
    checks.check_role(spec.role)
    if spec.max_instances < 1:
        raise UsageError("--max-instances must be at least 1")
    if spec.max_payload_mb == 0:
        raise UsageError("--max-payload-mb 0 (no limit) has no meaning for --engine async: give 1..100")
    if spec.strategy == "MultiRecord" and spec.split_type == "None":
        raise UsageError("--strategy MultiRecord needs --split-type Line or RecordIO (a whole file is one record)")
    if spec.join_source and spec.split_type == "RecordIO":
        raise UsageError("--join-source Input joins CSV or JSON records; RecordIO records are binary")
    checks.check_instance_type(spec.instance_type)
    if spec.name:
        checks.check_name(spec.name, "endpoint")


def _remove_staged(aws: Aws, bucket: str, prefix: str, reporter: Reporter) -> bool:
    """Everything under s3://BUCKET/PREFIX/ (requests, answers, failures not yet collected)."""
    try:
        keys = [o["Key"] for page in aws.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
                for o in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):
            aws.s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]],
                                                         "Quiet": True})
        reporter.info(f"deleted {len(keys)} staged object(s) under s3://{bucket}/{prefix}/")
        return True
    except botocore.exceptions.ClientError as exc:
        reporter.info(f"could not delete s3://{bucket}/{prefix}/: {error_message(exc)}; "
                      f"remove it with `aws s3 rm --recursive s3://{bucket}/{prefix}/`")
        return False


def _scale_to_zero(aws: Aws, name: str, variant: str, reporter: Reporter) -> None:
    try:
        aws.sagemaker.update_endpoint_weights_and_capacities(
            EndpointName=name, DesiredWeightsAndCapacities=[{"VariantName": variant, "DesiredInstanceCount": 0}])
        reporter.info(f"endpoint {name} scaled to zero instances (it bills nothing until invoked)")
    except botocore.exceptions.ClientError as exc:
        reporter.info(f"could not scale {name} to zero now ({error_message(exc)}); auto scaling takes it "
                      f"there once its backlog is empty")


def run(aws: Aws, spec: AsyncTransformSpec, reporter: Reporter, *, quiet: bool = False) -> dict:
    check_spec(spec)
    parameters, sources = rec.effective_parameters(spec.given, None, spec.split_type)
    source, sink = async_io.S3Source(aws, spec.input), async_io.S3Sink(aws, spec.output)
    files = source.files()          # read-only: an empty or unreadable input is refused before anything is made
    reporter.info(f"input {spec.input}: {len(files)} object(s), {sum(f.size for f in files):,} bytes")
    reporter.info("async: " + ", ".join(f"{k} {parameters[k]} ({sources[k]})" for k in rec.PARAMETERS
                                        if k != "MaxConcurrentTransforms")
                  + f", SplitType {spec.split_type}, MaxConcurrentInvocationsPerInstance "
                  + (f"{spec.max_concurrent} (flag)" if spec.max_concurrent else "SageMaker's choice")
                  + f", up to {spec.in_flight} in flight")
    stamp = resources.timestamp()
    name = spec.name or resources.resource_name("tf-graviton-transform", stamp)
    bucket = spec.bucket or aws.default_bucket()
    prefix = f"{name}/async"                           # the run prefix: requests, outputs, failures
    env = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": str(parameters["MaxPayloadInMB"]),
           **rec.batch_env({**spec.given, "MaxPayloadInMB": None}), **spec.env}
    create = endpoint.CreateSpec(
        image=spec.image, model_data=spec.model_data, role=spec.role, name=name, instance_type=spec.instance_type,
        instance_count=spec.max_instances, env=env, bucket=spec.bucket, timeout=spec.timeout, poll=spec.poll,
        arch_check=spec.arch_check, on_interrupt=spec.on_interrupt,
        async_inference=async_endpoint.AsyncSpec(
            output=f"s3://{bucket}/{prefix}/outputs", failure_output=f"s3://{bucket}/{prefix}/failures",
            max_concurrent_invocations=spec.max_concurrent, min_instances=0))
    start = time.monotonic()
    made = endpoint.create(aws, create, reporter)     # create's interruption rule covers this phase
    state = {"staged": False, "sender": None}
    try:
        staging.ensure_bucket(aws, bucket, reporter)
        state["staged"] = True
        sender = state["sender"] = async_io.AsyncS3Sender(
            aws, name, bucket, prefix, spec.content_type, spec.accept or spec.content_type,
            poll=spec.collect_poll, instance_poll=max(spec.poll, spec.collect_poll))
        try:
            result = agent.run(source, sink, sender, spec.options,
                               parameters, in_flight=spec.in_flight, quiet=quiet,
                               timeout=max(0.0, spec.timeout - (time.monotonic() - start)))
        except interrupts.WaitTimedOut:      # --timeout counts from the start of the run, not of the loop
            raise interrupts.WaitTimedOut(f"the transform was not done after {spec.timeout:.0f} s (--timeout)") \
                from None
        result.sources = sources
        result.instance_seconds = sender.close()
    except BaseException as exc:
        sender = state["sender"]
        if sender is not None:
            sender.cancel()
            sender.close()
        with interrupts.shielded(reporter.info) as shield:
            _stop(aws, spec, exc, name, state, bucket, prefix, reporter, shield)
        raise AssertionError("unreachable")  # pragma: no cover
    kept = _finish(aws, spec, name, bucket, prefix, reporter)
    return {"engine": "async", "endpoint": name, "kept": kept, "result": result, "bucket": bucket,
            "run_prefix": f"s3://{bucket}/{prefix}/", "output": spec.output, "instance_type": spec.instance_type,
            "max_instances": spec.max_instances, "model_data": made.get("model_data")}


def _finish(aws, spec, name, bucket, prefix, reporter) -> bool:
    """The end of a run that finished: remove everything, or keep the endpoint scaled to zero."""
    _remove_staged(aws, bucket, prefix, reporter)
    if spec.keep:
        _scale_to_zero(aws, name, defaults.VARIANT, reporter)
        reporter.info(f"kept endpoint {name} (--keep), scaled to zero; remove it with `deploy delete {name}`")
        return True
    endpoint.delete(aws, name, reporter, wait=False, timeout=waiting.rollback_wait(spec.timeout), poll=spec.poll)
    return False


def _stop(aws, spec, exc, name, state, bucket, prefix, reporter, shield) -> None:
    """The interruption rule once the endpoint is up and requests go out; always raises."""
    what = interrupts.describe_stop(exc) if interrupts.is_stop(exc) else \
        f"failed: {exc if isinstance(exc, DeployError) else error_message(exc)}"
    if interrupts.is_stop(exc) and spec.on_interrupt == KEEP:
        reporter.info(f"transform {what}; keeping what exists (--on-interrupt keep):")
        _scale_to_zero(aws, name, defaults.VARIANT, reporter)
        reporter.info(f"  endpoint {name}, its config, model and auto scaling")
        if state["staged"]:
            reporter.info(f"  staged requests and answers under s3://{bucket}/{prefix}/")
        reporter.info(f"  remove them:  deploy delete {name}"
                      + (f"; aws s3 rm --recursive s3://{bucket}/{prefix}/" if state["staged"] else ""))
        if isinstance(exc, interrupts.WaitTimedOut):
            raise DeployError(f"{exc}; kept (--on-interrupt keep): `deploy delete {name}`") from exc
        raise exc
    reporter.info(f"transform {what}; deleting what this run created")
    left = []
    if state["staged"] and not _remove_staged(aws, bucket, prefix, reporter):
        left.append(f"s3://{bucket}/{prefix}/")
    try:
        if not shield.interrupted:
            endpoint.delete(aws, name, reporter, wait=False, timeout=waiting.rollback_wait(spec.timeout),
                            poll=spec.poll)
        else:
            left.append(f"endpoint {name}")
    except (DeployError, botocore.exceptions.ClientError) as err:
        reporter.info(f"could not delete endpoint {name}: {err if isinstance(err, DeployError) else error_message(err)}")
        left.append(f"endpoint {name}")
    if left:
        reporter.info(f"still there: {', '.join(left)}")
        reporter.info(f"  remove it:    deploy delete {name}"
                      + (f"; aws s3 rm --recursive s3://{bucket}/{prefix}/" if state["staged"] else ""))
    else:
        reporter.info("rollback complete: nothing from this run is left")
    if isinstance(exc, (interrupts.Interrupted, KeyboardInterrupt, DeployError)):
        raise exc
    raise DeployError(f"transform failed: {error_message(exc)}") from exc
