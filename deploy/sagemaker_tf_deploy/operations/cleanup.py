"""What one run created, and how it is undone: `Created` records each resource just before the call
that makes it (so a signal during the call still gets it deleted), `rollback` deletes them newest
first, `gone_or` runs one delete where a resource already gone counts as deleted.

Reason to change: what a run may leave behind and the order it is removed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import botocore.exceptions

from ..core import interrupts
from . import scaling, waiting
from ..core.aws import Aws, error_message, not_found
from ..core.output import Reporter


@dataclass
class Created:
    """What one run created (or asked for: a field is set just before its call, so a signal that
    lands while the call is in flight still gets it undone), in creation order."""

    s3_object: tuple[str, str] | None = None
    model: str | None = None
    endpoint_config: str | None = None
    endpoint: str | None = None
    scaling: tuple[str, str] | None = None        # (endpoint, variant) whose auto scaling this run set

    def labels(self) -> list[str]:
        out = []
        if self.scaling:
            out.append(f"auto scaling of {scaling.resource_id(*self.scaling)}")
        if self.endpoint:
            out.append(f"endpoint {self.endpoint}")
        if self.endpoint_config:
            out.append(f"endpoint config {self.endpoint_config}")
        if self.model:
            out.append(f"model {self.model}")
        if self.s3_object:
            out.append(f"s3://{self.s3_object[0]}/{self.s3_object[1]}")
        return out


def gone_or(label: str, call, reporter: Reporter, prefix: str = "rolled back: deleted") -> bool:
    """Run a delete CALL; a resource that is already gone counts as deleted."""
    try:
        call()
        reporter.info(f"{prefix} {label}")
        return True
    except botocore.exceptions.ClientError as exc:
        if not_found(exc):
            reporter.info(f"{label} was already gone")
            return True
        reporter.info(f"could not delete {label}: {error_message(exc)}")
        return False


def rollback(aws: Aws, created: Created, reporter: Reporter, *, timeout: float = 1800.0, poll: float = 15.0,
             shield: interrupts.Shield | None = None) -> list[str]:
    """Delete what this run created, newest first. Returns what could not be deleted."""
    left = []
    if created.scaling:
        scaling.deregister(aws, created.scaling[0], [created.scaling[1]], reporter)
    if created.endpoint:
        name = created.endpoint
        if waiting.delete_endpoint_when_possible(aws, name, reporter, timeout=timeout, poll=poll, shield=shield):
            reporter.info(f"rolled back: deleted endpoint {name}")
        else:
            left.append(f"endpoint {name}")
    if created.endpoint_config:
        if not gone_or(f"endpoint config {created.endpoint_config}",
                       lambda: aws.sagemaker.delete_endpoint_config(EndpointConfigName=created.endpoint_config),
                       reporter):
            left.append(f"endpoint config {created.endpoint_config}")
    if created.model:
        if not gone_or(f"model {created.model}", lambda: aws.sagemaker.delete_model(ModelName=created.model),
                       reporter):
            left.append(f"model {created.model}")
    if created.s3_object:
        bucket, key = created.s3_object
        abort_uploads(aws, bucket, key)
        if not gone_or(f"s3://{bucket}/{key}", lambda: aws.s3.delete_object(Bucket=bucket, Key=key), reporter):
            left.append(f"s3://{bucket}/{key}")
    return left


def abort_uploads(aws: Aws, bucket: str, key: str) -> None:
    """Abort multipart uploads of KEY an interrupted upload_file may have left (they bill as storage)."""
    try:
        uploads = aws.s3.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads") or []
        for u in uploads:
            if u.get("Key") == key:
                aws.s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=u["UploadId"])
    except botocore.exceptions.ClientError:
        pass
