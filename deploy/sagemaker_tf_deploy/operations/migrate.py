"""`deploy migrate / promote / rollback`: move a running x86 endpoint to Graviton, reversibly.

migrate reads the endpoint (config, its one production variant, the model: image, model data,
environment, role, VPC, network isolation; the config's data capture and KMS key), creates a
Graviton model with this project's image (architecture checked before anything is created), and
a new endpoint config in one of three shapes:

    shadow   the x86 variant serves; the Graviton variant is a shadow variant that gets a copy
             of live traffic (callers only see x86 answers)
    canary   the x86 variant and a Graviton production variant with weight W (share of traffic);
             W = 0 makes the Graviton variant reachable only with TargetVariant
    replace  the Graviton variant alone (SageMaker's blue/green update)

then update_endpoint, wait, and auto scaling kept (scaling.py's suspend/restore). The old
config and model are kept for rollback. What migrate made is recorded as tags on the endpoint
config it created (MIGRATION_TAGS), so promote and rollback work from a fresh process:

    promote   the Graviton variant alone takes all traffic (a new config unless replace already
              did that), then the x86 model and the old configs go
    rollback  the endpoint back on its pre-migration config, then the Graviton model and the
              migration config go

Any failure half-way puts the endpoint back on the config it had and deletes what the run
created. Nothing in here prints: messages go through the Reporter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import botocore.exceptions

from ..core import checks, defaults, instance, interrupts, registry
from . import cleanup, resources, scaling, waiting
from ..core.aws import Aws, error_code, error_message
from .cleanup import Created
from ..core.output import Reporter
from .resources import TAG
from ..core.errors import DeployError, UsageError

MODES = ("shadow", "canary", "replace")
PREFIX = "tf-graviton-migrate:"
K_FROM, K_MODEL, K_VARIANT, K_X86, K_MODE = (PREFIX + k for k in
                                             ("from-config", "model", "variant", "x86-variant", "mode"))
MIGRATION_TAGS = (K_FROM, K_MODEL, K_VARIANT, K_X86, K_MODE)
K_PROMOTED = "tf-graviton-promoted-from"     # on the config promote leaves: the x86 config it replaced
GRAVITON_VARIANT = "Graviton"
CONFIG_KEYS = ("DataCaptureConfig", "KmsKeyId", "AsyncInferenceConfig")
_TRANSIENT = {"Creating", "Updating", "SystemUpdating", "RollingBack", "UpdateRollbackFailed"}


@dataclass
class MigrateSpec:
    name: str
    image: str
    instance_type: str = "ml.c7g.xlarge"
    instance_count: int | None = None
    mode: str = "shadow"
    weight: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    role: str | None = None
    arch_check: bool = True
    timeout: float = 1800.0
    poll: float = 15.0
    on_interrupt: str = interrupts.ROLLBACK
    fallback_instance_types: str | None = None    # capacity fallback pools after the Graviton type


@dataclass
class Migration:
    """The state migrate recorded on the endpoint config it created."""
    endpoint: str
    config: dict              # the endpoint's current config (the migration config)
    from_config: str
    model: str
    variant: str
    x86_variant: str
    mode: str

    def graviton_variant(self) -> dict:
        for v in (self.config.get("ProductionVariants") or []) + (self.config.get("ShadowProductionVariants") or []):
            if v["VariantName"] == self.variant:
                return v
        raise DeployError(f"config {self.config['EndpointConfigName']} has no variant {self.variant}")


# --- reading -------------------------------------------------------------------------------------

def _tags(aws: Aws, arn: str) -> dict[str, str]:
    tags, token = {}, None
    while True:
        kwargs = {"ResourceArn": arn, **({"NextToken": token} if token else {})}
        out = aws.sagemaker.list_tags(**kwargs)
        tags.update({t["Key"]: t["Value"] for t in out.get("Tags", [])})
        token = out.get("NextToken")
        if not token:
            return tags


def read_migration(aws: Aws, name: str, current: dict | None = None) -> Migration | None:
    """The migration recorded on the endpoint's current config, or None."""
    current = current or resources.describe(aws, name)
    config = current["config"]
    tags = _tags(aws, config["EndpointConfigArn"])
    if K_FROM not in tags:
        return None
    missing = [k for k in MIGRATION_TAGS if k not in tags]
    if missing:
        raise DeployError(f"endpoint config {config['EndpointConfigName']} has an incomplete migration "
                          f"record (missing tags {', '.join(missing)})")
    return Migration(endpoint=name, config=config, from_config=tags[K_FROM], model=tags[K_MODEL],
                     variant=tags[K_VARIANT], x86_variant=tags[K_X86], mode=tags[K_MODE])


