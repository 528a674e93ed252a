"""Decoding strategies: small functions over one ``step(tokens, state) -> (log_probs, state)``.

``tokens`` is (B,) int, ``log_probs`` (B, V) float, and ``state`` a tuple of arrays whose first
axis is B (the decoder's image projection and LSTM h, c). Every strategy is batched: all images,
and all beams or samples of each image, go through one ``step`` call per token. Each returns, for
each image, its n best ``Hypothesis`` (generated ids and log-probability), best first.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from .text import END_ID, PAD_ID, START_ID, UNK_ID

StepFn = Callable[[np.ndarray, tuple], tuple[np.ndarray, tuple]]
NEG_INF = -np.inf


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """Options shared by every strategy; each strategy reads the ones that apply to it."""

    max_length: int = 30  # most words generated per caption (<end> included)
    num_return: int = 1  # captions returned per image (beam: <= beam_width; greedy: always 1)
    beam_width: int = 3  # beams kept per image (beam)
    length_penalty: float = 0.0  # beam/sample ranking: score = log_prob / ((5 + len) / 6) ** alpha
    temperature: float = 1.0  # sample: divide logits by this (> 0)
    top_k: int = 0  # sample: keep the k most likely words (0 = all)
    top_p: float = 1.0  # sample: keep the smallest set of words with this total probability
    seed: int | None = None  # sample: random seed (None = fresh randomness)
    no_repeat_ngram_size: int = 0  # forbid any n-gram of this size twice in a caption (0 = off)
    min_length: int = 1  # <end> is forbidden before this many words
    ban_unknown: bool = True  # never emit <unk>

    def __post_init__(self):
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")
        if self.num_return < 1:
            raise ValueError(f"num_return must be >= 1, got {self.num_return}")
        if self.beam_width < 1:
            raise ValueError(f"beam_width must be >= 1, got {self.beam_width}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature} (use greedy for temperature 0)")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(f"no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DecodeOptions":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown decoding options {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**data)


@dataclasses.dataclass
class Hypothesis:
    tokens: list[int]  # generated ids, <start> excluded, <end> included when emitted
    log_prob: float  # sum of the model's log-probabilities of those ids
    score: float  # what the ranking used (log_prob, length-normalised where asked)


def length_normaliser(length: int, alpha: float) -> float:
    """GNMT length penalty: ((5 + length) / 6) ** alpha; 1 when alpha == 0."""
    return ((5.0 + length) / 6.0) ** alpha if alpha else 1.0


def _take(state: tuple, index: np.ndarray) -> tuple:
    return tuple(s[index] for s in state)


def _banned_by_ngrams(seq: Sequence[int], n: int) -> list[int]:
    """Ids that would repeat an n-gram already in ``seq``."""
    if n <= 0 or len(seq) < n - 1:
        return []
    if n == 1:
        return list(seq)
    prefix = tuple(seq[len(seq) - n + 1:])
    return [seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i:i + n - 1]) == prefix]


def _constrain(log_probs: np.ndarray, seqs: Sequence[Sequence[int]], opts: DecodeOptions) -> np.ndarray:
    """Set forbidden ids to -inf, in place. log_probs (B, V); seqs: the B generated prefixes."""
    log_probs[:, PAD_ID] = NEG_INF
    log_probs[:, START_ID] = NEG_INF
    if opts.ban_unknown:
        log_probs[:, UNK_ID] = NEG_INF
    for row, seq in enumerate(seqs):
        if len(seq) < opts.min_length:
            log_probs[row, END_ID] = NEG_INF
        if opts.no_repeat_ngram_size:
            banned = _banned_by_ngrams(seq, opts.no_repeat_ngram_size)
            if banned:
                log_probs[row, banned] = NEG_INF
    # a row with nothing left may only end
    dead = ~np.isfinite(log_probs).any(axis=1)
    if dead.any():
        log_probs[dead, END_ID] = 0.0
    return log_probs


def _run_rows(step: StepFn, state: tuple, n_rows: int, opts: DecodeOptions, choose) -> list[Hypothesis]:
    """Shared loop of greedy and sampling: each row extends one sequence until <end>.

    ``choose(log_probs (B, V)) -> ids (B,)`` picks the next id of every active row.
    Finished rows leave the batch, so the step runs on active rows only.
    """
    seqs: list[list[int]] = [[] for _ in range(n_rows)]
    total = np.zeros(n_rows, dtype=np.float64)
    active = np.arange(n_rows)
    tokens = np.full(n_rows, START_ID, dtype=np.int32)
    for _ in range(opts.max_length):
        log_probs, state = step(tokens, state)  # (B, V)
        log_probs = _constrain(np.array(log_probs, dtype=np.float64), [seqs[r] for r in active], opts)
        chosen = choose(log_probs)  # (B,)
        total[active] += log_probs[np.arange(len(active)), chosen]
        for row, tok in zip(active, chosen):
            seqs[row].append(int(tok))
        keep = chosen != END_ID
        if not keep.any():
            break
        if not keep.all():
            state = _take(state, np.flatnonzero(keep))
        active, tokens = active[keep], chosen[keep].astype(np.int32)
    return [Hypothesis(seqs[r], float(total[r]), float(total[r]) / length_normaliser(len(seqs[r]), opts.length_penalty))
            for r in range(n_rows)]


def greedy(step: StepFn, state: tuple, n_images: int, opts: DecodeOptions) -> list[list[Hypothesis]]:
    """Most likely word at every step. One caption per image."""
    hyps = _run_rows(step, state, n_images, opts, lambda lp: lp.argmax(axis=1))
    return [[h] for h in hyps]


def sample(step: StepFn, state: tuple, n_images: int, opts: DecodeOptions) -> list[list[Hypothesis]]:
    """Random sampling with temperature, top-k and top-p (nucleus); ``num_return`` samples per
    image, ranked by (length-normalised) log-probability. Reproducible with ``seed``."""
    rng = np.random.default_rng(opts.seed)
    k = opts.num_return
    state = _take(state, np.repeat(np.arange(n_images), k))

    def choose(log_probs: np.ndarray) -> np.ndarray:
        logits = log_probs / opts.temperature  # (B, V)
        if opts.top_k and opts.top_k < logits.shape[1]:
            kth = np.partition(logits, -opts.top_k, axis=1)[:, -opts.top_k][:, None]  # (B, 1)
            logits = np.where(logits >= kth, logits, NEG_INF)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)  # (B, V)
        if opts.top_p < 1.0:
            order = np.argsort(-probs, axis=1)  # (B, V)
            sorted_p = np.take_along_axis(probs, order, axis=1)
            before = np.cumsum(sorted_p, axis=1) - sorted_p  # mass of the better words
            drop = before >= opts.top_p  # the first word is always kept
            sorted_p[drop] = 0.0
            probs = np.zeros_like(probs)
            np.put_along_axis(probs, order, sorted_p, axis=1)
            probs /= probs.sum(axis=1, keepdims=True)
        cum = np.cumsum(probs, axis=1)
        u = rng.random((len(probs), 1)) * cum[:, -1:]
        picked = (cum < u).sum(axis=1)
        # never pick a zero-probability id through rounding at the top end
        picked = np.minimum(picked, probs.shape[1] - 1)
        bad = probs[np.arange(len(picked)), picked] <= 0
        if bad.any():
            picked[bad] = probs[bad].argmax(axis=1)
        return picked

    hyps = _run_rows(step, state, n_images * k, opts, choose)
    return [sorted(hyps[i * k:(i + 1) * k], key=lambda h: -h.score) for i in range(n_images)]


def beam_search(step: StepFn, state: tuple, n_images: int, opts: DecodeOptions) -> list[list[Hypothesis]]:
    """Beam search, ``beam_width`` beams per image, all images batched.

    Finished hypotheses are ranked by log_prob / ((5 + len) / 6) ** length_penalty. An image stops
    once it has ``beam_width`` finished hypotheses that no live beam can still beat.
    """
    W, alpha = opts.beam_width, opts.length_penalty
    n_ret = min(opts.num_return, W)
    state = _take(state, np.repeat(np.arange(n_images), W))  # rows: image-major, W beams each
    beam_lp = np.full((n_images, W), NEG_INF)
    beam_lp[:, 0] = 0.0  # all beams start equal: keep one so the first step does not repeat
    seqs: list[list[list[int]]] = [[[] for _ in range(W)] for _ in range(n_images)]
    finished: list[list[Hypothesis]] = [[] for _ in range(n_images)]
    done = np.zeros(n_images, dtype=bool)
    tokens = np.full(n_images * W, START_ID, dtype=np.int32)

    for t in range(opts.max_length):
        log_probs, state = step(tokens, state)  # (N*W, V)
        flat_seqs = [s for beams in seqs for s in beams]
        log_probs = _constrain(np.array(log_probs, dtype=np.float64), flat_seqs, opts)
        V = log_probs.shape[1]
        cand = (beam_lp[:, :, None] + log_probs.reshape(n_images, W, V)).reshape(n_images, W * V)  # (N, W*V)
        k = min(2 * W, W * V)
        top = np.argpartition(-cand, k - 1, axis=1)[:, :k]  # (N, 2W)
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(cand, top, axis=1), axis=1), axis=1)

        origin = np.tile(np.arange(W), (n_images, 1))  # default: beams stay (rows of done images)
        new_tokens = np.full((n_images, W), END_ID, dtype=np.int32)
        new_lp = np.full((n_images, W), NEG_INF)
        new_seqs = seqs
        last = t == opts.max_length - 1
        for n in range(n_images):
            if done[n]:
                continue
            kept = []
            for j in top[n]:
                score = cand[n, j]
                if not np.isfinite(score):
                    break
                w, v = divmod(int(j), V)
                seq = seqs[n][w] + [v]
                if v == END_ID or last:
                    finished[n].append(Hypothesis(seq, float(score), float(score) / length_normaliser(len(seq), alpha)))
                else:
                    kept.append((w, v, seq, score))
                if len(kept) == W:
                    break
            for b, (w, v, seq, score) in enumerate(kept):
                origin[n, b], new_tokens[n, b], new_lp[n, b] = w, v, score
                new_seqs[n][b] = seq
            for b in range(len(kept), W):
                new_seqs[n][b] = []
            # stop when no live beam can beat the W best finished ones
            if len(finished[n]) >= W:
                best = sorted((h.score for h in finished[n]), reverse=True)[:W]
                alive = new_lp[n][np.isfinite(new_lp[n])]
                bound = (alive.max() / length_normaliser(opts.max_length, alpha) if alpha > 0 else alive.max()) if alive.size else NEG_INF
                if bound <= best[-1]:
                    done[n] = True
            if not kept:
                done[n] = True
        seqs, beam_lp = new_seqs, new_lp
        if done.all():
            break
        rows = (np.arange(n_images)[:, None] * W + origin).ravel()  # (N*W,)
        state = _take(state, rows)
        tokens = new_tokens.ravel()

    return [sorted(f, key=lambda h: -h.score)[:n_ret] for f in finished]


STRATEGIES: dict[str, Callable[..., list[list[Hypothesis]]]] = {
    "greedy": greedy,
    "beam": beam_search,
    "sample": sample,
}


def get_strategy(name: str):
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown decoding strategy {name!r}; valid: {sorted(STRATEGIES)}") from None


def decode(step: StepFn, state: tuple, n_images: int, strategy: str = "greedy",
           options: DecodeOptions | None = None, **overrides) -> list[list[Hypothesis]]:
    """Run a strategy by name. ``overrides`` replace fields of ``options``."""
    opts = options or DecodeOptions()
    if overrides:
        opts = dataclasses.replace(opts, **overrides)
    return get_strategy(strategy)(step, state, n_images, opts)
