"""Every environment variable the server honours, typed and validated once at start.

Nothing else in the package reads ``os.environ``: the rest of the code receives a
``Settings`` instance. Names follow SageMaker's own containers so that a
``create_model`` Environment written for them keeps working here, and AWS's TensorFlow
serving container's own names (``AWS_CONTAINER_ALIASES``) are read where they mean something
here; ours win when both are set.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from pydantic import AliasChoices, Field, PrivateAttr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOG_LEVELS = (10, 20, 30, 40, 50)


class SettingsError(ValueError):
    """A variable has a value the server cannot start with; the message names it."""


class Settings(BaseSettings):
    # An empty variable means unset, as in a shell's VAR= (and a CreateModel Environment entry left blank).
    model_config = SettingsConfigDict(env_prefix="SAGEMAKER_", extra="ignore", frozen=True, env_ignore_empty=True)
    _aliases: dict = PrivateAttr(default_factory=dict)

    base_dir: Path = Field(Path("/opt/ml"), description="the model is read from BASE_DIR/model (multi-model: "
                                                  "BASE_DIR/models)")
    bind_to_port: int = Field(8080, ge=1, le=65535, description="port to listen on, on 0.0.0.0 (the images let "
                                                                 "SageMaker move it: accept-bind-to-port)")
    model_server_workers: Optional[int] = Field(
        None, ge=1, le=256, description="HTTP workers (gunicorn processes without TensorFlow); default: "
                                        "vCPUs up to 4, then 5/8 of the vCPUs (at most 128)")
    model_server_threads: int = Field(
        64, ge=2, le=1024,
        description="request slots per HTTP worker: how many requests one worker has in flight at once "
                    "(they mostly wait on the model process; /ping takes no slot)",
    )
    model_server_timeout: int = Field(60, ge=1, le=3600, description="seconds any one request may take, end "
                                                                       "to end; past it the caller gets a 504")
    model_server_body_timeout: int = Field(
        20, ge=1, le=3600, description="seconds a request body may pause between bytes before the upload is "
                                       "answered (400: shorter than its Content-Length) and its connection "
                                       "closed (a stalled client must not hold a thread)")
    max_payload_in_mb: int = Field(6, ge=1, le=1024, description="request body limit in MiB (SageMaker's "
                                   "real-time limit); a larger body is a 413, decided from Content-Length")
    container_log_level: int = Field(20, description="log level: 10, 20, 30, 40 or 50 (DEBUG, INFO, WARNING, "
                                                    "ERROR, CRITICAL); at 10 start-up failures log their traceback")
    program: Optional[str] = Field(None, description="the user script's file name; default inference.py")
    submit_directory: Optional[str] = Field(None, description="folder, .tar.gz or s3:// URI of one, holding "
                                                           "the script; default BASE_DIR/model/code")
    region: Optional[str] = Field(None, description="AWS region for an s3:// SAGEMAKER_SUBMIT_DIRECTORY")
    pip_install_timeout: int = Field(
        600, ge=10, le=3600, description="seconds installing the user code's requirements.txt may take in all "
                                         "(each connection also gives up after 15 s, retried twice); past it pip "
                                         "is stopped and the start, or the multi-model load, fails saying so")

    multi_model: bool = Field(False, description="SageMaker multi-model endpoint: models come and go through "
                                                 "/models, from BASE_DIR/models")
    tfs_wait_time_seconds: int = Field(
        300, ge=1, le=3600, description="multi-model: how long loading one model (POST /models) may take")
    tfs_instance_count: Optional[int] = Field(
        None, ge=1, le=64, description="model processes (AWS's container: TF Serving processes), each holding "
                                       "every model and a share of the vCPUs; default: 1 up to 8 vCPUs, "
                                       "then vCPUs / 8")
    tfs_default_model_name: Optional[str] = Field(
        None, description="model served when a request names none (default: the only or first one)")
    tfs_max_enqueued_batches: Optional[int] = Field(
        None, ge=1, description="refuse (503) requests beyond this many batches queued per worker")
    tfs_nginx_loglevel: Optional[str] = Field(
        None, description="AWS container's nginx log level, mapped to the access log: debug logs every "
                          "request (and /ping), info every request, warn/error (default) failures only")
    tfs_enable_batching: bool = Field(True, description="adaptive batching of concurrent requests (a lone "
                                                      "request never waits)")
    tfs_max_batch_size: int = Field(32, ge=1, le=4096, description="most instances in one model call")
    tfs_batch_timeout_micros: int = Field(
        2000, ge=0, le=10_000_000, description="accepted as AWS's container takes it; the model process never "
                                               "waits for a forming batch: a batch is what arrived while the "
                                               "call before it ran")
    tfs_intra_op_parallelism: Optional[int] = Field(
        None, ge=1, le=1024, description="TensorFlow intra-op threads per model process; default: vCPUs / "
                                         "model processes")
    tfs_inter_op_parallelism: Optional[int] = Field(
        None, ge=1, le=1024, description="TensorFlow inter-op threads per model process; default: 1 (2 with "
                                         "4 or more intra-op threads)")

    # Graviton tuning; left unset here means "decide from the CPU" (see tuning.py).
    tf_enable_onednn_opts: Optional[str] = Field(
        None, validation_alias=AliasChoices("TF_ENABLE_ONEDNN_OPTS"),
        description="0 or 1: oneDNN kernels; default 1 (TensorFlow turns them on by itself only on "
                    "Graviton3; Graviton2 and 4 need this)")
    dnnl_default_fpmath_mode: Optional[str] = Field(
        None, validation_alias=AliasChoices("DNNL_DEFAULT_FPMATH_MODE"),
        description="oneDNN fast math: STRICT, BF16, F16, TF32 or ANY; default BF16 where the CPU has bf16 "
                    "matrix units (Graviton3 and newer, x86 AMX), else unset (fp32); STRICT turns it off")

    @field_validator("container_log_level")
    @classmethod
    def _known_level(cls, v: int) -> int:
        if v not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(map(str, LOG_LEVELS))} (DEBUG..CRITICAL)")
        return v

    @field_validator("tfs_nginx_loglevel")
    @classmethod
    def _nginx_level(cls, v: Optional[str]) -> Optional[str]:
        allowed = ("debug", "info", "notice", "warn", "error", "crit", "alert", "emerg")
        if v is not None and v.lower() not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return v.lower() if v is not None else v

    @field_validator("tf_enable_onednn_opts")
    @classmethod
    def _zero_or_one(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and v not in ("0", "1"):
            raise ValueError("must be 0 or 1")
        return v

    @field_validator("dnnl_default_fpmath_mode")
    @classmethod
    def _fpmath(cls, v: Optional[str]) -> Optional[str]:
        allowed = ("STRICT", "BF16", "F16", "TF32", "ANY")
        if v is not None and v.upper() not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return v.upper() if v is not None else v

    @property
    def model_dir(self) -> Path:
        return self.base_dir / "model"

    @property
    def models_dir(self) -> Path:
        return self.base_dir / "models"

    @property
    def max_payload_bytes(self) -> int:
        return self.max_payload_in_mb * 1024 * 1024

    @property
    def batch_timeout_s(self) -> float:
        return self.tfs_batch_timeout_micros / 1e6

    @property
    def max_queued(self) -> int | None:
        """Requests a worker may hold at once, TF Serving's max_enqueued_batches x max_batch_size."""
        if self.tfs_max_enqueued_batches is None:
            return None
        return self.tfs_max_enqueued_batches * self.tfs_max_batch_size

    @property
    def aliases_applied(self) -> dict[str, str]:
        """field -> the AWS-container variable that set it (see AWS_CONTAINER_ALIASES)."""
        return dict(self._aliases)

    @property
    def access_log_level(self) -> str:
        """'all' (with /ping), 'requests' or 'failures': what the access log shows at INFO."""
        level = self.tfs_nginx_loglevel or "error"
        return {"debug": "all", "info": "requests", "notice": "requests"}.get(level, "failures")