def graviton_env(region: str, old_env: dict[str, str], overrides: dict[str, str]) -> tuple[dict, list[str]]:
    """The user's environment kept as it is (SAGEMAKER_PROGRAM, SAGEMAKER_SUBMIT_DIRECTORY,
    SAGEMAKER_TFS_*, their own oneDNN settings, ...), this project's defaults (oneDNN, region, log
    level) added where the user set nothing, then --env. Returns (env, added). BF16 fast math is
    not among the defaults: the server turns it on where the CPU has bf16 units and the model sets
    no DNNL_DEFAULT_FPMATH_MODE."""
    ours = defaults.default_env(region, False)
    added = [k for k in ours if k not in old_env and k not in overrides]
    return {**ours, **old_env, **overrides}, added


# --- switching the endpoint, with auto scaling kept -------------------------------------------

def _moved(saved: dict | None, name: str, to_variant: str) -> dict | None:
    """The suspended scaling of one variant, re-aimed at another variant of the same endpoint."""
    if not saved:
        return None
    rid = f"endpoint/{name}/variant/{to_variant}"
    target = {**saved["target"], "ResourceId": rid}
    policies = [{**p, "ResourceId": rid} for p in saved["policies"]]
    return {"target": target, "policies": policies}


def _switch(aws: Aws, name: str, to_config: str, reporter: Reporter, *, scaling_from: str,
            scaling_to: str, timeout: float, poll: float, started: list | None = None) -> dict:
    """update_endpoint to TO_CONFIG and wait, the auto scaling of variant SCALING_FROM suspended
    for the update and restored on SCALING_TO once the new config is in service (on SCALING_FROM
    if the update does not take). STARTED gets True appended once update_endpoint was called."""
    saved = scaling.suspend(aws, name, scaling_from, reporter)
    try:
        aws.sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=to_config)
        if started is not None:
            started.append(True)
        reporter.info(f"updating endpoint {name} to {to_config} (the current fleet serves until the new one is InService)")
        desc = waiting.wait_for_endpoint(aws, name, reporter, timeout=timeout, poll=poll)
        if desc["EndpointConfigName"] != to_config:
            reason = desc.get("FailureReason", "SageMaker rolled back to the previous configuration")
            raise DeployError(f"update of {name} did not take: {reason}")
    except BaseException:
        with interrupts.shielded(reporter.info):
            try:
                scaling.restore(aws, saved, reporter)
            except botocore.exceptions.ClientError as err:
                reporter.info(f"could not restore auto scaling: {error_message(err)}; run `deploy autoscale` again")
        raise
    scaling.restore(aws, _moved(saved, name, scaling_to), reporter)
    return desc


def _settle(aws: Aws, name: str, reporter: Reporter, timeout: float, poll: float,
            shield: interrupts.Shield | None = None) -> dict:
    """Wait until the endpoint is in no transitional state; returns its description (Failed too).
    Stops waiting at TIMEOUT or once SHIELD received a signal."""
    start = time.monotonic()
    try:
        while True:
            desc = aws.sagemaker.describe_endpoint(EndpointName=name)
            status = desc["EndpointStatus"]
            reporter.progress(name, status, time.monotonic() - start)
            if status not in _TRANSIENT or time.monotonic() - start > timeout or (shield and shield.received):
                return desc
            time.sleep(poll)
    finally:
        reporter.progress_done()


