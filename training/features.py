"""Batched feature extraction with an on-disk cache that resumes after a kill.

Layout: ``<cache>/features/<encoder>-<key>/<split>/`` with ``features.npy`` (N, D) float32 (grid features: float16),
written in place through a memory map, and ``index.json`` (the key's inputs, image ids, rows
done, rows that could not be read). ``key`` hashes the encoder's name, config and weights
fingerprint and the dataset source, so a changed encoder never reuses a stale cache. After each
batch the memory map is flushed and then ``index.json`` is rewritten atomically; a killed run
resumes from the last recorded row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from typing import Iterator

import numpy as np

from caption_core.batch import local_batches
from caption_core.batch_workers import EncodeWorker

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


def extract_features(encoder, examples: list[CaptionExample], source: str, split: str, cache_root: str = "cache",
                     progress: bool = True, stop_after: int | None = None, engine: str = "local",
                     workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """-> features (N, D) float32, float16 for grids (a read-only memory map) and ``valid`` (N,) bool.

    Cached per (encoder config + weights, dataset, split); resumes where a previous run stopped.
    ``stop_after`` ends the run after that many new rows (tests use it to simulate a kill). ``engine``: 'local'
    (reader threads feed this process's encoder) or 'ray' (the batch engine's Ray Data path, ``workers`` actors each
    with its own copy of the encoder: ``caption_core/ray_engine.py``); either way each batch is recorded as it arrives.

    A ``concat`` encoder's features are its members' (each cached as itself) side by side: what it computes
    for photos no larger than its smallest member input (Flickr8k's 224 px; see caption_core/encoders/concat.py).
    """
    members = getattr(encoder, "members", None)
    if members:
        parts = [extract_features(m, examples, source, split, cache_root, progress, stop_after, engine, workers)
                 for m in members]
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
        feats_mm = np.lib.format.open_memmap(feat_path, mode="w+", dtype=dtype, shape=(n, dim))  # (N, D)
        write_json(index_path, index)
    else:
        feats_mm = np.lib.format.open_memmap(feat_path, mode="r+")
    if index["complete"]:
        log.info("features: %s [%s] from cache %s", encoder.name, split, folder)
        return _result(feat_path, index)

    start = index["done"]
    bar = None
    if progress and start < n:
        from tqdm import tqdm

        bar = tqdm(total=n, initial=start, unit="img", desc=f"{encoder.name} {split}", mininterval=2.0,
                   file=sys.stderr)
    t0, count = time.perf_counter(), 0

    for rows, feats, errors in encoded_batches(encoder, examples, start, engine, workers):
        for i, err in errors.items():
            index["bad"][str(i)] = err
        if len(feats):
            feats_mm[[i for i in rows if i not in errors]] = feats
        feats_mm.flush()
        index["done"] = rows[-1] + 1
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


def encoded_batches(encoder, examples: list[CaptionExample], start: int, engine: str,
                    workers: int) -> Iterator[tuple[list[int], np.ndarray, dict[int, str]]]:
    """Rows ``start``.. in order, a batch at a time: (the batch's row numbers, features (G, D) of its readable rows,
    {row: why it could not be read})."""
    n, bs = len(examples), encoder.config.batch_size
    if engine == "ray":
        from caption_core.ray_engine import ray_features

        paths = [examples[i].image for i in range(start, n)]
        if not all(isinstance(p, str) for p in paths):
            raise ValueError("--engine ray reads image files: this dataset holds its photos in memory (a Hub "
                             "dataset); use the local engine, or a folder of the dataset")
        config = encoder.config.to_dict()
        if "precision" in config:  # 'auto' as resolved here (the cache key's arithmetic), whatever a node's CPU has
            config["precision"] = encoder.precision
        for b in ray_features(encoder.name, config, list(range(start, n)), paths, bs, workers):
            rows = [int(r) for r in b["row"]]
            errors = {r: str(e) for r, ok, e in zip(rows, b["ok"], b["error"]) if not ok}
            yield rows, np.asarray(b["features"])[np.asarray(b["ok"], bool)], errors
        return
    if engine != "local":
        raise ValueError(f"unknown engine {engine!r}; valid: ['local', 'ray']")

    worker = EncodeWorker.of(encoder)  # what each Ray actor runs, here around this process's encoder
    begin = start
    for prepared in local_batches(lambda i: worker.prepare(examples[i].image), range(start, n), n - start, bs,
                                  threads=2):  # read ahead while encoding
        rows = list(range(begin, begin + len(prepared)))
        yield rows, worker.run(prepared), {r: p for r, p in zip(rows, prepared) if isinstance(p, str)}
        begin += len(prepared)


def _result(feat_path: str, index: dict) -> tuple[np.ndarray, np.ndarray]:
    feats = np.load(feat_path, mmap_mode="r")
    valid = np.zeros(len(feats), dtype=bool)
    valid[: index["done"]] = True
    for i in index["bad"]:
        valid[int(i)] = False
    return feats, valid
