import pytest

from model_archive.layout import ModelNotFound, find_model


def _saved_model(path):
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"")
    return path


@pytest.mark.parametrize("layout, expected_rel, name, version", [
    (["1", "2", "10"], "10", "model", "10"),
    (["clf/1", "clf/7"], "clf/7", "clf", "7"),
    (["00000123", "00000124", "abcde", ".00000999", "１２"], "00000124", "model", "124"),  # TF Serving's numbering
    ([""], "", "model", None),
])
def test_find_model_layouts(tmp_path, layout, expected_rel, name, version):
    for rel in layout:
        _saved_model(tmp_path / rel) if rel else (tmp_path / "saved_model.pb").write_bytes(b"")
    (tmp_path / "code").mkdir()
    loc = find_model(tmp_path)
    assert (loc.path, loc.kind, loc.name, loc.version) == (tmp_path / expected_rel, "savedmodel", name, version)


def test_two_folders_of_one_version_are_refused(tmp_path):
    _saved_model(tmp_path / "7")
    _saved_model(tmp_path / "007")
    with pytest.raises(ModelNotFound, match="both version 7"):
        find_model(tmp_path)


def test_find_keras_file_and_ignore_code(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "helper.h5").write_bytes(b"")
    (tmp_path / "net.keras").write_bytes(b"")
    assert find_model(tmp_path).path == tmp_path / "net.keras"


def test_no_model_explains_layouts(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelNotFound) as err:
        find_model(tmp_path)
    assert "<version>/saved_model.pb" in str(err.value) and "no loadable model" in str(err.value)


def test_root_savedmodel_is_at_root(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"")
    assert find_model(tmp_path).at_root
    _saved_model(tmp_path / "sub" / "1")
    assert not find_model(tmp_path / "sub").at_root


def test_layout_module_stays_light():
    import subprocess
    import sys

    code = "import sys, model_archive.layout, serve.cli; print(sorted(m for m in ('numpy', 'tensorflow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # the gunicorn master forks workers without NumPy or TensorFlow in it
