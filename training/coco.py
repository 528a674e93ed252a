"""An out-of-domain dev set: a COCO-format folder (``python -m training coco BUNDLE --coco FOLDER``).

The photos people bring are not Flickr8k photos (kitchens, streets, food, rooms), so what a decoding does to
them is measured on a second dev set beside Flickr8k dev. The folder is in COCO's own format:

- ``images/`` (or ``train2017/``, ``val2017/``): the photos, by ``file_name``;
- ``captions.json``: ``images`` (id, file_name) and ``annotations`` (image_id, caption);
- ``instances.json`` (optional): object ``annotations`` (image_id, category_id, area) and ``categories``.

Per bundle and decoding it reports pycocoevalcap scores against the COCO references, the distinct share and the
dangling endings, and, where ``instances.json`` is there, how many captions name the photo's **main object**:
the category with the largest box area, named by one of its words in ``training/data/coco_words.json``
("person" by man, woman, people, ...). It is a dev set: choose on it, never train on it.

Features are the bundle's own encoder's, computed exactly as the app computes them for an upload (an
ensemble resizes once to its smallest member's input), cached under ``<cache>/coco/``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os

import numpy as np

from caption_core.images import ImageError, load_image
from caption_core.text import clean_caption

from .common import read_json, write_json

COCO_WORDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "coco_words.json")
COCO_WORDS_FORMAT = "training.coco_words/1"
IMAGE_FOLDERS = ("images", "train2017", "val2017", "test2017")


@dataclasses.dataclass(frozen=True)
class CocoPhoto:
    image_id: str  # the file name
    path: str  # where the photo is
    captions: tuple[str, ...]  # its reference captions, raw
    main_object: str | None  # the category with the largest box area (None: no instances file, or no boxes)


@functools.lru_cache(maxsize=2)
def category_words(path: str = COCO_WORDS) -> dict[str, frozenset[str]]:
    """COCO category name -> the words that name it in a caption."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    if doc.get("format") != COCO_WORDS_FORMAT:
        raise ValueError(f"{path}: not a {COCO_WORDS_FORMAT} file")
    return {k: frozenset(v.split()) for k, v in doc["categories"].items()}


def names(caption: str, category: str, words: dict[str, frozenset[str]] | None = None) -> bool:
    """Whether ``caption`` names ``category`` (one of its words, whole words of the cleaned caption)."""
    words = words or category_words()
    if category not in words:
        raise ValueError(f"no words for COCO category {category!r} in {COCO_WORDS}; add them there")
    return bool(set(clean_caption(caption).split()) & words[category])


def load_coco(folder: str) -> list[CocoPhoto]:
    """The photos of a COCO-format folder that have captions, in file-name order."""
    cap_path = os.path.join(folder, "captions.json")
    if not os.path.isfile(cap_path):
        raise FileNotFoundError(f"{folder}: no captions.json; a COCO-format folder holds images/ (or train2017/), "
                                "captions.json and optionally instances.json")
    image_dir = next((os.path.join(folder, d) for d in IMAGE_FOLDERS if os.path.isdir(os.path.join(folder, d))), None)
    if image_dir is None:
        raise FileNotFoundError(f"{folder}: no image folder (looked for {', '.join(IMAGE_FOLDERS)})")
    with open(cap_path, encoding="utf-8") as f:
        doc = json.load(f)
    files = {im["id"]: im["file_name"] for im in doc["images"]}
    caps: dict[int, list[str]] = {}
    for a in doc["annotations"]:
        caps.setdefault(a["image_id"], []).append(a["caption"].strip())
    main: dict[int, str] = {}
    inst_path = os.path.join(folder, "instances.json")
    if os.path.isfile(inst_path):
        with open(inst_path, encoding="utf-8") as f:
            inst = json.load(f)
        cats = {c["id"]: c["name"] for c in inst["categories"]}
        largest: dict[int, float] = {}
        for a in inst["annotations"]:
            if a["area"] > largest.get(a["image_id"], -1.0):
                largest[a["image_id"]] = a["area"]
                main[a["image_id"]] = cats[a["category_id"]]
    return sorted((CocoPhoto(files[i], os.path.join(image_dir, files[i]), tuple(c), main.get(i))
                   for i, c in caps.items() if i in files), key=lambda p: p.image_id)


