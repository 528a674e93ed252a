"""Guided decoding measured (``python -m training guide BUNDLE...``): the threshold chosen on held-out data,
then CIFAR-10 and Flickr8k test scored with and without guidance.

1. **Choose** (held-out only): for each threshold in ``GuideConfig.thresholds``, the share of CIFAR-10 *train*
   images (``choose_per_class`` per class) whose guided caption names their class, and the Flickr8k *dev*
   CIDEr, distinct share and dangling endings. Usable thresholds keep dev CIDEr within ``max_cider_drop`` of
   unguided decoding, >= 70% distinct captions (or no fewer than unguided), no dangling endings, and name the class more often than
   unguided decoding; of those, the one naming it most often is what a user who turns guidance on gets
   (``best_if_on``). It becomes the default only where the dev captions that guidance changed score better
   or equal per image with 90% confidence (CIDEr-D, paired, bootstrap lower bound >= 0): a corpus CIDEr
   moves by about 0.015 between runs here, far more than the 0.005 that guidance may cost.
2. **Measure** (test splits, reported, never chosen on): CIFAR-10 test (``test_per_class`` per class, upscaled
   by the encoder's own resize): the share of captions that name the true class (or a plain synonym) and the
   share that name another CIFAR-10 class, per class, with and without guidance; Flickr8k test with
   pycocoevalcap, distinct share, dangling endings and how often guidance fired. (What guidance costs per
   photo is ``benchmarks/guided_latency.py``'s.)
3. With ``--set-default``, a bundle whose measurements support it gets guided decoding as its default (its
   tuned beam options plus the threshold), recorded with the dev scores in its manifest's tuning results.

Both runs decode the bundle's own default decoding (beam width, length penalty, no-repeat n-grams); the guided
run adds the constraint. Features are float32 and cached (``cache/``).
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
from PIL import Image

from caption_core.config import Config

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# the words that name each CIFAR-10 class in a caption: the class, its plural, plain synonyms and its kinds
CIFAR_WORDS = {
    "airplane": "airplane airplanes plane planes jet jets aircraft airliner aeroplane",
    "automobile": "car cars automobile automobiles taxi jeep",
    "bird": "bird birds duck ducks seagull seagulls gull gulls pigeon pigeons chicken chickens hen ostrich eagle "
            "owl parrot goose geese swan swans",
    "cat": "cat cats kitten kittens kitty",
    "deer": "deer fawn elk moose reindeer stag",
    "dog": "dog dogs puppy puppies poodle terrier retriever collie hound greyhound dachshund pug beagle labrador "
           "shepherd spaniel husky",
    "frog": "frog frogs toad toads",
    "horse": "horse horses pony ponies foal stallion mare",
    "ship": "ship ships boat boats vessel ferry yacht sailboat steamer liner tanker",
    "truck": "truck trucks lorry pickup firetruck",
}
CIFAR_WORDS = {k: frozenset(v.split()) for k, v in CIFAR_WORDS.items()}


@dataclasses.dataclass(frozen=True)
class GuideConfig(Config):
    thresholds: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # guidance thresholds tried on held-out data
    veto: bool = True  # ban the words of the same group the classifier rules out
    choose_per_class: int = 50  # CIFAR-10 train images per class, for choosing the threshold
    test_per_class: int = 100  # CIFAR-10 test images per class, for the measurement
    max_cider_drop: float = 0.005  # the chosen threshold may lower Flickr8k dev CIDEr by at most this
    min_distinct: float = 0.7  # and keep at least this share of distinct dev captions (or the unguided share, if lower)

    def __post_init__(self):  # command-line values arrive as strings
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))


def names_class(caption: str) -> set[str]:
    """The CIFAR-10 classes a caption names."""
    words = set(caption.split())
    return {c for c, ws in CIFAR_WORDS.items() if words & ws}


def cifar_images(folder: str, split: str, per_class: int) -> tuple[list[Image.Image], list[int]]:
    """The first ``per_class`` images of each class (sorted file names), as PIL images, and their labels."""
    images, labels = [], []
    for k, name in enumerate(CIFAR_CLASSES):
        path = os.path.join(folder, split, name)
        for f in sorted(os.listdir(path))[:per_class]:
            with Image.open(os.path.join(path, f)) as im:
                images.append(im.convert("RGB"))
            labels.append(k)
    return images, labels


def naming(captions: list[str], labels: list[int]) -> dict:
    """Share of captions naming the true class, and naming another CIFAR-10 class; overall and per class."""
    per = {}
    for k, name in enumerate(CIFAR_CLASSES):
        rows = [names_class(c) for c, lab in zip(captions, labels) if lab == k]
        if not rows:
            continue
        per[name] = {"true": round(sum(name in r for r in rows) / len(rows), 4),
                     "other": round(sum(bool(r - {name}) for r in rows) / len(rows), 4)}
    named = [names_class(c) for c in captions]
    return {"true": round(float(np.mean([CIFAR_CLASSES[lab] in n for n, lab in zip(named, labels)])), 4),
            "other": round(float(np.mean([bool(n - {CIFAR_CLASSES[lab]}) for n, lab in zip(named, labels)])), 4),
            "per_class": per}


class Reader:
    """Features and class probabilities of a bundle for images in memory, in batches (float32)."""

    def __init__(self, captioner, batch: int = 32):
        self.captioner, self.batch = captioner, batch

    def __call__(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        enc, feats, probs = self.captioner.encoder, [], []
        for i in range(0, len(images), self.batch):
            chunk = images[i:i + self.batch]
            f = enc.encode_arrays(enc.preprocess(chunk))  # (B, D)
            feats.append(f)
            probs.append(self.captioner.class_probabilities(f, chunk))  # (B, 1000)
        return np.concatenate(feats), np.concatenate(probs)


def flickr_split(captioner, dataset: str, split: str, cache: str):
    """Features (cached), class probabilities and references of a Flickr split's valid photos."""
    from .datasets import load_splits
    from .features import extract_features

    examples = load_splits(dataset, [split])[split]
    feats, valid = extract_features(captioner.encoder, examples, dataset, split, cache)
    rows = np.flatnonzero(valid)
    feats = np.asarray(feats)[rows]
    if captioner.encoder.has_imagenet_head:
        probs = captioner.class_probabilities(feats)
    else:  # the tagger's pooled features are cached like any encoder's
        from caption_core.encoders.base import class_probabilities
        from caption_core.guidance import tagger

        t = tagger()
        tag_feats, _ = extract_features(t, examples, dataset, split, cache)
        probs = class_probabilities(t.imagenet_logits(np.asarray(tag_feats)[rows]))
    refs = {examples[r].image_id: list(examples[r].captions) for r in rows}
    return [examples[r].image_id for r in rows], feats, probs, refs


