"""boto3 session and clients: region and credentials from flags, environment or profile.

boto3 itself honours AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_<SERVICE>), which is how the tests
point every client at a moto server; --endpoint-url does the same from the command line.
Nothing here ever prints or logs a credential.
"""

from __future__ import annotations

import functools
import os
import re

import boto3
import botocore.config
import botocore.exceptions
import botocore.loaders
import botocore.session

from .errors import DeployError

RETRIES = {"max_attempts": 8, "mode": "standard"}
_LOADERS: dict[str | None, botocore.loaders.Loader] = {}     # data_path -> loader, for this process


def _session(profile: str | None, region: str | None) -> boto3.Session:
    """A boto3 session whose botocore data loader is shared with this process's earlier sessions.

    The loader holds the parsed service models; parsing them (SageMaker's is megabytes of JSON) is
    most of what a new client costs. A command makes one session, so this changes nothing for it;
    a process that runs many commands (the tests call main() hundreds of times) parses each model
    once instead of once per command. The loader only reads botocore's and boto3's data files.
    """
    core = botocore.session.Session()

    def loader() -> botocore.loaders.Loader:
        path = core.get_config_variable("data_path")     # read once the profile is set
        if path not in _LOADERS:
            _LOADERS[path] = botocore.loaders.create_loader(path)
        return _LOADERS[path]
    core.lazy_register_component("data_loader", loader)
    session = boto3.Session(botocore_session=core, profile_name=profile, region_name=region)
    shared = core.get_component("data_loader")
    shared.search_paths[:] = list(dict.fromkeys(shared.search_paths))   # boto3 appends its own path each time
    return session


class Aws:
    """One session, lazily created clients, and the account/region they act for."""

    def __init__(self, region: str | None = None, profile: str | None = None,
                 endpoint_url: str | None = None):
        # precedence as in the AWS CLI v2: --region, AWS_REGION, AWS_DEFAULT_REGION, the profile
        # (botocore itself reads only the last two)
        region = region or os.environ.get("AWS_REGION") or None
        try:
            self.session = _session(profile, region)
        except botocore.exceptions.ProfileNotFound as exc:
            raise DeployError(str(exc)) from exc
        self.region = self.session.region_name
        if not self.region:
            raise DeployError("no AWS region: pass --region, set AWS_REGION/AWS_DEFAULT_REGION "
                              "or configure one in your profile")
        self.endpoint_url = endpoint_url
        self.config = botocore.config.Config(retries=RETRIES, user_agent_extra="sagemaker-tf-graviton-deploy")
        self._clients: dict[str, object] = {}

    def client(self, service: str, region: str | None = None):
        key = f"{service}@{region or self.region}"
        if key not in self._clients:
            kwargs = {"region_name": region or self.region, "config": self.config}
            if self.endpoint_url:
                kwargs["endpoint_url"] = self.endpoint_url
            self._clients[key] = self.session.client(service, **kwargs)
        return self._clients[key]

    @property
    def sagemaker(self):
        return self.client("sagemaker")

    @property
    def runtime(self):
        return self.client("sagemaker-runtime")

    @property
    def s3(self):
        return self.client("s3")

    @property
    def autoscaling(self):
        return self.client("application-autoscaling")

    @property
    def cloudwatch(self):
        return self.client("cloudwatch")

    def ecr(self, region: str | None = None):
        return self.client("ecr", region)

    @functools.cached_property
    def account(self) -> str:
        try:
            return self.client("sts").get_caller_identity()["Account"]
        except botocore.exceptions.NoCredentialsError as exc:
            raise DeployError("no AWS credentials found (environment, profile or instance role)") from exc

    def default_bucket(self) -> str:
        return f"sagemaker-{self.region}-{self.account}"


def error_code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return exc.response.get("Error", {}).get("Code", "")
    return ""


MAX_MESSAGE = 500


def summarized(message: str, status: int | str | None = None) -> str:
    """A service's error text as one short line: an HTML page (a proxy's or a load balancer's, which
    botocore passes on as the message when the body is no AWS error) becomes its <title> and
    status, anything else is cut at MAX_MESSAGE characters."""
    text = (message or "").strip()
    if re.match(r"(?is)\s*(<!doctype html|<html)", text):
        title = re.search(r"(?is)<title[^>]*>(.*?)</title>", text)
        what = f" ({' '.join(title.group(1).split())})" if title else ""
        return f"the service answered with an HTML page{what}" + (f", HTTP {status}" if status else "") + \
            ", not an AWS error: a proxy or an outage between here and AWS?"
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


def error_message(exc: BaseException) -> str:
    """A short, credential-free description of an AWS error."""
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        op = getattr(exc, "operation_name", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"{op}: {err.get('Code', '')}: {summarized(err.get('Message', ''), status)}".strip(": ")
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def not_found(exc: BaseException) -> bool:
    """An AWS error that says the resource is not there (SageMaker's ValidationException
    "Could not find ...", S3's NoSuchKey / 404)."""
    return error_code(exc) in ("ValidationException", "ResourceNotFound", "NoSuchKey", "404") and (
        "Could not find" in error_message(exc) or "not found" in error_message(exc).lower()
        or error_code(exc) in ("NoSuchKey", "404"))
