"""Object detectors, by name: what a photo holds (COCO categories, scores, boxes), beside the encoders' features.

``DETECTORS`` is the registry (``build_detector(name, config)``; an unknown name is a ValueError listing the
valid ones). ``coco_ssd`` is SSDLite MobileNetV2 trained on COCO, run in PyTorch from the tensors of its npm
carrier (``coco_ssd.py``). Importing this package imports NumPy and PIL only: torch loads when one is built.
"""

import logging
import os
import threading

from .base import Detection, Detector, Objects, nms
from .coco_ssd import CocoSSDConfig, CocoSSDDetector

DETECTORS: dict[str, type] = {"coco_ssd": CocoSSDDetector}
DEFAULT_DETECTOR = "coco_ssd"
_SHARED: dict = {}
_SHARED_LOCK = threading.Lock()


def get_detector_class(name: str) -> type:
    try:
        return DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; valid: {sorted(DETECTORS)}") from None


def build_detector(name: str = DEFAULT_DETECTOR, config: dict | None = None) -> Detector:
    """A detector by name, its config from ``config`` (the class's defaults for the fields not given)."""
    cls = get_detector_class(name)
    return cls(cls.config_class.from_dict(config or {}))


def shared_detector() -> Detector | None:
    """The process's COCO detector, built once on first use and shared by every captioner; None where it cannot be
    had (offline without its carrier, say: the reason is logged once and kept in ``shared_detector_error()``), and
    None when ``$CAPTION_DETECTOR`` is ``none``. ``$CAPTION_DETECTOR`` may also name another registered detector."""
    with _SHARED_LOCK:
        if "detector" not in _SHARED:
            name = os.environ.get("CAPTION_DETECTOR", DEFAULT_DETECTOR).strip() or DEFAULT_DETECTOR
            _SHARED["detector"], _SHARED["error"] = None, None
            if name.lower() == "none":
                _SHARED["error"] = "turned off ($CAPTION_DETECTOR=none)"
            else:
                try:
                    _SHARED["detector"] = build_detector(name)
                except (OSError, ValueError, RuntimeError) as exc:  # no weights here: captions go on without it
                    _SHARED["error"] = str(exc)
                    logging.getLogger("caption_core.detectors").warning(
                        "no object detector: %s; captions are guided by the classifier alone", exc)
        return _SHARED["detector"]


def shared_detector_error() -> str | None:
    """Why ``shared_detector()`` gave None (None while it has not been asked, or when it has a detector)."""
    return _SHARED.get("error")


__all__ = ["DEFAULT_DETECTOR", "DETECTORS", "CocoSSDConfig", "CocoSSDDetector", "Detection", "Detector", "Objects",
           "build_detector", "get_detector_class", "nms", "shared_detector", "shared_detector_error"]
