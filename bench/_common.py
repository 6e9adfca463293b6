"""Shared benchmark plumbing: data location, few-shot sampling, resumable JSON results, the tables in
docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

# benchmarks run offline, quietly; set before tenni (and transformers) are imported by the scripts
for _key, _value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"),
                     ("TENNI_NO_PROGRESS", "1"), ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_key, _value)
warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BENCHMARKS_PAGE = ROOT / "docs" / "benchmarks.md"  # the tables sit between <!-- bench:NAME --> markers


def shared_data() -> Path:
    """``$TENNI_BENCH_DATA``, else ``../shared/data`` beside the checkout."""
    path = Path(os.environ.get("TENNI_BENCH_DATA", ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        raise SystemExit(f"benchmark data not found at {path}; set TENNI_BENCH_DATA")
    return path


def environment() -> dict:
    import importlib.metadata as md

    versions = {}
    for pkg in ("tenni", "torch", "transformers", "sentence-transformers", "setfit", "peft", "scikit-learn"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    import torch

    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "versions": versions}


class Results:
    """A JSON file of runs, rewritten atomically after each run; keys already present are skipped on re-run."""

    def __init__(self, path: Path, meta: dict):
        self.path = path
        self.data = {"meta": meta, "runs": []}
        if path.exists():
            self.data = json.loads(path.read_text())
            self.data["meta"].update(meta)

    def key(self, run: dict) -> tuple:
        return tuple(run[k] for k in ("dataset", "n", "seed", "method"))

    def done(self, **key) -> bool:
        wanted = tuple(key[k] for k in ("dataset", "n", "seed", "method"))
        return any(self.key(r) == wanted for r in self.data["runs"])

    def add(self, run: dict) -> None:
        self.data["runs"] = [r for r in self.data["runs"] if self.key(r) != self.key(run)]
        self.data["runs"].append(run)
        self.data["meta"]["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, ensure_ascii=False) + "\n")
        tmp.replace(self.path)


def summarise(runs: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        if r.get("status", "ok") == "ok":
            groups.setdefault((r["dataset"], r["n"], r["method"]), []).append(r)
    rows = []
    for (dataset, n, method), items in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]), kv[0][2])):
        acc = [r["accuracy"] for r in items]
        f1 = [r["macro_f1"] for r in items]
        sec = [r["seconds"] for r in items]
        rows.append({"dataset": dataset, "n": n, "method": method, "seeds": len(items),
                     "accuracy_mean": statistics.mean(acc), "accuracy_std": statistics.pstdev(acc),
                     "macro_f1_mean": statistics.mean(f1), "seconds_mean": statistics.mean(sec)})
    return rows


def publish(marker: str, out: str | Path, table: str) -> None:
    """The table beside the results (``OUT.md``), on stdout, and in docs/benchmarks.md between the marker's
    comments — there only when the results are the project's own (under bench/results/), never a scratch ``--out``."""
    out = Path(out)
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    if out.resolve().parent != RESULTS.resolve():
        print(f"{BENCHMARKS_PAGE.relative_to(ROOT)} left alone: {out} is not under {RESULTS}")
    else:
        replace_in_benchmarks(marker, table)


def replace_in_benchmarks(marker: str, text: str, page: Path = BENCHMARKS_PAGE) -> bool:
    """Rewrite the text between ``<!-- bench:MARKER -->`` and ``<!-- /bench:MARKER -->`` in the benchmarks page."""
    start, end = f"<!-- bench:{marker} -->", f"<!-- /bench:{marker} -->"
    content = page.read_text() if page.exists() else ""
    if start not in content or end not in content:
        print(f"{page.name} has no {start} marker: table not written there")
        return False
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    page.write_text(f"{head}{start}\n{text}\n{end}{tail}")
    print(f"{page.relative_to(ROOT) if page.is_relative_to(ROOT) else page} updated")
    return True
