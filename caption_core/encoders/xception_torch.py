"""Keras' Xception (``keras.applications.Xception(include_top=False, pooling='avg')``) as a PyTorch module that
runs the same tensors: no TensorFlow import, no graph to build or trace at start-up.

The layers are made in the order Keras lists their weights (``model.weights``), so ``load_keras_order`` takes
the arrays exactly as ``model.get_weights()`` gives them (and as ``tensor_fingerprint`` hashes them), and
``KERAS_SAVING_NAMES`` names each layer as a saved ``.keras`` archive does (``conv2d_1``,
``separable_conv2d_3``, ...), so the archive is read with h5py alone (``archive_tensors``). TensorFlow's 'same'
padding is asymmetric where a stride-2 pooling meets an even size (74 -> 37 pads one row and column after,
none before); ``SamePool`` pads like it. Batch norms use Keras' epsilon (1e-3) and are folded into the
convolution before them for inference (``fold``). tests/test_weights.py checks the outputs against Keras.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BN_EPSILON = 1e-3  # keras.layers.BatchNormalization's default, which Xception keeps


class SeparableConv(nn.Module):
    """Keras' SeparableConv2D(3x3, padding='same', use_bias=False): depthwise then pointwise."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class SamePool(nn.Module):
    """MaxPooling2D(3, strides=2, padding='same') as TensorFlow pads it (more after than before)."""

    def forward(self, x):
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
            total = max((math.ceil(size / 2) - 1) * 2 + 3 - size, 0)
            pads += [total // 2, total - total // 2]
        return F.max_pool2d(F.pad(x, pads, value=float("-inf")), 3, 2)


def bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPSILON)


class XceptionTorch(nn.Module):
    """(N, 3, 299, 299) in [-1, 1] -> (N, 2048), global average pooled."""

    def __init__(self):
        super().__init__()
        self.order: list[tuple[nn.Module, str]] = []  # (layer, Keras' saved name), in Keras' weight order
        counts: dict[str, int] = {}

        def keep(module: nn.Module, kind: str) -> nn.Module:
            n = counts.get(kind, 0)
            counts[kind] = n + 1
            self.order.append((module, kind if n == 0 else f"{kind}_{n}"))
            return module

        def conv(cin, cout, k, stride):
            return keep(nn.Conv2d(cin, cout, k, stride=stride, bias=False), "conv2d")

        def sep(cin, cout):
            return keep(SeparableConv(cin, cout), "separable_conv2d")

        def norm(c):
            return keep(bn(c), "batch_normalization")

        self.stem = nn.ModuleList([conv(3, 32, 3, 2), norm(32), conv(32, 64, 3, 1), norm(64)])
        # blocks 2-4 and 13: two separable convolutions and a pooling, beside a strided 1x1 residual
        self.down = nn.ModuleList()
        for cin, mid, cout in ((64, 128, 128), (128, 256, 256), (256, 728, 728)):
            self.down.append(nn.ModuleList([sep(cin, mid), norm(mid), sep(mid, cout), norm(cout),
                                            conv(cin, cout, 1, 2), norm(cout)]))
        self.middle = nn.ModuleList(nn.ModuleList([sep(728, 728), norm(728), sep(728, 728), norm(728),
                                                   sep(728, 728), norm(728)]) for _ in range(8))
        self.exit = nn.ModuleList([sep(728, 728), norm(728), sep(728, 1024), norm(1024),
                                   conv(728, 1024, 1, 2), norm(1024)])
        self.head = nn.ModuleList([sep(1024, 1536), norm(1536), sep(1536, 2048), norm(2048)])
        self.pool = SamePool()

    grid = False  # True: the last feature map (10 x 10 cells) instead of its average

    def forward(self, x):  # (N, 3, 299, 299)
        c1, n1, c2, n2 = self.stem
        x = F.relu(n2(c2(F.relu(n1(c1(x))))))  # (N, 64, 147, 147)
        for i, block in enumerate(self.down):  # -> (N, 728, 19, 19)
            s1, b1, s2, b2, rc, rb = block
            y = b1(s1(F.relu(x) if i else x))  # block 2 starts from the stem's ReLU
            x = self.pool(b2(s2(F.relu(y)))) + rb(rc(x))
        for block in self.middle:  # 8 x (N, 728, 19, 19)
            y = x
            for k in range(0, 6, 2):
                y = block[k + 1](block[k](F.relu(y)))
            x = x + y
        s1, b1, s2, b2, rc, rb = self.exit
        x = self.pool(b2(s2(F.relu(b1(s1(F.relu(x))))))) + rb(rc(x))  # (N, 1024, 10, 10)
        s1, b1, s2, b2 = self.head
        x = F.relu(b2(s2(F.relu(b1(s1(x))))))  # (N, 2048, 10, 10)
        if self.grid:
            return x.permute(0, 2, 3, 1).flatten(1)  # (N, 10 * 10 * 2048): cells row-major
        return x.mean(dim=(2, 3))  # (N, 2048)

    # -- weights ------------------------------------------------------------------------------------
    def keras_shapes(self) -> list[tuple[str, list[tuple[int, ...]]]]:
        """(saved name, the shapes of its arrays in Keras' layout) per layer, in Keras' weight order."""
        out = []
        for m, name in self.order:
            if isinstance(m, SeparableConv):
                cin, cout = m.depthwise.in_channels, m.pointwise.out_channels
                out.append((name, [(3, 3, cin, 1), (1, 1, cin, cout)]))
            elif isinstance(m, nn.Conv2d):
                k = m.kernel_size[0]
                out.append((name, [(k, k, m.in_channels, m.out_channels)]))
            else:
                out.append((name, [(m.num_features,)] * 4))
        return out

    def keras_arrays(self) -> list[np.ndarray]:
        """This module's weights as Keras holds them (``model.get_weights()`` order and layout): the inverse
        of ``load_keras_order``."""
        out = []
        for m, _ in self.order:
            if isinstance(m, SeparableConv):
                out += [m.depthwise.weight.detach().numpy().transpose(2, 3, 0, 1),
                        m.pointwise.weight.detach().numpy().transpose(2, 3, 1, 0)]
            elif isinstance(m, nn.Conv2d):
                out.append(m.weight.detach().numpy().transpose(2, 3, 1, 0))
            else:
                out += [p.detach().numpy() for p in (m.weight, m.bias, m.running_mean, m.running_var)]
        return [np.ascontiguousarray(a, np.float32) for a in out]

    def load_keras_order(self, arrays: list[np.ndarray]) -> None:
        """Copy Keras' arrays (``model.get_weights()`` order and layout) in, checking every shape."""
        expected = [s for _, shapes in self.keras_shapes() for s in shapes]
        if len(arrays) != len(expected):
            raise ValueError(f"Xception needs {len(expected)} arrays, got {len(arrays)}")
        for i, (a, s) in enumerate(zip(arrays, expected)):
            if tuple(a.shape) != s:
                raise ValueError(f"Xception array {i} has shape {tuple(a.shape)}, expected {s}")
        it = iter(arrays)
        with torch.no_grad():
            for m, _ in self.order:
                if isinstance(m, SeparableConv):
                    m.depthwise.weight.copy_(torch.from_numpy(np.ascontiguousarray(next(it).transpose(2, 3, 0, 1))))
                    m.pointwise.weight.copy_(torch.from_numpy(np.ascontiguousarray(next(it).transpose(3, 2, 0, 1))))
                elif isinstance(m, nn.Conv2d):
                    m.weight.copy_(torch.from_numpy(np.ascontiguousarray(next(it).transpose(3, 2, 0, 1))))
                else:
                    for p in (m.weight, m.bias, m.running_mean, m.running_var):  # gamma, beta, mean, variance
                        p.copy_(torch.from_numpy(np.asarray(next(it), np.float32)))


