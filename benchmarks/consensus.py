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

from everyday_scenes import dev_arguments, dev_sets  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    dev_arguments(p, "ensemble3-scenes-flickr8k")
    p.add_argument("--widths", nargs="+", type=int, default=[5, 7, 10])
    p.add_argument("--temperatures", nargs="+", type=float, default=[0.0, 1.0, 2.0])
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    from training.coco import score_coco
    from training.common import machine, write_json
    from training.guide import score

    t0 = time.perf_counter()
    c, photos, o_ids, d_ids, d_refs, sets = dev_sets(args)
    s, _ = c.decoding()
    base = dict(c.default_options)

    def row(options: dict) -> dict:
        texts = {}
        for key, (feats, probs, objects) in sets.items():
            texts[key] = [per[0].text for b in range(0, len(feats), 250)
                          for per in c.decode(feats[b:b + 250], s.name, options, objects=objects[b:b + 250],
                                              class_probs=probs[b:b + 250])]
        dev = score(d_refs, d_ids, texts["flickr_dev"], meteor=False)
        ood = score_coco(photos, o_ids, texts["ood_dev"])
        out = {"options": options, "flickr_dev": {k: dev[k] for k in ("CIDEr", "BLEU-4", "distinct_share",
                                                                       "dangling_endings")},
               "ood_dev": {k: ood.get(k) for k in ("CIDEr", "main_object_named", "distinct_share",
                                                   "dangling_endings")}}
        print(f"beam {options['beam_width']}, consensus {options.get('consensus', False)}"
              f"{', T ' + str(options['consensus_temperature']) if options.get('consensus') else ''}: Flickr8k dev "
              f"{dev['CIDEr']:.4f} ({dev['distinct_share']:.0%} distinct), coco-mini {ood['CIDEr']:.4f}, named "
              f"{ood.get('main_object_named')}", flush=True)
        return out

    rows = [row(base)]
    for w in args.widths:
        if w != base.get("beam_width"):
            rows.append(row({**base, "beam_width": w}))
        for t in args.temperatures:
            rows.append(row({**base, "beam_width": w, "consensus": True, "consensus_temperature": t}))
    doc = {"bundle": args.bundle, "strategy": s.name, "precision": "float32", "rows": rows,
           "seconds": round(time.perf_counter() - t0, 1), "machine": machine()}
    if args.json:
        write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
