"""SageMaker endpoints from end to end: create (with rollback), update (blue/green), delete and list.

This is the orchestration: the order of the steps and the interruption rule (interrupts.py) for
create and update; the steps themselves live in resources.py (names, tags, environment, describe),
staging.py (model data to S3), waiting.py (statuses), cleanup.py (what a run made, undone),
scaling.py (auto scaling kept across an update). Nothing in here prints: progress and messages go
through the `Reporter` the caller hands in.

Reason to change: what create, update or delete do, step by step, and what they leave.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import botocore.exceptions

from ..core import checks, defaults, instance, interrupts, registry
from . import async_endpoint, cleanup, resources, scaling, staging, waiting
from ..core.aws import Aws, error_message
from ..core.errors import DeployError, UsageError
from ..core.output import Reporter


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
    variant: str = defaults.VARIANT
    wait: bool = True
    timeout: float = 1800.0
    poll: float = 15.0
    arch_check: bool = True
    instance_check: bool = True
    on_interrupt: str = interrupts.DEFAULT_ON_INTERRUPT
    async_inference: async_endpoint.AsyncSpec | None = None     # --async: an asynchronous endpoint
    fallback_instance_types: str | None = None     # --fallback-instance-types T1,T2: InstancePools

    @property
    def fallbacks(self) -> list[str]:
        return checks.check_fallbacks(self.instance_type, self.fallback_instance_types,
                                      skip_list=not self.instance_check)

    @classmethod
    def from_args(cls, args) -> "CreateSpec":
        """From `deploy create`'s parsed arguments (also with --multi-model)."""
        return cls(image=args.image, model_data=args.model_data, role=args.role, name=args.name,
                   instance_type=args.instance_type, instance_count=args.instance_count,
                   env=checks.parse_env(args.env), bucket=args.bucket, wait=not args.no_wait,
                   timeout=args.timeout, poll=args.poll, arch_check=not args.skip_arch_check,
                   instance_check=not args.skip_instance_check, on_interrupt=args.on_interrupt,
                   async_inference=_async_from_args(args),
                   fallback_instance_types=getattr(args, "fallback_instance_types", None))


def _async_from_args(args) -> async_endpoint.AsyncSpec | None:
    flags = {"--async-output": getattr(args, "async_output", None),
             "--async-failure-output": getattr(args, "async_failure_output", None),
             "--max-concurrent-invocations": getattr(args, "max_concurrent_invocations", None),
             "--min-instances": getattr(args, "min_instances", None)}
    if not getattr(args, "async_inference", False):
        given = [flag for flag, value in flags.items() if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} only with --async (an asynchronous endpoint)")
        return None
    if flags["--async-output"] is None:
        raise UsageError("--async needs --async-output s3://BUCKET/PREFIX: where SageMaker writes the answers")
    return async_endpoint.AsyncSpec(output=args.async_output, failure_output=args.async_failure_output,
                                    max_concurrent_invocations=args.max_concurrent_invocations,
                                    min_instances=args.min_instances)


def check_architecture(aws: Aws, image: str, instance_type: str | list[str], reporter: Reporter) -> None:
    """The image's architectures against the instance type, or against every pool's type."""
    types = [instance_type] if isinstance(instance_type, str) else list(instance_type)
    for t in types:
        instance.instance_arch(t)   # refuse a malformed type before reading the registry
    archs = registry.image_architectures(image, aws)
    found = [f"{t} is {instance.check_compatible(image, archs, t)}" for t in types]
    reporter.info(f"image {image}: {', '.join(sorted(archs))}; {', '.join(found)}: ok")


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
    spec.fallbacks     # noqa: B018 -- checked here, before any call
    checks.check_image(spec.image, region)
    if spec.async_inference is not None:
        async_endpoint.check_spec(spec.async_inference, spec.instance_count, spec.wait)
    return unknown


