"""The default decoding chosen for both populations (``python -m training choose BUNDLE --coco FOLDER``).

A default chosen on Flickr8k dev alone serves Flickr8k photos; the people who use the demo bring their own.
So each candidate decoding is scored on two dev sets: Flickr8k dev and an out-of-domain COCO-format folder
(``training.coco``: coco-mini here). The rule (stated in docs/results.md, recorded in the manifest):

1. **Candidates**: the bundle's tuned beam search (``python -m training tune`` chose its width, length penalty
   and n-gram blocking on Flickr8k dev; choosing again starts from it, not from the earlier choice), and guided
   decoding on top of the same options at each threshold of ``ChooseConfig.thresholds``, with and without the veto
   alone (``guide_veto_alone``); each of those also with the COCO detector at each of ``detector_thresholds``, its
   word winning a disagreement or not (``guide_detector_first``), with and without its count (``guide_count``); and
   the detector alone (the classifier's threshold at 1: it only vetoes); each with the detector also with and
   without ``guide_unseen`` (no people, nor animals it did not find, on an object scene); and each of those with
   ``consensus`` at each of ``consensus_widths`` (none unless asked); and each of all those with ``no_repeat_within``
   at each of ``repeat_gaps`` (none unless asked); and each with consensus also with a ``lookahead`` at each of
   ``lookaheads`` (none unless asked). Each candidate is scored once.
2. **Eligible**: Flickr8k dev CIDEr within ``max_dev_drop`` of the best candidate's, no dangling endings on
   either set, and at least ``min_distinct`` distinct dev captions (or as many as beam search gives, where it
   gives fewer).
3. **Chosen**: the eligible candidate with the best out-of-domain CIDEr; on a tie (within
   ``tie``), the one that names the main object most often, then the simplest (beam before guided).

Test splits are never read to choose. Once chosen (``--write``), the Flickr8k test split is captioned with the
new default and scored, so that the docs, the card and the page report the test figures of what ships.
"""

from __future__ import annotations

import dataclasses
import os
import time

from caption_core.config import Config


@dataclasses.dataclass(frozen=True)
class ChooseConfig(Config):
    thresholds: tuple[float, ...] = (0.2, 0.3, 0.5)  # guidance thresholds tried
    veto_alone: tuple[bool, ...] = (False, True)  # guide_veto_alone values tried with each threshold
    max_dev_drop: float = 0.01  # a candidate may lose at most this much Flickr8k dev CIDEr against the best one
    min_distinct: float = 0.7  # and keep this share of distinct dev captions (or beam search's, if lower)
    tie: float = 0.002  # out-of-domain CIDEr differences below this are ties (then: main object named)
    detector_thresholds: tuple[float, ...] = (0.5, 0.6)  # guide_detector values tried (the detector off: 1.0, always)
    detector_first: tuple[bool, ...] = (True, False)  # guide_detector_first values tried with each of them
    counts: tuple[bool, ...] = (False,)  # guide_count values tried with each of those (True lowered both dev sets in
    # every pair measured on the default bundle: docs/detector.md)
    unseen: tuple[bool, ...] = (False, True)  # guide_unseen values tried with each candidate that has the detector
    consensus_widths: tuple[int, ...] = ()  # each candidate also with consensus (the beams' captions re-ranked by
    # what they agree on: caption_core.decoding.consensus_order) at each of these beam widths (wider: more voters,
    # slower; keep the decode cost in mind: benchmarks/decode_cost.py)
    repeat_gaps: tuple[int, ...] = ()  # each candidate (those with consensus too) also with no_repeat_within at
    # each of these gaps (a content word may not come again within that many words: "a woman and a woman")
    lookaheads: tuple[int, ...] = ()  # each candidate with consensus also with the search's lookahead at each of these
    # (a beam is searched on while it could still win by ending within that many more words: the exact search's tail,
    # where consensus's wide beams linger, is cut; caption_core.decoding.LOOKAHEAD)

    def __post_init__(self):  # command-line values arrive as strings
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        object.__setattr__(self, "detector_thresholds", tuple(float(t) for t in self.detector_thresholds))
        object.__setattr__(self, "consensus_widths", tuple(int(w) for w in self.consensus_widths))
        object.__setattr__(self, "repeat_gaps", tuple(int(g) for g in self.repeat_gaps))
        object.__setattr__(self, "lookaheads", tuple(int(n) for n in self.lookaheads))
        for name in ("detector_first", "counts", "unseen"):
            object.__setattr__(self, name, tuple(v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")
                                                 for v in getattr(self, name)))
        object.__setattr__(self, "veto_alone", tuple(v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")
                                                     for v in self.veto_alone))


