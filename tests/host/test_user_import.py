"""User code is imported as AWS's container imports it (issue 23, point 17): on the main thread,
where ``signal.signal`` works, and an import error names the user's file and line, not the
standard library's."""
from __future__ import annotations

import requests

from tests.fixtures.server import start_host_server
from tests.host.test_multimodel import _copy, invoke, load, mme_server
from tests.host.test_startup import failed_start, the_failure_line

SIGNALS_TFS = """
import json
import signal

signal.signal(signal.SIGUSR2, lambda *_: None)      # what timeouts and clean shutdowns do


def input_handler(data, context):
    return json.dumps({"instances": json.loads(data.read())["rows"]})


def output_handler(response, context):
    return json.dumps({"handled": response.json()["predictions"]}), "application/json"
"""

SIGNALS_TOOLKIT = """
import json
import signal

import numpy as np

signal.signal(signal.SIGUSR2, lambda *_: None)


def input_fn(body, content_type):
    return np.asarray(json.loads(body)["rows"], np.float32)
"""


def test_a_script_that_sets_a_signal_handler_at_import_starts(mlp_model_dir, tmp_path):
    model_dir = mlp_model_dir.with_code(tmp_path / "model", SIGNALS_TFS)
    with start_host_server(model_dir) as server:
        r = requests.post(f"{server.url}/invocations", json={"rows": mlp_model_dir.inputs["features"].tolist()},
                          timeout=30)
    assert r.status_code == 200 and len(r.json()["handled"]) == 3, r.text


def test_multi_model_scripts_that_set_signal_handlers_load(request, tmp_path, mlp_model_dir):
    root = tmp_path / "models"
    _copy(mlp_model_dir.model_dir, root / "tfs" / "model", SIGNALS_TFS)
    _copy(mlp_model_dir.model_dir, root / "toolkit" / "model", SIGNALS_TOOLKIT)
    rows = {"rows": mlp_model_dir.inputs["features"].tolist()}
    with mme_server(request, "host", root) as (server, models):
        for name in ("tfs", "toolkit"):
            r = load(server.url, name, models)
            assert r.status_code == 200, r.text
            assert invoke(server.url, name, rows).status_code == 200


def test_an_import_error_names_the_users_line_not_the_standard_librarys(mlp_model_dir, tmp_path):
    for style, script in (("tfs", "import json\n\nCONFIG = json.loads('{')\n\n\ndef input_handler(d, c):\n    return d\n"),
                          ("toolkit", "import json\n\nCONFIG = json.loads('{')\n\n\ndef input_fn(b, c):\n    return b\n")):
        model_dir = mlp_model_dir.with_code(tmp_path / style / "model", script)
        code, lines = failed_start(model_dir)
        line = the_failure_line(lines)
        assert code != 0
        assert "JSONDecodeError" in line and "(at inference.py, line 3)" in line, (style, line)
