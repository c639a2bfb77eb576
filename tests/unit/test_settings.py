import os
import re
import subprocess

import pytest

from serve.contract.settings import Settings, SettingsError, load_settings, secret_values
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


# -- AWS's TensorFlow serving container's names (issue 10) ------------------------------------------

AWS_NAMES = ("SAGEMAKER_MODEL_SERVER_WORKERS", "SAGEMAKER_GUNICORN_WORKERS", "SAGEMAKER_TFS_INSTANCE_COUNT",
             "SAGEMAKER_MODEL_SERVER_THREADS", "SAGEMAKER_GUNICORN_THREADS", "SAGEMAKER_MODEL_SERVER_TIMEOUT",
             "SAGEMAKER_GUNICORN_TIMEOUT_SECONDS", "SAGEMAKER_NGINX_PROXY_READ_TIMEOUT_SECONDS")


@pytest.fixture
def clean_aws_env(monkeypatch):
    for name in AWS_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_aws_container_names_fill_in_ours(clean_aws_env):
    clean_aws_env.setenv("SAGEMAKER_GUNICORN_WORKERS", "3")
    clean_aws_env.setenv("SAGEMAKER_TFS_INSTANCE_COUNT", "5")
    clean_aws_env.setenv("SAGEMAKER_GUNICORN_THREADS", "1")
    clean_aws_env.setenv("SAGEMAKER_GUNICORN_TIMEOUT_SECONDS", "120")
    clean_aws_env.setenv("SAGEMAKER_NGINX_PROXY_READ_TIMEOUT_SECONDS", "45")
    s = load_settings()
    assert (s.model_server_workers, s.model_server_threads, s.model_server_timeout) == (3, 2, 120)
    assert s.aliases_applied == {"model_server_workers": "SAGEMAKER_GUNICORN_WORKERS",
                                 "model_server_threads": "SAGEMAKER_GUNICORN_THREADS",
                                 "model_server_timeout": "SAGEMAKER_GUNICORN_TIMEOUT_SECONDS"}


def test_ours_win_over_aws_container_names(clean_aws_env):
    clean_aws_env.setenv("SAGEMAKER_GUNICORN_WORKERS", "3")
    clean_aws_env.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "7")
    clean_aws_env.setenv("SAGEMAKER_NGINX_PROXY_READ_TIMEOUT_SECONDS", "300")
    clean_aws_env.setenv("SAGEMAKER_MODEL_SERVER_TIMEOUT", "10")
    s = load_settings()
    assert (s.model_server_workers, s.model_server_timeout, s.aliases_applied) == (7, 10, {})


def test_bad_aws_container_value_names_that_variable(clean_aws_env):
    clean_aws_env.setenv("SAGEMAKER_GUNICORN_WORKERS", "many")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "SAGEMAKER_GUNICORN_WORKERS='many'" in str(err.value)


def test_unused_sagemaker_variables_are_reported_not_refused(clean_aws_env):
    from serve.contract.settings import unused_variables

    clean_aws_env.setenv("SAGEMAKER_TFS_NUM_BATCH_THREADS", "4")
    clean_aws_env.setenv("SAGEMAKER_SOMETHING_ELSE", "x")
    clean_aws_env.setenv("SAGEMAKER_TFS_DEFAULT_MODEL_NAME", "half")
    load_settings()
    unused = unused_variables()
    assert "one batch at a time" in unused["SAGEMAKER_TFS_NUM_BATCH_THREADS"]
    assert "SAGEMAKER_SOMETHING_ELSE" in unused and "SAGEMAKER_TFS_DEFAULT_MODEL_NAME" not in unused


def test_max_enqueued_batches_bounds_the_queue(clean_aws_env):
    clean_aws_env.setenv("SAGEMAKER_TFS_MAX_ENQUEUED_BATCHES", "3")
    clean_aws_env.setenv("SAGEMAKER_TFS_MAX_BATCH_SIZE", "8")
    assert load_settings().max_queued == 24


def test_readiness_counts_live_workers_and_latches(tmp_path):
    from serve.contract.readiness import Readiness

    ready = Readiness(tmp_path, expected=2)
    ready.mark_ready()                      # this process
    (tmp_path / "999999999").touch()        # a worker that died (no such pid)
    assert ready.ready_workers() == 1 and not ready.all_ready()
    (tmp_path / str(os.getppid())).touch()  # a second live process
    assert ready.all_ready()
    (tmp_path / str(os.getppid())).unlink()
    assert Readiness(tmp_path, expected=2).all_ready()  # latched for every worker, also later ones


def test_channel_segments_grow_for_large_messages_and_give_the_memory_back(tmp_path):
    from serve.contract import channel

    small = channel.fitting(None, 1000, "test-seg")
    assert channel.fitting(small, 2000, "test-seg") is small            # room to grow, reused
    big = channel.fitting(small, 50 << 20, "test-seg")                   # a 50 MiB message: its own, exact
    assert big is not small and big.size == 50 << 20 and not small.path.exists()
    again = channel.fitting(big, 40 << 20, "test-seg")                   # a large one is used once: the reader
    assert again is not big and not big.path.exists()                    # gives its pages back (done_with)
    back = channel.fitting(again, 1000, "test-seg")                      # small again: memory given back
    assert back.size <= channel.KEEP and not again.path.exists()
    back.unlink()
