"""Shared fixtures: offline mode, a private feature cache, learnable synthetic texts and a tiny backbone."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import sys
from pathlib import Path

import pytest

os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TENNI_NO_PROGRESS="1",
                  TOKENIZERS_PARALLELISM="false", COLUMNS="100", LINES="50")
# one terminal size for every run (rich reads it from the environment when output is captured): tables lay out the
# same way on every machine; line-oriented output must not wrap at any width (tested at a narrow one)
# the tests' models are tiny: one thread is as fast, and on a busy machine two spinning OpenMP threads made them
# up to 8x slower (measured: a tiny-ViT fine-tune took 12.7 s with 2 threads beside other jobs, 1.5 s with 1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

TOPICS = {
    "weather": (["rain", "storm", "sunshine", "snow", "fog", "thunder", "heat wave", "cold front"],
                ["The forecast says {w} tomorrow", "Expect {w} over the weekend", "Heavy {w} closed the roads",
                 "Local news warned about {w} tonight", "We stayed inside because of the {w}"]),
    "food": (["pasta", "curry", "sushi", "pancakes", "soup", "tacos", "salad", "dumplings"],
             ["I cooked {w} for dinner", "This restaurant serves amazing {w}", "My grandmother's {w} recipe",
              "We ordered {w} and dessert", "The {w} was too salty to eat"]),
    "sports": (["football", "tennis", "basketball", "marathon", "swimming", "cycling", "hockey", "boxing"],
               ["Our team won the {w} match", "She trains for {w} every morning", "The {w} final went to overtime",
                "He broke a record in {w}", "Tickets for the {w} game sold out"]),
}


def make_texts(per_class: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for label, (words, templates) in TOPICS.items():
        for _ in range(per_class):
            texts.append(rng.choice(templates).format(w=rng.choice(words)) + rng.choice([".", "!", " today."]))
            labels.append(label)
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order], [labels[i] for i in order]


def run_cli(capsys, monkeypatch, *args) -> tuple[int, str, str]:
    """``tenni ARGS`` in this process: (exit code, stdout, stderr)."""
    from tenni.cli import main

    monkeypatch.setattr(sys, "argv", ["tenni", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_csv(path: Path, texts, labels, header=("text", "label"), delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(zip(texts, labels))
    return path


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    os.environ["TENNI_CACHE_DIR"] = str(tmp_path_factory.mktemp("tenni-cache"))
    yield


@pytest.fixture(scope="session")
def train_data():
    return make_texts(16, seed=1)


@pytest.fixture(scope="session")
def test_data():
    return make_texts(10, seed=2)


@pytest.fixture(scope="session")
def train_csv(tmp_path_factory, train_data):
    return write_csv(tmp_path_factory.mktemp("data") / "train.csv", *train_data)


@pytest.fixture(scope="session")
def test_csv(tmp_path_factory, test_data):
    return write_csv(tmp_path_factory.mktemp("data") / "test.csv", *test_data)


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT built from a config (random weights), saved as a sentence-transformers folder.

    It reuses the bundled MiniLM tokenizer files, so nothing is downloaded.
    """
    from transformers import BertConfig, BertModel

    from tenni.backbones import get_backbone

    minilm = get_backbone("text/minilm").path
    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (minilm / name).exists():
            shutil.copy(minilm / name, folder / name)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    return folder


FAST_CONFIGS = {
    "probe": None,
    "scratch": None,
    "hybrid": None,
    "finetune": {"epochs": 2, "min_steps": 12, "max_epochs": 4, "max_length": 32},
    "lora": {"epochs": 2, "min_steps": 12, "max_epochs": 4, "max_length": 32},
    "setfit": {"num_iterations": 4, "max_pairs": 160, "max_length": 32},
}


# --- images and audio: tiny generated files and tiny transformers built from configs ------------------------

def make_images(root: Path, per_class: int, seed: int, size: int = 40) -> Path:
    """Two learnable classes: warm (red-dominant) squares with a bright blob vs cool (blue-dominant) stripes;
    in every supported format and colour mode (PNG, JPEG, BMP, TIFF; RGB, grayscale-saved-as-L, RGBA)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    formats = [("png", "RGB"), ("jpg", "RGB"), ("bmp", "RGB"), ("tiff", "RGB"), ("png", "RGBA"), ("png", "L")]
    for label in ("warm", "cool"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 60, size=(size, size, 3)).astype(np.float64)
            if label == "warm":
                img[..., 0] += 150
                cy, cx = rng.integers(8, size - 8, size=2)
                img[cy - 6:cy + 6, cx - 6:cx + 6] = 255
            else:
                img[..., 2] += 150
                img[::4] *= 0.2
            arr = img.clip(0, 255).astype(np.uint8)
            ext, mode = formats[i % len(formats)]
            im = Image.fromarray(arr)
            if mode == "RGBA":
                im = im.convert("RGBA")
            elif mode == "L":  # grayscale loses the colour cue; the shapes still tell the classes apart
                im = im.convert("L")
            im.save(root / label / f"{label}_{i}.{ext}")
    return root


def make_tones(root: Path, per_class: int, seed: int) -> Path:
    """Two learnable classes of short clips: a low (200-400 Hz) vs a high (1.5-3 kHz) tone, at 8, 16 and
    22.05 kHz, mono and stereo, as WAV, FLAC, OGG and MP3."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    kinds = [(8000, "wav", 1), (16000, "flac", 1), (22050, "wav", 2), (16000, "ogg", 1), (16000, "mp3", 1)]
    for label, (lo, hi) in (("low", (200, 400)), ("high", (1500, 3000))):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rate, ext, channels = kinds[i % len(kinds)]
            seconds = rng.uniform(0.4, 0.8)
            t = np.arange(int(seconds * rate)) / rate
            wav = 0.5 * np.sin(2 * np.pi * rng.uniform(lo, hi) * t) + 0.02 * rng.standard_normal(len(t))
            data = np.stack([wav, wav * 0.8], axis=1) if channels == 2 else wav
            sf.write(root / label / f"{label}_{i}.{ext}", data.astype(np.float32), rate)
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """``root/train/<class>`` (12 per class) and ``root/test/<class>`` (6 per class)."""
    root = tmp_path_factory.mktemp("images")
    make_images(root / "train", 12, seed=1)
    make_images(root / "test", 6, seed=2)
    return root


@pytest.fixture(scope="session")
def tone_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tones")
    make_tones(root / "train", 10, seed=1)
    make_tones(root / "test", 5, seed=2)
    return root


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide ViT on 32 px images, from a config (random weights), with its image processor."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64)
    ViTModel(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3) \
        .save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide wav2vec2 from a config (random weights), with its feature extractor (16 kHz)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    folder = tmp_path_factory.mktemp("tiny-wav2vec2")
    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16, 16, 16), conv_kernel=(10, 4, 4), conv_stride=(5, 4, 4),
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, do_stable_layer_norm=True,
                            feat_extract_norm="layer")
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(folder)
    return folder
