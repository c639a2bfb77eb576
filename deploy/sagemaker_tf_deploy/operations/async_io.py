"""The async engine's plumbing on AWS: S3 in and out, and a request's trip through an async endpoint.

  * S3Source / S3Sink: the --input prefix's objects (sorted by key, names relative to the prefix,
    as batch transform's S3Prefix) and `<name>.out` under the --output prefix;
  * AsyncS3Sender (agent.Sender): a request body is staged as s3://BUCKET/RUN/requests/<id>,
    InvokeEndpointAsync(InputLocation=...) is called (async_endpoint.invoke), and the answer is
    read back from the OutputLocation or FailureLocation SageMaker named (not with
    async_endpoint.wait_for_answer, which polls one request's objects: with many out, listing
    the prefixes costs one call however many are waiting). One collector thread lists the prefixes
    of the requests in flight every POLL seconds (two LIST calls however many are out), reads
    what appeared and deletes it, staged request included. A throttled or failed invoke call
    and a request SageMaker expired are transient (the agent sends them again); any other
    failure object is the container's refusal: SageMaker keeps no status with it, so it is
    taken as a 500 (the agent halves a multi-record request to find the records that fail).
  * The collector also reads the endpoint's instance count every INSTANCE_POLL seconds, for the
    progress line and the instance-hours of the cost line.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import botocore.exceptions

from ..core.aws import Aws, error_code, error_message
from ..core.errors import DeployError
from ..local.agent import InputFile, Reply
from . import async_endpoint

TRANSIENT_CODES = frozenset({"ThrottlingException", "Throttling", "ThrottledException", "ServiceUnavailable",
                             "ServiceUnavailableException", "InternalFailure", "InternalServerError",
                             "InternalDependencyException", "ModelNotReadyException", "SlowDown",
                             "RequestTimeout", "RequestTimeoutException"})
EXPIRED_WORDS = ("expired", "timed out", "timeout")
INSTANCE_POLL = 15.0
GENERIC_TYPES = ("", "binary/octet-stream", "application/octet-stream")


def parse_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


class S3Source:
    """Objects under s3://BUCKET/PREFIX, read one at a time."""

    def __init__(self, aws: Aws, uri: str):
        self.aws = aws
        self.bucket, self.prefix = parse_s3(uri)

    def files(self) -> list[InputFile]:
        found = []
        try:
            for page in self.aws.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith("/"):
                        continue
                    found.append(InputFile(obj["Key"][len(self.prefix):].lstrip("/"), obj["Size"]))
        except botocore.exceptions.ClientError as exc:
            raise DeployError(f"cannot list --input s3://{self.bucket}/{self.prefix}: {error_message(exc)}") from exc
        if not found:
            raise DeployError(f"--input s3://{self.bucket}/{self.prefix} holds no objects: nothing to transform")
        return sorted(found, key=lambda f: f.name)

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}" if not self.prefix or self.prefix.endswith("/") else f"{self.prefix}/{name}"

    def read(self, name: str) -> bytes:
        return self.aws.s3.get_object(Bucket=self.bucket, Key=self.key(name))["Body"].read()


class S3Sink:
    """`<name>.out` under s3://BUCKET/PREFIX/ (a '/' added to a prefix without one, as SageMaker does)."""

    def __init__(self, aws: Aws, uri: str):
        self.aws = aws
        self.bucket, prefix = parse_s3(uri)
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"

    def write(self, name: str, data: bytes) -> str:
        key = f"{self.prefix}{name}"
        self.aws.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        return f"s3://{self.bucket}/{key}"


@dataclass
class _Waiter:
    request_key: str
    output: tuple[str, str]
    failure: tuple[str, str]
    event: threading.Event = field(default_factory=threading.Event)
    reply: Reply | None = None


