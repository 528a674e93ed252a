"""Issue 33's go / no-go: what reading caption text without photos does to captions, on both dev sets.

Each candidate is a bundle, optionally fused with a language model trained on the text (``pretrain-text``'s run
folder, at a weight: shallow fusion, ``caption_core.decoders.fusion``). Every candidate decodes Flickr8k dev and the
out-of-domain dev set (coco-mini) with the same decodings: the tuned beam search given here, and guided decoding
on top of it with the COCO detector (the classifier only vetoing), as the Lite0 merge bundle ships. Float32.
Dev sets only: nothing here reads a test split.

    .venv/bin/python benchmarks/text_language.py \
        --candidate flickr8k-only=runs/candidates/lite0-xe-baseline \
        --candidate pretrained=runs/candidates/lite0-xe-text \
        --candidate fused-0.2=runs/candidates/lite0-xe-text:runs/text-pretrain:0.2 --json benchmarks/text_language.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def load_lm(run: str):
    """A pretrain-text run's language model (its best epoch) and vocabulary."""
    from caption_core.decoders import DecoderConfig, load_inference
    from caption_core.text import Vocabulary
    from training.common import read_json

    state = read_json(os.path.join(run, "state.json"))
    vocab = Vocabulary.load(os.path.join(run, "vocab.json"))
    config = DecoderConfig.from_dict({**state["config"]["decoder"], "vocab_size": len(vocab), "feature_dim": 1})
    return load_inference(os.path.join(run, "best.keras"), config), vocab


def captioner_for(spec: str):
    """'BUNDLE', 'BUNDLE:LM_RUN:WEIGHT' or 'BUNDLE+BUNDLE+...' -> a Captioner (float32), fused with the language model
    where given; with '+', the bundles assembled as an ensemble (over the union of their vocabularies where they
    differ), as ``python -m training ensemble`` would build it ('+...@1,1,2': with those weights)."""
    from caption_core.bundle import read_manifest
    from caption_core.captioner import Captioner
    from caption_core.decoders import FusedDecoder, vocabulary_map
    from caption_core.encoders import supported_options

    if "+" in spec:
        from training.ensemble import assemble

        spec, _, weights = spec.partition("@")  # 'A+B+C@1,1,2': the members' weights
        captioner, _ = assemble(spec.split("+"), {"precision": "float32"},
                                [float(w) for w in weights.split(",")] if weights else None)
        return captioner
    bundle, *fusion = spec.split(":")
    captioner = Captioner.from_bundle(bundle, supported_options(read_manifest(bundle)["encoder"]["name"],
                                                                {"precision": "float32"}))
    if fusion:
        run, weight = fusion
        lm, lm_vocab = load_lm(run)
        captioner.decoder = FusedDecoder(captioner.decoder, lm, float(weight), vocabulary_map(captioner.vocab, lm_vocab))
    return captioner


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidate", action="append", required=True, metavar="LABEL=BUNDLE[:LM_RUN:WEIGHT]|BUNDLE+BUNDLE...")
    p.add_argument("--dataset", default=os.path.join("..", "shared", "data", "flickr8k"))
    p.add_argument("--coco", default=os.path.join("..", "shared", "data", "coco-mini"))
    p.add_argument("--cache", default="cache")
    p.add_argument("--beam-width", type=int, default=3)
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument("--no-repeat-ngram-size", type=int, default=3)
    p.add_argument("--detector", type=float, default=0.5, help="guide_detector of the guided decoding")
    p.add_argument("--veto-alone", action="store_true", help="guide_veto_alone of the guided decoding")
    p.add_argument("--json", help="write the rows here (with every out-of-domain caption)")
    args = p.parse_args()
    from training.choose import score_candidates
    from training.common import machine, write_json

    base = {"beam_width": args.beam_width, "length_penalty": args.length_penalty,
            "no_repeat_ngram_size": args.no_repeat_ngram_size}
    decodings = [("beam", base),
                 ("guided", {**base, "guide_threshold": 1.0, "guide_veto": True, "guide_veto_alone": args.veto_alone,
                             "guide_detector": args.detector, "guide_detector_first": True, "guide_count": False})]
    out = {"decodings": decodings, "dataset": args.dataset, "ood_set": args.coco, "precision": "float32",
           "machine": machine(), "candidates": {}}
    for item in args.candidate:
        label, _, spec = item.partition("=")
        t0 = time.perf_counter()
        captioner = captioner_for(spec)
        rows = score_candidates(captioner, decodings, args.dataset, args.coco, args.cache, label=label,
                                keep_captions=True)
        out["candidates"][label] = {"spec": spec, "vocabulary": len(captioner.vocab), "rows": rows,
                                    "seconds": round(time.perf_counter() - t0, 1)}
        if args.json:
            write_json(args.json, out)
    print(f"{'candidate':24s} {'decoding':8s} {'F8k dev CIDEr':>13s} {'coco-mini CIDEr':>15s} {'named':>6s} {'distinct':>8s}")
    for label, c in out["candidates"].items():
        for r in c["rows"]:
            print(f"{label:24s} {r['strategy']:8s} {r['flickr_dev']['CIDEr']:13.4f} {r['ood_dev']['CIDEr']:15.4f} "
                  f"{r['ood_dev'].get('main_object_named', '-'):>6} {r['flickr_dev']['distinct_share']:8.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