def split_class_probs(encoder, examples, feats, dataset: str, split: str, cache: str) -> np.ndarray:
    """ImageNet class probabilities (N, 1000) of a split's photos, row for row with its cached ``feats``: the
    encoder's own head where it has one, else the tagger's (its pooled features cached like any encoder's)."""
    from caption_core.encoders.base import class_probabilities

    if encoder.has_imagenet_head:
        return class_probabilities(encoder.imagenet_logits(np.asarray(feats, np.float32)))
    from caption_core.guidance import tagger

    from .features import extract_features

    t = tagger()
    tag_feats, _ = extract_features(t, examples, dataset, split, cache)
    return class_probabilities(t.imagenet_logits(np.asarray(tag_feats, np.float32)))


def decode_captions(captioner, feats, probs, strategy: str, options: dict, batch: int = 250, objects=None):
    """Best caption per row of features (N, D), guided ones from the class probabilities (N, 1000) already
    computed (no second classifier pass) and, where given, the detector's ``objects`` of each row (N,).
    -> (captions, each row's guidance or None)."""
    s, checked = captioner.decoding(strategy, options)
    texts, fired = [], []
    for b in range(0, len(feats), batch):
        found = objects[b:b + batch] if objects is not None else None
        guidance = captioner.guide(probs[b:b + batch], checked, found) if s.guided else None
        per = captioner.decode(feats[b:b + batch], strategy, options, guidance=guidance, objects=found,
                               class_probs=probs[b:b + batch])
        texts += [p[0].text for p in per]
        fired += guidance or [None] * len(per)
    return texts, fired


