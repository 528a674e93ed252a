"""Object scenes (a kitchen, a plate, a parked bus: the photos people bring) get people who are not there: of the 44
coco-mini photos COCO annotates with no person, the default bundle's captions put people in 28 ("a man in a blue
shirt is sitting in a kitchen"). Two remedies measured on both dev sets, float32, the default decoding otherwise:

Each is scored with CIDEr and with how often a caption puts people in a coco-mini photo none of whose five
references mentions any, and an animal none of its references names.

1. **No people where the detector sees nobody**: the words for people (the detector's person words, without the
   collective ones: group, crowd, couple, family, team) banned, like the classifier's veto, where the detector
   found no person; everywhere, or on object scenes only (no person, and another object at >= 0.5); and the guided
   strategy's ``guide_unseen``, measured through the option itself (on object scenes, or a bundle's unfamiliar scenes
   where it knows them, COCO's animals too where the detector found none). Every other row has it off, also where
   the bundle's default decoding has it on.
2. **The object-word member weighs more on object scenes**: an ensemble's weight of the member that reads object
   words (0.5, 0.7, 1 of the mean) on object scenes, the equal mean elsewhere.

Dev sets only (Flickr8k dev, coco-mini): nothing here reads a test split.

    .venv/bin/python benchmarks/everyday_scenes.py [--bundle weights/ensemble4-words-flickr8k] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

def ban_unseen(captioner, guidance: list, objects, where: np.ndarray, categories: tuple[str, ...]) -> list:
    """``guidance`` with the words of ``categories`` the detector did not find banned on the rows of ``where`` (the
    variants that do not ship: people alone, everywhere or on object scenes; ``guide_unseen`` is the shipped one)."""
    from caption_core.guidance import COLLECTIVE_WORDS, Guidance

    known = captioner.vocab.word_to_id
    words = {cat: captioner.detector_words.all_words(cat) - COLLECTIVE_WORDS for cat in categories}
    out = []
    for g, o, w in zip(guidance, objects, where):
        unseen = [] if not w or o is None else \
            [x for cat in categories if not any(d.category == cat for d in o.detections) for x in words[cat]]
        if not unseen:
            out.append(g)
            continue
        g = g or Guidance("", 0.0, "", 0.0, (), ())
        extra = sorted({x for x in unseen if known[x] not in g.required_ids and known[x] not in g.banned_ids},
                       key=known.__getitem__)
        out.append(dataclasses.replace(g, banned_words=g.banned_words + tuple(extra),
                                       banned_ids=g.banned_ids + tuple(known[x] for x in extra)))
    return out


def photos_by_id(photos, ids: list[str]) -> list:
    by_id = {p.image_id: p for p in photos}
    return [by_id[i] for i in ids]


def dev_arguments(p: argparse.ArgumentParser, bundle: str = "ensemble4-words-flickr8k") -> None:
    """The flags of a benchmark over both dev sets: the bundle, the Flickr folder, the COCO folder, the cache."""
    p.add_argument("--bundle", default=os.path.join("weights", bundle))
    p.add_argument("--dataset", default=os.path.join("..", "shared", "data", "flickr8k"))
    p.add_argument("--coco", default=os.path.join("..", "shared", "data", "coco-mini"))
    p.add_argument("--cache", default="cache")


def dev_sets(args) -> tuple:
    """The bundle's Captioner (float32 encoders) and both dev sets as decoding reads them (cached features, class
    probabilities and detections) -> (captioner, coco photos, coco ids, Flickr8k dev ids, their references,
    {"flickr_dev": (features, probabilities, objects), "ood_dev": (...)})."""
    from caption_core.bundle import read_manifest
    from caption_core.captioner import Captioner
    from caption_core.encoders import supported_options
    from training.coco import coco_features, load_coco
    from training.detections import coco_objects, split_objects
    from training.guide import flickr_split

    c = Captioner.from_bundle(args.bundle, supported_options(read_manifest(args.bundle)["encoder"]["name"],
                                                             {"precision": "float32"}))
    photos = load_coco(args.coco)
    o_feats, o_probs, o_ids = coco_features(c, photos, args.cache)
    d_ids, d_feats, d_probs, d_refs = flickr_split(c, args.dataset, "dev", args.cache)
    sets = {"flickr_dev": (d_feats, d_probs, split_objects(c.detector, args.dataset, "dev", d_ids, args.cache)),
            "ood_dev": (o_feats, o_probs, coco_objects(c.detector, photos, o_ids, args.cache))}
    return c, photos, o_ids, d_ids, d_refs, sets


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    dev_arguments(p)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    from caption_core.guidance import COLLECTIVE_WORDS, UNSEEN_CATEGORIES, object_scene
    from training.coco import score_coco
    from training.common import machine, write_json
    from training.guide import score

    t0 = time.perf_counter()
    c, photos, o_ids, d_ids, d_refs, sets = dev_sets(args)
    scenes = {k: np.array([o is not None and object_scene(o) for o in v[2]]) for k, v in sets.items()}
    s, opts = c.decoding()
    members = getattr(c.decoder, "members", None)
    reader = next((k for k, m in enumerate(members or []) if m.config.object_words), None)

    def captions(name: str, people: str = "", **overrides) -> dict:
        """Each dev set's captions: ``people`` '' (no ban of its own), 'all' or 'scenes': where people's words are
        banned if the detector found nobody; ``overrides``: decoding options on top of the default's."""
        checked = c.decoding(s.name, c.default_options, **overrides)[1]
        out = {}
        for key, (feats, probs, objects) in sets.items():
            texts = []
            for b in range(0, len(feats), 250):
                rows = slice(b, b + 250)
                guidance = c.guide(probs[rows], checked, objects[rows])
                if people:
                    where = scenes[key][rows] if people == "scenes" else np.ones(len(guidance), bool)
                    guidance = ban_unseen(c, guidance, objects[rows], where, ("person",))
                texts += [per[0].text for per in c.decode(feats[rows], s.name, c.default_options, guidance=guidance,
                                                          objects=objects[rows], class_probs=probs[rows],
                                                          **overrides)]
            out[key] = texts
        print(name, "decoded", flush=True)
        return out

    off = {"guide_unseen": False}  # every other row without it, also where the bundle's default has it on
    runs = {"default, guide_unseen off": captions("default", **off),
            "no people (nobody detected)": captions("no people", "all", **off),
            "no people (object scenes)": captions("no people on scenes", "scenes", **off),
            "guide_unseen": captions("guide_unseen", guide_unseen=True)}
    if reader is not None:
        equal = c.decoder
        for share in (0.5, 0.7, 1.0):
            w = np.full(len(members), (1 - share) / (len(members) - 1) if share < 1 else 1e-6)
            w[reader] = share
            c.decoder = equal.replace(weights=list(w))
            weighted = captions(f"object-word member at {share}", **off)
            c.decoder = equal
            runs[f"object-word member at {share} on object scenes"] = {
                k: [weighted[k][i] if scenes[k][i] else runs["default, guide_unseen off"][k][i]
                    for i in range(len(weighted[k]))] for k in weighted}
    people = c.detector_words.all_words("person") - COLLECTIVE_WORDS
    says_people = lambda text: bool(set(text.lower().replace(".", " ").split()) & people)  # noqa: E731
    nobody = [i for i, ph in enumerate(photos_by_id(photos, o_ids)) if not any(map(says_people, ph.captions))]
    beasts = set().union(*(c.detector_words.all_words(a) for a in UNSEEN_CATEGORIES if a != "person"))

    def invents_animals(text: str, ph) -> bool:  # names an animal that none of the photo's references names
        said = set(text.lower().split()) & beasts
        return bool(said) and not any(said & set(r.lower().replace(".", " ").split()) for r in ph.captions)

    rows = {}
    for name, texts in runs.items():
        dev = score(d_refs, d_ids, texts["flickr_dev"], meteor=False)
        ood = score_coco(photos, o_ids, texts["ood_dev"])
        ood.pop("named_per_category", None)
        rows[name] = {"flickr_dev": {k: dev[k] for k in ("CIDEr", "BLEU-4", "distinct_share", "dangling_endings")},
                      "ood_dev": {**ood, "people_invented": sum(says_people(texts["ood_dev"][i]) for i in nobody),
                                  "photos_without_people": len(nobody),
                                  "animals_invented": sum(invents_animals(t, ph) for t, ph in
                                                          zip(texts["ood_dev"], photos_by_id(photos, o_ids)))}}
        print(f"{name}: Flickr8k dev CIDEr {dev['CIDEr']:.4f}; coco-mini CIDEr {ood['CIDEr']:.4f}, main object named "
              f"{ood.get('main_object_named')}/{ood.get('main_object_of')}, people where no reference has any "
              f"{rows[name]['ood_dev']['people_invented']}/{len(nobody)}, an animal none names "
              f"{rows[name]['ood_dev']['animals_invented']}", flush=True)
    doc = {"bundle": args.bundle, "decoding": {"strategy": s.name, "options": c.default_options}, "precision": "float32",
           "object_scenes": {k: int(v.sum()) for k, v in scenes.items()}, "of": {k: len(v) for k, v in scenes.items()},
           "rows": rows, "seconds": round(time.perf_counter() - t0, 1), "machine": machine()}
    if args.json:
        write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
