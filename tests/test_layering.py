"""The structure's promises (a registry that knows every strategy, options scikit-learn can search, no global side
effects, one training loop) and the defects found in the layering read, each with a test that failed before."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tenni
from tenni.errors import ConfigError, DataError

from .conftest import make_texts, write_csv

# --- the registry ---------------------------------------------------------------------------------------------

def test_registry_knows_every_strategy_without_importing_them():
    code = ("import sys; from tenni.strategies import strategy_names, get_entry;"
            "print(','.join(strategy_names(task=None)));"
            "print(get_entry('scratch').modalities);"
            "print(any(m.startswith('tenni.strategies.') and m.split('.')[-1] not in ('registry', 'base')"
            " for m in sys.modules), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert {"probe", "setfit", "lora", "finetune", "hybrid", "auto", "scratch", "patchcore"} <= set(out[0].split(","))
    assert out[1] == "('text', 'image', 'audio')"
    assert out[2] == "False False"


def test_auto_refuses_the_anomaly_detector_as_a_candidate():
    from tenni.strategies.auto import AutoConfig

    with pytest.raises(ConfigError, match="'patchcore'"):
        AutoConfig(candidates=("probe", "patchcore"))


def test_scratch_is_one_name_with_a_baseline_per_modality():
    from tenni.strategies import get_strategy_class

    classes = {m: get_strategy_class("scratch", m).__name__ for m in ("text", "image", "audio")}
    assert classes == {"text": "TfidfScratch", "image": "CNNScratch", "audio": "MFCCScratch"}
    with pytest.raises(ConfigError, match="unknown option"):  # an image option is not a text option any more
        get_strategy_class("scratch", "text")(config={"image_size": 32}).config_  # noqa: B018


def test_a_subclass_of_a_built_in_strategy_keeps_its_facts():
    """The registry sets a built-in class's facts; a subclass (a user's tweak of hybrid or setfit) inherits them,
    rather than being read as a strategy that also takes image and audio files."""
    from tenni.strategies import get_strategy_class

    for name in ("hybrid", "setfit", "finetune"):
        parent = get_strategy_class(name)
        child = type(f"My{parent.__name__}", (parent,), {})
        assert (child.text_only, child.uses_backbone, child.needs_trainable_backbone) == \
            (parent.text_only, parent.uses_backbone, parent.needs_trainable_backbone)
    assert get_strategy_class("hybrid").text_only and not get_strategy_class("finetune").text_only


def test_every_numeric_option_declares_its_range():
    import dataclasses

    from tenni.strategies import get_entry, get_strategy_class, strategy_names

    for name in strategy_names(task=None):
        for modality in get_entry(name).modalities:
            for f in dataclasses.fields(get_strategy_class(name, modality).Config):
                if isinstance(f.default, (int, float)) and not isinstance(f.default, bool):
                    assert f.metadata.get("low") is not None or f.metadata.get("choices"), (name, f.name)


# --- options scikit-learn can search ----------------------------------------------------------------------------

def test_grid_search_over_the_probe_C(tiny_backbone):
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV

    texts, labels = make_texts(8, seed=3)
    clf = tenni.TenniClassifier(strategy="probe", backbone=str(tiny_backbone))
    assert clf.get_params()["config__C"] is None  # the default: by the number of classes
    search = GridSearchCV(clf, {"config__C": [0.01, 100.0]}, cv=2).fit(texts, labels)
    assert search.best_params_["config__C"] in (0.01, 100.0)
    assert search.best_estimator_.estimator_.config_.C == search.best_params_["config__C"]
    lora = clone(tenni.TenniClassifier(strategy="lora")).set_params(config__r=16)
    assert lora.config == {"r": 16} and lora.get_params()["config__r"] == 16
    with pytest.raises(ConfigError, match="option r must be above 0"):
        lora.set_params(config__r=0).get_params()


# --- no global side effects ---------------------------------------------------------------------------------------

def test_loading_a_backbone_leaves_transformers_logging_as_it_was(tiny_backbone):
    from transformers.utils import logging as hf_logging

    from tenni.strategies._torch import load_encoder

    before = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled())
    load_encoder(tenni.get_backbone(str(tiny_backbone)))
    tenni.get_backbone(str(tiny_backbone)).sentence_transformer()
    assert (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()) == before


def test_an_unreachable_hub_does_not_switch_the_process_offline(monkeypatch):
    import os

    from tenni.backbones import registry
    from tenni.errors import BackboneError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(registry, "_hub_reachable", lambda timeout=2.0: False)
    with pytest.raises(BackboneError, match="cannot be reached"):
        registry.resolve("some-org/not-cached-model")
    assert "HF_HUB_OFFLINE" not in os.environ and "TRANSFORMERS_OFFLINE" not in os.environ


def test_a_backbone_whose_weights_changed_is_loaded_anew(tiny_backbone, tmp_path):
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "bb"
    shutil.copytree(tiny_backbone, folder)
    first = tenni.get_backbone(str(folder))
    fingerprint = first.fingerprint
    weights = next(folder.glob("*.safetensors"))
    tensors = load_file(str(weights))
    key = next(iter(tensors))
    tensors[key] = tensors[key] + 1.0
    save_file(tensors, str(weights))  # re-adapted in place
    second = tenni.get_backbone(str(folder))
    assert second is not first and second.fingerprint != fingerprint


# --- one training loop --------------------------------------------------------------------------------------------

def test_head_only_epochs_train_the_head():
    """Head-only warm-up epochs used to run at a learning rate of 0 (the warm-up schedule was not stepped)."""
    import torch
    from torch import nn

    from tenni.strategies._torch import EncoderClassifier
    from tenni.strategies._training import TrainPlan, train_classifier

    torch.manual_seed(0)
    x = torch.randn(40, 4)
    y = (x[:, 0] > 0).long().numpy()
    model = EncoderClassifier(nn.Linear(4, 4), 4, 2)
    heads = []

    class Inputs:
        min_per_class = 100  # no validation slice

        def __len__(self):
            return len(x)

        def train_logits(self, model, idx, gen):
            heads.append(model.head.weight.detach().clone())
            return model(x[torch.as_tensor(idx)])

        def eval_logits(self, model, idx):
            return model(x[torch.as_tensor(idx)])

    plan = TrainPlan(epochs=2, batch_size=10, min_steps=0, max_epochs=2, warmup_ratio=0.1, patience=3,
                     validation_fraction=0.0)
    record = train_classifier(model, Inputs(), y, param_groups=[
        {"params": list(model.encoder.parameters()), "lr": 1e-3},
        {"params": list(model.head.parameters()), "lr": 1e-2}], plan=plan, class_weight=None, seed=0,
        description="test", head_warmup_epochs=1)
    assert record["history"][0]["head_only"] and not record["history"][1]["head_only"]
    assert not torch.equal(heads[0], heads[3])  # the four steps of the head-only epoch moved the head


def test_audio_finetune_without_augmentation_takes_clips_of_any_length(tone_folder, tiny_wav2vec2):
    train = tenni.data.read_dataset(tone_folder / "train")  # clips of 0.4-0.8 s: no two of one length
    est = tenni.api.make_estimator("finetune", str(tiny_wav2vec2), {"augment": False, "epochs": 1, "min_steps": 2,
                                                                    "max_epochs": 1, "batch_size": 4},
                                   modality="audio")
    est.fit(train.inputs, train.labels)
    assert est.predict_proba(train.inputs).shape == (len(train), 2)


# --- data --------------------------------------------------------------------------------------------------------

def _text_folder(root, per_class=4):
    for split, seed in (("train", 1), ("test", 2)):
        texts, labels = make_texts(per_class, seed=seed)
        for i, (t, y) in enumerate(zip(texts, labels)):
            (root / split / y).mkdir(parents=True, exist_ok=True)
            (root / split / y / f"{i}.txt").write_text(t, encoding="utf-8")
    return root


def test_a_text_folder_with_train_and_test_levels_has_its_own_classes(tmp_path):
    from tenni.assess import check_labels

    root = _text_folder(tmp_path / "data")
    assert tenni.data.read_dataset(root).classes == ["food", "sports", "weather"]
    assert check_labels(root, backbone="text/minilm").backbone == "text/minilm"


def test_scratch_takes_a_share_for_min_df_from_the_cli(tmp_path):
    from tenni.config import make_config
    from tenni.strategies.scratch import ScratchConfig

    assert make_config(ScratchConfig, {"min_df": "0.5"}).min_df == 0.5
    assert make_config(ScratchConfig, {"min_df": "2"}).min_df == 2


def test_adapt_reads_a_folder_of_shift_jis_files(tmp_path):
    from tenni.adapt.continued import read_corpus

    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_bytes("東京の天気は晴れです。".encode("cp932"))
    (folder / "b.txt").write_bytes("明日は雨が降るでしょう。".encode("cp932"))
    assert read_corpus(folder) == ["東京の天気は晴れです。", "明日は雨が降るでしょう。"]


def test_a_missing_label_in_a_media_table_is_refused(image_folder, tmp_path):
    files = sorted((image_folder / "train" / "warm").iterdir())[:3]
    table = tmp_path / "table.jsonl"
    table.write_text("".join(json.dumps({"path": str(f), "label": "warm"}) + "\n" for f in files[:2])
                     + f'{{"path": "{files[2]}", "label": NaN}}\n')
    with pytest.raises(DataError, match="missing label"):
        tenni.data.read_dataset(table)


def test_audio_is_measured_alike_with_or_without_naming_the_probe(tone_folder):
    default = tenni.fit(str(tone_folder / "train"), baseline=False)
    named = tenni.fit(str(tone_folder / "train"), strategy="probe", baseline=False)
    assert default.strategy == named.strategy == "probe"
    assert default.metrics["protocol"] == named.metrics["protocol"] and named.metrics["protocol"]["kind"] == "cv"


# --- check at scale -----------------------------------------------------------------------------------------------

def test_near_duplicates_are_found_block_by_block(monkeypatch):
    import tracemalloc

    from tenni.assess import check

    rng = np.random.default_rng(0)
    feats = rng.standard_normal((3000, 8)).astype(np.float32)
    feats[10] = feats[2999] * 1.01
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    full = unit @ unit.T
    expected = [(i, j) for i, j in zip(*np.nonzero(np.triu(full >= 0.999, k=1)))]
    del full, unit
    monkeypatch.setattr(check, "BLOCK", 256)
    tracemalloc.start()
    pairs = check.near_pairs(feats, 0.999)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [(i, j) for i, j, _ in pairs] == expected and (10, 2999) in expected
    assert peak < 3000 * 3000 * 4 / 4  # a quarter of one N x N float32 matrix


def test_check_lines_never_wrap_whatever_the_terminal(capsys, monkeypatch, tmp_path):
    from .test_cli import run

    monkeypatch.setenv("COLUMNS", "30")
    texts, labels = make_texts(6, seed=9)
    texts[0] = "[urgent] [/url] " + texts[0]
    folder = tmp_path / ("a-rather-long-folder-name-" * 3)
    folder.mkdir()
    data = write_csv(folder / "m.csv", texts + [texts[0]], labels + [labels[0]])
    code, out, _ = run(capsys, monkeypatch, "check", data, "--backbone", "text/minilm")
    line = next(x for x in out.splitlines() if x.startswith("duplicate"))
    assert code == 0 and str(data) in line and "[urgent] [/url]" in line
