"""SageMaker instance type -> CPU architecture, and the image/instance compatibility rule."""

from __future__ import annotations

import difflib
import functools
import re

from .errors import DeployError, UsageError

# ml.<letters><generation digits><suffix>.<size>, e.g. ml.c7g.xlarge, ml.c6gn.2xlarge, ml.g4dn.xlarge
_INSTANCE_RE = re.compile(r"^ml\.(?P<series>[a-z]+)(?P<gen>\d+)(?P<suffix>[a-z-]*)\.(?P<size>[a-z0-9-]+)$")

ARM64 = "arm64"
AMD64 = "amd64"


def family(instance_type: str) -> str:
    """'ml.c7g.xlarge' -> 'ml.c7g'."""
    m = _parse(instance_type)
    return f"ml.{m.group('series')}{m.group('gen')}{m.group('suffix')}"


def _parse(instance_type: str) -> re.Match:
    m = _INSTANCE_RE.match(instance_type or "")
    if not m:
        raise DeployError(
            f"instance type {instance_type!r} is not of the form ml.<family>.<size> "
            "(for example ml.c7g.xlarge)"
        )
    return m


def instance_arch(instance_type: str) -> str:
    """CPU architecture of a SageMaker instance type.

    Graviton families carry a 'g' right after the generation digit: ml.c6g, ml.c6gn, ml.m6gd,
    ml.c7g, ml.m7g, ml.r7g, ml.c8g, ... Everything else (ml.c5, ml.m7i, ml.c7a, ml.g5, ml.g4dn,
    ml.p4d, ml.inf2, ml.trn1) is x86-64.
    """
    m = _parse(instance_type)
    return ARM64 if m.group("suffix").startswith("g") else AMD64


# SageMaker's list of real-time hosting instance types, as of the date below (the enum SageMaker's
# own API model declares for a production variant). At run time the installed botocore's copy of
# the same enum is added, so a newer boto3 learns new types without a change here; no network.
HOSTING_TYPES_SOURCE = "botocore 1.44.8 service model, SageMaker ProductionVariantInstanceType"
HOSTING_TYPES_AS_OF = "2026-12-01"
_HOSTING_SIZES = {
    "ml.c4": "large xlarge 2xlarge 4xlarge 8xlarge",
    "ml.c5": "large xlarge 2xlarge 4xlarge 9xlarge 18xlarge",
    "ml.c5d": "large xlarge 2xlarge 4xlarge 9xlarge 18xlarge",
    "ml.c6g": "large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge",
    "ml.c6gd": "large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge",
    "ml.c6gn": "large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge",
    "ml.c6i": "large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 32xlarge",
    "ml.c6in": "large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 32xlarge",
    "ml.c7g": "large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge",
    "ml.c7i": "large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 48xlarge",
    "ml.c8g": "medium large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 48xlarge",
    "ml.dl1": "24xlarge",
    "ml.g4dn": "xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge",
    "ml.g5": "xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 48xlarge",
    "ml.g6": "xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 48xlarge",
    "ml.g6e": "xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 48xlarge",
    "ml.g7": "2xlarge 4xlarge 8xlarge 12xlarge 24xlarge 48xlarge",
    "ml.g7e": "2xlarge 4xlarge 8xlarge 12xlarge 24xlarge 48xlarge",
    "ml.inf1": "xlarge 2xlarge 6xlarge 24xlarge",
    "ml.inf2": "xlarge 8xlarge 24xlarge 48xlarge",
    "ml.m4": "xlarge 2xlarge 4xlarge 10xlarge 16xlarge",
    "ml.m5": "large xlarge 2xlarge 4xlarge 12xlarge 24xlarge",
    "ml.m5d": "large xlarge 2xlarge 4xlarge 12xlarge 24xlarge",
    "ml.m6g": "large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge",
    "ml.m6gd": "large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge",
    "ml.m6i": "large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 32xlarge",
    "ml.m7i": "large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 48xlarge",
    "ml.m8g": "medium large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 48xlarge",
    "ml.p2": "xlarge 8xlarge 16xlarge",
    "ml.p3": "2xlarge 8xlarge 16xlarge",
    "ml.p4d": "24xlarge",
    "ml.p4de": "24xlarge",
    "ml.p5": "48xlarge 4xlarge",
    "ml.p5e": "48xlarge",
    "ml.p5en": "48xlarge",
    "ml.p6-b200": "48xlarge",
    "ml.p6-b300": "48xlarge",
    "ml.p6e-gb200": "36xlarge",
    "ml.r5": "large xlarge 2xlarge 4xlarge 12xlarge 24xlarge",
    "ml.r5d": "large xlarge 2xlarge 4xlarge 12xlarge 24xlarge",
    "ml.r6g": "large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge",
    "ml.r6gd": "large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge",
    "ml.r6i": "large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 32xlarge",
    "ml.r7gd": "medium large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge",
    "ml.r7i": "large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 48xlarge",
    "ml.r8g": "medium large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 48xlarge",
    "ml.t2": "medium large xlarge 2xlarge",
    "ml.trn1": "2xlarge 32xlarge",
    "ml.trn1n": "32xlarge",
    "ml.trn2": "48xlarge",
}