# AWS's TensorFlow serving container's names for what a field here means, tried in order when
# our own name is not set. The request timeout is the larger of the two timeouts, as there.
AWS_CONTAINER_ALIASES = {
    "model_server_workers": ("SAGEMAKER_GUNICORN_WORKERS",),
    "model_server_threads": ("SAGEMAKER_GUNICORN_THREADS",),
    "model_server_timeout": ("SAGEMAKER_GUNICORN_TIMEOUT_SECONDS", "SAGEMAKER_NGINX_PROXY_READ_TIMEOUT_SECONDS"),
}
# That container's names that mean nothing here, and why (named once in the start-up log).
AWS_CONTAINER_UNUSED = {
    "SAGEMAKER_TFS_NUM_BATCH_THREADS": "each model process runs one batch at a time per model; batches run in "
                                       "parallel across model processes (SAGEMAKER_TFS_INSTANCE_COUNT)",
    "SAGEMAKER_SAFE_PORT_RANGE": "no internal ports are opened; only SAGEMAKER_BIND_TO_PORT",
    "SAGEMAKER_GUNICORN_WORKER_CLASS": "the worker class is fixed (gevent, as AWS's default; see docs/architecture.md)",
    "SAGEMAKER_TFS_VERSION": "TensorFlow's version is the image's",
}
# Set by SageMaker itself for purposes outside the server; not worth a log line.
_PLATFORM = ("SAGEMAKER_BATCH", "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", "SAGEMAKER_BATCH_STRATEGY",
             "SAGEMAKER_ENABLE_CLOUDWATCH_METRICS", "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT")


