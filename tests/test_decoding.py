"""Decoding strategies against fake step functions whose right answers are known."""

import numpy as np
import pytest

from caption_core.decoding import ALL_OPTIONS, STRATEGIES, decode, get_strategy
from caption_core.text import END_ID, START_ID

V = 9  # 0..3 reserved, words 4..8
A, B, C, D, E = 4, 5, 6, 7, 8


def markov(table: dict[int, dict[int, float]], per_image=None):
    """A step function: next-token distribution depends on the last token (and on the image
    index carried in the state, when ``per_image`` gives one table per image)."""
    def dist(t, tab):
        p = np.full(V, 1e-6)
        for k, v in tab.get(int(t), {END_ID: 1.0}).items():
            p[k] = v
        return np.log(p / p.sum())

    calls = {"rows": []}

    def step(tokens, state):
        (image,) = state
        calls["rows"].append(len(tokens))
        tabs = [per_image[int(i)] if per_image else table for i in image]
        return np.stack([dist(t, tab) for t, tab in zip(tokens, tabs)]), state

    step.calls = calls
    return step


# START -> A (0.6) or B (0.4); A -> C .34 / D .33 / END .33; B -> END; C, D -> END
TRAP = {START_ID: {A: 0.6, B: 0.4}, A: {C: 0.34, D: 0.33, END_ID: 0.33}, B: {END_ID: 1.0}}


def state_for(n):
    return (np.arange(n),)


def test_greedy_follows_the_most_likely_path_and_stops_at_end():
    [[h]] = decode(markov(TRAP), state_for(1), 1, "greedy")
    assert h.tokens == [A, C, END_ID]
    assert h.log_prob == pytest.approx(np.log(0.6 * 0.34), abs=1e-4)


def test_beam_beats_greedy_where_it_should():
    step = markov(TRAP)
    [[best, second]] = decode(step, state_for(1), 1, "beam", beam_width=2, num_return=2)
    assert best.tokens == [B, END_ID]
    assert best.log_prob == pytest.approx(np.log(0.4), abs=1e-4)
    assert best.log_prob > np.log(0.6 * 0.34)
    assert second.tokens[0] == A


def test_beam_keeps_images_apart_in_a_batch():
    other = {START_ID: {C: 0.9, D: 0.1}, C: {E: 0.9, END_ID: 0.1}, E: {END_ID: 1.0}}
    step = markov(None, per_image=[TRAP, other, TRAP])
    out = decode(step, state_for(3), 3, "beam", beam_width=3)
    assert [o[0].tokens for o in out] == [[B, END_ID], [C, E, END_ID], [B, END_ID]]
    greedy = decode(step, state_for(3), 3, "greedy")
    assert [g[0].tokens for g in greedy] == [[A, C, END_ID], [C, E, END_ID], [A, C, END_ID]]


def test_length_penalty_favours_longer_captions():
    table = {START_ID: {A: 0.5, B: 0.5}, A: {END_ID: 1.0}, B: {C: 0.9, END_ID: 0.1}, C: {D: 0.9, END_ID: 0.1},
             D: {END_ID: 1.0}}
    plain = decode(markov(table), state_for(1), 1, "beam", beam_width=3)[0][0]
    long = decode(markov(table), state_for(1), 1, "beam", beam_width=3, length_penalty=2.0)[0][0]
    assert plain.tokens == [A, END_ID]
    assert long.tokens == [B, C, D, END_ID]


def test_no_repeat_ngram_holds():
    loop = {START_ID: {A: 1.0}, A: {B: 0.9, C: 0.05}, B: {A: 0.9, C: 0.05}, C: {D: 0.9}, D: {A: 0.9}}
    for strategy in ("greedy", "beam", "sample", "diverse_beam"):
        [h, *_] = decode(markov(loop), state_for(1), 1, strategy, max_length=15, no_repeat_ngram_size=2, seed=0)[0]
        words = [t for t in h.tokens if t != END_ID]
        bigrams = list(zip(words, words[1:]))
        assert len(bigrams) == len(set(bigrams)), (strategy, words)
    [[h]] = decode(markov(loop), state_for(1), 1, "greedy", max_length=6)
    assert h.tokens == [A, B, A, B, A, B]  # without the rule it loops until max_length