@functools.cache
def hosting_types() -> frozenset[str]:
    """Every instance type SageMaker hosts endpoints on: the list above plus the installed botocore's
    (read once a process: parsing botocore's SageMaker model takes a tenth of a second)."""
    types = {f"{fam}.{size}" for fam, sizes in _HOSTING_SIZES.items() for size in sizes.split()}
    try:
        import botocore.session
        shape = botocore.session.get_session().get_service_model("sagemaker").shape_for(
            "ProductionVariantInstanceType")
        types.update(shape.enum or [])
    except Exception:       # an old or trimmed botocore: the list above is enough
        pass
    return frozenset(types)


class UnknownInstanceType(UsageError):
    """Not in the list. `typo` when its family is known and it is close to a known type (refused at
    once); otherwise it may be newer than the list, and create/update ask the service
    (service_hosting_types) before refusing."""

    def __init__(self, message: str, instance_type: str, typo: bool):
        super().__init__(message)
        self.instance_type = instance_type
        self.typo = typo


def service_hosting_types(aws) -> set[str] | None:
    """Hosting instance types as the Service Quotas API names them for SageMaker
    ("ml.c7g.xlarge for endpoint usage"), or None when the service does not answer (no
    permission, no such API in the partition). One paginated read-only call."""
    import botocore.exceptions

    found = set()
    try:
        pages = aws.client("service-quotas").get_paginator("list_aws_default_service_quotas")
        for page in pages.paginate(ServiceCode="sagemaker"):
            for quota in page.get("Quotas") or []:
                m = re.match(r"^(ml\.[a-z0-9-]+\.[a-z0-9-]+) for endpoint usage$", quota.get("QuotaName", ""))
                if m:
                    found.add(m.group(1))
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
        return None
    return found


def confirm_with_service(aws, unknown: UnknownInstanceType, reporter=None) -> str:
    """For a type the built-in list lacks (and that is no typo): accept it when Service Quotas lists
    it as a hosting type, else raise the original UsageError, saying whether the service answered."""
    types = service_hosting_types(aws)
    if types and unknown.instance_type in types:
        if reporter is not None:
            reporter.info(f"instance type {unknown.instance_type}: newer than the built-in list "
                          f"({HOSTING_TYPES_AS_OF}); Service Quotas lists it for endpoints: ok")
        return unknown.instance_type
    said = ("Service Quotas does not list it for endpoint usage either" if types is not None
            else "Service Quotas did not answer to confirm it")
    raise UsageError(f"{unknown}; {said}")


def check_hosting_type(instance_type: str) -> str:
    """UsageError unless INSTANCE_TYPE is a SageMaker hosting instance type (no network call).

    Raises UnknownInstanceType (a UsageError) for a type missing from the list."""
    _parse_usage(instance_type)
    known = hosting_types()
    if instance_type in known:
        return instance_type
    close = difflib.get_close_matches(instance_type, sorted(known), n=1, cutoff=0.85)
    fam = instance_type.rsplit(".", 1)[0]
    sizes = sorted((t.rsplit(".", 1)[1] for t in known if t.rsplit(".", 1)[0] == fam), key=_size_order)
    hint = f"; did you mean {close[0]}?" if close else ""
    if sizes:
        hint += f" ({fam} comes in {', '.join(sizes)})"
    raise UnknownInstanceType(
        f"instance type {instance_type} is not in SageMaker's list of hosting instance types "
        f"(as of {HOSTING_TYPES_AS_OF}, {HOSTING_TYPES_SOURCE}){hint}; if the type is newer "
        "than that list, pass --skip-instance-check", instance_type, typo=bool(close and sizes))


def _size_order(size: str) -> tuple[int, str]:
    order = {"medium": -3, "large": -2, "xlarge": -1}
    m = re.match(r"^(\d+)xlarge$", size)
    return (int(m.group(1)) if m else order.get(size, 1000), size)


def _parse_usage(instance_type: str) -> re.Match:
    try:
        return _parse(instance_type)
    except DeployError as exc:
        raise UsageError(str(exc)) from None


def check_compatible(image: str, image_archs: set[str], instance_type: str) -> str:
    """Raise DeployError unless the image has a build for the instance's architecture."""
    arch = instance_arch(instance_type)
    if arch in image_archs:
        return arch
    have = ", ".join(sorted(image_archs)) or "none"
    if arch == ARM64:
        hint = ("build it for linux/arm64 (./build.sh --platform linux/arm64,linux/amd64 --push ...) "
                "or pick an x86 instance type such as ml.c6i.xlarge")
    else:
        hint = ("build it for linux/amd64 (./build.sh --platform linux/arm64,linux/amd64 --push ...) "
                "or pick a Graviton instance type such as ml.c7g.xlarge")
    raise DeployError(
        f"image {image} has architectures [{have}] but {instance_type} is {arch}: {hint}"
    )
