"""Batched feature extraction with an on-disk cache that resumes after a kill.

Layout: ``<cache>/features/<encoder>-<key>/<split>/`` with ``features.npy`` (N, D) float32 (grid features: float16),
written in place through a memory map, and ``index.json`` (the key's inputs, image ids, rows
done, rows that could not be read). ``key`` hashes the encoder's name, config and weights
fingerprint and the dataset source, so a changed encoder never reuses a stale cache. After each
batch the memory map is flushed and then ``index.json`` is rewritten atomically; a killed run
resumes from the last recorded row.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from caption_core.images import ImageError, load_image

from .common import read_json, write_json
from .datasets import CaptionExample

log = logging.getLogger("training.features")
CACHE_FORMAT = "training.features/1"


def cache_key(encoder, source: str) -> dict:
    # how the same function is computed, not which: batching, threads, a frozen graph (float rounding apart)
    cfg = {k: v for k, v in encoder.config.to_dict().items()
           if k not in ("batch_size", "threads", "frozen_graph", "backend")}
    for name, value in encoder.unkeyed_defaults.items():  # fields added later: older caches keep their key
        if cfg.get(name) == value:
            del cfg[name]
    if "precision" in cfg:
        cfg["precision"] = encoder.precision  # 'auto' resolved: the arithmetic that made these features
    return {"format": CACHE_FORMAT, "encoder": encoder.name, "revision": encoder.revision, "config": cfg,
            "weights": encoder.weights_fingerprint(),
            "source": os.path.abspath(source) if os.path.isdir(source) else source}


def cache_dir(cache_root: str, encoder, source: str) -> str:
    key = cache_key(encoder, source)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(cache_root, "features", f"{encoder.name}-{digest}")


def prefetch(pool, fn, items, ahead: int):
    """``map(fn, items)`` in order, run in ``pool`` at most ``ahead`` items in advance (bounded memory:
    ``pool.map`` would decode a whole split into memory when decoding outpaces the encoder)."""
    queue: collections.deque = collections.deque()
    for item in items:
        queue.append(pool.submit(fn, item))
        if len(queue) > ahead:
            yield queue.popleft().result()
    while queue:
        yield queue.popleft().result()


def extract_features(encoder, examples: list[CaptionExample], source: str, split: str, cache_root: str = "cache",
                     progress: bool = True, stop_after: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """-> features (N, D) float32, float16 for grids (a read-only memory map) and ``valid`` (N,) bool.

    Cached per (encoder config + weights, dataset, split); resumes where a previous run stopped.
    ``stop_after`` ends the run after that many new rows (tests use it to simulate a kill).

    A ``concat`` encoder's features are its members' (each cached as itself) side by side: what it computes
    for photos no larger than its smallest member input (Flickr8k's 224 px; see caption_core/encoders/concat.py).
    """
    members = getattr(encoder, "members", None)
    if members:
        parts = [extract_features(m, examples, source, split, cache_root, progress, stop_after) for m in members]
        valid = np.logical_and.reduce([v for _, v in parts])  # (N,)
        return np.concatenate([np.asarray(f) for f, _ in parts], axis=1), valid  # (N, D1 + D2 + ...)
    folder = os.path.join(cache_dir(cache_root, encoder, source), split)
    os.makedirs(folder, exist_ok=True)
    index_path, feat_path = os.path.join(folder, "index.json"), os.path.join(folder, "features.npy")
    ids = [e.image_id for e in examples]
    key = cache_key(encoder, source)
    index = read_json(index_path)
    n, dim = len(examples), encoder.output_dim
    dtype = np.float16 if encoder.grid_shape else np.float32  # grids: 49-257 cells a photo, halved on disk
    if index is None or index.get("key") != key or index.get("image_ids") != ids or not os.path.exists(feat_path):
        index = {"key": key, "split": split, "image_ids": ids, "dim": dim, "done": 0, "bad": {}, "complete": False}
        feats = np.lib.format.open_memmap(feat_path, mode="w+", dtype=dtype, shape=(n, dim))  # (N, D)
        write_json(index_path, index)
    else:
        feats = np.lib.format.open_memmap(feat_path, mode="r+")
    if index["complete"]:
        log.info("features: %s [%s] from cache %s", encoder.name, split, folder)
        return _result(feat_path, index)

    bs = encoder.config.batch_size
    start = index["done"]
    bar = None
    if progress and start < n:
        from tqdm import tqdm

        bar = tqdm(total=n, initial=start, unit="img", desc=f"{encoder.name} {split}", mininterval=2.0,
                   file=sys.stderr)
    t0, count = time.perf_counter(), 0

    def load(i: int):
        try:
            return encoder.preprocess([load_image(examples[i].image)])[0], None  # (S, S, 3)
        except ImageError as exc:
            return None, str(exc)

    with ThreadPoolExecutor(max_workers=2) as pool:  # decode the next batches while the encoder runs
        pending = prefetch(pool, load, range(start, n), ahead=4 * bs)
        for begin in range(start, n, bs):
            rows = [next(pending) for _ in range(min(bs, n - begin))]
            good = [i for i, (arr, _) in enumerate(rows) if arr is not None]
            for i, (_, err) in enumerate(rows):
                if err is not None:
                    index["bad"][str(begin + i)] = err
            if good:
                out = encoder.encode_arrays(np.stack([rows[i][0] for i in good]))  # (G, D)
                feats[[begin + i for i in good]] = out
            feats.flush()
            index["done"] = begin + len(rows)
            write_json(index_path, index)
            count += len(rows)
            if bar is not None:
                bar.update(len(rows))
                bar.set_postfix(img_s=f"{count / (time.perf_counter() - t0):.1f}")
            if stop_after is not None and count >= stop_after:
                if bar is not None:
                    bar.close()
                return _result(feat_path, index)
    if bar is not None:
        bar.close()
    index["complete"] = True
    index["images_per_second"] = round(count / max(time.perf_counter() - t0, 1e-9), 2)
    write_json(index_path, index)
    if index["bad"]:
        log.warning("features: %d unreadable images in %s [%s] were skipped", len(index["bad"]), source, split)
    return _result(feat_path, index)


def _result(feat_path: str, index: dict) -> tuple[np.ndarray, np.ndarray]:
    feats = np.load(feat_path, mmap_mode="r")
    valid = np.zeros(len(feats), dtype=bool)
    valid[: index["done"]] = True
    for i in index["bad"]:
        valid[int(i)] = False
    return feats, valid