def _put_back(aws: Aws, name: str, config_name: str, reporter: Reporter, timeout: float, poll: float,
              shield: interrupts.Shield | None = None) -> None:
    """Make sure the endpoint runs CONFIG_NAME again (after an update that failed, timed out or was
    interrupted). SageMaker itself rolls a failed update back; this covers the rest."""
    desc = _settle(aws, name, reporter, timeout, poll, shield)
    if desc["EndpointStatus"] in _TRANSIENT:
        raise DeployError(f"endpoint {name} is still {desc['EndpointStatus']}")
    if desc["EndpointConfigName"] == config_name:
        reporter.info(f"endpoint {name} is on its previous config {config_name} ({desc['EndpointStatus']})")
        return
    reporter.info(f"putting endpoint {name} back on {config_name}")
    aws.sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=config_name)
    desc = _settle(aws, name, reporter, timeout, poll, shield)
    if desc["EndpointConfigName"] != config_name or desc["EndpointStatus"] != "InService":
        raise DeployError(f"endpoint {name} is {desc['EndpointStatus']} on {desc['EndpointConfigName']}")
    reporter.info(f"endpoint {name} is back on {config_name}")


def _delete(aws: Aws, reporter: Reporter, configs: list[str], models: list[str]) -> list[str]:
    done = []
    for label, call, arg in ([("endpoint config", aws.sagemaker.delete_endpoint_config, {"EndpointConfigName": c})
                              for c in configs] +
                             [("model", aws.sagemaker.delete_model, {"ModelName": m}) for m in models]):
        what = f"{label} {next(iter(arg.values()))}"
        try:
            call(**arg)
            done.append(what)
            reporter.info(f"deleted {what}")
        except botocore.exceptions.ClientError as exc:
            reporter.info(f"could not delete {what}: {error_message(exc)}")
    return done


def _undo(aws: Aws, name: str, old_config: str, created: Created, reporter: Reporter, exc: BaseException,
          what: str, updated: bool, timeout: float, poll: float,
          on_interrupt: str = interrupts.ROLLBACK) -> BaseException:
    """After a failure or a stop: the endpoint back on OLD_CONFIG and what this run created deleted
    (the interruption rule: shielded; with --on-interrupt keep and an update under way, left as it
    is). Returns the exception to raise: the stop itself (main() maps it to its exit code) or a
    DeployError."""
    stop = interrupts.is_stop(exc) and not isinstance(exc, interrupts.WaitTimedOut)
    why = interrupts.describe_stop(exc) if interrupts.is_stop(exc) else f"failed: {_describe(exc)}"
    if updated and interrupts.is_stop(exc) and on_interrupt == interrupts.KEEP:
        reporter.info(f"{what} {why}; --on-interrupt keep: endpoint {name} is left as SageMaker has it "
                      f"(updating to {created.endpoint_config}). Look with `deploy status {name}`; once it "
                      f"is InService, `deploy rollback {name}` undoes it"
                      + (f" and `deploy promote {name}` finishes it" if what == "migrate" else ""))
        return exc
    reporter.info(f"{what} {why}; putting the endpoint back and deleting what this run created")
    problems = []
    with interrupts.shielded(reporter.info) as shield:
        if updated:
            try:
                _put_back(aws, name, old_config, reporter, timeout, poll, shield)
            except BaseException as err:  # keep going: report, and keep what the endpoint may use
                problems.append(f"endpoint {name} may not be on {old_config} yet ({_describe(err)})")
        if problems:
            left = [f"endpoint config {c}" for c in [created.endpoint_config] if c] + \
                [f"model {m}" for m in [created.model] if m]
        else:
            left = cleanup.rollback(aws, created, reporter)
    if problems or left:
        return DeployError(f"{what} {why}; these need a look: {'; '.join(problems + left)}")
    reporter.info(f"endpoint {name} is as before ({old_config}); nothing from this run is left")
    if stop:
        return exc
    return DeployError(f"{what} {why}; endpoint {name} is as before")


