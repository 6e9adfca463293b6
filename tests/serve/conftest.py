"""Tiny fitted models for the serving tests: a text probe (two folders of it), an image probe and an anomaly
detector, all on backbones built from configs."""

from __future__ import annotations

import shutil

import pytest

import tenni

from ..conftest import make_texts

for _module in ("fastapi", "uvicorn", "httpx", "multipart"):  # the serve extra (and httpx from dev)
    pytest.importorskip(_module)


@pytest.fixture(scope="session")
def text_model(tmp_path_factory, tiny_backbone):
    texts, labels = make_texts(8, seed=1)
    model = tenni.fit((texts, labels), strategy="probe", backbone=str(tiny_backbone), baseline=False)
    root = tmp_path_factory.mktemp("served")
    model.save(root / "topics")
    shutil.copytree(root / "topics", root / "topics-copy")
    return root / "topics"


@pytest.fixture(scope="session")
def image_model(tmp_path_factory, image_folder, tiny_vit):
    model = tenni.fit(str(image_folder), strategy="probe", backbone=str(tiny_vit), baseline=False)
    return model.save(tmp_path_factory.mktemp("served-img") / "colours")


@pytest.fixture(scope="session")
def anomaly_model(tmp_path_factory, image_folder, tiny_vit):
    root = tmp_path_factory.mktemp("defects")
    shutil.copytree(image_folder / "train" / "cool", root / "train" / "good")
    shutil.copytree(image_folder / "test" / "cool", root / "test" / "good")
    shutil.copytree(image_folder / "test" / "warm", root / "test" / "defect")
    model = tenni.fit(str(root), task="anomaly", backbone=str(tiny_vit))
    return model.save(tmp_path_factory.mktemp("served-anomaly") / "inspect")


@pytest.fixture(scope="session")
def audio_model(tmp_path_factory, tone_folder, tiny_wav2vec2):
    model = tenni.fit(str(tone_folder), strategy="probe", backbone=str(tiny_wav2vec2), baseline=False)
    return model.save(tmp_path_factory.mktemp("served-audio") / "tones")
