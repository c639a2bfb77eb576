"""No leaks of secrets or internals (issue 6).

Errors sent to callers carry no traceback, no file-system path and no secret; log lines may
keep paths and tracebacks (the operator needs them) but never a credential. First
``serve.redact.SecretFilter`` (``settings.secret_values`` is in test_settings.py), then a real server whose
inference.py leaks on purpose, given fake AWS credentials in its environment.
"""
from __future__ import annotations

import io
import logging
import os
import re
import time
import traceback

import pytest
import requests

from serve.redact import MASK, SecretFilter
from tests.fixtures.server import REPO, start_host_server

# ---------------------------------------------------------------------------------------------
# SecretFilter.for_caller: tracebacks and paths


def _raise_deep():
    def inner():
        raise RuntimeError("boom in helper")
    inner()


def test_for_caller_cuts_a_python_traceback():
    try:
        _raise_deep()
    except RuntimeError as exc:
        message = f"predict_fn raised RuntimeError: {exc}\n{traceback.format_exc()}"
    assert "Traceback (most recent call last)" in message and __file__ in message  # the premise

    assert SecretFilter().for_caller(message) == "predict_fn raised RuntimeError: boom in helper"


def test_for_caller_cuts_a_chained_python_traceback():
    message = ("input_fn raised KeyError: 'x'\n"
               "Traceback (most recent call last):\n"
               '  File "/opt/ml/model/code/inference.py", line 9, in input_fn\n'
               "    return doc['x']\n"
               "KeyError: 'x'\n\n"
               "During handling of the above exception, another exception occurred:\n\n"
               "Traceback (most recent call last):\n"
               '  File "/usr/lib/python3.11/site-packages/serve/handlers.py", line 120, in _user_call\n'
               "KeyError: 'x'")
    assert SecretFilter().for_caller(message) == "input_fn raised KeyError: 'x'"


# TensorFlow's graph execution errors, as TF 2.x words them (see test_for_caller_keeps_...).
TF_ERROR = ('predict_fn raised InvalidArgumentError: Graph execution error:\n\n'
            'Detected at node Reshape defined at (most recent call last):\n'
            '  File "/usr/lib/python3.11/threading.py", line 1002, in _bootstrap\n\n'
            '  File "/opt/ml/model/code/inference.py", line 12, in predict_fn\n\n'
            'Input to reshape is a tensor with 4 values, but the requested shape has 5\n'
            '\t [[{{node Reshape}}]] [Op:__inference_f_7]')


def test_for_caller_cuts_tensorflows_defined_at_section():
    text = SecretFilter().for_caller(TF_ERROR)
    assert text.startswith("predict_fn raised InvalidArgumentError: Graph execution error")
    for leak in ("defined at", "most recent call last", 'File "', "/usr/lib", "/opt/", "threading.py",
                 "_bootstrap", "line 12"):
        assert leak not in text, (leak, text)


def test_for_caller_keeps_tensorflows_complaint_after_the_stack():
    text = SecretFilter().for_caller(TF_ERROR)
    assert "Input to reshape is a tensor with 4 values, but the requested shape has 5" in text


@pytest.mark.parametrize("message, expected", [
    ("cannot load /opt/ml/model/code/inference.py", "cannot load inference.py"),
    ("no such file: /tmp/x/y", "no such file: y"),
    ("[Errno 2] No such file or directory: '/opt/ml/model/1/vocab.txt'",
     "[Errno 2] No such file or directory: 'vocab.txt'"),
    ('open("/tmp/pytest-of-me/pytest-3/model/x.bin") failed', 'open("x.bin") failed'),
    ("(/opt/ml/model) and (/opt/ml/model/code/lib/helpers.py)", "(model) and (helpers.py)"),
    ("directory /opt/ml/model/ is empty", "directory <path> is empty"),
])
def test_for_caller_reduces_absolute_paths_to_their_last_part(message, expected):
    assert SecretFilter().for_caller(message) == expected