def archive_tensors(path: str, model: XceptionTorch) -> list[np.ndarray]:
    """The Xception arrays of a ``.keras`` archive (the whole model, or a sub-model of it), in Keras' weight
    order, read with h5py (``caption_core.encoders.weights.keras_archive_tensors``): no TensorFlow."""
    from .weights import WeightsError, keras_archive_tensors

    stored = keras_archive_tensors(path)
    prefixes = sorted({k[: -len("conv2d/vars/0")] for k in stored if k.endswith("/conv2d/vars/0")
                       and k.startswith("layers/")})
    if len(prefixes) != 1:
        raise WeightsError(f"'{path}': expected one saved model with a layer 'conv2d', found {len(prefixes)}")
    prefix, out = prefixes[0], []
    own = {k for k in stored if k.startswith(prefix) and "/vars/" in k and k[len(prefix):].count("/") == 2}
    for name, shapes in model.keras_shapes():
        for i in range(len(shapes)):
            key = f"{prefix}{name}/vars/{i}"
            if key not in stored:
                raise WeightsError(f"'{path}': no tensor {key}: not the stock Xception")
            out.append(stored[key])
    if len(own) != len(out):
        raise WeightsError(f"'{path}': {len(own) - len(out)} stored tensors match no Xception layer; not this architecture")
    return out


def fold(model: XceptionTorch) -> nn.Module:
    """The inference module with every batch norm folded into the convolution before it (scale into its
    weights, shift as its bias): the same function in fewer passes over memory."""
    with torch.no_grad():
        for (m, _), (b, _) in zip(model.order, model.order[1:]):
            if not isinstance(b, nn.BatchNorm2d):
                continue
            conv = m.pointwise if isinstance(m, SeparableConv) else m
            scale = b.weight / torch.sqrt(b.running_var + b.eps)  # (C,)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(b.bias - b.running_mean * scale)
        for parent in model.modules():  # the batch norms, now part of their convolutions, become identities
            if isinstance(parent, nn.ModuleList):
                for i, child in enumerate(parent):
                    if isinstance(child, nn.BatchNorm2d):
                        parent[i] = nn.Identity()
    return model
