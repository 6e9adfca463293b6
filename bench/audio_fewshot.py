"""Few-shot audio classification: frozen pretrained embeddings (BirdNET, the GE2E speaker encoder) vs MFCCs.

    python bench/audio_fewshot.py                          # the grid below
    python bench/audio_fewshot.py --ns 8 --seeds 0
    python bench/audio_fewshot.py --table                  # only rewrite the docs/benchmarks.md table from the JSON

On fsdd_spoken_digits in ../shared/data (``<split>/<class>/<file>.wav``, 8 kHz), N labeled clips per class are
sampled from train (seeds 0, 1, 2; N = "all" the whole train set, one seed) and every method is scored on the whole
test split. Methods: tenni ``probe`` on audio/birdnet (the audio default) and on audio/speaker, and tenni
``scratch`` (MFCC mean + std, 20 coefficients at 16 kHz, + logistic regression: the no-transfer anchor).
``finetune`` is recorded as not applicable: both offline audio backbones are frozen (a .tflite graph and a
speaker encoder tenni keeps frozen); a Hugging Face audio model (wav2vec2, HuBERT, AST) by path can be fine-tuned.

Sections: ``throughput`` (seconds of audio embedded per second on a cold cache, then the cached second pass) and
``fewshot``. The machine is shared with other benchmarks, so seconds are noisy (up to 3x); accuracies are not.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, Results, environment, publish, shared_data  # noqa: E402
from image_fewshot import render_table as render_grid  # noqa: E402

DATASETS = ["fsdd_spoken_digits"]
METHODS = ["probe@audio/birdnet", "probe@audio/speaker", "scratch", "finetune"]
NAMES = {"auto": "tenni auto (BirdNET is frozen: the probe)",
         "probe@audio/birdnet": "tenni probe (BirdNET)", "probe@audio/speaker": "tenni probe (speaker encoder)",
         "scratch": "tenni scratch (MFCC mean+std + LR)", "finetune": "tenni finetune"}


def predict_with(method: str, train, test, seed: int) -> list[str]:
    from tenni.api import make_estimator

    strategy, _, backbone = method.partition("@")
    estimator = make_estimator(strategy, backbone or "audio/birdnet", seed=seed)
    estimator.fit(train.inputs, train.labels)
    return [str(p) for p in estimator.predict(test.inputs)]


def run_fewshot(results: Results, args) -> None:
    from tenni.backbones import get_backbone
    from tenni.data import read_dataset
    from tenni.evaluation import classification_metrics

    root = shared_data()
    methods = args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in args.datasets.split(","):
        full_train = read_dataset(root / name / "train")
        test = read_dataset(root / name / "test")
        encode = results.data["meta"].setdefault("encode_seconds", {})
        for method in methods:
            if method.startswith("probe@"):
                backbone = method.partition("@")[2]
                start = time.perf_counter()
                get_backbone(backbone).encode(full_train.inputs + test.inputs)  # one-off, then cached
                key = f"{name} ({backbone})"
                encode[key] = max(round(time.perf_counter() - start, 1), encode.get(key, 0.0))
                results.save()
        for n_text in args.ns.split(","):
            n = "all" if n_text == "all" else int(n_text)
            for seed in seeds if n != "all" else seeds[:1]:
                train = full_train if n == "all" else full_train.sample_per_class(n, seed)
                for method in methods:
                    if results.done(dataset=name, n=n, seed=seed, method=method):
                        continue
                    record = {"dataset": name, "n": n, "seed": seed, "method": method, "train_size": len(train),
                              "test_size": len(test)}
                    if method == "finetune":
                        reason = ("not applicable: the offline audio backbones (BirdNET, speaker encoder) are "
                                  "frozen; tenni refuses finetune on them")
                        results.add(dict(record, status="skipped", reason=reason))
                        continue
                    t0 = time.perf_counter()
                    predictions = predict_with(method, train, test, seed)
                    seconds = time.perf_counter() - t0
                    metrics = classification_metrics(test.labels, predictions, sorted(set(train.labels)))
                    results.add(dict(record, status="ok", accuracy=metrics["accuracy"],
                                     macro_f1=metrics["macro_f1"], seconds=round(seconds, 2)))
                    print(f"{name:18s} N={n!s:4s} seed={seed} {method:22s} acc={metrics['accuracy']:.3f} "
                          f"F1={metrics['macro_f1']:.3f} {seconds:7.1f}s", flush=True)


def run_throughput(results: Results, args, count: int = 120) -> None:
    """Seconds of audio embedded per second of compute, cold cache; both the clips' own length and the length
    the backbone processes (short clips are padded to one full window)."""
    from tenni.backbones import get_backbone
    from tenni.backbones.cache import FeatureCache
    from tenni.data import read_dataset
    from tenni.data.media import load_audio

    paths = read_dataset(shared_data() / "fsdd_spoken_digits" / "test").inputs[:count]
    clip_seconds = sum(len(w) / r for w, r in (load_audio(p) for p in paths[4:]))
    out = results.data["meta"].setdefault("throughput", {})
    for name in ("audio/birdnet", "audio/speaker"):
        bb = get_backbone(name)
        windows = sum(len(bb.clip_windows(w)) for w in bb.load_items(paths[4:]))
        with tempfile.TemporaryDirectory() as tmp:
            bb._cache = FeatureCache(bb.fingerprint + "-bench", root=Path(tmp))
            bb.encode(paths[:4])  # load the model
            start = time.perf_counter()
            bb.encode(paths[4:])
            cold = time.perf_counter() - start
            start = time.perf_counter()
            bb.encode(paths[4:])
            warm = time.perf_counter() - start
            bb._cache = None
        window_seconds = windows * bb.window_seconds if name == "audio/birdnet" else clip_seconds
        recording = recording_throughput(bb, paths)
        out[name] = {"clips_per_second": round((count - 4) / cold, 2),
                     "audio_seconds_per_second": round(clip_seconds / cold, 1),
                     "processed_seconds_per_second": round(window_seconds / cold, 1),
                     "recording_seconds_per_second": round(recording, 1),
                     "cached_second_pass_seconds": round(warm, 4), "clips": count - 4}
        print(f"throughput {name}: {(count - 4) / cold:.1f} clips/s, {clip_seconds / cold:.1f} s of clip audio/s, "
              f"{window_seconds / cold:.1f} s processed/s; 60 s recordings {recording:.1f} s/s; "
              f"cached pass {warm:.3f} s", flush=True)


def recording_throughput(bb, paths, files: int = 4, seconds: float = 60.0, reps: int = 3) -> float:
    """Seconds of audio embedded per second on long recordings (the field-recording case: no padding), cold, the
    median of ``reps``: ``files`` WAVs of ``seconds`` each, made by joining the clips at the backbone's own rate."""
    import numpy as np
    import soundfile as sf

    from tenni.backbones.cache import FeatureCache

    joined = np.concatenate(bb.load_items(paths))
    length = int(seconds * bb.sample_rate)
    joined = np.tile(joined, math.ceil(files * length / len(joined)))
    rates = []
    with tempfile.TemporaryDirectory() as tmp:
        wavs = []
        for k in range(files):
            wavs.append(str(Path(tmp) / f"recording{k}.wav"))
            sf.write(wavs[-1], joined[k * length:(k + 1) * length], bb.sample_rate)
        for rep in range(reps):
            bb._cache = FeatureCache(bb.fingerprint + "-bench-recording", root=Path(tmp) / f"cache{rep}")
            start = time.perf_counter()
            bb.encode(wavs, show_progress=False)
            rates.append(files * seconds / (time.perf_counter() - start))
        bb._cache = None
    return float(np.median(rates))