def _describe(exc: BaseException) -> str:
    if interrupts.is_stop(exc):
        return interrupts.describe_stop(exc)
    return str(exc) if isinstance(exc, DeployError) else error_message(exc)


# --- migrate -------------------------------------------------------------------------------------

def _pick_variant_name(taken: set[str]) -> str:
    name, n = GRAVITON_VARIANT, 2
    while name in taken:
        name, n = f"{GRAVITON_VARIANT}-{n}", n + 1
    return name


def migrate(aws: Aws, spec: MigrateSpec, reporter: Reporter) -> dict:
    if spec.mode not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}")
    if spec.instance_count is not None and spec.instance_count < 1:
        raise UsageError("--instance-count must be at least 1")
    weight = spec.weight
    if weight is None:
        weight = {"shadow": 1.0, "canary": 0.1, "replace": 1.0}[spec.mode]
    if spec.mode == "replace" and spec.weight is not None:
        raise UsageError("--weight applies to --mode canary (traffic share) and shadow (copied share)")
    if not 0.0 <= weight <= 1.0:
        raise UsageError("--weight is a share between 0 and 1 (0.1 = 10%)")
    if spec.mode == "shadow" and weight == 0:
        raise UsageError("--weight 0 in shadow mode would copy no traffic; use --mode canary --weight 0 "
                          "for a variant reachable only with TargetVariant")
    if instance.instance_arch(spec.instance_type) != instance.ARM64:
        raise UsageError(f"{spec.instance_type} is not a Graviton instance type (migrate moves to "
                          "Graviton: ml.c7g.xlarge, ml.m7g.large, ml.c6g.2xlarge, ...)")
    # exit 2 for all of the above: a bad argument, refused before any call (docs/deploy.md's table)
    fallbacks = checks.check_fallbacks(spec.instance_type, spec.fallback_instance_types)

    # read the endpoint; nothing is created before every check passed
    current = resources.describe(aws, spec.name)
    ep, config = current["endpoint"], current["config"]
    if ep["EndpointStatus"] != "InService":
        raise DeployError(f"endpoint {spec.name} is {ep['EndpointStatus']}: migrate needs it InService")
    existing = read_migration(aws, spec.name, current)
    if existing:
        raise DeployError(f"endpoint {spec.name} is already being migrated ({existing.mode}, Graviton "
                          f"variant {existing.variant}): `deploy promote {spec.name}` or "
                          f"`deploy rollback {spec.name}` first")
    if config.get("ShadowProductionVariants"):
        raise DeployError(f"endpoint {spec.name} already has a shadow variant")
    if len(config["ProductionVariants"]) != 1:
        names = ", ".join(v["VariantName"] for v in config["ProductionVariants"])
        raise DeployError(f"endpoint {spec.name} has {len(config['ProductionVariants'])} production variants "
                          f"({names}); migrate moves an endpoint with one")
    old_variant = config["ProductionVariants"][0]
    old_types = resources.variant_types(old_variant)
    if not old_types:
        raise DeployError(f"variant {old_variant['VariantName']} is serverless: migrate moves instance-backed endpoints")
    if instance.instance_arch(old_types[0]) == instance.ARM64:
        reporter.info(f"note: {old_variant['VariantName']} already runs on {old_types[0]} (Graviton)")
    old_model = current["models"].get(old_variant["ModelName"])
    if not old_model:
        raise DeployError(f"model {old_variant['ModelName']} of {spec.name} cannot be read")
    if "PrimaryContainer" not in old_model or old_model.get("Containers"):
        raise DeployError(f"model {old_variant['ModelName']} has several containers (an inference pipeline); "
                          "migrate moves single-container models")
    container = old_model["PrimaryContainer"]
    if container.get("ModelPackageName"):
        raise DeployError(f"model {old_variant['ModelName']} comes from a model package; migrate needs a "
                          "ModelDataUrl")
    if spec.arch_check:
        archs = registry.image_architectures(spec.image, aws)
        if instance.ARM64 not in archs:
            raise DeployError(f"image {spec.image} has architectures [{', '.join(sorted(archs)) or 'none'}] but "
                              f"{spec.instance_type} is arm64: migrate needs this project's image built for "
                              "linux/arm64 (./build.sh --platform linux/arm64,linux/amd64 --push ...)")
        pools = [f"{t} is {instance.check_compatible(spec.image, archs, t)}" for t in fallbacks]
        reporter.info(f"image {spec.image}: {', '.join(sorted(archs))}; {spec.instance_type} is arm64"
                      + "".join(f", {p}" for p in pools) + ": ok")
    else:
        reporter.info("architecture check skipped (--skip-arch-check)")

    env, added = graviton_env(aws.region, dict(container.get("Environment") or {}), spec.env)
    fpmath = env.get("DNNL_DEFAULT_FPMATH_MODE")    # unset: the server's default, BF16 on Graviton3+
    if fpmath is not None and fpmath.upper() not in ("BF16", "ANY") and "DNNL_DEFAULT_FPMATH_MODE" not in added:
        reporter.info(f"note: DNNL_DEFAULT_FPMATH_MODE={fpmath} kept from the x86 model: "
                      "the Graviton variant will not use bf16 fast math (--env DNNL_DEFAULT_FPMATH_MODE=BF16 "
                      "changes that; `deploy local --fpmath-check` shows what it does to your outputs)")
    x86_name = old_variant["VariantName"]
    variant_name = _pick_variant_name({x86_name})
    live = {v["VariantName"]: v for v in ep.get("ProductionVariants") or []}
    count = spec.instance_count or live.get(x86_name, {}).get("CurrentInstanceCount") \
        or old_variant["InitialInstanceCount"]
    stamp = resources.timestamp()
    new_name = resources.resource_name(f"{spec.name}-graviton", stamp)
    created = Created()
    updated: list = []
    try:
        new_container = {"Image": spec.image, "Environment": env}
        for key in ("ModelDataUrl", "ModelDataSource", "Mode"):
            if container.get(key):
                new_container[key] = container[key]
        kwargs = {"ModelName": new_name, "PrimaryContainer": new_container,
                  "ExecutionRoleArn": spec.role or old_model["ExecutionRoleArn"], "Tags": [TAG]}
        if (old_model.get("VpcConfig") or {}).get("Subnets"):
            kwargs["VpcConfig"] = old_model["VpcConfig"]
        if old_model.get("EnableNetworkIsolation"):
            kwargs["EnableNetworkIsolation"] = True
        aws.sagemaker.create_model(**kwargs)
        created.model = new_name
        reporter.info(f"created model {new_name} ({spec.image}; model data "
                      f"{container.get('ModelDataUrl', '(from ModelDataSource)')}"
                      + (f"; added {', '.join(f'{k}={env[k]}' for k in added)}" if added else "") + ")")

        x86 = {k: v for k, v in old_variant.items() if k in resources.VARIANT_KEYS or k == "ModelName"}
        graviton = resources.with_pools({"VariantName": variant_name, "ModelName": new_name,
                                         "InitialInstanceCount": count}, spec.instance_type, fallbacks)
        for key in ("ModelDataDownloadTimeoutInSeconds", "ContainerStartupHealthCheckTimeoutInSeconds",
                    "VolumeSizeInGB"):
            if key in old_variant:
                graviton[key] = old_variant[key]
        cfg = {"EndpointConfigName": new_name}
        if spec.mode == "shadow":
            base = float(x86.get("InitialVariantWeight", 1.0)) or 1.0
            cfg["ProductionVariants"] = [x86]
            cfg["ShadowProductionVariants"] = [{**graviton, "InitialVariantWeight": weight * base}]
            shape = f"{x86_name} serves; {variant_name} (shadow) gets {weight:.0%} of requests copied"
        elif spec.mode == "canary":
            cfg["ProductionVariants"] = [{**x86, "InitialVariantWeight": 1.0 - weight},
                                         {**graviton, "InitialVariantWeight": weight}]
            shape = (f"{x86_name} {1 - weight:.0%}, {variant_name} {weight:.0%} of traffic"
                     + (" (reachable with TargetVariant only)" if weight == 0 else ""))
        else:
            cfg["ProductionVariants"] = [{**graviton, "InitialVariantWeight": 1.0}]
            shape = f"{variant_name} alone"
        for key in CONFIG_KEYS:
            if config.get(key):
                cfg[key] = config[key]
        record = {K_FROM: config["EndpointConfigName"], K_MODEL: new_name, K_VARIANT: variant_name,
                  K_X86: x86_name, K_MODE: spec.mode}
        cfg["Tags"] = [TAG] + [{"Key": k, "Value": v} for k, v in record.items()]
        aws.sagemaker.create_endpoint_config(**cfg)
        created.endpoint_config = new_name
        reporter.info(f"created endpoint config {new_name} ({spec.mode}: {shape}; "
                      f"{count} x {resources.describe_types(graviton)})")
        scaling_to = variant_name if spec.mode == "replace" else x86_name
        desc = _switch(aws, spec.name, new_name, reporter, scaling_from=x86_name, scaling_to=scaling_to,
                       timeout=spec.timeout, poll=spec.poll, started=updated)
    except BaseException as exc:
        err = _undo(aws, spec.name, config["EndpointConfigName"], created, reporter, exc, "migrate",
                    bool(updated), spec.timeout, spec.poll, spec.on_interrupt)
        if err is exc:
            raise
        raise err from exc
    return {"endpoint": spec.name, "status": desc["EndpointStatus"], "mode": spec.mode,
            "endpoint_config": new_name, "model": new_name, "variant": variant_name, "x86_variant": x86_name,
            "previous_config": config["EndpointConfigName"], "image": spec.image,
            "instance_type": spec.instance_type, "instance_count": count, "weight": weight,
            "env_added": added}


