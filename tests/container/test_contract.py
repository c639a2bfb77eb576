"""SageMaker's hosting contract over HTTP, run against the host server and against each image."""
import io
import json

import numpy as np
import pytest
import requests



@pytest.fixture
def url(contract_server):
    return contract_server.url


@pytest.fixture
def sample(mlp_model_dir):
    return mlp_model_dir.inputs["features"], mlp_model_dir.expected["output_0"]


def post(url, body, content_type="application/json", accept=None, **headers):
    if accept:
        headers["Accept"] = accept
    return requests.post(f"{url}/invocations", data=body, headers={"Content-Type": content_type, **headers},
                         timeout=120)


def test_ping(url):
    r = requests.get(f"{url}/ping", timeout=5)
    assert r.status_code == 200


def test_row_format(url, sample, tolerance):
    x, expected = sample
    r = post(url, json.dumps({"instances": x.tolist()}))
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    np.testing.assert_allclose(r.json()["predictions"], expected, **tolerance)


def test_columnar_format_named(url, sample, tolerance):
    x, expected = sample
    r = post(url, json.dumps({"inputs": {"features": x.tolist()}, "signature_name": "serving_default"}))
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["outputs"], expected, **tolerance)


def test_bare_array_from_tolist(url, sample, tolerance):
    x, expected = sample
    r = post(url, json.dumps(x[:1].tolist()))
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], expected[:1], **tolerance)


def test_jsonlines_in_and_out(url, sample, tolerance):
    x, expected = sample
    body = "\n".join(json.dumps(row) for row in x.tolist())
    r = post(url, body, "application/jsonlines", accept="application/jsonlines")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/jsonlines")
    np.testing.assert_allclose([json.loads(line) for line in r.text.splitlines()], expected, **tolerance)


def test_csv_in_and_out(url, sample, tolerance):
    x, expected = sample
    body = "\n".join(",".join(map(str, row)) for row in x.tolist())
    r = post(url, body, "text/csv", accept="text/csv")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/csv")
    np.testing.assert_allclose(np.loadtxt(io.StringIO(r.text), delimiter=",", ndmin=2), expected, **tolerance)


def test_npy_in_and_out(url, sample, tolerance):
    x, expected = sample
    buf = io.BytesIO(); np.save(buf, x)
    r = post(url, buf.getvalue(), "application/x-npy", accept="application/x-npy")
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.load(io.BytesIO(r.content)), expected, **tolerance)


def test_npz_named_inputs(url, sample, tolerance):
    x, expected = sample
    buf = io.BytesIO(); np.savez(buf, features=x)
    r = post(url, buf.getvalue(), "application/x-npz")
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["outputs"], expected, **tolerance)


def test_accept_star_and_missing_give_json(url, sample):
    x, _ = sample
    for accept in ("*/*", None):
        r = post(url, json.dumps({"instances": x.tolist()}), accept=accept)
        assert r.status_code == 200 and "predictions" in r.json()


def test_execution_parameters(url):
    r = requests.get(f"{url}/execution-parameters", timeout=10)
    assert r.status_code == 200
    params = r.json()
    assert params["BatchStrategy"] == "MULTI_RECORD"
    assert params["MaxPayloadInMB"] == 6
    assert params["MaxConcurrentTransforms"] >= 1


@pytest.mark.parametrize("body, content_type, accept, status, fragment", [
    ("{not json", "application/json", None, 400, "not valid JSON"),
    ('{"instances": [[1, 2, 3]]}', "application/json", None, 400, "shape (-1, 4) float32"),
    ('{"instances": [["a", "b", "c", "d"]]}', "application/json", None, 400, "float32"),
    ('{"instances": [[1, 2, 3, 4]], "signature_name": "nope"}', "application/json", None, 400,
     "unknown signature_name 'nope'"),
    ("1,2,3,4", "image/png", None, 415, "text/csv"),
    ('{"instances": [[1, 2, 3, 4]]}', "application/json", "image/png", 406, "application/json"),
])
def test_errors_say_what_to_fix(url, body, content_type, accept, status, fragment):
    r = post(url, body, content_type, accept=accept)
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert fragment in r.json()["error"]


def test_unknown_route_is_json_404(url):
    r = requests.get(f"{url}/nope", timeout=10)
    assert r.status_code == 404 and "/invocations" in r.json()["error"]


def test_server_survives_bad_requests(url, sample):
    x, _ = sample
    for _ in range(3):
        post(url, "{broken")
    assert requests.get(f"{url}/ping", timeout=5).status_code == 200
    assert post(url, json.dumps({"instances": x.tolist()})).status_code == 200


def test_bf16_fast_math_follows_the_cpu(contract_server):
    """serve/contract/tuning.py alone decides DNNL_DEFAULT_FPMATH_MODE (the images no longer bake it in):
    BF16 where the CPU has bf16 matrix units (qemu's arm64 CPU has them, like Graviton3+, as its
    auxiliary vector says; so do AMX x86 hosts), unset otherwise, and a value the user set wins (the host server runs STRICT)."""
    import re

    if getattr(contract_server, "platform", None) is None:
        expected = "STRICT"        # tests/fixtures/server.py sets it: the user's value wins
    else:
        if contract_server.platform == "linux/arm64":
            # the dynamic loader's view of the CPU (under qemu-user /proc/cpuinfo is the x86 host's)
            auxv = contract_server.exec("env", "LD_SHOW_AUXV=1", "/bin/true").stdout
            hwcap2 = int(re.search(r"AT_HWCAP2:\s*(0x[0-9a-f]+)", auxv).group(1), 16)
            has_units = bool(hwcap2 & (1 << 14))                    # HWCAP2_BF16
        else:
            flags = contract_server.exec("grep", "-m1", "^flags", "/proc/cpuinfo").stdout.split()
            has_units = "amx_bf16" in flags
        expected = "BF16" if has_units else "unset (fp32)"
    line = next(ln for ln in contract_server.logs().splitlines() if "DNNL_DEFAULT_FPMATH_MODE=" in ln)
    assert re.search(r"DNNL_DEFAULT_FPMATH_MODE=([^,]+)", line).group(1).strip() == expected, line
