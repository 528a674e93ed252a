"""The COCO detector, two ways to run it from Python without TensorFlow, measured side by side (issue 32):

- **torch**: the PyTorch port (``caption_core/detectors/coco_ssd.py``), the carrier's tensors in a module;
- **port_onnx**: that port exported to ONNX at its first load (``torch.onnx``, cached) and run by ONNX Runtime, the
  resize in NumPy: what the detector runs (``backend='auto'`` where onnxruntime is installed);
- **onnx**: the TF.js graph converted once to ONNX (tf2onnx, in a throwaway venv: tensorflow-cpu 2.15.1, onnx
  1.16.2, ``python -m tf2onnx.convert --tfjs model.json --output coco_ssd.onnx --opset 13``) and run with ONNX
  Runtime; the graph takes the uint8 photo and resizes it itself.

One photo at a time, float32, the same photos; each route in a process of its own (an ONNX Runtime's threads and
torch's spin between runs and slow each other down when they share a process: 2x for torch here), the two
alternating ``--rounds`` times; per-photo medians; and, in one more process, how far their outputs are apart.

    .venv/bin/python benchmarks/detector_routes.py --onnx /tmp/coco_ssd.onnx [--photos 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROUTES = ("torch", "port_onnx", "onnx")
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


def runners(onnx: str, threads: int, routes: tuple[str, ...]) -> dict:
    """route -> fn(PIL image) -> (scores (1, 1917, 90), boxes (1, 1917, 4))."""
    out = {}
    for route, backend in (("torch", "torch"), ("port_onnx", "onnxruntime")):
        if route in routes:
            import torch

            from caption_core.detectors import build_detector

            torch.set_num_threads(threads)
            det = build_detector("coco_ssd", {"backend": backend, "threads": threads})
            out[route] = (lambda d: lambda img: d.raw(d.prepare(img)[None]))(det)
    if "onnx" in routes:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]

        def run_onnx(img):
            res = dict(zip(names, sess.run(None, {"image_tensor:0": np.asarray(img)[None].astype(np.uint8)})))
            return res["Postprocessor/Slice:0"], res["Postprocessor/ExpandDims_1:0"][:, :, 0]

        out["onnx"] = run_onnx
    return out


def time_route(route: str, onnx: str, paths: list[str], threads: int) -> list[float]:
    from caption_core.images import load_image

    fn = runners(onnx, threads, (route,))[route]
    images = [load_image(p) for p in paths]
    for img in images[:3]:  # warm-up
        fn(img)
    times = []
    for img in images:
        t0 = time.perf_counter()
        fn(img)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", required=True, help="the converted graph")
    p.add_argument("--photos", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--time", choices=ROUTES, help=argparse.SUPPRESS)  # one route, in this process
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    paths = photos(args.photos)
    if args.time:
        print(json.dumps(time_route(args.time, args.onnx, paths, args.threads)))
        return
    times: dict[str, list[float]] = {r: [] for r in ROUTES}
    for r in range(args.rounds):
        for route in (ROUTES if r % 2 == 0 else ROUTES[::-1]):
            out = subprocess.run([sys.executable, __file__, "--onnx", args.onnx, "--photos", str(args.photos),
                                  "--threads", str(args.threads), "--time", route], capture_output=True, text=True,
                                 check=True)
            times[route] += json.loads(out.stdout.strip().splitlines()[-1])
    from caption_core.images import load_image

    every = runners(args.onnx, args.threads, ROUTES)
    diffs = {r: {"scores": 0.0, "boxes": 0.0} for r in ROUTES[1:]}  # against the torch port
    for path in paths:
        img = load_image(path)
        st, bt = every["torch"](img)
        for r in ROUTES[1:]:
            so, bo = every[r](img)
            diffs[r] = {"scores": max(diffs[r]["scores"], float(np.abs(st - so).max())),
                        "boxes": max(diffs[r]["boxes"], float(np.abs(bt - bo).max()))}
    report = {"photos": len(paths), "rounds": args.rounds, "threads": args.threads, "precision": "float32",
              "median_ms": {k: round(statistics.median(v), 1) for k, v in times.items()},
              "p90_ms": {k: round(float(np.percentile(v, 90)), 1) for k, v in times.items()},
              "over_torch": {r: round(statistics.median(times[r]) / statistics.median(times["torch"]), 3)
                             for r in ROUTES[1:]},
              "max_abs_difference_to_torch": diffs}
    print(report)
    if args.json:
        from training.common import machine, write_json

        write_json(args.json, {**report, "machine": machine()})


if __name__ == "__main__":
    main()