def test_no_repeat_within_keeps_content_words_apart_but_lets_function_words_repeat():
    loop = {START_ID: {A: 1.0}, A: {B: 0.9, C: 0.05}, B: {A: 0.9, C: 0.05}, C: {D: 0.9}, D: {A: 0.9}}
    [[h]] = decode(markov(loop), state_for(1), 1, "greedy", max_length=8, no_repeat_within=2)
    assert h.tokens[:4] == [A, B, C, D]  # A B A (A again 2 words on) is what it would write: C instead
    repeatable = np.zeros(V, bool)
    repeatable[:4] = True
    repeatable[A] = True  # A as a function word ("a", "the") may come again at once
    [[h]] = decode(markov(loop), state_for(1), 1, "greedy", max_length=6, no_repeat_within=2, repeatable=repeatable)
    assert h.tokens == [A, B, A, C, D, A]  # B may not: after A B A, not B
    [[h]] = decode(markov(loop), state_for(1), 1, "greedy", max_length=6, no_repeat_within=0, repeatable=repeatable)
    assert h.tokens == [A, B, A, B, A, B]  # off: the loop


@pytest.mark.parametrize("gap", [1, 3, 5])
def test_no_repeat_within_holds_for_every_strategy_and_every_caption(gap):
    repeatable = np.zeros(12, bool)
    repeatable[:4] = True
    repeatable[[4, 5]] = True  # two function words
    for strategy, extra in (("greedy", {}), ("beam", {"beam_width": 4, "num_return": 4}),
                            ("beam", {"beam_width": 4, "num_return": 4, "consensus": True}),
                            ("sample", {"num_return": 5, "seed": 1}), ("diverse_beam", {"num_return": 4}),
                            ("guided", {"beam_width": 3, "num_return": 3})):
        kwargs = {}
        if strategy == "guided":
            from caption_core.decoding import Constraint
            kwargs["constraints"] = [Constraint(frozenset({9})), None, Constraint(frozenset({10}), frozenset({7}))]
        s = get_strategy(strategy)
        opts = s.make_options(max_length=20, no_repeat_within=gap, **extra)
        for per in s.run(random_model(3), (np.arange(3),), 3, opts, repeatable=repeatable, **kwargs):
            assert per, strategy
            for h in per:
                words = [t for t in h.tokens if t != END_ID]
                for i, t in enumerate(words):
                    assert repeatable[t] or t not in words[max(0, i - gap):i], (strategy, gap, words)


def test_top_k_and_top_p_never_emit_excluded_tokens():
    first = {START_ID: {A: 0.5, B: 0.3, C: 0.1, D: 0.06, E: 0.04}}
    n = 400
    out = decode(markov(first), state_for(n), n, "sample", seed=1, top_k=2)
    assert {o[0].tokens[0] for o in out} == {A, B}
    out = decode(markov(first), state_for(n), n, "sample", seed=2, top_p=0.7)
    assert {o[0].tokens[0] for o in out} == {A, B}  # 0.5 + 0.3 covers 0.7
    out = decode(markov(first), state_for(n), n, "sample", seed=3, top_p=0.4)
    assert {o[0].tokens[0] for o in out} == {A}
    out = decode(markov(first), state_for(n), n, "sample", seed=4)
    assert {o[0].tokens[0] for o in out} >= {A, B, C}


def test_sampling_is_reproducible_with_a_seed_and_returns_n_best():
    step = markov({START_ID: {A: 0.4, B: 0.3, C: 0.3}})
    a = decode(step, state_for(2), 2, "sample", seed=7, num_return=4)
    b = decode(step, state_for(2), 2, "sample", seed=7, num_return=4)
    assert [[h.tokens for h in x] for x in a] == [[h.tokens for h in x] for x in b]
    assert all(len(x) == 4 for x in a)
    assert all(x[i].score >= x[i + 1].score for x in a for i in range(3))


