"""`deploy transform --local`: a transform on this machine, with the image here, by either engine.

The image runs through container.py (same `docker run`, model mount, environment, emulation and
clean-up as `deploy local`), started with the environment SageMaker gives it:

    --engine batch  SAGEMAKER_BATCH=true, as the batch agent sets it;
    both            for what the user gave: SAGEMAKER_MAX_PAYLOAD_IN_MB,
                    SAGEMAKER_BATCH_STRATEGY (SINGLE_RECORD|MULTI_RECORD),
                    SAGEMAKER_MAX_CONCURRENT_TRANSFORMS

Then, as SageMaker's batch agent (and the SageMaker Python SDK's local mode) does:
  1. GET /execution-parameters; a value the user did not give comes from there, else from
     SageMaker's defaults (MultiRecord, 6 MB, 1 at a time);
  2. the transform loop of agent.py: records, requests within MaxPayloadInMB, MultiRecord or
     SingleRecord, `<file>.out` in order, --join-source, failing records as file:line;
  3. the requests reach the container
       batch: as HTTP POSTs, MaxConcurrentTransforms at once (HttpSender);
       async: through async_runtime.py, the async endpoint's runtime played here: each request is
              staged as a file, queued, sent MaxConcurrentTransforms at a time (the endpoint's
              MaxConcurrentInvocationsPerInstance), its answer written to an output or failure
              file and read back; up to --max-in-flight (default twice that) are out at once.
              The staging folder is removed at the end, whatever the ending.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import requests
import requests.adapters

from . import agent, async_runtime, container as local, records as rec
from ..core.errors import DeployError

REQUEST_TIMEOUT = 600
ENGINES = ("batch", "async")


@dataclass(kw_only=True)
class LocalTransformSpec(agent.RecordSettings):
    image: str
    model_data: str
    input: Path
    output: Path
    engine: str = "batch"                  # batch | async
    max_in_flight: int | None = None       # async: requests out at once (default 2 x the concurrency)
    region: str | None = None
    platform: str | None = None
    port: int = 8080
    ping_timeout: float = 600.0
    stream_logs: bool = False


class TransformDone(Exception):
    """Raised from container.run's on_ready to end the container once the transform is done."""


def container_env(spec: LocalTransformSpec) -> dict[str, str]:
    env = {"SAGEMAKER_BATCH": "true"} if spec.engine == "batch" else {}
    return {**env, **rec.batch_env(spec.given), **spec.env}


def effective_parameters(spec: LocalTransformSpec, answered: dict | None) -> tuple[dict, dict]:
    """(values, where each came from: 'flag', '/execution-parameters' or 'default')."""
    return rec.effective_parameters(spec.given, answered, spec.split_type)


class HttpSender:
    """agent.Sender for the batch engine: POST /invocations, one requests session per thread."""

    def __init__(self, url: str, content_type: str, accept: str | None, pool: int):
        self.url = url
        self.headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
        self.pool = pool
        self._local = threading.local()

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.mount("http://", requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=self.pool))
        return s

    def send(self, body: bytes) -> agent.Reply:
        try:
            resp = self._session().post(f"{self.url}/invocations", data=body, headers=self.headers,
                                        timeout=REQUEST_TIMEOUT)
        except requests.RequestException as exc:
            return agent.Reply(0, f"request failed: {exc}".encode(), "text/plain")
        return agent.Reply(resp.status_code, resp.content, resp.headers.get("Content-Type", ""))

    def instances(self) -> int | None:
        return 1

    def cancel(self) -> None:
        pass                                 # a POST in flight ends with its answer or the container


def transform_files(url: str, spec: LocalTransformSpec, parameters: dict, quiet: bool = False,
                    info: Callable[[str], None] = print, stream=None) -> agent.RunResult:
    """The transform loop (agent.py) against a server at URL (the container, or any server: see
    bench/), through spec.engine's plumbing."""
    source, sink = agent.FolderSource(spec.input), agent.FolderSink(spec.output)
    concurrency = int(parameters["MaxConcurrentTransforms"])
    accept = spec.accept or spec.content_type
    if spec.engine == "batch":
        return agent.run(source, sink, HttpSender(url, spec.content_type, accept, concurrency), spec.options,
                         parameters, in_flight=concurrency, quiet=quiet, stream=stream)
    staging = Path(tempfile.mkdtemp(prefix="deploy-transform-async-"))
    in_flight = spec.max_in_flight or 2 * concurrency
    info(f"async: staging requests in {staging}, {concurrency} at a time to the container "
         f"(MaxConcurrentInvocationsPerInstance), up to {in_flight} in flight")
    sender = async_runtime.AsyncFolderSender(url, staging, spec.content_type, accept, concurrency)
    try:
        return agent.run(source, sink, sender, spec.options, parameters, in_flight=in_flight,
                         quiet=quiet, stream=stream)
    finally:
        sender.close()
        shutil.rmtree(staging, ignore_errors=True)
        info(f"async: removed {staging}")


def run(spec: LocalTransformSpec, info: Callable[[str], None], quiet: bool = False) -> agent.RunResult:
    """Start the image (container.py), ask /execution-parameters, transform, stop the image."""
    if spec.split_type not in rec.SPLIT_TYPES:
        raise DeployError(f"--split-type is one of {', '.join(rec.SPLIT_TYPES)}")
    if spec.engine not in ENGINES:
        raise DeployError(f"--engine is batch or async, not {spec.engine!r}")
    agent.FolderSource(spec.input).files()        # refuse a bad --input before Docker starts
    if spec.output.resolve() == (spec.input if spec.input.is_dir() else spec.input.parent).resolve():
        raise DeployError("--output must not be the --input folder")
    lspec = local.LocalSpec(image=spec.image, model_data=spec.model_data, port=spec.port,
                            env=container_env(spec), region=spec.region, platform=spec.platform,
                            ping_timeout=spec.ping_timeout, stream_logs=spec.stream_logs)
    outcome: dict = {}

    def on_ready(url: str) -> None:
        answered = None
        try:
            resp = requests.get(f"{url}/execution-parameters", timeout=30)
            if resp.status_code == 200:
                answered = resp.json()
                info(f"GET /execution-parameters: {json.dumps(answered, sort_keys=True)}")
            else:
                info(f"GET /execution-parameters answered HTTP {resp.status_code}: using defaults")
        except (requests.RequestException, ValueError) as exc:
            info(f"GET /execution-parameters failed ({exc}): using defaults")
        values, sources = effective_parameters(spec, answered)
        info(f"{spec.engine}: " + ", ".join(f"{k} {values[k]} ({sources[k]})" for k in rec.PARAMETERS)
             + f", SplitType {spec.split_type}")
        try:
            result = transform_files(url, spec, values, quiet=quiet, info=info)
        except BaseException:
            outcome["stopped"] = True
            raise
        result.sources = sources
        outcome["result"] = result
        raise TransformDone

    try:
        local.run(lspec, info, None, on_ready=on_ready)
    except TransformDone:
        pass
    if outcome.get("stopped") and "result" not in outcome:
        raise KeyboardInterrupt      # container.run stopped the container; main() reports it
    if "result" not in outcome:
        raise DeployError("the transform did not run")
    return outcome["result"]
