import io
import json

import numpy as np
import pytest

from serve.contract import codecs
from serve.contract.errors import BadRequest, NotAcceptable, UnsupportedContentType


def test_row_format():
    d = codecs.decode(b'{"instances": [[1, 2], [3, 4]], "signature_name": "sig"}', "application/json")
    np.testing.assert_array_equal(d.inputs, [[1, 2], [3, 4]])
    assert (d.signature_name, d.columnar) == ("sig", False)


def test_row_format_named_instances():
    d = codecs.decode(b'{"instances": [{"a": [1, 2], "b": 3}, {"a": [4, 5], "b": 6}]}', "application/json")
    np.testing.assert_array_equal(d.inputs["a"], [[1, 2], [4, 5]])
    np.testing.assert_array_equal(d.inputs["b"], [3, 6])


def test_columnar_format():
    d = codecs.decode(b'{"inputs": {"a": [[1.5]], "b": [[2, 3]]}}', "application/json; charset=utf-8")
    assert d.columnar and set(d.inputs) == {"a", "b"}
    d = codecs.decode(b'{"inputs": [[1, 2]]}', "application/json")
    assert d.columnar and d.inputs.shape == (1, 2)


def test_bare_array_as_numpy_tolist_sends_it():
    x = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    d = codecs.decode(json.dumps(x.tolist()).encode(), "application/json")
    assert d.inputs.shape == (1, 32, 32, 3) and not d.columnar
    np.testing.assert_allclose(d.inputs, x, rtol=1e-6)


def test_missing_content_type_means_json():
    assert codecs.decode(b"[[1]]", None).inputs.shape == (1, 1)


def test_jsonlines():
    d = codecs.decode(b"[1, 2]\n[3, 4]\n\n", "application/jsonlines")
    np.testing.assert_array_equal(d.inputs, [[1, 2], [3, 4]])
    d = codecs.decode(b'{"x": 1}\n{"x": 2}\n', "application/jsonlines")
    np.testing.assert_array_equal(d.inputs["x"], [1, 2])


def test_csv():
    d = codecs.decode(b"1,2,3\n4,5,6\n", "text/csv")
    np.testing.assert_array_equal(d.inputs, [[1, 2, 3], [4, 5, 6]])
    assert codecs.decode(b"1,2,3", "text/csv").inputs.shape == (1, 3)


# -- AWS's TensorFlow serving container's conventions (issue 10) ----------------------------------

def test_csv_single_column_is_one_scalar_per_line():
    d = codecs.decode(b"1.5\n2\n3\n", "text/csv")
    assert d.inputs.shape == (3,)
    np.testing.assert_array_equal(d.inputs, [1.5, 2, 3])


def test_csv_text_is_strings():
    d = codecs.decode(b"great movie\nawful\n", "text/csv")
    assert d.inputs.tolist() == ["great movie", "awful"]
    d = codecs.decode(b"a,b\nc,d\n", "text/csv")
    assert d.inputs.tolist() == [["a", "b"], ["c", "d"]]


@pytest.mark.parametrize("body, shape", [
    (b"[1, 2, 3, 4]", (1, 4)),                 # first element not an array: one instance
    (b"[[1, 2, 3, 4]]", (1, 4)),               # an array of instances, as before
    (b"5", (1,)),                              # a scalar: one instance
])
def test_bare_json_is_one_instance_unless_it_is_a_list_of_arrays(body, shape):
    assert codecs.decode(body, "application/json").inputs.shape == shape


def test_bare_json_object_is_one_instance_of_named_inputs():
    d = codecs.decode(b'{"features": [1, 2, 3, 4], "count": 2}', "application/json")
    assert d.inputs["features"].shape == (1, 4) and d.inputs["count"].tolist() == [2]


def test_several_json_documents_are_one_instance_each():
    for ctype in ("application/json", "application/jsons", "application/jsonlines"):
        d = codecs.decode(b"[1, 2]\n[3, 4]\n[5, 6]\n", ctype)
        np.testing.assert_array_equal(d.inputs, [[1, 2], [3, 4], [5, 6]])
    d = codecs.decode(b'{"x": [1]}\n{"x": [2]}\n', "application/json")
    np.testing.assert_array_equal(d.inputs["x"], [[1], [2]])


def test_one_jsonlines_line_is_read_as_a_json_body():
    d = codecs.decode(b'{"instances": [[1, 2], [3, 4]]}\n', "application/jsonlines")
    assert d.inputs.shape == (2, 2)
    assert codecs.decode(b"[[1, 2], [3, 4]]", "application/jsonlines").inputs.shape == (2, 2)


