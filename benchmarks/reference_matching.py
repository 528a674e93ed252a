"""Precision and recall of the reference-photo matching (caption_core/photo_index.py) on the real data.

    .venv/bin/python benchmarks/reference_matching.py [--data ../shared/data] [--out benchmarks/reference_matching.json]

Recall: each of the 1,000 Flickr8k test photos, transformed (re-encoded, recoloured, rotated with EXIF,
resized, squashed, bordered, cropped), loaded as the app loads an upload, must find itself in the index
of all 8,000 photos. False matches: the CIFAR-10 test images (upscaled), the dev and test photos against
an index of the train photos alone, and generated flat, gradient, noise and horizon images, against
which no match may be returned. Writes the counts, the worst cases and the distributions that set the
thresholds.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from caption_core.flickr import load_flickr_splits  # noqa: E402
from caption_core.images import load_image  # noqa: E402
from caption_core.photo_index import MatchConfig, PhotoIndex  # noqa: E402


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def exif_rotated(img: Image.Image) -> bytes:
    """The photo stored rotated on its side, with the EXIF orientation that turns it upright (6: rotate 90 CW)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(img.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=90, exif=exif)


def bordered(img: Image.Image, share: float, colour) -> Image.Image:
    w, h = img.size
    bw, bh = max(1, round(w * share)), max(1, round(h * share))
    out = Image.new("RGB", (w + 2 * bw, h + 2 * bh), colour)
    out.paste(img, (bw, bh))
    return out


def cropped(img: Image.Image, share: float) -> Image.Image:
    w, h = img.size
    dx, dy = round(w * share), round(h * share)
    return img.crop((dx, dy, w - dx, h - dy))


TRANSFORMS = {
    "jpeg q20": lambda im: encoded(im, "JPEG", quality=20),
    "jpeg q95": lambda im: encoded(im, "JPEG", quality=95),
    "png": lambda im: encoded(im, "PNG"),
    "webp q40": lambda im: encoded(im, "WEBP", quality=40),
    "bmp": lambda im: encoded(im, "BMP"),
    "tiff": lambda im: encoded(im, "TIFF"),
    "grayscale": lambda im: encoded(im.convert("L"), "JPEG", quality=85),
    "cmyk jpeg": lambda im: encoded(im.convert("CMYK"), "JPEG", quality=85),
    "exif rotation": exif_rotated,
    "original aspect 500x375": lambda im: encoded(im.resize((500, 375), Image.Resampling.LANCZOS), "JPEG", quality=85),
    "portrait 375x500": lambda im: encoded(im.resize((375, 500), Image.Resampling.LANCZOS), "JPEG", quality=85),
    "small 96x96": lambda im: encoded(im.resize((96, 96), Image.Resampling.LANCZOS), "PNG"),
    "large 1024x768": lambda im: encoded(im.resize((1024, 768), Image.Resampling.BICUBIC), "JPEG", quality=80),
    "white border 2%": lambda im: encoded(bordered(im, 0.02, (255, 255, 255)), "JPEG", quality=90),
    "black border 3%": lambda im: encoded(bordered(im, 0.03, (0, 0, 0)), "PNG"),
    "crop 2% each side": lambda im: encoded(cropped(im, 0.02), "JPEG", quality=90),
    "crop 4% each side": lambda im: encoded(cropped(im, 0.04), "JPEG", quality=90),
}


def generated(n_each: int = 40, seed: int = 0) -> list[tuple[str, Image.Image]]:
    """Low-texture images nobody should match: flat colours, gradients, noise, horizons."""
    rng = np.random.default_rng(seed)
    out = []
    s = 224
    y, x = np.mgrid[0:s, 0:s] / (s - 1)
    for i in range(n_each):
        c1, c2 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        out.append(("flat", Image.new("RGB", (s, s), tuple(int(v) for v in c1))))
        t = [x, y, (x + y) / 2, np.hypot(x - 0.5, y - 0.5) / 0.71][i % 4]
        out.append(("gradient", Image.fromarray((c1 * (1 - t[..., None]) + c2 * t[..., None]).astype(np.uint8))))
        sigma = [4, 16, 64][i % 3]
        base = rng.integers(0, 256, 3)
        out.append(("noise", Image.fromarray(np.clip(base + rng.normal(0, sigma, (s, s, 3)), 0, 255).astype(np.uint8))))
        cut = rng.uniform(0.3, 0.7)
        sky = np.where((y < cut)[..., None], c1, c2).astype(np.float64)
        out.append(("horizon", Image.fromarray(np.clip(sky + rng.normal(0, 3, (s, s, 3)), 0, 255).astype(np.uint8))))
        blobs = np.clip(c1 + 60 * np.sin(x * rng.uniform(2, 9) + rng.uniform(0, 6))[..., None]
                        * np.cos(y * rng.uniform(2, 9))[..., None], 0, 255).astype(np.uint8)
        out.append(("waves", Image.fromarray(blobs)))
    return out


