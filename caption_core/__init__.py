"""caption_core: image -> caption. Encoders, decoders, detectors, decoding strategies, bundles.

Importing this package imports nothing heavy and does nothing: Keras, TensorFlow and torch load
only when an encoder or decoder is built. No gradio, no training code here.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Captioner": "captioner", "Caption": "captioner", "CaptionResult": "captioner",
    "Vocabulary": "text", "clean_caption": "text",
    "DecodeOptions": "decoding", "STRATEGIES": "decoding", "decode": "decoding",
    "DecoderConfig": "decoders", "MergeDecoder": "decoders", "EnsembleDecoder": "decoders",
    "ENCODERS": "encoders", "build_encoder": "encoders",
    "DETECTORS": "detectors", "build_detector": "detectors", "Objects": "detectors",
    "load_image": "images", "ImageError": "images", "ImageLimits": "images",
    "save_bundle": "bundle", "load_bundle": "bundle", "list_bundles": "bundle", "BundleError": "bundle",
    "OfflineError": "hub",
    "BatchConfig": "batch_workers", "run_batch": "batch", "list_photos": "batch_io", "read_rows": "batch_io",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'caption_core' has no attribute {name!r}")


__all__ = sorted(_LAZY)
