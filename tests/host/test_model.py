import numpy as np
import pytest

from serve.contract.errors import BadRequest
from model_archive.layout import find_model
from serve.model_process.model import load_model


@pytest.fixture(scope="module")
def mlp(mlp_model_dir):
    return load_model(find_model(mlp_model_dir.model_dir))


@pytest.fixture(scope="module")
def multi(multi_io_model_dir):
    return load_model(find_model(multi_io_model_dir.model_dir))


def test_highest_version_is_served(mlp, mlp_model_dir):
    assert mlp.location.version == "1"
    out = mlp.signature(None).call({"features": mlp_model_dir.inputs["features"]})
    np.testing.assert_allclose(out["output_0"], mlp_model_dir.expected["output_0"], rtol=1e-5)


def test_signature_description(mlp, multi):
    sig = mlp.signature("serving_default")
    assert sig.inputs["features"].shape == (None, 4) and sig.batched
    assert set(multi.signatures) >= {"serving_default", "sum_only"}
    assert set(multi.signature(None).outputs) == {"total", "scaled"}


def test_prepare_casts_and_adds_the_batch_dimension(mlp):
    sig = mlp.signature(None)
    feed = sig.prepare(np.array([1, 2, 3, 4]))  # ints, one instance without its batch dim
    assert feed["features"].shape == (1, 4) and feed["features"].dtype == np.float32


@pytest.mark.parametrize("value, fragment", [
    (np.zeros((2, 5)), "'features' shape (-1, 4) float32 does not accept shape (2, 5)"),
    (np.array([["a", "b", "c", "d"]]), "does not accept <U1"),
])
def test_prepare_names_expected_shape_and_dtype(mlp, value, fragment):
    with pytest.raises(BadRequest) as err:
        mlp.signature(None).prepare(value)
    assert fragment.replace("<U1", "str") in err.value.message or fragment in err.value.message


def test_unknown_signature_lists_the_known_ones(mlp):
    with pytest.raises(BadRequest) as err:
        mlp.signature("nope")
    assert "unknown signature_name 'nope'" in err.value.message and "serving_default" in err.value.message


def test_multi_input_needs_names(multi):
    with pytest.raises(BadRequest) as err:
        multi.signature(None).prepare(np.zeros((1, 2)))
    assert "send them by name" in err.value.message
    with pytest.raises(BadRequest) as err:
        multi.signature(None).prepare({"a": np.zeros((1, 2))})
    assert "missing ['b']" in err.value.message


def test_keras_files_load(keras_file_model_dirs):
    for built in keras_file_model_dirs.values():
        model = load_model(find_model(built.model_dir))
        out = model.signature(None).call(model.signature(None).prepare(built.inputs["features"]))
        np.testing.assert_allclose(out["probabilities"], built.expected["probabilities"], rtol=1e-5)


def test_warm_up_runs_every_signature(multi):
    assert multi.warm_up() > 0
