"""What deploy makes on SageMaker and how it reads it back: names (BASE-TIMESTAMP, cut to 63
characters, and the pattern that recognises them), the created-by tag (the variant name and the
environment every model gets are core/defaults.py), describe() of an endpoint with its config and models, and the
configs, models and archives deploy made for an endpoint (owned_leftovers, owned_archives: its
naming pattern and its tag), which `deploy delete` removes.

Reason to change: a new naming or tagging rule, a new field to read.
"""

from __future__ import annotations

import datetime as _dt
import re

import botocore.exceptions

from . import waiting
from ..core.aws import Aws, error_code, not_found
from ..core.errors import DeployError

TAG = {"Key": "created-by", "Value": "sagemaker-tf-graviton-deploy"}
# what a production variant carries over when update or migrate copies it to a new config
VARIANT_KEYS = ("VariantName", "InitialVariantWeight", "InitialInstanceCount", "InstanceType", "InstancePools",
                "AcceleratorType",
                "ModelDataDownloadTimeoutInSeconds", "ContainerStartupHealthCheckTimeoutInSeconds",
                "VolumeSizeInGB")


def timestamp(now: _dt.datetime | None = None) -> str:
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond // 1000:03d}"


def resource_name(base: str, stamp: str) -> str:
    """BASE-STAMP cut to SageMaker's 63 characters."""
    base = re.sub(r"[^a-zA-Z0-9-]+", "-", base).strip("-") or "model"
    return f"{base[:62 - len(stamp)].rstrip('-')}-{stamp}"


def name_stem(endpoint: str) -> str:
    """What resource_name(ENDPOINT, any timestamp) starts with ("digits-")."""
    return resource_name(endpoint, "0" * 8 + "-" + "0" * 6 + "-" + "0" * 3)[:-len("00000000-000000-000")]


def owned_pattern(endpoint: str) -> re.Pattern:
    """Names this tool gives the models, endpoint configs and S3 prefixes of ENDPOINT:
    resource_name(ENDPOINT, TIMESTAMP), and the endpoint's own name (an unnamed create)."""
    prefix = name_stem(endpoint)
    return re.compile(rf"^(?:{re.escape(prefix)}\d{{8}}-\d{{6}}-\d{{3}}|{re.escape(endpoint)})$")


def describe(aws: Aws, name: str, *, strict: bool = False) -> dict:
    """Endpoint, its config and its models in one dict; works on any endpoint.

    A config or model that is gone (deleted outside this tool) is None instead of an error; with
    STRICT a missing config is a DeployError (update needs it). No endpoint: DeployError.
    """
    endpoint = waiting.describe_endpoint_or_none(aws, name)
    if endpoint is None:
        raise DeployError(f"no endpoint named {name} in {aws.region}")
    config = None
    config_name = endpoint.get("EndpointConfigName")
    if config_name:
        try:
            config = aws.sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
        except botocore.exceptions.ClientError as exc:
            if not not_found(exc):
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
            if not not_found(exc):
                raise
            models[variant["ModelName"]] = None
    return {"endpoint": endpoint, "config": config, "models": models}


# --- what deploy made for an endpoint: its naming pattern and its created-by tag -------------

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
    contains = name_stem(name)
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
    """s3://BUCKET/NAME-TIMESTAMP/model.tar.gz objects deploy uploaded for endpoint NAME (and
    s3://BUCKET/NAME/model.tar.gz when NAME is itself one deploy gave: an unnamed create's). A
    NAME/ prefix of a name the user chose is the user's (a multi-model prefix, say), never ours."""
    pattern = owned_pattern(name)
    if not re.search(r"-\d{8}-\d{6}-\d{3}$", name):
        pattern = re.compile(rf"^{re.escape(name_stem(name))}\d{{8}}-\d{{6}}-\d{{3}}$")
    stem = name_stem(name)
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


def with_pools(variant: dict, instance_type: str, fallbacks: list[str]) -> dict:
    """VARIANT on INSTANCE_TYPE alone, or with FALLBACKS as InstancePools in priority order after it
    (SageMaker provisions from the first pool it has capacity in). With pools the variant names its
    types only there. No pool gets a ModelNameOverride: the image is the same multi-arch one, and
    what differs per CPU (BF16 fast math) the server decides at start from the CPU it finds."""
    variant = {k: v for k, v in variant.items() if k not in ("InstanceType", "InstancePools")}
    if not fallbacks:
        return {**variant, "InstanceType": instance_type}
    pools = [{"InstanceType": t, "Priority": i} for i, t in enumerate([instance_type, *fallbacks], 1)]
    return {**variant, "InstancePools": pools}


def variant_types(variant: dict) -> list[str]:
    """The instance types of a variant (config or request), its pools' in priority order."""
    pools = variant.get("InstancePools")
    if pools:
        return [p["InstanceType"] for p in sorted(pools, key=lambda p: p.get("Priority", 0))]
    return [variant["InstanceType"]] if variant.get("InstanceType") else []


def describe_types(variant: dict) -> str:
    """'ml.c7g.xlarge' or 'ml.c7g.xlarge, then ml.c6i.xlarge' (pools in priority order)."""
    return ", then ".join(variant_types(variant)) or "serverless"