def run(data: str, limit_cifar: int = 0) -> dict:
    flickr = os.path.join(data, "flickr8k")
    splits = load_flickr_splits(flickr, ("train", "dev", "test"))
    t0 = time.perf_counter()
    photos = {s: [Image.open(e.image).convert("RGB") for e in splits[s]] for s in ("train", "dev", "test")}
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    everything = PhotoIndex.build(photos["train"] + photos["dev"] + photos["test"])
    build_s = time.perf_counter() - t0
    train_only = PhotoIndex.build(photos["train"])
    offset = len(photos["train"]) + len(photos["dev"])
    report: dict = {"config": MatchConfig().to_dict(), "index_photos": len(everything),
                    "index_build_seconds": round(build_s, 1), "photo_load_seconds": round(load_s, 1)}

    def explain(index: PhotoIndex, img: Image.Image) -> dict:
        return index.explain(img)

    recall, misses, wrong = {}, [], []
    t0 = time.perf_counter()
    n_queries = 0
    for name, fn in TRANSFORMS.items():
        found = 0
        for i, im in enumerate(photos["test"]):
            got = explain(everything, load_image(fn(im)))
            n_queries += 1
            if got["row"] == offset + i:
                found += 1
            elif got["row"] is not None:
                wrong.append({"transform": name, "photo": splits["test"][i].image_id, **got})
            else:
                misses.append({"transform": name, "photo": splits["test"][i].image_id, **got})
        recall[name] = {"found": found, "of": len(photos["test"]), "recall": round(found / len(photos["test"]), 4)}
        print(f"recall {name}: {found}/{len(photos['test'])}", flush=True)
    query_ms = (time.perf_counter() - t0) / max(n_queries, 1) * 1000
    total_found = sum(r["found"] for r in recall.values())
    report["recall"] = {"by_transform": recall, "found": total_found, "queries": n_queries,
                        "recall": round(total_found / n_queries, 4), "wrong_photo": len(wrong),
                        "misses": misses[:40], "wrong": wrong[:20], "query_ms": round(query_ms, 2)}

    false = {}
    # dev and test photos against the train photos alone: photos of the same kind, none of them indexed
    rows = [explain(train_only, im) for im in photos["dev"] + photos["test"]]
    false["flickr8k dev+test vs train-only index"] = _negatives(rows, [e.image_id for s in ("dev", "test") for e in splits[s]])
    cifar_dir = os.path.join(data, "cifar10", "test")
    names = sorted(os.path.join(c, f) for c in os.listdir(cifar_dir) for f in os.listdir(os.path.join(cifar_dir, c)))
    if limit_cifar:
        names = names[:limit_cifar]
    rows = [explain(everything, Image.open(os.path.join(cifar_dir, n)).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC))
            for n in names]
    false["cifar10 test, upscaled to 224"] = _negatives(rows, names)
    gen = generated()
    rows = [explain(everything, im) for _, im in gen]
    false["generated low-texture images"] = _negatives(rows, [k for k, _ in gen])
    report["false_matches"] = false
    report["false_match_total"] = sum(v["matched"] for v in false.values())
    report["negatives_total"] = sum(v["queries"] for v in false.values())
    return report


def _negatives(rows: list[dict], names: list[str]) -> dict:
    matched = [dict(r, query=n) for r, n in zip(rows, names) if r["row"] is not None]
    refused = sum(r["reason"] == "too little texture to identify" for r in rows)
    corr = [r["correlation"] for r in rows if "correlation" in r]
    return {"queries": len(rows), "matched": len(matched), "refused_as_flat": refused,
            "had_a_hash_candidate": len(corr),
            "highest_candidate_correlation": round(max(corr), 4) if corr else None,
            "highest_candidate_edge_correlation": round(max((r["edge_correlation"] for r in rows if "edge_correlation" in r),
                                                            default=float("nan")), 4) if corr else None,
            "examples": matched[:10]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(os.path.dirname(ROOT), "shared", "data"))
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "reference_matching.json"))
    p.add_argument("--limit-cifar", type=int, default=0, help="first N CIFAR-10 test images only (0 = all 10,000)")
    args = p.parse_args(argv)
    report = run(args.data, args.limit_cifar)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    r = report["recall"]
    print(f"recall {r['found']}/{r['queries']} = {r['recall']:.2%} ({r['wrong_photo']} matched another photo); "
          f"false matches {report['false_match_total']} of {report['negatives_total']}; written to {args.out}")
    return 0 if report["false_match_total"] == 0 and r["wrong_photo"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
