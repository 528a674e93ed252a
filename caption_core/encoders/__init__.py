"""Encoder registry: name -> class. Building one imports its framework; listing does not."""

from __future__ import annotations

from .base import Encoder
from .concat import ConcatConfig, ConcatEncoder
from .dinov2 import DINOv2Config, DINOv2Encoder
from .efficientnet_lite import (EfficientNetLite0Config, EfficientNetLite0Encoder, EfficientNetLite1Encoder,
                                EfficientNetLite2Encoder, EfficientNetLiteConfig)
from .vit_custom import ViTCustomConfig, ViTCustomEncoder
from .vit_pretrained import ViTPretrainedConfig, ViTPretrainedEncoder
from .xception import XceptionConfig, XceptionEncoder

ENCODERS: dict[str, type[Encoder]] = {
    cls.name: cls for cls in (XceptionEncoder, ViTPretrainedEncoder, DINOv2Encoder, ViTCustomEncoder,
                              EfficientNetLite0Encoder, EfficientNetLite1Encoder, EfficientNetLite2Encoder,
                              ConcatEncoder)
}


def get_encoder_class(name: str) -> type[Encoder]:
    try:
        return ENCODERS[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; valid: {sorted(ENCODERS)}") from None


def supported_options(name: str, options: dict | None) -> dict | None:
    """The fields of ``options`` that encoder ``name``'s config has (``precision`` is not every encoder's),
    or None when none is left; an unknown name: None (building it says what is valid)."""
    import dataclasses

    if name not in ENCODERS:
        return None
    fields = {f.name for f in dataclasses.fields(ENCODERS[name].config_class)}
    return {k: v for k, v in (options or {}).items() if k in fields} or None


def build_encoder(name: str, config: dict | None = None, **kwargs) -> Encoder:
    """``build_encoder('xception', {'weights': None})``: config as a dict (from a manifest) or kwargs."""
    cls = get_encoder_class(name)
    cfg = cls.config_class.from_dict({**(config or {}), **kwargs})
    return cls(cfg)


__all__ = ["ENCODERS", "Encoder", "build_encoder", "get_encoder_class", "supported_options", "XceptionConfig", "ViTPretrainedConfig",
           "DINOv2Config", "ConcatConfig", "ViTCustomConfig", "EfficientNetLiteConfig", "EfficientNetLite0Config"]
