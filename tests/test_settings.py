import os
import re
import subprocess

import pytest

from serve.settings import Settings, SettingsError, load_settings, secret_values
from tests.fixtures.server import SERVE


def test_defaults_match_sagemaker(monkeypatch):
    for name in ("SAGEMAKER_BASE_DIR", "SAGEMAKER_BIND_TO_PORT", "SAGEMAKER_MODEL_SERVER_TIMEOUT",
                 "SAGEMAKER_MAX_PAYLOAD_IN_MB", "SAGEMAKER_CONTAINER_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert str(s.model_dir) == "/opt/ml/model"
    assert s.bind_to_port == 8080
    assert s.model_server_timeout == 60
    assert s.max_payload_bytes == 6 * 1024 * 1024
    assert s.container_log_level == 20


def test_reads_sagemaker_names(monkeypatch, tmp_path):
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "9090")
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "3")
    monkeypatch.setenv("SAGEMAKER_TFS_ENABLE_BATCHING", "false")
    monkeypatch.setenv("SAGEMAKER_TFS_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS", "500")
    monkeypatch.setenv("DNNL_DEFAULT_FPMATH_MODE", "bf16")
    s = load_settings()
    assert s.model_dir == tmp_path / "model"
    assert (s.bind_to_port, s.model_server_workers) == (9090, 3)
    assert (s.tfs_enable_batching, s.tfs_max_batch_size, s.batch_timeout_s) == (False, 8, 0.0005)
    assert s.dnnl_default_fpmath_mode == "BF16"


@pytest.mark.parametrize("name, value", [
    ("SAGEMAKER_BIND_TO_PORT", "70000"),
    ("SAGEMAKER_BIND_TO_PORT", "http"),
    ("SAGEMAKER_MODEL_SERVER_WORKERS", "0"),
    ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "-5"),
    ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "lots"),
    ("SAGEMAKER_CONTAINER_LOG_LEVEL", "15"),
    ("SAGEMAKER_TFS_ENABLE_BATCHING", "maybe"),
    ("TF_ENABLE_ONEDNN_OPTS", "yes"),
    ("DNNL_DEFAULT_FPMATH_MODE", "fast"),
])
def test_bad_value_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert f"{name}={value!r}" in str(err.value)


def test_serve_exits_nonzero_naming_the_variable(tmp_path):
    proc = subprocess.run([str(SERVE)], env={"PATH": "/usr/bin:/bin", "SAGEMAKER_BIND_TO_PORT": "99999",
                                             "SAGEMAKER_BASE_DIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "SAGEMAKER_BIND_TO_PORT='99999'" in proc.stderr
    assert "less than or equal to 65535" in proc.stderr


def test_settings_are_frozen():
    with pytest.raises(Exception):
        Settings().bind_to_port = 1


def test_secret_values_are_the_credentials_in_the_environment(monkeypatch):
    for name in list(os.environ):
        if re.search(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|API_KEY|ACCESS_KEY", name, re.I):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-access-key-value")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-value")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("MY_API_KEY", "my-api-key-value")
    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin:/bin")
    monkeypatch.setenv("SAGEMAKER_PROGRAM", "inference.py")

    values = set(secret_values())
    assert values == {"secret-access-key-value", "session-token-value", "AKIAIOSFODNN7EXAMPLE",
                      "my-api-key-value"}
