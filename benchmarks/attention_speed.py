"""Attention decoding against its encoder (issue 34's target: decoding at most 1.0x the encoder's time per photo),
this tree against another one (``--compare``: the previous main, say), both on the same photos, float32.

Per photo, one at a time, ``Captioner.caption`` with the bundle's default decoding and its maps: the encoder's
time, the decoder's (``decode_ms``: the strategy over the NumPy step) and the maps' (one more pass over the caption's
words). The trees run in alternation, a process each, so a drift of this shared machine falls on both; and their
best captions are compared one by one (the same arithmetic up to float rounding should give the same captions).

    .venv/bin/python benchmarks/attention_speed.py [BUNDLE ...] [--photos 20] [--compare OTHER_TREE] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

WORKER = r"""
import json, sys, time, os
sys.path.insert(0, os.getcwd())
from caption_core.captioner import Captioner
from caption_core.bundle import read_manifest
from caption_core.encoders import supported_options
bundle, paths, rounds = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
opts = supported_options(read_manifest(bundle)["encoder"]["name"], {"precision": "float32"})
try:
    c = Captioner.from_bundle(bundle, opts, detector=None)  # the decoder's and the encoder's time alone
except TypeError:  # a tree from before the detector
    c = Captioner.from_bundle(bundle, opts)
c.caption(paths[0])  # warm-up
rows = []
for r in range(rounds):
    for p in paths:
        t0 = time.perf_counter()
        res = c.caption(p)[0]
        total = (time.perf_counter() - t0) * 1000
        rows.append({"photo": os.path.basename(p), "encode_ms": res.encode_ms, "decode_ms": res.decode_ms,
                     "total_ms": total, "caption": res.captions[0].text})
print(json.dumps(rows))
"""


def photos(n: int) -> list[str]:
    data = os.path.join(os.path.dirname(ROOT), "shared", "data", "flickr8k")
    with open(os.path.join(data, "Flickr_8k.testImages.txt")) as f:
        return [os.path.join(data, "Images", line.strip()) for line in f if line.strip()][:n]


def run(tree: str, bundle: str, paths: list[str], rounds: int) -> list[dict]:
    out = subprocess.run([sys.executable, "-c", WORKER, bundle, json.dumps(paths), str(rounds)], cwd=tree,
                         capture_output=True, text=True, check=True, env={**os.environ, "CAPTION_DETECTOR": "none"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(rows: list[dict]) -> dict:
    med = {k: round(statistics.median(r[k] for r in rows), 2) for k in ("encode_ms", "decode_ms", "total_ms")}
    return {**med, "maps_and_rest_ms": round(med["total_ms"] - med["encode_ms"] - med["decode_ms"], 2),
            "decode_over_encode": round(statistics.median(r["decode_ms"] / r["encode_ms"] for r in rows), 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs="*", default=["efficientnet_lite0-attention-flickr8k", "dinov2-attention-flickr8k",
                                                   "efficientnet_lite0-flickr8k"])
    p.add_argument("--photos", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2, help="alternations of the trees (each a fresh process)")
    p.add_argument("--compare", help="another tree (a checkout of the previous main) to measure beside this one")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    sys.path.insert(0, ROOT)
    from training.common import machine, write_json

    paths = photos(args.photos)
    trees = {"this tree": ROOT, **({"compared": os.path.abspath(args.compare)} if args.compare else {})}
    report = {"photos": len(paths), "rounds": args.rounds, "precision": "float32", "bundles": {}}
    for b in args.bundles:
        rows = {name: [] for name in trees}
        for r in range(args.rounds):
            for name, tree in (list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]):
                rows[name] += run(tree, os.path.join(tree, "weights", b), paths, 1)
        entry = {name: summary(v) for name, v in rows.items()}
        if args.compare:
            a, c = rows["this tree"], rows["compared"]
            entry["same_best_caption"] = f"{sum(x['caption'] == y['caption'] for x, y in zip(a, c))}/{len(a)}"
            entry["decode_speedup"] = round(entry["compared"]["decode_ms"] / entry["this tree"]["decode_ms"], 3)
        report["bundles"][b] = entry
        print(b, json.dumps(entry), flush=True)
    if args.json:
        write_json(args.json, {**report, "machine": machine()})


if __name__ == "__main__":
    main()
