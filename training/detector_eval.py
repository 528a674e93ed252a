"""``python -m training detector``: the COCO detector's own figures, which the page's Encoders tab shows.

- On a COCO-format dev set with ``instances.json`` (coco-mini): in how many photos the main object (the category
  with the largest box, as ``training.coco`` defines it) is among its detections (at its ``min_score``), and in how
  many its largest detection *is* the main object (what guided decoding requires).
- Its time per photo beside the default bundle's encoder, float32, one photo at a time, the two alternating on the
  same photos (the order swapped every photo), ``repeats`` rounds; medians. Each includes its own resize.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from caption_core.images import load_image

from .common import machine, write_json


def measure_detector(coco: str, bundle: str | None = None, repeats: int = 3, report: str | None = None) -> dict:
    from caption_core.bundle import default_bundle, read_manifest
    from caption_core.captioner import Captioner
    from caption_core.detectors import build_detector
    from caption_core.encoders import supported_options

    from .coco import load_coco

    photos = [p for p in load_coco(coco) if p.main_object]
    detector = build_detector("coco_ssd")
    images = [load_image(p.path) for p in photos]
    found = detector.detect_arrays(np.stack([detector.prepare(im) for im in images]))
    per: dict[str, list[int]] = {}
    main_found = largest = 0
    for p, o in zip(photos, found):
        hit = p.main_object in o.counts()
        big = o.main() is not None and o.main().category == p.main_object
        main_found, largest = main_found + hit, largest + big
        per.setdefault(p.main_object, [0, 0, 0])
        per[p.main_object] = [per[p.main_object][0] + hit, per[p.main_object][1] + big, per[p.main_object][2] + 1]
    folder = bundle or default_bundle()
    captioner = Captioner.from_bundle(folder, supported_options(read_manifest(folder)["encoder"]["name"],
                                                                {"precision": "float32"}), detector=None)
    enc = captioner.encoder

    def run_detector(im):
        detector.detect_arrays(detector.prepare(im)[None])

    def run_encoder(im):
        enc.encode_arrays(enc.preprocess([im]))

    for im in images[:3]:  # warm-up: the first passes build kernels
        run_detector(im), run_encoder(im)
    times: dict[str, list[float]] = {"detector": [], "encoder": []}
    for r in range(repeats):
        for i, im in enumerate(images):
            for name, fn in ([("detector", run_detector), ("encoder", run_encoder)][:: 1 if (i + r) % 2 == 0 else -1]):
                t0 = time.perf_counter()
                fn(im)
                times[name].append((time.perf_counter() - t0) * 1000)
    det_ms, enc_ms = statistics.median(times["detector"]), statistics.median(times["encoder"])
    out = {"detector": detector.name, "config": detector.config.to_dict(), "weights": detector.weights_fingerprint(),
           "coco": {"folder": coco, "photos": len(photos), "main_found": main_found, "largest_is_main": largest,
                    "min_score": detector.config.min_score,
                    "per_category": {c: f"{a}/{n} found, {b}/{n} largest" for c, (a, b, n) in
                                     sorted(per.items(), key=lambda kv: -kv[1][2])}},
           "speed": {"bundle": captioner.name, "precision": "float32", "photos": len(images), "repeats": repeats,
                     "detector_ms": round(det_ms, 1), "encoder_ms": round(enc_ms, 1), "ratio": round(det_ms / enc_ms, 3)},
           "machine": machine()}
    print(f"detector on {coco}: main object among its detections in {main_found} of {len(photos)} photos, its "
          f"largest detection is the main object in {largest}; {det_ms:.1f} ms a photo against {enc_ms:.1f} ms for "
          f"{captioner.name}'s encoder ({out['speed']['ratio']}x)", flush=True)
    if report:
        write_json(report, out)
    return out
