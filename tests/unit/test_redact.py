"""No leaks of secrets or internals (issue 6).

Errors sent to callers carry no traceback, no file-system path and no secret; log lines may
keep paths and tracebacks (the operator needs them) but never a credential. First
``serve.contract.redact.SecretFilter`` (``settings.secret_values`` is in test_settings.py), then a real server whose
inference.py leaks on purpose, given fake AWS credentials in its environment.
"""
from __future__ import annotations

import contextlib
import io
import logging
import traceback

import pytest

from serve.contract.redact import MASK, SecretFilter

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
               '  File "/usr/lib/python3.11/site-packages/serve/usercode/calls.py", line 120, in user_call\n'
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


@contextlib.contextmanager
def filtered_logger(name: str):
    """(logger NAME, the text it wrote): DEBUG and up, through SecretFilter([LOG_SECRET]), to a
    StringIO only; the handler is detached at the end."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter([LOG_SECRET]))
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def test_log_records_never_carry_a_secret():
    with filtered_logger("tests.redact.logging") as (logger, stream):
        logger.warning(f"in the message: {LOG_SECRET} and {LOG_KEY_ID}")
        logger.warning("in the args: %s and %r", LOG_SECRET, {"id": LOG_KEY_ID})
        try:
            raise RuntimeError(f"in the exception: {LOG_SECRET} for {LOG_KEY_ID}")
        except RuntimeError:
            logger.exception("request failed")
    output = stream.getvalue()

    assert LOG_SECRET not in output and LOG_KEY_ID not in output, output
    assert f"in the message: {MASK} and {MASK}" in output
    assert f"in the args: {MASK} and {{'id': '{MASK}'}}" in output
    assert f"RuntimeError: in the exception: {MASK} for {MASK}" in output
    # the operator keeps the traceback and its paths
    assert "Traceback (most recent call last)" in output and __file__ in output


# ---------------------------------------------------------------------------------------------
# Log lines stay lines (issue 23, point 14): what a caller sends is escaped, never obeyed

FORGED = "/x\r\n2026-01-01 00:00:00,000 [1] ERROR serve: startup failed: forged\x1b[2J\u2028"


def test_caller_strings_cannot_forge_a_log_line():
    with filtered_logger("tests.redact.forging") as (logger, stream):
        logger.info("%s %s %d %s", "GET", FORGED, 404, None)                # the access log's shape
        logger.error("loaded model '%(name)s'", {"name": FORGED})
        logger.warning(ValueError(FORGED))
        try:
            raise RuntimeError(f"bad name {FORGED}")
        except RuntimeError:
            logger.exception("POST %s failed", FORGED)
        logger.info("ours:\nkeeps its own newline")
    lines = stream.getvalue().splitlines()
    assert not any(line.startswith("2026-01-01") for line in lines), lines
    assert "INFO tests.redact.forging: GET /x\\r\\n2026-01-01 00:00:00,000 [1] ERROR serve: startup failed: forged" \
           "\\x1b[2J\\u2028 404 None" in lines
    assert "RuntimeError: bad name /x\\r\\n2026-01-01 00:00:00,000 [1] ERROR serve: startup failed: forged" \
           "\\x1b[2J\\u2028" in lines
    assert "\x1b" not in stream.getvalue() and "\u2028" not in stream.getvalue()
    assert "keeps its own newline" in lines   # the format string is ours
