"""Decoding strategies: small functions over one ``step(tokens, state) -> (log_probs, state)``.

``tokens`` is (B,) int, ``log_probs`` (B, V) float, and ``state`` a tuple of arrays whose first
axis is B (the decoder's image projection and LSTM h, c). Every strategy is batched: all images,
and all beams or samples of each image, go through one ``step`` call per token, and rows that
finished leave the batch. Each returns, for each image, its n best ``Hypothesis`` (generated ids and
log-probability), best first.

Each strategy is registered with the options it reads (``Option``: name, type, default, range, help).
The app's controls and their visibility, its API, and every command line's flags are made from this
registry, so a new strategy is one decorated function here::

    @register_strategy("mine", MAX_LENGTH, Option("spice", float, 0.5, "how much", 0.0, 1.0), help="...")
    def mine(step, state, n_images, opts):  # opts.spice, opts.max_length, ...
        ...
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .config import Config
from .text import END_ID, PAD_ID, START_ID, UNK_ID

StepFn = Callable[[np.ndarray, tuple], tuple[np.ndarray, tuple]]
NEG_INF = -np.inf


# -- options ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Option:
    """One option a strategy reads. The range is checked, and is the app's slider range."""

    name: str  # python identifier; the CLI flag is --name-with-dashes
    type: type  # int, float or bool
    default: Any  # value when not given
    help: str  # one line for people: the app's label info and the CLI's help
    min: float | None = None  # smallest accepted value
    max: float | None = None  # largest accepted value
    step: float | None = None  # the app's slider step
    nullable: bool = False  # None accepted (and an empty or below-min value means None)
    label: str = ""  # the app's control label (default: the name in words)

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    def check(self, value: Any) -> Any:
        """Coerce ``value`` to the option's type and check its range; loud errors."""
        if self.nullable and (value is None or value == "" or (self.min is not None and _number(value) is not None
                                                                and _number(value) < self.min)):
            return None
        try:
            if self.type is bool:
                if isinstance(value, str):
                    if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError(value)
                    value = value.lower() in ("true", "1", "yes")
                value = bool(value)
            elif self.type is int:
                if float(value) != int(float(value)):
                    raise ValueError(value)
                value = int(float(value))
            else:
                value = self.type(value)
        except (TypeError, ValueError):
            raise ValueError(f"option {self.name} must be {self.type.__name__}, got {value!r}") from None
        if self.type in (int, float):
            if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
                raise ValueError(f"option {self.name} must be in [{self.min}, {self.max}], got {value}")
        return value


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# Options more than one strategy reads (one definition each, so every strategy reads them alike).
MAX_LENGTH = Option("max_length", int, 30, "most words generated per caption (<end> included)", 1, 60, 1,
                    label="Maximum length (words)")
MIN_LENGTH = Option("min_length", int, 1, "<end> is forbidden before this many words", 0, 20, 1,
                    label="Minimum length (words)")
NO_REPEAT = Option("no_repeat_ngram_size", int, 0, "forbid any n-gram of this size twice in a caption (0 = off)",
                   0, 4, 1, label="No-repeat n-gram size (0 = off)")
BAN_UNKNOWN = Option("ban_unknown", bool, True, "never write <unk> (words outside the vocabulary)",
                     label="Never write <unk>")
NO_REPEAT_WITHIN = Option("no_repeat_within", int, 0, "a word other than a function word (a, the, and, of, on, ...) "
                          "may not come again within this many words: no 'a woman and a woman', 'a bike on a bike' "
                          "(0 = off)", 0, 8, 1, label="No word again within (0 = off)")
COMMON = (MAX_LENGTH, MIN_LENGTH, NO_REPEAT, NO_REPEAT_WITHIN, BAN_UNKNOWN)
NUM_RETURN = Option("num_return", int, 1, "captions returned per image (the n best)", 1, 10, 1,
                    label="Captions returned (n-best)")
BEAM_WIDTH = Option("beam_width", int, 3, "beams kept per image", 1, 10, 1, label="Beam width")
LENGTH_PENALTY = Option("length_penalty", float, 0.0,
                        "ranking: score = log_prob / ((5 + length) / 6) ** alpha (0 = plain log-probability)",
                        0.0, 2.0, 0.1, label="Length penalty (alpha)")
LOOKAHEAD = Option("lookahead", int, 60, "a live beam is searched on while it could still beat the finished captions "
                   "returned by ending within this many more words (60, or max_length or more: the exact search, "
                   "any length; fewer: fewer beams searched, and a longer caption the exact search finds may be "
                   "missed)", 0, 60, 1, label="Beam lookahead (words)")
CONSENSUS = Option("consensus", bool, False, "of the captions the beams finish (as many as there are beams), return first "
                   "the one that agrees most with the others, each weighed by its probability (minimum Bayes risk "
                   "over n-grams), not the single most probable", label="Consensus of the beams")
CONSENSUS_TEMPERATURE = Option("consensus_temperature", float, 1.0, "how the beams' captions weigh in the consensus: "
                               "exp(score / T); 0 = all alike, small = the most probable wins as without consensus",
                               0.0, 5.0, 0.1, label="Consensus temperature (0 = equal weights)")


@dataclasses.dataclass
class Hypothesis:
    tokens: list[int]  # generated ids, <start> excluded, <end> included when emitted
    log_prob: float  # sum of the model's log-probabilities of those ids
    score: float  # what the ranking used (log_prob, length-normalised where asked)
    agreement: float | None = None  # with ``consensus``: its expected agreement with the pool's captions, in [0, 1]


