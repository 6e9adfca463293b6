"""ONNX export: parity with the torch model per strategy, the int8 gate, the torch-free runtime, CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tenni
from tenni.errors import ConfigError, ModelFileError
from tenni.export import export_model, load_onnx_model
from tenni.strategies import get_strategy_class

from .conftest import FAST_CONFIGS, write_csv

EXPORTED = ["probe", "setfit", "finetune", "lora"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_backbone, train_data):
    """One saved model per exportable strategy (and scratch), on the tiny backbone."""
    root = tmp_path_factory.mktemp("export-models")
    cache = {}

    def get(name: str):
        if name not in cache:
            cls = get_strategy_class(name)
            est = cls(backbone=str(tiny_backbone) if cls.uses_backbone else None, config=FAST_CONFIGS[name], seed=0)
            cache[name] = tenni.Model(est.fit(*train_data)).save(root / name)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def check_csv(tmp_path_factory, test_data):
    return write_csv(tmp_path_factory.mktemp("export-check") / "check.csv", *test_data)


@pytest.mark.parametrize("strategy", EXPORTED)
def test_export_matches_torch_within_1e4(strategy, saved, tmp_path, check_csv, test_data):
    out = tmp_path / "onnx"
    manifest = export_model(saved(strategy), out, check=check_csv)
    assert {p.name for p in out.iterdir()} == {"model.onnx", "tokenizer.json", "tenni-export.json", "parity.json"}
    assert manifest["exported_strategy"] == strategy and manifest["input"] == "tokens"
    assert manifest["tokenizer"]["type_ids"] is True  # BERT: token_type_ids are a graph input
    parity = json.loads((out / "parity.json").read_text())
    assert parity["max_abs_diff_fp32"] < 1e-4
    assert parity["check"]["torch"] == parity["check"]["onnx_fp32"]

    torch_model = tenni.load(saved(strategy))
    onnx_model = load_onnx_model(out)
    texts = test_data[0] + ["", "  spaces  ", "word " * 200]  # empty, padded, truncated
    np.testing.assert_allclose(onnx_model.predict_proba(texts), torch_model.predict_proba(texts), atol=1e-4)
    assert onnx_model.predict(texts) == torch_model.predict(texts)
    assert onnx_model.labels == torch_model.labels and onnx_model.modality == "text"


def test_lora_is_merged_into_a_plain_graph(saved, tmp_path):
    import onnx

    export_model(saved("lora"), tmp_path / "onnx")
    names = [init.name for init in onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph.initializer]
    assert not any("lora" in n.lower() for n in names)


def test_probe_head_is_binary_sigmoid(tiny_backbone, tmp_path):
    texts = [f"rain and storm {i}" for i in range(8)] + [f"pasta and curry {i}" for i in range(8)]
    labels = ["weather"] * 8 + ["food"] * 8
    est = get_strategy_class("probe")(backbone=str(tiny_backbone)).fit(texts, labels)
    assert est.coef_.shape[0] == 1
    path = tenni.Model(est).save(tmp_path / "m")
    export_model(path, tmp_path / "onnx")
    np.testing.assert_allclose(load_onnx_model(tmp_path / "onnx").predict_proba(texts),
                               tenni.load(path).predict_proba(texts), atol=1e-5)


def test_int8_without_check_is_written_and_says_not_gated(saved, tmp_path):
    manifest = export_model(saved("probe"), tmp_path / "q", quantize="int8")
    assert manifest["quantization"]["gated"] is False
    assert "max_abs_diff_int8" in json.loads((tmp_path / "q" / "parity.json").read_text())


def test_int8_gate_refuses_an_accuracy_drop_and_writes_nothing(saved, tmp_path, check_csv, monkeypatch):
    """A quantizer that ruins the graph (all weights zero) must be caught by the gate, whatever the real one does."""
    import onnx
    from onnx import numpy_helper

    from tenni.export import onnx as exporter

    def ruin(source, target):
        graph = onnx.load(str(source))
        for init in graph.graph.initializer:
            arr = numpy_helper.to_array(init)
            if arr.dtype == np.float32 and arr.ndim == 2:
                init.CopyFrom(numpy_helper.from_array(np.zeros_like(arr), init.name))
        onnx.save(graph, str(target))

    monkeypatch.setattr(exporter, "quantize_int8", ruin)
    with pytest.raises(ConfigError, match=r"int8 export refused: accuracy on .* drops [0-9.]+ points"):
        export_model(saved("finetune"), tmp_path / "q", quantize="int8", check=check_csv, max_drop=0.5)
    assert not (tmp_path / "q").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".q")]


def test_int8_gate_lets_an_equal_accuracy_through_at_max_drop_0(saved, tmp_path, check_csv, monkeypatch):
    import shutil

    from tenni.export import onnx as exporter

    monkeypatch.setattr(exporter, "quantize_int8", lambda source, target: shutil.copy(source, target))
    manifest = export_model(saved("probe"), tmp_path / "q", quantize="int8", check=check_csv, max_drop=0)
    assert manifest["quantization"]["accuracy_drop_points"] == 0


def test_int8_gate_passes_within_max_drop(saved, tmp_path, check_csv):
    manifest = export_model(saved("finetune"), tmp_path / "q", quantize="int8", check=check_csv, max_drop=100)
    gate = manifest["quantization"]
    assert gate["gated"] is True and gate["accuracy_drop_points"] <= 100
    assert "onnx_int8" in manifest["parity"]["check"]


@pytest.mark.parametrize("strategy", ["scratch", "hybrid"])
def test_scratch_and_hybrid_are_refused_in_one_line(strategy, saved, tmp_path):
    with pytest.raises(ConfigError, match="TF-IDF") as err:
        export_model(saved(strategy), tmp_path / "x")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "x").exists()


def test_auto_exports_the_strategy_it_chose(saved, tmp_path, test_data):
    from tenni.strategies.auto import AutoStrategy

    probe = tenni.load(saved("probe")).estimator
    auto = AutoStrategy(backbone=probe.backbone, seed=0)
    auto.classes_, auto.chosen_ = probe.classes_, probe
    auto.race_, auto.reason_ = {"probe": {"status": "chosen"}}, "chose probe: a test"
    path = tenni.Model(auto).save(tmp_path / "auto")
    manifest = export_model(path, tmp_path / "onnx")
    assert manifest["strategy"] == "auto" and manifest["exported_strategy"] == "probe"
    np.testing.assert_allclose(load_onnx_model(tmp_path / "onnx").predict_proba(test_data[0]),
                               tenni.load(path).predict_proba(test_data[0]), atol=1e-4)


def test_never_over_a_foreign_folder(saved, tmp_path):
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(tenni.TenniError, match="not written by tenni"):
        export_model(saved("probe"), foreign)
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(tenni.TenniError):
        export_model(saved("probe"), saved("probe"))  # the model folder itself


def test_runtime_refuses_a_modified_graph(saved, tmp_path):
    export_model(saved("probe"), tmp_path / "onnx")
    with open(tmp_path / "onnx" / "model.onnx", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ModelFileError, match="does not match the hash"):
        load_onnx_model(tmp_path / "onnx")
    with pytest.raises(ModelFileError, match="export it first"):
        load_onnx_model(saved("probe"))


def test_runtime_imports_no_torch(saved, tmp_path, test_data):
    out = tmp_path / "onnx"
    export_model(saved("setfit"), out)
    expected = tenni.load(saved("setfit")).predict_proba(test_data[0][:5])
    script = textwrap.dedent(f"""
        import json, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers", "sentence_transformers", "peft", "sklearn"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from tenni.export.runtime import load_onnx_model
        model = load_onnx_model({str(out)!r})
        print(json.dumps(model.predict_proba({test_data[0][:5]!r}).tolist()))
        assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "transformers")]
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.asarray(json.loads(proc.stdout)), expected, atol=1e-4)


