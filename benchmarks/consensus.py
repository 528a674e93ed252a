"""Consensus of the beams on both dev sets: the bundle's default decoding, then the same with ``consensus`` (the
captions its beams finish re-ranked by minimum Bayes risk, ``caption_core.decoding.consensus_order``) at each beam
width and temperature asked, float32. Per row: Flickr8k dev CIDEr, distinct share, dangling endings; coco-mini CIDEr,
main object named. What it costs to decode: ``benchmarks/decode_cost.py ... --candidate-options consensus=true``.

Dev sets only: nothing here reads a test split.

    .venv/bin/python benchmarks/consensus.py [--bundle weights/ensemble3-scenes-flickr8k] [--widths 5 7 10]
        [--temperatures 0 1 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from everyday_scenes import dev_arguments  # noqa: E402
from guided_latency import float32_captioner  # noqa: E402


def decodings(base: dict, widths: list[int], temperatures: list[float]) -> list[dict]:
    """The default's options, then at each width: without consensus (unless the default's width), with it at each
    temperature."""
    out = [dict(base)]
    for w in widths:
        if w != base.get("beam_width"):
            out.append({**base, "beam_width": w})
        out += [{**base, "beam_width": w, "consensus": True, "consensus_temperature": t} for t in temperatures]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    dev_arguments(p, "ensemble3-scenes-flickr8k")
    p.add_argument("--widths", nargs="+", type=int, default=[5, 7, 10])
    p.add_argument("--temperatures", nargs="+", type=float, default=[0.0, 1.0, 2.0])
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    from training.choose import score_candidates
    from training.common import machine, write_json

    t0 = time.perf_counter()
    c = float32_captioner(args.bundle)
    s, _ = c.decoding()
    cands = [(s.name, o) for o in decodings(dict(c.default_options), args.widths, args.temperatures)]
    rows = score_candidates(c, cands, args.dataset, args.coco, args.cache)
    doc = {"bundle": args.bundle, "strategy": s.name, "precision": "float32", "rows": rows,
           "seconds": round(time.perf_counter() - t0, 1), "machine": machine()}
    if args.json:
        write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
