"""What a detector gives for a photo, and what every detector shares.

A detector sees the objects of a photo: each one a COCO category, a score and a box (``Detection``); a photo's
detections, best first, with a count per category and its main object (the largest box) are its ``Objects``.
Guided decoding reads them (``caption_core.guidance``), ``CaptionResult.objects`` carries them to the API, the
page and batch rows as plain data (``Objects.to_dict``).

A detector class sets ``name``, ``config_class``, ``licence`` and implements ``prepare`` (one photo, any size ->
its own input array) and ``_detect_arrays`` (a batch of those -> raw per-box scores and boxes); the base class
keeps the boxes above ``min_score`` after non-maximum suppression (``nms``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..images import DEFAULT_LIMITS, ImageLimits, load_image


@dataclasses.dataclass(frozen=True)
class Detection:
    category: str  # COCO category name: 'person', 'dog', 'dining table'
    score: float  # the detector's confidence, 0..1
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) as fractions of the photo's width and height

    @property
    def area(self) -> float:
        """The box's share of the photo (clipped to it)."""
        x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in self.box)
        return max(x1 - x0, 0.0) * max(y1 - y0, 0.0)

    def to_dict(self) -> dict:
        return {"category": self.category, "score": round(float(self.score), 4),
                "box": [round(float(v), 4) for v in self.box]}


@dataclasses.dataclass(frozen=True)
class Objects:
    """One photo's detections, best first."""

    detections: tuple[Detection, ...] = ()

    def above(self, min_score: float) -> "Objects":
        """The detections with at least ``min_score``."""
        return Objects(tuple(d for d in self.detections if d.score >= min_score))

    def counts(self) -> dict[str, int]:
        """Category -> how many of it were detected, the most frequent first."""
        out: dict[str, int] = {}
        for d in self.detections:
            out[d.category] = out.get(d.category, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def main(self) -> Detection | None:
        """The largest detection (the photo's main object, as coco-mini's references define it), or None."""
        return max(self.detections, key=lambda d: d.area, default=None)

    def to_dict(self) -> dict:
        main = self.main()
        return {"detections": [d.to_dict() for d in self.detections], "counts": self.counts(),
                "main": main.category if main else None}

    @classmethod
    def from_dict(cls, d: dict) -> "Objects":
        return cls(tuple(Detection(x["category"], float(x["score"]), tuple(float(v) for v in x["box"]))
                         for x in d.get("detections", [])))


def iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Intersection over union of one box (4,) with each of ``others`` (K, 4); boxes are (y0, x0, y1, x1)."""
    y0 = np.maximum(box[0], others[:, 0])
    x0 = np.maximum(box[1], others[:, 1])
    y1 = np.minimum(box[2], others[:, 2])
    x1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(y1 - y0, 0, None) * np.clip(x1 - x0, 0, None)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    union = area(box) + area(others) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, min_score: float, max_boxes: int) -> np.ndarray:
    """Greedy non-maximum suppression, as ``tf.image.non_max_suppression`` (what coco-ssd's JavaScript runs):
    boxes (K, 4) (y0, x0, y1, x1), scores (K,) -> the indices kept, best first. A box is dropped when it overlaps
    a kept, better one by more than ``iou_threshold``."""
    order = np.flatnonzero(scores >= min_score)
    order = order[np.argsort(-scores[order], kind="stable")]
    keep: list[int] = []
    while len(order) and len(keep) < max_boxes:
        best, order = order[0], order[1:]
        keep.append(int(best))
        if len(order):
            order = order[iou(boxes[best], boxes[order]) <= iou_threshold]
    return np.asarray(keep, np.int64)


class Detector:
    """A frozen object detector: photos in, ``Objects`` out."""

    name: str
    config_class: type
    licence: str = ""
    categories: tuple[str | None, ...] = ()  # class index -> category name (None: an id the model does not use)

    def __init__(self, config=None):
        self.config = config if config is not None else self.config_class()
        self._fingerprint: str | None = None

    def weights_fingerprint(self) -> str:
        if self._fingerprint is None:
            raise RuntimeError(f"detector {self.name!r} has no weights fingerprint")
        return self._fingerprint

    def weights_source(self) -> str:
        return str(getattr(self.config, "weights", "?"))

    def describe(self) -> dict:
        return {"name": self.name, "config": self.config.to_dict(), "weights_fingerprint": self._fingerprint}

    # -- what a detector implements ------------------------------------------------------------------
    def prepare(self, image: Image.Image) -> np.ndarray:
        """One photo (a PIL RGB image of any size) -> the detector's input array for it."""
        raise NotImplementedError

    def _detect_arrays(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A batch of ``prepare`` arrays -> (scores (N, K, C) per box and class index, boxes (N, K, 4) as
        (y0, x0, y1, x1) fractions)."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------------
    def detect_arrays(self, batch: np.ndarray, min_score: float | None = None) -> list[Objects]:
        """Prepared photos (N, ...) -> their ``Objects``: per box its best class, boxes above ``min_score`` (default:
        the config's) after class-agnostic non-maximum suppression, as coco-ssd's own JavaScript keeps them."""
        if len(batch) == 0:
            return []
        c = self.config
        threshold = c.min_score if min_score is None else min_score
        scores, boxes = self._detect_arrays(np.asarray(batch))  # (N, K, C), (N, K, 4)
        best = scores.argmax(axis=2)  # (N, K)
        top = np.take_along_axis(scores, best[..., None], axis=2)[..., 0]  # (N, K)
        out = []
        for n in range(len(batch)):
            kept = nms(boxes[n], top[n], c.iou_threshold, threshold, c.max_detections)
            out.append(Objects(tuple(Detection(self.categories[best[n, k]], float(top[n, k]),
                                               (float(boxes[n, k, 1]), float(boxes[n, k, 0]),
                                                float(boxes[n, k, 3]), float(boxes[n, k, 2])))
                                     for k in kept if self.categories[best[n, k]] is not None)))
        return out

    def detect(self, images: Sequence[Any] | Any, limits: ImageLimits = DEFAULT_LIMITS,
               min_score: float | None = None) -> list[Objects]:
        """Photos (paths, bytes, arrays or PIL images, as ``load_image`` reads them) -> their ``Objects``."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        return self.detect_arrays(np.stack([self.prepare(load_image(im, limits)) for im in images]), min_score) \
            if images else []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"