@pytest.mark.parametrize("message", [
    "application/json",
    'content type "text/csv" is not supported; use application/json, text/csv or application/x-npy',
    "input features: float32 (None, 4) does not accept shape (2, 5)",
    "numbers stay: 3.14, -2, 1e-06, 0x1f, 1/2, 100%",
    "relative names stay: code/inference.py, model/1/saved_model.pb, inference.py",
    "request body ended after 10 of the 20 bytes its Content-Length announced",
    "the model answered at http://127.0.0.1:8080/v1/models/model:predict",
    "AKIA alone, or AKIASHORT, is no key id",
    "",
])
def test_for_caller_leaves_ordinary_text_alone(message):
    secrets = SecretFilter(["s3cr3t-Value-42"])
    assert secrets.for_caller(message) == message
    assert secrets.mask(message) == message


# ---------------------------------------------------------------------------------------------
# SecretFilter: secrets

def test_mask_hides_given_secrets_and_any_aws_key_id():
    secrets = SecretFilter(["s3cr3t-Value-42", "tok/EN+abc=="])
    message = ("key s3cr3t-Value-42, token tok/EN+abc==, id AKIAIOSFODNN7EXAMPLE, "
               "temporary id ASIAY34FZKBOKMUTVV7A; again s3cr3t-Value-42")
    expected = f"key {MASK}, token {MASK}, id {MASK}, temporary id {MASK}; again {MASK}"
    assert secrets.mask(message) == expected
    assert secrets.for_caller(message) == expected


def test_mask_hides_a_secret_that_contains_another_whole():
    secrets = SecretFilter(["abcdef", "abcdef-123456"])
    assert secrets.mask("x abcdef-123456 y abcdef") == f"x {MASK} y {MASK}"


def test_empty_secrets_are_ignored():
    assert SecretFilter(["", ""]).mask("nothing to hide") == "nothing to hide"


def test_for_caller_masks_secrets_in_what_remains():
    message = ("input_fn raised RuntimeError: cannot read /opt/ml/model/code/inference.py with key "
               "s3cr3t-Value-42\nTraceback (most recent call last):\n  File \"/x/y.py\", line 1")
    assert SecretFilter(["s3cr3t-Value-42"]).for_caller(message) == (
        f"input_fn raised RuntimeError: cannot read inference.py with key {MASK}")


@pytest.mark.parametrize("secret", [
    "FwoGZXIvYXdzEJr+/abcDEF123/ghiJKL456+xyz/ENDofTOKENpart",
    "/v2/credentials/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
])
def test_for_caller_masks_secrets_that_look_like_paths(secret):
    assert SecretFilter([secret]).for_caller(f"token {secret} rejected") == f"token {MASK} rejected"


@pytest.mark.parametrize("message", [
    "PYTHONPATH=/opt/ml/model/code:/opt/ml/model/code/lib",
    "cannot open file:///opt/ml/model/code/weights.bin",
    'failed at\n  File "/opt/ml/model/code/inference.py", line 3, in predict_fn\n    x = f()',
])
def test_for_caller_misses_no_path_or_frame(message):
    text = SecretFilter().for_caller(message)
    assert "/opt/" not in text and 'File "' not in text, text


# ---------------------------------------------------------------------------------------------
# SecretFilter as a logging.Filter

LOG_SECRET = "s3cr3t-Value-42"
LOG_KEY_ID = "AKIAIOSFODNN7EXAMPLE"


def test_log_records_never_carry_a_secret():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter([LOG_SECRET]))
    logger = logging.getLogger("tests.redact.logging")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        logger.warning(f"in the message: {LOG_SECRET} and {LOG_KEY_ID}")
        logger.warning("in the args: %s and %r", LOG_SECRET, {"id": LOG_KEY_ID})
        try:
            raise RuntimeError(f"in the exception: {LOG_SECRET} for {LOG_KEY_ID}")
        except RuntimeError:
            logger.exception("request failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()

    assert LOG_SECRET not in output and LOG_KEY_ID not in output, output
    assert f"in the message: {MASK} and {MASK}" in output
    assert f"in the args: {MASK} and {{'id': '{MASK}'}}" in output
    assert f"RuntimeError: in the exception: {MASK} for {MASK}" in output
    # the operator keeps the traceback and its paths
    assert "Traceback (most recent call last)" in output and __file__ in output


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
