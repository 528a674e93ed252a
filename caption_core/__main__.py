"""Caption image files from the command line.

    python -m caption_core photo.jpg more/*.jpg [--bundle weights/efficientnet_lite0-flickr8k]
           [--strategy beam] [--beam-width 3] [--num-return 1] [--json]   (--help: every decoding option)
    python -m caption_core batch photos/ --output captions.jsonl [--engine ray]   (many photos: caption_core/batch.py)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["batch"]:
        from .batch import main as batch_main

        return batch_main(argv[1:])
    from .decoding import add_decoding_arguments, decoding_arguments

    p = argparse.ArgumentParser(prog="python -m caption_core", description="Caption images with a trained bundle.")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--bundle", help="bundle folder or hf://owner/repo (default: the best bundle in weights/)")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    add_decoding_arguments(p)
    args = p.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .bundle import DEFAULT_WEIGHTS, BundleError, default_bundle
    from .captioner import Captioner
    from .hub import OfflineError
    from .images import ImageError

    ref = args.bundle or default_bundle()
    if ref is None:
        print(f"error: no bundle in {DEFAULT_WEIGHTS}; pass --bundle DIR or build one with: python -m training build",
              file=sys.stderr)
        return 2
    try:
        captioner = Captioner.from_bundle(ref)
    except (BundleError, OfflineError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    strategy, overrides = decoding_arguments(args)
    try:
        captioner.decoding(strategy, None, **overrides)  # check the options before reading any image
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failures = 0
    for start in range(0, len(args.images), args.batch_size):
        paths = args.images[start:start + args.batch_size]
        good, bad = [], []
        from .images import load_image

        for path in paths:
            try:
                good.append((path, load_image(path)))
            except ImageError as exc:
                bad.append((path, str(exc)))
        try:
            results = captioner.caption([im for _, im in good], strategy=strategy, **overrides) if good else []
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for (path, _), res in zip(good, results):
            if args.json:
                print(json.dumps({"image": path, "bundle": captioner.name,
                                  "captions": [{"text": c.text, "score": round(c.score, 4),
                                                **({} if c.agreement is None else {"agreement": round(c.agreement, 4)})}
                                               for c in res.captions],
                                  "encode_ms": round(res.encode_ms, 1), "decode_ms": round(res.decode_ms, 1),
                                  **({"imagenet_top5": [[label, round(p, 4)] for label, p in res.labels]}
                                     if res.labels else {}),
                                  **({"guidance": res.guidance} if res.guidance else {}),
                                  **({"objects": res.objects} if res.objects is not None else {}),
                                  # a bundle that reads object words: which; whether it read them without the photo
                                  **({"object_words": res.object_words, "words_alone": res.words_alone}
                                     if res.object_words is not None else {})}))
            else:
                print(f"{path}\t{res.captions[0].text}")
        for path, err in bad:
            failures += 1
            if args.json:
                print(json.dumps({"image": path, "error": err}))
            else:
                print(f"{path}\terror: {err}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
