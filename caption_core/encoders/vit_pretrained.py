"""transformers ViTModel (default google/vit-base-patch16-224-in21k): 224x224 -> 768, torch no-grad.

``model`` is a Hub id or a local folder (``save_pretrained`` layout). Offline, a Hub id that is not
cached fails at once with a message instead of retrying for ~23 s.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..hub import snapshot
from ..config import Config
from .base import Encoder, resolve_precision
from .weights import torch_fingerprint


@dataclasses.dataclass(frozen=True)
class ViTPretrainedConfig(Config):
    model: str = "google/vit-base-patch16-224-in21k"  # Hub id or local folder
    pooling: str = "cls"  # 'cls' (final [CLS] hidden state), 'pooler' or 'mean' (mean of patch tokens)
    batch_size: int = 16  # images per forward pass
    threads: int = 0  # torch intra-op threads; 0 = every core
    precision: str = "auto"  # 'float32', 'bfloat16' (autocast) or 'auto': bfloat16 where the CPU has it natively

    def __post_init__(self):
        resolve_precision(self.precision)  # raises on an unknown name
        if self.pooling not in ("cls", "pooler", "mean"):
            raise ValueError(f"pooling must be 'cls', 'pooler' or 'mean', got {self.pooling!r}")


class ViTPretrainedEncoder(Encoder):
    name = "vit_pretrained"
    config_class = ViTPretrainedConfig
    licence = "Apache-2.0 (google/vit-base-patch16-224-in21k)"
    weights_field = "model"

    def __init__(self, config: ViTPretrainedConfig | None = None):
        super().__init__(config)
        import torch
        from transformers import AutoImageProcessor, ViTModel

        torch.set_num_threads(self.config.threads or os.cpu_count() or 1)
        src = self.config.model
        folder = src if os.path.isdir(src) else snapshot(src, what="encoder 'vit_pretrained'")
        self.torch = torch
        self.model = ViTModel.from_pretrained(folder, add_pooling_layer=self.config.pooling == "pooler").eval()
        processor = AutoImageProcessor.from_pretrained(folder)
        size = getattr(processor, "size", None)  # dict or SizeDict, depending on the transformers release
        height = size.get("height") if isinstance(size, dict) else getattr(size, "height", None)
        self.input_size = int(height or self.model.config.image_size)
        self.mean = np.asarray(processor.image_mean, np.float32) * 255.0  # (3,)
        self.std = np.asarray(processor.image_std, np.float32) * 255.0  # (3,)
        self.output_dim = int(self.model.config.hidden_size)
        self._fingerprint = torch_fingerprint(self.model)

    def _encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        x = (batch.astype(np.float32) - self.mean) / self.std  # (N, S, S, 3)
        pixels = self.torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # (N, 3, S, S)
        bf16 = self.precision == "bfloat16"
        with self.torch.inference_mode(), self.torch.autocast("cpu", dtype=self.torch.bfloat16, enabled=bf16):
            out = self.model(pixel_values=pixels)
            if self.config.pooling == "pooler":
                feats = out.pooler_output  # (N, H)
            elif self.config.pooling == "mean":
                feats = out.last_hidden_state[:, 1:].mean(dim=1)  # (N, H)
            else:
                feats = out.last_hidden_state[:, 0]  # (N, H)
            return feats.float().numpy()
