"""Image and audio backbones: registry entries, hub-style folders, features and their content-keyed cache."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tenni.backbones import get_backbone, get_spec, list_backbones
from tenni.backbones.audio import BirdNETBackbone, HFAudioBackbone, SpeakerBackbone
from tenni.backbones.image import EfficientNetLiteBackbone, HFImageBackbone
from tenni.data import read_dataset


def _needs(name):
    spec = get_spec(name)
    return pytest.mark.skipif(spec is None or not spec.available(), reason=f"{name} is not installed")


def test_media_backbones_are_registered():
    names = {s.name: s for s in list_backbones()}
    for name in ("image/efficientnet-lite0", "image/efficientnet-lite1", "image/efficientnet-lite2",
                 "audio/birdnet", "audio/speaker"):
        assert name in names
    assert names["image/efficientnet-lite0"].modality == "image" and names["image/efficientnet-lite0"].trainable
    assert not names["audio/birdnet"].trainable and names["audio/birdnet"].dim == 1024
    assert [s.name for s in list_backbones(modality="audio")] == ["audio/birdnet", "audio/speaker"]


@_needs("image/efficientnet-lite0")
def test_efficientnet_features_are_cached_by_content(image_folder, tmp_path):
    paths = read_dataset(image_folder / "test").inputs[:3]
    bb = get_backbone("image/efficientnet-lite0")
    assert isinstance(bb, EfficientNetLiteBackbone)
    feats = bb.encode(paths)
    assert feats.shape == (3, 1280) and np.isfinite(feats).all()
    copy = tmp_path / "renamed.png"
    shutil.copy(paths[0], copy)
    fresh = EfficientNetLiteBackbone(bb.name, bb.path, "efficientnet-lite0")  # as a new process would be
    again = fresh.encode([str(copy)] + paths[1:])
    assert fresh._frozen is None, "same bytes under another name: no extraction"
    np.testing.assert_allclose(again, feats, atol=1e-6)
    patches = bb.patch_features(paths[:1])
    assert patches.ndim == 4 and patches.shape[1] == patches.shape[2] == 28


def test_hub_style_vision_folder(tiny_vit, image_folder):
    bb = get_backbone(str(tiny_vit))
    assert isinstance(bb, HFImageBackbone) and bb.modality == "image" and bb.dim == 32 and bb.image_size == 32
    paths = read_dataset(image_folder / "test").inputs[:4]
    feats = bb.encode(paths)
    assert feats.shape == (4, 32) and np.isfinite(feats).all()
    assert bb.patch_features(paths[:2]).shape == (2, 4, 4, 32)


def test_hub_style_audio_folder(tiny_wav2vec2, tone_folder):
    bb = get_backbone(str(tiny_wav2vec2))
    assert isinstance(bb, HFAudioBackbone) and bb.modality == "audio" and bb.sample_rate == 16000
    feats = bb.encode(read_dataset(tone_folder / "test").inputs[:3])
    assert feats.shape == (3, 32) and np.isfinite(feats).all()


@_needs("audio/birdnet")
def test_birdnet_embeds_short_clips_padded(tone_folder):
    bb = get_backbone("audio/birdnet")
    assert isinstance(bb, BirdNETBackbone)
    feats = bb.encode(read_dataset(tone_folder / "test").inputs[:2])
    assert feats.shape == (2, 1024) and np.isfinite(feats).all()


@_needs("audio/birdnet")
def test_birdnet_pool_of_interpreters_matches_one(tone_folder):
    """Windows spread over two interpreters running side by side come back in order, equal to one interpreter's."""
    bb = get_backbone("audio/birdnet")
    windows = np.concatenate([bb.clip_windows(w) for w in bb.load_items(read_dataset(tone_folder / "test").inputs)])
    pooled = BirdNETBackbone(bb.name, bb.path, threads=2)
    together = pooled.embed_windows(windows[:5])
    assert len(pooled.interpreters()) == 2
    alone = BirdNETBackbone(bb.name, bb.path, threads=1).embed_windows(windows[:5])
    assert np.abs(alone).max() > 0.1 and not np.allclose(alone[0], alone[-1])
    np.testing.assert_allclose(together, alone, atol=1e-5)


@_needs("audio/birdnet")
def test_birdnet_embedding_graph_gives_the_inner_tensor(tone_folder, monkeypatch):
    """The rewritten graph (embedding as output, classifier dropped) returns what the full graph holds inside."""
    from tenni.backbones import audio

    bb = get_backbone("audio/birdnet")
    windows = np.concatenate([bb.clip_windows(w) for w in bb.load_items(read_dataset(tone_folder / "test").inputs)])
    graph = audio.embedding_graph(bb.path / audio.BIRDNET_MODEL)
    assert graph is not None
    rewritten = BirdNETBackbone(bb.name, bb.path, threads=1)
    it, _, out = rewritten.interpreters()[0]
    assert list(it.get_output_details()[0]["shape"]) == [1, 1024] and it.get_output_details()[0]["index"] == out
    monkeypatch.setattr(audio, "embedding_graph", lambda path: None)  # the fallback: preserve_all_tensors
    inner = BirdNETBackbone(bb.name, bb.path, threads=1).embed_windows(windows[:3])
    assert np.abs(inner).max() > 0.1
    np.testing.assert_allclose(rewritten.embed_windows(windows[:3]), inner, atol=1e-5)


@_needs("audio/speaker")
def test_speaker_encoder(tone_folder):
    bb = get_backbone("audio/speaker")
    assert isinstance(bb, SpeakerBackbone)
    feats = bb.encode(read_dataset(tone_folder / "test").inputs[:2])
    assert feats.shape == (2, 256) and np.isfinite(feats).all()
