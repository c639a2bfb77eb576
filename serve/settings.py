"""Every environment variable the server honours, typed and validated once at start.

Nothing else in the package reads ``os.environ``: the rest of the code receives a
``Settings`` instance. Names follow SageMaker's own containers so that a
``create_model`` Environment written for them keeps working here.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOG_LEVELS = (10, 20, 30, 40, 50)


class SettingsError(ValueError):
    """A variable has a value the server cannot start with; the message names it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAGEMAKER_", extra="ignore", frozen=True)

    base_dir: Path = Field(Path("/opt/ml"), description="the model is read from BASE_DIR/model")
    bind_to_port: int = Field(8080, ge=1, le=65535)
    model_server_workers: Optional[int] = Field(None, ge=1, le=256, description="default: from vCPUs")
    model_server_threads: int = Field(
        64, ge=2, le=1024,
        description="HTTP threads per worker; requests mostly wait on the batcher, so this only "
                    "bounds how many can be in flight before /ping would queue",
    )
    model_server_timeout: int = Field(60, ge=1, le=3600, description="seconds any one request may take")
    max_payload_in_mb: int = Field(6, ge=1, le=1024)
    container_log_level: int = Field(20)
    program: Optional[str] = Field(None, description="user script, default inference.py")
    submit_directory: Optional[str] = Field(None, description="folder or .tar.gz holding the script")
    region: Optional[str] = None

    tfs_enable_batching: bool = True
    tfs_max_batch_size: int = Field(32, ge=1, le=4096)
    tfs_batch_timeout_micros: int = Field(2000, ge=0, le=10_000_000)
    tfs_intra_op_parallelism: Optional[int] = Field(None, ge=1, le=1024)
    tfs_inter_op_parallelism: Optional[int] = Field(None, ge=1, le=1024)

    # Graviton tuning; left unset here means "decide from the CPU" (see tuning.py).
    tf_enable_onednn_opts: Optional[str] = Field(
        None, validation_alias=AliasChoices("TF_ENABLE_ONEDNN_OPTS"))
    dnnl_default_fpmath_mode: Optional[str] = Field(
        None, validation_alias=AliasChoices("DNNL_DEFAULT_FPMATH_MODE"))

    @field_validator("container_log_level")
    @classmethod
    def _known_level(cls, v: int) -> int:
        if v not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(map(str, LOG_LEVELS))} (DEBUG..CRITICAL)")
        return v

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
    def max_payload_bytes(self) -> int:
        return self.max_payload_in_mb * 1024 * 1024

    @property
    def batch_timeout_s(self) -> float:
        return self.tfs_batch_timeout_micros / 1e6


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


def load_settings(**overrides) -> Settings:
    """Read the environment; raise SettingsError naming each bad variable and its value."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            name = env_name(field) if field in Settings.model_fields else field
            value = err.get("input")
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{name}={value!r}: {msg}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