# -- the registry ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Strategy:
    """A registered strategy: its function, the options it reads, and their options class."""

    name: str  # registry key
    run: Callable[..., list[list[Hypothesis]]]  # (step, state, n_images, opts) -> n best per image
    options: tuple[Option, ...]  # what it reads, in the order the app shows them
    help: str  # one line for people
    options_class: type  # frozen dataclass of its options (Config: JSON round trip)
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # its own defaults for shared options
    guided: bool = False  # run also takes constraints=[Constraint | None per image] (from the image's classes)

    def make_options(self, values: Mapping[str, Any] | None = None, **overrides):
        """Checked options of this strategy from ``values`` and ``overrides``. Keys that belong to another
        strategy are ignored (one set of controls serves every strategy); unknown keys raise."""
        merged = {**(values or {}), **overrides}
        unknown = set(merged) - set(ALL_OPTIONS)
        if unknown:
            raise ValueError(f"unknown decoding options {sorted(unknown)}; valid for {self.name!r}: "
                             f"{[o.name for o in self.options]}")
        mine = {o.name for o in self.options}
        return self.options_class(**{k: v for k, v in merged.items() if k in mine})


STRATEGIES: dict[str, Strategy] = {}
ALL_OPTIONS: dict[str, Option] = {}  # every option of every strategy, by name, in registration order


def register_strategy(name: str, *options: Option, help: str, defaults: Mapping[str, Any] | None = None,
                      guided: bool = False):
    """Decorator: register ``fn(step, state, n_images, opts)`` under ``name`` with the options it reads.
    ``defaults``: this strategy's own defaults for shared options (e.g. more captions returned); ``guided``:
    it takes ``constraints`` too (``Captioner`` computes them from the image's ImageNet classes)."""
    defaults = dict(defaults or {})

    def wrap(fn):
        if name in STRATEGIES:
            raise ValueError(f"decoding strategy {name!r} is registered twice")
        if set(defaults) - {o.name for o in options}:
            raise ValueError(f"defaults {sorted(set(defaults) - {o.name for o in options})} of {name!r} are not its options")
        for o in options:
            if ALL_OPTIONS.setdefault(o.name, o) != o:
                raise ValueError(f"option {o.name!r} of {name!r} differs from the one registered before: "
                                 "share one Option definition")

        def post_init(self):
            for o in options:
                object.__setattr__(self, o.name, o.check(getattr(self, o.name)))
        cls = dataclasses.make_dataclass(
            "".join(p.capitalize() for p in name.split("_")) + "Options",
            [(o.name, o.type if not o.nullable else o.type | None,
              dataclasses.field(default=o.check(defaults[o.name]) if o.name in defaults else o.default))
             for o in options],
            bases=(Config,), frozen=True, namespace={"__post_init__": post_init, "__module__": __name__})
        run = _with_consensus(fn) if CONSENSUS in options else fn
        STRATEGIES[name] = Strategy(name, _with_word_gap(run) if NO_REPEAT_WITHIN in options else run,
                                    tuple(options), help, cls, defaults, guided)
        return fn

    return wrap


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown decoding strategy {name!r}; valid: {sorted(STRATEGIES)}") from None


def decode(step: StepFn, state: tuple, n_images: int, strategy: str = "greedy",
           options: Mapping[str, Any] | None = None, repeatable: np.ndarray | None = None,
           **overrides) -> list[list[Hypothesis]]:
    """Run a strategy by name; ``options`` (a dict, or that strategy's options) and ``overrides`` set
    its options (keys of other strategies are ignored); ``repeatable``: the ids ``no_repeat_within`` lets repeat
    ((V,) bool, ``Vocabulary.repeatable()``)."""
    s = get_strategy(strategy)
    if isinstance(options, Config):
        options = options.to_dict()
    extra = {} if repeatable is None else {"repeatable": repeatable}
    return s.run(step, state, n_images, s.make_options(options, **overrides), **extra)


def add_decoding_arguments(parser, strategy_default: str | None = None, exclude: Sequence[str] = ()) -> None:
    """``--strategy`` and one flag per registered option (``--beam-width``, ``--top-p``, ...), with its
    help, range, default and the strategies that read it. Unset flags stay None: the bundle's default.
    ``exclude``: options the command sets otherwise; options whose flag the parser already has (training's
    ``--seed``, ``--max-length``) are left out too, so call this after the command's own flags."""
    g = parser.add_argument_group("decoding", "strategies: " + "; ".join(f"{n}: {s.help}" for n, s in STRATEGIES.items()))
    g.add_argument("--strategy", choices=list(STRATEGIES), default=strategy_default,
                   help="decoding strategy (default: %s)" % (strategy_default or "the bundle's"))
    taken = set(getattr(parser, "_option_string_actions", {}))
    for name, o in ALL_OPTIONS.items():
        if name in exclude or "--" + name.replace("_", "-") in taken:
            continue
        users = ", ".join(n for n, s in STRATEGIES.items() if o in s.options)
        bounds = f"; {o.min:g}..{o.max:g}" if o.min is not None and o.max is not None else ""
        kind = _bool_arg if o.type is bool else o.type
        g.add_argument("--" + name.replace("_", "-"), dest=f"decoding_{name}", type=kind, default=None,
                       metavar=o.type.__name__.upper(), help=f"{o.help} [{users}{bounds}; default {o.default}]")


def decoding_arguments(args) -> tuple[str | None, dict]:
    """-> (--strategy or None, the options given on the command line) from ``add_decoding_arguments``."""
    given = {name: getattr(args, f"decoding_{name}") for name in ALL_OPTIONS
             if getattr(args, f"decoding_{name}", None) is not None}
    return getattr(args, "strategy", None), given


def _bool_arg(text: str) -> bool:
    return BAN_UNKNOWN.check(text)  # any bool option: the same parsing


# -- shared pieces ------------------------------------------------------------------------------
def length_normaliser(length: int | np.ndarray, alpha: float):
    """GNMT length penalty: ((5 + length) / 6) ** alpha; 1 when alpha == 0."""
    return ((5.0 + length) / 6.0) ** alpha if alpha else 1.0


def _best_final(lp: np.ndarray, t: int, opts, alpha: float) -> np.ndarray:
    """The best score live beams of log-probability ``lp`` (t + 1 words written) can still reach, ending within
    ``lookahead`` more words (at most ``max_length``): their log-probability only falls, so it is lp over the
    largest length normaliser they may reach (the exact bound where that is ``max_length``)."""
    if not alpha:
        return lp
    return lp / length_normaliser(min(opts.max_length, t + 1 + opts.lookahead), alpha)


