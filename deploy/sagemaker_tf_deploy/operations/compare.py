"""`deploy compare --endpoint`: an endpoint's variants as targets of core/comparison.py
(invoke_endpoint with TargetVariant, so each request reaches the variant named, whatever the
weights), and which variants to compare.
"""

from __future__ import annotations

import time

import botocore.exceptions

from ..core import comparison
from ..core.aws import error_message
from ..core.errors import UsageError
from . import migrate, resources


def variant_target(aws, endpoint_name: str, variant: str) -> comparison.Target:
    def send(req: comparison.Request) -> comparison.Answer:
        start = time.perf_counter()
        try:
            out = aws.runtime.invoke_endpoint(EndpointName=endpoint_name, TargetVariant=variant,
                                              Body=req.body, ContentType=req.content_type)
            body = out["Body"].read()
        except botocore.exceptions.ClientError as exc:
            return comparison.Answer(False, error=error_message(exc), seconds=time.perf_counter() - start)
        return comparison.Answer(True, body, out.get("ContentType", ""), seconds=time.perf_counter() - start)

    return comparison.Target(f"{endpoint_name}/{variant}", send)


def endpoint_variants(aws, name: str, wanted: list[str] | None) -> list[str]:
    """The variants to compare: WANTED (checked against the endpoint), else the two a migration
    made (x86 first), else all production variants."""
    current = resources.describe(aws, name)
    config = current["config"]
    production = [v["VariantName"] for v in config["ProductionVariants"]]
    shadow = [v["VariantName"] for v in config.get("ShadowProductionVariants") or []]
    if wanted:
        for v in wanted:
            if v in shadow:
                raise UsageError(f"{v} is a shadow variant of {name}: SageMaker does not route requests to "
                                 "shadow variants (their answers go to data capture only). Compare with "
                                 "`deploy migrate --mode canary --weight 0`, or two `deploy local` servers")
            if v not in production:
                raise UsageError(f"endpoint {name} has no production variant {v} (it has {', '.join(production)})")
        return wanted
    mig = migrate.read_migration(aws, name, current)
    if mig and mig.variant in production and mig.x86_variant in production:
        return [mig.x86_variant, mig.variant]
    if len(production) < 2:
        hint = (f"; its Graviton variant {shadow[0]} is a shadow variant, which SageMaker does not route "
                "requests to" if shadow else "")
        raise UsageError(f"endpoint {name} has one production variant ({production[0]}): nothing to compare"
                         + hint)
    return production
