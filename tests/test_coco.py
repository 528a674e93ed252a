"""The out-of-domain dev set: a COCO-format folder the tests make, its main objects, the naming count, the
``coco`` and ``choose`` commands on a tiny bundle, and the rule that picks a default for both populations."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from training.choose import ChooseConfig, candidates, eligible, pick
from training.coco import category_words, load_coco, naming_counts, names


def make_coco(root, n: int = 4, broken: bool = False):
    """A COCO-format folder: ``n`` coloured photos, five captions each, boxes whose largest names a category."""
    images = root / "images"
    images.mkdir(parents=True)
    cats = [{"id": 1, "name": "person", "supercategory": "person"}, {"id": 18, "name": "dog", "supercategory": "animal"},
            {"id": 62, "name": "chair", "supercategory": "furniture"}]
    main = ["dog", "person", "chair", "dog"]
    doc = {"images": [], "annotations": []}
    inst = {"images": [], "annotations": [], "categories": cats}
    rng = np.random.default_rng(0)
    for i in range(n):
        name = f"{i:012d}.jpg"
        Image.fromarray(rng.integers(0, 255, (60 + 10 * i, 80, 3), dtype=np.uint8)).save(images / name)
        doc["images"].append({"id": 100 + i, "file_name": name})
        inst["images"].append({"id": 100 + i, "file_name": name})
        for k in range(5):
            doc["annotations"].append({"image_id": 100 + i, "id": 1000 + 5 * i + k,
                                       "caption": f"A {main[i % 4]} in a room number {k}."})
        big = next(c["id"] for c in cats if c["name"] == main[i % 4])
        small = 1 if big != 1 else 62
        inst["annotations"] += [{"image_id": 100 + i, "category_id": small, "area": 50.0, "id": 10 * i},
                                {"image_id": 100 + i, "category_id": big, "area": 900.0, "id": 10 * i + 1}]
    if broken:
        (images / "999999999999.jpg").write_bytes(b"not a jpeg")
        doc["images"].append({"id": 999, "file_name": "999999999999.jpg"})
        doc["annotations"] += [{"image_id": 999, "id": 9999 + k, "caption": "a broken photo"} for k in range(5)]
    (root / "captions.json").write_text(json.dumps(doc))
    (root / "instances.json").write_text(json.dumps(inst))
    return str(root)


def test_the_folder_its_main_objects_and_the_naming_count(tmp_path):
    photos = load_coco(make_coco(tmp_path / "coco"))
    assert [p.main_object for p in photos] == ["dog", "person", "chair", "dog"]  # the largest box, not the first
    assert all(len(p.captions) == 5 and os.path.isfile(p.path) for p in photos)
    assert names("Two men sit on a bench.", "person") and names("a puppy runs", "dog")
    assert not names("a hotdog stand", "dog") and not names("the chairman", "chair")  # whole words only
    captions = {photos[0].image_id: "a dog runs", photos[1].image_id: "a dog runs",
                photos[2].image_id: "a man on chairs", photos[3].image_id: "a brown puppy"}
    n = naming_counts(photos, captions)
    assert (n["named"], n["of"]) == (3, 4) and n["per_category"]["person"] == "0/1"
    assert set(category_words()) >= {"person", "dining table", "teddy bear"} and len(category_words()) == 80
    with pytest.raises(ValueError, match="no words for COCO category"):
        names("a thing", "flying saucer")


def test_a_folder_without_captions_or_images_says_what_it_needs(tmp_path):
    with pytest.raises(FileNotFoundError, match="captions.json"):
        load_coco(str(tmp_path))
    (tmp_path / "captions.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(FileNotFoundError, match="no image folder"):
        load_coco(str(tmp_path))


def test_the_coco_command_scores_a_bundle_and_skips_a_broken_photo(tmp_path, tiny_parts, capsys):
    from caption_core.bundle import save_bundle
    from training.__main__ import main

    enc, dec, vocab = tiny_parts
    save_bundle(str(tmp_path / "tiny"), encoder=enc, decoder=dec, vocab=vocab)
    coco = make_coco(tmp_path / "coco", broken=True)
    out = tmp_path / "captions.json"
    assert main(["coco", str(tmp_path / "tiny"), "--coco", coco, "--cache", str(tmp_path / "cache"),
                 "--strategy", "greedy", "--captions", str(out)]) == 0
    printed = capsys.readouterr().out
    row = json.loads(next(line for line in printed.splitlines() if line.startswith("{")))
    assert row["images"] == 4 and row["main_object_of"] == 4 and 0 <= row["main_object_named"] <= 4
    assert {"CIDEr", "BLEU-4", "distinct_share", "dangling_endings"} <= set(row) and "skipped 999999999999.jpg" in printed
    written = json.loads(out.read_text())["tiny"]
    assert len(written) == 4 and all(v["main_object"] and len(v["references"]) == 5 for v in written.values())
    # the features are cached: a second run reads them (same captions)
    assert main(["coco", str(tmp_path / "tiny"), "--coco", coco, "--cache", str(tmp_path / "cache"),
                 "--strategy", "greedy"]) == 0
    again = json.loads(next(line for line in capsys.readouterr().out.splitlines() if line.startswith("{")))
    assert again["CIDEr"] == row["CIDEr"]


def row(dev, ood, named=0, distinct=0.8, dangling=0, strategy="guided"):
    return {"strategy": strategy, "options": {}, "flickr_dev": {"CIDEr": dev, "distinct_share": distinct,
                                                                "dangling_endings": dangling},
            "ood_dev": {"CIDEr": ood, "main_object_named": named, "dangling_endings": 0}}


def test_the_rule_best_out_of_domain_among_those_that_keep_flickr_dev():
    cfg = ChooseConfig(max_dev_drop=0.01, min_distinct=0.7, tie=0.002)
    rows = [row(0.550, 0.30, 30, strategy="beam"), row(0.545, 0.36, 38), row(0.530, 0.40, 45),  # 0.02 worse: out
            row(0.548, 0.361, 37, dangling=1), row(0.549, 0.3605, 40), row(0.552, 0.20, 50, distinct=0.5)]
    ok = eligible(rows, cfg)
    assert rows[2] not in ok and rows[3] not in ok and rows[5] not in ok  # dev drop, dangling, distinct
    assert pick(rows, cfg) is rows[4]  # ties with rows[1] on out-of-domain CIDEr, names the object more often
    assert pick([row(0.55, 0.30, strategy="beam"), row(0.50, 0.50)], cfg)["strategy"] == "beam"
    cfg = ChooseConfig(thresholds=("0.3",), veto_alone=("true", "false"), detector_thresholds=("0.5",))
    cands = candidates({"beam_width": 3}, cfg, detector=False)
    assert cands[0] == ("beam", {"beam_width": 3}) and len(cands) == 3
    assert cands[1][1] == {"beam_width": 3, "guide_threshold": 0.3, "guide_veto": True, "guide_veto_alone": True,
                           "guide_detector": 1.0, "guide_detector_first": True, "guide_count": False,
                           "guide_unseen": False}
    # + the detector first or not, + the detector alone; each with the detector's unseen people banned or not
    with_detector = candidates({"beam_width": 3}, cfg)
    assert len(with_detector) == 1 + 2 * (1 + 2) * 2 + 2 * 2
    assert {(o["guide_threshold"], o["guide_detector"], o["guide_detector_first"], o["guide_unseen"])
            for _, o in with_detector[1:]} == {(t, d, f, u) for t, d, f in ((0.3, 1.0, True), (0.3, 0.5, True),
                                                                           (0.3, 0.5, False), (1.0, 0.5, True))
                                               for u in (False, True)}
    only = candidates({"beam_width": 3}, ChooseConfig(thresholds=("0.3",), veto_alone=("true",),
                                                      detector_thresholds=("0.5",), unseen=("false",)))
    assert not any(o["guide_unseen"] for _, o in only[1:])
    # consensus widths: every candidate again with consensus at each width, after the plain ones
    agreed = candidates({"beam_width": 3}, ChooseConfig(thresholds=("0.3",), veto_alone=("true",),
                                                        detector_thresholds=("0.5",), unseen=("false",),
                                                        consensus_widths=("5", "7")))
    assert agreed[:len(only)] == only and len(agreed) == 3 * len(only)
    assert agreed[len(only)] == ("beam", {"beam_width": 5, "consensus": True})
    assert [o["beam_width"] for _, o in agreed[2 * len(only):]] == [7] * len(only)
    # repeat gaps: every candidate so far (consensus ones too) again with no_repeat_within at each gap, after them
    gapped = candidates({"beam_width": 3}, ChooseConfig(thresholds=("0.3",), veto_alone=("true",),
                                                        detector_thresholds=("0.5",), unseen=("false",),
                                                        consensus_widths=("5",), repeat_gaps=("3", "6")))
    plain = 2 * len(only)
    assert gapped[:plain] == agreed[:plain] and len(gapped) == 3 * plain
    assert gapped[plain] == ("beam", {"beam_width": 3, "no_repeat_within": 3})
    assert [(o.get("consensus", False), o["no_repeat_within"]) for _, o in gapped[plain:]] == \
        [(c, g) for g in (3, 6) for c in [False] * len(only) + [True] * len(only)]
    assert not any("no_repeat_within" in o for _, o in gapped[:plain])
    # lookaheads: each candidate with consensus (gapped or not) again with the lookahead, after all the others
    ahead = candidates({"beam_width": 3}, ChooseConfig(thresholds=("0.3",), veto_alone=("true",),
                                                       detector_thresholds=("0.5",), unseen=("false",),
                                                       consensus_widths=("5",), repeat_gaps=("6",), lookaheads=("3",)))
    agreeing = [(name, o) for name, o in ahead[:2 * plain] if o.get("consensus")]
    assert ahead[:plain] == gapped[:plain] and ahead[2 * plain:] == [(n, {**o, "lookahead": 3}) for n, o in agreeing]
    assert len(agreeing) == 2 * len(only)
    # a base that already has what the options add (a bundle chosen before) gives each candidate once
    again = candidates({"beam_width": 5, "consensus": True, "no_repeat_within": 6},
                       ChooseConfig(thresholds=("0.3",), veto_alone=("true",), detector_thresholds=("0.5",),
                                    unseen=("false",), consensus_widths=("5",), repeat_gaps=("6",), lookaheads=("0",)))
    assert len(again) == 2 * len(only)
    assert len({(n, tuple(sorted(o.items()))) for n, o in again}) == len(again) and again[0][0] == "beam"


def test_choosing_again_starts_from_the_tuned_beam_search():
    """The candidates' base is the tuned beam search: the first row of an earlier choice, not the decoding it chose."""
    from training.choose import tuned_base

    tuned = {"strategy": "beam", "options": {"beam_width": 5, "length_penalty": 1.0}}
    chosen = {"strategy": "guided", "options": {"beam_width": 10, "consensus": True, "guide_threshold": 0.5}}
    assert tuned_base({"default_decoding": tuned}) == tuned["options"]
    assert tuned_base({"default_decoding": chosen}) == {"beam_width": 10, "consensus": True}  # never chosen: as written
    assert tuned_base({"default_decoding": chosen, "ood_dev": {"rows": [tuned, chosen]}}) == tuned["options"]


