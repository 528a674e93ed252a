"""Do today's decoder and decoding strategies still write the captions a bundle shipped with?

For each bundle and each ``captions_<split>_<strategy>[_<precision>].json`` it carries, extract (or read
from the cache) that split's features at that precision, decode them with the recorded strategy and
options, and count the captions that differ (printing the first few). Also times the decode-only pass.

    .venv/bin/python benchmarks/decode_parity.py [--bundles weights/*] [--dataset ../shared/data/flickr8k]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundles", nargs="+", default=sorted(glob.glob(os.path.join(os.path.dirname(HERE), "weights", "*"))))
    p.add_argument("--dataset", default=os.path.join(os.path.dirname(HERE), "..", "shared", "data", "flickr8k"))
    p.add_argument("--cache", default=os.path.join(os.path.dirname(HERE), "cache"))
    p.add_argument("--show", type=int, default=5, help="differences printed per file")
    p.add_argument("--bfloat16", action="store_true", help="also the bfloat16 files (slow where the CPU lacks native "
                   "bf16: emulated; the default checks them only where it has it)")
    args = p.parse_args(argv)

    from caption_core.captioner import Captioner
    from caption_core.encoders.base import cpu_has_native_bf16
    from training.build import load_splits
    from training.features import extract_features

    total_diff = 0
    for bundle in args.bundles:
        files = sorted(glob.glob(os.path.join(bundle, "captions_*_*.json")))
        for path in files:
            m = re.match(r"captions_(\w+?)_([a-z_]+?)(?:_(bfloat16))?\.json$", os.path.basename(path))
            if not m:
                continue
            split, precision = m.group(1), m.group(3) or "float32"
            if precision == "bfloat16" and not (args.bfloat16 or cpu_has_native_bf16()):
                print(f"{os.path.basename(bundle)} {os.path.basename(path)}: skipped (no native bf16 on this CPU)")
                continue
            with open(path, encoding="utf-8") as f:
                stored = json.load(f)
            captioner = Captioner.from_bundle(bundle, {"precision": precision} if _has_precision(bundle) else None)
            examples = load_splits(args.dataset, [split])[split]
            feats, valid = extract_features(captioner.encoder, examples, args.dataset, split, args.cache, progress=False)
            ids = [e.image_id for e, ok in zip(examples, valid) if ok]
            rows = [i for i, ok in enumerate(valid) if ok]
            t0 = time.perf_counter()
            texts = []
            for b in range(0, len(rows), 250):
                per = captioner.decode(feats[rows[b:b + 250]], stored["strategy"], **stored["options"])
                texts += [c[0].text for c in per]
            seconds = time.perf_counter() - t0
            diffs = [(i, stored["captions"][i]["caption"], t) for i, t in zip(ids, texts)
                     if stored["captions"][i]["caption"] != t]
            total_diff += len(diffs)
            print(f"{os.path.basename(bundle)} {os.path.basename(path)}: {len(ids) - len(diffs)}/{len(ids)} identical, "
                  f"decode {seconds:.2f} s ({stored['strategy']} {stored['options']})", flush=True)
            for i, old, new in diffs[: args.show]:
                print(f"    {i}: shipped '{old}' | now '{new}'")
    return 0


def _has_precision(bundle: str) -> bool:
    """Whether the bundle's encoder takes a precision option (older manifests do not record one)."""
    import dataclasses

    from caption_core.encoders import get_encoder_class

    with open(os.path.join(bundle, "manifest.json"), encoding="utf-8") as f:
        name = json.load(f)["encoder"]["name"]
    return "precision" in {f.name for f in dataclasses.fields(get_encoder_class(name).config_class)}


if __name__ == "__main__":
    sys.exit(main())
