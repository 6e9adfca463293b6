"""`tenni fit` and `tenni assess` wall time and peak memory on 1,000 short texts, cold and warm.

Phases per repetition, in order, sharing one feature cache: fit cold (empty cache), fit warm (same data again),
assess with every offline text backbone (three; MiniLM is already cached by the fits, the others are encoded),
assess warm (all three cached: the issue's "under 10 s" case).

    python bench/fit_speed.py [--reps 3]

Each run is a fresh `tenni fit` process (what a user waits for, imports and model load included), default
strategy, scratch baseline on. Texts: the first 1,000 of sms_spam's train split. Writes
bench/results/fit_speed.json with every repetition and the medians.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, replace_in_benchmarks, shared_data  # noqa: E402

PHASES = ("cold", "warm", "assess cold", "assess warm")


def timed(cmd: list[str], env: dict) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit code) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    rows = list(csv.DictReader(open(shared_data() / "sms_spam" / "train.csv", encoding="utf-8")))[: args.n]
    tenni_cmd = [sys.executable, "-m", "tenni.cli"]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "texts.csv"
        with open(data, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows({"text": r["text"], "label": r["label"]} for r in rows)
        for rep in range(args.reps):
            env = dict(os.environ, TENNI_CACHE_DIR=str(Path(tmp) / f"cache{rep}"), TENNI_NO_PROGRESS="1",
                       HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
            for phase in PHASES:
                command = (["fit", str(data), "-o", str(Path(tmp) / "model")] if not phase.startswith("assess")
                           else ["assess", str(data)])
                wall, rss, code = timed(tenni_cmd + command, env)
                runs.append({"rep": rep, "phase": phase, "seconds": round(wall, 2), "peak_rss_mb": round(rss),
                             "exit_code": code})
                print(runs[-1], flush=True)
    summary = {phase: {"median_seconds": statistics.median(r["seconds"] for r in runs if r["phase"] == phase),
                       "max_peak_rss_mb": max(r["peak_rss_mb"] for r in runs if r["phase"] == phase)}
               for phase in PHASES}
    result = {"benchmark": "fit_speed", "texts": len(rows), "environment": environment(), "runs": runs,
              "summary": summary, "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    import json

    (RESULTS / "fit_speed.json").write_text(json.dumps(result, indent=1) + "\n")
    labels = {"cold": "`tenni fit`, cold (empty feature cache)", "warm": "`tenni fit`, warm (second fit, same data)",
              "assess cold": "`tenni assess`, 3 backbones, 2 of them not cached yet",
              "assess warm": "`tenni assess`, 3 backbones, all cached"}
    table = ("| 1,000 short texts (sms_spam), default options | median wall | peak memory |\n|---|---|---|\n"
             + "".join(f"| {labels[p]} | {summary[p]['median_seconds']:.1f} s | "
                       f"{summary[p]['max_peak_rss_mb']:.0f} MB |\n" for p in PHASES)
             + f"\n{args.reps} repetitions, each a fresh process (imports and model loading included); fit = default "
               f"strategy (auto) + scratch baseline; measured {result['measured']}.")
    print(table)
    replace_in_benchmarks("fit_speed", table)


if __name__ == "__main__":
    main()