def test_low_temperature_sampling_is_greedy():
    step = markov({START_ID: {A: 0.6, B: 0.4}, A: {C: 0.5, D: 0.25, END_ID: 0.25}, B: {END_ID: 1.0}})
    out = decode(step, state_for(50), 50, "sample", seed=0, temperature=0.01)  # p(C) / p(D) = 2 ** 100
    assert all(o[0].tokens == [A, C, END_ID] for o in out)


def test_finished_rows_leave_the_batch():
    table = {START_ID: {A: 1.0}, A: {END_ID: 1.0}}
    other = {START_ID: {B: 1.0}, B: {C: 1.0}, C: {D: 1.0}, D: {END_ID: 1.0}}
    step = markov(None, per_image=[table, other])
    decode(step, state_for(2), 2, "greedy")
    assert step.calls["rows"] == [2, 2, 1, 1]


def test_max_length_and_min_length():
    forever = {START_ID: {A: 1.0}, A: {A: 1.0}}
    [[h]] = decode(markov(forever), state_for(1), 1, "beam", max_length=5)
    assert len(h.tokens) == 5
    quick = {START_ID: {END_ID: 0.9, A: 0.1}, A: {END_ID: 1.0}}
    [[h]] = decode(markov(quick), state_for(1), 1, "greedy")
    assert h.tokens == [A, END_ID]  # <end> is banned before the first word


def test_diverse_beam_search_returns_different_captions():
    """Plain beam's n-best are variants of one opening; diverse beam's groups start differently."""
    table = {START_ID: {A: 0.8, B: 0.1, C: 0.1}, A: {D: 0.5, E: 0.3, END_ID: 0.2}, D: {END_ID: 1.0},
             E: {END_ID: 1.0}, B: {END_ID: 1.0}, C: {END_ID: 1.0}}
    plain = decode(markov(table), state_for(1), 1, "beam", beam_width=3, num_return=3)[0]
    assert [h.tokens[0] for h in plain] == [A, A, A]
    diverse = decode(markov(table), state_for(1), 1, "diverse_beam", beam_groups=3, group_width=1,
                     diversity_penalty=3.0)[0]  # log 0.8 - 3 < log 0.1: a later group starts elsewhere
    assert len(diverse) == 3 and len({h.tokens[0] for h in diverse}) == 3
    assert diverse[0].tokens == [A, D, END_ID]  # the first group is plain beam search
    assert all(d.log_prob == pytest.approx(np.log(np.prod([table.get(p, {}).get(t, 0) for p, t in
                                                                 zip([START_ID] + d.tokens, d.tokens)])), abs=1e-4)
               for d in diverse)  # true log-probabilities, not the penalised selection scores
    # no penalty: the groups search alike, and the same caption is listed once
    same = decode(markov(table), state_for(1), 1, "diverse_beam", beam_groups=3, group_width=1,
                  diversity_penalty=0.0)[0]
    assert [h.tokens for h in same] == [[A, D, END_ID]]
    # batched like the others: every image gets its own answer
    out = decode(markov(None, per_image=[table, TRAP]), state_for(2), 2, "diverse_beam", group_width=1,
                 diversity_penalty=3.0)
    assert out[0][0].tokens == [A, D, END_ID] and out[1][0].tokens[0] in (A, B)