def render_table(data: dict) -> str:
    import image_fewshot

    image_fewshot.NAMES = NAMES
    image_fewshot.DATASETS = DATASETS
    table = render_grid(dict(data, meta={k: v for k, v in data["meta"].items() if k != "throughput"}))
    speed = data["meta"].get("throughput", {})
    if speed:
        def cell(k, v):
            padded = (f"{v['processed_seconds_per_second']:.0f} s processed/s with short clips padded to 3 s; "
                      if v["processed_seconds_per_second"] != v["audio_seconds_per_second"] else "")
            recording = (f"{v['recording_seconds_per_second']:.0f} s/s on 60 s recordings; "
                         if "recording_seconds_per_second" in v else "")
            return (f"{k} {recording}{v['audio_seconds_per_second']:.0f} s of clip audio/s ({padded}"
                    f"{v['clips_per_second']:.0f} clips/s; cached second pass {v['cached_second_pass_seconds']:.2f} s "
                    f"for {v['clips']})")

        table += " Audio embedding, cold cache: " + ", ".join(cell(k, v) for k, v in speed.items()) + "."
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--ns", default="8,32,all", help="clips per class; 'all' = whole train set")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--sections", default="throughput,fewshot")
    parser.add_argument("--out", default=str(RESULTS / "audio_fewshot.json"))
    parser.add_argument("--table", action="store_true", help="only rewrite the docs/benchmarks.md table")
    args = parser.parse_args(argv)
    os.environ.setdefault("TENNI_NO_PROGRESS", "1")

    results = Results(Path(args.out), {"benchmark": "audio_fewshot"})
    if not args.table:
        results.data["meta"]["environment"] = environment()
        sections = args.sections.split(",")
        if "throughput" in sections:
            run_throughput(results, args)
            results.save()
        if "fewshot" in sections:
            run_fewshot(results, args)
    publish("audio_fewshot", args.out, render_table(results.data))


if __name__ == "__main__":
    main()
