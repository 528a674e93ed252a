"""Per-caption BLEU and CIDEr-D against reference captions, in pure Python (no Java), for the app.

The corpus-level scores reported for bundles come from pycocoevalcap (``training.evaluate``).
Here one generated caption is scored at a time, so CIDEr-D takes its document frequencies from a
reference corpus given once (the dataset's references), as CIDEr-D does on a test set.
"""

from __future__ import annotations

import collections
import math
from typing import Iterable, Sequence

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


class CiderD:
    """CIDEr-D (Vedantam et al. 2015) with document frequencies from a fixed reference corpus."""

    def __init__(self, corpus: Iterable[Sequence[str]], n: int = 4, sigma: float = 6.0):
        self.n, self.sigma = n, sigma
        self.df: collections.Counter = collections.Counter()
        count = 0
        for refs in corpus:
            count += 1
            seen = set()
            for r in refs:
                words = clean_caption(r).split()
                for k in range(1, n + 1):
                    seen.update(_kgrams(words, k))
            self.df.update(seen)
        self.log_docs = math.log(max(count, 1.0))

    def _vec(self, words: list[str]):
        vecs, norms = [], []
        for k in range(1, self.n + 1):
            tf = _ngrams(words, k)
            v = {g: c * (self.log_docs - math.log(max(1.0, self.df[g]))) for g, c in tf.items()}
            vecs.append(v)
            norms.append(math.sqrt(sum(x * x for x in v.values())))
        return vecs, norms, len(words)

    def score(self, candidate: str, references: Sequence[str]) -> float:
        cand = self._vec(clean_caption(candidate).split())
        refs = [self._vec(clean_caption(r).split()) for r in references]
        if not refs:
            return 0.0
        total = [0.0] * self.n
        for rv, rn, rl in refs:
            delta = cand[2] - rl
            for k in range(self.n):
                dot = sum(min(x, rv[k].get(g, 0.0)) * rv[k].get(g, 0.0) for g, x in cand[0][k].items())
                if cand[1][k] and rn[k]:
                    total[k] += dot / (cand[1][k] * rn[k]) * math.exp(-(delta ** 2) / (2 * self.sigma ** 2))
        return 10.0 * sum(t / len(refs) for t in total) / self.n
