"""comparison.decode and OutputAgreement without NumPy: .npy/.npz written by NumPy, CSV and JSON read
as numpy.load / numpy.loadtxt / numpy.asarray read them, and the figures core/comparison.py reports.
(NumPy is used here only to write the test's inputs; sagemaker_tf_deploy never imports it.)"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from sagemaker_tf_deploy.core import comparison

pytestmark = pytest.mark.deploy


def npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int8, np.int64, np.uint16, np.bool_])
@pytest.mark.parametrize("order", ["C", "F"])
def test_npy_reads_as_numpy_does(dtype, order):
    arr = np.asarray(np.arange(24).reshape(2, 3, 4) % 5, dtype=dtype, order=order)
    (v,) = comparison.decode(npy(arr), "application/x-npy").values()
    assert v.shape == (2, 3, 4)
    assert v.flat == [float(x) for x in arr.astype(np.float64).ravel()]


def test_npz_csv_and_refusals():
    buf = io.BytesIO()
    np.savez(buf, logits=np.float32([[1, 2], [3, 4]]), ids=np.int64([7]))
    d = comparison.decode(buf.getvalue(), "application/x-npz")
    assert {k: (v.shape, v.flat) for k, v in d.items()} == {"logits": ((2, 2), [1, 2, 3, 4]), "ids": ((1,), [7])}
    for text, shape in [("1,2\n3,4\n", (2, 2)), ("# head\n1, 2,3\n", (3,)), ("1\n2\n", (2,)), ("5", (1,))]:
        assert comparison.decode(text.encode(), "text/csv")["output"].shape == shape
        assert comparison.decode(text.encode(), "text/csv")["output"].shape == np.loadtxt(
            io.StringIO(text), delimiter=",", ndmin=1).shape
    for body, ctype in [(b"junk", "application/x-npy"), (b"junk", "application/x-npz"), (b"1,2\n3", "text/csv"),
                        (b"[[1, 2], [3]]", "application/json"), (b'"abc"', "application/json"),
                        (npy(np.array([(1, 2.0)], dtype="i4,f8")), "application/x-npy")]:
        assert comparison.decode(body, ctype) is None, body
    d = comparison.decode(json.dumps([{"a": 1, "b": [1, 2]}, {"a": None, "b": [3, 4]}]).encode(), "")
    assert d["a"].shape == (2,) and math.isnan(d["a"].flat[1]) and d["b"].shape == (2, 2)


def test_agreement_figures():
    a = comparison.decode(b'{"predictions": [[0.1, 0.2, 0.7], [0.5, 0.4, 0.1]]}', "")["predictions"]
    b = comparison.decode(b'{"predictions": [[0.1, 0.3, 0.6], [0.3, 0.6, 0.1]]}', "")["predictions"]
    agg = comparison.OutputAgreement("predictions")
    agg.add(a, b)
    d = agg.as_dict()
    assert (d["compared"], d["requests"], d["top1_rows"], d["top1_agree"]) == (6, 1, 2, 1)
    assert d["max_abs_diff"] == pytest.approx(0.2)
    assert d["max_rel_diff"] == pytest.approx(0.2 / 0.5)   # 0.5 against 0.3
    agg.add(a, comparison.decode(b"[1, 2]", "")["output"])
    assert agg.shape_mismatches == 1
    inf = comparison.decode(b'[Infinity, 1.0, NaN]', "")["output"]
    agg = comparison.OutputAgreement("x")
    agg.add(inf, inf)
    assert (agg.max_abs_diff, agg.max_rel_diff) == (0.0, 0.0)
