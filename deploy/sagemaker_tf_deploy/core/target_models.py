"""A multi-model endpoint's target models: what is accepted as a TargetModel (a path relative to
the endpoint's S3 prefix), and the name the container knows one by. Used on AWS
(operations/multimodel.py) and by the local proxy that plays SageMaker's part (local/multimodel.py).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePosixPath

from .errors import UsageError


def check_target(target: str) -> str:
    """A TargetModel: a relative path under the prefix, with no '..' and no leading '/'."""
    if not target or target.startswith("/") or ".." in PurePosixPath(target).parts or "\\" in target \
            or len(target) > 1024:
        raise UsageError(f"target model {target!r}: give a path relative to the endpoint's S3 prefix, "
                         "such as digits.tar.gz (no leading '/', no '..')")
    return target


def container_name(target: str) -> str:
    """The name the container knows a target by (POST /models model_name, /models/<name>):
    'digits.tar.gz' -> 'digits'; other characters become '-', with a short hash when the
    name had to change, so two targets never share one."""
    stem = re.sub(r"\.(tar\.gz|tgz)$", "", target)
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-") or "model"
    if name != stem:
        name = f"{name[:50]}-{hashlib.sha1(target.encode()).hexdigest()[:8]}"
    return name[:63]
