"""The seed notebook's captioning model, trained on the real ImageNet Xception features and scored like every
bundle: the first row of the results table, so that what each later choice adds is visible.

    .venv/bin/python benchmarks/seed_model.py          # -> benchmarks/seed_model.json (about 10 minutes here)

The seed's settings: Xception at 299 px, global-average-pooled 2,048-d features (float32); every word of the
training captions in the vocabulary (min count 1); 38 tokens; its merge model (features -> Dropout 0.5 ->
Dense 256 ReLU; words -> Embedding 256 (mask_zero) -> Dropout 0.5 -> LSTM 256; add -> Dense 256 ReLU ->
Dense softmax), Adam at 1e-3, the epoch with the lowest dev loss kept; greedy decoding (argmax, no n-gram
blocking). It is scored with the same pycocoevalcap on the same Flickr8k test split.

One thing differs from the seed, and only in cost: its loop expands every caption into all its prefixes,
left-padded, with one-hot targets (``benchmarks/classic.py``), 12.7x slower per epoch than teacher forcing
on this CPU (benchmarks/RESULTS.md; about 20 minutes an epoch at the seed's settings). Its objective is the
same: the LSTM over a left-padded, masked prefix ends in the state that teacher forcing reaches at that word,
and the summed cross-entropy over all prefixes is the masked sparse loss over all positions. So this trains
the seed's model on the seed's objective with the project's loop (``training.train_decoder``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DATA = os.path.join(ROOT, "..", "shared", "data", "flickr8k")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=DATA)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "seed_model.json"))
    ap.add_argument("--runs", default=os.path.join(ROOT, "runs"))
    ap.add_argument("--cache", default=os.path.join(ROOT, "cache"))
    args = ap.parse_args(argv)

    from caption_core.decoders import DecoderConfig
    from training.build import BuildConfig, build
    from training.train_decoder import DecoderTrainConfig

    decoder = DecoderConfig(embed_dim=256, units=256, feature_dropout=0.5, embed_dropout=0.5, max_length=38)
    train = DecoderTrainConfig(decoder=decoder, epochs=20, batch_size=64, learning_rate=1e-3, min_count=1, patience=3)
    cfg = BuildConfig(encoder="xception", dataset=args.dataset, name="xception-seed-settings", export=False,
                      encoder_options={"precision": "float32"}, cache=args.cache, runs=args.runs,
                      strategies=("greedy",), default_strategy="greedy",
                      default_options={"no_repeat_ngram_size": 0, "min_length": 1})
    result = build(cfg, train)
    t = result["training"]
    record = {"what": "the seed notebook's model and settings, real ImageNet Xception features (float32)",
              "vocabulary": None, "max_length": 38, "min_count": 1, "decoding": "greedy, no n-gram blocking",
              "metrics": result["metrics"], "best_epoch": t["best_epoch"], "epochs_run": t["epochs_run"],
              "best_dev_loss": t["best_dev_loss"], "decoder_seconds": t["decoder_seconds"],
              "weights_fingerprint": None, "machine": t["machine"], "command": "benchmarks/seed_model.py"}
    with open(os.path.join(args.runs, "xception-seed-settings", "vocab.json"), encoding="utf-8") as f:
        record["vocabulary"] = len(json.load(f)["id_to_word"])
    from caption_core.encoders import build_encoder

    record["weights_fingerprint"] = build_encoder("xception", {"precision": "float32"}).weights_fingerprint()
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    print(json.dumps({k: v for k, v in record.items() if k != "metrics"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