# --- promote / rollback --------------------------------------------------------------------------

def _require(aws: Aws, name: str, reporter: Reporter, timeout: float, poll: float) -> tuple[Migration, dict]:
    desc = _settle(aws, name, reporter, timeout, poll)
    if desc["EndpointStatus"] in _TRANSIENT:
        raise DeployError(f"endpoint {name} is still {desc['EndpointStatus']} after {timeout:.0f} s")
    current = resources.describe(aws, name)
    mig = read_migration(aws, name, current)
    if mig is None:
        config = current["config"]["EndpointConfigName"]
        promoted = _tags(aws, current["config"]["EndpointConfigArn"]).get(K_PROMOTED)
        if promoted:
            raise DeployError(f"endpoint {name} has no migration in progress: it was promoted to Graviton (config "
                              f"{config}, made by `deploy promote` from {promoted}), which removed the x86 "
                              f"variant; to go back to x86, `deploy update {name} --image X86_IMAGE "
                              "--instance-type ml.c6i.xlarge` (or `deploy migrate` again to try Graviton)")
        raise DeployError(f"endpoint {name} has no migration in progress (its config "
                          f"{config} was not made by `deploy migrate`)")
    if desc["EndpointStatus"] != "InService":
        raise DeployError(f"endpoint {name} is {desc['EndpointStatus']}"
                          + (f": {desc['FailureReason']}" if desc.get("FailureReason") else ""))
    return mig, current


