"""Data-parallel fine-tuning on 2 gloo processes (torch.distributed.run, loopback): the ranks end with identical
weights, equal within float tolerance to what one process trains on the same global batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ..conftest import make_texts, write_csv

SRC = str(Path(__file__).resolve().parents[2] / "src")
TIMEOUT = 300

SCRIPT = """
import json, os, sys
from pathlib import Path
from safetensors.numpy import save_file
from tenni.strategies.registry import get_strategy_class

backbone, data, out = sys.argv[1], json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3])
config = {"epochs": 2, "min_steps": 0, "batch_size": 10, "max_length": 32, "dropout": 0.0,
          "validation_fraction": 0.0, "head_init": "probe", "class_weight": "balanced"}
est = get_strategy_class("finetune")(backbone=backbone, config=config, seed=3).fit(data["texts"], data["labels"])
tensors, meta = est.get_state()
rank = os.environ.get("RANK", "single")
save_file(tensors, str(out / f"{rank}.safetensors"))
(out / f"{rank}.json").write_text(json.dumps(meta["training"]))
"""


@pytest.fixture(scope="module")
def still_backbone(tiny_backbone, tmp_path_factory) -> Path:
    """The tiny BERT without dropout, so that one process and two draw no different random masks."""
    import shutil

    folder = tmp_path_factory.mktemp("still") / "bert"
    shutil.copytree(tiny_backbone, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
                GLOO_SOCKET_IFNAME="lo", TENNI_NO_PROGRESS="1")


def _weights(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


def test_two_gloo_processes_train_what_one_process_trains(still_backbone, tmp_path):
    texts, labels = make_texts(14, seed=4)
    keep = [i for i, lab in enumerate(labels) if lab != "food" or i % 3]  # unequal classes: weighted loss shares
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"texts": [texts[i] for i in keep], "labels": [labels[i] for i in keep]}))
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    args = [str(script), str(still_backbone), str(data), str(tmp_path)]
    one = subprocess.run([sys.executable, *args], env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *args], env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert two.returncode == 0, two.stderr[-3000:]
    rank0, rank1, single = (_weights(tmp_path / f"{r}.safetensors") for r in ("0", "1", "single"))
    assert rank0.keys() == rank1.keys() == single.keys()
    for name in rank0:
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)  # the ranks agree bit for bit
    before = _weights_of_fresh_head_differ(single, still_backbone)
    assert before  # training moved the weights, so the comparison below means something
    for name in single:
        np.testing.assert_allclose(rank0[name], single[name], rtol=1e-4, atol=2e-5, err_msg=name)
    record0 = json.loads((tmp_path / "0.json").read_text())
    record1 = json.loads((tmp_path / "single.json").read_text())
    assert record0["world_size"] == 2 and record0["steps"] == record1["epochs_run"] * 4
    losses0 = [h["train_loss"] for h in record0["history"]]
    losses1 = [h["train_loss"] for h in record1["history"]]
    np.testing.assert_allclose(losses0, losses1, rtol=1e-4)


def _weights_of_fresh_head_differ(trained: dict, backbone: Path) -> bool:
    from safetensors.numpy import load_file

    base = load_file(str(backbone / "model.safetensors"))
    moved = [k for k in base if f"model.encoder.model.{k}" in trained
             and not np.allclose(base[k], trained[f"model.encoder.model.{k}"])]
    return len(moved) > 0


def test_fit_processes_2_saves_once_and_prints_once(still_backbone, tmp_path):
    texts, labels = make_texts(12, seed=5)
    csv_path = write_csv(tmp_path / "train.csv", texts, labels)
    out = tmp_path / "model"
    proc = subprocess.run([sys.executable, "-m", "tenni", "fit", str(csv_path), "-s", "finetune", "-b",
                           str(still_backbone), "--no-baseline", "--processes", "2", "-o", str(out),
                           "--set", "epochs=1", "--set", "min_steps=0", "--set", "max_length=32"],
                          env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("saved to") == 1 and (out / "tenni.json").exists()
    training = json.loads((out / "tenni.json").read_text())["strategy"]["state"]["training"]
    assert training["world_size"] == 2
    refused = subprocess.run([sys.executable, "-m", "tenni", "fit", str(csv_path), "-s", "probe", "--processes",
                              "2"], env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert refused.returncode == 2 and "runs --strategy finetune, lora or setfit, not probe" in refused.stderr


SETFIT_SCRIPT = """
import json, os, sys
from pathlib import Path
from safetensors.numpy import save_file
from tenni.strategies.registry import get_strategy_class

