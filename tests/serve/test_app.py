"""The HTTP app through httpx's test client: endpoints, results equal to ``tenni.load(dir).predict_proba``, every
limit and error case (JSON errors that name the field, never a traceback), API keys, CORS, and batching."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

import tenni
from tenni.errors import ConfigError, ModelFileError
from tenni.serve import Limits, create_app

TEXTS = ["The forecast says rain tomorrow.", "I cooked pasta for dinner!", "Our team won the tennis match today."]


@pytest.fixture(scope="module")
def client(text_model):
    app = create_app([text_model, text_model.parent / "topics-copy"], limits=Limits(max_items=8, max_text_chars=200))
    with TestClient(app) as c:
        yield c


def assert_error(response, status: int, field: str | None, words: str = ""):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == status
    assert body["error"]["field"] == field, body
    assert words.lower() in body["error"]["message"].lower(), body
    assert "Traceback" not in response.text and 'File "' not in response.text


def test_probes_models_and_docs(client, text_model):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "models": {"topics": True,
                                                                                   "topics-copy": True}}
    listing = client.get("/v1/models").json()["models"]
    assert [m["name"] for m in listing] == ["topics", "topics-copy"]
    one = client.get("/v1/models/topics").json()
    manifest = json.loads((text_model / "tenni.json").read_text())
    assert one["labels"] == manifest["labels"] == ["food", "sports", "weather"]
    assert one["strategy"] == "probe" and one["backbone"] == manifest["backbone"]["name"]
    assert one["tenni_version"] == tenni.__version__ and one["modality"] == "text" and one["task"] == "classify"
    assert 0 <= one["metrics"]["accuracy"] <= 1 and "evaluation" in one["metrics"]
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert body["application/json"]["schema"]["properties"]["inputs"]["maxItems"] == 8
    assert "text/html" in client.get("/docs").headers["content-type"]


def test_predictions_equal_the_loaded_model(client, text_model):
    response = client.post("/v1/models/topics/predict", json={"inputs": TEXTS})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    model = tenni.load(text_model)
    expected = model.predict_proba(TEXTS)
    assert len(predictions) == len(TEXTS)
    for row, p in zip(expected, predictions):
        assert list(p["probabilities"]) == model.labels
        assert np.allclose(list(p["probabilities"].values()), row, atol=1e-6)
        assert p["label"] == model.labels[int(np.argmax(row))]
    # one text alone gives the same answer as inside a batch
    alone = client.post("/v1/models/topics/predict", json={"inputs": [TEXTS[1]]}).json()["predictions"][0]
    assert np.allclose(list(alone["probabilities"].values()), expected[1], atol=1e-6)


@pytest.mark.parametrize("body, status, field, words", [
    ({"inputs": ["a"] * 9}, 422, "inputs", "limit is 8"),
    ({"inputs": ["ok", "x" * 201]}, 422, "inputs[1]", "201 characters"),
    ({"inputs": ["ok", 3]}, 422, "inputs[1]", "a number, not a text"),
    ({"inputs": ["ok", "ok", None]}, 422, "inputs[2]", "null"),
    ({"inputs": [{"b64": "aGk="}]}, 422, "inputs[0]", "not a text"),
    ({"inputs": []}, 422, "inputs", "empty"),
    ({"inputs": "one text"}, 422, "inputs", "must be a list"),
    ({"texts": ["a"]}, 422, "texts", "unknown key"),
    ({}, 422, "inputs", "missing"),
    (["a"], 422, "body", "JSON object"),
])
def test_bad_json_inputs_name_their_field(client, body, status, field, words):
    assert_error(client.post("/v1/models/topics/predict", json=body), status, field, words)


@pytest.mark.parametrize("content, ctype, status, field, words", [
    (b'{"inputs": ["a"', "application/json", 422, "body", "not valid JSON"),
    (b"", "application/json", 422, "body", "empty body"),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", 422, "body", "nested"),
    (b"\xff\xfe{}", "application/json", 422, "body", "not valid JSON"),
    (b"inputs=a", "application/x-www-form-urlencoded", 415, "Content-Type", "application/json"),
    (b"--x\r\n", "multipart/form-data; boundary=x", 415, "body", "takes texts"),
])
def test_bad_bodies(client, content, ctype, status, field, words):
    response = client.post("/v1/models/topics/predict", content=content, headers={"content-type": ctype})
    assert_error(response, status, field, words)


def test_unknown_model_and_route(client):
    assert_error(client.post("/v1/models/nope/predict", json={"inputs": ["a"]}), 404, "name", "no model named 'nope'")
    assert_error(client.get("/v1/models/nope"), 404, "name", "topics, topics-copy")
    assert_error(client.get("/v2/elsewhere"), 404, None, "not found")
    assert_error(client.delete("/v1/models/topics"), 405, None, "not allowed")


def test_body_too_large_is_413(text_model):
    app = create_app([text_model], limits=Limits(max_body_bytes=1000))
    with TestClient(app) as c:
        big = {"inputs": ["word " * 300]}
        assert_error(c.post("/v1/models/topics/predict", json=big), 413, "body", "limit of 1000 bytes")

        def chunks():  # no Content-Length: counted while it is read
            for _ in range(10):
                yield b" " * 200

        response = c.post("/v1/models/topics/predict", content=chunks(), headers={"content-type": "application/json"})
        assert_error(response, 413, "body", "exceeds the limit of 1000 bytes")
        assert c.post("/v1/models/topics/predict", json={"inputs": ["small"]}).status_code == 200


def test_api_key(text_model, monkeypatch):
    import tenni.serve.app as serve_app

    compared = []
    real = serve_app.hmac.compare_digest
    monkeypatch.setattr(serve_app.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    app = create_app([text_model], api_key="s3cret-key")
    with TestClient(app) as c:
        url = "/v1/models/topics/predict"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-key"},
                        {"Authorization": "Bearer s3cret-key-longer"}):
            response = c.post(url, json={"inputs": ["a"]}, headers=headers)
            assert_error(response, 401, "Authorization", "API key")
            assert response.headers["www-authenticate"] == "Bearer"
        assert_error(c.get("/v1/models"), 401, "Authorization", "API key")
        ok = c.post(url, json={"inputs": ["a"]}, headers={"Authorization": "Bearer s3cret-key"})
        assert ok.status_code == 200 and compared
        assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 200  # probes stay open
        assert "HTTPBearer" in json.dumps(c.get("/openapi.json").json()["components"]["securitySchemes"])
    with pytest.raises(ConfigError, match="empty"):
        create_app([text_model], api_key="")


def test_cors_only_when_asked(text_model):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app([text_model])) as c:
        assert "access-control-allow-origin" not in c.options("/v1/models/topics/predict", headers=preflight).headers
    with TestClient(create_app([text_model], cors_origins=["https://app.example"])) as c:
        response = c.options("/v1/models/topics/predict", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        other = c.options("/v1/models/topics/predict", headers={**preflight, "Origin": "https://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"


def test_unexpected_error_is_a_generic_500_logged_server_side(text_model, caplog):
    app = create_app([text_model])
    with TestClient(app, raise_server_exceptions=False) as c:
        served = app.state.tenni.models["topics"]

        def broken(inputs):
            raise RuntimeError("secret internal detail /srv/private")

        served.model.predict_proba = broken
        with caplog.at_level(logging.INFO, logger="tenni.serve"):
            response = c.post("/v1/models/topics/predict", json={"inputs": ["a"]})
        assert_error(response, 500, None, "internal error")
        assert "secret" not in response.text
        assert any("secret internal detail" in (r.exc_text or "") or r.exc_info for r in caplog.records)
        lines = [r.getMessage() for r in caplog.records if "/v1/models/topics/predict" in r.getMessage()]
        assert lines and " 500 " in lines[-1] and lines[-1].endswith(" ms")


def test_access_log_has_no_bodies(client, caplog):
    with caplog.at_level(logging.INFO, logger="tenni.serve"):
        client.post("/v1/models/topics/predict", json={"inputs": ["a very private message"]})
    lines = [r.getMessage() for r in caplog.records if r.name == "tenni.serve"]
    assert any("POST /v1/models/topics/predict 200" in line for line in lines)
    assert not any("private" in line for line in lines)


def test_not_ready_before_startup(text_model):
    app = create_app([text_model])
    c = TestClient(app)  # no `with`: the lifespan (model loading) has not run
    response = c.get("/ready")
    assert response.status_code == 503 and response.json() == {"ready": False, "models": {"topics": False}}
    assert_error(c.post("/v1/models/topics/predict", json={"inputs": ["a"]}), 503, None, "loading")
    assert c.get("/health").status_code == 200


def test_bad_folders_fail_when_the_app_is_made(text_model, tmp_path):
    with pytest.raises(ModelFileError, match="no such model directory"):
        create_app([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="tenni.json"):
        create_app([tmp_path / "empty"])
    import shutil

    shutil.copytree(text_model, tmp_path / "other" / "topics")
    with pytest.raises(ConfigError, match="two model folders are named 'topics'"):
        create_app([text_model, tmp_path / "other" / "topics"])
    with pytest.raises(ConfigError, match="unknown runtime"):
        create_app([text_model], runtime="tensorflow")
    with pytest.raises(ConfigError, match="max_items"):
        Limits(max_items=0)


def test_read_timeout_is_408(text_model):
    """A client that sends headers and then nothing gets 408 after read_timeout_s, not a held request."""
    app = create_app([text_model], limits=Limits(read_timeout_s=0.05))

    async def scenario():
        sent = []

        async def receive():
            await asyncio.sleep(3600)  # the body never comes

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/models/topics/predict", "raw_path": b"/v1/models/topics/predict",
                 "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
                 "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")]}
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)
        return sent

    sent = asyncio.run(scenario())
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"])["error"]["field"] == "body"


def test_concurrent_requests_are_batched(text_model):
    """Eight requests at once reach the model in fewer calls than eight (counted, not timed), each getting its
    own results in order."""
    app = create_app([text_model], max_batch=8, batch_wait_ms=2000)
    reference = tenni.load(text_model)

    async def scenario():
        async with app.router.lifespan_context(app):
            served = app.state.tenni.models["topics"]
            calls = []
            real = served.model.predict_proba

            def counting(inputs):
                calls.append(len(inputs))
                return real(inputs)

            served.model.predict_proba = counting
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                bodies = [{"inputs": [TEXTS[i % 3]] * (1 + i % 2)} for i in range(8)]
                responses = await asyncio.gather(*(c.post("/v1/models/topics/predict", json=b) for b in bodies))
            return bodies, responses, calls

    bodies, responses, calls = asyncio.run(scenario())
    assert all(r.status_code == 200 for r in responses)
    assert len(calls) < len(bodies) and sum(calls) == sum(len(b["inputs"]) for b in bodies)
    for body, response in zip(bodies, responses):
        got = [list(p["probabilities"].values()) for p in response.json()["predictions"]]
        assert np.allclose(got, reference.predict_proba(body["inputs"]), atol=1e-6)


def test_onnx_runtime_serves_an_export(text_model, tmp_path):
    runtime = pytest.importorskip("tenni.export.runtime")
    from tenni.export import export_model

    out = tmp_path / "topics-onnx"
    export_model(text_model, out)
    with TestClient(create_app([out], runtime="onnx")) as c:
        summary = c.get("/v1/models/topics-onnx").json()
        assert summary["runtime"] == "onnx" and summary["labels"] == ["food", "sports", "weather"]
        response = c.post("/v1/models/topics-onnx/predict", json={"inputs": TEXTS})
        assert response.status_code == 200, response.text
    got = [list(p["probabilities"].values()) for p in response.json()["predictions"]]
    assert np.allclose(got, runtime.load_onnx_model(out).predict_proba(TEXTS), atol=1e-6)
    assert np.allclose(got, tenni.load(text_model).predict_proba(TEXTS), atol=1e-4)
    with pytest.raises(ModelFileError):
        create_app([text_model], runtime="onnx")  # a model folder, not an export
