"""Several decoders decoded as one: each step averages the members' next-word probabilities (equally, or with a
weight per member).

The members may have different vocabularies (a Flickr8k-only decoder beside one that read caption text): the
ensemble decodes over the union (``union_vocabulary``), each member fed its own id of each word (``<unk>`` where it
has none) and giving probability 0 to the words it does not know (``member_ids``). A word only some members know is
then weighed by those members alone: the mean over all members of their probabilities, which still sums to 1."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..config import Config
from ..object_words import COCO_PREFIX
from ..text import RESERVED, UNK_ID, Vocabulary
from .base import NumpyDecoder, teacher_forced_log_probs
from .fusion import vocabulary_map


def union_vocabulary(vocabs: list[Vocabulary]) -> Vocabulary:
    """The words of every vocabulary: the largest's in its order (its ids unchanged), then each other's words it lacks,
    in their order. Its minimum count is the smallest of theirs."""
    first = max(vocabs, key=len)
    words = list(first.id_to_word)
    seen = set(words)
    for v in vocabs:
        for w in v.id_to_word[len(RESERVED):]:
            if w not in seen:
                seen.add(w)
                words.append(w)
    return Vocabulary(words, min_count=min(v.min_count for v in vocabs))


def member_ids(vocab: Vocabulary, member: Vocabulary) -> np.ndarray:
    """(V,) the member's id of each word of ``vocab`` (the ensemble's), -1 where the member lacks the word."""
    return vocabulary_map(vocab, member, missing=-1)


def word_vocabulary(vocab: Vocabulary, vocabs: list[Vocabulary | None], reads_words: list) -> Vocabulary | None:
    """The vocabulary of the members that read object words (``vocabs``: each member's, None for the ensemble's own),
    where it is not the ensemble's ``vocab``; else None. ValueError when those members' vocabularies differ (their
    tags would)."""
    readers = [vocab if v is None else v for v, r in zip(vocabs, reads_words) if r]
    if len({tuple(v.id_to_word) for v in readers}) > 1:
        raise ValueError("the members that read object words must share one vocabulary")
    return readers[0] if readers and readers[0].id_to_word != vocab.id_to_word else None


@dataclasses.dataclass(frozen=True)
class SceneConfig(Config):
    """Unfamiliar scenes: photos of things the members that read only the photo never saw in their training photos
    (a kitchen, a plate, a parked bus for Flickr8k's members), where they write the scene they know, people included.
    On such a photo the members that read object words write from the words alone, as they learned to from caption
    text (zero features: their "no photo" input), and weigh ``share`` of the mean. A photo is unfamiliar when the
    detector's words it reads name something and none of the words it reads (the detector's or the classifier's) is
    ``familiar``: a dog the detector takes for a bear is still a dog to the classifier."""
    share: float = 0.0  # the object-word members' part of the mean on an unfamiliar scene, split among them (0: off)
    familiar: tuple[str, ...] = ()  # the object words the other members know ('coco:dog', 'imagenet:dog'; python -m
    # training ensemble: those named in at least --familiar-min-share of their training captions)

    def __post_init__(self):
        if not 0.0 <= self.share < 1.0:
            raise ValueError(f"SceneConfig.share is the object-word members' part of the mean: in [0, 1), got "
                             f"{self.share}")
        object.__setattr__(self, "familiar", tuple(self.familiar))


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Whether two members map the ensemble's words the same way (None: they are its own)."""
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


class EnsembleDecoder:
    """Several merge decoders over one vocabulary, decoded as one: member ``i`` reads its slice of the
    features (the ``concat`` encoder's members, in order), and each step returns the log of the members' mean
    next-word probability. The state is the members' states side by side in one flat tuple, so every
    decoding strategy reorders it like a single decoder's. Members that read object words
    (``DecoderConfig.object_words``, the same tags for all of them) read the photo's after their slice: the ensemble's
    input is the slices, then those words (N, D + W).

    ``ids``: per member, None where it shares the ensemble's vocabulary, else ``member_ids(ensemble's, member's)``
    (V,): its id of each of the ensemble's words, -1 for none (it gives those probability 0). ``word_vocab``: the
    vocabulary of the members that read object words, where it is not the ensemble's (their tags, and which word an
    ImageNet class counts as, are theirs: the captioner computes the photo's object words over it). ``weights``: each
    member's weight in the mean (None: equal), any positive numbers, normalised to sum to 1. ``scenes``: on an
    unfamiliar scene (``SceneConfig``) the members that read object words read them without the photo and weigh its
    ``share``; each row's weights then travel in the state (its last array, (N, M)), reordered with its beam."""

    def __init__(self, members: list, slices: list[tuple[int, int]], ids: list[np.ndarray | None] | None = None,
                 word_vocab: Vocabulary | None = None, weights: list[float] | None = None,
                 scenes: SceneConfig | None = None):
        if not members or len(members) != len(slices):
            raise ValueError(f"an ensemble needs one feature slice per member decoder ({len(members)} decoders, "
                             f"{len(slices)} slices)")
        ids = list(ids) if ids is not None else [None] * len(members)
        if len(ids) != len(members):
            raise ValueError(f"{len(members)} member decoders but {len(ids)} vocabulary maps")
        size = next((len(i) for i in ids if i is not None), members[0].config.vocab_size)  # the ensemble's vocabulary
        first = members[0].config
        for m, (a, b), i in zip(members, slices, ids):
            if m.config.max_length != first.max_length:
                raise ValueError(f"ensemble members must share the caption length: {m.config.max_length} vs "
                                 f"{first.max_length}")
            if i is None and m.config.vocab_size != size:
                raise ValueError(f"ensemble members must share the vocabulary, or each be given its word ids: a member "
                                 f"of {m.config.vocab_size} words in an ensemble of {size} (python -m training ensemble "
                                 "maps them)")
            if i is not None and (len(i) != size or i.max() >= m.config.vocab_size
                                  or tuple(i[:len(RESERVED)]) != tuple(range(len(RESERVED)))):
                raise ValueError(f"a member's word ids must map the ensemble's {size} words (reserved ids first) into "
                                 f"its {m.config.vocab_size}")
            if b - a != m.config.feature_dim:
                raise ValueError(f"feature slice {a}:{b} does not fit a member that reads {m.config.feature_dim} features")
        tags = {m.config.object_words for m in members if m.config.object_words}
        if len(tags) > 1:
            raise ValueError("ensemble members that read object words must read the same ones (the same vocabulary "
                             "gives the same tags)")
        self.members, self.slices, self.word_vocab = members, slices, word_vocab
        self.ids = [None if i is None else np.asarray(i, np.int64) for i in ids]
        # per mapped member: its id of each ensemble word (<unk> standing in for those it lacks, to read a token)
        self._feed = [None if i is None else np.where(i < 0, UNK_ID, i) for i in self.ids]
        base = next((m.config for m in members if m.config.object_words), first)  # (only a merge kind reads words)
        self.config = dataclasses.replace(base, feature_dim=max(b for _, b in slices), vocab_size=size,
                                          object_words=next(iter(tags), ()))
        self._sizes = [m.state_arrays for m in members]  # each member's share of the flat state
        w = np.ones(len(members)) if weights is None else np.asarray(weights, np.float64)
        if w.shape != (len(members),) or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError(f"ensemble weights must be one positive number per member ({len(members)}), got {weights}")
        self.weights = None if weights is None else [float(x) for x in w / w.sum()]  # normalised, as saved
        self._w = (w / w.sum()).astype(np.float32)
        self.scenes = scenes if scenes is not None and scenes.share > 0 else None
        if self.scenes is not None:
            self._scene_setup(self.scenes)
        # members over the same vocabulary are summed in it and spread over the ensemble's once (a member's own
        # vocabulary is the ensemble's, or its first words: a slice; else one gather, its missing words reading a
        # zero column): the default's three Flickr8k members share one, and a gather and scatter per member cost
        # a tenth of a millisecond at each step
        self._groups: list[tuple[list[int], np.ndarray | None, int]] = []  # (members, spread or None, width)
        for k, i in enumerate(self.ids):
            vm = members[k].config.vocab_size
            group = next((g for g in self._groups if _same(self.ids[g[0][0]], i)), None)
            if group is not None:
                group[0].append(k)
            elif i is None or (np.array_equal(i[:vm], np.arange(vm)) and np.all(i[vm:] < 0)):
                self._groups.append(([k], None, vm))  # its words are the ensemble's first vm
            else:
                self._groups.append(([k], np.where(i < 0, vm, i), vm))  # (V,) where each ensemble word is

    def _scene_setup(self, scenes: SceneConfig) -> None:
        readers = np.array([bool(m.config.object_words) for m in self.members])
        if not readers.any() or readers.all():
            raise ValueError("unfamiliar scenes need members that read object words and members that do not: "
                             f"{int(readers.sum())} of {len(readers)} read them")
        tags = self.config.object_words
        unknown = [t for t in scenes.familiar if t not in tags]
        if unknown:
            raise ValueError(f"familiar object words must be ones the members read: {unknown}; valid: {list(tags)}")
        self._coco_cols = np.array([i for i, t in enumerate(tags) if t.startswith(COCO_PREFIX)])
        self._familiar_cols = np.array([tags.index(t) for t in scenes.familiar], np.int64)
        w = self._w.astype(np.float64)
        on = np.where(readers, scenes.share / readers.sum(), (1 - scenes.share) * w / w[~readers].sum())
        self._scene_w = on.astype(np.float32)  # (M,): the weights on an unfamiliar scene

    def unfamiliar(self, words: np.ndarray) -> np.ndarray:
        """(N,) bool: the photos whose object words (N, W) hold something the detector found and nothing familiar
        (all False where the ensemble has no ``scenes``)."""
        words = np.asarray(words) > 0
        if self.scenes is None:
            return np.zeros(len(words), bool)
        return words[:, self._coco_cols].any(axis=1) & ~words[:, self._familiar_cols].any(axis=1)  # (N,)

    def replace(self, **changes) -> "EnsembleDecoder":
        """The same members with other ``weights`` or ``scenes`` (any argument of the constructor)."""
        return EnsembleDecoder(**{"members": self.members, "slices": self.slices, "ids": self.ids,
                                  "word_vocab": self.word_vocab, "weights": self.weights, "scenes": self.scenes,
                                  **changes})

    blas_threads = staticmethod(NumpyDecoder.blas_threads)

    def member_tokens(self, k: int, tokens: np.ndarray) -> np.ndarray:
        """The ensemble's token ids (any shape) as member ``k`` reads them: its own ids, <unk> for words it lacks."""
        tokens = np.asarray(tokens)
        return tokens if self._feed[k] is None else self._feed[k][tokens]

    @property
    def state_arrays(self) -> int:
        return sum(self._sizes) + (self.scenes is not None)  # (+ each row's weights)

    def initial_state(self, features: np.ndarray) -> tuple:
        x = np.asarray(features, dtype=np.float32)  # (N, D + W)
        words = x[:, self.config.feature_dim:]  # (N, W): the object words, for the members that read them
        unfamiliar = self.unfamiliar(words)  # (N,)
        states = []
        for m, (a, b) in zip(self.members, self.slices):
            if not m.config.object_words:
                states.append(m.initial_state(x[:, a:b]))
                continue
            own = np.concatenate([x[:, a:b], words], axis=1)  # (N, d + W)
            own[unfamiliar, :b - a] = 0.0  # on an unfamiliar scene: the words alone, no photo
            states.append(m.initial_state(own))
        flat = tuple(arr for s in states for arr in s)
        if self.scenes is None:
            return flat
        w = np.where(unfamiliar[:, None], self._scene_w, self._w)  # (N, M): each row's weights
        return (*flat, w.astype(np.float32))

    def step(self, tokens: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        outs, at = [], 0
        for k, (member, size) in enumerate(zip(self.members, self._sizes)):
            outs.append(member.step(self.member_tokens(k, tokens), state[at:at + size]))
            at += size
        w = self._w if self.scenes is None else state[-1]  # (M,) or (B, M)
        total = np.zeros((len(tokens), self.config.vocab_size), np.float32)  # (B, V): the weighted mean probability
        for members, spread, width in self._groups:
            acc = np.zeros((len(tokens), width + 1), np.float32)  # (B, V_member + 1): a zero column last
            for k in members:
                p = np.exp(outs[k][0])  # (B, V_member): normalised log-probabilities, so no overflow
                p *= w[k] if w.ndim == 1 else w[:, k:k + 1]
                acc[:, :width] += p
            if spread is None:
                total[:, :width] += acc[:, :width]
            else:  # the words it knows; the others get probability 0 from it (the zero column)
                total += np.take(acc, spread, axis=1)  # (B, V)
        # its log; a word every member gives less than float32's smallest normal (1e-38) is floored there
        log_mean = np.log(np.maximum(total, np.finfo(np.float32).tiny))  # (B, V)
        new = tuple(arr for _, s in outs for arr in s)
        return log_mean.astype(np.float32, copy=False), (new if self.scenes is None else (*new, w))

    def token_log_probs(self, features: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
        return teacher_forced_log_probs(self, features, token_ids)