class SingleModel:
    """What create puts behind the endpoint: one model archive (a local one is checked, packaged
    if a folder, and uploaded) in the model's PrimaryContainer. multimodel.MultiModel is the other
    kind; create() runs the same steps for both and asks the model for its three parts."""

    exists_hint = "use `deploy update {name}` or `deploy delete {name}`"

    def check_locally(self, spec: CreateSpec, workdir: Path, reporter: Reporter) -> None:
        """The checks that need no network."""
        self.local = staging.prepare_model_data(spec.model_data, workdir, reporter)

    def check_remotely(self, aws: Aws, spec: CreateSpec, reporter: Reporter) -> None:
        """Read-only calls, after the endpoint name was found free."""

    def container(self, aws: Aws, spec: CreateSpec, model_name: str, reporter: Reporter,
                  created: cleanup.Created) -> tuple[dict, str, dict]:
        """(PrimaryContainer, what "created model NAME" adds, what the result adds); may upload."""
        url, has_code = staging.stage_model_data(aws, self.local, spec.bucket, model_name, reporter, created)
        env = {**defaults.default_env(aws.region, has_code), **spec.env}
        return {"Image": spec.image, "ModelDataUrl": url, "Environment": env}, "", {"model_data": url}


def create(aws: Aws, spec: CreateSpec, reporter: Reporter, model: SingleModel | None = None) -> dict:
    """Model, endpoint config and endpoint, under the interruption rule (interrupts.py).

    Local checks first (no network), then the architecture and name checks (read-only calls),
    then the run: any failure before create_endpoint deletes what this run made; after it, a
    failure still does, while a signal or timeout does what spec.on_interrupt says. MODEL is
    what goes behind the endpoint (SingleModel unless given).
    """
    model = model or SingleModel()
    stamp = resources.timestamp()
    unknown_type = check_create_locally(spec, aws.region, defer_unknown=True)
    role = checks.check_role(spec.role)
    endpoint_name = spec.name or resources.resource_name("tf-graviton", stamp)
    model_name = resources.resource_name(endpoint_name if spec.name else "tf-graviton", stamp)
    with tempfile.TemporaryDirectory(prefix="deploy-") as tmp:
        model.check_locally(spec, Path(tmp), reporter)
        # read-only calls: nothing is created before they pass
        if unknown_type is not None:
            instance.confirm_with_service(aws, unknown_type, reporter)
        if spec.arch_check:
            check_architecture(aws, spec.image, [spec.instance_type, *spec.fallbacks], reporter)
        else:
            reporter.info("architecture check skipped (--skip-arch-check)")
        existing = waiting.describe_endpoint_or_none(aws, endpoint_name)
        if existing is not None:
            raise DeployError(f"endpoint {endpoint_name} already exists ({existing['EndpointStatus']}): "
                              + model.exists_hint.format(name=endpoint_name))
        model.check_remotely(aws, spec, reporter)
        created = cleanup.Created()
        try:
            container, label, result = model.container(aws, spec, model_name, reporter, created)
            created.model = model_name
            aws.sagemaker.create_model(ModelName=model_name, PrimaryContainer=container, ExecutionRoleArn=role,
                                       Tags=[resources.TAG])
            reporter.info(f"created model {model_name}{label}")
            created.endpoint_config = model_name
            variant = resources.with_pools({
                "VariantName": spec.variant,
                "ModelName": model_name,
                "InitialInstanceCount": spec.instance_count,
                "InitialVariantWeight": 1.0,
            }, spec.instance_type, spec.fallbacks)
            config = {"EndpointConfigName": model_name, "Tags": [resources.TAG], "ProductionVariants": [variant]}
            if spec.async_inference is not None:
                config["AsyncInferenceConfig"] = async_endpoint.inference_config(spec.async_inference)
            aws.sagemaker.create_endpoint_config(**config)
            reporter.info(f"created endpoint config {model_name} ({spec.instance_count} x "
                          f"{resources.describe_types(variant)}"
                          + (f", asynchronous: answers to {spec.async_inference.output})"
                             if spec.async_inference is not None else ")"))
            created.endpoint = endpoint_name
            aws.sagemaker.create_endpoint(EndpointName=endpoint_name, EndpointConfigName=model_name, Tags=[resources.TAG])
            reporter.info(f"creating endpoint {endpoint_name}")
            desc = None
            if spec.wait:
                desc = waiting.wait_for_endpoint(aws, endpoint_name, reporter, timeout=spec.timeout, poll=spec.poll)
            if spec.async_inference is not None:
                result["async_output"] = spec.async_inference.output
                if spec.async_inference.min_instances is not None:
                    created.scaling = (endpoint_name, spec.variant)
                    result["scaling"] = async_endpoint.scale_on_backlog(
                        aws, endpoint_name, spec.variant, spec.async_inference.min_instances,
                        spec.instance_count, reporter)
            return {"endpoint": endpoint_name, "endpoint_config": model_name, "model": model_name, **result,
                    "status": desc["EndpointStatus"] if desc else "Creating", "region": aws.region}
        except BaseException as exc:
            with interrupts.shielded(reporter.info) as shield:    # from the first line of the cleanup on
                _stop_create(aws, spec, created, exc, reporter, shield)
            raise AssertionError("unreachable")  # pragma: no cover


