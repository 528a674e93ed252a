"""Feature extraction speed of every encoder with weights here, float32, side by side in one run.

    .venv/bin/python benchmarks/encoder_speed.py [--photos 64] [--repeats 3]   # -> benchmarks/encoder_speed.json

Each encoder gets the same photos (Flickr8k test photos when ../shared is there, else scikit-image's),
preprocessed to its input size beforehand (decoding is not timed), then ``encode_arrays`` in its own batch
size after one warm-up batch. Repeats are interleaved across encoders (a drifting shared machine slows all
alike); the best repeat is kept. Nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

ENCODERS = {"xception": {}, "dinov2": {}, "efficientnet_lite0": {}, "efficientnet_lite1": {}, "efficientnet_lite2": {},
            "vit_custom": {"weights": os.path.join(ROOT, "weights", "vit_custom-flickr8k", "encoder.keras")}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "encoder_speed.json"))
    args = ap.parse_args(argv)

    from caption_core.encoders import build_encoder, supported_options
    from caption_core.images import load_image
    from dinov2_parity import photos
    from training.common import machine, write_json

    items, which = photos(args.photos)
    pil = [load_image(p) for p in items]
    encoders, batches = {}, {}
    for name, cfg in ENCODERS.items():
        try:
            enc = build_encoder(name, {**cfg, **(supported_options(name, {"precision": "float32"}) or {})})
        except Exception as exc:  # weights not to be had here
            print(f"{name}: skipped ({exc})")
            continue
        encoders[name], batches[name] = enc, enc.preprocess(pil)  # (N, S, S, 3) uint8
        enc.encode_arrays(batches[name][: enc.config.batch_size])  # warm-up
    times = {name: [] for name in encoders}
    for _ in range(args.repeats):
        for name, enc in encoders.items():
            t = time.perf_counter()
            enc.encode_arrays(batches[name])
            times[name].append(time.perf_counter() - t)
    rows = [{"encoder": name, "input_size": enc.input_size, "dim": enc.output_dim, "batch_size": enc.config.batch_size,
             "images_per_second": round(len(pil) / min(times[name]), 1),
             "ms_per_image": round(1000 * min(times[name]) / len(pil), 1)} for name, enc in encoders.items()]
    result = {"photos": len(pil), "which": which, "precision": "float32", "repeats": args.repeats, "rows": rows,
              "machine": machine()}
    for r in rows:
        print(f"{r['encoder']:20s} {r['input_size']:4d} px  {r['images_per_second']:7.1f} images/s  "
              f"({r['ms_per_image']} ms/image, batches of {r['batch_size']})")
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
