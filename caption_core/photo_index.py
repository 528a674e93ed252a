"""Recognising a dataset photo by its content: a perceptual hash finds candidates, a finer comparison
verifies them, and photos too flat to identify are refused.

A photo is first brought to a canonical form: EXIF orientation applied (by the loader), grey levels
(so grayscale, CMYK and colour copies agree), squashed to a square (the Flickr8k copies are 224x224
squashes of ~500x375 originals: an original at its own aspect, squashed, is the same picture).

1. **Candidates**: a 64-bit DCT hash (pHash: the 8x8 lowest frequencies of the 32x32 thumbnail, each
   compared with their median); the ``candidates`` nearest photos within ``hash_radius`` bits.
2. **Verification**: the Pearson correlation of 16x16 thumbnails (256 grey levels, not 64 bits), and
   the same for their horizontal and vertical gradients (the edges must line up, not only the light):
   both above their thresholds.
3. **Borders**: when nothing verifies and the photo has a uniform border or letterbox, the photo
   without it is tried once more (dataset photos are indexed as they are).
4. **Refusal**: a photo whose thumbnail has almost no contrast (sky, fog, snow, a flat colour) or almost
   no edges is never matched: too little of it can be compared to tell it from other flat photos.

The thresholds in ``MatchConfig`` were set from measurements over re-encoded, resized, recoloured,
rotated, bordered and cropped copies of the 1,000 Flickr8k test photos (recall) and over the CIFAR-10
test images, dev and test photos checked against an index of the train photos, and generated flat
images (false matches): docs/app.md, "How a photo is recognised".
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from PIL import Image

from .config import Config

HASH_SIDE, THUMB_SIDE = 32, 16


@dataclasses.dataclass(frozen=True)
class MatchConfig(Config):
    hash_radius: int = 18  # candidates differ from the photo in at most this many of the 64 hash bits
    candidates: int = 8  # at most this many nearest candidates are verified
    min_correlation: float = 0.90  # verification: correlation of the 16x16 grey thumbnails
    min_edge_correlation: float = 0.75  # verification: correlation of their gradients
    min_contrast: float = 8.0  # refuse photos whose thumbnail grey levels vary less than this (std, of 255)
    min_edges: float = 3.0  # refuse photos whose thumbnail gradients are weaker than this (mean |grad|, of 255)


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    hash: int  # 64-bit DCT hash
    thumb: np.ndarray  # (16, 16) uint8 grey thumbnail


@functools.lru_cache(maxsize=1)
def _dct_matrix(n: int = HASH_SIDE) -> np.ndarray:
    k = np.arange(n)[:, None]
    m = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n)) * np.sqrt(2.0 / n)  # (n, n), DCT-II
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float64)


def trim_border(grey: np.ndarray, tol: float = 3.0, max_share: float = 0.1) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) lines of a uniform border (a frame or letterbox added around a photo) to cut
    off a (H, W) grey array: outer lines whose grey levels vary by less than ``tol`` and stay within
    ``2 * tol`` of the outermost line's level, at most ``max_share`` of each side."""
    def run(lines_std: np.ndarray, lines_mean: np.ndarray, limit: int) -> int:
        flat = (lines_std[:limit] < tol) & (np.abs(lines_mean[:limit] - lines_mean[0]) < 2 * tol)
        return int(limit if flat.all() else np.argmin(flat))

    h, w = grey.shape
    rs, rm = grey.std(axis=1), grey.mean(axis=1)
    cs, cm = grey.std(axis=0), grey.mean(axis=0)
    lh, lw = int(h * max_share), int(w * max_share)
    return run(rs, rm, lh), run(rs[::-1], rm[::-1], lh), run(cs, cm, lw), run(cs[::-1], cm[::-1], lw)


def without_border(grey: Image.Image) -> Image.Image | None:
    """The grey image with a uniform border cut off, or None when it has none."""
    if min(grey.size) < 16:
        return None
    top, bottom, left, right = trim_border(np.asarray(grey, np.float32))
    if not (top or bottom or left or right):
        return None
    return grey.crop((left, top, grey.size[0] - right, grey.size[1] - bottom))


def fingerprint(img: Image.Image) -> Fingerprint:
    """The photo as the index stores it: grey levels (orientation: the loader's, EXIF applied)."""
    g = img.convert("L")
    small = np.asarray(g.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX), np.float64)  # (32, 32)
    d = _dct_matrix()
    low = (d @ small @ d.T)[:8, :8].ravel()  # (64,): the lowest frequencies
    bits = low > np.median(low[1:])  # the DC term takes part as a bit but not in the median
    thumb = np.asarray(g.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX), np.uint8)  # (16, 16)
    return Fingerprint(int(np.packbits(bits).view(">u8")[0]), thumb)


