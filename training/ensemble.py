"""``python -m training ensemble``: several trained bundles served as one.

Members of different vocabularies (a Flickr8k-only bundle beside one that read caption text) are decoded over the
union of their vocabularies, each weighing only the words it knows (``caption_core.decoders.ensemble``); the members
that read object words share one. The ensemble bundle refers to each member bundle by name and its decoder's sha256
(and its vocabulary's, where not the ensemble's; the members stay in the same weights folder, beside it: nothing is
copied) and holds a ``concat`` encoder of the members' encoders; each
decoding step averages the members' next-word probabilities (``EnsembleDecoder``). Nothing is trained: the
members' own training (cross-entropy, then SCST) is recorded, and the test split is scored with the
strategies of ``build``. Its default decoding is then chosen on dev by ``python -m training tune``.
"""

from __future__ import annotations

import os
import time

import numpy as np

from caption_core.bundle import load_bundle, read_manifest, resolve_bundle, save_bundle, test_metrics
from caption_core.captioner import Captioner
from caption_core.decoders import EnsembleDecoder, load_decoder
from caption_core.decoders.ensemble import SceneConfig, member_ids, union_vocabulary, word_vocabulary
from caption_core.encoders import supported_options
from caption_core.encoders.concat import ConcatConfig, ConcatEncoder

from .common import command_line, git_commit, machine, versions
from .evaluate import score_test
from .features import extract_features


def familiar_tags(captions, words, min_share: float) -> tuple[str, ...]:
    """The object words (``words``: an ``ObjectWords``, the tags the members read) that at least ``min_share`` of
    ``captions`` (raw training captions) name, the way a text row's tags are read off its caption: what members
    trained on those captions have seen. Flickr8k train at 0.01: the detector's person, dog, bicycle, car, boat,
    bench, skateboard, sports ball (and orange, a colour there), the classifier's dog, ball, bike..."""
    from caption_core.text import clean_caption

    said = [words.caption_indices(clean_caption(c)) for c in captions]
    if not said:
        raise ValueError("familiar object words are counted over training captions: none given")
    counts = np.bincount([t for ix in said for t in ix], minlength=words.size)  # (W,)
    return tuple(t for t, n in zip(words.tags, counts) if n >= min_share * len(said))


def assemble(bundles: list[str], encoder_options: dict | None = None, weights: list[float] | None = None):
    """-> (Captioner of the ensemble, member manifests). ValueError when the members cannot be one model.
    ``encoder_options``: run-time encoder fields, each member given those its config has ({"precision": "float32"});
    ``weights``: each member's weight in the mean of their probabilities (None: equal)."""
    if len(bundles) < 2:
        raise ValueError("an ensemble needs two or more bundles")
    # each member's checksums and encoder fingerprint are verified
    parts = [load_bundle(b, supported_options(read_manifest(resolve_bundle(b))["encoder"]["name"], encoder_options))
             for b in bundles]
    manifests = [p[0] for p in parts]
    for (manifest, _, _, _, folder) in parts:
        if manifest.get("training", {}).get("blind"):
            raise ValueError(f"bundle '{folder}' is a language-only baseline, not a member for an ensemble")
    vocabs = [p[3] for p in parts]
    vocab, ids, word_vocab = member_vocabularies(vocabs, [p[2].config.object_words for p in parts],
                                                 [p[4] for p in parts])
    encoders = [p[1] for p in parts]
    encoder = ConcatEncoder(ConcatConfig(members=tuple({"name": e.name, "config": e.describe()["config"]}
                                                       for e in encoders)), members=encoders)
    decoders = [load_decoder(os.path.join(folder, m["decoder"]["file"]), dec.config)
                for (m, _, dec, _, folder) in parts]
    decoder = EnsembleDecoder(decoders, encoder.slices, ids, word_vocab, weights)
    best = manifests[0].get("default_decoding") or {"strategy": "beam", "options": {"beam_width": 3}}
    manifest = {"default_decoding": {"strategy": best["strategy"], "options": dict(best.get("options") or {})}}
    return Captioner(encoder, decoder, vocab, manifest), manifests


