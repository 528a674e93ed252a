"""What guidance costs per photo, end to end: ``Captioner.caption`` with the bundle's beam decoding and with
the ``guided`` strategy (same options), one photo at a time, interleaved, float32.

    .venv/bin/python benchmarks/guided_latency.py [--photos 30] [--photos-from flickr|coco] [--json OUT] [BUNDLE ...]

For each bundle: medians of encode (the tagger's forward pass included, for encoders without an ImageNet
head) and decode per photo, over the photos where guidance fires and where it does not (Flickr8k test
photos when ../shared has them, else scikit-image's), and the guided / beam ratio of the total.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "flickr8k")
COCO = os.path.join(os.path.dirname(ROOT), "shared", "data", "coco-mini")


def photos(n: int, source: str = "flickr"):
    from PIL import Image

    if source == "coco":  # everyday photos (the out-of-domain dev set), where guidance fires far more often
        folder = os.path.join(COCO, "images")
        return [Image.open(os.path.join(folder, f)).convert("RGB") for f in sorted(os.listdir(folder))[:n]]

    test = os.path.join(DATA, "Flickr_8k.testImages.txt")
    if os.path.exists(test):
        with open(test) as f:
            names = [line.strip() for line in f if line.strip()][:n]
        return [Image.open(os.path.join(DATA, "Images", name)).convert("RGB") for name in names]
    import skimage.data

    return [Image.fromarray(getattr(skimage.data, k)()) for k in ("chelsea", "coffee", "astronaut", "rocket")]


def float32_captioner(folder: str):
    """A bundle's Captioner with its encoder in float32 (the path every CPU has)."""
    from caption_core.bundle import read_manifest
    from caption_core.captioner import Captioner
    from caption_core.encoders import supported_options

    return Captioner.from_bundle(folder, supported_options(read_manifest(folder)["encoder"]["name"],
                                                           {"precision": "float32"}))


def interleaved(captioners: dict, images, strategy: str, opts: dict, check=None,
                extra: dict | None = None) -> list[dict]:
    """Each photo captioned by every captioner in turn (after one warm-up caption each), one at a time -> per photo,
    per label: total_ms (the whole call), encode_ms, decode_ms, words (the best caption's ids). ``check(label,
    result)``: asserts on each result; ``extra``: per label, options on top of ``opts``."""
    extra = extra or {}
    for label, c in captioners.items():
        c.caption(images[0], strategy=strategy, **{**opts, **extra.get(label, {})})
    rows = []
    for img in images:
        row = {}
        for label, c in captioners.items():
            t = time.perf_counter()
            r = c.caption(img, strategy=strategy, **{**opts, **extra.get(label, {})})[0]
            row[label] = {"total_ms": 1000 * (time.perf_counter() - t), "encode_ms": r.encode_ms,
                          "decode_ms": r.decode_ms, "words": len(r.captions[0].tokens)}
            if check is not None:
                check(label, r)
        rows.append(row)
    return rows


def measure(bundle: str, images, threshold: float | None, source: str = "flickr") -> dict:
    from caption_core.bundle import read_manifest
    from caption_core.captioner import Captioner
    from caption_core.encoders import supported_options

    name = read_manifest(bundle)["encoder"]["name"]
    cap = Captioner.from_bundle(bundle, supported_options(name, {"precision": "float32"}))
    options = dict(cap.default_options)
    if threshold is not None:
        options["guide_threshold"] = threshold
    beam_opts = {k: v for k, v in options.items() if not k.startswith("guide_")}
    cap.caption(images[0], strategy="guided", options=options)  # warm-up: the tagger is built here if needed
    cap.caption(images[0], strategy="beam", options=beam_opts)
    rows = []
    for img in images:  # interleaved, so drift slows both alike
        t = time.perf_counter()
        b = cap.caption(img, strategy="beam", options=beam_opts)[0]
        tb = 1000 * (time.perf_counter() - t)
        t = time.perf_counter()
        g = cap.caption(img, strategy="guided", options=options)[0]
        tg = 1000 * (time.perf_counter() - t)
        rows.append({"fires": g.guidance is not None, "beam_ms": tb, "guided_ms": tg, "beam_encode_ms": b.encode_ms,
                     "guided_encode_ms": g.encode_ms, "beam_decode_ms": b.decode_ms, "guided_decode_ms": g.decode_ms})
    out = {"bundle": os.path.basename(os.path.normpath(bundle)), "encoder": name, "photos_from": source,
           "threshold": options.get("guide_threshold"), "photos": len(rows)}
    for label, sel in (("fires", [r for r in rows if r["fires"]]), ("does_not_fire", [r for r in rows if not r["fires"]])):
        if not sel:
            out[label] = None
            continue
        med = {k: round(statistics.median(r[k] for r in sel), 2) for k in sel[0] if k != "fires"}
        med["ratio"] = round(med["guided_ms"] / med["beam_ms"], 2)
        out[label] = {"photos": len(sel), **med}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundles", nargs="*", default=[os.path.join(ROOT, "weights", b) for b in
                                                    ("efficientnet_lite0-flickr8k", "efficientnet_lite2-flickr8k",
                                                     "vit_custom-flickr8k")])
    p.add_argument("--photos", type=int, default=30)
    p.add_argument("--threshold", type=float, default=None, help="(default: each bundle's own)")
    p.add_argument("--photos-from", choices=("flickr", "coco"), default="flickr",
                   help="Flickr8k test photos, or coco-mini's everyday photos (default: %(default)s)")
    p.add_argument("--json", help="write the results here too")
    args = p.parse_args(argv)
    images = photos(args.photos, args.photos_from)
    results = []
    for b in args.bundles:
        results.append(measure(b, images, args.threshold, args.photos_from))
        print(json.dumps(results[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
