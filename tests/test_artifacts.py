"""The model directory: manifest, no pickle, atomic writes, and refusals on damage or mismatch."""

from __future__ import annotations

import json

import pytest

import tenni
from tenni.errors import ModelFileError
from tenni.strategies import get_strategy_class


@pytest.fixture(scope="module")
def probe_model(train_data):
    return tenni.Model(get_strategy_class("probe")().fit(*train_data))


def test_manifest_records_what_is_needed(probe_model, tmp_path):
    path = probe_model.save(tmp_path / "m")
    manifest = json.loads((path / "tenni.json").read_text())
    assert manifest["format_version"] == 1 and manifest["tenni_version"] == tenni.__version__
    assert manifest["backbone"]["name"] == "text/minilm"
    assert manifest["backbone"]["fingerprint"].startswith("sha256:")
    assert manifest["strategy"]["name"] == "probe" and "C" in manifest["strategy"]["config"]
    assert manifest["labels"] == ["food", "sports", "weather"]
    assert manifest["weights"]["sha256"]
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "report.html", "tenni.json", "weights.safetensors"]


def test_unknown_format_version_is_refused(probe_model, tmp_path):
    path = probe_model.save(tmp_path / "m")
    manifest = json.loads((path / "tenni.json").read_text())
    manifest["format_version"] = 99
    (path / "tenni.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="unknown format version 99"):
        tenni.load(path)


def test_damaged_weights_are_refused(probe_model, tmp_path):
    path = probe_model.save(tmp_path / "m")
    weights = path / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="do not match the hash"):
        tenni.load(path)