# --- the command line ---------------------------------------------------------------------------------------------

def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tenni.cli", *map(str, args)], capture_output=True, text=True)


def test_cli_export_and_predict_with_the_onnx_runtime_without_torch(saved, tmp_path, check_csv, test_data):
    out = tmp_path / "onnx"
    proc = _cli("export", saved("finetune"), "-o", out, "--check", check_csv)
    assert proc.returncode == 0, proc.stderr
    assert "parity on" in proc.stdout and "check inputs" in proc.stdout
    texts = tmp_path / "new.txt"
    texts.write_text("\n".join(test_data[0][:6]) + "\n")
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers", "sentence_transformers", "peft"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        sys.argv = ["tenni", "predict", {str(out)!r}, {str(texts)!r}, "--runtime", "onnx"]
        from tenni.cli import main
        main()
    """)
    onnx_run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert onnx_run.returncode == 0, onnx_run.stderr
    rows = [line.split(",") for line in onnx_run.stdout.splitlines()[1:]]
    assert [r[1] for r in rows] == tenni.load(saved("finetune")).predict(test_data[0][:6])


@pytest.mark.parametrize("case", ["scratch", "missing", "file_out", "bad_format", "runtime_on_model"])
def test_cli_errors_exit_2_in_one_line(case, saved, tmp_path):
    if case == "scratch":
        proc, words = _cli("export", saved("scratch"), "-o", tmp_path / "x"), "TF-IDF"
    elif case == "missing":
        proc, words = _cli("export", tmp_path / "nope", "-o", tmp_path / "x"), "no such model directory"
    elif case == "file_out":
        (tmp_path / "f").write_text("")
        proc, words = _cli("export", saved("probe"), "-o", tmp_path / "f"), "is a file"
    elif case == "bad_format":
        proc, words = _cli("export", saved("probe"), "-o", tmp_path / "x", "--format", "tflite"), "--format onnx"
    else:
        texts = tmp_path / "t.txt"
        texts.write_text("hello\n")
        proc, words = _cli("predict", saved("probe"), texts, "--runtime", "onnx"), "export it first"
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# --- images and frozen engines --------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["probe", "lora"])
def test_image_export_runs_files_as_the_original(strategy, image_folder, tiny_vit, tmp_path):
    config = {"epochs": 1, "min_steps": 2, "max_epochs": 1, "batch_size": 8} if strategy == "lora" else None
    model = tenni.fit(str(image_folder), strategy=strategy, backbone=str(tiny_vit), config=config, baseline=False)
    path = model.save(tmp_path / "m")
    manifest = export_model(path, tmp_path / "onnx", check=str(image_folder / "test"))
    assert manifest["input"] == "pixels" and manifest["preprocessing"]["image_size"] == 32
    assert manifest["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert manifest["parity"]["max_abs_diff_fp32"] < 1e-4
    files = sorted(str(p) for p in (image_folder / "test").rglob("*.*"))
    np.testing.assert_allclose(load_onnx_model(tmp_path / "onnx").predict_proba(files),
                               tenni.load(path).predict_proba(files), atol=1e-4)


def test_frozen_audio_probe_exports_its_head_and_says_what_runs_in_front(tone_folder, tiny_wav2vec2, tmp_path):
    from tenni.backbones import get_backbone

    model = tenni.fit(str(tone_folder), strategy="probe", backbone=str(tiny_wav2vec2), baseline=False)
    path = model.save(tmp_path / "m")
    manifest = export_model(path, tmp_path / "onnx")
    assert manifest["input"] == "features" and "encode" in manifest["features"]["front"]
    files = sorted(str(p) for p in (tone_folder / "test").rglob("*.*"))
    feats = get_backbone(str(tiny_wav2vec2)).encode(files)
    exported = load_onnx_model(tmp_path / "onnx")
    np.testing.assert_allclose(exported.predict_proba(feats), tenni.load(path).predict_proba(files), atol=1e-5)
    with pytest.raises(tenni.TenniError, match="head only"):
        exported.predict_proba(feats[:, :3])


def test_served_with_the_onnx_runtime(saved, tmp_path, test_data):
    """`tenni serve --runtime onnx` runs an export folder through this runtime: same labels as the torch model."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tenni.serve import create_app

    export_model(saved("probe"), tmp_path / "onnx")
    texts = test_data[0][:5]
    with TestClient(create_app([tmp_path / "onnx"], runtime="onnx")) as client:
        reply = client.post("/v1/models/onnx/predict", json={"inputs": texts})
    assert reply.status_code == 200, reply.text
    assert [p["label"] for p in reply.json()["predictions"]] == tenni.load(saved("probe")).predict(texts)


def test_a_finetuned_model_cut_to_fewer_layers_exports_as_the_cut_model(saved, tiny_backbone, train_data, tmp_path,
                                                                         check_csv, test_data):
    """A cut encoder (finetune's ``layers``: the distilled ``small`` student) exports with parity, and its graph
    holds only the layers kept."""
    est = get_strategy_class("finetune")(backbone=str(tiny_backbone), seed=0,
                                         config=dict(FAST_CONFIGS["finetune"], layers=1))
    folder = tenni.Model(est.fit(*train_data)).save(tmp_path / "cut")
    export_model(folder, tmp_path / "onnx", check=check_csv)
    export_model(saved("finetune"), tmp_path / "full")
    parity = json.loads((tmp_path / "onnx" / "parity.json").read_text())
    assert parity["max_abs_diff_fp32"] < 1e-4
    onnx_model = load_onnx_model(tmp_path / "onnx")
    np.testing.assert_allclose(onnx_model.predict_proba(test_data[0]), tenni.load(folder).predict_proba(test_data[0]),
                               atol=1e-4)
    assert (tmp_path / "onnx" / "model.onnx").stat().st_size < (tmp_path / "full" / "model.onnx").stat().st_size
