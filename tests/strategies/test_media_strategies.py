"""probe, finetune, lora and scratch on tiny generated images and tones; save -> load gives the same predictions."""

from __future__ import annotations

import numpy as np
import pytest

import tenni
from tenni.backbones import get_spec
from tenni.data import read_dataset
from tenni.errors import ConfigError

FAST_FINETUNE = {"epochs": 2, "min_steps": 4, "max_epochs": 3, "batch_size": 8}
FAST = {
    "probe": None,
    "finetune": FAST_FINETUNE,
    "lora": dict(FAST_FINETUNE, learning_rate=5e-3),
    "scratch": {"image_size": 32, "width": 8, "epochs": 10, "min_steps": 20},
}


def _available(name):
    spec = get_spec(name)
    return spec is not None and spec.available()


def _fit_and_reload(data, strategy, backbone, tmp_path, config="fast"):
    config = FAST[strategy] if config == "fast" else config
    model = tenni.fit(str(data), strategy=strategy, backbone=backbone, config=config, baseline=False)
    assert model.modality in ("image", "audio")
    path = model.save(tmp_path / "model")
    assert (path / "README.md").exists() and (path / "report.html").exists()
    again = tenni.load(path)
    test = read_dataset(data / "test")
    np.testing.assert_allclose(model.predict_proba(test.inputs), again.predict_proba(test.inputs), atol=1e-5)
    return model


@pytest.mark.parametrize("strategy", ["probe", "finetune", "lora", "scratch"])
def test_image_strategies_learn_and_reload(image_folder, tiny_vit, strategy, tmp_path):
    model = _fit_and_reload(image_folder, strategy, str(tiny_vit), tmp_path)
    # 12 test images of two classes told apart by colour and shape: well above chance
    assert model.metrics["test"]["accuracy"] >= 0.75, model.metrics["results"]
    if strategy != "scratch":
        manifest = model.manifest()
        assert manifest["backbone"]["fingerprint"].startswith("sha256:")


@pytest.mark.skipif(not _available("image/efficientnet-lite0"), reason="EfficientNet-Lite0 not installed")
def test_efficientnet_probe_is_the_image_default(image_folder, tmp_path):
    model = _fit_and_reload(image_folder, "probe", "auto", tmp_path)
    assert model.backbone_name == "image/efficientnet-lite0"
    assert model.metrics["test"]["accuracy"] >= 0.9


@pytest.mark.parametrize("strategy", ["finetune", "lora"])
def test_hf_audio_training_strategies(tone_folder, tiny_wav2vec2, strategy, tmp_path):
    _fit_and_reload(tone_folder, strategy, str(tiny_wav2vec2), tmp_path)  # random weights: runs, reloads


def test_audio_scratch_mfcc_learns(tone_folder, tmp_path):
    model = _fit_and_reload(tone_folder, "scratch", None, tmp_path, config=None)  # image options: not for audio
    assert model.metrics["test"]["accuracy"] >= 0.9


@pytest.mark.skipif(not _available("audio/birdnet"), reason="BirdNET not installed")
def test_birdnet_probe_is_the_audio_default(tone_folder, tmp_path):
    model = _fit_and_reload(tone_folder, "probe", "auto", tmp_path)
    assert model.backbone_name == "audio/birdnet"
    assert model.metrics["test"]["accuracy"] >= 0.8


@pytest.mark.skipif(not _available("audio/speaker"), reason="resemblyzer not installed")
def test_speaker_probe_reloads(tone_folder, tmp_path):
    _fit_and_reload(tone_folder, "probe", "audio/speaker", tmp_path)


def test_frozen_backbone_refuses_training(tone_folder):
    if not _available("audio/birdnet"):
        pytest.skip("BirdNET not installed")
    with pytest.raises(ConfigError, match="'audio/birdnet' is frozen"):
        tenni.fit(str(tone_folder), strategy="finetune", backbone="audio/birdnet")


def test_text_only_strategies_and_mismatched_backbones_are_refused(image_folder, tiny_wav2vec2):
    with pytest.raises(ConfigError, match="works on text only"):
        tenni.fit(str(image_folder), strategy="setfit")
    with pytest.raises(ConfigError, match="the data is image, but backbone .* takes audio"):
        tenni.fit(str(image_folder), strategy="probe", backbone=str(tiny_wav2vec2))


def test_lora_on_a_cnn_says_so(image_folder):
    if not _available("image/efficientnet-lite0"):
        pytest.skip("EfficientNet-Lite0 not installed")
    with pytest.raises(ConfigError, match="LoRA adapts a transformer"):
        tenni.fit(str(image_folder), strategy="lora", backbone="image/efficientnet-lite0", baseline=False)


def test_finetune_head_warmup_then_whole_network(image_folder, tiny_vit):
    from tenni.api import make_estimator

    train = read_dataset(image_folder / "train")
    est = make_estimator("finetune", str(tiny_vit), dict(FAST_FINETUNE, head_init="random", epochs=3, max_epochs=3))
    est.fit(train.inputs, train.labels)
    history = est.training_["history"]
    assert history[0]["head_only"] and not history[-1]["head_only"]
    assert est.training_["effective_config"]["head_warmup_epochs"] == 1


def test_auto_estimator_on_images_races_only_image_strategies(image_folder, tiny_vit):
    """The estimator itself (as TenniClassifier or inside cross_val_score) must not race text-only strategies on
    images: it used to try hybrid and setfit on file paths and crash."""
    from tenni.api import make_estimator

    train, test = read_dataset(image_folder / "train"), read_dataset(image_folder / "test")
    est = make_estimator("auto", str(tiny_vit), seed=0)
    est.fit(train.inputs, train.labels)
    assert set(est.race_) <= {"probe", "finetune"} and "probe" in est.race_
    assert np.mean(np.asarray(est.predict(test.inputs)) == np.asarray(test.labels)) > 0.5


def test_text_only_estimators_refuse_media_paths(image_folder):
    """hybrid's TF-IDF on file paths would read the class from the folder name: refused, not silently 'accurate'."""
    from tenni.api import make_estimator

    train = read_dataset(image_folder / "train")
    for strategy in ("hybrid", "probe", "auto"):  # a text backbone embedding "train/warm/3.png" is no better
        with pytest.raises(ConfigError, match="works on text"):
            make_estimator(strategy, "text/minilm", seed=0).fit(train.inputs, train.labels)


def test_auto_by_name_races_on_images_and_round_trips(image_folder, tiny_vit, tmp_path):
    model = tenni.fit(str(image_folder), strategy="auto", backbone=str(tiny_vit), baseline=False, budget=60)
    assert model.strategy == "auto" and set(model.estimator.race_) <= {"probe", "finetune"}
    again = tenni.load(model.save(tmp_path / "m"))
    test = read_dataset(image_folder / "test")
    np.testing.assert_allclose(model.predict_proba(test.inputs), again.predict_proba(test.inputs), atol=1e-5)
