"""Start-up failures: each ends the server with a non-zero exit and one line saying which.

Why exit rather than keep /ping at 503: SageMaker only learns of a 503 when its start-up
health check times out (minutes, billed), and says no more than "did not pass the ping
health check"; an exit ends the attempt at once, with the reason as the last log line.
"""
from __future__ import annotations

import time

import requests

from tests.fixtures.server import launch

EXIT_WITHIN_S = 180  # a worker must import TensorFlow before it can find a corrupt model


def failed_start(model_dir, env=None) -> tuple[int, list[str]]:
    """Run `serve` until it exits; /ping must never have said 200. Returns (exit code, log lines)."""
    server = launch(model_dir, env)
    try:
        deadline = time.monotonic() + EXIT_WITHIN_S
        while server.alive():
            assert time.monotonic() < deadline, f"serve did not exit:\n{server.logs()[-3000:]}"
            try:
                assert requests.get(f"{server.url}/ping", timeout=2).status_code != 200
            except requests.RequestException:  # not up yet, or busy importing TensorFlow
                pass
            time.sleep(0.25)
    finally:
        server.stop()
    return server.process.returncode, server.logs().splitlines()


def the_failure_line(lines: list[str]) -> str:
    failures = [line for line in lines if "startup failed: " in line]
    assert failures, "\n".join(lines[-40:])
    assert len(set(l.split("startup failed: ", 1)[1] for l in failures)) == 1, failures  # one reason
    assert not any(line.startswith("Traceback") for line in lines), "tracebacks are for DEBUG only"
    return failures[0]


def test_missing_model_exits_before_opening_the_port(tmp_path):
    (tmp_path / "model").mkdir()
    code, lines = failed_start(tmp_path / "model")
    line = the_failure_line(lines)
    assert code == 1
    assert "no model to serve" in line and "saved_model.pb" in line
    assert not any("Listening at" in l for l in lines)


def test_corrupt_savedmodel_names_the_model_load(mlp_model_dir, tmp_path):
    import shutil

    model_dir = shutil.copytree(mlp_model_dir.model_dir, tmp_path / "model")
    (model_dir / "1" / "saved_model.pb").write_bytes(b"\x08\x01this is not a protobuf" * 50)
    code, lines = failed_start(model_dir)
    line = the_failure_line(lines)
    assert code != 0
    assert "loading the model from" in line


def test_inference_py_raising_on_import_names_the_script_and_line(mlp_model_dir, tmp_path):
    script = "import os\n\nLIMIT = 3\nraise RuntimeError('cannot find the tokenizer')\n"
    code, lines = failed_start(mlp_model_dir.with_code(tmp_path / "model", script))
    line = the_failure_line(lines)
    assert code != 0
    assert "importing inference.py: RuntimeError: cannot find the tokenizer (at inference.py, line 4)" in line


def test_script_without_known_functions_fails(mlp_model_dir, tmp_path):
    code, lines = failed_start(mlp_model_dir.with_code(tmp_path / "model", "def helper():\n    pass\n"))
    line = the_failure_line(lines)
    assert code != 0 and "defines none of" in line


def test_requirements_that_cannot_install_name_pip_and_the_package(mlp_model_dir, tmp_path):
    model_dir = mlp_model_dir.with_code(tmp_path / "model", "def input_fn(b, c):\n    return b\n",
                                        requirements=f"{tmp_path / 'missing-0.1-py3-none-any.whl'}\n")
    code, lines = failed_start(model_dir)
    line = the_failure_line(lines)
    assert code == 1
    assert "pip install -r" in line and "missing-0.1-py3-none-any.whl" in line
    assert not any("Listening at" in l for l in lines)  # never a half-working server
