"""Shallow fusion (Gulcehre et al. 2015): a caption decoder's next-word log-probabilities plus ``weight`` times a
language model's, renormalised over the caption decoder's vocabulary.

The language model is a merge decoder trained on caption text alone (``python -m training pretrain-text``), read
with no photo (zero features: its image projection gives the learned "no photo" vector). The two vocabularies
need not match: ``lm_ids`` maps each caption-decoder id to the language model's id of the same word (``<unk>``
where it has none), so a Flickr8k-only bundle can be fused with a language model over a larger vocabulary.
"""

from __future__ import annotations

import numpy as np

from ..text import UNK_ID, Vocabulary
from .base import NumpyDecoder, teacher_forced_log_probs


def vocabulary_map(words: Vocabulary, lm_words: Vocabulary, missing: int = UNK_ID) -> np.ndarray:
    """(V,) the language model's id of each word of ``words`` (``missing`` where it lacks one: ``<unk>``)."""
    return np.array([lm_words.word_to_id.get(w, missing) for w in words.id_to_word], np.int64)


class FusedDecoder:
    """``decoder`` (any NumPy step) fused with the language model ``lm`` (a merge decoder's NumPy step) at
    ``weight``; the same ``initial_state`` / ``step`` as a single decoder, so every decoding strategy drives it. The
    state is the decoder's arrays, then the language model's."""

    def __init__(self, decoder, lm, weight: float, lm_ids: np.ndarray):
        if weight < 0:
            raise ValueError(f"the language model's weight must be >= 0, got {weight}")
        if len(lm_ids) != decoder.config.vocab_size:
            raise ValueError(f"lm_ids maps {len(lm_ids)} words; the decoder has {decoder.config.vocab_size}")
        self.decoder, self.lm, self.weight = decoder, lm, float(weight)
        self.lm_ids = np.asarray(lm_ids, np.int64)  # (V,)
        self.config = decoder.config
        self._split = decoder.state_arrays

    blas_threads = staticmethod(NumpyDecoder.blas_threads)

    @property
    def state_arrays(self) -> int:
        return self._split + self.lm.state_arrays

    def initial_state(self, features: np.ndarray) -> tuple:
        no_photo = np.zeros((len(features), self.lm.config.feature_dim), np.float32)  # (N, D_lm): the LM's input
        return (*self.decoder.initial_state(features), *self.lm.initial_state(no_photo))

    def step(self, tokens: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        tokens = np.asarray(tokens)
        log_probs, mine = self.decoder.step(tokens, state[:self._split])  # (B, V)
        lm_log_probs, theirs = self.lm.step(self.lm_ids[tokens], state[self._split:])  # (B, V_lm)
        fused = log_probs + self.weight * lm_log_probs[:, self.lm_ids]  # (B, V)
        fused -= fused.max(axis=1, keepdims=True)
        fused -= np.log(np.exp(fused).sum(axis=1, keepdims=True))  # log_softmax
        return fused.astype(np.float32, copy=False), (*mine, *theirs)

    def token_log_probs(self, features: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
        return teacher_forced_log_probs(self, features, token_ids)
