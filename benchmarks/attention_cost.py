"""What a caption with its attention maps costs, against a merge bundle's caption of the same encoder: one photo
at a time, interleaved, float32, each bundle with the same decoding (default: beam search, width 3).

    .venv/bin/python benchmarks/attention_cost.py MERGE_BUNDLE ATTENTION_BUNDLE [--photos 30] [--json OUT]

Per photo, ``Captioner.caption`` end to end (the photo read, encoded, decoded; the attention bundle's result
carries its maps, computed from the caption it chose: no extra encoder pass). Reports the medians and the
attention / merge ratio; also the grid features' size per photo. Flickr8k test photos when ../shared has them,
else scikit-image's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from guided_latency import float32_captioner, interleaved, photos  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("merge", help="merge bundle folder")
    p.add_argument("attention", help="attention bundle folder (the same encoder)")
    p.add_argument("--photos", type=int, default=30)
    p.add_argument("--strategy", default="beam")
    p.add_argument("--beam-width", type=int, default=3)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)

    caps = {kind: float32_captioner(folder) for kind, folder in (("merge", args.merge), ("attention", args.attention))}
    if not caps["attention"].attends:
        raise SystemExit(f"{args.attention} is not an attention bundle")
    images = photos(args.photos)
    opts = {"beam_width": args.beam_width}

    def maps_come_along(kind, r):
        if kind == "attention":
            assert r.attention and len(r.attention["maps"]) == len(r.attention["words"])

    rows = interleaved(caps, images, args.strategy, opts, maps_come_along)
    out = {"photos": len(rows), "strategy": args.strategy, **opts, "precision": "float32",
           "merge_bundle": os.path.basename(os.path.normpath(args.merge)),
           "attention_bundle": os.path.basename(os.path.normpath(args.attention)),
           "grid_feature_bytes_float16": 2 * caps["attention"].encoder.output_dim}
    for kind in caps:
        out[kind] = {k: round(statistics.median(r[kind][k] for r in rows), 2) for k in ("total_ms", "encode_ms", "decode_ms")}
    out["ratio"] = round(out["attention"]["total_ms"] / out["merge"]["total_ms"], 3)
    from training.common import machine, write_json

    out["machine"] = machine()
    print(json.dumps(out, indent=1))
    if args.json:
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