def test_b64_values_are_bytes_and_bytes_outputs_are_b64():
    d = codecs.decode(b'{"instances": [{"b64": "AAEC"}, {"b64": "/w=="}]}', "application/json")
    assert d.inputs.dtype == object and d.inputs.tolist() == [b"\x00\x01\x02", b"\xff"]
    d = codecs.decode(b'{"instances": [{"image": {"b64": "AA=="}, "caption": "sea"}]}', "application/json")
    assert d.inputs["image"].tolist() == [b"\x00"] and d.inputs["caption"].tolist() == ["sea"]
    body, _ = codecs.encode({"thumb_bytes": np.array([b"\x00\xff"], object)}, codecs.JSON)
    assert json.loads(body) == {"predictions": [{"b64": "AP8="}]}
    body, _ = codecs.encode({"label": np.array([b"cat"], object)}, codecs.JSON)
    assert json.loads(body) == {"predictions": ["cat"]}


def test_examples_body():
    d = codecs.decode(b'{"signature_name": "s", "examples": [{"x": 1.0}], "context": {"c": 2}}', None)
    assert d.examples == [{"x": 1.0}] and d.context == {"c": 2} and d.signature_name == "s" and d.inputs is None


def test_results_encoding_like_tf_serving():
    body, _ = codecs.encode_results("regress", {"outputs": np.array([[2.5], [3.0]], np.float32)})
    assert json.loads(body) == {"results": [2.5, 3.0]}
    body, _ = codecs.encode_results("classify", {"classes": np.array([[b"a", b"b"]], object),
                                                 "scores": np.array([[0.25, 0.75]], np.float32)})
    assert json.loads(body) == {"results": [[["a", 0.25], ["b", 0.75]]]}
    body, _ = codecs.encode_results("classify", {"scores": np.array([[0.5, 0.5]], np.float32)})
    assert json.loads(body) == {"results": [[["", 0.5], ["", 0.5]]]}


def test_npy_and_npz():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    buf = io.BytesIO(); np.save(buf, x)
    np.testing.assert_array_equal(codecs.decode(buf.getvalue(), "application/x-npy").inputs, x)
    buf = io.BytesIO(); np.savez(buf, a=x, b=x[:, :1])
    d = codecs.decode(buf.getvalue(), "application/x-npz")
    assert set(d.inputs) == {"a", "b"} and d.inputs["b"].shape == (2, 1)


@pytest.mark.parametrize("body, ctype, fragment", [
    (b"{not json", "application/json", "not valid JSON"),
    (b'{"instances": 5}', "application/json", "must be a list"),
    (b'{"instances": [[1, 2], [3]]}', "application/json", "same shape"),
    (b'{"instances": [1], "examples": []}', "application/json", "not several"),
    (b"1,2\nthree\n", "text/csv", "same number of columns"),
    (b"\xff,\xfe\n", "text/csv", "UTF-8"),
    (b'{"instances": [{"b64": "not base64!"}]}', "application/json", "base64"),
    (b"not an array", "application/x-npy", ".npy"),
    (b"", "application/json", "empty"),
    (b"[1]\n{oops\n", "application/jsonlines", "line 2"),
])
def test_malformed_bodies_say_what_is_wrong(body, ctype, fragment):
    with pytest.raises(BadRequest) as err:
        codecs.decode(body, ctype)
    assert fragment in err.value.message


def test_npy_refuses_pickles():
    buf = io.BytesIO(); np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadRequest):
        codecs.decode(buf.getvalue(), "application/x-npy")


def test_unsupported_content_type():
    with pytest.raises(UnsupportedContentType) as err:
        codecs.decode(b"x", "image/png")
    assert "text/csv" in err.value.message


@pytest.mark.parametrize("header, expected", [
    (None, codecs.JSON), ("*/*", codecs.JSON), ("application/json", codecs.JSON),
    ("text/csv", codecs.CSV), ("application/jsonlines", codecs.JSONLINES),
    ("application/x-npy", codecs.NPY), ("image/png, text/csv;q=0.5", codecs.CSV),
    ("text/csv;q=0.2, application/json;q=0.9", codecs.JSON),
    # several types at one quality: the first listed, as AWS's container labels its answer
    ("application/jsonlines, application/json", codecs.JSONLINES),
    ("application/json,application/jsonlines", codecs.JSON),
    ("application/json; charset=utf-8", codecs.JSON), ("text/csv; charset=UTF-8", codecs.CSV),
    ("text/*", codecs.CSV), ("application/*", codecs.JSON), ("image/png;q=0, */*;q=0.1", codecs.JSON),
    # AWS's container answers JSON Lines only to application/jsonlines; its other names get JSON
    ("application/jsons", codecs.JSON), ("application/x-ndjson", codecs.JSON), ("application/jsonl", codecs.JSON),
])
def test_negotiate(header, expected):
    assert codecs.negotiate(header) == expected


