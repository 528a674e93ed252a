"""What float16 storage of the decoders' weights costs (issue 34): every bundle's default decoding scored on Flickr8k
dev with its weights as they were (float32) and as they ship after ``python -m training compact`` (float16), and the
best captions compared. A copy of the weights folder is compacted (the bundles themselves are not touched), so
the ensembles are measured by reference to their compacted members, as they ship. Float32 features, cached.

    .venv/bin/python benchmarks/weights_storage.py [--weights weights] [--json benchmarks/weights_storage.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def dev_scores(folder: str, dataset: str, cache: str) -> tuple[dict, list[str]]:
    from caption_core.bundle import read_manifest
    from caption_core.captioner import Captioner
    from caption_core.encoders import supported_options
    from training.detections import split_objects
    from training.guide import decode_captions, flickr_split, score

    captioner = Captioner.from_bundle(folder, supported_options(read_manifest(folder)["encoder"]["name"],
                                                                {"precision": "float32"}))
    ids, feats, probs, refs = flickr_split(captioner, dataset, "dev", cache)
    s, opts = captioner.decoding(None, None)
    objects = split_objects(captioner.detector, dataset, "dev", ids, cache) \
        if s.guided and opts.guide_detector < 1.0 and captioner.detector else None
    texts, _ = decode_captions(captioner, feats, probs, s.name, opts.to_dict(), objects=objects)
    return score(refs, ids, texts, meteor=False), texts


def folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=os.path.join(os.path.dirname(HERE), "weights"))
    p.add_argument("--dataset", default=os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "data", "flickr8k"))
    p.add_argument("--cache", default=os.path.join(os.path.dirname(HERE), "cache"))
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    from caption_core.bundle import list_bundles
    from training.common import machine, write_json
    from training.compact import compact

    names = [b["name"] for b in list_bundles(args.weights) if "manifest" in b]
    rows, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "weights")
        shutil.copytree(args.weights, copy)
        before = {n: dev_scores(os.path.join(args.weights, n), args.dataset, args.cache) for n in names}
        compact([os.path.join(copy, n) for n in names])
        for n in names:
            after = dev_scores(os.path.join(copy, n), args.dataset, args.cache)
            (b, bt), (a, at) = before[n], after
            rows.append({"bundle": n, "float32": b, "float16": a, "CIDEr_change": round(a["CIDEr"] - b["CIDEr"], 4),
                         "same_best_caption": sum(x == y for x, y in zip(bt, at)), "photos": len(bt),
                         "bytes": [folder_bytes(os.path.join(args.weights, n)), folder_bytes(os.path.join(copy, n))]})
            print(f"{n}: dev CIDEr {b['CIDEr']:.4f} -> {a['CIDEr']:.4f} ({rows[-1]['CIDEr_change']:+.4f}); same best "
                  f"caption {rows[-1]['same_best_caption']}/{len(bt)}; {rows[-1]['bytes'][0] / 2**20:.1f} -> "
                  f"{rows[-1]['bytes'][1] / 2**20:.1f} MiB", flush=True)
        total = [folder_bytes(args.weights), folder_bytes(copy)]
    report = {"split": "dev", "rows": rows, "weights_bytes": total, "seconds": round(time.perf_counter() - t0, 1),
              "machine": machine()}
    print(f"weights/: {total[0] / 2**20:.1f} -> {total[1] / 2**20:.1f} MiB")
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
