"""Caption text without photos: what a decoder can read to learn how people describe kitchens, streets and giraffes.

Readers for the two layouts the corpora come in, each caption kept with the photo it describes (by id), so that
none of a held-out photo's captions ever reaches training:

- COCO's caption JSON (``images`` with ``id``/``file_name``, ``annotations`` with ``image_id``/``caption``): photo ids
  ``coco:<image id>``;
- Flickr-style token files (``NAME.jpg#k<TAB>caption``: Flickr8k, Flickr30k): photo ids ``flickr:<Flickr photo
  number>`` (the number before the first ``_`` of a Flickr8k name, the whole stem of a Flickr30k one: the same photo
  has the same id in both, since Flickr30k contains every Flickr8k photo).

``held_out_ids`` gathers the photos that must not be trained on: Flickr8k's dev and test photos and every photo
of the out-of-domain dev sets (coco-mini). ``load_corpus`` reads a folder laid out like ``../shared/data/caption-text``
(``coco/*.json``, ``flickr30k/*.token.txt``) and drops their captions; ``corpus_vocabulary`` builds a vocabulary
from Flickr8k train and the corpus together.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Iterable, Sequence

from caption_core.text import Vocabulary, clean_caption


@dataclasses.dataclass(frozen=True)
class TextCaption:
    source: str  # which corpus: 'coco', 'flickr30k', 'flickr8k'
    photo_id: str  # 'coco:<id>' or 'flickr:<photo number>': the photo it describes, the same id across corpora
    caption: str  # raw


def flickr_photo_id(name: str) -> str:
    """'1000268201_693b08cb0e.jpg' (Flickr8k) or '1000092795.jpg' (Flickr30k) -> 'flickr:1000268201'."""
    stem = os.path.basename(name).split("#")[0].rsplit(".", 1)[0]
    return "flickr:" + stem.split("_")[0]


def coco_photo_id(image_id: int | str) -> str:
    return f"coco:{int(image_id)}"


def read_coco_captions(path: str, source: str = "coco") -> list[TextCaption]:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or "annotations" not in doc:
        raise ValueError(f"{path}: not a COCO caption file (no 'annotations')")
    return [TextCaption(source, coco_photo_id(a["image_id"]), a["caption"].strip()) for a in doc["annotations"]
            if isinstance(a.get("caption"), str) and a["caption"].strip()]


def read_flickr_tokens(path: str, source: str) -> list[TextCaption]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            name, sep, caption = line.rstrip("\n").partition("\t")
            if sep and caption.strip():
                out.append(TextCaption(source, flickr_photo_id(name), caption.strip()))
    return out


def held_out_ids(flickr8k: str | None = None, coco_dev: Sequence[str] = ()) -> set[str]:
    """The photos whose captions training must never see: Flickr8k's dev and test photos (their split lists) and
    every photo of each COCO-format dev folder (its captions.json and instances.json)."""
    out: set[str] = set()
    if flickr8k:
        for split in ("dev", "test"):
            path = os.path.join(flickr8k, f"Flickr_8k.{split}Images.txt")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{flickr8k}: no {os.path.basename(path)}, so its {split} photos cannot be "
                                        "held out of training; point to the Flickr8k folder with its split lists")
            with open(path, encoding="utf-8") as f:
                out |= {flickr_photo_id(line.strip()) for line in f if line.strip()}
    for folder in coco_dev:
        for name in ("captions.json", "instances.json"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    doc = json.load(f)
                out |= {coco_photo_id(im["id"]) for im in doc.get("images", [])}
                out |= {coco_photo_id(a["image_id"]) for a in doc.get("annotations", []) if "image_id" in a}
    return out


def load_corpus(folder: str, held_out: set[str] = frozenset()) -> tuple[list[TextCaption], dict]:
    """Every caption of a caption-text folder (``coco/*.json``, ``*/*.token.txt``) whose photo is not ``held_out``.
    -> (captions, a report: per source, captions read and dropped)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no caption-text folder at '{folder}' (it holds coco/*.json and flickr30k/*.token.txt)")
    found: list[TextCaption] = []
    for path in sorted(glob.glob(os.path.join(folder, "coco", "*.json"))):
        found += read_coco_captions(path)
    for path in sorted(glob.glob(os.path.join(folder, "*", "*.token.txt"))):
        found += read_flickr_tokens(path, os.path.basename(os.path.dirname(path)))
    if not found:
        raise FileNotFoundError(f"'{folder}' holds no caption files (coco/*.json, */*.token.txt)")
    report: dict = {}
    kept = []
    for c in found:
        r = report.setdefault(c.source, {"read": 0, "held_out": 0})
        r["read"] += 1
        if c.photo_id in held_out:
            r["held_out"] += 1
        else:
            kept.append(c)
    return kept, report


def corpus_vocabulary(train_captions: Iterable[str], corpus: Iterable[TextCaption], min_count: int = 5,
                      must_have: Iterable[str] = ()) -> tuple[Vocabulary, list[str]]:
    """A vocabulary over Flickr8k train's captions and the corpus (cleaned), words seen ``min_count`` times; -> (it,
    the words of ``must_have`` it still lacks)."""
    vocab = Vocabulary.build([clean_caption(c) for c in train_captions] + [clean_caption(c.caption) for c in corpus],
                             min_count=min_count)
    return vocab, [w for w in must_have if w not in vocab]