def test_negotiate_refuses_unknown():
    with pytest.raises(NotAcceptable) as err:
        codecs.negotiate("image/png")
    assert "application/json" in err.value.message


OUT = {"probabilities": np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)}
MULTI = {"total": np.array([1.0, 2.0], np.float32), "scaled": np.array([[1, 2], [3, 4]], np.int32)}


def test_encode_json_like_tf_serving():
    body, ctype = codecs.encode(OUT, codecs.JSON)
    assert ctype == codecs.JSON and json.loads(body) == {"predictions": [[0.25, 0.75], [0.5, 0.5]]}
    body, _ = codecs.encode(OUT, codecs.JSON, columnar=True)
    assert json.loads(body) == {"outputs": [[0.25, 0.75], [0.5, 0.5]]}


def test_encode_multi_output_rows_and_columns():
    assert json.loads(codecs.encode(MULTI, codecs.JSON)[0]) == {
        "predictions": [{"total": 1.0, "scaled": [1, 2]}, {"total": 2.0, "scaled": [3, 4]}]}
    assert json.loads(codecs.encode(MULTI, codecs.JSON, columnar=True)[0]) == {
        "outputs": {"total": [1.0, 2.0], "scaled": [[1, 2], [3, 4]]}}


def test_encode_jsonlines_csv_npy():
    body, _ = codecs.encode(OUT, codecs.JSONLINES)
    assert [json.loads(line) for line in body.splitlines()] == [[0.25, 0.75], [0.5, 0.5]]
    body, _ = codecs.encode(OUT, codecs.CSV)
    assert body.decode().splitlines() == ["0.25,0.75", "0.5,0.5"]
    body, _ = codecs.encode(MULTI, codecs.CSV)
    assert body.decode().splitlines() == ["1,1,2", "2,3,4"]
    body, _ = codecs.encode(OUT, codecs.NPY)
    np.testing.assert_array_equal(np.load(io.BytesIO(body)), OUT["probabilities"])


def test_npy_of_several_outputs_points_to_npz():
    with pytest.raises(NotAcceptable) as err:
        codecs.encode(MULTI, codecs.NPY)
    assert codecs.NPZ in err.value.message
    body, _ = codecs.encode(MULTI, codecs.NPZ)
    assert set(np.load(io.BytesIO(body)).files) == {"total", "scaled"}


@pytest.mark.parametrize("body", [
    b"[[1, 2], [3, [4]]]",                 # a nested array hiding among numbers
    b"[[1, 2], [3, 4, 5], [6]]",           # ragged, same total as (3, 2)
    b'{"instances": [[1, 2], [3]]}',
])
def test_fast_path_never_accepts_irregular_arrays(body):
    assert codecs.json_codec._fast_json(body) is None  # declined: the exact path gives the error
    with pytest.raises(BadRequest):
        codecs.decode(body, "application/json")


@pytest.mark.parametrize("body", [
    b"[[1.5, 2], [3, 4e-3]]", b'{"instances": [[1, 2]], "signature_name": "x[0]"}',
    b'{"inputs": {"a[1]": [[1.0]], "b": [2, 3]}}', b'{"instances": [{"a": 1}, {"a": 2}]}',
    b'{"instances": [["a", "b"]]}', b'{"instances": [[true, false]]}', b"[[]]",
])
def test_fast_path_agrees_with_the_exact_path(body):
    fast = codecs.json_codec._fast_json(body)
    try:
        exact = codecs.json_codec._exact_json(body)
    except BadRequest:
        assert fast is None
        return
    if fast is not None:
        assert fast.signature_name == exact.signature_name and fast.columnar == exact.columnar
        if isinstance(exact.inputs, dict):
            for name in exact.inputs:
                np.testing.assert_array_equal(fast.inputs[name], exact.inputs[name])
        else:
            np.testing.assert_array_equal(fast.inputs, exact.inputs)


def test_fast_path_takes_plain_number_bodies():
    x = np.random.default_rng(2).random((2, 8, 8, 3))
    for body in (json.dumps(x.tolist()), json.dumps({"instances": x.tolist()}),
                 json.dumps({"inputs": {"image": x.tolist()}, "signature_name": "serving_default"})):
        fast = codecs.json_codec._fast_json(body.encode())
        assert fast is not None
        arr = fast.inputs["image"] if isinstance(fast.inputs, dict) else fast.inputs
        np.testing.assert_array_equal(arr, x)


# -- strings: memory in proportion to the body -------------------------------------------------------

