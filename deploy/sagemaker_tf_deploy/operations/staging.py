"""Model data on its way to S3: the local checks on --model-data (a folder is packaged), the bucket,
the upload (cleanup.abort_uploads undoes one a signal cut short), and reading an s3:// archive
to see whether it carries code/inference.py.

Reason to change: how model data reaches S3 (buckets, keys, uploads, what is read back).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import botocore.exceptions

from ..core import archive, checks
from ..core.aws import Aws, error_code, error_message
from ..core.errors import DeployError
from ..core.output import Reporter
from .cleanup import Created


def split_s3(uri: str) -> tuple[str, str]:
    m = re.match(r"^s3://([^/]+)/(.+)$", uri)
    if not m:
        raise DeployError(f"{uri!r} is not an s3://BUCKET/KEY URI")
    return m.group(1), m.group(2)


def ensure_bucket(aws: Aws, bucket: str, reporter: Reporter) -> bool:
    """Create BUCKET if it does not exist; True when this call created it."""
    try:
        aws.s3.head_bucket(Bucket=bucket)
        return False
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise DeployError(f"cannot use bucket {bucket}: {error_message(exc)}") from exc
    kwargs = {"Bucket": bucket}
    if aws.region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": aws.region}
    aws.s3.create_bucket(**kwargs)
    reporter.info(f"created bucket s3://{bucket}")
    return True


def s3_has_user_code(aws: Aws, uri: str) -> bool:
    bucket, key = split_s3(uri)
    try:
        body = aws.s3.get_object(Bucket=bucket, Key=key)["Body"]
    except botocore.exceptions.ClientError as exc:
        raise DeployError(f"cannot read {uri}: {error_message(exc)}") from exc
    try:
        return archive.stream_has_user_code(body)
    except Exception as exc:  # tarfile errors, truncated gzip
        raise DeployError(f"{uri} is not a readable model.tar.gz (tar.gz of a SavedModel or Keras "
                          f"file): {type(exc).__name__}") from exc
    finally:
        body.close()


@dataclass
class LocalModel:
    """Model data after the local checks: an s3:// URI (checked later), or a tarball ready to upload."""

    uri: str | None = None
    tarball: Path | None = None
    has_code: bool | None = None
    checked: archive.CheckedModel | None = None


def prepare_model_data(model_data: str, workdir: Path, reporter: Reporter) -> LocalModel:
    """Local checks on --model-data (no network); a folder is packaged into WORKDIR."""
    checked = checks.check_model_data(model_data)
    if checked is None:
        return LocalModel(uri=model_data)
    if checked.kind == "folder":
        tarball = workdir / "model.tar.gz"
        archive.package(checked.source, tarball)
        reporter.info(f"packaged {checked.source} -> model.tar.gz ({checked.model})")
    else:
        tarball = checked.source
        reporter.info(f"model archive {checked.source}: {checked.model}")
    return LocalModel(tarball=tarball, has_code=checked.has_code, checked=checked)


def stage_model_data(aws: Aws, model: LocalModel, bucket: str | None, key_prefix: str,
                      reporter: Reporter, created: Created) -> tuple[str, bool]:
    """Returns (s3 uri, has user code), uploading a local archive."""
    if model.uri is not None:
        bucket_name, key = split_s3(model.uri)
        try:
            aws.s3.head_object(Bucket=bucket_name, Key=key)
        except botocore.exceptions.ClientError as exc:
            raise DeployError(f"model data {model.uri} is not readable: {error_message(exc)}") from exc
        return model.uri, s3_has_user_code(aws, model.uri)
    bucket = bucket or aws.default_bucket()
    ensure_bucket(aws, bucket, reporter)
    key = f"{key_prefix}/model.tar.gz"
    size = model.tarball.stat().st_size
    created.s3_object = (bucket, key)
    aws.s3.upload_file(str(model.tarball), bucket, key)
    uri = f"s3://{bucket}/{key}"
    reporter.info(f"uploaded {model.tarball.name} ({size / 1e6:.1f} MB) -> {uri}")
    return uri, bool(model.has_code)

