"""The COCO detector, two ways to run it from Python without TensorFlow, measured side by side (issue 32):

- **torch**: the PyTorch port (``caption_core/detectors/coco_ssd.py``), the carrier's tensors in a module;
- **onnx**: the TF.js graph converted once to ONNX (tf2onnx, in a throwaway venv: tensorflow-cpu 2.15.1, onnx
  1.16.2, ``python -m tf2onnx.convert --tfjs model.json --output coco_ssd.onnx --opset 13``) and run with ONNX
  Runtime; the graph takes the uint8 photo and resizes it itself.

One photo at a time, float32, both on the same photos in alternation (the order swapped every photo), after a
warm-up; per-photo medians; and how far their outputs are apart (scores and boxes).

    .venv/bin/python benchmarks/detector_routes.py --onnx /tmp/coco_ssd.onnx [--photos 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def photos(n: int) -> list[str]:
    shared = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "data")
    coco = os.path.join(shared, "coco-mini", "images")
    flickr = os.path.join(shared, "flickr8k", "Images")
    out = sorted(os.path.join(coco, f) for f in os.listdir(coco))[: n // 2] if os.path.isdir(coco) else []
    if os.path.isdir(flickr):
        with open(os.path.join(shared, "flickr8k", "Flickr_8k.testImages.txt")) as f:
            out += [os.path.join(flickr, line.strip()) for line in f if line.strip()][: n - len(out)]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", required=True, help="the converted graph")
    p.add_argument("--photos", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    import onnxruntime as ort
    import torch

    from caption_core.detectors import build_detector
    from caption_core.images import load_image

    torch.set_num_threads(args.threads)
    det = build_detector("coco_ssd")
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
    sess = ort.InferenceSession(args.onnx, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]

    def run_torch(img):
        return det.raw(det.prepare(img)[None])

    def run_onnx(img):
        out = dict(zip(names, sess.run(None, {"image_tensor:0": np.asarray(img)[None].astype(np.uint8)})))
        return out["Postprocessor/Slice:0"], out["Postprocessor/ExpandDims_1:0"][:, :, 0]

    images = [load_image(p) for p in photos(args.photos)]
    for img in images[:3]:  # warm-up
        run_torch(img), run_onnx(img)
    times = {"torch": [], "onnx": []}
    diffs = {"scores": [], "boxes": []}
    for i, img in enumerate(images):
        order = [("torch", run_torch), ("onnx", run_onnx)][:: 1 if i % 2 == 0 else -1]
        outs = {}
        for name, fn in order:
            t0 = time.perf_counter()
            outs[name] = fn(img)
            times[name].append((time.perf_counter() - t0) * 1000)
        diffs["scores"].append(float(np.abs(outs["torch"][0] - outs["onnx"][0]).max()))
        diffs["boxes"].append(float(np.abs(outs["torch"][1] - outs["onnx"][1]).max()))
    report = {"photos": len(images), "threads": args.threads, "precision": "float32",
              "median_ms": {k: round(statistics.median(v), 1) for k, v in times.items()},
              "p90_ms": {k: round(float(np.percentile(v, 90)), 1) for k, v in times.items()},
              "onnx_over_torch": round(statistics.median(times["onnx"]) / statistics.median(times["torch"]), 3),
              "max_abs_difference": {k: max(v) for k, v in diffs.items()}}
    print(report)
    if args.json:
        from training.common import write_json

        from training.common import machine

        write_json(args.json, {**report, "machine": machine()})


if __name__ == "__main__":
    main()
