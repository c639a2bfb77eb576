"""No leaks through a real server (issue 6): its inference.py leaks on purpose, given fake AWS
credentials in its environment. SecretFilter itself is tests/unit/test_redact.py.
"""
from __future__ import annotations

import os
import re
import time

import pytest
import requests

from serve.contract.redact import MASK
from tests.fixtures.server import REPO, start_host_server


# ---------------------------------------------------------------------------------------------
# A real server whose inference.py leaks on purpose

FAKE_KEY_ID = "AKIAIOSFODNN7FAKEKEY"
FAKE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYFAKEsecret"
FAKE_TOKEN = "IQoJb3JpZ2luX2VjEFAKE" + "".join(f"/Zx{i:02d}fakeSessionToken+Q" for i in range(12)) + "xyzEND"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": FAKE_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
               "AWS_SESSION_TOKEN": FAKE_TOKEN}
assert len(FAKE_KEY_ID) == 20 and len(FAKE_SECRET) == 40 and len(FAKE_TOKEN) > 300

LEAKY_SCRIPT = '''
import json
import logging
import os
import traceback

import numpy as np
import tensorflow as tf


def _level3(row):
    raise ValueError(f"deep helper failed on {row} (code in {os.path.dirname(__file__)})")


def _level2(row):
    return _level3(row)


def _level1(row):
    return _level2(row)


@tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
def _bad_reshape(x):
    return tf.reshape(x, [5])


def input_fn(body, content_type):
    doc = json.loads(body)
    mode = doc.get("mode")
    if mode == "path_secret":
        raise RuntimeError(f"cannot read {__file__} with key {os.environ['AWS_SECRET_ACCESS_KEY']}, "
                           f"mode a")
    if mode == "deep":
        _level1("row-7")
    if mode == "wrapped":
        try:
            _level1("row-8")
        except ValueError:
            raise RuntimeError("wrapped helper failure:\\n" + traceback.format_exc())
    if mode == "log":
        log = logging.getLogger("user")
        log.warning("user-log-c: session token %s, key id %s",
                    os.environ["AWS_SESSION_TOKEN"], os.environ["AWS_ACCESS_KEY_ID"])
        log.warning(f"user-log-c2: secret key {os.environ['AWS_SECRET_ACCESS_KEY']}")
        raise PermissionError(f"access key {os.environ['AWS_ACCESS_KEY_ID']} may not invoke this model")
    if mode == "tf":
        _bad_reshape(tf.constant(doc["instances"], tf.float32))
    return np.asarray(doc["instances"], dtype=np.float32)
'''

INSTANCE = [0.1, 0.2, 0.3, 0.4]
# an absolute path of two or more parts, wherever a message could put one
ABS_PATH = re.compile(r"(?:^|[\s'\"(=:,\[])/[\w.@+-]+/")


@pytest.fixture(scope="module")
def leaky(mlp_model_dir, tmp_path_factory):
    model_dir = mlp_model_dir.with_code(tmp_path_factory.mktemp("redact") / "model", LEAKY_SCRIPT)
    with start_host_server(model_dir, env=CREDENTIALS) as server:
        server.model_dir = model_dir
        yield server


def assert_tells_nothing_inside(message: str, model_dir) -> None:
    assert "Traceback" not in message and "most recent call last" not in message, message
    assert 'File "' not in message and "defined at" not in message, message
    for fragment in ("/tmp/", "/opt/", "/usr/", "/work/", "sm-base-", ".venv", str(model_dir),
                     str(model_dir.resolve()), str(REPO), os.sep + "code" + os.sep):
        assert fragment not in message, (fragment, message)
    assert not ABS_PATH.search(message), message
    for secret in CREDENTIALS.values():
        for part in (secret, secret[:12], secret[-12:]):
            assert part not in message, (part, message)
    assert not re.search(r"(?:AKIA|ASIA)[A-Z0-9]{16}", message), message


def invoke(server, body: dict, path: str = "/invocations") -> requests.Response:
    return requests.post(f"{server.url}{path}", json=body, timeout=60)


