"""Images (and the anomaly detector) over HTTP: base64 in JSON or multipart files, checked as `tenni fit` checks
files; bad items are refused with their position; temporary files do not outlive the request."""

from __future__ import annotations

import base64
import io
import tempfile

import numpy as np
import pytest
from fastapi.testclient import TestClient

import tenni
from tenni.serve import Limits, create_app
from tenni.serve.inputs import InputError, save_media, sniff

from .test_app import assert_error


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def images(image_folder, n=3):
    return sorted(p for p in (image_folder / "test" / "warm").iterdir())[:n] + \
        sorted(p for p in (image_folder / "test" / "cool").iterdir())[:n]


def b64(path) -> dict:
    return {"b64": base64.b64encode(path.read_bytes()).decode()}


def test_image_predictions_base64_and_multipart(image_model, image_folder, private_tmp):
    files = images(image_folder)
    expected = tenni.load(image_model).predict_proba([str(p) for p in files])
    with TestClient(create_app([image_model])) as c:
        summary = c.get("/v1/models/colours").json()
        assert summary["modality"] == "image" and summary["labels"] == ["cool", "warm"]
        as_json = c.post("/v1/models/colours/predict", json={"inputs": [b64(p) for p in files]})
        assert as_json.status_code == 200, as_json.text
        upload = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in files]
        as_form = c.post("/v1/models/colours/predict", files=upload)
        assert as_form.status_code == 200, as_form.text
        for response in (as_json, as_form):
            got = [list(p["probabilities"].values()) for p in response.json()["predictions"]]
            assert np.allclose(got, expected, atol=1e-5)
        data_url = {"b64": "data:image/png;base64," + b64(files[0])["b64"]}
        assert c.post("/v1/models/colours/predict", json={"inputs": [data_url]}).status_code == 200
    assert list(private_tmp.iterdir()) == []  # every request's temporary folder is gone


def test_bad_media_items_name_their_position(image_model, image_folder, private_tmp, tmp_path):
    good = b64(images(image_folder, 1)[0])
    broken_jpeg = {"b64": base64.b64encode(b"\xff\xd8\xff" + b"\x00" * 40).decode()}
    import soundfile as sf

    sf.write(tmp_path / "tone.wav", (0.5 * np.sin(np.arange(8000) / 5)).astype(np.float32), 8000)
    wav = b64(tmp_path / "tone.wav")
    with TestClient(create_app([image_model], limits=Limits(max_image_pixels=2000))) as c:
        url = "/v1/models/colours/predict"
        assert_error(c.post(url, json={"inputs": [good, {"b64": "not base64!"}]}), 422, "inputs[1].b64", "base64")
        assert_error(c.post(url, json={"inputs": [good, broken_jpeg]}), 422, "inputs[1]", "cannot decode")
        assert_error(c.post(url, json={"inputs": [{"b64": ""}]}), 422, "inputs[0]", "empty file")
        assert_error(c.post(url, json={"inputs": [{"b64": base64.b64encode(b"hello").decode()}]}), 422,
                     "inputs[0]", "not an image or audio file")
        assert_error(c.post(url, json={"inputs": [wav]}), 422, "inputs[0]", "takes images")
        assert_error(c.post(url, json={"inputs": ["a text"]}), 422, "inputs[0]", "takes files")
        assert_error(c.post(url, json={"inputs": [{"b64": 3}]}), 422, "inputs[0].b64", "base64 string")
        assert_error(c.post(url, json={"inputs": [dict(good, extra=1)]}), 422, "inputs[0]", "unknown key 'extra'")
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (50, 50)).save(buffer, format="PNG")
        big = {"b64": base64.b64encode(buffer.getvalue()).decode()}
        assert_error(c.post(url, json={"inputs": [good, big]}), 422, "inputs[1]", "2500 pixels; the limit is 2000")
        upload = [("files", ("a.png", b"", "image/png"))]
        assert_error(c.post(url, files=upload), 422, "files[0]", "empty file")
        assert_error(c.post(url, files=[("other", ("a.png", b"x", "image/png"))]), 422, "other", "unknown form field")
    assert list(private_tmp.iterdir()) == []


