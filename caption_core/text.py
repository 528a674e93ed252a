"""Caption cleaning and the vocabulary.

Cleaning follows the classic merge-model pipeline: lower case, punctuation removed, tokens that
contain anything but letters dropped, one-letter tokens dropped except 'a'. The vocabulary keeps
reserved ids first (``<pad>`` = 0, ``<start>``, ``<end>``, ``<unk>``), maps id -> word with a list
(O(1)) and word -> id with a dict, and is saved as JSON (never pickle).
"""

from __future__ import annotations

import collections
import json
import os
import re
from typing import Iterable, Sequence

import numpy as np

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
RESERVED = (PAD, START, END, UNK)
PAD_ID, START_ID, END_ID, UNK_ID = 0, 1, 2, 3

_NON_WORD = re.compile(r"[^a-z\s]+")
_SPLIT = re.compile(r"\s+")
VOCAB_FORMAT = "caption_core.vocabulary/1"
# The words a caption may repeat close together ("a man and a woman on a bench", "in front of a building"):
# articles, prepositions, conjunctions, pronouns, auxiliaries, numbers. Any other word written twice within a few
# words is almost always a loop of the decoder: "a woman and a woman", "a bike on a bike", "a white and white cat"
# (decoding's ``no_repeat_within``).
FUNCTION_WORDS = frozenset("""
a an the this that these those and or but while as than
of in on at to into onto from by with without for about over under above below near next behind beside besides
between among through across along around up down out off away toward towards against during after before
is are was were be been being has have had do does it its he she his her him they them their there here who
which what one two three four five some many several each another other others both all very just also
""".split())


def clean_caption(text: str) -> str:
    """Normalise one raw caption: 'A dog , 2 balls .' -> 'a dog balls'.

    Tokens with digits are dropped whole ('2nd' goes), other punctuation is removed inside a
    token ("dog's" -> 'dogs'), one-letter tokens other than 'a' are dropped.
    """
    words = []
    for token in _SPLIT.split(str(text).lower().strip()):
        if not token or any(ch.isdigit() for ch in token):
            continue
        token = _NON_WORD.sub("", token)
        if len(token) > 1 or token == "a":
            words.append(token)
    return " ".join(words)


def tokenize(clean: str) -> list[str]:
    """Split an already cleaned caption into words."""
    return clean.split()


class Vocabulary:
    """Word <-> id mapping with reserved ids and a minimum count.

    ``id_to_word`` is a list (O(1) id -> word), ``word_to_id`` a dict (O(1) word -> id).
    """

    def __init__(self, id_to_word: Sequence[str], min_count: int = 1):
        words = list(id_to_word)
        if tuple(words[: len(RESERVED)]) != RESERVED:
            raise ValueError(
                f"vocabulary must start with the reserved tokens {list(RESERVED)}, got {words[:4]}"
            )
        if len(set(words)) != len(words):
            raise ValueError("vocabulary has duplicate words")
        self.id_to_word: list[str] = words
        self.word_to_id: dict[str, int] = {w: i for i, w in enumerate(words)}
        self.min_count = int(min_count)
        self._repeatable: np.ndarray | None = None  # made at the first repeatable() call

    def repeatable(self) -> np.ndarray:
        """(V,) bool, read-only: the ids a caption may repeat close together: the reserved ids and
        ``FUNCTION_WORDS`` (made once per vocabulary: every decode call with ``no_repeat_within`` asks for it)."""
        if self._repeatable is None:
            mask = np.zeros(len(self.id_to_word), bool)  # (V,)
            mask[: len(RESERVED)] = True
            mask[[i for w, i in self.word_to_id.items() if w in FUNCTION_WORDS]] = True
            mask.flags.writeable = False
            self._repeatable = mask
        return self._repeatable

    # -- building -------------------------------------------------------------------------
    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1, max_size: int | None = None) -> "Vocabulary":
        """Build from *cleaned* captions: words seen at least ``min_count`` times, most frequent
        first (ties broken alphabetically, so the result is deterministic)."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts = collections.Counter(w for c in captions for w in tokenize(c))
        kept = sorted((w for w, n in counts.items() if n >= min_count and w not in RESERVED),
                      key=lambda w: (-counts[w], w))
        if max_size is not None:
            kept = kept[: max(0, max_size - len(RESERVED))]
        return cls(list(RESERVED) + kept, min_count=min_count)

    # -- mapping --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.id_to_word)

    def __contains__(self, word: str) -> bool:
        return word in self.word_to_id

    def encode(self, clean: str, add_special: bool = True) -> list[int]:
        """Cleaned caption -> ids, wrapped in <start> ... <end> when ``add_special``."""
        ids = [self.word_to_id.get(w, UNK_ID) for w in tokenize(clean)]
        return [START_ID, *ids, END_ID] if add_special else ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; stops at <end>, skips <pad> and <start>."""
        words = []
        for i in ids:
            i = int(i)
            if i == END_ID:
                break
            if i in (PAD_ID, START_ID):
                continue
            words.append(self.id_to_word[i])
        return " ".join(words)

    # -- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": VOCAB_FORMAT, "min_count": self.min_count, "id_to_word": self.id_to_word}

    @classmethod
    def from_dict(cls, data: dict) -> "Vocabulary":
        if data.get("format") != VOCAB_FORMAT:
            raise ValueError(f"not a vocabulary file (format {data.get('format')!r}, expected {VOCAB_FORMAT!r})")
        return cls(data["id_to_word"], min_count=data.get("min_count", 1))

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.id_to_word == other.id_to_word

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)}, min_count={self.min_count})"
