"""What every encoder is: a frozen feature extractor, image batch -> (N, D) float32."""

from __future__ import annotations

import functools
import json
import os
from typing import Any, ClassVar, Sequence

import numpy as np
from PIL import Image

from ..images import DEFAULT_LIMITS, ImageLimits, batch_arrays, load_image


PRECISIONS = ("auto", "float32", "bfloat16")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bfloat16 natively (AVX512_BF16 or AMX), read from /proc/cpuinfo
    once per process (every config with precision='auto' asks)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: str) -> str:
    """'auto' -> 'bfloat16' on CPUs with native bf16 arithmetic, else 'float32'.

    bfloat16 doubles the matmul rate there (speeds: benchmarks/RESULTS.md); the features stay within
    cosine 0.995 of float32 and the shipped bundle scores the same (its model card).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {list(PRECISIONS)}")
    if precision == "auto":
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    return precision


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names in the classifiers' index order (simple English names, from the
    imagenet-simple-labels list that Gradio's media assets ship; MIT)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "imagenet_labels.json")
    with open(path, encoding="utf-8") as f:
        names = json.load(f)
    if len(names) != 1000:
        raise ValueError(f"{path}: expected 1000 ImageNet class names, found {len(names)}")
    return tuple(names)


def class_probabilities(logits: np.ndarray) -> np.ndarray:
    """ImageNet logits (N, 1000) -> probabilities (N, 1000): a softmax per row."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def top_classes(logits: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    """ImageNet logits (N, 1000) -> per row the k most probable (class name, probability)."""
    return top_probabilities(class_probabilities(logits), k)


def top_probabilities(probs: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    """ImageNet class probabilities (N, 1000) -> per row the k most probable (class name, probability)."""
    names = imagenet_class_names()
    top = np.argsort(-probs, axis=1)[:, :k]  # (N, k)
    return [[(names[j], float(p[j])) for j in row] for p, row in zip(probs, top)]


class Encoder:
    """Base class. Subclasses set ``name``, ``config_class``, ``licence``, and implement ``_encode_arrays``;
    everything the app and ``training`` need to know about an encoder is a class attribute or method here,
    so a new encoder is one module plus its line in the registry.

    - ``input_size``: side of the square input the network takes;
    - ``output_dim``: D;
    - ``preprocess``: PIL images -> uint8 batch (N, S, S, 3) (normalisation happens in
      ``_encode_arrays``, so the cached uint8 arrays are model-agnostic);
    - ``encode``: anything ``load_image`` accepts -> (N, D) float32, in batches.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    input_size: int
    output_dim: int
    precision: str = "float32"  # the arithmetic actually used (a config's 'auto' resolved on this machine)
    revision: ClassVar[int] = 1  # bumped when the same config computes different features (invalidates caches)
    licence: ClassVar[str] = "see the encoder"  # licence of its weights, for model cards
    licence_id: ClassVar[str] = "other"  # the same as a Hugging Face licence identifier (model-card metadata)
    weights_field: ClassVar[str] = "weights"  # the config field that names its weights (--weights sets it)
    has_imagenet_head: ClassVar[bool] = False  # imagenet_logits() answers (else guidance needs the tagger)
    # Grid features (an attention decoder reads them): ``grid_shape`` = (rows, cols, C) when each row of the output is
    # ``grid_extra`` non-spatial tokens (DINOv2's CLS) then rows x cols spatial cells, C values each, flattened
    # row-major: D = (grid_extra + rows * cols) * C. None for pooled features.
    grid_shape: tuple[int, int, int] | None = None
    grid_extra: int = 0
    # config fields added after feature caches were keyed, with the value older caches were made with: left out of
    # the cache key at that value, so those caches keep their key (training/features.py)
    unkeyed_defaults: ClassVar[dict] = {}

    @property
    def grid_cells(self) -> int:
        """Cells an attention decoder weighs (non-spatial tokens included); 0 for pooled features."""
        return 0 if self.grid_shape is None else self.grid_extra + self.grid_shape[0] * self.grid_shape[1]

    def pooled(self, features: np.ndarray) -> np.ndarray:
        """(N, D) features -> (N, C) the mean of the spatial cells for grid features (what the ImageNet head reads);
        pooled features unchanged."""
        if self.grid_shape is None:
            return features
        rows, cols, c = self.grid_shape
        cells = np.asarray(features, np.float32).reshape(len(features), -1, c)  # (N, extra + R*C, C)
        return cells[:, self.grid_extra:].mean(axis=1)  # (N, C)

    def __init__(self, config=None):
        self.config = config if config is not None else self.config_class()
        if getattr(self.config, "precision", None) is not None:  # encoders whose config offers a choice of arithmetic
            self.precision = resolve_precision(self.config.precision)

    # -- what the app and training ask of an encoder class ------------------------------------
    @classmethod
    def build_hint(cls) -> str:
        """The command that builds a bundle with this encoder."""
        return f"python -m training build --encoder {cls.name}"

    @classmethod
    def training_config(cls, weights: str | None = None, options: dict | None = None):
        """Config for ``training``: ``options`` (config fields) plus ``weights`` in the weights field."""
        cfg = dict(options or {})
        if weights is not None:
            cfg[cls.weights_field] = weights
        return cls.config_class.from_dict(cfg)

    def weights_fingerprint(self) -> str:
        """``tensor_fingerprint`` of the network's weights ('tensors:sha256:...'): the same tensors give the same
        value whichever file or download they came from. Bundles record it; feature caches key on it.
        Subclasses set ``_fingerprint`` when they load their weights (or override this)."""
        fingerprint = getattr(self, "_fingerprint", None)
        if fingerprint is None:
            raise NotImplementedError(f"encoder '{self.name}' does not fingerprint its weights")
        return fingerprint

    def weights_source(self) -> str:
        """Where this instance's weights came from, in words (for messages and model cards)."""
        return str(getattr(self, "source", None) or getattr(self.config, self.weights_field, None))

    @classmethod
    def other_sources(cls, config: dict) -> list[dict]:
        """Configs that name the same pretrained weights from another source, tried in turn by ``load_bundle``
        when the first source's tensors are not the bundle's (none for most encoders)."""
        return []

    @classmethod
    def weights_hint(cls) -> str:
        """What to do when the weights found are not the bundle's."""
        return (f"give the encoder the weights the bundle was built with (--weights / the {cls.weights_field!r} "
                f"encoder option), or rebuild the bundle on these: {cls.build_hint()}")

    def imagenet_logits(self, features: np.ndarray) -> np.ndarray | None:
        """For encoders with an ImageNet classifier head: its logits (N, 1000) on ``features`` (N, D), the
        pooled features the caption is decoded from (no second forward pass); None for the others."""
        return None

    def imagenet_labels(self, features: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]] | None:
        """What the encoder itself recognises: the ``k`` most probable ImageNet classes for each row of
        ``features`` where it has a classifier head, else None."""
        logits = self.imagenet_logits(features)
        return None if logits is None else top_classes(logits, k)

    def provenance(self) -> dict | None:
        """How the weights themselves were made, when this project made them (for the model card)."""
        return None

    # -- the one method subclasses implement ----------------------------------------------
    def _encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) -> float32 (N, D)."""
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------
    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        return batch_arrays(images, self.input_size)  # (N, S, S, 3) uint8

    def encode_arrays(self, batch: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """uint8 (N, S, S, 3) -> float32 (N, D), ``batch_size`` images at a time."""
        bs = batch_size or self.config.batch_size
        outs = [self._encode_arrays(batch[i:i + bs]) for i in range(0, len(batch), bs)]
        if not outs:
            return np.zeros((0, self.output_dim), np.float32)
        return np.concatenate(outs).astype(np.float32, copy=False)  # (N, D)

    def encode(self, images: Sequence[Any], limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
        """Paths / bytes / PIL images / arrays -> float32 (N, D)."""
        return self.encode_arrays(self.preprocess([load_image(im, limits) for im in images]))

    def describe(self) -> dict:
        """Name, config and sizes, as stored in a bundle manifest."""
        return {"name": self.name, "config": self.config.to_dict(), "precision": self.precision,
                "input_size": self.input_size, "output_dim": self.output_dim,
                **({"grid_shape": list(self.grid_shape), "grid_extra": self.grid_extra} if self.grid_shape else {}),
                "weights_fingerprint": self.weights_fingerprint()}

    def save_files(self, folder: str) -> list[str]:
        """Write any weights the bundle must carry; return their file names (most encoders: none)."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"