def member_vocabularies(vocabs: list, reads_words: list, names: list[str]):
    """The members' vocabularies -> (the ensemble's vocabulary, each member's word ids or None, the vocabulary of the
    members that read object words where it is not the ensemble's, else None). Members of one vocabulary share it;
    members of several are decoded over their union (``union_vocabulary``): the words only some know are weighed by
    those. ValueError when members reading object words have different vocabularies (their tags would differ)."""
    vocab = union_vocabulary(vocabs)  # (the members' own, where they share one)
    own = [None if v.id_to_word == vocab.id_to_word else v for v in vocabs]
    try:
        word_vocab = word_vocabulary(vocab, own, reads_words)
    except ValueError as exc:
        raise ValueError(f"{exc}: {[n for n, r in zip(names, reads_words) if r]} do not") from None
    ids = [None if v is None else member_ids(vocab, v) for v in own]
    return vocab, (None if all(i is None for i in ids) else ids), word_vocab


def member_record(m: dict) -> dict:
    """What an ensemble records of a member bundle: its name, encoder, weights, decoder checksum, and its own test
    scores with its own default decoding."""
    default = (m.get("default_decoding") or {}).get("strategy", "beam")
    by_strategy = test_metrics(m)
    scores = by_strategy.get(default) or by_strategy.get("beam") or {}
    return {"bundle": m["name"], "encoder": m["encoder"]["name"],
            "weights_fingerprint": m["encoder"].get("weights_fingerprint"),
            "decoder_sha256": m["files"][m["decoder"]["file"]], "scst": bool(m.get("training", {}).get("scst")),
            "test": {"decoding": default if default in by_strategy else "beam",
                     **{k: scores.get(k) for k in ("BLEU-4", "CIDEr")}}}


def build_ensemble(bundles: list[str], name: str, dataset: str, out: str = "weights", cache: str = "cache",
                   strategies=("greedy", "beam"), weights: list[float] | None = None, scene_share: float = 0.0,
                   familiar_min_share: float = 0.01) -> str:
    """``scene_share``: on an unfamiliar scene (the detector finds things, and none of the photo's object words is
    one that at least ``familiar_min_share`` of ``dataset``'s train captions name: ``familiar_tags``), the
    object-word members' part of the mean, read without the photo (``SceneConfig``; 0: off)."""
    from .build import dataset_name, load_splits, refresh_card

    t0 = time.perf_counter()
    away = [b for b in bundles if os.path.dirname(os.path.abspath(b)) != os.path.abspath(out)]
    if away:
        raise ValueError(f"an ensemble refers to its member bundles by name, beside it in {out}: {away} are elsewhere; "
                         f"copy them into {out} first")
    captioner, manifests = assemble(bundles, weights=weights)
    captioner.name = name
    if scene_share > 0:
        if captioner.object_words is None:
            raise ValueError("--scene-share needs a member that reads object words (python -m training build "
                             "--read-words)")
        train = load_splits(dataset, ["train"])["train"]
        scenes = SceneConfig(share=scene_share, familiar=familiar_tags([c for e in train for c in e.captions],
                                                                       captioner.object_words, familiar_min_share))
        captioner.decoder = captioner.decoder.replace(scenes=scenes)
        print(f"unfamiliar scenes: the detector finds things, none of {' '.join(scenes.familiar)} (named in >= "
              f"{familiar_min_share:.1%} of {dataset_name(dataset)} train's captions); the object-word members read "
              f"the words alone there and weigh {scene_share}", flush=True)
    test = load_splits(dataset, ["test"])["test"]
    feats, valid = extract_features(captioner.encoder, test, dataset, "test", cache)
    metrics, files, _ = score_test(captioner, name, dataset_name(dataset), test, feats, valid, strategies, cache=cache)
    first = manifests[0].get("training", {})
    training = {
        "dataset": dataset, "dataset_name": dataset_name(dataset), "blind": False,
        "train_images": first.get("train_images"), "train_captions": first.get("train_captions"),
        "ensemble": [member_record(m) for m in manifests],
        "combination": "mean of the members' next-word probabilities at every step" + (
            f", weighted {captioner.decoder.weights}" if weights else "") + (
            f"; on an unfamiliar scene the object-word members read the words alone and weigh {scene_share}"
            if scene_share > 0 else ""),
        **({"familiar_min_share": familiar_min_share} if scene_share > 0 else {}),
        "command": command_line(), "machine": machine(), "versions": versions(), "git_commit": git_commit(),
        "total_seconds": round(time.perf_counter() - t0, 1)}
    folder = os.path.join(out, name)
    save_bundle(folder, encoder=captioner.encoder, decoder=captioner.decoder, vocab=captioner.vocab,
                training=training, metrics=metrics, default_decoding=captioner.manifest["default_decoding"],
                extra_files=files, member_bundles=[resolve_bundle(b) for b in bundles])
    refresh_card(folder)
    print(f"bundle written: {folder}", flush=True)
    return folder