backbone, data, out = sys.argv[1], json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3])
rank = os.environ.get("RANK", "single")
for loss, extra in (("batch", {"examples_seen": 3, "batch_size": 7}),  # 7 rows: ranks encode 4 and 3
                    ("pairs", {"num_iterations": 1, "max_pairs": 20, "batch_size": 8})):
    config = dict(extra, loss=loss, learning_rate=1e-3, max_length=32, C=1.0)
    est = get_strategy_class("setfit")(backbone=backbone, config=config, seed=2).fit(data["texts"], data["labels"])
    tensors, meta = est.get_state()
    save_file(tensors, str(out / f"setfit-{loss}-{rank}.safetensors"))
    (out / f"setfit-{loss}-{rank}.json").write_text(json.dumps(meta["training"]))
"""


def _launch(args: list[str], processes: int) -> None:
    launcher = [sys.executable] if processes == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                        "--nproc_per_node", str(processes)]
    proc = subprocess.run([*launcher, *args], env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_setfit_on_two_processes_trains_what_one_process_trains(still_backbone, tmp_path):
    texts, labels = make_texts(4, seed=6)
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"texts": texts, "labels": labels}))
    script = tmp_path / "setfit.py"
    script.write_text(SETFIT_SCRIPT)
    args = [str(script), str(still_backbone), str(data), str(tmp_path)]
    _launch(args, 1)
    _launch(args, 2)
    base = _weights(still_backbone / "model.safetensors")
    for loss in ("batch", "pairs"):
        rank0, rank1, single = (_weights(tmp_path / f"setfit-{loss}-{r}.safetensors") for r in ("0", "1", "single"))
        assert rank0.keys() == rank1.keys() == single.keys()
        for name in rank0:
            np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=f"{loss}: {name}")
        assert any(not np.allclose(base[k], single[f"encoder.model.{k}"]) for k in base), "training moved nothing"
        for name in single:
            np.testing.assert_allclose(rank0[name], single[name], rtol=1e-4, atol=2e-5, err_msg=f"{loss}: {name}")
        record0, record1 = (json.loads((tmp_path / f"setfit-{loss}-{r}.json").read_text()) for r in ("0", "single"))
        assert record0["world_size"] == 2 and record0["steps"] == record1["steps"]
        np.testing.assert_allclose(record0["final_loss"], record1["final_loss"], rtol=1e-4)


ADAPT_SCRIPT = """
import os, sys
from pathlib import Path
from safetensors.torch import save_file
from tenni.adapt import continued

backbone, out = sys.argv[1], Path(sys.argv[2])
corpus = [f"Invoice {i} for pump station {i % 7} was approved by the plant manager on day {i}." for i in range(20)]
corpus += [f"Sensor {i} reported vibration on conveyor line {i % 5}." for i in range(19)]
rank = os.environ.get("RANK", "single")
built = {}
real_build = continued._build


def build(base, cfg):
    built["parts"] = real_build(base, cfg)
    return built["parts"]


continued._build = build
for method in ("mlm", "simcse"):
    config = {"method": method, "batch_size": 9, "max_steps": 5, "learning_rate": 1e-3, "max_length": 24,
              "checkpoint_every": 2, "merge": 1}
    continued.adapt(corpus, out / f"adapted-{method}", backbone=backbone, config=config)
    encoder = built["parts"][2]
    save_file({k: v.contiguous() for k, v in encoder.model.state_dict().items()},
              str(out / f"{method}-{rank}.safetensors"))
