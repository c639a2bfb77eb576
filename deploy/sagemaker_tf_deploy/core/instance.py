"""SageMaker instance type -> CPU architecture, and the image/instance compatibility rule."""

from __future__ import annotations

import difflib
import functools
import re

from .errors import DeployError, UsageError

# ml.<letters><generation digits><suffix>.<size>, e.g. ml.c7g.xlarge, ml.c6gn.2xlarge, ml.g4dn.xlarge,
# ml.p6-b200.48xlarge
_INSTANCE_RE = re.compile(r"^ml\.(?P<series>[a-z]+)(?P<gen>\d+)(?P<suffix>[a-z0-9-]*)\.(?P<size>[a-z0-9-]+)$")

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
    ml.p4d, ml.inf2, ml.trn1, ml.p6-b200) is x86-64, except the Grace-Blackwell ml.p6e-gb200,
    whose CPU is Arm's.
    """
    m = _parse(instance_type)
    suffix = m.group("suffix")
    return ARM64 if suffix.startswith("g") or "-gb" in suffix else AMD64


# Each SageMaker API takes its own set of instance types, declared as an enum in SageMaker's API
# model, which the installed botocore carries: real-time hosting (and asynchronous inference, which
# runs on hosting instances) takes ProductionVariantInstanceType, which has Graviton families;
# batch transform takes TransformInstanceType, which has none. They are read from botocore, not
# kept by hand: a newer boto3 brings its new types with it, and nothing here goes stale.
HOSTING_SHAPE = "ProductionVariantInstanceType"
TRANSFORM_SHAPE = "TransformInstanceType"
DEFAULT_HOSTING_TYPE = "ml.c7g.xlarge"
# batch transform's default: x86 (TransformInstanceType lists no Graviton type), 16 vCPU and 32 GiB
# like the ml.c7g.4xlarge it replaces; c5 is the oldest compute family batch transform still offers,
# so the one a region is likeliest to have (c6i/c7i are faster per vCPU where offered)
DEFAULT_TRANSFORM_TYPE = "ml.c5.4xlarge"


@functools.cache
def api_types(shape: str) -> frozenset[str]:
    """The instance types of enum SHAPE in the installed botocore's SageMaker model (read once a
    process: parsing the model takes a tenth of a second)."""
    import botocore.session
    enum = botocore.session.get_session().get_service_model("sagemaker").shape_for(shape).enum
    return frozenset(enum or [])


def types_source(shape: str) -> str:
    import botocore
    return f"botocore {botocore.__version__}'s SageMaker {shape}"


def hosting_types() -> frozenset[str]:
    """Every instance type SageMaker hosts endpoints on (real-time and asynchronous)."""
    return api_types(HOSTING_SHAPE)


def transform_types() -> frozenset[str]:
    """Every instance type SageMaker runs batch transform jobs on (none of them Graviton)."""
    return api_types(TRANSFORM_SHAPE)


def check_transform_type(instance_type: str, alternative: str = DEFAULT_TRANSFORM_TYPE) -> str:
    """UsageError unless batch transform offers INSTANCE_TYPE (no network call). A Graviton type
    is refused with the two ways forward."""
    check_well_formed(instance_type)
    if instance_type in transform_types():
        return instance_type
    if instance_arch(instance_type) == ARM64:
        raise UsageError(
            f"instance type {instance_type} is Graviton, and SageMaker batch transform has no Graviton "
            f"instances ({types_source(TRANSFORM_SHAPE)} lists none). Either run the same multi-arch image "
            f"on x86: --instance-type {alternative} (or another x86 type), or keep Graviton through an "
            f"asynchronous endpoint: deploy transform --engine async --instance-type {instance_type}")
    raise UsageError(_not_listed(instance_type, transform_types(), "batch transform", TRANSFORM_SHAPE))


def _not_listed(instance_type: str, known: frozenset[str], what: str, shape: str) -> str:
    close = difflib.get_close_matches(instance_type, sorted(known), n=1, cutoff=0.85)
    fam = instance_type.rsplit(".", 1)[0]
    sizes = sorted((t.rsplit(".", 1)[1] for t in known if t.rsplit(".", 1)[0] == fam), key=_size_order)
    hint = f"; did you mean {close[0]}?" if close else ""
    if sizes:
        hint += f" ({fam} comes in {', '.join(sizes)})"
    return (f"instance type {instance_type} is not in SageMaker's list of {what} instance types "
            f"({types_source(shape)}){hint}")


class UnknownInstanceType(UsageError):
    """Not in botocore's list. `typo` when its family is known and it is close to a known type (refused at
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
    """For a type botocore's list lacks (and that is no typo): accept it when Service Quotas lists
    it as a hosting type, else raise the original UsageError, saying whether the service answered."""
    types = service_hosting_types(aws)
    if types and unknown.instance_type in types:
        if reporter is not None:
            reporter.info(f"instance type {unknown.instance_type}: newer than the installed botocore's list "
                          f"({types_source(HOSTING_SHAPE)}); Service Quotas lists it for endpoints: ok")
        return unknown.instance_type
    said = ("Service Quotas does not list it for endpoint usage either" if types is not None
            else "Service Quotas did not answer to confirm it")
    raise UsageError(f"{unknown}; {said}")


def check_hosting_type(instance_type: str) -> str:
    """UsageError unless INSTANCE_TYPE is a SageMaker hosting instance type (no network call).

    Raises UnknownInstanceType (a UsageError) for a type missing from the list."""
    check_well_formed(instance_type)
    known = hosting_types()
    if instance_type in known:
        return instance_type
    message = _not_listed(instance_type, known, "hosting", HOSTING_SHAPE)
    fam = instance_type.rsplit(".", 1)[0]
    typo = "did you mean" in message and any(t.rsplit(".", 1)[0] == fam for t in known)
    raise UnknownInstanceType(
        f"{message}; if the type is newer than that list, pass --skip-instance-check", instance_type, typo=typo)


def _size_order(size: str) -> tuple[int, str]:
    order = {"medium": -3, "large": -2, "xlarge": -1}
    m = re.match(r"^(\d+)xlarge$", size)
    return (int(m.group(1)) if m else order.get(size, 1000), size)


def check_well_formed(instance_type: str) -> re.Match:
    """ml.SERIES+GEN[SUFFIX].SIZE, or a UsageError (exit 2) saying what is wrong."""
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
