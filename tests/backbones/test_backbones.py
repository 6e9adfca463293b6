"""Registry, local and hub backbones, offline failure, and the feature cache."""

from __future__ import annotations

import numpy as np
import pytest

from tenni.backbones import TextBackbone, get_backbone, list_backbones, resolve
from tenni.errors import BackboneError


def test_default_backbone_is_registered_and_offline():
    names = {spec.name: spec for spec in list_backbones("text/*")}
    assert "text/minilm" in names and names["text/minilm"].available()
    assert names["text/minilm"].dim == get_backbone("text/minilm").dim == 384


def test_unknown_local_name_says_what_is_registered():
    with pytest.raises(BackboneError, match="registered: .*text/minilm"):
        resolve("./no/such/folder")


def test_uncached_hub_id_fails_at_once_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneError, match="not in the local Hugging Face cache.*hf download"):
        resolve("some-org/some-model-that-is-not-cached")


def test_folder_without_model_is_rejected(tmp_path):
    with pytest.raises(BackboneError, match="not a model"):
        resolve(str(tmp_path))


def test_local_folder_backbone_encodes(tiny_backbone):
    bb = get_backbone(str(tiny_backbone))
    assert bb.dim == 32
    feats = bb.encode(["hello world", "another text"])
    assert feats.shape == (2, 32) and np.isfinite(feats).all()


def test_feature_cache_skips_the_encoder_on_a_second_pass(tiny_backbone):
    texts = [f"cached sentence number {i}" for i in range(5)]
    first = TextBackbone("tiny", tiny_backbone)
    a = first.encode(texts)
    assert first._model is not None
    second = TextBackbone("tiny", tiny_backbone)  # a new process would look like this
    b = second.encode(list(reversed(texts)))
    assert second._model is None, "all features were cached, the model must not be loaded"
    np.testing.assert_allclose(a, b[::-1], atol=1e-6)


def test_fingerprint_changes_with_the_weights(tiny_backbone, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_backbone, copy)
    same = TextBackbone("c", copy).fingerprint
    assert same == TextBackbone("t", tiny_backbone).fingerprint
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert TextBackbone("c2", copy).fingerprint != same


def test_same_weights_pooled_otherwise_do_not_share_cached_features(tiny_backbone, tmp_path):
    """The cache key covers the pipeline, not only the weights: a copy that pools the CLS token instead of the mean
    encodes afresh (its features differ), and its own second pass is served from the cache."""
    import json
    import shutil

    texts = [f"pooled sentence number {i} with a few more words" for i in range(4)]
    mean = TextBackbone("mean", tiny_backbone).encode(texts)
    cls_copy = tmp_path / "cls"
    shutil.copytree(tiny_backbone, cls_copy)
    (cls_copy / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    cls_bb = TextBackbone("cls", cls_copy)
    assert cls_bb.fingerprint == TextBackbone("mean", tiny_backbone).fingerprint  # same weights
    cls = cls_bb.encode(texts)
    assert cls_bb._model is not None, "features of another pipeline must not come from the cache"
    assert not np.allclose(cls, mean, atol=1e-3)
    again = TextBackbone("cls", cls_copy)
    np.testing.assert_allclose(again.encode(texts), cls, atol=1e-6)
    assert again._model is None


def test_trainable_strategies_run_on_a_local_backbone(tiny_backbone, train_data, tmp_path):
    import tenni
    from tenni.strategies import get_strategy_class

    est = get_strategy_class("lora")(backbone=str(tiny_backbone),
                                     config={"epochs": 1, "min_steps": 2, "max_length": 16}).fit(*train_data)
    tenni.Model(est).save(tmp_path / "m")
    loaded = tenni.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_proba(train_data[0][:5]), est.predict_proba(train_data[0][:5]),
                               atol=1e-6)


def test_a_typo_in_a_registered_name_is_not_sent_to_the_hub():
    with pytest.raises(BackboneError, match="unknown backbone 'text/minilmm'.*registered: "):
        resolve("text/minilmm")


def test_cache_compacts_many_small_shards(tmp_path):
    from tenni.backbones.cache import FeatureCache, content_key

    cache = FeatureCache("sha256:test", root=tmp_path)
    for i in range(20):
        cache.put([content_key(f"text {i}")], np.full((1, 4), i, np.float32))
    fresh = FeatureCache("sha256:test", root=tmp_path)
    got = fresh.get([content_key("text 7"), content_key("text 19")])
    assert got[0][0] == 7 and got[1][0] == 19
    assert len(list(fresh.dir.glob("*.safetensors"))) == 1
    assert FeatureCache("sha256:test", root=tmp_path).get([content_key("text 3")])[0][0] == 3
