"""Peak memory of the bounded paths (issue: hardening): one very long text through the tokenising step, and one
144-megapixel PNG through the image reader. Each runs in a fresh subprocess that reports its own peak RSS before and
after the step.

    python bench/resources.py            # writes bench/results/resources.json
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

TOKENISE = """
import os, sys, resource
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from transformers import AutoTokenizer
from tenni.backbones import get_backbone
tok = AutoTokenizer.from_pretrained(str(get_backbone("text/minilm").transformer_dir()))
from tenni.strategies._torch import Tokenized
text = "word " * (int(float(sys.argv[2]) * 2**20) // 5)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[1] == "whole":   # what Tokenized did before: the whole text to the tokenizer, truncated after
    ids = tok([text], truncation=True, max_length=128)["input_ids"]
else:
    ids = Tokenized(tok, [text], 128).ids
print(len(ids[0]), base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

IMAGE = """
import sys, resource
from tenni.data.media import load_image, media_limits
from tenni.errors import DataError
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    with media_limits(max_pixels=int(sys.argv[2]) if sys.argv[1] == "raised" else None):
        im = load_image(sys.argv[3])
    print("decoded", im.size)
except DataError as err:
    print("refused", str(err)[:60])
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def child(code: str, *args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    *_, base_kb, peak_kb = proc.stdout.split() or ["0", "0"]
    return {"args": [str(a) for a in args], "rc": proc.returncode, "stdout": proc.stdout.strip()[-200:],
            "stderr_tail": proc.stderr.strip()[-200:], "seconds": round(seconds, 2),
            "peak_rss_mb": round(int(peak_kb) / 1024),
            "added_by_the_step_mb": round((int(peak_kb) - int(base_kb)) / 1024)}


def main() -> None:
    results = {"machine": platform.node(), "note": "2 shared cores (other jobs running): seconds are indicative; "
               "added_by_the_step_mb = the child's peak RSS after the step minus before it", "cases": {}}
    big_png = Path("/tmp/tenni-bench-144mp.png")
    if not big_png.exists():
        import numpy as np
        from PIL import Image

        Image.fromarray(np.zeros((12000, 12000, 3), np.uint8)).save(big_png)
    order = [("tokenise_clipped_5MB", TOKENISE, "clipped", 5), ("tokenise_clipped_50MB", TOKENISE, "clipped", 50),
             ("image_144MP_default_limit", IMAGE, "default", 0, big_png),
             ("tokenise_whole_5MB (the old path)", TOKENISE, "whole", 5),
             ("image_144MP_limit_raised (the old path)", IMAGE, "raised", 200_000_000, big_png)]
    for name, code, *args in order:
        results["cases"][name] = child(code, *args)
        print(name, results["cases"][name], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "resources.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
