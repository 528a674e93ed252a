"""Score captions with pycocoevalcap: PTB tokenizer, BLEU-1..4, METEOR, ROUGE-L, CIDEr.

METEOR and the PTB tokenizer run Java. Where ``java`` is missing, a plain tokenizer (the
caption cleaner) is used and METEOR is left out, and the result says so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time

import numpy as np

from caption_core.metrics import caption_statistics
from caption_core.text import clean_caption

log = logging.getLogger("training.evaluate")
METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def java_available() -> bool:
    return shutil.which("java") is not None


def score_captions(references: dict[str, list[str]], candidates: dict[str, str], use_java: bool | None = None,
                   meteor: bool = True) -> dict:
    """references: id -> raw reference captions; candidates: id -> one generated caption.
    -> {metric: value, 'tokenizer': 'ptb'|'plain', 'images': n}. ``meteor=False`` skips METEOR (slow)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if set(candidates) - set(references):
        raise ValueError("every candidate needs references")
    ids = sorted(candidates)
    java = java_available() if use_java is None else use_java
    if java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tok = PTBTokenizer()
        refs = tok.tokenize({i: [{"caption": c} for c in references[i]] for i in ids})
        cands = tok.tokenize({i: [{"caption": candidates[i] or " "}] for i in ids})
    else:
        if use_java is None:
            log.warning("java not found: plain tokenizer, no METEOR (install a JRE for the standard scores)")
        refs = {i: [clean_caption(c) for c in references[i]] for i in ids}
        cands = {i: [clean_caption(candidates[i])] for i in ids}
    out: dict = {}
    bleu, _ = Bleu(4).compute_score(refs, cands, verbose=0)
    for n, b in enumerate(bleu, start=1):
        out[f"BLEU-{n}"] = float(b)
    if java and meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        meteor = Meteor()
        try:
            out["METEOR"], _ = meteor.compute_score(refs, cands)
            out["METEOR"] = float(out["METEOR"])
        finally:
            _close_meteor(meteor)
    out["ROUGE-L"], _ = Rouge().compute_score(refs, cands)
    out["ROUGE-L"] = float(out["ROUGE-L"])
    out["CIDEr"], _ = Cider().compute_score(refs, cands)
    out["CIDEr"] = float(out["CIDEr"])
    out["tokenizer"] = "ptb" if java else "plain"
    out["images"] = len(ids)
    return out


def _close_meteor(meteor) -> None:
    proc = getattr(meteor, "meteor_p", None)
    if proc is None:
        return
    try:
        with meteor.lock:
            proc.stdin.close()
            proc.kill()
            proc.wait()
    except Exception:
        pass


def caption_features(captioner, features: np.ndarray, strategy: str, batch: int = 250, objects=None,
                     class_probs=None, **options) -> list[str]:
    """Best caption for each row of features (N, D), in batches; ``objects`` and ``class_probs`` (N, 1000): the
    detector's findings and the classifier's reading of each row (what a decoder that reads object words needs)."""
    out = []
    for b in range(0, len(features), batch):
        per = captioner.decode(np.asarray(features[b:b + batch], np.float32), strategy,
                               objects=None if objects is None else objects[b:b + batch],
                               class_probs=None if class_probs is None else class_probs[b:b + batch], **options)
        out += [p[0].text for p in per]
    return out