@pytest.mark.parametrize("content_type, body", [
    ("application/json", json.dumps({"instances": ["x" * 250_000] + [""] * 1000}).encode()),
    ("text/csv", b"x" * 100_000 + b",a\n" + b"b,c\n" * 3000),   # csv's field limit is 128 KiB
])
def test_one_long_string_among_many_short_ones_costs_what_the_body_does(content_type, body):
    """NumPy's fixed-width str dtype would store every string at the longest one's width (about 1 GB
    for each of these bodies); as objects they cost a small multiple of the body."""
    import tracemalloc

    tracemalloc.start()
    try:
        decoded = codecs.decode(body, content_type)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert decoded.inputs.dtype == object and decoded.inputs.flat[0].startswith("x" * 100_000)
    assert peak < 50 * len(body), f"decoding a {len(body)} byte body peaked at {peak} bytes"


def test_strings_mixed_with_numbers_are_refused():
    with pytest.raises(BadRequest, match="numbers or strings, not both"):
        codecs.decode(b'{"instances": ["a", 1]}', "application/json")


def test_a_large_json_body_does_not_go_through_the_kept_parser(monkeypatch):
    """A simdjson parser keeps buffers of about 3.5x the largest document it parsed for as long as
    it lives: the parser each thread keeps is for small bodies, a large one gets its own."""
    import simdjson

    class Spy:
        def __init__(self):
            self.real, self.sizes = simdjson.Parser(), []

        def parse(self, body):
            self.sizes.append(len(body))
            return self.real.parse(body)

    spy = Spy()
    monkeypatch.setattr(codecs.json_codec._parsers, "parser", spy, raising=False)
    small = json.dumps({"instances": [[1.0, 2.0, 3.0, 4.0]] * 1000}).encode()
    large = json.dumps({"instances": np.arange(600_000, dtype=np.float64).reshape(-1, 4).tolist()}).encode()
    assert codecs.FAST_JSON_MIN_BYTES <= len(small) < codecs.json_codec.KEEP_PARSER_MAX_BYTES < len(large)
    for body in (small, large):
        decoded = codecs.decode(body, "application/json")
        assert decoded.inputs.shape[1] == 4
    assert spy.sizes == [len(small)]


# -- issue 23, point 19: headers whose sizes overflow, and the .npz decode budget ---------------------

def _npy_header(shape, descr="<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


@pytest.mark.parametrize("shape", [(2 ** 32, 2 ** 32), (2 ** 16,) * 4, (2 ** 39, 2 ** 25)])
def test_npy_header_whose_size_wraps_int64_with_no_data_is_400(shape):
    # NumPy's int64 product of these shapes is 0, which an empty body used to match: a 500 at reshape
    with pytest.raises(BadRequest) as err:
        codecs.decode(_npy_header(shape), "application/x-npy")
    assert "bytes follow it" in err.value.message and str(shape) in err.value.message


def test_a_deflated_npz_member_past_the_decode_budget_is_413(monkeypatch):
    from serve.contract.codecs import numpy_codec
    from serve.contract.errors import PayloadTooLarge

    monkeypatch.setattr(numpy_codec, "MAX_NPZ_EXPANDED_BYTES", 4 << 20)
    x = np.zeros(6 << 20, np.uint8)                    # 6 MiB of zeros: a few KiB deflated
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x)
    assert len(buf.getvalue()) < 100_000
    with pytest.raises(PayloadTooLarge) as err:
        codecs.decode(buf.getvalue(), "application/x-npz")
    assert err.value.status == 413 and "4 MiB" in err.value.message and "decode budget" in err.value.message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("shape", ["instances", "inputs", "bare", "lines"])
def test_python_json_non_finite_tokens_parse(value, shape):
    # json.dumps writes NaN, Infinity and -Infinity; they parse, and the signature check refuses them
    rows = [[value, 1.0], [2.0, 3.0]]
    body, kind = {"instances": (json.dumps({"instances": rows}), codecs.JSON),
                  "inputs": (json.dumps({"inputs": rows}), codecs.JSON),
                  "bare": (json.dumps(rows), codecs.JSON),
                  "lines": ("\n".join(json.dumps(r) for r in rows), codecs.JSONLINES)}[shape]
    decoded = codecs.decode(body.encode(), kind)
    np.testing.assert_array_equal(np.asarray(decoded.inputs).reshape(-1, 2), np.array(rows))


def test_json_still_refuses_what_python_would_not_write():
    for body in (b'{"instances": [nan]}', b'[NaN, 1', b'{"instances": [NaNa]}'):
        with pytest.raises(BadRequest, match="not valid JSON"):
            codecs.decode(body, codecs.JSON)