def test_registry_and_option_errors():
    assert {"greedy", "beam", "sample", "diverse_beam"} <= set(STRATEGIES)
    with pytest.raises(ValueError, match="valid: \\['beam', "):
        get_strategy("nucleus")
    sample = get_strategy("sample")
    with pytest.raises(ValueError, match="temperature"):
        sample.make_options(temperature=0)
    with pytest.raises(ValueError, match="top_p"):
        sample.make_options(top_p=0)
    with pytest.raises(ValueError, match="top_k must be int"):
        sample.make_options(top_k="many")
    with pytest.raises(ValueError, match="unknown decoding options \\['beams'\\]"):
        get_strategy("beam").make_options({"beams": 3})
    beam = get_strategy("beam")
    opts = beam.make_options(beam_width="5", temperature=0.3)  # strings coerced; another strategy's option ignored
    assert opts.beam_width == 5 and not hasattr(opts, "temperature")
    assert type(opts).from_dict(opts.to_dict()) == opts and type(opts).from_json(opts.to_json()) == opts
    assert sample.make_options(seed=-1).seed is None and sample.make_options(seed="").seed is None
    assert sample.make_options(seed=7).seed == 7


def test_every_option_is_declared_once_with_a_range_and_help():
    for s in STRATEGIES.values():
        assert s.help and s.options
        for o in s.options:
            assert ALL_OPTIONS[o.name] is o, o.name  # one definition shared by every strategy that reads it
            assert o.help
            if o.type in (int, float):
                assert o.min is not None and o.max is not None and o.min <= (o.default if o.default is not None
                                                                            else o.min) <= o.max
            default = getattr(s.make_options(), o.name)  # the option's, or the strategy's own
            assert o.check(default) == default and s.make_options({o.name: default}) == s.make_options()


def test_decoding_flags_are_made_from_the_registry():
    import argparse

    from caption_core.decoding import add_decoding_arguments, decoding_arguments

    p = argparse.ArgumentParser()
    add_decoding_arguments(p)
    args = p.parse_args(["--strategy", "sample", "--top-p", "0.8", "--ban-unknown", "false"])
    assert decoding_arguments(args) == ("sample", {"top_p": 0.8, "ban_unknown": False})
    assert decoding_arguments(p.parse_args([])) == (None, {})
    text = p.format_help()
    for name in ALL_OPTIONS:
        assert "--" + name.replace("_", "-") in text


def test_vectorised_no_repeat_ngram_matches_a_plain_scan():
    """The vectorised n-gram ban bans exactly what a scan of each prefix bans."""
    from caption_core.decoding import _constrain

    rng = np.random.default_rng(0)
    for n in (1, 2, 3):
        seqs = rng.integers(4, 7, size=(20, 9))
        opts = get_strategy("greedy").make_options(no_repeat_ngram_size=n, min_length=0)
        lp = _constrain(np.zeros((20, V)), seqs, 9, opts)
        for row, seq in enumerate(seqs.tolist()):
            prefix = tuple(seq[len(seq) - n + 1:]) if n > 1 else ()
            banned = {seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i:i + n - 1]) == prefix}
            assert {int(v) for v in np.flatnonzero(np.isinf(lp[row])) if v >= 4} == banned


def test_top_k_is_a_stable_sort_of_the_best():
    """The candidates' selection (a bound from interleaved groups' maxima, then a sort of what passes it) picks what
    a full stable sort picks: ties to the lower index, rows of -inf, a row all -inf, rows too short for the bound."""
    from caption_core.decoding import _top_k

    rng = np.random.default_rng(0)
    for trial in range(400):
        n, m = int(rng.integers(1, 5)), int(rng.choice([3, 100, 255, 256, 257, 2533 * 5, 4373 * 2]))
        k = int(rng.integers(1, min(m, 21) + 1))
        scores = rng.normal(size=(n, m))
        if trial % 3 == 0:
            scores = np.round(scores, 1)  # many ties
        if trial % 5 == 0:
            scores[rng.random((n, m)) < 0.9] = -np.inf
        if trial % 7 == 0:
            scores[0] = -np.inf
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        assert _top_k(scores, k).tolist() == expected.tolist(), (n, m, k)