def test_anomaly_model_scores(anomaly_model, image_folder):
    files = images(image_folder)
    reference = tenni.load(anomaly_model)
    scores, threshold = reference.score([str(p) for p in files]), reference.estimator.threshold_
    with TestClient(create_app([anomaly_model])) as c:
        assert c.get("/v1/models/inspect").json()["task"] == "anomaly"
        response = c.post("/v1/models/inspect/predict", json={"inputs": [b64(p) for p in files]})
        assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert np.allclose([p["score"] for p in predictions], scores, atol=1e-5)
    assert [p["label"] for p in predictions] == ["defect" if s > threshold else "normal" for s in scores]
    assert all(p.get("probabilities") is None and p["threshold"] == pytest.approx(threshold) for p in predictions)


def test_audio_model_multipart_and_clip_length(audio_model, tone_folder, private_tmp):
    clips = sorted((tone_folder / "test" / "low").iterdir())[:2] + sorted((tone_folder / "test" / "high").iterdir())[:2]
    expected = tenni.load(audio_model).predict_proba([str(p) for p in clips])
    with TestClient(create_app([audio_model])) as c:
        upload = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in clips]
        response = c.post("/v1/models/tones/predict", files=upload)
        assert response.status_code == 200, response.text
        got = [list(p["probabilities"].values()) for p in response.json()["predictions"]]
        assert np.allclose(got, expected, atol=1e-5)
        as_json = c.post("/v1/models/tones/predict", json={"inputs": [b64(p) for p in clips]})
        assert np.allclose([list(p["probabilities"].values()) for p in as_json.json()["predictions"]], expected,
                           atol=1e-5)
    with TestClient(create_app([audio_model], limits=Limits(max_audio_seconds=0.1))) as c:
        response = c.post("/v1/models/tones/predict", files=upload)
        assert_error(response, 422, "files[0]", "the limit is 0.1 s")
    assert list(private_tmp.iterdir()) == []


def test_audio_checks_without_a_model(tmp_path):
    """Seconds per clip and the silence check of data.media, on the function the app calls."""
    import soundfile as sf

    rate = 8000
    sf.write(tmp_path / "long.wav", (0.5 * np.sin(np.arange(3 * rate) / 3)).astype(np.float32), rate)
    sf.write(tmp_path / "silent.wav", np.zeros(rate, np.float32), rate)
    long_bytes, silent = (tmp_path / "long.wav").read_bytes(), (tmp_path / "silent.wav").read_bytes()
    assert sniff(long_bytes) == (".wav", "audio") and sniff(b"\x89PNG\r\n\x1a\n....") == (".png", "image")
    out = tmp_path / "out"
    out.mkdir()
    assert len(save_media([(long_bytes, None, "inputs[0]")], "audio", Limits(), out)) == 1
    with pytest.raises(InputError, match="3.0 s of audio; the limit is 2 s") as err:
        save_media([(long_bytes, None, "inputs[0]")], "audio", Limits(max_audio_seconds=2), out)
    assert err.value.field == "inputs[0]"
    with pytest.raises(InputError, match="silent") as err:
        save_media([(long_bytes, None, "files[0]"), (silent, "x.wav", "files[1]")], "audio", Limits(), out)
    assert err.value.field == "files[1]"


def test_memory_feature_cache_is_bounded_and_the_disk_cache_comes_back(text_model):
    from tenni.backbones import get_backbone
    from tenni.serve.models import _MemoryFeatureCache

    cache = _MemoryFeatureCache(capacity=2)
    cache.put([b"a", b"b"], np.ones((2, 3)))
    cache.get([b"a"])
    cache.put([b"c"], np.ones((1, 3)))
    assert [x is not None for x in cache.get([b"a", b"b", b"c"])] == [True, False, True]

    model = tenni.load(text_model)
    backbone = get_backbone(model.estimator.backbone)
    before = backbone.cache
    with TestClient(create_app([text_model])) as c:
        assert isinstance(backbone.cache, _MemoryFeatureCache)
        assert c.post("/v1/models/topics/predict", json={"inputs": ["served text, not written to disk"]}).is_success
    assert backbone.cache is before