def _stop_create(aws: Aws, spec: CreateSpec, created: cleanup.Created, exc: BaseException, reporter: Reporter,
                 shield: interrupts.Shield):
    """The interruption rule for create; always raises (the Interrupted itself, or a DeployError)."""
    what = interrupts.describe_stop(exc) if interrupts.is_stop(exc) else f"failed: {_describe(exc)}"
    billing = created.endpoint is not None
    if billing and interrupts.is_stop(exc) and spec.on_interrupt == interrupts.KEEP:
        name = created.endpoint
        reporter.info(f"create {what}; keeping what exists (--on-interrupt keep):")
        async_scaling = spec.async_inference.min_instances if spec.async_inference is not None else None
        if created.scaling and async_scaling is not None:
            _finish_async_scaling(aws, spec, name, async_scaling, reporter)
        for label in created.labels():
            reporter.info(f"  {label}")
        if async_scaling is not None and not created.scaling:
            reporter.info(f"  (its auto scaling, {async_scaling}..{spec.instance_count} instances on the backlog, "
                          f"was not set up: it runs {spec.instance_count} instance(s) until deleted)")
        reporter.info(f"endpoint {name} goes on being created by SageMaker and is billed once it is InService")
        reporter.info(f"  wait for it:  deploy wait {name}")
        reporter.info(f"  remove it:    deploy delete {name} --purge-s3")
        if isinstance(exc, interrupts.WaitTimedOut):
            raise DeployError(f"{exc}; kept (--on-interrupt keep): `deploy wait {name}` or "
                              f"`deploy delete {name} --purge-s3`") from exc
        raise exc
    reporter.info(f"create {what}; deleting what this run created")
    left = cleanup.rollback(aws, created, reporter, timeout=waiting.rollback_wait(spec.timeout), poll=spec.poll, shield=shield)
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


def _finish_async_scaling(aws: Aws, spec: CreateSpec, name: str, min_instances: int, reporter: Reporter) -> None:
    """A keep while create --async was setting up its scaling: the set-up's calls are idempotent and
    quick, so finish them (shielded) rather than leave a target without its policies or alarm; if
    that fails, remove what there is of it, so nothing is left half-made either way."""
    try:
        async_endpoint.scale_on_backlog(aws, name, spec.variant, min_instances, spec.instance_count, reporter)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, DeployError) as exc:
        reporter.info(f"could not finish the auto scaling of {name} ({error_message(exc)}): removing what there is of it")
        scaling.deregister(aws, name, [spec.variant], reporter)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (DeployError, interrupts.Interrupted)):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted by SIGINT"
    return error_message(exc)


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
    fallback_instance_types: str | None = None     # "" drops the pools; None keeps what the variant has


def check_update_locally(spec: UpdateSpec, region: str):
    """Every update check that needs no network; returns an instance type to confirm with the
    service (see check_create_locally) or None."""
    checks.check_count(spec.instance_count)
    if not any([spec.image, spec.model_data, spec.instance_type, spec.instance_count, spec.env, spec.role,
                spec.fallback_instance_types is not None]):
        raise UsageError("nothing to update: give --image, --model-data, --instance-type, "
                         "--fallback-instance-types, --instance-count, --role or --env")
    if spec.fallback_instance_types:
        checks.check_fallbacks(spec.instance_type, spec.fallback_instance_types, skip_list=not spec.instance_check)
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


def _updatable(aws: Aws, spec: UpdateSpec) -> tuple[dict, dict, dict]:
    """(config, its one variant, that variant's model) of an endpoint update can work on: InService,
    one variant, its model still there with a single container (DeployError otherwise)."""
    current = resources.describe(aws, spec.name, strict=True)
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
    return config, old_variant, old_model


