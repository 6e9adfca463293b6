"""--task anomaly: fit on normal images only; scores, threshold, AUROC; save -> load gives the same scores."""

from __future__ import annotations

import csv
import io
import shutil

import numpy as np
import pytest

import tenni
from tenni.data import read_dataset
from tenni.errors import ConfigError
from tenni.evaluation.anomaly import auroc
from tenni.strategies.patchcore import greedy_coreset

from .test_cli import run


@pytest.fixture(scope="module")
def defect_folder(image_folder, tmp_path_factory):
    """train/good: 12 normal images; test/good: 6 normal, test/defect: 6 unlike them."""
    root = tmp_path_factory.mktemp("defects")
    shutil.copytree(image_folder / "train" / "cool", root / "train" / "good")
    shutil.copytree(image_folder / "test" / "cool", root / "test" / "good")
    shutil.copytree(image_folder / "test" / "warm", root / "test" / "defect")
    return root


def test_coreset_covers_and_auroc():
    x = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    idx = greedy_coreset(x, 50, seed=0)
    assert len(idx) == 50 == len(set(idx.tolist()))
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0 and auroc([0, 0], [1, 2]) is None


def test_anomaly_fit_evaluate_and_reload(defect_folder, tiny_vit, tmp_path):
    model = tenni.fit(str(defect_folder), task="anomaly", backbone=str(tiny_vit))
    assert model.task == "anomaly" and model.labels == ["defect", "normal"]
    test = model.metrics["test"]
    assert test["auroc"] >= 0.8 and test["normal_label"] == "good", test
    path = model.save(tmp_path / "detector")
    again = tenni.load(path)
    ds = read_dataset(defect_folder / "test")
    np.testing.assert_allclose(model.score(ds.inputs), again.score(ds.inputs), rtol=1e-5)
    assert again.evaluate(ds)["auroc"] == pytest.approx(test["auroc"])
    assert set(again.predict(ds.inputs)) <= {"defect", "normal"}
    # evaluation data without the model's normal class: every example is a defect, never the class re-guessed
    defect_paths = [x for x, y in zip(ds.inputs, ds.labels) if y == "defect"]
    metrics = again.evaluate((defect_paths, ["defect"] * len(defect_paths)))
    assert metrics["normal_label"] == "good" and metrics["auroc"] is None


def test_anomaly_cli(capsys, monkeypatch, defect_folder, tiny_vit, tmp_path):
    out = tmp_path / "m"
    code, stdout, stderr = run(capsys, monkeypatch, "fit", defect_folder, "--task", "anomaly", "-b", tiny_vit,
                               "-o", out)
    assert code == 0, stderr
    assert "AUROC" in stdout and "held-out normals" in stdout
    code, stdout, stderr = run(capsys, monkeypatch, "predict", out, defect_folder / "test" / "defect")
    assert code == 0, stderr
    rows = list(csv.DictReader(io.StringIO(stdout)))
    assert len(rows) == 6 and {"path", "prediction", "score", "threshold"} <= set(rows[0])
    code, stdout, _ = run(capsys, monkeypatch, "evaluate", out, defect_folder)
    assert code == 0 and "AUROC" in stdout


def test_anomaly_needs_images(tone_folder):
    with pytest.raises(ConfigError, match="works on images"):
        tenni.fit(str(tone_folder / "train" / "low"), task="anomaly")


@pytest.mark.parametrize("option", [{"strategy": "lora"}, {"budget": "5m"}, {"evaluation": "cv"}])
def test_anomaly_refuses_options_it_would_ignore(defect_folder, option):
    with pytest.raises(ConfigError, match="not apply to --task anomaly"):
        tenni.fit(str(defect_folder), task="anomaly", **option)


def test_anomaly_on_a_flat_folder_of_normals(defect_folder, tiny_vit, tmp_path):
    flat = tmp_path / "normals"
    shutil.copytree(defect_folder / "train" / "good", flat)
    model = tenni.fit(str(flat), task="anomaly", backbone=str(tiny_vit), config={"scoring": "patch"})
    assert model.metrics["evaluation"].startswith("none") and model.metrics["calibration_size"] >= 2
    assert model.save(tmp_path / "m").joinpath("README.md").read_text().count("flagged as defects") == 1
    # its normal class is a placeholder: scored on good/ + defect/, the data's normal-looking class is the normal one
    metrics = model.evaluate(str(defect_folder / "test"))
    assert metrics["normal_label"] == "good" and metrics["auroc"] is not None
