"""What sharing a photo's grid among its beams saves: the attention decoders' state as it was (each beam row a copy of
its photo's projected grid and keys, copied again at every reorder) against the shared grid (each row a reference,
one photo's rows reading one grid), one photo at a time, interleaved (the order swapped every photo), float32.

    .venv/bin/python benchmarks/attention_state.py BUNDLE [--photos 40] [--source flickr|coco] [--json OUT]
        [--batch]   # all the photos decoded at once instead (what evaluation, SCST and batch captioning do)

Decoding only (``Captioner.decode`` on features and detections computed once), with the bundle's default decoding
(``--batch``: it, greedy, and 5 samples a photo, each 3 times, alternating). Reported: the medians of both, their
ratio, and how many best captions are the same.
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

    class OwnRows:  # a stand-in for the state's grid: the rows' own copies, read as they are
        def __init__(self, values, keys):
            self.values, self.keys = values, keys

        def rows(self):
            return self.values, self.keys

    class PerRowCopies(AttentionInference):
        state_arrays = 5

        def initial_state(self, features):
            grid, h, c, hq = super().initial_state(features)
            return grid[0].values, grid[0].keys, h, c, hq  # (N, cells, E), (N, cells, A): a row each

        def _step(self, tokens, state):
            values, keys, h, c, hq = state
            log_probs, (_, h, c, hq), alpha = super()._step(tokens, (OwnRows(values, keys), h, c, hq))
            return log_probs, (values, keys, h, c, hq), alpha

    return PerRowCopies


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--photos", type=int, default=40)
    p.add_argument("--source", choices=("flickr", "coco"), default="flickr")
    p.add_argument("--json", help="also write the result here")
    p.add_argument("--batch", action="store_true", help="decode all the photos at once")
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
    out = {"bundle": args.bundle, "source": args.source, "photos": len(images), "precision": "float32",
           "decoding": new.manifest.get("default_decoding"), "machine": machine()}
    if args.batch:  # all the photos at once: each decoding 4 times, the first a warm-up
        feats = np.concatenate([f for f, _ in prepared])  # (P, D)
        objs = [o for _, found in prepared for o in found]
        runs = {"default": {}, "greedy": {"strategy": "greedy"},
                "sample5": {"strategy": "sample", "num_return": 5, "seed": 0}}
        out["batch"] = {name: alternate(old, new, [(feats, objs, kw)] * 4, warm_up=1) for name, kw in runs.items()}
    else:  # one photo at a time, after two warm-up photos
        out.update(alternate(old, new, [(f, o, {}) for f, o in prepared[:2] + prepared], warm_up=2))
    print(json.dumps({k: v for k, v in out.items() if k not in ("decoding", "machine")}))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
    return 0


def alternate(old, new, calls: list, warm_up: int) -> dict:
    """Each (features, objects, decode options) of ``calls`` decoded by both captioners, the order swapped every call;
    the first ``warm_up`` calls not counted -> the medians (ms), their ratio, how many best captions are the same."""
    times: dict = {"per_row_copies": [], "shared_grid": []}
    same = total = 0
    for i, (feats, objs, kw) in enumerate(calls):
        order = [("per_row_copies", old), ("shared_grid", new)]
        best = {}
        for label, c in (order if i % 2 else order[::-1]):
            t = time.perf_counter()
            best[label] = [caps[0].tokens for caps in c.decode(feats, objects=objs, **kw)]
            if i >= warm_up:
                times[label].append(1000 * (time.perf_counter() - t))
        if i >= warm_up:
            same += sum(a == b for a, b in zip(best["per_row_copies"], best["shared_grid"]))
            total += len(feats)
    med = {k: round(statistics.median(v), 2) for k, v in times.items()}
    return {"median_decode_ms": med, "ratio": round(med["shared_grid"] / med["per_row_copies"], 3),
            "same_best_caption": f"{same}/{total}"}


if __name__ == "__main__":
    raise SystemExit(main())