def _new_container(aws: Aws, spec: UpdateSpec, container: dict, image: str, model: staging.LocalModel | None,
                   new_name: str, reporter: Reporter, created: cleanup.Created) -> dict:
    """The old container with the new image, the new model data (uploaded; SAGEMAKER_PROGRAM and
    SAGEMAKER_SUBMIT_DIRECTORY follow whether it has code, unless the user set them) and --env."""
    env = dict(container.get("Environment") or {})
    model_url = container.get("ModelDataUrl")
    if model is not None:
        model_url, has_code = staging.stage_model_data(aws, model, spec.bucket, new_name, reporter, created)
        for key in ("SAGEMAKER_PROGRAM", "SAGEMAKER_SUBMIT_DIRECTORY"):
            if env.get(key) == defaults.default_env(aws.region, True)[key]:
                env.pop(key)
        env = {**defaults.default_env(aws.region, has_code), **env}
    env.update(spec.env)
    new_container = {"Image": image, "Environment": env}
    if model_url:
        new_container["ModelDataUrl"] = model_url
    return new_container


def _new_variant(old_variant: dict, new_name: str, instance_type: str, instance_count: int | None,
                 fallbacks: list[str]) -> dict:
    variant = {k: v for k, v in old_variant.items() if k in resources.VARIANT_KEYS}
    variant = resources.with_pools({**variant, "ModelName": new_name}, instance_type, fallbacks)
    if instance_count:
        variant["InitialInstanceCount"] = instance_count
    return variant


def _update_types(spec: UpdateSpec, old_variant: dict) -> tuple[str, list[str]]:
    """(instance type, fallbacks) of the updated variant: the flags given, else the old variant's
    (--instance-type alone keeps the old fallbacks; --fallback-instance-types '' drops them)."""
    old = resources.variant_types(old_variant)
    instance_type = spec.instance_type or old[0]
    if spec.fallback_instance_types is None:
        fallbacks = [t for t in old[1:] if t != instance_type]
    else:
        fallbacks = checks.check_fallbacks(instance_type, spec.fallback_instance_types or None,
                                           skip_list=not spec.instance_check)
    return instance_type, fallbacks


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
        model = staging.prepare_model_data(spec.model_data, Path(tmp), reporter) if spec.model_data else None
        if unknown_type is not None:
            instance.confirm_with_service(aws, unknown_type, reporter)
        config, old_variant, old_model = _updatable(aws, spec)
        container = old_model["PrimaryContainer"]
        image = spec.image or container["Image"]
        instance_type, fallbacks = _update_types(spec, old_variant)
        if spec.arch_check and (spec.image or spec.instance_type or fallbacks):
            check_architecture(aws, image, [instance_type, *fallbacks], reporter)
        old_config_name = config["EndpointConfigName"]
        new_name = resources.resource_name(spec.name, resources.timestamp())
        created = cleanup.Created()
        state = {"sent": False, "scaling": None}
        try:
            new_container = _new_container(aws, spec, container, image, model, new_name, reporter, created)
            created.model = new_name
            aws.sagemaker.create_model(ModelName=new_name, PrimaryContainer=new_container,
                                       ExecutionRoleArn=spec.role or old_model["ExecutionRoleArn"], Tags=[resources.TAG])
            reporter.info(f"created model {new_name}")
            variant = _new_variant(old_variant, new_name, instance_type, spec.instance_count, fallbacks)
            created.endpoint_config = new_name
            aws.sagemaker.create_endpoint_config(EndpointConfigName=new_name, ProductionVariants=[variant],
                                                 Tags=[resources.TAG])
            reporter.info(f"created endpoint config {new_name} ({variant['InitialInstanceCount']} x "
                          f"{resources.describe_types(variant)})")
            state["scaling"] = scaling.suspend(aws, spec.name, variant["VariantName"], reporter)
            state["sent"] = True
            aws.sagemaker.update_endpoint(EndpointName=spec.name, EndpointConfigName=new_name)
            reporter.info(f"updating endpoint {spec.name} (blue/green: the old fleet serves until the new one "
                          "is InService)")
            desc = waiting.wait_for_endpoint(aws, spec.name, reporter, timeout=spec.timeout, poll=spec.poll)
            if desc["EndpointConfigName"] != new_name:
                reason = desc.get("FailureReason") or "SageMaker rolled back to the previous configuration"
                raise DeployError(f"update of {spec.name} did not take: {reason}")
            scaling.restore(aws, state["scaling"], reporter)
            state["scaling"] = None
        except BaseException as exc:
            with interrupts.shielded(reporter.info) as shield:    # from the first line of the cleanup on
                _stop_update(aws, spec, created, state, old_config_name, new_name, exc, reporter, shield)
            raise AssertionError("unreachable")  # pragma: no cover
    kept_archive = _remove_old(aws, spec.name, old_config_name, old_variant["ModelName"],
                               container.get("ModelDataUrl"), new_container.get("ModelDataUrl"), reporter)
    return {"endpoint": spec.name, "endpoint_config": new_name, "model": new_name, "image": image,
            "instance_type": instance_type, "status": desc["EndpointStatus"],
            "previous_endpoint_config": old_config_name, "kept_s3_archive": kept_archive}


