"""What sharing a photo's grid among its beams saves: the attention decoders' state as it was (each beam row a copy of
its photo's projected grid and keys, copied again at every reorder) against the shared grid (each row a reference,
one photo's rows reading one grid), one photo at a time, interleaved (the order swapped every photo), float32.

    .venv/bin/python benchmarks/attention_state.py BUNDLE [--photos 40] [--source flickr|coco] [--json OUT]

Decoding only (``Captioner.decode`` on features and detections computed once), with the bundle's default decoding.
Reported: the medians of both, their ratio, and how many best captions are the same.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from guided_latency import float32_captioner, photos  # noqa: E402


def per_row_copies():
    """The attention decoder with the state it had before the shared grid: (values, keys, h, c, hq), every row its
    own copy of its photo's values (N, E) and keys (N, A)."""
    from caption_core.decoders.attention import AttentionInference

    class PerRowCopies(AttentionInference):
        state_arrays = 5

        def initial_state(self, features):
            grid, h, c, hq = super().initial_state(features)
            return np.stack([g.values for g in grid]), np.stack([g.keys for g in grid]), h, c, hq

        _grid_rows = staticmethod(lambda grid: grid)  # the step reads the rows' own copies, as it did

        def _step(self, tokens, state):
            values, keys, h, c, hq = state
            log_probs, (_, h, c, hq), alpha = super()._step(tokens, ((values, keys), h, c, hq))
            return log_probs, (values, keys, h, c, hq), alpha

    return PerRowCopies


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--photos", type=int, default=40)
    p.add_argument("--source", choices=("flickr", "coco"), default="flickr")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)

    from caption_core.decoders.attention import AttentionInference
    from training.common import machine

    old, new = float32_captioner(args.bundle), float32_captioner(args.bundle)
    members = getattr(old.decoder, "members", None)
    for m in members or [old.decoder]:
        if isinstance(m, AttentionInference):
            m.__class__ = per_row_copies()
    if members:
        old.decoder._sizes = [m.state_arrays for m in members]
    if not any(isinstance(m, AttentionInference) for m in members or [new.decoder]):
        raise SystemExit(f"{args.bundle} has no attention decoder")
    images = photos(args.photos, args.source)
    prepared = [(new.encoder.encode([im]), new.detect([im])) for im in images]
    for feats, objs in prepared[:2]:  # warm-up
        old.decode(feats, objects=objs), new.decode(feats, objects=objs)
    times: dict = {"per_row_copies": [], "shared_grid": []}
    same = 0
    for i, (feats, objs) in enumerate(prepared):
        order = [("per_row_copies", old), ("shared_grid", new)]
        best = {}
        for label, c in (order if i % 2 else order[::-1]):
            t = time.perf_counter()
            best[label] = c.decode(feats, objects=objs)[0][0].tokens
            times[label].append(1000 * (time.perf_counter() - t))
        same += best["per_row_copies"] == best["shared_grid"]
    med = {k: round(statistics.median(v), 2) for k, v in times.items()}
    out = {"bundle": args.bundle, "source": args.source, "photos": len(images), "precision": "float32",
           "decoding": new.manifest.get("default_decoding"), "median_decode_ms": med,
           "ratio": round(med["shared_grid"] / med["per_row_copies"], 3), "same_best_caption": f"{same}/{len(images)}",
           "machine": machine()}
    print(json.dumps({k: out[k] for k in ("bundle", "source", "median_decode_ms", "ratio", "same_best_caption")}))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