def coco_features(captioner, photos: list[CocoPhoto], cache: str = "cache") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """-> features (N, D) float32, ImageNet class probabilities (N, 1000) (the encoder's head, or the tagger's),
    and the ids of the photos that could be read (rows in that order). Cached per encoder (config + weights
    fingerprint) and photo list: 80 photos take seconds, but a decoding sweep reads them dozens of times."""
    from caption_core.encoders.base import class_probabilities

    from .features import cache_key

    key = {"encoder": cache_key(captioner.encoder, "coco"), "photos": [(p.image_id, os.path.getsize(p.path))
                                                                       for p in photos]}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = os.path.join(cache, "coco", f"{captioner.encoder.name}-{digest}")
    meta = read_json(os.path.join(folder, "index.json"))
    if meta is not None and meta.get("key") == key:
        with np.load(os.path.join(folder, "arrays.npz")) as z:
            return z["features"], z["probabilities"], meta["ids"]
    enc, feats, probs, ids = captioner.encoder, [], [], []
    for b in range(0, len(photos), 16):
        chunk, pil = photos[b:b + 16], []
        for p in chunk:
            try:
                pil.append(load_image(p.path))
                ids.append(p.image_id)
            except ImageError as exc:
                print(f"coco: skipped {p.image_id}: {exc}", flush=True)
        if not pil:
            continue
        f = enc.encode_arrays(enc.preprocess(pil))  # (B, D)
        feats.append(f)
        probs.append(captioner.class_probabilities(f, pil))  # (B, 1000)
    feats_a = np.concatenate(feats).astype(np.float32)  # (N, D)
    probs_a = np.concatenate(probs).astype(np.float32)  # (N, 1000)
    os.makedirs(folder, exist_ok=True)
    np.savez(os.path.join(folder, "arrays.npz"), features=feats_a, probabilities=probs_a)
    write_json(os.path.join(folder, "index.json"), {"key": key, "ids": ids})
    return feats_a, probs_a, ids


def naming_counts(photos: list[CocoPhoto], captions: dict[str, str]) -> dict:
    """How many captions name their photo's main object: overall and per category."""
    words = category_words()
    rows = [(p.main_object, names(captions[p.image_id], p.main_object, words)) for p in photos
            if p.main_object is not None and p.image_id in captions]
    per: dict[str, list[int]] = {}
    for cat, hit in rows:
        per.setdefault(cat, [0, 0])
        per[cat][0] += hit
        per[cat][1] += 1
    return {"named": sum(h for _, h in rows), "of": len(rows),
            "per_category": {c: f"{a}/{b}" for c, (a, b) in sorted(per.items(), key=lambda kv: -kv[1][1])}}


def score_coco(photos: list[CocoPhoto], ids: list[str], texts: list[str], meteor: bool = False) -> dict:
    """pycocoevalcap scores, distinct share, dangling endings and the main object named, for captions of ``ids``."""
    from caption_core.metrics import caption_statistics

    from .evaluate import score_captions

    by_id = {p.image_id: p for p in photos}
    refs = {i: list(by_id[i].captions) for i in ids}
    captions = dict(zip(ids, texts))
    s = score_captions(refs, captions, meteor=meteor)
    stats = caption_statistics(texts)
    out = {k: round(s[k], 4) for k in ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr") if k in s}
    out.update(distinct_share=stats["distinct_share"], dangling_endings=stats["dangling_endings"],
               images=len(ids), tokenizer=s["tokenizer"])
    if any(p.main_object for p in photos):
        n = naming_counts([by_id[i] for i in ids], captions)
        out.update(main_object_named=n["named"], main_object_of=n["of"], named_per_category=n["per_category"])
    return out


def vocabulary_gaps(captioner, photos: list[CocoPhoto]) -> dict[str, int]:
    """The main objects of ``photos`` that the bundle's vocabulary has no word for (guidance cannot require them: the
    decoder never learned them), with how many photos each: what a decoder with a larger vocabulary would gain."""
    gaps: dict[str, int] = {}
    missing = set(captioner.detector_words.missing)
    for p in photos:
        if p.main_object in missing:
            gaps[p.main_object] = gaps.get(p.main_object, 0) + 1
    return dict(sorted(gaps.items(), key=lambda kv: (-kv[1], kv[0])))
