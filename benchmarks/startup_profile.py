"""Where the app's start goes before its first caption, step by step, each in a fresh interpreter.

    .venv/bin/python benchmarks/startup_profile.py [--starts 3] [--compare OTHER_CHECKOUT] [--json OUT]

Per start, one cold process per checkout (interleaved), float32, the default bundle:
``gradio_import_s``, ``torch_import_s``, ``bundle_load_s`` (``Captioner.from_bundle``: checksums, decoders, encoders),
``warm_s`` (the serving pool's warm-up caption), ``first_caption_s`` (a Flickr8k photo with the default decoding),
then the same steps with gradio's import in the main thread while a second thread imports torch and loads the
bundle (``threaded_total_s`` against ``sequential_total_s``): whether two threads overlap the work on this CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from cold_start import photo, settings_summary, write_json  # noqa: E402

CODE = r"""
import json, sys, threading, time
mode, bundle, image = sys.argv[1:4]
out = {}
t0 = time.perf_counter()

def load():
    t = time.perf_counter()
    import torch
    out["torch_import_s"] = time.perf_counter() - t
    from caption_core.captioner import Captioner
    import numpy as np
    t = time.perf_counter()
    cap = Captioner.from_bundle(bundle, {"precision": "float32"})
    out["bundle_load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    cap.caption(np.full((32, 32, 3), 128, np.uint8), strategy="greedy", max_length=2)
    out["warm_s"] = time.perf_counter() - t
    t = time.perf_counter()
    cap.caption(image)
    out["first_caption_s"] = time.perf_counter() - t

if mode == "threaded":
    th = threading.Thread(target=load)
    th.start()
    t = time.perf_counter()
    import gradio
    out["gradio_import_s"] = time.perf_counter() - t
    th.join()
else:
    t = time.perf_counter()
    import gradio
    out["gradio_import_s"] = time.perf_counter() - t
    load()
out["total_s"] = time.perf_counter() - t0
print(json.dumps(out))
"""


def run(folder: str, mode: str, bundle: str, image: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": folder}
    out = subprocess.run([sys.executable, "-c", CODE, mode, bundle, image], capture_output=True, text=True, cwd=folder,
                         env=env, timeout=600)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return {k: round(v, 3) for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--starts", type=int, default=3)
    p.add_argument("--bundle", default="weights/ensemble3-attention-flickr8k", help="relative to each checkout")
    p.add_argument("--compare", help="another checkout (an older main), profiled in the same run")
    p.add_argument("--json")
    args = p.parse_args(argv)
    trees = {"this": ROOT, **({"compare": os.path.abspath(args.compare)} if args.compare else {})}
    runs: dict[str, list] = {f"{t} {m}": [] for t in trees for m in ("sequential", "threaded")}
    image = photo()
    for _ in range(args.starts):
        for tree, folder in trees.items():
            for mode in ("sequential", "threaded"):
                r = run(folder, mode, os.path.join(folder, args.bundle), image)
                runs[f"{tree} {mode}"].append(r)
                print(tree, mode, json.dumps(r), flush=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "bundle": args.bundle,
              "photo": os.path.basename(image), "settings": settings_summary(runs, 3)}
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
