"""A real uvicorn on a free loopback port: start, predict, graceful shutdown that finishes the request in flight;
and `tenni serve` itself in a subprocess (start, predict, Ctrl-C), its one-line errors and its uvicorn options."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np

import tenni
from tenni.serve import Limits, create_app

from ..test_cli import run

TEXTS = ["Heavy snow closed the roads.", "We ordered sushi and dessert."]


def wait_for(condition, what: str, seconds: float = 120):
    """Polls until ``condition()`` (a guard against hanging, not a measurement)."""
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_in_flight_request_finishes_on_shutdown(text_model):
    import uvicorn

    app = create_app([text_model])
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, timeout_graceful_shutdown=60, lifespan="on"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, "the server to start")

    served = app.state.tenni.models["topics"]
    entered, release = threading.Event(), threading.Event()
    real = served.model.predict_proba

    def held(inputs):  # the request is inside the model when the server is told to stop
        entered.set()
        release.wait(60)
        return real(inputs)

    served.model.predict_proba = held
    result = {}

    def call():
        result["response"] = httpx.post(f"http://127.0.0.1:{port}/v1/models/topics/predict",
                                        json={"inputs": TEXTS}, timeout=120)

    client = threading.Thread(target=call)
    client.start()
    assert entered.wait(60)
    server.should_exit = True  # what SIGTERM / Ctrl-C does
    wait_for(lambda: not _accepts(port), "the listening socket to close")
    assert thread.is_alive()  # still finishing the request in flight
    release.set()
    client.join(60)
    thread.join(60)
    assert not thread.is_alive()
    response = result["response"]
    assert response.status_code == 200
    got = [list(p["probabilities"].values()) for p in response.json()["predictions"]]
    assert np.allclose(got, tenni.load(text_model).predict_proba(TEXTS), atol=1e-6)
    assert app.state.tenni.ready is False  # the lifespan's shutdown ran


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_tenni_serve_subprocess(text_model):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), API_KEY_FOR_TEST="k-123")
    proc = subprocess.Popen([sys.executable, "-m", "tenni.cli", "serve", str(text_model), "--port", "0",
                             "--api-key-env", "API_KEY_FOR_TEST", "--max-batch-wait-ms", "2"],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # Ctrl-C as in a shell
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("Uvicorn running on" in line for line in lines) or proc.poll() is not None,
                 "`tenni serve` to listen")
        assert proc.poll() is None, "".join(lines)
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)", next(x for x in lines if "Uvicorn running" in x))[1])
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/ready").json()["ready"] is True
        headers = {"Authorization": "Bearer k-123"}
        response = httpx.post(f"{base}/v1/models/topics/predict", json={"inputs": TEXTS}, headers=headers,
                              timeout=60)
        assert response.status_code == 200 and len(response.json()["predictions"]) == 2
        assert httpx.post(f"{base}/v1/models/topics/predict", json={"inputs": TEXTS}).status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        reader.join(10)
    log = "".join(lines)
    assert code == 0, log
    assert re.search(r"POST /v1/models/topics/predict 200 \d+\.\d ms", log) and "Bearer" not in log
    assert "Traceback" not in log and "interrupted" not in log and log.rstrip().endswith("stopped")


def test_cli_errors_are_one_line(capsys, monkeypatch, text_model, tmp_path):
    code, _, stderr = run(capsys, monkeypatch, "serve", tmp_path / "missing")
    assert code == 2 and "no such model directory" in stderr and "Traceback" not in stderr
    code, _, stderr = run(capsys, monkeypatch, "serve", text_model, "--api-key-env", "UNSET_VARIABLE_FOR_TEST")
    assert code == 2 and "UNSET_VARIABLE_FOR_TEST" in stderr
    code, _, stderr = run(capsys, monkeypatch, "serve", text_model, "--limit", "max_itemz=3")
    assert code == 2 and "unknown limit" in stderr and "max_items" in stderr
    code, _, stderr = run(capsys, monkeypatch, "serve", text_model, "--workers", "0")
    assert code == 2 and "--workers" in stderr


def test_onnx_runtime_refuses_a_folder_that_is_no_export(capsys, monkeypatch, text_model):
    code, _, stderr = run(capsys, monkeypatch, "serve", text_model, "--runtime", "onnx")
    assert code == 2 and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1


def test_uvicorn_options_and_the_all_interfaces_warning(capsys, monkeypatch, text_model):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    code, _, stderr = run(capsys, monkeypatch, "serve", text_model, "--host", "0.0.0.0", "--port", "8123",
                          "--limit", "read_timeout_s=7", "--limit", "max_items=9", "--cors", "https://a.example")
    assert code == 0, stderr
    assert "warning" in stderr and "0.0.0.0" in stderr
    app, options = calls[0]
    assert options["host"] == "0.0.0.0" and options["port"] == 8123 and options["http"] == "h11"
    defaults = Limits()
    assert options["timeout_keep_alive"] == defaults.keep_alive_s
    assert options["timeout_graceful_shutdown"] == defaults.graceful_shutdown_s
    assert options["h11_max_incomplete_event_size"] == defaults.max_header_bytes and not options["access_log"]
    assert app.state.tenni.limits == Limits(read_timeout_s=7, max_items=9)
    assert all(m.loaded for m in app.state.tenni.models.values())  # loaded before the port is bound
    code, _, stderr = run(capsys, monkeypatch, "serve", text_model)
    assert code == 0 and "warning" not in stderr and calls[1][1]["host"] == "127.0.0.1"
    for app, _ in calls:  # what the lifespan's shutdown would do: the backbone gets its feature cache back
        app.state.tenni.models["topics"].unload()


def test_workers_hand_their_options_through_the_environment(monkeypatch, text_model):
    import uvicorn

    from tenni.serve.app import CONFIG_ENV, app_from_env
    from tenni.serve.run import serve

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw, os.environ.get(CONFIG_ENV))))
    monkeypatch.setenv("MY_KEY_VAR", "secret-value")
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    serve([text_model], workers=2, api_key_env="MY_KEY_VAR", limits=Limits(max_items=5))
    target, options, handed = calls[0]
    assert target == "tenni.serve.app:app_from_env" and options["factory"] and options["workers"] == 2
    assert handed and "secret-value" not in handed
    assert CONFIG_ENV not in os.environ  # set only while uvicorn runs
    monkeypatch.setenv(CONFIG_ENV, handed)  # as in a worker process
    app = app_from_env()
    assert app.state.tenni.limits.max_items == 5 and not app.state.tenni.models["topics"].loaded
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer secret-value"}).status_code == 200
