"""The command line on images and audio: the modality comes from the data; bad files exit with code 2."""

from __future__ import annotations

import csv
import io
import shutil

from tenni.backbones import get_spec

from .test_cli import run


def test_fit_predict_evaluate_on_an_image_folder(capsys, monkeypatch, image_folder, tiny_vit, tmp_path):
    out = tmp_path / "model"
    code, stdout, stderr = run(capsys, monkeypatch, "fit", image_folder, "-b", tiny_vit, "--strategy", "probe",
                               "--no-baseline", "-o", out)
    assert code == 0, stderr
    assert "evaluated on 12" in stdout and (out / "tenni.json").exists()
    code, stdout, stderr = run(capsys, monkeypatch, "predict", out, image_folder / "test" / "warm")
    assert code == 0, stderr
    rows = list(csv.DictReader(io.StringIO(stdout)))
    assert len(rows) == 6 and {"path", "prediction", "confidence", "p_warm", "p_cool"} <= set(rows[0])
    one = sorted((image_folder / "test" / "cool").iterdir())[0]
    code, stdout, stderr = run(capsys, monkeypatch, "predict", out, one)
    assert code == 0 and len(list(csv.DictReader(io.StringIO(stdout)))) == 1
    code, stdout, stderr = run(capsys, monkeypatch, "evaluate", out, image_folder)
    assert code == 0 and "accuracy" in stdout and "(n = 12)" in stdout
    code, stdout, stderr = run(capsys, monkeypatch, "predict", out, image_folder)  # train/ + test/: its test/
    assert code == 0 and len(list(csv.DictReader(io.StringIO(stdout)))) == 12 and "predicting the files" in stderr


def test_bad_image_exits_2_with_its_path_or_is_skipped(capsys, monkeypatch, image_folder, tiny_vit, tmp_path):
    root = tmp_path / "imgs"
    shutil.copytree(image_folder / "train", root)
    (root / "cool" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 20)
    code, _, stderr = run(capsys, monkeypatch, "fit", root, "-b", tiny_vit, "-s", "probe", "--no-baseline")
    assert code == 2 and "broken.jpg" in stderr and "Traceback" not in stderr
    code, stdout, stderr = run(capsys, monkeypatch, "fit", root, "-b", tiny_vit, "-s", "probe", "--no-baseline",
                               "--skip-bad-files")
    assert code == 0, stderr
    assert "skipped 1 bad image file" in stderr
    # the fix the error names exists wherever data is read
    code, _, stderr = run(capsys, monkeypatch, "check", root, "-b", tiny_vit, "--skip-bad-files", "--json")
    assert code == 0 and "skipped 1 bad image file" in stderr, stderr


def test_frozen_audio_backbone_refuses_finetune_in_one_line(capsys, monkeypatch, tone_folder):
    if not (get_spec("audio/birdnet") and get_spec("audio/birdnet").available()):
        return
    code, _, stderr = run(capsys, monkeypatch, "fit", tone_folder, "--strategy", "finetune")
    assert code == 2 and "frozen" in stderr and "probe" in stderr


def test_models_lists_image_and_audio_backbones(capsys, monkeypatch):
    import json

    code, stdout, _ = run(capsys, monkeypatch, "models", "--json")
    rows = {r["name"]: r for r in json.loads(stdout)}
    assert rows["image/efficientnet-lite0"]["modality"] == "image"
    assert rows["audio/birdnet"]["trainable"] is False
    assert isinstance(rows["audio/speaker"]["offline"], bool)


def test_data_of_another_kind_than_the_training_data_exits_2(capsys, monkeypatch, image_folder, tone_folder,
                                                             train_csv, tmp_path):
    """Test or evaluation data must be of the training data's kind: texts for a text model, images for an image
    model; otherwise one line that says so, not a decoder's traceback or file paths read as text."""
    code, _, _ = run(capsys, monkeypatch, "fit", train_csv, "-s", "scratch", "--no-baseline", "-o", tmp_path / "m")
    assert code == 0
    for args in (["evaluate", tmp_path / "m", image_folder / "test"],
                 ["check", train_csv, "--test", image_folder / "test"],
                 ["assess", image_folder / "train", "--test", tone_folder / "test"],
                 ["report", tmp_path / "m", "--data", image_folder / "train"]):
        code, _, err = run(capsys, monkeypatch, *args)
        assert code == 2 and "but this data holds" in err and "Traceback" not in err, (args, err)