_TOP_K_GROUPS = 64  # _top_k's bound: the maxima of this many interleaved groups of a row


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` highest scores of each row, best first (equal scores: the lower index first):
    (N, M) -> (N, k).

    A beam step picks 2W of W*V candidates (10 of 12,665 for beam 5): a partial sort of the whole row
    (``argpartition``) was a sixth of an attention decoder's decoding time. Instead the row is cut into
    ``_TOP_K_GROUPS`` interleaved groups; the k-th best of the groups' maxima is at most the row's k-th best
    score (those k maxima are k different scores), so the scores at or above it (a handful) hold the top k,
    and only those are sorted. The same answer as a full sort, at a fifth of the partial sort's time."""
    n, m = scores.shape
    groups = _TOP_K_GROUPS
    if k >= m or m < 4 * groups or k > groups // 2:  # small rows, or a k the bound would not narrow much
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    full = m - m % groups
    maxima = scores[:, :full].reshape(n, full // groups, groups).max(axis=1)  # (N, groups): column j % groups
    if full < m:
        maxima[:, :m - full] = np.maximum(maxima[:, :m - full], scores[:, full:])
    bound = np.partition(maxima, groups - k, axis=1)[:, groups - k]  # (N,) <= each row's k-th best
    flat = np.flatnonzero(scores >= bound[:, None])  # a handful per row, at least k (row-major)
    rows, cols = np.divmod(flat, m)
    order = np.lexsort((cols, -scores[rows, cols], rows))  # by row, then best first, then lower index
    rows, cols = rows[order], cols[order]
    return cols[np.searchsorted(rows, np.arange(n))[:, None] + np.arange(k)]  # (N, k)


def _take(state: tuple, index: np.ndarray) -> tuple:
    return tuple(s[index] for s in state)


def _constrain(log_probs: np.ndarray, seqs: np.ndarray, t: int, opts) -> np.ndarray:
    """Set forbidden ids to -inf, in place. log_probs (B, V); seqs (B, >= t): the B prefixes, all of length t."""
    log_probs[:, PAD_ID] = NEG_INF
    log_probs[:, START_ID] = NEG_INF
    if opts.ban_unknown:
        log_probs[:, UNK_ID] = NEG_INF
    if t < opts.min_length:
        log_probs[:, END_ID] = NEG_INF
    n = opts.no_repeat_ngram_size
    if n and t >= n - 1:
        if n == 1:
            rows, cols = np.repeat(np.arange(len(seqs)), t), seqs[:, :t].ravel()
        else:
            # every earlier window of n-1 words equal to the last n-1 words bans the word that followed it: window j
            # (words j .. j+n-2) matches where each of its words equals the last n-1 words' (one slice compare each:
            # a sliding-window view cost more to make than the compares)
            match = seqs[:, 0:t - n + 1] == seqs[:, t - n + 1:t - n + 2]  # (B, t-n+1)
            for k in range(1, n - 1):
                match &= seqs[:, k:k + t - n + 1] == seqs[:, t - n + 1 + k:t - n + 2 + k]
            rows, at = np.nonzero(match)
            cols = seqs[rows, at + n - 1]
        log_probs[rows, cols] = NEG_INF
    maybe = log_probs[:, END_ID] == NEG_INF  # a row with nothing left may only end (a row that may end is not dead:
    if maybe.any():  # only those rows are searched in full)
        dead = np.flatnonzero(maybe)[log_probs[maybe].max(axis=1) == NEG_INF]
        log_probs[dead, END_ID] = 0.0
    return log_probs


def _run_rows(step: StepFn, state: tuple, n_rows: int, opts, choose, alpha: float = 0.0) -> list[Hypothesis]:
    """Shared loop of greedy and sampling: each row extends one sequence until <end>.

    ``choose(log_probs (B, V)) -> ids (B,)`` picks the next id of every active row; ``alpha`` is the
    length penalty of the scores.
    Finished rows leave the batch, so the step runs on active rows only.
    """
    T = opts.max_length
    seqs = np.zeros((n_rows, T), np.int64)  # (N, T) generated ids
    lengths = np.zeros(n_rows, np.int64)
    total = np.zeros(n_rows, dtype=np.float64)
    active = np.arange(n_rows)
    tokens = np.full(n_rows, START_ID, dtype=np.int32)
    for t in range(T):
        log_probs, state = step(tokens, state)  # (B, V)
        log_probs = _constrain(np.array(log_probs, dtype=np.float64), seqs[active], t, opts)
        chosen = choose(log_probs)  # (B,)
        total[active] += log_probs[np.arange(len(active)), chosen]
        seqs[active, t] = chosen
        lengths[active] = t + 1
        keep = chosen != END_ID
        if not keep.any():
            break
        if not keep.all():
            state = _take(state, np.flatnonzero(keep))
        active, tokens = active[keep], chosen[keep].astype(np.int32)
    return [Hypothesis(seqs[r, :lengths[r]].tolist(), float(total[r]),
                       float(total[r]) / length_normaliser(int(lengths[r]), alpha))
            for r in range(n_rows)]


# -- consensus: minimum Bayes risk over the beams' captions --------------------------------------------
def _ngram_profile(tokens: Sequence[int], n: int = 4) -> tuple[list[dict], list[float], int]:
    """A caption's ids (<end> left out) -> (its n-gram counts for 1..n, their norms, its length)."""
    words = [t for t in tokens if t != END_ID]
    counts, norms = [], []
    for k in range(1, n + 1):
        c: dict = {}
        for i in range(len(words) - k + 1):
            g = tuple(words[i:i + k])
            c[g] = c.get(g, 0) + 1
        counts.append(c)
        norms.append(float(np.sqrt(sum(v * v for v in c.values()))))
    return counts, norms, len(words)


def agreement(a: tuple, b: tuple, sigma: float = 6.0) -> float:
    """How much caption ``a`` says what ``b`` says, from ``_ngram_profile``s: CIDEr-D's form (clipped n-gram cosine for
    n = 1..4, a Gaussian penalty on the length difference, averaged) with every n-gram weighed alike, in [0, 1]."""
    (ca, na, la), (cb, nb, lb) = a, b
    total = 0.0
    for ga, gb, xa, xb in zip(ca, cb, na, nb):
        if xa and xb:
            total += sum(min(v, gb.get(g, 0)) * gb.get(g, 0) for g, v in ga.items()) / (xa * xb)
    return float(np.exp(-((la - lb) ** 2) / (2 * sigma ** 2))) * total / len(ca)


def consensus_order(hyps: Sequence[Hypothesis], temperature: float = 1.0) -> list[Hypothesis]:
    """The hypotheses re-ranked by consensus: minimum Bayes risk with ``agreement`` as the gain (Kumar and Byrne
    2004). The pool stands for the model's distribution, each caption weighing exp(its score / ``temperature``) (0:
    all alike); each one's expected agreement with a caption drawn from it (itself included, agreeing fully) ranks it.
    As the temperature falls the most probable caption comes first, as in the search; at 1 and above, the caption
    that most of the probable others agree with. Ties keep the search's order. Sets ``agreement``."""
    hyps = list(hyps)
    if len(hyps) < 2:
        return hyps
    scores = np.array([h.score for h in hyps])  # (P,)
    votes = np.exp((scores - scores.max()) / temperature) if temperature > 0 else np.ones(len(hyps))  # (P,)
    profiles = [_ngram_profile(h.tokens) for h in hyps]
    gain = np.array([[agreement(a, b) if i != j else 1.0 for j, b in enumerate(profiles)]
                     for i, a in enumerate(profiles)])  # (P, P): row i = how much i says what j says
    expected = gain @ (votes / votes.sum())  # (P,)
    for h, e in zip(hyps, expected):
        h.agreement = float(e)
    order = sorted(range(len(hyps)), key=lambda i: (-expected[i], i))
    return [hyps[i] for i in order]


def _with_consensus(fn):
    """A beam strategy that, with ``consensus``, searches for as many finished captions as it keeps beams (its
    ``num_return`` raised to that) and returns them re-ranked by ``consensus_order``, the ``num_return`` best."""
    def run(step: StepFn, state: tuple, n_images: int, opts, **kwargs) -> list[list[Hypothesis]]:
        if not opts.consensus:
            return fn(step, state, n_images, opts, **kwargs)
        beams = opts.beam_width if hasattr(opts, "beam_width") else opts.beam_groups * opts.group_width
        wide = dataclasses.replace(opts, num_return=max(opts.num_return, min(beams, int(NUM_RETURN.max))))
        hyps = fn(step, state, n_images, wide, **kwargs)
        return [consensus_order(per, opts.consensus_temperature)[: opts.num_return] for per in hyps]

    run.__name__, run.__doc__ = fn.__name__, fn.__doc__
    return run


def _with_word_gap(fn):
    """A strategy that, with ``no_repeat_within`` = g, never writes a word that is among the row's last g words,
    unless ``repeatable`` ((V,) bool, a keyword of the run: ``Vocabulary.repeatable()``) allows it; without
    ``repeatable``, only the reserved ids may repeat. The step's state carries each row's last g ids (every
    strategy reorders state rows together, so they follow their row), <start> before the first word."""
    def run(step: StepFn, state: tuple, n_images: int, opts, repeatable: np.ndarray | None = None,
            **kwargs) -> list[list[Hypothesis]]:
        gap = opts.no_repeat_within
        if not gap:
            return fn(step, state, n_images, opts, **kwargs)
        given = np.zeros(0, bool) if repeatable is None else np.asarray(repeatable, bool)
        allowed = []  # the (V,) mask, made at the first step (where V is known): ids past ``given`` may not repeat

        def gap_step(tokens, st):
            log_probs, new = step(tokens, st[:-1])  # (B, V)
            if not allowed:
                mask = np.zeros(log_probs.shape[1], bool)  # (V,)
                mask[[PAD_ID, START_ID, END_ID, UNK_ID]] = True
                mask[:len(given)] |= given[:log_probs.shape[1]]
                allowed.append(mask)
            recent = np.concatenate([st[-1][:, 1:], np.asarray(tokens, np.int64)[:, None]], axis=1)  # (B, g)
            rows, cols = np.nonzero(~allowed[0][recent])
            if len(rows):
                log_probs = np.array(log_probs)  # never write into the decoder's own array
                log_probs[rows, recent[rows, cols]] = NEG_INF
            return log_probs, (*new, recent)

        return fn(gap_step, (*state, np.full((n_images, gap), START_ID, np.int64)), n_images, opts, **kwargs)

    run.__name__, run.__doc__ = fn.__name__, fn.__doc__
    return run


# -- the strategies -------------------------------------------------------------------------------
@register_strategy("greedy", *COMMON, help="the most likely word at every step: one caption, fastest")
def greedy(step: StepFn, state: tuple, n_images: int, opts) -> list[list[Hypothesis]]:
    return [[h] for h in _run_rows(step, state, n_images, opts, lambda lp: lp.argmax(axis=1))]


@register_strategy("beam", *COMMON, BEAM_WIDTH, LENGTH_PENALTY, LOOKAHEAD, NUM_RETURN, CONSENSUS, CONSENSUS_TEMPERATURE,
                   help="keep the beam_width best partial captions at every step: usually the best captions")
def beam_search(step: StepFn, state: tuple, n_images: int, opts) -> list[list[Hypothesis]]:
    """Beam search, ``beam_width`` beams per image, all images batched.

    Finished hypotheses are ranked by log_prob / ((5 + len) / 6) ** length_penalty. An image stops
    once no live beam can still beat the ``num_return`` best finished hypotheses (the ones returned).
    """
    return _grouped_beam_search(step, state, n_images, opts, groups=1, width=opts.beam_width, diversity=0.0,
                                n_return=opts.num_return)


@register_strategy(
    "sample", *COMMON,
    Option("temperature", float, 1.0, "divide the logits by this: < 1 safer, > 1 more adventurous", 0.01, 5.0, 0.05,
           label="Temperature"),
    Option("top_k", int, 0, "sample among the k most likely words only (0 = all)", 0, 1000, 1, label="Top-k (0 = off)"),
    Option("top_p", float, 1.0, "sample among the smallest set of words with this total probability (nucleus)",
           0.01, 1.0, 0.05, label="Top-p"),
    Option("seed", int, None, "random seed for reproducible samples (empty or -1 = fresh randomness)", 0, 2**31 - 1,
           nullable=True, label="Random seed (-1 = random)"),
    NUM_RETURN, LENGTH_PENALTY,
    help="random words drawn from the model (temperature, top-k, top-p); n samples ranked by score")
def sample(step: StepFn, state: tuple, n_images: int, opts) -> list[list[Hypothesis]]:
    """``num_return`` samples per image, ranked by (length-normalised) log-probability."""
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
            sorted_p[before >= opts.top_p] = 0.0  # the first word is always kept
            probs = np.zeros_like(probs)
            np.put_along_axis(probs, order, sorted_p, axis=1)
            probs /= probs.sum(axis=1, keepdims=True)
        cum = np.cumsum(probs, axis=1)
        u = rng.random((len(probs), 1)) * cum[:, -1:]
        picked = np.minimum((cum < u).sum(axis=1), probs.shape[1] - 1)
        bad = probs[np.arange(len(picked)), picked] <= 0  # never a zero-probability id through rounding
        if bad.any():
            picked[bad] = probs[bad].argmax(axis=1)
        return picked

    hyps = _run_rows(step, state, n_images * k, opts, choose, opts.length_penalty)
    return [sorted(hyps[i * k:(i + 1) * k], key=lambda h: -h.score) for i in range(n_images)]


@register_strategy(
    "diverse_beam", *COMMON,
    Option("beam_groups", int, 3, "groups of beams searched in turn; each pays for the words earlier groups chose",
           1, 10, 1, label="Beam groups"),
    Option("group_width", int, 2, "beams per group", 1, 5, 1, label="Beams per group"),
    Option("diversity_penalty", float, 1.0, "log-probability each earlier group's choice of a word at the same step "
           "costs a later group (Hamming diversity)", 0.0, 5.0, 0.1, label="Diversity penalty"),
    LENGTH_PENALTY, LOOKAHEAD, NUM_RETURN, CONSENSUS, CONSENSUS_TEMPERATURE,
    defaults={"num_return": 3},
    help="diverse beam search (Vijayakumar et al. 2016): groups of beams pushed apart, so the n-best list shows "
         "different captions, not variants of one")
def diverse_beam_search(step: StepFn, state: tuple, n_images: int, opts) -> list[list[Hypothesis]]:
    """``beam_groups`` x ``group_width`` beams; the first group is plain beam search, each later one pays
    ``diversity_penalty`` per earlier group that chose the same word at the same step. The n best distinct
    captions are returned, each group's best first (so ``num_return <= beam_groups`` gives one per group)."""
    G = opts.beam_groups
    hyps = _grouped_beam_search(step, state, n_images, opts, groups=G, width=opts.group_width,
                                diversity=opts.diversity_penalty, n_return=G * opts.group_width, by_group=True)
    out = []
    for per in hyps:
        seen, best = set(), []
        for h in per:  # each group's best first, then the rest by score; a caption found twice counts once
            if tuple(h.tokens) not in seen:
                seen.add(tuple(h.tokens))
                best.append(h)
        out.append(best[: opts.num_return])
    return out


def _grouped_beam_search(step: StepFn, state: tuple, n_images: int, opts, groups: int, width: int,
                         diversity: float, n_return: int, by_group: bool = False) -> list[list[Hypothesis]]:
    """Beam search in ``groups`` groups of ``width`` beams per image (one group: plain beam search).

    Groups take their step in turn; each word that earlier groups chose at this step for the same image
    costs a later group ``diversity`` per choice (Hamming diversity, Vijayakumar et al. 2016). Each group
    keeps the ``width`` best candidates by that penalised score; hypotheses record their true
    log-probability and are ranked by it (length-normalised); the ``n_return`` best are returned.
    ``by_group``: each group's best hypothesis first (best group first), then all the others by score.
    """
    G, W, alpha, T = groups, width, opts.length_penalty, opts.max_length
    n_ret = min(n_return, G * W)
    # finished hypotheses a group needs before it may stop: every later one scores at most the bound (a live beam's
    # log-probability only falls), so once the n_ret best beat it they are final: one group returns those, and
    # searching on for W (the textbook rule) only found captions that were never returned. Groups rank by group.
    need = n_ret if G == 1 else W
    images = np.arange(n_images)  # the images still searching (compacted as images finish)
    state = _take(state, np.repeat(images, G * W))  # rows: image-major, then group, then beam
    beam_lp = np.full((n_images, G, W), NEG_INF)  # true log-probabilities of the live beams
    beam_lp[:, :, 0] = 0.0  # all beams start equal: keep one so the first step does not repeat
    beam_sel = beam_lp.copy()  # the (penalised) scores the groups select by
    seqs = np.zeros((n_images, G, W, T), np.int64)  # (N, G, W, T)
    finished: list[list[tuple[int, Hypothesis]]] = [[] for _ in range(n_images)]  # (group, hypothesis)
    group_done = np.zeros((n_images, G), dtype=bool)
    tokens = np.full(n_images * G * W, START_ID, dtype=np.int32)
    row_base = (np.arange(n_images)[:, None, None] * G + np.arange(G)[None, :, None]) * W  # (N, G, 1)
    stay = np.broadcast_to(np.arange(W), (n_images, G, W))  # beams that keep their row

    alive = None  # rows (of n*G*W) that hold a live beam, where some do not; the state holds those rows alone
    for t in range(T):
        n = len(images)
        if t == 0 and W > 1:  # every beam of a group starts alike: step one row per group, then copy it
            log_probs, state = step(tokens[::W], _take(state, np.arange(0, len(tokens), W)))  # (n*G, V)
            log_probs, state = np.repeat(log_probs, W, axis=0), tuple(np.repeat(x, W, axis=0) for x in state)
        elif alive is None:
            log_probs, state = step(tokens, state)  # (n*G*W, V)
        else:  # only live beams are stepped; the others' candidates are -inf whatever their words
            out, state = step(tokens, state)  # (L, V)
            log_probs = np.full((n * G * W, out.shape[1]), NEG_INF, np.float32)  # (n*G*W, V)
            log_probs[alive] = out
        log_probs = _constrain(np.array(log_probs, dtype=np.float64), seqs.reshape(n * G * W, T), t, opts)
        V = log_probs.shape[1]
        log_probs = log_probs.reshape(n, G, W, V)
        last = t == T - 1
        at = np.arange(n)[:, None]  # (n, 1): row index for fancy indexing
        origin = stay[:n].copy()  # (n, G, W): default, beams stay (rows of done groups)
        new_tokens = np.full((n, G, W), END_ID, dtype=np.int32)
        new_lp = np.full((n, G, W), NEG_INF)
        new_sel = np.full((n, G, W), NEG_INF)
        chosen_count = np.zeros((n, V)) if G > 1 else None  # words earlier groups chose at this step
        for g in range(G):
            lp = log_probs[:, g]  # (n, W, V)
            sel = lp - diversity * chosen_count[:, None, :] if g and diversity else lp
            cand = (beam_sel[:, g, :, None] + sel).reshape(n, W * V)  # (n, W*V)
            k = min(2 * W, W * V)
            top = _top_k(cand, k)  # (n, 2W): the k best, best first
            score = cand[at, top]  # (n, 2W)
            w, v = np.divmod(top, V)
            true = beam_lp[:, g][at, w] + lp[at, w, v]  # (n, 2W)
            ok = np.isfinite(score) & ~group_done[:, g][:, None]
            ends = (v == END_ID) | last
            rank = np.cumsum(ok & ~ends, axis=1)  # continuing candidates up to and including this one
            kept = ok & ~ends & (rank <= W)
            fin = ok & ends & (rank < W)  # <end> candidates ahead of the W-th continuing one
            rows, cols = np.nonzero(kept)
            slot = rank[rows, cols] - 1
            origin[rows, g, slot] = w[rows, cols]
            new_tokens[rows, g, slot] = v[rows, cols]
            new_lp[rows, g, slot] = true[rows, cols]
            new_sel[rows, g, slot] = score[rows, cols]
            if chosen_count is not None:
                np.add.at(chosen_count, (rows, v[rows, cols]), 1.0)
            for i, j in zip(*np.nonzero(fin)):
                seq = seqs[i, g, w[i, j], :t].tolist() + [int(v[i, j])]
                h = Hypothesis(seq, float(true[i, j]), float(true[i, j]) / length_normaliser(t + 1, alpha))
                finished[images[i]].append((g, h))
            # a group stops when no live beam can beat the finished hypotheses it returns
            best_alive = new_lp[:, g].max(axis=1)  # (n,)
            for i in np.flatnonzero(~group_done[:, g]):
                scores = [h.score for gg, h in finished[images[i]] if gg == g]
                if best_alive[i] == NEG_INF:
                    group_done[i, g] = True
                elif len(scores) >= need:
                    kth = sorted(scores, reverse=True)[need - 1]
                    bounds = _best_final(new_lp[i, g], t, opts, alpha)  # (W,)
                    if bounds.max() <= kth:
                        group_done[i, g] = True
                    elif G == 1:  # a beam that cannot beat them is not searched on: every candidate it would
                        # give scores below every live beam's that can, so those fill the same slots without it
                        # (and an <end> it would displace scores below them too): the same captions, fewer rows
                        dead = bounds <= kth
                        new_lp[i, g, dead] = new_sel[i, g, dead] = NEG_INF
        seqs = seqs[at[:, :, None], np.arange(G)[None, :, None], origin]  # (n, G, W, T): each beam's prefix
        seqs[..., t] = new_tokens
        beam_lp, beam_sel = new_lp, new_sel
        live = ~group_done.all(axis=1)  # (n,)
        if not live.any() or last:
            break
        rows = row_base[:n] + origin  # (n, G, W): the state row each new beam continues
        if not live.all():
            images, rows, seqs = images[live], rows[live], seqs[live]
            beam_lp, beam_sel, group_done, new_tokens = beam_lp[live], beam_sel[live], group_done[live], new_tokens[live]
        rows = rows.ravel() if alive is None else row_of[rows.ravel()]  # (n'*G*W,) the rows in the state
        live_rows = np.isfinite(beam_lp).ravel()  # (n'*G*W,)
        if live_rows.all():
            alive, tokens = None, new_tokens.ravel()
        else:
            alive = np.flatnonzero(live_rows)
            rows, tokens = rows[alive], new_tokens.ravel()[alive]
            row_of = np.zeros(len(live_rows), np.int64)  # a row of n'*G*W -> its row in the state (dead: any)
            row_of[alive] = np.arange(len(alive))
        state = _take(state, rows)

    out = []
    for f in finished:
        ranked = sorted(f, key=lambda gh: -gh[1].score)
        if by_group:  # each group's best, in score order, then the rest
            firsts: dict[int, Hypothesis] = {}
            for g, h in ranked:
                firsts.setdefault(g, h)
            lead = list(firsts.values())
            ranked = [(0, h) for h in lead] + [(g, h) for g, h in ranked if firsts[g] is not h]
        out.append([h for _, h in ranked[:n_ret]])
    return out


# -- guided decoding: constrained beam search ------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Constraint:
    """One image's constraint: the caption must contain one of ``required`` (None: no requirement) and
    none of ``banned`` (vocabulary ids)."""

    required: frozenset[int] | None = None
    banned: frozenset[int] = frozenset()


GUIDE_THRESHOLD = Option("guide_threshold", float, 0.5, "guide when the encoder's classifier gives one caption word "
                         "(its ImageNet classes summed) at least this probability (1 = never)", 0.05, 1.0, 0.05,
                         label="Guidance threshold")
GUIDE_VETO = Option("guide_veto", bool, True, "when guiding, ban the words of the same kind (animals, vehicles, "
                    "food, furniture, ...) and the animals whose classes the classifier gives under 0.02 in all",
                    label="Veto what the classifier rules out")
GUIDE_VETO_ALONE = Option("guide_veto_alone", bool, False, "ban the animals the classifier rules out even where no "
                          "word reaches the threshold (a photo of a sink gets no dog)", label="Veto without a required word")
GUIDE_DETECTOR = Option("guide_detector", float, 1.0, "guide by the COCO detector too: the photo's main object (its "
                        "largest box at least this confident) must be named (1 = off: the classifier alone)", 0.4, 1.0,
                        0.05, label="Detector threshold (1 = off)")
GUIDE_DETECTOR_FIRST = Option("guide_detector_first", bool, True, "where the detector and the classifier would require "
                              "different words, the detector's win", label="Detector first")
GUIDE_COUNT = Option("guide_count", bool, False, "the detector's count: two or more of the main object require its plural "
                     "('dogs'), one its singular", label="Name the number")
GUIDE_UNSEEN = Option("guide_unseen", bool, False, "on an object scene (the detector finds things, and no person; "
                      "with a bundle that knows which scenes it never saw, only on those) the caption may not name "
                      "people, nor an animal where the detector found none: what a Flickr8k decoder puts in a kitchen",
                      label="No people where nobody is seen")
GUIDE_WITHIN = Option("guide_within", int, 0, "the required word must come within the first N words, as the caption's "
                      "subject rather than an accessory (0 = anywhere)", 0, 12, 1, label="Required word within (0 = anywhere)")


def _id_table(sets: Sequence[frozenset[int]]) -> np.ndarray:
    """Per image its ids, padded with -1: (N, K) int (no vocabulary size needed)."""
    table = np.full((len(sets), max((len(x) for x in sets), default=0)), -1, np.int64)  # (N, K)
    for i, ids in enumerate(sets):
        table[i, :len(ids)] = sorted(ids)
    return table


def _with_bans(step: StepFn, state: tuple, banned: np.ndarray) -> tuple[StepFn, tuple]:
    """``step`` with each image's banned ids (``banned``: ``_id_table`` (N, K)) at -inf, and its state carrying
    each row's image index (every strategy reorders state rows together, so the index follows its row)."""
    def banned_step(tokens, st):
        log_probs, new = step(tokens, st[:-1])
        ids = banned[st[-1]]  # (B, K)
        rows, cols = np.nonzero(ids >= 0)
        if len(rows):
            log_probs = np.array(log_probs)  # never write into the decoder's own array
            log_probs[rows, ids[rows, cols]] = NEG_INF
        return log_probs, (*new, st[-1])

    return banned_step, (*state, np.arange(len(banned)))


@register_strategy("guided", *COMMON, BEAM_WIDTH, LENGTH_PENALTY, LOOKAHEAD, NUM_RETURN, GUIDE_THRESHOLD, GUIDE_VETO,
                   GUIDE_VETO_ALONE, GUIDE_WITHIN, GUIDE_DETECTOR, GUIDE_DETECTOR_FIRST, GUIDE_COUNT, GUIDE_UNSEEN,
                   CONSENSUS, CONSENSUS_TEMPERATURE,
                   help="beam search guided by what the photo shows: the encoder's ImageNet classifier and the COCO "
                        "object detector; when they are confident, the caption must name what they see (constrained "
                        "beam search, Anderson et al. 2017)",
                   guided=True)
def guided_beam_search(step: StepFn, state: tuple, n_images: int, opts,
                       constraints: Sequence[Constraint | None] | None = None) -> list[list[Hypothesis]]:
    """Beam search with each image's ``Constraint``: banned ids never appear; where the best caption lacks
    every required id, that image is decoded again by constrained beam search, which keeps ``beam_width``
    beams for each constraint state (not yet met, met) and returns only captions that meet it. An image
    whose constrained search finds none keeps its beam-search captions. Without constraints: beam search.
    (Where the caption already names the word, guidance costs nothing: one beam search, the common case.)"""
    constraints = [c or Constraint() for c in (constraints or [None] * n_images)]
    if not any(c.required or c.banned for c in constraints):
        return beam_search(step, state, n_images, opts)
    required = [c.required or frozenset() for c in constraints]
    banned = _id_table([c.banned - r for c, r in zip(constraints, required)])  # a required word stays allowed
    bstep, bstate = _with_bans(step, state, banned)
    hyps = beam_search(bstep, bstate, n_images, opts)
    within = opts.guide_within or opts.max_length  # where the required word must come (guide_within: the subject)

    def meets(h: Hypothesis, r: frozenset) -> bool:
        return bool(set(h.tokens[:within]) & r)

    redo = [i for i, (r, h) in enumerate(zip(required, hyps)) if r and not (h and meets(h[0], r))]
    if redo:
        index = np.asarray(redo)
        sub_step, sub_state = _with_bans(step, _take(state, index), banned[index])
        found = _constrained_beam_search(sub_step, sub_state, _id_table([required[i] for i in redo]), opts)
        for i, f in zip(redo, found):
            if f:
                hyps[i] = f
    # the n best are those that meet the constraint (where none does, the beam search's: the constraint was impossible)
    return [[h for h in per if meets(h, r)] or per if r else per for per, r in zip(hyps, required)]


def _constrained_beam_search(step: StepFn, state: tuple, required_ids: np.ndarray, opts) -> list[list[Hypothesis]]:
    """Beam search with one disjunctive constraint per image (``required_ids``: ``_id_table`` (N, K), any of
    these ids).

    Rows: image-major, then the constraint state (0: not met yet, 1: met), then ``beam_width`` beams. A
    state-0 beam that writes a required id moves to state 1; only state-1 beams may end; an image stops
    once no live beam can beat the ``num_return`` best finished captions. With ``guide_within`` = K > 0, a
    required id must be written among the first K words: state-0 beams end there."""
    n, W, T, alpha = len(required_ids), opts.beam_width, opts.max_length, opts.length_penalty
    need = min(opts.num_return, W)  # finished captions that, once no live beam can beat them, are final
    deadline = opts.guide_within or T
    state = _take(state, np.repeat(np.arange(n), 2 * W))  # fresh arrays: the live rows are written in place
    required = None  # (N, V) bool, once the first step tells the vocabulary size
    beam_lp = np.full((n, 2, W), NEG_INF)  # (N, 2, W) log-probabilities of the live beams
    beam_lp[:, 0, 0] = 0.0
    seqs = np.zeros((n, 2, W, T), np.int64)  # (N, 2, W, T)
    finished: list[list[Hypothesis]] = [[] for _ in range(n)]
    done = np.zeros(n, bool)
    tokens = np.full(n * 2 * W, START_ID, np.int32)
    at = np.arange(n)[:, None]
    for t in range(T):
        live = np.flatnonzero(np.isfinite(beam_lp).ravel())  # rows holding a beam: only they are stepped
        out, new_state = step(tokens[live], _take(state, live))  # (L, V)
        log_probs = np.full((n * 2 * W, out.shape[1]), NEG_INF)  # (N*2*W, V)
        log_probs[live] = out
        for s, ns in zip(state, new_state):
            s[live] = ns
        if required is None:
            required = np.zeros((n, out.shape[1]), bool)
            rows, cols = np.nonzero(required_ids >= 0)
            required[rows, required_ids[rows, cols]] = True
        log_probs = _constrain(log_probs, seqs.reshape(n * 2 * W, T), t, opts)
        V = log_probs.shape[1]
        lp = log_probs.reshape(n, 2, W, V)
        last = t == T - 1
        late = t >= deadline  # past the deadline: state 0 can neither continue nor meet the constraint
        # state 0 continues with any id that is neither required nor <end> (an unmet caption may not end)
        stay = np.where(required[:, None, :], NEG_INF, lp[:, 0])
        stay[:, :, END_ID] = NEG_INF
        cand0 = (beam_lp[:, 0, :, None] + stay).reshape(n, W * V)  # (N, W*V)
        # state 1: a state-0 beam writing a required id, or any id after a state-1 beam
        met = np.where(required[:, None, :] & (not late), lp[:, 0], NEG_INF)
        cand1 = np.concatenate([beam_lp[:, 0, :, None] + met, beam_lp[:, 1, :, None] + lp[:, 1]], axis=1)
        cand1 = cand1.reshape(n, 2 * W * V)  # (N, 2W*V): the first W*V come from state-0 beams
        new_lp = np.full((n, 2, W), NEG_INF)
        origin = np.zeros((n, 2, W), np.int64)  # row (within the image's 2W) each new beam continues
        new_tokens = np.full((n, 2, W), END_ID, np.int32)
        # state 0: the W best (none on the last step: unmet captions are dropped)
        k0 = min(W, W * V)
        top0 = _top_k(cand0, k0)  # (N, W)
        s0 = cand0[at, top0]
        if not last and t + 1 < deadline:
            w0, v0 = np.divmod(top0, V)
            ok0 = np.isfinite(s0)
            new_lp[:, 0, :k0] = np.where(ok0, s0, NEG_INF)
            origin[:, 0, :k0] = w0  # state-0 beams are rows 0..W-1
            new_tokens[:, 0, :k0] = v0
        # state 1: the 2W best; <end> (or the last step) finishes a caption, the others fill W beams
        k1 = min(2 * W, 2 * W * V)
        top1 = _top_k(cand1, k1)  # (N, 2W)
        s1 = cand1[at, top1]
        src, v1 = np.divmod(top1, V)  # src < W: state-0 beam src; else state-1 beam src - W
        ok1 = np.isfinite(s1) & ~done[:, None]
        ends = (v1 == END_ID) | last
        rank = np.cumsum(ok1 & ~ends, axis=1)
        kept = ok1 & ~ends & (rank <= W)
        fin = ok1 & ends & (rank < W)
        rows, cols = np.nonzero(kept)
        slot = rank[rows, cols] - 1
        new_lp[rows, 1, slot] = s1[rows, cols]
        origin[rows, 1, slot] = src[rows, cols]  # the row within the image's 2W: state-0 beams first
        new_tokens[rows, 1, slot] = v1[rows, cols]
        flat = seqs.reshape(n, 2 * W, T)
        for i, j in zip(*np.nonzero(fin)):
            seq = flat[i, src[i, j], :t].tolist() + [int(v1[i, j])]
            finished[i].append(Hypothesis(seq, float(s1[i, j]), float(s1[i, j]) / length_normaliser(t + 1, alpha)))
        # an image is done when no live beam can beat the finished captions it returns (see _grouped_beam_search)
        best_alive = new_lp.reshape(n, 2 * W).max(axis=1)
        for i in np.flatnonzero(~done):
            scores = sorted((h.score for h in finished[i]), reverse=True)
            bound = _best_final(best_alive[i], t, opts, alpha)
            if best_alive[i] == NEG_INF or (len(scores) >= need and bound <= scores[need - 1]):
                done[i] = True
            elif len(scores) >= need:  # beams that cannot beat them are not searched on (as in beam search)
                bounds = _best_final(new_lp[i], t, opts, alpha)  # (2, W)
                new_lp[i][bounds <= scores[need - 1]] = NEG_INF
        new_lp[done] = NEG_INF
        if done.all() or last:
            break
        seqs = flat[at[:, :, None], origin.reshape(n, 1, 2 * W)].reshape(n, 2, W, T)  # each beam's prefix
        seqs[..., t] = new_tokens
        beam_lp = new_lp
        state = _take(state, (np.arange(n)[:, None] * 2 * W + origin.reshape(n, 2 * W)).ravel())
        tokens = new_tokens.ravel()
    return [sorted(f, key=lambda h: -h.score)[: opts.num_return] for f in finished]