def test_backbone_with_other_weights_is_refused(probe_model, tmp_path):
    path = probe_model.save(tmp_path / "m")
    manifest = json.loads((path / "tenni.json").read_text())
    manifest["backbone"]["fingerprint"] = "sha256:" + "0" * 64
    (path / "tenni.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="was trained on"):
        tenni.load(path)


def test_not_a_model_dir(tmp_path):
    with pytest.raises(ModelFileError, match="not a tenni model"):
        tenni.load(tmp_path)


def test_failed_save_leaves_the_old_model_untouched(probe_model, tmp_path, monkeypatch):
    path = probe_model.save(tmp_path / "m")
    before = (path / "tenni.json").read_text()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("tenni.evaluation.card.render_model_card", boom)
    with pytest.raises(KeyboardInterrupt):
        probe_model.save(path)
    assert (path / "tenni.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"], "no temporary directory may be left behind"


def test_refuses_to_overwrite_a_foreign_directory(probe_model, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("precious")
    with pytest.raises(ModelFileError, match="refusing"):
        probe_model.save(tmp_path / "docs")
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "precious"


def test_weights_are_safetensors_not_pickle(probe_model, tmp_path):
    path = probe_model.save(tmp_path / "m")
    head = (path / "weights.safetensors").read_bytes()[:8]
    header_len = int.from_bytes(head, "little")
    assert 0 < header_len < 10_000_000  # a safetensors header, not a pickle stream (b"\x80\x04")
    assert b"__reduce__" not in (path / "weights.safetensors").read_bytes()


def test_manifest_cannot_point_weights_outside_the_directory(probe_model, tmp_path):
    path = probe_model.save(tmp_path / "m")
    manifest = json.loads((path / "tenni.json").read_text())
    manifest["weights"]["file"] = "../elsewhere.safetensors"
    (path / "tenni.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="weights other than"):
        tenni.load(path)


def test_a_missing_weights_hash_counts_as_damage(probe_model, tmp_path):
    path = probe_model.save(tmp_path / "m")
    manifest = json.loads((path / "tenni.json").read_text())
    del manifest["weights"]["sha256"]
    (path / "tenni.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="hash"):
        tenni.load(path)


def test_loading_never_downloads_the_backbone_it_names(probe_model, tmp_path, monkeypatch):
    path = probe_model.save(tmp_path / "m")
    manifest = json.loads((path / "tenni.json").read_text())
    manifest["backbone"]["name"] = "someone/unknown-model"
    (path / "tenni.json").write_text(json.dumps(manifest))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from tenni.errors import BackboneError

    with pytest.raises(BackboneError, match="not in the local Hugging Face cache"):
        tenni.load(path)


def _rewrite(path, edit):
    """Edit a saved model's manifest and tensors, then write a matching hash: a consistent but hand-made model."""
    from safetensors.numpy import load_file, save_file

    from tenni._paths import sha256_file

    manifest = json.loads((path / "tenni.json").read_text())
    tensors = dict(load_file(str(path / "weights.safetensors")))
    edit(manifest, tensors)
    save_file(tensors, str(path / "weights.safetensors"))
    manifest["weights"]["sha256"] = sha256_file(path / "weights.safetensors")
    manifest["weights"]["size"] = (path / "weights.safetensors").stat().st_size
    (path / "tenni.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("edit, message", [
    (lambda m, t: m.update(labels=["food", "food", "weather"]), "distinct label names"),
    (lambda m, t: m.update(labels="food"), "distinct label names"),
    (lambda m, t: m.update(labels=["food", "sports", "weather", "rain"]), "3 rows for 4 labels"),
    (lambda m, t: m.update(task="anomaly"), "does not match strategy"),
    (lambda m, t: m["strategy"]["config"].update(C=-1), "option C must be above 0"),
    (lambda m, t: t.update({"head.coef": t["head.coef"] * float("nan")}), "NaN or infinite"),
    (lambda m, t: t.pop("head.intercept"), "the head has"),
    (lambda m, t: t.pop("head.coef"), "do not fit the manifest's probe model"),
])
def test_a_consistent_but_wrong_manifest_is_refused_at_load(probe_model, tmp_path, edit, message):
    """The hash only proves the weights are the ones the manifest names; what the manifest says is checked too, so a
    hand-edited model fails at load with the file named, not later inside numpy or with mislabelled output."""
    path = probe_model.save(tmp_path / "m")
    _rewrite(path, edit)
    with pytest.raises(ModelFileError, match=message) as info:
        tenni.load(path).predict(["sunny and warm"])
    assert str(path) in str(info.value)


def test_a_manifest_that_is_not_a_json_object_is_refused(probe_model, tmp_path):
    path = probe_model.save(tmp_path / "m")
    (path / "tenni.json").write_text("[1, 2, 3]")
    with pytest.raises(ModelFileError, match="not an object"):
        tenni.load(path)


def test_replacing_a_model_never_deletes_files_tenni_did_not_write(probe_model, tmp_path):
    path = probe_model.save(tmp_path / "m")
    probe_model.save(path)  # a model over a model: its files replaced
    (path / "my_predictions.csv").write_text("precious")
    (path / ".git").mkdir()
    (path / ".git" / "HEAD").write_text("ref: refs/heads/main")
    (path / ".env").write_text("SECRET=1")
    (path / "report.assess.json").write_text("{}")  # written by `tenni report --data`
    probe_model.save(path)  # nothing else in the folder is touched, hidden files included
    assert (path / "my_predictions.csv").read_text() == "precious" and tenni.load(path).labels == probe_model.labels
    assert (path / ".git" / "HEAD").read_text() == "ref: refs/heads/main" and (path / ".env").read_text() == "SECRET=1"
    assert not [p for p in path.iterdir() if p.name.endswith(".tmp")], "no temporary file may be left behind"


def test_a_model_with_non_finite_weights_is_refused_at_save(probe_model, tmp_path):
    import numpy as np

    from tenni.artifacts import write_model_dir

    with pytest.raises(ModelFileError, match="training diverged"):
        write_model_dir(tmp_path / "m", {"labels": ["a", "b"]}, {"head.coef": np.array([[np.nan, 1.0]])}, "card")
    assert not (tmp_path / "m").exists()


def test_saved_files_follow_the_umask_not_the_temporary_files_0600(probe_model, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = probe_model.save(tmp_path / "m")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()}
    assert modes and all(mode == 0o644 for mode in modes.values()), modes
