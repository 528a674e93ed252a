"""Several encoders as one: their pooled features side by side, (N, D1 + D2 + ...).

What an ensemble bundle's encoder is (each member decoder reads its member's slice, ``EnsembleDecoder``), and
what a decoder trained on two encoders' features at once reads. Photos are resized once, to the smallest
member input size (224 px for the Lite0 / DINOv2 / Xception trio), and each member upsamples that array to its
own size: Flickr8k's photos are 224 px, so a member sees exactly what it saw alone during training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
from PIL import Image

from ..config import Config
from ..images import batch_arrays
from .base import Encoder
from .weights import FINGERPRINT_PREFIX


@dataclasses.dataclass(frozen=True)
class ConcatConfig(Config):
    members: tuple = ()  # the encoders, in feature order: ({"name": "efficientnet_lite0", "config": {...}}, ...); a
    # member's "weights_fingerprint", where given, is informative (the concat fingerprint covers it)
    batch_size: int = 16  # images per call into the members (each batches its own way)
    precision: str | None = None  # where set ('float32', 'bfloat16', 'auto'): every member's precision, where it has one

    def __post_init__(self):
        if not self.members:
            raise ValueError("encoder 'concat' needs at least one member encoder")
        for m in self.members:
            if not isinstance(m, dict) or set(m) - {"name", "config", "weights_fingerprint"} or "name" not in m:
                raise ValueError(f"a concat member is {{'name': ..., 'config': {{...}}}}, got {m!r}")
            if m["name"] == "concat":
                raise ValueError("concat members cannot be concat encoders")


class ConcatEncoder(Encoder):
    name = "concat"
    config_class = ConcatConfig
    licence = "the licences of its member encoders (see each)"

    def __init__(self, config: ConcatConfig | None = None, members: list[Encoder] | None = None):
        super().__init__(config)
        from . import build_encoder  # the registry (this module is part of it)

        self.members = members or [build_encoder(n, c) for n, c in self.member_configs(self.config)]
        self.input_size = min(m.input_size for m in self.members)
        self.output_dim = sum(m.output_dim for m in self.members)
        bounds = np.cumsum([0] + [m.output_dim for m in self.members])
        self.slices = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]  # member i: features[:, a:b]
        self.has_imagenet_head = any(m.has_imagenet_head for m in self.members)
        precisions = {m.precision for m in self.members}
        self.precision = precisions.pop() if len(precisions) == 1 else "mixed"
        # a member that computes what an earlier one does (the same encoder and config: two decoders of one ensemble
        # reading Xception's pooled features) takes that one's features instead of a second pass
        keys = [m.name + json.dumps(m.describe()["config"], sort_keys=True, default=str) for m in self.members]
        self._source = [keys.index(k) for k in keys]
        digest = hashlib.sha256("\n".join(m.weights_fingerprint() for m in self.members).encode())
        self._fingerprint = FINGERPRINT_PREFIX + digest.hexdigest()  # of the members' fingerprints, in order

    @staticmethod
    def member_configs(config: ConcatConfig) -> list[tuple[str, dict]]:
        """(name, config) of each member, the concat's precision (where set) applied to those that have one."""
        from . import supported_options

        out = []
        for spec in config.members:
            cfg = dict(spec.get("config") or {})
            if config.precision:
                cfg.update(supported_options(spec["name"], {"precision": config.precision}) or {})
            out.append((spec["name"], cfg))
        return out

    def _encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        parts = []
        for i, member in enumerate(self.members):
            if self._source[i] != i:  # the same features as an earlier member's
                parts.append(parts[self._source[i]])
                continue
            x = batch
            if member.input_size != batch.shape[1]:  # (N, s, s, 3) -> (N, S, S, 3), as the member resizes a photo
                x = batch_arrays([Image.fromarray(a) for a in batch], member.input_size)
            parts.append(member.encode_arrays(x))  # (N, Dm)
        return np.concatenate(parts, axis=1)  # (N, D)

    def imagenet_logits(self, features: np.ndarray) -> np.ndarray | None:
        """The first member with an ImageNet head, on its slice of the features."""
        for member, (a, b) in zip(self.members, self.slices):
            if member.has_imagenet_head:
                return member.imagenet_logits(features[:, a:b])
        return None

    def weights_source(self) -> str:
        return " + ".join(f"{m.name}: {m.weights_source()}" for m in self.members)

    def describe(self) -> dict:
        d = super().describe()
        d["config"]["members"] = [{k: m.describe()[k] for k in ("name", "config", "weights_fingerprint")}
                                  for m in self.members]
        return d

    def save_files(self, folder: str) -> list[str]:
        for m in self.members:
            if m.save_files.__func__ is not Encoder.save_files:
                raise ValueError(f"a concat member cannot carry weight files in the bundle ({m.name}); use encoders "
                                 "whose weights are installed")
        return []