def random_model(seed: int, vocab: int = 12, states: int = 500):
    """A step function over a random table: the next word's distribution depends on a hash of the whole prefix (and
    the image), so beams stay apart and scores rarely tie. Counts the rows it steps."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(states, vocab))
    logits[:, END_ID] -= 1.0

    def step(tokens, state):
        (h,) = state
        h = (h * 31 + np.asarray(tokens) + 7) % states  # (B,)
        z = logits[h]
        step.rows += len(tokens)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True)), (h,)

    step.rows = 0
    return step


def textbook_beam(step, n_images: int, width: int, alpha: float, max_length: int):
    """Plain beam search, one image at a time, each candidate scored as it is and every beam stepped: the W best
    continuing candidates live on, an <end> candidate ahead of the W-th continuing one finishes, and an image stops
    once it has W finished hypotheses that no live beam can beat. Returns each image's hypotheses, best first."""
    from caption_core.decoding import length_normaliser

    out = []
    for image in range(n_images):
        beams, finished = [(0.0, [], image)], []  # (log-probability, words, step state)
        for t in range(max_length):
            tokens = np.array([ws[-1] if ws else START_ID for _, ws, _ in beams])
            lp, (h,) = step(tokens, (np.array([s for _, _, s in beams]),))
            lp = lp.copy()
            lp[:, [0, START_ID, 3]] = -np.inf  # <pad>, <start>, <unk>
            if t < 1:
                lp[:, END_ID] = -np.inf  # min_length 1
            cands = sorted(((b_lp + lp[b, v], b * lp.shape[1] + v, b, v) for b, (b_lp, _, _) in enumerate(beams)
                            for v in range(lp.shape[1]) if np.isfinite(lp[b, v])), key=lambda c: (-c[0], c[1]))
            kept = []
            for score, _, b, v in cands[:2 * width]:
                if (v == END_ID or t == max_length - 1) and len(kept) < width:
                    words = beams[b][1] + [v]
                    finished.append((score / length_normaliser(len(words), alpha), score, words))
                elif v != END_ID and len(kept) < width:
                    kept.append((score, beams[b][1] + [v], h[b]))
            beams = kept
            ranked = sorted((f[0] for f in finished), reverse=True)
            best = max((b[0] for b in beams), default=-np.inf)
            bound = best / length_normaliser(max_length, alpha) if alpha > 0 else best
            if not beams or (len(ranked) >= width and bound <= ranked[width - 1]):
                break
        out.append(sorted(finished, key=lambda f: -f[0]))
    return out


@pytest.mark.parametrize("width,alpha", [(3, 0.0), (5, 1.0), (4, 0.7)])
def test_beam_search_returns_what_textbook_beam_search_returns_with_fewer_rows(width, alpha):
    """Beam search stops once no live beam can beat the hypotheses it returns and stops stepping the beams that
    cannot: the same captions and scores as searching every beam on to W finished hypotheses, in fewer rows."""
    for seed in range(6):
        n_images, T = 3, 9
        reference = textbook_beam(random_model(seed), n_images, width, alpha, T)
        for n_return in (1, 2, width):
            step = random_model(seed)
            got = decode(step, (np.arange(n_images),), n_images, "beam", beam_width=width, length_penalty=alpha,
                         num_return=n_return, max_length=T, no_repeat_ngram_size=0)
            for per, ref in zip(got, reference):
                assert [h.tokens for h in per] == [r[2] for r in ref[:n_return]]
                assert [h.score for h in per] == pytest.approx([r[0] for r in ref[:n_return]], abs=1e-6)
            if n_return == 1:
                textbook = random_model(seed)
                textbook_beam(textbook, n_images, width, alpha, T)
                assert step.rows < textbook.rows, (seed, step.rows, textbook.rows)


# START -> A .45 / B .55; B -> END; A -> C -> D -> E -> END. With alpha = 1, "B" (2 words) scores log .55 / (7/6) =
# -0.512 and "A C D E" (5 words) log .45 / (10/6) = -0.479: the long caption wins, found only by searching A on.
LONG_WINS = {START_ID: {A: 0.45, B: 0.55}, B: {END_ID: 1.0}, A: {C: 1.0}, C: {D: 1.0}, D: {E: 1.0}, E: {END_ID: 1.0}}


