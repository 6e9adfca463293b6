"""Transferability scores where the answer is known, and the assessment end to end."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tenni.assess import assess, h_score, logme
from tenni.assess.scores import far_share


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30)
    centres = rng.normal(size=(3, 16)) * 3
    separable = centres[y] + rng.normal(size=(90, 16))
    noise = rng.normal(size=(90, 16))
    return separable, noise, y


def test_logme_prefers_features_that_carry_the_labels(blobs):
    separable, noise, y = blobs
    assert logme(separable, y) > logme(noise, y) + 0.1


def test_logme_drops_when_labels_are_shuffled(blobs):
    separable, _, y = blobs
    shuffled = np.random.default_rng(1).permutation(y)
    assert logme(separable, y) > logme(separable, shuffled)


def test_h_score_prefers_separable_features(blobs):
    separable, noise, y = blobs
    assert h_score(separable, y) > 2 * h_score(noise, y)


def test_far_share_sees_a_shift(blobs):
    separable, _, _ = blobs
    same = far_share(separable[::2], separable[1::2])
    shifted = far_share(separable[::2], separable[1::2] + 8.0)
    assert same < 0.3 and shifted > 0.8


def test_assess_ranks_a_real_backbone_above_a_random_one(train_data, tiny_backbone):
    result = assess(train_data, backbones=["text/minilm", str(tiny_backbone)])
    assert result.ranking()[0] == "text/minilm"
    minilm = result.reports[0]
    assert minilm.probe_accuracy > 0.85 and minilm.gain_over_scratch is not None
    assert minilm.probe_interval[0] <= minilm.probe_accuracy <= minilm.probe_interval[1]
    assert result.reports[-1].backbone == "scratch (TF-IDF)"
    assert result.recommendation["backbone"] == "text/minilm"
    assert result.recommendation["strategy"] in {"probe", "setfit", "lora", "finetune", "hybrid"}


def test_assess_says_an_english_backbone_does_not_know_japanese():
    from ..test_language import ja_texts

    result = assess(ja_texts(10, 0), backbones=["text/minilm"])
    report = next(r for r in result.reports if r.backbone == "text/minilm")
    assert report.signals["language_covered"] is False
    assert any("Japanese" in reason for reason in report.reasons)


def test_assess_refuses_a_class_with_one_example():
    from tenni.errors import DataError

    with pytest.raises(DataError, match="at least 2 examples per class"):
        assess((["a b", "c d", "e f"], ["x", "x", "y"]), backbones=["text/minilm"])


def test_cli_assess_json(capsys, monkeypatch, train_csv):
    from tenni.cli import main

    monkeypatch.setattr(sys, "argv", ["tenni", "assess", str(train_csv), "--backbones", "text/minilm", "--json"])
    main()
    payload = json.loads(capsys.readouterr().out)
    assert payload["reports"][0]["backbone"] == "text/minilm"
    assert payload["recommendation"]["strategy"]


def test_assess_images_scratch_sees_pixels_not_paths(tmp_path, tiny_vit):
    """Noise images filed under class folders: the scratch baseline must score near chance (a TF-IDF of the
    paths would read the class from the folder name and score 1.0), and media get a media recommendation."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("alpha", "beta"):
        (tmp_path / "noise" / label).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(
                tmp_path / "noise" / label / f"{label}_{i}.png")
    result = assess(tmp_path / "noise", backbones=[str(tiny_vit)])
    scratch = result.reports[-1]
    assert scratch.backbone == "scratch (pixels)"
    assert scratch.probe_accuracy < 0.8
    assert result.recommendation["strategy"] == "probe"  # 12 per class: few-shot, whatever the gain
    assert result.recommendation["continued_pretraining"] is False


def test_assess_audio_ranks_against_mfcc(tone_folder):
    from tenni.backbones import get_spec

    if not get_spec("audio/speaker").available():
        pytest.skip("audio/speaker is not installed")
    result = assess(tone_folder / "train", backbones=["audio/speaker"])
    assert result.reports[-1].backbone == "scratch (MFCC)"
    assert result.reports[-1].probe_accuracy >= 0.8  # low vs high tones: MFCC statistics separate them
    assert "MFCC statistics" in result.reports[0].reasons[0]
