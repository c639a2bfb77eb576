"""Multi-model endpoints (issue 12) in `deploy`: one endpoint, many model archives under an S3 prefix.

    deploy create --multi-model --model-data s3://bucket/prefix/ ...   a Mode: MultiModel model + endpoint
    deploy models add ENDPOINT ARCHIVE|MODEL_DIR [--name N.tar.gz]     upload under the endpoint's prefix
    deploy models list ENDPOINT                                         the archives there (name, size, date)
    deploy invoke ENDPOINT --target-model N.tar.gz ...                  InvokeEndpoint with TargetModel
    deploy local --multi-model DIR ...                                  the container + SageMaker's part, here
    deploy invoke local --local [URL] --target-model N.tar.gz ...       invoke that local endpoint

`create --multi-model` runs `deploy create`'s own steps (endpoint.py): the same local checks first,
the architecture check, the same interruption rule (`--on-interrupt`, rollback of what the run
made) and the same waiting; only the model differs (PrimaryContainer Mode MultiModel, ModelDataUrl
the prefix, SAGEMAKER_MULTI_MODEL=true). Nothing is uploaded by create: archives are added with
`deploy models add` (or any S3 copy) before or after, as SageMaker reads them on first use.

`deploy local --multi-model DIR` (local/multimodel.py) runs the image as a multi-model instance does
and plays SageMaker's part itself; `deploy invoke --local` reaches it through invoke() here. The
command line is commands/multimodel.py.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import botocore.exceptions

from ..core import archive, checks, defaults, interrupts, target_models
from ..core.aws import Aws, error_code, error_message
from ..core.errors import DeployError, UsageError
from . import cleanup, endpoint, invoke as invoke_op, resources

MODE = "MultiModel"
_PREFIX = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/(.*)$")


# --- the S3 prefix ----------------------------------------------------------------------------

def check_prefix(uri: str) -> str:
    """--model-data of a multi-model endpoint: an s3://BUCKET/PREFIX/ (a trailing '/' is added).
    A URI naming one archive is refused: SageMaker reads TargetModel relative to the prefix."""
    m = _PREFIX.match(uri or "")
    if not m and re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/?$", uri or ""):
        return uri.rstrip("/") + "/"          # the bucket's root
    if not m:
        raise UsageError(f"--model-data {uri!r}: a multi-model endpoint takes an S3 prefix, "
                         "s3://BUCKET/PREFIX/ (the folder holding the NAME.tar.gz archives)")
    if uri.endswith((".tar.gz", ".tgz")):
        raise UsageError(f"--model-data {uri!r} names one archive: a multi-model endpoint takes the prefix "
                         f"that holds the archives, e.g. {uri.rsplit('/', 1)[0]}/ (upload more with "
                         "`deploy models add`)")
    return uri if uri.endswith("/") else uri + "/"


# --- the endpoint's model and its prefix -------------------------------------------------------

def multi_model_container(model: dict | None) -> dict | None:
    if not model:
        return None
    for c in [model.get("PrimaryContainer") or {}] + list(model.get("Containers") or []):
        if c.get("Mode") == MODE:
            return c
    return None


def endpoint_prefix(aws: Aws, name: str) -> tuple[str, str]:
    """(the S3 prefix, the model name) of multi-model endpoint NAME: the ModelDataUrl of its
    MultiModel container. DeployError when the endpoint is not a multi-model one."""
    checks.check_name(name, "endpoint")
    d = resources.describe(aws, name)
    if d["config"] is None:
        raise DeployError(f"endpoint {name} runs on an endpoint config that is gone (deleted outside deploy)")
    plain = []
    for model_name, model in d["models"].items():
        c = multi_model_container(model)
        if c is not None:
            url = c.get("ModelDataUrl") or ""
            if not url.startswith("s3://"):
                raise DeployError(f"model {model_name} of endpoint {name} has no S3 ModelDataUrl")
            return (url if url.endswith("/") else url + "/"), model_name
        plain.append(model_name if model else f"{model_name} (gone)")
    raise DeployError(f"endpoint {name} is not a multi-model endpoint (its model {', '.join(plain) or '?'} is "
                      "not Mode MultiModel): create one with `deploy create --multi-model --model-data "
                      "s3://BUCKET/PREFIX/ ...`")


def list_archives(aws: Aws, prefix: str) -> list[dict]:
    bucket, key_prefix = _split_prefix(prefix)
    rows = []
    try:
        for page in aws.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
            for obj in page.get("Contents") or []:
                rel = obj["Key"][len(key_prefix):]
                if rel.endswith((".tar.gz", ".tgz")):
                    rows.append({"name": rel, "size": obj["Size"], "last_modified": obj["LastModified"]})
    except botocore.exceptions.ClientError as exc:
        raise DeployError(f"cannot list {prefix}: {error_message(exc)}") from exc
    return sorted(rows, key=lambda r: r["name"])


def _split_prefix(prefix: str) -> tuple[str, str]:
    bucket, _, key = prefix[len("s3://"):].partition("/")
    return bucket, key


# --- create --multi-model ----------------------------------------------------------------------

class MultiModel(endpoint.SingleModel):
    """A Mode: MultiModel model for endpoint.create: ModelDataUrl is the S3 prefix (nothing is
    uploaded), SAGEMAKER_MULTI_MODEL=true; the prefix is checked when this is made (first)."""

    exists_hint = "use `deploy delete {name}` first, or another --name"

    def __init__(self, spec: endpoint.CreateSpec):
        self.prefix = check_prefix(spec.model_data)
        self.archives: list = []

    def check_locally(self, spec, workdir, reporter) -> None:
        pass

    def check_remotely(self, aws: Aws, spec, reporter) -> None:
        self.archives = list_archives(aws, self.prefix)
        reporter.info(f"model prefix {self.prefix}: {len(self.archives)} archive(s) there now"
                      + ("" if self.archives else " (add some with `deploy models add`)"))

    def container(self, aws: Aws, spec, model_name, reporter, created) -> tuple[dict, str, dict]:
        env = {**defaults.default_env(aws.region, False), "SAGEMAKER_MULTI_MODEL": "true", **spec.env}
        return ({"Image": spec.image, "ModelDataUrl": self.prefix, "Mode": MODE, "Environment": env},
                f" (Mode MultiModel, {self.prefix})",
                {"mode": MODE, "model_data": self.prefix, "archives": len(self.archives)})


def create(aws: Aws, spec: endpoint.CreateSpec, reporter) -> dict:
    """deploy create with a Mode: MultiModel model: endpoint.create's steps, checks and rule."""
    return endpoint.create(aws, spec, reporter, MultiModel(spec))


