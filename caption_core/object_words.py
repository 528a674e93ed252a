"""Object words: what a decoder that reads words beside the photo's features is told the photo shows.

A decoder with ``DecoderConfig.object_words`` (W tags) reads a (W,) multi-hot vector after the encoder's features:
its input is (D + W). Two kinds of tag (ViECap, Fei et al. 2023: entity words as a prompt; OSCAR, Li et al. 2020:
object tags beside region features):

- ``coco:<category>``: one of COCO's 80 categories, which the COCO detector finds in a photo (a detection at least
  ``DecoderConfig.word_detector`` confident);
- ``imagenet:<word>``: a caption word that ImageNet classes stand for (``guidance.WordMap``, the groups of things:
  animals, vehicles, food, furniture...), which the classifier gives at least ``word_classifier`` probability.

Because the same tags can be read off a caption (its words that name a COCO category or such an ImageNet word),
caption text without photos trains the decoder too: a text row is zero features plus its caption's own tags, some
dropped and a distractor added, so that the decoder learns to write about the tags without copying them blindly.
Pure and NumPy-only: training and the app compute the same vectors.
"""

from __future__ import annotations

import numpy as np

from .guidance import DetectorWords, WordMap, read_coco_words
from .text import Vocabulary

COCO_PREFIX, IMAGENET_PREFIX = "coco:", "imagenet:"


def object_tags(vocab: Vocabulary) -> tuple[str, ...]:
    """The tags a decoder over ``vocab`` reads: the 80 COCO categories, then the ImageNet words of a group of
    things (not a last resort like "animal") in ``vocab``, most frequent first."""
    words = WordMap(vocab)
    imagenet = [w for w in words.words if words.word_group.get(w) is not None and w not in words.general]
    return tuple([COCO_PREFIX + c for c in read_coco_words()] + [IMAGENET_PREFIX + w for w in imagenet])


class ObjectWords:
    """The multi-hot object-word vectors of photos and of captions, for the tags ``tags`` over ``vocab``."""

    def __init__(self, tags: tuple[str, ...], vocab: Vocabulary, detector_threshold: float = 0.5,
                 classifier_threshold: float = 0.4, word_map: WordMap | None = None):
        """``word_map``: the vocabulary's ``WordMap`` where one is already read (a captioner's, for guidance)."""
        bad = [t for t in tags if not t.startswith((COCO_PREFIX, IMAGENET_PREFIX))]
        if bad:
            raise ValueError(f"object words must start with '{COCO_PREFIX}' or '{IMAGENET_PREFIX}': {bad[:5]}")
        self.tags, self.vocab = tuple(tags), vocab
        self.detector_threshold, self.classifier_threshold = detector_threshold, classifier_threshold
        self.index = {t: i for i, t in enumerate(self.tags)}
        self.word_map = word_map or WordMap(vocab)
        # the classifier: its word probabilities (N, W_imagenet) -> these tags
        self._imagenet_cols = np.array([self.index.get(IMAGENET_PREFIX + w, -1) for w in self.word_map.words])
        # a caption word -> the tags it stands for (the COCO categories whose words it is; the ImageNet word it counts as)
        detector_words = DetectorWords(vocab)
        self.caption_tags: dict[str, tuple[int, ...]] = {}
        found: dict[str, set[int]] = {}
        for cat in detector_words.words:
            if COCO_PREFIX + cat in self.index:
                for w in detector_words.all_words(cat):
                    found.setdefault(w, set()).add(self.index[COCO_PREFIX + cat])
        for word, accepted in self.word_map.accepted.items():
            if IMAGENET_PREFIX + word in self.index:
                for w in accepted:
                    found.setdefault(w, set()).add(self.index[IMAGENET_PREFIX + word])
        self.caption_tags = {w: tuple(sorted(t)) for w, t in found.items()}

    @classmethod
    def for_decoder(cls, config, vocab: Vocabulary, word_map: WordMap | None = None) -> "ObjectWords | None":
        """The object words a ``DecoderConfig`` reads, or None for a decoder that reads none."""
        if not config.object_words:
            return None
        return cls(config.object_words, vocab, config.word_detector, config.word_classifier, word_map)

    @property
    def size(self) -> int:
        return len(self.tags)

    def photo_vectors(self, class_probs: np.ndarray | None, objects: list | None, n: int) -> np.ndarray:
        """(n, W) float32: per photo, its detector categories (``objects``: per photo a ``detectors.Objects`` or None)
        and its classifier words (``class_probs`` (n, 1000) ImageNet probabilities, or None for none)."""
        out = np.zeros((n, self.size), np.float32)  # (N, W)
        if class_probs is not None:
            wp = self.word_map.word_probabilities(class_probs)  # (N, W_imagenet)
            rows, cols = np.nonzero((wp >= self.classifier_threshold) & (self._imagenet_cols >= 0))
            out[rows, self._imagenet_cols[cols]] = 1.0
        for i, found in enumerate(objects or []):
            for d in (found.detections if found is not None else ()):
                j = self.index.get(COCO_PREFIX + d.category)
                if j is not None and d.score >= self.detector_threshold:
                    out[i, j] = 1.0
        return out

    def caption_indices(self, caption: str) -> tuple[int, ...]:
        """The tags a cleaned caption's own words stand for (indices into ``tags``), sorted."""
        return tuple(sorted({t for w in caption.split() for t in self.caption_tags.get(w, ())}))

    def names(self, vector: np.ndarray) -> list[str]:
        """The tags set in one (W,) vector."""
        return [self.tags[i] for i in np.flatnonzero(np.asarray(vector) > 0)]


def noisy_vectors(indices: list[tuple[int, ...]], size: int, drop: float, distractor: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Text rows' object words: each caption's own tags (``indices``), each dropped with probability ``drop``, and
    with probability ``distractor`` one more drawn from the tags the captions use (so, as often as they do)
    -> (C, W) float32."""
    out = np.zeros((len(indices), size), np.float32)  # (C, W)
    pool = np.fromiter((t for ix in indices for t in ix), np.int64)
    for r, ix in enumerate(indices):
        keep = [t for t in ix if rng.random() >= drop]
        out[r, keep] = 1.0
    if len(pool) and distractor > 0:
        rows = np.flatnonzero(rng.random(len(indices)) < distractor)
        out[rows, pool[rng.integers(0, len(pool), len(rows))]] = 1.0
    return out
