"""``python -m training pretrain-text``: the merge decoder's language side trained on caption text alone.

Every row is a caption with no photo: the image input is zeros, so the merge model's image projection gives
relu(its bias), a learned "no photo" vector, and the LSTM, the merge and the word head learn the language. The rows
are the caption-text corpus (COCO and Flickr30k captions, ``training/text_corpus.py``: every caption of a Flickr8k
dev or test photo and of a coco-mini photo left out, by photo id) and Flickr8k train's captions; the vocabulary is
built over the same text with ``min_count``. The dev loss that picks the best epoch is over Flickr8k dev's and
the out-of-domain dev set's captions (dev sets: chosen on, never trained on).

The run folder (``best.keras``, ``vocab.json``, ``state.json``, ``corpus.json``) starts photo runs:
``python -m training build --init-from RUN [--text CORPUS --text-mix R]``. A killed run resumes where it stopped
(the same command again), as every training command does.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from caption_core.guidance import read_coco_words

from .common import write_json
from .datasets import load_captions
from .text_corpus import corpus_vocabulary, held_out_ids, load_corpus, read_coco_captions
from .train_decoder import DecoderTrainConfig, train_decoder


@dataclasses.dataclass(frozen=True)
class TextRows:
    """Captions standing in for a photo's example (``caption_rows`` reads ``captions``)."""

    captions: tuple


def coco_category_words() -> list[str]:
    """The words naming one of each COCO category (``caption_core/data/coco_words.json``): what the vocabulary
    should hold so that guidance can require them."""
    return sorted({w for forms in read_coco_words().values() for w in forms["one"]})


def training_text(corpus: str, flickr8k: str, coco_dev=()) -> tuple[list[str], dict]:
    """The corpus's captions that may be trained on: none of Flickr8k's dev and test photos, none of the
    out-of-domain dev sets' photos. -> (raw captions, the report per source)."""
    missing = [c for c in coco_dev if not os.path.isdir(c)]
    if missing:
        print(f"note: no dev folder at {', '.join(missing)}: its photos are not held out of the text by id "
              "(the caption-text corpus ships without coco-mini's)", flush=True)
    kept, report = load_corpus(corpus, held_out_ids(flickr8k, [c for c in coco_dev if os.path.isdir(c)]))
    return [c.caption for c in kept], report


def pretrain_text(cfg: DecoderTrainConfig, corpus: str, flickr8k: str, coco_dev=(), resume: bool = True,
                  stop_after_epochs: int | None = None) -> dict:
    """Train the language side on text (see the module's doc) into ``cfg.out``; -> the run's state."""
    if cfg.decoder.kind != "merge":
        raise ValueError(f"pretrain-text trains the merge decoder's language side; got kind {cfg.decoder.kind!r}")
    text, report = training_text(corpus, flickr8k, coco_dev)
    train = [c for ex in load_captions(flickr8k, "train") for c in ex.captions]
    dev = [c for ex in load_captions(flickr8k, "dev") for c in ex.captions]
    for folder in coco_dev:
        path = os.path.join(folder, "captions.json")
        if os.path.isfile(path):
            dev += [c.caption for c in read_coco_captions(path)]
    vocab, missing = corpus_vocabulary(train, [_Text(c) for c in text], cfg.min_count, coco_category_words())
    os.makedirs(cfg.out, exist_ok=True)
    vocab_path = os.path.join(cfg.out, "vocab.json")
    if resume and os.path.exists(vocab_path):
        from caption_core.text import Vocabulary

        if Vocabulary.load(vocab_path) != vocab:
            raise ValueError(f"{vocab_path} differs from the vocabulary this corpus gives: a run over other text; "
                             "use --no-resume or another --out")
    rows = [TextRows((c,)) for c in text + train]
    dev_rows = [TextRows((c,)) for c in dev]
    write_json(os.path.join(cfg.out, "corpus.json"), {
        "corpus": corpus, "flickr8k": flickr8k, "out_of_domain_dev": list(coco_dev), "read": report,
        "corpus_captions": len(text), "flickr8k_train_captions": len(train), "dev_captions": len(dev),
        "vocabulary": len(vocab), "min_count": cfg.min_count, "coco_words_missing": missing})
    print(f"text: {len(text)} corpus captions ({json.dumps(report)}) + {len(train)} Flickr8k train captions; "
          f"vocabulary {len(vocab)} (min count {cfg.min_count}); COCO words it lacks: "
          f"{(', '.join(missing[:12]) + (f' and {len(missing) - 12} more' if len(missing) > 12 else '')) or 'none'}",
          flush=True)
    zeros, dev_zeros = np.zeros((len(rows), 1), np.float32), np.zeros((len(dev_rows), 1), np.float32)
    return train_decoder(cfg, rows, zeros, np.ones(len(rows), bool), dev_rows, dev_zeros,
                         np.ones(len(dev_rows), bool), resume=resume, vocab=vocab,
                         stop_after_epochs=stop_after_epochs)


@dataclasses.dataclass(frozen=True)
class _Text:
    caption: str  # what corpus_vocabulary reads of a TextCaption
