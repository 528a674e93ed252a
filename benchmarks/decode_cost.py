"""What decoding a caption costs with one bundle against another of the same encoder (issue 33: a decoder that reads
object words over a larger vocabulary must stay within 1.5x): one photo at a time, interleaved, float32, both with the
same decoding (default: beam search, width 3; --strategy guided adds the detector-guided search they ship), or each its
own default decoding (--strategy default: what the app serves).

    .venv/bin/python benchmarks/decode_cost.py BASE_BUNDLE CANDIDATE_BUNDLE [--photos 40] [--json OUT]
        [--candidate-options consensus=true beam_width=7]   # the candidate with options of its own on top

Per photo, ``Captioner.caption`` end to end; reported: the medians of its decode time (``CaptionResult.decode_ms``:
the decoder's steps, the object words' vector put after the features included) and of the whole call, and the
candidate / base ratios; and the ratio of the mean decode times (where the photos a guided search decodes twice weigh
in). The detector runs for both (its objects are what the candidate reads). Flickr8k test photos when ../shared has
them, else scikit-image's; ``--source coco``: coco-mini's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from caption_core.config import parse_option  # noqa: E402
from guided_latency import float32_captioner, interleaved, photos  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base", help="the bundle measured against")
    p.add_argument("candidate", help="the bundle measured (the same encoder)")
    p.add_argument("--photos", type=int, default=40)
    p.add_argument("--strategy", default="beam", help="the decoding both use (default: %(default)s); 'default': each "
                   "bundle's own default decoding, what the app serves (--beam-width then unused)")
    p.add_argument("--beam-width", type=int, default=3)
    p.add_argument("--source", choices=("flickr", "coco"), default="flickr",
                   help="Flickr8k test photos, or coco-mini's everyday ones (default: %(default)s)")
    p.add_argument("--candidate-options", nargs="*", default=[], metavar="KEY=VALUE", type=parse_option,
                   help="decoding options for the candidate only, on top of the shared ones (consensus=true beam_width=10)")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)

    from training.common import machine

    caps = {kind: float32_captioner(folder) for kind, folder in (("base", args.base), ("candidate", args.candidate))}
    if caps["base"].encoder.name != caps["candidate"].encoder.name:
        raise SystemExit("the two bundles must share the encoder: the decoders are what is compared")
    images = photos(args.photos, args.source)
    own = args.strategy == "default"
    opts = {} if own else {"beam_width": args.beam_width}
    if args.strategy == "guided":
        opts.update(guide_threshold=1.0, guide_veto=True, guide_detector=0.5, guide_detector_first=True,
                    guide_count=False)
    extra = {"candidate": dict(args.candidate_options)}
    rows = interleaved(caps, images, None if own else args.strategy, opts, extra=extra)
    med, mean = ({kind: {k: round(stat([r[kind][k] for r in rows]), 2) for k in ("total_ms", "decode_ms", "words")}
                  for kind in caps} for stat in (statistics.median, statistics.fmean))
    out = {"base": args.base, "candidate": args.candidate, "photos": len(images), "strategy": args.strategy,
           "options": {k: c.default_options for k, c in caps.items()} if own else opts,
           "candidate_options": extra["candidate"], "precision": "float32",
           "vocabulary": {k: len(c.vocab) for k, c in caps.items()},
           "object_words": {k: (c.object_words.size if c.object_words else 0) for k, c in caps.items()},
           "median": med, "decode_ratio": round(med["candidate"]["decode_ms"] / med["base"]["decode_ms"], 3),
           "total_ratio": round(med["candidate"]["total_ms"] / med["base"]["total_ms"], 3),
           "mean": mean, "decode_ratio_of_means": round(mean["candidate"]["decode_ms"] / mean["base"]["decode_ms"], 3),
           "machine": machine()}
    print(json.dumps({k: out[k] for k in ("vocabulary", "object_words", "median", "decode_ratio", "total_ratio",
                                          "decode_ratio_of_means")}))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