_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|API_KEY|ACCESS_KEY", re.I)


def secret_values() -> tuple[str, ...]:
    """Values of the variables whose names say they hold a secret (AWS_SECRET_ACCESS_KEY,
    AWS_SESSION_TOKEN, ...), so that logs and error messages can mask them wherever they appear."""
    return tuple(v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 6)


def env_name(field: str) -> str:
    info = Settings.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return "SAGEMAKER_" + field.upper()


def _aws_values(overrides: dict) -> dict[str, str]:
    """Values for fields whose own variable is unset, from AWS's container's names; field -> name used."""
    used = {}
    for field, names in AWS_CONTAINER_ALIASES.items():
        if field in overrides or os.environ.get(env_name(field), "").strip():
            continue
        present = [n for n in names if os.environ.get(n, "").strip()]
        if not present:
            continue
        if field == "model_server_timeout":  # the larger of gunicorn's and nginx's, as there
            try:
                values = {n: int(os.environ[n]) for n in present}
            except ValueError:
                bad = next(n for n in present if not os.environ[n].strip().lstrip("-").isdigit())
                raise SettingsError(f"invalid configuration: {bad}={os.environ[bad]!r}: must be whole seconds")
            name = max(values, key=values.get)
            overrides[field] = values[name]
        else:
            name = present[0]
            overrides[field] = os.environ[name]
            if field == "model_server_threads" and os.environ[name].strip() == "1":
                overrides[field] = 2  # one request decodes while another waits on the model process; AWS's default is 1
        used[field] = name
    return used


def unused_variables() -> dict[str, str]:
    """SAGEMAKER_* variables that are set but mean nothing here: name -> why."""
    known = {env_name(f) for f in Settings.model_fields}
    known.update(n for names in AWS_CONTAINER_ALIASES.values() for n in names)
    unused = {}
    for name in sorted(os.environ):
        if not name.startswith("SAGEMAKER_") or name in known or name in _PLATFORM:
            continue
        unused[name] = AWS_CONTAINER_UNUSED.get(name, "not a setting of this server")
    return unused


def load_settings(**overrides) -> Settings:
    """Read the environment; raise SettingsError naming each bad variable and its value."""
    used = _aws_values(overrides)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            name = used.get(field) or (env_name(field) if field in Settings.model_fields else field)
            value = err.get("input")
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{name}={value!r}: {msg}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
    settings._aliases = used
    return settings
