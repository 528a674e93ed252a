"""Per-caption BLEU and CIDEr-D against reference captions, in pure Python (no Java), for the app.

The corpus-level scores reported for bundles come from pycocoevalcap (``training.evaluate``).
Here one generated caption is scored at a time, so CIDEr-D takes its document frequencies from a
reference corpus given once (the dataset's references), as CIDEr-D does on a test set.
"""

from __future__ import annotations

import collections
import math
from typing import Callable, Iterable, Sequence

from .text import clean_caption


def _kgrams(words: Sequence[str], n: int):
    """The n-grams of ``words`` as tuples, in order."""
    return zip(*(words[i:] for i in range(n)))


def _ngrams(words: Sequence[str], n: int) -> collections.Counter:
    return collections.Counter(_kgrams(words, n))


def sentence_bleu(candidate: str, references: Sequence[str], max_n: int = 4) -> list[float]:
    """BLEU-1..max_n of one caption (clipped counts, brevity penalty against the closest
    reference length, +1 smoothing for n > 1 so one missing 4-gram does not zero the score)."""
    cand = clean_caption(candidate).split()
    refs = [clean_caption(r).split() for r in references]
    if not cand or not refs:
        return [0.0] * max_n
    closest = min((abs(len(r) - len(cand)), len(r)) for r in refs)[1]
    bp = 1.0 if len(cand) > closest else math.exp(1 - closest / len(cand))
    out, log_sum = [], 0.0
    for n in range(1, max_n + 1):
        c = _ngrams(cand, n)
        best = collections.Counter()
        for r in refs:
            best |= _ngrams(r, n)
        match = sum(min(k, best[g]) for g, k in c.items())
        total = max(sum(c.values()), 0)
        p = match / total if n == 1 else (match + 1) / (total + 1)
        if p == 0 or total == 0:
            p = 1e-9
        log_sum += math.log(p)
        out.append(bp * math.exp(log_sum / n))
    return out


def _words(caption: str) -> list[str]:
    return clean_caption(caption).split()


class CiderD:
    """CIDEr-D (Vedantam et al. 2015) with document frequencies from a fixed reference corpus.

    ``tokenize`` turns a caption into its words (default: the caption cleaner). Training's SCST rewards
    pass one that appends an end token, so a caption cut short before its last words scores lower.
    ``vector`` and ``similarity`` let a caller prepare each photo's reference vectors once.
    """

    def __init__(self, corpus: Iterable[Sequence[str]], n: int = 4, sigma: float = 6.0,
                 tokenize: Callable[[str], list[str]] = _words):
        self.n, self.sigma, self.tokenize = n, sigma, tokenize
        self.df: collections.Counter = collections.Counter()
        count = 0
        for refs in corpus:
            count += 1
            seen = set()
            for r in refs:
                words = tokenize(r)
                for k in range(1, n + 1):
                    seen.update(_kgrams(words, k))
            self.df.update(seen)
        self.documents = count
        self.log_docs = math.log(max(count, 1.0))

    @classmethod
    def from_frequencies(cls, df: dict[tuple[str, ...], int], documents: int, n: int = 4, sigma: float = 6.0,
                         tokenize: Callable[[str], list[str]] = _words) -> "CiderD":
        """From document frequencies counted earlier (``frequencies``): no pass over the corpus."""
        self = cls((), n, sigma, tokenize)
        self.df.update(df)
        self.documents, self.log_docs = documents, math.log(max(documents, 1.0))
        return self

    def frequencies(self, min_df: int = 2) -> dict[tuple[str, ...], int]:
        """The document frequencies worth keeping: an n-gram seen in fewer than 2 documents weighs exactly as
        one never seen (``log(max(1, df))`` is 0 for both), so ``min_df=2`` loses nothing."""
        return {g: c for g, c in self.df.items() if c >= min_df}

    def vector(self, words: Sequence[str]) -> tuple[list[dict], list[float], int]:
        """Words -> (tf-idf vector per n, their norms, length)."""
        vecs, norms = [], []
        for k in range(1, self.n + 1):
            tf = _ngrams(words, k)
            v = {g: c * (self.log_docs - math.log(max(1.0, self.df[g]))) for g, c in tf.items()}
            vecs.append(v)
            norms.append(math.sqrt(sum(x * x for x in v.values())))
        return vecs, norms, len(words)

    def similarity(self, cand: tuple, refs: Sequence[tuple]) -> float:
        """CIDEr-D of a candidate vector against reference vectors (from ``vector``)."""
        if not refs:
            return 0.0
        total = [0.0] * self.n
        cvecs, cnorms, clen = cand
        for rv, rn, rl in refs:
            penalty = math.exp(-((clen - rl) ** 2) / (2 * self.sigma ** 2))
            for k in range(self.n):
                if cnorms[k] and rn[k]:
                    ref = rv[k]
                    dot = sum(min(x, ref.get(g, 0.0)) * ref.get(g, 0.0) for g, x in cvecs[k].items())
                    total[k] += dot / (cnorms[k] * rn[k]) * penalty
        return 10.0 * sum(t / len(refs) for t in total) / self.n

    def score(self, candidate: str, references: Sequence[str]) -> float:
        return self.similarity(self.vector(self.tokenize(candidate)),
                               [self.vector(self.tokenize(r)) for r in references])


# a caption ending on one of these words stops mid-phrase ("a dog runs with a", "a man on the")
DANGLING_WORDS = frozenset("a an the of with in on at and to for from by into onto his her their its is are while "
                           "who that as near".split())


def caption_statistics(captions: Sequence[str]) -> dict:
    """What a collapse after CIDEr training shows first: the share of distinct captions, the number of
    different words used, and the captions that end on a dangling word ("... with a")."""
    words = [c.split() for c in captions]
    dangling = [c for c, w in zip(captions, words) if w and w[-1] in DANGLING_WORDS]
    return {"captions": len(captions), "distinct_share": round(len(set(captions)) / max(len(captions), 1), 4),
            "words_used": len({x for w in words for x in w}), "dangling_endings": len(dangling),
            "dangling_examples": dangling[:5]}