def test_choose_writes_the_default_its_dev_rows_and_its_test_scores(tmp_path, tiny_parts):
    """On a tiny bundle (no ImageNet head: the real tagger reads the photos), a Flickr-layout folder and a
    COCO-format folder: the choice is written into the manifest, the tuning rows and the test metrics."""
    from caption_core.bundle import best_first, dev_score, read_manifest, save_bundle
    from helpers import make_flickr
    from training.__main__ import main

    enc, dec, vocab = tiny_parts
    folder = str(tmp_path / "tiny")
    save_bundle(folder, encoder=enc, decoder=dec, vocab=vocab,
                default_decoding={"strategy": "beam", "options": {"beam_width": 2}})
    flickr = make_flickr(tmp_path / "flickr", per_split=(3, 3, 3), bad=False)
    coco = make_coco(tmp_path / "coco")
    report = tmp_path / "choice.json"
    assert main(["choose", folder, "--dataset", flickr, "--coco", coco, "--cache", str(tmp_path / "cache"),
                 "--thresholds", "0.3", "--veto-alone", "true", "--detector-thresholds", "0.5", "--detector-first",
                 "true", "--report", str(report), "--write"]) == 0
    m = read_manifest(folder)
    rep = json.loads(report.read_text())["bundles"][0]
    chosen = rep["rows"][rep["chosen"]]
    from caption_core.detectors import shared_detector

    # beam, guided, (guided with the unseen people banned, guided + the detector, the detector alone: each with and
    # without them)
    assert len(rep["rows"]) == (7 if shared_detector() is not None else 2)
    assert m["default_decoding"] == {"strategy": chosen["strategy"], "options": chosen["options"]}
    assert m["ood_dev"]["rows"][0]["ood_dev"]["main_object_of"] == 4
    assert dev_score(m) == chosen["flickr_dev"]["CIDEr"] and best_first({"tiny": m}) == ["tiny"]
    test = m["metrics"]["flickr/test"][chosen["strategy"]]
    assert test["images"] == 3 and test["options"] == chosen["options"]
    assert os.path.isfile(os.path.join(folder, f"captions_test_{chosen['strategy']}.json"))
    assert "Out-of-domain" in open(os.path.join(folder, "README.md")).read()
