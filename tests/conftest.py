"""Shared fixtures: offline mode, a private feature cache, learnable synthetic texts and a tiny backbone."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
from pathlib import Path

import pytest

os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TENNI_NO_PROGRESS="1",
                  TOKENIZERS_PARALLELISM="false")

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