@pytest.mark.parametrize("strategy", ["beam", "guided"])
def test_lookahead_drops_a_beam_that_could_only_win_by_growing(strategy):
    """After step 2 "B" has finished (-0.512) and "A C" lives on (log-probability -0.799): it beats -0.512 only by
    ending 3 or more words later (-0.799 / (10/6)). The exact search (lookahead up to max_length) finds "A C D E";
    a lookahead of 2 words drops the beam then, and returns "B", in fewer rows; 3 words is enough."""
    words = {}
    for lookahead in (60, 3, 2, 0):
        step = markov(LONG_WINS)
        [[h]] = decode(step, state_for(1), 1, strategy, beam_width=2, length_penalty=1.0, max_length=9,
                       lookahead=lookahead)
        words[lookahead] = (h.tokens, sum(step.calls["rows"]))
    assert words[60][0] == words[3][0] == [A, C, D, E, END_ID]
    assert words[2][0] == words[0][0] == [B, END_ID]
    assert words[2][1] < words[3][1] <= words[60][1]


def test_lookahead_of_max_length_is_the_exact_search_and_fewer_words_step_fewer_rows():
    """Any lookahead of max_length or more is the exact search (the same captions and rows); a short one steps fewer
    rows over many images, and what it returns are real paths scored as the exact search scores them."""
    rows = {}
    for lookahead in (60, 12, 2, 0):
        rows[lookahead], got = 0, []
        for seed in range(6):
            step = random_model(seed)
            got.append(decode(step, (np.arange(3),), 3, "beam", beam_width=4, length_penalty=1.0, num_return=4,
                              max_length=12, no_repeat_ngram_size=0, lookahead=lookahead))
            rows[lookahead] += step.rows
            for per in got[-1]:
                assert all(h.score == pytest.approx(h.log_prob / ((5 + len(h.tokens)) / 6)) for h in per)
        if lookahead == 60:
            exact = got
        elif lookahead == 8:
            assert [[[h.tokens for h in per] for per in g] for g in got] == \
                [[[h.tokens for h in per] for per in g] for g in exact]
    assert rows[12] == rows[60]
    assert rows[0] < rows[2] < rows[60]


def test_constrained_search_stops_early_with_the_same_best_caption():
    """The constrained search's early stop and dead-beam pruning (one caption returned) give the caption and score
    that searching on for W does (every caption returned)."""
    from caption_core.decoding import Constraint, guided_beam_search

    for seed in range(8):
        opts = lambda n: get_strategy("guided").make_options(  # noqa: E731
            {"beam_width": 4, "max_length": 9, "num_return": n, "length_penalty": 1.0, "no_repeat_ngram_size": 0})
        required = [Constraint(frozenset({9 + seed % 3})), Constraint(frozenset({4, 11}), frozenset({6}))]
        one, all_ = random_model(seed), random_model(seed)
        first = guided_beam_search(one, (np.arange(2),), 2, opts(1), required)
        every = guided_beam_search(all_, (np.arange(2),), 2, opts(4), required)
        assert [[h.tokens for h in per] for per in first] == [[h.tokens for h in per[:1]] for per in every]
        assert [h.score for per in first for h in per] == pytest.approx([per[0].score for per in every], abs=1e-6)
        assert one.rows <= all_.rows


def _hyp(tokens, score):
    from caption_core.decoding import Hypothesis
    return Hypothesis(list(tokens) + [END_ID], score, score)


def test_agreement_is_one_for_the_same_caption_and_zero_for_nothing_shared():
    from caption_core.decoding import _ngram_profile, agreement
    same = _ngram_profile([A, B, C, D, END_ID])
    assert agreement(same, _ngram_profile([A, B, C, D])) == pytest.approx(1.0)  # <end> is not a word
    assert agreement(same, _ngram_profile([E, E, E, E, END_ID])) == 0.0
    # one word of two shared, no bigram: a quarter of the unigram cosine (0.5), the lengths alike
    assert agreement(_ngram_profile([A, B]), _ngram_profile([C, B])) == pytest.approx(0.5 / 4)
    # a length difference costs what CIDEr-D's Gaussian (sigma 6) says
    longer = agreement(_ngram_profile([A, B]), _ngram_profile([A, B, A, B, A, B, A, B]))
    assert 0 < longer < agreement(_ngram_profile([A, B]), _ngram_profile([A, B, A, B]))


