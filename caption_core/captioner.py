"""``Captioner``: image(s) in, captions with scores and timings out."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import numpy as np

from .decoding import DecodeOptions, decode
from .images import DEFAULT_LIMITS, ImageLimits, load_image
from .text import Vocabulary, clean_caption


@dataclasses.dataclass
class Caption:
    text: str  # the caption, words joined by spaces
    score: float  # what the strategy ranked by (length-normalised log-probability where asked)
    log_prob: float  # total log-probability of the words and <end>
    tokens: list[int]  # generated ids (<end> included when emitted)


@dataclasses.dataclass
class CaptionResult:
    captions: list[Caption]  # best first
    encode_ms: float  # encoder time for this call, per image
    decode_ms: float  # decoding time for this call, per image


class Captioner:
    """An encoder, a decoder and their vocabulary."""

    def __init__(self, encoder, decoder, vocab: Vocabulary, manifest: dict | None = None, name: str | None = None):
        self.encoder, self.decoder, self.vocab = encoder, decoder, vocab
        self.manifest = manifest or {}
        self.name = name or self.manifest.get("name") or encoder.name
        default = self.manifest.get("default_decoding") or {}
        self.default_strategy: str = default.get("strategy", "beam")
        self.default_options = DecodeOptions.from_dict({"max_length": decoder.config.max_length - 1,
                                                        **default.get("options", {})})
        # a language-only baseline was trained on zeroed features: it must be run on zeros too
        self.blind = bool(self.manifest.get("training", {}).get("blind", False))

    @classmethod
    def from_bundle(cls, ref: str, encoder_options: dict | None = None) -> "Captioner":
        """``encoder_options``: run-time encoder config overrides, e.g. ``{"precision": "float32"}``."""
        from .bundle import load_bundle

        manifest, encoder, decoder, vocab, _ = load_bundle(ref, encoder_options)
        return cls(encoder, decoder, vocab, manifest)

    # -- the parts --------------------------------------------------------------------------
    def encode(self, images: Sequence[Any], limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
        return self.encoder.encode(images, limits)  # (N, D)

    def decode(self, features: np.ndarray, strategy: str | None = None, options: DecodeOptions | None = None,
               **overrides) -> list[list[Caption]]:
        """features (N, D) -> for each image, its captions best first."""
        features = np.asarray(features, dtype=np.float32)
        if self.blind:
            features = np.zeros_like(features)
        state = self.decoder.initial_state(features)
        hyps = decode(self.decoder.step, state, len(features), strategy or self.default_strategy,
                      options or self.default_options, **overrides)
        return [[Caption(self.vocab.decode(h.tokens), h.score, h.log_prob, h.tokens) for h in per] for per in hyps]

    def caption(self, images: Sequence[Any] | Any, strategy: str | None = None, options: DecodeOptions | None = None,
                limits: ImageLimits = DEFAULT_LIMITS, **overrides) -> list[CaptionResult]:
        """Caption one image or a list; every input goes through ``load_image`` (clear errors)."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            return []
        t0 = time.perf_counter()
        pil = [load_image(im, limits) for im in images]
        feats = self.encoder.encode_arrays(self.encoder.preprocess(pil))  # (N, D)
        t1 = time.perf_counter()
        per_image = self.decode(feats, strategy, options, **overrides)
        t2 = time.perf_counter()
        n = len(images)
        return [CaptionResult(c, (t1 - t0) * 1000 / n, (t2 - t1) * 1000 / n) for c in per_image]

    def word_log_probs(self, features: np.ndarray, caption: str) -> tuple[list[str], np.ndarray]:
        """The probability the model gives each word of ``caption`` (and <end>) for each image.

        features (N, D) -> words (T,), log-probs (N, T) with T = words + 1 (the last is <end>).
        """
        ids = self.vocab.encode(clean_caption(caption))  # [<start>, ..., <end>]
        tokens = np.tile(np.asarray(ids, np.int32), (len(features), 1))  # (N, T+1)
        words = [self.vocab.id_to_word[i] for i in ids[1:]]
        return words, self.decoder.token_log_probs(features, tokens)  # (N, T)