def captions_for(captioner, feats, probs, options: dict, threshold: float | None, veto: bool, batch: int = 250):
    """Best caption per row; ``threshold`` None: the unguided default decoding (beam, where the bundle's
    default is already guided: a second run must not measure guidance against itself). -> (captions, guidance)."""
    unguided = "beam" if captioner.default_strategy == "guided" else captioner.default_strategy
    strategy = "guided" if threshold is not None else unguided
    opts = dict(options, **({"guide_threshold": threshold, "guide_veto": veto} if threshold is not None else {}))
    return decode_captions(captioner, feats, probs, strategy, opts, batch)


def score(refs: dict, ids: list[str], texts: list[str], meteor: bool) -> dict:
    from caption_core.metrics import caption_statistics

    from .evaluate import score_captions

    s = score_captions(refs, dict(zip(ids, texts)), meteor=meteor)
    stats = caption_statistics(texts)
    keys = ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
    return {**{k: round(s[k], 4) for k in keys if k in s}, "distinct_share": stats["distinct_share"],
            "dangling_endings": stats["dangling_endings"]}


def tagger_ceiling(captioner, probs: np.ndarray, labels: list[int], threshold: float) -> dict:
    """How often the classifier's most probable guidable word names the image's CIFAR-10 class, at any
    probability and at the threshold: what guidance can reach at best, per class."""
    wm = captioner.word_map
    top, p = wm.top_guidable(probs)  # (N,), (N,)
    right = np.array([k >= 0 and wm.words[k] in CIFAR_WORDS[CIFAR_CLASSES[lab]] for k, lab in zip(top, labels)])
    labels = np.asarray(labels)
    return {"top_word_names_class": round(float(right.mean()), 4),
            "and_reaches_threshold": round(float((right & (p >= threshold)).mean()), 4),
            "per_class": {name: round(float(right[labels == k].mean()), 4) for k, name in enumerate(CIFAR_CLASSES)}}


def paired_change(refs: dict, ids: list[str], before: list[str], after: list[str], seed: int = 0) -> dict:
    """Per-image CIDEr-D (``caption_core.metrics``, document frequencies of these references) of the captions
    guidance changed, after minus before: the mean and a bootstrap 90% interval. A corpus score moves by
    about 0.015 between runs here; this asks only whether the captions that changed got better."""
    from caption_core.metrics import CiderD

    cider = CiderD(refs[i] for i in ids)
    changed = [k for k, (a, b) in enumerate(zip(before, after)) if a != b]
    if not changed:
        return {"changed": 0, "mean": 0.0, "low": 0.0, "high": 0.0}
    d = np.array([cider.score(after[k], refs[ids[k]]) - cider.score(before[k], refs[ids[k]]) for k in changed])
    boot = np.random.default_rng(seed).choice(d, (2000, len(d))).mean(axis=1)
    return {"changed": len(changed), "mean": round(float(d.mean()), 4),
            "low": round(float(np.percentile(boot, 5)), 4), "high": round(float(np.percentile(boot, 95)), 4)}