def _x86_model(aws: Aws, mig: Migration) -> str | None:
    for v in mig.config.get("ProductionVariants") or []:
        if v["VariantName"] == mig.x86_variant:
            return v["ModelName"]
    try:
        old = aws.sagemaker.describe_endpoint_config(EndpointConfigName=mig.from_config)
    except botocore.exceptions.ClientError:
        return None
    return next((v["ModelName"] for v in old["ProductionVariants"] if v["VariantName"] == mig.x86_variant), None)


def promote(aws: Aws, name: str, reporter: Reporter, *, timeout: float = 1800.0, poll: float = 15.0,
            on_interrupt: str = interrupts.ROLLBACK) -> dict:
    """The Graviton variant takes all traffic; the x86 variant, its model and the old configs go."""
    mig, current = _require(aws, name, reporter, timeout, poll)
    graviton = mig.graviton_variant()
    x86_model = _x86_model(aws, mig)
    config_name = mig.config["EndpointConfigName"]
    if mig.mode == "replace":
        final = config_name
        aws.sagemaker.delete_tags(ResourceArn=mig.config["EndpointConfigArn"], TagKeys=list(MIGRATION_TAGS))
        aws.sagemaker.add_tags(ResourceArn=mig.config["EndpointConfigArn"],
                               Tags=[{"Key": K_PROMOTED, "Value": mig.from_config}])
        reporter.info(f"{mig.variant} already takes all traffic on {config_name}; migration record removed")
    else:
        final = resources.resource_name(f"{name}-graviton", resources.timestamp())
        variant = {k: v for k, v in graviton.items() if k in resources.VARIANT_KEYS or k == "ModelName"}
        variant["InitialVariantWeight"] = 1.0
        cfg = {"EndpointConfigName": final, "ProductionVariants": [variant],
               "Tags": [TAG, {"Key": K_PROMOTED, "Value": mig.from_config}]}
        for key in CONFIG_KEYS:
            if mig.config.get(key):
                cfg[key] = mig.config[key]
        created = Created()
        updated: list = []
        try:
            aws.sagemaker.create_endpoint_config(**cfg)
            created.endpoint_config = final
            reporter.info(f"created endpoint config {final} ({mig.variant} alone, "
                          f"{variant['InitialInstanceCount']} x {resources.describe_types(variant)})")
            _switch(aws, name, final, reporter, scaling_from=mig.x86_variant, scaling_to=mig.variant,
                    timeout=timeout, poll=poll, started=updated)
        except BaseException as exc:
            err = _undo(aws, name, config_name, created, reporter, exc, "promote", bool(updated),
                        timeout, poll, on_interrupt)
            if err is exc:
                raise
            raise err from exc
    # the Graviton variant serves alone: the x86 side and the migration's own config can go
    configs = [c for c in (mig.from_config, config_name) if c != final]
    deleted = _delete(aws, reporter, configs, [x86_model] if x86_model else [])
    return {"endpoint": name, "endpoint_config": final, "variant": mig.variant, "model": mig.model,
            "instance_type": resources.variant_types(graviton)[0], "deleted": deleted}


def rollback(aws: Aws, name: str, reporter: Reporter, *, timeout: float = 1800.0, poll: float = 15.0) -> dict:
    """The endpoint back on its pre-migration config; the Graviton model and the migration config go."""
    mig, current = _require(aws, name, reporter, timeout, poll)
    try:
        aws.sagemaker.describe_endpoint_config(EndpointConfigName=mig.from_config)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "ValidationException":
            raise DeployError(f"the pre-migration config {mig.from_config} is gone; cannot roll back "
                              f"(`deploy update {name}` can still move the endpoint)") from exc
        raise
    config_name = mig.config["EndpointConfigName"]
    scaling_from = mig.variant if mig.mode == "replace" else mig.x86_variant
    _switch(aws, name, mig.from_config, reporter, scaling_from=scaling_from, scaling_to=mig.x86_variant,
            timeout=timeout, poll=poll)
    deleted = _delete(aws, reporter, [config_name], [mig.model])
    return {"endpoint": name, "endpoint_config": mig.from_config, "deleted": deleted}
