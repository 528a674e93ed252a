"""Batch captioning throughput, side by side in one run: the encoder's own batched extraction, the local engine,
and Ray Data with 1 and 2 workers, on the same photos (Flickr8k test photos from ../shared), float32.

    .venv/bin/python benchmarks/batch_caption.py [--bundle weights/B ...] [--photos 400] [--workers 1 2]
                                                 [--json benchmarks/batch_caption.json]

Per bundle:
1. ``encoder``: ``training features``' local path (reader threads + the bundle's encoder, its own batch size) over
   the photos, no decoding: photos/s after the encoder is built;
2. ``local``: ``python -m caption_core batch`` with the local engine and the bundle's default decoding, end to end
   (the bundle's load included);
3. ``ray_N``: the Ray engine with N workers (a local Ray started once before, not timed), end to end (the actors'
   start and bundle loads included); and how many photos got the local engine's best caption.
Each engine runs twice, on ``--small`` photos and on all of them: ``marginal_photos_per_s`` = the extra photos / the
extra seconds (what a long job runs at), ``fixed_s`` = the start that a job pays once.

With ``--detector both`` the local engine also runs without the COCO detector (``local_no_detector``: rows without
objects, guidance by the classifier alone): ``detector_cost`` = that marginal rate / the local one (the detector's
share of a long job).

``ratio_local_to_encoder`` = local marginal / encoder (the decoder must not be the bottleneck: target >= 0.9);
``ratio_to_local`` (ray) = ray marginal / local marginal (target >= 0.9 with 2 workers on 2 cores), and the same
end to end. The projection: core-seconds per photo from the 2-worker marginal rate, and what N cores take for 10
million photos.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from training.common import write_json  # noqa: E402

DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "flickr8k")


def test_photos(n: int) -> list[str]:
    with open(os.path.join(DATA, "Flickr_8k.testImages.txt")) as f:
        names = [line.strip() for line in f if line.strip()]
    return [os.path.join(DATA, "Images", name) for name in names[:n]]


def encoder_rate(bundle: str, paths: list[str], options: dict) -> dict:
    """The bundle's encoder alone, as ``training features`` runs it (reader threads, ``EncodeWorker``), 32 photos a
    batch: photos/s."""
    import numpy as np

    from caption_core.batch import EncodeWorker, local_batches
    from caption_core.bundle import load_bundle

    _, encoder, _, _, _ = load_bundle(bundle, options)
    worker = EncodeWorker.of(encoder)
    encoder.encode_arrays(np.full((1, encoder.input_size, encoder.input_size, 3), 128, np.uint8))  # warm
    t = time.perf_counter()
    n = 0
    for batch in local_batches(worker.prepare, paths, len(paths), 32, 2):
        worker.run(batch)
        n += len(batch)
    seconds = time.perf_counter() - t
    return {"photos": n, "seconds": round(seconds, 2), "photos_per_s": round(n / seconds, 2)}


def batch_run(bundle: str, paths: list[str], options: dict, engine: str, workers: int, out: str, small: int,
              detect: bool = True) -> dict:
    """The engine end to end on ``small`` photos, then on all of them: the marginal rate and the fixed start."""
    from caption_core.batch import BatchConfig, list_photos, run_batch

    cfg = BatchConfig(bundle=bundle, encoder_options=options, engine=engine, workers=workers, detect=detect)
    times = {}
    for n in (small, len(paths)):
        target = out if n == len(paths) else out + f"-small{os.path.splitext(out)[1]}"
        t = time.perf_counter()
        summary = run_batch(cfg, list_photos(paths[:n]), target, progress=False)
        times[n] = time.perf_counter() - t
        assert summary["photos"] == n, summary
    marginal = (len(paths) - small) / (times[len(paths)] - times[small])
    return {"photos": len(paths), "end_to_end_s": round(times[len(paths)], 2),
            "end_to_end_photos_per_s": round(len(paths) / times[len(paths)], 2),
            "small_photos": small, "small_end_to_end_s": round(times[small], 2),
            "marginal_photos_per_s": round(marginal, 2), "fixed_s": round(times[small] - small / marginal, 2)}


def best_captions(out: str) -> dict:
    from caption_core.batch import read_rows

    return {r["image_id"]: r["caption"] for r in read_rows(out)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", nargs="+", default=[os.path.join(ROOT, "weights", "efficientnet_lite0-flickr8k"),
                                                    os.path.join(ROOT, "weights", "ensemble3-attention-flickr8k")])
    p.add_argument("--photos", type=int, nargs="+", default=[1000, 300],
                   help="photos per bundle, in --bundle order (the last repeats): enough that Ray's start is amortised")
    p.add_argument("--small", type=int, nargs="+", default=[100, 50], help="photos of the short runs, per bundle")
    p.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    p.add_argument("--detector", choices=("on", "both"), default="on",
                   help="both: the local engine also without the COCO detector (default: %(default)s)")
    p.add_argument("--json", help="write the results here too")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    options = {"precision": "float32"}
    if args.workers:
        from caption_core.ray_engine import init_ray

        init_ray()
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "cpus": os.cpu_count(), "precision": "float32", "bundles": {}}
    tmp = tempfile.mkdtemp(prefix="batch-bench-")
    try:
        for i, bundle in enumerate(args.bundle):
            name = os.path.basename(os.path.normpath(bundle))
            paths = test_photos(args.photos[min(i, len(args.photos) - 1)])
            small = args.small[min(i, len(args.small) - 1)]
            r: dict = {"photos": len(paths), "encoder": encoder_rate(bundle, paths, options)}
            print(name, "encoder", json.dumps(r["encoder"]), flush=True)
            local_out = os.path.join(tmp, f"{name}-local.jsonl")
            r["local"] = batch_run(bundle, paths, options, "local", 1, local_out, small)
            print(name, "local", json.dumps(r["local"]), flush=True)
            local = best_captions(local_out)
            if args.detector == "both":
                bare = os.path.join(tmp, f"{name}-local-no-detector.jsonl")
                r["local_no_detector"] = batch_run(bundle, paths, options, "local", 1, bare, small, detect=False)
                r["detector_cost"] = round(r["local"]["marginal_photos_per_s"]
                                           / r["local_no_detector"]["marginal_photos_per_s"], 3)
                print(name, "local without the detector", json.dumps(r["local_no_detector"]), "ratio with/without",
                      r["detector_cost"], flush=True)
            for w in args.workers:
                out = os.path.join(tmp, f"{name}-ray{w}")
                r[f"ray_{w}"] = rw = batch_run(bundle, paths, options, "ray", w, out, small)
                theirs = best_captions(out)
                rw["same_best_caption"] = sum(theirs.get(k) == v for k, v in local.items())
                rw["ratio_to_local"] = round(rw["marginal_photos_per_s"] / r["local"]["marginal_photos_per_s"], 3)
                rw["ratio_to_local_end_to_end"] = round(
                    rw["end_to_end_photos_per_s"] / r["local"]["end_to_end_photos_per_s"], 3)
                print(name, f"ray_{w}", json.dumps(r[f"ray_{w}"]), flush=True)
            r["ratio_local_to_encoder"] = round(r["local"]["marginal_photos_per_s"] / r["encoder"]["photos_per_s"], 3)
            top = max(args.workers) if args.workers else None
            if top:
                rate = r[f"ray_{top}"]["marginal_photos_per_s"]
                core_s = os.cpu_count() / rate  # core-seconds per photo on Ray (the engine's own work included)
                r["projection"] = {"core_seconds_per_photo": round(core_s, 4),
                                   **{f"{c}_cores": {"photos_per_s": round(c / core_s, 1),
                                                     "days_for_10M": round(1e7 * core_s / c / 86400, 2)}
                                      for c in (2, 16, 64, 256)}}
            results["bundles"][name] = r
            print(name, "ratios", r["ratio_local_to_encoder"], flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results, indent=1))
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