def guide_bundle(folder: str, cfg: GuideConfig, dataset: str, cifar: str, cache: str = "cache",
                 set_default: bool = False) -> dict:
    from caption_core.bundle import read_manifest
    from caption_core.captioner import Captioner
    from caption_core.encoders import supported_options

    from .datasets import dataset_name
    from .evaluate import metrics_key

    captioner = Captioner.from_bundle(folder, supported_options(read_manifest(folder)["encoder"]["name"],
                                                                {"precision": "float32"}))
    options = dict((captioner.manifest.get("default_decoding") or {}).get("options", {}))
    options.pop("guide_threshold", None)
    options.pop("guide_veto", None)
    read = Reader(captioner)
    report: dict = {"bundle": os.path.basename(os.path.normpath(folder)), "options": options, "config": cfg.to_dict(),
                    "tagger": "the encoder's own head" if captioner.encoder.has_imagenet_head
                    else "EfficientNet-Lite0 (a second forward pass)"}
    # 1. choose on held-out data
    t0 = time.perf_counter()
    c_images, c_labels = cifar_images(cifar, "train", cfg.choose_per_class)
    c_feats, c_probs = read(c_images)
    d_ids, d_feats, d_probs, d_refs = flickr_split(captioner, dataset, "dev", cache)
    base_c, _ = captions_for(captioner, c_feats, c_probs, options, None, cfg.veto)
    base_d, _ = captions_for(captioner, d_feats, d_probs, options, None, cfg.veto)
    rows = [{"threshold": None, "cifar_train": naming(base_c, c_labels),
             "flickr_dev": score(d_refs, d_ids, base_d, meteor=False)}]
    for t in cfg.thresholds:
        gc, _ = captions_for(captioner, c_feats, c_probs, options, t, cfg.veto)
        gd, fired = captions_for(captioner, d_feats, d_probs, options, t, cfg.veto)
        rows.append({"threshold": t, "cifar_train": naming(gc, c_labels),
                     "flickr_dev": {**score(d_refs, d_ids, gd, meteor=False),
                                    "fired": round(sum(f is not None for f in fired) / len(fired), 4),
                                    "changed_captions": paired_change(d_refs, d_ids, base_d, gd)}})
        r = rows[-1]
        print(f"{report['bundle']} threshold {t}: CIFAR train true {r['cifar_train']['true']:.1%} other "
              f"{r['cifar_train']['other']:.1%}; dev CIDEr {r['flickr_dev']['CIDEr']:.4f} (unguided "
              f"{rows[0]['flickr_dev']['CIDEr']:.4f}), fired {r['flickr_dev']['fired']:.1%}, changed captions "
              f"{r['flickr_dev']['changed_captions']}", flush=True)
    unguided_cider = rows[0]["flickr_dev"]["CIDEr"]
    usable = [r for r in rows[1:] if r["flickr_dev"]["CIDEr"] >= unguided_cider - cfg.max_cider_drop
              and r["flickr_dev"]["distinct_share"] >= min(cfg.min_distinct, rows[0]["flickr_dev"]["distinct_share"])
              and r["flickr_dev"]["dangling_endings"] == 0
              and r["cifar_train"]["true"] > rows[0]["cifar_train"]["true"]]
    best = max(usable, key=lambda r: (r["cifar_train"]["true"], r["threshold"])) if usable else None
    # on by default only where dev shows that the captions guidance changes do not get worse
    ok = [r for r in usable if r["flickr_dev"]["changed_captions"]["low"] >= 0]
    chosen = max(ok, key=lambda r: (r["cifar_train"]["true"], r["threshold"]))["threshold"] if ok else None
    report["choice"] = {"rows": rows, "threshold": chosen, "best_if_on": best["threshold"] if best else None,
                        "seconds": round(time.perf_counter() - t0, 1)}
    print(f"{report['bundle']}: threshold chosen on CIFAR-10 train + Flickr8k dev: {chosen} (if turned on: "
          f"{report['choice']['best_if_on']})", flush=True)
    # 2. measure on the test splits at the chosen threshold, else at the one a user turning it on would get
    t = chosen if chosen is not None else (best["threshold"] if best else cfg.thresholds[len(cfg.thresholds) // 2])
    images, labels = cifar_images(cifar, "test", cfg.test_per_class)
    feats, probs = read(images)
    plain, _ = captions_for(captioner, feats, probs, options, None, cfg.veto)
    guided, fired = captions_for(captioner, feats, probs, options, t, cfg.veto)
    report["cifar_test"] = {"threshold": t, "images": len(images), "tagger": tagger_ceiling(captioner, probs, labels, t),
                            "unguided": naming(plain, labels),
                            "guided": naming(guided, labels),
                            "fired": round(sum(f is not None for f in fired) / len(fired), 4),
                            "examples": [{"class": CIFAR_CLASSES[labels[i]], "unguided": plain[i], "guided": guided[i]}
                                         for i in range(0, len(images), max(1, len(images) // 20))]}
    ids, feats_t, probs_t, refs = flickr_split(captioner, dataset, "test", cache)
    plain_t, _ = captions_for(captioner, feats_t, probs_t, options, None, cfg.veto)
    guided_t, fired_t = captions_for(captioner, feats_t, probs_t, options, t, cfg.veto)
    report["flickr_test"] = {"threshold": t, "unguided": score(refs, ids, plain_t, meteor=True),
                             "guided": {**score(refs, ids, guided_t, meteor=True),
                                        "fired": round(sum(f is not None for f in fired_t) / len(fired_t), 4),
                                        "changed": round(float(np.mean([a != b for a, b in zip(plain_t, guided_t)])), 4)}}
    c, f = report["cifar_test"], report["flickr_test"]
    print(f"{report['bundle']} test, threshold {t}: CIFAR-10 true {c['unguided']['true']:.1%} -> {c['guided']['true']:.1%}, "
          f"other {c['unguided']['other']:.1%} -> {c['guided']['other']:.1%}; Flickr8k CIDEr "
          f"{f['unguided']['CIDEr']:.4f} -> {f['guided']['CIDEr']:.4f} (fired {f['guided']['fired']:.1%})", flush=True)
    report["measured_threshold"] = t
    report["metrics_key"] = metrics_key(dataset_name(dataset), "test", "float32")
    if set_default:
        record_choice(folder, report, cfg.veto)
    return report


def record_choice(folder: str, report: dict, veto: bool) -> dict:
    """Write what ``guide_bundle`` measured into the bundle: the guidance threshold travels in the default
    options either way (a user who picks "guided" gets it), and the default strategy becomes "guided" only
    where dev supported it; the dev row joins the tuning results, the measurements go under "guidance"."""
    from caption_core.bundle import update_manifest, verify_bundle

    choice, t = report["choice"], report["measured_threshold"]
    if choice["best_if_on"] is None:  # no usable threshold on held-out data: the bundle stays as it is
        return verify_bundle(folder)
    m = verify_bundle(folder)
    default = dict(m.get("default_decoding") or {"strategy": "beam", "options": {}})
    if default["strategy"] == "guided":  # measured again: the unguided decoding it was compared with is beam
        default["strategy"] = "beam"
    rows, options = choice["rows"], report["options"]
    guided_options = {**options, "guide_threshold": t, "guide_veto": veto}
    tuning = m.get("tuning") or {"split": "dev", "metric": "CIDEr", "results": [
        {"strategy": default["strategy"], "options": options, **rows[0]["flickr_dev"]}]}  # never tuned before
    dev_row = next(r for r in rows[1:] if r["threshold"] == t)["flickr_dev"]
    tuning["results"] = [r for r in tuning.get("results", []) if r.get("strategy") != "guided"] + [
        {"strategy": "guided", "options": guided_options,
         **{k: v for k, v in dev_row.items() if k not in ("fired", "changed_captions")}}]
    on = choice["threshold"] is not None
    new_default = ({"strategy": "guided", "options": guided_options} if on else
                   {"strategy": default["strategy"], "options": {**default.get("options", {}), "guide_threshold": t,
                                                                 "guide_veto": veto}})
    changes = {"default_decoding": new_default, "tuning": tuning,
               "guidance": {k: report[k] for k in ("choice", "cifar_test", "flickr_test", "tagger",
                                                   "measured_threshold")}}
    if on:  # the test scores of the new default decoding, beside the others (reported, never chosen on)
        key = report.get("metrics_key", "flickr8k/test")
        metrics = dict(m.get("metrics") or {})
        metrics[key] = {**metrics.get(key, {}), "guided": report["flickr_test"]["guided"]}
        changes["metrics"] = metrics
    m = update_manifest(folder, changes)
    print(f"{report['bundle']}: default decoding {new_default['strategy']}; guidance threshold {t} "
          f"({'on' if on else 'off'} by default)", flush=True)
    return m