def candidates(base: dict, cfg: ChooseConfig, detector: bool = True) -> list[tuple[str, dict]]:
    """(strategy, options) pairs: beam search with the tuned options, then guided variants of it (with the detector
    where ``detector``: a bundle served without one is not chosen for it)."""
    out = [("beam", dict(base))]
    detectors = [(1.0, True, False)] + ([(d, first, n) for d in cfg.detector_thresholds for first in cfg.detector_first
                                         for n in cfg.counts] if detector else [])
    guided = [(t, alone, d, first, n) for t in cfg.thresholds for alone in cfg.veto_alone for d, first, n in detectors]
    if detector:  # the detector alone requires; the classifier only vetoes
        guided += [(1.0, alone, d, True, n) for alone in cfg.veto_alone for d in cfg.detector_thresholds
                   for n in cfg.counts]
    for t, alone, d, first, n in guided:
        for u in (cfg.unseen if detector else (False,)):
            out.append(("guided", {**base, "guide_threshold": t, "guide_veto": True, "guide_veto_alone": alone,
                                   "guide_detector": d, "guide_detector_first": first, "guide_count": n,
                                   "guide_unseen": u}))
    out += [(name, {**o, "beam_width": w, "consensus": True}) for w in cfg.consensus_widths for name, o in out]
    out += [(name, {**o, "no_repeat_within": g}) for g in cfg.repeat_gaps for name, o in out]
    out += [(name, {**o, "lookahead": n}) for n in cfg.lookaheads for name, o in out if o.get("consensus")]
    unique: dict = {}  # each candidate once, in order (a base that has consensus already would give copies)
    for name, o in out:
        unique.setdefault((name, tuple(sorted(o.items()))), (name, o))
    return list(unique.values())


def tuned_base(manifest: dict) -> dict:
    """The options the candidates build on: the tuned beam search's (the first row of an earlier choice, which was
    its base), else the default decoding's (what ``tune`` wrote); guidance left out. Choosing again starts where the
    first choice started, not from what it chose."""
    rows = (manifest.get("ood_dev") or {}).get("rows") or []
    first = rows[0] if rows else (manifest.get("default_decoding") or {})
    return {k: v for k, v in first.get("options", {}).items() if not k.startswith("guide_")}


def eligible(rows: list[dict], cfg: ChooseConfig) -> list[dict]:
    """The rows the rule allows (see the module's doc); each row has 'flickr_dev' and 'ood_dev' scores."""
    best_dev = max(r["flickr_dev"]["CIDEr"] for r in rows)
    beam_distinct = rows[0]["flickr_dev"]["distinct_share"]
    return [r for r in rows if r["flickr_dev"]["CIDEr"] >= best_dev - cfg.max_dev_drop - 1e-9
            and r["flickr_dev"]["dangling_endings"] == 0 and r["ood_dev"]["dangling_endings"] == 0
            and r["flickr_dev"]["distinct_share"] >= min(cfg.min_distinct, beam_distinct)]


def pick(rows: list[dict], cfg: ChooseConfig, ok: list[dict] | None = None) -> dict:
    """The chosen row: the best out-of-domain CIDEr among the eligible ones (``ok``, default: ``eligible``;
    ties: main object named, then the earlier candidate). Falls back on the first row (the tuned beam search)
    where nothing is eligible."""
    ok = (eligible(rows, cfg) if ok is None else ok) or rows[:1]
    top = max(r["ood_dev"]["CIDEr"] for r in ok)
    tied = [r for r in ok if r["ood_dev"]["CIDEr"] >= top - cfg.tie]
    return max(tied, key=lambda r: (r["ood_dev"].get("main_object_named", 0), -rows.index(r)))


def choose_default(folder: str, cfg: ChooseConfig, dataset: str, coco: str, cache: str = "cache",
                   write: bool = False) -> dict:
    from caption_core.bundle import read_manifest
    from caption_core.captioner import Captioner
    from caption_core.encoders import supported_options

    captioner = Captioner.from_bundle(folder, supported_options(read_manifest(folder)["encoder"]["name"],
                                                                {"precision": "float32"}))
    base = tuned_base(captioner.manifest)
    t0 = time.perf_counter()
    rows = score_candidates(captioner, candidates(base, cfg, detector=captioner.detector is not None), dataset, coco,
                            cache)
    name = captioner.name
    ok = eligible(rows, cfg)
    chosen = pick(rows, cfg, ok)
    report = {"bundle": name, "config": cfg.to_dict(), "ood_set": coco, "rows": rows,
              "eligible": [rows.index(r) for r in ok], "chosen": rows.index(chosen),
              "seconds": round(time.perf_counter() - t0, 1)}
    print(f"{name}: chosen {chosen['strategy']} {chosen['options']} (Flickr8k dev CIDEr "
          f"{chosen['flickr_dev']['CIDEr']:.4f}, out-of-domain CIDEr {chosen['ood_dev']['CIDEr']:.4f})", flush=True)
    if write:
        record(folder, captioner, report, dataset, cache)
    return report