def test_consensus_picks_what_the_others_agree_with_and_low_temperature_keeps_the_search_order():
    from caption_core.decoding import _ngram_profile, agreement, consensus_order
    pool = [_hyp([A, B, C], -0.5), _hyp([D, E, D], -1.0), _hyp([D, E, D, E], -1.1), _hyp([D, E, E], -1.2)]
    fresh = lambda: [_hyp(h.tokens[:-1], h.score) for h in pool]  # noqa: E731
    equal = consensus_order(fresh(), temperature=0.0)
    assert equal[0].tokens[0] == D and equal[-1].tokens[0] == A  # three say "D E ...", one says "A B C"
    assert equal[-1].agreement == pytest.approx(1 / 4)  # it agrees with itself alone
    # the expected agreement under equal weights: the row means of the agreement matrix (1 on the diagonal)
    profiles = [_ngram_profile(h.tokens) for h in pool]
    want = [np.mean([1.0 if i == j else agreement(a, b) for j, b in enumerate(profiles)]) for i, a in enumerate(profiles)]
    assert sorted(h.agreement for h in equal) == pytest.approx(sorted(want))
    # weighed exp(score / T): with a small T the most probable caption's weight is nearly all: it comes first
    assert consensus_order(fresh(), temperature=0.05)[0].tokens == [A, B, C, END_ID]
    assert consensus_order(fresh(), temperature=1.0)[0].tokens[0] == D  # at 1, the three outvote it
    assert consensus_order(pool[:1]) == pool[:1]  # one caption: nothing to vote


def test_beam_with_consensus_returns_the_caption_the_beams_agree_on():
    # START -> A .4 (then <end>), B .3 or C .3 (each then D, then <end>): the most probable caption is "A", but
    # the other two beams share "D": consensus prefers one of them
    table = {START_ID: {A: 0.4, B: 0.3, C: 0.3}, A: {END_ID: 1.0}, B: {D: 1.0}, C: {D: 1.0}, D: {END_ID: 1.0}}
    [[plain]] = decode(markov(table), state_for(1), 1, "beam", beam_width=3)
    assert plain.tokens == [A, END_ID] and plain.agreement is None
    [[agreed]] = decode(markov(table), state_for(1), 1, "beam", beam_width=3, consensus=True,
                        consensus_temperature=0.0)
    assert agreed.tokens[1:] == [D, END_ID] and agreed.agreement == pytest.approx((1.0 + 0.5 / 4 + 0.0) / 3)
    both = decode(markov(table), state_for(1), 1, "beam", beam_width=3, consensus=True, num_return=3,
                  consensus_temperature=0.0)[0]
    assert [h.tokens[0] for h in both][2] == A and len(both) == 3  # the n best, in consensus order
    # weighed by probability (T = 1): "A" (0.4) expects 0.4, "B D" 0.3 + 0.3 x 1/8: the probable one stays
    [[weighed]] = decode(markov(table), state_for(1), 1, "beam", beam_width=3, consensus=True)
    assert weighed.tokens == [A, END_ID] and weighed.agreement == pytest.approx(0.4, abs=1e-4)
    # batched like every strategy: each image its own pool
    out = decode(markov(None, per_image=[table, TRAP]), state_for(2), 2, "beam", beam_width=3, consensus=True,
                 consensus_temperature=0.0)
    assert out[0][0].tokens[1:] == [D, END_ID] and len(out[1]) == 1
    # diverse beam search's pool is its groups' beams
    div = decode(markov(table), state_for(1), 1, "diverse_beam", beam_groups=3, group_width=1, consensus=True,
                 consensus_temperature=0.0, num_return=1)[0]
    assert div[0].tokens[1:] == [D, END_ID]
