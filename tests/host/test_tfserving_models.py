"""TF Serving's own test SavedModels (tests/fixtures/tfserving/), served as TF Serving and AWS's
container serve them (issue 21), on the host and in the amd64 image: exports this project did not
make, with TensorInfos that lack shapes or contradict the graph, and versions named 00000123."""
from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from tests.fixtures.targets import PROCESS_TARGETS, start_target

ATTRS = "X-Amzn-SageMaker-Custom-Attributes"


def invoke(url, body, attributes=None, content_type="application/json", **headers):
    if attributes:
        headers[ATTRS] = attributes
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(f"{url}/invocations", data=data, headers={"Content-Type": content_type, **headers},
                         timeout=60)


@pytest.fixture(scope="module", params=PROCESS_TARGETS)
def tfs_server(request, tfs_models):
    with start_target(request, request.param, tfs_models.model_dir,
                      env={"SAGEMAKER_TFS_DEFAULT_MODEL_NAME": "half_plus_two"}) as server:
        yield server


# -- answers shaped as AWS's container (TF Serving) shapes them --------------------------------------

@pytest.mark.parametrize("body, content_type, expected", [
    ({"instances": [1.0, 2.0, 5.0]}, "application/json", {"predictions": [2.5, 3.0, 4.5]}),
    ({"inputs": [1.0, 2.0, 5.0]}, "application/json", {"outputs": [2.5, 3.0, 4.5]}),
    ("1.0\n2.0\n5.0\n", "text/csv", {"predictions": [2.5, 3.0, 4.5]}),
    ({"instances": [[1.0], [2.0]]}, "application/json", {"predictions": [[2.5], [3.0]]}),
])
def test_scalars_in_scalars_out(tfs_server, body, content_type, expected):
    r = invoke(tfs_server.url, body, content_type=content_type)
    assert r.status_code == 200, r.text
    assert r.json() == expected