def _normalised(x: np.ndarray) -> np.ndarray:
    """(N, K) -> rows with zero mean and unit norm (a flat row stays zero)."""
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _gradients(thumbs: np.ndarray) -> np.ndarray:
    """(N, S, S) -> (N, 2 * S * (S - 1)): horizontal and vertical differences."""
    t = thumbs.astype(np.float32)
    return np.concatenate([np.diff(t, axis=2).reshape(len(t), -1), np.diff(t, axis=1).reshape(len(t), -1)], axis=1)


def texture(thumb: np.ndarray) -> tuple[float, float]:
    """(contrast: std of the grey levels, edges: mean |gradient|) of a (S, S) thumbnail."""
    t = thumb.astype(np.float32)
    return float(t.std()), float(np.abs(_gradients(t[None])).mean())


class PhotoIndex:
    """Fingerprints of a set of photos, matched as the module docstring says. Rows are photos."""

    def __init__(self, hashes: np.ndarray, thumbs: np.ndarray, config: MatchConfig = MatchConfig()):
        self.hashes = np.asarray(hashes, np.uint64)  # (N,)
        self.thumbs = np.asarray(thumbs, np.uint8)  # (N, 16, 16)
        if self.thumbs.shape[1:] != (THUMB_SIDE, THUMB_SIDE) or len(self.thumbs) != len(self.hashes):
            raise ValueError(f"photo index: {len(self.hashes)} hashes and thumbnails of shape {self.thumbs.shape}")
        self.config = config
        self._bytes = self.hashes.astype(">u8").view(np.uint8).reshape(-1, 8)  # (N, 8)
        self._grey = _normalised(self.thumbs.reshape(len(self.thumbs), -1).astype(np.float32))  # (N, 256)
        self._edges = _normalised(_gradients(self.thumbs))  # (N, 480)

    @classmethod
    def build(cls, images, config: MatchConfig = MatchConfig()) -> "PhotoIndex":
        prints = [fingerprint(im) for im in images]
        return cls(np.array([p.hash for p in prints], np.uint64),
                   np.stack([p.thumb for p in prints]) if prints else np.zeros((0, THUMB_SIDE, THUMB_SIDE), np.uint8),
                   config)

    def __len__(self) -> int:
        return len(self.hashes)

    def distances(self, h: int) -> np.ndarray:
        """Hamming distance of hash ``h`` to every photo (N,)."""
        q = np.frombuffer(int(h).to_bytes(8, "big"), np.uint8)
        return np.unpackbits(self._bytes ^ q, axis=1).sum(axis=1)

    def explain(self, img: Image.Image) -> dict:
        """Every measure behind a decision: the row matched (or None) and why."""
        grey = img.convert("L")
        out = self._explain(fingerprint(grey))
        if out["row"] is None and out["reason"] != "too little texture to identify":
            inner = without_border(grey)
            if inner is not None:
                second = self._explain(fingerprint(inner))
                if second["row"] is not None:
                    return {**second, "border_removed": True}
        return out

    def _explain(self, fp: Fingerprint) -> dict:
        c = self.config
        contrast, edges = texture(fp.thumb)
        out = {"row": None, "contrast": round(contrast, 2), "edges": round(edges, 2)}
        if contrast < c.min_contrast or edges < c.min_edges:
            return {**out, "reason": "too little texture to identify"}
        if not len(self):
            return {**out, "reason": "empty index"}
        dist = self.distances(fp.hash)
        near = np.argsort(dist, kind="stable")[: c.candidates]
        near = near[dist[near] <= c.hash_radius]
        if not len(near):
            return {**out, "reason": "no hash within the radius", "nearest_bits": int(dist.min())}
        grey = self._grey[near] @ _normalised(fp.thumb.reshape(1, -1).astype(np.float32))[0]  # (k,)
        edge = self._edges[near] @ _normalised(_gradients(fp.thumb[None]))[0]  # (k,)
        ok = (grey >= c.min_correlation) & (edge >= c.min_edge_correlation)
        best = int(np.argmax(np.where(ok, grey + edge, -np.inf))) if ok.any() else int(np.argmax(grey + edge))
        out.update(bits=int(dist[near[best]]), correlation=round(float(grey[best]), 4),
                   edge_correlation=round(float(edge[best]), 4))
        if not ok.any():
            return {**out, "reason": "no candidate verified"}
        return {**out, "row": int(near[best]), "reason": "match"}

    def match(self, img: Image.Image) -> int | None:
        """The row of the photo that ``img`` is a copy of, else None."""
        return self.explain(img)["row"]
