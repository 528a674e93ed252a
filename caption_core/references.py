"""Reference captions of dataset photos, found by image content, and the CIDEr-D document
frequencies of the dataset's references: what the app shows next to a caption."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time

import numpy as np
from PIL import Image

from .bundle import write_json_atomic
from .flickr import load_flickr_splits
from .images import content_hash
from .metrics import CiderD, sentence_bleu

log = logging.getLogger("caption_core.references")


class References:
    """Reference captions of dataset photos, found by image content (a re-uploaded or re-encoded
    copy is recognised), and the CIDEr-D document frequencies of the dataset's references."""

    MAX_DISTANCE = 12  # of 256 hash bits

    def __init__(self, data_dir: str | None, n_examples: int, cache_dir: str | None = None, start: bool = True):
        """Reads the dataset's caption files; the index (content hashes, CIDEr-D frequencies) is built in a
        thread, started here or by ``start()``."""
        self.data_dir, self.cache_dir = data_dir, cache_dir
        self.examples: list[str] = []
        self.by_hash: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.bits: np.ndarray | None = None
        self.keys: list[str] = []
        self.cider: CiderD | None = None
        self.ready = threading.Event()  # the photo index is built (lookups can be answered)
        self.cider_ready = threading.Event()  # the CIDEr-D document frequencies too
        self._started = False
        if not data_dir:
            self.ready.set()
            self.cider_ready.set()
            return
        try:
            self.splits = load_flickr_splits(data_dir, ("test", "dev", "train"))
        except Exception as exc:
            log.warning("no dataset references: %s", exc)
            self.data_dir = None
            self.ready.set()
            self.cider_ready.set()
            return
        self.examples = [e.image for e in self.splits["test"][:n_examples]]
        if start:
            self.start()

    def start(self, scores_later: threading.Event | None = None) -> None:
        """Build the index in a thread (once): the photo index first (what a lookup needs), then the CIDEr-D
        document frequencies (a few seconds over 40,000 captions; only scores need them), after
        ``scores_later`` is set when given (the app sets it once its first visitor is served)."""
        if self.ready.is_set() or self._started:
            return
        self._started = True
        threading.Thread(target=self._index, args=(scores_later,), daemon=True, name="reference-index").start()

    def _index(self, scores_later: threading.Event | None = None) -> None:
        examples = [e for s in ("test", "dev", "train") for e in self.splits[s]]
        try:
            t0 = time.perf_counter()
            hashes = self._cached_hashes(examples)
            for e in examples:
                if e.image_id in hashes:
                    self.by_hash.setdefault(hashes[e.image_id], (e.image_id, e.captions))
            self.keys = list(self.by_hash)
            self.bits = np.unpackbits(np.frombuffer(bytes.fromhex("".join(self.keys)), np.uint8).reshape(len(self.keys), -1), axis=1)
            log.info("reference index: %d photos in %.1f s", len(self.keys), time.perf_counter() - t0)
        finally:
            self.ready.set()
        if scores_later is not None:
            scores_later.wait()
        try:
            self.cider = CiderD(e.captions for e in examples)
        finally:
            self.cider_ready.set()

    def _cached_hashes(self, examples) -> dict[str, str]:
        """Content hashes of the dataset photos, kept in cache/ so later starts skip the 8,000 decodes."""
        key = hashlib.sha256(f"{os.path.abspath(self.data_dir)}|{len(examples)}".encode()).hexdigest()[:12]
        path = os.path.join(self.cache_dir, f"reference-hashes-{key}.json") if self.cache_dir else None
        try:
            with open(path or "", encoding="utf-8") as f:
                cached = json.load(f)
            if len(cached) == len(examples):
                return cached
        except (OSError, ValueError):
            pass
        hashes = {}
        for e in examples:
            try:
                with Image.open(e.image) as im:
                    hashes[e.image_id] = content_hash(im.convert("RGB"))
            except OSError:
                continue
        if path is None:
            return hashes
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_json_atomic(path, hashes)
        except OSError:
            pass  # a read-only checkout still works, just slower to start
        return hashes

    def lookup(self, img: Image.Image, wait: float = 3.0) -> tuple[str, tuple[str, ...]] | None:
        """(image id, reference captions) of the dataset photo that ``img`` is, else None. While the
        index is still being built (a first start decodes every dataset photo; later starts read the cache)
        a caption waits at most ``wait`` seconds for it, and comes without references after that."""
        if not self.data_dir:
            return None
        self.ready.wait(wait)
        if self.bits is None:
            return None
        h = content_hash(img)
        if h in self.by_hash:
            return self.by_hash[h]
        q = np.unpackbits(np.frombuffer(bytes.fromhex(h), np.uint8))
        dist = (self.bits != q).sum(axis=1)
        best = int(dist.argmin())
        return self.by_hash[self.keys[best]] if dist[best] <= self.MAX_DISTANCE else None

    def scores(self, caption: str, refs: tuple[str, ...], wait: float = 0.0) -> dict[str, float]:
        """BLEU-4 and CIDEr-D of ``caption`` against ``refs``; CIDEr-D once its document frequencies are
        ready (waiting at most ``wait`` seconds for them; without them, BLEU-4 alone)."""
        out = {"BLEU-4": round(sentence_bleu(caption, refs)[3], 3)}
        self.cider_ready.wait(wait)
        if self.cider is not None:
            out["CIDEr"] = round(self.cider.score(caption, refs), 3)
        return out
