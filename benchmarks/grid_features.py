"""Grid features against pooled ones, per encoder: extraction speed (images/s, the same photos, pooled and grid
interleaved, float32) and the size a photo takes in the feature cache (float32 pooled, float16 grids).

    .venv/bin/python benchmarks/grid_features.py [--photos 64] [--encoders efficientnet_lite0 ...] [--json OUT]

Flickr8k photos (first by name) from ../shared, decoded once beforehand: the encoders' own time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "flickr8k", "Images")
GRID = {"efficientnet_lite0": "grid", "efficientnet_lite2": "grid", "xception": "grid", "dinov2": "grid"}
POOLED = {"efficientnet_lite0": "mean", "efficientnet_lite2": "mean", "xception": "avg", "dinov2": "cls_mean"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=64)
    p.add_argument("--encoders", nargs="+", default=list(GRID))
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)

    from PIL import Image

    from caption_core.encoders import build_encoder

    names = sorted(os.listdir(DATA))[:args.photos]
    pil = [Image.open(os.path.join(DATA, n)).convert("RGB") for n in names]
    rows = []
    for name in args.encoders:
        pooled = build_encoder(name, {"precision": "float32", "pooling": POOLED[name]})
        grid = build_encoder(name, {"precision": "float32", "pooling": GRID[name]})
        batch = pooled.preprocess(pil)  # (N, S, S, 3)
        pooled.encode_arrays(batch[:pooled.config.batch_size])  # warm-up
        grid.encode_arrays(batch[:grid.config.batch_size])
        times = {"pooled": [], "grid": []}
        for _ in range(2):  # interleaved
            for kind, enc in (("pooled", pooled), ("grid", grid)):
                t = time.perf_counter()
                out = enc.encode_arrays(batch)
                times[kind].append(time.perf_counter() - t)
        rows.append({"encoder": name, "grid_shape": list(grid.grid_shape), "grid_extra": grid.grid_extra,
                     "cells": grid.grid_cells, "pooled_dim": pooled.output_dim, "grid_dim": grid.output_dim,
                     "pooled_images_per_second": round(len(batch) / min(times["pooled"]), 1),
                     "grid_images_per_second": round(len(batch) / min(times["grid"]), 1),
                     "pooled_kb_per_photo": round(4 * pooled.output_dim / 1024, 1),
                     "grid_kb_per_photo": round(2 * grid.output_dim / 1024, 1),
                     "flickr8k_grid_gb": round(8000 * 2 * grid.output_dim / 1e9, 2)})
        assert out.shape == (len(batch), grid.output_dim) and np.isfinite(out).all()
        print(json.dumps(rows[-1]), flush=True)
        del pooled, grid
    from training.common import machine, write_json

    result = {"photos": len(pil), "precision": "float32", "rows": rows, "machine": machine()}
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
