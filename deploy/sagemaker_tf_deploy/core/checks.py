"""Checks that need no network, run before any AWS call; each failure is a UsageError (exit 2).

- SageMaker names (endpoints, models, endpoint configs), naming the rule broken;
- the execution role: given (--role) or found ($SAGEMAKER_ROLE_ARN), and shaped like an IAM role ARN;
- the instance type against SageMaker's list of hosting instance types (instance.py, with its date);
- the image: in Amazon ECR, in the endpoint's region (registry.check_ecr_location);
- a local model folder or archive, read with the server's own code (archive.check_local_model);
- --env pairs and counts.
"""

from __future__ import annotations

import os
import re

from . import archive, instance, registry
from .errors import UsageError

NAME_MAX = 63
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role/[\w+=,.@/-]{1,512}$")


def check_name(name: str, what: str = "endpoint") -> str:
    """SageMaker's rule for endpoint, endpoint config and model names: 1 to 63 characters, letters,
    digits and hyphens, starting and ending with a letter or digit (^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62})."""
    if not name:
        raise UsageError(f"{what} name is empty: SageMaker names have 1 to {NAME_MAX} characters")
    if len(name) > NAME_MAX:
        raise UsageError(f"{what} name {name!r} is {len(name)} characters long: SageMaker allows at most {NAME_MAX}")
    bad = next(((i, c) for i, c in enumerate(name) if not (c.isascii() and (c.isalnum() or c == "-"))), None)
    if bad:
        raise UsageError(f"{what} name {name!r} has {bad[1]!r} at position {bad[0] + 1}: SageMaker names "
                         "allow only letters, digits and hyphens (no '_', '.', spaces)")
    if name[0] == "-":
        raise UsageError(f"{what} name {name!r} starts with a hyphen: SageMaker names start with a letter or digit")
    if name[-1] == "-":
        raise UsageError(f"{what} name {name!r} ends with a hyphen: SageMaker names end with a letter or digit")
    return name


def check_role(role: str | None) -> str:
    """The execution role ARN, from --role or $SAGEMAKER_ROLE_ARN."""
    role = role or os.environ.get("SAGEMAKER_ROLE_ARN") or None
    if not role:
        raise UsageError("an execution role is required: pass --role arn:aws:iam::ACCOUNT:role/NAME or set "
                         "SAGEMAKER_ROLE_ARN (the role SageMaker assumes to pull the image and read the model "
                         "data; it needs the AmazonSageMakerFullAccess policy or ECR/S3 read access)")
    if not _ROLE_ARN.match(role):
        hint = " (that is a role name; give its ARN)" if "/" not in role and ":" not in role else ""
        raise UsageError(f"--role {role!r} is not an IAM role ARN of the form "
                         f"arn:aws:iam::123456789012:role/NAME{hint}")
    return role


def check_count(count: int | None, flag: str = "--instance-count") -> None:
    if count is not None and count < 1:
        raise UsageError(f"{flag} must be at least 1 (got {count})")


def check_instance_type(instance_type: str, skip_list: bool = False,
                        defer_unknown: bool = False) -> instance.UnknownInstanceType | None:
    """Well formed, and in SageMaker's list of hosting instance types unless SKIP_LIST.

    A typo of a known type is refused at once. With DEFER_UNKNOWN, a type that may merely be newer
    than the list is returned (as the UnknownInstanceType) for the caller to confirm with the
    service once every local check has passed (instance.confirm_with_service)."""
    if skip_list:
        instance.check_well_formed(instance_type)
        return None
    try:
        instance.check_hosting_type(instance_type)
    except instance.UnknownInstanceType as exc:
        if defer_unknown and not exc.typo:
            return exc
        raise
    return None


MAX_POOLS = 5          # InstancePoolList holds 1..5 pools (Priority 1..5) in botocore's SageMaker model


def check_fallbacks(primary: str | None, text: str | None, skip_list: bool = False) -> list[str]:
    """--fallback-instance-types T1,T2: hosting types (unless SKIP_LIST), none repeated nor equal to
    the primary, at most MAX_POOLS - 1 of them. Returns them in priority order."""
    if text is None:
        return []
    types = [t.strip() for t in text.split(",")]
    if not all(types):
        raise UsageError(f"--fallback-instance-types {text!r}: give types separated by commas, e.g. "
                         "ml.c7g.xlarge,ml.c6i.xlarge")
    if len(types) > MAX_POOLS - 1:
        raise UsageError(f"--fallback-instance-types: at most {MAX_POOLS - 1} (a variant has at most "
                         f"{MAX_POOLS} instance pools, --instance-type being the first)")
    seen = {primary} if primary else set()
    for t in types:
        if t in seen:
            raise UsageError(f"--fallback-instance-types: {t} is listed twice (with --instance-type)")
        seen.add(t)
        if skip_list:
            instance.check_well_formed(t)
        else:
            instance.check_hosting_type(t)
    return types


def check_image(image: str, region: str):
    return registry.check_ecr_location(image, region)


def check_model_data(model_data: str) -> archive.CheckedModel | None:
    """A local folder or archive is checked now; an s3:// URI later (it needs the network)."""
    if model_data.startswith("s3://"):
        if not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$", model_data):
            raise UsageError(f"--model-data {model_data!r} is not an s3://BUCKET/KEY URI")
        return None
    return archive.check_local_model(model_data)


def parse_env(pairs: list[str] | None) -> dict[str, str]:
    env = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise UsageError(f"--env {pair!r} is not KEY=VALUE (KEY: letters, digits, '_', not starting with a digit)")
        env[key] = value
    return env