def score_candidates(captioner, cands: list[tuple[str, dict]], dataset: str, coco: str, cache: str = "cache",
                     label: str | None = None, keep_captions: bool = False) -> list[dict]:
    """Each (strategy, options) of ``cands`` decoded by ``captioner`` on Flickr8k dev and on the COCO-format folder
    ``coco`` (the detector's findings where it has one) and scored -> one row each: 'flickr_dev', 'ood_dev' (and
    'ood_captions', photo id -> caption, where ``keep_captions``)."""
    from .coco import coco_features, load_coco, score_coco
    from .detections import coco_objects, split_objects
    from .guide import decode_captions, flickr_split, score

    photos = load_coco(coco)
    o_feats, o_probs, o_ids = coco_features(captioner, photos, cache)
    d_ids, d_feats, d_probs, d_refs = flickr_split(captioner, dataset, "dev", cache)
    det = captioner.detector
    o_objects = coco_objects(det, photos, o_ids, cache) if det else None
    d_objects = split_objects(det, dataset, "dev", d_ids, cache) if det else None
    rows = []
    for strategy, options in cands:
        dev = score(d_refs, d_ids, decode_captions(captioner, d_feats, d_probs, strategy, options, objects=d_objects)[0],
                    meteor=False)
        ood_texts = decode_captions(captioner, o_feats, o_probs, strategy, options, objects=o_objects)[0]
        ood = score_coco(photos, o_ids, ood_texts)
        ood.pop("named_per_category", None)
        rows.append({"strategy": strategy, "options": options, "flickr_dev": dev, "ood_dev": ood,
                     **({"ood_captions": dict(zip(o_ids, ood_texts))} if keep_captions else {})})
        shown = {k[6:] if k.startswith("guide_") else k: v for k, v in options.items()
                 if k.startswith(("guide_", "consensus")) or k in ("beam_width", "no_repeat_within", "lookahead")}
        print(f"{label or captioner.name} {strategy} {shown}: "
              f"Flickr8k dev CIDEr {dev['CIDEr']:.4f} distinct {dev['distinct_share']:.0%}; out-of-domain CIDEr "
              f"{ood['CIDEr']:.4f}, main object named {ood.get('main_object_named', '-')}/{ood.get('main_object_of', '-')}",
              flush=True)
    return rows


def record(folder: str, captioner, report: dict, dataset: str, cache: str) -> dict:
    """Write the choice into the bundle: the default decoding, the dev rows of both sets (Flickr8k dev joins the
    tuning results, so that the app's bundle order reads it), and the test scores of the new default."""
    from caption_core.bundle import update_manifest, verify_bundle
    from caption_core.metrics import caption_statistics

    from .build import dataset_name, refresh_card
    from .evaluate import captions_file, metrics_key, score_captions, write_captions
    from .detections import split_objects
    from .guide import decode_captions, flickr_split

    chosen = report["rows"][report["chosen"]]
    m = verify_bundle(folder)
    tuning = dict(m.get("tuning") or {"split": "dev", "metric": "CIDEr", "results": []})
    keep = [r for r in tuning.get("results", []) if r.get("strategy") != "guided"
            and not (r.get("strategy") == chosen["strategy"] and r.get("options") == chosen["options"])]
    new = [{"strategy": r["strategy"], "options": r["options"], **r["flickr_dev"]} for r in report["rows"]
           if r["strategy"] == "guided" or r is chosen]
    tuning["results"] = keep + new
    default = {"strategy": chosen["strategy"], "options": chosen["options"]}
    changes = {"default_decoding": default, "tuning": tuning,
               "ood_dev": {k: report[k] for k in ("ood_set", "config", "rows", "eligible", "chosen")}}
    update_manifest(folder, changes)
    # the test split, scored with the new default (reported, never chosen on): the tagger's probabilities where
    # the encoder has no ImageNet head, as on the dev sets
    ids, feats, probs, refs = flickr_split(captioner, dataset, "test", cache)
    objects = split_objects(captioner.detector, dataset, "test", ids, cache) if captioner.detector else None
    texts, _ = decode_captions(captioner, feats, probs, chosen["strategy"], chosen["options"], objects=objects)
    scores = score_captions(refs, dict(zip(ids, texts)))
    scores["caption_statistics"] = caption_statistics(texts)
    scores["precision"] = captioner.encoder.precision
    scores["options"] = chosen["options"]
    key = metrics_key(dataset_name(dataset), "test", captioner.encoder.precision)
    print(f"test [{captioner.name}, {chosen['strategy']}]: " + ", ".join(
        f"{k} {scores[k]:.3f}" for k in ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr") if k in scores), flush=True)
    fname = captions_file("test", chosen["strategy"], captioner.encoder.precision)
    write_captions(os.path.join(folder, fname), captioner.name, key, chosen["strategy"], chosen["options"],
                   {i: {"caption": t, "references": refs[i]} for i, t in zip(ids, texts)})
    m = verify_bundle(folder, skip=(fname,))
    metrics = dict(m.get("metrics") or {})
    metrics[key] = {**metrics.get(key, {}), chosen["strategy"]: scores}
    update_manifest(folder, {"metrics": metrics}, add_files=[fname])
    refresh_card(folder)
    print(f"{captioner.name}: default decoding {default} and its test scores written to {folder}/manifest.json",
          flush=True)
    return verify_bundle(folder)
