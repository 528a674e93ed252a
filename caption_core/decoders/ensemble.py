"""Several decoders over one vocabulary decoded as one: each step averages the members' next-word probabilities."""

from __future__ import annotations

import dataclasses

import numpy as np

from .base import NumpyDecoder, teacher_forced_log_probs


class EnsembleDecoder:
    """Several merge decoders over one vocabulary, decoded as one: member ``i`` reads its slice of the
    features (the ``concat`` encoder's members, in order), and each step returns the log of the members' mean
    next-word probability. The state is the members' states side by side in one flat tuple, so every
    decoding strategy reorders it like a single decoder's. Members that read object words
    (``DecoderConfig.object_words``, the same tags for all of them) read the photo's after their slice: the ensemble's
    input is the slices, then those words (N, D + W)."""

    def __init__(self, members: list, slices: list[tuple[int, int]]):
        if not members or len(members) != len(slices):
            raise ValueError(f"an ensemble needs one feature slice per member decoder ({len(members)} decoders, "
                             f"{len(slices)} slices)")
        first = members[0].config
        for m, (a, b) in zip(members, slices):
            if m.config.vocab_size != first.vocab_size or m.config.max_length != first.max_length:
                raise ValueError("ensemble members must share the vocabulary and the caption length: "
                                 f"{m.config.vocab_size}/{m.config.max_length} vs {first.vocab_size}/{first.max_length}")
            if b - a != m.config.feature_dim:
                raise ValueError(f"feature slice {a}:{b} does not fit a member that reads {m.config.feature_dim} features")
        tags = {m.config.object_words for m in members if m.config.object_words}
        if len(tags) > 1:
            raise ValueError("ensemble members that read object words must read the same ones (the same vocabulary "
                             "gives the same tags)")
        self.members, self.slices = members, slices
        self.config = dataclasses.replace(first, feature_dim=max(b for _, b in slices),
                                          object_words=next(iter(tags), ()))
        self._sizes = [m.state_arrays for m in members]  # each member's share of the flat state

    blas_threads = staticmethod(NumpyDecoder.blas_threads)

    @property
    def state_arrays(self) -> int:
        return sum(self._sizes)

    def initial_state(self, features: np.ndarray) -> tuple:
        x = np.asarray(features, dtype=np.float32)  # (N, D + W)
        words = x[:, self.config.feature_dim:]  # (N, W): the object words, for the members that read them
        states = [m.initial_state(np.concatenate([x[:, a:b], words], axis=1) if m.config.object_words else x[:, a:b])
                  for m, (a, b) in zip(self.members, self.slices)]
        return tuple(arr for s in states for arr in s)

    def step(self, tokens: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        outs, at = [], 0
        for member, size in zip(self.members, self._sizes):
            outs.append(member.step(tokens, state[at:at + size]))
            at += size
        stacked = np.stack([lp for lp, _ in outs])  # (M, B, V)
        top = stacked.max(axis=0)  # (B, V)
        log_mean = top + np.log(np.exp(stacked - top).mean(axis=0))  # (B, V): log of the mean probability
        return log_mean.astype(np.float32, copy=False), tuple(arr for _, s in outs for arr in s)

    def token_log_probs(self, features: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
        return teacher_forced_log_probs(self, features, token_ids)