"""


def test_adapt_on_two_processes_trains_what_one_process_trains(still_backbone, tmp_path):
    script = tmp_path / "adapt.py"
    script.write_text(ADAPT_SCRIPT)
    single, double = tmp_path / "single", tmp_path / "double"
    single.mkdir()
    double.mkdir()
    _launch([str(script), str(still_backbone), str(single)], 1)
    _launch([str(script), str(still_backbone), str(double)], 2)
    base = _weights(still_backbone / "model.safetensors")
    for method in ("mlm", "simcse"):
        rank0, rank1 = (_weights(double / f"{method}-{r}.safetensors") for r in ("0", "1"))
        one = _weights(single / f"{method}-single.safetensors")
        saved = _weights(double / f"adapted-{method}" / "model.safetensors")
        for name in rank0:
            np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=f"{method}: {name}")
            np.testing.assert_array_equal(rank0[name], saved[name], err_msg=f"{method}: {name}")
            # rows grouped by length per rank, not per batch: float noise, nothing more
            np.testing.assert_allclose(rank0[name], one[name], rtol=1e-4, atol=2e-5, err_msg=f"{method}: {name}")
        assert any(not np.allclose(base[k], rank0[k]) for k in base), "training moved nothing"
        lineage = json.loads((double / f"adapted-{method}" / "tenni-backbone.json").read_text())
        assert lineage["world_size"] == 2 and lineage["steps"] == 5
        assert not (double / f"adapted-{method}.partial").exists()


def test_adapt_processes_2_writes_once_and_prints_once(still_backbone, tmp_path, capsys, monkeypatch):
    from ..conftest import run_cli

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"Pump station {i} passed its quarterly inspection." for i in range(12)))
    out = tmp_path / "adapted"
    proc = subprocess.run([sys.executable, "-m", "tenni", "adapt", str(corpus), "-o", str(out), "-b",
                           str(still_backbone), "--method", "simcse", "--max-steps", "3", "--processes", "2",
                           "--set", "batch_size=4", "--set", "max_length=16", "--set", "checkpoint_every=2"],
                          env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("adapted backbone:") == 1 and proc.stderr.count("adapted backbone written") == 1
    assert json.loads((out / "tenni-backbone.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("adapted")) == ["adapted"]
    code, _, err = run_cli(capsys, monkeypatch, "adapt", corpus, "-o", tmp_path / "other", "-b", still_backbone,
                           "--processes", "2", "--budget", "1m")
    assert code == 2 and "--budget stops training on the clock" in err


GENERATE_SCRIPT = """
import json, os, sys
from pathlib import Path
from safetensors.numpy import save_file
from tenni.generate import Generator

llm, data, out = sys.argv[1], json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3])
config = {"epochs": 2, "min_steps": 0, "learning_rate": 1e-2, "r": 4, "alpha": 8, "lora_dropout": 0.0,
          "batch_size": 6, "val_fraction": 0.0}
gen = Generator("lora", llm, config, seed=2).fit((data["inputs"], data["outputs"]))
rank = os.environ.get("RANK", "single")
save_file(gen.adapter_state(), str(out / f"gen-{rank}.safetensors"))
(out / f"gen-{rank}.json").write_text(json.dumps({"steps": gen.training["steps"]}))
"""


def test_generate_lora_on_two_processes_trains_what_one_process_trains(tmp_path):
    """The text-to-text adapters: each rank runs its rows of every batch, its answer tokens weighed as their share
    of the batch's, gradients summed: the ranks agree, and equal one process."""
    from ..generate.conftest import build_tiny_llm, copy_pairs

    llm = build_tiny_llm(tmp_path / "llm")
    inputs, outputs = copy_pairs(15, 7, length=2)
    outputs = [o if i % 3 else o + " " + o for i, o in enumerate(outputs)]  # answers of unequal length
    data = tmp_path / "pairs.json"
    data.write_text(json.dumps({"inputs": inputs, "outputs": outputs}))
    script = tmp_path / "gen.py"
    script.write_text(GENERATE_SCRIPT)
    args = [str(script), str(llm), str(data), str(tmp_path)]
    one = subprocess.run([sys.executable, *args], env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *args], env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert two.returncode == 0, two.stderr[-3000:]
    rank0, rank1, single = (_weights(tmp_path / f"gen-{r}.safetensors") for r in ("0", "1", "single"))
    assert rank0.keys() == rank1.keys() == single.keys() and rank0
    for name in rank0:
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)
    assert any(np.abs(v).max() > 0 for k, v in single.items() if "lora_B" in k)  # training moved the adapters
    for name in single:
        np.testing.assert_allclose(rank0[name], single[name], rtol=1e-4, atol=2e-5, err_msg=name)
    assert json.loads((tmp_path / "gen-0.json").read_text())["steps"] == 6


def test_generate_prompting_on_several_processes_is_refused(capsys, monkeypatch, tmp_path):
    from ..conftest import run_cli

    data = tmp_path / "pairs.csv"
    data.write_text("input,output\na,b\nc,d\n")
    code, _, err = run_cli(capsys, monkeypatch, "fit", data, "--task", "generate", "--strategy", "prompt",
                           "--processes", "2")
    assert code == 2 and "lora or qlora" in err and "Traceback" not in err