# --- models add / list -------------------------------------------------------------------------

def add(aws: Aws, name: str, source: str, target: str | None, overwrite: bool, reporter) -> dict:
    """Upload a model archive (or a model folder, packaged as `deploy package` does) under the
    endpoint's prefix. Local checks first; an existing archive of that name is refused unless
    OVERWRITE (SageMaker keeps serving the copy it has loaded)."""
    checks.check_name(name, "endpoint")
    path = Path(source)
    checked = archive.check_local_model(source)      # UsageError (exit 2), no network
    if target is None:
        target = (path.name if checked.kind == "archive" else path.resolve().name + ".tar.gz")
    target_models.check_target(target)
    if checked.kind == "archive" and not target.endswith((".tar.gz", ".tgz")):
        raise UsageError(f"--name {target!r}: name the archive NAME.tar.gz (SageMaker reads a gzip tar)")
    prefix, model_name = endpoint_prefix(aws, name)
    bucket, key_prefix = _split_prefix(prefix)
    key = key_prefix + target
    uri = f"s3://{bucket}/{key}"
    try:
        aws.s3.head_object(Bucket=bucket, Key=key)
        exists = True
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
            raise DeployError(f"cannot read {uri}: {error_message(exc)}") from exc
        exists = False
    if exists and not overwrite:
        raise DeployError(f"{uri} already exists: an endpoint that has it loaded keeps serving its copy, so "
                          "give the new version a new --name (or --overwrite to replace it anyway)")
    with tempfile.TemporaryDirectory(prefix="deploy-mme-") as tmp:
        if checked.kind == "folder":
            tarball = Path(tmp) / "model.tar.gz"
            archive.package(path, tarball)
            reporter.info(f"packaged {path} -> {target} ({checked.model})")
        else:
            tarball = path
            reporter.info(f"model archive {path}: {checked.model}")
        size = tarball.stat().st_size
        try:
            aws.s3.upload_file(str(tarball), bucket, key)
        except BaseException:       # a signal or failure mid-upload: no half multipart upload left billing
            with interrupts.shielded(reporter.info):
                cleanup.abort_uploads(aws, bucket, key)
            raise
    reporter.info(f"uploaded {target} ({size / 1e6:.1f} MB) -> {uri}" + (" (replaced)" if exists else ""))
    return {"endpoint": name, "target_model": target, "uri": uri, "bytes": size, "model": checked.model,
            "replaced": exists}


# --- invoke with TargetModel (an endpoint, or deploy local's proxy) ----------------------------

LOCAL_URL = "http://127.0.0.1:8080"


def runtime_client(aws: Aws | None, local_url: str | None, region: str | None):
    if local_url is None:
        return aws.runtime
    import boto3
    import botocore
    import botocore.config
    cfg = botocore.config.Config(signature_version=botocore.UNSIGNED, retries={"total_max_attempts": 1},
                                 read_timeout=900, connect_timeout=10)
    return boto3.session.Session().client(
        "sagemaker-runtime", endpoint_url=local_url, config=cfg,
        region_name=region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")


def invoke(aws: Aws | None, args, body: bytes, content_type: str) -> tuple[bytes, str]:
    """InvokeEndpoint with TargetModel (when given), against AWS or `--local [URL]`."""
    checks.check_name(args.endpoint, "endpoint")
    target = target_models.check_target(args.target_model) if args.target_model else None
    client = runtime_client(aws, args.local, args.region)
    where = f"{args.endpoint} at {args.local}" if args.local else args.endpoint
    try:
        out = invoke_op.runtime_call(client.invoke_endpoint, f"invoke {where}",
                                     {"EndpointName": args.endpoint, "Body": body, "ContentType": content_type},
                                     TargetModel=target, Accept=args.accept, CustomAttributes=args.custom_attributes)
    except botocore.exceptions.EndpointConnectionError as exc:
        raise DeployError(f"invoke {where}: nothing answers there (is `deploy local --multi-model` "
                          f"running?): {exc}") from exc
    return out["Body"].read(), out.get("ContentType", "")