def evaluate_split(captioner, examples, features: np.ndarray, valid: np.ndarray, strategy: str, meteor: bool = True,
                   cache: str = "cache", **options) -> tuple[dict, dict[str, dict]]:
    """-> (scores, {image_id: {'caption', 'references'}}) for the valid rows. A decoder that reads object words
    gets the detector's findings on the photos (cached under ``cache``)."""
    rows = np.flatnonzero(valid)
    feats = np.asarray(features)[rows]
    probs, objects = photo_signals(captioner, [examples[r] for r in rows], feats, cache) \
        if captioner.object_words is not None else (None, None)
    t0 = time.perf_counter()
    texts = caption_features(captioner, feats, strategy, objects=objects, class_probs=probs, **options)
    seconds = time.perf_counter() - t0
    ids = [examples[i].image_id for i in rows]
    refs = {i: list(examples[r].captions) for i, r in zip(ids, rows)}
    cands = dict(zip(ids, texts))
    scores = score_captions(refs, cands, meteor=meteor)
    scores["decode_seconds"] = round(seconds, 2)
    scores["caption_statistics"] = caption_statistics(texts)  # distinct share, words used, dangling endings
    scores["precision"] = captioner.encoder.precision  # the arithmetic that made the features
    return scores, {i: {"caption": cands[i], "references": refs[i]} for i in ids}


def photo_signals(captioner, examples, features: np.ndarray, cache: str = "cache", batch: int = 64):
    """What a decoder that reads object words reads them from, for photos ``examples`` with their ``features``
    (N, D): (the classifier's probabilities (N, 1000): the encoder's head, else the tagger over the photos; the
    detector's ``Objects`` of each, cached under ``cache``), in the order ``ObjectWords.photo_vectors`` takes them."""
    from caption_core.images import load_image

    from .detections import detect_photos

    det = captioner.detector
    objects = detect_photos(det, [(e.image_id, e.image) for e in examples], cache) if det is not None \
        else [None] * len(examples)
    if captioner.encoder.has_imagenet_head:
        return captioner.class_probabilities(features), objects
    probs = [captioner.class_probabilities(features[b:b + batch], [load_image(e.image) for e in examples[b:b + batch]])
             for b in range(0, len(examples), batch)]
    return (np.concatenate(probs) if probs else np.zeros((0, 1000), np.float32)), objects


def metrics_key(dataset: str, split: str, precision: str, limit: int = 0) -> str:
    """Where a score goes in a manifest: 'flickr8k/test', 'flickr8k/test (bfloat16 features)', ..."""
    return (f"{dataset}/{split}" + (f"[:{limit}]" if limit else "")
            + (f" ({precision} features)" if precision != "float32" else ""))


def captions_file(split: str, strategy: str, precision: str) -> str:
    return f"captions_{split}_{strategy}" + (f"_{precision}" if precision != "float32" else "") + ".json"


def write_captions(path: str, bundle: str, split: str, strategy: str, options: dict, captions: dict) -> None:
    """Every generated caption next to its references, as the JSON file a bundle carries."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"bundle": bundle, "split": split, "strategy": strategy, "options": options, "captions": captions},
                  f, indent=1, ensure_ascii=False)


def score_test(captioner, name: str, dataset: str, examples, features: np.ndarray, valid: np.ndarray,
               strategies, tag: str | None = None, cache: str = "cache") -> tuple[dict, dict, dict]:
    """The test split captioned with each of ``strategies`` (the bundle's default options, as each reads them)
    and scored: -> (metrics {metrics key: {strategy: scores}}, caption files {name in the bundle: a temporary
    path}, the last strategy's captions). What build, scst and ensemble record in a bundle."""
    key = metrics_key(dataset, "test", captioner.encoder.precision)
    tmp = tempfile.mkdtemp(prefix="captions-")
    metrics, files, captions = {}, {}, {}
    for strategy in strategies:
        opts = captioner.decoding(strategy)[1].to_dict()
        scores, captions = evaluate_split(captioner, examples, features, valid, strategy, cache=cache, **opts)
        scores["options"] = opts
        metrics.setdefault(key, {})[strategy] = scores
        fname = captions_file("test", strategy, captioner.encoder.precision)
        write_captions(os.path.join(tmp, fname), name, key, strategy, opts, captions)
        files[fname] = os.path.join(tmp, fname)
        print(f"test [{f'{tag}, ' if tag else ''}{strategy}]: " + ", ".join(
            f"{k} {scores[k]:.3f}" for k in ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr") if k in scores), flush=True)
    return metrics, files, captions