def wait_for_log(server, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        logs = server.logs()
        if text in logs or time.monotonic() > deadline:
            return logs
        time.sleep(0.2)


@pytest.mark.parametrize("mode, expected", [
    # (a) the script's own absolute path and the secret key in the message
    ("path_secret", [f"input_fn raised RuntimeError: cannot read inference.py with key {MASK}, mode a"]),
    # (b) raised three helpers deep: the traceback exists (in the log), the caller gets the message
    ("deep", ["input_fn raised ValueError: deep helper failed on row-7 (code in code)"]),
    # (b') the script put a whole traceback into its message
    ("wrapped", ["input_fn raised RuntimeError: wrapped helper failure"]),
    # (c) logged the session token and key id, then raised with the key id
    ("log", [f"input_fn raised PermissionError: access key {MASK} may not invoke this model"]),
    # TensorFlow's own error, with its "defined at (most recent call last)" stack of frames
    ("tf", ["input_fn raised InvalidArgumentError", "Graph execution error"]),
])
def test_user_code_errors_reach_the_caller_without_internals(leaky, mode, expected):
    response = invoke(leaky, {"mode": mode, "instances": [INSTANCE]})

    assert response.status_code == 500, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"], body
    message = body["error"]
    for text in expected:
        assert text in message, (text, message)
    assert_tells_nothing_inside(message, leaky.model_dir)


def test_a_normal_prediction_still_works(leaky):
    response = invoke(leaky, {"instances": [INSTANCE]})
    assert response.status_code == 200, response.text
    [probabilities] = response.json()["predictions"]
    assert len(probabilities) == 3 and abs(sum(probabilities) - 1) < 1e-4


@pytest.mark.parametrize("path, body, expected", [
    # through input_fn to the default predict, which refuses the shape
    ("/invocations", {"mode": "none", "instances": [[0.1, 0.2, 0.3, 0.4, 0.5]]}, "(1, 5)"),
    # TF Serving's route: the default handler alone
    ("/v1/models/model:predict", {"instances": [[0.1, 0.2, 0.3, 0.4, 0.5]]}, "(1, 5)"),
    ("/v1/models/model:predict", {"instances": [[0.1, 0.2, 0.3, 0.4], [0.5]]}, "same shape"),
])
def test_default_handler_400s_carry_no_path(leaky, path, body, expected):
    response = invoke(leaky, body, path)
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    assert expected in message, message
    assert_tells_nothing_inside(message, leaky.model_dir)


def test_logs_keep_the_story_but_no_credential(leaky):
    for mode in ("path_secret", "deep", "wrapped", "log", "tf"):
        assert invoke(leaky, {"mode": mode, "instances": [INSTANCE]}).status_code == 500
    logs = wait_for_log(leaky, "user-log-c2")

    for name, value in CREDENTIALS.items():
        assert value not in logs, f"{name} was logged"
        for part in (value[:12], value[-12:]):
            assert part not in logs, f"part of {name} was logged: {part}"
    # (c)'s lines were written, masked, through the user's own logger
    assert f"user-log-c: session token {MASK}, key id {MASK}" in logs, logs[-5000:]
    assert f"user-log-c2: secret key {MASK}" in logs, logs[-5000:]
    # the operator still gets the traceback of (b), paths included
    assert "Traceback (most recent call last)" in logs and "in _level3" in logs, logs[-5000:]
    assert "inference.py" in logs


PRINTING_SCRIPT = '''
import os, sys, warnings


def input_handler(data, context):
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    print("user-print: " + secret)
    sys.stderr.write("user-stderr: " + secret[:20])
    sys.stderr.write(secret[20:] + "\\n")
    warnings.warn("user-warning: " + secret)
    return data.read()
'''


def test_prints_stderr_and_warnings_of_user_code_are_masked(mlp_model_dir, tmp_path):
    model_dir = mlp_model_dir.with_code(tmp_path / "model", PRINTING_SCRIPT)
    with start_host_server(model_dir, env=CREDENTIALS) as server:
        assert invoke(server, {"instances": [INSTANCE]}).status_code == 200
        logs = wait_for_log(server, "user-warning")
    for text in ("user-print: ", "user-stderr: ", "user-warning: "):
        assert f"{text}{MASK}" in logs, (text, logs[-3000:])
    assert FAKE_SECRET not in logs and FAKE_SECRET[:12] not in logs and FAKE_SECRET[-12:] not in logs