def _remove_old(aws: Aws, name: str, old_config: str, old_model: str, old_data: str | None,
                new_data: str | None, reporter: Reporter) -> str | None:
    """Once the endpoint is InService on the new config: the old config and model go; the old model
    data stays in S3 (returned when it is not the new one)."""
    for label, call in ((f"endpoint config {old_config}",
                         lambda: aws.sagemaker.delete_endpoint_config(EndpointConfigName=old_config)),
                        (f"model {old_model}", lambda: aws.sagemaker.delete_model(ModelName=old_model))):
        cleanup.gone_or(label, call, reporter, prefix="deleted old")
    if old_data and old_data != new_data:
        reporter.info(f"old model data stays in {old_data} (S3 storage only; `deploy delete {name} "
                      "--purge-s3` removes the archives deploy uploaded for this endpoint)")
        return old_data
    return None


def _stop_update(aws: Aws, spec: UpdateSpec, created: cleanup.Created, state: dict, old_config: str, new_config: str,
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
            scaling.restore(aws, state["scaling"], reporter)
        except botocore.exceptions.ClientError as err:
            reporter.info(f"could not restore auto scaling: {error_message(err)}; run `deploy autoscale` again")
        left = cleanup.rollback(aws, created, reporter, timeout=waiting.rollback_wait(spec.timeout), poll=spec.poll)
        if left:
            finish(f"update {what} and these are still there: {', '.join(left)}")
        reporter.info(f"rollback complete: endpoint {name} is on {old_config}, nothing from this run is left")
        finish(str(exc) if isinstance(exc, DeployError) else None)

    if not state["sent"]:
        delete_new(f"update {what} before update_endpoint was sent: the endpoint stays on {old_config}")

    unreadable = False
    try:
        desc = waiting.describe_endpoint_or_none(aws, name)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
        reporter.info(f"could not read the state of {name}: {error_message(err)}")
        desc, unreadable = None, True
    if desc is not None and desc["EndpointStatus"] in waiting.BUSY and stop and spec.on_interrupt == interrupts.ROLLBACK:
        reporter.info(f"update {what} while {name} is {desc['EndpointStatus']}: SageMaker cannot cancel an "
                      f"update, so waiting for it to settle (--on-interrupt rollback; a second Ctrl-C stops "
                      f"waiting and keeps everything)")
        try:
            desc = waiting.wait_for_endpoint(aws, name, reporter, timeout=waiting.rollback_wait(spec.timeout), poll=spec.poll,
                                     shield=shield, fail_on_failed=False)
        except (DeployError, botocore.exceptions.ClientError) as err:
            reporter.info(f"stopped waiting: {_describe(err)}")
        if desc is not None and desc["EndpointStatus"] == "InService" and \
                desc["EndpointConfigName"] == new_config and not shield.interrupted:
            reporter.info(f"the update to {new_config} took; reverting {name} to {old_config}")
            try:
                aws.sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=old_config)
                desc = waiting.wait_for_endpoint(aws, name, reporter, timeout=waiting.rollback_wait(spec.timeout), poll=spec.poll,
                                         shield=shield, fail_on_failed=False)
            except (DeployError, botocore.exceptions.ClientError) as err:
                reporter.info(f"could not revert: {_describe(err)}")
                desc = waiting.describe_endpoint_or_none(aws, name)
    status = desc["EndpointStatus"] if desc else ("in an unknown state" if unreadable else "gone")
    live = desc.get("EndpointConfigName") if desc else None
    on_old = desc is not None and status not in waiting.TRANSIENT and live == old_config
    if on_old:
        delete_new(f"update {what}; endpoint {name} is {status} on its previous config {old_config}")
    if desc is not None and status == "InService" and live == new_config and not stop:
        # e.g. a read failed after SageMaker finished: the update did take
        reporter.info(f"endpoint {name} is InService on the new config {new_config}")
    reporter.info(f"update {what}; endpoint {name} is {status} on config {live or '?'}"
                  + (f" (moving to {new_config})" if status in waiting.BUSY else "")
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
    endpoint = waiting.describe_endpoint_or_none(aws, name)
    current = {"config": None, "models": {}}
    config_name = None
    if endpoint is not None:
        current = resources.describe(aws, name)
        config_name = endpoint.get("EndpointConfigName")
        if current["config"] is None and config_name:
            reporter.info(f"endpoint config {config_name} of {name} is already gone (deleted outside deploy)")
        variants = [v["VariantName"] for v in (current["config"] or endpoint).get("ProductionVariants") or []]
        scaling.deregister(aws, name, variants, reporter)
        if endpoint["EndpointStatus"] != "Deleting":
            if not waiting.delete_endpoint_when_possible(aws, name, reporter, timeout=timeout, poll=poll):
                raise DeployError(f"endpoint {name} could not be deleted (still "
                                  f"{waiting.describe_endpoint_or_none(aws, name)['EndpointStatus']} after "
                                  f"{timeout:.0f} s): run `deploy delete {name}` again later")
        deleted.append(f"endpoint {name}")
        reporter.info(f"deleting endpoint {name}")
        if current["config"] is not None and cleanup.gone_or(
                f"endpoint config {config_name}",
                lambda: aws.sagemaker.delete_endpoint_config(EndpointConfigName=config_name), reporter,
                prefix="deleted"):
            deleted.append(f"endpoint config {config_name}")
        for model_name, desc in current["models"].items():
            if desc is None:
                reporter.info(f"model {model_name} is already gone (deleted outside deploy)")
                continue
            if cleanup.gone_or(f"model {model_name}", lambda m=model_name: aws.sagemaker.delete_model(ModelName=m),
                        reporter, prefix="deleted"):
                deleted.append(f"model {model_name}")
    leftovers = resources.owned_leftovers(aws, name)
    for config in leftovers["configs"]:
        if cleanup.gone_or(f"endpoint config {config}",
                    lambda c=config: aws.sagemaker.delete_endpoint_config(EndpointConfigName=c),
                    reporter, prefix="deleted unused"):
            deleted.append(f"endpoint config {config}")
    for model_name in leftovers["models"]:
        if cleanup.gone_or(f"model {model_name}", lambda m=model_name: aws.sagemaker.delete_model(ModelName=m),
                    reporter, prefix="deleted unused"):
            deleted.append(f"model {model_name}")
    buckets = set()
    users_prefixes = []     # a multi-model endpoint's prefix holds the user's archives, never deploy's uploads
    for desc in current["models"].values():
        container = (desc or {}).get("PrimaryContainer") or {}
        data = container.get("ModelDataUrl")
        if data and data.startswith("s3://"):
            buckets.add(staging.split_s3(data)[0])
            if container.get("Mode") == "MultiModel":
                users_prefixes.append(data if data.endswith("/") else data + "/")
    try:
        buckets.add(aws.default_bucket())
    except (DeployError, botocore.exceptions.ClientError):
        pass
    archives = [uri for uri in resources.owned_archives(aws, name, buckets)
                if not uri.startswith(tuple(users_prefixes))]
    purged = []
    if archives and purge_s3:
        for uri in archives:
            bucket, key = staging.split_s3(uri)
            if cleanup.gone_or(uri, lambda b=bucket, k=key: aws.s3.delete_object(Bucket=b, Key=k), reporter,
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
        waiting.wait_for_endpoint(aws, name, reporter, timeout=timeout, poll=poll, gone_ok=True)
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
                row["instance_type"] = resources.describe_types(pv)
                live = (desc.get("ProductionVariants") or [{}])[0]
                row["count"] = live.get("CurrentInstanceCount", pv.get("InitialInstanceCount", ""))
            except botocore.exceptions.ClientError:
                pass
            rows.append(row)
    return rows