class AsyncS3Sender:
    """agent.Sender through an async endpoint (see the module's docstring)."""

    def __init__(self, aws: Aws, endpoint: str, bucket: str, run_prefix: str, content_type: str,
                 accept: str | None, *, poll: float = 1.0, instance_poll: float = INSTANCE_POLL):
        self.aws = aws
        self.endpoint = endpoint
        self.bucket = bucket
        self.run_prefix = run_prefix.rstrip("/")
        self.content_type = content_type
        self.accept = accept
        self.poll = poll
        self.instance_poll = instance_poll
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: dict[tuple[str, str], _Waiter] = {}       # output or failure location -> waiter
        self._stop = threading.Event()
        self._instances: int | None = None
        self._instance_seconds = 0.0
        self._counted_at = time.monotonic()
        self._collector = threading.Thread(target=self._collect, name="async-collector", daemon=True)
        self._collector.start()

    # --- agent.Sender ---
    def send(self, body: bytes) -> Reply:
        if self._stop.is_set():
            return Reply(0, b"stopped before the request was sent")
        inference_id = f"{self.endpoint}-{next(self._ids):08d}"[-64:]
        key = f"{self.run_prefix}/requests/{inference_id}"
        try:
            self.aws.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=self.content_type)
        except botocore.exceptions.ClientError as exc:
            return Reply(0, f"could not stage the request in S3: {error_message(exc)}".encode(), transient=True)
        try:
            invocation = async_endpoint.invoke(self.aws, self.endpoint, f"s3://{self.bucket}/{key}",
                                               self.content_type, self.accept, inference_id)
        except DeployError as exc:                              # SageMaker refused or throttled the call
            self._delete(self.bucket, key)
            return Reply(0, str(exc).encode(), transient=error_code(exc.__cause__) in TRANSIENT_CODES)
        except botocore.exceptions.BotoCoreError as exc:       # the network
            self._delete(self.bucket, key)
            return Reply(0, f"InvokeEndpointAsync: {exc}".encode(), transient=True)
        waiter = _Waiter(key, parse_s3(invocation.output), parse_s3(invocation.failure or ""))
        with self._lock:
            if self._stop.is_set():                   # cancelled while the invoke call was out
                return Reply(0, b"stopped before the answer came")
            self._waiting[waiter.output] = waiter
            if waiter.failure[0]:
                self._waiting[waiter.failure] = waiter
        waiter.event.wait()
        return waiter.reply

    def instances(self) -> int | None:
        return self._instances

    def cancel(self) -> None:
        """A stop: every request still out is answered at once (no answer), the collector ends."""
        with self._lock:
            self._stop.set()
            waiters = list(self._waiting.values())
            self._waiting.clear()
        for waiter in waiters:
            if waiter.reply is None:
                waiter.reply = Reply(0, b"stopped before the answer came")
            waiter.event.set()

    def close(self) -> float:
        """Stop the collector; returns the instance-seconds counted."""
        self._stop.set()
        self._collector.join(timeout=30)
        self._count_instances(None)
        return self._instance_seconds

    # --- the collector ---
    def _count_instances(self, now_count: int | None) -> None:
        now = time.monotonic()
        if self._instances:
            self._instance_seconds += self._instances * (now - self._counted_at)
        self._counted_at = now
        if now_count is not None:
            self._instances = now_count

    def _read_instances(self) -> None:
        try:
            desc = self.aws.sagemaker.describe_endpoint(EndpointName=self.endpoint)
        except botocore.exceptions.ClientError:
            return
        count = sum(v.get("CurrentInstanceCount", 0) or 0 for v in desc.get("ProductionVariants") or [])
        self._count_instances(count)

    def _collect(self) -> None:
        last_instances = 0.0
        while not self._stop.is_set():
            if time.monotonic() - last_instances >= self.instance_poll:
                last_instances = time.monotonic()
                self._read_instances()
            with self._lock:
                prefixes = {(b, k.rsplit("/", 1)[0] + "/" if "/" in k else "") for b, k in self._waiting}
            for bucket, prefix in sorted(prefixes):
                try:
                    pages = self.aws.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
                except botocore.exceptions.ClientError:
                    continue                               # the next round lists again
                for key in keys:
                    with self._lock:
                        waiter = self._waiting.get((bucket, key))
                    if waiter is not None:
                        self._settle(waiter, (bucket, key))
            self._stop.wait(self.poll)

    def _settle(self, waiter: _Waiter, location: tuple[str, str]) -> None:
        bucket, key = location
        try:
            obj = self.aws.s3.get_object(Bucket=bucket, Key=key)
            body = obj["Body"].read()
            content_type = obj.get("ContentType", "")
            if content_type in GENERIC_TYPES:      # S3's default, not the container's: ask for Accept's
                content_type = ""
        except botocore.exceptions.ClientError:
            return                                          # listed but not readable yet: next round
        if location == waiter.output:
            reply = Reply(200, body, content_type)
        else:
            text = body.decode("utf-8", errors="replace").lower()
            reply = Reply(500, body, transient=any(w in text for w in EXPIRED_WORDS),
                          origin="async failure")    # its object is deleted once read
        with self._lock:
            self._waiting.pop(waiter.output, None)
            self._waiting.pop(waiter.failure, None)
        for b, k in ((bucket, key), (self.bucket, waiter.request_key)):
            self._delete(b, k)
        waiter.reply = reply
        waiter.event.set()

    def _delete(self, bucket: str, key: str) -> None:
        try:
            self.aws.s3.delete_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError:
            pass                                            # the run's prefix is removed at the end anyway
