"""SageMaker instance type -> CPU architecture, and the image/instance compatibility rule."""

from __future__ import annotations

import re

from .errors import DeployError

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
